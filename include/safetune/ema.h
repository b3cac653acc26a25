/* ema.h - exponential moving average of the weights in parameter space (Kim et al. 2025,
 * arXiv 2508.12531): θ_ema starts at the aligned weights θ_0 and after selected optimiser steps
 *     θ_ema ← β·θ_ema + (1 − β)·θ      (β = ema_decay, fp32, no warm-up / bias correction)
 * so it stays near the safe start. Also keeps θ_0 to report drift ||θ − θ_0||, ||θ_ema − θ_0||.
 * All buffers share the flat layout of weights.h ([n] fp32). */
#ifndef SAFETUNE_EMA_H
#define SAFETUNE_EMA_H

#include "safetune/base.h"

typedef struct {
    size_t n;
    float decay;           /* β in [0, 1]: 0 = live weights, 1 = frozen at θ_0 */
    int64_t start_step;    /* first optimiser step (1-based) that updates the EMA (default 1) */
    int64_t every;         /* then every `every` steps (default 1) */
    int64_t n_updates;     /* EMA updates applied so far */
    float *ema;            /* θ_ema [n] */
    float *theta0;         /* θ_0 [n], copy of the weights at init */
} st_ema;

/* Copy theta0[n] into both θ_ema and the θ_0 reference. start_step >= 1, every >= 1,
 * decay in [0, 1] (ST_ERR_ARG otherwise). Free with st_ema_free. */
st_status st_ema_init(st_ema *e, const float *theta0, size_t n, float decay, int64_t start_step,
                      int64_t every);
void st_ema_free(st_ema *e);
/* Whether the EMA updates after optimiser step `step` (1-based: st_optimizer.step after the
 * update): step >= start_step and (step - start_step) % every == 0. */
int st_ema_due(const st_ema *e, int64_t step);
/* Unconditional update with the live weights theta[n]. */
void st_ema_update(st_ema *e, const float *theta);
/* Update if st_ema_due(e, step); returns 1 if it updated, else 0. */
int st_ema_step(st_ema *e, const float *theta, int64_t step);

/* ||a − b||_2 over n floats, accumulated in double. */
double st_l2_distance(const float *a, const float *b, size_t n);
/* ||θ − θ_0|| for the live weights theta[n]. */
double st_ema_live_drift(const st_ema *e, const float *theta);
/* ||θ_ema − θ_0||. */
double st_ema_drift(const st_ema *e);

#endif
