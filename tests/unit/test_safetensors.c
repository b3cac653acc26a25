/* test_safetensors.c - safetensors reader/writer: round trip, sharded index, and one clear
 * error (naming the file and what is wrong) per kind of bad input. Files are built here from
 * the format description (u64 LE header length, JSON header, data). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetune/quant.h"
#include "safetune/safetensors.h"

static char g_dir[2048];

static const char *tmp_path(const char *name) {
    static char p[4096];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    return p;
}

/* Write header JSON (unpadded) + `data_len` bytes of data (float i at index i). */
static const char *write_st(const char *name, const char *json, size_t data_len) {
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = strlen(json);
    fwrite(&n, 8, 1, f);
    fwrite(json, 1, n, f);
    for (size_t i = 0; i < data_len / 4; i++) {
        float v = (float)i;
        fwrite(&v, 4, 1, f);
    }
    for (size_t i = 0; i < data_len % 4; i++) fputc(0, f);
    fclose(f);
    return path;
}

static void expect_fail(const char *path, st_status code, const char *want) {
    st_safetensors *s = (st_safetensors *)0x1;
    st_status st = st_safetensors_open(path, &s);
    const char *msg = st_last_error();
    if (st != code || !strstr(msg, want) || !strstr(msg, path))
        print_error("status %d (want %d): %s\nwanted: %s\n", st, code, msg, want);
    assert_int_equal(st, code);
    assert_null(s);
    assert_non_null(strstr(msg, want));
    assert_null(strchr(msg, '\n'));
}

static int setup(void **state) {
    (void)state;
    const char *d = getenv("SAFETUNE_TEST_TMP");
    snprintf(g_dir, sizeof g_dir, "%s/st_unit", d ? d : "/tmp");
    mkdir(g_dir, 0755);
    return 0;
}

static void test_read_single(void **state) {
    (void)state;
    const char *p = write_st("ok.safetensors",
                             "{\"__metadata__\":{\"format\":\"pt\"},"
                             "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                             "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[24,28]},"
                             "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[28,32]}}",
                             32);
    st_safetensors *s;
    assert_int_equal(st_safetensors_open(p, &s), ST_OK);
    assert_int_equal(st_safetensors_count(s), 3);
    const st_st_tensor *w = st_safetensors_find(s, "w");
    assert_non_null(w);
    assert_int_equal(w->dtype, ST_DTYPE_F32);
    assert_string_equal(w->dtype_name, "F32");
    assert_int_equal(w->n_dims, 2);
    assert_int_equal(w->shape[0], 2);
    assert_int_equal(w->shape[1], 3);
    float x[6];
    assert_int_equal(st_safetensors_to_f32(w, x), ST_OK);
    for (int i = 0; i < 6; i++) assert_true(x[i] == (float)i);
    const st_st_tensor *h = st_safetensors_find(s, "h");
    assert_int_equal(h->dtype, ST_DTYPE_F16);
    /* float 6.0f = 0x40c00000: little-endian halves 0x0000 and 0x40c0 */
    assert_int_equal(st_safetensors_to_f32(h, x), ST_OK);
    assert_true(x[0] == 0.0f);
    assert_true(x[1] == st_fp16_to_f32(0x40c0));
    const st_st_tensor *sc = st_safetensors_find(s, "s");
    assert_int_equal(sc->n_dims, 0);
    assert_int_equal(sc->nbytes, 4);
    assert_null(st_safetensors_find(s, "nope"));
    st_safetensors_close(s);
}

static void test_bad_inputs(void **state) {
    (void)state;
    const char *p;
    FILE *f = fopen(tmp_path("short.safetensors"), "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    expect_fail(tmp_path("short.safetensors"), ST_ERR_FORMAT, "too short for the 8-byte header length");

    /* header length past EOF */
    f = fopen(tmp_path("hlen.safetensors"), "wb");
    uint64_t big = 1000000;
    fwrite(&big, 8, 1, f);
    fputs("{\"a\":1}", f);
    fclose(f);
    expect_fail(tmp_path("hlen.safetensors"), ST_ERR_FORMAT, "byte 0: header length 1000000 runs past end of file (15 bytes)");

    p = write_st("json.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", 4);
    expect_fail(p, ST_ERR_FORMAT, "malformed JSON header");
    p = write_st("json2.safetensors", "{\"w\" {}}", 0);
    expect_fail(p, ST_ERR_FORMAT, "byte 13: malformed JSON header");
    p = write_st("notobj.safetensors", "[1,2]", 0);
    expect_fail(p, ST_ERR_FORMAT, "not a JSON object");
    p = write_st("range.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12);
    expect_fail(p, ST_ERR_FORMAT, "tensor 'w': data_offsets [0, 16) past end of data (12 bytes");
    p = write_st("mismatch.safetensors", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", 8);
    expect_fail(p, ST_ERR_FORMAT, "tensor 'w': shape [2, 3] x BF16 (2 bytes) = 12 bytes, but data_offsets [0, 8) span 8 bytes");
    p = write_st("dtype.safetensors", "{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_fail(p, ST_ERR_FORMAT, "tensor 'w': unknown dtype 'F33'");
    p = write_st("neg.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    expect_fail(p, ST_ERR_FORMAT, "tensor 'w': shape[0] is not a non-negative integer");
    p = write_st("rev.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8);
    expect_fail(p, ST_ERR_FORMAT, "tensor 'w': data_offsets must be [begin, end]");
    p = write_st("missing.safetensors", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4);
    expect_fail(p, ST_ERR_FORMAT, "tensor 'w': needs \"dtype\"");
    p = write_st("overlap.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                 12);
    expect_fail(p, ST_ERR_FORMAT, "tensor 'b': data_offsets [4, 12) overlap tensor 'a'");
    p = write_st("dup.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 8);
    expect_fail(p, ST_ERR_FORMAT, "tensor 'a' appears more than once");
    p = write_st("trail.safetensors", "{}  x", 0);
    expect_fail(p, ST_ERR_FORMAT, "byte 12: unexpected data after the JSON header");
    expect_fail(g_dir, ST_ERR_IO, "neither model.safetensors nor model.safetensors.index.json");

    /* a dtype that exists but does not convert */
    p = write_st("i64.safetensors", "{\"w\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8);
    st_safetensors *s;
    assert_int_equal(st_safetensors_open(p, &s), ST_OK);
    float x[2];
    assert_int_equal(st_safetensors_to_f32(st_safetensors_at(s, 0), x), ST_ERR_UNSUPPORTED);
    assert_non_null(strstr(st_last_error(), "dtype I64"));
    st_safetensors_close(s);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_sharded_index(void **state) {
    (void)state;
    char dir[2200];
    snprintf(dir, sizeof dir, "%s/sharded", g_dir);
    mkdir(dir, 0755);
    char name[2400];
    write_st("sharded/model-00001-of-00002.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    write_st("sharded/model-00002-of-00002.safetensors",
             "{\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
             "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
             16);
    snprintf(name, sizeof name, "%s/model.safetensors.index.json", dir);
    write_text(name, "{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                     "\"b\":\"model-00002-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}}");
    st_safetensors *s;
    assert_int_equal(st_safetensors_open(dir, &s), ST_OK);
    assert_int_equal(st_safetensors_count(s), 3);
    float x[3];
    assert_int_equal(st_safetensors_to_f32(st_safetensors_find(s, "c"), x), ST_OK);
    assert_true(x[0] == 3.0f);
    assert_int_equal(st_safetensors_to_f32(st_safetensors_find(s, "b"), x), ST_OK);
    assert_true(x[2] == 2.0f);
    st_safetensors_close(s);
    assert_int_equal(st_safetensors_open(name, &s), ST_OK);
    st_safetensors_close(s);

    /* a shard listed in the index is missing */
    write_text(name, "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                     "\"z\":\"model-00003-of-00003.safetensors\"}}");
    expect_fail(name, ST_ERR_IO, "weight_map['z']: shard file 'model-00003-of-00003.safetensors' is missing");
    /* a tensor listed in the index is not in its shard */
    write_text(name, "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                     "\"q\":\"model-00001-of-00002.safetensors\"}}");
    expect_fail(name, ST_ERR_FORMAT, "weight_map['q']: tensor not found in shard 'model-00001-of-00002.safetensors'");
    write_text(name, "{\"weight_map\": [}");
    expect_fail(name, ST_ERR_FORMAT, "malformed JSON");
    write_text(name, "{\"metadata\":{}}");
    expect_fail(name, ST_ERR_FORMAT, "key 'weight_map' missing");
}

static void test_writer_round_trip(void **state) {
    (void)state;
    float a[6] = {1.0f, -2.5f, 3.14159274f, 1e-30f, 65504.0f, -0.0f};
    float b[3] = {1.00390625f, 1.01171875f, -7.0f}; /* bf16 ties: -> 1.0 and 1.015625 */
    int64_t sa[2] = {2, 3}, sb[1] = {3};
    st_safetensors_writer *w;
    assert_int_equal(st_safetensors_writer_new(&w), ST_OK);
    assert_int_equal(st_safetensors_writer_add(w, "layer.a", ST_DTYPE_F32, 2, sa, a), ST_OK);
    assert_int_equal(st_safetensors_writer_add(w, "layer.b", ST_DTYPE_BF16, 1, sb, b), ST_OK);
    assert_int_equal(st_safetensors_writer_add(w, "layer.b", ST_DTYPE_F32, 1, sb, b), ST_ERR_ARG);
    assert_int_equal(st_safetensors_writer_add(w, "x", ST_DTYPE_F16, 1, sb, b), ST_ERR_ARG);
    const char *path = tmp_path("written.safetensors");
    assert_int_equal(st_safetensors_writer_finish(w, path), ST_OK);
    st_safetensors_writer_free(w);

    char *raw;
    size_t len;
    assert_int_equal(st_read_file(path, &raw, &len), ST_OK);
    uint64_t hl;
    memcpy(&hl, raw, 8);
    assert_int_equal(hl % 8, 0);
    assert_int_equal(len, 8 + hl + 24 + 6);
    assert_non_null(strstr(raw + 8, "\"__metadata__\":{\"format\":\"pt\"}"));
    free(raw);

    st_safetensors *s;
    assert_int_equal(st_safetensors_open(path, &s), ST_OK);
    float x[6];
    const st_st_tensor *ta = st_safetensors_find(s, "layer.a");
    assert_int_equal(ta->dtype, ST_DTYPE_F32);
    assert_int_equal(st_safetensors_to_f32(ta, x), ST_OK);
    assert_memory_equal(x, a, sizeof a);
    const st_st_tensor *tb = st_safetensors_find(s, "layer.b");
    assert_int_equal(tb->dtype, ST_DTYPE_BF16);
    assert_int_equal(tb->shape[0], 3);
    assert_int_equal(st_safetensors_to_f32(tb, x), ST_OK);
    assert_true(x[0] == 1.0f);
    assert_true(x[1] == 1.015625f);
    assert_true(x[2] == -7.0f);
    st_safetensors_close(s);

    /* unwritable destination: error names it, nothing left behind */
    assert_int_equal(st_safetensors_writer_new(&w), ST_OK);
    assert_int_equal(st_safetensors_writer_finish(w, "/nonexistent-dir/m.safetensors"), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "/nonexistent-dir/m.safetensors"));
    st_safetensors_writer_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_single),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_sharded_index),
        cmocka_unit_test(test_writer_round_trip),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
