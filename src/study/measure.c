/* measure.c - what `safetune study --dry-run` measures on this machine before estimating: two
 * real optimiser steps, a short generation, the peak memory, and a memory check of the plan
 * (see st_study_measure in study.h). */
#include "study/hooks_internal.h"
#include "study/study_internal.h"
#include "safetune/config.h"
#include "safetune/trainer.h"
#include "safetune/weights.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define GIB (1024.0 * 1024.0 * 1024.0)
#define GEN_TOKENS 32 /* new tokens of the timed generation */

static size_t max_ema(const st_study_plan *p, size_t *run) {
    size_t n = 0;
    *run = 0;
    for (size_t i = 0; i < p->n_runs; i++)
        if (p->runs[i].n_ema > n) {
            n = p->runs[i].n_ema;
            *run = i;
        }
    return n;
}

/* Parameter copies (4 bytes each) the study process holds at its peak: live weights, the study's
 * theta_0, the trainer's theta_0, gradient and two AdamW moments, one buffer per EMA decay, the
 * scratch read-back buffer, the inference weight cache and the keep_best copies (live + each EMA). */
static double planned_copies(const st_study_config *c, const st_study_plan *p) {
    size_t ri, n_ema = max_ema(p, &ri);
    double k = 8.0 + (double)n_ema;
    if (c->probe.keep_best) k += 1.0 + (double)n_ema;
    return k;
}

static double phys_gib(void) {
    long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
    return pages > 0 && ps > 0 ? (double)pages * (double)ps / GIB : NAN;
}

static double peak_rss_gib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return NAN;
    return (double)ru.ru_maxrss * 1024.0 / GIB; /* ru_maxrss in KiB on Linux */
}

static st_status too_big(const st_study_config *c, const st_study_measured *o, double copies, const char *what) {
    return st_error(ST_ERR_NOMEM,
                    "%s: key 'model': the study needs about %.1f GiB (%s; %zu parameters x 4 bytes x %.0f copies: weights, "
                    "theta_0, gradient, AdamW moments, EMA decays, ...) but this machine has %.1f GiB: use a smaller model, "
                    "fewer EMA decays or a machine with more memory",
                    c->source, o->planned_gib, what, o->n_params, copies, o->available_gib);
}

/* Fixed buffers from an HF folder's config.json alone (no weights read). 0 = not an HF folder. */
static size_t params_from_hf_config(const char *model) {
    struct stat st;
    if (stat(model, &st) || !S_ISDIR(st.st_mode)) return 0;
    char *cj = stu_join(model, "config.json");
    if (!cj) return 0;
    st_config cfg;
    size_t n = 0;
    if (st_config_from_hf_json(cj, &cfg) == ST_OK) {
        st_layout lay;
        if (st_layout_init(&lay, &cfg) == ST_OK) {
            n = lay.n_floats;
            st_layout_free(&lay);
        }
    }
    free(cj);
    return n;
}

st_status st_study_measure(const st_study_config *c, const st_study_plan *p, st_study_measured *o) {
    memset(o, 0, sizeof *o);
    o->train_tokens_per_s = c->estimate.train_tokens_per_s;
    o->gen_tokens_per_s = c->estimate.gen_tokens_per_s;
    o->example_tokens = c->estimate.example_tokens;
    o->available_gib = phys_gib();
    o->peak_rss_gib = o->planned_gib = NAN;
    const double copies = planned_copies(c, p);
    /* 1. refuse before loading when the fixed buffers alone do not fit */
    size_t np = params_from_hf_config(c->model);
    if (np) {
        o->n_params = np;
        o->planned_gib = 4.0 * (double)np * copies / GIB;
        if (o->planned_gib > o->available_gib) return too_big(c, o, copies, "fixed buffers alone, before activations");
    }
    /* 2. load, two real steps at the largest micro-batch */
    st_model *m = NULL;
    st_tokenized tk;
    memset(&tk, 0, sizeof tk);
    st_trainer *t = NULL;
    st_train_config tc1; /* the micro-batch-1 trainer of the second timed step */
    st_prompt_set adv;
    memset(&adv, 0, sizeof adv);
    st_refusal_matcher *rm = NULL;
    int *refused = NULL;
    const char **prompts = NULL;
    st_status s = st_model_load(c->model, &m);
    if (!s && !m->tokenizer) s = st_error(ST_ERR_FORMAT, "%s: the model has no tokenizer", c->model);
    if (!s) s = stx_load_tokenized(&c->datasets[0], m, c->max_seq_len, &tk);
    if (!s) {
        o->n_params = m->layout.n_floats;
        o->example_tokens = tk.n ? (double)tk.offsets[tk.n] / (double)tk.n : NAN;
        int bmax = 1;
        for (size_t i = 0; i < p->n_runs; i++)
            if (p->runs[i].batch_size > bmax) bmax = p->runs[i].batch_size;
        o->train_batch = bmax;
        st_train_config tc;
        st_train_config_default(&tc);
        tc.optim.lr = c->lr[0];
        tc.optim.weight_decay = c->weight_decay;
        tc.batch_size = bmax;
        tc.grad_accum = 1;
        tc.max_steps = 2;
        tc.max_grad_norm = c->max_grad_norm;
        size_t ri, n_ema = max_ema(p, &ri);
        if (n_ema > ST_EMA_MAX) n_ema = ST_EMA_MAX;
        tc.n_ema = (int)n_ema; /* every decay of the plan: its buffers are in the measured peak */
        for (size_t e = 0; e < n_ema; e++) tc.ema_decays[e] = p->runs[ri].ema_decays[e];
        tc.bf16 = !strcmp(c->precision, "bf16");
        tc.seed = c->seed;
        tc.max_seq_len = c->max_seq_len;
        tc.pad_id = st_train_pad_id(m);
        tc.val_fraction = 0.0;
        tc.val_count = 0;
        tc.eval_every = 0;
        tc.out_dir = NULL;
        tc1 = tc;
        s = st_trainer_new(m, &tk, &tc, &t);
    }
    /* an untimed warm-up step (first-touch pages, kernel set-up), a timed one at the largest
     * micro-batch, and (when that is above 1) a timed one of a trainer at micro-batch 1: a step
     * costs a fixed part (optimiser, EMAs, norms over every parameter) plus its tokens */
    double tok_b = 0, sec_b = 0;
    for (int k = 0; !s && k < 2; k++) {
        st_step_metrics sm;
        double t0 = st_time_now();
        s = st_trainer_step(t, &sm);
        sec_b = st_time_now() - t0;
        tok_b = (double)sm.tokens;
    }
    if (!s) {
        o->train_step_s = sec_b;
        o->train_tokens_per_s = sec_b > 0 ? tok_b / sec_b : NAN;
        o->step_overhead_s = 0.0;
    }
    if (!s && o->train_batch > 1) {
        st_trainer_free(t);
        t = NULL;
        tc1.batch_size = 1;
        st_step_metrics sm;
        s = st_trainer_new(m, &tk, &tc1, &t);
        double t0 = st_time_now();
        if (!s) s = st_trainer_step(t, &sm);
        const double sec_1 = st_time_now() - t0, tok_1 = s ? 0 : (double)sm.tokens;
        /* marginal cost per token from the two; kept only when the batches differ enough in tokens
         * and the parts come out positive (else the whole-step rate stands) */
        if (!s && tok_b > 1.5 * tok_1 && sec_b > sec_1) {
            const double per_tok = (sec_b - sec_1) / (tok_b - tok_1), fixed = sec_1 - tok_1 * per_tok;
            if (fixed > 0) {
                o->train_tokens_per_s = 1.0 / per_tok;
                o->step_overhead_s = fixed;
            }
        }
    }
    /* 3. a short generation at the evaluation batch (while the trainer holds its precision) */
    if (!s) s = st_prompts_load("advbench", c->data_dir, &adv);
    if (!s) s = st_refusal_new(NULL, NULL, &rm);
    if (!s) {
        size_t n = (size_t)c->eval.batch_size < adv.n ? (size_t)c->eval.batch_size : adv.n;
        prompts = calloc(n ? n : 1, sizeof *prompts);
        refused = calloc(n ? n : 1, sizeof *refused);
        if (!prompts || !refused) s = st_error(ST_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !s && i < n; i++) prompts[i] = adv.items[i].prompt;
        int nt = c->eval.max_new_tokens < GEN_TOKENS ? c->eval.max_new_tokens : GEN_TOKENS;
        const int bf = !strcmp(c->eval.precision, "bf16");
        size_t gt = 0, g1 = 0;
        /* untimed: one prompt builds the inference weight cache; then the prefill (2 new tokens:
         * with 1, a prompt's slot ends in the step that prefilled it, before the other slots can
         * copy the shared system-prompt prefix from it, and the prefills run one after another),
         * then the whole generation: decode = the difference */
        st_infer_ctx *ic = NULL;
        if (!s) s = st_infer_ctx_new(m, NULL, NULL, NULL, &ic);
        if (!s) s = stx_refusals(ic, prompts, 1, 1, c->eval.batch_size, bf, rm, refused, NULL, NULL);
        double t0 = st_time_now();
        if (!s) s = stx_refusals(ic, prompts, n, 2, c->eval.batch_size, bf, rm, refused, NULL, &g1);
        const double dt1 = st_time_now() - t0;
        t0 = st_time_now();
        if (!s) s = stx_refusals(ic, prompts, n, nt, c->eval.batch_size, bf, rm, refused, NULL, &gt);
        st_infer_ctx_free(ic);
        double dt = st_time_now() - t0;
        if (!s) {
            o->gen_prompts = (int)n;
            o->gen_tokens = nt;
            o->prompt_s = n ? dt1 / (double)n : NAN;
            o->gen_tokens_per_s = dt > dt1 && gt > g1 ? (double)(gt - g1) / (dt - dt1) : dt > 0 ? (double)gt / dt : NAN;
        }
    }
    if (!s) {
        o->peak_rss_gib = peak_rss_gib();
        /* the measured process held the weights, the trainer's theta_0, gradient, 2 moments, every
         * EMA decay and the inference cache: the study adds its own theta_0, scratch and keep_best */
        size_t ri;
        double extra = copies - (6.0 + (double)max_ema(p, &ri));
        o->planned_gib = o->peak_rss_gib + (extra > 0 ? extra : 0) * 4.0 * (double)o->n_params / GIB;
        o->measured = 1;
    }
    free(prompts);
    free(refused);
    st_refusal_free(rm);
    st_prompt_set_free(&adv);
    st_trainer_free(t);
    st_tokenized_free(&tk);
    st_model_free(m);
    if (!s && o->planned_gib > o->available_gib) return too_big(c, o, copies, "measured peak plus the buffers of further EMA decays");
    return s;
}
