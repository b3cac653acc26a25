/* replay_main.c - runs a fuzz target over files without libFuzzer: every file given, and every
 * file in every folder given (sorted by name), is passed once to LLVMFuzzerTestOneInput. Linked
 * into the fuzz_<name>_replay executables of the normal (gcc) builds, so the committed seeds and
 * regression inputs run as ctest `fuzz.replay.<name>` in the release and ASan suites.
 * Usage: fuzz_<name>_replay PATH...   Exit 0 after at least one input; 1 when none was found. */
#include "fuzz_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static long run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        exit(1);
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) abort();
    /* exact-size copy so ASan sees reads past the input's end */
    unsigned char *exact = malloc(n ? n : 1);
    if (!exact) abort();
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 1;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static long run_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0; /* an absent regressions folder holds no inputs */
    if (!S_ISDIR(st.st_mode)) return run_file(path);
    DIR *d = opendir(path);
    if (!d) return 0;
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        names = realloc(names, (n + 1) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp);
    long count = 0;
    for (size_t i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, names[i]);
        count += run_path(p);
        free(names[i]);
    }
    free(names);
    return count;
}

int main(int argc, char **argv) {
    LLVMFuzzerInitialize(&argc, &argv);
    long count = 0;
    for (int i = 1; i < argc; i++) count += run_path(argv[i]);
    printf("%s: %ld inputs replayed without a crash\n", argv[0], count);
    return count > 0 ? 0 : 1;
}
