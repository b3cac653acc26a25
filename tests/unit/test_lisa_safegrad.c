/* test_lisa_safegrad.c - Lisa (lisa.h, DEFENSES.md §6) and SafeGrad (safegrad.h, §7) on tiny
 * trainers: Lisa's schedule (T = 25, K1 = 1, K2 = 9: alignment steps exactly s ∈ {0, 10, 20},
 * their rows from the alignment set, the user stream paused), its anchor (θ_0, then θ after
 * s = 0 and after s = 9, ...), the proximal gradient exactly ρ(θ−a) and absent for s ≤ 0.1·T,
 * K1 = 0 with ρ = 0 = plain fine-tuning bit for bit; SafeGrad's surgery on random vectors
 * (⟨g_u', g_a⟩ ≈ 0, ⟨g, g_a⟩ ≥ 0, g_u untouched when d ≥ 0), in the trainer (the first step at θ_0
 * is plain fine-tuning, a projection that is actually active keeps ⟨g, g_a⟩ ≥ 0, ρ = 0 with the
 * projection off = plain fine-tuning), and bad settings refused naming the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_testutil.h"
#include "safetune/lisa.h"
#include "safetune/safegrad.h"
#include "safetune/train_settings.h"
#include "train/trainer_internal.h"

enum { V = 37, LEN = 12, N_USER = 24, N_ALIGN = 10 };

/* Rows of LEN tokens, the first 4 untrained. User rows use ids (i·7 + k·5) % V; alignment rows
 * start with the same prompts but answer with other ids, so the two objectives conflict. */
static void rows(st_tokenized *tk, size_t n, int align) {
    tk->n = n;
    tk->offsets = calloc(n + 1, sizeof *tk->offsets);
    tk->ids = malloc(n * LEN * sizeof *tk->ids);
    tk->mask = malloc(n * LEN);
    for (size_t i = 0, o = 0; i < n; i++) {
        tk->offsets[i] = o;
        for (int k = 0; k < LEN; k++, o++) {
            tk->ids[o] = (int32_t)(k < 4 || !align ? (i * 7 + (size_t)k * 5) % V : (i * 3 + (size_t)k * 11 + 1) % V);
            tk->mask[o] = k >= 4;
        }
        tk->offsets[i + 1] = o;
    }
}

typedef struct {
    st_model *m;
    st_tokenized user, align;
    st_trainer *t;
} rig;

static void rig_free(rig *r) {
    st_trainer_free(r->t);
    st_model_free(r->m);
    st_tokenized_free(&r->user);
    st_tokenized_free(&r->align);
}

static void base_config(st_train_config *c, int64_t steps) {
    st_train_config_default(c);
    c->batch_size = 2, c->grad_accum = 2, c->max_steps = steps, c->max_seq_len = LEN, c->val_fraction = 0.0;
    c->optim.lr = 1e-2;
    c->n_ema = 2, c->ema_decays[0] = 0.9, c->ema_decays[1] = 0.5;
}

static st_status make(rig *r, st_train_config *c) {
    memset(r, 0, sizeof *r);
    st_config cfg = st_test_llama_config(16, 24, 4, 2, 4, V);
    assert_int_equal(st_model_new(&cfg, &r->m), ST_OK);
    st_test_randomize(r->m, 5);
    rows(&r->user, N_USER, 0);
    rows(&r->align, N_ALIGN, 1);
    c->align_data = &r->align;
    return st_trainer_new(r->m, &r->user, c, &r->t);
}

static int is_align_row(const rig *r, const st_batch *b, int row) {
    for (size_t i = 0; i < r->align.n; i++)
        if (!memcmp(b->inputs + (size_t)row * b->T, r->align.ids + r->align.offsets[i], (size_t)(LEN - 1) * sizeof(int32_t)))
            return 1;
    return 0;
}

static void test_schedule(void **state) {
    (void)state;
    st_lisa_schedule s = st_lisa_schedule_make(0.1, 1000, 8); /* quick: 1 alignment + 7 task steps */
    assert_true(s.k1 == 1 && s.k2 == 7);
    s = st_lisa_schedule_make(0.1, 1000, 1000);
    assert_true(s.k1 == 100 && s.k2 == 900);
    s = st_lisa_schedule_make(0.1, 1000, 5000); /* the paper's 100/900 */
    assert_true(s.k1 == 100 && s.k2 == 900);
    s = st_lisa_schedule_make(0.05, 1000, 8); /* K1 >= 1 */
    assert_true(s.k1 == 1 && s.k2 == 7);
    s = st_lisa_schedule_make(0.2, 1000, 500);
    assert_true(s.k1 == 100 && s.k2 == 400);
    s = st_lisa_schedule_make(0.0, 1000, 25); /* K1 = 0: task steps only */
    assert_true(s.k1 == 0 && s.k2 == 25);
    for (int64_t k = 0; k < 25; k++) assert_false(st_lisa_is_align(&s, k));
    s = st_lisa_schedule_make(1.0, 10, 25); /* every cycle keeps a task step */
    assert_true(s.k1 == 9 && s.k2 == 1);
    s = st_lisa_schedule_make(0.1, 10, 25);
    assert_true(s.k1 == 1 && s.k2 == 9);
    for (int64_t k = 0; k < 25; k++) {
        assert_int_equal(st_lisa_is_align(&s, k), k == 0 || k == 10 || k == 20);
        assert_int_equal(st_lisa_switch_after(&s, k), k == 0 || k == 9 || k == 10 || k == 19 || k == 20);
        assert_int_equal(st_lisa_prox_on(k, 25), k >= 3); /* s <= 0.1·T = 2.5: off */
    }
    assert_false(st_lisa_prox_on(10, 100));
    assert_true(st_lisa_prox_on(11, 100));
}

/* T = 25, K1 = 1, K2 = 9, ρ = 0.5: which rows each step used, the anchor the proximal term pulled
 * toward (checked against the weights kept after s = 0, 9, 10, 19, 20), and the exact gradient. */
static void test_lisa_run(void **state) {
    (void)state;
    rig r;
    st_train_config c;
    base_config(&c, 25);
    c.lisa = ST_ON, c.lisa_rho = 0.5, c.lisa_align_share = 0.1, c.lisa_cycle_steps = 10;
    c.optim.weight_decay = 0.1; /* θ moves with a zero gradient, so each anchor differs */
    assert_int_equal(make(&r, &c), ST_OK);
    st_trainer *t = r.t;
    const size_t n = t->n;
    float *anchor = malloc(n * sizeof *anchor), *before = malloc(n * sizeof *before);
    memcpy(anchor, t->theta, n * sizeof *anchor); /* a = θ_0 */
    t->debug_zero_grad = 1; /* only the proximal term is left in the gradient */
    int64_t user_pos = 0;
    for (int64_t s = 0; s < 25; s++) {
        memcpy(before, t->theta, n * sizeof *before);
        const int64_t pos_before = (int64_t)t->sampler.epoch * (int64_t)t->sampler.n_shard + (int64_t)t->sampler.pos;
        st_step_metrics sm;
        assert_int_equal(st_trainer_step(t, &sm), ST_OK);
        const int align = s == 0 || s == 10 || s == 20;
        assert_int_equal(sm.phase, align ? 1 : 2);
        for (int i = 0; i < sm.n_micro; i++)
            for (int b = 0; b < st_trainer_batch(t, i)->B; b++) assert_int_equal(is_align_row(&r, st_trainer_batch(t, i), b), align);
        const int64_t pos_after = (int64_t)t->sampler.epoch * (int64_t)t->sampler.n_shard + (int64_t)t->sampler.pos;
        if (align) assert_true(pos_after == pos_before); /* the user stream waits */
        else user_pos += pos_after - pos_before;
        /* the gradient: exactly ρ(θ−a) for s > 2.5 (a = the anchor before this step), absent before */
        if (s >= 3) {
            for (size_t i = 0; i < n; i++) assert_true(t->grads[i] == (float)0.5 * (before[i] - anchor[i]));
            /* (ρ/2)‖θ−a‖²: 0 right after a switch (a = θ), else > 0 */
            const int just_switched = s == 10 || s == 11 || s == 20 || s == 21;
            if (!(isfinite(sm.penalty) && (just_switched ? sm.penalty == 0 : sm.penalty > 0)))
                fail_msg("s = %lld: penalty %g", (long long)s, sm.penalty);
        } else {
            for (size_t i = 0; i < n; i++) assert_true(t->grads[i] == 0.0f);
            assert_true(isnan(sm.penalty));
        }
        /* a ← θ after the last step of each phase: s = 0, 9, 10, 19, 20 */
        if (s == 0 || s == 9 || s == 10 || s == 19 || s == 20) {
            assert_memory_not_equal(anchor, t->theta, n * sizeof *anchor); /* θ moved (weight decay) */
            memcpy(anchor, t->theta, n * sizeof *anchor);
        }
        assert_memory_equal(st__lisa_anchor(t), anchor, n * sizeof *anchor);
    }
    assert_true(user_pos == 22 * 4); /* 22 task windows of 4 rows */
    free(anchor), free(before);
    rig_free(&r);
}


/* Lisa with K1 = 0 and ρ = 0 is plain fine-tuning bit for bit (two EMAs included); with ρ > 0 it
 * is coupled L2-SP toward θ_0 after 0.1·T. */
static void run_steps(st_train_config *c, int steps, float **live, float **ema1, double *losses) {
    rig r;
    assert_int_equal(make(&r, c), ST_OK);
    for (int s = 0; s < steps; s++) {
        st_step_metrics sm;
        assert_int_equal(st_trainer_step(r.t, &sm), ST_OK);
        losses[s] = sm.loss;
    }
    *live = malloc(r.t->n * sizeof **live);
    *ema1 = malloc(r.t->n * sizeof **ema1);
    memcpy(*live, r.t->theta, r.t->n * sizeof **live);
    memcpy(*ema1, st_trainer_ema_params_k(r.t, 1), r.t->n * sizeof **ema1);
    rig_free(&r);
}

static void test_lisa_zero_is_plain(void **state) {
    (void)state;
    st_train_config a, b;
    base_config(&a, 6);
    base_config(&b, 6);
    b.lisa = ST_ON, b.lisa_rho = 0, b.lisa_align_share = 0;
    float *la, *ea, *lb, *eb;
    double xa[6], xb[6];
    run_steps(&a, 6, &la, &ea, xa);
    run_steps(&b, 6, &lb, &eb, xb);
    assert_memory_equal(xa, xb, sizeof xa);
    rig r;
    assert_int_equal(make(&r, &a), ST_OK);
    const size_t n = r.t->n;
    rig_free(&r);
    assert_memory_equal(la, lb, n * sizeof *la);
    assert_memory_equal(ea, eb, n * sizeof *ea);
    free(la), free(ea), free(lb), free(eb);
    /* K1 = 0, ρ > 0: after 0.1·T the gradient term is L2-SP's α(θ−θ_0), α = ρ, bit for bit */
    base_config(&b, 20);
    b.lisa = ST_ON, b.lisa_rho = 0.7, b.lisa_align_share = 0;
    b.optim.weight_decay = 0.1;
    assert_int_equal(make(&r, &b), ST_OK);
    r.t->debug_zero_grad = 1;
    float *before = malloc(r.t->n * sizeof *before);
    for (int s = 0; s < 5; s++) {
        memcpy(before, r.t->theta, r.t->n * sizeof *before);
        st_step_metrics sm;
        assert_int_equal(st_trainer_step(r.t, &sm), ST_OK);
        assert_int_equal(sm.phase, 2);
        for (size_t i = 0; i < r.t->n; i++)
            assert_true(r.t->grads[i] == (s >= 3 ? (float)0.7 * (before[i] - r.t->ema.theta0[i]) : 0.0f));
    }
    free(before);
    rig_free(&r);
}

static float *randv(size_t n, st_rng *r, double scale) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * st_rng_normal(r));
    return x;
}

static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Many random pairs, from nearly opposed to nearly aligned, several sizes (reduction blocks and
 * tails), ρ ∈ {0, 0.1, 1}: after a projection ⟨g_u', g_a⟩ ≈ 0 and ⟨g, g_a⟩ ≥ 0; without one g_u is
 * untouched bit for bit and ⟨g, g_a⟩ ≥ 0 still holds (d ≥ 0); with the projection off g = g_u + ρ·g_a. */
static void test_projection_random(void **state) {
    (void)state;
    st_rng r;
    st_rng_seed(&r, 12345);
    int projected = 0, kept = 0;
    const size_t sizes[] = {1, 7, 1000, 65536 + 17, 200003};
    const double rhos[] = {0, 0.1, 1};
    for (int trial = 0; trial < 300; trial++) {
        const size_t n = sizes[trial % 5];
        const double rho = rhos[trial % 3];
        float *ga = randv(n, &r, 1e-3 * (1 + trial % 7));
        float *noise = randv(n, &r, 1.0);
        const double mix = -1.0 + 2.0 * (double)(trial % 11) / 10.0; /* correlation of g_u with g_a */
        float *gu = malloc(n * sizeof *gu), *gu0 = malloc(n * sizeof *gu0), *g = malloc(n * sizeof *g);
        for (size_t i = 0; i < n; i++) gu[i] = (float)(mix * 1e3 * ga[i] + (1 - fabs(mix)) * noise[i]);
        memcpy(gu0, gu, n * sizeof *gu);
        st_safegrad_info info;
        st_safegrad_combine(g, gu, ga, n, rho, 1, &info);
        const double ngu = sqrt(dotd(gu0, gu0, n)), nga = sqrt(dotd(ga, ga, n));
        assert_true(fabs(info.dot - dotd(gu0, ga, n)) <= 1e-9 * ngu * nga + 1e-300);
        if (info.projected) {
            projected++;
            assert_true(info.dot < 0 && info.coef == info.dot / info.ga_sq);
            assert_true(fabs(dotd(gu, ga, n)) <= 1e-6 * ngu * nga);
            /* ρ = 0: g = g_u', orthogonal up to rounding; ρ > 0: ⟨g, g_a⟩ ≈ ρ‖g_a‖² > 0 */
            if (rho > 0) assert_true(dotd(g, ga, n) > 0);
            else assert_true(dotd(g, ga, n) >= -1e-6 * ngu * nga);
        } else {
            kept++;
            assert_true(info.dot >= 0 || info.ga_sq <= 1e-9);
            assert_memory_equal(gu, gu0, n * sizeof *gu);
            assert_true(dotd(g, ga, n) >= 0 || info.ga_sq <= 1e-9);
        }
        /* projection off: g = g_u + ρ·g_a, g_u untouched */
        memcpy(gu, gu0, n * sizeof *gu);
        st_safegrad_combine(g, gu, ga, n, rho, 0, &info);
        assert_false(info.projected);
        assert_memory_equal(gu, gu0, n * sizeof *gu);
        for (size_t i = 0; i < n; i++) assert_true(g[i] == (rho == 0 ? gu0[i] : (float)((double)gu0[i] + rho * (double)ga[i])));
        free(ga), free(noise), free(gu), free(gu0), free(g);
    }
    assert_true(projected > 50 && kept > 50);
    /* ‖g_a‖² <= 1e-9: never projected */
    float gu1[2] = {1, 0}, ga1[2] = {-1e-5f, 0}, g1[2];
    st_safegrad_info info;
    st_safegrad_combine(g1, gu1, ga1, 2, 1.0, 1, &info);
    assert_false(info.projected);
    assert_true(gu1[0] == 1.0f);
}

/* SafeGrad in the trainer: step 1 at θ_0 has L_a = 0, g_a = 0 (so the step is plain fine-tuning);
 * over 12 steps the projection is active at some step and ⟨g, g_a⟩ >= 0 at every step. */
static void test_safegrad_trainer(void **state) {
    (void)state;
    st_train_config a, b;
    base_config(&a, 12);
    base_config(&b, 12);
    a.optim.lr = b.optim.lr = 3e-2;
    b.safegrad = ST_ON, b.safegrad_rho = 1, b.safegrad_align_rows = N_ALIGN;
    rig ra, rb;
    assert_int_equal(make(&ra, &a), ST_OK);
    assert_int_equal(make(&rb, &b), ST_OK);
    const size_t n = rb.t->n;
    st_step_metrics ma, mb;
    assert_int_equal(st_trainer_step(ra.t, &ma), ST_OK);
    assert_int_equal(st_trainer_step(rb.t, &mb), ST_OK);
    assert_true(mb.loss_align == 0.0 && mb.align_dot == 0.0 && mb.proj_coef == 0.0);
    assert_true(ma.loss == mb.loss && ma.grad_norm == mb.grad_norm);
    assert_memory_equal(ra.t->theta, rb.t->theta, n * sizeof(float));
    int active = 0;
    for (int s = 1; s < 12; s++) {
        assert_int_equal(st_trainer_step(rb.t, &mb), ST_OK);
        assert_true(mb.loss_align > 0 && isfinite(mb.align_dot));
        const float *g = rb.t->grads, *gu = st__safegrad_gu(rb.t); /* g (unclipped) and g_u' */
        double gga = 0, gua = 0, nga = 0, ng = 0, ngu = 0;
        for (size_t i = 0; i < n; i++) {
            const double ga = (double)g[i] - (double)gu[i]; /* ρ = 1: g_a = g − g_u' */
            gga += (double)g[i] * ga, gua += (double)gu[i] * ga, nga += ga * ga, ng += (double)g[i] * g[i];
            ngu += (double)gu[i] * gu[i];
        }
        assert_true(gga >= 0);
        if (mb.align_dot < 0) {
            active++;
            assert_true(mb.proj_coef < 0);
            assert_true(fabs(gua) <= 1e-5 * sqrt(ngu * nga));
        } else {
            assert_true(mb.proj_coef == 0);
        }
    }
    assert_true(active >= 1); /* the conflicting alignment answers make the projection act */
    rig_free(&ra), rig_free(&rb);
    /* ρ = 0 with the projection off: plain fine-tuning bit for bit, two EMAs included */
    base_config(&a, 4);
    base_config(&b, 4);
    b.safegrad = ST_ON, b.safegrad_rho = 0, b.safegrad_project = ST_OFF, b.safegrad_align_rows = 3;
    float *la, *ea, *lb, *eb;
    double xa[4], xb[4];
    run_steps(&a, 4, &la, &ea, xa);
    run_steps(&b, 4, &lb, &eb, xb);
    assert_memory_equal(xa, xb, sizeof xa);
    assert_memory_equal(la, lb, n * sizeof *la);
    assert_memory_equal(ea, eb, n * sizeof *ea);
    free(la), free(ea), free(lb), free(eb);
}

/* Bad settings: refused before training, the message naming the key. */
static void expect_refused(st_train_config *c, const char *key) {
    rig r;
    assert_int_equal(make(&r, c), ST_ERR_ARG);
    if (!strstr(st_last_error(), key)) fail_msg("'%s' does not name %s", st_last_error(), key);
    rig_free(&r);
}

static void test_bad_settings(void **state) {
    (void)state;
    st_train_config c;
    base_config(&c, 5);
    c.lisa = ST_ON, c.lisa_rho = -1;
    expect_refused(&c, "lisa_rho");
    base_config(&c, 5);
    c.lisa = ST_ON, c.lisa_align_share = 1.5;
    expect_refused(&c, "lisa_align_share");
    base_config(&c, 5);
    c.lisa = ST_ON, c.lisa_cycle_steps = 0;
    expect_refused(&c, "lisa_cycle_steps");
    base_config(&c, 5);
    c.safegrad = ST_ON, c.safegrad_rho = -0.5;
    expect_refused(&c, "safegrad_rho");
    base_config(&c, 5);
    c.safegrad = ST_ON, c.safegrad_align_rows = N_ALIGN + 1;
    expect_refused(&c, "safegrad_align_rows");
    base_config(&c, 5);
    c.lisa = 7;
    expect_refused(&c, "lisa");
    base_config(&c, 5);
    c.lisa = ST_ON, c.safegrad = ST_ON;
    expect_refused(&c, "lisa and safegrad");
    base_config(&c, 5);
    c.lisa = ST_ON, c.l2sp_alpha = 0.1;
    expect_refused(&c, "l2sp_alpha");
    base_config(&c, 5);
    c.safegrad = ST_ON, c.l2sp_alpha_decoupled = 0.1;
    expect_refused(&c, "l2sp_alpha_decoupled");
    base_config(&c, 5);
    c.safegrad = ST_ON, c.finetune = ST_FINETUNE_LORA;
    c.lora.r = 2, c.lora.alpha = 4, c.lora.dropout = 0;
    expect_refused(&c, "safegrad");
    /* no alignment set */
    for (int k = 0; k < 2; k++) {
        rig r;
        base_config(&c, 5);
        if (k) c.safegrad = ST_ON;
        else c.lisa = ST_ON;
        memset(&r, 0, sizeof r);
        st_config cfg = st_test_llama_config(16, 24, 4, 2, 4, V);
        assert_int_equal(st_model_new(&cfg, &r.m), ST_OK);
        rows(&r.user, N_USER, 0);
        c.align_data = NULL;
        assert_int_equal(st_trainer_new(r.m, &r.user, &c, &r.t), ST_ERR_ARG);
        assert_non_null(strstr(st_last_error(), k ? "safegrad: needs the alignment set" : "lisa: needs the alignment set"));
        rig_free(&r);
    }
    /* the table: names and bounds through st_train_setting_set, as `train` and the study parse them */
    base_config(&c, 5);
    assert_int_equal(st_train_setting_set(&c, st_train_setting_find("lisa"), "maybe"), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "lisa"));
    assert_int_equal(st_train_setting_set(&c, st_train_setting_find("safegrad-rho"), "-1"), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "safegrad_rho"));
    assert_int_equal(st_train_setting_set(&c, st_train_setting_find("lisa-align-share"), "0.2"), ST_OK);
    assert_true(c.lisa_align_share == 0.2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_lisa_run),
        cmocka_unit_test(test_lisa_zero_is_plain),
        cmocka_unit_test(test_projection_random),
        cmocka_unit_test(test_safegrad_trainer),
        cmocka_unit_test(test_bad_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
