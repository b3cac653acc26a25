/* test_full_disk.c - every writer of a result on a full filesystem: a tmpfs mounted by the test
 * (mount(2); the suite runs as root) filled by a filler file to leave 0 bytes or half of what the
 * output needs. Each writer must fail with ST_ERR_IO naming the destination and ENOSPC, leave the
 * previous version under the final name byte for byte, leave no temp/partial/old entry beside it,
 * and, once the filler is removed (space freed), write the new version byte-identical to the same
 * call on an ordinary folder. Writers: st_write_file_atomic (eval responses/summary, configs),
 * st_checkpoint_save (training state), st_export_hf (HF folder), st_export_gguf (GGUF file),
 * st_lora_save_peft (PEFT adapter folder). Without the right to mount: skipped, and a failure
 * under SAFETUNE_REQUIRE_INPUTS (testutil.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_testutil.h"
#include "safetune/base.h"
#include "safetune/checkpoint.h"
#include "safetune/export.h"
#include "safetune/lora.h"
#include "testutil.h"

static char g_root[1024], g_mnt[1200], g_ref[1200];
static int g_mounted;

/* ---- small filesystem helpers ---- */

static void rm_rf(const char *p) {
    struct stat sb;
    if (lstat(p, &sb) != 0) return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(p);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char q[2400];
            snprintf(q, sizeof q, "%s/%s", p, de->d_name);
            rm_rf(q);
        }
        if (d) closedir(d);
        rmdir(p);
    } else {
        unlink(p);
    }
}

/* Concatenation of every regular file under p (sorted names, recursing), with the names: equal
 * trees give equal strings. Heap; *n its length. */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static void tree_bytes(const char *p, const char *rel, char **buf, size_t *n) {
    struct stat sb;
    if (stat(p, &sb) != 0) return;
    if (S_ISREG(sb.st_mode)) {
        char *data = NULL;
        size_t len = 0;
        assert_int_equal(st_read_file(p, &data, &len), ST_OK);
        size_t rl = strlen(rel);
        *buf = realloc(*buf, *n + rl + 1 + len);
        memcpy(*buf + *n, rel, rl + 1);
        memcpy(*buf + *n + rl + 1, data, len);
        *n += rl + 1 + len;
        free(data);
        return;
    }
    DIR *d = opendir(p);
    assert_non_null(d);
    char *names[256];
    int k = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && k < 256)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) names[k++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)k, sizeof *names, cmp_str);
    for (int i = 0; i < k; i++) {
        char q[2400], r[2400];
        snprintf(q, sizeof q, "%s/%s", p, names[i]);
        snprintf(r, sizeof r, "%s/%s", rel, names[i]);
        tree_bytes(q, r, buf, n);
        free(names[i]);
    }
}

static int same_tree(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    tree_bytes(a, "", &x, &nx);
    tree_bytes(b, "", &y, &ny);
    int same = x && y && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

/* Entries of the mount other than `keep` and the filler: must be none (no temp, partial or old
 * copies left behind under any name). */
static void assert_only(const char *keep) {
    DIR *d = opendir(g_mnt);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, "filler")) continue;
        if (keep && !strcmp(de->d_name, keep)) continue;
        fail_msg("left behind in %s: %s", g_mnt, de->d_name);
    }
    closedir(d);
}

/* Fill the mount with a filler file so that `leave` bytes stay free. */
static void fill(size_t leave) {
    char p[1300];
    snprintf(p, sizeof p, "%s/filler", g_mnt);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    static char zeros[1 << 16];
    off_t total = 0;
    for (;;) {
        ssize_t w = write(fd, zeros, sizeof zeros);
        if (w <= 0) break;
        total += w;
    }
    assert_int_equal(errno, ENOSPC);
    const off_t keep = total > (off_t)leave ? total - (off_t)leave : 0;
    assert_int_equal(ftruncate(fd, keep), 0);
    close(fd);
}

static void free_space(void) {
    char p[1300];
    snprintf(p, sizeof p, "%s/filler", g_mnt);
    unlink(p);
}

/* ---- the writers under test: each writes version v of its output to path ---- */

typedef struct {
    const char *name;     /* entry under the mount */
    st_status (*write)(const char *path, int v);
} writer;

static st_model *g_model;
static st_lora *g_lora;

static void set_version(float *p, size_t n, int v) {
    for (size_t i = 0; i < n; i++) p[i] = (float)((double)((i * 2654435761u) % 1000) * 1e-3 - 0.5 + v);
}

static st_status w_file(const char *path, int v) {
    char text[20000];
    size_t n = 0;
    for (int i = 0; i < 400; i++) n += (size_t)snprintf(text + n, sizeof text - n, "{\"line\":%d,\"v\":%d}\n", i, v);
    return st_write_file_atomic(path, text, n);
}

static st_status w_checkpoint(const char *path, int v) {
    set_version(g_model->params, g_model->layout.n_floats, v);
    st_train_state s = {.step = v, .params = g_model->params, .n_floats = g_model->layout.n_floats,
                        .config_json = "{\"lr\": 0.001}"};
    return st_checkpoint_save(path, &s);
}

static st_status w_hf(const char *path, int v) {
    set_version(g_model->params, g_model->layout.n_floats, v);
    return st_export_hf(g_model, g_model->params, path, ST_EXPORT_F32);
}

static st_status w_gguf(const char *path, int v) {
    set_version(g_model->params, g_model->layout.n_floats, v);
    return st_export_gguf(g_model, g_model->params, path, ST_EXPORT_F32);
}

static st_status w_peft(const char *path, int v) {
    set_version(g_lora->params, g_lora->layout.n_floats, v);
    return st_lora_save_peft(g_lora, g_lora->params, "base-model", path);
}

static const writer WRITERS[] = {
    {"responses.jsonl", w_file}, {"step-00000002", w_checkpoint}, {"final", w_hf},
    {"model.gguf", w_gguf},      {"adapter", w_peft},
};

static void one_writer(const writer *w) {
    char dst[1400], ref1[1400], ref2[1400];
    snprintf(dst, sizeof dst, "%s/%s", g_mnt, w->name);
    snprintf(ref1, sizeof ref1, "%s/v1-%s", g_ref, w->name);
    snprintf(ref2, sizeof ref2, "%s/v2-%s", g_ref, w->name);
    assert_int_equal(w->write(ref1, 1), ST_OK); /* the references, on an ordinary folder */
    assert_int_equal(w->write(ref2, 2), ST_OK);
    char *r2 = NULL;
    size_t need = 0;
    tree_bytes(ref2, "", &r2, &need);
    free(r2);
    const size_t leaves[] = {0, 4096, need / 2};
    for (size_t k = 0; k < sizeof leaves / sizeof *leaves; k++) {
        rm_rf(dst);
        free_space();
        assert_int_equal(w->write(dst, 1), ST_OK); /* the previous version */
        fill(leaves[k]);
        st_status s = w->write(dst, 2);
        const char *msg = st_last_error();
        print_message("  %zu bytes free: %s\n", leaves[k], msg);
        if (s != ST_ERR_IO || !strstr(msg, dst) || !strstr(msg, strerror(ENOSPC)))
            fail_msg("%s with %zu bytes free: status %d, message \"%s\" (want ST_ERR_IO naming %s and \"%s\")",
                     w->name, leaves[k], (int)s, msg, dst, strerror(ENOSPC));
        if (!same_tree(dst, ref1)) fail_msg("%s with %zu bytes free: the previous version was damaged", w->name, leaves[k]);
        assert_only(w->name);
        free_space(); /* space freed: the same call now succeeds, byte-identical */
        assert_int_equal(w->write(dst, 2), ST_OK);
        if (!same_tree(dst, ref2)) fail_msg("%s after freeing space: differs from the reference", w->name);
        assert_only(w->name);
    }
    rm_rf(dst);
}

static void test_writers_on_full_disk(void **state) {
    (void)state;
    if (!g_mounted) ST_SKIP_MISSING("a tmpfs mounted by the test (mount(2) needs root / CAP_SYS_ADMIN)");
    for (size_t i = 0; i < sizeof WRITERS / sizeof *WRITERS; i++) {
        print_message("full disk: %s\n", WRITERS[i].name);
        one_writer(&WRITERS[i]);
    }
}

static int setup(void **state) {
    (void)state;
    const char *t = getenv("SAFETUNE_TEST_TMP");
    snprintf(g_root, sizeof g_root, "%s/full_disk.%ld", t && *t ? t : "/tmp", (long)getpid());
    snprintf(g_mnt, sizeof g_mnt, "%s/mnt", g_root);
    snprintf(g_ref, sizeof g_ref, "%s/ref", g_root);
    rm_rf(g_root);
    if (st_mkdir_p(g_mnt) || st_mkdir_p(g_ref)) return -1;
    g_mounted = mount("tmpfs", g_mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m") == 0;
    if (!g_mounted) print_message("cannot mount a tmpfs on %s: %s\n", g_mnt, strerror(errno));
    st_config c = st_test_llama_config(32, 64, 4, 2, 8, 97);
    if (st_model_new(&c, &g_model)) return -1;
    st_lora_config lc;
    st_lora_config_default(&lc);
    lc.r = 4;
    if (st_lora_new(&g_model->config, &lc, &g_lora)) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (g_mounted) umount2(g_mnt, MNT_DETACH);
    rm_rf(g_root);
    st_lora_free(g_lora);
    st_model_free(g_model);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_writers_on_full_disk)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
