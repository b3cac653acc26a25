/* pretokenize.c - HF pre-tokenizers: Split (regex, PCRE2 in UTF+UCP mode), Digits, ByteLevel
 * (GPT-2 regex split; the byte mapping itself happens in bpe.c) and Metaspace. Semantics follow
 * huggingface/tokenizers (pre_tokenizers/, SplitDelimiterBehavior); regexes are written for
 * Oniguruma, whose \s is Unicode White_Space, so \s/\S are rewritten before compiling. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

#define WS_CLASS "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}" \
                 "\\x{202f}\\x{205f}\\x{3000}"

st_status st__regex_compile(const char *pattern, const char *where, pcre2_code **out) {
    st__bytes b = {0};
    int in_class = 0;
    st_status s = st__bytes_append(&b, "", 0);
    for (const char *p = pattern; *p && !s; p++) {
        if (*p == '\\' && p[1]) {
            char c = p[1];
            if (c == 's') s = st__bytes_append(&b, in_class ? WS_CLASS : "[" WS_CLASS "]",
                                               strlen(WS_CLASS) + (in_class ? 0 : 2));
            else if (c == 'S' && !in_class) s = st__bytes_append(&b, "[^" WS_CLASS "]", strlen(WS_CLASS) + 3);
            else s = st__bytes_append(&b, p, 2);
            p++;
            continue;
        }
        if (*p == '[' && !in_class) {
            in_class = 1;
            s = st__bytes_append(&b, p, 1);
            /* a ']' right after '[' or '[^' is a literal */
            if (p[1] == '^') { s = s ? s : st__bytes_append(&b, ++p, 1); }
            if (p[1] == ']') { s = s ? s : st__bytes_append(&b, ++p, 1); }
            continue;
        }
        if (*p == ']' && in_class) in_class = 0;
        s = st__bytes_append(&b, p, 1);
    }
    if (s) {
        free(b.v);
        return st_error(ST_ERR_NOMEM, "%s: out of memory compiling regex", where);
    }
    int err;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)b.v, b.n, PCRE2_UTF | PCRE2_UCP, &err, &eoff, NULL);
    free(b.v);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return st_error(ST_ERR_FORMAT, "%s: regex \"%s\" does not compile at offset %zu: %s", where,
                        pattern, (size_t)eoff, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; falls back if unsupported */
    *out = re;
    return ST_OK;
}

/* (start, end, is_match) intervals covering a piece, as HF Pattern::find_matches. */
typedef struct { uint32_t a, b; int m; } span;
typedef struct { span *v; size_t n, cap; } spans;

static st_status spans_push(spans *s, uint32_t a, uint32_t b, int m) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        span *nv = st_realloc(s->v, nc * sizeof *nv);
        if (!nv) return ST_ERR_NOMEM;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = (span){a, b, m};
    return ST_OK;
}

static st_status pieces_push(st__pieces *p, uint32_t off, uint32_t len) {
    if (len == 0) return ST_OK; /* HF drops empty splits */
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 64;
        st__piece *nv = st_realloc(p->v, nc * sizeof *nv);
        if (!nv) return ST_ERR_NOMEM;
        p->v = nv;
        p->cap = nc;
    }
    p->v[p->n++] = (st__piece){off, len};
    return ST_OK;
}

static st_status regex_spans(const pcre2_code *re, pcre2_match_data *md, const char *s, uint32_t n,
                             spans *out) {
    PCRE2_SIZE start = 0;
    uint32_t prev = 0;
    while (start <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return st_error(ST_ERR_INTERNAL, "tokenizer: regex match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        uint32_t a = (uint32_t)ov[0], b = (uint32_t)ov[1];
        if (a == b) { /* empty match: skip one character */
            if (a >= n) break;
            int32_t cp;
            start = a + (PCRE2_SIZE)st__utf8_decode(s + a, n - a, &cp);
            continue;
        }
        if (prev != a && spans_push(out, prev, a, 0)) return ST_ERR_NOMEM;
        if (spans_push(out, a, b, 1)) return ST_ERR_NOMEM;
        prev = b;
        start = b;
    }
    if (prev != n && spans_push(out, prev, n, 0)) return ST_ERR_NOMEM;
    return ST_OK;
}

static st_status char_spans(const char *s, uint32_t n, int (*pred)(int32_t), const char *rep,
                            spans *out) {
    uint32_t last = 0, i = 0;
    size_t rl = rep ? strlen(rep) : 0;
    while (i < n) {
        int32_t cp;
        int k;
        int hit;
        if (rep) {
            hit = i + rl <= n && memcmp(s + i, rep, rl) == 0;
            k = hit ? (int)rl : st__utf8_decode(s + i, n - i, &cp);
        } else {
            k = st__utf8_decode(s + i, n - i, &cp);
            hit = pred(cp);
        }
        if (hit) {
            if (last < i && spans_push(out, last, i, 0)) return ST_ERR_NOMEM;
            if (spans_push(out, i, i + (uint32_t)k, 1)) return ST_ERR_NOMEM;
            last = i + (uint32_t)k;
        }
        i += (uint32_t)k;
    }
    if (last < n && spans_push(out, last, n, 0)) return ST_ERR_NOMEM;
    return ST_OK;
}

/* Apply a SplitDelimiterBehavior to spans of the piece at `base`, appending pieces. */
static st_status apply_behavior(const spans *sp, st__split_behavior beh, uint32_t base,
                                st__pieces *out) {
    size_t n = sp->n;
    span *v = sp->v;
    spans acc = {0};
    st_status s = ST_OK;
    int prev_match = 0;
    switch (beh) {
    case ST__SPLIT_ISOLATED:
        for (size_t i = 0; i < n && !s; i++) s = pieces_push(out, base + v[i].a, v[i].b - v[i].a);
        return s;
    case ST__SPLIT_REMOVED:
        for (size_t i = 0; i < n && !s; i++)
            if (!v[i].m) s = pieces_push(out, base + v[i].a, v[i].b - v[i].a);
        return s;
    case ST__SPLIT_MERGED_PREV:
    case ST__SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n && !s; i++) {
            int merge = beh == ST__SPLIT_CONTIGUOUS ? (v[i].m == prev_match) : (v[i].m && !prev_match);
            if (merge && acc.n) acc.v[acc.n - 1].b = v[i].b;
            else s = spans_push(&acc, v[i].a, v[i].b, v[i].m);
            prev_match = v[i].m;
        }
        for (size_t i = 0; i < acc.n && !s; i++) s = pieces_push(out, base + acc.v[i].a, acc.v[i].b - acc.v[i].a);
        break;
    case ST__SPLIT_MERGED_NEXT:
        for (size_t i = n; i-- > 0 && !s;) {
            if (v[i].m && !prev_match && acc.n) acc.v[acc.n - 1].a = v[i].a;
            else s = spans_push(&acc, v[i].a, v[i].b, v[i].m);
            prev_match = v[i].m;
        }
        for (size_t i = acc.n; i-- > 0 && !s;) s = pieces_push(out, base + acc.v[i].a, acc.v[i].b - acc.v[i].a);
        break;
    }
    free(acc.v);
    return s;
}

/* Copy `prefix` + piece to the end of the arena (prefix aligned to the piece's first byte). */
static st_status prepend(st__astr *ar, st__piece *pc, const char *prefix) {
    size_t pl = strlen(prefix);
    uint32_t off = (uint32_t)ar->s.n;
    int32_t a0 = pc->len ? ar->align.v[pc->off] : (ar->align.n ? ar->align.v[ar->align.n - 1] : 0);
    if (st__bytes_append(&ar->s, prefix, pl)) return ST_ERR_NOMEM;
    for (size_t i = 0; i < pl; i++)
        if (st__ivec_push(&ar->align, a0)) return ST_ERR_NOMEM;
    for (uint32_t i = 0; i < pc->len; i++) {
        char c = ar->s.v[pc->off + i];
        if (st__bytes_append(&ar->s, &c, 1) || st__ivec_push(&ar->align, ar->align.v[pc->off + i]))
            return ST_ERR_NOMEM;
    }
    pc->off = off;
    pc->len += (uint32_t)pl;
    return ST_OK;
}

/* Metaspace: replace ' ' by the replacement inside the piece (new arena copy). */
static st_status metaspace_replace(st__astr *ar, st__piece *pc, const char *rep) {
    int has = 0;
    for (uint32_t i = 0; i < pc->len; i++) has |= ar->s.v[pc->off + i] == ' ';
    if (!has) return ST_OK;
    size_t rl = strlen(rep);
    uint32_t off = (uint32_t)ar->s.n, len = 0;
    for (uint32_t i = 0; i < pc->len; i++) {
        char c = ar->s.v[pc->off + i];
        int32_t al = ar->align.v[pc->off + i];
        const char *src = c == ' ' ? rep : &c;
        size_t k = c == ' ' ? rl : 1;
        /* copy c first: appending may move ar->s.v */
        char tmp[8];
        memcpy(tmp, src, k);
        if (st__bytes_append(&ar->s, tmp, k)) return ST_ERR_NOMEM;
        for (size_t j = 0; j < k; j++)
            if (st__ivec_push(&ar->align, al)) return ST_ERR_NOMEM;
        len += (uint32_t)k;
    }
    pc->off = off;
    pc->len = len;
    return ST_OK;
}

static int is_numeric_pred(int32_t cp) { return st__is_numeric(cp); }

st_status st__pretokenize(const st__pretok *steps, int n_steps, st__astr *ar, st__pieces *out) {
    st__pieces cur = {0}, nxt = {0};
    st_status s = pieces_push(&cur, 0, (uint32_t)ar->s.n);
    pcre2_match_data *md = NULL;
    spans sp = {0};
    for (int k = 0; k < n_steps && !s; k++) {
        const st__pretok *st = &steps[k];
        nxt.n = 0;
        if (st->re && !md) {
            md = pcre2_match_data_create(4, NULL);
            if (!md) s = ST_ERR_NOMEM;
        }
        for (size_t i = 0; i < cur.n && !s; i++) {
            st__piece pc = cur.v[i];
            sp.n = 0;
            switch (st->kind) {
            case ST__PT_SPLIT:
                s = regex_spans(st->re, md, ar->s.v + pc.off, pc.len, &sp);
                if (!s) s = apply_behavior(&sp, st->behavior, pc.off, &nxt);
                break;
            case ST__PT_DIGITS:
                s = char_spans(ar->s.v + pc.off, pc.len, is_numeric_pred, NULL, &sp);
                if (!s) s = apply_behavior(&sp, st->individual_digits ? ST__SPLIT_ISOLATED : ST__SPLIT_CONTIGUOUS,
                                           pc.off, &nxt);
                break;
            case ST__PT_BYTELEVEL:
                if (st->add_prefix_space && !(pc.len && ar->s.v[pc.off] == ' ')) s = prepend(ar, &pc, " ");
                if (s) break;
                if (st->re) {
                    s = regex_spans(st->re, md, ar->s.v + pc.off, pc.len, &sp);
                    if (!s) s = apply_behavior(&sp, ST__SPLIT_ISOLATED, pc.off, &nxt);
                } else {
                    s = pieces_push(&nxt, pc.off, pc.len);
                }
                break;
            case ST__PT_METASPACE: {
                const char *rep = st->replacement;
                size_t rl = strlen(rep);
                s = metaspace_replace(ar, &pc, rep);
                if (s) break;
                int starts = pc.len >= rl && memcmp(ar->s.v + pc.off, rep, rl) == 0;
                int orig0 = pc.len && ar->align.v[pc.off] == 0;
                if (!starts && (st->prepend_scheme == 0 || (st->prepend_scheme == 1 && orig0)))
                    s = prepend(ar, &pc, rep);
                if (s) break;
                if (st->split) {
                    s = char_spans(ar->s.v + pc.off, pc.len, NULL, rep, &sp);
                    if (!s) s = apply_behavior(&sp, ST__SPLIT_MERGED_NEXT, pc.off, &nxt);
                } else {
                    s = pieces_push(&nxt, pc.off, pc.len);
                }
                break;
            }
            case ST__PT_WSPLIT:
                s = char_spans(ar->s.v + pc.off, pc.len, st__is_white_space, NULL, &sp);
                if (!s) s = apply_behavior(&sp, ST__SPLIT_REMOVED, pc.off, &nxt);
                break;
            }
        }
        st__pieces t = cur;
        cur = nxt;
        nxt = t;
    }
    free(nxt.v);
    free(sp.v);
    if (md) pcre2_match_data_free(md);
    if (s) {
        free(cur.v);
        return s == ST_ERR_NOMEM ? st_error(s, "tokenizer: out of memory while pre-tokenizing") : s;
    }
    *out = cur;
    return ST_OK;
}
