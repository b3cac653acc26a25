/* kernels_norm.c - RMSNorm forward/backward (transformers LlamaRMSNorm; variance in fp32). */
#include "safetune/kernels.h"

#include <math.h>
#include <stdint.h>

#include "model/matmul_bf16.h"

void st_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C,
                        float eps) {
#pragma omp parallel for if (N > 16)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        if (rstd) rstd[n] = r;
        for (int i = 0; i < C; i++) o[i] = xr[i] * r * w[i];
    }
}

void st_rmsnorm_forward_bf16(uint16_t *out, float *rstd, const float *x, const float *w, int N,
                             int C, float eps) {
    enum { CH = 256 };
    st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
#pragma omp parallel for if (N > 16)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        if (rstd) rstd[n] = r;
        float o[CH]; /* the fp32 output of st_rmsnorm_forward, CH channels at a time */
        for (int c0 = 0; c0 < C; c0 += CH) {
            const int nc = C - c0 < CH ? C - c0 : CH;
            for (int i = 0; i < nc; i++) o[i] = xr[c0 + i] * r * w[c0 + i];
            st_bf16_row(out + (size_t)n * C + c0, o, (size_t)nc);
        }
    }
}

/* y_i = x_i r w_i, r = (mean x² + eps)^-1/2  =>  dx_i = r w_i g_i - x_i r³/C Σ_j g_j w_j x_j */
void st_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int N, int C) {
#pragma omp parallel for if (N > 16)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *g = dout + (size_t)n * C;
        float *d = dx + (size_t)n * C;
        const float r = rstd[n];
        double dot = 0.0;
        for (int i = 0; i < C; i++) dot += (double)g[i] * w[i] * xr[i];
        const float c = (float)(dot * r * r * r / C);
        for (int i = 0; i < C; i++) d[i] += r * w[i] * g[i] - xr[i] * c;
    }
    if (dw) {
        /* column sums in blocks of 16 channels (one cache line per row), rows in order: each
         * dw[i] is the same sequential sum over n as a plain column loop, without the strided
         * walk; blocks are disjoint, so threads never share a dw[i] */
        enum { CB = 16 };
#pragma omp parallel for if ((size_t)N * C > 65536)
        for (int i0 = 0; i0 < C; i0 += CB) {
            const int nb = C - i0 < CB ? C - i0 : CB;
            float s[CB] = {0};
            for (int n = 0; n < N; n++) {
                const float *g = dout + (size_t)n * C + i0, *xr = x + (size_t)n * C + i0;
                const float r = rstd[n];
                for (int i = 0; i < nb; i++) s[i] += g[i] * xr[i] * r;
            }
            for (int i = 0; i < nb; i++) dw[i0 + i] += s[i];
        }
    }
}
