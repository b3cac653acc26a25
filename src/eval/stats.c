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
