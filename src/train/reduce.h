/* reduce.h - deterministic parallel sums (private to src/train). The vector is cut into fixed
 * blocks of ST_REDUCE_BLOCK elements, summed in parallel across blocks; the block sums are added
 * in order. Inside a block, element i goes to lane (i - block start) mod ST_REDUCE_LANES, each lane
 * summed in increasing i, and the lanes are added in a fixed tree (st_reduce_lanes_total): the
 * lanes make the sum vectorisable (a single running sum is bound by the add latency). The result
 * does not depend on thread count or timing, so norms (and hence clipping) are bit-reproducible
 * across runs and resumes; trainer_update.c sums the same lanes over the same blocks. */
#ifndef SAFETUNE_TRAIN_REDUCE_H
#define SAFETUNE_TRAIN_REDUCE_H

#include <stdlib.h>

#include "safetune/base.h"

#define ST_REDUCE_BLOCK 65536
#define ST_REDUCE_LANES 16

/* acc[l] += (a[i] - (b ? b[i] : 0))^2 in double for i in [0, n), lane l = i mod ST_REDUCE_LANES
 * (a and b point at a lane-aligned position of their block). */
static inline void st_reduce_lanes_sqdiff(const float *restrict a, const float *restrict b, size_t n,
                                          double acc[ST_REDUCE_LANES]) {
    const size_t nf = n - n % ST_REDUCE_LANES;
    double s[ST_REDUCE_LANES];
    for (int l = 0; l < ST_REDUCE_LANES; l++) s[l] = acc[l];
    if (b) {
        for (size_t i = 0; i < nf; i += ST_REDUCE_LANES)
            for (int l = 0; l < ST_REDUCE_LANES; l++) {
                const double d = (double)a[i + l] - (double)b[i + l];
                s[l] += d * d;
            }
    } else {
        for (size_t i = 0; i < nf; i += ST_REDUCE_LANES)
            for (int l = 0; l < ST_REDUCE_LANES; l++) {
                const double d = (double)a[i + l];
                s[l] += d * d;
            }
    }
    for (size_t i = nf; i < n; i++) {
        const double d = (double)a[i] - (b ? (double)b[i] : 0.0);
        s[i - nf] += d * d;
    }
    for (int l = 0; l < ST_REDUCE_LANES; l++) acc[l] = s[l];
}

/* The lanes added pairwise in a fixed tree. */
static inline double st_reduce_lanes_total(const double acc[ST_REDUCE_LANES]) {
    double t[ST_REDUCE_LANES];
    for (int l = 0; l < ST_REDUCE_LANES; l++) t[l] = acc[l];
    for (int w = ST_REDUCE_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) t[l] += t[l + w];
    return t[0];
}

/* sum_i (a[i] - (b ? b[i] : 0))^2 in double. */
static inline double st_reduce_sqdiff(const float *a, const float *b, size_t n) {
    size_t nb = (n + ST_REDUCE_BLOCK - 1) / ST_REDUCE_BLOCK;
    double stack[64], *part = nb <= 64 ? stack : malloc(nb * sizeof *part);
    if (!part) { /* out of memory: sequential fallback, same block order */
        double total = 0.0;
        for (size_t k = 0; k < nb; k++) {
            double acc[ST_REDUCE_LANES] = {0};
            size_t e = (k + 1) * ST_REDUCE_BLOCK < n ? (k + 1) * ST_REDUCE_BLOCK : n;
            st_reduce_lanes_sqdiff(a + k * ST_REDUCE_BLOCK, b ? b + k * ST_REDUCE_BLOCK : NULL, e - k * ST_REDUCE_BLOCK, acc);
            total += st_reduce_lanes_total(acc);
        }
        return total;
    }
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nb; k++) {
        double acc[ST_REDUCE_LANES] = {0};
        size_t e = (k + 1) * ST_REDUCE_BLOCK < n ? (k + 1) * ST_REDUCE_BLOCK : n;
        st_reduce_lanes_sqdiff(a + k * ST_REDUCE_BLOCK, b ? b + k * ST_REDUCE_BLOCK : NULL, e - k * ST_REDUCE_BLOCK, acc);
        part[k] = st_reduce_lanes_total(acc);
    }
    double total = 0.0;
    for (size_t k = 0; k < nb; k++) total += part[k];
    if (part != stack) free(part);
    return total;
}

#endif
