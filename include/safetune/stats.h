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

#ifdef __cplusplus
}
#endif
#endif
