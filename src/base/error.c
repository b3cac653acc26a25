/* error.c - thread-local last-error message (see base.h). */
#include "safetune/base.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char g_msg[2048];

st_status st_error(st_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return code;
}

st_status st_error_wrap(st_status code, const char *fmt, ...) {
    char prefix[1024], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof g_msg - 3) n = sizeof g_msg - 3;
    memcpy(g_msg, prefix, n);
    g_msg[n] = ':';
    g_msg[n + 1] = ' ';
    size_t room = sizeof g_msg - n - 3;
    size_t m = strnlen(old, room);
    memcpy(g_msg + n + 2, old, m);
    g_msg[n + 2 + m] = '\0';
    return code;
}

const char *st_last_error(void) { return g_msg; }
void st_clear_error(void) { g_msg[0] = '\0'; }

const char *st_status_name(st_status s) {
    switch (s) {
    case ST_OK: return "ok";
    case ST_ERR_IO: return "io error";
    case ST_ERR_FORMAT: return "format error";
    case ST_ERR_UNSUPPORTED: return "unsupported";
    case ST_ERR_ARG: return "bad argument";
    case ST_ERR_NOMEM: return "out of memory";
    case ST_ERR_NUMERIC: return "numeric error";
    case ST_ERR_NET: return "network error";
    case ST_ERR_INTERNAL: return "internal error";
    case ST_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown error";
}
