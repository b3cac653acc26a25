/* test_mm_weight_copy.c - st_mm_set_weight_copy (kernels_matmul_bf16.c): with a registered bf16
 * copy of the weights, the bf16 products (fp32-activation forward, bf16-activation forward,
 * input-gradient backward) are bit-equal to the same calls that round W themselves (the copy
 * made here by an independent round-to-nearest-even), they really read the copy (an altered
 * copy element changes exactly the outputs that use it), W may sit at an offset inside the
 * registered block, and a W outside the block is rounded per call as before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul_bf16.h"

enum { M = 37, K = 70, N = 45, OFF = 11 };

/* RNE of a finite, normal fp32 to bf16 (the test data has no NaN / denormals) */
static uint16_t rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t lo = u & 0xffffu, hi = u >> 16;
    return (uint16_t)(lo > 0x8000u || (lo == 0x8000u && (hi & 1u)) ? hi + 1 : hi);
}

static float frand(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f + (float)(*s >> 24) * 1e-5f;
}

static void test_weight_copy(void **state) {
    (void)state;
    uint32_t seed = 12345;
    float *block = malloc((OFF + (size_t)N * K + 7) * sizeof *block), *w = block + OFF;
    uint16_t *b16 = malloc((OFF + (size_t)N * K + 7) * sizeof *b16), *w16 = b16 + OFF;
    float *in = malloc((size_t)M * K * sizeof *in), *dout = malloc((size_t)M * N * sizeof *dout);
    uint16_t *in16 = malloc((size_t)M * K * sizeof *in16);
    float *o1 = malloc((size_t)M * N * 4), *o2 = malloc((size_t)M * N * 4);
    float *d1 = malloc((size_t)M * K * 4), *d2 = malloc((size_t)M * K * 4);
    for (size_t i = 0; i < OFF + (size_t)N * K + 7; i++) block[i] = frand(&seed);
    for (size_t i = 0; i < OFF + (size_t)N * K + 7; i++) b16[i] = rne(block[i]);
    for (size_t i = 0; i < (size_t)M * K; i++) in[i] = frand(&seed), in16[i] = rne(in[i]);
    for (size_t i = 0; i < (size_t)M * N; i++) dout[i] = frand(&seed);
    st_mm_set_weight_copy(NULL, NULL, 0);
    if (st_mm_forward(o1, in, w, M, K, N, 1)) skip(); /* no oneDNN bf16 matmul here */
    /* forward, fp32 activations: registered copy == per-call rounding */
    st_mm_set_weight_copy(block, b16, OFF + (size_t)N * K + 7);
    assert_int_equal(st_mm_forward(o2, in, w, M, K, N, 1), 0);
    assert_memory_equal(o1, o2, (size_t)M * N * 4);
    /* forward, bf16 activations */
    st_mm_set_weight_copy(NULL, NULL, 0);
    assert_int_equal(st_mm_forward_b(o1, in16, w, M, K, N), 0);
    st_mm_set_weight_copy(block, b16, OFF + (size_t)N * K + 7);
    assert_int_equal(st_mm_forward_b(o2, in16, w, M, K, N), 0);
    assert_memory_equal(o1, o2, (size_t)M * N * 4);
    /* input gradient (written) */
    st_mm_set_weight_copy(NULL, NULL, 0);
    assert_int_equal(st_mm_backward_b(d1, NULL, dout, NULL, 0, NULL, NULL, w, M, K, N), 0);
    st_mm_set_weight_copy(block, b16, OFF + (size_t)N * K + 7);
    assert_int_equal(st_mm_backward_b(d2, NULL, dout, NULL, 0, NULL, NULL, w, M, K, N), 0);
    assert_memory_equal(d1, d2, (size_t)M * K * 4);
    /* the copy is what is read: W[3][5] doubled in the copy only changes output column 3 of the
     * forward (every row: in[:,5] != 0) and input-gradient column 5 of the backward */
    const uint16_t keep = w16[3 * K + 5];
    w16[3 * K + 5] = rne(2.0f * w[3 * K + 5]);
    assert_int_equal(st_mm_forward_b(o2, in16, w, M, K, N), 0);
    assert_int_equal(st_mm_backward_b(d2, NULL, dout, NULL, 0, NULL, NULL, w, M, K, N), 0);
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            if (j == 3)
                assert_true(o2[i * N + j] != o1[i * N + j]);
            else
                assert_true(o2[i * N + j] == o1[i * N + j]);
        for (int k = 0; k < K; k++)
            if (k == 5)
                assert_true(d2[i * K + k] != d1[i * K + k]);
            else
                assert_true(d2[i * K + k] == d1[i * K + k]);
    }
    /* a W not inside the registered block is rounded per call (the altered copy is not read) */
    st_mm_set_weight_copy(block, b16, OFF + (size_t)N * K - 1); /* W's last element outside */
    assert_int_equal(st_mm_forward_b(o2, in16, w, M, K, N), 0);
    assert_memory_equal(o1, o2, (size_t)M * N * 4);
    st_mm_set_weight_copy(NULL, NULL, 0);
    assert_int_equal(st_mm_forward_b(o2, in16, w, M, K, N), 0);
    assert_memory_equal(o1, o2, (size_t)M * N * 4);
    w16[3 * K + 5] = keep;
    free(block); free(b16); free(in); free(dout); free(in16); free(o1); free(o2); free(d1); free(d2);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_weight_copy)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
