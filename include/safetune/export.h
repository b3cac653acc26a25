/* export.h - save trained weights (live or EMA: any flat buffer of the model's layout) as a
 * Hugging Face folder or a GGUF file. Both are written atomically (temp folder/file + rename);
 * exported models load back with st_model_load with identical weights (F32) and in Python
 * (safetensors, tokenizers, transformers-style loaders).
 * Sources: safetensors README; ggml docs/gguf.md; llama.cpp convert_hf_to_gguf.py (llama arch
 * keys, Q/K permute); Hugging Face tokenizers tokenizer.json schema. */
#ifndef SAFETUNE_EXPORT_H
#define SAFETUNE_EXPORT_H

#include "safetune/model.h"

typedef enum { ST_EXPORT_F32 = 0, ST_EXPORT_BF16 = 1, ST_EXPORT_F16 = 2 } st_export_dtype;

/* "f32" | "bf16" | "f16" (any case) -> dtype; ST_ERR_ARG otherwise. */
st_status st_export_dtype_parse(const char *name, st_export_dtype *out);

/* Folder dir/ with config.json (st_config_to_hf_json), model.safetensors (F32 or BF16; F16 is
 * ST_ERR_UNSUPPORTED), tokenizer.json + tokenizer_config.json (chat_template): copied from an HF
 * source folder, or generated from the source GGUF's tokenizer.ggml.* metadata. params: the
 * model's flat layout (m->params for live weights, or the EMA buffer). Built in
 * "<dir>.tmp.<pid>" and renamed into place (an existing dir is replaced only when complete). */
st_status st_export_hf(const st_model *m, const float *params, const char *dir,
                       st_export_dtype dtype);

/* GGUF v3 file: general.* + <arch>.* hyper-parameter keys (llama.cpp names), tensors under GGUF
 * names with Q/K rows permuted back to llama.cpp's interleaved layout (llama arch), stored as
 * F32 / F16 / BF16; tokenizer.* keys copied from the source GGUF (an HF source gives a GGUF
 * without tokenizer metadata and a warning). Atomic (temp file + rename). */
st_status st_export_gguf(const st_model *m, const float *params, const char *path,
                         st_export_dtype dtype);

/* tokenizer.json (HF schema, byte-level BPE) built from GGUF metadata (tokenizer.ggml.model
 * "gpt2": tokens, token_type, merges, pre); heap JSON text. ST_ERR_UNSUPPORTED for other
 * tokenizer models (e.g. SentencePiece "llama"). */
st_status st_export_tokenizer_json_from_gguf(const char *gguf_path, char **json);

#endif
