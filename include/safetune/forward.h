/* forward.h - model forward passes.
 *
 * Two entry points share the same kernels (kernels.h):
 *  - full-sequence logits for scoring and parity tests (no cache);
 *  - incremental inference over a KV cache for generation: any mix of prefill (many new tokens)
 *    and decode (one new token) across the active sequences of a batch.
 * Training (forward with saved activations + backward) lives in train.h / backward.h.
 * Reference: transformers modeling_llama.py / modeling_qwen2.py (HF layout, rotate_half RoPE). */
#ifndef SAFETUNE_FORWARD_H
#define SAFETUNE_FORWARD_H

#include "safetune/kernels.h"
#include "safetune/model.h"

/* logits [B, T, V] for tokens [B, T] (positions 0..T-1 in every row, causal attention). */
st_status st_forward_logits(const st_model *m, const int32_t *tokens, int B, int T, float *logits);
/* Same on any weights bound to the flat layout (e.g. the EMA copy). ST_ERR_ARG on a token
 * outside [0, V). */
st_status st_forward_logits_w(const st_config *cfg, const st_weights *w, const int32_t *tokens,
                              int B, int T, float *logits);

/* KV cache: `max_batch` independent slots of up to `max_seq` positions each.
 * Memory: 2 * L * max_batch * max_seq * KV * D floats; half that (bf16) after
 * st_kv_cache_set_precision(c, ST_MATMUL_BF16). */
typedef struct st_kv_cache st_kv_cache;
st_status st_kv_cache_new(const st_config *cfg, int max_batch, int max_seq, st_kv_cache **out);
void st_kv_cache_free(st_kv_cache *c);
void st_kv_cache_clear(st_kv_cache *c, int slot); /* slot becomes empty (length 0) */
int st_kv_cache_len(const st_kv_cache *c, int slot);
int st_kv_cache_max_seq(const st_kv_cache *c);
/* Slot dst := the first n positions of slot src (keys and values of every layer; dst's length
 * becomes n), so a shared prompt prefix is computed once. ST_ERR_ARG if a slot is out of range,
 * dst == src, or n is outside [0, length of src]. */
st_status st_kv_cache_copy_prefix(st_kv_cache *c, int dst, int src, int n);

/* Matmul precision of st_forward_infer on this cache: ST_MATMUL_F32 (default, unless
 * st_matmul_set_precision chose bf16 process-wide) or ST_MATMUL_BF16 (bf16 weights,
 * activations and cached keys/values, fp32 accumulation: a faster mode that is not
 * token-identical to fp32). Positions already cached are converted (RNE) on a switch. */
void st_kv_cache_set_precision(st_kv_cache *c, st_matmul_precision p);

/* Inference context: what st_forward_infer reads and the state it builds around it, apart from
 * the model (llama.cpp's llama_model / llama_context cut). It holds views of the weights (the
 * model's own, or any buffer in the model's flat layout: an EMA, θ0, a checkpoint), an optional
 * LoRA adapter applied on top of them (lora.h; its own parameter buffer, e.g. the adapter's EMA),
 * and owns the reordered weight copies built from them on first use per precision (oneDNN
 * blocked layout, fp32 ~1x and bf16 ~0.5x the projections' fp32 memory; a LoRA adapter is
 * merged into those copies as they are built, W + (alpha/r)·B·A, never into the weights). The
 * model and every buffer are only read and must outlive the context; many contexts may share
 * one model, and one context serves any number of KV caches (one at a time). ST_ERR_ARG: an
 * adapter made for another config; ST_ERR_NOMEM. */
typedef struct st_lora st_lora;
typedef struct st_infer_ctx st_infer_ctx;
st_status st_infer_ctx_new(const st_model *m, const float *params, const st_lora *adapter,
                           const float *adapter_params, st_infer_ctx **out);
void st_infer_ctx_free(st_infer_ctx *ic);
/* The weights under ic were edited in place: its copies are rebuilt on the next
 * st_forward_infer (they are otherwise read once, when first built). */
void st_infer_ctx_refresh(st_infer_ctx *ic);
const st_model *st_infer_ctx_model(const st_infer_ctx *ic);
/* Scoring over ic's weights: st_train_forward (backward.h; same arguments, loss and per-token
 * losses left in a), or with an adapter st_lora_train_forward without dropout, so held-out
 * losses and log-likelihoods read base + adapter with no merged copy of the model. */
struct st_train_acts;
st_status st_infer_ctx_score(const st_infer_ctx *ic, struct st_train_acts *a,
                             const int32_t *tokens, const int32_t *targets, const float *mask,
                             int B, int T, float normaliser, float *loss);

/* Append tokens[i][0..n_tokens[i]) to cache slot slots[i] for i < n_seqs (positions continue
 * from the slot's length) and write the logits of each sequence's LAST new token to
 * logits_last [n_seqs, V], with ic's weights (and adapter). ST_ERR_ARG if a slot would exceed
 * max_seq or the cache was made for another config. */
st_status st_forward_infer(st_infer_ctx *ic, st_kv_cache *c, const int *slots,
                           const int32_t *const *tokens, const int *n_tokens, int n_seqs,
                           float *logits_last);

#endif
