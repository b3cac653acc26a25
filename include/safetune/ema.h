/* ema.h - exponential moving averages of the weights in parameter space (Kim et al. 2025,
 * arXiv 2508.12531): each θ_ema_j starts at the aligned weights θ_0 and after selected optimiser
 * steps
 *     θ_ema_j ← β_j·θ_ema_j + (1 − β_j)·θ      (β_j = ema_decays[j], fp32, no bias correction)
 * so it stays near the safe start. Several decays share one schedule (start, every) and one θ_0,
 * kept to report the drifts ||θ − θ_0||, ||θ_ema_j − θ_0||. All buffers share the flat layout of
 * weights.h ([n] fp32). */
#ifndef SAFETUNE_EMA_H
#define SAFETUNE_EMA_H

#include "safetune/base.h"

#define ST_EMA_MAX 16 /* decays per run */

typedef struct {
    size_t n;
    int k;                      /* number of decays, 0..ST_EMA_MAX (0: θ_0 only, no average) */
    float decay[ST_EMA_MAX];    /* β_j in [0, 1]: 0 = live weights, 1 = frozen at θ_0 */
    float *ema[ST_EMA_MAX];     /* θ_ema_j [n] */
    int64_t start_step;         /* first optimiser step (1-based) that updates the EMAs (default 1) */
    int64_t every;              /* then every `every` steps (default 1) */
    int64_t n_updates;          /* updates applied so far (all decays update together) */
    float *theta0;              /* θ_0 [n], copy of the weights at init */
} st_ema;

/* Copy theta0[n] into θ_0 and into each of the k (0..ST_EMA_MAX) averages with decays[k], each in
 * [0, 1]; start_step >= 1, every >= 1 (ST_ERR_ARG naming ema_decay, ema_start, ema_every).
 * Free with st_ema_free. */
st_status st_ema_init(st_ema *e, const float *theta0, size_t n, const float *decays, int k,
                      int64_t start_step, int64_t every);
void st_ema_free(st_ema *e);
/* Whether the EMAs update after optimiser step `step` (1-based: st_optimizer.step after the
 * update): step >= start_step and (step - start_step) % every == 0. */
int st_ema_due(const st_ema *e, int64_t step);
/* Unconditional update of every average with the live weights theta[n]. */
void st_ema_update(st_ema *e, const float *theta);
/* Update if st_ema_due(e, step); returns 1 if it updated, else 0. */
int st_ema_step(st_ema *e, const float *theta, int64_t step);

/* ||a − b||_2 over n floats, accumulated in double. */
double st_l2_distance(const float *a, const float *b, size_t n);
/* ||θ − θ_0|| for the live weights theta[n]. */
double st_ema_live_drift(const st_ema *e, const float *theta);
/* ||θ_ema_j − θ_0|| (j < k). */
double st_ema_drift(const st_ema *e, int j);
/* The text key of decay d in metrics and file names: "%.6g" ("0.9", "0.999"); buf[n], returned. */
char *st_ema_decay_key(double d, char *buf, size_t n);

#endif
