/* stats.h - rates with 95% Wilson score intervals (Wilson 1927; Agresti & Coull 1998) and
 * per-category breakdowns, for ASR, refusal rates and judge harmfulness rates. */
#ifndef SAFETUNE_STATS_H
#define SAFETUNE_STATS_H

#include "safetune/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ST_Z95 1.959964 /* two-sided 95% normal quantile */

typedef struct {
    size_t k, n;   /* successes, trials */
    double rate;   /* k / n (0 when n = 0) */
    double lo, hi; /* Wilson score interval, clamped to [0, 1]; [0, 1] when n = 0 */
} st_rate;

/* Wilson score interval for k successes in n trials at normal quantile z:
 * centre = (p + z²/2n) / (1 + z²/n), half = z/(1 + z²/n) * sqrt(p(1-p)/n + z²/4n²).
 * k > n is clamped to n. n = 0 gives rate 0 and the uninformative interval [0, 1]. */
st_rate st_wilson(size_t k, size_t n, double z);

typedef struct {
    char *name; /* category name (owned) */
    st_rate rate;
} st_category_rate;

typedef struct {
    st_rate all;
    size_t n_categories;
    st_category_rate *categories; /* sorted by name (bytewise), only items with a category */
} st_rate_breakdown;

/* Rate of flags[i] != 0 over items i (optionally only where include[i] != 0), overall and per
 * category (categories[i] may be NULL = uncategorised; categories may be NULL). 95% Wilson. */
st_status st_rate_breakdown_compute(const int *flags, const char *const *categories,
                                    const int *include, size_t n, st_rate_breakdown *out);
void st_rate_breakdown_free(st_rate_breakdown *b);

/* ---- paired comparisons and intervals across seeds (the study's statistics) ---- */

/* Exact two-sided McNemar test on the discordant pairs of a paired binary comparison (McNemar
 * 1947; exact form: binomial test of b against Bin(b + c, 1/2), Fay 2010 "exact2x2"):
 * b = pairs with outcome 1 under A and 0 under B, c = the reverse. p = min(1, 2 P(X <= min(b, c)));
 * mid_p = 1 gives the mid-p version min(1, 2 [P(X <= min) - P(X = min) / 2]) (Lancaster 1961).
 * b + c = 0 gives p = 1. Binomial terms in log space (lgamma), relative error ~1e-12. */
double st_mcnemar_exact(size_t b, size_t c, int mid_p);

/* Quantile of Student's t distribution with df > 0 degrees of freedom at probability p in (0, 1),
 * by bisection on the CDF F(t) = 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 (t >= 0), with the regularised
 * incomplete beta I from its continued fraction (modified Lentz; Press et al., Numerical Recipes
 * 3rd ed. 6.4). NaN for p or df out of range. Accuracy ~1e-12 relative. */
double st_t_quantile(double p, double df);

typedef struct {
    size_t n;             /* values */
    double mean, sd;      /* sample mean and standard deviation (n - 1 denominator; NaN for n < 2) */
    double lo, hi;        /* mean -+ t_{0.975, n-1} sd / sqrt(n); NaN for n < 2 (no interval from one value) */
} st_mean_ci;

/* Mean of x[0..n) with its two-sided 95% Student t interval (e.g. ASR of one grid cell across
 * seeds). NaN values are skipped (not counted in n). n = 0: everything NaN. */
st_mean_ci st_mean_t95(const double *x, size_t n);

typedef struct {
    double diff;          /* mean(A) - mean(B) on the data as given */
    double lo, hi;        /* 2.5% and 97.5% percentiles (linear interpolation between order
                             statistics, numpy's default "linear" method) of the bootstrap diffs */
    size_t n_boot;
    int paired_units;     /* 1 = units resampled jointly for A and B */
} st_boot_ci;

/* Bootstrap interval for the difference of two mean binary outcomes (e.g. ASR of two weight sets
 * or two grid cells) over units x prompts (Efron & Tibshirani 1993 ch. 13, percentile method;
 * two-stage resampling of a crossed design, Davison & Hinkley 1997 3.8). a is [na_units, n_prompts]
 * row-major, b is [nb_units, n_prompts], values 0/1 (any non-zero = 1); a unit is a seed (one
 * trained run), prompt j of every unit is the same prompt. One replicate draws, from st_rng seeded
 * with `seed`, first the units (na_units indices, then - only when na_units != nb_units - nb_units
 * more for b; index = st_rng_u64 % count), then n_prompts prompt indices shared by A and B, and
 * takes mean(A*) - mean(B*). When na_units == nb_units the same unit indices serve both (units
 * matched by position: pass them in the same seed order). Errors: ST_ERR_ARG for a zero count. */
st_status st_bootstrap_diff(const unsigned char *a, size_t na_units, const unsigned char *b, size_t nb_units,
                            size_t n_prompts, size_t n_boot, uint64_t seed, st_boot_ci *out);

#ifdef __cplusplus
}
#endif
#endif
