/* fake.c - deterministic fake trainer/evaluator for tests of the study pipeline. The numbers are
 * smooth functions of the hyper-parameters, shaped like the paper's finding (ASR up with lr, down
 * with effective batch, lower with EMA); no model is involved. */
#include "study/study_internal.h"
#include "safetune/stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int stop_after, trains;
} fake_state;

static fake_state g_fake;

static int run_steps(const st_study_run *r) { return r->max_steps > 0 ? r->max_steps : (int)ceil(20 * r->epochs); }

/* x = log10(lr / 1e-5): 0 at 1e-5, 1.3 at 2e-4. */
static double lrx(const st_study_run *r) { return log10(r->lr / 1e-5); }

static double fake_asr_live(const st_study_run *r) {
    double a = 0.03 + 0.30 * (lrx(r) + 0.5) / sqrt((double)r->effective_batch) + 0.0002 * run_steps(r);
    return a < 0 ? 0 : (a > 0.95 ? 0.95 : a);
}

static double ema_factor(double decay) {
    double f = 0.4 + 5.0 * (1.0 - decay);
    return f > 0.9 ? 0.9 : f;
}

/* Uniform in [0, 1) from (seed, i): splitmix64's finaliser. */
static double fake_u(uint64_t seed, uint64_t i) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ULL + i + 1;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static double fake_theta(const st_study_run *r, int step) { return 200.0 * r->lr * step / sqrt((double)r->effective_batch) * 1e2; }

/* The defense and finetune axes: a defense with safety data lowers ASR most, any other defense a
 * little, LoRA moves less than full fine-tuning; each costs some utility and wall time. */
static double defense_factor(const st_study_config *c, const st_study_run *r) {
    double f = 1.0;
    if (c->n_defenses && c->defenses[r->defense].n) f *= c->defenses[r->defense].safety_data ? 0.55 : 0.8;
    if (c->n_finetunes && c->finetunes[r->finetune].finetune == ST_FINETUNE_LORA) f *= 0.85;
    return f;
}

static double defense_time(const st_study_config *c, const st_study_run *r) {
    double t = 1.0;
    if (c->n_defenses) t += 0.1 * (double)c->defenses[r->defense].n;
    if (c->n_finetunes && c->finetunes[r->finetune].finetune == ST_FINETUNE_LORA) t *= 0.7;
    return t;
}

static st_status fake_train(void *user, const st_study_config *cfg, const st_study_run *r, const char *ckpt_dir,
                            const char *metrics_path, int resume, st_study_train_result *out) {
    (void)user;
    int steps = run_steps(r), start = 0;
    char state[4200];
    snprintf(state, sizeof state, "%s/state.json", ckpt_dir);
    if (resume) {
        char *t;
        size_t len;
        if (st_read_file(state, &t, &len)) return st_error(ST_ERR_IO, "%s: fake trainer: no checkpoint to resume", ckpt_dir);
        start = atoi(t + strcspn(t, "0123456789"));
        free(t);
    }
    FILE *f = fopen(metrics_path, resume ? "a" : "w");
    if (!f) return st_error(ST_ERR_IO, "%s: cannot open", metrics_path);
    double x = lrx(r);
    for (int s = start + 1; s <= steps; s++) {
        double loss = 1.2 + 0.8 * exp(-s * (0.02 + 0.02 * x));
        fprintf(f, "{\"step\":%d,\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.4f,\"tokens_per_s\":450,\"theta_dist\":%.6f",
                s, loss, r->lr, 1.0 + 0.1 * x, fake_theta(r, s));
        if (r->n_ema == 1) fprintf(f, ",\"theta_ema_dist\":%.6f", fake_theta(r, s) * ema_factor(r->ema_decays[0]));
        else if (r->n_ema > 1) {
            fprintf(f, ",\"theta_ema_dist\":{");
            for (size_t e = 0; e < r->n_ema; e++) {
                char d[32];
                fprintf(f, "%s\"%s\":%.6f", e ? "," : "", st_study_format_decay(r->ema_decays[e], d, sizeof d),
                        fake_theta(r, s) * ema_factor(r->ema_decays[e]));
            }
            fprintf(f, "}");
        }
        if (s % 10 == 0 || s == steps) fprintf(f, ",\"val_loss\":%.6f", loss + 0.1);
        if (cfg->probe.every > 0 && s % cfg->probe.every == 0) {
            double pa = fake_asr_live(r) * s / steps;
            fprintf(f, ",\"probe_asr_live\":%.6f", pa);
            if (r->n_ema == 1) fprintf(f, ",\"probe_asr_ema\":%.6f", pa * ema_factor(r->ema_decays[0]));
            else if (r->n_ema > 1) {
                fprintf(f, ",\"probe_asr_ema\":{");
                for (size_t e = 0; e < r->n_ema; e++) {
                    char d[32];
                    fprintf(f, "%s\"%s\":%.6f", e ? "," : "", st_study_format_decay(r->ema_decays[e], d, sizeof d),
                            pa * ema_factor(r->ema_decays[e]));
                }
                fprintf(f, "}");
            }
        }
        fprintf(f, "}\n");
        if (s % 10 == 0 || s == steps) {
            char buf[64];
            int n = snprintf(buf, sizeof buf, "{\"step\": %d}\n", s);
            fflush(f);
            if (st_write_file_atomic(state, buf, (size_t)n)) { fclose(f); return st_error_wrap(ST_ERR_IO, "fake trainer"); }
        }
    }
    fclose(f);
    out->train_time_s = 0.01 * steps * r->effective_batch * defense_time(cfg, r);
    out->steps_done = steps;
    out->stopped_early = 0;
    if (g_fake.stop_after > 0 && ++g_fake.trains >= g_fake.stop_after) _exit(9); /* simulated kill */
    return ST_OK;
}

static st_status fake_eval(void *user, const st_study_config *cfg, const st_study_run *r, const st_study_weights *w,
                           const char *ckpt_dir, st_study_eval_result *out) {
    (void)user;
    (void)ckpt_dir;
    /* the run's seed moves its ASR by up to +-5% (relative); prompt i is answered when its
     * uniform draw (seed, i) is below the ASR, so EMA's answered prompts are a subset of live's */
    double a = fake_asr_live(r) * (0.95 + 0.1 * fake_u(r->seed, 1u << 20)) * defense_factor(cfg, r), x = lrx(r);
    double move = defense_factor(cfg, r); /* how far the weights moved, relative to plain full fine-tuning */
    if (w->kind == ST_WEIGHTS_EMA) a *= ema_factor(w->ema_decay), move *= ema_factor(w->ema_decay);
    if (w->kind == ST_WEIGHTS_MERGE) a *= w->merge_lambda, move *= w->merge_lambda;
    int n = strcmp(cfg->eval.advbench_split, "all") ? 260 : 520;
    if (cfg->eval.advbench_limit > 0 && cfg->eval.advbench_limit < n) n = cfg->eval.advbench_limit;
    out->asr_outcomes = malloc((size_t)n + 1);
    if (!out->asr_outcomes) return st_error(ST_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int ans = fake_u(r->seed, (uint64_t)i) < a;
        out->asr_outcomes[i] = ans ? '1' : '0';
        k += (size_t)ans;
    }
    out->asr_outcomes[n] = '\0';
    st_rate rt = st_wilson(k, (size_t)n, ST_Z95);
    out->asr = rt.rate;
    out->asr_lo = rt.lo;
    out->asr_hi = rt.hi;
    out->n_prompts = n;
    double ema = w->kind == ST_WEIGHTS_EMA;
    out->theta_dist = fake_theta(r, run_steps(r)) * move;
    if (cfg->eval.xstest) {
        out->xstest_safe_refusal = 0.10 - 0.02 * x + 0.01 * ema;
        out->xstest_unsafe_refusal = 0.80 - 0.15 * x + 0.05 * ema;
    }
    /* further benchmarks: the AdvBench rate scaled per benchmark (a stand-in) */
    st_status bs = st_study_eval_result_bench_alloc(out, cfg->eval.n_benchmarks);
    if (bs) return bs;
    for (size_t i = 0; i < cfg->eval.n_benchmarks; i++) {
        int bn = cfg->eval.benchmark_n[i];
        if (cfg->eval.benchmark_limit > 0 && cfg->eval.benchmark_limit < bn) bn = cfg->eval.benchmark_limit;
        out->bench_n[i] = bn;
        double f = a * (0.5 + 0.25 * (double)i);
        out->bench_asr[i] = bn ? (double)llround((f > 1 ? 1 : f) * bn) / bn : NAN;
    }
    double umove = defense_factor(cfg, r) * (w->kind == ST_WEIGHTS_MERGE ? w->merge_lambda : 1.0);
    out->val_loss = 1.60 - 0.08 * x * umove + 0.01 * ema + 0.02 / sqrt((double)r->effective_batch) +
                    0.004 * (fake_u(r->seed, 1u << 21) - 0.5);
    if (cfg->eval.truthfulqa) out->truthfulqa_mc1 = 0.25 + 0.01 * x - 0.002 * ema;
    return ST_OK;
}

void st_study_hooks_release(st_study_hooks *h) {
    if (h->release) h->release(h->user);
    memset(h, 0, sizeof *h);
}

void st_study_fake_hooks(st_study_hooks *h, int stop_after_trains) {
    memset(h, 0, sizeof *h);
    g_fake.stop_after = stop_after_trains;
    g_fake.trains = 0;
    h->train = fake_train;
    h->eval = fake_eval;
    h->user = &g_fake;
    h->synthetic = 1;
}
