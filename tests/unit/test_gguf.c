/* test_gguf.c - GGUF reader: every metadata type, v2/v3, alignment, tensor data, and one clear
 * error (naming file, byte offset and problem) for each kind of bad input. Files are built
 * byte by byte here from the spec (ggml docs/gguf.md), independently of the reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetune/gguf.h"
#include "safetune/quant.h"
#include "testutil.h"

/* ---- tiny GGUF byte builder ---- */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void b_bytes(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void b_u8(buf *b, uint8_t v) { b_bytes(b, &v, 1); }
static void b_u16(buf *b, uint16_t v) { uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; b_bytes(b, x, 2); }
static void b_u32(buf *b, uint32_t v) {
    for (int i = 0; i < 4; i++) b_u8(b, (uint8_t)(v >> (8 * i)));
}
static void b_u64(buf *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b_u8(b, (uint8_t)(v >> (8 * i)));
}
static void b_f32(buf *b, float f) { uint32_t u; memcpy(&u, &f, 4); b_u32(b, u); }
static void b_f64(buf *b, double f) { uint64_t u; memcpy(&u, &f, 8); b_u64(b, u); }
static void b_str(buf *b, const char *s) { b_u64(b, strlen(s)); b_bytes(b, s, strlen(s)); }
static void b_pad(buf *b, size_t align) { while (b->n % align) b_u8(b, 0); }
static void b_header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b_bytes(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}
/* key + type tag */
static void b_key(buf *b, const char *k, uint32_t type) { b_str(b, k); b_u32(b, type); }
static void b_tinfo(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, off);
}

static char g_path[4096];

static const char *write_tmp(const buf *b, const char *name) {
    const char *dir = getenv("SAFETUNE_TEST_TMP");
    snprintf(g_path, sizeof g_path, "%s/%s", dir ? dir : "/tmp", name);
    FILE *f = fopen(g_path, "wb");
    assert_non_null(f);
    if (b->n) assert_int_equal(fwrite(b->p, 1, b->n, f), b->n);
    fclose(f);
    return g_path;
}

/* Open must fail with `code`, and the message must name the file and contain `want`
 * (and `want2` if not NULL). */
static void expect_fail(const buf *b, const char *name, st_status code, const char *want, const char *want2) {
    const char *path = write_tmp(b, name);
    st_gguf *g = (st_gguf *)0x1;
    st_status s = st_gguf_open(path, &g);
    const char *msg = st_last_error();
    if (s != code || !strstr(msg, path) || !strstr(msg, want) || (want2 && !strstr(msg, want2)))
        print_error("status %d (want %d), message: %s\nwanted: '%s' '%s'\n", s, code, msg, want, want2 ? want2 : "");
    assert_int_equal(s, code);
    assert_null(g);
    assert_non_null(strstr(msg, path));
    assert_non_null(strstr(msg, want));
    if (want2) assert_non_null(strstr(msg, want2));
    assert_null(strchr(msg, '\n'));
    unlink(path);
}

static st_gguf *open_ok(const buf *b, const char *name) {
    const char *path = write_tmp(b, name);
    st_gguf *g = NULL;
    st_status s = st_gguf_open(path, &g);
    if (s) print_error("open failed: %s\n", st_last_error());
    assert_int_equal(s, ST_OK);
    unlink(path); /* the mapping stays valid */
    return g;
}

/* A file with one key of every type (incl. arrays of numbers, bools, strings and nested
 * arrays). */
static void build_all_types(buf *b, uint32_t version) {
    b_header(b, version, 0, 17);
    b_key(b, "t.u8", ST_GGUF_UINT8); b_u8(b, 250);
    b_key(b, "t.i8", ST_GGUF_INT8); b_u8(b, (uint8_t)-7);
    b_key(b, "t.u16", ST_GGUF_UINT16); b_u16(b, 65000);
    b_key(b, "t.i16", ST_GGUF_INT16); b_u16(b, (uint16_t)-30000);
    b_key(b, "t.u32", ST_GGUF_UINT32); b_u32(b, 4000000000u);
    b_key(b, "t.i32", ST_GGUF_INT32); b_u32(b, (uint32_t)-2000000000);
    b_key(b, "t.f32", ST_GGUF_FLOAT32); b_f32(b, 0.15625f);
    b_key(b, "t.bool", ST_GGUF_BOOL); b_u8(b, 1);
    b_key(b, "t.str", ST_GGUF_STRING); b_str(b, "h\xc3\xa9llo");
    b_key(b, "t.u64", ST_GGUF_UINT64); b_u64(b, 0x7fffffffffffffffull);
    b_key(b, "t.i64", ST_GGUF_INT64); b_u64(b, (uint64_t)-5000000000ll);
    b_key(b, "t.f64", ST_GGUF_FLOAT64); b_f64(b, -1.0 / 3.0);
    b_key(b, "t.arr_i16", ST_GGUF_ARRAY); b_u32(b, ST_GGUF_INT16); b_u64(b, 3);
    b_u16(b, 1); b_u16(b, (uint16_t)-2); b_u16(b, 300);
    b_key(b, "t.arr_str", ST_GGUF_ARRAY); b_u32(b, ST_GGUF_STRING); b_u64(b, 3);
    b_str(b, "a"); b_str(b, ""); b_str(b, "ccc");
    b_key(b, "t.arr_nested", ST_GGUF_ARRAY); b_u32(b, ST_GGUF_ARRAY); b_u64(b, 2);
    b_u32(b, ST_GGUF_INT32); b_u64(b, 2); b_u32(b, 1); b_u32(b, 2);
    b_u32(b, ST_GGUF_STRING); b_u64(b, 1); b_str(b, "x");
    b_key(b, "t.arr_bool", ST_GGUF_ARRAY); b_u32(b, ST_GGUF_BOOL); b_u64(b, 2); b_u8(b, 0); b_u8(b, 1);
    b_key(b, "t.arr_empty", ST_GGUF_ARRAY); b_u32(b, ST_GGUF_FLOAT64); b_u64(b, 0);
}

static void check_all_types(st_gguf *g) {
    int64_t i;
    double d;
    int bo;
    const char *s;
    size_t len;
    assert_int_equal(st_gguf_n_keys(g), 17);
    assert_int_equal(st_gguf_n_tensors(g), 0);
    assert_int_equal(st_gguf_get_i64(g, "t.u8", &i), ST_OK); assert_int_equal(i, 250);
    assert_int_equal(st_gguf_get_i64(g, "t.i8", &i), ST_OK); assert_int_equal(i, -7);
    assert_int_equal(st_gguf_get_i64(g, "t.u16", &i), ST_OK); assert_int_equal(i, 65000);
    assert_int_equal(st_gguf_get_i64(g, "t.i16", &i), ST_OK); assert_int_equal(i, -30000);
    assert_int_equal(st_gguf_get_i64(g, "t.u32", &i), ST_OK); assert_int_equal(i, 4000000000ll);
    assert_int_equal(st_gguf_get_i64(g, "t.i32", &i), ST_OK); assert_int_equal(i, -2000000000ll);
    assert_int_equal(st_gguf_get_f64(g, "t.f32", &d), ST_OK); assert_true(d == 0.15625);
    assert_int_equal(st_gguf_get_bool(g, "t.bool", &bo), ST_OK); assert_int_equal(bo, 1);
    assert_int_equal(st_gguf_get_str(g, "t.str", &s, &len), ST_OK);
    assert_int_equal(len, 6);
    assert_memory_equal(s, "h\xc3\xa9llo", 6);
    assert_int_equal(st_gguf_get_i64(g, "t.u64", &i), ST_OK); assert_true(i == 0x7fffffffffffffffll);
    assert_int_equal(st_gguf_get_i64(g, "t.i64", &i), ST_OK); assert_true(i == -5000000000ll);
    assert_int_equal(st_gguf_get_f64(g, "t.f64", &d), ST_OK); assert_true(d == -1.0 / 3.0);
    assert_int_equal(st_gguf_get_f64(g, "t.i32", &d), ST_OK); assert_true(d == -2e9);
    /* a non-integral float is not an integer; a string is not a number */
    assert_int_equal(st_gguf_get_i64(g, "t.f32", &i), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "t.f32"));
    assert_int_equal(st_gguf_get_i64(g, "t.str", &i), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "expected an integer"));
    assert_int_equal(st_gguf_get_i64(g, "missing.key", &i), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "'missing.key' not found"));
    assert_int_equal(st_gguf_find_key(g, "missing.key"), -1);
    int64_t k = st_gguf_find_key(g, "t.f64");
    assert_int_equal(k, 11);
    assert_string_equal(st_gguf_key_name(g, k), "t.f64");
    assert_int_equal(st_gguf_key_type(g, k), ST_GGUF_FLOAT64);

    st_gguf_type et;
    uint64_t n;
    const void *data;
    assert_int_equal(st_gguf_get_arr(g, "t.arr_i16", &et, &n, &data), ST_OK);
    assert_int_equal(et, ST_GGUF_INT16);
    assert_int_equal(n, 3);
    int16_t v16[3];
    memcpy(v16, data, 6);
    assert_int_equal(v16[0], 1); assert_int_equal(v16[1], -2); assert_int_equal(v16[2], 300);
    assert_int_equal(st_gguf_get_arr(g, "t.arr_str", &et, &n, &data), ST_OK);
    assert_int_equal(et, ST_GGUF_STRING);
    assert_int_equal(n, 3);
    assert_int_equal(st_gguf_get_arr_str(g, "t.arr_str", 0, &s, &len), ST_OK);
    assert_int_equal(len, 1); assert_memory_equal(s, "a", 1);
    assert_int_equal(st_gguf_get_arr_str(g, "t.arr_str", 1, &s, &len), ST_OK);
    assert_int_equal(len, 0);
    assert_int_equal(st_gguf_get_arr_str(g, "t.arr_str", 2, &s, &len), ST_OK);
    assert_int_equal(len, 3); assert_memory_equal(s, "ccc", 3);
    assert_int_equal(st_gguf_get_arr_str(g, "t.arr_str", 3, &s, &len), ST_ERR_ARG);
    assert_int_equal(st_gguf_get_arr(g, "t.arr_nested", &et, &n, &data), ST_OK);
    assert_int_equal(et, ST_GGUF_ARRAY);
    assert_int_equal(n, 2);
    assert_int_equal(st_gguf_get_arr(g, "t.arr_bool", &et, &n, &data), ST_OK);
    assert_int_equal(et, ST_GGUF_BOOL);
    assert_int_equal(n, 2);
    assert_int_equal(((const uint8_t *)data)[1], 1);
    assert_int_equal(st_gguf_get_arr(g, "t.arr_empty", &et, &n, &data), ST_OK);
    assert_int_equal(et, ST_GGUF_FLOAT64);
    assert_int_equal(n, 0);
    assert_int_equal(st_gguf_get_arr(g, "t.u8", &et, &n, &data), ST_ERR_FORMAT);
    assert_int_equal(st_gguf_get_str(g, "t.u8", &s, &len), ST_ERR_FORMAT);
}

static void test_all_metadata_types_v3(void **state) {
    (void)state;
    buf b = {0};
    build_all_types(&b, 3);
    st_gguf *g = open_ok(&b, "types_v3.gguf");
    assert_int_equal(st_gguf_version(g), 3);
    assert_int_equal(st_gguf_alignment(g), 32);
    check_all_types(g);
    st_gguf_close(g);
    free(b.p);
}

static void test_all_metadata_types_v2(void **state) {
    (void)state;
    buf b = {0};
    build_all_types(&b, 2);
    st_gguf *g = open_ok(&b, "types_v2.gguf");
    assert_int_equal(st_gguf_version(g), 2);
    check_all_types(g);
    st_gguf_close(g);
    free(b.p);
}

static void test_version_errors(void **state) {
    (void)state;
    buf b = {0};
    build_all_types(&b, 1);
    expect_fail(&b, "v1.gguf", ST_ERR_UNSUPPORTED, "byte 4: unsupported GGUF version 1", NULL);
    b.p[4] = 7;
    expect_fail(&b, "v7.gguf", ST_ERR_UNSUPPORTED, "unsupported GGUF version 7", NULL);
    b.p[4] = 0;
    b.p[7] = 3; /* big-endian v3 */
    expect_fail(&b, "vbe.gguf", ST_ERR_UNSUPPORTED, "big-endian", NULL);
    free(b.p);
}

/* Two tensors: F32 [3, 2] and Q8_0 [32], with a key/value in front. */
static size_t build_tensors(buf *b, uint32_t alignment, int with_alignment_key) {
    b_header(b, 3, 2, with_alignment_key ? 2 : 1);
    b_key(b, "general.architecture", ST_GGUF_STRING); b_str(b, "llama");
    if (with_alignment_key) { b_key(b, "general.alignment", ST_GGUF_UINT32); b_u32(b, alignment); }
    uint64_t ne_a[2] = {3, 2}, ne_b[1] = {32};
    b_tinfo(b, "a.weight", 2, ne_a, ST_GGML_TYPE_F32, 0);
    b_tinfo(b, "b.weight", 1, ne_b, ST_GGML_TYPE_Q8_0, alignment); /* 24 bytes of a, padded */
    size_t header_end = b->n;
    b_pad(b, alignment);
    for (int i = 0; i < 6; i++) b_f32(b, (float)i - 2.5f);
    b_pad(b, alignment);
    b_u16(b, 0x3800); /* fp16 0.5 */
    for (int i = 0; i < 32; i++) b_u8(b, (uint8_t)(int8_t)(i - 16));
    return header_end;
}

static void check_tensors(st_gguf *g, uint32_t alignment) {
    assert_int_equal(st_gguf_alignment(g), alignment);
    assert_int_equal(st_gguf_data_offset(g) % alignment, 0);
    assert_int_equal(st_gguf_n_tensors(g), 2);
    const st_gguf_tensor *a = st_gguf_find_tensor(g, "a.weight");
    const st_gguf_tensor *q = st_gguf_find_tensor(g, "b.weight");
    assert_non_null(a);
    assert_non_null(q);
    assert_null(st_gguf_find_tensor(g, "c.weight"));
    assert_ptr_equal(st_gguf_tensor_at(g, 1), q);
    assert_int_equal(a->n_dims, 2);
    assert_int_equal(a->ne[0], 3); assert_int_equal(a->ne[1], 2); assert_int_equal(a->ne[2], 1);
    assert_int_equal(a->nbytes, 24);
    assert_int_equal(q->nbytes, 34);
    assert_int_equal(q->offset, alignment);
    float fa[6], fq[32];
    assert_int_equal(st_gguf_tensor_to_f32(g, a, fa), ST_OK);
    for (int i = 0; i < 6; i++) assert_true(fa[i] == (float)i - 2.5f);
    assert_int_equal(st_gguf_tensor_to_f32(g, q, fq), ST_OK);
    for (int i = 0; i < 32; i++) assert_true(fq[i] == 0.5f * (float)(i - 16));
}

static void test_tensors_default_alignment(void **state) {
    (void)state;
    buf b = {0};
    build_tensors(&b, 32, 0);
    st_gguf *g = open_ok(&b, "tensors32.gguf");
    check_tensors(g, 32);
    st_gguf_close(g);
    free(b.p);
}

static void test_tensors_custom_alignment(void **state) {
    (void)state;
    buf b = {0};
    build_tensors(&b, 256, 1);
    st_gguf *g = open_ok(&b, "tensors256.gguf");
    check_tensors(g, 256);
    assert_true(st_gguf_data_offset(g) >= 256);
    st_gguf_close(g);
    free(b.p);
    /* the same file read with the default alignment 32 would put the data elsewhere; a
     * non-power-of-two alignment is rejected */
    buf c = {0};
    build_tensors(&c, 48, 1);
    expect_fail(&c, "align48.gguf", ST_ERR_FORMAT, "general.alignment must be a positive power-of-two", NULL);
    free(c.p);
}

static void test_bad_magic(void **state) {
    (void)state;
    buf b = {0};
    build_tensors(&b, 32, 0);
    memcpy(b.p, "GGML", 4);
    expect_fail(&b, "magic.gguf", ST_ERR_FORMAT, "byte 0: bad magic 0x4c4d4747", "not a GGUF file");
    buf e = {0};
    expect_fail(&e, "empty.gguf", ST_ERR_FORMAT, "file is empty", NULL);
    free(b.p);
}

/* Every proper prefix of a valid file must be rejected with a one-line message naming the
 * file; a cut inside the header says "truncated", a cut in the data says "past end of file". */
static void test_truncated_everywhere(void **state) {
    (void)state;
    buf b = {0};
    size_t header_end = build_tensors(&b, 32, 1);
    size_t full = b.n;
    for (size_t len = 1; len < full; len++) {
        buf t = {b.p, len, len};
        expect_fail(&t, "trunc.gguf", ST_ERR_FORMAT, "truncated", len >= header_end ? "past end of file" : NULL);
    }
    free(b.p);
}

static void test_string_length_past_eof(void **state) {
    (void)state;
    buf b = {0};
    b_header(&b, 3, 0, 1);
    b_key(&b, "general.name", ST_GGUF_STRING);
    b_u64(&b, 1000000);
    b_bytes(&b, "short", 5);
    /* the length field is at byte 24 + 8 + 12 + 4 = 48 */
    expect_fail(&b, "strlen.gguf", ST_ERR_FORMAT, "byte 48: key 'general.name' string value: string length 1000000 runs past end of file", NULL);
    /* a key name whose length runs past the end */
    buf c = {0};
    b_header(&c, 3, 0, 1);
    b_u64(&c, 0xffffffffffffull);
    b_bytes(&c, "abcdefghijklmnopqrstuvwxyz", 26);
    expect_fail(&c, "keylen.gguf", ST_ERR_FORMAT, "byte 24: key #0 name: string length 281474976710655 runs past end", NULL);
    free(b.p);
    free(c.p);
}

static void test_tensor_data_past_eof(void **state) {
    (void)state;
    buf b = {0};
    b_header(&b, 3, 1, 0);
    uint64_t ne[2] = {64, 64};
    b_tinfo(&b, "blk.0.attn_q.weight", 2, ne, ST_GGML_TYPE_F32, 0);
    b_pad(&b, 32);
    for (int i = 0; i < 100; i++) b_f32(&b, 1.0f);
    char want[200];
    snprintf(want, sizeof want, "tensor 'blk.0.attn_q.weight': data [96, %d) past end of file (%zu bytes): file truncated?",
             96 + 64 * 64 * 4, b.n);
    expect_fail(&b, "dataeof.gguf", ST_ERR_FORMAT, want, NULL);
    /* an offset near 2^64 must not wrap around */
    buf c = {0};
    b_header(&c, 3, 1, 0);
    b_tinfo(&c, "x", 1, ne, ST_GGML_TYPE_F32, 0xffffffffffffffe0ull);
    b_pad(&c, 32);
    expect_fail(&c, "dataeof2.gguf", ST_ERR_FORMAT, "tensor 'x': data [", "past end of file");
    free(b.p);
    free(c.p);
}

static void test_bad_tensor_infos(void **state) {
    (void)state;
    uint64_t ne[5] = {32, 1, 1, 1, 1};
    buf b = {0};
    b_header(&b, 3, 1, 0);
    b_tinfo(&b, "w", 1, ne, 99, 0);
    b_pad(&b, 32);
    for (int i = 0; i < 64; i++) b_u8(&b, 0);
    expect_fail(&b, "type99.gguf", ST_ERR_FORMAT, "tensor 'w': unknown tensor type 99", NULL);
    free(b.p);

    buf c = {0};
    b_header(&c, 3, 1, 0);
    b_tinfo(&c, "w", 1, ne, 10 /* Q2_K */, 0);
    for (int i = 0; i < 256; i++) b_u8(&c, 0);
    expect_fail(&c, "q2k.gguf", ST_ERR_UNSUPPORTED, "tensor type 10 (Q2_K) is not supported", NULL);
    free(c.p);

    buf d = {0};
    b_header(&d, 3, 1, 0);
    b_tinfo(&d, "w5", 5, ne, ST_GGML_TYPE_F32, 0);
    for (int i = 0; i < 256; i++) b_u8(&d, 0);
    expect_fail(&d, "ndims.gguf", ST_ERR_FORMAT, "byte 34: tensor 'w5': n_dims 5 out of range (1..4)", NULL);
    free(d.p);

    buf e = {0};
    b_header(&e, 3, 2, 0);
    b_tinfo(&e, "a", 1, ne, ST_GGML_TYPE_F32, 0);
    b_tinfo(&e, "b", 1, ne, ST_GGML_TYPE_F32, 136); /* 136 % 32 != 0 */
    for (int i = 0; i < 512; i++) b_u8(&e, 0);
    expect_fail(&e, "misaligned.gguf", ST_ERR_FORMAT, "tensor 'b': data offset 136 is not a multiple of the alignment 32", NULL);
    free(e.p);

    buf f = {0};
    uint64_t ne33[1] = {33};
    b_header(&f, 3, 1, 0);
    b_tinfo(&f, "q", 1, ne33, ST_GGML_TYPE_Q4_0, 0);
    for (int i = 0; i < 256; i++) b_u8(&f, 0);
    expect_fail(&f, "blk.gguf", ST_ERR_FORMAT, "tensor 'q': ne[0] = 33 is not a multiple of the Q4_0 block size 32", NULL);
    free(f.p);

    buf h = {0};
    b_header(&h, 3, 2, 0);
    b_tinfo(&h, "a", 1, ne, ST_GGML_TYPE_F32, 0);
    b_tinfo(&h, "b", 1, ne, ST_GGML_TYPE_F32, 64); /* a occupies [0, 128) */
    for (int i = 0; i < 512; i++) b_u8(&h, 0);
    expect_fail(&h, "overlap.gguf", ST_ERR_FORMAT, "tensor 'b': data", "overlaps tensor 'a'");
    free(h.p);

    buf k = {0};
    b_header(&k, 3, 2, 0);
    b_tinfo(&k, "a", 1, ne, ST_GGML_TYPE_F32, 0);
    b_tinfo(&k, "a", 1, ne, ST_GGML_TYPE_F32, 128);
    for (int i = 0; i < 512; i++) b_u8(&k, 0);
    expect_fail(&k, "dupt.gguf", ST_ERR_FORMAT, "duplicate tensor name 'a'", NULL);
    free(k.p);
}

static void test_bad_metadata(void **state) {
    (void)state;
    buf b = {0};
    b_header(&b, 3, 0, 1);
    b_key(&b, "k", 13);
    b_u32(&b, 0);
    expect_fail(&b, "vtype.gguf", ST_ERR_FORMAT, "byte 33: key 'k': unknown value type 13", NULL);
    free(b.p);

    buf c = {0};
    b_header(&c, 3, 0, 2);
    b_key(&c, "k", ST_GGUF_UINT8); b_u8(&c, 1);
    b_key(&c, "k", ST_GGUF_UINT8); b_u8(&c, 2);
    expect_fail(&c, "dupk.gguf", ST_ERR_FORMAT, "duplicate key 'k'", NULL);
    free(c.p);

    buf d = {0};
    b_header(&d, 3, 0, 1);
    b_key(&d, "k", ST_GGUF_BOOL); b_u8(&d, 2);
    expect_fail(&d, "bool.gguf", ST_ERR_FORMAT, "key 'k': bool value 2 is not 0 or 1", NULL);
    free(d.p);

    buf e = {0};
    b_header(&e, 3, 0, 1);
    b_key(&e, "k", ST_GGUF_ARRAY); b_u32(&e, ST_GGUF_UINT32); b_u64(&e, 1ull << 40);
    b_u32(&e, 1);
    expect_fail(&e, "arr.gguf", ST_ERR_FORMAT, "key 'k': array of 1099511627776 uint32 values runs past end of file", NULL);
    free(e.p);

    buf f = {0};
    b_header(&f, 3, 0, 1ull << 60);
    expect_fail(&f, "nkv.gguf", ST_ERR_FORMAT, "byte 16: metadata key/value count", "cannot fit");
    free(f.p);

    /* array of strings where one string runs past the end */
    buf h = {0};
    b_header(&h, 3, 0, 1);
    b_key(&h, "tokenizer.ggml.tokens", ST_GGUF_ARRAY); b_u32(&h, ST_GGUF_STRING); b_u64(&h, 2);
    b_str(&h, "ok");
    b_u64(&h, 50);
    b_bytes(&h, "abc", 3);
    expect_fail(&h, "arrstr.gguf", ST_ERR_FORMAT, "key 'tokenizer.ggml.tokens' string value: string length 50 runs past end", NULL);
    free(h.p);
}

static void test_not_a_file(void **state) {
    (void)state;
    st_gguf *g;
    assert_int_equal(st_gguf_open("/nonexistent/x.gguf", &g), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "/nonexistent/x.gguf: cannot open"));
    assert_int_equal(st_gguf_open("/", &g), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "not a regular file"));
}

/* Random byte corruptions of a valid file (seeded): open either succeeds (then every tensor
 * dequantises) or fails with one line naming the file; never a crash (run under ASan). */
static void test_random_corruption(void **state) {
    (void)state;
    buf b = {0};
    build_all_types(&b, 3);
    /* append two tensors to the all-types file: patch the tensor count and add infos + data */
    buf t = {0};
    b_bytes(&t, b.p, b.n);
    t.p[8] = 2;
    uint64_t ne_a[2] = {32, 2}, ne_b[1] = {256};
    b_tinfo(&t, "a", 2, ne_a, ST_GGML_TYPE_Q4_1, 0);
    b_tinfo(&t, "b", 1, ne_b, ST_GGML_TYPE_Q6_K, 64);
    b_pad(&t, 32);
    for (int i = 0; i < 64 + 210; i++) b_u8(&t, (uint8_t)(i * 31));
    st_rng r;
    st_rng_seed(&r, 99);
    uint8_t *orig = malloc(t.n);
    memcpy(orig, t.p, t.n);
    int n_ok = 0, n_fail = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(t.p, orig, t.n);
        int flips = 1 + (int)(st_rng_u64(&r) % 3);
        for (int k = 0; k < flips; k++) {
            size_t pos = (size_t)(st_rng_u64(&r) % t.n);
            t.p[pos] = (uint8_t)st_rng_u64(&r);
        }
        const char *path = write_tmp(&t, "fuzz.gguf");
        st_gguf *g = NULL;
        st_status s = st_gguf_open(path, &g);
        if (s == ST_OK) {
            n_ok++;
            for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
                const st_gguf_tensor *x = st_gguf_tensor_at(g, i);
                float *dst = malloc((size_t)st_gguf_tensor_numel(x) * sizeof(float) + 1);
                assert_int_equal(st_gguf_tensor_to_f32(g, x, dst), ST_OK);
                free(dst);
            }
            st_gguf_close(g);
        } else {
            n_fail++;
            assert_null(g);
            assert_non_null(strstr(st_last_error(), path));
            assert_null(strchr(st_last_error(), '\n'));
        }
    }
    assert_true(n_ok > 0 && n_fail > 0);
    unlink(g_path);
    free(orig);
    free(t.p);
    free(b.p);
}

/* The real model, when present: basic structure and the Llama keys the loader needs. */
static void test_real_model(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", st_test_model_dir());
    if (access(path, R_OK) != 0) ST_SKIP_MISSING(path);
    st_gguf *g;
    assert_int_equal(st_gguf_open(path, &g), ST_OK);
    int64_t v;
    assert_int_equal(st_gguf_get_i64(g, "llama.embedding_length", &v), ST_OK);
    assert_int_equal(v, 576);
    assert_int_equal(st_gguf_get_i64(g, "llama.block_count", &v), ST_OK);
    assert_int_equal(v, 30);
    st_gguf_type et;
    uint64_t n;
    const void *d;
    assert_int_equal(st_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &d), ST_OK);
    assert_int_equal(et, ST_GGUF_STRING);
    assert_int_equal(n, 49152);
    assert_int_equal(st_gguf_n_tensors(g), 272);
    const st_gguf_tensor *t = st_gguf_find_tensor(g, "blk.0.attn_q.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 576);
    assert_int_equal(t->ne[1], 576);
    st_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_metadata_types_v3),
        cmocka_unit_test(test_all_metadata_types_v2),
        cmocka_unit_test(test_version_errors),
        cmocka_unit_test(test_tensors_default_alignment),
        cmocka_unit_test(test_tensors_custom_alignment),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_string_length_past_eof),
        cmocka_unit_test(test_tensor_data_past_eof),
        cmocka_unit_test(test_bad_tensor_infos),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_not_a_file),
        cmocka_unit_test(test_random_corruption),
        cmocka_unit_test(test_real_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
