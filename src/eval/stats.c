/* stats.c - Wilson score intervals and per-category rates (see stats.h). */
#include "safetune/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

st_rate st_wilson(size_t k, size_t n, double z) {
    st_rate r = {k > n ? n : k, n, 0.0, 0.0, 1.0};
    if (n == 0) return r;
    double nn = (double)n, p = (double)r.k / nn, z2 = z * z;
    double denom = 1.0 + z2 / nn;
    double centre = (p + z2 / (2.0 * nn)) / denom;
    double half = z / denom * sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn));
    r.rate = p;
    r.lo = centre - half;
    r.hi = centre + half;
    /* Exact endpoints at the edges (the formula gives them up to rounding). */
    if (r.k == 0) r.lo = 0.0;
    if (r.k == n) r.hi = 1.0;
    if (r.lo < 0.0) r.lo = 0.0;
    if (r.hi > 1.0) r.hi = 1.0;
    return r;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

st_status st_rate_breakdown_compute(const int *flags, const char *const *categories,
                                    const int *include, size_t n, st_rate_breakdown *out) {
    memset(out, 0, sizeof *out);
    size_t k = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        if (include && !include[i]) continue;
        m++;
        k += flags[i] != 0;
    }
    out->all = st_wilson(k, m, ST_Z95);
    if (!categories) return ST_OK;
    /* Distinct category names, sorted. */
    const char **names = st_calloc(n ? n : 1, sizeof *names);
    if (!names) return ST_ERR_NOMEM;
    size_t nn = 0;
    for (size_t i = 0; i < n; i++)
        if ((!include || include[i]) && categories[i]) names[nn++] = categories[i];
    qsort(names, nn, sizeof *names, cmp_str);
    size_t nu = 0;
    for (size_t i = 0; i < nn; i++)
        if (nu == 0 || strcmp(names[nu - 1], names[i])) names[nu++] = names[i];
    out->categories = st_calloc(nu ? nu : 1, sizeof *out->categories);
    if (!out->categories) {
        free(names);
        return ST_ERR_NOMEM;
    }
    for (size_t c = 0; c < nu; c++) {
        size_t ck = 0, cn = 0;
        for (size_t i = 0; i < n; i++) {
            if ((include && !include[i]) || !categories[i] || strcmp(categories[i], names[c])) continue;
            cn++;
            ck += flags[i] != 0;
        }
        out->categories[c].name = st_strdup(names[c]);
        if (!out->categories[c].name) {
            free(names);
            st_rate_breakdown_free(out);
            return ST_ERR_NOMEM;
        }
        out->categories[c].rate = st_wilson(ck, cn, ST_Z95);
        out->n_categories = c + 1;
    }
    free(names);
    return ST_OK;
}

void st_rate_breakdown_free(st_rate_breakdown *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n_categories; i++) free(b->categories[i].name);
    free(b->categories);
    memset(b, 0, sizeof *b);
}

/* ---- McNemar, Student t, bootstrap (see stats.h) ---- */

/* log C(n, j) - n log 2 */
static double log_binom_half(size_t n, size_t j) {
    return lgamma((double)n + 1.0) - lgamma((double)j + 1.0) - lgamma((double)(n - j) + 1.0) - (double)n * log(2.0);
}

double st_mcnemar_exact(size_t b, size_t c, int mid_p) {
    size_t n = b + c, m = b < c ? b : c;
    if (n == 0) return 1.0;
    /* P(X <= m) for X ~ Bin(n, 1/2): the largest term is j = m (m <= n/2); walk down with
     * term(j-1) / term(j) = j / (n - j + 1), summing ratios relative to term(m). */
    double rel = 1.0, sum = 1.0;
    for (size_t j = m; j > 0; j--) {
        rel *= (double)j / (double)(n - j + 1);
        sum += rel;
        if (rel < 1e-300) break;
    }
    double pm = exp(log_binom_half(n, m));
    double cdf = pm * sum;
    double p = 2.0 * (mid_p ? cdf - 0.5 * pm : cdf);
    return p > 1.0 ? 1.0 : p;
}

/* Continued fraction of the incomplete beta function (modified Lentz). */
static double betacf(double a, double b, double x) {
    const double tiny = 1e-300;
    double qab = a + b, qap = a + 1.0, qam = a - 1.0;
    double c = 1.0, d = 1.0 - qab * x / qap;
    if (fabs(d) < tiny) d = tiny;
    d = 1.0 / d;
    double h = d;
    for (int m = 1; m <= 1000; m++) {
        double m2 = 2.0 * m;
        double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1.0 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1.0 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-16) break;
    }
    return h;
}

/* Regularised incomplete beta I_x(a, b). */
static double betai(double a, double b, double x) {
    if (x <= 0.0) return 0.0;
    if (x >= 1.0) return 1.0;
    double lbt = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    if (x < (a + 1.0) / (a + b + 2.0)) return exp(lbt) * betacf(a, b, x) / a;
    return 1.0 - exp(lbt) * betacf(b, a, 1.0 - x) / b;
}

/* Upper tail P(T > t) for t >= 0. */
static double t_upper(double t, double df) { return 0.5 * betai(0.5 * df, 0.5, df / (df + t * t)); }

double st_t_quantile(double p, double df) {
    if (!(p > 0.0 && p < 1.0) || !(df > 0.0) || isinf(df)) return NAN;
    if (p == 0.5) return 0.0;
    if (p < 0.5) return -st_t_quantile(1.0 - p, df);
    double q = 1.0 - p, lo = 0.0, hi = 1.0;
    while (t_upper(hi, df) > q) {
        lo = hi;
        hi *= 2.0;
        if (hi > 1e300) return INFINITY;
    }
    for (int it = 0; it < 400; it++) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        if (t_upper(mid, df) > q) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

st_mean_ci st_mean_t95(const double *x, size_t n) {
    st_mean_ci r = {0, NAN, NAN, NAN, NAN};
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i])) {
            sum += x[i];
            r.n++;
        }
    if (r.n == 0) return r;
    r.mean = sum / (double)r.n;
    if (r.n < 2) return r;
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i])) ss += (x[i] - r.mean) * (x[i] - r.mean);
    r.sd = sqrt(ss / (double)(r.n - 1));
    double half = st_t_quantile(0.975, (double)(r.n - 1)) * r.sd / sqrt((double)r.n);
    r.lo = r.mean - half;
    r.hi = r.mean + half;
    return r;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Percentile of sorted v[0..n) with linear interpolation between order statistics. */
static double percentile(const double *v, size_t n, double q) {
    double h = (double)(n - 1) * q;
    size_t i = (size_t)floor(h);
    if (i + 1 >= n) return v[n - 1];
    return v[i] + (h - (double)i) * (v[i + 1] - v[i]);
}

st_status st_bootstrap_diff(const unsigned char *a, size_t na, const unsigned char *b, size_t nb, size_t np,
                            size_t n_boot, uint64_t seed, st_boot_ci *out) {
    memset(out, 0, sizeof *out);
    out->diff = out->lo = out->hi = NAN;
    if (!na || !nb || !np || !n_boot)
        return st_error(ST_ERR_ARG, "bootstrap: %zu units of A, %zu of B, %zu prompts, %zu replicates: each must be > 0",
                        na, nb, np, n_boot);
    size_t sa = 0, sb = 0;
    for (size_t i = 0; i < na * np; i++) sa += a[i] != 0;
    for (size_t i = 0; i < nb * np; i++) sb += b[i] != 0;
    out->diff = (double)sa / (double)(na * np) - (double)sb / (double)(nb * np);
    out->n_boot = n_boot;
    out->paired_units = na == nb;
    size_t *ua = malloc(na * sizeof *ua), *ub = malloc(nb * sizeof *ub), *w = calloc(np, sizeof *w);
    double *d = malloc(n_boot * sizeof *d);
    if (!ua || !ub || !w || !d) {
        free(ua), free(ub), free(w), free(d);
        return st_error(ST_ERR_NOMEM, "bootstrap: out of memory");
    }
    st_rng rng;
    st_rng_seed(&rng, seed);
    for (size_t r = 0; r < n_boot; r++) {
        for (size_t i = 0; i < na; i++) ua[i] = (size_t)(st_rng_u64(&rng) % na);
        if (na == nb) memcpy(ub, ua, na * sizeof *ua);
        else
            for (size_t i = 0; i < nb; i++) ub[i] = (size_t)(st_rng_u64(&rng) % nb);
        memset(w, 0, np * sizeof *w);
        for (size_t j = 0; j < np; j++) w[st_rng_u64(&rng) % np]++;
        size_t ka = 0, kb = 0;
        for (size_t i = 0; i < na; i++)
            for (size_t j = 0; j < np; j++) ka += a[ua[i] * np + j] ? w[j] : 0;
        for (size_t i = 0; i < nb; i++)
            for (size_t j = 0; j < np; j++) kb += b[ub[i] * np + j] ? w[j] : 0;
        d[r] = (double)ka / (double)(na * np) - (double)kb / (double)(nb * np);
    }
    qsort(d, n_boot, sizeof *d, cmp_dbl);
    out->lo = percentile(d, n_boot, 0.025);
    out->hi = percentile(d, n_boot, 0.975);
    free(ua), free(ub), free(w), free(d);
    return ST_OK;
}
