/* trainer.h - full fine-tuning loop: micro-batches -> gradient buffer -> (all-reduce) -> clip ->
 * schedule -> optimiser -> EMAs, with metrics JSONL, a progress bar, atomic checkpoints and
 * bit-identical resume. Method: Kim et al. 2025 (arXiv 2508.12531): benign fine-tuning with
 * controlled lr / batch / steps plus parameter-space EMAs started at the aligned weights θ_0.
 * `safetune train`, the study and the aligned start all run this one loop (st_trainer_run);
 * what differs between them is configuration and a hook.
 *
 * One optimiser step (st_trainer_step):
 *   zero grads; collate the window: grad_accum micro-batches of batch_size rows, except that a
 *   window never crosses the end of an epoch (the last window of an epoch holds only the rows
 *   that are left, its last micro-batch possibly short: 7 rows, batch 1, accum 3 -> windows of
 *   3, 3, 1 micro-batches), so no row is seen twice within an epoch (Hugging Face Trainer does
 *   the same); normaliser = unmasked target tokens of the WHOLE window (summed over ranks), so
 *   grad_accum = k with batch b equals batch k·b;
 *   for each micro-batch: st_train_forward (loss / normaliser) + st_train_backward (grads +=);
 *   comm.sum_f32(grads) (no-op single-process); defense terms (SafeGrad: g_a on an alignment
 *   batch and the projection, safegrad.h; Lisa's ρ(θ−a), lisa.h; coupled L2-SP, l2sp.h);
 *   st_clip_grad_norm; lr = base · schedule(k); st_optim_step; st_ema_step (every decay).
 *   A Lisa alignment step collates its window from cfg.align_data instead (the user stream waits).
 * A non-finite loss or gradient norm stops the step with ST_ERR_NUMERIC before the weights
 * change (the caller keeps the last good checkpoint). Files written by st_trainer_run (out_dir):
 *   metrics.jsonl   one JSON object per step: step, loss, lr, grad_norm, tokens_per_s,
 *                   theta_dist (||θ−θ_0||), theta_ema_dist (||θ_ema−θ_0||: a number with one
 *                   decay, an object keyed by decay ("0.9": ...) with several, null without
 *                   EMA), epoch (exact fraction of the training split seen), val_loss (every
 *                   eval_every steps), tokens, targets, hook fields; step 0 (θ_0) when there
 *                   is a baseline val_loss or the hook adds fields
 *   checkpoints/step-NNNNNNNN/   st_checkpoint_save folders (keep the last keep_checkpoints);
 *                   every EMA buffer and the hook's registered state are inside. */
#ifndef SAFETUNE_TRAINER_H
#define SAFETUNE_TRAINER_H

#include <signal.h>

#include "safetune/data.h"
#include "safetune/ema.h"
#include "safetune/model.h"
#include "safetune/optim.h"
#include "safetune/lora.h"
#include "safetune/schedule.h"

typedef struct st_trainer st_trainer;

/* Data-parallel seam (dist.h gives the MPI one): collectives over the ranks, called by every
 * rank in the same order. NULL functions = one process. Each rank collates only its own
 * micro-batches of a window (micro-batch i goes to rank i % world) from the one global data
 * order, so a window holds the same rows for any world. */
typedef struct {
    st_status (*sum_f32)(float *x, size_t n, void *user);  /* gradients: sum in place */
    st_status (*sum_f64)(double *x, size_t n, void *user); /* loss sums, token counts: sum in place,
                                                              the same bits on every rank */
    /* ZeRO-1 (zero1 below): rs_f32 leaves this rank's slice (st_dist_slice) of the sum in
     * x[off, off + len); ag_f32 copies every rank's slice of x to all ranks */
    st_status (*rs_f32)(float *x, size_t n, void *user);
    st_status (*ag_f32)(float *x, size_t n, void *user);
    /* every rank passes its status; all get ST_OK or the first failing rank's (message too) */
    st_status (*agree)(st_status s, void *user);
    void *user;
    int rank, world;                                      /* world 0 is read as 1 */
    int zero1;  /* ZeRO stage 1 (Rajbhandari et al. 2020): moments, EMAs and θ_0 kept only for
                   this rank's slice; needs rs_f32 and ag_f32 */
} st_trainer_comm;

typedef struct {
    st_optim_config optim;     /* AdamW by default (lr, betas, eps, weight_decay) */
    st_schedule sched;         /* kind, warmup_steps, ...; total_steps is set from max_steps */
    int batch_size;            /* rows per micro-batch (B) */
    int grad_accum;            /* micro-batches per optimiser step */
    int64_t max_steps;         /* > 0, or 0 to derive it from epochs */
    double epochs;             /* used when max_steps == 0: ceil(epochs·n_train / (B·accum)) */
    double max_grad_norm;      /* clip_grad_norm_ threshold; <= 0 = no clipping */
    int n_ema;                 /* number of EMA decays, 0..ST_EMA_MAX (0 = no EMA) */
    double ema_decays[ST_EMA_MAX]; /* β_j of θ_ema_j ← β_j·θ_ema_j + (1−β_j)·θ, distinct, in [0, 1] */
    int64_t ema_every, ema_start; /* update after steps ema_start, ema_start+every, ... */
    int bf16;                  /* 1 = bf16 matmuls (fp32 master weights, moments, EMA) */
    uint64_t seed;             /* split + data order */
    int max_seq_len;           /* rows truncated to this many tokens (T cap) */
    int32_t pad_id;            /* padding token (masked out); any id in [0, V) */
    double val_fraction;       /* held-out rows (st_data_split_make) */
    size_t val_count;          /* > 0 overrides val_fraction */
    double l2sp_alpha;         /* coupled L2-SP toward θ_0 (l2sp.h): g += α(θ−θ_0) before clipping; 0 = off */
    double l2sp_alpha_decoupled; /* decoupled L2-SP: θ ← θ_0 + (1−η_s·α_d)(θ−θ_0) before the update;
                                    lr·α_d < 1; 0 = off */
    /* Lisa (lisa.h, DEFENSES.md §6) and SafeGrad (safegrad.h, §7); both need align_data, as EWC */
    int lisa;                  /* ST_OFF (default) or ST_ON */
    double lisa_rho;           /* ρ of the proximal term ρ(θ−a), >= 0 */
    double lisa_align_share;   /* alignment steps' share of a cycle, [0, 1] */
    int64_t lisa_cycle_steps;  /* K1 + K2 (scaled down to T when T is shorter) */
    int safegrad;              /* ST_OFF (default) or ST_ON */
    double safegrad_rho;       /* ρ of g = g_u + ρ·g_a, >= 0 */
    int safegrad_project;      /* ST_ON: project g_u when ⟨g_u, g_a⟩ < 0 */
    size_t safegrad_align_rows; /* n_a: the rows of D_align SafeGrad cycles through */
    const st_tokenized *align_data; /* D_align, tokenized (borrowed; not a setting): the AdvBench
                                  half-a refusal pairs of the aligned start's align_set.jsonl */
    /* defenses against θ_0 on the task step (DEFENSES.md §4, §8; docs/defenses.md); 0 = off */
    double csft_beta;          /* constrained SFT (head_terms.h): β; θ_0's log-probs cached once */
    double csft_first_factor;  /* β_1 = β·f1 */
    double csft_factor;        /* β_t = β·f for 2 <= t <= csft_prefix, β beyond */
    int csft_prefix;           /* L: the response prefix of boosted β */
    double kl_lambda;          /* λ_KL of λ·(1/N)·Σ_r KL(p_θ0 ‖ p_θ) at the response positions */
    double ewc_lambda;         /* EWC (ewc.h): g += λ·F⊙(θ−θ_0), F the diagonal Fisher of align_data at θ_0 */
    size_t n_train_only;       /* the last n_train_only rows of data always train, never held out
                                  (SafeInstr's safety rows); the split covers the others; 0 = none */
    int64_t eval_every;        /* val_loss every N steps (and at the last step); 0 = never */
    const char *out_dir;       /* run folder for metrics/checkpoints; NULL = none */
    const char *metrics_path;  /* metrics file; NULL = out_dir/metrics.jsonl */
    int64_t save_every;        /* checkpoint every N steps (and at the last step); 0 = never */
    int keep_checkpoints;      /* keep the newest N checkpoint folders (0 = all) */
    int progress;              /* progress bar on stderr */
    const char *run_config_json; /* text saved in checkpoints (resume compatibility check) */
    const volatile sig_atomic_t *stop; /* set from a signal handler: st_trainer_run ends after
                                          the current step (below); NULL = never */
    st_trainer_comm comm;
    /* LoRA (lora.h): ST_FINETUNE_LORA trains an adapter on the frozen base instead of every
     * weight; the optimiser, EMAs, θ_0, drifts, clipping and checkpoints then work on the adapter
     * vector (θ_0 = the initial adapter, whose B = 0 leaves the base unchanged). */
    int finetune;              /* ST_FINETUNE_FULL (default) or ST_FINETUNE_LORA */
    st_lora_config lora;       /* rank, alpha, dropout, targets (finetune == LORA) */
    const float *lora_init;    /* adapter to start from (lora layout, e.g. a loaded PEFT folder);
                                  NULL = PEFT's initialisation drawn from seed */
    int base_bf16;             /* LoRA: the frozen base held in bf16 (st_lora_base, bf16 base
                                  products) instead of read in fp32 from the model */
    const st_lora_base *base;  /* LoRA: a frozen base made by the caller (its precision
                                  base_bf16's; e.g. st_lora_base_load, the model then without
                                  fp32 weights), borrowed: it must outlive the trainer. NULL =
                                  the trainer makes (and owns) one from the model's weights */
} st_train_config;
enum { ST_FINETUNE_FULL = 0, ST_FINETUNE_LORA = 1 };
enum { ST_OFF = 0, ST_ON = 1 };

/* Defaults of every setting from the table in train_settings.h (AdamW lr 1e-5 wd 0 betas (0.9,
 * 0.999) eps 1e-8, constant schedule, batch 8, accum 1, clip 1.0, one EMA of decay 0.99 every
 * step from step 1, fp32, seed 42, max_seq_len 512, val_fraction 0.05, keep 2 checkpoints);
 * max_steps and epochs are 0: set one. Not settings: pad_id 0, no out_dir, no progress bar. */
void st_train_config_default(st_train_config *c);
/* The padding id of model m's rows: its tokenizer's EOS when inside the vocabulary, else 0
 * (padding is masked out of the loss; any id works, one the model knows reads best). */
int32_t st_train_pad_id(const st_model *m);

/* Per-step metrics (also the metrics.jsonl record). */
typedef struct {
    int64_t step;              /* optimiser steps done (1-based after the first step) */
    double loss;               /* window loss: Σ masked CE / normaliser */
    double lr;                 /* lr used by this step */
    double grad_norm;          /* pre-clip global L2 norm (the L2-SP term included) */
    double penalty;            /* coupled L2-SP: (α/2)‖θ−θ_0‖², Lisa: (ρ/2)‖θ−a‖², EWC: (λ/2)Σ F(θ−θ_0)²,
                                  before the step (loss excludes it); NaN off */
    int phase;                 /* Lisa: 1 alignment step, 2 task step; 0 without Lisa */
    double loss_align;         /* SafeGrad: L_a (KL to θ_0 on the alignment batch); NaN off */
    double align_dot;          /* SafeGrad: ⟨g_u, g_a⟩ before projection; NaN off */
    double proj_coef;          /* SafeGrad: d/‖g_a‖² when projected, else 0; NaN off */
    double csft_loss;          /* constrained SFT: the trained objective −(1/N)Σ w_t log p_θ (loss stays
                                  the plain CE); NaN off */
    double kl;                 /* KL term λ·(1/N)·Σ_r KL(p_θ0‖p_θ) of the window (not in loss); NaN off */
    double setup_s;            /* one-off θ_0 pass of this step (CSFT cache, EWC Fisher), seconds,
                                  not in step_s; 0 = none */
    double fisher_mean;        /* EWC: mean(F) when the Fisher was computed in this step; NaN otherwise */
    double tokens_per_s;       /* non-pad input tokens of the window / step wall time */
    double theta_dist, theta_ema_dist; /* theta_ema_dist: the first decay's (NaN without EMA) */
    double theta_ema_dists[ST_EMA_MAX]; /* ||θ_ema_j − θ_0|| per decay */
    double epoch;              /* epochs completed, fractional */
    int64_t tokens, targets;   /* non-pad tokens and trained targets of the window */
    int n_micro;               /* micro-batches of the window (< grad_accum at an epoch's end) */
    int has_val;
    double val_loss;
    double step_s;
} st_step_metrics;

/* Create a trainer over model m (borrowed; m->params are trained in place and must outlive the
 * trainer) and tokenized rows `data` (borrowed). Splits rows into train/val, allocates grads,
 * optimiser moments, θ_0 and θ_ema (copies of m->params) and activations for
 * [batch_size, max_seq_len]. ST_ERR_ARG for bad settings (empty data, batch larger than the
 * training split, ...), naming the option. */
st_status st_trainer_new(st_model *m, const st_tokenized *data, const st_train_config *cfg,
                         st_trainer **out);
void st_trainer_free(st_trainer *t);

/* One optimiser step (above). On ST_ERR_NUMERIC the weights and state are unchanged. */
st_status st_trainer_step(st_trainer *t, st_step_metrics *m);
/* Held-out loss Σ masked CE / Σ targets over the validation split for weights `params` (a flat
 * buffer of the model layout: live, EMA, ...). ST_ERR_ARG if there is no validation split. */
st_status st_trainer_eval(st_trainer *t, const float *params, double *val_loss);
/* Run until max_steps: step, eval, hook, metrics line, progress, checkpoint. Stops with the
 * step's error (message names the step and the last good checkpoint). Once *cfg.stop is set it
 * ends after the current step, saves a checkpoint of it (when out_dir is set, whatever
 * save_every) and returns ST_ERR_INTERRUPTED with a message naming the step and checkpoint.
 * When the hook calls st_trainer_request_stop the run ends the same way but returns ST_OK
 * (early stop; st_trainer_stopped_early). */
st_status st_trainer_run(st_trainer *t);

/* Called by st_trainer_run with step 0 before the first step of a run that starts at θ_0, then
 * after each step, before the metrics line is written; may call st_trainer_add_metric(_keyed)
 * to append fields (e.g. probe_asr_live, probe_asr_ema) and st_trainer_request_stop. An error
 * stops the run. */
typedef st_status (*st_trainer_hook)(st_trainer *t, int64_t step, void *user);
void st_trainer_set_hook(st_trainer *t, st_trainer_hook fn, void *user);
/* Append "name": value to the current step's metrics record (up to 64 fields per step). */
st_status st_trainer_add_metric(st_trainer *t, const char *name, double value);
/* Append "name": {..., "key": value} (fields of one name with keys form one object, in call
 * order), e.g. probe_asr_ema keyed by st_ema_decay_key. */
st_status st_trainer_add_metric_keyed(st_trainer *t, const char *name, const char *key, double value);
/* From a hook: end the run after this step (checkpoint saved when out_dir is set). */
void st_trainer_request_stop(st_trainer *t);
int st_trainer_stopped_early(const st_trainer *t);
/* Register bytes of caller state (e.g. a hook's best weights) that every checkpoint saves as
 * x-NAME.bin and st_trainer_resume restores; data must outlive the trainer's last save. Up to
 * 32 buffers; call before st_trainer_resume. */
st_status st_trainer_add_state(st_trainer *t, const char *name, void *data, size_t bytes);
/* Change save_every after st_trainer_new (when it depends on st_trainer_max_steps). */
void st_trainer_set_save_every(st_trainer *t, int64_t every);

/* Save the full training state to folder dir (st_checkpoint_save; atomic). */
st_status st_trainer_save_checkpoint(st_trainer *t, const char *dir);
/* Restore params, moments, EMAs, θ_0, RNG, data order/position, step, train time and registered
 * state from dir; the saved run
 * must agree on the data (rows, tokens, split, order) and every optimisation setting (optimiser,
 * lr, betas, eps, weight_decay, schedule kind and warm-up, clipping, EMA, precision); only
 * max_steps may change (ST_ERR_ARG names the key). Later steps are then bit-identical to an
 * uninterrupted run. */
st_status st_trainer_resume(st_trainer *t, const char *dir);
/* Newest valid checkpoint under out_dir/checkpoints into buf; ST_ERR_IO if none. */
st_status st_trainer_latest_checkpoint(const st_trainer *t, char *buf, size_t cap);

/* The whole θ_0 (what = "theta0") or θ_ema_j ("ema", j) into dst[n] (n = the trained vector's
 * floats). Collective under ZeRO-1 (every rank calls it; the slices are gathered), a copy
 * otherwise. ST_ERR_ARG for another name or j >= n_ema. */
st_status st_trainer_full_vector(st_trainer *t, const char *what, int j, float *dst);

/* Accessors. Buffers have the model's flat layout (m->layout.n_floats floats); under ZeRO-1
 * (comm.zero1) the EMA and θ_0 buffers hold only this rank's slice: use st_trainer_full_vector. */
int64_t st_trainer_steps_done(const st_trainer *t);
int64_t st_trainer_max_steps(const st_trainer *t);
const st_model *st_trainer_model(const st_trainer *t);
const float *st_trainer_params(const st_trainer *t);
const float *st_trainer_ema_params(const st_trainer *t); /* first decay's; NULL without EMA */
int st_trainer_n_ema(const st_trainer *t);
const float *st_trainer_ema_params_k(const st_trainer *t, int j); /* decay j; NULL if j >= n_ema */
/* Seconds spent in st_trainer_run, summed over the sessions of a resumed run. */
double st_trainer_train_time(const st_trainer *t);
const float *st_trainer_theta0(const st_trainer *t);
/* The adapter being trained (its layout and config; its params are st_trainer_params), or NULL
 * for full fine-tuning. With LoRA, st_trainer_params / _ema_params / _theta0 are adapter
 * vectors (the adapter layout), not model weights. */
const st_lora *st_trainer_adapter(const st_trainer *t);
const st_step_metrics *st_trainer_last_metrics(const st_trainer *t);
size_t st_trainer_n_train(const st_trainer *t);
size_t st_trainer_n_val(const st_trainer *t);
/* Micro-batch i of the last step (tests, debugging); NULL if i >= its n_micro. */
const st_batch *st_trainer_batch(const st_trainer *t, int i);

#endif
