/* runner.c - runs the plan through the hooks with resume/skip markers, then writes results.csv,
 * plots and report.md (see study.h for the folder layout). */
#include "safetune/dist.h"
#include "study/study_internal.h"
#include "safetune/prompts.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

st_status st_study_check_dir(const st_study_config *c, const char *dir, int *resumable) {
    *resumable = 0;
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
        return st_error(ST_ERR_ARG, "%s: is a file, not a folder; give --out a new or empty folder", dir);
    char *sj = stu_join(dir, "study.json");
    if (!sj) return st_error(ST_ERR_NOMEM, "out of memory");
    if (stu_exists(sj)) {
        char *t;
        size_t len;
        st_status s = st_read_file(sj, &t, &len);
        if (s) { free(sj); return s; }
        cJSON *o = cJSON_Parse(t);
        free(t);
        const cJSON *fp = cJSON_GetObjectItemCaseSensitive(o, "fingerprint");
        if (!cJSON_IsString(fp)) {
            cJSON_Delete(o);
            s = st_error(ST_ERR_FORMAT, "%s: no \"fingerprint\" string (not a study folder?); use another --out", sj);
            free(sj);
            return s;
        }
        if (strcmp(fp->valuestring, c->fingerprint)) {
            s = st_error(ST_ERR_ARG, "%s: the folder holds another study (fingerprint %s, this config %s); use another --out folder or remove it",
                         sj, fp->valuestring, c->fingerprint);
            cJSON_Delete(o);
            free(sj);
            return s;
        }
        cJSON_Delete(o);
        *resumable = 1;
    } else if (!stu_dir_is_empty(dir)) {
        st_status s = st_error(ST_ERR_ARG, "%s: folder is not empty and has no study.json; use an empty or new --out folder", dir);
        free(sj);
        return s;
    }
    free(sj);
    return ST_OK;
}

static st_status write_study_json(const st_study_config *c, const char *dir) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "fingerprint", c->fingerprint);
    cJSON_AddStringToObject(o, "source", c->source);
    cJSON_AddItemToObject(o, "config", cJSON_Parse(c->json));
    char *t = cJSON_Print(o);
    cJSON_Delete(o);
    char *path = stu_join(dir, "study.json");
    st_status s = (t && path) ? st_write_file_atomic(path, t, strlen(t)) : st_error(ST_ERR_NOMEM, "out of memory");
    free(t);
    free(path);
    return s;
}

static st_status write_split(const st_study_config *c, const char *dir) {
    if (!strcmp(c->eval.advbench_split, "all")) return ST_OK;
    st_prompt_set ps;
    st_status s = st_prompts_load("advbench", c->data_dir, &ps);
    if (s) return st_error_wrap(s, "eval.advbench_split = %s needs AdvBench", c->eval.advbench_split);
    size_t n = ps.n;
    st_prompt_set_free(&ps);
    char *path = stu_join(dir, "advbench_split.json");
    if (!path) return st_error(ST_ERR_NOMEM, "out of memory");
    s = st_study_advbench_split_write(path, n, c->eval.advbench_split_seed);
    free(path);
    return s;
}

static double last_metric(const char *metrics, double ema, int want_ema) {
    stu_metric *m;
    size_t n;
    if (stu_metrics_read(metrics, ema, &m, &n)) return NAN;
    double v = NAN;
    for (size_t i = 0; i < n; i++) {
        double x = want_ema ? m[i].theta_ema_dist : m[i].theta_dist;
        if (!isnan(x)) v = x;
    }
    free(m);
    return v;
}

static st_status run_one(const st_study_config *c, const st_study_run *r, size_t idx, size_t total,
                         const char *dir, const st_study_hooks *h, st_study_run_stats *stats) {
    char rdir[4096], ckpt[4200], metrics[4200], trainj[4200], done[4200], evj[4300];
    snprintf(rdir, sizeof rdir, "%s/runs/%s", dir, r->id);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", rdir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", rdir);
    snprintf(trainj, sizeof trainj, "%s/train.json", rdir);
    snprintf(done, sizeof done, "%s/done", rdir);
    if (stu_exists(done)) {
        st_log_info("[%zu/%zu] %s: finished earlier, skipped", idx + 1, total, r->id);
        stats->skipped_runs++;
        return ST_OK;
    }
    st_status s = stu_mkdirs(ckpt);
    if (s) return s;
    double train_time = NAN, train_cpu = NAN;
    char cks[4300];
    snprintf(cks, sizeof cks, "%s/checkpoints", ckpt);
    if (!c->checkpoints && stu_exists(trainj) && stu_dir_is_empty(cks)) {
        /* "checkpoints": "none": the trained weights went with the process that made them */
        st_log_info("[%zu/%zu] %s: trained earlier without a checkpoint (checkpoints \"none\"): training again", idx + 1,
                    total, r->id);
        if (unlink(trainj) != 0) return st_error(ST_ERR_IO, "%s: cannot remove: %s", trainj, strerror(errno));
    }
    if (stu_exists(trainj)) {
        if ((s = stu_read_train_json(trainj, &train_time, &train_cpu))) return s;
    } else {
        int resume = !stu_dir_is_empty(ckpt);
        char who[32] = ""; /* over MPI: which rank took the run */
        if (st_dist_world() > 1) snprintf(who, sizeof who, " (rank %d)", st_dist_rank());
        st_log_info("[%zu/%zu] %s: %s training%s", idx + 1, total, r->id, resume ? "resuming" : "starting", who);
        st_study_train_result tr = {NAN, 0, 0};
        double t0 = st_time_now(), c0 = stu_cpu_now();
        s = h->train(h->user, c, r, ckpt, metrics, resume, &tr);
        if (s) return st_error_wrap(s, "run %s: training failed", r->id);
        train_time = (tr.train_time_s >= 0) ? tr.train_time_s : st_time_now() - t0;
        train_cpu = stu_cpu_now() - c0;
        if (resume) stats->resumed++;
        stats->trained++;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "train_time_s", train_time);
        cJSON_AddNumberToObject(o, "train_cpu_s", train_cpu);
        cJSON_AddNumberToObject(o, "steps_done", tr.steps_done);
        cJSON_AddBoolToObject(o, "stopped_early", tr.stopped_early != 0);
        char *t = cJSON_Print(o);
        cJSON_Delete(o);
        s = t ? st_write_file_atomic(trainj, t, strlen(t)) : st_error(ST_ERR_NOMEM, "out of memory");
        free(t);
        if (s) return s;
    }
    for (size_t k = 0; k < st_study_run_n_weights(r); k++) {
        st_study_weights w;
        st_study_run_weights(r, k, &w);
        snprintf(evj, sizeof evj, "%s/eval_%s.json", rdir, w.name);
        if (stu_exists(evj)) continue;
        st_log_info("[%zu/%zu] %s: evaluating %s weights", idx + 1, total, r->id, w.name);
        st_study_eval_result er;
        st_study_eval_result_clear(&er);
        double t0 = st_time_now(), c0 = stu_cpu_now();
        s = h->eval(h->user, c, r, &w, ckpt, &er);
        st_study_cost cost = {train_time, train_cpu, st_time_now() - t0, stu_cpu_now() - c0};
        if (s) {
            st_study_eval_result_free(&er);
            return st_error_wrap(s, "run %s: evaluating %s weights failed", r->id, w.name);
        }
        if (isnan(er.theta_dist)) er.theta_dist = last_metric(metrics, w.ema_decay, w.kind == ST_WEIGHTS_EMA);
        if (er.answers_jsonl) { /* before eval_<w>.json, whose presence marks the weight set done */
            char ansj[4400];
            snprintf(ansj, sizeof ansj, "%s/answers_%s.jsonl", rdir, w.name);
            s = st_write_file_atomic(ansj, er.answers_jsonl, strlen(er.answers_jsonl));
        }
        if (!s) s = st_study_eval_result_write(evj, &er, &cost);
        st_study_eval_result_free(&er);
        if (s) return s;
        stats->evaluated++;
    }
    /* only now, with every result on disk, may the hooks drop what evaluation read (a kill before
     * this point re-evaluates from it) */
    if (h->run_done) h->run_done(h->user, r, ckpt);
    return st_write_file_atomic(done, "done\n", 5);
}

/* The runs of the plan, handed out dynamically over the MPI ranks (docs/mpi.md): each rank
 * claims the next unstarted run from a shared counter when it is free, and runs it whole (its
 * own threads); one process takes them in order. A rank that fails stops claiming; the failure
 * reaches every rank at the agreement after the loop. */
static st_status run_runs(const st_study_config *c, const st_study_plan *p, const char *dir,
                          const st_study_hooks *h, st_study_run_stats *stats) {
    st_dist_counter *ctr = NULL;
    st_status s = st_dist_counter_open(&ctr);
    for (int64_t i = 0; !s;) {
        if ((s = st_dist_counter_next(ctr, &i)) || i >= (int64_t)p->n_runs) break;
        s = run_one(c, &p->runs[i], (size_t)i, p->n_runs, dir, h, stats);
    }
    s = st_dist_agree(s);
    st_dist_counter_close(ctr);
    double v[3] = {(double)stats->trained, (double)stats->resumed, (double)stats->skipped_runs};
    double e = (double)stats->evaluated;
    if (!s && !(s = st_dist_sum_f64(v, 3)) && !(s = st_dist_sum_f64(&e, 1))) {
        stats->trained = (size_t)v[0];
        stats->resumed = (size_t)v[1];
        stats->skipped_runs = (size_t)v[2];
        stats->evaluated = (size_t)e;
    }
    return s;
}

st_status st_study_run_all(const st_study_config *c, const st_study_plan *p, const char *dir,
                           const st_study_hooks *h, st_study_run_stats *stats) {
    st_study_run_stats local;
    if (!stats) stats = &local;
    memset(stats, 0, sizeof *stats);
    if (!h || !h->train || !h->eval) return st_error(ST_ERR_ARG, "study: no training/evaluation hooks");
    const int lead = st_dist_rank() == 0, ranks = st_dist_world() > 1;
    st_status s = ST_OK;
    if (lead) { /* the folder, study.json, the split and (over MPI) the shared inputs: rank 0 */
        int resumable;
        s = st_study_check_dir(c, dir, &resumable);
        char *runs = s ? NULL : stu_join(dir, "runs");
        if (!s && !runs) s = st_error(ST_ERR_NOMEM, "out of memory");
        if (!s) s = stu_mkdirs(runs);
        free(runs);
        if (!s) s = write_study_json(c, dir);
        if (!s) s = write_split(c, dir);
        if (!s && ranks && h->prepare) s = h->prepare(h->user, c);
    }
    if ((s = st_dist_agree(s)) || (s = run_runs(c, p, dir, h, stats)) || !lead) return s;

    st_study_results res;
    if ((s = st_study_results_load(c, p, dir, &res))) return s;
    char *csv = stu_join(dir, "results.csv"), *rep = stu_join(dir, "report.md");
    int made = 0;
    st_status ps = ST_OK;
    if (!csv || !rep) s = st_error(ST_ERR_NOMEM, "out of memory");
    if (!s) s = st_study_results_write_csv(c, &res, csv);
    char *tim = stu_join(dir, "timings.csv");
    if (!s) s = tim ? st_study_timings_write_csv(c, &res, tim) : st_error(ST_ERR_NOMEM, "out of memory");
    free(tim);
    if (!s && c->report.plots) ps = st_study_plots_write(c, p, &res, dir, &made);
    char msg[2048] = "";
    if (ps) snprintf(msg, sizeof msg, "%s", st_last_error());
    if (!s) s = st_study_report_write(c, p, &res, rep, ps == ST_OK && made > 0, h->synthetic);
    if (!s && ps) s = st_error(ps, "%s (results.csv and report.md were written without plots)", msg);
    free(csv);
    free(rep);
    st_study_results_free(&res);
    return s;
}
