/* kernels_misc.c - SwiGLU, token embedding, cross-entropy, residual add (forward/backward).
 * exp is the vectorised st_fast_expf (~1-2 ulp); cross-entropy runs in fp32 (log-sum-exp with
 * the row max subtracted, so it cannot overflow). */
#include "safetune/kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "model/fastmath.h"
#include "model/matmul_bf16.h"

void st_swiglu_forward(float *out, const float *gu, int N, int I) {
#pragma omp parallel for if ((size_t)N * I > 65536)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * I, *u = g + I;
        float *o = out + (size_t)n * I;
#pragma omp simd
        for (int i = 0; i < I; i++) o[i] = g[i] / (1.0f + st_fast_expf(-g[i])) * u[i];
    }
}

/* d/dg [g σ(g)] = σ(g) (1 + g (1 - σ(g))) */
void st_swiglu_backward(float *dgu, const float *dout, const float *gu, int N, int I) {
#pragma omp parallel for if ((size_t)N * I > 65536)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * I, *u = g + I, *d = dout + (size_t)n * I;
        float *dg = dgu + (size_t)n * 2 * I, *du = dg + I;
#pragma omp simd
        for (int i = 0; i < I; i++) {
            float s = 1.0f / (1.0f + st_fast_expf(-g[i]));
            dg[i] += d[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
            du[i] += d[i] * g[i] * s;
        }
    }
}

enum { SW_CH = 256 }; /* columns per fp32 staging chunk of the bf16 variants */

void st_swiglu_forward_bf16(uint16_t *out, const float *gu, int N, int I) {
    st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
#pragma omp parallel for if ((size_t)N * I > 65536)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * I, *u = g + I;
        float o[SW_CH];
        for (int i0 = 0; i0 < I; i0 += SW_CH) {
            const int ni = I - i0 < SW_CH ? I - i0 : SW_CH;
#pragma omp simd
            for (int i = 0; i < ni; i++)
                o[i] = g[i0 + i] / (1.0f + st_fast_expf(-g[i0 + i])) * u[i0 + i];
            st_bf16_row(out + (size_t)n * I + i0, o, (size_t)ni);
        }
    }
}

void st_swiglu_backward_bf16(uint16_t *dgu, const float *dout, const float *gu, int N, int I) {
    st_bf16_row(NULL, NULL, 0);
#pragma omp parallel for if ((size_t)N * I > 65536)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * I, *u = g + I, *d = dout + (size_t)n * I;
        uint16_t *dg = dgu + (size_t)n * 2 * I, *du = dg + I;
        float a[SW_CH], b[SW_CH];
        for (int i0 = 0; i0 < I; i0 += SW_CH) {
            const int ni = I - i0 < SW_CH ? I - i0 : SW_CH;
#pragma omp simd
            for (int i = 0; i < ni; i++) {
                const float gi = g[i0 + i], ui = u[i0 + i], di = d[i0 + i];
                float s = 1.0f / (1.0f + st_fast_expf(-gi));
                a[i] = di * ui * s * (1.0f + gi * (1.0f - s));
                b[i] = di * gi * s;
            }
            st_bf16_row(dg + i0, a, (size_t)ni);
            st_bf16_row(du + i0, b, (size_t)ni);
        }
    }
}

void st_embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C) {
#pragma omp parallel for if ((size_t)N * C > 65536)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, table + (size_t)tokens[n] * C, (size_t)C * sizeof *out);
}

void st_embedding_forward_w16(float *out, const int32_t *tokens, const uint16_t *table, int N,
                              int C) {
#pragma omp parallel for if ((size_t)N * C > 65536)
    for (int n = 0; n < N; n++) {
        const uint16_t *t = table + (size_t)tokens[n] * C;
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            const uint32_t u = (uint32_t)t[c] << 16; /* bf16 -> fp32, exact */
            memcpy(&o[c], &u, 4);
        }
    }
}

void st_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int N, int C) {
    /* tokens repeat, so rows may collide: parallelise over channel blocks instead of rows */
    const int CB = 64;
#pragma omp parallel for if ((size_t)N * C > 65536)
    for (int c0 = 0; c0 < C; c0 += CB) {
        int c1 = c0 + CB < C ? c0 + CB : C;
        for (int n = 0; n < N; n++) {
            float *d = dtable + (size_t)tokens[n] * C;
            const float *g = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

/* log Σ exp(l) over a row: max, then a vectorised Σ exp(l - max) (fastmath.h) accumulated in
 * double, so the result does not depend on the vector width (-O0 sums serially). */
static float row_lse(const float *l, int V) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < V; i++) s += (double)st_fast_expf(l[i] - mx);
    return mx + (float)log(s);
}

void st_crossentropy_forward(float *losses, const float *logits, const int32_t *targets, int N,
                             int V) {
#pragma omp parallel for if (N > 1)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        losses[n] = targets[n] < 0 ? 0.0f : row_lse(l, V) - l[targets[n]];
    }
}

void st_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                              const float *dlosses, int N, int V) {
#pragma omp parallel for if (N > 1)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *d = dlogits + (size_t)n * V;
        if (targets[n] < 0 || dlosses[n] == 0.0f) {
            memset(d, 0, (size_t)V * sizeof *d);
            continue;
        }
        const float lse = row_lse(l, V);
        const float g = dlosses[n];
        const int t = targets[n];
#pragma omp simd
        for (int i = 0; i < V; i++) d[i] = st_fast_expf(l[i] - lse) * g; /* may alias l */
        d[t] -= g;
    }
}

void st_add_inplace(float *x, const float *y, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* Cross-entropy of one row: l becomes exp(l - max) in place; returns the loss, *sum the sum of
 * the exps (16 fixed lanes of partial sums, so the order is the same vectorised or not). */
static float xent_exps(float *l, int t, int V, double *sum) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    const float lt = l[t];
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= V; i += 16) {
        float *p = l + i;
#pragma omp simd
        for (int j = 0; j < 16; j++) {
            const float e = st_fast_expf(p[j] - mx);
            p[j] = e;
            acc[j] += e;
        }
    }
    double s = 0.0;
    for (; i < V; i++) {
        const float e = st_fast_expf(l[i] - mx);
        l[i] = e;
        s += (double)e;
    }
    for (int j = 0; j < 16; j++) s += (double)acc[j];
    *sum = s;
    return mx + (float)log(s) - lt;
}

/* One row of st_crossentropy_fused: returns the loss, leaves g·(softmax - onehot) in l. */
static float xent_row_fused(float *l, int t, float g, int V) {
    double s;
    const float loss = xent_exps(l, t, V, &s);
    if (g == 0.0f) {
        memset(l, 0, (size_t)V * sizeof *l);
    } else {
        const float k = (float)((double)g / s);
#pragma omp simd
        for (int v = 0; v < V; v++) l[v] *= k;
        l[t] -= g;
    }
    return loss;
}

void st_crossentropy_fused(float *losses, float *logits, const int32_t *targets,
                           const float *dlosses, int N, int V) {
#pragma omp parallel for schedule(static) if (N > 1)
    for (int n = 0; n < N; n++) {
        float *l = logits + (size_t)n * V;
        if (targets[n] < 0) {
            losses[n] = 0.0f;
            memset(l, 0, (size_t)V * sizeof *l);
            continue;
        }
        losses[n] = xent_row_fused(l, targets[n], dlosses[n], V);
    }
}

/* st_crossentropy_fused with d(logits) left as bf16 in the first half of each row's own fp32
 * slot. The rounding pass reads a chunk of fp32 values [v0, v0+CH) before writing their bf16,
 * which lands on bytes [2·v0, 2·v0 + 2·CH), i.e. fp32 elements below v0 + CH already read:
 * nothing is overwritten before it is read; the stores go through memcpy (char access), so
 * they stay ordered after the float loads. */
static float xent_row_fused_bf16(float *l, int t, float g, int V) {
    double s;
    const float loss = xent_exps(l, t, V, &s);
    unsigned char *out = (unsigned char *)l;
    if (g == 0.0f) {
        memset(out, 0, (size_t)V * sizeof(uint16_t));
        return loss;
    }
    const float k = (float)((double)g / s);
    enum { CH = 256 };
    for (int v0 = 0; v0 < V; v0 += CH) {
        const int n = V - v0 < CH ? V - v0 : CH;
        float f[CH];
        uint16_t h[CH];
#pragma omp simd
        for (int j = 0; j < n; j++) f[j] = l[v0 + j] * k;
        if (t >= v0 && t < v0 + n) f[t - v0] -= g;
        st_bf16_row(h, f, (size_t)n);
        memcpy(out + 2 * (size_t)v0, h, (size_t)n * sizeof *h);
    }
    return loss;
}

void st_crossentropy_fused_bf16(float *losses, float *logits, const int32_t *targets,
                                const float *dlosses, int N, int V) {
    st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
#pragma omp parallel for schedule(static) if (N > 1)
    for (int n = 0; n < N; n++) {
        float *l = logits + (size_t)n * V;
        if (targets[n] < 0) {
            losses[n] = 0.0f;
            memset(l, 0, (size_t)V * sizeof(uint16_t));
            continue;
        }
        losses[n] = xent_row_fused_bf16(l, targets[n], dlosses[n], V);
    }
}
