/* afile.c - streaming atomic file writer (see afile.h). */
#include "formats/afile.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

st_status st_afile_open(st_afile *a, const char *path) {
    a->path = path;
    a->written = 0;
    int n = snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof a->tmp) return st_error(ST_ERR_ARG, "%s: path too long", path);
    a->f = fopen(a->tmp, "wb");
    if (!a->f) {
        const int e = errno;
        return st_error(ST_ERR_IO, "%s: cannot create: %s%s", path, strerror(e),
                        e == ENOENT ? " (its folder does not exist: create it first)" : "");
    }
    return ST_OK;
}

st_status st_afile_write(st_afile *a, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, a->f) != n) {
        int e = errno;
        st_afile_abort(a);
        return st_error(ST_ERR_IO, "%s: write failed after %llu bytes: %s", a->path, (unsigned long long)a->written,
                        strerror(e));
    }
    a->written += n;
    return ST_OK;
}

st_status st_afile_zeros(st_afile *a, size_t n) {
    static const uint8_t z[256];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        st_status s = st_afile_write(a, z, k);
        if (s) return s;
        n -= k;
    }
    return ST_OK;
}

st_status st_afile_commit(st_afile *a) {
    int bad = fflush(a->f) != 0 || fsync(fileno(a->f)) != 0;
    int e = errno;
    bad |= fclose(a->f) != 0;
    a->f = NULL;
    if (bad) {
        unlink(a->tmp);
        return st_error(ST_ERR_IO, "%s: cannot write %s: %s", a->path, a->tmp, strerror(e));
    }
    if (rename(a->tmp, a->path) != 0) {
        e = errno;
        unlink(a->tmp);
        return st_error(ST_ERR_IO, "%s: cannot rename %s into place: %s", a->path, a->tmp, strerror(e));
    }
    return ST_OK;
}

void st_afile_abort(st_afile *a) {
    if (a->f) fclose(a->f);
    a->f = NULL;
    unlink(a->tmp);
}
