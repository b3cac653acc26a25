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
/* Backward of the last st_train_forward (once per forward): grads += dL/dθ. */
st_status st_train_backward(const st_config *cfg, const st_weights *w, st_train_acts *a,
                            const st_weights *grads);
/* Per-token cross-entropy of the last forward (unmasked, 0 where target < 0): [B*T] floats,
 * valid until the next forward. Useful for held-out loss and log-likelihood scoring. */
const float *st_train_token_losses(const st_train_acts *a);

#endif
