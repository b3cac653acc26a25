/* fuzz_util.c - scratch files and settings shared by the fuzz targets (fuzz_util.h). */
#include "fuzz_util.h"

#include "safetune/base.h"
#include "safetune/gguf.h"
#include "safetune/tokenizer.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256];

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void cleanup(void) {
    if (g_dir[0]) remove_tree(g_dir);
}

void stf_init(void) {
    if (g_dir[0]) return;
    setenv("OMP_NUM_THREADS", "1", 1);
    st_log_set_level(0);
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                           ? "/dev/shm"
                           : (getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    snprintf(g_dir, sizeof g_dir, "%s/stfuzz-%ld", base, (long)getpid());
    remove_tree(g_dir);
    if (mkdir(g_dir, 0700) != 0) {
        fprintf(stderr, "fuzz: cannot create scratch folder %s\n", g_dir);
        abort();
    }
    atexit(cleanup);
}

const char *stf_path(const char *name) {
    static char buf[4][512];
    static int slot;
    stf_init();
    char *b = buf[slot++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", g_dir, name);
    return b;
}

void stf_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
}

char *stf_cstr(const uint8_t *data, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    if (n) memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

static const char *env_or(const char *var, const char *sub) {
    const char *e = getenv(var);
    if (e && *e && strlen(e) < 512) return e;
    static char buf[2][512];
    char *b = buf[sub[0] == 'd'];
    snprintf(b, sizeof buf[0], "%s/%s", SAFETUNE_SOURCE_DIR, sub);
    return b;
}

const char *stf_model_dir(void) { return env_or("SAFETUNE_MODEL_DIR", "models"); }
const char *stf_data_dir(void) { return env_or("SAFETUNE_DATA_DIR", "data"); }

/* in the sanitizer runtimes; prints to the report stream, which libFuzzer keeps open under -close_fd_mask */
extern void __sanitizer_report_error_summary(const char *error_summary) __attribute__((weak));

void stf_fail(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(msg, sizeof msg, "fuzz invariant failed: ");
    vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", msg);
    if (__sanitizer_report_error_summary) __sanitizer_report_error_summary(msg);
    abort();
}

static const char *const TOK_NAMES[STF_N_TOKENIZERS] = {"smollm2-gguf", "qwen2.5", "mistral-7b"};

const char *stf_tokenizer_name(int i) { return TOK_NAMES[i]; }

st_tokenizer *stf_tokenizer(int i) {
    static st_tokenizer *toks[STF_N_TOKENIZERS];
    if (toks[i]) return toks[i];
    char path[1100];
    st_status s;
    if (i == 0) {
        if (snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", stf_model_dir()) >= (int)sizeof path)
            stf_fail("model folder path too long");
        st_gguf *g = NULL;
        s = st_gguf_open(path, &g);
        if (s == ST_OK) s = st_tokenizer_from_gguf(g, &toks[i]);
        st_gguf_close(g); /* the tokenizer keeps its own copies */
    } else {
        if (snprintf(path, sizeof path, "%s/tokenizers/%s/tokenizer.json", stf_data_dir(), TOK_NAMES[i]) >= (int)sizeof path)
            stf_fail("data folder path too long");
        s = st_tokenizer_from_json(path, &toks[i]);
    }
    if (s != ST_OK)
        stf_fail("cannot load tokenizer %s (%s): %s; fetch the model and data first (scripts/fetch_model.sh, "
                 "scripts/fetch_data.py)",
                 TOK_NAMES[i], path, st_last_error());
    return toks[i];
}

int stf_note(const char *what, int st) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("STF_VERBOSE") && !strcmp(getenv("STF_VERBOSE"), "1");
    if (verbose) fprintf(stderr, "%s: %s\n", what, st ? st_last_error() : "ok");
    return st;
}
