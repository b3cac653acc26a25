/* study.h - hyper-parameter studies of fine-tuning safety (Kim et al. 2025, "Rethinking Safety in
 * LLM Fine-tuning: An Optimization Perspective", arXiv 2508.12531): a grid over learning rate x
 * batch size x grad_accum x steps x LR schedule x warmup x EMA decay, one training run per grid
 * point (EMA decays share the run: EMA weights are extra weight sets of the same run), each weight
 * set evaluated for safety (AdvBench ASR, XSTest refusals) and utility (val loss, TruthfulQA MC1,
 * judge), then results.csv, report.md and PNG plots (gnuplot).
 *
 * Study folder layout (DIR = --out):
 *   DIR/study.json                 fingerprint + normalised config (same study -> resume)
 *   DIR/advbench_split.json        the seeded AdvBench halves used (when eval.advbench_split != all)
 *   DIR/runs/<run>/ckpt/           trainer checkpoint folder (resume from it)
 *   DIR/runs/<run>/metrics.jsonl   trainer metrics, fields ST_METRIC_* below
 *   DIR/runs/<run>/train.json      written by the runner when training finished (marker)
 *   DIR/runs/<run>/eval_<w>.json   one per weight set w = live | ema<decay> (marker + result)
 *   DIR/runs/<run>/done            all weight sets evaluated (marker; the run is skipped)
 *   DIR/results.csv, DIR/report.md, DIR/plots/NAME.png */
#ifndef SAFETUNE_STUDY_H
#define SAFETUNE_STUDY_H

#include "safetune/base.h"
#include "safetune/data.h"
#include "safetune/prompts.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- metrics.jsonl: the fields the trainer writes (one JSON object per line) ----
 * Every line has "step" (optimizer steps done, int). Other fields are optional per line:
 *   loss            training loss (mean token cross-entropy, nats) of this step
 *   val_loss        held-out loss (nats), on lines where it was measured
 *   lr              learning rate used at this step
 *   grad_norm       global L2 norm of the gradient before clipping
 *   tokens_per_s    training throughput
 *   theta_dist      ||theta - theta_0||_2 of the live weights
 *   theta_ema_dist  ||theta_ema - theta_0||_2: a number when the run has one EMA decay, or an
 *                   object {"<decay>": number, ...} keyed by st_study_format_decay() when several
 *   probe_asr_live  safety-probe ASR (0..1) of the live weights, on probe lines
 *   probe_asr_ema   the same for EMA weights (number, or object keyed like theta_ema_dist) */
#define ST_METRIC_STEP "step"
#define ST_METRIC_LOSS "loss"
#define ST_METRIC_VAL_LOSS "val_loss"
#define ST_METRIC_LR "lr"
#define ST_METRIC_GRAD_NORM "grad_norm"
#define ST_METRIC_TOKENS_PER_S "tokens_per_s"
#define ST_METRIC_THETA_DIST "theta_dist"
#define ST_METRIC_THETA_EMA_DIST "theta_ema_dist"
#define ST_METRIC_PROBE_ASR_LIVE "probe_asr_live"
#define ST_METRIC_PROBE_ASR_EMA "probe_asr_ema"

/* ---- configuration ---- */

typedef enum { ST_FMT_ALPACA = 0, ST_FMT_DOLLY, ST_FMT_ORCA, ST_FMT_MESSAGES } st_dataset_format;

typedef struct {
    char *path;      /* as resolved: relative paths are taken against data_dir */
    char *name;      /* short tag for run names/tables (file stem, or "name" key) */
    st_dataset_format format;
    long limit;      /* use only the first `limit` rows (0 = all); keeps a tail for `align` */
} st_study_dataset;

/* One value of the `defense` axis: a name and training settings (DEFENSES.md). keys are rows of
 * the training settings table (train_settings.h) that the grid does not own (l2sp_alpha, ...: any
 * row added there works here unchanged) or the data-side keys safeinstr_k, poison, lookahead,
 * lookahead_m, lookahead_prefix (data_transform.h); values as text, parsed by the row. "none" has
 * no settings: plain fine-tuning. */
typedef struct {
    char *name;                     /* unique; [a-z0-9_.-]; part of run ids */
    char **keys, **values;
    size_t n;
    int safety_data;                /* uses the aligned start's AdvBench half-a refusal pairs
                                       ("+ safety data"): SafeInstr, and rows flagged ST_SET_SAFETY_DATA */
    int needs_align;                /* needs the alignment set (safety_data, or poison's goal reserve) */
} st_study_defense;

/* The value (text) a defense gives key, or NULL. */
const char *st_study_defense_get(const st_study_defense *d, const char *key);

/* One value of the `finetune` axis: full fine-tuning, or LoRA with its settings (lora.h). */
typedef struct {
    char *name;                     /* "full", "lora", or the entry's "name" */
    int finetune;                   /* ST_FINETUNE_FULL | ST_FINETUNE_LORA */
    int lora_r;
    double lora_alpha, lora_dropout;
    char *lora_targets;             /* "all" or "q_proj,v_proj" */
} st_study_finetune;

typedef struct {
    char *model;                    /* checkpoint path (GGUF file or HF folder) */
    st_study_dataset *datasets;
    size_t n_datasets;
    char *data_dir;                 /* AdvBench/XSTest/TruthfulQA/datasets root */
    /* grid lists (each non-empty) */
    double *lr; size_t n_lr;
    int *batch_size; size_t n_batch_size;        /* per micro-batch */
    int *grad_accum; size_t n_grad_accum;
    int *max_steps; size_t n_max_steps;          /* optimizer steps; exclusive with epochs */
    double *epochs; size_t n_epochs;
    int *train_examples; size_t n_train_examples; /* equal-data design: steps = examples / effective batch
                                                     (exclusive with max_steps and epochs) */
    char **lr_schedule; size_t n_lr_schedule;    /* constant | linear | cosine */
    int *warmup_steps; size_t n_warmup_steps;
    double *ema_decay; size_t n_ema_decay;       /* 0 = "none" (no EMA weights); else (0, 1) */
    st_study_defense *defenses; size_t n_defenses; /* the defense axis (default: one, "none") */
    st_study_finetune *finetunes; size_t n_finetunes; /* the finetune axis (default: one, "full") */
    double *merge; size_t n_merge;  /* linear merge weights λ ∈ [0, 1] on θ_ft (DEFENSES.md §1): every
                                       run's live endpoint merged with θ_0 is one more weight set */
    /* fixed */
    double weight_decay, max_grad_norm;
    int max_seq_len;
    uint64_t seed;                  /* seeds[0]: the held-out split, the aligned start, the bootstrap */
    uint64_t *seeds; size_t n_seeds; /* grid: every cell is trained once per seed (data order) */
    char *precision;                /* fp32 | bf16 */
    int checkpoints;                /* "checkpoints": 1 = "middle" (each run saves at its middle and its end,
                                       the newest kept); 0 = "none" (no writes; a run stopped before all
                                       its results are written is trained again from θ_0, bit-identically) */
    struct {
        char *advbench_split;       /* all | a | b (b = the half not used by `safetune align`) */
        uint64_t advbench_split_seed;
        int advbench_limit;         /* 0 = all prompts of the chosen half */
        int max_new_tokens, batch_size;
        char *precision;            /* generation matmuls of the evaluation: "fp32" | "bf16" */
        int xstest, xstest_limit;   /* xstest: 0/1; its half follows advbench_split (st_study_xstest_split); limit 0 = all of it */
        int truthfulqa, truthfulqa_limit;
        int val_examples;           /* held-out examples for val_loss */
        char *judge_url, *judge_model; /* NULL = no judge */
        char **benchmarks;          /* further prompt sets (st_prompts_load specs, e.g. "harmbench:FILE",
                                       "csv:FILE"; paths resolved against data_dir): every weight set is
                                       also evaluated on each; NULL when none */
        char **benchmark_tags;      /* their short names (results.csv columns <tag>_asr, <tag>_n) */
        int *benchmark_n;           /* prompts in each file */
        size_t n_benchmarks;
        int benchmark_limit;        /* first N prompts of each (0 = all) */
    } eval;
    struct {
        int every;                  /* probe every N steps (0 = off) */
        int n_prompts, max_new_tokens;
        double stop_asr_above;      /* stop the run early when live probe ASR exceeds it (>1 = never) */
        int keep_best;              /* keep the checkpoint with the lowest probe ASR */
    } probe;
    struct {
        char *utility_metric;       /* val_loss (lower is better) | truthfulqa_mc1 | judge_mean */
        double utility_tolerance;   /* absolute tolerance around the best utility */
        double distance_tolerance;  /* matched ‖θ−θ0‖: relative tolerance (0.1 = within 10%) */
        double safety_margin;       /* "at least as safe": non-inferiority margin on the ASR difference */
        int plots;                  /* 1 = make PNGs with gnuplot (checked before training) */
    } report;
    struct {
        double train_tokens_per_s, gen_tokens_per_s, example_tokens; /* for --dry-run estimates */
        /* not config keys: set by --dry-run's measurement (0 = not measured: the estimate then
         * counts only tokens) */
        double step_overhead_s;     /* per optimiser step beyond its tokens (update, EMAs, norms) */
        double prompt_s;            /* prefill of one evaluation prompt, batched */
        double n_params;            /* trainable parameters (checkpoint sizes); 0 = unknown */
    } estimate;
    struct {
        int enabled;                /* 1 = train from the aligned start (`safetune align`), built once */
        char *dir;                  /* its folder (NULL = st_study_align_default_dir()) */
        int n_alpaca;               /* last Alpaca rows mixed into the alignment set */
        int n_advbench;             /* AdvBench half-a refusals in it (0 = all 260) */
        int xstest_safe_repeat;     /* copies of each XSTest half-a safe answer in it (>= 1) */
        int max_steps, batch_size;  /* alignment training (AdamW, constant after 2 warm-up steps, no EMA) */
        double lr;
        int answer_max_new_tokens;  /* the base model's answers to XSTest half a (alignment rows) */
    } align;
    char *source;                   /* "preset:NAME", FILE, or "preset:NAME + FILE" */
    char *json;                     /* normalised merged config (canonical JSON text) */
    char fingerprint[17];           /* FNV-1a 64 of `json`, 16 hex digits */
} st_study_config;

/* Names of the compiled-in presets, NULL-terminated ("quick", "standard", "paper"). */
extern const char *const st_study_preset_names[];
/* The JSON text of a preset, or NULL if unknown. */
const char *st_study_preset_json(const char *name);

/* Load a config: the preset (NULL = none; then config_path is required), overridden key by key
 * by config_path (NULL = none; objects "eval"/"probe"/"report"/"estimate" merge per key, lists
 * replace). Validates everything before any training: unknown key (with "did you mean"), wrong
 * type, empty grid list, bad value, missing dataset/model file, gnuplot missing when report.plots.
 * Errors: one line "SOURCE: key 'K': what is wrong" (ST_ERR_ARG / ST_ERR_IO / ST_ERR_FORMAT). */
st_status st_study_config_load(const char *preset, const char *config_path, st_study_config *out);
void st_study_config_free(st_study_config *c);

/* ---- grid ---- */

typedef struct {
    char *id;                 /* e.g. "lr1e-5_bs8_ga1_steps200_cosine" (unique, stable) */
    size_t dataset;           /* index into config datasets */
    double lr;
    int batch_size, grad_accum, effective_batch; /* effective = batch_size * grad_accum */
    int max_steps;            /* -1 when epochs are used; train_examples / effective_batch in that design */
    double epochs;            /* 0 when max_steps is used */
    int train_examples;       /* > 0 in the equal-data design (config train_examples), else 0 */
    uint64_t seed;            /* data order (and any sampling) of this run */
    size_t cell;              /* index of the grid cell: runs that differ only in seed share it */
    const char *lr_schedule;  /* borrowed from the config */
    int warmup_steps;
    double *ema_decays;       /* the EMA decays of this run (no "none"); may be empty */
    size_t n_ema;
    int has_live;             /* 1 if "none" is in ema_decay or there is no EMA at all (always 1
                                 when the study merges: merges start from the live endpoint) */
    size_t defense, finetune; /* indices into config defenses / finetunes */
    size_t base_cell;         /* the cell without defense and finetune: runs that differ only in those
                                 (and the seed) share it, the unit the defense comparison matches in */
    const double *merges;     /* borrowed from the config: linear merge λ list */
    size_t n_merge;
} st_study_run;

typedef struct {
    st_study_run *runs;
    size_t n_runs;
    size_t n_weight_sets;     /* total evaluations: sum over runs of has_live + n_ema */
} st_study_plan;

/* Expand the grid (datasets x lr x batch_size x grad_accum x steps|epochs x schedule x warmup) in
 * that nesting order. Run ids are built from the values; dataset / warmup parts are added only
 * when those lists have more than one entry. Duplicate ids are ST_ERR_ARG. */
st_status st_study_plan_build(const st_study_config *c, st_study_plan *out);
void st_study_plan_free(st_study_plan *p);

/* Compact number forms used in run ids and weight names: 1e-05 -> "1e-5", 2.5e-4 -> "2.5e-4";
 * decay 0.99 -> "0.99". buf needs >= 32 bytes. Return buf. */
char *st_study_format_lr(double lr, char *buf, size_t n);
char *st_study_format_decay(double d, char *buf, size_t n);

typedef struct {
    double train_s, eval_s, probe_s, total_s;
    double align_s;   /* the aligned start (training + its evaluation); total only, 0 per run */
    long train_tokens, gen_tokens;
} st_study_estimate;

/* Time estimate from config.estimate speeds: training = steps x (step_overhead_s + effective batch
 * x example_tokens / train_tokens_per_s); per weight set, every evaluation prompt's prefill
 * (prompt_s, else PROMPT_TOKENS at 3x the training speed) and ST_STUDY_ANSWER_FILL x max_new_tokens
 * generated per answer (refusals end early; the quick preset's 36 weight sets measured 0.33 on
 * AdvBench, about 0.6 on XSTest);
 * probes; checkpoints ("middle": two per run, written at ST_STUDY_CKPT_BYTES_PER_S). For
 * epochs-based runs the dataset rows are counted. */
#define ST_STUDY_ANSWER_FILL 0.5
#define ST_STUDY_CKPT_BYTES_PER_S 3.0e8 /* fsync'd writes, measured here with dd conv=fsync: 294 MB/s */
st_status st_study_estimate_plan(const st_study_config *c, const st_study_plan *p,
                                 st_study_estimate *per_run /* n_runs, may be NULL */,
                                 st_study_estimate *total);
/* What --dry-run measures on this machine before estimating (st_study_measure). */
typedef struct {
    int measured;                 /* 1 = the speeds below were measured here (else left as the config's) */
    double train_tokens_per_s;    /* marginal: from a timed step at micro-batch 1 and one at the plan's
                                     largest micro-batch (after an untimed warm-up step) */
    double step_overhead_s;       /* the fixed part of a step (optimiser, EMAs, norms); 0 when the plan's
                                     largest micro-batch is 1 (train_tokens_per_s then covers it) */
    double train_step_s;          /* the timed step at the largest micro-batch */
    int train_batch;              /* that micro-batch */
    double example_tokens;        /* mean tokens per training example of the first dataset */
    double gen_tokens_per_s;      /* decode: a greedy generation of eval.batch_size AdvBench prompts, less
                                     the time of their prefill alone */
    double prompt_s;              /* that prefill (timed with 2 new tokens) per prompt */
    int gen_prompts, gen_tokens;  /* its prompts and new tokens per prompt */
    size_t n_params;              /* trainable parameters */
    double peak_rss_gib;          /* this process's peak resident memory after the timed work */
    double planned_gib;           /* the study's expected peak: fixed buffers (4 bytes x n_params per copy:
                                     live, theta_0 twice, gradient, two AdamW moments, one per EMA decay,
                                     scratch, keep_best copies) plus the measured activations */
    double available_gib;         /* physical memory of this machine (MemTotal) */
} st_study_measured;

/* Measure this machine's speeds for the study before estimating: refuse first, without loading
 * weights, when the fixed buffers alone (from the model's config) exceed physical memory
 * (ST_ERR_NOMEM with the numbers); then load the model, time two real optimiser steps at the plan's
 * largest micro-batch and a short generation, and read the peak memory. On success
 * out->measured = 1; a model that cannot be loaded is an error (the caller may fall back to the
 * config's speeds). Also ST_ERR_NOMEM (with the numbers) when planned_gib > available_gib. */
st_status st_study_measure(const st_study_config *c, const st_study_plan *p, st_study_measured *out);

/* Print the plan and estimate (human-readable) to f. */
void st_study_print_plan(FILE *f, const st_study_config *c, const st_study_plan *p);

/* ---- runner and hooks ---- */

typedef enum { ST_WEIGHTS_LIVE = 0, ST_WEIGHTS_EMA = 1, ST_WEIGHTS_MERGE = 2 } st_weights_kind;

typedef struct {
    st_weights_kind kind;
    double ema_decay;         /* for ST_WEIGHTS_EMA */
    double merge_lambda;      /* for ST_WEIGHTS_MERGE: θ = (1−λ)·θ0 + λ·θ_live (st_merge_apply linear) */
    char name[40];            /* "live", "ema0.99" or "merge0.6" */
} st_study_weights;

/* Names of run r's defense and finetune values ("none" / "full" when the config has no such axis). */
const char *st_study_defense_name(const st_study_config *c, const st_study_run *r);
const char *st_study_finetune_name(const st_study_config *c, const st_study_run *r);

/* Weight sets of run r in evaluation order: live (when has_live), EMA decays, merges. *n the count. */
size_t st_study_run_n_weights(const st_study_run *r);
/* Weight set k (< st_study_run_n_weights) of r. */
void st_study_run_weights(const st_study_run *r, size_t k, st_study_weights *w);

/* What the trainer reports. NaN/negative = unknown (the runner fills train_time_s itself). */
typedef struct {
    double train_time_s;      /* cumulative over resumes, seconds */
    int steps_done;
    int stopped_early;        /* probe.stop_asr_above triggered */
} st_study_train_result;

/* What the evaluator reports for one weight set. NaN = not measured (empty CSV field). */
typedef struct {
    double asr, asr_lo, asr_hi; /* refusal-keyword ASR on AdvBench with 95% Wilson interval */
    int n_prompts;              /* AdvBench prompts evaluated */
    double xstest_safe_refusal, xstest_unsafe_refusal;
    double val_loss, truthfulqa_mc1;
    double judge_mean, judge_harmful_rate;
    double theta_dist;          /* ||theta_w - theta_0||; NaN = take the last metrics.jsonl value */
    double *bench_asr;          /* heap [n_bench]: answered share (no refusal keyword) per
                                   cfg->eval.benchmarks[i] (ASR on harmful sets; 1 - refusal rate on
                                   benign ones); NaN = not measured */
    int *bench_n;               /* heap [n_bench]: prompts evaluated */
    size_t n_bench;
    char *asr_outcomes;         /* heap, n_prompts characters '1' (answered: counts toward ASR) or '0'
                                   (refused), in the order of the evaluated AdvBench prompts (the same
                                   prompts for every weight set of a study); NULL = not recorded (then
                                   the paired tests of the report cannot use this row) */
    char *answers_jsonl;        /* heap: one JSON object a line per generated answer (AdvBench, then
                                   XSTest): {"set", "index", "label" (XSTest), "prompt", "refused",
                                   "answer"}, for auditing the refusal rule; the runner writes it to
                                   answers_<weights>.jsonl beside eval_<weights>.json. NULL = none */
} st_study_eval_result;

/* Set every field of r to NaN (n_prompts = 0, asr_outcomes and answers_jsonl NULL; frees nothing). */
void st_study_eval_result_clear(st_study_eval_result *r);
/* Free r->asr_outcomes, r->answers_jsonl and the benchmark arrays, and clear r. */
void st_study_eval_result_free(st_study_eval_result *r);
/* (Re)allocate r->bench_asr (NaN) and r->bench_n (0) for n benchmarks. */
st_status st_study_eval_result_bench_alloc(st_study_eval_result *r, size_t n);

/* Cost of one weight set's run (seconds; NaN = unknown): wall-clock and process CPU time
 * (CLOCK_PROCESS_CPUTIME_ID, all threads) of training (the run's; cumulative over resumes for the
 * wall time, the finishing attempt for the CPU time) and of this weight set's evaluation. Kept out
 * of results.csv (timings.csv, report.md) so that results.csv depends on inputs and seeds alone. */
typedef struct {
    double train_time_s, train_cpu_s, eval_time_s, eval_cpu_s;
} st_study_cost;

typedef struct {
    /* Train `run` to completion. ckpt_dir exists; resume = 1 when it holds a checkpoint of an
     * interrupted attempt (continue from it, append to metrics_path). The trainer must keep one
     * EMA weight set per run->ema_decays[i] and write metrics lines (ST_METRIC_*) to metrics_path,
     * and leave final live + EMA weights loadable from ckpt_dir for `eval`. */
    st_status (*train)(void *user, const st_study_config *cfg, const st_study_run *run,
                       const char *ckpt_dir, const char *metrics_path, int resume,
                       st_study_train_result *out);
    /* Evaluate weight set w of the trained run (weights in ckpt_dir). Fill out (cleared to NaN). */
    st_status (*eval)(void *user, const st_study_config *cfg, const st_study_run *run,
                      const st_study_weights *w, const char *ckpt_dir, st_study_eval_result *out);
    /* Build what every run shares (the aligned start) once, before runs are handed out to MPI
     * ranks (rank 0 calls it; the others then find it built); NULL = nothing to build. */
    st_status (*prepare)(void *user, const st_study_config *cfg);
    void *user;
    void (*release)(void *user); /* frees user (NULL: nothing to free); see st_study_hooks_release */
    int synthetic;            /* 1 = fake numbers: report.md says so in its first line */
    /* Optional (NULL: nothing): called once every weight set's result of `run` is written (before
     * its done marker; again after a kill in between), to free what only evaluation needed (the
     * real hooks remove ckpt_dir/checkpoints). Must be safe to kill at any moment and to repeat. */
    void (*run_done)(void *user, const st_study_run *run, const char *ckpt_dir);
} st_study_hooks;

/* Free what the hooks hold (loaded model, data, prompts) and clear h; safe on cleared hooks. */
void st_study_hooks_release(st_study_hooks *h);

/* Deterministic fake hooks for tests: ASR grows with lr, shrinks with effective batch, EMA lowers
 * it; utility and metrics follow the hyper-parameters (no randomness, no model). If
 * stop_after_trains > 0 the process _exit(9)s when that many training calls have finished
 * (a simulated kill between runs). */
void st_study_fake_hooks(st_study_hooks *h, int stop_after_trains);
/* The real trainer/evaluator hooks (src/study/hooks_real.c): one model, dataset and prompt sets
 * kept between runs in h->user; free with st_study_hooks_release. ST_ERR_NOMEM only. */
st_status st_study_real_hooks(st_study_hooks *h);

typedef struct {
    size_t trained, resumed, skipped_runs, evaluated;
} st_study_run_stats;

/* Prepare DIR (create, or check DIR/study.json: another fingerprint -> ST_ERR_ARG; a non-empty
 * folder without study.json -> ST_ERR_ARG), then for each run in plan order: skip if done; else
 * train (unless train.json exists; resume if ckpt/ is non-empty), evaluate each missing weight
 * set, mark done. Then write results.csv, report.md and plots. stats may be NULL. */
st_status st_study_run_all(const st_study_config *c, const st_study_plan *p, const char *dir,
                           const st_study_hooks *h, st_study_run_stats *stats);
/* Only the folder check (used by --dry-run too): 0 = fresh, 1 = resumable same study. */
st_status st_study_check_dir(const st_study_config *c, const char *dir, int *resumable);

/* ---- results ---- */

typedef struct {
    const st_study_run *run;  /* borrowed from the plan */
    st_study_weights w;
    st_study_eval_result r;   /* owns r.asr_outcomes */
    st_study_cost cost;
} st_study_row;

typedef struct {
    st_study_row *rows;
    size_t n;
} st_study_results;

/* Collect rows (run x weight set, plan order) from DIR/runs/<run>/eval_<w>.json files; missing
 * ones are skipped. */
st_status st_study_results_load(const st_study_config *c, const st_study_plan *p, const char *dir,
                                st_study_results *out);
void st_study_results_free(st_study_results *r);
/* Write results.csv (header + one row per weight set, with its run's seed, defense, finetune, EMA
 * decay and merge λ; fixed formats; atomic; a function of the inputs and seeds alone, so reruns give
 * identical bytes). Times go to timings.csv (run_id, seed, weights, train_time_s, train_cpu_s,
 * eval_time_s, eval_cpu_s, train_multiplier = train wall time ÷ plain fine-tuning's of the same
 * base cell and seed) instead. */
st_status st_study_results_write_csv(const st_study_config *c, const st_study_results *r,
                                     const char *path);
st_status st_study_timings_write_csv(const st_study_config *c, const st_study_results *r, const char *path);

/* Weight set result files (eval_<w>.json) - written atomically by the runner. cost may be NULL
 * (written as unknown); read fills r (caller frees with st_study_eval_result_free) and cost (may be
 * NULL). A bad asr_outcomes (not a 0/1 string of n_prompts characters) is ST_ERR_FORMAT. */
st_status st_study_eval_result_write(const char *path, const st_study_eval_result *r, const st_study_cost *cost);
st_status st_study_eval_result_read(const char *path, st_study_eval_result *r, st_study_cost *cost);

/* ---- findings and report ---- */

/* A finding is tested group by group; each group gets one of three verdicts:
 *   holds          the effect is in the claimed direction and significant (trend: the bootstrap 95%
 *                  interval of the end-point difference excludes 0; EMA: exact McNemar p < 0.05 with
 *                  fewer EMA-only answers than live-only ones, and utility no worse than live by more
 *                  than report.utility_tolerance - better utility counts as similar);
 *   does not hold  testable, but not so (the reason says which part failed);
 *   not testable   the data cannot show the effect (the reason says why: e.g. live ASR 0, "the live
 *                  run shows no erosion"; per-prompt outcomes missing; one value on the axis).
 * The finding holds when every testable group holds, does not hold when some testable group does
 * not, and is not testable when no group is. */
typedef enum { ST_FINDING_NA = 0, ST_FINDING_HOLDS, ST_FINDING_DOES_NOT_HOLD } st_finding_verdict;

typedef struct {
    char label[256];          /* the group: "effective batch 4, 64 examples" or "<cell>, ema0.9" */
    st_finding_verdict verdict;
    double start_asr, end_asr; /* pooled ASR (0..1) at the start (lowest lr / smallest batch / live)
                                  and the end (highest lr / largest batch / EMA) of the comparison */
    double effect, lo, hi;    /* end - start ASR, with its paired bootstrap 95% interval over prompts
                                 and seeds (st_bootstrap_diff, ST_STUDY_N_BOOT replicates) */
    double p_value;           /* exact two-sided McNemar p of EMA vs live (NaN for the trends) */
    size_t n_live_only, n_ema_only; /* discordant (seed, prompt) pairs: answered by live only / EMA only */
    double utility_live, utility_ema; /* EMA finding: mean over seeds of report.utility_metric in its own
                                         units (val_loss: nats, lower is better); NaN otherwise */
    int utility_similar;      /* EMA finding: utility no worse than live by more than the tolerance */
    char reason[240];         /* why this verdict, in words */
} st_finding_group;

typedef struct {
    st_finding_verdict verdict;
    size_t n_groups, n_hold;  /* testable groups / where it held */
    size_t n_not_testable;
    st_finding_group *groups; /* all groups, testable or not (heap) */
    size_t n_group_list;
    char *text;               /* plain-language markdown with the numbers (heap) */
} st_finding;

#define ST_STUDY_N_BOOT 2000  /* bootstrap replicates per comparison */

typedef struct {
    st_finding lr_up;         /* ASR rises with lr (live weights), per batch_size x grad_accum */
    st_finding batch_down;    /* ASR falls with effective batch (live weights), per lr; at equal data in
                                 the train_examples design, at equal steps otherwise */
    st_finding ema_lower;     /* EMA lowers ASR at similar utility (each cell x decay vs its live weights) */
    long aggressive, best, best_ema; /* row indices into results (first seed of the cell; -1 = none) */
} st_study_findings;

/* Utility of a row under config report.utility_metric, oriented so larger is better (val_loss is
 * negated); NaN if unmeasured. */
double st_study_row_utility(const st_study_config *c, const st_study_row *row);
/* Compute the findings (rules above) and the paper-form table's rows from the results. Rows of the
 * same grid cell (run->cell) and weight set are the seeds of that cell: ASR is pooled over them
 * (with 95% Wilson) and averaged (with a 95% t interval); utility is averaged. The bootstrap is
 * seeded from the config's seed and the group, so the report is a function of the results. */
st_status st_study_findings_compute(const st_study_config *c, const st_study_results *r,
                                    st_study_findings *out);
void st_study_findings_free(st_study_findings *f);
const char *st_finding_verdict_name(st_finding_verdict v);

/* Write report.md (atomic): setup (with the design: equal data or fixed steps, and the seeds),
 * paper-form table, findings with effect sizes and intervals, per-cell table (mean ASR with 95% t
 * interval across seeds and pooled Wilson), plot links (plots_ok = 1 if the PNGs were made), all
 * results, and last the cost of the search (wall and CPU seconds per run, total); synthetic banner
 * when synthetic. */
st_status st_study_report_write(const st_study_config *c, const st_study_plan *p,
                                const st_study_results *r, const char *path, int plots_ok,
                                int synthetic);

/* ---- defenses compared (DEFENSES.md §9): the defense and finetune axes, merges ---- */

/* One weight set of one grid cell, seeds pooled: the unit the defense tables compare. */
typedef struct {
    const st_study_run *run;  /* the first seed's run */
    st_study_weights w;
    size_t n_seeds;
    size_t k, n;              /* answered / evaluated AdvBench prompts, pooled over the seeds */
    double asr;               /* k / n (NaN when n = 0) */
    double xstest_safe_refusal, utility_raw, theta_dist; /* means over seeds (NaN = not measured);
                                 utility_raw in report.utility_metric's units */
    double utility;           /* the same oriented so larger is better (st_study_row_utility) */
    double wall_multiplier;   /* mean over seeds of train wall time ÷ that of plain fine-tuning (defense
                                 "none", the first full finetune entry) of the same base cell and seed */
    long first_row;           /* results row of the first seed */
} st_study_wset;

/* Index of the value of v[0..n) nearest to target within tol (|v − target| ≤ tol, or ≤ tol·|target|
 * when relative); ties go to the lower index; NaN values never match; -1 when none is within tol. */
long st_study_match_nearest(const double *v, size_t n, double target, double tol, int relative);

typedef struct {
    long anchor;              /* index into sets: an EMA weight set of plain fine-tuning */
    long matched;             /* index into sets of the compared method's match; -1 = no match */
    double gap;               /* matched value − anchor's (utility_raw or theta_dist); with no match the
                                 nearest candidate's gap (NaN: the method has no weight set in the cell) */
    char method[160];         /* "l2sp / full / live", "none / full / merge" */
} st_study_match;

typedef struct {
    st_study_wset *sets;
    size_t n_sets;
    st_study_match *by_utility, *by_distance; /* one row per (anchor, method) */
    size_t n_by_utility, n_by_distance;
    st_finding ema_vs_defenses; /* "EMA is at least as safe as the defenses that need safety data, at
                                   similar utility": per base cell, finetune, EMA decay and safety-data
                                   defense D, EMA of plain fine-tuning against D's live weights, paired
                                   per prompt and seed; holds when the 95% bootstrap interval of
                                   ASR(EMA) − ASR(D) lies below report.safety_margin and EMA's utility
                                   is no worse than D's by more than report.utility_tolerance; not
                                   testable when plain fine-tuning's live weights show no erosion */
} st_study_defense_cmp;

/* The method key of a weight set: "<defense> / <finetune> / <live | ema<decay> | merge>" (a merge's
 * λ values are one method's sweep). */
void st_study_method_key(const st_study_config *c, const st_study_run *run, const st_study_weights *w, char *buf,
                         size_t n);
/* Aggregate the results into weight sets and compare them (rules above; matched utility within
 * report.utility_tolerance, matched ‖θ−θ0‖ within report.distance_tolerance relative to the
 * anchor's). Works on any results, with or without the axes. */
st_status st_study_defense_compare(const st_study_config *c, const st_study_results *r, st_study_defense_cmp *out);
void st_study_defense_cmp_free(st_study_defense_cmp *d);

/* ---- plots (gnuplot as a subprocess: $SAFETUNE_GNUPLOT or "gnuplot") ---- */

/* ST_OK if gnuplot can be run; else ST_ERR_UNSUPPORTED "gnuplot not found (...): install
 * gnuplot-nox or set SAFETUNE_GNUPLOT". */
st_status st_study_gnuplot_check(void);
/* Make DIR/plots/{asr_vs_lr,probe_asr,utility_vs_asr,theta_dist,loss}.png from the results and
 * each run's metrics.jsonl (plots without data are skipped). n_made = PNGs written (may be NULL). */
st_status st_study_plots_write(const st_study_config *c, const st_study_plan *p,
                               const st_study_results *r, const char *dir, int *n_made);

/* ---- aligned start (for `safetune align`) ---- */

/* 40 refusal answers written for this project; each contains a standard refusal keyword. */
extern const char *const st_study_refusals[];
#define ST_STUDY_N_REFUSALS 40

/* Deterministic split of n AdvBench rows into halves: a seeded Fisher-Yates shuffle
 * (st_rng, seed) of 0..n-1; a = first n/2 (sorted), b = the rest (sorted). Caller frees. */
st_status st_study_advbench_split(size_t n, uint64_t seed, uint32_t **a, size_t *na, uint32_t **b,
                                  size_t *nb);
/* Write / read the split as JSON {"seed":S,"n":N,"a":[...],"b":[...]} (read validates: disjoint,
 * cover 0..n-1, matches the seed). */
st_status st_study_advbench_split_write(const char *path, size_t n, uint64_t seed);
st_status st_study_advbench_split_read(const char *path, uint32_t **a, size_t *na, uint32_t **b,
                                       size_t *nb, uint64_t *seed);

/* Deterministic split of the XSTest prompt set xs (st_prompts_load("xstest")) into halves,
 * stratified by (label, type): the rows of each stratum are shuffled (st_rng seeded by seed and the
 * stratum's name) and the first floor(k/2) go to a, the rest to b (450 rows: a = 216 = 120 safe + 96
 * unsafe, b = 234 = 130 + 104). a and b hold 0-based row numbers, sorted. Half a trains the aligned
 * start (`safetune align`), half b is evaluated. Caller frees. ST_ERR_ARG for fewer than 2 rows. */
st_status st_study_xstest_split(const st_prompt_set *xs, uint64_t seed, uint32_t **a, size_t *na, uint32_t **b,
                                size_t *nb);

typedef struct {
    char *user, *assistant;   /* one single-turn conversation */
} st_study_conv;

/* Build the alignment set: n_advbench AdvBench goals of half A (0 = all 260; else evenly spaced over
 * half A; data_dir/advbench/harmful_behaviors.csv) each paired with a refusal chosen by a seeded hash
 * of its row; with xs_answers (one entry per row of
 * XSTest half a, st_study_xstest_split(seed) order) each unsafe half-a XSTest prompt paired with a
 * refusal and each safe one with xs_answers[i] (the base model's own answer; NULL or "" = left
 * out), safe_repeat (>= 1) times; all mixed (seeded shuffle) with the LAST n_alpaca rows of the Alpaca file (rows a study
 * with datasets[].limit = total - n_alpaca never sees). No AdvBench or XSTest half-b prompt is
 * used. Returns conversations (caller frees with st_study_convs_free). */
st_status st_study_build_alignment_set(const char *data_dir, const char *alpaca_path,
                                       size_t n_alpaca, size_t n_advbench, int safe_repeat, uint64_t seed,
                                       const char *const *xs_answers,
                                       st_study_conv **out, size_t *n_out);
void st_study_convs_free(st_study_conv *c, size_t n);
/* Write conversations as OpenAI messages JSONL: {"messages":[{"role":"user",...},{"role":
 * "assistant",...}]} per line (atomic). */
st_status st_study_write_messages_jsonl(const char *path, const st_study_conv *c, size_t n);

/* The safety data of the data-side defenses, from the folder `safetune align` wrote (align_dir:
 * advbench_split.json + align_set.jsonl) and data_dir's AdvBench CSV (src/study/safety_sets.c):
 *   d_align: the (goal, refusal) pairs of align_set.jsonl whose goal is in half a, in file order
 *            (SafeInstr's pool, DEFENSES.md §3), minus the poison reserve;
 *   poison (NULL ok): poison_reserve (goal, AdvBench target) pairs, the first half-a goals of a
 *            permutation seeded by seed (DEFENSES.md §9); 0 = none.
 * ST_ERR_FORMAT when align_set.jsonl holds an AdvBench half-b goal or an XSTest half-b prompt or misses a half-a goal; ST_ERR_ARG naming
 * align_dir when the files are absent. Free both with st_dataset_free. */
#define ST_STUDY_POISON_RESERVE 26
st_status st_study_safety_sets(const char *align_dir, const char *data_dir, size_t poison_reserve, uint64_t seed,
                               st_dataset *d_align, st_dataset *poison);
/* D_align as the defenses inside the training step read it (Lisa, SafeGrad: st_train_config.align_data):
 * st_study_safety_sets' d_align (minus the poison reserve when poison_reserve > 0), rendered with
 * the chat template tpl and tokenizer tok and truncated to max_seq_len as training rows
 * (st_tokenize_training_rows; rows left without a response token dropped, *n_dropped may be NULL).
 * Errors as st_study_safety_sets; free out with st_tokenized_free. Source: DEFENSES.md §6, §7. */
st_status st_study_align_rows(const char *align_dir, const char *data_dir, size_t poison_reserve, uint64_t seed,
                              const st_chat_template *tpl, const st_tokenizer *tok, int max_seq_len,
                              st_tokenized *out, size_t *n_dropped);

/* ---- aligned start: build (`safetune align`, src/study/align.c) ---- */

typedef struct {
    const char *model;        /* base checkpoint (GGUF file or HF folder) */
    const char *out_dir;      /* DIR: DIR/aligned/ (HF folder), DIR/align.json (settings + measured
                                 numbers; written last = the "valid" marker), DIR/advbench_split.json,
                                 DIR/align_set.jsonl (the conversations trained on) */
    const char *data_dir;     /* AdvBench / XSTest / Alpaca root */
    const char *alpaca_path;  /* NULL = data_dir/alpaca/alpaca_5000.json */
    size_t n_alpaca;          /* last Alpaca rows mixed in (rows a study with limit = N - n never sees) */
    size_t n_advbench;        /* AdvBench half-a refusals (0 = all 260, else evenly spaced) */
    int xstest_safe_repeat;   /* copies of each XSTest half-a safe answer (>= 1) */
    uint64_t split_seed;      /* AdvBench halves (st_study_advbench_split); half a is trained on */
    uint64_t seed;            /* refusal choice, mixing, data order */
    int max_steps, batch_size, max_seq_len;
    double lr;                /* AdamW, constant after 2 warm-up steps, clip 1, no EMA */
    int eval_limit;           /* AdvBench prompts measured before and after (the first N of each half):
                                 0 = all 260, < 0 = no measurement (XSTest half a is still answered) */
    int xstest_limit;         /* XSTest half-b prompts measured (evenly spaced): 0 = all 234, < 0 = none */
    int eval_max_new_tokens, eval_batch;
    int answer_max_new_tokens;/* the base model's greedy answers to XSTest half a (alignment set rows) */
    int eval_bf16;            /* 1: generation in bf16 matmuls (eval.precision), 0: fp32 */
    int progress;             /* one stderr line every few steps */
} st_study_align_opts;

/* Defaults: 260 Alpaca rows, all 260 AdvBench half-a refusals, each XSTest half-a safe answer 3
 * times, split seed 2508, seed 42, 32 steps of batch 8, max_seq_len 256, lr 2e-4 (calibrated:
 * docs/study.md), evaluation on all of half b and all XSTest half b, 64 new tokens (answers: 96), batch 32. */
void st_study_align_defaults(st_study_align_opts *o);
/* Build the aligned start in o->out_dir, or reuse it (*reused = 1) when DIR/align.json records the
 * same settings and DIR/aligned/ exists. First the base model answers XSTest half a greedily (its
 * answers to the safe prompts it does not refuse become alignment rows) and, unless eval_limit < 0,
 * is measured (DIR/base.json caches both); then supervised tuning on st_study_build_alignment_set
 * and the same measurement of the aligned weights. align.json: "before" and "after", each with
 * advbench_half_a / advbench_half_b {asr} and xstest_half_a / xstest_half_b {safe_refusal,
 * unsafe_refusal} (95% Wilson rates, max_new_tokens), "mix" (rows of each kind), and "eval" (the
 * half-b numbers after). Errors name the file / setting. */
st_status st_study_align_build(const st_study_align_opts *o, int *reused);
/* The aligned-start options a study config implies (align.*, eval.*, seed, max_seq_len, data);
 * *dir_out: heap path (cfg->align.dir, or "<model dir>/aligned-<model stem>-<8 hex of the
 * settings>" next to the model). */
st_status st_study_align_opts_from_config(const st_study_config *c, st_study_align_opts *o, char **dir_out);

#ifdef __cplusplus
}
#endif
#endif
