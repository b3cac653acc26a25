/* test_stats.c - Wilson score intervals against an independent reference (the roots of the
 * quadratic (p̂ - p)² = z² p (1 - p) / n, solved in Python at double precision) and
 * hand-computed edge cases; per-category breakdowns on a hand-counted example; exact McNemar on hand
 * binomial sums, t quantiles against closed forms (df 1, 2), the t interval and the bootstrap's
 * reproducibility (tests/parity/stats checks them against a Python reference). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "safetune/stats.h"

static void close_to(double a, double b) {
    if (fabs(a - b) > 1e-12) fail_msg("%.17g != %.17g", a, b);
}

static void test_wilson_reference(void **state) {
    (void)state;
    static const struct { size_t k, n; double lo, hi; } ref[] = {
        {1, 2, 0.09453120463920078, 0.9054687953607992},
        {20, 520, 0.025033757886441573, 0.05865847024480033},
        {37, 100, 0.2818236047080923, 0.4677947049718468},
        {260, 520, 0.4571828096958158, 0.5428171903041842},
        {3, 450, 0.002269805682263188, 0.019414989059836543},
        {199, 200, 0.9722262953035806, 0.999116831294146},
        {1, 1, 0.20654931179180278, 1.0},
    };
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        st_rate r = st_wilson(ref[i].k, ref[i].n, ST_Z95);
        assert_int_equal(r.k, ref[i].k);
        assert_int_equal(r.n, ref[i].n);
        close_to(r.rate, (double)ref[i].k / (double)ref[i].n);
        close_to(r.lo, ref[i].lo);
        close_to(r.hi, ref[i].hi);
    }
}

static void test_wilson_edges(void **state) {
    (void)state;
    const double z2 = ST_Z95 * ST_Z95;
    /* 0/n: lo = 0 exactly, hi = z²/(n + z²) (hand-derived) */
    for (size_t n = 1; n <= 1000; n *= 10) {
        st_rate r = st_wilson(0, n, ST_Z95);
        assert_true(r.lo == 0.0);
        close_to(r.hi, z2 / ((double)n + z2));
        assert_true(r.rate == 0.0);
        /* n/n: hi = 1 exactly, lo = n/(n + z²) */
        r = st_wilson(n, n, ST_Z95);
        assert_true(r.hi == 1.0);
        close_to(r.lo, (double)n / ((double)n + z2));
        assert_true(r.rate == 1.0);
    }
    close_to(st_wilson(0, 10, ST_Z95).hi, 0.2775328030260577);
    close_to(st_wilson(10, 10, ST_Z95).lo, 0.7224671969739425);
    st_rate e = st_wilson(0, 0, ST_Z95);
    assert_true(e.rate == 0.0 && e.lo == 0.0 && e.hi == 1.0);
    /* symmetry k <-> n-k */
    st_rate a = st_wilson(7, 31, ST_Z95), b = st_wilson(24, 31, ST_Z95);
    close_to(a.lo, 1.0 - b.hi);
    close_to(a.hi, 1.0 - b.lo);
    /* z = 0 degenerates to the point estimate */
    st_rate p = st_wilson(3, 12, 0.0);
    close_to(p.lo, 0.25);
    close_to(p.hi, 0.25);
}

static void test_breakdown(void **state) {
    (void)state;
    const int flags[] = {1, 0, 1, 1, 0, 0, 1};
    const char *cats[] = {"b", "a", "b", NULL, "a", "c", "a"};
    const int incl[] = {1, 1, 1, 1, 1, 0, 1};
    st_rate_breakdown b;
    assert_int_equal(st_rate_breakdown_compute(flags, cats, NULL, 7, &b), ST_OK);
    assert_int_equal(b.all.k, 4);
    assert_int_equal(b.all.n, 7);
    assert_int_equal(b.n_categories, 3);
    assert_string_equal(b.categories[0].name, "a");
    assert_int_equal(b.categories[0].rate.k, 1);
    assert_int_equal(b.categories[0].rate.n, 3);
    assert_string_equal(b.categories[1].name, "b");
    assert_int_equal(b.categories[1].rate.k, 2);
    assert_int_equal(b.categories[1].rate.n, 2);
    assert_string_equal(b.categories[2].name, "c");
    assert_int_equal(b.categories[2].rate.n, 1);
    close_to(b.categories[0].rate.lo, st_wilson(1, 3, ST_Z95).lo);
    st_rate_breakdown_free(&b);
    assert_int_equal(st_rate_breakdown_compute(flags, cats, incl, 7, &b), ST_OK);
    assert_int_equal(b.all.n, 6);
    assert_int_equal(b.n_categories, 2); /* "c" excluded */
    st_rate_breakdown_free(&b);
    assert_int_equal(st_rate_breakdown_compute(flags, NULL, NULL, 7, &b), ST_OK);
    assert_int_equal(b.n_categories, 0);
    st_rate_breakdown_free(&b);
    assert_int_equal(st_rate_breakdown_compute(flags, cats, NULL, 0, &b), ST_OK);
    assert_int_equal(b.all.n, 0);
    st_rate_breakdown_free(&b);
}

/* McNemar: hand sums of Bin(n, 1/2) tails. */
static void test_mcnemar(void **state) {
    (void)state;
    close_to(st_mcnemar_exact(0, 0, 0), 1.0);
    close_to(st_mcnemar_exact(0, 5, 0), 2.0 / 32.0);            /* 2 P(X <= 0), n = 5 */
    close_to(st_mcnemar_exact(5, 0, 0), 2.0 / 32.0);            /* symmetric */
    close_to(st_mcnemar_exact(0, 5, 1), 1.0 / 32.0);            /* mid-p: 2 (1/32 - 1/64) */
    close_to(st_mcnemar_exact(1, 5, 0), 2.0 * 7.0 / 64.0);      /* (1 + 6) / 64 */
    close_to(st_mcnemar_exact(2, 2, 0), 1.0);                   /* capped */
    close_to(st_mcnemar_exact(0, 6, 0), 2.0 / 64.0);            /* the smallest n with p < 0.05 */
    assert_true(st_mcnemar_exact(0, 5, 0) > 0.05);
}

/* t quantiles: closed forms for df = 1 (Cauchy) and df = 2, and symmetry. */
static void test_t_quantile(void **state) {
    (void)state;
    for (double p = 0.55; p < 0.999; p += 0.05) {
        double t1 = st_t_quantile(p, 1), t2 = st_t_quantile(p, 2);
        if (fabs(t1 - tan(M_PI * (p - 0.5))) > 1e-10 * fabs(t1)) fail_msg("df 1, p %g: %.17g", p, t1);
        double c2 = (2 * p - 1) * sqrt(2.0 / (4 * p * (1 - p)));
        if (fabs(t2 - c2) > 1e-10 * fabs(c2)) fail_msg("df 2, p %g: %.17g vs %.17g", p, t2, c2);
        close_to(st_t_quantile(1 - p, 5), -st_t_quantile(p, 5));
    }
    assert_true(st_t_quantile(0.5, 3) == 0.0);
    assert_true(isnan(st_t_quantile(0.0, 3)) && isnan(st_t_quantile(1.0, 3)) && isnan(st_t_quantile(0.9, 0)));
    /* large df tends to the normal quantile */
    assert_true(fabs(st_t_quantile(0.975, 1e6) - ST_Z95) < 1e-5);
}

static void test_mean_t95(void **state) {
    (void)state;
    const double x[] = {0.1, NAN, 0.5, 0.9};
    st_mean_ci m = st_mean_t95(x, 4);
    assert_int_equal(m.n, 3);
    close_to(m.mean, 0.5);
    close_to(m.sd, 0.4);
    double half = st_t_quantile(0.975, 2) * 0.4 / sqrt(3.0);
    close_to(m.lo, 0.5 - half);
    close_to(m.hi, 0.5 + half);
    m = st_mean_t95(x, 1); /* one value: a mean, no interval */
    assert_int_equal(m.n, 1);
    close_to(m.mean, 0.1);
    assert_true(isnan(m.lo) && isnan(m.hi) && isnan(m.sd));
    m = st_mean_t95(x + 1, 1);
    assert_true(m.n == 0 && isnan(m.mean));
}

static void test_bootstrap(void **state) {
    (void)state;
    unsigned char a[3 * 10], b[3 * 10];
    for (int i = 0; i < 30; i++) {
        a[i] = (unsigned char)(i % 3 == 0);
        b[i] = (unsigned char)(i % 5 == 0);
    }
    st_boot_ci x, y;
    assert_int_equal(st_bootstrap_diff(a, 3, b, 3, 10, 400, 7, &x), ST_OK);
    assert_int_equal(st_bootstrap_diff(a, 3, b, 3, 10, 400, 7, &y), ST_OK);
    assert_true(x.diff == y.diff && x.lo == y.lo && x.hi == y.hi); /* same seed, same interval */
    close_to(x.diff, 10.0 / 30.0 - 6.0 / 30.0);
    assert_true(x.lo <= x.diff && x.diff <= x.hi && x.paired_units);
    /* identical outcomes: every replicate differs by 0 */
    assert_int_equal(st_bootstrap_diff(a, 3, a, 3, 10, 100, 1, &y), ST_OK);
    assert_true(y.diff == 0.0 && y.lo == 0.0 && y.hi == 0.0);
    assert_int_equal(st_bootstrap_diff(a, 3, b, 2, 10, 100, 1, &y), ST_OK);
    assert_false(y.paired_units);
    assert_int_equal(st_bootstrap_diff(a, 0, b, 3, 10, 100, 1, &y), ST_ERR_ARG);
    assert_int_equal(st_bootstrap_diff(a, 3, b, 3, 0, 100, 1, &y), ST_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wilson_reference),
        cmocka_unit_test(test_wilson_edges),
        cmocka_unit_test(test_breakdown),
        cmocka_unit_test(test_mcnemar),
        cmocka_unit_test(test_t_quantile),
        cmocka_unit_test(test_mean_t95),
        cmocka_unit_test(test_bootstrap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
