/* plots.c - PNG plots with gnuplot run as a subprocess on a generated script + data files. The
 * .gp and .dat files are kept next to the PNGs (DIR/plots/) so a plot can be re-made by hand. */
#include "study/study_internal.h"
#include "safetune/stats.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *gnuplot_bin(void) {
    const char *g = getenv("SAFETUNE_GNUPLOT");
    return g && *g ? g : "gnuplot";
}

/* Run gnuplot with args; stdout/stderr to errlog (or /dev/null). Returns exit status, -1 if it could
 * not be started (errno kept in *err). */
static int run_gnuplot(char *const args[], const char *errlog, int *err) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const char *sink = errlog ? errlog : "/dev/null";
    posix_spawn_file_actions_addopen(&fa, 1, sink, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, args[0], &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) { *err = rc; return -1; }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) { *err = errno; return -1; }
    if (!WIFEXITED(st)) return 128;
    if (WEXITSTATUS(st) == 127) { *err = ENOENT; return -1; }
    return WEXITSTATUS(st);
}

st_status st_study_gnuplot_check(void) {
    char *args[] = {(char *)gnuplot_bin(), "-e", "set terminal pngcairo", NULL};
    int err = 0;
    int rc = run_gnuplot(args, NULL, &err);
    if (rc < 0)
        return st_error(ST_ERR_UNSUPPORTED, "gnuplot not found ('%s': %s): install gnuplot-nox "
                        "(apt-get install gnuplot-nox), set SAFETUNE_GNUPLOT, or set report.plots to false",
                        gnuplot_bin(), strerror(err));
    if (rc != 0)
        return st_error(ST_ERR_UNSUPPORTED, "'%s' cannot make PNGs (no pngcairo terminal, exit %d): install gnuplot-nox, "
                        "or set report.plots to false", gnuplot_bin(), rc);
    return ST_OK;
}

/* Colour of series i: twelve distinct colours (gnuplot's own cycle repeats after eight), then again. */
static const char *colour(int i) {
    static const char *const c[12] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                      "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8"};
    return c[(i % 12 + 12) % 12];
}

static const char PREAMBLE[] =
    "set terminal pngcairo size 1000,620 font 'sans,10' noenhanced\n"
    "set grid\n"
    "set key outside right top\n";

/* Write script + data (already in bufs) and run gnuplot; *made += 1 on success. Nothing is visible
 * half-written under a final name, even when the study is killed while gnuplot runs (gnuplot, a
 * child, may outlive it): gnuplot draws into NAME.png.tmp.PID from a copy of the script that names
 * that file (NAME.gp.tmp.PID), and the PNG is renamed into place once gnuplot succeeded; its
 * messages go to NAME.log.tmp.PID, kept as NAME.log only when it failed. The kept NAME.gp names
 * NAME.png, to re-make the plot by hand. */
static st_status render(const char *pdir, const char *name, stu_buf *script, stu_buf *data, int *made) {
    char gp[4200], dat[4200], png[4200], log[4200], out[4300], tpng[4300], tgp[4300], tlog[4300];
    const long pid = (long)getpid();
    snprintf(gp, sizeof gp, "%s/%s.gp", pdir, name);
    snprintf(dat, sizeof dat, "%s/%s.dat", pdir, name);
    snprintf(png, sizeof png, "%s/%s.png", pdir, name);
    snprintf(log, sizeof log, "%s/%s.log", pdir, name);
    snprintf(out, sizeof out, "set output '%s'\n", png);
    snprintf(tpng, sizeof tpng, "%s.tmp.%ld", png, pid);
    snprintf(tgp, sizeof tgp, "%s.tmp.%ld", gp, pid);
    snprintf(tlog, sizeof tlog, "%s.tmp.%ld", log, pid);
    if (script->oom) return st_error(ST_ERR_NOMEM, "%s: out of memory while building the file", gp);
    const char *at = script->p ? strstr(script->p, out) : NULL;
    if (!at) return st_error(ST_ERR_INTERNAL, "%s: the script does not set its output to %s", gp, png);
    stu_buf run = {0}; /* the script with the temporary output */
    stu_printf(&run, "%.*sset output '%s'\n%s", (int)(at - script->p), script->p, tpng, at + strlen(out));
    st_status s = stu_buf_write(data, dat);
    if (!s) s = stu_buf_write(script, gp);
    if (!s) s = stu_buf_write(&run, tgp);
    stu_buf_free(&run);
    if (s) return s;
    char *args[] = {(char *)gnuplot_bin(), tgp, NULL};
    int err = 0;
    int rc = run_gnuplot(args, tlog, &err);
    unlink(tgp);
    if (rc < 0) {
        unlink(tlog);
        return st_error(ST_ERR_UNSUPPORTED, "gnuplot not found ('%s'): install gnuplot-nox or set SAFETUNE_GNUPLOT", gnuplot_bin());
    }
    struct stat st;
    if (rc != 0 || stat(tpng, &st) != 0 || st.st_size == 0) {
        unlink(tpng);
        rename(tlog, log);
        return st_error(ST_ERR_INTERNAL, "%s: gnuplot failed (exit %d); see %s", gp, rc, log);
    }
    unlink(tlog);
    if (rename(tpng, png) != 0) {
        s = st_error(ST_ERR_IO, "%s: cannot rename %s into place: %s", png, tpng, strerror(errno));
        unlink(tpng);
        return s;
    }
    (*made)++;
    return ST_OK;
}

/* ---- ASR vs lr: one series per (effective batch, weights), pooled over other factors ---- */

static st_status plot_asr_vs_lr(const st_study_config *c, const st_study_results *r, const char *pdir, int *made) {
    stu_buf d = {0}, g = {0};
    stu_printf(&g, "%sset output '%s/asr_vs_lr.png'\nset logscale x\nset format x '%%.0e'\n"
                   "set offsets graph 0.05, graph 0.05, 0, 0\nset xlabel 'learning rate (log scale)'\nset ylabel 'AdvBench ASR (%%), 95%% Wilson interval'\n"
                   "set title 'ASR vs learning rate per effective batch size (lines: seeds pooled; circles: each seed)'\nset yrange [0:*]\nplot ",
               PREAMBLE, pdir);
    int series = 0;
    /* distinct (eb, weights) pairs in row order */
    for (size_t i = 0; i < r->n; i++) {
        const st_study_row *w = &r->rows[i];
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            if (r->rows[j].run->effective_batch == w->run->effective_batch && !strcmp(r->rows[j].w.name, w->w.name)) seen = 1;
        if (seen || isnan(w->r.asr)) continue;
        /* distinct lrs for this series, ascending */
        double lrs[256];
        size_t nl = 0;
        for (size_t j = 0; j < r->n; j++) {
            const st_study_row *x = &r->rows[j];
            if (x->run->effective_batch != w->run->effective_batch || strcmp(x->w.name, w->w.name)) continue;
            size_t q;
            for (q = 0; q < nl; q++)
                if (lrs[q] == x->run->lr) break;
            if (q == nl && nl < 256) lrs[nl++] = x->run->lr;
        }
        for (size_t a = 1; a < nl; a++)
            for (size_t bq = a; bq > 0 && lrs[bq] < lrs[bq - 1]; bq--) {
                double t = lrs[bq]; lrs[bq] = lrs[bq - 1]; lrs[bq - 1] = t;
            }
        stu_printf(&d, "# effective_batch %d weights %s\n", w->run->effective_batch, w->w.name);
        for (size_t q = 0; q < nl; q++) {
            size_t k = 0, n = 0;
            for (size_t j = 0; j < r->n; j++) {
                const st_study_row *x = &r->rows[j];
                if (x->run->effective_batch != w->run->effective_batch || strcmp(x->w.name, w->w.name) ||
                    x->run->lr != lrs[q] || isnan(x->r.asr))
                    continue;
                k += (size_t)llround(x->r.asr * x->r.n_prompts);
                n += (size_t)x->r.n_prompts;
            }
            st_rate rt = st_wilson(k, n, ST_Z95);
            stu_printf(&d, "%.6e %.4f %.4f %.4f\n", lrs[q], 100 * rt.rate, 100 * rt.lo, 100 * rt.hi);
        }
        stu_puts(&d, "\n\n");
        /* the next block: one point per (lr, seed), the seeds' spread behind the pooled interval */
        stu_printf(&d, "# effective_batch %d weights %s, per seed\n", w->run->effective_batch, w->w.name);
        for (size_t j = 0; j < r->n; j++) {
            const st_study_row *x = &r->rows[j];
            if (x->run->effective_batch == w->run->effective_batch && !strcmp(x->w.name, w->w.name) && !isnan(x->r.asr))
                stu_printf(&d, "%.6e %.4f %llu\n", x->run->lr, 100 * x->r.asr, (unsigned long long)x->run->seed);
        }
        stu_puts(&d, "\n\n");
        stu_printf(&g, "%s'%s/asr_vs_lr.dat' index %d using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb '%s' %stitle 'eff. batch %d, %s'",
                   series ? ", \\\n     " : "", pdir, 2 * series, colour(series), w->w.kind == ST_WEIGHTS_EMA ? "dt 2 " : "",
                   w->run->effective_batch, w->w.name);
        stu_printf(&g, ", \\\n     '%s/asr_vs_lr.dat' index %d using 1:2 with points pt 6 ps 0.8 lc rgb '%s' notitle", pdir,
                   2 * series + 1, colour(series));
        series++;
    }
    stu_puts(&g, "\n");
    st_status s = series ? render(pdir, "asr_vs_lr", &g, &d, made) : ST_OK;
    stu_buf_free(&d);
    stu_buf_free(&g);
    (void)c;
    return s;
}

/* ---- per-step plots from metrics.jsonl ---- */

typedef enum { P_PROBE, P_THETA, P_LOSS } step_plot;

static st_status plot_steps(const st_study_config *c, const st_study_plan *p, const char *dir, const char *pdir,
                            step_plot kind, int *made) {
    static const char *names[] = {"probe_asr", "theta_dist", "loss"};
    const char *name = names[kind];
    stu_buf d = {0}, g = {0};
    stu_printf(&g, "%sset output '%s/%s.png'\nset xlabel 'optimizer step'\n", PREAMBLE, pdir, name);
    if (kind == P_PROBE)
        stu_puts(&g, "set ylabel 'probe ASR (%)'\nset title 'Safety probe during training (solid: live, dashed: EMA)'\nset yrange [0:*]\n");
    else if (kind == P_THETA)
        stu_puts(&g, "set ylabel 'L2 distance from start weights'\nset title '||theta - theta_0|| (solid: live) and ||theta_ema - theta_0|| (dashed)'\n");
    else
        stu_puts(&g, "set ylabel 'loss (nats/token)'\nset title 'Training loss (lines) and validation loss (points)'\n");
    stu_puts(&g, "plot ");
    int series = 0;
    st_status s = ST_OK;
    for (size_t i = 0; !s && i < p->n_runs; i++) {
        const st_study_run *r = &p->runs[i];
        char mpath[4200];
        snprintf(mpath, sizeof mpath, "%s/runs/%s/metrics.jsonl", dir, r->id);
        size_t nw = 1 + r->n_ema;
        for (size_t k = 0; !s && k < nw; k++) {
            double ema = k == 0 ? 0.0 : r->ema_decays[k - 1];
            if (k == 0 && kind == P_PROBE && !r->has_live) continue;
            stu_metric *m;
            size_t n;
            if ((s = stu_metrics_read(mpath, ema, &m, &n))) break;
            for (int sub = 0; sub < (kind == P_LOSS && k == 0 ? 2 : 1); sub++) {
                if (kind == P_LOSS && k > 0) break;
                int pts = 0;
                stu_printf(&d, "# %s %s\n", r->id, k == 0 ? (sub ? "val_loss" : "live") : "ema");
                for (size_t j = 0; j < n; j++) {
                    double v = kind == P_PROBE ? 100 * (k == 0 ? m[j].probe_asr_live : m[j].probe_asr_ema)
                               : kind == P_THETA ? (k == 0 ? m[j].theta_dist : m[j].theta_ema_dist)
                               : (sub ? m[j].val_loss : m[j].loss);
                    if (isnan(v)) continue;
                    stu_printf(&d, "%d %.6f\n", m[j].step, v);
                    pts++;
                }
                if (!pts) stu_puts(&d, "nan nan\n");
                stu_puts(&d, "\n\n");
                if (pts) {
                    char dd[32], title[300];
                    if (k == 0) snprintf(title, sizeof title, "%s%s", r->id, kind == P_LOSS ? (sub ? " val" : " train") : "");
                    else snprintf(title, sizeof title, "%s ema%s", r->id, st_study_format_decay(ema, dd, sizeof dd));
                    const char *style = kind == P_LOSS ? (sub ? "with points pt 7" : "with lines lw 1.5")
                                        : (k == 0 ? "with linespoints lw 2 pt 7 ps 0.6" : "with linespoints lw 2 pt 6 ps 0.6 dt 2");
                    stu_printf(&g, "%s'%s/%s.dat' index %d using 1:2 %s lc %zu title '%s'", series ? ", \\\n     " : "", pdir,
                               name, series, style, i + 1, title);
                }
                series++;
            }
            free(m);
        }
    }
    stu_puts(&g, "\n");
    /* skip the plot when no series has data */
    int any = g.p && strstr(g.p, "index ") != NULL;
    if (!s && any) s = render(pdir, name, &g, &d, made);
    stu_buf_free(&d);
    stu_buf_free(&g);
    (void)c;
    return s;
}

/* ---- utility vs ASR with the Pareto front ---- */

static st_status plot_utility(const st_study_config *c, const st_study_results *r, const char *pdir, int *made) {
    int loss = !strcmp(c->report.utility_metric, "val_loss");
    stu_buf d = {0}, g = {0};
    size_t npts = 0;
    for (int kind = 0; kind < 2; kind++) {
        stu_printf(&d, "# %s\n", kind ? "ema" : "live");
        for (size_t i = 0; i < r->n; i++) {
            const st_study_row *w = &r->rows[i];
            double u = st_study_row_utility(c, w);
            if ((int)w->w.kind != kind || isnan(u) || isnan(w->r.asr)) continue;
            stu_printf(&d, "%.4f %.6f\n", 100 * w->r.asr, loss ? -u : u);
            npts++;
        }
        stu_puts(&d, "nan nan\n\n\n");
    }
    /* Pareto front: rows not dominated (lower-or-equal ASR and better-or-equal utility, one strictly) */
    stu_puts(&d, "# pareto\n");
    size_t *front = calloc(r->n + 1, sizeof *front), nf = 0;
    for (size_t i = 0; front && i < r->n; i++) {
        double ui = st_study_row_utility(c, &r->rows[i]), ai = r->rows[i].r.asr;
        if (isnan(ui) || isnan(ai)) continue;
        int dom = 0;
        for (size_t j = 0; j < r->n && !dom; j++) {
            double uj = st_study_row_utility(c, &r->rows[j]), aj = r->rows[j].r.asr;
            if (j == i || isnan(uj) || isnan(aj)) continue;
            if (aj <= ai && uj >= ui && (aj < ai || uj > ui)) dom = 1;
        }
        if (!dom) front[nf++] = i;
    }
    for (size_t a = 1; a < nf; a++)
        for (size_t b = a; b > 0 && r->rows[front[b]].r.asr < r->rows[front[b - 1]].r.asr; b--) {
            size_t t = front[b]; front[b] = front[b - 1]; front[b - 1] = t;
        }
    for (size_t q = 0; q < nf; q++) {
        double u = st_study_row_utility(c, &r->rows[front[q]]);
        stu_printf(&d, "%.4f %.6f\n", 100 * r->rows[front[q]].r.asr, loss ? -u : u);
    }
    free(front);
    stu_printf(&g, "%sset output '%s/utility_vs_asr.png'\nset xlabel 'AdvBench ASR (%%)'\nset ylabel '%s (%s)'\n"
                   "set title 'Utility vs ASR (Pareto front: no run is both safer and more useful)'\n"
                   "plot '%s/utility_vs_asr.dat' index 0 using 1:2 with points pt 7 ps 1.5 title 'live weights', \\\n"
                   "     '%s/utility_vs_asr.dat' index 1 using 1:2 with points pt 5 ps 1.5 title 'EMA weights', \\\n"
                   "     '%s/utility_vs_asr.dat' index 2 using 1:2 with lines lw 2 dt 3 lc 'black' title 'Pareto front'\n",
               PREAMBLE, pdir, c->report.utility_metric, loss ? "lower is better" : "higher is better", pdir, pdir, pdir);
    st_status s = npts ? render(pdir, "utility_vs_asr", &g, &d, made) : ST_OK;
    stu_buf_free(&d);
    stu_buf_free(&g);
    return s;
}

/* ---- utility vs ASR per defense / finetune mode, each with its Pareto front ---- */

static st_status plot_defense_pareto(const st_study_config *c, const st_study_results *r, const char *pdir, int *made) {
    int axes = c->n_defenses > 1 || (c->n_defenses == 1 && c->defenses[0].n) || c->n_finetunes > 1 ||
               (c->n_finetunes == 1 && c->finetunes[0].finetune != ST_FINETUNE_FULL) || c->n_merge > 0;
    if (!axes) return ST_OK;
    st_study_defense_cmp d;
    st_status s = st_study_defense_compare(c, r, &d);
    if (s) return s;
    const int loss = !strcmp(c->report.utility_metric, "val_loss");
    stu_buf data = {0}, g = {0};
    stu_printf(&g, "%sset output '%s/defense_pareto.png'\nset xlabel 'AdvBench ASR (%%), seeds pooled'\n"
                   "set ylabel '%s (%s)'\nset title 'Utility vs ASR per defense / finetune mode (circle: live, square: "
                   "EMA, triangle: merge; lines: the Pareto front of each mode)'\nplot ",
               PREAMBLE, pdir, c->report.utility_metric, loss ? "lower is better" : "higher is better");
    int series = 0, block = 0;
    for (size_t df = 0; df < (c->n_defenses ? c->n_defenses : 1); df++)
        for (size_t ft = 0; ft < (c->n_finetunes ? c->n_finetunes : 1); ft++) {
            size_t npts = 0;
            stu_printf(&data, "# %s / %s: asr utility pointtype\n", c->n_defenses ? c->defenses[df].name : "none",
                       c->n_finetunes ? c->finetunes[ft].name : "full");
            for (size_t i = 0; i < d.n_sets; i++) {
                const st_study_wset *w = &d.sets[i];
                if (w->run->defense != df || w->run->finetune != ft || isnan(w->asr) || isnan(w->utility)) continue;
                int pt = w->w.kind == ST_WEIGHTS_LIVE ? 7 : w->w.kind == ST_WEIGHTS_EMA ? 5 : 9;
                stu_printf(&data, "%.4f %.6f %d\n", 100 * w->asr, w->utility_raw, pt);
                npts++;
            }
            if (!npts) stu_puts(&data, "nan nan 7\n");
            stu_puts(&data, "\n\n# front\n");
            /* this mode's front: not dominated within the mode (lower-or-equal ASR, better-or-equal utility) */
            size_t nf = 0;
            double fx[512], fy[512];
            for (size_t i = 0; i < d.n_sets && nf < 512; i++) {
                const st_study_wset *w = &d.sets[i];
                if (w->run->defense != df || w->run->finetune != ft || isnan(w->asr) || isnan(w->utility)) continue;
                int dom = 0;
                for (size_t j = 0; j < d.n_sets && !dom; j++) {
                    const st_study_wset *v = &d.sets[j];
                    if (j == i || v->run->defense != df || v->run->finetune != ft || isnan(v->asr) || isnan(v->utility)) continue;
                    if (v->asr <= w->asr && v->utility >= w->utility && (v->asr < w->asr || v->utility > w->utility)) dom = 1;
                }
                if (!dom) fx[nf] = 100 * w->asr, fy[nf++] = w->utility_raw;
            }
            for (size_t a = 1; a < nf; a++)
                for (size_t q = a; q > 0 && fx[q] < fx[q - 1]; q--) {
                    double t = fx[q]; fx[q] = fx[q - 1]; fx[q - 1] = t;
                    t = fy[q]; fy[q] = fy[q - 1]; fy[q - 1] = t;
                }
            for (size_t q = 0; q < nf; q++) stu_printf(&data, "%.4f %.6f\n", fx[q], fy[q]);
            if (!nf) stu_puts(&data, "nan nan\n");
            stu_puts(&data, "\n\n");
            if (npts) {
                /* the key: one filled circle per mode in its colour (a 'pt variable' series has no key sample) */
                stu_printf(&g, "%skeyentry with points pt 7 ps 1.6 lc rgb '%s' title '%s / %s', \\\n     "
                               "'%s/defense_pareto.dat' index %d using 1:2:3 with points pt variable ps 1.6 lc rgb '%s' "
                               "notitle, \\\n     '%s/defense_pareto.dat' index %d using 1:2 with lines lw 1.5 dt 2 lc rgb "
                               "'%s' notitle",
                           series ? ", \\\n     " : "", colour(series), c->n_defenses ? c->defenses[df].name : "none",
                           c->n_finetunes ? c->finetunes[ft].name : "full", pdir, block, colour(series), pdir, block + 1,
                           colour(series));
                series++;
            }
            block += 2;
        }
    stu_puts(&g, "\n");
    st_study_defense_cmp_free(&d);
    s = series ? render(pdir, "defense_pareto", &g, &data, made) : ST_OK;
    stu_buf_free(&data);
    stu_buf_free(&g);
    return s;
}

st_status st_study_plots_write(const st_study_config *c, const st_study_plan *p, const st_study_results *r,
                               const char *dir, int *n_made) {
    int made = 0;
    char *pdir = stu_join(dir, "plots");
    if (!pdir) return st_error(ST_ERR_NOMEM, "out of memory");
    st_status s = stu_mkdirs(pdir);
    /* the paper's plots show plain fine-tuning (defense none; the first finetune entry; no merges):
     * a shallow copy of those rows (the defense axes have their own plot) */
    st_study_results plain = {calloc(r->n + 1, sizeof *r->rows), 0};
    if (!plain.rows) s = st_error(ST_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < r->n; i++) {
        const st_study_run *x = r->rows[i].run;
        if ((c->n_defenses && c->defenses[x->defense].n) || x->finetune != 0 || r->rows[i].w.kind == ST_WEIGHTS_MERGE) continue;
        plain.rows[plain.n++] = r->rows[i];
    }
    if (!s) s = plot_asr_vs_lr(c, &plain, pdir, &made);
    if (!s) s = plot_steps(c, p, dir, pdir, P_PROBE, &made);
    if (!s) s = plot_utility(c, &plain, pdir, &made);
    free(plain.rows);
    if (!s) s = plot_steps(c, p, dir, pdir, P_THETA, &made);
    if (!s) s = plot_steps(c, p, dir, pdir, P_LOSS, &made);
    if (!s) s = plot_defense_pareto(c, r, pdir, &made);
    free(pdir);
    if (n_made) *n_made = made;
    return s;
}
