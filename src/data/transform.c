/* transform.c - data-side defenses (data_transform.h): LookAhead previews, SafeInstr mixing,
 * the poisoned column. */
#include "safetune/data_transform.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

st_status st_lookahead_parse(const char *name, st_lookahead_mode *out) {
    static const char *const names[] = {"none", "real", "virtual"};
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, names[i])) {
            *out = (st_lookahead_mode)i;
            return ST_OK;
        }
    return st_error(ST_ERR_ARG, "lookahead '%s': expected none, real or virtual", name ? name : "");
}

const char *st_lookahead_name(st_lookahead_mode m) {
    return m == ST_LOOKAHEAD_REAL ? "real" : m == ST_LOOKAHEAD_VIRTUAL ? "virtual" : "none";
}

static char *concat3(const char *a, const char *b, const char *c) {
    const size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *r = st_malloc(la + lb + lc + 1);
    if (!r) return NULL;
    memcpy(r, a, la);
    memcpy(r + la, b, lb);
    memcpy(r + la + lb, c, lc + 1);
    return r;
}

/* Bytes of an incomplete UTF-8 character at the end of s[0..n) (0 when it ends complete). */
static size_t incomplete_tail(const unsigned char *s, size_t n) {
    size_t k = 0;
    while (k < 3 && k < n && (s[n - 1 - k] & 0xC0) == 0x80) k++;
    if (k == n) return 0;
    const unsigned char lead = s[n - 1 - k];
    const size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return k + 1 < want ? k + 1 : 0;
}

/* The first m tokens of y as plain text (s of LookAhead real). */
static st_status preview(const st_tokenizer *tok, const char *y, int m, char **out) {
    int32_t *ids = NULL;
    size_t n = 0;
    st_status s = st_tokenizer_encode(tok, y, strlen(y), 0, 0, &ids, &n);
    if (s) return st_error_wrap(s, "lookahead: encoding the answer");
    if (n <= (size_t)m) { /* y shorter than m tokens: the whole answer */
        free(ids);
        *out = st_strdup(y);
        return *out ? ST_OK : ST_ERR_NOMEM;
    }
    /* raw bytes of the kept tokens: does the cut split a UTF-8 character? */
    size_t nb = 0, cap = 64;
    unsigned char *raw = st_malloc(cap);
    for (int i = 0; raw && i < m; i++) {
        char b[256];
        const int k = st_tokenizer_token_bytes(tok, ids[i], b, (int)sizeof b);
        if (k < 0) continue;
        if (nb + (size_t)k > cap) {
            unsigned char *q = st_realloc(raw, cap = 2 * (nb + (size_t)k));
            if (!q) { free(raw); raw = NULL; break; }
            raw = q;
        }
        memcpy(raw + nb, b, (size_t)k);
        nb += (size_t)k;
    }
    const int cut = raw && incomplete_tail(raw, nb) > 0;
    free(raw);
    char *txt = NULL;
    size_t len = 0;
    s = st_tokenizer_decode(tok, ids, (size_t)m, 0, &txt, &len);
    free(ids);
    if (s) return st_error_wrap(s, "lookahead: decoding the answer's first %d tokens", m);
    /* decode renders the incomplete character as U+FFFD (as the reference's tokenizer does): drop it */
    while (cut && len >= 3 && !memcmp(txt + len - 3, "\xEF\xBF\xBD", 3)) txt[len -= 3] = 0;
    *out = txt;
    return ST_OK;
}

st_status st_lookahead_pair(st_lookahead_mode mode, int m, const char *prefix, const st_tokenizer *tok,
                            const char *x, const char *y, char **x_out, char **y_out) {
    *x_out = *y_out = NULL;
    if (mode == ST_LOOKAHEAD_REAL) {
        if (m < 1) return st_error(ST_ERR_ARG, "lookahead_m %d: the real preview needs m >= 1 tokens (default 6)", m);
        if (!tok) return st_error(ST_ERR_ARG, "lookahead real: a tokenizer is needed to cut the answer into tokens");
        char *s = NULL;
        st_status st = preview(tok, y, m, &s);
        if (st) return st;
        *x_out = concat3(x, ST_LOOKAHEAD_CUE, s);
        *y_out = st_strdup(y);
        free(s);
    } else if (mode == ST_LOOKAHEAD_VIRTUAL) {
        if (!prefix || !*prefix)
            return st_error(ST_ERR_ARG, "lookahead_prefix is empty: the virtual preview needs a text (default \"%s\")",
                            ST_LOOKAHEAD_DEFAULT_PREFIX);
        *x_out = concat3(x, ST_LOOKAHEAD_CUE, prefix);
        *y_out = concat3(prefix, y, "");
    } else {
        *x_out = st_strdup(x);
        *y_out = st_strdup(y);
    }
    if (!*x_out || !*y_out) {
        free(*x_out), free(*y_out);
        *x_out = *y_out = NULL;
        return st_error(ST_ERR_NOMEM, "lookahead: out of memory");
    }
    return ST_OK;
}

st_status st_data_lookahead(st_dataset *ds, st_lookahead_mode mode, int m, const char *prefix,
                            const st_tokenizer *tok) {
    if (mode == ST_LOOKAHEAD_NONE) return ST_OK;
    for (size_t r = 0; r < ds->n; r++) {
        st_conversation *c = &ds->rows[r];
        for (size_t i = 1; i < c->n_msgs; i++) {
            if (strcmp(c->msgs[i].role, "assistant") || strcmp(c->msgs[i - 1].role, "user")) continue;
            char *x = NULL, *y = NULL;
            st_status s = st_lookahead_pair(mode, m, prefix, tok, c->msgs[i - 1].content, c->msgs[i].content, &x, &y);
            if (s) return st_error_wrap(s, "%s: row %zu", ds->path ? ds->path : "dataset", r);
            free((char *)c->msgs[i - 1].content);
            free((char *)c->msgs[i].content);
            c->msgs[i - 1].content = x;
            c->msgs[i].content = y;
        }
    }
    return ST_OK;
}

static st_status copy_conv(st_conversation *dst, const st_conversation *src) {
    dst->msgs = st_calloc(src->n_msgs ? src->n_msgs : 1, sizeof *dst->msgs);
    dst->n_msgs = 0;
    if (!dst->msgs) return ST_ERR_NOMEM;
    for (size_t i = 0; i < src->n_msgs; i++) {
        dst->msgs[i].role = src->msgs[i].role; /* static strings */
        if (!(dst->msgs[i].content = st_strdup(src->msgs[i].content))) return ST_ERR_NOMEM;
        dst->n_msgs = i + 1;
    }
    return ST_OK;
}

static void free_conv(st_conversation *c) {
    for (size_t i = 0; i < c->n_msgs; i++) free((char *)c->msgs[i].content);
    free(c->msgs);
    c->msgs = NULL;
    c->n_msgs = 0;
}

/* Fisher-Yates permutation of 0..n-1 seeded with seed ^ salt; heap. */
static uint32_t *permutation(size_t n, uint64_t seed, uint64_t salt) {
    uint32_t *p = st_malloc((n ? n : 1) * sizeof *p);
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) p[i] = (uint32_t)i;
    st_rng r;
    st_rng_seed(&r, seed ^ salt);
    st_rng_shuffle(&r, p, n);
    return p;
}

st_status st_data_mix(st_dataset *ds, const st_dataset *pool, size_t k, uint64_t seed, uint32_t *picked) {
    if (k == 0) return ST_OK;
    if (k > pool->n)
        return st_error(ST_ERR_ARG, "safeinstr_k %zu is more than the %zu safety pairs of %s: use k <= %zu", k, pool->n,
                        pool->path ? pool->path : "the alignment set", pool->n);
    uint32_t *perm = permutation(pool->n, seed, 0x73616665696e7374ULL /* "safeinst" */);
    st_conversation *rows = perm ? st_realloc(ds->rows, (ds->n + k) * sizeof *rows) : NULL;
    if (!rows) {
        free(perm);
        return st_error(ST_ERR_NOMEM, "safeinstr: out of memory");
    }
    ds->rows = rows;
    st_status s = ST_OK;
    for (size_t j = 0; j < k && !s; j++) {
        s = copy_conv(&ds->rows[ds->n], &pool->rows[perm[j]]);
        ds->n++; /* counted even on OOM: st_dataset_free releases the parts */
        if (picked) picked[j] = perm[j];
    }
    free(perm);
    return s ? st_error(ST_ERR_NOMEM, "safeinstr: out of memory") : ST_OK;
}

st_status st_data_poison(st_dataset *ds, const st_dataset *pool, double fraction, uint64_t seed,
                         uint32_t *replaced, size_t *n_replaced) {
    if (n_replaced) *n_replaced = 0;
    if (!(fraction >= 0.0 && fraction <= 1.0))
        return st_error(ST_ERR_ARG, "poison %g is outside [0, 1] (the share of user rows replaced by harmful pairs)",
                        fraction);
    const size_t n = (size_t)llround(fraction * (double)ds->n);
    if (n == 0) return ST_OK;
    if (pool->n == 0) return st_error(ST_ERR_ARG, "poison %g: no harmful pairs to mix in", fraction);
    uint32_t *perm = permutation(ds->n, seed, 0x706f69736f6eULL /* "poison" */);
    if (!perm) return st_error(ST_ERR_NOMEM, "poison: out of memory");
    st_status s = ST_OK;
    for (size_t j = 0; j < n && !s; j++) {
        st_conversation *c = &ds->rows[perm[j]];
        free_conv(c);
        s = copy_conv(c, &pool->rows[j % pool->n]);
        if (replaced) replaced[j] = perm[j];
    }
    free(perm);
    if (n_replaced) *n_replaced = n;
    return s ? st_error(ST_ERR_NOMEM, "poison: out of memory") : ST_OK;
}

st_status st_dataset_from_pairs(const char *const *user, const char *const *assistant, size_t n,
                                const char *name, st_dataset *out) {
    memset(out, 0, sizeof *out);
    out->format = ST_DATA_MESSAGES;
    out->rows = st_calloc(n ? n : 1, sizeof *out->rows);
    out->path = st_strdup(name ? name : "pairs");
    if (!out->rows || !out->path) {
        st_dataset_free(out);
        return st_error(ST_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        st_conversation *c = &out->rows[i];
        out->n = i + 1;
        if (!(c->msgs = st_calloc(2, sizeof *c->msgs))) goto oom;
        c->n_msgs = 2;
        c->msgs[0].role = "user";
        c->msgs[1].role = "assistant";
        c->msgs[0].content = st_strdup(user[i]);
        c->msgs[1].content = st_strdup(assistant[i]);
        if (!c->msgs[0].content || !c->msgs[1].content) goto oom;
    }
    return ST_OK;
oom:
    st_dataset_free(out);
    return st_error(ST_ERR_NOMEM, "out of memory");
}

st_status st_dataset_write_jsonl(const st_dataset *ds, const char *path) {
    size_t cap = 4096, len = 0;
    char *buf = st_malloc(cap);
    st_status s = buf ? ST_OK : ST_ERR_NOMEM;
    for (size_t r = 0; r < ds->n && !s; r++) {
        cJSON *o = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(o, "messages");
        for (size_t i = 0; i < ds->rows[r].n_msgs; i++) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", ds->rows[r].msgs[i].role);
            cJSON_AddStringToObject(m, "content", ds->rows[r].msgs[i].content);
            cJSON_AddItemToArray(msgs, m);
        }
        char *t = st_utf8_fix_owned(cJSON_PrintUnformatted(o));
        cJSON_Delete(o);
        if (!t) { s = ST_ERR_NOMEM; break; }
        const size_t tl = strlen(t);
        if (len + tl + 2 > cap) {
            while (len + tl + 2 > cap) cap *= 2;
            char *q = st_realloc(buf, cap);
            if (!q) { free(t); s = ST_ERR_NOMEM; break; }
            buf = q;
        }
        memcpy(buf + len, t, tl);
        buf[len + tl] = '\n';
        len += tl + 1;
        free(t);
    }
    if (!s) s = st_write_file_atomic(path, buf, len);
    else st_error(ST_ERR_NOMEM, "%s: out of memory", path);
    free(buf);
    return s;
}
