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

/* Σ_i a_i b_i in double over 8 fixed lanes, lanes added in order: vectorises, and the result
 * does not depend on the vector width or -O level (the bf16 path's reductions) */
static double dot_lanes(const float *a, const float *b, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
#pragma omp simd
        for (int j = 0; j < 8; j++) acc[j] += (double)a[i + j] * b[i + j];
    }
    for (; i < n; i++) acc[i & 7] += (double)a[i] * b[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* one row of the bf16 forward: rstd of x, out = bf16(x r w) through a CH-float staging chunk */
static float rms_row_bf16(uint16_t *out, const float *xr, const float *w, int C, float eps) {
    enum { CH = 256 };
    const double ss = dot_lanes(xr, xr, C);
    const float r = (float)(1.0 / sqrt(ss / C + eps));
    float o[CH];
    for (int c0 = 0; c0 < C; c0 += CH) {
        const int nc = C - c0 < CH ? C - c0 : CH;
#pragma omp simd
        for (int i = 0; i < nc; i++) o[i] = xr[c0 + i] * r * w[c0 + i];
        st_bf16_row(out + c0, o, (size_t)nc);
    }
    return r;
}

void st_rmsnorm_forward_bf16(uint16_t *out, float *rstd, const float *x, const float *w, int N,
                             int C, float eps) {
    st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
#pragma omp parallel for if (N > 16)
    for (int n = 0; n < N; n++) {
        const float r = rms_row_bf16(out + (size_t)n * C, x + (size_t)n * C, w, C, eps);
        if (rstd) rstd[n] = r;
    }
}

void st_residual_rmsnorm_forward_bf16(float *xo, uint16_t *out, float *rstd, const float *x,
                                      const float *y, const float *w, int N, int C, float eps) {
    st_bf16_row(NULL, NULL, 0);
#pragma omp parallel for if (N > 16)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *yr = y + (size_t)n * C;
        float *o = xo + (size_t)n * C;
#pragma omp simd
        for (int i = 0; i < C; i++) o[i] = xr[i] + yr[i];
        const float r = rms_row_bf16(out + (size_t)n * C, o, w, C, eps);
        if (rstd) rstd[n] = r;
    }
}

/* y_i = x_i r w_i, r = (mean x² + eps)^-1/2  =>  dx_i = r w_i g_i - x_i r³/C Σ_j g_j w_j x_j */
/* dw[i] += Σ_n dout[n,i] x[n,i] rstd[n]: column sums in blocks of 16 channels (one cache line
 * per row), rows in order: each dw[i] is the same sequential sum over n as a plain column
 * loop, without the strided walk; blocks are disjoint, so threads never share a dw[i] */
static void rms_dw(float *dw, const float *dout, const float *x, const float *rstd, int N, int C) {
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
    if (dw) rms_dw(dw, dout, x, rstd, N, C);
}

void st_rmsnorm_backward_bf16(float *dx, uint16_t *dx16, float *dw, const float *dout,
                              const float *x, const float *w, const float *rstd, int N, int C) {
    st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
#pragma omp parallel for if (N > 16)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *g = dout + (size_t)n * C;
        float *d = dx + (size_t)n * C;
        const float r = rstd[n];
        double acc[8] = {0};
        int i = 0;
        for (; i + 8 <= C; i += 8) {
#pragma omp simd
            for (int j = 0; j < 8; j++) acc[j] += (double)g[i + j] * w[i + j] * xr[i + j];
        }
        for (; i < C; i++) acc[i & 7] += (double)g[i] * w[i] * xr[i];
        const double dot = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        const float c = (float)(dot * r * r * r / C);
#pragma omp simd
        for (int k = 0; k < C; k++) d[k] += r * w[k] * g[k] - xr[k] * c;
        if (dx16) st_bf16_row(dx16 + (size_t)n * C, d, (size_t)C);
    }
    if (dw) rms_dw(dw, dout, x, rstd, N, C);
}
