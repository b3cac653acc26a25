/* test_base.c - errors, RNG determinism, atomic file writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safetune/base.h"

static void test_error_message(void **state) {
    (void)state;
    st_status s = st_error(ST_ERR_FORMAT, "%s: offset %d: bad magic", "x.gguf", 0);
    assert_int_equal(s, ST_ERR_FORMAT);
    assert_string_equal(st_last_error(), "x.gguf: offset 0: bad magic");
    st_error_wrap(s, "loading %s", "model");
    assert_string_equal(st_last_error(), "loading model: x.gguf: offset 0: bad magic");
}

static void test_rng_reproducible(void **state) {
    (void)state;
    st_rng a, b;
    st_rng_seed(&a, 42);
    st_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++) assert_int_equal(st_rng_u64(&a), st_rng_u64(&b));
    st_rng_seed(&b, 43);
    assert_int_not_equal(st_rng_u64(&a), st_rng_u64(&b));
    double mean = 0;
    for (int i = 0; i < 100000; i++) {
        float f = st_rng_float(&a);
        assert_true(f >= 0.0f && f < 1.0f);
        mean += f;
    }
    mean /= 100000;
    assert_true(mean > 0.49 && mean < 0.51);
}

static void test_shuffle_is_permutation(void **state) {
    (void)state;
    uint32_t idx[100];
    int seen[100] = {0};
    for (int i = 0; i < 100; i++) idx[i] = (uint32_t)i;
    st_rng r;
    st_rng_seed(&r, 7);
    st_rng_shuffle(&r, idx, 100);
    int moved = 0;
    for (int i = 0; i < 100; i++) {
        seen[idx[i]]++;
        moved += idx[i] != (uint32_t)i;
    }
    for (int i = 0; i < 100; i++) assert_int_equal(seen[i], 1);
    assert_true(moved > 50);
}

static void test_atomic_write(void **state) {
    (void)state;
    const char *dir = getenv("SAFETUNE_TEST_TMP");
    char path[4096];
    snprintf(path, sizeof path, "%s/atomic.txt", dir ? dir : "/tmp");
    assert_int_equal(st_write_file_atomic(path, "hello", 5), ST_OK);
    char *data;
    size_t len;
    assert_int_equal(st_read_file(path, &data, &len), ST_OK);
    assert_int_equal(len, 5);
    assert_string_equal(data, "hello");
    free(data);
    /* text inputs: a NUL byte is named by byte and line */
    assert_int_equal(st_read_text_file(path, &data, &len), ST_OK);
    free(data);
    assert_int_equal(st_write_file_atomic(path, "ab\ncd\0e", 7), ST_OK);
    data = (char *)1;
    assert_int_equal(st_read_text_file(path, &data, &len), ST_ERR_FORMAT);
    assert_null(data);
    assert_non_null(strstr(st_last_error(), "byte 5 (line 2): NUL byte"));
    /* JSON inputs: a \u0000 escape is refused, an escaped backslash before u0000 is text */
    const char *esc = "{\"a\": \"x\\\\u0000\"}\n{\"b\": \"y\\u0000\"}\n";
    assert_ptr_equal(st_json_nul_escape(esc, strlen(esc)), strstr(esc, "y") + 1);
    assert_null(st_json_nul_escape("\\\\u0000", 7));
    assert_null(st_json_nul_escape("\\u000", 5));
    assert_int_equal(st_write_file_atomic(path, esc, strlen(esc)), ST_OK);
    assert_int_equal(st_read_json_text_file(path, &data, &len), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "line 2: \\u0000"));
    unlink(path);
    assert_int_equal(st_write_file_atomic("/nonexistent-dir/x", "a", 1), ST_ERR_IO);
    /* the message names the file asked for (not the internal temporary) and the missing folder */
    assert_non_null(strstr(st_last_error(), "/nonexistent-dir/x: cannot create"));
    assert_null(strstr(st_last_error(), ".tmp."));
    assert_non_null(strstr(st_last_error(), "folder does not exist"));
    assert_int_equal(st_read_file("/nonexistent-dir/x", &data, &len), ST_ERR_IO);
    /* a folder where a file is expected: said so (fopen succeeds on folders; ftell gives 2^63) */
    assert_int_equal(st_read_file("/tmp", &data, &len), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "/tmp: is a folder, not a file"));
}

static int exists(const char *dir, const char *name) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void touch(const char *dir, const char *name, int is_dir) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (is_dir) {
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p + strlen(p), sizeof p - strlen(p), "/blob.bin");
    }
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
}

/* Leftovers of killed saves/exports go when their process is gone; live ones, other prefixes,
 * complete folders and non-PID suffixes stay. */
static void test_remove_stale_temp_dirs(void **state) {
    (void)state;
    const char *tmp = getenv("SAFETUNE_TEST_TMP");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/stale.%ld", tmp ? tmp : "/tmp", (long)getpid());
    assert_int_equal(st_mkdir_p(dir), ST_OK);
    pid_t child = fork();
    if (child == 0) _exit(0);
    assert_true(child > 0);
    waitpid(child, NULL, 0); /* reaped: its PID names no process now */
    char n[6][64];
    snprintf(n[0], 64, "step-1.old.%ld", (long)child);      /* dead: goes */
    snprintf(n[1], 64, "step-2.partial.%ld", (long)child);  /* dead: goes */
    snprintf(n[2], 64, "step-3.tmp.%ld", (long)child);      /* dead, a file: goes */
    snprintf(n[3], 64, "step-4.old.%ld", (long)getpid());   /* ours: stays */
    snprintf(n[4], 64, "final.tmp.%ld", (long)child);       /* other prefix: stays */
    snprintf(n[5], 64, "step-5.old.12ab");                  /* not a PID: stays */
    for (int i = 0; i < 6; i++) touch(dir, n[i], i != 2);
    touch(dir, "step-6", 1); /* a complete checkpoint: stays */
    st_remove_stale_temp_dirs(dir, "step-");
    for (int i = 0; i < 3; i++) assert_false(exists(dir, n[i]));
    for (int i = 3; i < 6; i++) assert_true(exists(dir, n[i]));
    assert_true(exists(dir, "step-6"));
    st_remove_stale_temp_dirs(dir, "final");
    assert_false(exists(dir, n[4]));
    char p[8192];
    for (int i = 3; i < 6; i++) {
        if (i == 4) continue;
        snprintf(p, sizeof p, "%s/%s", dir, n[i]);
        st_remove_flat_dir(p);
    }
    snprintf(p, sizeof p, "%s/step-6", dir);
    st_remove_flat_dir(p);
    assert_int_equal(rmdir(dir), 0);
}

/* UTF-8 repair (RFC 3629): each ill-formed byte -> U+FFFD (EF BF BD); valid text unchanged. */
/* No thread leaves phase p of st_barrier_wait before every thread has entered it: with 4 threads
 * on fewer cores (so waits also sleep), a spin budget of 0 (always sleep) and 1 ms (spin), a
 * thread that passed early would see a peer's counter still at p. */
static void test_barrier_phases(void **state) {
    (void)state;
    enum { T = 4, PHASES = 3000 };
    const double budgets[] = {0.0, 1e-3};
    for (int bi = 0; bi < 2; bi++) {
        st_barrier b;
        st_barrier_init(&b);
        _Atomic int counter[T];
        for (int t = 0; t < T; t++) atomic_init(&counter[t], 0);
        atomic_int bad;
        atomic_init(&bad, 0);
#pragma omp parallel num_threads(T)
        {
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
            for (int p = 0; p < PHASES; p++) {
                for (volatile int spin = 0; spin < ((p * 7 + t * 13) % 5) * 200; spin++) {
                }
                atomic_store_explicit(&counter[t], p + 1, memory_order_relaxed);
                st_barrier_wait(&b, nt, budgets[bi]);
                for (int u = 0; u < nt; u++)
                    if (atomic_load_explicit(&counter[u], memory_order_relaxed) < p + 1) atomic_store(&bad, 1);
                st_barrier_wait(&b, nt, budgets[bi]);
            }
        }
        assert_int_equal(atomic_load(&bad), 0);
        assert_int_equal(atomic_load(&b.arrived), 0);
        assert_int_equal(atomic_load(&b.sleepers), 0);
    }
}

static void test_utf8_repair(void **state) {
    (void)state;
    const char ok[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    assert_int_equal(st_utf8_invalid_count(ok, strlen(ok)), 0);
    /* lone 0xFF, truncated 2-byte lead at the end, overlong C0 AF, surrogate ED A0 80, > U+10FFFF F4 90 80 80 */
    const char bad[] = "a\xff" "b\xc0\xaf" "c\xed\xa0\x80" "d\xf4\x90\x80\x80" "e\xc3";
    size_t n = 0;
    char *r = st_utf8_repair(bad, strlen(bad), &n);
    assert_non_null(r);
    assert_int_equal(n, 1 + 2 + 3 + 4 + 1);
    const char *R = "\xef\xbf\xbd";
    char want[128];
    snprintf(want, sizeof want, "a%sb%s%sc%s%s%sd%s%s%s%se%s", R, R, R, R, R, R, R, R, R, R, R);
    assert_string_equal(r, want);
    free(r);
    char *s = st_utf8_fix_owned(st_strdup(ok)); /* valid: same text back */
    assert_string_equal(s, ok);
    free(s);
    s = st_utf8_fix_owned(st_strdup("x\x80"));
    assert_string_equal(s, "x\xef\xbf\xbd");
    free(s);
    assert_null(st_utf8_fix_owned(NULL));
}

/* Streamed reply text: what was written to a memory stream after each push. */
typedef struct {
    FILE *f;
    char *buf;
    size_t len;
} memout;

static const char *written(memout *o) {
    fflush(o->f);
    return o->buf;
}

static void test_text_stream_utf8(void **state) {
    (void)state;
    memout o = {0};
    o.f = open_memstream(&o.buf, &o.len);
    st_text_stream s;
    st_text_stream_init(&s, NULL, 0);
    /* "é" (C3 A9) split over two tokens: nothing of it is written until it completes */
    assert_int_equal(st_text_stream_push(&s, "caf\xc3", 4, o.f), 0);
    assert_string_equal(written(&o), "caf");
    assert_int_equal(st_text_stream_push(&s, "\xa9 \xf0\x9f", 4, o.f), 0); /* é, space, half an emoji */
    assert_string_equal(written(&o), "caf\xc3\xa9 ");
    assert_int_equal(st_text_stream_push(&s, "\x98", 1, o.f), 0);
    assert_string_equal(written(&o), "caf\xc3\xa9 ");
    assert_int_equal(st_text_stream_push(&s, "\x80!", 2, o.f), 0); /* U+1F600 completes */
    assert_string_equal(written(&o), "caf\xc3\xa9 \xf0\x9f\x98\x80!");
    /* the budget ends mid-character: the held bytes end as U+FFFD, never as a bare lead byte */
    assert_int_equal(st_text_stream_push(&s, "\xe4\xbd", 2, o.f), 0);
    assert_string_equal(written(&o), "caf\xc3\xa9 \xf0\x9f\x98\x80!");
    st_text_stream_finish(&s, o.f);
    assert_int_equal(st_utf8_invalid_count(written(&o), strlen(written(&o))), 0);
    assert_string_equal(written(&o), "caf\xc3\xa9 \xf0\x9f\x98\x80!\xef\xbf\xbd"); /* one U+FFFD */
    /* a byte that can never start a character is replaced at once, not held */
    size_t before = strlen(written(&o));
    assert_int_equal(st_text_stream_push(&s, "\x80x", 2, o.f), 0);
    assert_string_equal(written(&o) + before, "\xef\xbf\xbdx");
    st_text_stream_finish(&s, o.f);
    st_text_stream_free(&s);
    fclose(o.f);
    free(o.buf);
}

static void test_text_stream_stops(void **state) {
    (void)state;
    memout o = {0};
    o.f = open_memstream(&o.buf, &o.len);
    const char *stops[] = {"</answer>", "STOP"};
    st_text_stream s;
    st_text_stream_init(&s, stops, 2);
    assert_int_equal(st_text_stream_push(&s, "The answer </", 13, o.f), 0);
    assert_string_equal(written(&o), "The answer "); /* "</" may start "</answer>": held */
    assert_int_equal(st_text_stream_push(&s, "b> and S", 8, o.f), 0);
    assert_string_equal(written(&o), "The answer </b> and ");
    assert_int_equal(st_text_stream_push(&s, "TOP more", 8, o.f), 1); /* "STOP" completes: dropped */
    assert_string_equal(written(&o), "The answer </b> and ");
    assert_int_equal(st_text_stream_push(&s, "ignored", 7, o.f), 1);
    st_text_stream_finish(&s, o.f);
    assert_string_equal(written(&o), "The answer </b> and ");
    /* next reply: a held prefix that does not become a stop string is written at the end */
    assert_int_equal(st_text_stream_push(&s, " ST", 3, o.f), 0);
    st_text_stream_finish(&s, o.f);
    assert_string_equal(written(&o), "The answer </b> and  ST");
    st_text_stream_free(&s);
    fclose(o.f);
    free(o.buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_message),
        cmocka_unit_test(test_rng_reproducible),
        cmocka_unit_test(test_shuffle_is_permutation),
        cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_remove_stale_temp_dirs),
        cmocka_unit_test(test_utf8_repair),
        cmocka_unit_test(test_text_stream_utf8),
        cmocka_unit_test(test_text_stream_stops),
        cmocka_unit_test(test_barrier_phases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
