/* clip.c - global L2 gradient norm and clipping (torch.nn.utils.clip_grad_norm_ semantics). */
#include "safetune/optim.h"

#include <math.h>

#include "reduce.h"

double st_grad_norm(const float *g, size_t n) { return sqrt(st_reduce_sqdiff(g, NULL, n)); }

float st_clip_grad_scale(double norm, double max_norm) {
    if (!isfinite(norm) || !(max_norm > 0.0)) return 1.0f;
    double coef = max_norm / (norm + 1e-6);
    return coef >= 1.0 ? 1.0f : (float)coef; /* torch multiplies by the clamped 1.0: a no-op */
}

double st_clip_grad_norm(float *g, size_t n, double max_norm) {
    double norm = st_grad_norm(g, n);
    const float c = st_clip_grad_scale(norm, max_norm);
    if (c == 1.0f) return norm;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] *= c;
    return norm;
}
