/* matmul_bf16.h - internal: the linear-layer products through cached oneDNN matmul primitives
 * (fp32 or bf16 operands, fp32 accumulation) and a raw sgemm wrapper. */
#ifndef SAFETUNE_MODEL_MATMUL_BF16_H
#define SAFETUNE_MODEL_MATMUL_BF16_H
#include <stddef.h>
#include <stdint.h>

enum { ST_MM_FWD = 0, ST_MM_DIN = 1, ST_MM_DW = 2, ST_MM_DINW = 3 /* DIN, written */ };
/* out[M,N] = in[M,K] · W[N,K]ᵀ (written); bf16 != 0 rounds both operands to bf16 (RNE).
 * Returns 0, or -1 when oneDNN cannot do it here (caller falls back to dnnl_sgemm). */
int st_mm_forward(float *out, const float *in, const float *w, int M, int K, int N, int bf16);
/* din[M,K] += dout·W and dw[N,K] += doutᵀ·in (each skipped when NULL); bf16 as above (bf16
 * works on column chunks of dout). Returns 0, or -1 with nothing accumulated (fall back). */
int st_mm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                   int M, int K, int N, int bf16);
/* bf16 forward with the activations already bf16: in16 [M,K] (RNE-rounded by the producer,
 * e.g. st_rmsnorm_forward_bf16); W converted per call. Returns 0, or -1 as st_mm_forward. */
int st_mm_forward_b(float *out, const uint16_t *in16, const float *w, int M, int K, int N);
/* bf16 backward, din[M,K] WRITTEN (not accumulated), dw[N,K] += doutᵀ·in. dout is given as
 * fp32 (dout, rounded here in column chunks) or bf16 (dout16, row stride ld16 >= N; 0 = N),
 * in likewise (in / in16; only read when dw != NULL); exactly one of each pair non-NULL.
 * Returns 0, or -1 with nothing written. */
int st_mm_backward_b(float *din, float *dw, const float *dout, const uint16_t *dout16, int ld16,
                     const float *in, const uint16_t *in16, const float *w, int M, int K, int N);
/* Products with the weight already bf16 (w16 [N,K], a frozen base held in bf16): forward
 * out[M,N] = in·Wᵀ written, the input fp32 (in, rounded here) or bf16 (in16), exactly one;
 * backward din[M,K] = dout·W WRITTEN, dout fp32 (rounded in column chunks) or bf16 (dout16,
 * row stride ld16 >= N, 0 = N). Return 0, or -1 with nothing written (fall back). */
int st_mm_forward_w16(float *out, const float *in, const uint16_t *in16, const uint16_t *w16,
                      int M, int K, int N);
int st_mm_backward_w16(float *din, const float *dout, const uint16_t *dout16, int ld16,
                       const uint16_t *w16, int M, int K, int N);
/* dst[i] = bf16(src[i]) (RNE, the rounding of every bf16 product here), one thread; call it
 * once with n = 0 before a parallel region (it detects the ISA on first use). */
void st_bf16_row(uint16_t *dst, const float *src, size_t n);
/* Testing: elements per bf16 backward chunk (0 = default 16M). */
void st_mm_set_chunk_elems(size_t n);
/* Row-major dnnl_sgemm; aborts on a dimension error (a programming bug). */
void st_sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* Batched attention (kernels.h st_attention_forward/backward semantics) with bf16 products
 * and fp32 softmax (kernels_attention_bf16.c); scratch: st_attention_batch_scratch_floats. */
void st_attention_forward_bf16(float *out, float *lse, const float *qkv, int B, int T, int H,
                               int KV, int D, float *scratch);
void st_attention_backward_bf16(float *dqkv, const float *dout, const float *qkv,
                                const float *out, const float *lse, int B, int T, int H, int KV,
                                int D, float *scratch);
/* Testing: 1 = use the portable bf16 GEMM even where avx512_bf16 exists; 0 = detect again. */
void st_attention_bf16_force_portable(int on);
#endif
