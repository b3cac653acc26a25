/* tokenizer.c - tokenizer object, accessors and the encode pipeline (huggingface/tokenizers
 * TokenizerImpl::encode: added-token split -> normalizer -> pre-tokenizer -> BPE -> post-processor). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

st_tokenizer *st__tok_new(const char *source) {
    st_tokenizer *t = st_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->source = st_strdup(source ? source : "?");
    t->unk_id = t->bos_id = t->eos_id = t->pad_id = -1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = t->fallback_id[i] = -1;
    if (!t->source || st__strmap_init(&t->vocab, 1024) || st__strmap_init(&t->added_map, 64) ||
        st__pairmap_init(&t->merges, 1024)) {
        st_tokenizer_free(t);
        return NULL;
    }
    return t;
}

st_status st__tok_set_vocab_size(st_tokenizer *t, int32_t n) {
    if (n <= t->n_vocab) return ST_OK;
    char **nt = st_realloc(t->tok, (size_t)n * sizeof *nt);
    if (!nt) return ST_ERR_NOMEM;
    t->tok = nt;
    uint32_t *nl = st_realloc(t->tok_len, (size_t)n * sizeof *nl);
    if (!nl) return ST_ERR_NOMEM;
    t->tok_len = nl;
    uint8_t *ns = st_realloc(t->is_special, (size_t)n);
    if (!ns) return ST_ERR_NOMEM;
    t->is_special = ns;
    for (int32_t i = t->n_vocab; i < n; i++) {
        t->tok[i] = NULL;
        t->tok_len[i] = 0;
        t->is_special[i] = 0;
    }
    t->n_vocab = n;
    return ST_OK;
}

st_status st__tok_set_token(st_tokenizer *t, int32_t id, const char *s, size_t len) {
    if (id < 0) return ST_ERR_ARG;
    if (id >= t->n_vocab && st__tok_set_vocab_size(t, id + 1)) return ST_ERR_NOMEM;
    char *c = st_malloc(len + 1);
    if (!c) return ST_ERR_NOMEM;
    memcpy(c, s, len);
    c[len] = '\0';
    free(t->tok[id]);
    t->tok[id] = c;
    t->tok_len[id] = (uint32_t)len;
    return ST_OK;
}

st_status st__tok_add_added(st_tokenizer *t, const st__added *a) {
    st__added *na = st_realloc(t->added, (size_t)(t->n_added + 1) * sizeof *na);
    if (!na) return ST_ERR_NOMEM;
    t->added = na;
    st__added *d = &t->added[t->n_added];
    *d = *a;
    d->content = st_malloc(a->len + 1);
    if (!d->content) return ST_ERR_NOMEM;
    memcpy(d->content, a->content, a->len);
    d->content[a->len] = '\0';
    t->n_added++;
    if (a->id >= t->n_vocab && st__tok_set_vocab_size(t, a->id + 1)) return ST_ERR_NOMEM;
    if (!t->tok[a->id] && st__tok_set_token(t, a->id, a->content, a->len)) return ST_ERR_NOMEM;
    if (a->special) t->is_special[a->id] = 1;
    if (a->normalized) t->has_normalized_added = 1;
    return ST_OK;
}

typedef struct { uint32_t c, len; int32_t i; } added_key;
static int cmp_added(const void *x, const void *y) {
    const added_key *a = x, *b = y;
    if (a->c != b->c) return a->c < b->c ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1; /* longest first */
    return a->i - b->i;
}

st_status st__tok_finish(st_tokenizer *t) {
    char buf[16];
    for (int b = 0; b < 256; b++) {
        int k = st__utf8_encode(st__byte_to_cp((uint8_t)b), buf);
        t->byte_id[b] = st__strmap_get(&t->vocab, buf, (size_t)k);
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        t->fallback_id[b] = st__strmap_get(&t->vocab, buf, strlen(buf));
    }
    /* added tokens: content -> id, and first-byte buckets sorted longest first */
    int n = 0;
    free(t->added_by_byte);
    t->added_by_byte = st_malloc((size_t)(t->n_added + 1) * sizeof(int32_t));
    added_key *keys = st_malloc((size_t)(t->n_added + 1) * sizeof *keys);
    if (!t->added_by_byte || !keys) {
        free(keys);
        return ST_ERR_NOMEM;
    }
    for (int i = 0; i < t->n_added; i++) {
        if (st__strmap_put(&t->added_map, t->added[i].content, t->added[i].len, t->added[i].id)) {
            free(keys);
            return ST_ERR_NOMEM;
        }
        if (t->added[i].len) keys[n++] = (added_key){(uint8_t)t->added[i].content[0], t->added[i].len, i};
    }
    qsort(keys, (size_t)n, sizeof *keys, cmp_added);
    for (int i = 0; i < n; i++) t->added_by_byte[i] = keys[i].i;
    free(keys);
    int k = 0;
    for (int c = 0; c <= 256; c++) {
        while (k < n && (uint8_t)t->added[t->added_by_byte[k]].content[0] < c) k++;
        t->added_bucket[c] = k;
    }
    t->added_bucket[256] = n;
    return ST_OK;
}

void st_tokenizer_free(st_tokenizer *t) {
    if (!t) return;
    for (int32_t i = 0; i < t->n_vocab; i++) free(t->tok[i]);
    free(t->tok);
    free(t->tok_len);
    free(t->is_special);
    st__strmap_free(&t->vocab);
    st__strmap_free(&t->added_map);
    st__pairmap_free(&t->merges);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].re) pcre2_code_free(t->pre[i].re);
    free(t->pre);
    for (int i = 0; i < t->n_dec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
    }
    free(t->dec);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->added_by_byte);
    free(t->post_prefix);
    free(t->post_suffix);
    free(t->source);
    free(t);
}

st_tokenizer_kind st_tokenizer_kind_of(const st_tokenizer *t) { return t->kind; }
int32_t st_tokenizer_vocab_size(const st_tokenizer *t) { return t->n_vocab; }
int32_t st_tokenizer_bos_id(const st_tokenizer *t) { return t->bos_id; }
int32_t st_tokenizer_eos_id(const st_tokenizer *t) { return t->eos_id; }

int st_tokenizer_adds_bos(const st_tokenizer *t) {
    return t->bos_id >= 0 && t->n_post_prefix > 0 && t->post_prefix[0] == t->bos_id;
}

const char *st_tokenizer_token(const st_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->tok[id] : NULL;
}

int32_t st_tokenizer_find(const st_tokenizer *t, const char *token) {
    size_t n = strlen(token);
    int32_t id = st__strmap_get(&t->added_map, token, n);
    return id >= 0 ? id : st__strmap_get(&t->vocab, token, n);
}

int st_tokenizer_is_special(const st_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->is_special[id];
}

static st_status push_tok(st__ivec *ids, st__ivec *offs, int32_t id, int32_t a, int32_t b) {
    if (st__ivec_push(ids, id)) return ST_ERR_NOMEM;
    if (offs && (st__ivec_push(offs, a) || st__ivec_push(offs, b))) return ST_ERR_NOMEM;
    return ST_OK;
}

/* Pre-tokenize and run BPE on arena (already normalized, with alignment). */
static st_status model_segment(const st_tokenizer *t, st__astr *ar, st__ivec *ids, st__ivec *offs) {
    st__pieces pcs = {0};
    st_status s = st__pretokenize(t->pre, t->n_pre, ar, &pcs);
    for (size_t i = 0; i < pcs.n && !s; i++)
        s = st__bpe_piece(t, ar->s.v + pcs.v[i].off, pcs.v[i].len, ar->align.v + pcs.v[i].off, ids, offs);
    free(pcs.v);
    return s;
}

static st_status text_segment(const st_tokenizer *t, const char *text, uint32_t a, uint32_t b,
                              int parse_special, st__ivec *ids, st__ivec *offs) {
    st__astr norm = {0};
    st_status s = st__normalize(t->norm, t->n_norm, text + a, b - a, (int32_t)a, &norm);
    if (s) return s;
    if (!t->has_normalized_added) {
        s = model_segment(t, &norm, ids, offs);
    } else {
        st__segs segs = {0};
        s = st__added_split(t, norm.s.v, norm.s.n, 1, parse_special, &segs);
        for (size_t i = 0; i < segs.n && !s; i++) {
            st__seg g = segs.v[i];
            if (g.id >= 0) {
                s = push_tok(ids, offs, g.id, norm.align.v[g.start], norm.align.v[g.end - 1] + 1);
                continue;
            }
            st__astr sub = {0};
            if (st__bytes_append(&sub.s, norm.s.v + g.start, g.end - g.start)) s = ST_ERR_NOMEM;
            for (uint32_t j = g.start; j < g.end && !s; j++) s = st__ivec_push(&sub.align, norm.align.v[j]);
            if (!s) s = model_segment(t, &sub, ids, offs);
            free(sub.s.v);
            free(sub.align.v);
        }
        free(segs.v);
    }
    free(norm.s.v);
    free(norm.align.v);
    return s;
}

st_status st__tok_encode_ex(const st_tokenizer *t, const char *text, size_t len, int parse_special,
                            int add_special, st__ivec *ids, st__ivec *offs) {
    if (len > INT32_MAX / 4) return st_error(ST_ERR_ARG, "tokenizer: text of %zu bytes is too long", len);
    char *clean = NULL;
    size_t clean_len = 0;
    if (!st__utf8_sanitize(text, len, &clean, &clean_len)) {
        if (!clean) return st_error(ST_ERR_NOMEM, "tokenizer: out of memory");
        text = clean;
        len = clean_len;
    }
    st_status s = ST_OK;
    if (add_special)
        for (int i = 0; i < t->n_post_prefix && !s; i++) s = push_tok(ids, offs, t->post_prefix[i], 0, 0);
    st__segs segs = {0};
    if (!s) s = st__added_split(t, text, len, 0, parse_special, &segs);
    for (size_t i = 0; i < segs.n && !s; i++) {
        st__seg g = segs.v[i];
        if (g.id >= 0) s = push_tok(ids, offs, g.id, (int32_t)g.start, (int32_t)g.end);
        else s = text_segment(t, text, g.start, g.end, parse_special, ids, offs);
    }
    if (add_special)
        for (int i = 0; i < t->n_post_suffix && !s; i++)
            s = push_tok(ids, offs, t->post_suffix[i], (int32_t)len, (int32_t)len);
    free(segs.v);
    free(clean);
    if (s == ST_ERR_NOMEM) return st_error(s, "tokenizer: out of memory while encoding");
    return s;
}

st_status st_tokenizer_encode(const st_tokenizer *t, const char *text, size_t len, int parse_special,
                              int add_special, int32_t **ids, size_t *n_ids) {
    st__ivec v = {0};
    *ids = NULL;
    *n_ids = 0;
    st_status s = st__tok_encode_ex(t, text, len, parse_special, add_special, &v, NULL);
    if (s) {
        free(v.v);
        return s;
    }
    if (!v.v) { /* empty result: still return a valid heap pointer */
        v.v = st_malloc(sizeof(int32_t));
        if (!v.v) return st_error(ST_ERR_NOMEM, "tokenizer: out of memory");
    }
    *ids = v.v;
    *n_ids = v.n;
    return ST_OK;
}
