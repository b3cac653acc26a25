/* test_regdefense.c - constrained SFT, KL to θ_0 and EWC (head_terms.h, ewc.h; DEFENSES.md §4, §8):
 * the β schedule's lists and the weight's fixed points, st_head_row's gradient against central
 * differences in double, EWC with F ≡ 1 equal to coupled L2-SP at α = λ bit for bit (kernel and
 * trainer), the defenses on a LoRA adapter, and bad settings refused naming the key. The PyTorch
 * parity of losses and gradients is tests/parity/regdefense. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_testutil.h"
#include "safetune/ewc.h"
#include "safetune/head_terms.h"
#include "safetune/l2sp.h"
#include "safetune/train_settings.h"
#include "train/trainer_internal.h"

static void test_beta_schedule(void **state) {
    (void)state;
    /* DEFENSES.md §4: defaults β 0.1, f1 5, f 20, L 5 */
    const double want7[] = {0.5, 2, 2, 2, 2, 0.1, 0.1}, want3[] = {0.5, 2, 2};
    for (int t = 1; t <= 7; t++) assert_true(fabs(st_csft_beta_t(0.1, 5, 20, 5, t) - want7[t - 1]) < 1e-15);
    for (int t = 1; t <= 3; t++) assert_true(fabs(st_csft_beta_t(0.1, 5, 20, 5, t) - want3[t - 1]) < 1e-15);
    assert_true(st_csft_weight(0.1, 0.0) == 1.0);              /* Δ = 0: plain CE */
    assert_true(st_csft_weight(1.0, 20.0) == ST_CSFT_CLAMP);   /* β·Δ = 20: the clamp */
    assert_true(fabs(st_csft_weight(1.0, -40.0) - 2.0) < 1e-12); /* probability fell: up to 2 */
    assert_true(st_csft_weight(0.0, 5.0) == 1.0);              /* β = 0: w ≡ 1 */
}

/* f(l) = g·w·CE(l) + k·KL(softmax(l0) ‖ softmax(l)) with w held fixed (no gradient through it) */
static double objective(const double *l, const double *l0, int V, int t, double g, double w, double k) {
    double mx = -INFINITY, mx0 = -INFINITY, s = 0, s0 = 0;
    for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx, mx0 = l0[i] > mx0 ? l0[i] : mx0;
    for (int i = 0; i < V; i++) s += exp(l[i] - mx), s0 += exp(l0[i] - mx0);
    const double lse = mx + log(s), lse0 = mx0 + log(s0);
    double kl = 0;
    for (int i = 0; i < V; i++) kl += exp(l0[i] - lse0) * ((l0[i] - lse0) - (l[i] - lse));
    return g * w * (lse - l[t]) + k * kl;
}

static void test_head_row_finite_differences(void **state) {
    (void)state;
    enum { V = 37 };
    st_rng r;
    st_rng_seed(&r, 4);
    float l[V], l0[V];
    double ld[V], l0d[V];
    for (int i = 0; i < V; i++) {
        l[i] = (float)(2 * st_rng_normal(&r));
        l0[i] = l[i] + (float)(0.7 * st_rng_normal(&r));
        ld[i] = l[i], l0d[i] = l0[i];
    }
    const int t = 5;
    const float g = 0.25f, k = 0.6f;
    double kl, w;
    const float ce = st_head_row(l, l0, V, t, g, 0.5, -3.0f, k, &kl, &w);
    assert_true(w > ST_CSFT_CLAMP && w < 2 && w != 1);
    const double f0 = objective(ld, l0d, V, t, g, w, k);
    assert_true(fabs(ce - (f0 - k * kl) / (g * w)) < 1e-5); /* CE and KL as reported */
    for (int i = 0; i < V; i++) {
        const double h = 1e-5, keep = ld[i];
        ld[i] = keep + h;
        const double fp = objective(ld, l0d, V, t, g, w, k);
        ld[i] = keep - h;
        const double fm = objective(ld, l0d, V, t, g, w, k);
        ld[i] = keep;
        const double fd = (fp - fm) / (2 * h);
        if (fabs(l[i] - fd) > 1e-6 + 1e-4 * fabs(fd)) fail_msg("logit %d: d %g, finite difference %g", i, l[i], fd);
    }
}

static void test_ewc_flat_fisher_is_l2sp(void **state) {
    (void)state;
    const size_t n = 200003;
    float *g1 = malloc(n * 4), *g2 = malloc(n * 4), *th = malloc(n * 4), *th0 = malloc(n * 4), *f = malloc(n * 4);
    st_rng r;
    st_rng_seed(&r, 7);
    for (size_t i = 0; i < n; i++) {
        g1[i] = g2[i] = (float)st_rng_normal(&r);
        th[i] = (float)st_rng_normal(&r), th0[i] = (float)st_rng_normal(&r), f[i] = 1.0f;
    }
    const double p1 = st_ewc_penalty(g1, th, th0, f, n, 0.37), p2 = st_l2sp_coupled(g2, th, th0, n, 0.37);
    assert_true(p1 == p2);
    assert_memory_equal(g1, g2, n * 4);
    /* the Fisher of one gradient listed twice = of it once */
    memset(f, 0, n * 4);
    st_ewc_fisher_add(f, g1, n);
    st_ewc_fisher_add(f, g1, n);
    const double mean = st_ewc_fisher_finish(f, n, 2);
    for (size_t i = 0; i < n; i++) assert_true(f[i] == g1[i] * g1[i]);
    assert_true(mean > 0);
    free(g1), free(g2), free(th), free(th0), free(f);
}

/* A tiny trainer (random weights, synthetic rows; the last 6 rows also serve as alignment rows). */
static st_tokenized g_align;
static st_status make(st_model **m, st_tokenized *tk, st_train_config *c, st_trainer **t, int new_model) {
    if (new_model) {
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
            tk->offsets[i + 1] = o;
        }
        g_align = *tk;
        g_align.n = 6;
    }
    c->batch_size = 2, c->grad_accum = 2, c->max_steps = 3, c->max_seq_len = 12, c->val_fraction = 0.0;
    c->optim.lr = 1e-2;
    *t = NULL;
    return st_trainer_new(*m, tk, c, t);
}

static void test_ewc_flat_fisher_in_the_step(void **state) {
    (void)state;
    st_model *m0, *m1;
    st_tokenized k0, k1;
    st_train_config c0, c1;
    st_trainer *t0, *t1;
    st_train_config_default(&c0);
    st_train_config_default(&c1);
    c0.l2sp_alpha = 0.8;
    c1.ewc_lambda = 0.8;
    c1.align_data = &g_align;
    assert_int_equal(make(&m0, &k0, &c0, &t0, 1), ST_OK);
    assert_int_equal(make(&m1, &k1, &c1, &t1, 1), ST_OK);
    assert_int_equal(st__defense_prepare(t1), ST_OK); /* the Fisher of the alignment rows ... */
    float *f = NULL;
    for (int i = 0; i < t1->n_state; i++)
        if (!strcmp(t1->state_names[i], "ewc_fisher")) f = t1->state[i].data;
    assert_non_null(f);
    double s = 0;
    for (size_t i = 0; i < t1->n; i++) s += f[i], f[i] = 1.0f; /* ... then forced flat */
    assert_true(s > 0);
    st_step_metrics a, b;
    for (int k = 0; k < 3; k++) {
        assert_int_equal(st_trainer_step(t0, &a), ST_OK);
        assert_int_equal(st_trainer_step(t1, &b), ST_OK);
        assert_true(a.loss == b.loss && a.grad_norm == b.grad_norm && a.penalty == b.penalty);
    }
    assert_true(b.penalty > 0);
    assert_memory_equal(m0->params, m1->params, m0->layout.n_floats * sizeof(float));
    assert_memory_equal(st_trainer_ema_params(t0), st_trainer_ema_params(t1), t0->n * sizeof(float));
    st_trainer_free(t0), st_trainer_free(t1);
    st_model_free(m0), st_model_free(m1);
    st_tokenized_free(&k0), st_tokenized_free(&k1);
}

/* LoRA: θ_0 is the initial adapter. CSFT at step 1 (no dropout) weights every token by 1; EWC's
 * penalty is 0 at step 1 and grows; the frozen base stays as loaded. */
static void test_lora(void **state) {
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        st_model *m;
        st_tokenized tk;
        st_train_config c;
        st_train_config_default(&c);
        c.finetune = ST_FINETUNE_LORA;
        c.lora.r = 2, c.lora.alpha = 4, c.lora.dropout = 0, c.lora.targets = (1u << ST_LORA_N_TARGETS) - 1;
        st_trainer *t;
        assert_int_equal(make(&m, &tk, &c, &t, 1), ST_OK);
        st_trainer_free(t);
        if (variant == 0) c.csft_beta = 0.3;
        else c.ewc_lambda = 5.0, c.align_data = &g_align;
        const size_t nb = m->layout.n_floats;
        float *base = malloc(nb * sizeof *base);
        memcpy(base, m->params, nb * sizeof *base);
        assert_int_equal(make(&m, &tk, &c, &t, 0), ST_OK);
        st_step_metrics sm;
        assert_int_equal(st_trainer_step(t, &sm), ST_OK);
        if (variant == 0) assert_true(fabs(sm.csft_loss - sm.loss) <= 1e-6 * sm.loss);
        else assert_true(sm.penalty == 0.0 && sm.fisher_mean > 0);
        for (int s = 1; s < 3; s++) assert_int_equal(st_trainer_step(t, &sm), ST_OK);
        if (variant == 0) assert_true(isfinite(sm.csft_loss) && sm.csft_loss != sm.loss);
        else assert_true(sm.penalty > 0 && isfinite(sm.penalty));
        assert_memory_equal(m->params, base, nb * sizeof *base);
        free(base);
        st_trainer_free(t);
        st_model_free(m);
        st_tokenized_free(&tk);
    }
}

static void test_refused(void **state) {
    (void)state;
    struct { double csft, kl, ewc, l2sp; int lora, align; const char *words; } cases[] = {
        {0, 0, 1.0, 0, 0, 0, "ewc_lambda = 1 needs the alignment set"},
        {0, 0, 1.0, 0.5, 0, 1, "ewc_lambda and l2sp_alpha both pull"},
        {0, 0.1, 0, 0, 1, 0, "kl_lambda with finetune lora"},
        {-1, 0, 0, 0, 0, 0, "csft_beta = -1 is out of range"},
        {0, 2e6, 0, 0, 0, 0, "kl_lambda = 2000000 is out of range"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        st_model *m;
        st_tokenized tk;
        st_train_config c;
        st_train_config_default(&c);
        c.csft_beta = cases[k].csft, c.kl_lambda = cases[k].kl, c.ewc_lambda = cases[k].ewc;
        c.l2sp_alpha = cases[k].l2sp;
        if (cases[k].lora) c.finetune = ST_FINETUNE_LORA;
        if (cases[k].align) c.align_data = &g_align;
        st_trainer *t;
        assert_int_equal(make(&m, &tk, &c, &t, 1), ST_ERR_ARG);
        assert_null(t);
        if (!strstr(st_last_error(), cases[k].words)) fail_msg("'%s' lacks '%s'", st_last_error(), cases[k].words);
        st_model_free(m);
        st_tokenized_free(&tk);
    }
    { /* not composed with Lisa / SafeGrad: refused naming both keys */
        st_train_config c;
        st_train_config_default(&c);
        c.max_steps = 3;
        c.csft_beta = 0.1;
        c.safegrad = ST_ON;
        assert_int_equal(st_train_config_validate(&c), ST_ERR_ARG);
        assert_non_null(strstr(st_last_error(), "csft_beta with safegrad"));
        c.csft_beta = 0, c.safegrad = ST_OFF, c.ewc_lambda = 1, c.lisa = ST_ON;
        assert_int_equal(st_train_config_validate(&c), ST_ERR_ARG);
        assert_non_null(strstr(st_last_error(), "ewc_lambda with lisa"));
        assert_true(st_train_setting_safety_data(st_train_setting_find("ewc_lambda")));
        assert_false(st_train_setting_safety_data(st_train_setting_find("kl_lambda")));
    }
    /* the table's rows parse and bound the flags */
    st_train_config c;
    st_train_config_default(&c);
    assert_true(c.csft_beta == 0 && c.csft_first_factor == 5 && c.csft_factor == 20 && c.csft_prefix == 5);
    assert_int_equal(st_train_setting_set(&c, st_train_setting_find("csft-prefix"), "0"), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "csft_prefix"));
    assert_int_equal(st_train_setting_set(&c, st_train_setting_find("ewc_lambda"), "abc"), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "ewc_lambda"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_beta_schedule), cmocka_unit_test(test_head_row_finite_differences),
        cmocka_unit_test(test_ewc_flat_fisher_is_l2sp), cmocka_unit_test(test_ewc_flat_fisher_in_the_step),
        cmocka_unit_test(test_lora), cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
