/* ema.c - EMA of the weights started at θ_0 (see ema.h). */
#include "safetune/ema.h"

#include <math.h>
#include <string.h>

#include "reduce.h"

st_status st_ema_init(st_ema *e, const float *theta0, size_t n, float decay, int64_t start_step,
                      int64_t every) {
    memset(e, 0, sizeof *e);
    if (!(decay >= 0.0f && decay <= 1.0f))
        return st_error(ST_ERR_ARG, "ema: ema_decay = %g must be in [0, 1]", decay);
    if (start_step < 1)
        return st_error(ST_ERR_ARG, "ema: ema_start_step = %lld must be >= 1", (long long)start_step);
    if (every < 1)
        return st_error(ST_ERR_ARG, "ema: ema_every = %lld must be >= 1", (long long)every);
    if (!theta0) return st_error(ST_ERR_ARG, "ema: NULL initial weights");
    e->ema = st_alloc_aligned(n * sizeof(float));
    e->theta0 = st_alloc_aligned(n * sizeof(float));
    if (!e->ema || !e->theta0) {
        st_ema_free(e);
        return ST_ERR_NOMEM;
    }
    memcpy(e->ema, theta0, n * sizeof(float));
    memcpy(e->theta0, theta0, n * sizeof(float));
    e->n = n;
    e->decay = decay;
    e->start_step = start_step;
    e->every = every;
    return ST_OK;
}

void st_ema_free(st_ema *e) {
    st_free_aligned(e->ema);
    st_free_aligned(e->theta0);
    memset(e, 0, sizeof *e);
}

int st_ema_due(const st_ema *e, int64_t step) {
    return step >= e->start_step && (step - e->start_step) % e->every == 0;
}

void st_ema_update(st_ema *e, const float *theta) {
    const float b = e->decay, omb = (float)(1.0 - (double)e->decay);
    float *m = e->ema;
    const size_t n = e->n;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) m[i] = b * m[i] + omb * theta[i];
    e->n_updates++;
}

int st_ema_step(st_ema *e, const float *theta, int64_t step) {
    if (!st_ema_due(e, step)) return 0;
    st_ema_update(e, theta);
    return 1;
}

double st_l2_distance(const float *a, const float *b, size_t n) {
    return sqrt(st_reduce_sqdiff(a, b, n));
}

double st_ema_live_drift(const st_ema *e, const float *theta) {
    return st_l2_distance(theta, e->theta0, e->n);
}

double st_ema_drift(const st_ema *e) { return st_l2_distance(e->ema, e->theta0, e->n); }
