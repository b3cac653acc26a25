/* test_infer_weights.c - st_forward_infer with the inference weight cache (infer_weights.c) on a
 * SmolLM2-shaped model (head_dim 64, 3 query heads per KV head: the AVX-512 GQA decode path):
 * fp32 logits match the full-sequence forward (st_forward_logits, the independent path);
 * bf16 mode stays within bf16 rounding; a context's copies follow in-place edits after
 * st_infer_ctx_refresh; contexts over other weight buffers and with a LoRA adapter (against the
 * merged model, on all three matmul paths) give those weights' logits. */
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
#include "safetune/backward.h"
#include "safetune/lora.h"

enum { T0 = 7, STEPS = 4, V = 131 };

static st_model *small_model(uint64_t seed) {
    st_config c = st_test_llama_config(192, 160, 3, 1, 64, V);
    st_model *m = NULL;
    assert_int_equal(st_model_new(&c, &m), ST_OK);
    st_test_randomize(m, seed);
    return m;
}

/* Two sequences (slots 0, 1) prefill T0 tokens together, then decode STEPS tokens each in one
 * batched call per step with inference context ic; returns the worst relative error of the
 * last-token logits against st_forward_logits of the same prefix on model ref (the weights ic
 * should hold). */
static double worst_err_ctx(st_infer_ctx *ic, const st_model *ref, st_matmul_precision prec) {
    int32_t tok[2][T0 + STEPS];
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < T0 + STEPS; t++) tok[s][t] = (int32_t)((s * 31 + t * 17 + 3) % V);
    st_kv_cache *kc;
    assert_int_equal(st_kv_cache_new(&ref->config, 2, T0 + STEPS, &kc), ST_OK);
    st_kv_cache_set_precision(kc, prec);
    float *out = malloc(2 * V * sizeof(float)), *full = malloc((T0 + STEPS) * V * sizeof(float));
    double worst = 0;
    for (int step = 0; step <= STEPS; step++) {
        const int slots[2] = {0, 1};
        const int32_t *tp[2] = {step ? tok[0] + T0 + step - 1 : tok[0],
                                step ? tok[1] + T0 + step - 1 : tok[1]};
        const int n[2] = {step ? 1 : T0, step ? 1 : T0};
        assert_int_equal(st_forward_infer(ic, kc, slots, tp, n, 2, out), ST_OK);
        const int len = T0 + step;
        for (int s = 0; s < 2; s++) {
            assert_int_equal(st_forward_logits(ref, tok[s], 1, len, full), ST_OK);
            double e = st_test_rel(out + (size_t)s * V, full + (size_t)(len - 1) * V, V);
            if (e > worst) worst = e;
        }
    }
    free(out);
    free(full);
    st_kv_cache_free(kc);
    return worst;
}

/* The same with a fresh context over m's own weights. */
static double worst_err(st_model *m, st_matmul_precision prec) {
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    const double e = worst_err_ctx(ic, m, prec);
    st_infer_ctx_free(ic);
    return e;
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

/* A context reads its weights when it builds its copies: an in-place edit is seen after
 * st_infer_ctx_refresh, not before (the copies are the context's, not the model's). */
static void test_weights_changed_in_place(void **state) {
    (void)state;
    st_model *m = small_model(13);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    assert_true(worst_err_ctx(ic, m, ST_MATMUL_F32) <= 1e-5); /* builds the copies */
    for (size_t i = 0; i < m->layout.n_floats; i++) m->params[i] *= 0.9f; /* a "training step" */
    assert_true(worst_err_ctx(ic, m, ST_MATMUL_F32) > 1e-3); /* still the copies of before */
    st_infer_ctx_refresh(ic);
    assert_true(worst_err_ctx(ic, m, ST_MATMUL_F32) <= 1e-5);
    m->w.layers[1].down_proj[5] += 3.0f; /* one element */
    st_infer_ctx_refresh(ic);
    assert_true(worst_err_ctx(ic, m, ST_MATMUL_F32) <= 1e-5);
    st_infer_ctx_free(ic);
    st_model_free(m);
}

/* Two contexts over one model at once: its own weights and another buffer in its layout (an
 * EMA copy, θ0) each give their own logits; the model is not touched. */
static void test_contexts_over_other_weights(void **state) {
    (void)state;
    st_model *m = small_model(14), *other = small_model(15);
    float *before = malloc(m->layout.n_floats * sizeof(float));
    memcpy(before, m->params, m->layout.n_floats * sizeof(float));
    st_infer_ctx *own = NULL, *ema = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &own), ST_OK);
    assert_int_equal(st_infer_ctx_new(m, other->params, NULL, NULL, &ema), ST_OK);
    assert_ptr_equal(st_infer_ctx_model(ema), m);
    for (int prec = 0; prec < 2; prec++) {
        const st_matmul_precision p = prec ? ST_MATMUL_BF16 : ST_MATMUL_F32;
        const double tol = prec ? 3e-2 : 1e-5;
        assert_true(worst_err_ctx(own, m, p) <= tol);
        assert_true(worst_err_ctx(ema, other, p) <= tol);
        assert_true(worst_err_ctx(ema, m, p) > 0.1); /* really the other weights */
    }
    assert_memory_equal(before, m->params, m->layout.n_floats * sizeof(float));
    st_infer_ctx_free(own);
    st_infer_ctx_free(ema);
    free(before);
    st_model_free(other);
    st_model_free(m);
}

/* A LoRA adapter (random A and B on the targets) on a context: logits equal the full forward
 * of the merged model (st_lora_merged_params) with the weight copies (fused and per-op loops)
 * and with the plain matmul, which adds the adapter as its own term; scoring
 * (st_infer_ctx_score) equals the training forward of the merged model; the base is untouched. */
static void lora_case(unsigned targets, int r, const char *env, const char *val) {
    st_model *m = small_model(16);
    st_lora_config lc;
    st_lora_config_default(&lc);
    lc.r = r;
    lc.alpha = 2.0 * r;
    lc.targets = targets;
    st_lora *ad = NULL;
    assert_int_equal(st_lora_new(&m->config, &lc, &ad), ST_OK);
    st_lora_init_params(&ad->layout, ad->params, 7);
    st_rng rng;
    st_rng_seed(&rng, 99);
    for (size_t i = 0; i < ad->layout.n_floats; i++) ad->params[i] += 0.05f * (float)st_rng_normal(&rng);
    float *merged = NULL;
    assert_int_equal(st_lora_merged_params(&m->config, &m->layout, m->params, ad, ad->params, &merged), ST_OK);
    st_model *ref = NULL;
    assert_int_equal(st_model_new(&m->config, &ref), ST_OK);
    memcpy(ref->params, merged, m->layout.n_floats * sizeof(float));
    float *before = malloc(m->layout.n_floats * sizeof(float));
    memcpy(before, m->params, m->layout.n_floats * sizeof(float));
    if (env) setenv(env, val, 1);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, ad, NULL, &ic), ST_OK);
    assert_true(worst_err_ctx(ic, ref, ST_MATMUL_F32) <= 1e-5);
    assert_true(worst_err_ctx(ic, m, ST_MATMUL_F32) > 1e-3); /* the adapter changed the logits */
    const double eb = worst_err_ctx(ic, ref, ST_MATMUL_BF16);
    assert_true(eb <= 3e-2);
    if (env) unsetenv(env);
    /* scoring: base + adapter without dropout = the merged model's training forward */
    enum { B = 2, T = 9 };
    int32_t tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)((i * 13 + 5) % V), tgt[i] = (int32_t)((i * 7 + 1) % V);
    st_train_acts *a1 = NULL, *a2 = NULL;
    assert_int_equal(st_train_acts_new(&m->config, B, T, &a1), ST_OK);
    assert_int_equal(st_train_acts_new(&m->config, B, T, &a2), ST_OK);
    float l1 = 0, l2 = 0;
    assert_int_equal(st_infer_ctx_score(ic, a1, tok, tgt, NULL, B, T, 1.0f, &l1), ST_OK);
    assert_int_equal(st_train_forward(&ref->config, &ref->w, a2, tok, tgt, NULL, B, T, 1.0f, &l2), ST_OK);
    assert_true(fabsf(l1 - l2) <= 1e-5f * fabsf(l2));
    /* ‖θ − θ0‖ of the adapter without forming B·A = the distance of the merged weights */
    double d2 = 0;
    for (size_t i = 0; i < m->layout.n_floats; i++) {
        const double d = (double)merged[i] - (double)m->params[i];
        d2 += d * d;
    }
    const double dn = st_lora_delta_norm(ad, ad->params);
    assert_true(fabs(dn - sqrt(d2)) <= 1e-4 * sqrt(d2));
    assert_memory_equal(before, m->params, m->layout.n_floats * sizeof(float));
    st_train_acts_free(a1);
    st_train_acts_free(a2);
    st_infer_ctx_free(ic);
    free(before);
    st_free_aligned(merged);
    st_model_free(ref);
    st_lora_free(ad);
    st_model_free(m);
}

static void test_lora_all_targets(void **state) {
    (void)state;
    lora_case(ST_LORA_ALL_TARGETS, 4, NULL, NULL);
}
static void test_lora_some_targets_per_op(void **state) {
    (void)state;
    lora_case((1u << ST_LORA_K) | (1u << ST_LORA_UP) | (1u << ST_LORA_DOWN), 3, "SAFETUNE_INFER_FUSED", "0");
}
static void test_lora_plain_matmul(void **state) {
    (void)state;
    lora_case((1u << ST_LORA_Q) | (1u << ST_LORA_V) | (1u << ST_LORA_O) | (1u << ST_LORA_GATE), 5,
              "SAFETUNE_INFER_WCACHE", "0");
}

/* An adapter made for another config is refused when the context is made. */
static void test_lora_other_config_refused(void **state) {
    (void)state;
    st_model *m = small_model(17);
    st_config c2 = st_test_llama_config(128, 160, 2, 1, 64, V);
    st_lora_config lc;
    st_lora_config_default(&lc);
    st_lora *ad = NULL;
    assert_int_equal(st_lora_new(&c2, &lc, &ad), ST_OK);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, ad, NULL, &ic), ST_ERR_ARG);
    assert_null(ic);
    st_lora_free(ad);
    st_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp32_matches_full_forward),
        cmocka_unit_test(test_bf16_close_to_full_forward),
        cmocka_unit_test(test_weights_changed_in_place),
        cmocka_unit_test(test_contexts_over_other_weights),
        cmocka_unit_test(test_lora_all_targets),
        cmocka_unit_test(test_lora_some_targets_per_op),
        cmocka_unit_test(test_lora_plain_matmul),
        cmocka_unit_test(test_lora_other_config_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
