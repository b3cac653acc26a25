/* schedule.h - learning-rate schedules as multipliers of the base lr.
 *
 * Step indexing (as torch.optim.lr_scheduler.LambdaLR driven the Hugging Face way:
 * optimizer.step(); scheduler.step()): the k-th optimiser update, k = 0, 1, 2, ... (k = number
 * of updates already taken, i.e. st_optimizer.step before the call) uses
 *     lr_k = base_lr * factor(k).
 * With warm-up the very first update therefore has lr 0, exactly as in transformers.
 * factor(k), W = warmup_steps, N = total_steps (transformers/optimization.py):
 *   constant          1                                          (get_constant_schedule)
 *   constant_warmup   k < W ? k / max(1, W) : 1                  (get_constant_schedule_with_warmup)
 *   linear            k < W ? k / max(1, W)
 *                           : max(0, (N - k) / max(1, N - W))    (get_linear_schedule_with_warmup)
 *   cosine            k < W ? k / max(1, W)
 *                           : max(0, 0.5 (1 + cos(pi * 2c * (k - W) / max(1, N - W))))
 *                     with c = num_cycles, default 0.5           (get_cosine_schedule_with_warmup)
 *   step              k < W ? k / max(1, W) : gamma ^ floor((k - W) / step_size)
 *                     (torch.optim.lr_scheduler.StepLR after the warm-up; ours, not in HF)
 * Factors are computed in double. */
#ifndef SAFETUNE_SCHEDULE_H
#define SAFETUNE_SCHEDULE_H

#include "safetune/base.h"

typedef enum {
    ST_SCHED_CONSTANT = 0,
    ST_SCHED_CONSTANT_WARMUP = 1,
    ST_SCHED_LINEAR = 2,
    ST_SCHED_COSINE = 3,
    ST_SCHED_STEP = 4
} st_sched_kind;

typedef struct {
    st_sched_kind kind;
    int64_t warmup_steps;   /* W >= 0 */
    int64_t total_steps;    /* N (linear, cosine) */
    double num_cycles;      /* cosine, default 0.5 (half a cosine: 1 -> 0) */
    int64_t step_size;      /* step: decay every step_size updates after warm-up */
    double gamma;           /* step: multiplicative decay, default 0.1 */
} st_schedule;

/* Defaults: no warm-up, num_cycles 0.5, step_size 1, gamma 0.1, total_steps as given. */
void st_schedule_default(st_schedule *s, st_sched_kind kind, int64_t total_steps);
/* Check the parameters (W >= 0; N > 0 for linear/cosine; step_size > 0; gamma > 0);
 * ST_ERR_ARG names the bad field. */
st_status st_schedule_validate(const st_schedule *s);
/* "constant" | "constant_with_warmup" | "linear" | "cosine" | "step" -> kind (HF names). */
st_status st_schedule_kind_parse(const char *name, st_sched_kind *out);
const char *st_schedule_kind_name(st_sched_kind k);
/* The multiplier factor(k) above for update index k >= 0. */
double st_schedule_factor(const st_schedule *s, int64_t k);
/* base_lr * factor(k). */
double st_schedule_lr(const st_schedule *s, double base_lr, int64_t k);

#endif
