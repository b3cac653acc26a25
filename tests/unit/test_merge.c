/* test_merge.c - post-hoc merges (merge.h, DEFENSES.md §1): linear λ = 0 / 1 are exact copies,
 * SLERP of orthogonal unit vectors, the |c| > 0.9995 fallback, DARE with p = 0, DARE's mask
 * independent of threads and tensor order, its kept fraction inside a 99.9% binomial interval,
 * spec parsing with errors naming the key, and λ_eff of an EMA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/base.h"
#include "safetune/merge.h"

/* A layout of n_t tensors of the given sizes, packed. */
static st_layout make_layout(const size_t *sizes, size_t n_t) {
    st_layout l = {0};
    l.params = calloc(n_t, sizeof *l.params);
    l.n_tensors = n_t;
    for (size_t t = 0; t < n_t; t++) {
        snprintf(l.params[t].name, sizeof l.params[t].name, "t%zu", t);
        l.params[t].offset = l.n_floats;
        l.params[t].numel = sizes[t];
        l.params[t].n_dims = 1;
        l.params[t].shape[0] = (int64_t)sizes[t];
        l.n_floats += sizes[t];
    }
    return l;
}

static float *randn(size_t n, uint64_t seed, double scale) {
    float *x = malloc(n * sizeof *x);
    st_rng r;
    st_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * st_rng_normal(&r));
    return x;
}

static st_merge_spec spec(const char *text) {
    st_merge_spec s;
    assert_int_equal(st_merge_spec_parse(text, &s), ST_OK);
    return s;
}

static void test_linear_endpoints_exact(void **state) {
    (void)state;
    const size_t sz[] = {1000, 7, 70001};
    st_layout l = make_layout(sz, 3);
    float *a = randn(l.n_floats, 1, 1.0), *b = randn(l.n_floats, 2, 1.0), *o = malloc(l.n_floats * 4);
    a[3] = -0.0f, b[3] = 0.0f, a[4] = 0.0f, b[4] = -0.0f; /* signed zeros survive only a true copy */
    st_merge_stats stt;
    assert_int_equal(st_merge_apply((st_merge_spec[]){spec("linear:0")}, &l, a, b, o, &stt), ST_OK);
    assert_memory_equal(o, a, l.n_floats * 4);
    assert_true(stt.theta_dist == 0.0 && stt.lambda_proj == 0.0);
    assert_int_equal(st_merge_apply((st_merge_spec[]){spec("linear:1")}, &l, a, b, o, &stt), ST_OK);
    assert_memory_equal(o, b, l.n_floats * 4);
    assert_true(fabs(stt.lambda_proj - 1.0) < 1e-12);
    /* interior: (1-λ)θ0 + λθ_ft rounded once; ‖θ_λ−θ0‖ = λ‖θ_ft−θ0‖ and λ_proj = λ (§9) */
    assert_int_equal(st_merge_apply((st_merge_spec[]){spec("linear:0.25")}, &l, a, b, o, &stt), ST_OK);
    double dft = 0;
    for (size_t i = 0; i < l.n_floats; i++) {
        assert_true(o[i] == (float)(0.75 * a[i] + 0.25 * b[i]));
        dft += ((double)b[i] - a[i]) * ((double)b[i] - a[i]);
    }
    assert_true(fabs(stt.theta_dist - 0.25 * sqrt(dft)) < 1e-6 * sqrt(dft));
    assert_true(fabs(stt.lambda_proj - 0.25) < 1e-6);
    assert_int_equal(stt.n_tensors, 3);
    assert_int_equal(stt.n_params, l.n_floats);
    free(a), free(b), free(o);
    st_layout_free(&l);
}

static void test_slerp_orthogonal(void **state) {
    (void)state;
    const size_t sz[] = {2, 3};
    st_layout l = make_layout(sz, 2);
    /* tensor 0: e1, e2; tensor 1: scaled orthogonal pair (norms 2 and 3) */
    float a[5] = {1, 0, 2, 0, 0}, b[5] = {0, 1, 0, 3, 0}, o[5];
    st_merge_stats stt;
    assert_int_equal(st_merge_apply((st_merge_spec[]){spec("slerp:0.5")}, &l, a, b, o, &stt), ST_OK);
    const double r2 = 1.0 / sqrt(2.0);
    assert_true(fabs(o[0] - r2) < 1e-7 && fabs(o[1] - r2) < 1e-7);
    /* Ω = π/2: θ = sin(π/4)·θ0 + sin(π/4)·θ_ft (unnormalised inputs keep their scale) */
    assert_true(fabs(o[2] - 2 * r2) < 1e-6 && fabs(o[3] - 3 * r2) < 1e-6 && o[4] == 0.0f);
    assert_int_equal(stt.n_fallback, 0);
    /* t = 0.3 on the unit pair: (cos(0.3·π/2), sin(0.3·π/2)) */
    assert_int_equal(st_merge_apply((st_merge_spec[]){spec("slerp:0.3")}, &l, a, b, o, NULL), ST_OK);
    assert_true(fabs(o[0] - cos(0.15 * M_PI)) < 1e-7 && fabs(o[1] - sin(0.15 * M_PI)) < 1e-7);
    st_layout_free(&l);
}

static void test_slerp_fallback_is_linear(void **state) {
    (void)state;
    const size_t sz[] = {5000, 5000};
    st_layout l = make_layout(sz, 2);
    float *a = randn(l.n_floats, 3, 1.0), *b = randn(l.n_floats, 4, 1.0), *o = malloc(l.n_floats * 4),
          *ol = malloc(l.n_floats * 4);
    for (size_t i = 0; i < 5000; i++) b[i] = a[i] + 0.001f * b[i]; /* tensor 0 nearly parallel: c > 0.9995 */
    st_merge_stats stt;
    assert_int_equal(st_merge_apply((st_merge_spec[]){spec("slerp:0.7")}, &l, a, b, o, &stt), ST_OK);
    assert_int_equal(stt.n_fallback, 1);
    assert_int_equal(st_merge_apply((st_merge_spec[]){spec("linear:0.7")}, &l, a, b, ol, NULL), ST_OK);
    assert_memory_equal(o, ol, 5000 * 4);            /* fallback tensor: linear(t), bit for bit */
    assert_memory_not_equal(o + 5000, ol + 5000, 5000 * 4); /* random pair: a real slerp */
    free(a), free(b), free(o), free(ol);
    st_layout_free(&l);
}

static void test_dare_p0_is_task_arithmetic(void **state) {
    (void)state;
    const size_t sz[] = {3000, 1234};
    st_layout l = make_layout(sz, 2);
    float *a = randn(l.n_floats, 5, 1.0), *b = randn(l.n_floats, 6, 1.0), *o = malloc(l.n_floats * 4);
    st_merge_stats stt;
    assert_int_equal(st_merge_apply((st_merge_spec[]){spec("dare:0.7:0")}, &l, a, b, o, &stt), ST_OK);
    for (size_t i = 0; i < l.n_floats; i++)
        assert_true(o[i] == (float)((double)a[i] + 0.7 * ((double)b[i] - (double)a[i])));
    assert_int_equal(stt.n_kept, l.n_floats);
    free(a), free(b), free(o);
    st_layout_free(&l);
}

static void test_dare_threads_and_tensor_order(void **state) {
    (void)state;
    const size_t n = 300000;
    const size_t sz1[] = {n}, sz3[] = {100, 200000, n - 200100};
    st_layout l1 = make_layout(sz1, 1), l3 = make_layout(sz3, 3);
    float *a = randn(n, 7, 1.0), *b = randn(n, 8, 1.0), *o1 = malloc(n * 4), *o4 = malloc(n * 4),
          *o3 = malloc(n * 4);
    const st_merge_spec s = spec("dare:0.7:0.9:1234");
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(st_merge_apply(&s, &l1, a, b, o1, NULL), ST_OK);
    omp_set_num_threads(4);
    assert_int_equal(st_merge_apply(&s, &l1, a, b, o4, NULL), ST_OK);
    assert_int_equal(st_merge_apply(&s, &l3, a, b, o3, NULL), ST_OK);
    omp_set_num_threads(saved);
    assert_memory_equal(o1, o4, n * 4);
    assert_memory_equal(o1, o3, n * 4);
    /* each coordinate is θ0 (dropped) or θ0 + (λ/(1-p))·δ (kept), as the mask says */
    for (size_t i = 0; i < n; i++) {
        const int keep = st_merge_dare_uniform(1234, i) >= 0.9;
        const float want = keep ? (float)((double)a[i] + (0.7 / (1.0 - 0.9)) * ((double)b[i] - (double)a[i])) : a[i];
        assert_true(o1[i] == want);
    }
    /* another seed, another mask */
    const st_merge_spec s2 = spec("dare:0.7:0.9:1235");
    assert_int_equal(st_merge_apply(&s2, &l1, a, b, o4, NULL), ST_OK);
    assert_memory_not_equal(o1, o4, n * 4);
    free(a), free(b), free(o1), free(o4), free(o3);
    st_layout_free(&l1);
    st_layout_free(&l3);
}

static void test_dare_kept_fraction(void **state) {
    (void)state;
    const size_t n = 1000000;
    const size_t sz[] = {n};
    st_layout l = make_layout(sz, 1);
    float *a = randn(n, 9, 1.0), *b = randn(n, 10, 1.0), *o = malloc(n * 4);
    const char *specs[] = {"dare:0.7:0.9:1", "dare:0.7:0.5:2", "dare:1:0.99:3"};
    const double ps[] = {0.9, 0.5, 0.99};
    for (int k = 0; k < 3; k++) {
        st_merge_stats stt;
        assert_int_equal(st_merge_apply((st_merge_spec[]){spec(specs[k])}, &l, a, b, o, &stt), ST_OK);
        /* 99.9% two-sided normal interval of Binomial(n, 1-p): mean ± 3.2905 sd */
        const double mean = n * (1 - ps[k]), sd = sqrt(n * ps[k] * (1 - ps[k]));
        print_message("%s: kept %zu of %zu (expected %.0f ± %.0f)\n", specs[k], stt.n_kept, n, mean, 3.2905 * sd);
        assert_true(fabs((double)stt.n_kept - mean) <= 3.2905 * sd);
    }
    free(a), free(b), free(o);
    st_layout_free(&l);
}

static void expect_bad(const char *text, const char *words) {
    st_merge_spec s;
    assert_int_equal(st_merge_spec_parse(text, &s), ST_ERR_ARG);
    if (!strstr(st_last_error(), words)) fail_msg("'%s': message '%s' lacks '%s'", text, st_last_error(), words);
}

static void test_spec_parse_and_name(void **state) {
    (void)state;
    char buf[64];
    st_merge_spec s = spec("linear:0.6");
    assert_int_equal(s.method, ST_MERGE_LINEAR);
    assert_true(s.weight == 0.6);
    assert_string_equal(st_merge_spec_name(&s, buf, sizeof buf), "linear-0.6");
    s = spec("slerp:0.7");
    assert_string_equal(st_merge_spec_name(&s, buf, sizeof buf), "slerp-0.7");
    s = spec("dare:0.7:0.9");
    assert_true(s.p == 0.9 && !s.has_seed);
    assert_string_equal(st_merge_spec_name(&s, buf, sizeof buf), "dare-0.7-0.9");
    s = spec("dare:0.7:0.9:42");
    assert_true(s.has_seed && s.seed == 42);
    assert_string_equal(st_merge_spec_name(&s, buf, sizeof buf), "dare-0.7-0.9-s42");
    expect_bad("linear:1.5", "lambda 1.5 is outside [0, 1]");
    expect_bad("linear:-0.1", "lambda");
    expect_bad("slerp:2", "t 2 is outside [0, 1]");
    expect_bad("dare:0.7:1", "p 1 is outside [0, 1)");
    expect_bad("dare:1.2:0.5", "lambda 1.2");
    expect_bad("dare:0.7", "dare takes lambda and the drop rate p");
    expect_bad("linear", "linear takes one number");
    expect_bad("linear:0.5:3", "linear takes one number");
    expect_bad("linear:abc", "lambda 'abc' is not a number");
    expect_bad("linear:nan", "is not a number");
    expect_bad("dare:0.5:0.5:-3", "seed '-3'");
    expect_bad("ties:0.5", "unknown method 'ties'");
    /* st_merge_apply checks a hand-built spec too */
    const size_t sz[] = {1};
    st_layout l = make_layout(sz, 1);
    float a = 1, b = 2, o;
    st_merge_spec bad = {ST_MERGE_LINEAR, 1.5, 0, 0, 0};
    assert_int_equal(st_merge_apply(&bad, &l, &a, &b, &o, NULL), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "lambda 1.5"));
    st_layout_free(&l);
}

static void test_ema_lambda_eff(void **state) {
    (void)state;
    /* the closed form against the sum it stands for: Σ_k (1−β)β^(T−k)·k/T (+ β^T·0) */
    const double betas[] = {0.9, 0.99, 0.995, 0.999, 0.5};
    const int64_t Ts[] = {8, 100, 300, 1000, 1};
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            double sum = 0;
            for (int64_t k = 1; k <= Ts[j]; k++) sum += (1 - betas[i]) * pow(betas[i], (double)(Ts[j] - k)) * k / Ts[j];
            assert_true(fabs(st_merge_ema_lambda_eff(betas[i], Ts[j]) - sum) < 1e-12);
        }
    assert_true(fabs(st_merge_ema_lambda_eff(0.9, 8) - 0.36) < 0.005); /* DEFENSES.md §9: quick preset */
    assert_true(fabs(st_merge_ema_lambda_eff(0.99, 100) - 0.37) < 0.005);
    assert_true(st_merge_ema_lambda_eff(0.0, 10) == 1.0 && st_merge_ema_lambda_eff(0.9, 0) == 0.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_endpoints_exact),   cmocka_unit_test(test_slerp_orthogonal),
        cmocka_unit_test(test_slerp_fallback_is_linear), cmocka_unit_test(test_dare_p0_is_task_arithmetic),
        cmocka_unit_test(test_dare_threads_and_tensor_order), cmocka_unit_test(test_dare_kept_fraction),
        cmocka_unit_test(test_spec_parse_and_name),      cmocka_unit_test(test_ema_lambda_eff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
