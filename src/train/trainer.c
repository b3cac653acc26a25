/* trainer.c - st_trainer lifecycle, one optimiser step and the held-out loss (trainer.h).
 * Step order after Hugging Face Trainer / llm.c: zero grads, accumulate micro-batches with the
 * window's target count as the loss normaliser, all-reduce, clip, schedule, AdamW, EMA. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/dist.h"
#include "safetune/l2sp.h"
#include "safetune/train_settings.h"
#include "train/reduce.h"
#include "train/trainer_internal.h"

int32_t st_train_pad_id(const st_model *m) {
    const int32_t eos = m->tokenizer ? st_tokenizer_eos_id(m->tokenizer) : -1;
    return eos >= 0 && eos < m->config.vocab_size ? eos : 0;
}

/* x[0..n) = 0 on every thread (one thread's memset writes ~9 GB/s here; 135M floats per step) */
static void zero_floats(float *x, size_t n) {
    const size_t chunk = 1u << 20, nc = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nc; c++) memset(x + c * chunk, 0, ((c + 1) * chunk < n ? chunk : n - c * chunk) * sizeof *x);
}

static int world_of(const st_trainer_comm *c) { return c->world > 0 ? c->world : 1; }

void st_trainer_free(st_trainer *t) {
    if (!t) return;
    st__align_free(t);
    st_matmul_set_precision(t->saved_prec);
    st__defense_free(t);
    if (t->batches)
        for (int i = 0; i < t->cfg.grad_accum; i++) st_batch_free(&t->batches[i]);
    free(t->batches);
    st_batch_free(&t->eval_batch);
    st_train_acts_free(t->acts);
    st_data_sampler_free(&t->sampler);
    st_data_split_free(&t->split);
    st_ema_free(&t->ema);
    st_optim_free(&t->opt);
    st_weights_unbind(&t->gw);
    st_lora_unbind(&t->lgw);
    st_lora_free(t->adapter);
    st_lora_base_free(t->own_base);
    st_free_aligned(t->grads);
    free(t);
}

static st_status check_config(const st_train_config *c, size_t n_rows) {
    if (n_rows == 0) return st_error(ST_ERR_ARG, "training data: the dataset has no rows");
    if (c->ewc_lambda > 0 && (!c->align_data || c->align_data->n == 0))
        return st_error(ST_ERR_ARG, "ewc_lambda = %g needs the alignment set (D_align) for its Fisher: give the "
                        "AdvBench half-a refusal pairs of the aligned start (train --align-dir DIR), or set ewc_lambda 0",
                        c->ewc_lambda);
    return st_train_config_validate(c);
}

st_status st_trainer_new(st_model *m, const st_tokenized *data, const st_train_config *cfg,
                         st_trainer **out) {
    *out = NULL;
    st_status s = check_config(cfg, data ? data->n : 0);
    if (s) return s;
    if (cfg->pad_id < 0 || cfg->pad_id >= m->config.vocab_size)
        return st_error(ST_ERR_ARG, "trainer: pad id %d outside the vocabulary [0, %d)",
                        cfg->pad_id, m->config.vocab_size);
    st_trainer *t = st_calloc(1, sizeof *t);
    if (!t) return ST_ERR_NOMEM;
    t->saved_prec = st_matmul_get_precision();
    t->cfg = *cfg;
    t->m = m;
    t->data = data;
    { /* FNV-1a 64 (Fowler-Noll-Vo) over the rows' lengths, token ids and loss mask */
        uint64_t h = 0xcbf29ce484222325ULL;
#define ST_FNV(ptr, nbytes)                                                                      \
        for (size_t i_ = 0; i_ < (nbytes); i_++) h = (h ^ ((const uint8_t *)(ptr))[i_]) * 0x100000001b3ULL
        ST_FNV(data->offsets, (data->n + 1) * sizeof *data->offsets);
        ST_FNV(data->ids, data->offsets[data->n] * sizeof *data->ids);
        ST_FNV(data->mask, data->offsets[data->n] * sizeof *data->mask);
#undef ST_FNV
        t->data_hash = h;
    }
    const int lora = cfg->finetune == ST_FINETUNE_LORA;
    if (cfg->finetune != ST_FINETUNE_FULL && !lora) {
        s = st_error(ST_ERR_ARG, "finetune: %d is neither full nor lora", cfg->finetune);
        goto fail;
    }
    if (lora) { /* the adapter is the trained vector; the base stays as loaded */
        if ((s = st_lora_new(&m->config, &cfg->lora, &t->adapter))) goto fail;
        if (cfg->base) { /* the caller's base (borrowed): the model's shape and the asked precision */
            const st_lora_base *b = cfg->base;
            if (b->precision != (cfg->base_bf16 ? ST_BASE_BF16 : ST_BASE_F32) ||
                b->layout.n_floats != m->layout.n_floats || b->config.hidden_size != m->config.hidden_size ||
                b->config.num_hidden_layers != m->config.num_hidden_layers ||
                b->config.vocab_size != m->config.vocab_size) {
                s = st_error(ST_ERR_ARG, "trainer: the given frozen base (%s, %zu weights) is not the model's "
                             "(%s asked, %zu weights)", b->precision == ST_BASE_BF16 ? "bf16" : "fp32",
                             b->layout.n_floats, cfg->base_bf16 ? "bf16" : "fp32", m->layout.n_floats);
                goto fail;
            }
            t->base = b;
        } else {
            if (!m->params) {
                s = st_error(ST_ERR_ARG, "trainer: the model has no fp32 weights (loaded as a bf16 base): "
                             "pass that base as st_train_config.base");
                goto fail;
            }
            if ((s = st_lora_base_new(m, cfg->base_bf16 ? ST_BASE_BF16 : ST_BASE_F32, &t->own_base))) goto fail;
            t->base = t->own_base;
        }
        if (cfg->lora_init)
            memcpy(t->adapter->params, cfg->lora_init, t->adapter->layout.n_floats * sizeof(float));
        else
            st_lora_init_params(&t->adapter->layout, t->adapter->params, cfg->seed ^ 0x10AADA7AULL);
        t->theta = t->adapter->params;
        t->n = t->adapter->layout.n_floats;
    } else {
        if (cfg->base_bf16) {
            s = st_error(ST_ERR_ARG, "base_precision: bf16 holds a frozen base; it needs finetune lora");
            goto fail;
        }
        if (!m->params) {
            s = st_error(ST_ERR_ARG, "finetune full: the model has no fp32 weights (loaded as a bf16 base for "
                         "LoRA); load it with st_model_load");
            goto fail;
        }
        t->theta = m->params;
        t->n = m->layout.n_floats;
    }
    const int world = world_of(&cfg->comm);
    t->world = world;
    t->rank = cfg->comm.rank;
    if (world > 1 && (!cfg->comm.sum_f32 || !cfg->comm.sum_f64 || cfg->comm.rank < 0 || cfg->comm.rank >= world)) {
        s = st_error(ST_ERR_ARG, "trainer: world %d needs sum_f32, sum_f64 and a rank in [0, %d)", world, world);
        goto fail;
    }
    t->zero1 = cfg->comm.zero1 && world > 1;
    if (t->zero1 && (!cfg->comm.rs_f32 || !cfg->comm.ag_f32)) {
        s = st_error(ST_ERR_ARG, "trainer: zero1 needs the reduce-scatter and allgather of the comm");
        goto fail;
    }
    if (world > 1 && (cfg->lisa == ST_ON || cfg->safegrad == ST_ON)) {
        s = st_error(ST_ERR_ARG, "%s: not implemented over MPI ranks (its alignment batches are not split over "
                     "the ranks); run it in one process", cfg->lisa == ST_ON ? "lisa" : "safegrad");
        goto fail;
    }
    if (t->zero1 && cfg->optim.kind != ST_OPTIM_ADAMW) {
        s = st_error(ST_ERR_ARG, "zero1: sharded optimiser state is implemented for AdamW only (optim = sgd); "
                     "run without --zero1");
        goto fail;
    }
    if (cfg->n_train_only > data->n) {
        s = st_error(ST_ERR_ARG, "n_train_only %zu is more than the %zu rows", cfg->n_train_only, data->n);
        goto fail;
    }
    /* the split covers the user rows only; the last n_train_only rows (safety data) always train */
    if ((s = st_data_split_make(data->n - cfg->n_train_only, cfg->val_fraction, cfg->val_count, cfg->seed, &t->split)))
        goto fail;
    if (cfg->n_train_only) {
        uint32_t *tr = st_realloc(t->split.train, (t->split.n_train + cfg->n_train_only) * sizeof *tr);
        if (!tr) { s = ST_ERR_NOMEM; goto fail; }
        t->split.train = tr;
        for (size_t i = data->n - cfg->n_train_only; i < data->n; i++) tr[t->split.n_train++] = (uint32_t)i;
    }
    if ((size_t)cfg->batch_size > t->split.n_train) {
        s = st_error(ST_ERR_ARG, "batch_size = %d is larger than the %zu training rows "
                     "(%zu rows, %zu held out for validation); lower batch_size or add data",
                     cfg->batch_size, t->split.n_train, data->n, t->split.n_val);
        goto fail;
    }
    /* one global data order on every rank: the ranks share out each window's micro-batches */
    if ((s = st_data_sampler_init(&t->sampler, t->split.train, t->split.n_train, cfg->seed + 1, 1, 0, 1)))
        goto fail;
    st_rng_seed(&t->rng, cfg->seed ^ 0x5EEDULL);
    /* windows per epoch: a window never crosses an epoch's end (trainer.h) */
    const size_t window = (size_t)cfg->batch_size * (size_t)cfg->grad_accum;
    const int64_t per_epoch = (int64_t)((t->split.n_train + window - 1) / window);
    t->max_steps = cfg->max_steps;
    if (t->max_steps == 0) t->max_steps = (int64_t)ceil(cfg->epochs * (double)per_epoch - 1e-9);
    if (t->max_steps < 1) t->max_steps = 1;
    t->cfg.sched.total_steps = t->max_steps;
    if ((s = st_schedule_validate(&t->cfg.sched))) goto fail;

    t->grads = st_alloc_aligned(t->n * sizeof(float));
    if (!t->grads) {
        s = st_error(ST_ERR_NOMEM, "trainer: cannot allocate %zu MiB of gradients",
                     t->n * sizeof(float) >> 20);
        goto fail;
    }
    memset(t->grads, 0, t->n * sizeof(float));
    if ((s = lora ? st_lora_bind(&t->lgw, &m->config, &cfg->lora, &t->adapter->layout, t->grads)
                  : st_weights_bind(&t->gw, &m->config, &m->layout, t->grads)))
        goto fail;
    t->off = 0;
    t->len = t->n;
    if (t->zero1) st_dist_slice(t->n, t->rank, world, &t->off, &t->len);
    if ((s = st_optim_init_slice(&t->opt, &cfg->optim, lora ? &t->adapter->layout : &m->layout, t->n, t->off,
                                 t->len)))
        goto fail;
    {
        float dec[ST_EMA_MAX];
        for (int j = 0; j < cfg->n_ema; j++) dec[j] = (float)cfg->ema_decays[j];
        if ((s = st_ema_init(&t->ema, t->theta + t->off, t->len, dec, cfg->n_ema,
                             cfg->ema_start > 0 ? cfg->ema_start : 1, cfg->ema_every > 0 ? cfg->ema_every : 1)))
            goto fail;
    }
    /* LoRA: a chunked lm_head (its head is frozen), no [tokens, vocab] logits buffer */
    if ((s = lora ? st_lora_train_acts_new(&m->config, cfg->batch_size, cfg->max_seq_len, 0, &t->acts)
                  : st_train_acts_new(&m->config, cfg->batch_size, cfg->max_seq_len, &t->acts)))
        goto fail;
    t->batches = st_calloc((size_t)cfg->grad_accum, sizeof *t->batches);
    if (!t->batches) { s = ST_ERR_NOMEM; goto fail; }
    for (int i = 0; i < cfg->grad_accum && !s; i++)
        s = st_batch_init(&t->batches[i], cfg->batch_size, cfg->max_seq_len);
    if (!s) s = st_batch_init(&t->eval_batch, cfg->batch_size, cfg->max_seq_len);
    if (!s) s = st__align_new(t); /* Lisa / SafeGrad: alignment set, anchor, θ_0 view */
    if (s) goto fail;
    if ((s = st__defense_new(t))) goto fail;
    const char *dbg = getenv("SAFETUNE_DEBUG_NAN_STEP");
    t->debug_nan_step = dbg ? atoll(dbg) : 0;
    st_matmul_set_precision(cfg->bf16 ? ST_MATMUL_BF16 : ST_MATMUL_F32);
    *out = t;
    return ST_OK;
fail:
    st_trainer_free(t);
    return s;
}

static st_status comm_f64(st_trainer *t, double *x, size_t n) {
    return t->cfg.comm.sum_f64 ? t->cfg.comm.sum_f64(x, n, t->cfg.comm.user) : ST_OK;
}

/* Nonzero dropout seed of micro-batch i of step `step` (splitmix64 of the run seed and both). */
static uint64_t lora_dropout_seed(uint64_t seed, int64_t step, int i) {
    uint64_t z = seed ^ ((uint64_t)step * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)(i + 1) << 48);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return z ? z : 1;
}

/* Collective agreement on a status (every rank calls it; world 1: s itself). */
static st_status agree(st_trainer *t, st_status s) {
    return t->world > 1 && t->cfg.comm.agree ? t->cfg.comm.agree(s, t->cfg.comm.user) : s;
}

st_status st_trainer_step(st_trainer *t, st_step_metrics *mo) {
    const st_train_config *c = &t->cfg;
    const st_config *mc = &t->m->config;
    const double t0 = st_time_now();
    const int64_t step_no = t->step + 1;
    /* collate the whole window first: the normaliser needs its target count. Every rank walks
     * the one global order; micro-batch i is collated and run by rank i % world */
    st_data_sampler saved_pos = t->sampler; /* (epoch, pos) restored on failure */
    const uint64_t align_pos0 = st__align_mark(t); /* D_align stream, likewise */
    const int lisa_align = st__lisa_align_step(t); /* Lisa: this window comes from D_align */
    uint32_t *rows = st_malloc((size_t)c->batch_size * sizeof *rows);
    double counts[2] = {0, 0}; /* targets, tokens (this rank's micro-batches) */
    st_status s = rows ? ST_OK : ST_ERR_NOMEM;
    if (!s && t->def) s = st__defense_prepare(t); /* CSFT cache, EWC Fisher: first step */
    const double setup_s = t->def ? st_time_now() - t0 : 0.0;
    if (!s && !lisa_align && t->sampler.pos >= t->sampler.n_shard) /* the last window ended the epoch: next one */
        s = st_data_sampler_seek(&t->sampler, t->sampler.epoch + 1, 0);
    /* the rows of this window: grad_accum micro-batches, or what is left of the epoch (a Lisa
     * alignment window: grad_accum micro-batches of D_align; the user stream waits) */
    size_t left = t->sampler.n_shard - t->sampler.pos, want = (size_t)c->batch_size * (size_t)c->grad_accum;
    if (want > left) want = left;
    int n_micro = (int)((want + (size_t)c->batch_size - 1) / (size_t)c->batch_size);
    t->n_micro = 0;
    if (lisa_align) {
        if (!s) s = st__lisa_window(t, &t->n_micro, counts);
        n_micro = t->n_micro;
    }
    for (int i = 0; i < n_micro && !s && !lisa_align; i++) {
        const size_t done = (size_t)i * (size_t)c->batch_size;
        const int nb = (int)(want - done < (size_t)c->batch_size ? want - done : (size_t)c->batch_size);
        for (int r = 0; r < nb; r++) rows[r] = st_data_sampler_next(&t->sampler);
        if (i % t->world != t->rank) continue;
        s = st_collate(t->data, rows, nb, c->max_seq_len, c->pad_id, 0, &t->batches[i]);
        if (s) break;
        if (t->def) st__defense_note_rows(t, i, rows, nb);
        t->n_micro = i + 1;
        counts[0] += (double)t->batches[i].n_targets;
        for (int r = 0; r < t->batches[i].B; r++) counts[1] += t->batches[i].lengths[r];
    }
    free(rows);
    const int64_t epoch0 = saved_pos.epoch;
    const size_t pos0 = saved_pos.pos;
    s = agree(t, s);
    if (!s) s = comm_f64(t, counts, 2);
    if (!s && counts[0] <= 0)
        s = st_error(ST_ERR_ARG, "step %lld: the accumulation window has 0 trained target tokens "
                     "(rows truncated at max_seq_len %d?)", (long long)step_no, c->max_seq_len);
    double normaliser = counts[0] > 0 ? counts[0] : 1.0;
    if (!s) ST_PROF("grad_zero", zero_floats(t->grads, t->n));
    double loss = 0.0;
    for (int i = t->rank; i < n_micro && !s; i += t->world) {
        const st_batch *b = &t->batches[i];
        float l = 0;
        if (t->def && (s = st__defense_micro(t, i))) break; /* θ_0's forward (KL), the head term */
        if (t->adapter) /* dropout masks: a function of (seed, step, micro-batch), as on resume */
            ST_PROF("forward_total", s = st_lora_base_train_forward(
                                         t->base, &t->adapter->lc, &t->adapter->w,
                                         lora_dropout_seed(c->seed, step_no, i), t->acts, b->inputs,
                                         b->targets, b->loss_mask, b->B, b->T, (float)normaliser, &l));
        else
            ST_PROF("forward_total", s = st_train_forward(mc, &t->m->w, t->acts, b->inputs, b->targets,
                                                          b->loss_mask, b->B, b->T,
                                                          (float)normaliser, &l));
        st_train_acts_set_head_term(t->acts, NULL);
        if (s) break;
        if (t->debug_nan_step == step_no) l = NAN;
        loss += l;
        if (!isfinite(l)) break;
        ST_PROF("backward_total", s = t->adapter ? st_lora_base_train_backward(t->base, t->acts, &t->lgw)
                                                 : st_train_backward(mc, &t->m->w, t->acts, &t->gw));
    }
    /* the loss first: a non-finite one stops every rank before the gradient traffic */
    if (t->world > 1) s = agree(t, s);
    if (!s) s = comm_f64(t, &loss, 1);
    if (!s && t->def) s = comm_f64(t, st__defense_sums(t), 2); /* CSFT objective, KL term */
    if (!s && !isfinite(loss))
        s = st_error(ST_ERR_NUMERIC, "step %lld: loss is %s; stopping before the update (lower "
                     "--lr, check the data and the model weights)", (long long)step_no,
                     isnan(loss) ? "nan" : "inf");
    const size_t off = t->off, len = t->len; /* the slice this rank updates (all of it without ZeRO-1) */
    t->comm_s = 0;
    if (!s && t->world > 1) {
        const double tc = st_time_now();
        ST_PROF("allreduce", s = t->zero1 ? c->comm.rs_f32(t->grads, t->n, c->comm.user)
                                          : c->comm.sum_f32(t->grads, t->n, c->comm.user));
        t->comm_s += st_time_now() - tc;
    }
    if (!s && t->debug_zero_grad) memset(t->grads + off, 0, len * sizeof *t->grads);
    float *g = t->grads + off, *th = t->theta + off;
    /* SafeGrad: g_a on an alignment batch, projection, g = g_u' + ρ·g_a (before clipping) */
    double loss_align = NAN;
    st_safegrad_info sgi = {NAN, NAN, NAN, 0};
    if (!s && c->safegrad == ST_ON && isfinite(loss)) s = st__safegrad(t, step_no, &loss_align, &sgi);
    /* Lisa: ρ(θ−a) toward the other phase's last weights, after the first 10% of the steps */
    double lisa_pen = NAN;
    if (!s && c->lisa == ST_ON) ST_PROF("lisa", lisa_pen = st__lisa_prox(t));
    /* coupled L2-SP: after the window normalisation (and the all-reduce), before clipping */
    double penalty = NAN;
    if (!s && c->l2sp_alpha > 0) {
        ST_PROF("l2sp", penalty = st_l2sp_coupled(g, th, t->ema.theta0, len, c->l2sp_alpha));
        if (t->zero1) s = comm_f64(t, &penalty, 1);
    }
    if (!s && c->ewc_lambda > 0) { /* EWC: the same place as L2-SP, on this rank's slice */
        ST_PROF("ewc", penalty = st__defense_penalty(t, off, len));
        if (t->zero1) s = comm_f64(t, &penalty, 1);
    }
    double gn = 0;
    float gscale = 1.0f;
    const int fused = st__trainer_update_fusable(t);
    if (!s) {
        /* the fused update applies the clipping factor itself (one pass less over the grads) */
        if (t->zero1) { /* ‖g‖² of the slices, summed over ranks (AdamW only: always fused) */
            double sq = st_reduce_sqdiff(g, NULL, len);
            if (!(s = comm_f64(t, &sq, 1))) {
                gn = sqrt(sq);
                gscale = st_clip_grad_scale(gn, c->max_grad_norm);
            }
        } else if (fused)
            ST_PROF("clip", gn = st_grad_norm(t->grads, t->n);
                    gscale = st_clip_grad_scale(gn, c->max_grad_norm));
        else
            ST_PROF("clip", gn = st_clip_grad_norm(t->grads, t->n, c->max_grad_norm));
        if (!s && !isfinite(gn))
            s = st_error(ST_ERR_NUMERIC, "step %lld: gradient norm is %s (loss %g); stopping "
                         "before the update (lower --lr or set --max-grad-norm)",
                         (long long)step_no, isnan(gn) ? "nan" : "inf", loss);
    }
    if (s) {
        st_status s2 = st_data_sampler_seek(&t->sampler, epoch0, pos0);
        (void)s2;
        st__align_rewind(t, align_pos0);
        return s;
    }
    const double lr = st_schedule_lr(&c->sched, c->optim.lr, t->opt.step);
    double live_sq = 0, ema_sq[ST_EMA_MAX] = {0};
    /* decoupled L2-SP: θ ← θ_0 + (1 − η_s·α_d)(θ − θ_0) before the update (as AdamW's decay) */
    if (c->l2sp_alpha_decoupled > 0)
        ST_PROF("l2sp", st_l2sp_decoupled(th, t->ema.theta0, len, 1.0 - lr * c->l2sp_alpha_decoupled));
    if (fused) {
        const int due = t->ema.k > 0 && st_ema_due(&t->ema, t->opt.step + 1);
        ST_PROF("adamw_ema_dist", s = st__trainer_update(t, th, g, gscale, lr, due, &live_sq, ema_sq));
    } else {
        ST_PROF("adamw", s = st_optim_step(&t->opt, t->theta, t->grads, lr));
    }
    if (t->zero1) { /* every rank's updated slice to every rank; drifts summed over the slices */
        double sq[1 + ST_EMA_MAX];
        sq[0] = live_sq;
        for (int j = 0; j < t->ema.k; j++) sq[1 + j] = ema_sq[j];
        s = agree(t, s);
        const double tc = st_time_now();
        if (!s) ST_PROF("allgather", s = c->comm.ag_f32(t->theta, t->n, c->comm.user));
        t->comm_s += st_time_now() - tc;
        if (!s) s = comm_f64(t, sq, 1 + (size_t)t->ema.k);
        live_sq = sq[0];
        for (int j = 0; j < t->ema.k; j++) ema_sq[j] = sq[1 + j];
    }
    if (s) return s;
    if (!fused && t->ema.k > 0) ST_PROF("ema", st_ema_step(&t->ema, t->theta, t->opt.step));
    t->step = step_no;
    st__lisa_after_update(t); /* a ← θ after a phase's last step */
    st_step_metrics m;
    memset(&m, 0, sizeof m);
    m.step = t->step;
    m.loss = loss;
    m.lr = lr;
    m.grad_norm = gn;
    m.penalty = c->lisa == ST_ON ? lisa_pen : penalty;
    m.phase = c->lisa == ST_ON ? (lisa_align ? 1 : 2) : 0;
    m.loss_align = loss_align;
    m.align_dot = c->safegrad == ST_ON ? sgi.dot : NAN;
    m.proj_coef = c->safegrad == ST_ON ? sgi.coef : NAN;
    m.csft_loss = m.kl = m.fisher_mean = NAN;
    if (t->def) st__defense_metrics(t, &m);
    m.targets = (int64_t)counts[0];
    m.tokens = (int64_t)counts[1];
    m.n_micro = n_micro;
    if (fused) {
        m.theta_dist = sqrt(live_sq);
        for (int j = 0; j < t->ema.k; j++) m.theta_ema_dists[j] = sqrt(ema_sq[j]);
    } else {
        ST_PROF("distances", m.theta_dist = st_ema_live_drift(&t->ema, t->theta);
                for (int j = 0; j < t->ema.k; j++) m.theta_ema_dists[j] = st_ema_drift(&t->ema, j));
    }
    m.theta_ema_dist = t->ema.k > 0 ? m.theta_ema_dists[0] : NAN;
    m.epoch = (double)t->sampler.epoch +
              (t->sampler.n_shard ? (double)t->sampler.pos / (double)t->sampler.n_shard : 0.0);
    m.step_s = st_time_now() - t0 - setup_s; /* a one-off θ_0 pass is reported apart (setup_s) */
    m.tokens_per_s = m.step_s > 0 ? (double)m.tokens / m.step_s : 0.0;
    m.val_loss = NAN;
    t->last = m;
    if (mo) *mo = m;
    return ST_OK;
}

st_status st_trainer_eval(st_trainer *t, const float *params, double *val_loss) {
    const st_train_config *c = &t->cfg;
    const st_config *mc = &t->m->config;
    if (t->split.n_val == 0)
        return st_error(ST_ERR_ARG, "evaluation: no validation rows (set val_fraction > 0)");
    st_weights w;
    st_lora_weights lw = {0};
    /* LoRA: params is an adapter vector over the frozen base; else a model-layout buffer */
    st_status s = t->adapter ? st_lora_bind(&lw, mc, &t->adapter->lc, &t->adapter->layout, (float *)params)
                             : st_weights_bind(&w, mc, &t->m->layout, (float *)params);
    if (s) return s;
    st_batch *b = &t->eval_batch;
    double sum = 0, count = 0;
    /* chunk k of the validation rows is scored by rank k % world; the sums are added over ranks */
    for (size_t r0 = (size_t)t->rank * (size_t)c->batch_size; r0 < t->split.n_val && !s;
         r0 += (size_t)c->batch_size * (size_t)t->world) {
        int nb = (int)(t->split.n_val - r0 < (size_t)c->batch_size ? t->split.n_val - r0
                                                                   : (size_t)c->batch_size);
        if ((s = st_collate(t->data, t->split.val + r0, nb, c->max_seq_len, c->pad_id, 0, b)))
            break;
        if (b->n_targets == 0) continue;
        if ((s = t->adapter ? st_lora_base_train_forward(t->base, &t->adapter->lc, &lw, 0, t->acts,
                                                         b->inputs, b->targets, b->loss_mask, b->B,
                                                         b->T, 1.0f, NULL)
                            : st_train_forward(mc, &w, t->acts, b->inputs, b->targets, b->loss_mask,
                                               b->B, b->T, 1.0f, NULL)))
            break;
        const float *tl = st_train_token_losses(t->acts);
        for (int i = 0; i < b->B * b->T; i++)
            if (b->loss_mask[i] != 0.0f && b->targets[i] >= 0) sum += (double)b->loss_mask[i] * tl[i];
        count += (double)b->n_targets;
    }
    if (t->adapter) st_lora_unbind(&lw);
    else st_weights_unbind(&w);
    if (t->world > 1) {
        double sc[2] = {sum, count};
        if (!(s = agree(t, s)) && !(s = comm_f64(t, sc, 2))) {
            sum = sc[0];
            count = sc[1];
        }
    }
    if (s) return s;
    if (count == 0)
        return st_error(ST_ERR_ARG, "evaluation: the %zu validation rows have no trained tokens "
                        "(all truncated at max_seq_len %d?)", t->split.n_val, c->max_seq_len);
    *val_loss = sum / count;
    return ST_OK;
}

void st_trainer_set_hook(st_trainer *t, st_trainer_hook fn, void *user) {
    t->hook = fn;
    t->hook_user = user;
}

st_status st_trainer_add_metric(st_trainer *t, const char *name, double value) {
    return st_trainer_add_metric_keyed(t, name, NULL, value);
}

st_status st_trainer_add_metric_keyed(st_trainer *t, const char *name, const char *key, double value) {
    if (key && (!*key || strlen(key) >= sizeof t->extra[0].key || strpbrk(key, "\"\\")))
        return st_error(ST_ERR_ARG, "metrics: key \"%s\" of %s must be 1-31 characters without quotes", key,
                        name ? name : "");
    if (t->n_extra >= ST_TRAINER_MAX_EXTRA)
        return st_error(ST_ERR_ARG, "metrics: more than %d extra fields in one step",
                        ST_TRAINER_MAX_EXTRA);
    int ok = name && *name && strlen(name) < sizeof t->extra[0].name;
    for (const char *p = name; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
             *p == '_';
    if (!ok)
        return st_error(ST_ERR_ARG, "metrics: field name \"%s\" must be 1-63 of [A-Za-z0-9_]",
                        name ? name : "");
    snprintf(t->extra[t->n_extra].name, sizeof t->extra[0].name, "%s", name);
    snprintf(t->extra[t->n_extra].key, sizeof t->extra[0].key, "%s", key ? key : "");
    t->extra[t->n_extra++].v = value;
    return ST_OK;
}

void st_trainer_request_stop(st_trainer *t) { t->stop_requested = 1; }
int st_trainer_stopped_early(const st_trainer *t) { return t->stopped_early; }
void st_trainer_set_save_every(st_trainer *t, int64_t every) { t->cfg.save_every = every > 0 ? every : 0; }

st_status st_trainer_add_state(st_trainer *t, const char *name, void *data, size_t bytes) {
    if (t->n_state >= ST_TRAINER_MAX_STATE)
        return st_error(ST_ERR_ARG, "trainer: more than %d registered state buffers", ST_TRAINER_MAX_STATE);
    if (!name || strlen(name) >= sizeof t->state_names[0] || !data)
        return st_error(ST_ERR_ARG, "trainer: state buffer \"%s\": a name of 1-40 characters and data", name ? name : "");
    for (int i = 0; i < t->n_state; i++)
        if (!strcmp(t->state_names[i], name)) return st_error(ST_ERR_ARG, "trainer: state buffer \"%s\" registered twice", name);
    snprintf(t->state_names[t->n_state], sizeof t->state_names[0], "%s", name);
    t->state[t->n_state] = (st_checkpoint_blob){t->state_names[t->n_state], data, bytes};
    t->n_state++;
    return ST_OK;
}

int64_t st_trainer_steps_done(const st_trainer *t) { return t->step; }
int64_t st_trainer_max_steps(const st_trainer *t) { return t->max_steps; }
const st_model *st_trainer_model(const st_trainer *t) { return t->m; }
const float *st_trainer_params(const st_trainer *t) { return t->theta; }
const st_lora *st_trainer_adapter(const st_trainer *t) { return t->adapter; }
const float *st_trainer_ema_params(const st_trainer *t) { return st_trainer_ema_params_k(t, 0); }
int st_trainer_n_ema(const st_trainer *t) { return t->ema.k; }
const float *st_trainer_ema_params_k(const st_trainer *t, int j) {
    return j >= 0 && j < t->ema.k ? t->ema.ema[j] : NULL;
}
double st_trainer_train_time(const st_trainer *t) {
    return t->time_prior + (t->time_start > 0 ? st_time_now() - t->time_start : 0.0);
}
const float *st_trainer_theta0(const st_trainer *t) { return t->ema.theta0; }
const st_step_metrics *st_trainer_last_metrics(const st_trainer *t) { return &t->last; }
size_t st_trainer_n_train(const st_trainer *t) { return t->split.n_train; }
size_t st_trainer_n_val(const st_trainer *t) { return t->split.n_val; }
const st_batch *st_trainer_batch(const st_trainer *t, int i) {
    return i >= 0 && i < t->n_micro ? &t->batches[i] : NULL;
}
