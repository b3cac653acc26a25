/* test_trainer_update.c - the fused clip-scale + AdamW + EMA + drift pass (trainer_update.c)
 * must equal the separate passes (st_clip_grad_norm, st_optim_step, st_ema_update,
 * st_l2_distance) bit for bit, for each of two EMA decays: three steps on 200,003 floats (4 reduction blocks) with
 * weight-decay segments that straddle block borders, the second step clipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/trainer_internal.h"

static void set_segments(st_optimizer *o, size_t n) {
    free(o->segs);
    o->segs = malloc(3 * sizeof *o->segs);
    o->segs[0] = (st_optim_segment){0, 70001, 0.1};
    o->segs[1] = (st_optim_segment){70001, 70101, 0.0};
    o->segs[2] = (st_optim_segment){70101, n, 0.05};
    o->n_segs = 3;
}

static void test_fused_equals_separate(void **state) {
    (void)state;
    const size_t n = 200003;
    float *p0 = malloc(n * sizeof *p0), *g = malloc(n * sizeof *g);
    float *pa = malloc(n * sizeof *pa), *pb = malloc(n * sizeof *pb), *gb = malloc(n * sizeof *gb);
    st_rng r;
    st_rng_seed(&r, 7);
    for (size_t i = 0; i < n; i++) p0[i] = (float)st_rng_normal(&r);
    memcpy(pa, p0, n * sizeof *pa);
    memcpy(pb, p0, n * sizeof *pb);
    st_optim_config oc;
    st_optim_config_default(&oc, ST_OPTIM_ADAMW);
    st_trainer *ta = calloc(1, sizeof *ta);
    st_optimizer ob;
    st_ema eb;
    assert_int_equal(st_optim_init(&ta->opt, &oc, NULL, n), ST_OK);
    assert_int_equal(st_optim_init(&ob, &oc, NULL, n), ST_OK);
    set_segments(&ta->opt, n);
    set_segments(&ob, n);
    assert_int_equal(st_ema_init(&ta->ema, p0, n, (float[]){0.9f, 0.5f}, 2, 2, 1), ST_OK);
    assert_int_equal(st_ema_init(&eb, p0, n, (float[]){0.9f, 0.5f}, 2, 2, 1), ST_OK);
    assert_true(st__trainer_update_fusable(ta));
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < n; i++) g[i] = (float)st_rng_normal(&r) * 0.01f;
        const double lr = 1e-3 * step;
        double la, ea[2];
        const int due = st_ema_due(&eb, step);
        /* step 2 clipped (norm ~ 0.01·sqrt(n) ~ 4.5 > 1), the others not (max_norm 0 / 100) */
        const double max_norm = step == 2 ? 1.0 : step == 1 ? 0.0 : 100.0;
        memcpy(gb, g, n * sizeof *gb);
        const double norm = st_clip_grad_norm(gb, n, max_norm);
        const float gscale = st_clip_grad_scale(st_grad_norm(g, n), max_norm);
        assert_true(norm == st_grad_norm(g, n));
        assert_true(step == 2 ? gscale < 0.5f : gscale == 1.0f);
        assert_int_equal(st__trainer_update(ta, pa, g, gscale, lr, due, &la, ea), ST_OK);
        assert_int_equal(st_optim_step(&ob, pb, gb, lr), ST_OK);
        st_ema_step(&eb, pb, ob.step);
        assert_int_equal(ta->opt.step, ob.step);
        assert_int_equal(ta->ema.n_updates, eb.n_updates);
        assert_memory_equal(pa, pb, n * sizeof *pa);
        assert_memory_equal(ta->opt.m, ob.m, n * sizeof *pa);
        assert_memory_equal(ta->opt.v, ob.v, n * sizeof *pa);
        for (int j = 0; j < 2; j++) { /* every decay, each bit for bit */
            assert_memory_equal(ta->ema.ema[j], eb.ema[j], n * sizeof *pa);
            assert_true(sqrt(ea[j]) == st_ema_drift(&eb, j));
        }
        assert_true(step == 1 || memcmp(ta->ema.ema[0], ta->ema.ema[1], n * sizeof *pa) != 0);
        assert_true(sqrt(la) == st_ema_live_drift(&eb, pb));
        assert_true(la > 0);
    }
    double la, ea[2];
    assert_int_equal(st__trainer_update(ta, pa, g, 1.0f, NAN, 1, &la, ea), ST_ERR_ARG);
    st_optim_free(&ta->opt);
    st_optim_free(&ob);
    st_ema_free(&ta->ema);
    st_ema_free(&eb);
    free(ta); free(p0); free(g); free(pa); free(pb); free(gb);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_fused_equals_separate)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
