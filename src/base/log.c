/* log.c - leveled logging to stderr (see base.h). */
#include "safetune/base.h"

#include <stdarg.h>

static int g_level = 2;

void st_log_set_level(int level) { g_level = level; }
int st_log_level(void) { return g_level; }

static void vlog(int level, const char *tag, const char *fmt, va_list ap) {
    if (level > g_level) return;
    fprintf(stderr, "%s", tag);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

#define DEFINE_LOG(name, level, tag)              \
    void name(const char *fmt, ...) {             \
        va_list ap;                               \
        va_start(ap, fmt);                        \
        vlog(level, tag, fmt, ap);                \
        va_end(ap);                               \
    }
DEFINE_LOG(st_log_warn, 1, "warning: ")
DEFINE_LOG(st_log_info, 2, "")
DEFINE_LOG(st_log_debug, 3, "debug: ")
