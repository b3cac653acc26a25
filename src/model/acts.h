/* acts.h - internal: activation buffers shared by the full-sequence forward (forward.c) and
 * the training forward/backward (backward.c). With save = 0 every layer aliases the same
 * buffers (inference); with save = 1 each layer has its own (training). */
#ifndef SAFETUNE_MODEL_ACTS_H
#define SAFETUNE_MODEL_ACTS_H

#include "safetune/backward.h"
#include "safetune/config.h"
#include "safetune/kernels.h"
#include "safetune/lora.h"
#include "safetune/weights.h"

/* LoRA state of a training forward/backward (lora.c): which adapter the last forward used,
 * its dropout seed, the saved adapter intermediates U = dropout(x)·Aᵀ ([L][7][N, r]) and the
 * fp32 scratch of the adapter products. NULL adapter = plain forward. */
typedef struct {
    const st_lora_config *lc;
    const st_lora_weights *lw; /* adapter of the forward */
    const st_lora_weights *lg; /* its gradients (backward) */
    uint64_t seed;           /* dropout seed of the forward (0 = no dropout) */
    float *u;                /* [L][ST_LORA_N_TARGETS][maxN, r] */
    float *xs, *ys, *du;     /* [maxN, max in], [maxN, max out], [maxN, r] */
    size_t cap_floats;       /* allocation behind u (one buffer for all four) */
} st_lora_run;

typedef struct {
    float *x_in;  /* [N, C] residual entering the layer */
    float *ln1;   /* [N, C]; bf16 [N, C] in its first half when the owner's bf16_acts is set */
    float *rstd1; /* [N] */
    float *qkv;   /* [N, (H+2KV)D], q/k after RoPE */
    float *att;   /* [N, H*D] attention output (before o_proj) */
    float *lse;   /* [B, H, T] */
    float *x_mid; /* [N, C] residual after attention */
    float *ln2;   /* [N, C]; bf16 like ln1 */
    float *rstd2; /* [N] */
    float *gu;    /* [N, 2I] gate | up pre-activations */
    float *hmlp;  /* [N, I] silu(gate) * up; bf16 like ln1 */
} st_layer_acts;

struct st_train_acts {
    int maxN, B, T, save, L;
    float *buf;                /* one allocation (st_alloc_aligned) */
    st_layer_acts *layers;     /* [L] */
    float *x_final, *lnf, *rstdf; /* [N,C], [N,C], [N] */
    float *logits;             /* [N, V]; training: [n_rows, V] of the rows with a target,
                                  d(logits) in place after st_train_forward */
    float *losses, *dlosses;   /* [N]; dlosses: the compact rows' loss weights [n_rows] */
    int32_t *tokens, *targets; /* [N] tokens; targets of the compact rows [n_rows] */
    int32_t *rows;             /* [n_rows] row indices (in [0, N)) with a target >= 0 */
    int n_rows;                /* rows through the lm_head in the last training forward */
    float *rope_cos, *rope_sin; /* [N, D/2] */
    float *tmp;                /* [N, max(C, H*D)] o_proj / down_proj output */
    /* backward scratch */
    float *dres, *dln, *datt, *dqkv, *dgu, *dh; /* [N,C] [N,C] [N,HD] [N,W] [N,2I] [N,I] */
    float *att_scratch;        /* per-thread attention scratch */
    size_t att_scratch_floats; /* allocated */
    int has_forward;
    /* set by the forward in ST_MATMUL_BF16 mode (with a backend that has the bf16 entries):
     * ln1, ln2, hmlp hold bf16 (the matmul operands, rounded once by their producers; the
     * fp32 slots' second halves stay untouched, so never resident), and the backward keeps
     * d(gate|up) in dgu as bf16 and writes the input gradients of the matmuls instead of
     * zeroing and accumulating them */
    int bf16_acts;
    st_lora_run lora;          /* adapter of the last forward (lora.c); lora.lw NULL = none */
    const st_head_term *head;  /* st_train_acts_set_head_term; NULL = fused cross-entropy */
    /* frozen bf16 base of the running forward/backward (borrowed for the call, lora.c): its
     * matrices replace the fp32 ones of `w` (which then holds norms and biases only) */
    const st_weights16 *w16;
    /* > 0: the lm_head and cross-entropy run over chunks of head_rows trained rows (logits
     * holds [head_rows, V]), each chunk's d(ln_f) computed in the forward (frozen head only:
     * LoRA), so no [tokens, V] buffer exists; 0: logits holds every row */
    int head_rows;
};

/* Allocate with `save` (1: per-layer activations + backward scratch; 0: shared, no grads).
 * logits_external = 1 skips the logits buffer (caller provides it). */
st_status st_acts_alloc(const st_config *cfg, int B, int T, int save, int logits_external,
                        struct st_train_acts **out);
/* As st_acts_alloc(save = 1) with a chunked head of head_rows rows (> 0). */
st_status st_acts_alloc_chunked(const st_config *cfg, int B, int T, int head_rows,
                                struct st_train_acts **out);
/* Floats acts_alloc would allocate (without the attention scratch). */
size_t st_acts_floats(const st_config *cfg, int B, int T, int save, int logits_external);
/* Floats st_acts_alloc_chunked would allocate (without the attention scratch). */
size_t st_acts_floats_chunked(const st_config *cfg, int B, int T, int head_rows);
/* Make sure the attention scratch fits the current thread count, T and head_dim D. */
st_status st_acts_ensure_scratch(struct st_train_acts *a, int T, int D);
/* Full forward to logits (written to `logits`, [B*T, V]); logits NULL stops after the final
 * norm (a->lnf, [B*T, C]) so the caller runs the lm_head on the rows it needs. */
st_status st_forward_core(const st_config *cfg, const st_weights *w, struct st_train_acts *a,
                          const int32_t *tokens, int B, int T, float *logits);
/* 1 when the forward keeps bf16 matmul operands (ST_MATMUL_BF16 mode and `be` has every
 * bf16 entry). */
int st_backend_bf16_ready(const st_backend *be);
/* 1 when `be` has every bf16-operand entry (whatever the process precision). */
int st_backend_bf16_entries(const st_backend *be);
/* ... and the bf16-weight entries (a frozen bf16 base). */
int st_backend_w16_entries(const st_backend *be);
/* LoRA hooks (lora.c), called by st_forward_core / the backward when a->lora.lw is set.
 * Forward: y[:, 0:out] (row stride ldy) += scale·U·Bᵀ with U = dropout(x)·Aᵀ saved, for target t
 * of layer l; x is fp32 [N, in] or bf16 (x16). Backward: from dy (fp32, stride ldy) or dy16
 * (bf16, stride ldy): dB += scale·dyᵀU, dA += dUᵀ·dropout(x), dx[N, in] += dropout'(dU·A). */
void st__lora_fwd(struct st_train_acts *a, const st_config *c, int l, int t, const float *x,
                  const uint16_t *x16, float *y, int ldy);
void st__lora_bwd(struct st_train_acts *a, const st_config *c, int l, int t, const float *x,
                  const uint16_t *x16, const float *dy, const uint16_t *dy16, int ldy, float *dx);
/* st_train_forward / st_train_backward with the adapter state in a->lora left as the caller
 * set it; g NULL = frozen base (no base gradients; the adapter's go to a->lora.lg). */
st_status st__train_forward(const st_config *cfg, const st_weights *w, struct st_train_acts *a,
                            const int32_t *tokens, const int32_t *targets, const float *mask,
                            int B, int T, float normaliser, float *loss);
st_status st__train_backward(const st_config *cfg, const st_weights *w, struct st_train_acts *a,
                             const st_weights *g);
/* 1 when the last forward's adapter has target t. */
int st__lora_has(const struct st_train_acts *a, int t);
/* Fused-projection contiguity check (layout puts q|k|v and gate|up adjacent). */
int st_weights_fusable(const st_config *cfg, const st_weights *w);

#endif
