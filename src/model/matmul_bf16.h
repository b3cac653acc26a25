/* matmul_bf16.h - internal: bf16 matmul (oneDNN primitive cache) and a raw sgemm wrapper. */
#ifndef SAFETUNE_MODEL_MATMUL_BF16_H
#define SAFETUNE_MODEL_MATMUL_BF16_H
#include <stdint.h>
/* out[M,N] = bf16(in)[M,K] · bf16(W)[N,K]ᵀ with fp32 accumulation. Returns 0, or -1 when bf16
 * is not available here (caller falls back to fp32). */
int st_matmul_bf16(float *out, const float *in, const float *w, int M, int K, int N);
/* Row-major dnnl_sgemm; aborts on a dimension error (a programming bug). */
void st_sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
#endif
