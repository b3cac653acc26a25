/* eval_testutil.h - small helpers for the eval/serve unit tests (temp files; the data dir is testutil.h's). */
#ifndef SAFETUNE_EVAL_TESTUTIL_H
#define SAFETUNE_EVAL_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h" /* st_test_data_dir, ST_SKIP_MISSING */

/* Path under $SAFETUNE_TEST_TMP (or /tmp) unique to this process. */
static inline const char *tmp_path(char *buf, size_t cap, const char *name) {
    const char *d = getenv("SAFETUNE_TEST_TMP");
    if (!d || !*d) d = "/tmp";
    snprintf(buf, cap, "%s/%ld_%s", d, (long)getpid(), name);
    return buf;
}

/* Write bytes to a temp file; returns its path in buf. */
static inline const char *write_tmp(char *buf, size_t cap, const char *name, const char *data, size_t len) {
    tmp_path(buf, cap, name);
    FILE *f = fopen(buf, "wb");
    if (!f) return NULL;
    fwrite(data, 1, len, f);
    fclose(f);
    return buf;
}


#endif
