/* ewc.c - EWC's diagonal Fisher and penalty (ewc.h). */
#include "safetune/ewc.h"

#include "train/reduce.h"

void st_ewc_fisher_add(float *fisher, const float *g, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) fisher[i] += g[i] * g[i];
}

double st_ewc_fisher_finish(float *fisher, size_t n, size_t n_examples) {
    const float inv = 1.0f / (float)(n_examples ? n_examples : 1);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) fisher[i] *= inv;
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += fisher[i];
    return n ? s / (double)n : 0.0;
}

double st_ewc_penalty(float *g, const float *theta, const float *theta0, const float *fisher, size_t n,
                      double lambda) {
    const float a = (float)lambda;
    const size_t nb = (n + ST_REDUCE_BLOCK - 1) / ST_REDUCE_BLOCK;
    double stack[64], *part = nb <= 64 ? stack : malloc(nb * sizeof *part);
    double total = 0.0;
#pragma omp parallel for schedule(static) if (part)
    for (size_t k = 0; k < nb; k++) {
        const size_t e = (k + 1) * ST_REDUCE_BLOCK < n ? (k + 1) * ST_REDUCE_BLOCK : n;
        double s = 0.0;
        for (size_t i = k * ST_REDUCE_BLOCK; i < e; i++) {
            g[i] += (a * fisher[i]) * (theta[i] - theta0[i]);
            const double d = (double)theta[i] - (double)theta0[i];
            s += (double)fisher[i] * d * d;
        }
        if (part) part[k] = s;
        else total += s; /* out of memory: sequential, the same block order */
    }
    if (part) {
        for (size_t k = 0; k < nb; k++) total += part[k];
        if (part != stack) free(part);
    }
    return 0.5 * lambda * total;
}
