/* afile.h - streaming atomic file writer for large outputs (internal to src/formats):
 * writes "<path>.tmp.<pid>", then fsync + rename over path on commit; abort removes the
 * temp file, so a failed write never leaves a partial output. */
#ifndef SAFETUNE_FORMATS_AFILE_H
#define SAFETUNE_FORMATS_AFILE_H

#include "safetune/base.h"

typedef struct {
    FILE *f;
    const char *path;
    char tmp[4096];
    uint64_t written;
} st_afile;

st_status st_afile_open(st_afile *a, const char *path);
st_status st_afile_write(st_afile *a, const void *data, size_t n);
st_status st_afile_zeros(st_afile *a, size_t n);
/* fsync, close and rename into place; on failure the temp file is removed. */
st_status st_afile_commit(st_afile *a);
void st_afile_abort(st_afile *a);

#endif
