/* tokenizer_gguf.c - build a tokenizer from GGUF metadata (ggml docs/gguf.md "tokenizer.ggml.*"):
 * model gpt2 = byte-level BPE with merges, pre-tokenizer chosen by tokenizer.ggml.pre as in
 * llama.cpp llama-vocab.cpp (expressed as the equivalent HF pre-tokenizer chain); model llama =
 * SentencePiece-style BPE whose merges are derived from the scores as HF's LlamaConverter does
 * (SentencePieceExtractor), with <0xNN> byte fallback. token_type 3 = control (special added
 * token), 4 = user-defined (added token), 6 = byte. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/pipeline.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* A special-token id key (tokenizer.ggml.*_token_id): def when absent; ST_ERR_FORMAT naming the
 * key and its value when present but not an id of the n-token vocabulary. */
static st_status special_id(const st_gguf *g, const char *path, const char *key, int64_t def, int32_t n,
                            int32_t *out) {
    *out = (int32_t)def;
    if (st_gguf_find_key(g, key) < 0) return ST_OK;
    int64_t v;
    if (st_gguf_get_i64(g, key, &v))
        return st_error(ST_ERR_FORMAT, "%s: key %s is not an integer (a token id of the %d-token vocabulary)", path,
                        key, n);
    if (v < 0 || v >= n)
        return st_error(ST_ERR_FORMAT, "%s: %s = %lld is outside the vocabulary (ids 0..%d); fix the metadata (e.g. "
                        "gguf-py's gguf_set_metadata.py) or remove the key", path, key, (long long)v, n - 1);
    *out = (int32_t)v;
    return ST_OK;
}

static int opt_bool(const st_gguf *g, const char *key, int def) {
    int v;
    if (st_gguf_find_key(g, key) < 0 || st_gguf_get_bool(g, key, &v)) return def;
    return v;
}

static int str_eq(const char *s, size_t n, const char *lit) { return strlen(lit) == n && !memcmp(s, lit, n); }

/* Pre-tokenizer per tokenizer.ggml.pre. */
static st_status gpt2_pre(st_tokenizer *t, const char *pre, size_t n, const char *path) {
    char where[1200];
    snprintf(where, sizeof where, "%s: tokenizer.ggml.pre", path);
    if (!pre || str_eq(pre, n, "default") || str_eq(pre, n, "gpt2") || str_eq(pre, n, "gpt-2"))
        return st__add_pre_bytelevel(t, 0, 1, where);
    if (str_eq(pre, n, "smollm") || str_eq(pre, n, "starcoder") || str_eq(pre, n, "refact")) {
        st__pretok d = {.kind = ST__PT_DIGITS, .individual_digits = 1};
        st_status s = st__add_pre(t, &d);
        return s ? s : st__add_pre_bytelevel(t, 0, 1, where);
    }
    if (str_eq(pre, n, "llama-bpe") || str_eq(pre, n, "llama3") || str_eq(pre, n, "llama-v3")) {
        t->ignore_merges = 1;
        st_status s = st__add_pre_split(t, ST__RE_LLAMA3, ST__SPLIT_ISOLATED, where);
        return s ? s : st__add_pre_bytelevel(t, 0, 0, where);
    }
    if (str_eq(pre, n, "qwen2") || str_eq(pre, n, "qwen2.5") || str_eq(pre, n, "qwen-2.5")) {
        st_status s = st__add_norm(t, ST__NORM_NFC, NULL, NULL);
        if (!s) s = st__add_pre_split(t, ST__RE_QWEN2, ST__SPLIT_ISOLATED, where);
        return s ? s : st__add_pre_bytelevel(t, 0, 0, where);
    }
    return st_error(ST_ERR_UNSUPPORTED,
                    "%s: tokenizer.ggml.pre \"%.*s\" is not supported (smollm, llama-bpe, qwen2, gpt2, default)",
                    path, (int)n, pre);
}

typedef struct { float score; int32_t merged, l, r; } spm_merge;
static int cmp_spm(const void *x, const void *y) {
    const spm_merge *a = x, *b = y;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->merged != b->merged) return a->merged < b->merged ? -1 : 1;
    if (a->l != b->l) return a->l < b->l ? -1 : 1;
    return a->r < b->r ? -1 : a->r > b->r;
}

/* HF SentencePieceExtractor: every split of a piece into two pieces of the vocabulary is a merge;
 * merges are ordered by the merged piece's score (descending), then vocabulary order. */
static st_status spm_merges(st_tokenizer *t, const float *scores, int32_t n) {
    spm_merge *m = NULL;
    size_t nm = 0, cap = 0;
    for (int32_t id = 0; id < n; id++) {
        const char *s = t->tok[id];
        size_t len = t->tok_len[id];
        for (size_t k = 1; k < len; k++) {
            if (((uint8_t)s[k] & 0xC0) == 0x80) continue; /* split at code point boundaries */
            int32_t l = st__strmap_get(&t->vocab, s, k), r = st__strmap_get(&t->vocab, s + k, len - k);
            if (l < 0 || r < 0) continue;
            if (nm == cap) {
                cap = cap ? cap * 2 : 4096;
                spm_merge *nv = st_realloc(m, cap * sizeof *nv);
                if (!nv) {
                    free(m);
                    return ST_ERR_NOMEM;
                }
                m = nv;
            }
            m[nm++] = (spm_merge){scores ? scores[id] : 0.0f, id, l, r};
        }
    }
    if (nm) qsort(m, nm, sizeof *m, cmp_spm); /* m is NULL when no merge was found */
    st_status s = ST_OK;
    for (size_t i = 0; i < nm && !s; i++) s = st__pairmap_put(&t->merges, m[i].l, m[i].r, (int32_t)i, m[i].merged);
    free(m);
    return s;
}

st_status st_tokenizer_from_gguf(const st_gguf *g, st_tokenizer **out) {
    *out = NULL;
    const char *path = st_gguf_path(g);
    const char *model = NULL, *pre = NULL;
    size_t model_len = 0, pre_len = 0;
    if (st_gguf_find_key(g, "tokenizer.ggml.model") < 0)
        return st_error(ST_ERR_FORMAT, "%s: key tokenizer.ggml.model is missing (no tokenizer in this GGUF)", path);
    st_status s = st_gguf_get_str(g, "tokenizer.ggml.model", &model, &model_len);
    if (s) return s;
    int is_gpt2 = str_eq(model, model_len, "gpt2"), is_llama = str_eq(model, model_len, "llama");
    if (!is_gpt2 && !is_llama)
        return st_error(ST_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model \"%.*s\" is not supported (gpt2, llama)", path,
                        (int)model_len, model);
    if (st_gguf_find_key(g, "tokenizer.ggml.pre") >= 0 && (s = st_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pre_len)))
        return s;
    if (st_gguf_find_key(g, "tokenizer.ggml.tokens") < 0)
        return st_error(ST_ERR_FORMAT, "%s: key tokenizer.ggml.tokens is missing", path);
    st_gguf_type et;
    uint64_t n_tok = 0;
    const void *unused;
    if ((s = st_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_tok, &unused))) return s;
    if (et != ST_GGUF_STRING || n_tok == 0 || n_tok > (1u << 26))
        return st_error(ST_ERR_FORMAT, "%s: key tokenizer.ggml.tokens: expected a non-empty string array", path);
    const int32_t *types_raw = NULL;
    const float *scores_raw = NULL;
    uint64_t cnt;
    if (st_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        if ((s = st_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &cnt, (const void **)&types_raw))) return s;
        if (et != ST_GGUF_INT32 || cnt != n_tok)
            return st_error(ST_ERR_FORMAT, "%s: key tokenizer.ggml.token_type: expected %llu int32 values", path,
                            (unsigned long long)n_tok);
    }
    if (st_gguf_find_key(g, "tokenizer.ggml.scores") >= 0) {
        if ((s = st_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &cnt, (const void **)&scores_raw))) return s;
        if (et != ST_GGUF_FLOAT32 || cnt != n_tok)
            return st_error(ST_ERR_FORMAT, "%s: key tokenizer.ggml.scores: expected %llu float32 values", path,
                            (unsigned long long)n_tok);
    }
    st_tokenizer *t = st__tok_new(path);
    int32_t *types = NULL;
    float *scores = NULL;
    if (!t) return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
    int32_t n = (int32_t)n_tok;
    types = st_malloc((size_t)n * sizeof *types);
    scores = st_malloc((size_t)n * sizeof *scores);
    if (!types || !scores || st__tok_set_vocab_size(t, n)) s = ST_ERR_NOMEM;
    for (int32_t i = 0; i < n && !s; i++) {
        types[i] = TT_NORMAL;
        scores[i] = 0.0f;
        if (types_raw) memcpy(&types[i], (const char *)types_raw + 4 * (size_t)i, 4); /* unaligned */
        if (scores_raw) memcpy(&scores[i], (const char *)scores_raw + 4 * (size_t)i, 4);
        const char *ts;
        size_t tl;
        if ((s = st_gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &ts, &tl))) break;
        if ((s = st__tok_set_token(t, i, ts, tl))) break;
        s = st__strmap_put(&t->vocab, t->tok[i], t->tok_len[i], i);
    }
    /* added tokens */
    for (int32_t i = 0; i < n && !s; i++) {
        if ((types[i] != TT_CONTROL && types[i] != TT_USER) || t->tok_len[i] == 0) continue;
        st__added a = {t->tok[i], t->tok_len[i], i, (uint8_t)(types[i] == TT_CONTROL), 0, 0, 0, 0};
        s = st__tok_add_added(t, &a);
    }
    char where[1200];
    snprintf(where, sizeof where, "%s: key tokenizer.ggml.merges", path);
    if (!s && is_gpt2) {
        t->kind = ST_TOK_BYTE_LEVEL_BPE;
        if (st_gguf_find_key(g, "tokenizer.ggml.merges") < 0) {
            s = st_error(ST_ERR_FORMAT, "%s: key tokenizer.ggml.merges is missing (needed for a gpt2 tokenizer)", path);
        } else {
            uint64_t nm = 0;
            s = st_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, &unused);
            if (!s && et != ST_GGUF_STRING) s = st_error(ST_ERR_FORMAT, "%s: expected a string array", where);
            for (uint64_t i = 0; i < nm && !s; i++) {
                const char *ms;
                size_t ml;
                if ((s = st_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &ms, &ml))) break;
                const char *sp = ml > 1 ? memchr(ms + 1, ' ', ml - 1) : NULL;
                if (!sp) {
                    s = st_error(ST_ERR_FORMAT, "%s[%llu]: \"%.*s\" is not \"left right\"", where, (unsigned long long)i,
                                 (int)ml, ms);
                    break;
                }
                s = st__add_merge(t, ms, (size_t)(sp - ms), sp + 1, ml - (size_t)(sp - ms) - 1, (int32_t)i, where);
            }
        }
        if (!s) s = gpt2_pre(t, pre, pre_len, path);
        if (!s) s = st__add_dec(t, ST__DEC_BYTELEVEL, NULL, NULL, 0, 0, 0);
    } else if (!s) {
        t->kind = ST_TOK_SPM_BPE;
        t->byte_fallback = 1;
        t->fuse_unk = 1;
        int prefix = opt_bool(g, "tokenizer.ggml.add_space_prefix", 1);
        if (prefix) s = st__add_norm(t, ST__NORM_PREPEND, "\xE2\x96\x81", NULL);
        if (!s) s = st__add_norm(t, ST__NORM_REPLACE, " ", "\xE2\x96\x81");
        if (!s) s = spm_merges(t, scores, n);
        if (!s) s = st__add_dec(t, ST__DEC_REPLACE, "\xE2\x96\x81", " ", 0, 0, 0);
        if (!s) s = st__add_dec(t, ST__DEC_BYTEFALLBACK, NULL, NULL, 0, 0, 0);
        if (!s) s = st__add_dec(t, ST__DEC_FUSE, NULL, NULL, 0, 0, 0);
        if (!s && prefix) s = st__add_dec(t, ST__DEC_STRIP, " ", NULL, 1, 0, 0);
    }
    if (!s) {
        int32_t bos = -1, eos = -1, pad = -1, unk = -1, sep = -1, cls = -1, mask = -1, eot = -1, eom = -1;
        static const char *const K[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                        "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id",
                                        "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.cls_token_id",
                                        "tokenizer.ggml.mask_token_id", "tokenizer.ggml.eot_token_id",
                                        "tokenizer.ggml.eom_token_id"};
        int32_t *const V[] = {&bos, &eos, &pad, &unk, &sep, &cls, &mask, &eot, &eom};
        for (size_t k = 0; k < sizeof K / sizeof *K && !s; k++)
            s = special_id(g, path, K[k], k == 3 && is_llama && n > 0 ? 0 : -1, n, V[k]);
        if (s) goto out;
        t->bos_id = bos;
        t->eos_id = eos;
        t->pad_id = pad;
        if (is_llama) t->unk_id = unk;
        int add_bos = opt_bool(g, "tokenizer.ggml.add_bos_token", is_llama);
        int add_eos = opt_bool(g, "tokenizer.ggml.add_eos_token", 0);
        int32_t b = t->bos_id, e = t->eos_id;
        s = st__set_post(t, &b, add_bos && b >= 0, &e, add_eos && e >= 0);
    }
out:
    if (!s) s = st__tok_finish(t);
    free(types);
    free(scores);
    if (s) {
        if (s == ST_ERR_NOMEM) st_error(s, "%s: out of memory while loading the tokenizer", path);
        st_tokenizer_free(t);
        return s;
    }
    *out = t;
    return ST_OK;
}
