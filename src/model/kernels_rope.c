/* kernels_rope.c - rotary position embedding, rotate_half convention (transformers
 * apply_rotary_pos_emb: x*cos + rotate_half(x)*sin, cos/sin duplicated over both halves). */
#include "safetune/kernels.h"

#include <math.h>
#include <stdint.h>

#include "model/matmul_bf16.h"

void st_rope_cos_sin(float *cos_, float *sin_, const int *pos, int N, const double *inv_freq,
                     int D) {
    const int h = D / 2;
#pragma omp parallel for if ((size_t)N * h > 16384)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < h; i++) {
            double a = (double)pos[n] * inv_freq[i];
            cos_[(size_t)n * h + i] = (float)cos(a);
            sin_[(size_t)n * h + i] = (float)sin(a);
        }
}

static void rotate(float *x, int N, int n_heads, int D, int stride, const float *cos_,
                   const float *sin_, float sign) {
    const int h = D / 2;
#pragma omp parallel for if ((size_t)N * n_heads * D > 65536)
    for (int n = 0; n < N; n++) {
        const float *c = cos_ + (size_t)n * h, *s = sin_ + (size_t)n * h;
        for (int hd = 0; hd < n_heads; hd++) {
            float *v = x + (size_t)n * stride + (size_t)hd * D;
            for (int i = 0; i < h; i++) {
                float a = v[i], b = v[i + h], sn = sign * s[i];
                v[i] = a * c[i] - b * sn;
                v[i + h] = b * c[i] + a * sn;
            }
        }
    }
}

void st_rope_forward(float *x, int N, int n_heads, int D, int stride, const float *cos_,
                     const float *sin_) {
    rotate(x, N, n_heads, D, stride, cos_, sin_, 1.0f);
}

void st_rope_backward(float *dx, int N, int n_heads, int D, int stride, const float *cos_,
                      const float *sin_) {
    rotate(dx, N, n_heads, D, stride, cos_, sin_, -1.0f); /* Rᵀ = rotation by -angle */
}

void st_rope_backward_bf16(uint16_t *out, const float *dx, int N, int n_heads, int D, int stride,
                           const float *cos_, const float *sin_) {
    const int h = D / 2, rest = stride - n_heads * D;
    st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
#pragma omp parallel for if ((size_t)N * stride > 65536)
    for (int n = 0; n < N; n++) {
        const float *c = cos_ + (size_t)n * h, *s = sin_ + (size_t)n * h;
        const float *row = dx + (size_t)n * stride;
        uint16_t *o = out + (size_t)n * stride;
        float f[1024]; /* one head; forward.c refuses head_dim > 1024 */
        for (int hd = 0; hd < n_heads; hd++) {
            const float *v = row + (size_t)hd * D;
            for (int i = 0; i < h; i++) { /* rotate() with sign -1, same expressions */
                float a = v[i], b = v[i + h], sn = -1.0f * s[i];
                f[i] = a * c[i] - b * sn;
                f[i + h] = b * c[i] + a * sn;
            }
            st_bf16_row(o + (size_t)hd * D, f, (size_t)D);
        }
        if (rest > 0) st_bf16_row(o + (size_t)n_heads * D, row + (size_t)n_heads * D, (size_t)rest);
    }
}
