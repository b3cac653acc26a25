/* trainer_defense.c - the trainer's defenses against θ_0 on the task step (DEFENSES.md §4, §8):
 * constrained SFT (θ_0's log-probability of each training target computed when its row is first
 * trained on, and cached; over MPI ranks all of them at the first step),
 * KL(p_θ0 ‖ p_θ) on the task batch (θ_0's hidden states per micro-batch, its distributions in
 * chunks of rows at the response positions only) and EWC (a diagonal Fisher from the alignment set
 * computed once at θ_0). θ_0's forwards run on a second weight view of the θ_0 buffer the trainer
 * keeps (t->ema.theta0), never on a copy. The Fisher is computed at the first step of a fresh run;
 * it and the cache are saved in every checkpoint (x-csft_logp0.bin, x-ewc_fisher.bin), so a resumed
 * run reads them back instead of recomputing: resume stays bit-identical. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/ewc.h"
#include "safetune/head_terms.h"
#include "safetune/kernels.h"
#include "train/trainer_internal.h"

#define KL_CHUNK 64 /* rows of θ_0 logits alive at once: [64, V] */

enum { MODE_TRAIN = 0, MODE_CACHE = 1 };

struct st__defense {
    int csft, kl, ewc;
    int ready;                /* cache / Fisher computed (or restored by resume) */
    int mode;                 /* what apply computes */
    int T;                    /* columns of the batch being forwarded */
    const uint32_t *cur_rows; /* dataset rows of the batch being forwarded [B] */
    uint32_t *rows;           /* dataset rows of the window's micro-batches [grad_accum][batch_size] */
    float *logp0;             /* CSFT: log p_θ0 of token k given ids[..k) at data index k [n_tokens] */
    size_t n_tokens;
    float *fisher;            /* EWC: F [t->n] */
    double fisher_mean;
    double setup_s;           /* seconds of the one-off pass of this step (reported once) */
    int *pos;                 /* response position t of each [B*T] column (1-based; 0 untrained) */
    double *w, *klr;          /* per compact row: CSFT weight, KL(p_θ0‖p_θ) */
    float *lnf0;              /* KL: θ_0's final hidden states [B*T, C] */
    float *in0, *logits0;     /* KL: gathered rows [KL_CHUNK, C], θ_0 logits [KL_CHUNK, V] */
    double win[2];            /* window sums: CSFT objective, λ·Σ mask·KL/N */
    st_weights w0;            /* θ_0 views (full fine-tuning) */
    st_lora_weights lw0;      /* θ_0 views (LoRA) */
    st_head_term term;
};

int st__defense_on(const st_train_config *c) { return c->csft_beta > 0 || c->kl_lambda > 0 || c->ewc_lambda > 0; }

void st__defense_free(st_trainer *t) {
    struct st__defense *d = t->def;
    if (!d) return;
    free(d->rows);
    st_free_aligned(d->logp0);
    st_free_aligned(d->fisher);
    free(d->pos);
    free(d->w);
    free(d->klr);
    st_free_aligned(d->lnf0);
    st_free_aligned(d->in0);
    st_free_aligned(d->logits0);
    st_weights_unbind(&d->w0);
    st_lora_unbind(&d->lw0);
    free(d);
    t->def = NULL;
}

/* The head term (backward.h): the cache pass stores θ_0's log p of each target; the training pass
 * runs st_head_row on every compact row (with θ_0's logits of the row for KL). */
static st_status apply(void *user, float *logits, const int32_t *rows, const int32_t *targets,
                       const float *dlosses, float *losses, int Nt, int V) {
    st_trainer *t = user;
    struct st__defense *d = t->def;
    const st_train_config *c = &t->cfg;
    const int T = d->T;
    const size_t *off = t->data->offsets;
    if (d->mode == MODE_CACHE) {
#pragma omp parallel for schedule(static) if (Nt > 1)
        for (int j = 0; j < Nt; j++) {
            float *l = logits + (size_t)j * V;
            const size_t k = off[d->cur_rows[rows[j] / T]] + (size_t)(rows[j] % T) + 1;
            losses[j] = st_head_row(l, NULL, V, targets[j], 0.0f, 0.0, 0.0f, 0.0f, NULL, NULL);
            if (isnan(d->logp0[k])) d->logp0[k] = -losses[j]; /* a row keeps the value of its first batch */
        }
        return ST_OK;
    }
    const int C = t->m->config.hidden_size;
    const float lam = (float)c->kl_lambda;
    for (int j0 = 0; j0 < Nt; j0 += KL_CHUNK) {
        const int n = Nt - j0 < KL_CHUNK ? Nt - j0 : KL_CHUNK;
        if (d->kl) { /* θ_0's logits of these rows, from its hidden states */
            for (int j = 0; j < n; j++)
                memcpy(d->in0 + (size_t)j * C, d->lnf0 + (size_t)rows[j0 + j] * C, (size_t)C * sizeof(float));
            st_backend_get()->matmul_forward(d->logits0, d->in0, d->w0.lm_head, NULL, n, C, V);
        }
#pragma omp parallel for schedule(static) if (n > 1)
        for (int j = j0; j < j0 + n; j++) {
            double beta_t = 0.0;
            float ref = 0.0f;
            if (d->csft) {
                beta_t = st_csft_beta_t(c->csft_beta, c->csft_first_factor, c->csft_factor, c->csft_prefix,
                                        d->pos[rows[j]]);
                ref = d->logp0[off[d->cur_rows[rows[j] / T]] + (size_t)(rows[j] % T) + 1];
            }
            losses[j] = st_head_row(logits + (size_t)j * V, d->kl ? d->logits0 + (size_t)(j - j0) * V : NULL, V,
                                    targets[j], dlosses[j], beta_t, ref, d->kl ? lam * dlosses[j] : 0.0f,
                                    &d->klr[j], &d->w[j]);
        }
    }
    for (int j = 0; j < Nt; j++) { /* in row order: the same sums at any thread count */
        d->win[0] += (double)dlosses[j] * d->w[j] * (double)losses[j];
        d->win[1] += (double)lam * (double)dlosses[j] * d->klr[j];
    }
    return ST_OK;
}

st_status st__defense_new(st_trainer *t) {
    const st_train_config *c = &t->cfg;
    if (!st__defense_on(c)) return ST_OK;
    struct st__defense *d = st_calloc(1, sizeof *d);
    if (!d) return ST_ERR_NOMEM;
    t->def = d;
    d->csft = c->csft_beta > 0;
    d->kl = c->kl_lambda > 0;
    d->ewc = c->ewc_lambda > 0;
    const st_config *mc = &t->m->config;
    const size_t maxN = (size_t)c->batch_size * (size_t)c->max_seq_len;
    st_status s = t->adapter ? st_lora_bind(&d->lw0, mc, &c->lora, &t->adapter->layout, t->ema.theta0)
                             : st_weights_bind(&d->w0, mc, &t->m->layout, t->ema.theta0);
    if (s) return s;
    d->rows = st_malloc((size_t)c->grad_accum * (size_t)c->batch_size * sizeof *d->rows);
    d->pos = st_calloc(maxN, sizeof *d->pos);
    d->w = st_calloc(maxN, sizeof *d->w);
    d->klr = st_calloc(maxN, sizeof *d->klr);
    if (!d->rows || !d->pos || !d->w || !d->klr) return ST_ERR_NOMEM;
    d->term = (st_head_term){apply, t};
    if (d->csft) {
        d->n_tokens = t->data->offsets[t->data->n];
        d->logp0 = st_alloc_aligned(d->n_tokens * sizeof(float) + 64);
        if (!d->logp0) return st_error(ST_ERR_NOMEM, "csft_beta: cannot allocate θ_0's log-probability cache "
                                       "(%zu tokens)", d->n_tokens);
        for (size_t i = 0; i < d->n_tokens; i++) d->logp0[i] = NAN; /* untrained positions */
        if ((s = st_trainer_add_state(t, "csft_logp0", d->logp0, d->n_tokens * sizeof(float)))) return s;
    }
    if (d->kl) {
        const size_t C = (size_t)mc->hidden_size, V = (size_t)mc->vocab_size;
        d->lnf0 = st_alloc_aligned(maxN * C * sizeof(float));
        d->in0 = st_alloc_aligned((size_t)KL_CHUNK * C * sizeof(float));
        d->logits0 = st_alloc_aligned((size_t)KL_CHUNK * V * sizeof(float));
        if (!d->lnf0 || !d->in0 || !d->logits0) return ST_ERR_NOMEM;
    }
    if (d->ewc) {
        d->fisher = st_alloc_aligned(t->n * sizeof(float));
        if (!d->fisher)
            return st_error(ST_ERR_NOMEM, "ewc_lambda: cannot allocate the Fisher (%zu MiB)", t->n * sizeof(float) >> 20);
        memset(d->fisher, 0, t->n * sizeof(float));
        if ((s = st_trainer_add_state(t, "ewc_fisher", d->fisher, t->n * sizeof(float)))) return s;
    }
    return ST_OK;
}

/* forward of θ_0 (no dropout) on batch b with the given head term, loss / normaliser */
static st_status forward0(st_trainer *t, const st_batch *b, float normaliser) {
    const st_config *mc = &t->m->config;
    if (t->adapter)
        return st_lora_base_train_forward(t->base, &t->adapter->lc, &t->def->lw0, 0, t->acts, b->inputs,
                                          b->targets, b->loss_mask, b->B, b->T, normaliser, NULL);
    return st_train_forward(mc, &t->def->w0, t->acts, b->inputs, b->targets, b->loss_mask, b->B, b->T, normaliser,
                            NULL);
}

/* CSFT over MPI ranks: log p_θ0 of every trained target of the training split, batch_size rows at
 * a time, on every rank. A rank trains only its own micro-batches, so a lazily filled cache would
 * differ between ranks and rank 0's checkpoint would miss the others' rows. */
static st_status csft_cache_all(st_trainer *t) {
    struct st__defense *d = t->def;
    const st_train_config *c = &t->cfg;
    st_batch *b = &t->eval_batch;
    st_status s = ST_OK;
    d->mode = MODE_CACHE;
    st_train_acts_set_head_term(t->acts, &d->term);
    for (size_t r0 = 0; r0 < t->split.n_train && !s; r0 += (size_t)c->batch_size) {
        const size_t left = t->split.n_train - r0;
        const int nb = (int)(left < (size_t)c->batch_size ? left : (size_t)c->batch_size);
        if ((s = st_collate(t->data, t->split.train + r0, nb, c->max_seq_len, c->pad_id, 0, b))) break;
        if (b->n_targets == 0) continue;
        d->cur_rows = t->split.train + r0;
        d->T = b->T;
        s = forward0(t, b, 1.0f);
    }
    st_train_acts_set_head_term(t->acts, NULL);
    d->mode = MODE_TRAIN;
    return s;
}

/* CSFT on one rank: log p_θ0 of the trained targets of micro-batch b (rows cur_rows) that are not cached yet,
 * computed when a row is first trained on: a short run over a large split (the study's 16 rows of
 * 4,489) caches only what it uses. The cache is checkpointed, so a resumed run keeps the values of
 * the batches that made them and computes the rest in the same batches as an unbroken run. */
static st_status csft_cache_batch(st_trainer *t, const st_batch *b) {
    if (t->world > 1) return ST_OK; /* filled whole in st__defense_prepare (csft_cache_all) */
    struct st__defense *d = t->def;
    const size_t *off = t->data->offsets;
    int need = 0;
    for (int r = 0; r < b->B && !need; r++)
        for (int k = 0; k < b->T && !need; k++)
            need = b->targets[(size_t)r * b->T + k] >= 0 && isnan(d->logp0[off[d->cur_rows[r]] + (size_t)k + 1]);
    if (!need) return ST_OK;
    d->mode = MODE_CACHE;
    st_train_acts_set_head_term(t->acts, &d->term);
    st_status s = forward0(t, b, 1.0f);
    st_train_acts_set_head_term(t->acts, NULL);
    d->mode = MODE_TRAIN;
    return s;
}

/* EWC: F = mean over the alignment rows of the squared gradient of each row's mean response
 * NLL at θ_0 (batch of one); t->grads is the scratch (zeroed by the step afterwards). */
static st_status ewc_fisher(st_trainer *t) {
    struct st__defense *d = t->def;
    const st_train_config *c = &t->cfg;
    const st_config *mc = &t->m->config;
    const st_tokenized *al = c->align_data;
    st_batch *b = &t->eval_batch;
    st_status s = ST_OK;
    size_t used = 0;
    memset(d->fisher, 0, t->n * sizeof(float));
    for (size_t r = 0; r < al->n && !s; r++) {
        const uint32_t row = (uint32_t)r;
        if ((s = st_collate(al, &row, 1, c->max_seq_len, c->pad_id, 0, b))) break;
        if (b->n_targets == 0) continue; /* all its answer truncated away */
        memset(t->grads, 0, t->n * sizeof(float));
        if ((s = forward0(t, b, (float)b->n_targets))) break;
        s = t->adapter ? st_lora_base_train_backward(t->base, t->acts, &t->lgw)
                       : st_train_backward(mc, &d->w0, t->acts, &t->gw);
        if (s) break;
        st_ewc_fisher_add(d->fisher, t->grads, t->n);
        used++;
    }
    memset(t->grads, 0, t->n * sizeof(float));
    if (s) return s;
    if (used == 0)
        return st_error(ST_ERR_ARG, "ewc_lambda: none of the %zu alignment rows has an answer token within "
                        "max_seq_len %d: no Fisher", al->n, c->max_seq_len);
    d->fisher_mean = st_ewc_fisher_finish(d->fisher, t->n, used);
    return ST_OK;
}

st_status st__defense_prepare(st_trainer *t) {
    struct st__defense *d = t->def;
    d->setup_s = 0;
    d->win[0] = d->win[1] = 0;
    if (d->ready) return ST_OK;
    if (!d->csft && !d->ewc) { /* KL alone: nothing to compute once */
        d->ready = 1;
        return ST_OK;
    }
    if (t->step > 0) { /* resumed: the checkpoint restored the cache and the Fisher */
        d->ready = 1;
        if (d->ewc) d->fisher_mean = st_ewc_fisher_finish(d->fisher, t->n, 1);
        return ST_OK;
    }
    const double t0 = st_time_now();
    st_status s = ST_OK;
    if (d->csft && t->world > 1 && (s = csft_cache_all(t))) return st_error_wrap(s, "csft_beta: θ_0's log-probability cache");
    if (d->ewc && (s = ewc_fisher(t))) return st_error_wrap(s, "ewc_lambda: the Fisher of the alignment set");
    d->ready = 1;
    d->setup_s = st_time_now() - t0;
    return ST_OK;
}

void st__defense_note_rows(st_trainer *t, int micro, const uint32_t *rows, int n) {
    memcpy(t->def->rows + (size_t)micro * (size_t)t->cfg.batch_size, rows, (size_t)n * sizeof *rows);
}

st_status st__defense_micro(st_trainer *t, int micro) {
    struct st__defense *d = t->def;
    if (!d->csft && !d->kl) return ST_OK;
    const st_batch *b = &t->batches[micro];
    d->cur_rows = d->rows + (size_t)micro * (size_t)t->cfg.batch_size;
    d->T = b->T;
    if (d->csft) {
        st_status s = csft_cache_batch(t, b);
        if (s) return st_error_wrap(s, "csft_beta: θ_0's log-probability cache");
    }
    if (d->csft) /* response position: 1 + the trained targets just before it in the row */
        for (int r = 0; r < b->B; r++)
            for (int k = 0, run = 0; k < b->T; k++) {
                run = b->targets[(size_t)r * b->T + k] >= 0 ? run + 1 : 0;
                d->pos[(size_t)r * b->T + k] = run;
            }
    if (d->kl) {
        st_status s = st_train_forward_hidden(&t->m->config, &d->w0, t->acts, b->inputs, b->B, b->T, d->lnf0);
        if (s) return s;
    }
    st_train_acts_set_head_term(t->acts, &d->term);
    return ST_OK;
}

double st__defense_penalty(st_trainer *t, size_t off, size_t len) {
    return st_ewc_penalty(t->grads + off, t->theta + off, t->ema.theta0 + off, t->def->fisher + off, len,
                          t->cfg.ewc_lambda);
}

void st__defense_metrics(st_trainer *t, st_step_metrics *m) {
    struct st__defense *d = t->def;
    m->csft_loss = d->csft ? d->win[0] : NAN;
    m->kl = d->kl ? d->win[1] : NAN;
    m->setup_s = d->setup_s;
    m->fisher_mean = d->ewc && d->setup_s > 0 ? d->fisher_mean : NAN;
}

double *st__defense_sums(st_trainer *t) { return t->def->win; }
