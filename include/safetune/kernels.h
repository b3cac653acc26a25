/* kernels.h - the numeric ops of the decoder, each with a _forward and a _backward side by side
 * (llm.c style), plus the backend seam (st_backend: a table of these functions; CPU now, a CUDA
 * table can slot in later without the model/trainer code changing).
 *
 * Conventions: row-major fp32; N = number of token rows (B*T); backward functions ACCUMULATE
 * (+=) into every gradient output unless the comment says "written". No kernel allocates:
 * scratch is passed in. Parallelised with OpenMP; GEMMs via oneDNN (dnnl_sgemm / matmul).
 * Reference semantics: transformers modeling_llama.py (RMSNorm, rotate_half RoPE, GQA
 * repeat_kv, SwiGLU) and torch.nn.functional.cross_entropy. */
#ifndef SAFETUNE_KERNELS_H
#define SAFETUNE_KERNELS_H

#include <stdio.h>

#include "safetune/base.h"

/* ---- matmul: out[M,N] = in[M,K] · W[N,K]ᵀ (+ bias[N]) (torch.nn.functional.linear) ------ */
typedef enum {
    ST_MATMUL_F32 = 0,  /* fp32 operands, fp32 accumulate (default) */
    ST_MATMUL_BF16 = 1  /* operands rounded to bf16, fp32 accumulate (oneDNN, AMX/avx512_bf16) */
} st_matmul_precision;
/* Process-wide precision of st_matmul_forward and st_matmul_backward (bf16: every product
 * rounds its two operands to bf16, fp32 accumulation; gradients and weights stay fp32). */
void st_matmul_set_precision(st_matmul_precision p);
st_matmul_precision st_matmul_get_precision(void);

void st_matmul_forward(float *out, const float *in, const float *w, const float *bias,
                       int M, int K, int N);
/* din[M,K] += dout·W; dw[N,K] += doutᵀ·in; dbias[N] += Σ_rows dout. NULL outputs are skipped. */
void st_matmul_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                        const float *w, int M, int K, int N);
/* bf16 products with operands the caller already holds in bf16 (training in ST_MATMUL_BF16
 * mode; numerically the same as the fp32-operand calls in that mode). Forward: in16 [M,K] bf16.
 * Backward: din [M,K] WRITTEN (not +=), dw [N,K] += (NULL skips either); dout given as fp32 or
 * bf16 (dout16, row stride ld16 elements, 0 = N), in as fp32 or bf16 (in16): exactly one of
 * each pair non-NULL. No bias (use
 * st_matmul_backward with NULL din/dw for dbias). Falls back to fp32 sgemm on the widened bf16
 * values where oneDNN has no bf16 matmul. */
void st_matmul_forward_bf16(float *out, const uint16_t *in16, const float *w, const float *bias,
                            int M, int K, int N);
void st_matmul_backward_bf16(float *din, float *dw, const float *dout, const uint16_t *dout16,
                             int ld16, const float *in, const uint16_t *in16, const float *w,
                             int M, int K, int N);

/* Products with a bf16 weight w16 [N,K] (a frozen base held in bf16, lora.h st_lora_base):
 * numerically the ST_MATMUL_BF16 products with a weight already representable in bf16 (its
 * rounding is exact). Forward: out[M,N] = in·Wᵀ (+ bias) written; the input fp32 (in, rounded
 * to bf16 here) or bf16 (in16): exactly one non-NULL. Backward (input gradient only; a frozen
 * weight has none): din[M,K] = dout·W WRITTEN, dout fp32 [M,N] or bf16 (dout16, row stride
 * ld16 >= N, 0 = N). oneDNN bf16 matmul; fp32 sgemm on the widened
 * operands where it has none. */
void st_matmul_forward_w16(float *out, const float *in, const uint16_t *in16, const uint16_t *w16,
                           const float *bias, int M, int K, int N);
void st_matmul_backward_w16(float *din, const float *dout, const uint16_t *dout16, int ld16,
                            const uint16_t *w16, int M, int K, int N);

/* ---- RMSNorm: out = x / sqrt(mean(x²) + eps) * w; saves rstd[N] ------------------------- */
void st_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C,
                        float eps);
/* The bf16 training path's RMSNorm: out [N,C] WRITTEN as bf16 (round-to-nearest-even of the
 * fp32 x·rstd·w), the input of a bf16 matmul stored half size; Σx² in 8 double lanes
 * (vectorised, fixed order; rstd may differ from st_rmsnorm_forward's in the last bit). */
void st_rmsnorm_forward_bf16(uint16_t *out, float *rstd, const float *x, const float *w, int N,
                             int C, float eps);
/* Residual add fused in: xo = x + y (fp32, WRITTEN; may alias x), then
 * st_rmsnorm_forward_bf16 of xo. One pass instead of copy + add + norm. */
void st_residual_rmsnorm_forward_bf16(float *xo, uint16_t *out, float *rstd, const float *x,
                                      const float *y, const float *w, int N, int C, float eps);
/* As st_rmsnorm_backward with the per-row Σ dout·w·x in 8 double lanes (vectorised; the bf16
 * training path's order, partner of st_rmsnorm_forward_bf16); dx16 (may be NULL) [N,C] gets
 * the bf16 (RNE) of the updated dx, the operand of the next bf16 matmul backward. */
void st_rmsnorm_backward_bf16(float *dx, uint16_t *dx16, float *dw, const float *dout,
                              const float *x, const float *w, const float *rstd, int N, int C);
/* dx[N,C] += ..., dw[C] += Σ_rows dout·x·rstd (dw may be NULL). */
void st_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int N, int C);

/* ---- RoPE (rotate_half convention, HF) ------------------------------------------------- */
/* cos/sin [N, D/2] for positions pos[N]: angle = pos * inv_freq[i] (computed in double). */
void st_rope_cos_sin(float *cos_, float *sin_, const int *pos, int N, const double *inv_freq,
                     int D);
/* In place on rows x + n*stride, each holding n_heads heads of D: for i < D/2,
 * (x_i, x_{i+D/2}) <- (x_i c - x_{i+D/2} s, x_{i+D/2} c + x_i s). */
void st_rope_forward(float *x, int N, int n_heads, int D, int stride, const float *cos_,
                     const float *sin_);
/* In place: dx <- Rᵀ dx (the inverse rotation). */
void st_rope_backward(float *dx, int N, int n_heads, int D, int stride, const float *cos_,
                      const float *sin_);
/* bf16 training path: out [N, stride] WRITTEN as the bf16 (RNE) of st_rope_backward's result
 * on dx (the first n_heads heads of each row rotated, the rest of the row as is); dx is only
 * read. D <= 1024. The operand of the bf16 q|k|v backward matmul. */
void st_rope_backward_bf16(uint16_t *out, const float *dx, int N, int n_heads, int D, int stride,
                           const float *cos_, const float *sin_);

/* ---- causal attention ------------------------------------------------------------------- */
/* One head of one sequence: q [Tq, D] (row stride q_stride), k/v [Tk, D] (kv_stride), query i
 * sits at position Tk - Tq + i and sees keys 0..Tk-Tq+i. out [Tq, D] (out_stride) written,
 * lse[Tq] (log-sum-exp of the scaled scores, saved for backward) written if non-NULL.
 * scale = 1/sqrt(D). scratch: st_attention_scratch_floats(Tk) floats. */
void st_attention_head_forward(float *out, float *lse, const float *q, const float *k,
                               const float *v, int Tq, int Tk, int D, int q_stride,
                               int kv_stride, int out_stride, float *scratch);
/* Gradients of one head: dq [Tq,D], dk/dv [Tk,D] accumulated (+=). Recomputes the softmax
 * from q, k and the saved lse (flash-attention style, no [T,T] activation kept). */
void st_attention_head_backward(float *dq, float *dk, float *dv, const float *dout,
                                const float *q, const float *k, const float *v, const float *out,
                                const float *lse, int Tq, int Tk, int D, int q_stride,
                                int kv_stride, int out_stride, float *scratch);
/* Per-thread scratch for one head call (forward or backward), in floats. */
size_t st_attention_scratch_floats(int Tk);

/* Per-thread scratch of st_attention_forward/backward, in floats (>= the head kernel's). */
size_t st_attention_batch_scratch_floats(int T, int D);
/* Batched training attention over qkv [B*T, (H+2KV)*D] rows laid out [q heads | k | v]
 * (post-RoPE): out [B*T, H*D] written, lse [B, H, T] written. GQA: head h uses kv head
 * h / (H/KV) (transformers repeat_kv). scratch: st_attention_batch_scratch_floats(T, D) *
 * threads. In ST_MATMUL_BF16 mode (st_matmul_set_precision) the q·kᵀ, p·v and backward
 * products take bf16 operands with fp32 accumulation (as torch CPU autocast's bmm); the
 * softmax, lse and dS stay fp32. */
void st_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int H, int KV,
                          int D, float *scratch);
/* dqkv [B*T, (H+2KV)*D] accumulated (+=) from dout [B*T, H*D]. */
void st_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                           const float *lse, int B, int T, int H, int KV, int D, float *scratch);

/* ---- SwiGLU: out[N,I] = silu(g) * u with gu [N, 2I] rows [gate | up] -------------------- */
void st_swiglu_forward(float *out, const float *gu, int N, int I);
/* dgu [N, 2I] accumulated. */
void st_swiglu_backward(float *dgu, const float *dout, const float *gu, int N, int I);
/* bf16 variants (the operands of bf16 matmuls): out [N,I] and dgu [N,2I] WRITTEN as the RNE
 * bf16 of the fp32 values the fp32 kernels compute (dgu: of the gradient itself, not +=). */
void st_swiglu_forward_bf16(uint16_t *out, const float *gu, int N, int I);
void st_swiglu_backward_bf16(uint16_t *dgu, const float *dout, const float *gu, int N, int I);

/* ---- token embedding: out[N,C] = table[tokens[n]] (tokens must be in [0, V)) ------------ */
void st_embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C);
/* As st_embedding_forward from a bf16 table [V, C] (widened exactly). */
void st_embedding_forward_w16(float *out, const int32_t *tokens, const uint16_t *table, int N,
                              int C);
void st_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int N, int C);

/* ---- cross-entropy ---------------------------------------------------------------------- */
/* losses[n] = logsumexp(logits[n]) - logits[n][targets[n]]; 0 where targets[n] < 0 (ignore). */
void st_crossentropy_forward(float *losses, const float *logits, const int32_t *targets, int N,
                             int V);
/* dlogits[n] = (softmax(logits[n]) - onehot(targets[n])) * dlosses[n], WRITTEN (not
 * accumulated); rows with targets < 0 or dlosses == 0 become 0. dlogits may alias logits. */
void st_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                              const float *dlosses, int N, int V);

/* One fused pass per row (the training loss, whose per-row weights are known before the pass):
 * losses[n] = logsumexp(logits[n]) - logits[n][targets[n]] WRITTEN, and logits[n] overwritten
 * in place with d(logits) = (softmax(logits[n]) - onehot(targets[n])) * dlosses[n]. Rows with
 * targets < 0 get loss 0 and a zero row; dlosses == 0 gives a zero row (loss still written).
 * One exp per element (the exps are stored, then scaled), vectorised; fp32 with per-lane
 * partial sums of 16 lanes added in double in a fixed order (deterministic at any -O level). */
void st_crossentropy_fused(float *losses, float *logits, const int32_t *targets,
                           const float *dlosses, int N, int V);
/* As st_crossentropy_fused (same losses), with d(logits) of row n left as bf16 (RNE of the fp32
 * values st_crossentropy_fused leaves) in place at (uint16_t *)(logits + n·V), i.e. a bf16
 * [N, V] matrix with row stride 2V: the operand of the bf16 lm_head backward, no extra buffer. */
void st_crossentropy_fused_bf16(float *losses, float *logits, const int32_t *targets,
                                const float *dlosses, int N, int V);

/* ---- elementwise ------------------------------------------------------------------------ */
void st_add_inplace(float *x, const float *y, size_t n); /* x += y */

/* ---- profiling (opt-in: SAFETUNE_PROFILE=1) -------------------------------------------- */
/* Wall-clock and process CPU seconds (all threads, getrusage) per named phase of the training
 * step, accumulated by ST_PROF probes in forward/backward/trainer; st_prof_report prints the
 * table (nothing when disabled). CPU seconds stay meaningful on a loaded machine (passive
 * OpenMP waiting burns none). */
int st_prof_on(void);
double st_prof_cpu_now(void); /* process user + system CPU seconds */
void st_prof_add(const char *name, double seconds, double cpu_seconds); /* name: a literal */
void st_prof_report(FILE *f, const char *title);
void st_prof_reset(void);
#define ST_PROF(name, stmt)                                                                  \
    do {                                                                                     \
        const int st_prof_on_ = st_prof_on();                                                \
        double st_prof_t0_ = st_prof_on_ ? st_time_now() : 0.0;                              \
        double st_prof_c0_ = st_prof_on_ ? st_prof_cpu_now() : 0.0;                          \
        stmt;                                                                                \
        if (st_prof_on_)                                                                     \
            st_prof_add(name, st_time_now() - st_prof_t0_, st_prof_cpu_now() - st_prof_c0_); \
    } while (0)

/* ---- backend seam ----------------------------------------------------------------------- */
typedef struct {
    const char *name;
    void (*matmul_forward)(float *, const float *, const float *, const float *, int, int, int);
    void (*matmul_backward)(float *, float *, float *, const float *, const float *,
                            const float *, int, int, int);
    void (*rmsnorm_forward)(float *, float *, const float *, const float *, int, int, float);
    void (*rmsnorm_backward)(float *, float *, const float *, const float *, const float *,
                             const float *, int, int);
    void (*rope_forward)(float *, int, int, int, int, const float *, const float *);
    void (*rope_backward)(float *, int, int, int, int, const float *, const float *);
    void (*attention_head_forward)(float *, float *, const float *, const float *, const float *,
                                   int, int, int, int, int, int, float *);
    void (*attention_forward)(float *, float *, const float *, int, int, int, int, int, float *);
    void (*attention_backward)(float *, const float *, const float *, const float *,
                               const float *, int, int, int, int, int, float *);
    void (*swiglu_forward)(float *, const float *, int, int);
    void (*swiglu_backward)(float *, const float *, const float *, int, int);
    void (*embedding_forward)(float *, const int32_t *, const float *, int, int);
    void (*embedding_backward)(float *, const float *, const int32_t *, int, int);
    void (*crossentropy_forward)(float *, const float *, const int32_t *, int, int);
    void (*crossentropy_backward)(float *, const float *, const int32_t *, const float *, int,
                                  int);
    void (*add_inplace)(float *, const float *, size_t);
    void (*crossentropy_fused)(float *, float *, const int32_t *, const float *, int, int);
    /* bf16-operand training path (ST_MATMUL_BF16 mode); NULL entries make the model code use
     * the fp32-operand functions above */
    void (*matmul_forward_bf16)(float *, const uint16_t *, const float *, const float *, int, int,
                                int);
    void (*matmul_backward_bf16)(float *, float *, const float *, const uint16_t *, int,
                                 const float *, const uint16_t *, const float *, int, int, int);
    void (*rmsnorm_forward_bf16)(uint16_t *, float *, const float *, const float *, int, int,
                                 float);
    void (*swiglu_forward_bf16)(uint16_t *, const float *, int, int);
    void (*swiglu_backward_bf16)(uint16_t *, const float *, const float *, int, int);
    void (*residual_rmsnorm_forward_bf16)(float *, uint16_t *, float *, const float *,
                                          const float *, const float *, int, int, float);
    void (*rmsnorm_backward_bf16)(float *, uint16_t *, float *, const float *, const float *,
                                  const float *, const float *, int, int);
    void (*crossentropy_fused_bf16)(float *, float *, const int32_t *, const float *, int, int);
    /* bf16-weight products (frozen bf16 base); NULL: such a base is refused */
    void (*matmul_forward_w16)(float *, const float *, const uint16_t *, const uint16_t *,
                               const float *, int, int, int);
    void (*matmul_backward_w16)(float *, const float *, const uint16_t *, int, const uint16_t *,
                                int, int, int);
    void (*embedding_forward_w16)(float *, const int32_t *, const uint16_t *, int, int);
    /* optional (NULL: rope_backward in place, then the matmul rounds dqkv itself) */
    void (*rope_backward_bf16)(uint16_t *, const float *, int, int, int, int, const float *,
                               const float *);
} st_backend;

/* The CPU backend (oneDNN + OpenMP). */
const st_backend *st_backend_cpu(void);
/* The backend the model code uses (CPU unless st_backend_set was called). */
const st_backend *st_backend_get(void);
void st_backend_set(const st_backend *b);

#endif
