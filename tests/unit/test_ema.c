/* test_ema.c - EMA of weights: exact hand-computed values (all inputs exactly representable). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "safetune/ema.h"

static const float k_theta0[4] = {1.0f, -2.0f, 0.5f, 4.0f};

static void test_decay0_is_live_weights(void **state) {
    (void)state;
    st_ema e;
    assert_int_equal(st_ema_init(&e, k_theta0, 4, (float[]){0.0f}, 1, 1, 1), ST_OK);
    const float th[4] = {0.1f, 123.456f, -7.25f, 1e-30f};
    assert_int_equal(st_ema_step(&e, th, 1), 1);
    for (int i = 0; i < 4; i++) assert_true(e.ema[0][i] == th[i]);
    const float th2[4] = {-3.3f, 0.0f, 9.0f, 2.0f};
    st_ema_step(&e, th2, 2);
    for (int i = 0; i < 4; i++) assert_true(e.ema[0][i] == th2[i]);
    st_ema_free(&e);
}

static void test_decay1_keeps_theta0(void **state) {
    (void)state;
    st_ema e;
    assert_int_equal(st_ema_init(&e, k_theta0, 4, (float[]){1.0f}, 1, 1, 1), ST_OK);
    const float th[4] = {100.0f, -100.0f, 3.0f, 0.0f};
    for (int s = 1; s <= 5; s++) st_ema_step(&e, th, s);
    assert_int_equal(e.n_updates, 5);
    for (int i = 0; i < 4; i++) assert_true(e.ema[0][i] == k_theta0[i]);
    assert_true(st_ema_drift(&e, 0) == 0.0);
    st_ema_free(&e);
}

static void test_hand_computed_steps(void **state) {
    (void)state;
    st_ema e;
    assert_int_equal(st_ema_init(&e, k_theta0, 4, (float[]){0.75f}, 1, 1, 1), ST_OK);
    /* θ_ema = 0.75 θ0 + 0.25 θ */
    const float th1[4] = {3.0f, 2.0f, 0.5f, -4.0f};
    st_ema_step(&e, th1, 1);
    const float want1[4] = {1.5f, -1.0f, 0.5f, 2.0f};
    for (int i = 0; i < 4; i++) assert_true(e.ema[0][i] == want1[i]);
    const float th2[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    st_ema_step(&e, th2, 2);
    const float want2[4] = {1.375f, -0.5f, 0.625f, 1.75f};
    for (int i = 0; i < 4; i++) assert_true(e.ema[0][i] == want2[i]);
    /* θ_0 untouched; drift = ||(0.375, 1.5, 0.125, -2.25)|| */
    for (int i = 0; i < 4; i++) assert_true(e.theta0[i] == k_theta0[i]);
    double want = sqrt(0.375 * 0.375 + 1.5 * 1.5 + 0.125 * 0.125 + 2.25 * 2.25);
    assert_true(fabs(st_ema_drift(&e, 0) - want) < 1e-12);
    /* live drift: θ2 - θ0 = (0, 3, 0.5, -3) */
    assert_true(fabs(st_ema_live_drift(&e, th2) - sqrt(9.0 + 0.25 + 9.0)) < 1e-12);
    st_ema_free(&e);
}

static void test_start_and_every(void **state) {
    (void)state;
    const float zero[3] = {0, 0, 0};
    st_ema e;
    assert_int_equal(st_ema_init(&e, zero, 3, (float[]){0.5f}, 1, 3, 2), ST_OK);
    /* updates after steps 3, 5, 7 only; θ_k = k: 0.5*0 + 0.5*3 = 1.5; 0.75 + 2.5 = 3.25;
     * 1.625 + 3.5 = 5.125 */
    int updated[8] = {0};
    for (int s = 1; s <= 7; s++) {
        float th[3] = {(float)s, (float)s, (float)s};
        updated[s] = st_ema_step(&e, th, s);
        if (s == 3) assert_true(e.ema[0][0] == 1.5f);
        if (s == 4) assert_true(e.ema[0][1] == 1.5f);
        if (s == 5) assert_true(e.ema[0][2] == 3.25f);
    }
    const int want[8] = {0, 0, 0, 1, 0, 1, 0, 1};
    for (int s = 1; s <= 7; s++) assert_int_equal(updated[s], want[s]);
    assert_int_equal(e.n_updates, 3);
    for (int i = 0; i < 3; i++) assert_true(e.ema[0][i] == 5.125f);
    st_ema_free(&e);
}

static void test_bad_args(void **state) {
    (void)state;
    st_ema e;
    assert_int_equal(st_ema_init(&e, k_theta0, 4, (float[]){1.5f}, 1, 1, 1), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "ema_decay"));
    assert_int_equal(st_ema_init(&e, k_theta0, 4, (float[]){0.5f}, 1, 0, 1), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "ema_start"));
    assert_int_equal(st_ema_init(&e, k_theta0, 4, (float[]){0.5f}, 1, 1, 0), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "ema_every"));
    assert_int_equal(st_ema_init(&e, k_theta0, 4, (float[]){NAN}, 1, 1, 1), ST_ERR_ARG);
}

static void test_l2_distance(void **state) {
    (void)state;
    const float a[2] = {3.0f, 4.0f}, b[2] = {0.0f, 0.0f};
    assert_true(st_l2_distance(a, b, 2) == 5.0);
    /* double accumulation: 1e6 elements of 1e-3 -> sqrt(1e6 * 1e-6) = 1 */
    enum { N = 1000000 };
    static float x[N], y[N];
    for (int i = 0; i < N; i++) {
        x[i] = 1.0f;
        y[i] = 1.0f + 0.0009765625f; /* 2^-10, exact */
    }
    assert_true(fabs(st_l2_distance(x, y, N) - 0.0009765625 * 1000.0) < 1e-12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decay0_is_live_weights), cmocka_unit_test(test_decay1_keeps_theta0),
        cmocka_unit_test(test_hand_computed_steps),     cmocka_unit_test(test_start_and_every),
        cmocka_unit_test(test_bad_args),                cmocka_unit_test(test_l2_distance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
