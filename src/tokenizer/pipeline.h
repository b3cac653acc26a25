/* pipeline.h - private builders for the tokenizer pipeline (see pipeline.c). */
#ifndef SAFETUNE_TOK_PIPELINE_H
#define SAFETUNE_TOK_PIPELINE_H

#include "tokenizer/tok_internal.h"

extern const char *const ST__RE_GPT2;
extern const char *const ST__RE_LLAMA3;
extern const char *const ST__RE_QWEN2;

st_status st__add_norm(st_tokenizer *t, st__norm_kind k, const char *a, const char *b);
st_status st__add_pre(st_tokenizer *t, const st__pretok *p); /* takes ownership of p->re */
st_status st__add_pre_bytelevel(st_tokenizer *t, int add_prefix_space, int use_regex, const char *where);
st_status st__add_pre_split(st_tokenizer *t, const char *regex, st__split_behavior b, const char *where);
st_status st__add_dec(st_tokenizer *t, st__dec_kind k, const char *a, const char *b, int start, int stop,
                      int scheme);
/* Merge (a, b) with the given rank; errors (naming `where`) if a, b or a+b is not a token. */
st_status st__add_merge(st_tokenizer *t, const char *a, size_t al, const char *b, size_t bl, int32_t rank,
                        const char *where);
st_status st__set_post(st_tokenizer *t, const int32_t *prefix, int np, const int32_t *suffix, int ns);

#endif
