/* trainer_run.c - the training loop (eval, metrics, hook, progress, checkpoints) and
 * checkpoint save / resume of the whole trainer state (trainer.h). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include "safetune/checkpoint.h"
#include "safetune/train_settings.h"
#include "train/trainer_internal.h"

#define CKPT_PREFIX "step-"


/* Settings that must agree between a checkpoint and the run resuming from it: the data and its
 * order (row counts, split, parameter count, a hash of the tokens; not the number of ranks: every
 * rank walks one global order and checkpoints hold the whole state, so any world resumes), and every training
 * setting marked "in fingerprint" in the settings table (train_settings.h): a resumed run
 * continues the same trajectory, so its saved config stays true. max_steps (the run's derived
 * count) may grow. */
static cJSON *fingerprint(const st_trainer *t) {
    const st_train_config *c = &t->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n_rows", (double)t->data->n);
    cJSON_AddNumberToObject(o, "n_train", (double)t->split.n_train);
    cJSON_AddNumberToObject(o, "n_val", (double)t->split.n_val);
    cJSON_AddNumberToObject(o, "n_params", (double)t->n);
    cJSON_AddBoolToObject(o, "ema", c->n_ema > 0);
    char h[24];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)t->data_hash);
    cJSON_AddStringToObject(o, "data_hash", h); /* the same rows, tokens and loss mask */
    if (st__align_hash(t)) { /* Lisa / SafeGrad: the same alignment set */
        snprintf(h, sizeof h, "%016llx", (unsigned long long)st__align_hash(t));
        cJSON_AddStringToObject(o, "align_data_hash", h);
    }
    cJSON_AddStringToObject(o, "optim", c->optim.kind == ST_OPTIM_SGD ? "sgd" : "adamw");
    cJSON_AddNumberToObject(o, "momentum", c->optim.momentum);
    st_train_config_to_json(c, o, 1);
    cJSON_ReplaceItemInObjectCaseSensitive(o, "max_steps", cJSON_CreateNumber((double)t->max_steps));
    return o;
}

static char *state_json(const st_trainer *t) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "trainer", fingerprint(t));
    cJSON *run = t->cfg.run_config_json ? cJSON_Parse(t->cfg.run_config_json) : NULL;
    cJSON_AddItemToObject(root, "run", run ? run : cJSON_CreateNull());
    cJSON_AddNumberToObject(root, "train_time_s", st_trainer_train_time(t));
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    return txt;
}

/* ZeRO-1: the optimiser and EMA state as full vectors (every rank's slice gathered), in *opt and
 * *ema (free with full_state_free). Transient: (3 + n_ema) vectors of n floats on each rank. */
static void full_state_free(st_optimizer *opt, st_ema *ema) {
    st_free_aligned(opt->m);
    st_free_aligned(opt->v);
    for (int j = 0; j < ema->k; j++) st_free_aligned(ema->ema[j]);
    st_free_aligned(ema->theta0);
}

static st_status full_state_alloc(const st_trainer *t, st_optimizer *opt, st_ema *ema) {
    *opt = t->opt;
    *ema = t->ema;
    opt->n = ema->n = t->n;
    opt->segs = NULL;
    opt->n_segs = 0;
    opt->m = opt->v = ema->theta0 = NULL;
    for (int j = 0; j < ema->k; j++) ema->ema[j] = NULL;
    int ok = 1;
    const size_t b = t->n * sizeof(float);
    if (t->opt.m) ok &= (opt->m = st_alloc_aligned(b)) != NULL;
    if (t->opt.v) ok &= (opt->v = st_alloc_aligned(b)) != NULL;
    for (int j = 0; j < ema->k; j++) ok &= (ema->ema[j] = st_alloc_aligned(b)) != NULL;
    ok &= (ema->theta0 = st_alloc_aligned(b)) != NULL;
    if (ok) return ST_OK;
    full_state_free(opt, ema);
    return st_error(ST_ERR_NOMEM, "checkpoint: cannot allocate the %zu MiB to gather the ZeRO-1 state",
                    (size_t)(3 + ema->k) * (b >> 20));
}

/* slice[len] of this rank into full[n] at off, then every rank's slice gathered (collective) */
static st_status gather_slice(st_trainer *t, const float *slice, float *full) {
    memcpy(full + t->off, slice, t->len * sizeof *full);
    return t->cfg.comm.ag_f32(full, t->n, t->cfg.comm.user);
}

st_status st_trainer_full_vector(st_trainer *t, const char *what, int j, float *dst) {
    const float *src = !strcmp(what, "theta0") ? t->ema.theta0
                     : !strcmp(what, "ema") && j >= 0 && j < t->ema.k ? t->ema.ema[j] : NULL;
    if (!src) return st_error(ST_ERR_ARG, "trainer: no state vector \"%s\" %d", what, j);
    if (!t->zero1) {
        memcpy(dst, src, t->n * sizeof *dst);
        return ST_OK;
    }
    return gather_slice(t, src, dst);
}

st_status st_trainer_save_checkpoint(st_trainer *t, const char *dir) {
    st_optimizer fo;
    st_ema fe;
    st_status s = ST_OK;
    if (t->zero1) { /* every rank takes part in the gathers; rank 0 writes */
        const st_status a = full_state_alloc(t, &fo, &fe);
        if ((s = t->cfg.comm.agree(a, t->cfg.comm.user))) {
            if (!a) full_state_free(&fo, &fe);
            return s;
        }
        if (fo.m) s = gather_slice(t, t->opt.m, fo.m);
        if (!s && fo.v) s = gather_slice(t, t->opt.v, fo.v);
        for (int j = 0; !s && j < fe.k; j++) s = gather_slice(t, t->ema.ema[j], fe.ema[j]);
        if (!s) s = gather_slice(t, t->ema.theta0, fe.theta0);
    }
    if (!s && t->rank == 0) {
        char *cj = state_json(t);
        if (!cj) s = ST_ERR_NOMEM;
        st_train_state st = {.step = t->step, .params = t->theta, .n_floats = t->n,
                             .opt = t->zero1 ? &fo : &t->opt, .ema = t->zero1 ? &fe : &t->ema,
                             .sampler = &t->sampler, .rng = &t->rng,
                             .config_json = cj, .extra = t->state, .n_extra = t->n_state};
        if (!s) s = st_checkpoint_save(dir, &st);
        free(cj);
    }
    if (t->zero1) full_state_free(&fo, &fe);
    if (t->world > 1) s = t->cfg.comm.agree(s, t->cfg.comm.user);
    if (!s) snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", dir);
    return s;
}

st_status st_trainer_resume(st_trainer *t, const char *dir) {
    /* check compatibility before touching the state */
    char *saved = NULL;
    st_status s;
    {
        st_train_state probe = {0};
        if ((s = st_checkpoint_load(dir, &probe, &saved))) return s;
        if (probe.step > t->max_steps) {
            free(saved);
            return st_error(ST_ERR_ARG, "%s: the checkpoint is at step %lld, past this run's %lld step%s; a "
                            "resumed run can only go on (ask for %lld steps or more)", dir, (long long)probe.step,
                            (long long)t->max_steps, t->max_steps == 1 ? "" : "s", (long long)probe.step);
        }
    }
    cJSON *root = saved ? cJSON_Parse(saved) : NULL;
    free(saved);
    const cJSON *fp = root ? cJSON_GetObjectItemCaseSensitive(root, "trainer") : NULL;
    if (!cJSON_IsObject(fp)) {
        cJSON_Delete(root);
        return st_error(ST_ERR_FORMAT, "%s/config.json: missing the trainer settings; not a "
                        "checkpoint written by safetune train", dir);
    }
    cJSON *mine = fingerprint(t);
    for (const cJSON *it = mine->child; it && !s; it = it->next) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(fp, it->string);
        if (!v) continue; /* a key that older checkpoints did not record */
        if (!strcmp(it->string, "max_steps")) {
            const st_sched_kind k = t->cfg.sched.kind;
            if (cJSON_IsNumber(v) && v->valuedouble != it->valuedouble && (k == ST_SCHED_LINEAR || k == ST_SCHED_COSINE))
                st_log_warn("%s: saved by a run of %.0f steps, now asked for %.0f: the %s learning-rate "
                            "schedule is recomputed for %.0f steps (the steps already taken followed the %.0f-step "
                            "curve)", dir, v->valuedouble, it->valuedouble, st_schedule_kind_name(k), it->valuedouble,
                            v->valuedouble);
            continue;
        }
        int same = cJSON_Compare(v, it, 1);
        if (!same && !strcmp(it->string, "data_hash")) {
            s = st_error(ST_ERR_ARG, "%s: the training data differ from the checkpoint's (same row count, "
                         "other tokens: another --data file, --data-format or chat template?); resume with "
                         "the run's data (or start a new --out folder)", dir);
        } else if (!same) {
            char *a = v ? cJSON_PrintUnformatted(v) : NULL, *b = cJSON_PrintUnformatted(it);
            s = st_error(ST_ERR_ARG, "%s: checkpoint has %s = %s but this run has %s; resume "
                         "with the same settings (or start a new --out folder)", dir, it->string,
                         a ? a : "(missing)", b ? b : "?");
            free(a);
            free(b);
        }
    }
    const cJSON *tt = root ? cJSON_GetObjectItemCaseSensitive(root, "train_time_s") : NULL;
    const double prior = cJSON_IsNumber(tt) && tt->valuedouble >= 0 ? tt->valuedouble : 0.0;
    cJSON_Delete(mine);
    cJSON_Delete(root);
    if (s) return s;
    st_optimizer fo;
    st_ema fe;
    if (t->zero1 && (s = full_state_alloc(t, &fo, &fe))) return s;
    st_train_state st = {.params = t->theta, .n_floats = t->n, .opt = t->zero1 ? &fo : &t->opt,
                         .ema = t->zero1 ? &fe : &t->ema, .sampler = &t->sampler, .rng = &t->rng,
                         .extra = t->state, .n_extra = t->n_state};
    s = st_checkpoint_load(dir, &st, NULL);
    if (!s && t->zero1) { /* keep this rank's slice of the whole state */
        const size_t b = t->len * sizeof(float);
        if (fo.m) memcpy(t->opt.m, fo.m + t->off, b);
        if (fo.v) memcpy(t->opt.v, fo.v + t->off, b);
        t->opt.step = fo.step;
        for (int j = 0; j < fe.k; j++) memcpy(t->ema.ema[j], fe.ema[j] + t->off, b);
        memcpy(t->ema.theta0, fe.theta0 + t->off, b);
        t->ema.n_updates = fe.n_updates;
    }
    if (t->zero1) full_state_free(&fo, &fe);
    if (s) return s;
    t->step = st.step;
    t->time_prior = prior;
    if (t->time_start > 0) t->time_start = st_time_now();
    snprintf(t->last_ckpt, sizeof t->last_ckpt, "%s", dir);
    if (t->rank == 0 && (t->cfg.out_dir || t->cfg.metrics_path)) s = st__trainer_truncate_metrics(t, t->step);
    return s;
}

st_status st_trainer_latest_checkpoint(const st_trainer *t, char *buf, size_t cap) {
    if (!t->cfg.out_dir) return st_error(ST_ERR_ARG, "trainer: no output folder");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoints", t->cfg.out_dir);
    if (access(dir, F_OK) != 0)
        return st_error(ST_ERR_IO, "%s: no checkpoints folder", dir);
    return st_checkpoint_find_latest(dir, CKPT_PREFIX, buf, cap);
}

static int due(int64_t step, int64_t every, int64_t last) {
    return every > 0 && (step % every == 0 || step == last);
}

static st_status emit(st_trainer *t, const st_step_metrics *m) {
    if (t->rank != 0 || (!t->cfg.out_dir && !t->cfg.metrics_path)) return ST_OK; /* rank 0 writes */
    char *line = st__trainer_metrics_line(t, m);
    if (!line) return ST_ERR_NOMEM;
    st_status s = st__trainer_append_metrics(t, line);
    free(line);
    return s;
}

static st_status run_loop(st_trainer *t);

/* emit on rank 0, then every rank learns whether it worked */
static st_status agree_emit(st_trainer *t, const st_step_metrics *m) {
    st_status s = emit(t, m);
    return t->world > 1 ? t->cfg.comm.agree(s, t->cfg.comm.user) : s;
}

st_status st_trainer_run(st_trainer *t) {
    t->time_start = st_time_now();
    st_status s = run_loop(t);
    t->time_prior += st_time_now() - t->time_start;
    t->time_start = 0;
    return s;
}

static st_status run_loop(st_trainer *t) {
    const st_train_config *c = &t->cfg;
    st_status s = ST_OK;
    char ckdir[4096];
    t->stop_requested = t->stopped_early = 0;
    const int lead = t->rank == 0; /* rank 0 alone writes files and the progress bar */
    if (c->out_dir) snprintf(ckdir, sizeof ckdir, "%s/checkpoints", c->out_dir);
    if (c->out_dir && lead) {
        if (!(s = st_mkdir_p(c->out_dir)) && c->save_every > 0) s = st_mkdir_p(ckdir);
        /* a resumed run that is already finished saves nothing, so pruning alone would never
         * see what a killed save or prune left */
        if (!s) st_remove_stale_temp_dirs(ckdir, CKPT_PREFIX);
    }
    if (t->world > 1) s = t->cfg.comm.agree(s, t->cfg.comm.user);
    if (s) return s;
    st__progress_start(&t->prog, t->step);
    const int do_val = c->eval_every > 0 && t->split.n_val > 0;
    if (t->step == 0) { /* θ_0: baseline held-out loss and the hook's step-0 fields */
        st_step_metrics m0;
        memset(&m0, 0, sizeof m0);
        m0.loss = m0.lr = m0.grad_norm = m0.tokens_per_s = NAN;
        m0.theta_ema_dist = t->ema.k > 0 ? 0.0 : NAN;
        m0.val_loss = NAN;
        t->n_extra = 0;
        if (do_val) {
            m0.has_val = 1;
            if ((s = st_trainer_eval(t, t->theta, &m0.val_loss))) return s;
        }
        if (t->hook && (s = t->hook(t, 0, t->hook_user))) return s;
        if ((do_val || t->n_extra > 0) && (s = agree_emit(t, &m0))) return s;
        if (t->stop_requested) { /* stopped before any step: nothing to save */
            t->stopped_early = 1;
            return ST_OK;
        }
    }
    long long cur = (long long)t->step + 1; /* the step being run, evaluated or saved */
    while (t->step < t->max_steps) {
        st_step_metrics m;
        cur = (long long)t->step + 1;
        t->n_extra = 0;
        if ((s = st_trainer_step(t, &m))) break;
        if (do_val && due(m.step, c->eval_every, t->max_steps)) {
            if ((s = st_trainer_eval(t, t->theta, &m.val_loss))) break;
            m.has_val = 1;
            t->last = m;
        }
        if (t->hook && (s = t->hook(t, m.step, t->hook_user))) break;
        if ((s = agree_emit(t, &m))) break;
        if (c->progress && lead) st__progress_update(&t->prog, &m, t->max_steps, m.step == t->max_steps);
        const int early = t->stop_requested && t->step < t->max_steps;
        int stop = (c->stop && *c->stop) || early;
        if (t->world > 1) { /* a signal reaches the ranks at different moments: stop together */
            double any = stop;
            if ((s = t->cfg.comm.sum_f64(&any, 1, t->cfg.comm.user))) break;
            stop = any > 0;
        }
        if (c->out_dir && (stop || due(m.step, c->save_every, t->max_steps))) {
            char d[4200];
            snprintf(d, sizeof d, "%s/" CKPT_PREFIX "%08lld", ckdir, (long long)m.step);
            if (lead) s = st_mkdir_p(ckdir);
            if (t->world > 1) s = t->cfg.comm.agree(s, t->cfg.comm.user);
            if (s || (s = st_trainer_save_checkpoint(t, d))) break;
            if (lead) st__trainer_prune_checkpoints(ckdir, c->keep_checkpoints);
        }
        if (early) {
            if (c->progress) fputc('\n', stderr);
            t->stopped_early = 1;
            break;
        }
        if (stop && t->step < t->max_steps) {
            if (c->progress) fputc('\n', stderr);
            if (c->out_dir)
                return st_error(ST_ERR_INTERRUPTED, "interrupted after step %lld of %lld; saved %s",
                                (long long)t->step, (long long)t->max_steps, t->last_ckpt);
            return st_error(ST_ERR_INTERRUPTED, "interrupted after step %lld of %lld", (long long)t->step,
                            (long long)t->max_steps);
        }
    }
    /* a run killed between a save and its prune, then resumed when already finished, saves
     * nothing: prune here too so --keep-checkpoints holds */
    if (!s && lead && c->out_dir && c->save_every > 0) st__trainer_prune_checkpoints(ckdir, c->keep_checkpoints);
    if (!s && t->stop_requested) t->stopped_early = 1; /* asked at the last step too */
    if (s)
        st_error_wrap(s, "training stopped at step %lld of %lld (%s%s)", cur,
                      (long long)t->max_steps, t->last_ckpt[0] ? "last good checkpoint: " : "no checkpoint saved yet",
                      t->last_ckpt);
    return s;
}

/* ---- pruning ---------------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void st__trainer_prune_checkpoints(const char *dir, int keep) {
    st_remove_stale_temp_dirs(dir, CKPT_PREFIX);
    if (keep <= 0) return;
    DIR *d = opendir(dir);
    if (!d) return;
    int64_t steps[4096];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 4096) {
        char *end;
        if (strncmp(de->d_name, CKPT_PREFIX, strlen(CKPT_PREFIX))) continue;
        long long v = strtoll(de->d_name + strlen(CKPT_PREFIX), &end, 10);
        if (*end) continue; /* partial / old / temp folders are the checkpoint module's */
        steps[n++] = v;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof *steps, cmp_i64);
    /* a checkpoint leaves in one rename (to an .old. name that resume never reads), then its
     * files go: a kill during the deletion cannot leave a step-N folder missing blobs */
    for (int i = 0; i + keep < n; i++) {
        char p[4400], q[4500];
        snprintf(p, sizeof p, "%s/" CKPT_PREFIX "%08lld", dir, (long long)steps[i]);
        snprintf(q, sizeof q, "%s.old.%ld", p, (long)getpid());
        if (rename(p, q) == 0) st_remove_flat_dir(q);
    }
}
