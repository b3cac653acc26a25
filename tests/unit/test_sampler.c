/* test_sampler.c - greedy/temperature/top-k/top-p on hand-made logits with exact expected
 * distributions (HF logits-warper semantics), a brute-force nucleus reference on a large random
 * vocabulary, and a chi-square frequency check of seeded sampling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/sampler.h"

static st_sampler *mk(float t, int k, float p, int n) {
    st_sampler_params sp = {t, k, p, 0};
    st_sampler *s = NULL;
    assert_int_equal(st_sampler_new(&sp, n, &s), ST_OK);
    return s;
}

static void test_argmax_ties_and_nan(void **state) {
    (void)state;
    float a[] = {1.0f, 3.0f, 2.0f, 3.0f};
    assert_int_equal(st_argmax(a, 4), 1);
    float b[] = {NAN, -1.0f, NAN, -0.5f};
    assert_int_equal(st_argmax(b, 4), 3);
    float c[] = {-INFINITY, -INFINITY};
    assert_int_equal(st_argmax(c, 2), 0);
    float d[] = {NAN, NAN, NAN};
    assert_int_equal(st_argmax(d, 3), 0);
    float e[] = {NAN, -INFINITY, -INFINITY};
    assert_int_equal(st_argmax(e, 3), 1);
    /* lengths around the vector width, NaNs and ties anywhere: the first index of the largest */
    float v[300];
    st_rng g;
    st_rng_seed(&g, 7);
    for (int n = 1; n <= 300; n += (n < 40 ? 1 : 13))
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < n; i++) {
                const double u = st_rng_double(&g);
                v[i] = u < 0.1 ? NAN : u < 0.2 ? 5.0f : (float)(st_rng_double(&g) * 10.0 - 5.0);
            }
            int want = -1;
            for (int i = 0; i < n; i++)
                if (v[i] == v[i] && (want < 0 || v[i] > v[want])) want = i;
            assert_int_equal(st_argmax(v, n), want < 0 ? 0 : want);
        }
    /* greedy sampler: argmax, rng untouched */
    st_sampler *s = mk(0.0f, 0, 1.0f, 4);
    st_rng r, r0;
    st_rng_seed(&r, 1);
    r0 = r;
    assert_int_equal(st_sampler_sample(s, a, &r), 1);
    assert_memory_equal(&r, &r0, sizeof r);
    st_sampler_free(s);
}

static void expect_probs(st_sampler *s, const float *logits, const double *want, int n) {
    float got[16];
    assert_int_equal(st_sampler_probs(s, logits, got), ST_OK);
    for (int i = 0; i < n; i++) assert_float_equal(got[i], want[i], 1e-6);
}

static void test_temperature(void **state) {
    (void)state;
    float l[] = {0.0f, logf(2.0f)};
    st_sampler *s = mk(0.5f, 0, 1.0f, 2); /* exp(2*l) = [1, 4] */
    expect_probs(s, l, (double[]){0.2, 0.8}, 2);
    st_sampler_free(s);
    s = mk(2.0f, 0, 1.0f, 2); /* exp(l/2) = [1, sqrt 2] */
    double r2 = sqrt(2.0);
    expect_probs(s, l, (double[]){1 / (1 + r2), r2 / (1 + r2)}, 2);
    st_sampler_free(s);
}

static void test_top_k(void **state) {
    (void)state;
    float l[] = {1, 2, 3, 4, 5};
    st_sampler *s = mk(1.0f, 2, 1.0f, 5);
    double e4 = exp(4.0), e5 = exp(5.0);
    expect_probs(s, l, (double[]){0, 0, 0, e4 / (e4 + e5), e5 / (e4 + e5)}, 5);
    st_sampler_free(s);
    /* ties with the k-th value are all kept (HF: remove scores < k-th largest) */
    float t[] = {3, 1, 3, 3};
    s = mk(1.0f, 2, 1.0f, 4);
    expect_probs(s, t, (double[]){1.0 / 3, 0, 1.0 / 3, 1.0 / 3}, 4);
    st_sampler_free(s);
    /* k >= vocab: no-op */
    s = mk(1.0f, 10, 1.0f, 2);
    float u[] = {0, 0};
    expect_probs(s, u, (double[]){0.5, 0.5}, 2);
    st_sampler_free(s);
}

static void test_top_p(void **state) {
    (void)state;
    float l[] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    struct { float p; double want[4]; } cases[] = {
        {0.4f, {0, 1, 0, 0}},                            /* 0.5 >= 0.4 */
        {0.75f, {0, 0.5 / 0.8, 0, 0.3 / 0.8}},           /* 0.5 < .75, 0.8 >= .75 */
        {0.85f, {0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95}},
        {0.99f, {0.15, 0.5, 0.05, 0.3}},
        {1.0f, {0.15, 0.5, 0.05, 0.3}},
        {1e-6f, {0, 1, 0, 0}},                           /* always at least one token */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        st_sampler *s = mk(1.0f, 0, cases[c].p, 4);
        expect_probs(s, l, cases[c].want, 4);
        st_sampler_free(s);
    }
    /* top-k first, then top-p on the renormalised rest: k=3 keeps {.5,.3,.15} -> /.95;
     * p=0.6: .5/.95 = .526 < .6, (.5+.3)/.95 >= .6 -> keep {1,3} */
    st_sampler *s = mk(1.0f, 3, 0.6f, 4);
    expect_probs(s, l, (double[]){0, 0.5 / 0.8, 0, 0.3 / 0.8}, 4);
    st_sampler_free(s);
}

/* Brute-force nucleus: full sort of softmax probabilities. */
static int cmp_desc_pair(const void *a, const void *b) {
    const double *x = a, *y = b;
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : 1;
}

static void test_top_p_large_vocab_vs_bruteforce(void **state) {
    (void)state;
    enum { N = 5000 };
    float *l = malloc(N * sizeof(float));
    double *pairs = malloc(2 * N * sizeof(double));
    float *got = malloc(N * sizeof(float));
    st_rng r;
    st_rng_seed(&r, 123);
    const float ps[] = {0.1f, 0.5f, 0.9f, 0.999f};
    const float temps[] = {0.7f, 1.0f, 3.0f};
    for (int trial = 0; trial < 12; trial++) {
        float t = temps[trial % 3], p = ps[trial % 4];
        for (int i = 0; i < N; i++) l[i] = (float)(st_rng_normal(&r) * (trial % 2 ? 4.0 : 1.0));
        double mx = -1e30, z = 0;
        for (int i = 0; i < N; i++) mx = fmax(mx, l[i] / t);
        for (int i = 0; i < N; i++) {
            pairs[2 * i] = exp((double)(l[i] * (1.0f / t)) - mx);
            pairs[2 * i + 1] = i;
            z += pairs[2 * i];
        }
        qsort(pairs, N, 2 * sizeof(double), cmp_desc_pair);
        double cum = 0;
        int keep = 0;
        while (keep < N && (keep == 0 || cum < p * z)) cum += pairs[2 * keep++];
        st_sampler *s = mk(t, 0, p, N);
        assert_int_equal(st_sampler_probs(s, l, got), ST_OK);
        int kept = 0;
        for (int i = 0; i < N; i++) kept += got[i] > 0;
        assert_int_equal(kept, keep);
        for (int j = 0; j < keep; j++) {
            int i = (int)pairs[2 * j + 1];
            assert_float_equal(got[i], pairs[2 * j] / cum, 1e-6);
        }
        st_sampler_free(s);
    }
    free(l);
    free(pairs);
    free(got);
}

static void test_sampling_frequencies_chi_square(void **state) {
    (void)state;
    float l[] = {0.0f, 1.0f, 2.0f, -1.0f, 0.5f};
    st_sampler *s = mk(1.0f, 0, 1.0f, 5);
    double pr[5], z = 0;
    for (int i = 0; i < 5; i++) z += pr[i] = exp(l[i]);
    for (int i = 0; i < 5; i++) pr[i] /= z;
    st_rng r;
    st_sampler_seed_rng(&r, 2024, 0);
    const int n = 200000;
    long cnt[5] = {0};
    for (int i = 0; i < n; i++) {
        int32_t t = st_sampler_sample(s, l, &r);
        assert_true(t >= 0 && t < 5);
        cnt[t]++;
    }
    double chi2 = 0;
    for (int i = 0; i < 5; i++) chi2 += (cnt[i] - n * pr[i]) * (cnt[i] - n * pr[i]) / (n * pr[i]);
    assert_true(chi2 < 18.47); /* df = 4, p = 0.001 */
    st_sampler_free(s);

    /* top-k = 2 never yields a token outside the top 2, and splits like softmax of {2, 1} */
    s = mk(1.0f, 2, 1.0f, 5);
    long c2[5] = {0};
    for (int i = 0; i < n; i++) c2[st_sampler_sample(s, l, &r)]++;
    assert_int_equal(c2[0] + c2[3] + c2[4], 0);
    double q = exp(2.0) / (exp(2.0) + exp(1.0));
    double chi = pow(c2[2] - n * q, 2) / (n * q) + pow(c2[1] - n * (1 - q), 2) / (n * (1 - q));
    assert_true(chi < 10.83); /* df = 1, p = 0.001 */
    st_sampler_free(s);
}

static void test_seeded_streams(void **state) {
    (void)state;
    float l[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
    st_sampler *s = mk(1.0f, 0, 0.9f, 8);
    st_rng a, b, c;
    st_sampler_seed_rng(&a, 7, 3);
    st_sampler_seed_rng(&b, 7, 3);
    st_sampler_seed_rng(&c, 7, 4);
    int same = 1, differ = 0;
    for (int i = 0; i < 200; i++) {
        int32_t x = st_sampler_sample(s, l, &a), y = st_sampler_sample(s, l, &b), z = st_sampler_sample(s, l, &c);
        same &= x == y;
        differ |= x != z;
    }
    assert_true(same);
    assert_true(differ);
    /* exactly one double drawn per sample */
    st_rng d, e;
    st_rng_seed(&d, 5);
    e = d;
    st_sampler_sample(s, l, &d);
    st_rng_double(&e);
    assert_memory_equal(&d, &e, sizeof d);
    st_sampler_free(s);
}

static void test_param_errors(void **state) {
    (void)state;
    st_sampler *s = NULL;
    st_sampler_params p = st_sampler_defaults();
    p.temperature = -1;
    assert_int_equal(st_sampler_new(&p, 10, &s), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "temperature"));
    p = st_sampler_defaults();
    p.top_p = 0;
    assert_int_equal(st_sampler_params_check(&p), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "top_p"));
    p.top_p = 1.5f;
    assert_int_equal(st_sampler_params_check(&p), ST_ERR_ARG);
    p = st_sampler_defaults();
    p.top_k = -2;
    assert_int_equal(st_sampler_params_check(&p), ST_ERR_ARG);
    p = st_sampler_defaults();
    assert_int_equal(st_sampler_new(&p, 0, &s), ST_ERR_ARG);
    assert_null(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax_ties_and_nan),
        cmocka_unit_test(test_temperature),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_top_p_large_vocab_vs_bruteforce),
        cmocka_unit_test(test_sampling_frequencies_chi_square),
        cmocka_unit_test(test_seeded_streams),
        cmocka_unit_test(test_param_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
