/* weights.h - the flat parameter layout.
 *
 * All trainable weights live in ONE contiguous fp32 buffer with per-tensor views (see GUIDE.md,
 * "One flat parameter buffer"). Gradients, AdamW moments and the EMA copy use buffers of the
 * same layout, so optimiser/EMA/clipping/all-reduce are single loops over a vector.
 * Tensor names and shapes are Hugging Face's (row-major, [out, in] for projections):
 *   model.embed_tokens.weight [V, C]
 *   model.layers.{l}.input_layernorm.weight [C]
 *   model.layers.{l}.self_attn.{q,k,v}_proj.weight [H*D | KV*D, C] (+ .bias if attention_bias)
 *   model.layers.{l}.self_attn.o_proj.weight [C, H*D]
 *   model.layers.{l}.post_attention_layernorm.weight [C]
 *   model.layers.{l}.mlp.{gate,up}_proj.weight [I, C], mlp.down_proj.weight [C, I]
 *   model.norm.weight [C]
 *   lm_head.weight [V, C] (absent when tie_word_embeddings)
 * Q/K rows are in Hugging Face order (rotate_half RoPE); GGUF llama files are un-permuted on
 * load (llama.cpp convert_hf_to_gguf.py permute) and permuted back on export. */
#ifndef SAFETUNE_WEIGHTS_H
#define SAFETUNE_WEIGHTS_H

#include "safetune/config.h"

typedef struct {
    char name[96];
    size_t offset;      /* in floats, into the flat buffer */
    size_t numel;
    int n_dims;         /* 1 or 2 */
    int64_t shape[2];   /* row-major */
    int no_decay;       /* norms and biases: excluded from weight decay by default */
} st_param_info;

typedef struct {
    float *input_layernorm, *post_attention_layernorm;
    float *q_proj, *k_proj, *v_proj, *o_proj;
    float *q_bias, *k_bias, *v_bias; /* NULL unless attention_bias */
    float *gate_proj, *up_proj, *down_proj;
} st_layer_weights;

typedef struct {
    float *embed_tokens;
    st_layer_weights *layers; /* [num_hidden_layers], owned by the view */
    float *norm;
    float *lm_head;           /* == embed_tokens when tied */
} st_weights;

typedef struct {
    st_param_info *params;
    size_t n_tensors;
    size_t n_floats;          /* total length of the flat buffer */
} st_layout;

/* Compute the layout for cfg. Caller frees with st_layout_free. */
st_status st_layout_init(st_layout *lay, const st_config *cfg);
void st_layout_free(st_layout *lay);
const st_param_info *st_layout_find(const st_layout *lay, const char *name);

/* Bind named pointers into any buffer with this layout (params, grads, moments, EMA). */
st_status st_weights_bind(st_weights *w, const st_config *cfg, const st_layout *lay, float *flat);
void st_weights_unbind(st_weights *w);

/* bf16 views of the matrices of a flat bf16 buffer laid out by the same st_layout (element
 * offsets = the fp32 layout's float offsets): a frozen base held in bf16 (lora.h
 * st_lora_base). q_proj starts the adjacent q|k|v rows [(H+2KV)·D, C], gate_proj the adjacent
 * gate|up rows [2I, C]; lm_head == embed_tokens when tied. Norms and biases stay fp32
 * (st_weights). */
typedef struct {
    const uint16_t *q_proj, *o_proj, *gate_proj, *down_proj;
} st_layer_weights16;
typedef struct {
    const uint16_t *embed_tokens;
    st_layer_weights16 *layers; /* [num_hidden_layers], owned by the view */
    const uint16_t *lm_head;
} st_weights16;
st_status st_weights16_bind(st_weights16 *w, const st_config *cfg, const st_layout *lay,
                            const uint16_t *flat);
void st_weights16_unbind(st_weights16 *w);

#endif
