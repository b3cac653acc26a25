/* test_base.c - errors, RNG determinism, atomic file writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* UTF-8 repair (RFC 3629): each ill-formed byte -> U+FFFD (EF BF BD); valid text unchanged. */
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_message),
        cmocka_unit_test(test_rng_reproducible),
        cmocka_unit_test(test_shuffle_is_permutation),
        cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_utf8_repair),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
