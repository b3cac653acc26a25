/* eval_internal.h - helpers shared by the eval and serve layers (not public API). */
#ifndef SAFETUNE_EVAL_INTERNAL_H
#define SAFETUNE_EVAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* 1 if s[0..len) is valid UTF-8 (utf8proc rules); else 0 and *bad = byte offset of the error. */
int st__utf8_valid(const char *s, size_t len, size_t *bad);

/* Growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} st__buf;
void st__buf_put(st__buf *b, const void *d, size_t n);
void st__buf_puts(st__buf *b, const char *s);
void st__buf_putc(st__buf *b, char c);
void st__buf_free(st__buf *b);

/* SHA-256 (FIPS 180-4) of data; hex = 64 hex digits + NUL. */
void st__sha256(const void *data, size_t len, uint8_t out[32]);
void st__sha256_hex(const void *data, size_t len, char hex[65]);

#endif
