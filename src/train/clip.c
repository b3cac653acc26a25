/* clip.c - global L2 gradient norm and clipping (torch.nn.utils.clip_grad_norm_ semantics). */
#include "safetune/optim.h"

#include <math.h>

#include "reduce.h"

double st_grad_norm(const float *g, size_t n) { return sqrt(st_reduce_sqdiff(g, NULL, n)); }

double st_clip_grad_norm(float *g, size_t n, double max_norm) {
    double norm = st_grad_norm(g, n);
    if (!isfinite(norm) || !(max_norm > 0.0)) return norm;
    double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return norm; /* torch multiplies by the clamped 1.0: a no-op */
    const float c = (float)coef;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] *= c;
    return norm;
}
