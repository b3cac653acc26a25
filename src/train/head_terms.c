/* head_terms.c - constrained-SFT weights and the KL-to-θ_0 term on one logit row (head_terms.h). */
#include "safetune/head_terms.h"

#include <math.h>

double st_csft_beta_t(double beta, double first_factor, double factor, int prefix_len, int t) {
    if (t <= 1) return beta * first_factor;
    if (t <= prefix_len) return beta * factor;
    return beta;
}

double st_csft_weight(double beta_t, double delta) {
    const double x = beta_t * delta;
    /* 1 − σ(x) = σ(−x), written so neither branch overflows */
    const double s = x >= 0 ? exp(-x) / (1.0 + exp(-x)) : 1.0 / (1.0 + exp(x));
    const double w = 2.0 * s;
    return w > ST_CSFT_CLAMP ? w : ST_CSFT_CLAMP;
}

/* max and log Σ exp(l − max) of a row (double sum) */
static double row_lse(const float *l, int V) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    double s = 0.0;
    for (int i = 0; i < V; i++) s += exp((double)l[i] - (double)mx);
    return (double)mx + log(s);
}

float st_head_row(float *l, const float *l0, int V, int32_t target, float g, double beta_t,
                  float ref_logp, float k, double *kl_out, double *w_out) {
    const double lse = row_lse(l, V);
    const double logp = (double)l[target] - lse;
    double w = 1.0;
    if (beta_t > 0) w = st_csft_weight(beta_t, logp - (double)ref_logp);
    if (w_out) *w_out = w;
    const double gw = (double)g * w;
    double kl = 0.0;
    if (l0) {
        const double lse0 = row_lse(l0, V);
        for (int i = 0; i < V; i++) {
            const double lp = (double)l[i] - lse, lp0 = (double)l0[i] - lse0;
            const double p = exp(lp), p0 = exp(lp0);
            kl += p0 * (lp0 - lp);
            l[i] = (float)(gw * p + (double)k * (p - p0));
        }
    } else {
        for (int i = 0; i < V; i++) l[i] = (float)(gw * exp((double)l[i] - lse));
    }
    l[target] = (float)((double)l[target] - gw);
    if (kl_out) *kl_out = kl;
    return (float)-logp;
}
