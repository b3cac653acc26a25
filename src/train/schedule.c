/* schedule.c - LR multipliers, formulas of transformers/optimization.py (see schedule.h). */
#include "safetune/schedule.h"
#include "safetune/train_settings.h"

#include <math.h>
#include <string.h>

void st_schedule_default(st_schedule *s, st_sched_kind kind, int64_t total_steps) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->total_steps = total_steps;
    s->num_cycles = 0.5;
    s->step_size = 1;
    s->gamma = 0.1;
}

/* names: the table of train_settings.h (one list for the CLI, study configs and checkpoints) */
st_status st_schedule_kind_parse(const char *name, st_sched_kind *out) {
    int v;
    st_status s = st_name_lookup(st_lr_schedule_names, "lr_schedule", name, &v);
    if (!s) *out = (st_sched_kind)v;
    return s;
}

const char *st_schedule_kind_name(st_sched_kind k) { return st_name_of(st_lr_schedule_names, (int)k); }

st_status st_schedule_validate(const st_schedule *s) {
    if ((unsigned)s->kind >= 5) return st_error(ST_ERR_ARG, "lr schedule: unknown kind %d", (int)s->kind);
    if (s->warmup_steps < 0)
        return st_error(ST_ERR_ARG, "lr schedule: warmup_steps = %lld must be >= 0",
                        (long long)s->warmup_steps);
    if ((s->kind == ST_SCHED_LINEAR || s->kind == ST_SCHED_COSINE) && s->total_steps <= 0)
        return st_error(ST_ERR_ARG, "lr schedule %s: total_steps = %lld must be > 0",
                        st_schedule_kind_name(s->kind), (long long)s->total_steps);
    if (s->kind == ST_SCHED_STEP && s->step_size <= 0)
        return st_error(ST_ERR_ARG, "lr schedule step: step_size = %lld must be > 0",
                        (long long)s->step_size);
    if (s->kind == ST_SCHED_STEP && !(s->gamma > 0.0))
        return st_error(ST_ERR_ARG, "lr schedule step: gamma = %g must be > 0", s->gamma);
    if (s->kind == ST_SCHED_COSINE && !isfinite(s->num_cycles))
        return st_error(ST_ERR_ARG, "lr schedule cosine: num_cycles must be finite");
    return ST_OK;
}

static double imax1(int64_t x) { return (double)(x > 1 ? x : 1); }

double st_schedule_factor(const st_schedule *s, int64_t k) {
    int64_t W = s->warmup_steps, N = s->total_steps;
    if (s->kind == ST_SCHED_CONSTANT) return 1.0;
    if (k < W) return (double)k / imax1(W);
    switch (s->kind) {
    case ST_SCHED_CONSTANT_WARMUP: return 1.0;
    case ST_SCHED_LINEAR: return fmax(0.0, (double)(N - k) / imax1(N - W));
    case ST_SCHED_COSINE: {
        double progress = (double)(k - W) / imax1(N - W);
        return fmax(0.0, 0.5 * (1.0 + cos(M_PI * s->num_cycles * 2.0 * progress)));
    }
    case ST_SCHED_STEP: return pow(s->gamma, (double)((k - W) / s->step_size));
    default: return 1.0;
    }
}

double st_schedule_lr(const st_schedule *s, double base_lr, int64_t k) {
    return base_lr * st_schedule_factor(s, k);
}
