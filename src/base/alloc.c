/* alloc.c - checked allocation and whole-file I/O (see base.h). */
#include "safetune/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void *st_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) st_error(ST_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *st_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) st_error(ST_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *st_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) st_error(ST_ERR_NOMEM, "out of memory reallocating %zu bytes", n);
    return q;
}

void *st_alloc_aligned(size_t n) {
    void *p = NULL;
    size_t sz = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, sz ? sz : 64) != 0) {
        st_error(ST_ERR_NOMEM, "out of memory allocating %zu aligned bytes", n);
        return NULL;
    }
    return p;
}

void st_free_aligned(void *p) { free(p); }

char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = st_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

st_status st_read_file(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return st_error(ST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && !S_ISREG(sb.st_mode)) {
        fclose(f);
        return st_error(ST_ERR_IO, "%s: %s, not a file", path, S_ISDIR(sb.st_mode) ? "is a folder" : "is not a regular file");
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return st_error(ST_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
    }
    long sz = ftell(f);
    if (sz < 0) {
        fclose(f);
        return st_error(ST_ERR_IO, "%s: not a regular file", path);
    }
    rewind(f);
    char *buf = st_malloc((size_t)sz + 1);
    if (!buf) {
        fclose(f);
        return ST_ERR_NOMEM;
    }
    size_t got = fread(buf, 1, (size_t)sz, f);
    fclose(f);
    if (got != (size_t)sz) {
        free(buf);
        return st_error(ST_ERR_IO, "%s: short read (%zu of %ld bytes)", path, got, sz);
    }
    buf[sz] = '\0';
    *data = buf;
    if (len) *len = (size_t)sz;
    return ST_OK;
}

/* 1-based line of position at in text. */
static size_t line_of(const char *text, const char *at) {
    size_t line = 1;
    for (const char *p = text; p < at; p++) line += *p == '\n';
    return line;
}

st_status st_read_text_file(const char *path, char **data, size_t *len) {
    size_t n = 0;
    st_status s = st_read_file(path, data, &n);
    if (s) return s;
    const char *nul = memchr(*data, '\0', n);
    if (nul) {
        s = st_error(ST_ERR_FORMAT, "%s: byte %zu (line %zu): NUL byte: a binary file (or UTF-16), not UTF-8 "
                     "text", path, (size_t)(nul - *data), line_of(*data, nul));
        free(*data);
        *data = NULL;
        return s;
    }
    if (len) *len = n;
    return ST_OK;
}

const char *st_json_nul_escape(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && i + 5 < n && !memcmp(s + i + 2, "0000", 4)) return s + i;
        i++; /* the escaped character (a backslash too) */
    }
    return NULL;
}

st_status st_read_json_text_file(const char *path, char **data, size_t *len) {
    size_t n = 0;
    st_status s = st_read_text_file(path, data, &n);
    if (s) return s;
    const char *z = st_json_nul_escape(*data, n);
    if (z) {
        s = st_error(ST_ERR_FORMAT, "%s: line %zu: \\u0000 (a NUL character) in a JSON string: text cannot hold "
                     "it; remove it", path, line_of(*data, z));
        free(*data);
        *data = NULL;
        return s;
    }
    if (len) *len = n;
    return ST_OK;
}

st_status st_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        const int e = errno;
        return st_error(ST_ERR_IO, "%s: cannot create: %s%s", path, strerror(e),
                        e == ENOENT ? " (its folder does not exist: create it first)" : "");
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            st_status s = st_error(ST_ERR_IO, "%s: write failed: %s", path, strerror(errno));
            close(fd);
            unlink(tmp);
            return s;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return st_error(ST_ERR_IO, "%s: cannot flush: %s", path, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        st_status s = st_error(ST_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
        unlink(tmp);
        return s;
    }
    char dir[4096]; /* the rename itself survives a crash once its folder is synced */
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
    st_fsync_dir(slash ? dir : ".");
    return ST_OK;
}
