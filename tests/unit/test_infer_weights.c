/* test_infer_weights.c - st_forward_infer with the inference weight cache (infer_weights.c) on a
 * SmolLM2-shaped model (head_dim 64, 3 query heads per KV head: the AVX-512 GQA decode path):
 * fp32 logits match the full-sequence forward (st_forward_logits, the independent path);
 * bf16 mode stays within bf16 rounding; weights changed in place are picked up (fingerprint),
 * and st_infer_weights_refresh picks up a change the fingerprint samples miss. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "safetune/forward.h"
#include "model_testutil.h"
#include "safetune/kernels.h"

enum { T0 = 7, STEPS = 4, V = 131 };

static st_model *small_model(uint64_t seed) {
    st_config c = st_test_llama_config(192, 160, 3, 1, 64, V);
    st_model *m = NULL;
    assert_int_equal(st_model_new(&c, &m), ST_OK);
    st_test_randomize(m, seed);
    return m;
}

/* Two sequences (slots 0, 1) prefill T0 tokens together, then decode STEPS tokens each in one
 * batched call per step; returns the worst relative error of the last-token logits against
 * st_forward_logits of the same prefix. */
static double worst_err(st_model *m, st_matmul_precision prec) {
    int32_t tok[2][T0 + STEPS];
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < T0 + STEPS; t++) tok[s][t] = (int32_t)((s * 31 + t * 17 + 3) % V);
    st_kv_cache *kc;
    assert_int_equal(st_kv_cache_new(&m->config, 2, T0 + STEPS, &kc), ST_OK);
    st_kv_cache_set_precision(kc, prec);
    float *out = malloc(2 * V * sizeof(float)), *full = malloc((T0 + STEPS) * V * sizeof(float));
    double worst = 0;
    for (int step = 0; step <= STEPS; step++) {
        const int slots[2] = {0, 1};
        const int32_t *tp[2] = {step ? tok[0] + T0 + step - 1 : tok[0],
                                step ? tok[1] + T0 + step - 1 : tok[1]};
        const int n[2] = {step ? 1 : T0, step ? 1 : T0};
        assert_int_equal(st_forward_infer(m, kc, slots, tp, n, 2, out), ST_OK);
        const int len = T0 + step;
        for (int s = 0; s < 2; s++) {
            assert_int_equal(st_forward_logits(m, tok[s], 1, len, full), ST_OK);
            double e = st_test_rel(out + (size_t)s * V, full + (size_t)(len - 1) * V, V);
            if (e > worst) worst = e;
        }
    }
    free(out);
    free(full);
    st_kv_cache_free(kc);
    return worst;
}

static void test_fp32_matches_full_forward(void **state) {
    (void)state;
    st_model *m = small_model(11);
    assert_true(worst_err(m, ST_MATMUL_F32) <= 1e-5);
    st_model_free(m);
}

static void test_bf16_close_to_full_forward(void **state) {
    (void)state;
    st_model *m = small_model(12);
    const double e = worst_err(m, ST_MATMUL_BF16);
    assert_true(e <= 3e-2); /* bf16 operands: ~3 significant digits */
    assert_true(e > 0);     /* and it really ran in bf16 */
    st_model_free(m);
}

static void test_weights_changed_in_place(void **state) {
    (void)state;
    st_model *m = small_model(13);
    assert_true(worst_err(m, ST_MATMUL_F32) <= 1e-5); /* builds the cache */
    for (size_t i = 0; i < m->layout.n_floats; i++) m->params[i] *= 0.9f; /* a "training step" */
    assert_true(worst_err(m, ST_MATMUL_F32) <= 1e-5); /* fingerprint saw it: rebuilt */
    /* one element the samples may miss: only the explicit refresh is guaranteed to see it */
    m->w.layers[1].down_proj[5] += 3.0f;
    assert_int_equal(st_infer_weights_refresh(m), ST_OK);
    assert_true(worst_err(m, ST_MATMUL_F32) <= 1e-5);
    st_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp32_matches_full_forward),
        cmocka_unit_test(test_bf16_close_to_full_forward),
        cmocka_unit_test(test_weights_changed_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
