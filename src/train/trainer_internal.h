/* trainer_internal.h - private state of st_trainer shared by trainer*.c. */
#ifndef SAFETUNE_TRAINER_INTERNAL_H
#define SAFETUNE_TRAINER_INTERNAL_H

#include "safetune/backward.h"
#include "safetune/checkpoint.h"
#include "safetune/ema.h"
#include "safetune/kernels.h"
#include "safetune/lisa.h"
#include "safetune/safegrad.h"
#include "safetune/trainer.h"

#define ST_TRAINER_MAX_EXTRA 64
#define ST_TRAINER_MAX_STATE 32

typedef struct {
    double start, last_print;
    int64_t start_step;
    int tty;
} st_progress;

struct st_trainer {
    st_train_config cfg;
    st_model *m;
    const st_tokenized *data;
    uint64_t data_hash; /* FNV-1a 64 of data's offsets, ids and mask: resume checks it */
    size_t n;                  /* floats of the trained vector (model or adapter layout) */
    float *theta;              /* the trained vector: m->params, or adapter->params (LoRA) */
    st_lora *adapter;          /* LoRA: the adapter (owned); NULL = full fine-tuning */
    const st_lora_base *base;  /* LoRA: the frozen base it reads: cfg.base (borrowed) or own_base */
    st_lora_base *own_base;    /* LoRA without cfg.base: made from m (fp32 views of m, or bf16), owned */
    float *grads;
    int world, rank;           /* cfg.comm (world >= 1) */
    int zero1;                 /* ZeRO-1: opt and ema hold only [off, off + len) of the vector */
    size_t off, len;           /* this rank's slice (0, n without ZeRO-1) */
    double comm_s;             /* seconds in the gradient / weight collectives, last step */
    st_weights gw;             /* views into grads (full fine-tuning) */
    st_lora_weights lgw;       /* views into grads (LoRA) */
    st_optimizer opt;
    st_ema ema;                /* θ_0 and the cfg.n_ema averages */
    st_data_split split;
    st_data_sampler sampler;
    st_rng rng;
    st_train_acts *acts;
    st_batch *batches;         /* [grad_accum] */
    int n_micro;               /* micro-batches of the last window */
    st_batch eval_batch;
    int64_t step;
    int64_t max_steps;
    st_step_metrics last;
    st_trainer_hook hook;
    void *hook_user;
    struct { char name[64], key[32]; double v; } extra[ST_TRAINER_MAX_EXTRA]; /* key "" = plain */
    int n_extra;
    st_checkpoint_blob state[ST_TRAINER_MAX_STATE]; /* st_trainer_add_state */
    char state_names[ST_TRAINER_MAX_STATE][48];
    int n_state;
    int stop_requested, stopped_early;
    double time_prior;         /* train time of earlier sessions (restored on resume) */
    double time_start;         /* st_time_now() when this session's st_trainer_run began; 0 = not running */
    char last_ckpt[4096];      /* last checkpoint written or resumed from ("" = none) */
    int64_t debug_nan_step;    /* SAFETUNE_DEBUG_NAN_STEP: poison this step's loss (tests) */
    int debug_zero_grad;       /* tests: zero the task gradient after the window (before defense terms) */
    st_matmul_precision saved_prec;
    st_progress prog;
    struct st__align_defense *adf; /* Lisa / SafeGrad state (trainer_align.c); NULL = neither */
    struct st__defense *def;   /* trainer_defense.c: CSFT / KL / EWC state; NULL = none of them */
};

/* trainer_metrics.c: one metrics.jsonl line (heap string with '\n'). */
char *st__trainer_metrics_line(const st_trainer *t, const st_step_metrics *m);
/* metrics file of the run (cfg.metrics_path or out_dir/metrics.jsonl) into buf. */
void st__trainer_metrics_path(const st_trainer *t, char *buf, size_t cap);
/* Append a line to the metrics file (flushed). */
st_status st__trainer_append_metrics(const st_trainer *t, const char *line);
/* Rewrite out_dir/metrics.jsonl keeping only well-formed lines with step <= max_step. */
st_status st__trainer_truncate_metrics(const st_trainer *t, int64_t max_step);

/* trainer_progress.c */
void st__progress_start(st_progress *p, int64_t start_step);
void st__progress_update(st_progress *p, const st_step_metrics *m, int64_t total, int final);

/* trainer_update.c: gradient clipping by gscale (the st_clip_grad_scale factor; grads are read
 * as grads[i] * gscale and left unscaled) + AdamW + EMA (if ema_due) + squared drifts
 * ‖θ−θ_0‖², ‖θ_ema−θ_0‖² in one pass, bit-identical to st_clip_grad_norm, st_optim_step,
 * st_ema_step and st_l2_distance² done separately. Only for AdamW (st__trainer_update_fusable). */
int st__trainer_update_fusable(const st_trainer *t);
st_status st__trainer_update(st_trainer *t, float *params, const float *grads, float gscale,
                             double lr, int ema_due, double *live_sq, double *ema_sq);
/* ema_sq[t->ema.k]: ‖θ_ema_j−θ_0‖² per decay. */

/* trainer_align.c: Lisa and SafeGrad inside the step (lisa.h, safegrad.h). st__align_new checks
 * the alignment set and registers the checkpoint state (call once the optimiser, EMA and
 * batches exist); NULL t->adf = neither defense, and every call below is then a no-op. */
typedef struct st__align_defense st__align_defense;
st_status st__align_new(st_trainer *t);
void st__align_free(st_trainer *t);
uint64_t st__align_hash(const st_trainer *t);         /* D_align rows' FNV-1a (0 = none) */
uint64_t st__align_mark(const st_trainer *t);         /* stream position, for a rewind on failure */
void st__align_rewind(st_trainer *t, uint64_t pos);
int st__lisa_align_step(const st_trainer *t);          /* the coming step (t->step) is an alignment step */
const st_lisa_schedule *st__lisa_schedule(const st_trainer *t); /* NULL without Lisa */
const float *st__lisa_anchor(const st_trainer *t);     /* [n]; NULL without Lisa */
/* Collate one Lisa alignment window (grad_accum micro-batches of batch_size D_align rows) into
 * t->batches; counts[0] += targets, counts[1] += tokens. */
st_status st__lisa_window(st_trainer *t, int *n_micro, double counts[2]);
/* g += ρ(θ−a) when due; returns (ρ/2)‖θ−a‖² or NaN when not applied. */
double st__lisa_prox(st_trainer *t);
/* After the update of step t->step: the anchor becomes θ at a phase's last step. */
void st__lisa_after_update(st_trainer *t);
/* t->grads holds g_u (window-normalised, summed over ranks): computes g_a on the next alignment
 * batch and leaves g = g_u' + ρ·g_a in t->grads (g_u' in st__safegrad_gu). */
st_status st__safegrad(st_trainer *t, int64_t step_no, double *loss_align, st_safegrad_info *info);
const float *st__safegrad_gu(const st_trainer *t);
const st_batch *st__safegrad_batch(const st_trainer *t); /* the last alignment batch A (tests) */
/* trainer_defense.c: constrained SFT, KL to θ_0 and EWC (DEFENSES.md §4, §8). _on: one of them is
 * set; _new allocates t->def (after the trainer's buffers and θ_0) and registers the cache / Fisher
 * as checkpoint state; _prepare at the start of a step computes them at the first step of a fresh
 * run (a resumed run has them from its checkpoint) and zeroes the window sums; _note_rows records
 * micro-batch i's dataset rows; _micro runs θ_0's forward for KL and installs the head term on the
 * activations for micro-batch i's forward (the caller removes it after that forward); _penalty
 * adds EWC's gradient on the slice [off, off + len) (all of it without ZeRO-1) and returns its penalty; _sums gives the window's two sums (CSFT objective,
 * KL term) for the all-reduce; _metrics fills the step's defense fields. */
int st__defense_on(const st_train_config *c);
st_status st__defense_new(st_trainer *t);
void st__defense_free(st_trainer *t);
st_status st__defense_prepare(st_trainer *t);
void st__defense_note_rows(st_trainer *t, int micro, const uint32_t *rows, int n);
st_status st__defense_micro(st_trainer *t, int micro);
double st__defense_penalty(st_trainer *t, size_t off, size_t len); /* on [off, off + len) */
double *st__defense_sums(st_trainer *t);
void st__defense_metrics(st_trainer *t, st_step_metrics *m);

/* trainer_run.c: remove stale folders, then keep the newest `keep` step-* folders under dir. */
void st__trainer_prune_checkpoints(const char *dir, int keep);

#endif
