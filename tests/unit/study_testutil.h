/* study_testutil.h - helpers for the study unit tests: a fresh temp folder with a dummy model and
 * dataset, config files written from strings. */
#ifndef SAFETUNE_STUDY_TESTUTIL_H
#define SAFETUNE_STUDY_TESTUTIL_H

/* test paths are short; silence GCC's worst-case truncation analysis of snprintf into fixed buffers */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Temp folder unique to this process and tag: $SAFETUNE_TEST_TMP/study_<pid>_<tag> (emptied). */
static inline const char *st_test_dir(char *buf, size_t cap, const char *tag) {
    const char *d = getenv("SAFETUNE_TEST_TMP");
    if (!d || !*d) d = "/tmp";
    snprintf(buf, cap, "%s/study_%ld_%s", d, (long)getpid(), tag);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) return NULL;
    return buf;
}

static inline void st_test_write(const char *dir, const char *name, const char *text) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static inline long st_test_file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Files for a config: DIR/model.gguf (dummy), DIR/train.json (dummy alpaca), and DIR/study.cfg.json
 * with the given body inserted after the common keys. Returns the config path in out. */
static inline void st_test_config(const char *dir, const char *extra, char *out, size_t cap) {
    st_test_write(dir, "model.gguf", "GGUF");
    st_test_write(dir, "train.json", "[{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\"}]");
    char body[8192];
    snprintf(body, sizeof body,
             "{\"model\": \"%s/model.gguf\", \"data_dir\": \"%s\",\n"
             " \"datasets\": [{\"path\": \"train.json\", \"format\": \"alpaca\"}],\n"
             " \"report\": {\"plots\": false}%s%s}\n",
             dir, dir, extra && *extra ? ",\n " : "", extra ? extra : "");
    st_test_write(dir, "study.cfg.json", body);
    snprintf(out, cap, "%s/study.cfg.json", dir);
}

static inline int st_test_files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    while (eq) {
        int x = fgetc(fa), y = fgetc(fb);
        if (x != y) eq = 0;
        if (x == EOF || y == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

#endif
