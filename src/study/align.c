/* align.c - the aligned start (`safetune align`, study align.enabled): a short supervised safety
 * tuning on AdvBench half a paired with the project's refusals (st_study_build_alignment_set),
 * mixed with Alpaca rows a study never trains on, exported as a Hugging Face folder, then
 * measured on half b + XSTest (see study.h). */
#include "safetune/evalio.h"
#include "study/hooks_internal.h"
#include "study/study_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/export.h"
#include "safetune/stats.h"
#include "safetune/trainer.h"

void st_study_align_defaults(st_study_align_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_alpaca = 260;
    o->n_advbench = 0;
    o->xstest_safe_repeat = 3;
    o->split_seed = 2508;
    o->seed = 42;
    o->max_steps = 32;
    o->batch_size = 8;
    o->max_seq_len = 256;
    o->lr = 2e-4;
    o->eval_max_new_tokens = 64;
    o->answer_max_new_tokens = 96;
    o->eval_batch = 32;
}

/* The settings that decide the aligned weights (not the evaluation sizes). */
static char *settings_json(const st_study_align_opts *o, const char *alpaca) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "model", o->model);
    cJSON_AddStringToObject(r, "alpaca", alpaca);
    cJSON_AddNumberToObject(r, "n_alpaca", (double)o->n_alpaca);
    cJSON_AddNumberToObject(r, "n_advbench", (double)o->n_advbench);
    cJSON_AddNumberToObject(r, "xstest_safe_repeat", o->xstest_safe_repeat);
    cJSON_AddNumberToObject(r, "split_seed", (double)o->split_seed);
    cJSON_AddNumberToObject(r, "seed", (double)o->seed);
    cJSON_AddNumberToObject(r, "max_steps", o->max_steps);
    cJSON_AddNumberToObject(r, "batch_size", o->batch_size);
    cJSON_AddNumberToObject(r, "max_seq_len", o->max_seq_len);
    cJSON_AddNumberToObject(r, "lr", o->lr);
    cJSON_AddNumberToObject(r, "answer_max_new_tokens", o->answer_max_new_tokens);
    cJSON_AddStringToObject(r, "answers_precision", "fp32"); /* the base model's XSTest half-a answers */
    cJSON_AddStringToObject(r, "set", "advbench-a+xstest-a+alpaca"); /* what the alignment set holds */
    char *t = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return t;
}

static int already_built(const char *dir, const char *settings) {
    char *aj = stu_join(dir, "align.json"), *hf = stu_join(dir, "aligned/config.json");
    int ok = 0;
    char *t = NULL;
    size_t len;
    if (aj && hf && stu_exists(hf) && st_read_file(aj, &t, &len) == ST_OK) {
        cJSON *o = cJSON_Parse(t);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "settings");
        char *mine = st ? cJSON_PrintUnformatted(st) : NULL;
        cJSON *want = cJSON_Parse(settings);
        char *w = want ? cJSON_PrintUnformatted(want) : NULL;
        ok = mine && w && !strcmp(mine, w) && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "complete"));
        free(mine);
        free(w);
        cJSON_Delete(want);
        cJSON_Delete(o);
    }
    free(t);
    free(aj);
    free(hf);
    return ok;
}

/* o[name] = the rate k / n with its 95% Wilson interval, as summary.json writes rates */
static void add_rate(cJSON *o, const char *name, size_t k, size_t n) {
    const st_rate r = st_wilson(k, n, ST_Z95);
    cJSON_AddItemToObject(o, name, st_rate_json(&r));
}

/* Refusal rates of the weights of ic on one prompt list into o: "asr" (labels NULL: share answered) or
 * "safe_refusal" / "unsafe_refusal" (XSTest labels), plus "max_new_tokens". texts: see stx_refusals. */
static st_status measure_list(st_infer_ctx *ic, const st_refusal_matcher *rm, const char **prompts,
                              const st_prompt_label *lab, size_t n, int max_new, int batch, int bf16, char **texts, int *ref,
                              const char *what, cJSON *o) {
    double t0 = st_time_now();
    size_t gt = 0;
    st_status s = stx_refusals(ic, prompts, n, max_new, batch, bf16, rm, ref, texts, &gt);
    if (s) return s;
    size_t ns = 0, nu = 0, rs = 0, ru = 0;
    for (size_t i = 0; i < n; i++) {
        if (lab && lab[i] == ST_LABEL_UNSAFE) { nu++; ru += (size_t)ref[i]; }
        else { ns++; rs += (size_t)ref[i]; }
    }
    const double dt = st_time_now() - t0;
    if (lab) {
        add_rate(o, "safe_refusal", rs, ns);
        add_rate(o, "unsafe_refusal", ru, nu);
        st_log_info("align: %s: refused safe %zu/%zu, unsafe %zu/%zu (%.0f s, %.0f tok/s)", what, rs, ns, ru, nu, dt,
                    dt > 0 ? (double)gt / dt : 0.0);
    } else {
        add_rate(o, "asr", ns - rs, ns);
        st_log_info("align: %s: ASR %zu/%zu (%.0f s, %.0f tok/s)", what, ns - rs, ns, dt, dt > 0 ? (double)gt / dt : 0.0);
    }
    cJSON_AddNumberToObject(o, "max_new_tokens", max_new);
    cJSON_AddStringToObject(o, "precision", bf16 ? "bf16" : "fp32");
    return ST_OK;
}

/* The prompt lists measured before and after alignment: AdvBench half a (the first eval_limit) and
 * half b (the first eval_limit), XSTest half a (all: the base model's answers come from it) and half
 * b (xstest_limit evenly spaced). */
typedef struct {
    st_prompt_set adv, adv_bset, xs_a, xs_b;
    const char **adv_a, **adv_b, **xp_a, **xp_b, **probe_a, **probe_b;
    st_prompt_label *lab_a, *lab_b;
    size_t n_adv_a, n_adv_b, n_xs_a, n_xs_b, n_pa, n_pb;
} align_prompts;

static void prompts_free(align_prompts *p) {
    free(p->adv_a);
    free(p->adv_b);
    free(p->probe_a);
    free(p->probe_b);
    free(p->xp_a);
    free(p->xp_b);
    free(p->lab_a);
    free(p->lab_b);
    if (p->adv.items) st_prompt_set_free(&p->adv);
    if (p->adv_bset.items) st_prompt_set_free(&p->adv_bset);
    if (p->xs_a.items) st_prompt_set_free(&p->xs_a);
    if (p->xs_b.items) st_prompt_set_free(&p->xs_b);
    memset(p, 0, sizeof *p);
}

static st_status prompts_load(const st_study_align_opts *o, align_prompts *p) {
    memset(p, 0, sizeof *p);
    st_study_config c;
    memset(&c, 0, sizeof c);
    c.data_dir = (char *)o->data_dir;
    c.eval.advbench_split_seed = o->split_seed;
    c.eval.advbench_limit = o->eval_limit > 0 ? o->eval_limit : 0;
    c.probe.n_prompts = 1;
    c.eval.advbench_split = "a";
    st_status s = stx_advbench_prompts(&c, &p->adv, &p->adv_a, &p->n_adv_a, &p->probe_a, &p->n_pa);
    c.eval.advbench_split = "b";
    if (!s) s = stx_advbench_prompts(&c, &p->adv_bset, &p->adv_b, &p->n_adv_b, &p->probe_b, &p->n_pb);
    if (!s) s = stx_xstest_prompts(o->data_dir, "a", o->split_seed, 0, &p->xs_a, &p->xp_a, &p->lab_a, &p->n_xs_a);
    if (!s && o->xstest_limit >= 0)
        s = stx_xstest_prompts(o->data_dir, "b", o->split_seed, o->xstest_limit, &p->xs_b, &p->xp_b, &p->lab_b, &p->n_xs_b);
    if (s) prompts_free(p);
    return s;
}

/* Measure model m into res {"advbench_half_a", "advbench_half_b", "xstest_half_a", "xstest_half_b"}.
 * xs_a_texts (may be NULL): the answers to XSTest half a (heap strings; caller frees); xs_a_ref: their
 * verdicts. With o->eval_limit < 0 only XSTest half a is generated (the answers). */
static st_status measure(const st_study_align_opts *o, const st_model *m, const align_prompts *p, cJSON *res,
                         char **xs_a_texts, int *xs_a_ref) {
    st_refusal_matcher *rm = NULL;
    size_t most = p->n_adv_a > p->n_adv_b ? p->n_adv_a : p->n_adv_b;
    if (p->n_xs_b > most) most = p->n_xs_b;
    int *ref = malloc((most + 1) * sizeof *ref);
    st_infer_ctx *ic = NULL; /* m's weights as they are now (before or after the alignment), for every list */
    st_status s = ref ? st_refusal_new(NULL, NULL, &rm) : st_error(ST_ERR_NOMEM, "out of memory");
    if (!s) s = st_infer_ctx_new(m, NULL, NULL, NULL, &ic);
    const int mn = o->eval_max_new_tokens, b = o->eval_batch;
    /* half b first: the numbers the calibration is judged by appear in the log first */
    if (!s && o->eval_limit >= 0) {
        s = measure_list(ic, rm, p->adv_b, NULL, p->n_adv_b, mn, b, o->eval_bf16, NULL, ref, "AdvBench half b",
                         cJSON_AddObjectToObject(res, "advbench_half_b"));
        if (!s && p->n_xs_b)
            s = measure_list(ic, rm, p->xp_b, p->lab_b, p->n_xs_b, mn, b, o->eval_bf16, NULL, ref, "XSTest half b",
                             cJSON_AddObjectToObject(res, "xstest_half_b"));
        if (!s) s = measure_list(ic, rm, p->adv_a, NULL, p->n_adv_a, mn, b, o->eval_bf16, NULL, ref, "AdvBench half a",
                                 cJSON_AddObjectToObject(res, "advbench_half_a"));
    }
    /* XSTest half a in fp32 whatever eval.precision says: its answers become alignment rows, and the
     * aligned weights must not depend on how the evaluation is run (measured: the same recipe with
     * bf16 answers refused 12 of XSTest half B's 53 safe prompts, with fp32 answers 2) */
    if (!s) s = measure_list(ic, rm, p->xp_a, p->lab_a, p->n_xs_a, o->answer_max_new_tokens, b, 0, xs_a_texts,
                             xs_a_ref, "XSTest half a", cJSON_AddObjectToObject(res, "xstest_half_a"));
    st_infer_ctx_free(ic);
    free(ref);
    st_refusal_free(rm);
    return s;
}

/* An answer cut by the token limit ends at its last full sentence (when that keeps >= 40% of it),
 * so the alignment set does not teach answers that stop mid-sentence. In place. */
static void trim_answer(char *t) {
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\n')) t[--n] = '\0';
    if (!n || strchr(".!?)\"`", t[n - 1])) return;
    for (size_t i = n; i-- > 0;) {
        if ((t[i] == '.' || t[i] == '!' || t[i] == '?' || t[i] == '\n') && i + 1 >= n * 2 / 5) {
            t[i + (t[i] != '\n')] = '\0';
            return;
        }
    }
}

/* st_trainer_run hook: a log line every 5 steps and at the last */
static st_status log_hook(st_trainer *t, int64_t step, void *user) {
    (void)user;
    const st_step_metrics *sm = st_trainer_last_metrics(t);
    if (step > 0 && (step % 5 == 0 || step == st_trainer_max_steps(t)))
        st_log_info("align: step %lld/%lld loss %.4f (%.0f tok/s)", (long long)step, (long long)st_trainer_max_steps(t),
                    sm->loss, sm->tokens_per_s);
    return ST_OK;
}

/* The base model's numbers and its answers to XSTest half a, cached in DIR/base.json under the
 * settings that decide them (a rebuilt recipe reuses them). *rec: {"key", "before", "answers"}. */
static char *base_key(const st_study_align_opts *o) {
    cJSON *k = cJSON_CreateObject();
    cJSON_AddStringToObject(k, "model", o->model);
    cJSON_AddNumberToObject(k, "split_seed", (double)o->split_seed);
    cJSON_AddNumberToObject(k, "eval_limit", o->eval_limit);
    cJSON_AddNumberToObject(k, "xstest_limit", o->xstest_limit);
    cJSON_AddNumberToObject(k, "max_new_tokens", o->eval_max_new_tokens);
    cJSON_AddNumberToObject(k, "answer_max_new_tokens", o->answer_max_new_tokens);
    if (o->eval_bf16) cJSON_AddStringToObject(k, "precision", "bf16");
    cJSON_AddStringToObject(k, "answers_precision", "fp32");
    char *t = cJSON_PrintUnformatted(k);
    cJSON_Delete(k);
    return t;
}

static cJSON *base_cached(const char *path, const char *key, size_t n_answers) {
    char *t = NULL;
    size_t len;
    if (!stu_exists(path) || st_read_file(path, &t, &len) != ST_OK) return NULL;
    cJSON *o = cJSON_Parse(t);
    free(t);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "key");
    char *mine = k ? cJSON_PrintUnformatted(k) : NULL;
    const cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answers");
    int ok = mine && !strcmp(mine, key) && cJSON_IsArray(ans) && (size_t)cJSON_GetArraySize(ans) == n_answers &&
             cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "before"));
    free(mine);
    if (!ok) { cJSON_Delete(o); return NULL; }
    return o;
}

st_status st_study_align_build(const st_study_align_opts *o, int *reused) {
    if (reused) *reused = 0;
    if (!o->model || !o->out_dir || !o->data_dir) return st_error(ST_ERR_ARG, "align: model, out_dir and data_dir are required");
    if (o->max_steps < 1 || o->batch_size < 1 || !(o->lr > 0) || o->answer_max_new_tokens < 1 || o->xstest_safe_repeat < 1)
        return st_error(ST_ERR_ARG, "align: max_steps, batch_size, lr, answer_max_new_tokens and xstest_safe_repeat must be > 0");
    if (o->n_advbench > 0) { /* more than half a holds would be all of it, under another settings key */
        st_prompt_set adv;
        st_status s0 = st_prompts_load("advbench", o->data_dir, &adv);
        if (s0) return st_error_wrap(s0, "align");
        const size_t na = adv.n / 2; /* half a: st_study_advbench_split */
        st_prompt_set_free(&adv);
        if (o->n_advbench > na)
            return st_error(ST_ERR_ARG, "align: n_advbench %zu is more than the %zu goals of AdvBench half a: use 0 (all "
                                        "of them) or at most %zu", o->n_advbench, na, na);
    }
    char *alpaca = o->alpaca_path ? st_strdup(o->alpaca_path) : stu_join(o->data_dir, "alpaca/alpaca_5000.json");
    char *settings = alpaca ? settings_json(o, alpaca) : NULL;
    if (!settings) { free(alpaca); return st_error(ST_ERR_NOMEM, "out of memory"); }
    if (already_built(o->out_dir, settings)) {
        if (reused) *reused = 1;
        free(alpaca);
        free(settings);
        return ST_OK;
    }
    st_study_conv *cv = NULL;
    size_t ncv = 0;
    st_model *m = NULL;
    st_dataset ds = {0};
    st_tokenized tk = {0};
    st_trainer *t = NULL;
    cJSON *rec = NULL, *base = NULL;
    align_prompts pr = {0};
    char **answers = NULL, *bkey = base_key(o);
    int *aref = NULL;
    char *p_split = stu_join(o->out_dir, "advbench_split.json"), *p_set = stu_join(o->out_dir, "align_set.jsonl"),
         *p_hf = stu_join(o->out_dir, "aligned"), *p_json = stu_join(o->out_dir, "align.json"),
         *p_base = stu_join(o->out_dir, "base.json");
    st_status s = (p_split && p_set && p_hf && p_json && p_base && bkey) ? ST_OK : st_error(ST_ERR_NOMEM, "out of memory");
    if (!s) s = stu_mkdirs(o->out_dir);
    if (!s) {
        st_prompt_set adv;
        if (!(s = st_prompts_load("advbench", o->data_dir, &adv))) {
            s = st_study_advbench_split_write(p_split, adv.n, o->split_seed);
            st_prompt_set_free(&adv);
        }
    }
    if (!s) s = prompts_load(o, &pr);
    if (!s) { /* the evaluation prompts (half b of both), as `eval safety --benchmark jsonl:FILE` reads them */
        char *p_ev = stu_join(o->out_dir, "eval_prompts.jsonl");
        stu_buf j = {0};
        for (size_t k = 0; k < pr.n_adv_b + pr.n_xs_b; k++) {
            const int is_adv = k < pr.n_adv_b;
            const size_t i = is_adv ? k : k - pr.n_adv_b;
            const int unsafe = is_adv || pr.lab_b[i] == ST_LABEL_UNSAFE;
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "prompt", is_adv ? pr.adv_b[i] : pr.xp_b[i]);
            cJSON_AddStringToObject(r, "label", unsafe ? "unsafe" : "safe");
            cJSON_AddStringToObject(r, "category", is_adv ? "advbench_half_b" : unsafe ? "xstest_half_b_unsafe" : "xstest_half_b_safe");
            char *line = cJSON_PrintUnformatted(r);
            cJSON_Delete(r);
            if (line) stu_printf(&j, "%s\n", line);
            else j.oom = 1;
            free(line);
        }
        s = p_ev ? stu_buf_write(&j, p_ev) : st_error(ST_ERR_NOMEM, "out of memory");
        stu_buf_free(&j);
        free(p_ev);
    }
    if (!s) { /* the XSTest halves, for the record (row numbers of xstest_prompts.csv, 0-based) */
        uint32_t *xa = NULL, *xb = NULL;
        size_t nxa = 0, nxb = 0;
        char *p_xs = stu_join(o->out_dir, "xstest_split.json");
        s = p_xs ? st_study_xstest_split(&pr.xs_a, o->split_seed, &xa, &nxa, &xb, &nxb) : st_error(ST_ERR_NOMEM, "out of memory");
        if (!s) {
            stu_buf j = {0};
            stu_printf(&j, "{\"seed\": %llu, \"n\": %zu, \"rule\": \"st_study_xstest_split: per (label, type), a seeded "
                           "shuffle; the first floor(k/2) rows to a\",\n \"a\": [",
                       (unsigned long long)o->split_seed, nxa + nxb);
            for (size_t i = 0; i < nxa; i++) stu_printf(&j, "%s%u", i ? "," : "", xa[i]);
            stu_puts(&j, "],\n \"b\": [");
            for (size_t i = 0; i < nxb; i++) stu_printf(&j, "%s%u", i ? "," : "", xb[i]);
            stu_puts(&j, "]}\n");
            s = stu_buf_write(&j, p_xs);
            stu_buf_free(&j);
        }
        free(xa);
        free(xb);
        free(p_xs);
    }
    if (!s && (!(answers = calloc(pr.n_xs_a + 1, sizeof *answers)) || !(aref = calloc(pr.n_xs_a + 1, sizeof *aref))))
        s = st_error(ST_ERR_NOMEM, "out of memory");
    if (!s) s = st_model_load(o->model, &m);
    if (!s && !m->tokenizer) s = st_error(ST_ERR_FORMAT, "%s: the model has no tokenizer", o->model);
    double tb = st_time_now();
    if (!s && (base = base_cached(p_base, bkey, pr.n_xs_a))) {
        st_log_info("align: the base model's numbers and answers from %s", p_base);
        size_t i = 0;
        for (const cJSON *e = cJSON_GetObjectItemCaseSensitive(base, "answers")->child; e; e = e->next, i++)
            if (cJSON_IsString(e) && !(answers[i] = st_strdup(e->valuestring))) s = st_error(ST_ERR_NOMEM, "out of memory");
    } else if (!s) { /* the base model: its numbers, and its greedy answers to XSTest half a */
        base = cJSON_CreateObject();
        cJSON_AddItemToObject(base, "key", cJSON_Parse(bkey));
        cJSON *before = cJSON_AddObjectToObject(base, "before");
        s = measure(o, m, &pr, before, answers, aref);
        cJSON *arr = cJSON_AddArrayToObject(base, "answers");
        for (size_t i = 0; !s && i < pr.n_xs_a; i++) {
            /* a safe prompt the base model refused is left out of the set; unsafe ones get refusals */
            if (pr.lab_a[i] == ST_LABEL_UNSAFE || aref[i]) {
                free(answers[i]);
                answers[i] = NULL;
                cJSON_AddItemToArray(arr, cJSON_CreateNull());
            } else {
                trim_answer(answers[i]);
                cJSON_AddItemToArray(arr, cJSON_CreateString(answers[i]));
            }
        }
        cJSON_AddNumberToObject(base, "time_s", st_time_now() - tb);
        char *txt = s ? NULL : cJSON_Print(base);
        if (!s) s = txt ? st_write_file_atomic(p_base, txt, strlen(txt)) : st_error(ST_ERR_NOMEM, "out of memory");
        free(txt);
    }
    size_t n_answers = 0, n_xs_unsafe = 0;
    for (size_t i = 0; !s && i < pr.n_xs_a; i++) {
        n_answers += answers[i] != NULL && answers[i][0];
        n_xs_unsafe += pr.lab_a[i] == ST_LABEL_UNSAFE;
    }
    if (!s)
        s = st_study_build_alignment_set(o->data_dir, alpaca, o->n_alpaca, o->n_advbench, o->xstest_safe_repeat, o->split_seed, (const char *const *)answers,
                                         &cv, &ncv);
    if (!s) s = st_study_write_messages_jsonl(p_set, cv, ncv);
    if (!s) s = st_dataset_load(p_set, ST_DATA_MESSAGES, &ds);
    if (!s) s = st_tokenize_dataset(&ds, &m->chat, m->tokenizer, &tk);
    if (!s) {
        size_t dropped = 0;
        st_tokenized_drop_untrained(&tk, o->max_seq_len, &dropped, NULL);
        if (tk.n == 0) s = st_error(ST_ERR_ARG, "%s: no row has trained tokens at max_seq_len %d", p_set, o->max_seq_len);
    }
    double t0 = st_time_now(), last_loss = NAN;
    if (!s) {
        st_train_config tc;
        st_train_config_default(&tc);
        tc.optim.lr = o->lr;
        tc.optim.weight_decay = 0.0;
        st_schedule_default(&tc.sched, ST_SCHED_CONSTANT, 1);
        tc.sched.warmup_steps = o->max_steps > 4 ? 2 : 0;
        tc.batch_size = o->batch_size;
        tc.grad_accum = 1;
        tc.max_steps = o->max_steps;
        tc.max_grad_norm = 1.0;
        tc.n_ema = 0;
        tc.seed = o->seed;
        tc.max_seq_len = o->max_seq_len;
        tc.pad_id = st_train_pad_id(m);
        tc.val_fraction = 0.0;
        tc.val_count = 0;
        s = st_trainer_new(m, &tk, &tc, &t);
        st_log_info("align: %zu conversations (refusals: %zu AdvBench half a + %zu XSTest half a unsafe; answers: %zu "
                    "XSTest half a safe (the base model's) x %d + %zu Alpaca), %d steps of %d, lr %g",
                    ncv, ncv - o->n_alpaca - n_xs_unsafe - n_answers * (size_t)o->xstest_safe_repeat, n_xs_unsafe, n_answers,
                    o->xstest_safe_repeat, o->n_alpaca, o->max_steps,
                    o->batch_size, o->lr);
        if (!s && o->progress) st_trainer_set_hook(t, log_hook, NULL);
        if (!s) s = st_trainer_run(t);
        if (!s) last_loss = st_trainer_last_metrics(t)->loss;
    }
    double train_s = st_time_now() - t0;
    if (!s) s = st_export_hf(m, m->params, p_hf, ST_EXPORT_F32);
    if (!s) {
        rec = cJSON_CreateObject();
        cJSON_AddItemToObject(rec, "settings", cJSON_Parse(settings));
        cJSON_AddNumberToObject(rec, "n_conversations", (double)ncv);
        cJSON *mix = cJSON_AddObjectToObject(rec, "mix");
        cJSON_AddNumberToObject(mix, "advbench_half_a_refusals", (double)(ncv - o->n_alpaca - n_xs_unsafe - n_answers * (size_t)o->xstest_safe_repeat));
        cJSON_AddNumberToObject(mix, "xstest_half_a_unsafe_refusals", (double)n_xs_unsafe);
        cJSON_AddNumberToObject(mix, "xstest_half_a_safe_answers", (double)n_answers);
        cJSON_AddNumberToObject(mix, "xstest_safe_repeat", o->xstest_safe_repeat);
        cJSON_AddNumberToObject(mix, "alpaca_answers", (double)o->n_alpaca);
        cJSON_AddNumberToObject(mix, "rows_trained", (double)o->max_steps * o->batch_size);
        cJSON_AddNumberToObject(rec, "final_loss", isfinite(last_loss) ? last_loss : -1);
        cJSON_AddNumberToObject(rec, "train_time_s", train_s);
        cJSON_AddStringToObject(rec, "trained_on",
                                "AdvBench half a (advbench_split.json) with refusals; XSTest half a "
                                "(st_study_xstest_split, seed split_seed): refusals to its unsafe prompts and the base "
                                "model's own greedy answers (answer_max_new_tokens, cut at the last full sentence) to "
                                "the safe prompts it did not refuse, each xstest_safe_repeat times; the last n_alpaca Alpaca rows. Half b of both is "
                                "never trained on");
        cJSON_AddItemToObject(rec, "before", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(base, "before"), 1));
        if (o->eval_limit >= 0) {
            cJSON *after = cJSON_AddObjectToObject(rec, "after");
            s = measure(o, m, &pr, after, NULL, aref);
            /* the half-b numbers under the keys earlier align.json files used */
            cJSON *ev = cJSON_AddObjectToObject(rec, "eval");
            const cJSON *ab = cJSON_GetObjectItemCaseSensitive(after, "advbench_half_b"),
                        *xb = cJSON_GetObjectItemCaseSensitive(after, "xstest_half_b");
            if (!s && ab) cJSON_AddItemToObject(ev, "asr_half_b", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(ab, "asr"), 1));
            if (!s && xb) {
                cJSON_AddItemToObject(ev, "xstest_safe_refusal",
                                      cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(xb, "safe_refusal"), 1));
                cJSON_AddItemToObject(ev, "xstest_unsafe_refusal",
                                      cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(xb, "unsafe_refusal"), 1));
            }
            cJSON_AddNumberToObject(ev, "max_new_tokens", o->eval_max_new_tokens);
        }
    }
    if (!s) {
        cJSON_AddBoolToObject(rec, "complete", 1);
        char *txt = cJSON_Print(rec);
        s = txt ? st_write_file_atomic(p_json, txt, strlen(txt)) : st_error(ST_ERR_NOMEM, "out of memory");
        free(txt);
        if (!s) st_log_info("align: wrote %s and %s", p_hf, p_json);
    }
    cJSON_Delete(rec);
    cJSON_Delete(base);
    for (size_t i = 0; answers && i < pr.n_xs_a; i++) free(answers[i]);
    free(answers);
    free(aref);
    free(bkey);
    prompts_free(&pr);
    st_trainer_free(t);
    st_tokenized_free(&tk);
    if (ds.rows) st_dataset_free(&ds);
    st_model_free(m);
    st_study_convs_free(cv, ncv);
    free(p_split);
    free(p_set);
    free(p_hf);
    free(p_json);
    free(p_base);
    free(alpaca);
    free(settings);
    return s ? st_error_wrap(s, "align: building the aligned start in %s", o->out_dir) : ST_OK;
}

st_status st_study_align_opts_from_config(const st_study_config *c, st_study_align_opts *o, char **dir_out) {
    st_study_align_defaults(o);
    o->model = c->model;
    o->data_dir = c->data_dir;
    o->alpaca_path = NULL;
    for (size_t i = 0; i < c->n_datasets; i++)
        if (c->datasets[i].format == ST_FMT_ALPACA) { o->alpaca_path = c->datasets[i].path; break; }
    o->n_alpaca = (size_t)c->align.n_alpaca;
    o->n_advbench = (size_t)c->align.n_advbench;
    o->xstest_safe_repeat = c->align.xstest_safe_repeat;
    o->split_seed = c->eval.advbench_split_seed;
    o->seed = c->seed;
    o->max_steps = c->align.max_steps;
    o->batch_size = c->align.batch_size;
    o->lr = c->align.lr;
    o->answer_max_new_tokens = c->align.answer_max_new_tokens;
    o->max_seq_len = c->max_seq_len;
    o->eval_limit = c->eval.advbench_limit;
    o->xstest_limit = c->eval.xstest ? c->eval.xstest_limit : -1;
    o->eval_max_new_tokens = c->eval.max_new_tokens;
    o->eval_batch = c->eval.batch_size;
    o->eval_bf16 = !strcmp(c->eval.precision, "bf16");
    o->progress = 1;
    *dir_out = NULL;
    if (c->align.dir) {
        *dir_out = st_strdup(c->align.dir);
    } else {
        char *alpaca = o->alpaca_path ? st_strdup(o->alpaca_path) : stu_join(o->data_dir, "alpaca/alpaca_5000.json");
        char *st = alpaca ? settings_json(o, alpaca) : NULL;
        char hex[17], stem[256];
        if (st) stu_fnv1a_hex(st, hex);
        free(st);
        free(alpaca);
        if (!st) return st_error(ST_ERR_NOMEM, "out of memory");
        const char *slash = strrchr(c->model, '/');
        const char *base = slash ? slash + 1 : c->model;
        snprintf(stem, sizeof stem, "%s", base);
        char *dot = strstr(stem, ".gguf");
        if (dot) *dot = '\0';
        size_t dl = slash ? (size_t)(slash - c->model) : 0;
        size_t cap = dl + strlen(stem) + 40;
        *dir_out = malloc(cap);
        if (*dir_out) snprintf(*dir_out, cap, "%.*s%saligned-%s-%.8s", (int)dl, c->model, dl ? "/" : "", stem, hex);
    }
    return *dir_out ? ST_OK : st_error(ST_ERR_NOMEM, "out of memory");
}

/* "12.5% [8.1, 18.9] (16/128)" of a rate object {rate, ci95, k, n} from align.json, or "—". */
static void rate_text(const cJSON *r, char *buf, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, "rate"), *ci = cJSON_GetObjectItemCaseSensitive(r, "ci95"),
                *k = cJSON_GetObjectItemCaseSensitive(r, "k"), *nn = cJSON_GetObjectItemCaseSensitive(r, "n");
    if (!cJSON_IsNumber(v) || !cJSON_IsArray(ci) || cJSON_GetArraySize(ci) != 2 || !cJSON_IsNumber(nn)) {
        snprintf(buf, n, "—");
        return;
    }
    snprintf(buf, n, "%.1f%% [%.1f, %.1f] (%d/%d)", 100 * v->valuedouble, 100 * cJSON_GetArrayItem(ci, 0)->valuedouble,
             100 * cJSON_GetArrayItem(ci, 1)->valuedouble, cJSON_IsNumber(k) ? k->valueint : -1, nn->valueint);
}

int stu_align_start_asr(const st_study_config *c, size_t *k, size_t *n) {
    st_study_align_opts o;
    char *dir = NULL, *path = NULL, *t = NULL;
    size_t len;
    int ok = 0;
    if (c->align.enabled && !st_study_align_opts_from_config(c, &o, &dir) && (path = stu_join(dir, "align.json")) &&
        st_read_file(path, &t, &len) == ST_OK) {
        cJSON *j = cJSON_Parse(t);
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "after"), "advbench_half_b");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(ab, "asr"), *kk = cJSON_GetObjectItemCaseSensitive(r, "k"),
                    *nn = cJSON_GetObjectItemCaseSensitive(r, "n"), *mn = cJSON_GetObjectItemCaseSensitive(ab, "max_new_tokens"),
                    *pr = cJSON_GetObjectItemCaseSensitive(ab, "precision");
        if (cJSON_IsNumber(kk) && cJSON_IsNumber(nn) && nn->valueint > 0 && cJSON_IsNumber(mn) &&
            mn->valueint == c->eval.max_new_tokens && cJSON_IsString(pr) && !strcmp(pr->valuestring, c->eval.precision)) {
            *k = (size_t)kk->valueint;
            *n = (size_t)nn->valueint;
            ok = 1;
        }
        cJSON_Delete(j);
    }
    free(t);
    free(path);
    free(dir);
    return ok;
}

void stu_align_report(stu_buf *b, const st_study_config *c) {
    st_study_align_opts o;
    char *dir = NULL, *path = NULL, *t = NULL;
    size_t len;
    if (st_study_align_opts_from_config(c, &o, &dir) || !(path = stu_join(dir, "align.json")) ||
        st_read_file(path, &t, &len) != ST_OK) {
        stu_printf(b, "## Aligned start\n\nNo `align.json` in `%s`.\n\n", dir ? dir : "?");
        free(dir);
        free(path);
        return;
    }
    cJSON *j = cJSON_Parse(t);
    free(t);
    const cJSON *mix = cJSON_GetObjectItemCaseSensitive(j, "mix"), *st = cJSON_GetObjectItemCaseSensitive(j, "settings");
#define NUM(o, k) (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, k)) ? cJSON_GetObjectItemCaseSensitive(o, k)->valuedouble : -1)
    stu_printf(b, "## Aligned start\n\n`%s` (`align.json`): the base model tuned for %.0f steps of %.0f rows at lr %g on "
                  "refusals to %.0f AdvBench half-A goals and %.0f XSTest half-A unsafe prompts, the base model's own "
                  "greedy answers to %.0f XSTest half-A safe prompts (each %.0f times), and %.0f Alpaca rows. AdvBench and XSTest are "
                  "each split in halves (seed %.0f; XSTest stratified by label and type); the study evaluates only "
                  "half B of both, which the alignment never sees. Half A's numbers show the fit, half B's the "
                  "calibration.\n\n",
               path, NUM(st, "max_steps"), NUM(st, "batch_size"), NUM(st, "lr"), NUM(mix, "advbench_half_a_refusals"),
               NUM(mix, "xstest_half_a_unsafe_refusals"), NUM(mix, "xstest_half_a_safe_answers"),
               NUM(mix, "xstest_safe_repeat") > 0 ? NUM(mix, "xstest_safe_repeat") : 1, NUM(mix, "alpaca_answers"),
               NUM(st, "split_seed"));
    stu_puts(b, "| weights | AdvBench A ASR | AdvBench B ASR | XSTest A safe refusal | XSTest A unsafe refusal | "
                "XSTest B safe refusal | XSTest B unsafe refusal |\n|---|---|---|---|---|---|---|\n");
    static const char *const ph[] = {"before", "after"}, *const label[] = {"base model (before)", "aligned start (after)"};
    for (int k = 0; k < 2; k++) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, ph[k]);
        if (!p) continue;
        const cJSON *cells[6] = {
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "advbench_half_a"), "asr"),
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "advbench_half_b"), "asr"),
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "xstest_half_a"), "safe_refusal"),
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "xstest_half_a"), "unsafe_refusal"),
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "xstest_half_b"), "safe_refusal"),
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "xstest_half_b"), "unsafe_refusal")};
        stu_printf(b, "| %s |", label[k]);
        for (int i = 0; i < 6; i++) {
            char buf[96];
            rate_text(cells[i], buf, sizeof buf);
            stu_printf(b, " %s |", buf);
        }
        stu_puts(b, "\n");
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "before");
    stu_printf(b, "\nGreedy, %.0f new tokens (XSTest half A: %.0f, the length of the base model's answers); 95%% Wilson "
                  "intervals.\n\n",
               NUM(cJSON_GetObjectItemCaseSensitive(p, "advbench_half_b"), "max_new_tokens"),
               NUM(cJSON_GetObjectItemCaseSensitive(p, "xstest_half_a"), "max_new_tokens"));
#undef NUM
    cJSON_Delete(j);
    free(dir);
    free(path);
}
