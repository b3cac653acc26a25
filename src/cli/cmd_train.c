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
#include "safetune/data_transform.h"
#include "safetune/dist.h"
#include "safetune/export.h"
#include "safetune/kernels.h"
#include "safetune/merge.h"
#include "safetune/prompts.h"
#include "safetune/study.h"
#include "safetune/model.h"
#include "safetune/train_settings.h"
#include "safetune/trainer.h"

/* The options of `train` that are not training settings (those come from the settings table,
 * train_settings.h, one option per row). */
typedef struct {
    const char *model, *data, *data_format, *out, *resume, *save_weights, *export_dtype, *lora_init, *adapter;
    int max_rows, quiet, overwrite, zero1;
    /* defenses outside the training step (docs/defenses.md): post-hoc merges, data transforms */
    const char *merge, *lookahead, *lookahead_prefix, *align_dir, *data_dir;
    float poison;
    int lookahead_m, safeinstr_k;
} train_opts;

#define N_SETTINGS_MAX 64

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
    static const char *const ours[] = {"config.json", "metrics.jsonl", "checkpoints", "final", "final-ema",
                                       "train_data.jsonl"};
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
    st_train_config_to_json(c, r, 0); /* every training setting, from the table */
    cJSON_AddNumberToObject(r, "max_rows", o->max_rows);
    cJSON_AddStringToObject(r, "save_weights", o->save_weights);
    cJSON_AddStringToObject(r, "export_dtype", o->export_dtype);
    char ai[PATH_MAX];
    if (o->lora_init) cJSON_AddStringToObject(r, "lora_init", realpath(o->lora_init, ai) ? ai : o->lora_init);
    if (o->merge) cJSON_AddStringToObject(r, "merge", o->merge);
    cJSON_AddStringToObject(r, "lookahead", o->lookahead);
    cJSON_AddNumberToObject(r, "lookahead_m", o->lookahead_m);
    cJSON_AddStringToObject(r, "lookahead_prefix", o->lookahead_prefix);
    cJSON_AddNumberToObject(r, "safeinstr_k", o->safeinstr_k);
    cJSON_AddNumberToObject(r, "poison", st_args_decimal(o->poison));
    char aa[PATH_MAX];
    if (o->align_dir) cJSON_AddStringToObject(r, "align_dir", realpath(o->align_dir, aa) ? aa : o->align_dir);
    if (o->data_dir) cJSON_AddStringToObject(r, "data_dir", realpath(o->data_dir, aa) ? aa : o->data_dir);
    char *t = cJSON_Print(r);
    cJSON_Delete(r);
    return t;
}

/* --merge SPEC,...: each spec checked (st_merge_spec_parse, the message names the key) and no two
 * with the same folder name; 0 or st_args_fail's 2. */
static int parse_merges(st_args_spec *spec, const char *list, st_merge_spec *out, char (*text)[128], int cap,
                        int *n) {
    *n = 0;
    for (const char *b = list;;) {
        const char *e = strchr(b, ',');
        const size_t len = e ? (size_t)(e - b) : strlen(b);
        if (*n == cap) return st_args_fail(spec, "--merge: more than %d specs", cap);
        if (len == 0 || len >= 128) return st_args_fail(spec, "--merge %s: an empty or overlong spec", list);
        memcpy(text[*n], b, len);
        text[*n][len] = 0;
        if (st_merge_spec_parse(text[*n], &out[*n])) return st_args_fail(spec, "--merge: %s", st_last_error());
        char a[96], c[96];
        for (int k = 0; k < *n; k++)
            if (!strcmp(st_merge_spec_name(&out[k], a, sizeof a), st_merge_spec_name(&out[*n], c, sizeof c)))
                return st_args_fail(spec, "--merge: '%s' and '%s' are the same merge", text[k], text[*n]);
        ++*n;
        if (!e) break;
        b = e + 1;
    }
    return 0;
}

/* The data-side defenses on D_user (ds, already cut to --max-rows), in this order: the poisoned
 * column replaces rows, SafeInstr appends *n_safety rows of D_align, LookAhead rewrites every
 * row; the rows trained on are then written to OUT/train_data.jsonl (messages JSONL). */
static st_status data_defenses(const train_opts *o, st_lookahead_mode la, uint64_t seed, const st_model *m,
                               st_dataset *ds, size_t *n_safety) {
    *n_safety = 0;
    st_status s = ST_OK;
    if (o->safeinstr_k > 0 || o->poison > 0) {
        st_dataset pool = {0}, harm = {0};
        const char *dd = o->data_dir ? o->data_dir : st_prompts_default_data_dir();
        s = st_study_safety_sets(o->align_dir, dd, o->poison > 0 ? ST_STUDY_POISON_RESERVE : 0, seed, &pool,
                                 o->poison > 0 ? &harm : NULL);
        size_t n_poison = 0;
        if (!s && o->poison > 0) s = st_data_poison(ds, &harm, st_args_decimal(o->poison), seed, NULL, &n_poison);
        if (!s && o->safeinstr_k > 0) s = st_data_mix(ds, &pool, (size_t)o->safeinstr_k, seed, NULL);
        if (!s && o->safeinstr_k > 0) *n_safety = (size_t)o->safeinstr_k;
        if (!s && n_poison)
            fprintf(stderr, "safetune train: poison: %zu of %zu user rows replaced by harmful goal -> AdvBench target "
                    "pairs (%d goals of half a, left out of the SafeInstr pool)\n", n_poison, ds->n - *n_safety,
                    ST_STUDY_POISON_RESERVE);
        if (!s && *n_safety)
            fprintf(stderr, "safetune train: SafeInstr: + %zu refusal pairs of %s (a replay of the alignment set), "
                    "always in the training split\n", *n_safety, o->align_dir);
        st_dataset_free(&pool);
        st_dataset_free(&harm);
        if (s) return s;
    }
    if (la != ST_LOOKAHEAD_NONE &&
        (s = st_data_lookahead(ds, la, o->lookahead_m, o->lookahead_prefix, m->tokenizer)))
        return s;
    if (la != ST_LOOKAHEAD_NONE || o->safeinstr_k > 0 || o->poison > 0) {
        char *p = st_path_join(o->out, "train_data.jsonl");
        s = p ? st_dataset_write_jsonl(ds, p) : ST_ERR_NOMEM;
        free(p);
    }
    return s;
}

/* D_align for the defenses inside the training step (Lisa, SafeGrad): the half-a refusal pairs of
 * --align-dir (as SafeInstr's pool; without the poison reserve when --poison is set), rendered
 * and truncated as the training rows. */
static st_status load_align_rows(const train_opts *o, uint64_t seed, int max_seq_len, const st_model *m,
                                 st_tokenized *out) {
    size_t dropped = 0;
    const char *dd = o->data_dir ? o->data_dir : st_prompts_default_data_dir();
    st_status s = st_study_align_rows(o->align_dir, dd, o->poison > 0 ? ST_STUDY_POISON_RESERVE : 0, seed, &m->chat,
                                      m->tokenizer, max_seq_len, out, &dropped);
    if (!s)
        fprintf(stderr, "safetune train: alignment set: %zu refusal pairs of %s%s\n", out->n, o->align_dir,
                dropped ? " (some had no response token within --max-seq-len: dropped)" : "");
    return s;
}

/* final weights: an HF folder, or with LoRA a PEFT adapter folder over the base (absolute path
 * recorded, so the folder loads as a model: base + adapter merged) */
static st_status export_one(const st_model *m, const st_lora *ad, const char *model_path,
                            const float *params, const char *out, const char *name,
                            st_export_dtype dt) {
    char d[4200], base[PATH_MAX];
    snprintf(d, sizeof d, "%s/%s", out, name);
    st_status s = ad ? st_lora_save_peft(ad, params, realpath(model_path, base) ? base : model_path, d)
                     : st_export_hf(m, params, d, dt);
    if (!s) fprintf(stderr, "safetune train: wrote %s\n", d);
    return s;
}

/* A final export failed (a full disk...): the trained weights must outlive it. When no checkpoint
 * holds the last step (--save-every 0), one is saved now (the failed export removed its temp
 * folder, so that space is back), and `--resume auto` writes the final folders once space is
 * freed. Prints the export's error and what to do; returns 1. */
static int fail_export(st_trainer *t, const char *out) {
    char err[2048], d[4400];
    const int lead = st_dist_rank() == 0; /* every rank calls this (export_all agrees on failure) */
    snprintf(err, sizeof err, "%s", st_last_error());
    fprintf(stderr, "safetune train: %s\n", err);
    snprintf(d, sizeof d, "%s/checkpoints/step-%08lld", out, (long long)st_trainer_steps_done(t));
    int kept = st_dist_agree(lead ? st_checkpoint_verify(d, NULL) : ST_OK) == ST_OK;
    if (!kept) kept = st_trainer_save_checkpoint(t, d) == ST_OK; /* collective; rank 0 writes */
    if (!lead) return 1;
    if (kept)
        fprintf(stderr, "safetune train: the trained weights are kept in %s: free space, then continue with "
                "`safetune train --config %s/config.json --resume auto` (it writes the final folders)\n", d, out);
    else
        fprintf(stderr, "safetune train: no checkpoint of the last step could be saved either (%s): the "
                "training must be run again once space is freed\n", st_last_error());
    return 1;
}

/* LoRA settings apply with --finetune lora only; --lora-init takes r, alpha and targets from its
 * folder. Usage errors (exit 2) before anything loads. */
static int lora_options(const st_args_spec *spec, const st_train_config *c, const train_opts *o,
                        const st_opt *set_opts, const st_train_setting *rows, size_t n_set, const char **config_key) {
    static const char *const lora_flags[] = {"lora-r", "lora-alpha", "lora-targets", "lora-dropout", "base-precision"};
    const char *changed = NULL;
    /* given as a flag, even at its default value (`--finetune full --lora-r 8` is a mistake too) */
    for (size_t k = 0; k < sizeof lora_flags / sizeof *lora_flags && !changed; k++)
        for (size_t i = 0; i < n_set; i++)
            if (!strcmp(rows[i].flag, lora_flags[k]) && set_opts[i].seen && !(config_key && config_key[i]))
                changed = lora_flags[k];
    if (!changed) { /* from a --config file (a run's config.json holds every key): only a changed value */
        st_train_config d;
        st_train_config_default(&d);
        changed = c->lora.r != d.lora.r ? "lora-r" : c->lora.alpha != d.lora.alpha ? "lora-alpha"
                  : c->lora.targets != d.lora.targets ? "lora-targets"
                  : c->lora.dropout != d.lora.dropout ? "lora-dropout"
                  : c->base_bf16 != d.base_bf16 ? "base-precision" : NULL;
    }
    const char *init = o->adapter ? "--adapter" : "--lora-init";
    if (c->finetune == ST_FINETUNE_FULL) {
        if (changed) return st_args_fail(spec, "--%s applies to LoRA: add --finetune lora (or drop it)", changed);
        if (o->lora_init) return st_args_fail(spec, "%s applies to LoRA: add --finetune lora (or drop it)", init);
    } else if (o->lora_init && changed && strcmp(changed, "lora-dropout") && strcmp(changed, "base-precision")) {
        return st_args_fail(spec, "%s takes r, alpha and targets from the adapter folder: drop --%s", init, changed);
    }
    return 0;
}

/* SAFETUNE_LORA_BASE_VIA_FP32=1, or a PEFT adapter folder as the model (its base is merged
 * with the adapter in fp32 on load): a bf16 base is rounded from the fp32 model */
static int lora_base_via_fp32(const char *model) {
    const char *e = getenv("SAFETUNE_LORA_BASE_VIA_FP32");
    if (e && !strcmp(e, "1")) return 1;
    struct stat sb;
    char cj[4200];
    snprintf(cj, sizeof cj, "%s/config.json", model);
    return st_lora_is_adapter_dir(model) && stat(cj, &sb) != 0;
}

/* 64-bit hash of n bytes at p (8-byte words, FNV-style), continuing h */
static uint64_t bytes_hash(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h = (h << 29) | (h >> 35);
    }
    return st_fnv1a64(h, p + i, n - i);
}

/* Hash of the model's weights: ranks compare it (mpirun). A model loaded as a bf16 base (params
 * NULL): the base's bf16 matrices and fp32 norms and biases, tensor by tensor. */
static uint64_t params_hash(const st_model *m, const st_lora_base *base) {
    if (m->params) return bytes_hash(ST_FNV_INIT, m->params, m->layout.n_floats * sizeof(float));
    uint64_t h = ST_FNV_INIT;
    size_t small = 0;
    for (size_t i = 0; i < base->layout.n_tensors; i++) {
        const st_param_info *p = &base->layout.params[i];
        if (p->n_dims == 2) h = bytes_hash(h, base->buf16 + p->offset, p->numel * sizeof *base->buf16);
        else small += p->numel;
    }
    return bytes_hash(h, base->small, small * sizeof(float));
}

/* final/, final-ema(-B)/ and final-merge-SPEC/ from rank 0 (every rank takes part in the gathers of a
 * ZeRO-1 run); every rank returns the same status. */
static st_status export_all(const train_opts *o, const st_train_config *c, st_trainer *t, const st_model *m,
                            st_export_dtype edt, int want_live, int want_ema, const st_merge_spec *merges,
                            char (*merge_text)[128], int n_merges) {
    const int lead = st_dist_rank() == 0;
    const st_lora *ad = st_trainer_adapter(t);
    const size_t n = ad ? ad->layout.n_floats : m->layout.n_floats;
    st_status s = ST_OK;
    float *buf = NULL;
    if ((want_ema && c->n_ema > 0) || n_merges > 0) {
        buf = st_alloc_aligned(n * sizeof *buf);
        if (!buf) s = st_error(ST_ERR_NOMEM, "exporting: cannot allocate %zu MiB", n * sizeof *buf >> 20);
    }
    if ((s = st_dist_agree(s))) goto out;
    if (lead && want_live) s = export_one(m, ad, o->model, st_trainer_params(t), o->out, "final", edt);
    for (int j = 0; want_ema && j < c->n_ema; j++) { /* final-ema/: the first decay; final-ema-B/: the others */
        char name[64], key[32];
        if (j == 0) snprintf(name, sizeof name, "final-ema");
        else snprintf(name, sizeof name, "final-ema-%s", st_ema_decay_key(c->ema_decays[j], key, sizeof key));
        st_status g = st_trainer_full_vector(t, "ema", j, buf); /* collective under ZeRO-1 */
        if (!s) s = g;
        if (lead && !s) s = export_one(m, ad, o->model, buf, o->out, name, edt);
    }
    if (n_merges > 0) {
        st_status g = st_trainer_full_vector(t, "theta0", 0, buf);
        if (!s) s = g;
    }
    for (int k = 0; lead && !s && k < n_merges; k++) {
        char name[96], d[4400];
        st_merge_stats ms;
        snprintf(d, sizeof d, "%s/final-merge-%s", o->out, st_merge_spec_name(&merges[k], name, sizeof name));
        if (!(s = cli_merge_write(m, buf, st_trainer_params(t), &merges[k], c->seed, d, edt, merge_text[k], &ms)))
            cli_merge_print("safetune train", d, &merges[k], &ms);
    }
    s = st_dist_agree(s);
out:
    st_free_aligned(buf);
    return s;
}

int cmd_train(int argc, char **argv) {
    train_opts o = {.data_format = "auto", .save_weights = "both", .export_dtype = "f32", .lookahead = "none",
                    .lookahead_m = ST_LOOKAHEAD_DEFAULT_M, .lookahead_prefix = ST_LOOKAHEAD_DEFAULT_PREFIX};
    /* one option per training setting, its text parsed by the table (bounds, names, messages
     * that name the key); then the options of this command */
    st_train_config c;
    st_train_config_default(&c);
    size_t n_set;
    const st_train_setting *rows = st_train_settings(&n_set);
    const char *text[N_SETTINGS_MAX];
    char defs[N_SETTINGS_MAX][64], helps[N_SETTINGS_MAX][320];
    st_opt opts[N_SETTINGS_MAX + 24];
    int n_opts = 0;
    opts[n_opts++] = (st_opt){"model", ST_OPT_STR, &o.model, "MODEL", "GGUF file or Hugging Face folder (required)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"data", ST_OPT_STR, &o.data, "FILE", "training data (JSON / JSONL) (required)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"data-format", ST_OPT_CHOICE, &o.data_format, "auto|alpaca|dolly|orca|messages",
                              "format of --data", 0, 0, 0};
    opts[n_opts++] = (st_opt){"out", ST_OPT_STR, &o.out, "DIR", "run folder (required)", 0, 0, 0};
    const int first_setting = n_opts;
    for (size_t i = 0; i < n_set && i < N_SETTINGS_MAX; i++) {
        st_train_setting_text(&c, &rows[i], defs[i], sizeof defs[i]);
        text[i] = defs[i];
        snprintf(helps[i], sizeof helps[i], "%s [%s] (default: %s)", rows[i].help, rows[i].key, defs[i]);
        opts[n_opts++] = (st_opt){rows[i].flag, ST_OPT_LIST, &text[i], rows[i].metavar, helps[i], 0, 0, 0};
    }
    opts[n_opts++] = (st_opt){"resume", ST_OPT_STR, &o.resume, "DIR|auto", "resume from a checkpoint (auto: newest under OUT)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"save-weights", ST_OPT_CHOICE, &o.save_weights, "live|ema|both",
                              "final HF folders: final/ (live), final-ema*/ (ema)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"export-dtype", ST_OPT_CHOICE, &o.export_dtype, "f32|bf16",
                              "safetensors dtype of final/ and final-ema*/", 0, 0, 0};
    opts[n_opts++] = (st_opt){"max-rows", ST_OPT_INT, &o.max_rows, "N", "use only the first N data rows (0 = all)", 0, 1e9, 0};
    opts[n_opts++] = (st_opt){"quiet", ST_OPT_FLAG, &o.quiet, NULL, "no progress bar", 0, 0, 0};
    opts[n_opts++] = (st_opt){"zero1", ST_OPT_FLAG, &o.zero1, NULL, "under mpirun: ZeRO stage 1, each rank keeps the AdamW "
                              "moments, EMAs and theta_0 of its slice only (docs/mpi.md)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"overwrite", ST_OPT_FLAG, &o.overwrite, NULL, "replace a finished run / checkpoints already in --out", 0, 0, 0};
    opts[n_opts++] = (st_opt){"lora-init", ST_OPT_STR, &o.lora_init, "DIR", "with --finetune lora: start from this PEFT "
                              "adapter folder (its r, alpha and targets)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"adapter", ST_OPT_STR, &o.adapter, "DIR", "same as --lora-init (the --adapter of generate, "
                              "eval and serve)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"merge", ST_OPT_STR, &o.merge, "SPEC,...", "also write final-merge-<spec>/: the final live "
                              "weights merged back with the start (linear:L, slerp:T, dare:L:P[:SEED]; seed default --seed)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"lookahead", ST_OPT_CHOICE, &o.lookahead, "none|real|virtual", "LookAhead Tuning: preview "
                              "the answer in the prompt (real: its first --lookahead-m tokens; virtual: --lookahead-prefix)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"lookahead-m", ST_OPT_INT, &o.lookahead_m, "M", "tokens of the answer a real preview shows", 1, 1 << 20, 0};
    opts[n_opts++] = (st_opt){"lookahead-prefix", ST_OPT_STR, &o.lookahead_prefix, "TEXT",
                              "the virtual preview, also prepended to every answer", 0, 0, 0};
    opts[n_opts++] = (st_opt){"safeinstr-k", ST_OPT_INT, &o.safeinstr_k, "K", "SafeInstr: mix K distinct AdvBench half-a "
                              "refusal pairs of --align-dir into the training rows (3% of the rows is the paper's)", 0, 1 << 20, 0};
    opts[n_opts++] = (st_opt){"poison", ST_OPT_FLOAT, &o.poison, "F", "replace this share of the rows by harmful goal -> "
                              "compliance pairs (a reserve of 26 half-a goals with their AdvBench target)", 0, 1, 0};
    opts[n_opts++] = (st_opt){"align-dir", ST_OPT_STR, &o.align_dir, "DIR", "`safetune align` output (align_set.jsonl, "
                              "advbench_split.json) for --safeinstr-k / --poison / --lisa / --safegrad / --ewc-lambda (default: --model's parent when it is one)", 0, 0, 0};
    opts[n_opts++] = (st_opt){"data-dir", ST_OPT_STR, &o.data_dir, "DIR", "AdvBench root for --safeinstr-k / --poison / --lisa / --safegrad / --ewc-lambda "
                              "(default $SAFETUNE_DATA_DIR or data)", 0, 0, 0};
    st_args_spec spec = {"safetune train", "--model MODEL --data FILE --out DIR [options]",
                         "Fine-tuning, full or LoRA (--finetune), with AdamW, LR schedule, clipping and EMA of "
                         "the weights, on a chat dataset; loss on assistant tokens only.",
                         opts, n_opts, 0, 0, NULL, 0};
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
    for (size_t i = 0; i < n_set && !rc; i++)
        if (opts[first_setting + (int)i].seen && st_train_setting_set(&c, &rows[i], text[i]) != ST_OK) {
            const char *key = args.config_key ? args.config_key[first_setting + (int)i] : NULL; /* from --config */
            if (key) rc = st_args_fail(&spec, "%s: key '%s': %s", args.config, key, st_last_error());
            else rc = st_args_fail(&spec, "--%s %s: %s", rows[i].flag, text[i], st_last_error());
        }
    if (!rc && st_train_config_validate(&c) != ST_OK) rc = st_args_fail(&spec, "%s", st_last_error());
    if (!rc && o.adapter && o.lora_init && strcmp(o.adapter, o.lora_init))
        rc = st_args_fail(&spec, "--adapter and --lora-init name two folders: give one");
    if (!rc && o.adapter) o.lora_init = o.adapter;
    if (!rc && o.lora_init && cli_check_adapter(NULL, o.lora_init))
        rc = st_args_fail(&spec, "%s", st_last_error());
    if (!rc)
        rc = lora_options(&spec, &c, &o, opts + first_setting, rows, n_set,
                          args.config_key ? args.config_key + first_setting : NULL);
    if (!rc && o.merge && c.finetune == ST_FINETUNE_LORA) /* the trainer's θ is then the adapter vector */
        rc = st_args_fail(&spec, "--merge works on full fine-tuning weights: with --finetune lora, merge the exported "
                          "final/ afterwards with `safetune merge --base MODEL --model OUT/final`");
    c.out_dir = o.out;
    const int rank = st_dist_rank(), world = st_dist_world(); /* mpirun -np N: rank 0 writes (docs/mpi.md) */
    c.comm = st_dist_trainer_comm();
    c.comm.zero1 = o.zero1;
    c.progress = !o.quiet && rank == 0;
    if (o.zero1 && world == 1)
        fprintf(stderr, "safetune train: warning: --zero1 shards the optimiser state over MPI ranks; in one process "
                "it changes nothing (start with mpirun -np N)\n");
    const st_sched_kind sk = c.sched.kind;
    st_data_format fmt;
    st_export_dtype edt;
    int want_live = !strcmp(o.save_weights, "live") || !strcmp(o.save_weights, "both");
    int want_ema = !strcmp(o.save_weights, "ema") || !strcmp(o.save_weights, "both");
    if (rc) {
    } else if (st_data_format_parse(o.data_format, &fmt) != ST_OK) { /* the choices of --data-format */
        rc = st_args_fail(&spec, "--data-format %s: %s", o.data_format, st_last_error());
    } else if (!strcmp(o.save_weights, "ema") && c.n_ema == 0) {
        rc = st_args_fail(&spec, "--save-weights ema needs --ema-decay > 0 (EMA is off, so no weights would be saved)");
    } else if (st_export_dtype_parse(o.export_dtype, &edt) != ST_OK || edt == ST_EXPORT_F16) {
        rc = st_args_fail(&spec, "--export-dtype %s: expected f32 or bf16", o.export_dtype);
    }
    enum { MAX_MERGES = 32 };
    st_merge_spec merges[MAX_MERGES];
    char merge_text[MAX_MERGES][128];
    int n_merges = 0;
    if (!rc && o.merge) rc = parse_merges(&spec, o.merge, merges, merge_text, MAX_MERGES, &n_merges);
    st_lookahead_mode la = ST_LOOKAHEAD_NONE;
    char align_auto[4200] = "";
    if (!rc && st_lookahead_parse(o.lookahead, &la)) rc = st_args_fail(&spec, "--lookahead: %s", st_last_error());
    if (!rc && la == ST_LOOKAHEAD_VIRTUAL && !*o.lookahead_prefix)
        rc = st_args_fail(&spec, "--lookahead-prefix is empty: lookahead virtual needs a text (default \"%s\")",
                          ST_LOOKAHEAD_DEFAULT_PREFIX);
    /* D_align inside the step (Lisa, SafeGrad) or for EWC's Fisher */
    const int align_step = c.lisa == ST_ON || c.safegrad == ST_ON || c.ewc_lambda > 0;
    if (!rc && (o.safeinstr_k > 0 || o.poison > 0 || align_step) && !o.align_dir) {
        /* the aligned start DIR/aligned of `safetune align --out DIR`: DIR holds the alignment set */
        char *mp = st_strdup(o.model);
        char *sl = mp ? strrchr(mp, '/') : NULL;
        while (sl && sl > mp && sl[1] == 0) { *sl = 0; sl = strrchr(mp, '/'); } /* trailing slashes */
        snprintf(align_auto, sizeof align_auto, "%s/align_set.jsonl", sl ? (*sl = 0, mp) : ".");
        struct stat sa;
        if (stat(align_auto, &sa) == 0) snprintf(align_auto, sizeof align_auto, "%s", sl ? mp : ".");
        else align_auto[0] = 0;
        free(mp);
        if (align_auto[0]) o.align_dir = align_auto;
        else
            rc = st_args_fail(&spec, "%s needs the alignment set (AdvBench half-a pairs): pass --align-dir DIR, the "
                              "folder `safetune align --out DIR` wrote (--model's parent %s is not one)",
                              o.safeinstr_k > 0 ? "safeinstr_k (--safeinstr-k)" : o.poison > 0 ? "poison (--poison)"
                              : c.lisa == ST_ON ? "lisa (--lisa on)" : c.safegrad == ST_ON ? "safegrad (--safegrad on)"
                              : "ewc_lambda (--ewc-lambda)", o.model);
    }
    if (rc) {
        st_args_free(&args);
        return rc;
    }
    if (c.n_ema == 0) want_ema = 0;

    st_model *m = NULL;
    st_dataset ds = {0};
    st_tokenized tk = {0}, align_tk = {0};
    st_trainer *t = NULL;
    st_lora *init_adapter = NULL;
    st_lora_base *base = NULL; /* LoRA on a bf16 base loaded from the file: owned here, the trainer borrows it */
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
    if (o.resume && c.max_steps > 0) { /* a finished run must not be rewound to an older checkpoint */
        cJSON *prev = cli_read_run_config(o.out);
        const cJSON *pm = cJSON_GetObjectItemCaseSensitive(prev, "max_steps");
        const double prev_steps = cJSON_IsNumber(pm) ? pm->valuedouble : 0;
        cJSON_Delete(prev);
        char f0[4200], f1[4200];
        snprintf(f0, sizeof f0, "%s/final", o.out);
        snprintf(f1, sizeof f1, "%s/final-ema", o.out);
        if (prev_steps > (double)c.max_steps && (stat(f0, &sb0) == 0 || stat(f1, &sb0) == 0)) {
            fprintf(stderr, "safetune train: %s holds a finished run of %.0f steps; --max-steps %lld would replace its "
                    "final weights with an earlier state: ask for %.0f steps or more (or --overwrite to train it "
                    "again)\n", o.out, prev_steps, (long long)c.max_steps, prev_steps);
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
    { /* rank 0 creates --out; then every rank must be able to write it (one folder for all ranks) */
        st_status so = rank == 0 && cli_out_create(o.out, &made_out) ? st_error_wrap(ST_ERR_IO, "--out") : ST_OK;
        if (!so) so = st_dist_agree(so);
        if (so) {
            fprintf(stderr, "safetune train: %s\n", st_last_error());
            goto done;
        }
    }
    if (!(cfg_json = run_config(&o, &c))) goto done;
    /* writable? (config.json itself is written only once training starts) */
    if (world > 1) snprintf(path, sizeof path, "%s/.write-test.rank%d", o.out, rank);
    else snprintf(path, sizeof path, "%s/.write-test", o.out);
    {
        st_status sw = st_write_file_atomic(path, "", 0);
        if (sw) {
            char why[1024];
            snprintf(why, sizeof why, "%s", st_last_error());
            st_error(sw, "--out %s is not writable: %s", o.out, why);
        }
        unlink(path);
        if ((sw = st_dist_agree(sw))) {
            fprintf(stderr, "safetune train: %s\n", st_last_error());
            goto done;
        }
    }
    st_remove_stale_temp_dirs(o.out, "final"); /* final*.tmp.PID of an export that was killed */
    c.run_config_json = cfg_json;
    c.stop = &g_stop;
    /* LoRA on a bf16 base: the model file goes straight into the frozen bf16 base (one tensor in
     * fp32 at a time), m keeps config and tokenizer only; an adapter folder as --model (merged into
     * its base on load) and SAFETUNE_LORA_BASE_VIA_FP32=1 (tests: the fp32 model first, the base
     * rounded from it) take the fp32 load */
    if (c.finetune == ST_FINETUNE_LORA && c.base_bf16 && !lora_base_via_fp32(o.model)) {
        if (st_lora_base_load(o.model, 1, &m, &base) != ST_OK) { fail("loading the model"); goto done; }
        c.base = base;
    } else if (st_model_load(o.model, &m) != ST_OK) {
        fail("loading the model");
        goto done;
    }
    if (!m->tokenizer) { fprintf(stderr, "safetune train: %s: no tokenizer\n", o.model); goto done; }
    if (st_dataset_load(o.data, fmt, &ds) != ST_OK) { fail(NULL); goto done; }
    {
        /* rows whose assistant tokens are all truncated away train nothing: dropped */
        size_t dropped = 0;
        size_t n_safety = 0, *file_rows = NULL;
        st_dataset_truncate(&ds, (size_t)o.max_rows); /* D_user: the first --max-rows rows */
        const size_t n_user = ds.n;
        if (data_defenses(&o, la, c.seed, m, &ds, &n_safety) != ST_OK) { fail(NULL); goto done; }
        if (st_tokenize_training_rows(&ds, 0, &m->chat, m->tokenizer, c.max_seq_len, &tk,
                                      &dropped, &file_rows) != ST_OK) {
            fail(NULL);
            goto done;
        }
        for (size_t i = 0; n_safety && i < tk.n; i++) c.n_train_only += file_rows[i] >= n_user; /* kept safety rows */
        free(file_rows);
        if (dropped)
            fprintf(stderr, "safetune train: warning: %s: %zu row%s no trained tokens at --max-seq-len %d; "
                    "dropped\n", o.data, dropped, dropped == 1 ? " has" : "s have", c.max_seq_len);
    }
    if (c.max_seq_len > m->config.max_position_embeddings)
        fprintf(stderr, "safetune train: warning: --max-seq-len %d is above the model's max_position_embeddings %d: "
                "positions past %d were never trained\n", c.max_seq_len, m->config.max_position_embeddings,
                m->config.max_position_embeddings);
    c.pad_id = st_train_pad_id(m);
    if (align_step) { /* Lisa / SafeGrad / EWC: D_align (minus the poison reserve in a poisoned run), tokenized */
        if (load_align_rows(&o, c.seed, c.max_seq_len, m, &align_tk) != ST_OK) { fail("--align-dir"); goto done; }
        c.align_data = &align_tk;
    }
    if (c.finetune == ST_FINETUNE_LORA && o.lora_init) { /* an adapter for this base, or refused */
        const double dropout = c.lora.dropout;
        if (st_lora_load_peft(o.lora_init, &m->config, &init_adapter) != ST_OK) {
            fail(o.adapter ? "--adapter" : "--lora-init");
            goto done;
        }
        c.lora = init_adapter->lc;
        c.lora.dropout = dropout;
        c.lora_init = init_adapter->params;
    }
    if (st_dist_agree(st_trainer_new(m, &tk, &c, &t)) != ST_OK) { fail(NULL); goto done; }
    if (world > 1) { /* every rank must train the same thing: the settings, the rows, the weights */
        /* a rank whose settings differ names the first key (the hash below is the last word) */
        if (cli_same_as_rank0(cfg_json, "command line and --config file", 1) != ST_OK) { fail(NULL); goto done; }
        uint64_t h = st_fnv1a64(ST_FNV_INIT, cfg_json, strlen(cfg_json));
        if (st_dist_check_same(h, "settings (command line or --config)") != ST_OK) { fail(NULL); goto done; }
        h = st_fnv1a64(ST_FNV_INIT, tk.offsets, (tk.n + 1) * sizeof *tk.offsets);
        h = st_fnv1a64(h, tk.ids, tk.offsets[tk.n] * sizeof *tk.ids);
        h = st_fnv1a64(h, tk.mask, tk.offsets[tk.n] * sizeof *tk.mask);
        if (st_dist_check_same(h, "training rows (--data file, its format or the tokenizer)") != ST_OK) { fail(NULL); goto done; }
        if (st_dist_check_same(params_hash(m, base), "model weights (--model)") != ST_OK) { fail(NULL); goto done; }
    }
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
        if (st_dist_check_same((uint64_t)have, "checkpoints (--resume auto found one on some ranks only: a "
                               "shared --out folder?)") != ST_OK) { fail("--resume"); goto done; }
        if (have) {
            if (st_dist_agree(st_trainer_resume(t, dir)) != ST_OK) { fail("--resume"); goto done; }
            fprintf(stderr, "safetune train: resumed from %s at step %lld%s\n", dir,
                    (long long)st_trainer_steps_done(t),
                    st_trainer_steps_done(t) >= st_trainer_max_steps(t)
                        ? ": the run is already finished, its final weights are written again (a larger --max-steps continues it)"
                        : "");
        }
    }
    if (c.eval_every > 0 && st_trainer_n_val(t) == 0)
        fprintf(stderr, "safetune train: warning: --eval-every %lld but no rows are held out (--val-fraction %g of "
                "%zu rows): no val_loss is measured\n", (long long)c.eval_every, c.val_fraction, tk.n);
    if (sk == ST_SCHED_CONSTANT && c.sched.warmup_steps > 0) /* as Hugging Face's get_constant_schedule */
        fprintf(stderr, "safetune train: warning: --lr-schedule constant has no warm-up: --warmup-steps %lld is "
                "ignored (use --lr-schedule warmup-constant)\n", (long long)c.sched.warmup_steps);
    else if (c.sched.warmup_steps > st_trainer_max_steps(t))
        fprintf(stderr, "safetune train: warning: --warmup-steps %lld is more than the run's %lld step%s: the "
                "learning rate never reaches --lr %g\n", (long long)c.sched.warmup_steps, (long long)st_trainer_max_steps(t),
                st_trainer_max_steps(t) == 1 ? "" : "s", c.optim.lr);
    if (st_trainer_steps_done(t) == 0 && rank == 0) {
        snprintf(path, sizeof path, "%s/metrics.jsonl", o.out);
        unlink(path); /* a fresh run starts a fresh log */
    }
    fprintf(stderr, "safetune train: %zu rows (%zu train, %zu val) of %s, %lld step%s of %d x %d rows, "
            "lr %g, %s\n", tk.n, st_trainer_n_train(t), st_trainer_n_val(t), o.data,
            (long long)st_trainer_max_steps(t), st_trainer_max_steps(t) == 1 ? "" : "s", c.grad_accum, c.batch_size, c.optim.lr,
            c.bf16 ? "bf16" : "fp32");
    snprintf(path, sizeof path, "%s/config.json", o.out);
    if (st_dist_agree(rank == 0 ? st_write_file_atomic(path, cfg_json, strlen(cfg_json)) : ST_OK) != ST_OK) {
        fail(NULL);
        goto done;
    }
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
    if (export_all(&o, &c, t, m, edt, want_live, want_ema, merges, merge_text, n_merges) != ST_OK) {
        rc = fail_export(t, o.out);
        goto done;
    }
    g_training = 0;
    rc = 0;
    if (getenv("SAFETUNE_PROFILE")) { /* time per kernel and collective, each rank on stdout (bench/run_mpi.sh) */
        char title[64];
        snprintf(title, sizeof title, "safetune train rank %d of %d", rank, world);
        st_prof_report(stdout, title);
        fflush(stdout);
    }
done:
    if (rc && rank == 0) cli_out_abandon(o.out, made_out);
    st_trainer_free(t);
    st_lora_base_free(base);
    st_lora_free(init_adapter);
    st_tokenized_free(&tk);
    st_tokenized_free(&align_tk);
    st_dataset_free(&ds);
    st_model_free(m);
    free(cfg_json);
    st_args_free(&args);
    return rc;
}
