/* config.h - model hyper-parameters with Hugging Face config.json names.
 * Source: transformers LlamaConfig / Qwen2Config; GGUF keys per llama.cpp (llama.*, qwen2.*). */
#ifndef SAFETUNE_CONFIG_H
#define SAFETUNE_CONFIG_H

#include "safetune/base.h"

typedef enum { ST_ARCH_LLAMA = 0, ST_ARCH_QWEN2 = 1 } st_arch;

typedef enum {
    ST_ROPE_SCALING_NONE = 0,
    ST_ROPE_SCALING_LINEAR = 1,
    ST_ROPE_SCALING_LLAMA3 = 2 /* transformers _compute_llama3_parameters */
} st_rope_scaling_type;

typedef struct {
    st_arch arch;
    int hidden_size;             /* C */
    int intermediate_size;       /* I (SwiGLU) */
    int num_hidden_layers;       /* L */
    int num_attention_heads;     /* H */
    int num_key_value_heads;     /* KV (GQA: H % KV == 0) */
    int head_dim;                /* D, usually C / H */
    int vocab_size;              /* V */
    int max_position_embeddings;
    float rope_theta;
    float rms_norm_eps;
    int tie_word_embeddings;     /* lm_head shares embed_tokens */
    int attention_bias;          /* q/k/v projections have bias (Qwen2) */
    struct {
        st_rope_scaling_type type;
        float factor;
        float low_freq_factor, high_freq_factor;  /* llama3 */
        int original_max_position_embeddings;     /* llama3 */
    } rope_scaling;
    int bos_token_id, eos_token_id; /* -1 if absent */
} st_config;

/* Parse a Hugging Face config.json ("architectures"/"model_type" llama|qwen2). Unknown
 * architectures give ST_ERR_UNSUPPORTED naming the file. */
st_status st_config_from_hf_json(const char *path, st_config *cfg);
/* Serialise to config.json text (heap string, caller frees). */
st_status st_config_to_hf_json(const st_config *cfg, char **json);
/* Parse config.json text already in memory; `source` names it in messages. */
st_status st_config_from_hf_json_text(const char *json, const char *source, st_config *cfg);
/* Check internal consistency (positive sizes, H % KV, head_dim*H, ...); `source` names the file
 * in the message. */
st_status st_config_validate(const st_config *cfg, const char *source);

/* RoPE inverse frequencies inv[D/2] (double) = theta^(-2i/D), with rope_scaling applied
 * (linear: /factor; llama3: transformers _compute_llama3_parameters). */
void st_config_rope_inv_freq(const st_config *cfg, double *inv);

#endif
