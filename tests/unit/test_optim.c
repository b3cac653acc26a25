/* test_optim.c - AdamW / SGD single steps against hand-computed values, weight-decay groups from
 * the layout, gradient clipping, argument checks. (Multi-step parity with PyTorch is in
 * tests/parity/train.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <string.h>

#include "safetune/optim.h"

/* Layout of two tensors: "w" [2] decayed, "norm" [1] no_decay. */
static st_param_info k_infos[2] = {
    {.name = "w", .offset = 0, .numel = 2, .n_dims = 1, .shape = {2, 0}, .no_decay = 0},
    {.name = "norm", .offset = 2, .numel = 1, .n_dims = 1, .shape = {1, 0}, .no_decay = 1},
};
static st_layout k_lay = {k_infos, 2, 3};

static void test_adamw_two_steps(void **state) {
    (void)state;
    st_optim_config c;
    st_optim_config_default(&c, ST_OPTIM_ADAMW);
    c.weight_decay = 0.1;
    st_optimizer o;
    assert_int_equal(st_optim_init(&o, &c, &k_lay, 3), ST_OK);
    float p[3] = {1.0f, 1.0f, 1.0f};
    float g[3] = {0.5f, 0.5f, 0.5f};
    /* step 1, lr 0.1: m = 0.05, v = 0.00025, m̂ = 0.5, sqrt(v̂) = 0.5 -> update 0.1 (eps 1e-8
     * is 2e-8 relative); decayed: 1*(1 - 0.01) - 0.1 = 0.89, no_decay: 0.9 */
    assert_int_equal(st_optim_step(&o, p, g, 0.1f), ST_OK);
    assert_int_equal(o.step, 1);
    assert_true(fabsf(p[0] - 0.89f) < 1e-6f && fabsf(p[1] - 0.89f) < 1e-6f);
    assert_true(fabsf(p[2] - 0.9f) < 1e-6f);
    assert_true(fabsf(o.m[0] - 0.05f) < 0.05f * 1e-6f && fabsf(o.v[0] - 0.00025f) < 0.00025f * 1e-6f);
    /* step 2, g = -0.5: m = 0.045 - 0.05 = -0.005, v = 0.00024975 + 0.00025 = 0.00049975,
     * bc1 = 0.19, bc2 = 0.001999, sqrt(v/bc2) = 0.5: update = (0.1/0.19) * -0.005/0.5 */
    g[0] = g[1] = g[2] = -0.5f;
    assert_int_equal(st_optim_step(&o, p, g, 0.1f), ST_OK);
    double upd = 0.1 / 0.19 * 0.005 / 0.5;
    assert_true(fabs(p[2] - (0.9 + upd)) < 1e-6);
    assert_true(fabs(p[0] - (0.89 * (1.0 - 0.01) + upd)) < 1e-6);
    st_optim_free(&o);
}

static void test_adamw_decay_all(void **state) {
    (void)state;
    st_optim_config c;
    st_optim_config_default(&c, ST_OPTIM_ADAMW);
    c.weight_decay = 0.1;
    c.decay_no_decay_params = 1;
    st_optimizer o;
    assert_int_equal(st_optim_init(&o, &c, &k_lay, 3), ST_OK);
    assert_int_equal(o.n_segs, 1);
    float p[3] = {1, 1, 1}, g[3] = {0.5f, 0.5f, 0.5f};
    st_optim_step(&o, p, g, 0.1f);
    assert_true(fabsf(p[2] - 0.89f) < 1e-6f);
    st_optim_free(&o);
}

static void test_sgd_momentum_and_nesterov(void **state) {
    (void)state;
    st_optim_config c;
    st_optim_config_default(&c, ST_OPTIM_SGD);
    c.momentum = 0.9;
    st_optimizer o;
    assert_int_equal(st_optim_init(&o, &c, NULL, 1), ST_OK);
    float p = 1.0f, g = 1.0f;
    st_optim_step(&o, &p, &g, 0.1f); /* b = 1, p = 0.9 */
    assert_true(fabsf(p - 0.9f) < 1e-7f);
    st_optim_step(&o, &p, &g, 0.1f); /* b = 0.9 + 1 = 1.9, p = 0.9 - 0.19 = 0.71 */
    assert_true(fabsf(p - 0.71f) < 1e-7f);
    st_optim_free(&o);

    c.nesterov = 1;
    assert_int_equal(st_optim_init(&o, &c, NULL, 1), ST_OK);
    p = 1.0f;
    st_optim_step(&o, &p, &g, 0.1f); /* b = 1, d = 1 + 0.9 = 1.9, p = 0.81 */
    assert_true(fabsf(p - 0.81f) < 1e-7f);
    st_optim_free(&o);

    /* coupled L2 decay respects no_decay: d = g + wd*p */
    st_optim_config_default(&c, ST_OPTIM_SGD);
    c.weight_decay = 0.5;
    assert_int_equal(st_optim_init(&o, &c, &k_lay, 3), ST_OK);
    assert_null(o.m);
    float pp[3] = {2, 2, 2}, gg[3] = {1, 1, 1};
    st_optim_step(&o, pp, gg, 0.1f); /* decayed: 2 - 0.1*(1 + 1) = 1.8; no_decay: 1.9 */
    assert_true(fabsf(pp[0] - 1.8f) < 1e-6f && fabsf(pp[2] - 1.9f) < 1e-6f);
    st_optim_free(&o);
}

static void test_bad_config(void **state) {
    (void)state;
    st_optim_config c;
    st_optimizer o;
    st_optim_config_default(&c, ST_OPTIM_ADAMW);
    c.beta2 = 1.0;
    assert_int_equal(st_optim_init(&o, &c, NULL, 3), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "beta2"));
    st_optim_config_default(&c, ST_OPTIM_ADAMW);
    assert_int_equal(st_optim_init(&o, &c, &k_lay, 4), ST_ERR_ARG); /* n mismatch */
    st_optim_config_default(&c, ST_OPTIM_SGD);
    c.nesterov = 1;
    assert_int_equal(st_optim_init(&o, &c, NULL, 3), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "nesterov"));
    /* a layout with a hole is rejected */
    st_param_info gap[2] = {k_infos[0], k_infos[1]};
    gap[1].offset = 3;
    st_layout bad = {gap, 2, 4};
    st_optim_config_default(&c, ST_OPTIM_ADAMW);
    assert_int_equal(st_optim_init(&o, &c, &bad, 4), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "norm"));
    st_optim_kind k;
    assert_int_equal(st_optim_kind_parse("adam", &k), ST_ERR_ARG);
    assert_int_equal(st_optim_kind_parse("sgd", &k), ST_OK);
    assert_int_equal(k, ST_OPTIM_SGD);
}

static void test_clip(void **state) {
    (void)state;
    float g[2] = {3.0f, 4.0f};
    assert_true(st_clip_grad_norm(g, 2, 10.0) == 5.0);
    assert_true(g[0] == 3.0f && g[1] == 4.0f); /* coef clamped to 1 */
    assert_true(st_clip_grad_norm(g, 2, 1.0) == 5.0);
    /* coef = 1 / (5 + 1e-6) */
    assert_true(fabs(g[0] - 3.0 / (5.0 + 1e-6)) < 1e-7 && fabs(g[1] - 4.0 / (5.0 + 1e-6)) < 1e-7);
    float h[2] = {3.0f, 4.0f};
    assert_true(st_clip_grad_norm(h, 2, 0.0) == 5.0 && h[0] == 3.0f); /* disabled */
    float bad[2] = {NAN, 1.0f};
    assert_true(isnan(st_clip_grad_norm(bad, 2, 1.0)));
    assert_true(bad[1] == 1.0f);
    /* double accumulation: 2^20 values of 2^-10 -> norm exactly 1 */
    enum { N = 1 << 20 };
    static float big[N];
    for (int i = 0; i < N; i++) big[i] = 0.0009765625f;
    assert_true(st_grad_norm(big, N) == 1.0);
}

/* The norm does not depend on the thread count (fixed-block reduction). */
static void test_norm_deterministic(void **state) {
    (void)state;
    enum { N = 300007 };
    static float g[N];
    st_rng r;
    st_rng_seed(&r, 3);
    for (int i = 0; i < N; i++) g[i] = (float)st_rng_normal(&r);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    double a = st_grad_norm(g, N);
    omp_set_num_threads(3);
    double b = st_grad_norm(g, N);
    omp_set_num_threads(7);
    double c = st_grad_norm(g, N);
    omp_set_num_threads(saved);
    assert_memory_equal(&a, &b, sizeof a);
    assert_memory_equal(&a, &c, sizeof a);
    double ref = 0.0; /* plain sequential sum: equal to ~1e-15 relative */
    for (int i = 0; i < N; i++) ref += (double)g[i] * g[i];
    assert_true(fabs(a - sqrt(ref)) < 1e-12 * a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_two_steps), cmocka_unit_test(test_adamw_decay_all),
        cmocka_unit_test(test_sgd_momentum_and_nesterov), cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_clip), cmocka_unit_test(test_norm_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
