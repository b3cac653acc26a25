/* infer_kernels.h - internal: the elementwise and attention kernels of st_forward_infer
 * (infer.c), exposed for their unit tests (tests/unit/test_infer_kernels.c). Row-major fp32. */
#ifndef SAFETUNE_MODEL_INFER_KERNELS_H
#define SAFETUNE_MODEL_INFER_KERNELS_H

#include <stdint.h>

/* x[N, C] += y (if y != NULL), then ln = x * (mean(x²) + eps)^-1/2 * w[C] (double sum of
 * squares, float scaling: st_rmsnorm_forward's arithmetic). Transformers LlamaRMSNorm. */
void st_infer_add_rmsnorm(float *x, const float *y, float *ln, const float *w, int N, int C,
                          float eps);
/* h[N, I] = silu(g) * u for gu = [g | u] rows [N, 2I] (st_swiglu_forward's formula and exp).
 * Transformers LlamaMLP: down(act(gate(x)) * up(x)). */
void st_infer_swiglu(float *h, const float *gu, int N, int I);
/* Attention of one decoding query row per query head of a GQA group: q, out [rep, D]; k, v the
 * group's cached keys/values [nk, D] (contiguous; fp32, or bf16 bit patterns if kv_bf16);
 * out_r = softmax(scale · q_r kᵀ) v (scale = 1/sqrt(D) in the model). p: rep * nk floats.
 * Transformers eager attention (repeat_kv, softmax in fp32) for a single query position. */
void st_infer_gqa_decode(float *out, const float *q, const void *k, const void *v, int kv_bf16,
                         int nk, int D, int rep, float scale, float *p);

#endif
