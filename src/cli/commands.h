/* commands.h - CLI subcommands. Each returns the process exit code (0 ok, 1 error, 2 usage). */
#ifndef SAFETUNE_CLI_COMMANDS_H
#define SAFETUNE_CLI_COMMANDS_H

#include <stddef.h>

#include "cli/args.h"
#include "safetune/export.h"
#include "safetune/generate.h"
#include "safetune/merge.h"
#include "safetune/model.h"

typedef struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} st_command;

int cmd_info(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_study(int argc, char **argv);
int cmd_align(int argc, char **argv);
int cmd_merge(int argc, char **argv);

/* Option rows (args.h) of the sampler (sampler.h) for generate and chat: float temperature,
 * int top_k, float top_p, uint64_t seed variables. */
#define CLI_SAMPLING_OPTS(temperature, top_k, top_p, seed)                                              \
    {"temperature", ST_OPT_FLOAT, &(temperature), "T", "0 = greedy", 0, 1e6, 0},                       \
    {"top-k", ST_OPT_INT, &(top_k), "K", "keep the K most likely tokens (0 = off)", 0, 1 << 30, 0},    \
    {"top-p", ST_OPT_FLOAT, &(top_p), "P", "nucleus sampling, 0 < P <= 1 (1 = off)", 1e-9, 1, 0},      \
    {"seed", ST_OPT_U64, &(seed), "S", "sampling seed", 0, 0, 0}

/* Option rows --stop-id N and --stop TEXT (repeatable; st_opt_multi ids, texts). */
#define CLI_STOP_OPTS(ids, texts)                                                                                \
    {"stop-id", ST_OPT_MULTI, &(ids), "N",                                                                       \
     "also end a reply at token id N (repeatable; default: none; the template's end-of-turn tokens and EOS always end it)", 0, 0, 0}, \
    {"stop", ST_OPT_MULTI, &(texts), "TEXT",                                                                     \
     "end a reply where its text contains TEXT; TEXT and what follows are left out (repeatable; default: none)", 0, 0, 0}

/* --stop-id / --stop values into go->extra_stop_ids (parsed into ids_buf[ST_OPT_MULTI_MAX]; range
 * checked against the vocabulary by st_generate) and go->stop_texts. 0, or 2 after a usage error
 * (src/cli/stops.c). */
int cli_apply_stops(const st_args_spec *spec, const st_opt_multi *ids, const st_opt_multi *texts, int32_t *ids_buf,
                    st_generate_options *go);

/* Option row --date-string D of the Llama-3.1/3.2/3.3 chat templates (const char *date). */
#define CLI_DATE_OPT(date)                                                                                       \
    {"date-string", ST_OPT_STR, &(date), "D",                                                                   \
     "Llama-3.1/3.2/3.3 chat templates: the system block's \"Today Date: D\" (Hugging Face's date_string, e.g. " \
     "\"26 Jul 2024\"); default: the template's fixed 26 Jul 2024, so runs are reproducible (Hugging Face's "    \
     "Llama-3.2 template writes today's date: pass it to match)", 0, 0, 0}

/* --date-string D onto m's chat template (nothing when date is NULL). 0, or 1 after printing
 * "PROG: message" (src/cli/modelpath.c). */
int cli_apply_date(const char *prog, st_model *m, const char *date);

/* 1 and one line in msg when path is a folder safetune writes that is not a model (training
 * output, trainer checkpoint, unfinished run, study / study-run / align folder), naming what it
 * is and which path to pass; else 0 (src/cli/modelpath.c). */
int cli_model_hint(const char *path, char *msg, size_t cap);

/* 0 if MODEL exists and is not one of the folders of cli_model_hint; else prints "PROG: MODEL: no such file or directory ..." and returns 1. */
int cli_check_model_path(const char *prog, const char *path);
/* DIR/config.json parsed when it is a `safetune train` run's settings (not a Hugging Face
 * config), else NULL; free with cJSON_Delete. */
struct cJSON;
struct cJSON *cli_read_run_config(const char *dir);

/* Collective (`mpirun -np N`; ST_OK at once in one process): ST_OK when this rank's settings
 * `mine` (a JSON object: train's run config, the study's normalised config) equal rank 0's; else
 * ST_ERR_ARG on every rank, st_last_error() "rank R of N: key 'lr' (--lr) is 0.0001 here but
 * 0.002 on rank 0: every rank must get the same WHAT" for the lowest such rank R and the first
 * key (dotted path) that differs; train_flags: name the `train` flag of a settings-table key
 * (src/cli/rankcheck.c). */
st_status cli_same_as_rank0(const char *mine, const char *what, int train_flags);

/* Option row --weights live|ema (a `safetune train` output folder: final/ or final-ema/). */
#define CLI_WEIGHTS_OPT(weights) \
    {"weights", ST_OPT_CHOICE, &(weights), "live|ema", "with a training output folder: final/ (live) or final-ema/ (ema)", 0, 0, 0}

/* Resolve MODEL for --weights live|ema. A training output folder (holding final/ or final-ema/,
 * the trainer's Hugging Face exports) resolves to OUT/final (live) or OUT/final-ema (ema); any
 * other MODEL (a .gguf file, an HF folder) is itself for live and an error for ema. ST_ERR_ARG
 * naming the folder when the requested weights are absent (the run's config.json says why).
 * *out: heap path. */
st_status cli_resolve_weights(const char *model, const char *weights, char **out);

/* MODEL (+ --weights, cli_resolve_weights) -> checked (cli_check_model_path) and loaded
 * model in *m. 0, or 1 after printing "PROG: message" (src/cli/modelpath.c). */
int cli_load_model(const char *prog, const char *model, const char *weights, st_model **m);
/* As cli_load_model with --adapter DIR (NULL = none): the PEFT LoRA folder merged into the
 * model's weights (st_model_load_with_adapter). */
int cli_load_model_adapter(const char *prog, const char *model, const char *weights,
                           const char *adapter, st_model **m);

/* 1 when folder dir holds tokenizer.json. */
int cli_dir_has_tokenizer(const char *dir);

/* Option row --adapter DIR (generate, chat, eval, serve). */
#define CLI_ADAPTER_OPT(adapter)                                                                          \
    {"adapter", ST_OPT_STR, &(adapter), "DIR", "a PEFT LoRA adapter folder (adapter_config.json + "        \
     "adapter_model.safetensors) applied on top of --model (merged into its weights); one made for another " \
     "base model is refused", 0, 0, 0}
/* Checks --adapter DIR against the resolved model path before any loading: DIR must be a PEFT
 * adapter folder and model_path not one itself. ST_ERR_ARG naming the path and the fix. */
st_status cli_check_adapter(const char *model_path, const char *adapter);
/* st_model_load(model_path), or with adapter (non-NULL) st_model_load_with_adapter after
 * cli_check_adapter; warns on stderr when adapter_config.json names another local base. */
st_status cli_model_load(const char *prog, const char *model_path, const char *adapter, st_model **m);

/* Creates the --out folder OUT (and its parents) if needed; *made = 1 when it did not exist.
 * 0 on success, 1 with st_last_error() naming the folder (src/cli/outdir.c). */
int cli_out_create(const char *out, int *made);

/* End the process as signal sig's default action would, from any thread (e.g. one taking signals
 * with sigwait): first removes the --out folder cli_out_create made if it is still empty. */
void cli_signal_exit(int sig);

/* SIGINT/SIGTERM blocked in every thread (call it while the process has one thread) and taken by
 * one thread with sigwait: while *phase == 1 the first signal sets *stop = sig and prints msg (the
 * work then ends itself after its current step); otherwise, or on a second signal, the process
 * ends at once (cli_signal_exit). No handler returns into compute code (src/cli/stopsig.c). */
void cli_stop_signals_start(volatile sig_atomic_t *stop, volatile sig_atomic_t *phase, const char *msg);

/* On failure: removes OUT again if this command created it and it is still empty. */
void cli_out_abandon(const char *out, int made);

/* Merge theta_ft[n] back with theta0[n] by spec (merge.h; a DARE spec without a seed uses
 * default_seed) and write the HF folder dir (st_export_hf of tmpl's config and tokenizer, atomic)
 * plus dir/merge.json (spec_text, parameters, tensors, SLERP fallback fraction, DARE kept
 * fraction, theta_dist, lambda_proj). stats_out may be NULL (src/cli/cmd_merge.c). */
st_status cli_merge_write(const st_model *tmpl, const float *theta0, const float *theta_ft,
                          const st_merge_spec *spec, uint64_t default_seed, const char *dir,
                          st_export_dtype dtype, const char *spec_text, st_merge_stats *stats_out);
/* One line on stderr: "PROG: wrote DIR (‖θ−θ0‖ .., λ_proj .., fallback / kept fraction)". */
void cli_merge_print(const char *prog, const char *dir, const st_merge_spec *spec, const st_merge_stats *stats);

#endif
