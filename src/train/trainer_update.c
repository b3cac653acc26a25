/* trainer_update.c - the end of a trainer step in one pass over memory: the gradient clipping
 * scale, AdamW, the update of every EMA decay (when due) and the drift norms ‖θ − θ_0‖,
 * ‖θ_ema_j − θ_0‖ (one per decay). The separate passes (optim.c
 * adamw_step, ema.c st_ema_update, reduce.h st_reduce_sqdiff) read/write the 135M-float vectors
 * 4 times; here each element is touched once. Element arithmetic is the same expression for
 * expression (the build is ISO C, so no FMA contraction) and the norms are summed in the same
 * fixed ST_REDUCE_BLOCK blocks, in order: results are bit-identical to the separate passes. */
#include <math.h>
#include <stdlib.h>

#include "reduce.h"
#include "train/trainer_internal.h"

int st__trainer_update_fusable(const st_trainer *t) { return t->opt.cfg.kind == ST_OPTIM_ADAMW; }

st_status st__trainer_update(st_trainer *t, float *p, const float *g, float gscale, double lr,
                             int ema_due, double *live_sq, double *ema_sq) {
    st_optimizer *opt = &t->opt;
    if (!st__trainer_update_fusable(t))
        return st_error(ST_ERR_INTERNAL, "fused update: only AdamW is fused");
    if (!(lr >= 0.0) || !isfinite(lr))
        return st_error(ST_ERR_ARG, "optimizer step: lr = %g must be finite and >= 0", lr);
    opt->step++;
    const st_optim_config *c = &opt->cfg;
    const double ts = (double)opt->step;
    const double bc1 = 1.0 - pow((double)c->beta1, ts);
    const double bc2 = 1.0 - pow((double)c->beta2, ts);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float b1 = (float)c->beta1, b2 = (float)c->beta2, omb1 = (float)(1.0 - c->beta1),
                omb2 = (float)(1.0 - c->beta2), eps = (float)c->eps;
    const int k = t->ema.k;
    float eb[ST_EMA_MAX], eomb[ST_EMA_MAX];
    for (int j = 0; j < k; j++) {
        eb[j] = t->ema.decay[j];
        eomb[j] = (float)(1.0 - (double)t->ema.decay[j]);
    }
    float *m = opt->m, *v = opt->v, *const *ema = t->ema.ema;
    const float *th0 = t->ema.theta0;
    const size_t n = opt->n, nb = (n + ST_REDUCE_BLOCK - 1) / ST_REDUCE_BLOCK, w = 1 + (size_t)k;
    double *part = malloc(w * (nb ? nb : 1) * sizeof *part);
    if (!part) return ST_ERR_NOMEM;
#pragma omp parallel for schedule(static)
    for (size_t kb = 0; kb < nb; kb++) {
        const size_t b = kb * ST_REDUCE_BLOCK, e = b + ST_REDUCE_BLOCK < n ? b + ST_REDUCE_BLOCK : n;
        size_t si = 0;
        while (si < opt->n_segs && opt->segs[si].end <= b) si++;
        double sl = 0.0, se[ST_EMA_MAX] = {0};
        for (size_t i0 = b; i0 < e; si++) {
            /* the part of this block inside segment si (segments tile [0, n)) */
            const st_optim_segment seg = opt->segs[si];
            const size_t i1 = seg.end < e ? seg.end : e;
            const float decay = (float)(1.0 - lr * seg.weight_decay);
            const int has_decay = seg.weight_decay != 0.0;
            for (size_t i = i0; i < i1; i++) {
                float pi = p[i], gi = g[i] * gscale; /* clip's g *= c (x·1 is exact) */
                if (has_decay) pi *= decay;
                float mi = b1 * m[i] + omb1 * gi;
                float vi = b2 * v[i] + omb2 * (gi * gi);
                m[i] = mi;
                v[i] = vi;
                float denom = sqrtf(vi) / bc2_sqrt + eps;
                const float pn = pi - step_size * (mi / denom);
                p[i] = pn;
                const double d = (double)pn - (double)th0[i];
                sl += d * d;
                for (int j = 0; j < k; j++) { /* k is small: the element stays in registers */
                    const float en = ema_due ? eb[j] * ema[j][i] + eomb[j] * pn : ema[j][i];
                    ema[j][i] = en;
                    const double de = (double)en - (double)th0[i];
                    se[j] += de * de;
                }
            }
            i0 = i1;
        }
        part[w * kb] = sl;
        for (int j = 0; j < k; j++) part[w * kb + 1 + (size_t)j] = se[j];
    }
    double a = 0.0, z[ST_EMA_MAX] = {0};
    for (size_t kb = 0; kb < nb; kb++) {
        a += part[w * kb];
        for (int j = 0; j < k; j++) z[j] += part[w * kb + 1 + (size_t)j];
    }
    free(part);
    if (ema_due) t->ema.n_updates++;
    *live_sq = a;
    for (int j = 0; j < k; j++) ema_sq[j] = z[j];
    return ST_OK;
}
