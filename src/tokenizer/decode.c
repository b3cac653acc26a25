/* decode.c - ids -> text through the HF decoder chain (huggingface/tokenizers decoders/):
 * ByteLevel (chars -> bytes, then lossy UTF-8), Replace, ByteFallback (<0xNN> runs -> UTF-8, or one
 * U+FFFD per byte when invalid), Fuse, Strip, Metaspace. Without a decoder tokens are joined
 * with " " (HF default). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

typedef struct { st__bytes *v; size_t n, cap; } strlist;

static st_status sl_push(strlist *l, const char *p, size_t n) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        st__bytes *nv = st_realloc(l->v, nc * sizeof *nv);
        if (!nv) return ST_ERR_NOMEM;
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n] = (st__bytes){0};
    if (st__bytes_append(&l->v[l->n], p, n)) return ST_ERR_NOMEM;
    l->n++;
    return ST_OK;
}

static void sl_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i].v);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Lossy UTF-8 of raw bytes, appended to out. */
static st_status lossy(const char *p, size_t n, st__bytes *out) {
    char *clean = NULL;
    size_t cl = 0;
    if (st__utf8_sanitize(p, n, &clean, &cl)) return st__bytes_append(out, p, n);
    if (!clean) return ST_ERR_NOMEM;
    st_status s = st__bytes_append(out, clean, cl);
    free(clean);
    return s;
}

static st_status replace_all(const st__bytes *in, const char *pat, const char *with, st__bytes *out) {
    size_t pl = strlen(pat), wl = strlen(with);
    if (st__bytes_append(out, "", 0)) return ST_ERR_NOMEM;
    for (size_t i = 0; i < in->n;) {
        if (pl && i + pl <= in->n && memcmp(in->v + i, pat, pl) == 0) {
            if (st__bytes_append(out, with, wl)) return ST_ERR_NOMEM;
            i += pl;
        } else {
            if (st__bytes_append(out, in->v + i, 1)) return ST_ERR_NOMEM;
            i++;
        }
    }
    return ST_OK;
}

static int byte_token(const st__bytes *b) {
    if (b->n != 6 || memcmp(b->v, "<0x", 3) != 0 || b->v[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = b->v[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static st_status flush_bytes(st__bytes *pending, strlist *out) {
    if (!pending->n) return ST_OK;
    st_status s;
    char *clean = NULL;
    size_t cl;
    if (st__utf8_sanitize(pending->v, pending->n, &clean, &cl)) {
        s = sl_push(out, pending->v, pending->n);
    } else {
        free(clean);
        s = ST_OK;
        for (size_t i = 0; i < pending->n && !s; i++) s = sl_push(out, "\xEF\xBF\xBD", 3);
    }
    pending->n = 0;
    return s;
}

/* One decoder step: in -> out. */
static st_status step(const st__dec *d, strlist *in, strlist *out) {
    st_status s = ST_OK;
    switch (d->kind) {
    case ST__DEC_BYTELEVEL: {
        st__bytes raw = {0}, res = {0};
        for (size_t i = 0; i < in->n && !s; i++) {
            st__bytes *tk = &in->v[i];
            size_t start = raw.n;
            int ok = 1;
            for (size_t j = 0; j < tk->n && ok;) {
                int32_t cp;
                j += (size_t)st__utf8_decode(tk->v + j, tk->n - j, &cp);
                int b = st__cp_to_byte(cp);
                if (b < 0) ok = 0;
                else { char c = (char)b; s = st__bytes_append(&raw, &c, 1); }
            }
            if (!ok) { /* a char outside the map: the token's own bytes */
                raw.n = start;
                s = st__bytes_append(&raw, tk->v, tk->n);
            }
        }
        if (!s) s = st__bytes_append(&res, "", 0);
        if (!s) s = lossy(raw.v ? raw.v : "", raw.n, &res);
        if (!s) s = sl_push(out, res.v, res.n);
        free(raw.v);
        free(res.v);
        return s;
    }
    case ST__DEC_REPLACE:
        for (size_t i = 0; i < in->n && !s; i++) {
            st__bytes r = {0};
            s = replace_all(&in->v[i], d->a, d->b, &r);
            if (!s) s = sl_push(out, r.v, r.n);
            free(r.v);
        }
        return s;
    case ST__DEC_BYTEFALLBACK: {
        st__bytes pending = {0};
        for (size_t i = 0; i < in->n && !s; i++) {
            int b = byte_token(&in->v[i]);
            if (b >= 0) {
                char c = (char)b;
                s = st__bytes_append(&pending, &c, 1);
            } else {
                s = flush_bytes(&pending, out);
                if (!s) s = sl_push(out, in->v[i].v, in->v[i].n);
            }
        }
        if (!s) s = flush_bytes(&pending, out);
        free(pending.v);
        return s;
    }
    case ST__DEC_FUSE: {
        st__bytes all = {0};
        s = st__bytes_append(&all, "", 0);
        for (size_t i = 0; i < in->n && !s; i++) s = st__bytes_append(&all, in->v[i].v, in->v[i].n);
        if (!s) s = sl_push(out, all.v, all.n);
        free(all.v);
        return s;
    }
    case ST__DEC_STRIP: {
        size_t cl = strlen(d->a);
        for (size_t i = 0; i < in->n && !s; i++) {
            const char *p = in->v[i].v;
            size_t n = in->v[i].n;
            for (int k = 0; k < d->start && cl && n >= cl && memcmp(p, d->a, cl) == 0; k++) {
                p += cl;
                n -= cl;
            }
            for (int k = 0; k < d->stop && cl && n >= cl && memcmp(p + n - cl, d->a, cl) == 0; k++) n -= cl;
            s = sl_push(out, p, n);
        }
        return s;
    }
    case ST__DEC_METASPACE:
        for (size_t i = 0; i < in->n && !s; i++) {
            st__bytes r = {0};
            s = replace_all(&in->v[i], d->a, (i == 0 && d->prepend_scheme != 2) ? "" : " ", &r);
            if (!s) s = sl_push(out, r.v, r.n);
            free(r.v);
        }
        return s;
    }
    return ST_OK;
}

st_status st_tokenizer_decode(const st_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                              char **text, size_t *len) {
    strlist cur = {0};
    st_status s = ST_OK;
    *text = NULL;
    *len = 0;
    for (size_t i = 0; i < n && !s; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab || !t->tok[id]) continue; /* HF skips unknown ids */
        if (skip_special && t->is_special[id]) continue;
        s = sl_push(&cur, t->tok[id], t->tok_len[id]);
    }
    for (int k = 0; k < t->n_dec && !s; k++) {
        strlist nxt = {0};
        s = step(&t->dec[k], &cur, &nxt);
        sl_free(&cur);
        cur = nxt;
    }
    st__bytes res = {0};
    if (!s) s = st__bytes_append(&res, "", 0);
    for (size_t i = 0; i < cur.n && !s; i++) {
        if (t->n_dec == 0 && i > 0) s = st__bytes_append(&res, " ", 1);
        if (!s) s = st__bytes_append(&res, cur.v[i].v, cur.v[i].n);
    }
    sl_free(&cur);
    if (s) {
        free(res.v);
        return st_error(ST_ERR_NOMEM, "tokenizer: out of memory while decoding");
    }
    *text = res.v;
    *len = res.n;
    return ST_OK;
}

int st_tokenizer_token_bytes(const st_tokenizer *t, int32_t id, char *buf, int cap) {
    if (id < 0 || id >= t->n_vocab || !t->tok[id] || cap < 0) return -1;
    const char *p = t->tok[id];
    size_t n = t->tok_len[id];
    int w = 0;
    int32_t aid = st__strmap_get(&t->added_map, p, n);
    if (aid == id) { /* added tokens are verbatim text */
        if ((int)n > cap) return -1;
        memcpy(buf, p, n);
        return (int)n;
    }
    if (t->byte_level) {
        for (size_t j = 0; j < n;) {
            int32_t cp;
            j += (size_t)st__utf8_decode(p + j, n - j, &cp);
            int b = st__cp_to_byte(cp);
            if (b < 0) return -1;
            if (w >= cap) return -1;
            buf[w++] = (char)b;
        }
        return w;
    }
    st__bytes tb = {(char *)p, n, n};
    int b = byte_token(&tb);
    if (b >= 0) {
        if (cap < 1) return -1;
        buf[0] = (char)b;
        return 1;
    }
    for (size_t j = 0; j < n;) {
        if (j + 3 <= n && memcmp(p + j, "\xE2\x96\x81", 3) == 0) {
            if (w >= cap) return -1;
            buf[w++] = ' ';
            j += 3;
        } else {
            if (w >= cap) return -1;
            buf[w++] = p[j++];
        }
    }
    return w;
}
