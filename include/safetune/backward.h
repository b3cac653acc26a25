/* backward.h - training forward (saving activations) and backward pass.
 *
 * Activations live in ONE explicitly sized buffer (st_train_acts_floats) allocated once for the
 * largest micro-batch [B, T]; any smaller B*T fits. The loss is
 *   L = Σ_{b,t} mask[b,t] · CE(logits[b,t], targets[b,t]) / normaliser
 * so gradient accumulation over micro-batches can normalise over the whole window (pass the
 * window's total masked-token count as normaliser). targets < 0 are ignored (mask 0).
 * Gradients ACCUMULATE (+=) into a buffer with the parameter layout (weights.h
 * st_weights_bind on the gradient buffer); zero it at the start of each window.
 * Reference: transformers LlamaForCausalLM / Qwen2ForCausalLM + torch autograd
 * (tests/reference/llama_ref.py); kernel structure after llm.c train_gpt2.c. */
#ifndef SAFETUNE_BACKWARD_H
#define SAFETUNE_BACKWARD_H

#include "safetune/config.h"
#include "safetune/weights.h"

typedef struct st_train_acts st_train_acts;

/* Floats needed for the saved activations and backward scratch of a [B, T] micro-batch
 * (excluding the per-thread attention scratch, which is O(threads * 128 * T)). */
size_t st_train_acts_floats(const st_config *cfg, int B, int T);
/* Allocate activations for micro-batches up to [B, T]. */
st_status st_train_acts_new(const st_config *cfg, int B, int T, st_train_acts **out);
void st_train_acts_free(st_train_acts *a);

/* Forward over tokens/targets [B, T] (mask [B, T] of weights, NULL = all ones) saving what
 * backward needs; *loss = L above (float). Only the rows with a target >= 0 go through the
 * lm_head and the cross-entropy (which also leaves d(logits) for the backward, as the loss
 * weights are known here). ST_ERR_ARG if B*T exceeds the allocation, a token is out of
 * [0, V), or normaliser <= 0. */
st_status st_train_forward(const st_config *cfg, const st_weights *w, st_train_acts *a,
                           const int32_t *tokens, const int32_t *targets, const float *mask,
                           int B, int T, float normaliser, float *loss);
/* A per-token loss on the lm_head outputs in place of the plain cross-entropy (defenses that
 * reweight or add to the token losses against θ_0: constrained SFT, KL to θ_0; train/head_terms.h).
 * st_train_forward (and st_lora_train_forward) call apply once, after the lm_head, on the n_rows
 * compact trained rows: logits [n_rows, V] fp32 (row j is position rows[j] of [0, B*T), with
 * target targets[j] in [0, V) and plain-CE loss weight dlosses[j] = mask / normaliser). apply must
 * write losses[j] = the unweighted CE of row j (nats; the `loss` reported stays L_task) and leave
 * d(its loss)/d(logits) in logits, fp32 (the forward rounds it to bf16 for a bf16 backward). Its
 * error stops the forward. NULL term = the fused cross-entropy. */
typedef struct {
    st_status (*apply)(void *user, float *logits, const int32_t *rows, const int32_t *targets,
                       const float *dlosses, float *losses, int n_rows, int V);
    void *user;
} st_head_term;
/* Use `term` (borrowed, may be NULL) in the following training forwards of a. */
void st_train_acts_set_head_term(st_train_acts *a, const st_head_term *term);
/* Forward of weights w over tokens [B, T] up to the final RMSNorm, copied to lnf [B*T, C] fp32
 * (the lm_head input; no logits, no loss): a reference model's hidden states for a term that
 * needs its distribution (KL to θ_0). Uses a's buffers (a later st_train_forward overwrites
 * them; call it before). ST_ERR_ARG if B*T exceeds the allocation or a token is out of [0, V). */
st_status st_train_forward_hidden(const st_config *cfg, const st_weights *w, st_train_acts *a,
                                  const int32_t *tokens, int B, int T, float *lnf);
/* Backward of the last st_train_forward (once per forward): grads += dL/dθ. */
st_status st_train_backward(const st_config *cfg, const st_weights *w, st_train_acts *a,
                            const st_weights *grads);
/* Per-token cross-entropy of the last forward (unmasked, 0 where target < 0): [B*T] floats,
 * valid until the next forward. Useful for held-out loss and log-likelihood scoring. */
const float *st_train_token_losses(const st_train_acts *a);

#endif
