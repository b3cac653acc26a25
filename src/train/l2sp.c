/* l2sp.c - L2-SP toward θ_0, coupled and decoupled (l2sp.h). */
#include "safetune/l2sp.h"

#include "train/reduce.h"

double st_l2sp_coupled(float *g, const float *theta, const float *theta0, size_t n, double alpha) {
    const float a = (float)alpha;
    const size_t nb = (n + ST_REDUCE_BLOCK - 1) / ST_REDUCE_BLOCK;
    double stack[64], *part = nb <= 64 ? stack : malloc(nb * sizeof *part);
    double total = 0.0;
#pragma omp parallel for schedule(static) if (part)
    for (size_t k = 0; k < nb; k++) {
        const size_t e = (k + 1) * ST_REDUCE_BLOCK < n ? (k + 1) * ST_REDUCE_BLOCK : n;
        double s = 0.0;
        for (size_t i = k * ST_REDUCE_BLOCK; i < e; i++) {
            g[i] += a * (theta[i] - theta0[i]);
            const double d = (double)theta[i] - (double)theta0[i];
            s += d * d;
        }
        if (part) part[k] = s;
        else total += s; /* out of memory: sequential, the same block order */
    }
    if (part) {
        for (size_t k = 0; k < nb; k++) total += part[k];
        if (part != stack) free(part);
    }
    return 0.5 * alpha * total;
}

void st_l2sp_decoupled(float *theta, const float *theta0, size_t n, double factor) {
    const float f = (float)factor;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) theta[i] = theta0[i] + f * (theta[i] - theta0[i]);
}
