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

enum { SUB = 4096 }; /* elements per sub-block: 7 vectors x 16 KB stay in L2 between passes */

typedef struct { float gscale, b1, omb1, b2, omb2, bc2_sqrt, eps, step_size; } adamw_consts;

/* AdamW on n elements of one weight-decay segment (optim.c adamw_step, expression for
 * expression; restrict and no reduction: the compiler vectorises it) */
static void adamw_range(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, size_t n,
                        const adamw_consts *k, int has_decay, float decay) {
    const adamw_consts c = *k;
    for (size_t i = 0; i < n; i++) {
        float pi = p[i], gi = g[i] * c.gscale; /* clip's g *= c (x·1 is exact) */
        if (has_decay) pi *= decay;
        const float mi = c.b1 * m[i] + c.omb1 * gi;
        const float vi = c.b2 * v[i] + c.omb2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
        p[i] = pi - c.step_size * (mi / denom);
    }
}

/* one EMA decay on n elements (ema.c st_ema_update) */
static void ema_range(float *restrict e, const float *restrict p, size_t n, float b, float omb) {
    for (size_t i = 0; i < n; i++) e[i] = b * e[i] + omb * p[i];
}

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
    const adamw_consts ac = {gscale, (float)c->beta1, (float)(1.0 - c->beta1), (float)c->beta2,
                             (float)(1.0 - c->beta2), bc2_sqrt, (float)c->eps, step_size};
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
        double al[ST_REDUCE_LANES] = {0}, ae[ST_EMA_MAX][ST_REDUCE_LANES] = {{0}};
        /* sub-blocks that stay in cache between the update and the sums; SUB is a multiple of
         * the lanes, so each starts lane-aligned in its block (the lanes of st_reduce_sqdiff) */
        for (size_t sb = b; sb < e; sb += SUB) {
            const size_t se = sb + SUB < e ? sb + SUB : e;
            for (size_t i0 = sb; i0 < se; si++) {
                /* the part of this sub-block inside segment si (segments tile [0, n)) */
                const st_optim_segment seg = opt->segs[si];
                const size_t i1 = seg.end < se ? seg.end : se;
                adamw_range(p + i0, g + i0, m + i0, v + i0, i1 - i0, &ac, seg.weight_decay != 0.0,
                            (float)(1.0 - lr * seg.weight_decay));
                if (i1 < seg.end) break; /* the segment goes on into the next sub-block */
                i0 = i1;
            }
            for (int j = 0; ema_due && j < k; j++) ema_range(ema[j] + sb, p + sb, se - sb, eb[j], eomb[j]);
            st_reduce_lanes_sqdiff(p + sb, th0 + sb, se - sb, al);
            for (int j = 0; j < k; j++) st_reduce_lanes_sqdiff(ema[j] + sb, th0 + sb, se - sb, ae[j]);
        }
        part[w * kb] = st_reduce_lanes_total(al);
        for (int j = 0; j < k; j++) part[w * kb + 1 + (size_t)j] = st_reduce_lanes_total(ae[j]);
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
