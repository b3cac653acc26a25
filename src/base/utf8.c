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
