/* ema.c - EMAs of the weights started at θ_0 (see ema.h). */
#include "safetune/ema.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "reduce.h"

st_status st_ema_init(st_ema *e, const float *theta0, size_t n, const float *decays, int k,
                      int64_t start_step, int64_t every) {
    memset(e, 0, sizeof *e);
    if (k < 0 || k > ST_EMA_MAX)
        return st_error(ST_ERR_ARG, "ema: %d decays; ema_decay takes at most %d", k, ST_EMA_MAX);
    for (int j = 0; j < k; j++)
        if (!(decays[j] >= 0.0f && decays[j] <= 1.0f))
            return st_error(ST_ERR_ARG, "ema: ema_decay = %g must be in [0, 1]", decays[j]);
    if (start_step < 1)
        return st_error(ST_ERR_ARG, "ema: ema_start = %lld must be >= 1", (long long)start_step);
    if (every < 1)
        return st_error(ST_ERR_ARG, "ema: ema_every = %lld must be >= 1", (long long)every);
    if (!theta0) return st_error(ST_ERR_ARG, "ema: NULL initial weights");
    e->theta0 = st_alloc_aligned(n * sizeof(float));
    int ok = e->theta0 != NULL;
    for (int j = 0; j < k && ok; j++) ok = (e->ema[j] = st_alloc_aligned(n * sizeof(float))) != NULL;
    if (!ok) {
        st_ema_free(e);
        return ST_ERR_NOMEM;
    }
    memcpy(e->theta0, theta0, n * sizeof(float));
    for (int j = 0; j < k; j++) {
        memcpy(e->ema[j], theta0, n * sizeof(float));
        e->decay[j] = decays[j];
    }
    e->n = n;
    e->k = k;
    e->start_step = start_step;
    e->every = every;
    return ST_OK;
}

void st_ema_free(st_ema *e) {
    for (int j = 0; j < ST_EMA_MAX; j++) st_free_aligned(e->ema[j]);
    st_free_aligned(e->theta0);
    memset(e, 0, sizeof *e);
}

int st_ema_due(const st_ema *e, int64_t step) {
    return step >= e->start_step && (step - e->start_step) % e->every == 0;
}

void st_ema_update(st_ema *e, const float *theta) {
    const size_t n = e->n;
    for (int j = 0; j < e->k; j++) {
        const float b = e->decay[j], omb = (float)(1.0 - (double)e->decay[j]);
        float *m = e->ema[j];
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) m[i] = b * m[i] + omb * theta[i];
    }
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

double st_ema_drift(const st_ema *e, int j) { return st_l2_distance(e->ema[j], e->theta0, e->n); }

char *st_ema_decay_key(double d, char *buf, size_t n) {
    snprintf(buf, n, "%.6g", d);
    return buf;
}
