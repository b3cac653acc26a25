/* test_quant.c - half-precision conversions and one hand-built block of every quantised type,
 * with expected values worked out from the block layouts in ggml-common.h. (Bit-exact parity
 * with gguf-py on random blocks is in tests/parity/formats.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "safetune/quant.h"

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_fp16_known_values(void **state) {
    (void)state;
    assert_true(st_fp16_to_f32(0x3c00) == 1.0f);
    assert_true(st_fp16_to_f32(0xc000) == -2.0f);
    assert_true(st_fp16_to_f32(0x7bff) == 65504.0f);
    assert_true(st_fp16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(st_fp16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    assert_true(st_fp16_to_f32(0x0400) == ldexpf(1.0f, -14));
    assert_true(isinf(st_fp16_to_f32(0x7c00)) && st_fp16_to_f32(0x7c00) > 0);
    assert_true(isnan(st_fp16_to_f32(0x7e00)));
    assert_int_equal(fbits(st_fp16_to_f32(0x8000)), 0x80000000u);
    assert_true(st_fp16_to_f32(0x3555) == 0x1.554p-2f); /* 0.333251953125 */

    /* every non-NaN half converts back to itself */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        assert_int_equal(st_f32_to_fp16(st_fp16_to_f32((uint16_t)h)), h);
    }
    /* round to nearest, ties to even */
    assert_int_equal(st_f32_to_fp16(1.0f + ldexpf(1.0f, -11)), 0x3c00);     /* tie -> even 1.0 */
    assert_int_equal(st_f32_to_fp16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02); /* tie -> even up */
    assert_int_equal(st_f32_to_fp16(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)), 0x3c01);
    assert_int_equal(st_f32_to_fp16(65519.0f), 0x7bff);
    assert_int_equal(st_f32_to_fp16(65520.0f), 0x7c00);
    assert_int_equal(st_f32_to_fp16(-1e10f), 0xfc00);
    assert_int_equal(st_f32_to_fp16(ldexpf(1.0f, -25)), 0x0000);        /* tie -> even 0 */
    assert_int_equal(st_f32_to_fp16(ldexpf(1.5f, -25)), 0x0001);
    assert_int_equal(st_f32_to_fp16(ldexpf(3.0f, -25)), 0x0002);        /* 1.5 ulp tie -> 2 */
    assert_int_equal(st_f32_to_fp16(ldexpf(1023.5f, -24)), 0x0400);     /* rounds up to normal */
    assert_int_equal(st_f32_to_fp16(1e-30f), 0x0000);
    assert_true((st_f32_to_fp16(NAN) & 0x7e00) == 0x7e00);
}

static void test_bf16(void **state) {
    (void)state;
    assert_true(st_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(st_bf16_to_f32(0xc040) == -3.0f);
    assert_int_equal(st_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(st_f32_to_bf16(bitsf(0x3f808000u)), 0x3f80); /* tie -> even */
    assert_int_equal(st_f32_to_bf16(bitsf(0x3f818000u)), 0x3f82); /* tie -> even up */
    assert_int_equal(st_f32_to_bf16(bitsf(0x3f808001u)), 0x3f81);
    assert_int_equal(st_f32_to_bf16(bitsf(0x7f7fffffu)), 0x7f80); /* max float rounds to inf */
    uint16_t n = st_f32_to_bf16(bitsf(0x7f800001u));              /* signalling NaN stays NaN */
    assert_true((n & 0x7f80) == 0x7f80 && (n & 0x7f));
}

static void test_type_table(void **state) {
    (void)state;
    assert_string_equal(st_ggml_type_name(ST_GGML_TYPE_Q4_K), "Q4_K");
    assert_null(st_ggml_type_name(10));
    assert_string_equal(st_ggml_type_name_any(10), "Q2_K");
    assert_null(st_ggml_type_name_any(99));
    assert_int_equal(st_ggml_block_size(ST_GGML_TYPE_Q4_1), 32);
    assert_int_equal(st_ggml_type_size(ST_GGML_TYPE_Q4_1), 20);
    assert_int_equal(st_ggml_type_size(ST_GGML_TYPE_Q5_0), 22);
    assert_int_equal(st_ggml_type_size(ST_GGML_TYPE_Q5_1), 24);
    assert_int_equal(st_ggml_type_size(ST_GGML_TYPE_Q8_0), 34);
    assert_int_equal(st_ggml_type_size(ST_GGML_TYPE_Q4_K), 144);
    assert_int_equal(st_ggml_type_size(ST_GGML_TYPE_Q5_K), 176);
    assert_int_equal(st_ggml_type_size(ST_GGML_TYPE_Q6_K), 210);
    assert_int_equal(st_ggml_row_bytes(ST_GGML_TYPE_Q4_0, 64), 36);
    assert_int_equal(st_ggml_row_bytes(ST_GGML_TYPE_Q4_0, 33), 0);
    assert_int_equal(st_ggml_row_bytes(ST_GGML_TYPE_BF16, 3), 6);
    float out[32];
    uint8_t blk[64] = {0};
    assert_int_equal(st_dequantize(10, blk, out, 256), ST_ERR_UNSUPPORTED);
    assert_int_equal(st_dequantize(ST_GGML_TYPE_Q4_0, blk, out, 31), ST_ERR_ARG);
}

static void test_q4_0_q4_1(void **state) {
    (void)state;
    uint8_t b[20];
    float y[32];
    b[0] = 0x00; b[1] = 0x40; /* d = 2.0 */
    for (int j = 0; j < 16; j++) b[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    assert_int_equal(st_dequantize(ST_GGML_TYPE_Q4_0, b, y, 32), ST_OK);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == 2.0f * (float)(j - 8));
        assert_true(y[j + 16] == 2.0f * (float)(7 - j));
    }
    b[0] = 0x00; b[1] = 0x38; /* d = 0.5 */
    b[2] = 0x00; b[3] = 0xbc; /* m = -1.0 */
    for (int j = 0; j < 16; j++) b[4 + j] = (uint8_t)(j | ((15 - j) << 4));
    assert_int_equal(st_dequantize(ST_GGML_TYPE_Q4_1, b, y, 32), ST_OK);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == 0.5f * (float)j - 1.0f);
        assert_true(y[j + 16] == 0.5f * (float)(15 - j) - 1.0f);
    }
}

static void test_q5_q8(void **state) {
    (void)state;
    uint8_t b[34];
    float y[32];
    /* Q5_0: d = 1, qh = 0x80000001 -> element 0 and element 31 get the 5th bit */
    b[0] = 0x00; b[1] = 0x3c;
    b[2] = 0x01; b[3] = 0x00; b[4] = 0x00; b[5] = 0x80;
    for (int j = 0; j < 16; j++) b[6 + j] = 0x33; /* low nibble 3, high nibble 3 */
    assert_int_equal(st_dequantize(ST_GGML_TYPE_Q5_0, b, y, 32), ST_OK);
    assert_true(y[0] == 3.0f);   /* 3 + 16 - 16 */
    assert_true(y[1] == -13.0f); /* 3 - 16 */
    assert_true(y[16] == -13.0f);
    assert_true(y[31] == 3.0f);
    /* Q5_1: d = 0.25, m = 1, qh bit 16 -> element 16 */
    b[0] = 0x00; b[1] = 0x34; b[2] = 0x00; b[3] = 0x3c;
    b[4] = 0x00; b[5] = 0x00; b[6] = 0x01; b[7] = 0x00;
    for (int j = 0; j < 16; j++) b[8 + j] = 0xf0;
    assert_int_equal(st_dequantize(ST_GGML_TYPE_Q5_1, b, y, 32), ST_OK);
    assert_true(y[0] == 1.0f);                    /* 0 * 0.25 + 1 */
    assert_true(y[16] == 0.25f * 31.0f + 1.0f);   /* 15 | 16 */
    assert_true(y[17] == 0.25f * 15.0f + 1.0f);
    /* Q8_0: d = -0.5 */
    b[0] = 0x00; b[1] = 0xb8;
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)(j * 8 - 128);
    assert_int_equal(st_dequantize(ST_GGML_TYPE_Q8_0, b, y, 32), ST_OK);
    for (int j = 0; j < 32; j++) assert_true(y[j] == -0.5f * (float)(j * 8 - 128));
}

/* Pack 8 six-bit scales and mins into the 12-byte K-quant layout. */
static void pack_scales_k4(uint8_t *q, const int *sc, const int *m) {
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        q[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
        q[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
}

static void test_q4_k_q5_k(void **state) {
    (void)state;
    uint8_t b[176];
    float y[256];
    const int sc[8] = {1, 2, 3, 63, 40, 17, 5, 33}, m[8] = {0, 7, 63, 1, 2, 48, 16, 31};
    memset(b, 0, sizeof b);
    b[0] = 0x00; b[1] = 0x3c; /* d = 1 */
    b[2] = 0x00; b[3] = 0x38; /* dmin = 0.5 */
    pack_scales_k4(b + 4, sc, m);
    for (int i = 0; i < 128; i++) b[16 + i] = (uint8_t)((i % 16) | ((15 - i % 16) << 4));
    assert_int_equal(st_dequantize(ST_GGML_TYPE_Q4_K, b, y, 256), ST_OK);
    for (int e = 0; e < 256; e++) {
        int c = e / 32, l = e % 32;
        uint8_t byte = b[16 + 32 * (c / 2) + l];
        int q = c % 2 ? byte >> 4 : byte & 15;
        assert_true(y[e] == (float)(sc[c] * q) - 0.5f * (float)m[c]);
    }
    /* Q5_K: same scales; qh[l] bit c is the fifth bit of element 32c + l */
    memset(b, 0, sizeof b);
    b[0] = 0x00; b[1] = 0x3c;
    b[2] = 0x00; b[3] = 0x38;
    pack_scales_k4(b + 4, sc, m);
    for (int l = 0; l < 32; l++) b[16 + l] = (uint8_t)(l * 37);
    for (int i = 0; i < 128; i++) b[48 + i] = (uint8_t)(i * 11);
    assert_int_equal(st_dequantize(ST_GGML_TYPE_Q5_K, b, y, 256), ST_OK);
    for (int e = 0; e < 256; e++) {
        int c = e / 32, l = e % 32;
        uint8_t byte = b[48 + 32 * (c / 2) + l];
        int q = (c % 2 ? byte >> 4 : byte & 15) | (((b[16 + l] >> c) & 1) << 4);
        assert_true(y[e] == (float)(sc[c] * q) - 0.5f * (float)m[c]);
    }
}

static void test_q6_k(void **state) {
    (void)state;
    uint8_t b[210];
    float y[256];
    for (int i = 0; i < 128; i++) b[i] = (uint8_t)(i * 7);       /* ql */
    for (int i = 0; i < 64; i++) b[128 + i] = (uint8_t)(i * 13); /* qh */
    for (int i = 0; i < 16; i++) b[192 + i] = (uint8_t)(int8_t)(i * 9 - 70);
    b[208] = 0x00; b[209] = 0x34; /* d = 0.25 */
    assert_int_equal(st_dequantize(ST_GGML_TYPE_Q6_K, b, y, 256), ST_OK);
    /* element e: half h = e / 128, r = e % 128, quarter k = r / 32, l = r % 32;
     * low 4 bits from ql[64h + l + 32(k&1)] (nibble k/2), high 2 bits from qh[32h + l] >> 2k;
     * scale index 8h + 2k + l/16. */
    for (int e = 0; e < 256; e++) {
        int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
        uint8_t lo = b[64 * h + l + 32 * (k & 1)];
        int q = ((k / 2 ? lo >> 4 : lo & 15) | (((b[128 + 32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
        int s = (int8_t)b[192 + 8 * h + 2 * k + l / 16];
        assert_true(y[e] == 0.25f * (float)(s * q));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_known_values), cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_type_table),        cmocka_unit_test(test_q4_0_q4_1),
        cmocka_unit_test(test_q5_q8),             cmocka_unit_test(test_q4_k_q5_k),
        cmocka_unit_test(test_q6_k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
