/* kernels_matmul.c - out = in · Wᵀ + bias and its backward. All three products go through the
 * The backward products (and the bf16 forward) go through the cached oneDNN matmul primitives
 * of kernels_matmul_bf16.c (fp32, or bf16 operands with fp32 accumulation in ST_MATMUL_BF16
 * mode); dnnl_sgemm does the fp32 forward and is the fallback. */
#include "safetune/kernels.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul_bf16.h"

static st_matmul_precision g_prec = ST_MATMUL_F32;

void st_matmul_set_precision(st_matmul_precision p) { g_prec = p; }
st_matmul_precision st_matmul_get_precision(void) { return g_prec; }

/* dnnl_sgemm failing means a programming error (bad dims); there is no sane recovery. */
static void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (beta == 0.0f)
            for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof *C);
        return;
    }
    dnnl_status_t s = dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (s != dnnl_success) {
        fprintf(stderr, "safetune: dnnl_sgemm failed (status %d, M=%lld N=%lld K=%lld)\n", (int)s,
                (long long)M, (long long)N, (long long)K);
        abort();
    }
}

void st_sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void st_matmul_forward(float *out, const float *in, const float *w, const float *bias, int M,
                       int K, int N) {
    /* fp32 forward stays on dnnl_sgemm: as fast as the primitive for N·T here, and no
     * primitive per M for the many shapes of inference */
    if (g_prec == ST_MATMUL_BF16 && st_mm_forward(out, in, w, M, K, N, 1) == 0) {
        if (bias) {
#pragma omp parallel for if ((size_t)M * N > 65536)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) out[(size_t)i * N + j] += bias[j];
        }
        return;
    }
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for if ((size_t)M * N > 65536)
        for (int i = 0; i < M; i++) memcpy(out + (size_t)i * N, bias, (size_t)N * sizeof *out);
        beta = 1.0f;
    }
    sgemm('N', 'T', M, N, K, 1.0f, in, K, w, K, beta, out, N);
}

void st_matmul_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                        const float *w, int M, int K, int N) {
    if ((din || dw) && st_mm_backward(din, dw, dout, in, w, M, K, N, g_prec == ST_MATMUL_BF16)) {
        if (din) sgemm('N', 'N', M, K, N, 1.0f, dout, N, w, K, 1.0f, din, K);
        if (dw) sgemm('T', 'N', N, K, M, 1.0f, dout, N, in, K, 1.0f, dw, K);
    }
    if (dbias) {
#pragma omp parallel for if ((size_t)M * N > 65536)
        for (int j = 0; j < N; j++) {
            float s = 0.0f;
            for (int i = 0; i < M; i++) s += dout[(size_t)i * N + j];
            dbias[j] += s;
        }
    }
}

/* fp32 copy of bf16 values (exact), for the sgemm fallback; NULL on NULL input or no memory */
static float *widen(const uint16_t *x, size_t n) {
    if (!x) return NULL;
    float *f = malloc(n * sizeof *f);
    if (!f) return NULL;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        const uint32_t u = (uint32_t)x[i] << 16;
        memcpy(&f[i], &u, 4);
    }
    return f;
}

/* widen of a [M, N] bf16 matrix with row stride ld */
static float *widen_rows(const uint16_t *x, int M, int N, int ld) {
    float *f = malloc((size_t)M * N * sizeof *f);
    if (!f) return NULL;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            const uint32_t u = (uint32_t)x[(size_t)i * ld + j] << 16;
            memcpy(&f[(size_t)i * N + j], &u, 4);
        }
    return f;
}

static void oom_abort(const char *what) {
    fprintf(stderr, "safetune: %s: out of memory for the fp32 fallback\n", what);
    abort();
}

void st_matmul_forward_bf16(float *out, const uint16_t *in16, const float *w, const float *bias,
                            int M, int K, int N) {
    if (st_mm_forward_b(out, in16, w, M, K, N) == 0) {
        if (bias) {
#pragma omp parallel for if ((size_t)M * N > 65536)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) out[(size_t)i * N + j] += bias[j];
        }
        return;
    }
    float *in = widen(in16, (size_t)M * K);
    if (!in) oom_abort("matmul forward");
    st_matmul_forward(out, in, w, bias, M, K, N);
    free(in);
}

void st_matmul_backward_bf16(float *din, float *dw, const float *dout, const uint16_t *dout16,
                             int ld16, const float *in, const uint16_t *in16, const float *w,
                             int M, int K, int N) {
    if (!din && !dw) return;
    if (st_mm_backward_b(din, dw, dout, dout16, ld16, in, in16, w, M, K, N) == 0) return;
    float *d32 = dout16 ? widen_rows(dout16, M, N, ld16 > 0 ? ld16 : N) : NULL;
    float *i32 = dw && in16 ? widen(in16, (size_t)M * K) : NULL;
    if ((dout16 && !d32) || (dw && in16 && !i32)) oom_abort("matmul backward");
    if (din) memset(din, 0, (size_t)M * K * sizeof *din);
    st_matmul_backward(din, dw, NULL, d32 ? d32 : dout, i32 ? i32 : in, w, M, K, N);
    free(d32);
    free(i32);
}

/* ---- bf16 weights (a frozen base held in bf16) ------------------------------------------ */

/* rows of W widened per fallback chunk */
static int w16_chunk_rows(int N, int K) {
    size_t r = ((size_t)4 << 20) / (size_t)(K > 0 ? K : 1);
    if (r < 1) r = 1;
    return r > (size_t)N ? N : (int)r;
}

static void add_bias(float *out, const float *bias, int M, int N) {
    if (!bias) return;
#pragma omp parallel for if ((size_t)M * N > 65536)
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) out[(size_t)i * N + j] += bias[j];
}

void st_matmul_forward_w16(float *out, const float *in, const uint16_t *in16, const uint16_t *w16,
                           const float *bias, int M, int K, int N) {
    if (st_mm_forward_w16(out, in, in16, w16, M, K, N) == 0) {
        add_bias(out, bias, M, N);
        return;
    }
    /* fallback: the same bf16 operands, widened (exact), fp32 sgemm over row chunks of W */
    float *i32 = in16 ? widen(in16, (size_t)M * K) : NULL;
    if (in16 && !i32) oom_abort("matmul forward (bf16 weights)");
    float *a = i32;
    if (!in16) { /* round the fp32 input to bf16 as the oneDNN path does */
        uint16_t *t = malloc((size_t)M * K * sizeof *t);
        if (!t) oom_abort("matmul forward (bf16 weights)");
        st_bf16_row(NULL, NULL, 0);
        for (int m = 0; m < M; m++) st_bf16_row(t + (size_t)m * K, in + (size_t)m * K, (size_t)K);
        a = widen(t, (size_t)M * K);
        free(t);
        if (!a) oom_abort("matmul forward (bf16 weights)");
    }
    const int R = w16_chunk_rows(N, K);
    for (int n0 = 0; n0 < N; n0 += R) {
        const int nc = N - n0 < R ? N - n0 : R;
        float *wc = widen(w16 + (size_t)n0 * K, (size_t)nc * K);
        if (!wc) oom_abort("matmul forward (bf16 weights)");
        sgemm('N', 'T', M, nc, K, 1.0f, a, K, wc, K, 0.0f, out + n0, N);
        free(wc);
    }
    free(a);
    add_bias(out, bias, M, N);
}

void st_matmul_backward_w16(float *din, const float *dout, const uint16_t *dout16, int ld16,
                            const uint16_t *w16, int M, int K, int N) {
    if (st_mm_backward_w16(din, dout, dout16, ld16, w16, M, K, N) == 0) return;
    float *d32 = NULL;
    if (dout16) {
        d32 = widen_rows(dout16, M, N, ld16 > 0 ? ld16 : N);
    } else { /* dout rounded to bf16 as the oneDNN path does */
        uint16_t *t = malloc((size_t)M * N * sizeof *t);
        if (!t) oom_abort("matmul backward (bf16 weights)");
        st_bf16_row(NULL, NULL, 0);
        for (int m = 0; m < M; m++) st_bf16_row(t + (size_t)m * N, dout + (size_t)m * N, (size_t)N);
        d32 = widen(t, (size_t)M * N);
        free(t);
    }
    if (!d32) oom_abort("matmul backward (bf16 weights)");
    const int R = w16_chunk_rows(N, K);
    for (int n0 = 0; n0 < N; n0 += R) {
        const int nc = N - n0 < R ? N - n0 : R;
        float *wc = widen(w16 + (size_t)n0 * K, (size_t)nc * K);
        if (!wc) oom_abort("matmul backward (bf16 weights)");
        sgemm('N', 'N', M, K, nc, 1.0f, d32 + n0, N, wc, K, n0 ? 1.0f : 0.0f, din, K);
        free(wc);
    }
    free(d32);
}
