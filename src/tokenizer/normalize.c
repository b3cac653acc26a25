/* normalize.c - HF normalizers used by Llama-family tokenizer.json files: NFC (Qwen2), Prepend
 * and Replace (Llama-2/Mistral: Prepend "▁" + Replace " " -> "▁"). Each output byte keeps the
 * offset of the source byte it came from (alignment, used for chat assistant masks). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_internal.h"

static void astr_free(st__astr *a) {
    free(a->s.v);
    free(a->align.v);
    memset(a, 0, sizeof *a);
}

static st_status astr_push(st__astr *a, const char *p, size_t n, int32_t off) {
    if (st__bytes_append(&a->s, p, n)) return ST_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        if (st__ivec_push(&a->align, off)) return ST_ERR_NOMEM;
    return ST_OK;
}

/* NFC of in[a, b): unchanged text keeps exact offsets; a changed run gets proportional ones. */
static st_status nfc_run(const st__astr *in, size_t a, size_t b, st__astr *out) {
    if (a == b) return ST_OK;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)in->s.v + a, (utf8proc_ssize_t)(b - a),
                                      &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) return st_error(ST_ERR_INTERNAL, "NFC: %s", utf8proc_errmsg(n));
    st_status s = ST_OK;
    if ((size_t)n == b - a && memcmp(dst, in->s.v + a, (size_t)n) == 0) {
        for (size_t i = a; i < b && !s; i++) s = astr_push(out, in->s.v + i, 1, in->align.v[i]);
    } else {
        for (utf8proc_ssize_t j = 0; j < n && !s; j++)
            s = astr_push(out, (const char *)dst + j, 1,
                          in->align.v[a + (size_t)j * (b - a) / (size_t)n]);
    }
    free(dst);
    return s;
}

/* ASCII never composes with what precedes it, so cut runs before an ASCII char followed by
 * ASCII (or the end): NFC is applied to the non-trivial runs between. */
static st_status nfc(const st__astr *in, st__astr *out) {
    size_t n = in->s.n, run = 0;
    const uint8_t *u = (const uint8_t *)in->s.v;
    for (size_t i = 0; i < n; i++) {
        if (u[i] < 0x80 && (i + 1 == n || u[i + 1] < 0x80)) {
            if (nfc_run(in, run, i, out)) return ST_ERR_NOMEM;
            if (astr_push(out, in->s.v + i, 1, in->align.v[i])) return ST_ERR_NOMEM;
            run = i + 1;
        }
    }
    return nfc_run(in, run, n, out);
}

static st_status replace(const st__astr *in, const char *pat, const char *with, st__astr *out) {
    size_t pl = strlen(pat), wl = strlen(with), n = in->s.n;
    for (size_t i = 0; i < n;) {
        if (pl && i + pl <= n && memcmp(in->s.v + i, pat, pl) == 0) {
            if (astr_push(out, with, wl, in->align.v[i])) return ST_ERR_NOMEM;
            i += pl;
        } else {
            if (astr_push(out, in->s.v + i, 1, in->align.v[i])) return ST_ERR_NOMEM;
            i++;
        }
    }
    return ST_OK;
}

st_status st__normalize(const st__norm *steps, int n_steps, const char *text, size_t len,
                        int32_t base_off, st__astr *out) {
    st__astr cur = {0};
    st_status s = ST_OK;
    for (size_t i = 0; i < len && !s; i++) s = astr_push(&cur, text + i, 1, base_off + (int32_t)i);
    if (st__bytes_append(&cur.s, "", 0)) s = ST_ERR_NOMEM;
    for (int k = 0; k < n_steps && !s; k++) {
        st__astr nxt = {0};
        if (st__bytes_append(&nxt.s, "", 0)) s = ST_ERR_NOMEM;
        switch (steps[k].kind) {
        case ST__NORM_NFC: if (!s) s = nfc(&cur, &nxt); break;
        case ST__NORM_PREPEND:
            if (!s && cur.s.n) s = astr_push(&nxt, steps[k].a, strlen(steps[k].a), cur.align.v[0]);
            for (size_t i = 0; i < cur.s.n && !s; i++)
                s = astr_push(&nxt, cur.s.v + i, 1, cur.align.v[i]);
            break;
        case ST__NORM_REPLACE: if (!s) s = replace(&cur, steps[k].a, steps[k].b, &nxt); break;
        }
        astr_free(&cur);
        cur = nxt;
    }
    if (s) {
        astr_free(&cur);
        return s == ST_ERR_NOMEM ? st_error(s, "tokenizer: out of memory while normalizing") : s;
    }
    *out = cur;
    return ST_OK;
}
