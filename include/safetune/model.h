/* model.h - a loaded model: config, flat fp32 weights, tokenizer and chat template; what the
 * file gave, nothing a run builds around it (inference state: st_infer_ctx, forward.h).
 * MODEL is a .gguf file or a Hugging Face checkpoint folder (config.json + model.safetensors or
 * model.safetensors.index.json + tokenizer.json [+ tokenizer_config.json chat_template]). */
#ifndef SAFETUNE_MODEL_H
#define SAFETUNE_MODEL_H

#include "safetune/chat.h"
#include "safetune/config.h"
#include "safetune/tokenizer.h"
#include "safetune/weights.h"

typedef struct {
    st_config config;
    st_layout layout;
    float *params;          /* flat buffer, layout.n_floats floats, 64-byte aligned */
    st_weights w;           /* views into params */
    st_tokenizer *tokenizer;
    st_chat_template chat;  /* detected from the checkpoint, else ChatML */
    int has_chat_template;
    char *source_path;
    char *chat_template_src; /* raw Jinja source, or NULL */
} st_model;

/* Load MODEL (GGUF file or HF folder); dequantises to fp32 and un-permutes GGUF Q/K.
 * Errors name the file and what is wrong (missing tensor, shape mismatch vs config, ...).
 * A PEFT LoRA adapter folder (adapter_config.json, no config.json) loads its base model
 * (base_model_name_or_path; relative to the adapter folder) with the adapter merged in (lora.h). */
st_status st_model_load(const char *path, st_model **out);
/* Base model `base` with the PEFT LoRA adapter folder `adapter_dir` merged into its weights;
 * an adapter made for another base model is refused naming the tensor (lora.h). */
st_status st_model_load_with_adapter(const char *base, const char *adapter_dir, st_model **out);
/* Config + flat weights only (no tokenizer / chat template): GGUF file or HF folder. */
st_status st_model_load_weights(const char *path, st_model **out);
/* Tokenizer + chat template only (no config, no weights; params NULL): a .gguf file, a folder
 * with tokenizer.json [+ tokenizer_config.json chat_template] (a Hugging Face checkpoint or a
 * tokenizer alone), or a tokenizer.json file (chat template from a tokenizer_config.json beside
 * it). Errors name the path. For inspecting ids and masks (safetune tokenize). */
st_status st_model_load_tokenizer(const char *path, st_model **out);
/* A model with zeroed weights for cfg (tests, random init); no tokenizer. */
st_status st_model_new(const st_config *cfg, st_model **out);
void st_model_free(st_model *m);

#endif
