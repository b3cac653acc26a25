/* safegrad.c - SafeGrad's projection and combination of the task and alignment gradients
 * (safegrad.h; DEFENSES.md §7). The alignment gradient itself: trainer_align.c + backward_kl.c. */
#include "safetune/safegrad.h"

#include <stdlib.h>

#include "train/reduce.h"

/* ⟨a, b⟩ and ‖b‖² in double over fixed blocks added in order (thread-count independent). */
static void dots(const float *a, const float *b, size_t n, double *ab, double *bb) {
    const size_t nb = (n + ST_REDUCE_BLOCK - 1) / ST_REDUCE_BLOCK;
    double stack[128], *part = nb <= 64 ? stack : malloc(2 * nb * sizeof *part);
    double sab = 0.0, sbb = 0.0;
#pragma omp parallel for schedule(static) if (part)
    for (size_t k = 0; k < nb; k++) {
        const size_t e = (k + 1) * ST_REDUCE_BLOCK < n ? (k + 1) * ST_REDUCE_BLOCK : n;
        double x = 0.0, y = 0.0;
        for (size_t i = k * ST_REDUCE_BLOCK; i < e; i++) {
            x += (double)a[i] * (double)b[i];
            y += (double)b[i] * (double)b[i];
        }
        if (part) part[2 * k] = x, part[2 * k + 1] = y;
        else sab += x, sbb += y; /* out of memory: sequential, the same block order */
    }
    if (part) {
        for (size_t k = 0; k < nb; k++) sab += part[2 * k], sbb += part[2 * k + 1];
        if (part != stack) free(part);
    }
    *ab = sab;
    *bb = sbb;
}

void st_safegrad_combine(float *g, float *gu, const float *ga, size_t n, double rho, int project,
                         st_safegrad_info *info) {
    double d, na;
    dots(gu, ga, n, &d, &na);
    const int proj = project && d < 0 && na > 1e-9;
    const double c = proj ? d / na : 0.0;
    if (info) *info = (st_safegrad_info){d, na, c, proj};
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float a = ga[i];
        if (proj) gu[i] = (float)((double)gu[i] - c * (double)a);
        g[i] = rho == 0 ? gu[i] : (float)((double)gu[i] + rho * (double)a);
    }
}
