/* pipeline.c - builders shared by the tokenizer.json and GGUF loaders: normalizer, pre-tokenizer
 * and decoder steps, merges, and the pre-tokenizer regexes of the Llama-family tokenizers. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/pipeline.h"

/* GPT-2 (HF ByteLevel use_regex=true, pre_tokenizers/byte_level.rs). */
const char *const ST__RE_GPT2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Llama-3 tokenizer.json Split pattern. */
const char *const ST__RE_LLAMA3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* Qwen2 tokenizer.json Split pattern. */
const char *const ST__RE_QWEN2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static char *dup_or_null(const char *s) { return s ? st_strdup(s) : NULL; }

st_status st__add_norm(st_tokenizer *t, st__norm_kind k, const char *a, const char *b) {
    st__norm *n = st_realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *n);
    if (!n) return ST_ERR_NOMEM;
    t->norm = n;
    n[t->n_norm] = (st__norm){k, dup_or_null(a), dup_or_null(b)};
    t->n_norm++;
    return ST_OK;
}

st_status st__add_pre(st_tokenizer *t, const st__pretok *p) {
    st__pretok *n = st_realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *n);
    if (!n) return ST_ERR_NOMEM;
    t->pre = n;
    n[t->n_pre++] = *p;
    if (p->kind == ST__PT_BYTELEVEL) t->byte_level = 1;
    return ST_OK;
}

st_status st__add_pre_bytelevel(st_tokenizer *t, int add_prefix_space, int use_regex, const char *where) {
    st__pretok p = {.kind = ST__PT_BYTELEVEL, .add_prefix_space = add_prefix_space};
    if (use_regex) {
        st_status s = st__regex_compile(ST__RE_GPT2, where, &p.re);
        if (s) return s;
    }
    st_status s = st__add_pre(t, &p);
    if (s && p.re) pcre2_code_free(p.re);
    return s;
}

st_status st__add_pre_split(st_tokenizer *t, const char *regex, st__split_behavior b, const char *where) {
    st__pretok p = {.kind = ST__PT_SPLIT, .behavior = b};
    st_status s = st__regex_compile(regex, where, &p.re);
    if (s) return s;
    s = st__add_pre(t, &p);
    if (s) pcre2_code_free(p.re);
    return s;
}

st_status st__add_dec(st_tokenizer *t, st__dec_kind k, const char *a, const char *b, int start, int stop,
                      int scheme) {
    st__dec *n = st_realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *n);
    if (!n) return ST_ERR_NOMEM;
    t->dec = n;
    n[t->n_dec++] = (st__dec){k, dup_or_null(a), dup_or_null(b), start, stop, scheme};
    return ST_OK;
}

st_status st__add_merge(st_tokenizer *t, const char *a, size_t al, const char *b, size_t bl, int32_t rank,
                        const char *where) {
    int32_t ia = st__strmap_get(&t->vocab, a, al), ib = st__strmap_get(&t->vocab, b, bl);
    char stackbuf[512];
    char *ab = al + bl <= sizeof stackbuf ? stackbuf : st_malloc(al + bl);
    if (!ab) return ST_ERR_NOMEM;
    memcpy(ab, a, al);
    memcpy(ab + al, b, bl);
    int32_t im = st__strmap_get(&t->vocab, ab, al + bl);
    if (ab != stackbuf) free(ab);
    if (ia < 0 || ib < 0 || im < 0)
        return st_error(ST_ERR_FORMAT, "%s: merge %d (\"%.*s\" + \"%.*s\") uses a token missing from the vocabulary",
                        where, (int)rank, (int)al, a, (int)bl, b);
    return st__pairmap_put(&t->merges, ia, ib, rank, im);
}

st_status st__set_post(st_tokenizer *t, const int32_t *prefix, int np, const int32_t *suffix, int ns) {
    free(t->post_prefix);
    free(t->post_suffix);
    t->post_prefix = t->post_suffix = NULL;
    t->n_post_prefix = t->n_post_suffix = 0;
    if (np) {
        t->post_prefix = st_malloc((size_t)np * sizeof(int32_t));
        if (!t->post_prefix) return ST_ERR_NOMEM;
        memcpy(t->post_prefix, prefix, (size_t)np * sizeof(int32_t));
        t->n_post_prefix = np;
    }
    if (ns) {
        t->post_suffix = st_malloc((size_t)ns * sizeof(int32_t));
        if (!t->post_suffix) return ST_ERR_NOMEM;
        memcpy(t->post_suffix, suffix, (size_t)ns * sizeof(int32_t));
        t->n_post_suffix = ns;
    }
    return ST_OK;
}
