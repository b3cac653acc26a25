/* test_gguf_writer.c - GGUF writer: every metadata type and tensor type written and read back,
 * custom alignment, copy_key, argument errors, atomic output. (gguf-py reading our output is
 * tested in tests/parity/formats.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetune/gguf.h"
#include "safetune/quant.h"

static char g_path[2048];

static const char *tmp(const char *name) {
    const char *d = getenv("SAFETUNE_TEST_TMP");
    snprintf(g_path, sizeof g_path, "%s/%s", d ? d : "/tmp", name);
    return g_path;
}

static void test_round_trip(void **state) {
    (void)state;
    st_gguf_writer *w;
    assert_int_equal(st_gguf_writer_new(&w), ST_OK);
    uint8_t u8 = 7;
    int16_t i16 = -300;
    uint64_t u64 = 0xfedcba9876543210ull;
    double f64 = 2.5e-300;
    assert_int_equal(st_gguf_writer_set_scalar(w, "s.u8", ST_GGUF_UINT8, &u8), ST_OK);
    assert_int_equal(st_gguf_writer_set_scalar(w, "s.i16", ST_GGUF_INT16, &i16), ST_OK);
    assert_int_equal(st_gguf_writer_set_scalar(w, "s.u64", ST_GGUF_UINT64, &u64), ST_OK);
    assert_int_equal(st_gguf_writer_set_scalar(w, "s.f64", ST_GGUF_FLOAT64, &f64), ST_OK);
    assert_int_equal(st_gguf_writer_set_scalar(w, "s.bad", ST_GGUF_STRING, &u8), ST_ERR_ARG);
    assert_int_equal(st_gguf_writer_set_u32(w, "s.u32", 123), ST_OK);
    assert_int_equal(st_gguf_writer_set_u32(w, "s.u32", 456), ST_OK); /* replaces */
    assert_int_equal(st_gguf_writer_set_i32(w, "s.i32", -9), ST_OK);
    assert_int_equal(st_gguf_writer_set_f32(w, "s.f32", 0.75f), ST_OK);
    assert_int_equal(st_gguf_writer_set_bool(w, "s.bool", 5), ST_OK);
    assert_int_equal(st_gguf_writer_set_str(w, "s.str", "llama"), ST_OK);
    assert_int_equal(st_gguf_writer_set_u32(w, "general.alignment", 64), ST_OK);
    const float fa[3] = {1.5f, -2.0f, 0.25f};
    assert_int_equal(st_gguf_writer_set_arr(w, "a.f32", ST_GGUF_FLOAT32, fa, 3), ST_OK);
    assert_int_equal(st_gguf_writer_set_arr(w, "a.bad", ST_GGUF_STRING, fa, 3), ST_ERR_ARG);
    const char *strs[] = {"<s>", "", "hello world"};
    const size_t lens[] = {3, 0, 5};
    assert_int_equal(st_gguf_writer_set_arr_str(w, "a.str", strs, NULL, 3), ST_OK);
    assert_int_equal(st_gguf_writer_set_arr_str(w, "a.str_len", strs, lens, 3), ST_OK);

    float t1[2 * 3], t2[40], t3[5];
    for (int i = 0; i < 6; i++) t1[i] = (float)i * 0.5f - 1.0f;
    for (int i = 0; i < 40; i++) t2[i] = (float)i / 3.0f;
    t3[0] = 1.0f + 1.0f / 2048.0f; /* fp16 tie -> 1.0 */
    t3[1] = 70000.0f;              /* fp16 overflow -> inf */
    t3[2] = 1.00390625f;           /* bf16 tie -> 1.0 */
    t3[3] = -3.0f;
    t3[4] = 1e-8f;                 /* fp16 -> 0 (below half the smallest subnormal) */
    int64_t ne1[2] = {3, 2}, ne2[4] = {5, 2, 2, 2}, ne3[1] = {5};
    assert_int_equal(st_gguf_writer_add_tensor(w, "t.f32", 2, ne1, ST_GGML_TYPE_F32, t1), ST_OK);
    assert_int_equal(st_gguf_writer_add_tensor(w, "t.bf16", 4, ne2, ST_GGML_TYPE_BF16, t2), ST_OK);
    assert_int_equal(st_gguf_writer_add_tensor(w, "t.f16", 1, ne3, ST_GGML_TYPE_F16, t3), ST_OK);
    assert_int_equal(st_gguf_writer_add_tensor(w, "t.bf16b", 1, ne3, ST_GGML_TYPE_BF16, t3), ST_OK);
    assert_int_equal(st_gguf_writer_add_tensor(w, "t.f32", 1, ne3, ST_GGML_TYPE_F32, t3), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "duplicate tensor name 't.f32'"));
    assert_int_equal(st_gguf_writer_add_tensor(w, "t.q", 1, ne3, ST_GGML_TYPE_Q4_0, t3), ST_ERR_ARG);
    assert_int_equal(st_gguf_writer_add_tensor(w, "t.5d", 5, ne2, ST_GGML_TYPE_F32, t2), ST_ERR_ARG);
    const char *path = tmp("writer_rt.gguf");
    assert_int_equal(st_gguf_writer_finish(w, path), ST_OK);
    st_gguf_writer_free(w);

    st_gguf *g;
    assert_int_equal(st_gguf_open(path, &g), ST_OK);
    assert_int_equal(st_gguf_version(g), 3);
    assert_int_equal(st_gguf_alignment(g), 64);
    assert_int_equal(st_gguf_n_keys(g), 13);
    int64_t i;
    double d;
    int b;
    assert_int_equal(st_gguf_get_i64(g, "s.u8", &i), ST_OK); assert_int_equal(i, 7);
    assert_int_equal(st_gguf_get_i64(g, "s.i16", &i), ST_OK); assert_int_equal(i, -300);
    assert_int_equal(st_gguf_get_i64(g, "s.u64", &i), ST_ERR_FORMAT); /* > INT64_MAX */
    assert_int_equal(st_gguf_get_f64(g, "s.u64", &d), ST_OK); assert_true(d == (double)u64);
    assert_int_equal(st_gguf_get_f64(g, "s.f64", &d), ST_OK); assert_true(d == f64);
    assert_int_equal(st_gguf_get_i64(g, "s.u32", &i), ST_OK); assert_int_equal(i, 456);
    assert_int_equal(st_gguf_key_type(g, st_gguf_find_key(g, "s.u32")), ST_GGUF_UINT32);
    assert_int_equal(st_gguf_get_i64(g, "s.i32", &i), ST_OK); assert_int_equal(i, -9);
    assert_int_equal(st_gguf_get_f64(g, "s.f32", &d), ST_OK); assert_true(d == 0.75);
    assert_int_equal(st_gguf_get_bool(g, "s.bool", &b), ST_OK); assert_int_equal(b, 1);
    const char *s;
    size_t len;
    assert_int_equal(st_gguf_get_str(g, "s.str", &s, &len), ST_OK);
    assert_int_equal(len, 5); assert_memory_equal(s, "llama", 5);
    st_gguf_type et;
    uint64_t n;
    const void *data;
    assert_int_equal(st_gguf_get_arr(g, "a.f32", &et, &n, &data), ST_OK);
    assert_int_equal(et, ST_GGUF_FLOAT32); assert_int_equal(n, 3);
    assert_memory_equal(data, fa, sizeof fa);
    assert_int_equal(st_gguf_get_arr_str(g, "a.str", 2, &s, &len), ST_OK);
    assert_int_equal(len, 11); assert_memory_equal(s, "hello world", 11);
    assert_int_equal(st_gguf_get_arr_str(g, "a.str_len", 2, &s, &len), ST_OK);
    assert_int_equal(len, 5); assert_memory_equal(s, "hello", 5);
    assert_int_equal(st_gguf_get_arr_str(g, "a.str", 1, &s, &len), ST_OK);
    assert_int_equal(len, 0);

    assert_int_equal(st_gguf_n_tensors(g), 4);
    float out[40];
    const st_gguf_tensor *t = st_gguf_find_tensor(g, "t.f32");
    assert_int_equal(t->type, ST_GGML_TYPE_F32);
    assert_int_equal(t->ne[0], 3); assert_int_equal(t->ne[1], 2);
    assert_int_equal(st_gguf_tensor_to_f32(g, t, out), ST_OK);
    assert_memory_equal(out, t1, sizeof t1);
    t = st_gguf_find_tensor(g, "t.bf16");
    assert_int_equal(t->n_dims, 4); assert_int_equal(t->ne[3], 2);
    assert_int_equal(t->offset % 64, 0);
    assert_int_equal(st_gguf_tensor_to_f32(g, t, out), ST_OK);
    for (int k = 0; k < 40; k++) assert_true(out[k] == st_bf16_to_f32(st_f32_to_bf16(t2[k])));
    t = st_gguf_find_tensor(g, "t.f16");
    assert_int_equal(st_gguf_tensor_to_f32(g, t, out), ST_OK);
    assert_true(out[0] == 1.0f);
    assert_true(out[1] > 1e38f);
    assert_true(out[3] == -3.0f);
    assert_true(out[4] == 0.0f);
    t = st_gguf_find_tensor(g, "t.bf16b");
    assert_int_equal(st_gguf_tensor_to_f32(g, t, out), ST_OK);
    assert_true(out[2] == 1.0f);
    assert_true(out[1] == 70144.0f); /* 70000 -> nearest bf16 */

    /* copy_key of every kind, including string arrays, into a second file */
    assert_int_equal(st_gguf_writer_new(&w), ST_OK);
    for (int64_t k = 0; k < st_gguf_n_keys(g); k++)
        assert_int_equal(st_gguf_writer_copy_key(w, g, st_gguf_key_name(g, k)), ST_OK);
    assert_int_equal(st_gguf_writer_copy_key(w, g, "no.such.key"), ST_ERR_ARG);
    const char *path2 = "writer_copy.gguf";
    char p2[2100];
    snprintf(p2, sizeof p2, "%s", tmp(path2));
    assert_int_equal(st_gguf_writer_finish(w, p2), ST_OK);
    st_gguf_writer_free(w);
    st_gguf *g2;
    assert_int_equal(st_gguf_open(p2, &g2), ST_OK);
    assert_int_equal(st_gguf_n_keys(g2), st_gguf_n_keys(g));
    assert_int_equal(st_gguf_get_arr_str(g2, "a.str", 0, &s, &len), ST_OK);
    assert_int_equal(len, 3); assert_memory_equal(s, "<s>", 3);
    assert_int_equal(st_gguf_get_i64(g2, "s.i16", &i), ST_OK); assert_int_equal(i, -300);
    st_gguf_close(g2);
    st_gguf_close(g);
    unlink(p2);
    unlink(tmp("writer_rt.gguf"));
}

static void test_atomic_failure(void **state) {
    (void)state;
    st_gguf_writer *w;
    assert_int_equal(st_gguf_writer_new(&w), ST_OK);
    assert_int_equal(st_gguf_writer_set_u32(w, "general.alignment", 48), ST_OK);
    const char *path = tmp("align48_out.gguf");
    assert_int_equal(st_gguf_writer_finish(w, path), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "general.alignment"));
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(st_gguf_writer_set_u32(w, "general.alignment", 32), ST_OK);
    assert_int_equal(st_gguf_writer_finish(w, "/nonexistent-dir/out.gguf"), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "/nonexistent-dir/out.gguf"));
    /* overwriting an existing file replaces it and leaves no temp file */
    assert_int_equal(st_gguf_writer_finish(w, path), ST_OK);
    assert_int_equal(st_gguf_writer_set_str(w, "x", "y"), ST_OK);
    assert_int_equal(st_gguf_writer_finish(w, path), ST_OK);
    st_gguf_writer_free(w);
    st_gguf *g;
    assert_int_equal(st_gguf_open(path, &g), ST_OK);
    assert_true(st_gguf_find_key(g, "x") >= 0);
    st_gguf_close(g);
    const char *d = getenv("SAFETUNE_TEST_TMP");
    DIR *dir = opendir(d ? d : "/tmp");
    assert_non_null(dir);
    struct dirent *e;
    while ((e = readdir(dir)))
        assert_null(strstr(e->d_name, "align48_out.gguf.tmp"));
    closedir(dir);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_atomic_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
