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
