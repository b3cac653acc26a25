/* trainer_align.c - the trainer's side of the defenses that train on the alignment set D_align:
 * Lisa (lisa.h: alignment windows, proximal term, anchor switches) and SafeGrad (safegrad.h:
 * the KL-to-θ_0 alignment gradient and the surgery). D_align rows come in a seeded cyclic
 * order: a permutation of its rows drawn once from the run seed (SafeGrad uses its first
 * safegrad_align_rows), read round and round; rank r of W takes every W-th position. The read
 * position and Lisa's anchor are checkpoint state (x-align_pos.bin, x-lisa_anchor.bin). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/backward_kl.h"
#include "safetune/l2sp.h"
#include "safetune/lisa.h"
#include "safetune/safegrad.h"
#include "train/trainer_internal.h"

struct st__align_defense {
    const st_tokenized *data;
    uint32_t *perm;        /* [data->n] seeded permutation of D_align's rows */
    size_t n_use;          /* rows of perm cycled through (all for Lisa, n_a for SafeGrad) */
    uint64_t pos;          /* stream positions read so far (checkpoint state) */
    uint64_t hash;         /* FNV-1a 64 of D_align's rows (resume fingerprint) */
    uint32_t *rows;        /* [batch_size] scratch */
    /* Lisa */
    st_lisa_schedule sched;
    float *anchor;         /* [n] a: θ_0, then θ after each phase's last step (checkpoint state) */
    /* SafeGrad */
    float *gu;             /* [n] the task gradient while g_a is computed */
    st_weights w0;         /* view of θ_0 (the trainer's buffer, no copy) */
    int w0_bound;
    st_batch batch;        /* the alignment batch A */
    float *logp0;          /* [cap_rows, V] log p_θ0 at A's response positions */
    int cap_rows;
};

static uint64_t fnv_rows(const st_tokenized *d) {
    uint64_t h = 0xcbf29ce484222325ULL;
#define ST_FNV(ptr, nbytes) \
    for (size_t i_ = 0; i_ < (nbytes); i_++) h = (h ^ ((const uint8_t *)(ptr))[i_]) * 0x100000001b3ULL
    ST_FNV(d->offsets, (d->n + 1) * sizeof *d->offsets);
    ST_FNV(d->ids, d->offsets[d->n] * sizeof *d->ids);
    ST_FNV(d->mask, d->offsets[d->n] * sizeof *d->mask);
#undef ST_FNV
    return h;
}

void st__align_free(st_trainer *t) {
    st__align_defense *a = t->adf;
    if (!a) return;
    free(a->perm);
    free(a->rows);
    st_free_aligned(a->anchor);
    st_free_aligned(a->gu);
    if (a->w0_bound) st_weights_unbind(&a->w0);
    st_batch_free(&a->batch);
    free(a->logp0);
    free(a);
    t->adf = NULL;
}

st_status st__align_new(st_trainer *t) {
    const st_train_config *c = &t->cfg;
    const int lisa = c->lisa == ST_ON, sg = c->safegrad == ST_ON;
    if (!lisa && !sg) return ST_OK;
    const char *key = lisa ? "lisa" : "safegrad";
    if (!c->align_data || c->align_data->n == 0)
        return st_error(ST_ERR_ARG, "%s: needs the alignment set (the AdvBench half-a refusal pairs of `safetune "
                        "align`'s align_set.jsonl): `safetune train --align-dir DIR`, or st_train_config.align_data",
                        key);
    if (sg && c->safegrad_align_rows > c->align_data->n)
        return st_error(ST_ERR_ARG, "safegrad_align_rows = %zu is more than the %zu rows of the alignment set",
                        c->safegrad_align_rows, c->align_data->n);
    if (sg && t->adapter)
        return st_error(ST_ERR_ARG, "safegrad works on full fine-tuning: set finetune full, or safegrad off");
    st__align_defense *a = st_calloc(1, sizeof *a);
    if (!a) return ST_ERR_NOMEM;
    t->adf = a;
    a->data = c->align_data;
    a->hash = fnv_rows(a->data);
    const size_t nr = a->data->n;
    a->perm = st_malloc(nr * sizeof *a->perm);
    a->rows = st_malloc((size_t)c->batch_size * sizeof *a->rows);
    if (!a->perm || !a->rows) return ST_ERR_NOMEM;
    st_rng r; /* Fisher-Yates from the run seed (its own stream: the data order is unchanged) */
    st_rng_seed(&r, c->seed ^ 0xA11617DA7AULL);
    for (size_t i = 0; i < nr; i++) a->perm[i] = (uint32_t)i;
    for (size_t i = nr - 1; i > 0; i--) {
        const size_t j = (size_t)(st_rng_u64(&r) % (uint64_t)(i + 1));
        const uint32_t x = a->perm[i];
        a->perm[i] = a->perm[j];
        a->perm[j] = x;
    }
    a->n_use = sg ? c->safegrad_align_rows : nr;
    st_status s = st_trainer_add_state(t, "align_pos", &a->pos, sizeof a->pos);
    if (s) return s;
    if (lisa) {
        a->sched = st_lisa_schedule_make(c->lisa_align_share, c->lisa_cycle_steps, t->max_steps);
        a->anchor = st_alloc_aligned(t->n * sizeof(float));
        if (!a->anchor) return st_error(ST_ERR_NOMEM, "lisa: cannot allocate the anchor (%zu MiB)", t->n * 4 >> 20);
        memcpy(a->anchor, t->theta, t->n * sizeof(float)); /* a = θ_0 */
        if ((s = st_trainer_add_state(t, "lisa_anchor", a->anchor, t->n * sizeof(float)))) return s;
    }
    if (sg) {
        a->gu = st_alloc_aligned(t->n * sizeof(float));
        if (!a->gu) return st_error(ST_ERR_NOMEM, "safegrad: cannot allocate g_u (%zu MiB)", t->n * 4 >> 20);
        if ((s = st_weights_bind(&a->w0, &t->m->config, &t->m->layout, t->ema.theta0))) return s;
        a->w0_bound = 1;
        if ((s = st_batch_init(&a->batch, c->batch_size, c->max_seq_len))) return s;
    }
    return ST_OK;
}

uint64_t st__align_hash(const st_trainer *t) { return t->adf ? t->adf->hash : 0; }
uint64_t st__align_mark(const st_trainer *t) { return t->adf ? t->adf->pos : 0; }
void st__align_rewind(st_trainer *t, uint64_t pos) {
    if (t->adf) t->adf->pos = pos;
}

int st__lisa_align_step(const st_trainer *t) {
    return t->adf && t->cfg.lisa == ST_ON && st_lisa_is_align(&t->adf->sched, t->step);
}

const st_lisa_schedule *st__lisa_schedule(const st_trainer *t) {
    return t->adf && t->cfg.lisa == ST_ON ? &t->adf->sched : NULL;
}
const float *st__lisa_anchor(const st_trainer *t) { return t->adf ? t->adf->anchor : NULL; }

/* The next nb rows of this rank's stream into a->rows. */
static void next_rows(st_trainer *t, int nb) {
    st__align_defense *a = t->adf;
    const uint64_t world = (uint64_t)(t->cfg.comm.world > 0 ? t->cfg.comm.world : 1);
    const uint64_t rank = (uint64_t)(t->cfg.comm.rank > 0 ? t->cfg.comm.rank : 0);
    for (int i = 0; i < nb; i++) a->rows[i] = a->perm[(a->pos + (uint64_t)i * world + rank) % a->n_use];
    a->pos += (uint64_t)nb * world;
}

st_status st__lisa_window(st_trainer *t, int *n_micro, double counts[2]) {
    const st_train_config *c = &t->cfg;
    st_status s = ST_OK;
    *n_micro = 0;
    for (int i = 0; i < c->grad_accum && !s; i++) {
        next_rows(t, c->batch_size);
        if ((s = st_collate(t->adf->data, t->adf->rows, c->batch_size, c->max_seq_len, c->pad_id, 0, &t->batches[i])))
            break;
        *n_micro = i + 1;
        counts[0] += (double)t->batches[i].n_targets;
        for (int r = 0; r < t->batches[i].B; r++) counts[1] += t->batches[i].lengths[r];
    }
    return s;
}

double st__lisa_prox(st_trainer *t) {
    const st_train_config *c = &t->cfg;
    if (!t->adf || c->lisa != ST_ON || !(c->lisa_rho > 0) || !st_lisa_prox_on(t->step, t->max_steps)) return NAN;
    return st_l2sp_coupled(t->grads, t->theta, t->adf->anchor, t->n, c->lisa_rho);
}

void st__lisa_after_update(st_trainer *t) {
    if (!t->adf || t->cfg.lisa != ST_ON || t->step < 1) return;
    if (st_lisa_switch_after(&t->adf->sched, t->step - 1)) memcpy(t->adf->anchor, t->theta, t->n * sizeof(float));
}

static st_status comm_f64(st_trainer *t, double *x, size_t n) {
    return t->cfg.comm.sum_f64 ? t->cfg.comm.sum_f64(x, n, t->cfg.comm.user) : ST_OK;
}

st_status st__safegrad(st_trainer *t, int64_t step_no, double *loss_align, st_safegrad_info *info) {
    const st_train_config *c = &t->cfg;
    st__align_defense *a = t->adf;
    *loss_align = NAN;
    memset(info, 0, sizeof *info);
    if (!a || c->safegrad != ST_ON || (c->safegrad_project != ST_ON && c->safegrad_rho == 0)) return ST_OK;
    const st_config *mc = &t->m->config;
    const int V = mc->vocab_size;
    memcpy(a->gu, t->grads, t->n * sizeof(float)); /* g_u */
    memset(t->grads, 0, t->n * sizeof(float));
    next_rows(t, c->batch_size);
    st_batch *b = &a->batch;
    st_status s = st_collate(a->data, a->rows, c->batch_size, c->max_seq_len, c->pad_id, 0, b);
    if (s) return s;
    double R = (double)b->n_targets, La = 0.0;
    if ((s = comm_f64(t, &R, 1))) return s;
    if (!(R > 0))
        return st_error(ST_ERR_ARG, "step %lld: safegrad: the alignment batch has 0 response tokens (rows truncated "
                        "at max_seq_len %d?)", (long long)step_no, c->max_seq_len);
    if (b->n_targets > a->cap_rows) { /* p_θ0 at the response positions only, never [B, T, V] */
        free(a->logp0);
        a->cap_rows = (int)b->n_targets;
        a->logp0 = st_malloc((size_t)a->cap_rows * (size_t)V * sizeof(float));
        if (!a->logp0) {
            a->cap_rows = 0;
            return st_error(ST_ERR_NOMEM, "safegrad: cannot allocate log p_θ0 of %lld rows", (long long)b->n_targets);
        }
    }
    int nr = 0;
    if (b->n_targets > 0) {
        ST_PROF("safegrad_ref", s = st_train_logprobs(mc, &a->w0, t->acts, b->inputs, b->targets, b->B, b->T,
                                                      a->logp0, a->cap_rows, &nr));
        if (!s) ST_PROF("safegrad_fwd", s = st_train_forward_kl(mc, &t->m->w, t->acts, b->inputs, b->targets, a->logp0,
                                                               nr, b->B, b->T, R, &La));
        if (!s) ST_PROF("safegrad_bwd", s = st_train_backward(mc, &t->m->w, t->acts, &t->gw));
        if (s) return s;
    }
    if (c->comm.sum_f32 && (s = c->comm.sum_f32(t->grads, t->n, c->comm.user))) return s;
    if ((s = comm_f64(t, &La, 1))) return s;
    *loss_align = La;
    ST_PROF("safegrad_combine", st_safegrad_combine(t->grads, a->gu, t->grads, t->n, c->safegrad_rho,
                                                    c->safegrad_project == ST_ON, info));
    return ST_OK;
}

const float *st__safegrad_gu(const st_trainer *t) { return t->adf ? t->adf->gu : NULL; }
const st_batch *st__safegrad_batch(const st_trainer *t) { return t->adf && t->adf->gu ? &t->adf->batch : NULL; }
