/* lora.h - LoRA adapters on the seven projections of a Llama/Qwen2 decoder (Hu et al. 2021,
 * arXiv 2106.09685), with the conventions of Hugging Face PEFT (peft/tuners/lora/layer.py):
 *   y = W·x (+ b) + (lora_alpha / r) · B·(A·dropout(x)),   A [r, in], B [out, r]
 * initialised as PEFT's reset_lora_parameters(init_lora_weights=True): A ~ kaiming_uniform(a=√5)
 * = U(−1/√in, 1/√in), B = 0, so the adapted model starts exactly at the base model θ0.
 * Dropout (inverted, keep prob 1−p) acts on the adapter input only, one independent mask per
 * module as PEFT's per-module nn.Dropout; masks come from a counter-based hash of a seed, so a
 * step recomputes its masks in the backward and a resumed run draws the same ones.
 *
 * Adapter parameters live in ONE flat fp32 buffer (GUIDE.md "one flat parameter buffer") laid
 * out by an st_layout whose tensor names are PEFT's:
 *   base_model.model.model.layers.{l}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
 *   base_model.model.model.layers.{l}.mlp.{gate,up,down}_proj.lora_{A,B}.weight
 * so AdamW, EMA, clipping and checkpoints are the same vector loops as for full fine-tuning.
 * The base weights are only read (frozen; gradients flow to the adapters only). */
#ifndef SAFETUNE_LORA_H
#define SAFETUNE_LORA_H

#include "safetune/backward.h"
#include "safetune/config.h"
#include "safetune/model.h"
#include "safetune/weights.h"

typedef enum {
    ST_LORA_Q = 0, ST_LORA_K, ST_LORA_V, ST_LORA_O, ST_LORA_GATE, ST_LORA_UP, ST_LORA_DOWN,
    ST_LORA_N_TARGETS
} st_lora_target;
#define ST_LORA_ALL_TARGETS ((1u << ST_LORA_N_TARGETS) - 1u)

/* "q_proj", "k_proj", ..., "down_proj" (PEFT target_modules names). */
const char *st_lora_target_name(st_lora_target t);
/* "self_attn" or "mlp": the module path of a target inside a decoder layer. */
const char *st_lora_target_parent(st_lora_target t);

typedef struct {
    int r;            /* rank, >= 1 */
    double alpha;     /* lora_alpha; scale = alpha / r (PEFT, use_rslora = false) */
    double dropout;   /* lora_dropout in [0, 1) */
    unsigned targets; /* bit t set = adapter on target t; nonzero */
} st_lora_config;

/* r 8, alpha 16, dropout 0.05, targets all seven (the usual PEFT recipe for Llama). */
void st_lora_config_default(st_lora_config *lc);
/* Comma-separated target names ("q_proj,v_proj") or "all" -> bit set. ST_ERR_ARG names an
 * unknown or repeated module and lists the valid ones. */
st_status st_lora_targets_parse(const char *list, unsigned *out);
/* Writes "q_proj,k_proj,..." (in target order) into buf[n]. */
void st_lora_targets_format(unsigned targets, char *buf, size_t n);
/* r >= 1, alpha > 0 and finite, dropout in [0, 1), targets nonzero and known; ST_ERR_ARG
 * names the key (lora_r, lora_alpha, lora_dropout, lora_targets). */
st_status st_lora_config_validate(const st_lora_config *lc);
/* alpha / r. */
float st_lora_scale(const st_lora_config *lc);
/* Input and output width of target t under cfg: q_proj in = hidden_size, out = H·D, ... */
void st_lora_target_dims(const st_config *cfg, st_lora_target t, int *in, int *out);

/* Flat layout of the adapter tensors (PEFT names above; per layer, targets in order, A then
 * B). Free with st_layout_free. */
st_status st_lora_layout_init(st_layout *lay, const st_config *cfg, const st_lora_config *lc);

/* Named views into a buffer with the adapter layout (params, gradients, moments, EMA):
 * A[t], B[t] of layer l; NULL for targets without an adapter. */
typedef struct {
    float *A[ST_LORA_N_TARGETS], *B[ST_LORA_N_TARGETS];
} st_lora_layer;
typedef struct {
    st_lora_layer *layers; /* [num_hidden_layers], owned by the view */
} st_lora_weights;
st_status st_lora_bind(st_lora_weights *w, const st_config *cfg, const st_lora_config *lc,
                       const st_layout *lay, float *flat);
void st_lora_unbind(st_lora_weights *w);

/* PEFT's initialisation of flat (the adapter layout of lay): every A ~ U(−1/√in, 1/√in)
 * (kaiming_uniform_(a=√5) on [r, in]), every B = 0; draws from st_rng seeded with seed. */
void st_lora_init_params(const st_layout *lay, float *flat, uint64_t seed);

/* An adapter: its config, layout, one flat parameter buffer (64-byte aligned) and views. */
typedef struct st_lora {
    st_lora_config lc;
    st_layout layout;
    float *params; /* layout.n_floats */
    st_lora_weights w;
} st_lora;
/* Zeroed adapter for (cfg, lc) (validated). Free with st_lora_free. */
st_status st_lora_new(const st_config *cfg, const st_lora_config *lc, st_lora **out);
void st_lora_free(st_lora *l);

/* Training forward of base + adapter over [B, T] (st_train_forward's contract: same loss,
 * masks and normaliser). Dropout applies when lc->dropout > 0 and dropout_seed != 0 (training);
 * dropout_seed 0 is the deterministic (evaluation) forward. The base `w` is only read. */
st_status st_lora_train_forward(const st_config *cfg, const st_weights *w,
                                const st_lora_config *lc, const st_lora_weights *lw,
                                uint64_t dropout_seed, st_train_acts *a, const int32_t *tokens,
                                const int32_t *targets, const float *mask, int B, int T,
                                float normaliser, float *loss);
/* Backward of the last st_lora_train_forward: adapter gradients ACCUMULATE (+=) into lg (the
 * adapter layout); the base gets none (frozen). */
st_status st_lora_train_backward(const st_config *cfg, const st_weights *w, st_train_acts *a,
                                 const st_lora_weights *lg);

/* ---- the frozen base (bf16 or fp32) --------------------------------------------------------
 * The base weights a LoRA run reads and never writes, with one owner: trainers and evaluators
 * borrow it (const) for as long as they run, so one base serves any number of them without a
 * copy or a cast per call. The adapter (st_lora) and the activations (st_train_acts) are
 * separate objects; nothing here holds either.
 *   fp32: views of the model's own flat buffer (the model must outlive the base; no copy).
 *   bf16: the matrices (embed_tokens, q|k|v, o, gate|up, down, lm_head) rounded to bf16
 *         (round-to-nearest-even) in one owned buffer (2 bytes a weight), the norms and biases
 *         kept fp32; every base product then takes bf16 operands with fp32 accumulation (the
 *         ST_MATMUL_BF16 products, whose weight rounding is then exact), the adapter products
 *         stay fp32. The model's fp32 weights may be freed after st_lora_base_new. */
typedef enum { ST_BASE_F32 = 0, ST_BASE_BF16 = 1 } st_base_precision;
typedef struct {
    st_config config;
    st_layout layout;          /* the base model's layout (owned copy) */
    st_base_precision precision;
    st_weights w;              /* fp32 views (bf16 base: norms and biases only, matrices NULL) */
    st_weights16 w16;          /* bf16 views into buf16 (bf16 base) */
    uint16_t *buf16;           /* bf16 base: layout.n_floats elements, owned */
    float *small;              /* bf16 base: the fp32 norms and biases, owned */
} st_lora_base;
/* Frozen base of model m in precision prec (m's fp32 weights read once for bf16; viewed in
 * place for fp32). ST_ERR_NOMEM names the size. Free with st_lora_base_free. */
st_status st_lora_base_new(const st_model *m, st_base_precision prec, st_lora_base **out);
/* A bf16 base of config cfg with zero matrices, norms 1 and biases 0, for the caller to fill
 * through buf16 / w16 (random-weight benchmarks) without an fp32 copy ever existing. */
st_status st_lora_base_new_bf16(const st_config *cfg, st_lora_base **out);
/* MODEL (a .gguf file or a Hugging Face folder, not an adapter folder) loaded straight into a
 * bf16 base, with no fp32 copy of the model: each tensor is read (GGUF dequantised, Q/K
 * un-permuted) into one fp32 scratch the size of the largest tensor, rounded into *base as
 * st_lora_base_new(ST_BASE_BF16) rounds it (so the base is bit for bit the same), and the file's
 * pages of that tensor released; the scratch is freed before return. *m gets the config, layout,
 * tokenizer (with_tokenizer) and chat template with params NULL and w unbound: it serves the
 * tokenizer and config, never as weights (fine-tuning it fully or merging into it is refused
 * where it matters). The caller owns both; a trainer borrows *base (st_train_config.base).
 * Peak: the bf16 base (2 bytes a weight) + the largest tensor in fp32 + the file's pages of one
 * tensor. Errors as st_model_load (file, tensor, shape). An adapter trained on it is merged into
 * the file's fp32 weights, read again (st_model_load of the adapter folder), not into this base. */
st_status st_lora_base_load(const char *path, int with_tokenizer, st_model **m, st_lora_base **base);
void st_lora_base_free(st_lora_base *b);
/* Training activations for LoRA over [B, T] micro-batches with a chunked lm_head: the head's
 * logits, loss and d(logits) are made for head_rows trained rows at a time (0: as many as fit
 * 64 MiB of fp32 logits) and their d(ln_f) taken at once (the head is frozen), so no
 * [tokens, vocab] buffer exists (128256-token vocabularies). Works with st_lora_train_forward
 * too (not with the full-weight st_train_forward). Free with st_train_acts_free. */
st_status st_lora_train_acts_new(const st_config *cfg, int B, int T, int head_rows,
                                 st_train_acts **out);
/* Floats those activations hold once a forward with adapter lc has run (the buffer plus the
 * adapter's saved products and scratch; without the per-thread attention scratch). In the bf16
 * path ln1, ln2 and the MLP product are stored as bf16 in the first half of their fp32 slots,
 * so the pages touched are fewer than this. */
size_t st_lora_train_acts_floats(const st_config *cfg, const st_lora_config *lc, int B, int T,
                                 int head_rows);
/* st_lora_train_forward / st_lora_train_backward over a frozen base (a bf16 base needs the
 * activations of st_lora_train_acts_new). */
st_status st_lora_base_train_forward(const st_lora_base *base, const st_lora_config *lc,
                                     const st_lora_weights *lw, uint64_t dropout_seed,
                                     st_train_acts *a, const int32_t *tokens,
                                     const int32_t *targets, const float *mask, int B, int T,
                                     float normaliser, float *loss);
st_status st_lora_base_train_backward(const st_lora_base *base, st_train_acts *a,
                                      const st_lora_weights *lg);

/* Merge: every targeted projection W += (alpha/r)·B·A, in place on the views w (fp32, the
 * order of PEFT's merge_and_unload: delta computed in fp32, then added). */
void st_lora_merge(const st_config *cfg, const st_weights *w, const st_lora_config *lc,
                   const st_lora_weights *lw);

/* ‖(alpha/r)·B·A‖_F summed over every adapted projection (root of the sum of squares): the
 * distance ‖θ − θ_0‖ of base + adapter `params` (ad's layout) from the base, without forming
 * B·A (Gram matrices A·Aᵀ and Bᵀ·B, r x r, in double). NaN when out of memory. */
double st_lora_delta_norm(const st_lora *ad, const float *params);
/* A copy (st_alloc_aligned, ad's layout) of adapter parameters `params` with every B times
 * lambda: base + that adapter = (1 − lambda)·θ_0 + lambda·(θ_0 + s·B·A), the linear merge of
 * merge.h for a LoRA run. NULL when out of memory. */
float *st_lora_scaled_params(const st_lora *ad, const float *params, float lambda);

/* ---- PEFT adapter folders (lora_io.c) ---------------------------------------------------
 * dir/adapter_config.json (peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha,
 * lora_dropout, target_modules, bias "none", base_model_name_or_path, ...) and
 * dir/adapter_model.safetensors (F32, the PEFT names and shapes of lora.h), the files
 * PeftModel.from_pretrained reads. Source: peft/config.py, peft/utils/save_and_load.py. */

/* Write the adapter whose parameters are `params` (ad's layout: the live buffer or the EMA
 * copy) to dir, built in "<dir>.tmp.<pid>" and renamed into place. base_model: recorded as
 * base_model_name_or_path (may be NULL). */
st_status st_lora_save_peft(const st_lora *ad, const float *params, const char *base_model,
                            const char *dir);
/* Read a PEFT LoRA folder for a base model of config cfg. Errors name the file and the key or
 * tensor: not a LoRA adapter, options safetune does not implement (use_dora, use_rslora,
 * bias other than "none", rank_pattern / alpha_pattern, modules_to_save, fan_in_fan_out), an
 * unknown target module, r <= 0, a tensor missing / of the wrong shape / for a layer the base
 * lacks / of a module not in target_modules (an adapter made for another base model). */
st_status st_lora_load_peft(const char *dir, const st_config *cfg, st_lora **out);
/* base_model_name_or_path of dir/adapter_config.json as a path (relative ones joined to dir)
 * into *out (heap). ST_ERR_FORMAT when it is missing or names no local file or folder (a Hub
 * id: pass the base model explicitly). */
st_status st_lora_base_model_path(const char *dir, char **out);
/* 1 when path is a folder holding adapter_config.json. */
int st_lora_is_adapter_dir(const char *path);
/* A copy (st_alloc_aligned, base layout) of the base parameters with the adapter of
 * ad's layout `params` merged in (st_lora_merge), for exporting or inference. */
st_status st_lora_merged_params(const st_config *cfg, const st_layout *base_layout,
                                const float *base_params, const st_lora *ad, const float *params,
                                float **out);

#endif
