/* tokenizer_json.c - load a Hugging Face tokenizer.json (tokenizers serialization format): model
 * BPE (vocab, merges as "a b" strings or [a, b] pairs, unk_token, byte_fallback, fuse_unk,
 * ignore_merges), added_tokens, normalizer, pre_tokenizer, post_processor (TemplateProcessing),
 * decoder. BOS/EOS come from a sibling tokenizer_config.json when present. */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "tokenizer/pipeline.h"

#define GET(o, k) cJSON_GetObjectItemCaseSensitive((o), (k))

static int jbool(const cJSON *o, const char *k, int def) {
    const cJSON *v = GET(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = GET(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char *jtype(const cJSON *o) { return o ? jstr(o, "type") : NULL; }

/* Pattern {"String": s} or {"Regex": r}. */
static st_status pattern_of(const cJSON *o, const char *path, const char *field, const char **str,
                            const char **regex) {
    const cJSON *p = GET(o, "pattern");
    *str = p ? jstr(p, "String") : NULL;
    *regex = p ? jstr(p, "Regex") : NULL;
    if (!*str && !*regex)
        return st_error(ST_ERR_FORMAT, "%s: %s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", path, field);
    return ST_OK;
}

static st_status load_normalizer(st_tokenizer *t, const cJSON *n, const char *path) {
    if (!n || cJSON_IsNull(n)) return ST_OK;
    const char *ty = jtype(n);
    if (!ty) return st_error(ST_ERR_FORMAT, "%s: normalizer: missing \"type\"", path);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, GET(n, "normalizers")) {
            st_status s = load_normalizer(t, it, path);
            if (s) return s;
        }
        return ST_OK;
    }
    if (!strcmp(ty, "NFC")) return st__add_norm(t, ST__NORM_NFC, NULL, NULL);
    if (!strcmp(ty, "Prepend")) {
        const char *p = jstr(n, "prepend");
        if (!p) return st_error(ST_ERR_FORMAT, "%s: normalizer Prepend: missing \"prepend\"", path);
        return st__add_norm(t, ST__NORM_PREPEND, p, NULL);
    }
    if (!strcmp(ty, "Replace")) {
        const char *s, *r, *c = jstr(n, "content");
        st_status st = pattern_of(n, path, "normalizer Replace", &s, &r);
        if (st) return st;
        if (!s) return st_error(ST_ERR_UNSUPPORTED, "%s: normalizer Replace with a Regex pattern is not supported", path);
        if (!c) return st_error(ST_ERR_FORMAT, "%s: normalizer Replace: missing \"content\"", path);
        return st__add_norm(t, ST__NORM_REPLACE, s, c);
    }
    return st_error(ST_ERR_UNSUPPORTED, "%s: normalizer type \"%s\" is not supported (NFC, Prepend, Replace, Sequence)",
                    path, ty);
}

static st_status behavior_of(const char *b, const char *path, st__split_behavior *out) {
    if (!b || !strcmp(b, "Isolated")) *out = ST__SPLIT_ISOLATED;
    else if (!strcmp(b, "Removed")) *out = ST__SPLIT_REMOVED;
    else if (!strcmp(b, "MergedWithPrevious")) *out = ST__SPLIT_MERGED_PREV;
    else if (!strcmp(b, "MergedWithNext")) *out = ST__SPLIT_MERGED_NEXT;
    else if (!strcmp(b, "Contiguous")) *out = ST__SPLIT_CONTIGUOUS;
    else return st_error(ST_ERR_UNSUPPORTED, "%s: pre_tokenizer Split: unknown behavior \"%s\"", path, b);
    return ST_OK;
}

static st_status load_pretok(st_tokenizer *t, const cJSON *p, const char *path) {
    if (!p || cJSON_IsNull(p)) return ST_OK;
    const char *ty = jtype(p);
    char where[1200];
    snprintf(where, sizeof where, "%s: pre_tokenizer", path);
    if (!ty) return st_error(ST_ERR_FORMAT, "%s: missing \"type\"", where);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, GET(p, "pretokenizers")) {
            st_status s = load_pretok(t, it, path);
            if (s) return s;
        }
        return ST_OK;
    }
    if (!strcmp(ty, "ByteLevel"))
        return st__add_pre_bytelevel(t, jbool(p, "add_prefix_space", 1), jbool(p, "use_regex", 1), where);
    if (!strcmp(ty, "Digits")) {
        st__pretok d = {.kind = ST__PT_DIGITS, .individual_digits = jbool(p, "individual_digits", 0)};
        return st__add_pre(t, &d);
    }
    if (!strcmp(ty, "WhitespaceSplit")) {
        st__pretok d = {.kind = ST__PT_WSPLIT};
        return st__add_pre(t, &d);
    }
    if (!strcmp(ty, "Split")) {
        const char *s, *r;
        st_status st = pattern_of(p, path, "pre_tokenizer Split", &s, &r);
        if (st) return st;
        if (jbool(p, "invert", 0))
            return st_error(ST_ERR_UNSUPPORTED, "%s: Split with invert = true is not supported", where);
        st__split_behavior b = ST__SPLIT_ISOLATED;
        if ((st = behavior_of(jstr(p, "behavior"), path, &b))) return st;
        if (r) return st__add_pre_split(t, r, b, where);
        /* literal string: escape it as a regex */
        st__bytes esc = {0};
        st = st__bytes_append(&esc, "\\Q", 2);
        if (!st) st = st__bytes_append(&esc, s, strlen(s));
        if (!st) st = st__bytes_append(&esc, "\\E", 2);
        if (!st) st = st__add_pre_split(t, esc.v, b, where);
        free(esc.v);
        return st;
    }
    if (!strcmp(ty, "Metaspace")) {
        st__pretok d = {.kind = ST__PT_METASPACE, .split = jbool(p, "split", 1)};
        const char *rep = jstr(p, "replacement");
        if (!rep) rep = "\xE2\x96\x81";
        if (strlen(rep) >= sizeof d.replacement)
            return st_error(ST_ERR_FORMAT, "%s: Metaspace replacement too long", where);
        strcpy(d.replacement, rep);
        const char *sch = jstr(p, "prepend_scheme");
        if (sch) d.prepend_scheme = !strcmp(sch, "first") ? 1 : !strcmp(sch, "never") ? 2 : 0;
        else d.prepend_scheme = jbool(p, "add_prefix_space", 1) ? 0 : 2;
        return st__add_pre(t, &d);
    }
    return st_error(ST_ERR_UNSUPPORTED,
                    "%s: type \"%s\" is not supported (ByteLevel, Split, Digits, Metaspace, WhitespaceSplit, Sequence)",
                    where, ty);
}

static st_status load_decoder(st_tokenizer *t, const cJSON *d, const char *path) {
    if (!d || cJSON_IsNull(d)) return ST_OK;
    const char *ty = jtype(d);
    if (!ty) return st_error(ST_ERR_FORMAT, "%s: decoder: missing \"type\"", path);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, GET(d, "decoders")) {
            st_status s = load_decoder(t, it, path);
            if (s) return s;
        }
        return ST_OK;
    }
    if (!strcmp(ty, "ByteLevel")) return st__add_dec(t, ST__DEC_BYTELEVEL, NULL, NULL, 0, 0, 0);
    if (!strcmp(ty, "ByteFallback")) return st__add_dec(t, ST__DEC_BYTEFALLBACK, NULL, NULL, 0, 0, 0);
    if (!strcmp(ty, "Fuse")) return st__add_dec(t, ST__DEC_FUSE, NULL, NULL, 0, 0, 0);
    if (!strcmp(ty, "Replace")) {
        const char *s, *r, *c = jstr(d, "content");
        st_status st = pattern_of(d, path, "decoder Replace", &s, &r);
        if (st) return st;
        if (!s || !c) return st_error(ST_ERR_UNSUPPORTED, "%s: decoder Replace needs a String pattern and content", path);
        return st__add_dec(t, ST__DEC_REPLACE, s, c, 0, 0, 0);
    }
    if (!strcmp(ty, "Strip")) {
        const char *c = jstr(d, "content");
        const cJSON *a = GET(d, "start"), *b = GET(d, "stop");
        return st__add_dec(t, ST__DEC_STRIP, c ? c : " ", NULL, cJSON_IsNumber(a) ? a->valueint : 0,
                           cJSON_IsNumber(b) ? b->valueint : 0, 0);
    }
    if (!strcmp(ty, "Metaspace")) {
        const char *rep = jstr(d, "replacement"), *sch = jstr(d, "prepend_scheme");
        int scheme = sch ? (!strcmp(sch, "first") ? 1 : !strcmp(sch, "never") ? 2 : 0)
                         : (jbool(d, "add_prefix_space", 1) ? 0 : 2);
        return st__add_dec(t, ST__DEC_METASPACE, rep ? rep : "\xE2\x96\x81", NULL, 0, 0, scheme);
    }
    return st_error(ST_ERR_UNSUPPORTED,
                    "%s: decoder type \"%s\" is not supported (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)",
                    path, ty);
}

/* TemplateProcessing "single": special tokens before/after $A. */
static st_status load_post(st_tokenizer *t, const cJSON *p, const char *path) {
    if (!p || cJSON_IsNull(p)) return ST_OK;
    const char *ty = jtype(p);
    if (!ty) return st_error(ST_ERR_FORMAT, "%s: post_processor: missing \"type\"", path);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, GET(p, "processors")) {
            st_status s = load_post(t, it, path);
            if (s) return s;
        }
        return ST_OK;
    }
    if (!strcmp(ty, "ByteLevel")) return ST_OK; /* offsets only */
    if (strcmp(ty, "TemplateProcessing"))
        return st_error(ST_ERR_UNSUPPORTED, "%s: post_processor type \"%s\" is not supported", path, ty);
    int32_t pre[16], suf[16];
    int np = 0, ns = 0, seen_a = 0;
    const cJSON *it, *specials = GET(p, "special_tokens");
    cJSON_ArrayForEach(it, GET(p, "single")) {
        const cJSON *sp = GET(it, "SpecialToken");
        if (GET(it, "Sequence")) {
            seen_a = 1;
            continue;
        }
        const char *name = sp ? jstr(sp, "id") : NULL;
        const cJSON *def = name ? GET(specials, name) : NULL;
        const cJSON *idv;
        if (!def) return st_error(ST_ERR_FORMAT, "%s: post_processor.single: special token without a definition", path);
        cJSON_ArrayForEach(idv, GET(def, "ids")) {
            if (!cJSON_IsNumber(idv)) continue;
            if (seen_a ? ns >= 16 : np >= 16) return st_error(ST_ERR_UNSUPPORTED, "%s: post_processor: too many tokens", path);
            if (seen_a) suf[ns++] = (int32_t)idv->valuedouble;
            else pre[np++] = (int32_t)idv->valuedouble;
        }
    }
    return st__set_post(t, pre, np, suf, ns);
}

static int32_t special_from_config(const st_tokenizer *t, const cJSON *cfg, const char *key) {
    const cJSON *v = GET(cfg, key);
    const char *s = cJSON_IsString(v) ? v->valuestring : (v ? jstr(v, "content") : NULL);
    return s ? st_tokenizer_find(t, s) : -1;
}

static int32_t first_found(const st_tokenizer *t, const char *const *names) {
    for (; *names; names++) {
        int32_t id = st_tokenizer_find(t, *names);
        if (id >= 0) return id;
    }
    return -1;
}

static void load_specials(st_tokenizer *t, const char *path) {
    /* sibling tokenizer_config.json */
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path + 1) : 0;
    char cfgp[4096];
    snprintf(cfgp, sizeof cfgp, "%.*stokenizer_config.json", (int)dl, path);
    char *data = NULL;
    size_t len = 0;
    cJSON *cfg = NULL;
    if (st_read_file(cfgp, &data, &len) == ST_OK) cfg = cJSON_ParseWithLength(data, len);
    free(data);
    st_clear_error();
    if (cfg) {
        t->bos_id = special_from_config(t, cfg, "bos_token");
        t->eos_id = special_from_config(t, cfg, "eos_token");
        t->pad_id = special_from_config(t, cfg, "pad_token");
        cJSON_Delete(cfg);
    } else {
        static const char *const bos[] = {"<s>", "<|begin_of_text|>", NULL};
        static const char *const eos[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", NULL};
        t->bos_id = first_found(t, bos);
        t->eos_id = first_found(t, eos);
    }
    if (t->bos_id < 0 && t->n_post_prefix) t->bos_id = t->post_prefix[0];
}

static st_status load_model(st_tokenizer *t, const cJSON *m, const char *path) {
    if (!m) return st_error(ST_ERR_FORMAT, "%s: missing field \"model\"", path);
    const char *ty = jtype(m);
    if (ty && strcmp(ty, "BPE"))
        return st_error(ST_ERR_UNSUPPORTED, "%s: model.type \"%s\" is not supported (only BPE)", path, ty);
    const cJSON *vocab = GET(m, "vocab"), *merges = GET(m, "merges");
    if (!cJSON_IsObject(vocab)) return st_error(ST_ERR_FORMAT, "%s: missing field \"model.vocab\" (an object)", path);
    if (!cJSON_IsArray(merges)) return st_error(ST_ERR_FORMAT, "%s: missing field \"model.merges\" (an array)", path);
    const char *cont = jstr(m, "continuing_subword_prefix"), *suf = jstr(m, "end_of_word_suffix");
    if ((cont && *cont) || (suf && *suf))
        return st_error(ST_ERR_UNSUPPORTED, "%s: model.continuing_subword_prefix/end_of_word_suffix are not supported", path);
    int32_t maxid = -1, n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e8)
            return st_error(ST_ERR_FORMAT, "%s: model.vocab[\"%s\"]: id must be a non-negative integer", path, it->string);
        if ((int32_t)it->valuedouble > maxid) maxid = (int32_t)it->valuedouble;
        n++;
    }
    st_status s = st__tok_set_vocab_size(t, maxid + 1);
    if (s) return s;
    cJSON_ArrayForEach(it, vocab) {
        int32_t id = (int32_t)it->valuedouble;
        if (t->tok[id]) /* the vocabulary map keeps the first token's text: one id, one token */
            return st_error(ST_ERR_FORMAT, "%s: model.vocab[\"%s\"]: id %d is already the id of \"%s\" (each id must be given once)",
                            path, it->string, id, t->tok[id]);
        if ((s = st__tok_set_token(t, id, it->string, strlen(it->string)))) return s;
        if ((s = st__strmap_put(&t->vocab, t->tok[id], t->tok_len[id], id))) return s;
    }
    (void)n;
    char where[1200];
    snprintf(where, sizeof where, "%s: model.merges", path);
    int32_t rank = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t al, bl;
        if (cJSON_IsString(it)) {
            const char *sp = strchr(it->valuestring + (it->valuestring[0] ? 1 : 0), ' ');
            if (!sp) return st_error(ST_ERR_FORMAT, "%s[%d]: \"%s\" is not \"left right\"", where, rank, it->valuestring);
            a = it->valuestring;
            al = (size_t)(sp - a);
            b = sp + 1;
            bl = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            al = strlen(a);
            bl = strlen(b);
        } else {
            return st_error(ST_ERR_FORMAT, "%s[%d]: expected \"left right\" or [left, right]", where, rank);
        }
        if ((s = st__add_merge(t, a, al, b, bl, rank, where))) return s;
        rank++;
    }
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    t->fuse_unk = jbool(m, "fuse_unk", 0);
    t->ignore_merges = jbool(m, "ignore_merges", 0);
    const char *unk = jstr(m, "unk_token");
    if (unk) {
        t->unk_id = st__strmap_get(&t->vocab, unk, strlen(unk));
        if (t->unk_id < 0) return st_error(ST_ERR_FORMAT, "%s: model.unk_token \"%s\" is not in the vocabulary", path, unk);
    }
    return ST_OK;
}

static st_status load_added(st_tokenizer *t, const cJSON *arr, const char *path) {
    if (!arr || cJSON_IsNull(arr)) return ST_OK;
    if (!cJSON_IsArray(arr)) return st_error(ST_ERR_FORMAT, "%s: added_tokens: expected an array", path);
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *id = GET(it, "id");
        const char *c = jstr(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || !c || !*c)
            return st_error(ST_ERR_FORMAT, "%s: added_tokens[%d]: needs \"id\" (>= 0) and non-empty \"content\"", path, i);
        int special = jbool(it, "special", 0);
        st__added a = {(char *)c, (uint32_t)strlen(c), (int32_t)id->valuedouble, (uint8_t)special,
                       (uint8_t)jbool(it, "lstrip", 0), (uint8_t)jbool(it, "rstrip", 0),
                       (uint8_t)jbool(it, "normalized", !special), (uint8_t)jbool(it, "single_word", 0)};
        if (!t->n_norm) a.normalized = 0; /* no normalizer: both passes see the same text */
        st_status s = st__tok_add_added(t, &a);
        if (s) return s;
        i++;
    }
    return ST_OK;
}

st_status st_tokenizer_from_json(const char *path, st_tokenizer **out) {
    *out = NULL;
    char *data = NULL;
    size_t len = 0;
    st_status s = st_read_file(path, &data, &len);
    if (s) return s;
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t off = e && e >= data && e <= data + len ? (size_t)(e - data) : 0;
        free(data);
        return st_error(ST_ERR_FORMAT, "%s: offset %zu: invalid JSON", path, off);
    }
    free(data);
    st_tokenizer *t = st__tok_new(path);
    if (!t) {
        cJSON_Delete(root);
        return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
    }
    if (!cJSON_IsObject(root)) s = st_error(ST_ERR_FORMAT, "%s: top level is not a JSON object", path);
    if (!s) s = load_model(t, GET(root, "model"), path);
    if (!s) s = load_normalizer(t, GET(root, "normalizer"), path);
    if (!s) s = load_pretok(t, GET(root, "pre_tokenizer"), path);
    if (!s) s = load_added(t, GET(root, "added_tokens"), path);
    if (!s) s = load_post(t, GET(root, "post_processor"), path);
    if (!s) s = load_decoder(t, GET(root, "decoder"), path);
    if (!s) s = st__tok_finish(t);
    cJSON_Delete(root);
    if (s) {
        if (s == ST_ERR_NOMEM) st_error(s, "%s: out of memory", path);
        st_tokenizer_free(t);
        return s;
    }
    t->kind = t->byte_level ? ST_TOK_BYTE_LEVEL_BPE : ST_TOK_SPM_BPE;
    load_specials(t, path);
    *out = t;
    return ST_OK;
}
