/* tokenizer.h - byte-level BPE (GPT-2 style: SmolLM2, Llama-3, Qwen2; pre-tokenizer regex via
 * PCRE2) and SentencePiece-style BPE with byte fallback (Llama-2, TinyLlama, Mistral), with
 * added/special tokens. Loaded from tokenizer.json or GGUF metadata (tokenizer.ggml.*).
 * Reference: Hugging Face `tokenizers` (ids must match exactly). */
#ifndef SAFETUNE_TOKENIZER_H
#define SAFETUNE_TOKENIZER_H

#include "safetune/base.h"
#include "safetune/gguf.h"

typedef enum { ST_TOK_BYTE_LEVEL_BPE = 0, ST_TOK_SPM_BPE = 1 } st_tokenizer_kind;

typedef struct st_tokenizer st_tokenizer;

/* Load a Hugging Face tokenizer.json (model.type BPE; byte-level or SentencePiece-style via
 * normalizer/decoder). Errors name the file and the missing/invalid field. */
st_status st_tokenizer_from_json(const char *path, st_tokenizer **out);
/* Load from GGUF metadata: tokenizer.ggml.model (gpt2|llama), .pre, .tokens, .merges|.scores,
 * .token_type, special token ids. */
st_status st_tokenizer_from_gguf(const st_gguf *g, st_tokenizer **out);
void st_tokenizer_free(st_tokenizer *t);

st_tokenizer_kind st_tokenizer_kind_of(const st_tokenizer *t);
int32_t st_tokenizer_vocab_size(const st_tokenizer *t);
int32_t st_tokenizer_bos_id(const st_tokenizer *t); /* -1 if none */
int32_t st_tokenizer_eos_id(const st_tokenizer *t); /* -1 if none */
/* Whether encode(..., add_special=1) prepends BOS (HF post-processor / add_bos_token). */
int st_tokenizer_adds_bos(const st_tokenizer *t);
/* Token text as stored in the vocabulary (e.g. "Ġhello", "▁hello", "<|im_end|>"); NULL if out
 * of range. */
const char *st_tokenizer_token(const st_tokenizer *t, int32_t id);
/* Id of an exact vocabulary/added token string, or -1. */
int32_t st_tokenizer_find(const st_tokenizer *t, const char *token);
int st_tokenizer_is_special(const st_tokenizer *t, int32_t id);

/* Encode UTF-8 text (len bytes; invalid UTF-8 handled as HF does). parse_special = 1 matches
 * added/special token strings in the text (HF default); 0 treats them as plain text (HF
 * encode_special_tokens = True). add_special = 1 applies the post-processor (BOS).
 * *ids is heap-allocated, caller frees. */
st_status st_tokenizer_encode(const st_tokenizer *t, const char *text, size_t len,
                              int parse_special, int add_special, int32_t **ids, size_t *n_ids);
/* Decode ids to UTF-8 (HF decode with skip_special_tokens as given). Heap string. */
st_status st_tokenizer_decode(const st_tokenizer *t, const int32_t *ids, size_t n,
                              int skip_special, char **text, size_t *len);
/* Raw bytes of one token (byte-level/byte-fallback decoded, "▁" -> " "), for streaming output.
 * Returns length written (<= cap) or -1. */
int st_tokenizer_token_bytes(const st_tokenizer *t, int32_t id, char *buf, int cap);

#endif
