/* cmd_train.c - `safetune train`: full fine-tuning with AdamW + LR schedule + clipping + EMA of
 * the weights (Kim et al. 2025, arXiv 2508.12531). Output folder: config.json (the run's
 * settings), metrics.jsonl, checkpoints/step-N/, final/ (HF folder, live weights), final-ema/
 * (HF folder, EMA weights). Options via src/cli/args.h (flags or --config JSON; flags win). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "safetune/checkpoint.h"
#include "safetune/data.h"
#include "safetune/export.h"
#include "safetune/model.h"
#include "safetune/trainer.h"

/* Options arrive as float (args.h): recover the double the user typed (as eval utility does). */
static double dbl(float f) { return st_args_decimal(f); }

typedef struct {
    const char *model, *data, *data_format, *out, *lr_schedule, *precision, *resume, *save_weights,
        *export_dtype, *ema_decay;
    float lr, epochs, weight_decay, beta1, beta2, eps, max_grad_norm, val_fraction;
    int batch_size, grad_accum, max_steps, warmup_steps, ema_every, ema_start, max_seq_len,
        eval_every, save_every, keep_checkpoints, max_rows, quiet, overwrite;
    uint64_t seed;
} train_opts;

/* SIGINT / SIGTERM are blocked in every thread of `train` (set before any thread exists, so the
 * compute threads inherit it) and taken by one thread with sigwait: no handler ever interrupts
 * AVX-512 code. (A handler that returned into the trainer corrupted the heap inside oneDNN's sgemm
 * about one run in four on this VM, seen as "corrupted size vs. prev_size".) While the run trains,
 * the first signal asks it to stop after the current step and save it; while the final weights
 * are exported, it lets the export finish; before that, or on a second signal, the process ends
 * as by default (an empty --out it created is removed first). */
static volatile sig_atomic_t g_stop, g_training; /* g_training: 1 training, 2 exporting */
static sigset_t g_stop_set;

static void *stop_signal_thread(void *arg) {
    (void)arg;
    for (;;) {
        int sig;
        if (sigwait(&g_stop_set, &sig) != 0) continue;
        if (!g_training || g_stop) cli_signal_exit(sig);
        g_stop = sig;
        static const char msg[] = "\nsafetune train: stopping after the current step and saving it "
                                  "(interrupt again to quit now)\n";
        static const char msg_export[] = "\nsafetune train: training is done; finishing the export of the "
                                         "final weights (interrupt again to quit now and lose them)\n";
        const int exporting = g_training == 2;
        if (write(STDERR_FILENO, exporting ? msg_export : msg,
                  (exporting ? sizeof msg_export : sizeof msg) - 1) < 0) { /* nothing to do: stderr is gone */
        }
    }
    return NULL;
}

/* Block SIGINT/SIGTERM in this (still single) thread and start the thread that takes them. */
static void start_stop_signal_thread(void) {
    sigemptyset(&g_stop_set);
    sigaddset(&g_stop_set, SIGINT);
    sigaddset(&g_stop_set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &g_stop_set, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, stop_signal_thread, NULL) == 0) pthread_detach(th);
    else pthread_sigmask(SIG_UNBLOCK, &g_stop_set, NULL); /* no thread: default actions */
}

static int fail(const char *what) {
    fprintf(stderr, "safetune train: %s%s%s\n", what ? what : "", what ? ": " : "", st_last_error());
    return 1;
}

/* The first entry of folder `out` that a `safetune train` run does not write (a model folder,
 * the user's files), into what; 0 when there is none, no folder, or the folder is a run's (its
 * config.json is a run config, cli_read_run_config): then other entries are the user's results. */
static int foreign_entry(const char *out, char *what, size_t cap) {
    static const char *const ours[] = {"config.json", "metrics.jsonl", "checkpoints", "final", "final-ema"};
    cJSON *run = cli_read_run_config(out);
    cJSON_Delete(run);
    if (run) return 0; /* a run's folder: what else is in it (eval results...) is the user's, left alone */
    DIR *d = opendir(out);
    if (!d) return 0;
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || !strncmp(n, "final", 5)) continue; /* final*.tmp.PID too */
        int ok = 0;
        for (size_t i = 0; i < sizeof ours / sizeof *ours && !ok; i++) ok = !strcmp(n, ours[i]);
        if (ok && !strcmp(n, "config.json")) { /* not a run config: checked above */
            ok = 0;
            snprintf(what, cap, "a config.json that is not a training run's (a model folder?)");
        } else if (!ok) {
            snprintf(what, cap, "'%s', which a training run does not write", n);
        }
        found = !ok;
    }
    closedir(d);
    return found;
}

static char *run_config(const train_opts *o, const st_train_config *c) {
    cJSON *r = cJSON_CreateObject();
    /* absolute paths: `train --config OUT/config.json --resume auto` then works from any folder */
    char am[PATH_MAX], ad[PATH_MAX];
    cJSON_AddStringToObject(r, "model", realpath(o->model, am) ? am : o->model);
    cJSON_AddStringToObject(r, "data", realpath(o->data, ad) ? ad : o->data);
    cJSON_AddStringToObject(r, "data_format", o->data_format);
    cJSON_AddStringToObject(r, "out", o->out);
    cJSON_AddNumberToObject(r, "lr", c->optim.lr);
    cJSON_AddNumberToObject(r, "batch_size", c->batch_size);
    cJSON_AddNumberToObject(r, "grad_accum", c->grad_accum);
    cJSON_AddNumberToObject(r, "max_steps", (double)c->max_steps);
    cJSON_AddNumberToObject(r, "epochs", c->epochs);
    cJSON_AddNumberToObject(r, "warmup_steps", (double)c->sched.warmup_steps);
    cJSON_AddStringToObject(r, "lr_schedule", o->lr_schedule);
    cJSON_AddNumberToObject(r, "weight_decay", c->optim.weight_decay);
    cJSON_AddNumberToObject(r, "beta1", c->optim.beta1);
    cJSON_AddNumberToObject(r, "beta2", c->optim.beta2);
    cJSON_AddNumberToObject(r, "eps", c->optim.eps);
    cJSON_AddNumberToObject(r, "max_grad_norm", c->max_grad_norm);
    if (c->n_ema <= 1) {
        cJSON_AddNumberToObject(r, "ema_decay", c->n_ema ? c->ema_decays[0] : 0.0);
    } else {
        cJSON *dl = cJSON_AddArrayToObject(r, "ema_decay");
        for (int j = 0; j < c->n_ema; j++) cJSON_AddItemToArray(dl, cJSON_CreateNumber(c->ema_decays[j]));
    }
    cJSON_AddNumberToObject(r, "ema_every", (double)c->ema_every);
    cJSON_AddNumberToObject(r, "ema_start", (double)c->ema_start);
    cJSON_AddStringToObject(r, "precision", c->bf16 ? "bf16" : "fp32");
    cJSON_AddNumberToObject(r, "seed", (double)c->seed);
    cJSON_AddNumberToObject(r, "max_seq_len", c->max_seq_len);
    cJSON_AddNumberToObject(r, "val_fraction", c->val_fraction);
    cJSON_AddNumberToObject(r, "eval_every", (double)c->eval_every);
    cJSON_AddNumberToObject(r, "save_every", (double)c->save_every);
    cJSON_AddNumberToObject(r, "keep_checkpoints", c->keep_checkpoints);
    cJSON_AddNumberToObject(r, "max_rows", o->max_rows);
    cJSON_AddStringToObject(r, "save_weights", o->save_weights);
    cJSON_AddStringToObject(r, "export_dtype", o->export_dtype);
    char *t = cJSON_Print(r);
    cJSON_Delete(r);
    return t;
}

/* --ema-decay: "none" or 0 (no EMA), or decays in (0, 1) separated by ','. 0 or a message. */
static int parse_decays(const char *text, st_train_config *c, char *why, size_t cap) {
    c->n_ema = 0;
    if (!strcmp(text, "none")) return 0;
    const char *p = text;
    for (;;) {
        char *end;
        errno = 0;
        const double d = strtod(p, &end);
        if (end == p || errno || (*end && *end != ',') || !isfinite(d)) {
            snprintf(why, cap, "--ema-decay %s: expected none or decays like 0.99 or 0.9,0.5", text);
            return 1;
        }
        if (d == 0 && c->n_ema == 0 && !*end) return 0; /* 0 = off */
        if (!(d > 0 && d < 1)) {
            snprintf(why, cap, "--ema-decay %s: %g is not in (0, 1) (decay 1 never moves from the start weights, "
                     "0 is the live weights; none = no EMA)", text, d);
            return 1;
        }
        if (c->n_ema == ST_EMA_MAX) {
            snprintf(why, cap, "--ema-decay %s: at most %d decays", text, ST_EMA_MAX);
            return 1;
        }
        for (int j = 0; j < c->n_ema; j++)
            if ((float)c->ema_decays[j] == (float)d) {
                snprintf(why, cap, "--ema-decay %s: %g is listed twice", text, d);
                return 1;
            }
        c->ema_decays[c->n_ema++] = d;
        if (!*end) return 0;
        p = end + 1;
    }
}

static st_status export_one(const st_model *m, const float *params, const char *out,
                            const char *name, st_export_dtype dt) {
    char d[4200];
    snprintf(d, sizeof d, "%s/%s", out, name);
    st_status s = st_export_hf(m, params, d, dt);
    if (!s) fprintf(stderr, "safetune train: wrote %s\n", d);
    return s;
}

int cmd_train(int argc, char **argv) {
    train_opts o = {.data_format = "auto", .lr_schedule = "constant", .precision = "fp32",
                    .save_weights = "both", .export_dtype = "f32", .lr = 1e-5f,
                    .weight_decay = 0.0f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                    .max_grad_norm = 1.0f, .ema_decay = "0.99", .val_fraction = 0.05f,
                    .batch_size = 8, .grad_accum = 1, .ema_every = 1, .ema_start = 1,
                    .max_seq_len = 512, .keep_checkpoints = 2, .seed = 42};
    st_opt opts[] = {
        {"model", ST_OPT_STR, &o.model, "MODEL", "GGUF file or Hugging Face folder (required)", 0, 0, 0},
        {"data", ST_OPT_STR, &o.data, "FILE", "training data (JSON / JSONL) (required)", 0, 0, 0},
        {"data-format", ST_OPT_CHOICE, &o.data_format, "auto|alpaca|dolly|orca|messages", "format of --data", 0, 0, 0},
        {"out", ST_OPT_STR, &o.out, "DIR", "run folder (required)", 0, 0, 0},
        {"lr", ST_OPT_FLOAT, &o.lr, "X", "peak learning rate", 0, 1, 0},
        {"batch-size", ST_OPT_INT, &o.batch_size, "N", "rows per micro-batch", 1, 1 << 20, 0},
        {"grad-accum", ST_OPT_INT, &o.grad_accum, "N", "micro-batches per optimiser step", 1, 1 << 20, 0},
        {"max-steps", ST_OPT_INT, &o.max_steps, "N", "optimiser steps (or use --epochs)", 0, 1e9, 0},
        {"epochs", ST_OPT_FLOAT, &o.epochs, "E", "passes over the training split when --max-steps is 0", 0, 1e6, 0},
        {"warmup-steps", ST_OPT_INT, &o.warmup_steps, "N", "linear warm-up steps", 0, 1e9, 0},
        {"lr-schedule", ST_OPT_STR, &o.lr_schedule, "KIND", "constant|warmup-constant|linear|cosine|step", 0, 0, 0},
        {"weight-decay", ST_OPT_FLOAT, &o.weight_decay, "X", "AdamW decoupled weight decay", 0, 10, 0},
        {"beta1", ST_OPT_FLOAT, &o.beta1, "X", "AdamW beta1", 0, 0.999999, 0},
        {"beta2", ST_OPT_FLOAT, &o.beta2, "X", "AdamW beta2", 0, 0.9999999, 0},
        {"eps", ST_OPT_FLOAT, &o.eps, "X", "AdamW eps", 1e-30, 1, 0},
        {"max-grad-norm", ST_OPT_FLOAT, &o.max_grad_norm, "X", "clip the global grad norm (0 = off)", 0, 1e30, 0},
        {"ema-decay", ST_OPT_LIST, &o.ema_decay, "B[,B...]", "EMA decay(s) of the weights, each its own average "
         "(final-ema/ the first, final-ema-B/ the others); 0 or none = off", 0, 0, 0},
        {"ema-every", ST_OPT_INT, &o.ema_every, "N", "update the EMA every N steps", 1, 1e9, 0},
        {"ema-start", ST_OPT_INT, &o.ema_start, "N", "first step that updates the EMA", 1, 1e9, 0},
        {"precision", ST_OPT_CHOICE, &o.precision, "fp32|bf16", "matmuls (weights/optimiser stay fp32)", 0, 0, 0},
        {"seed", ST_OPT_U64, &o.seed, "N", "data split and order", 0, 0, 0},
        {"max-seq-len", ST_OPT_INT, &o.max_seq_len, "T", "truncate rows to T tokens", 2, 1 << 20, 0},
        {"val-fraction", ST_OPT_FLOAT, &o.val_fraction, "F", "held-out fraction for val_loss", 0, 0.99, 0},
        {"eval-every", ST_OPT_INT, &o.eval_every, "N", "val_loss every N steps (0 = never)", 0, 1e9, 0},
        {"save-every", ST_OPT_INT, &o.save_every, "N", "checkpoint every N steps (0 = never)", 0, 1e9, 0},
        {"keep-checkpoints", ST_OPT_INT, &o.keep_checkpoints, "N", "keep the newest N checkpoints (0 = keep all)", 0, 1e6, 0},
        {"resume", ST_OPT_STR, &o.resume, "DIR|auto", "resume from a checkpoint (auto: newest under OUT)", 0, 0, 0},
        {"save-weights", ST_OPT_CHOICE, &o.save_weights, "live|ema|both", "final HF folders: final/ (live), final-ema/ (ema)", 0, 0, 0},
        {"export-dtype", ST_OPT_CHOICE, &o.export_dtype, "f32|bf16", "safetensors dtype of final/ and final-ema/", 0, 0, 0},
        {"max-rows", ST_OPT_INT, &o.max_rows, "N", "use only the first N data rows (0 = all)", 0, 1e9, 0},
        {"quiet", ST_OPT_FLAG, &o.quiet, NULL, "no progress bar", 0, 0, 0},
        {"overwrite", ST_OPT_FLAG, &o.overwrite, NULL, "replace a finished run / checkpoints already in --out", 0, 0, 0},
    };
    st_args_spec spec = {"safetune train", "--model MODEL --data FILE --out DIR [options]",
                         "Full fine-tuning (AdamW, LR schedule, clipping, EMA of the weights) on a "
                         "chat dataset; loss on assistant tokens only.",
                         opts, (int)(sizeof opts / sizeof *opts), 0, 0, NULL, 0};
    st_args args;
    int rc = st_args_parse(&spec, argc, argv, &args);
    if (rc) {
        st_args_free(&args);
        return rc < 0 ? 0 : rc;
    }
    if (!o.model || !o.data || !o.out) {
        rc = st_args_fail(&spec, "--model, --data and --out are required (or --config OUT/config.json to continue a run)");
        st_args_free(&args);
        return rc;
    }
    st_train_config c;
    st_train_config_default(&c);
    c.optim.lr = dbl(o.lr);
    c.optim.weight_decay = dbl(o.weight_decay);
    c.optim.beta1 = dbl(o.beta1);
    c.optim.beta2 = dbl(o.beta2);
    c.optim.eps = dbl(o.eps);
    c.batch_size = o.batch_size;
    c.grad_accum = o.grad_accum;
    c.max_steps = o.max_steps;
    c.epochs = dbl(o.epochs);
    c.max_grad_norm = dbl(o.max_grad_norm);
    c.ema_every = o.ema_every;
    c.ema_start = o.ema_start;
    c.seed = o.seed;
    c.max_seq_len = o.max_seq_len;
    c.val_fraction = dbl(o.val_fraction);
    c.eval_every = o.eval_every;
    c.save_every = o.save_every;
    c.keep_checkpoints = o.keep_checkpoints;
    c.out_dir = o.out;
    c.progress = !o.quiet;
    st_sched_kind sk;
    const char *sn = o.lr_schedule;
    if (!strcmp(sn, "warmup-constant") || !strcmp(sn, "warmup_constant")) sn = "constant_with_warmup";
    st_data_format fmt;
    st_export_dtype edt;
    int want_live = !strcmp(o.save_weights, "live") || !strcmp(o.save_weights, "both");
    int want_ema = !strcmp(o.save_weights, "ema") || !strcmp(o.save_weights, "both");
    char bad_decay[512];
    if (parse_decays(o.ema_decay, &c, bad_decay, sizeof bad_decay)) {
        rc = st_args_fail(&spec, "%s", bad_decay);
    } else if (st_schedule_kind_parse(sn, &sk) != ST_OK) {
        rc = st_args_fail(&spec, "--lr-schedule %s: expected constant, warmup-constant, linear, cosine or step", o.lr_schedule);
    } else if (st_data_format_parse(o.data_format, &fmt) != ST_OK) { /* the choices of --data-format */
        rc = st_args_fail(&spec, "--data-format %s: %s", o.data_format, st_last_error());
    } else if (!strcmp(o.save_weights, "ema") && c.n_ema == 0) {
        rc = st_args_fail(&spec, "--save-weights ema needs --ema-decay > 0 (EMA is off, so no weights would be saved)");
    } else if (st_export_dtype_parse(o.export_dtype, &edt) != ST_OK || edt == ST_EXPORT_F16) {
        rc = st_args_fail(&spec, "--export-dtype %s: expected f32 or bf16", o.export_dtype);
    } else if (o.max_steps == 0 && !(o.epochs > 0)) {
        rc = st_args_fail(&spec, "set --max-steps N or --epochs E");
    }
    if (rc) {
        st_args_free(&args);
        return rc;
    }
    st_schedule_default(&c.sched, sk, 1);
    c.sched.warmup_steps = o.warmup_steps;
    c.bf16 = !strcmp(o.precision, "bf16");
    if (c.n_ema == 0) want_ema = 0;

    st_model *m = NULL;
    st_dataset ds = {0};
    st_tokenized tk = {0};
    st_trainer *t = NULL;
    char *cfg_json = NULL;
    rc = 1;
    start_stop_signal_thread();
    /* output folder first: fail fast (and lose nothing) when it is not writable or holds a run */
    char path[4200];
    struct stat sb0;
    int made_out = 0;
    if (o.overwrite && o.resume) {
        rc = st_args_fail(&spec, "--overwrite (start again) and --resume (continue) contradict each other: pass one");
        goto done;
    }
    {
        char what[600];
        if (foreign_entry(o.out, what, sizeof what)) { /* never write into someone else's folder */
            fprintf(stderr, "safetune train: --out %s holds %s; choose a new or empty --out\n", o.out, what);
            goto done;
        }
        char ck[4200];
        snprintf(ck, sizeof ck, "%s/checkpoints", o.out);
        struct stat sb;
        static const char *const fin[] = {"final", "final-ema"};
        char latest0[4400];
        const int has_ck = st_checkpoint_find_latest(ck, "step-", latest0, sizeof latest0) == ST_OK;
        const int auto_resume = o.resume && !strcmp(o.resume, "auto");
        for (int k = 0; k < 2 && (!o.resume || (auto_resume && !has_ck)) && !o.overwrite; k++) {
            snprintf(path, sizeof path, "%s/%s", o.out, fin[k]);
            if (stat(path, &sb) == 0) {
                if (auto_resume)
                    fprintf(stderr, "safetune train: %s holds a finished run (%s) and no checkpoint to resume from; "
                            "pass --overwrite to train it again, or choose a new --out\n", o.out, path);
                else
                    fprintf(stderr, "safetune train: %s holds a finished run (%s); pass --overwrite to replace it%s, "
                            "or choose a new --out\n", o.out, path,
                            has_ck ? ", `safetune train --config OUT/config.json --resume auto --max-steps N` (N larger) to "
                                     "continue it from its last checkpoint" : "");
                goto done;
            }
        }
        if (!o.resume && stat(ck, &sb) == 0) {
            char latest[4400];
            snprintf(path, sizeof path, "%s", ck);
            char prev[4400] = "";
            while (o.overwrite && st_checkpoint_find_latest(ck, "step-", latest, sizeof latest) == ST_OK &&
                   strcmp(latest, prev)) {
                snprintf(prev, sizeof prev, "%s", latest);
                st_remove_flat_dir(latest); /* --overwrite: the old run's checkpoints go */
            }
            if (st_checkpoint_find_latest(ck, "step-", latest, sizeof latest) == ST_OK) {
                fprintf(stderr, "safetune train: %s already has checkpoints (newest %s); pass "
                        "--resume auto to continue that run, --overwrite to replace it, or choose a new --out\n",
                        o.out, latest);
                goto done;
            }
        }
    }
    if (o.resume && o.max_steps > 0) { /* a finished run must not be rewound to an older checkpoint */
        cJSON *prev = cli_read_run_config(o.out);
        const cJSON *pm = cJSON_GetObjectItemCaseSensitive(prev, "max_steps");
        const double prev_steps = cJSON_IsNumber(pm) ? pm->valuedouble : 0;
        cJSON_Delete(prev);
        char f0[4200], f1[4200];
        snprintf(f0, sizeof f0, "%s/final", o.out);
        snprintf(f1, sizeof f1, "%s/final-ema", o.out);
        if (prev_steps > o.max_steps && (stat(f0, &sb0) == 0 || stat(f1, &sb0) == 0)) {
            fprintf(stderr, "safetune train: %s holds a finished run of %.0f steps; --max-steps %d would replace its "
                    "final weights with an earlier state: ask for %.0f steps or more (or --overwrite to train it "
                    "again)\n", o.out, prev_steps, o.max_steps, prev_steps);
            goto done;
        }
    }
    if (o.resume && strcmp(o.resume, "auto")) {
        char sub[2][4400];
        const char *why = NULL;
        char sub2[2][4400];
        snprintf(sub[0], sizeof sub[0], "%s/checkpoints", o.resume);
        snprintf(sub[1], sizeof sub[1], "%s/final", o.resume);
        snprintf(sub2[0], sizeof sub2[0], "%s/MANIFEST", o.resume);
        snprintf(sub2[1], sizeof sub2[1], "%s/model.safetensors", o.resume);
        if (stat(o.resume, &sb0) != 0) why = "no such checkpoint folder";
        else if (!S_ISDIR(sb0.st_mode)) why = "not a folder";
        else if (stat(sub[0], &sb0) == 0 || stat(sub[1], &sb0) == 0)
            why = "a training output folder, not one of its checkpoints";
        else if (stat(sub2[0], &sb0) != 0 && stat(sub2[1], &sb0) == 0)
            why = "an exported model (a run's final/ or final-ema/), not a checkpoint";
        if (why) {
            fprintf(stderr, "safetune train: --resume %s: %s (pass a step-N folder under OUT/checkpoints, or "
                    "--out OUT --resume auto)\n", o.resume, why);
            goto done;
        }
    }
    if (cli_check_model_path("safetune train", o.model)) goto done;
    if (cli_out_create(o.out, &made_out)) {
        fprintf(stderr, "safetune train: --out: %s\n", st_last_error());
        goto done;
    }
    if (!(cfg_json = run_config(&o, &c))) goto done;
    /* writable? (config.json itself is written only once training starts) */
    snprintf(path, sizeof path, "%s/.write-test", o.out);
    if (st_write_file_atomic(path, "", 0) != ST_OK) {
        fprintf(stderr, "safetune train: --out %s is not writable: %s\n", o.out, st_last_error());
        goto done;
    }
    unlink(path);
    st_remove_stale_temp_dirs(o.out, "final"); /* final*.tmp.PID of an export that was killed */
    c.run_config_json = cfg_json;
    c.stop = &g_stop;
    if (st_model_load(o.model, &m) != ST_OK) { fail("loading the model"); goto done; }
    if (!m->tokenizer) { fprintf(stderr, "safetune train: %s: no tokenizer\n", o.model); goto done; }
    if (st_dataset_load(o.data, fmt, &ds) != ST_OK) { fail(NULL); goto done; }
    {
        /* rows whose assistant tokens are all truncated away train nothing: dropped */
        size_t dropped = 0;
        if (st_tokenize_training_rows(&ds, (size_t)o.max_rows, &m->chat, m->tokenizer, o.max_seq_len, &tk,
                                      &dropped, NULL) != ST_OK) {
            fail(NULL);
            goto done;
        }
        if (dropped)
            fprintf(stderr, "safetune train: warning: %s: %zu row%s no trained tokens at --max-seq-len %d; "
                    "dropped\n", o.data, dropped, dropped == 1 ? " has" : "s have", o.max_seq_len);
    }
    if (o.max_seq_len > m->config.max_position_embeddings)
        fprintf(stderr, "safetune train: warning: --max-seq-len %d is above the model's max_position_embeddings %d: "
                "positions past %d were never trained\n", o.max_seq_len, m->config.max_position_embeddings,
                m->config.max_position_embeddings);
    int32_t eos = st_tokenizer_eos_id(m->tokenizer);
    c.pad_id = eos >= 0 && eos < m->config.vocab_size ? eos : 0;
    if (st_trainer_new(m, &tk, &c, &t) != ST_OK) { fail(NULL); goto done; }
    if (o.resume) {
        char dir[4400];
        int have = 1;
        if (!strcmp(o.resume, "auto")) {
            if (st_trainer_latest_checkpoint(t, dir, sizeof dir) != ST_OK) {
                fprintf(stderr, "safetune train: no checkpoint under %s/checkpoints; starting from step 0\n", o.out);
                have = 0;
            }
        } else {
            snprintf(dir, sizeof dir, "%s", o.resume);
        }
        if (have) {
            if (st_trainer_resume(t, dir) != ST_OK) { fail("--resume"); goto done; }
            fprintf(stderr, "safetune train: resumed from %s at step %lld%s\n", dir,
                    (long long)st_trainer_steps_done(t),
                    st_trainer_steps_done(t) >= st_trainer_max_steps(t)
                        ? ": the run is already finished, its final weights are written again (a larger --max-steps continues it)"
                        : "");
        }
    }
    if (o.eval_every > 0 && st_trainer_n_val(t) == 0)
        fprintf(stderr, "safetune train: warning: --eval-every %d but no rows are held out (--val-fraction %g of "
                "%zu rows): no val_loss is measured\n", o.eval_every, (double)o.val_fraction, tk.n);
    if (sk == ST_SCHED_CONSTANT && o.warmup_steps > 0) /* as Hugging Face's get_constant_schedule */
        fprintf(stderr, "safetune train: warning: --lr-schedule constant has no warm-up: --warmup-steps %d is "
                "ignored (use --lr-schedule warmup-constant)\n", o.warmup_steps);
    else if (o.warmup_steps > st_trainer_max_steps(t))
        fprintf(stderr, "safetune train: warning: --warmup-steps %d is more than the run's %lld step%s: the "
                "learning rate never reaches --lr %g\n", o.warmup_steps, (long long)st_trainer_max_steps(t),
                st_trainer_max_steps(t) == 1 ? "" : "s", (double)o.lr);
    if (st_trainer_steps_done(t) == 0) {
        snprintf(path, sizeof path, "%s/metrics.jsonl", o.out);
        unlink(path); /* a fresh run starts a fresh log */
    }
    fprintf(stderr, "safetune train: %zu rows (%zu train, %zu val) of %s, %lld step%s of %d x %d rows, "
            "lr %g, %s\n", tk.n, st_trainer_n_train(t), st_trainer_n_val(t), o.data,
            (long long)st_trainer_max_steps(t), st_trainer_max_steps(t) == 1 ? "" : "s", c.grad_accum, c.batch_size, c.optim.lr,
            c.bf16 ? "bf16" : "fp32");
    snprintf(path, sizeof path, "%s/config.json", o.out);
    if (st_write_file_atomic(path, cfg_json, strlen(cfg_json)) != ST_OK) { fail(NULL); goto done; }
    g_training = 1;
    st_status rs = st_trainer_run(t);
    g_training = 0;
    if (rs == ST_ERR_INTERRUPTED) {
        fprintf(stderr, "safetune train: %s; continue with `safetune train --config %s/config.json --resume auto`\n",
                st_last_error(), o.out);
        rc = 128 + (int)g_stop; /* as the shell reports a death by that signal: 130 SIGINT, 143 SIGTERM */
        goto done;
    }
    if (rs != ST_OK) { fail(NULL); goto done; }
    g_training = 2; /* an interrupt now lets the export finish: the run is complete */
    if (want_live && export_one(m, st_trainer_params(t), o.out, "final", edt) != ST_OK) { fail(NULL); goto done; }
    for (int j = 0; want_ema && j < c.n_ema; j++) { /* final-ema/: the first decay; final-ema-B/: the others */
        char name[64], key[32];
        if (j == 0) snprintf(name, sizeof name, "final-ema");
        else snprintf(name, sizeof name, "final-ema-%s", st_ema_decay_key(c.ema_decays[j], key, sizeof key));
        if (export_one(m, st_trainer_ema_params_k(t, j), o.out, name, edt) != ST_OK) { fail(NULL); goto done; }
    }
    g_training = 0;
    rc = 0;
done:
    if (rc) cli_out_abandon(o.out, made_out);
    st_trainer_free(t);
    st_tokenized_free(&tk);
    st_dataset_free(&ds);
    st_model_free(m);
    free(cfg_json);
    st_args_free(&args);
    return rc;
}
