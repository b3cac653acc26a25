/* test_l2sp.c - L2-SP toward θ_0 (l2sp.h, DEFENSES.md §2): the coupled gradient term is exactly
 * α(θ−θ_0) (bit for bit against a plain loop, in the kernel and inside a trainer step with a zero
 * task gradient), the decoupled step scales θ−θ_0 by exactly (1−η·α_d), α = α_d = 0 reproduce
 * plain fine-tuning bit for bit, and bad strengths are refused naming the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_testutil.h"
#include "safetune/l2sp.h"
#include "train/trainer_internal.h"

static float *randv(size_t n, uint64_t seed) {
    float *x = malloc(n * sizeof *x);
    st_rng r;
    st_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)st_rng_normal(&r);
    return x;
}

static void test_kernels_exact(void **state) {
    (void)state;
    const size_t n = 200003; /* several reduction blocks and a tail */
    float *g = randv(n, 1), *th = randv(n, 2), *th0 = randv(n, 3), *want = malloc(n * sizeof *want);
    const float a = (float)0.37;
    double sq = 0;
    for (size_t i = 0; i < n; i++) {
        want[i] = g[i] + a * (th[i] - th0[i]);
        sq += ((double)th[i] - th0[i]) * ((double)th[i] - th0[i]);
    }
    const double pen = st_l2sp_coupled(g, th, th0, n, 0.37);
    assert_memory_equal(g, want, n * sizeof *g);
    assert_true(fabs(pen - 0.5 * 0.37 * sq) <= 1e-12 * pen);
    memset(g, 0, n * sizeof *g); /* zero task gradient: g = α(θ−θ_0) itself */
    st_l2sp_coupled(g, th, th0, n, 0.37);
    for (size_t i = 0; i < n; i++) assert_true(g[i] == a * (th[i] - th0[i]));
    const float f = (float)(1.0 - 1e-2 * 10.0);
    for (size_t i = 0; i < n; i++) want[i] = th0[i] + f * (th[i] - th0[i]);
    st_l2sp_decoupled(th, th0, n, 1.0 - 1e-2 * 10.0);
    assert_memory_equal(th, want, n * sizeof *th);
    free(g), free(th), free(th0), free(want);
}

/* A tiny trainer (random weights, synthetic rows) with the given strengths. */
static st_trainer *make(st_model **m, st_tokenized *tk, double alpha, double alpha_d, st_status want) {
    st_config cfg = st_test_llama_config(16, 24, 4, 2, 4, 37);
    assert_int_equal(st_model_new(&cfg, m), ST_OK);
    st_test_randomize(*m, 5);
    tk->n = 24;
    tk->offsets = calloc(25, sizeof *tk->offsets);
    tk->ids = malloc(24 * 12 * sizeof *tk->ids);
    tk->mask = malloc(24 * 12);
    for (size_t i = 0, o = 0; i < 24; i++) {
        tk->offsets[i] = o;
        for (int k = 0; k < 12; k++, o++) tk->ids[o] = (int32_t)((i * 7 + (size_t)k * 5) % 37), tk->mask[o] = k >= 4;
        tk->offsets[i + 1] = o + 0;
    }
    st_train_config c;
    st_train_config_default(&c);
    c.batch_size = 2, c.grad_accum = 2, c.max_steps = 3, c.max_seq_len = 12, c.val_fraction = 0.0;
    c.optim.lr = 1e-2;
    c.l2sp_alpha = alpha;
    c.l2sp_alpha_decoupled = alpha_d;
    st_trainer *t = NULL;
    assert_int_equal(st_trainer_new(*m, tk, &c, &t), want);
    return t;
}

static void test_zero_strength_is_plain_ft(void **state) {
    (void)state;
    st_model *m0, *m1;
    st_tokenized k0, k1;
    st_trainer *t0 = make(&m0, &k0, 0.0, 0.0, ST_OK), *t1 = make(&m1, &k1, 0.0, 0.0, ST_OK);
    t0->cfg.l2sp_alpha = 0; /* the default config and an explicit 0: same bytes */
    st_step_metrics a, b;
    for (int s = 0; s < 3; s++) {
        assert_int_equal(st_trainer_step(t0, &a), ST_OK);
        assert_int_equal(st_trainer_step(t1, &b), ST_OK);
        assert_true(a.loss == b.loss && a.grad_norm == b.grad_norm && isnan(a.penalty));
    }
    assert_memory_equal(m0->params, m1->params, m0->layout.n_floats * sizeof(float));
    st_trainer_free(t0), st_trainer_free(t1);
    st_model_free(m0), st_model_free(m1);
    st_tokenized_free(&k0), st_tokenized_free(&k1);
}

/* θ_0 moved away from θ and the task gradient zeroed: the step sees only the L2-SP term. */
static void perturb_theta0(st_trainer *t) {
    float *d = randv(t->n, 9);
    for (size_t i = 0; i < t->n; i++) t->ema.theta0[i] += 0.05f * d[i];
    free(d);
    t->debug_zero_grad = 1;
}

static void test_coupled_gradient_in_the_step(void **state) {
    (void)state;
    st_model *m;
    st_tokenized tk;
    st_trainer *t = make(&m, &tk, 0.5, 0.0, ST_OK);
    perturb_theta0(t);
    const size_t n = t->n;
    float *before = malloc(n * sizeof *before);
    memcpy(before, m->params, n * sizeof *before);
    st_step_metrics sm;
    assert_int_equal(st_trainer_step(t, &sm), ST_OK);
    double sq = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(t->grads[i] == (float)0.5 * (before[i] - t->ema.theta0[i])); /* unscaled by the clip */
        sq += ((double)before[i] - t->ema.theta0[i]) * ((double)before[i] - t->ema.theta0[i]);
    }
    assert_true(fabs(sm.penalty - 0.25 * sq) <= 1e-12 * sm.penalty);
    assert_true(fabs(sm.grad_norm - 0.5 * sqrt(sq)) <= 1e-6 * sm.grad_norm);
    free(before);
    st_trainer_free(t);
    st_model_free(m);
    st_tokenized_free(&tk);
}

static void test_decoupled_scales_distance(void **state) {
    (void)state;
    st_model *m;
    st_tokenized tk;
    st_trainer *t = make(&m, &tk, 0.0, 10.0, ST_OK);
    perturb_theta0(t);
    const size_t n = t->n;
    float *before = malloc(n * sizeof *before);
    memcpy(before, m->params, n * sizeof *before);
    st_step_metrics sm;
    assert_int_equal(st_trainer_step(t, &sm), ST_OK);
    const float f = (float)(1.0 - 1e-2 * 10.0); /* η = 1e-2 (constant schedule), α_d = 10 */
    for (size_t i = 0; i < n; i++) assert_true(m->params[i] == t->ema.theta0[i] + f * (before[i] - t->ema.theta0[i]));
    free(before);
    st_trainer_free(t);
    st_model_free(m);
    st_tokenized_free(&tk);
}

/* LoRA: θ is the adapter vector, θ_0 the zero adapter (B = 0). The coupled penalty starts at exactly
 * 0 and the decoupled pull never touches the frozen base (both read the base weights before). */
static void test_lora_acts_on_the_adapter(void **state) {
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        st_model *m;
        st_tokenized tk;
        st_trainer *t = make(&m, &tk, 0.0, 0.0, ST_OK);
        st_train_config c = t->cfg;
        st_trainer_free(t);
        c.finetune = ST_FINETUNE_LORA;
        c.lora.r = 2, c.lora.alpha = 4, c.lora.dropout = 0, c.lora.targets = (1u << ST_LORA_N_TARGETS) - 1;
        if (variant == 0) c.l2sp_alpha = 0.5;
        else c.l2sp_alpha_decoupled = 10.0;
        const size_t nb = m->layout.n_floats;
        float *base = malloc(nb * sizeof *base);
        memcpy(base, m->params, nb * sizeof *base);
        assert_int_equal(st_trainer_new(m, &tk, &c, &t), ST_OK);
        assert_true(t->n < nb);
        st_step_metrics sm;
        assert_int_equal(st_trainer_step(t, &sm), ST_OK);
        if (variant == 0) assert_true(sm.penalty == 0.0); /* adapter at θ_0 before the first update */
        for (int s = 1; s < 3; s++) assert_int_equal(st_trainer_step(t, &sm), ST_OK);
        if (variant == 0) assert_true(sm.penalty > 0.0 && isfinite(sm.penalty)); /* the adapter moved */
        assert_memory_equal(m->params, base, nb * sizeof *base); /* the frozen base is untouched */
        free(base);
        st_trainer_free(t);
        st_model_free(m);
        st_tokenized_free(&tk);
    }
}

static void test_refused(void **state) {
    (void)state;
    struct { double a, ad; const char *words; } cases[] = {
        {0.0, 100.0, "l2sp_alpha_decoupled = 100 with lr 0.01"}, /* η·α_d = 1 */
        {0.0, 250.0, "use l2sp_alpha_decoupled < 100"},
        {-1.0, 0.0, "l2sp_alpha = -1 is out of range"},
        {0.0, -2.0, "l2sp_alpha_decoupled = -2 is out of range"},
        {0.1, 1.0, "set one"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        st_model *m;
        st_tokenized tk;
        assert_null(make(&m, &tk, cases[k].a, cases[k].ad, ST_ERR_ARG));
        if (!strstr(st_last_error(), cases[k].words)) fail_msg("'%s' lacks '%s'", st_last_error(), cases[k].words);
        st_model_free(m);
        st_tokenized_free(&tk);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_exact), cmocka_unit_test(test_zero_strength_is_plain_ft),
        cmocka_unit_test(test_coupled_gradient_in_the_step), cmocka_unit_test(test_decoupled_scales_distance),
        cmocka_unit_test(test_lora_acts_on_the_adapter), cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
