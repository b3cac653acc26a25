/* test_schedule.c - LR multipliers at hand-computed points of the HF formulas (schedule.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "safetune/schedule.h"

#define NEAR(a, b) assert_true(fabs((a) - (b)) < 1e-12)

static void test_constant(void **state) {
    (void)state;
    st_schedule s;
    st_schedule_default(&s, ST_SCHED_CONSTANT, 0);
    s.warmup_steps = 5; /* ignored, as get_constant_schedule */
    NEAR(st_schedule_factor(&s, 0), 1.0);
    NEAR(st_schedule_lr(&s, 2e-5, 1000), 2e-5);
    st_schedule_default(&s, ST_SCHED_CONSTANT_WARMUP, 0);
    s.warmup_steps = 4;
    NEAR(st_schedule_factor(&s, 0), 0.0);
    NEAR(st_schedule_factor(&s, 3), 0.75);
    NEAR(st_schedule_factor(&s, 4), 1.0);
    NEAR(st_schedule_factor(&s, 99), 1.0);
}

static void test_linear(void **state) {
    (void)state;
    st_schedule s;
    st_schedule_default(&s, ST_SCHED_LINEAR, 110);
    s.warmup_steps = 10;
    NEAR(st_schedule_factor(&s, 0), 0.0);
    NEAR(st_schedule_factor(&s, 5), 0.5);
    NEAR(st_schedule_factor(&s, 10), 1.0);
    NEAR(st_schedule_factor(&s, 60), 0.5);
    NEAR(st_schedule_factor(&s, 85), 0.25);
    NEAR(st_schedule_factor(&s, 110), 0.0);
    NEAR(st_schedule_factor(&s, 150), 0.0);
    st_schedule_default(&s, ST_SCHED_LINEAR, 4);
    NEAR(st_schedule_factor(&s, 0), 1.0); /* no warm-up: starts at full lr */
    NEAR(st_schedule_factor(&s, 1), 0.75);
}

static void test_cosine(void **state) {
    (void)state;
    st_schedule s;
    st_schedule_default(&s, ST_SCHED_COSINE, 110);
    s.warmup_steps = 10;
    NEAR(st_schedule_factor(&s, 2), 0.2);
    NEAR(st_schedule_factor(&s, 10), 1.0);
    NEAR(st_schedule_factor(&s, 35), 0.5 * (1.0 + sqrt(0.5))); /* progress 1/4: cos(pi/4) */
    NEAR(st_schedule_factor(&s, 60), 0.5);
    NEAR(st_schedule_factor(&s, 110), 0.0);
    s.num_cycles = 1.0; /* full cosine: back to 1 at the end */
    NEAR(st_schedule_factor(&s, 60), 0.0);
    NEAR(st_schedule_factor(&s, 110), 1.0);
}

static void test_step(void **state) {
    (void)state;
    st_schedule s;
    st_schedule_default(&s, ST_SCHED_STEP, 0);
    s.step_size = 3;
    s.gamma = 0.5;
    const double want[8] = {1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25};
    for (int k = 0; k < 8; k++) NEAR(st_schedule_factor(&s, k), want[k]);
    s.warmup_steps = 2;
    NEAR(st_schedule_factor(&s, 1), 0.5);
    NEAR(st_schedule_factor(&s, 2), 1.0);
    NEAR(st_schedule_factor(&s, 5), 0.5);
}

static void test_parse_validate(void **state) {
    (void)state;
    st_sched_kind k;
    assert_int_equal(st_schedule_kind_parse("cosine", &k), ST_OK);
    assert_int_equal(k, ST_SCHED_COSINE);
    assert_string_equal(st_schedule_kind_name(ST_SCHED_CONSTANT_WARMUP), "constant_with_warmup");
    assert_int_equal(st_schedule_kind_parse("exp", &k), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "exp"));
    st_schedule s;
    st_schedule_default(&s, ST_SCHED_COSINE, 0);
    assert_int_equal(st_schedule_validate(&s), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "total_steps"));
    st_schedule_default(&s, ST_SCHED_STEP, 0);
    s.step_size = 0;
    assert_int_equal(st_schedule_validate(&s), ST_ERR_ARG);
    st_schedule_default(&s, ST_SCHED_LINEAR, 10);
    s.warmup_steps = -1;
    assert_int_equal(st_schedule_validate(&s), ST_ERR_ARG);
    s.warmup_steps = 3;
    assert_int_equal(st_schedule_validate(&s), ST_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant), cmocka_unit_test(test_linear),
        cmocka_unit_test(test_cosine),   cmocka_unit_test(test_step),
        cmocka_unit_test(test_parse_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
