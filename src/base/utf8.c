/* utf8.c - UTF-8 validation / repair (see base.h). Well-formed = RFC 3629 / Unicode 15 §3.9
 * table 3-7: no overlongs, no surrogates, nothing above U+10FFFF. */
#include "safetune/base.h"

#include <stdlib.h>
#include <string.h>

/* Length of the well-formed sequence at s[0..n), or 0 if ill-formed (a maximal ill-formed
 * subpart is then replaced by one U+FFFD per byte). */
static size_t seq_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t k;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) k = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < k) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < k; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return k;
}

size_t st_utf8_invalid_count(const char *s, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n;) {
        size_t k = seq_len((const unsigned char *)s + i, n - i);
        if (!k) { bad++; k = 1; }
        i += k;
    }
    return bad;
}

char *st_utf8_repair(const char *s, size_t n, size_t *n_replaced) {
    size_t bad = st_utf8_invalid_count(s, n);
    if (n_replaced) *n_replaced = bad;
    char *o = st_malloc(n + 2 * bad + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        size_t k = seq_len((const unsigned char *)s + i, n - i);
        if (k) {
            memcpy(o + j, s + i, k);
            j += k;
            i += k;
        } else {
            memcpy(o + j, "\xEF\xBF\xBD", 3); /* U+FFFD */
            j += 3;
            i++;
        }
    }
    o[j] = 0;
    return o;
}

char *st_utf8_fix_owned(char *s) {
    if (!s) return NULL;
    size_t n = strlen(s);
    if (!st_utf8_invalid_count(s, n)) return s;
    char *o = st_utf8_repair(s, n, NULL);
    free(s);
    return o;
}

size_t st_utf8_strip_bom(char *data, size_t len) {
    if (len < 3 || memcmp(data, "\xEF\xBB\xBF", 3)) return len;
    memmove(data, data + 3, len - 3 + 1); /* with the NUL of st_read_file */
    return len - 3;
}

/* Bytes at the end of s[0..n) that begin a well-formed sequence still missing bytes (0 if none). */
static size_t incomplete_tail(const unsigned char *s, size_t n) {
    for (size_t j = n > 3 ? n - 3 : 0; j < n; j++) {
        unsigned c = s[j];
        size_t k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!k || n - j >= k) continue;
        unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        int ok = 1;
        for (size_t i = j + 1; i < n && ok; i++)
            ok = i == j + 1 ? s[i] >= lo && s[i] <= hi : s[i] >= 0x80 && s[i] <= 0xBF;
        if (ok) return n - j;
    }
    return 0;
}

void st_text_stream_init(st_text_stream *s, const char *const *stops, int n_stops) {
    memset(s, 0, sizeof *s);
    s->stops = stops;
    s->n_stops = n_stops;
}

void st_text_stream_free(st_text_stream *s) {
    free(s->buf);
    s->buf = NULL;
    s->n = s->cap = 0;
}

static void write_valid(const char *b, size_t n, FILE *f) {
    if (!n) return;
    if (!st_utf8_invalid_count(b, n)) {
        fwrite(b, 1, n, f);
        return;
    }
    char *r = st_utf8_repair(b, n, NULL);
    if (r) fputs(r, f);
    free(r);
}

int st_text_stream_push(st_text_stream *s, const char *bytes, size_t n, FILE *f) {
    if (s->stopped) return 1;
    if (s->n + n + 1 > s->cap) {
        size_t nc = (s->n + n + 1) * 2;
        char *nb = realloc(s->buf, nc);
        if (!nb) return -1;
        s->buf = nb;
        s->cap = nc;
    }
    memcpy(s->buf + s->n, bytes, n);
    s->n += n;
    s->buf[s->n] = '\0';
    size_t first = s->n, keep = 0;
    for (int k = 0; k < s->n_stops; k++) { /* a whole stop string, or the start of one at the end */
        const char *st = s->stops[k];
        size_t sl = strlen(st);
        if (!sl) continue;
        const char *h = memmem(s->buf, s->n, st, sl);
        if (h && (size_t)(h - s->buf) < first) first = (size_t)(h - s->buf);
        for (size_t l = sl - 1 < s->n ? sl - 1 : s->n; l > keep; l--)
            if (!memcmp(s->buf + s->n - l, st, l)) {
                keep = l;
                break;
            }
    }
    if (first < s->n) {
        write_valid(s->buf, first, f);
        s->n = 0;
        s->stopped = 1;
        fflush(f);
        return 1;
    }
    size_t u = incomplete_tail((const unsigned char *)s->buf, s->n);
    if (u > keep) keep = u;
    write_valid(s->buf, s->n - keep, f);
    memmove(s->buf, s->buf + s->n - keep, keep);
    s->n = keep;
    fflush(f);
    return 0;
}

void st_text_stream_finish(st_text_stream *s, FILE *f) {
    if (!s->stopped) { /* a character cut at the end of the reply: one U+FFFD, as from_utf8_lossy */
        size_t u = incomplete_tail((const unsigned char *)s->buf, s->n);
        write_valid(s->buf, s->n - u, f);
        if (u) fputs("\xef\xbf\xbd", f);
    }
    fflush(f);
    s->n = 0;
    s->stopped = 0;
}
