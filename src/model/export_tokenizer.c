/* export_tokenizer.c - tokenizer.json (Hugging Face tokenizers schema) from GGUF tokenizer
 * metadata (ggml docs/gguf.md tokenizer.ggml.*). Byte-level BPE ("gpt2") only: vocab = tokens
 * by id, merges as "a b", token_type 3 (control) / 4 (user-defined) become added tokens, and the
 * pre-tokenizer follows tokenizer.ggml.pre the way llama.cpp llama-vocab.cpp and our GGUF
 * tokenizer loader interpret it (smollm: Digits + ByteLevel; llama-bpe: Split + ByteLevel;
 * qwen2: NFC + Split + ByteLevel; gpt2/default: ByteLevel). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/export.h"
#include "safetune/gguf.h"
#include "tokenizer/pipeline.h" /* the Llama-3 / Qwen2 split regexes (same text as HF's) */

static int str_eq(const char *s, size_t n, const char *lit) { return strlen(lit) == n && !memcmp(s, lit, n); }

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static cJSON *bytelevel(const char *type, int add_prefix_space, int trim_offsets, int use_regex) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", trim_offsets);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *split_regex(const char *re) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "Split");
    cJSON *p = cJSON_AddObjectToObject(o, "pattern");
    cJSON_AddStringToObject(p, "Regex", re);
    cJSON_AddStringToObject(o, "behavior", "Isolated");
    cJSON_AddBoolToObject(o, "invert", 0);
    return o;
}

static cJSON *seq(const char *key, cJSON *a, cJSON *b) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "Sequence");
    cJSON *arr = cJSON_AddArrayToObject(o, key);
    cJSON_AddItemToArray(arr, a);
    cJSON_AddItemToArray(arr, b);
    return o;
}

static int64_t opt_i64(const st_gguf *g, const char *key, int64_t def) {
    int64_t v;
    if (st_gguf_find_key(g, key) < 0 || st_gguf_get_i64(g, key, &v)) return def;
    return v;
}

st_status st_export_tokenizer_json_from_gguf(const char *path, char **json) {
    *json = NULL;
    st_gguf *g = NULL;
    st_status s = st_gguf_open(path, &g);
    if (s) return s;
    cJSON *root = NULL;
    const char *model, *pre = NULL;
    size_t mlen, plen = 0;
    if ((s = st_gguf_get_str(g, "tokenizer.ggml.model", &model, &mlen))) goto done;
    if (!str_eq(model, mlen, "gpt2")) {
        s = st_error(ST_ERR_UNSUPPORTED, "%s: key tokenizer.ggml.model: exporting a \"%.*s\" "
                     "tokenizer to tokenizer.json is not supported (byte-level BPE \"gpt2\" only)",
                     path, (int)mlen, model);
        goto done;
    }
    if (st_gguf_find_key(g, "tokenizer.ggml.pre") >= 0 &&
        (s = st_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &plen)))
        goto done;
    st_gguf_type et;
    uint64_t n_tok = 0, n_types = 0, n_merges = 0;
    const void *d, *types = NULL;
    if ((s = st_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_tok, &d))) goto done;
    st_gguf_type tt_type = ST_GGUF_INT32;
    if (st_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0 &&
        (s = st_gguf_get_arr(g, "tokenizer.ggml.token_type", &tt_type, &n_types, &types)))
        goto done;
    if (types && (n_types != n_tok || (tt_type != ST_GGUF_INT32 && tt_type != ST_GGUF_UINT32))) {
        s = st_error(ST_ERR_FORMAT, "%s: tokenizer.ggml.token_type: %llu entries of type %d for "
                     "%llu tokens", path, (unsigned long long)n_types, (int)tt_type,
                     (unsigned long long)n_tok);
        goto done;
    }
    if ((s = st_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n_merges, &d))) goto done;

    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON *vocab = cJSON_CreateObject();
    for (uint64_t i = 0; i < n_tok && !s; i++) {
        const char *t;
        size_t tl;
        if ((s = st_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &t, &tl))) break;
        char *z = dupn(t, tl);
        if (!z) { s = ST_ERR_NOMEM; break; }
        cJSON_AddItemToObject(vocab, z, cJSON_CreateNumber((double)i));
        int32_t ty = 1;
        if (types) memcpy(&ty, (const char *)types + 4 * i, 4);
        if (ty == 3 || ty == 4) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "id", (double)i);
            cJSON_AddStringToObject(a, "content", z);
            cJSON_AddBoolToObject(a, "single_word", 0);
            cJSON_AddBoolToObject(a, "lstrip", 0);
            cJSON_AddBoolToObject(a, "rstrip", 0);
            cJSON_AddBoolToObject(a, "normalized", ty == 4);
            cJSON_AddBoolToObject(a, "special", ty == 3);
            cJSON_AddItemToArray(added, a);
        }
        free(z);
    }
    if (s) {
        cJSON_Delete(vocab);
        goto done;
    }
    int ignore_merges = 0;
    cJSON *norm = NULL, *pt;
    if (!pre || str_eq(pre, plen, "default") || str_eq(pre, plen, "gpt2") || str_eq(pre, plen, "gpt-2")) {
        pt = bytelevel("ByteLevel", 0, 1, 1);
    } else if (str_eq(pre, plen, "smollm") || str_eq(pre, plen, "starcoder") || str_eq(pre, plen, "refact")) {
        cJSON *dg = cJSON_CreateObject();
        cJSON_AddStringToObject(dg, "type", "Digits");
        cJSON_AddBoolToObject(dg, "individual_digits", 1);
        pt = seq("pretokenizers", dg, bytelevel("ByteLevel", 0, 1, 1));
    } else if (str_eq(pre, plen, "llama-bpe") || str_eq(pre, plen, "llama3") || str_eq(pre, plen, "llama-v3")) {
        ignore_merges = 1;
        pt = seq("pretokenizers", split_regex(ST__RE_LLAMA3), bytelevel("ByteLevel", 0, 1, 0));
    } else if (str_eq(pre, plen, "qwen2") || str_eq(pre, plen, "qwen2.5") || str_eq(pre, plen, "qwen-2.5")) {
        norm = cJSON_CreateObject();
        cJSON_AddStringToObject(norm, "type", "NFC");
        pt = seq("pretokenizers", split_regex(ST__RE_QWEN2), bytelevel("ByteLevel", 0, 1, 0));
    } else {
        cJSON_Delete(vocab);
        s = st_error(ST_ERR_UNSUPPORTED, "%s: tokenizer.ggml.pre \"%.*s\" cannot be exported "
                     "(smollm, llama-bpe, qwen2, gpt2, default)", path, (int)plen, pre);
        goto done;
    }
    if (norm) cJSON_AddItemToObject(root, "normalizer", norm);
    else cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddItemToObject(root, "pre_tokenizer", pt);
    /* post-processor: BOS prepended when add_bos_token (HF TemplateProcessing), else ByteLevel */
    int add_bos = 0;
    if (st_gguf_find_key(g, "tokenizer.ggml.add_bos_token") >= 0 &&
        (s = st_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos)))
        goto done_vocab;
    int64_t bos = opt_i64(g, "tokenizer.ggml.bos_token_id", -1);
    if (add_bos && bos >= 0 && (uint64_t)bos < n_tok) {
        const char *bt;
        size_t bl;
        if ((s = st_gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)bos, &bt, &bl))) goto done_vocab;
        char *bz = dupn(bt, bl);
        cJSON *pp = cJSON_CreateObject();
        cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
        const char *which[2] = {"single", "pair"};
        for (int k = 0; k < 2; k++) {
            cJSON *arr = cJSON_AddArrayToObject(pp, which[k]);
            for (int part = 0; part < (k ? 4 : 2); part++) {
                cJSON *it = cJSON_CreateObject();
                if (part % 2 == 0) {
                    cJSON *sp = cJSON_AddObjectToObject(it, "SpecialToken");
                    cJSON_AddStringToObject(sp, "id", bz);
                    cJSON_AddNumberToObject(sp, "type_id", part / 2);
                } else {
                    cJSON *sq = cJSON_AddObjectToObject(it, "Sequence");
                    cJSON_AddStringToObject(sq, "id", part == 1 ? "A" : "B");
                    cJSON_AddNumberToObject(sq, "type_id", part / 2);
                }
                cJSON_AddItemToArray(arr, it);
            }
        }
        cJSON *stk = cJSON_AddObjectToObject(pp, "special_tokens");
        cJSON *e = cJSON_AddObjectToObject(stk, bz);
        cJSON_AddStringToObject(e, "id", bz);
        cJSON *ids = cJSON_AddArrayToObject(e, "ids");
        cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)bos));
        cJSON *toks = cJSON_AddArrayToObject(e, "tokens");
        cJSON_AddItemToArray(toks, cJSON_CreateString(bz));
        free(bz);
        cJSON_AddItemToObject(root, "post_processor", pp);
    } else {
        cJSON_AddItemToObject(root, "post_processor", bytelevel("ByteLevel", 1, 0, 1));
    }
    cJSON_AddItemToObject(root, "decoder", bytelevel("ByteLevel", 1, 1, 1));
    cJSON *mo = cJSON_CreateObject();
    cJSON_AddStringToObject(mo, "type", "BPE");
    cJSON_AddNullToObject(mo, "dropout");
    cJSON_AddNullToObject(mo, "unk_token");
    cJSON_AddNullToObject(mo, "continuing_subword_prefix");
    cJSON_AddNullToObject(mo, "end_of_word_suffix");
    cJSON_AddBoolToObject(mo, "fuse_unk", 0);
    cJSON_AddBoolToObject(mo, "byte_fallback", 0);
    cJSON_AddBoolToObject(mo, "ignore_merges", ignore_merges);
    cJSON_AddItemToObject(mo, "vocab", vocab);
    vocab = NULL;
    cJSON *merges = cJSON_AddArrayToObject(mo, "merges");
    for (uint64_t i = 0; i < n_merges && !s; i++) {
        const char *t;
        size_t tl;
        if ((s = st_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &t, &tl))) break;
        char *z = dupn(t, tl);
        if (!z) { s = ST_ERR_NOMEM; break; }
        cJSON_AddItemToArray(merges, cJSON_CreateString(z));
        free(z);
    }
    cJSON_AddItemToObject(root, "model", mo);
    if (!s) {
        char *txt = cJSON_PrintUnformatted(root);
        if (!txt) s = ST_ERR_NOMEM;
        else {
            *json = st_strdup(txt);
            cJSON_free(txt);
            if (!*json) s = ST_ERR_NOMEM;
        }
    }
done_vocab:
    cJSON_Delete(vocab);
done:
    cJSON_Delete(root);
    st_gguf_close(g);
    return s;
}
