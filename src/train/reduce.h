/* reduce.h - deterministic parallel sums (private to src/train). The vector is cut into fixed
 * blocks of ST_REDUCE_BLOCK elements, each summed sequentially (in parallel across blocks), and
 * the block sums are added in order: the result does not depend on thread count or timing, so
 * norms (and hence clipping) are bit-reproducible across runs and resumes. */
#ifndef SAFETUNE_TRAIN_REDUCE_H
#define SAFETUNE_TRAIN_REDUCE_H

#include <stdlib.h>

#include "safetune/base.h"

#define ST_REDUCE_BLOCK 65536

/* sum_i (a[i] - (b ? b[i] : 0))^2 in double. */
static inline double st_reduce_sqdiff(const float *a, const float *b, size_t n) {
    size_t nb = (n + ST_REDUCE_BLOCK - 1) / ST_REDUCE_BLOCK;
    double stack[64], *part = nb <= 64 ? stack : malloc(nb * sizeof *part);
    if (!part) { /* out of memory: sequential fallback, same block order */
        double total = 0.0;
        for (size_t k = 0; k < nb; k++) {
            double s = 0.0;
            size_t e = (k + 1) * ST_REDUCE_BLOCK < n ? (k + 1) * ST_REDUCE_BLOCK : n;
            for (size_t i = k * ST_REDUCE_BLOCK; i < e; i++) {
                double d = (double)a[i] - (b ? (double)b[i] : 0.0);
                s += d * d;
            }
            total += s;
        }
        return total;
    }
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nb; k++) {
        double s = 0.0;
        size_t e = (k + 1) * ST_REDUCE_BLOCK < n ? (k + 1) * ST_REDUCE_BLOCK : n;
        for (size_t i = k * ST_REDUCE_BLOCK; i < e; i++) {
            double d = (double)a[i] - (b ? (double)b[i] : 0.0);
            s += d * d;
        }
        part[k] = s;
    }
    double total = 0.0;
    for (size_t k = 0; k < nb; k++) total += part[k];
    if (part != stack) free(part);
    return total;
}

#endif
