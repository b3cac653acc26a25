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
    o->split_seed = 2508;
    o->seed = 42;
    o->max_steps = 40;
    o->batch_size = 8;
    o->max_seq_len = 256;
    o->lr = 1e-4;
    o->eval_max_new_tokens = 32;
    o->eval_batch = 32;
}

/* The settings that decide the aligned weights (not the evaluation sizes). */
static char *settings_json(const st_study_align_opts *o, const char *alpaca) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "model", o->model);
    cJSON_AddStringToObject(r, "alpaca", alpaca);
    cJSON_AddNumberToObject(r, "n_alpaca", (double)o->n_alpaca);
    cJSON_AddNumberToObject(r, "split_seed", (double)o->split_seed);
    cJSON_AddNumberToObject(r, "seed", (double)o->seed);
    cJSON_AddNumberToObject(r, "max_steps", o->max_steps);
    cJSON_AddNumberToObject(r, "batch_size", o->batch_size);
    cJSON_AddNumberToObject(r, "max_seq_len", o->max_seq_len);
    cJSON_AddNumberToObject(r, "lr", o->lr);
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

/* ASR on half b and XSTest refusal rates of model m, into o (align.json). */
static st_status measure(const st_study_align_opts *o, const st_model *m, cJSON *res) {
    st_study_config c;
    memset(&c, 0, sizeof c);
    c.data_dir = (char *)o->data_dir;
    c.eval.advbench_split = "b";
    c.eval.advbench_split_seed = o->split_seed;
    c.eval.advbench_limit = o->eval_limit;
    c.probe.n_prompts = 1;
    st_prompt_set adv = {0}, xs = {0};
    const char **ev = NULL, **pr = NULL, **xp = NULL;
    st_prompt_label *lab = NULL;
    size_t ne = 0, np = 0, nx = 0;
    st_refusal_matcher *rm = NULL;
    int *ref = NULL;
    st_status s = st_refusal_new(NULL, NULL, &rm);
    if (!s) s = stx_advbench_prompts(&c, &adv, &ev, &ne, &pr, &np);
    if (!s && o->xstest_limit >= 0) s = stx_xstest_prompts(o->data_dir, o->xstest_limit, &xs, &xp, &lab, &nx);
    if (!s && !(ref = malloc((ne > nx ? ne : nx) * sizeof *ref + 1))) s = st_error(ST_ERR_NOMEM, "out of memory");
    double t0 = st_time_now();
    size_t gt = 0;
    if (!s) s = stx_refusals(m, ev, ne, o->eval_max_new_tokens, o->eval_batch, rm, ref, NULL, &gt);
    if (!s) {
        size_t succ = 0;
        for (size_t i = 0; i < ne; i++) succ += !ref[i];
        add_rate(res, "asr_half_b", succ, ne);
        st_log_info("align: ASR on AdvBench half b %zu/%zu = %.3f (%.0f s)", succ, ne, ne ? (double)succ / (double)ne : 0.0,
                    st_time_now() - t0);
    }
    if (!s && nx) {
        s = stx_refusals(m, xp, nx, o->eval_max_new_tokens, o->eval_batch, rm, ref, NULL, NULL);
        size_t ns = 0, nu = 0, rs = 0, ru = 0;
        for (size_t i = 0; !s && i < nx; i++) {
            if (lab[i] == ST_LABEL_UNSAFE) { nu++; ru += (size_t)ref[i]; }
            else { ns++; rs += (size_t)ref[i]; }
        }
        if (!s) {
            add_rate(res, "xstest_safe_refusal", rs, ns);
            add_rate(res, "xstest_unsafe_refusal", ru, nu);
            st_log_info("align: XSTest refusals: safe %zu/%zu, unsafe %zu/%zu", rs, ns, ru, nu);
        }
    }
    cJSON_AddNumberToObject(res, "max_new_tokens", o->eval_max_new_tokens);
    free(ref);
    free(ev);
    free(pr);
    free(xp);
    free(lab);
    st_prompt_set_free(&adv);
    st_prompt_set_free(&xs);
    st_refusal_free(rm);
    return s;
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

st_status st_study_align_build(const st_study_align_opts *o, int *reused) {
    if (reused) *reused = 0;
    if (!o->model || !o->out_dir || !o->data_dir) return st_error(ST_ERR_ARG, "align: model, out_dir and data_dir are required");
    if (o->max_steps < 1 || o->batch_size < 1 || !(o->lr > 0))
        return st_error(ST_ERR_ARG, "align: max_steps, batch_size and lr must be > 0");
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
    cJSON *rec = NULL;
    char *p_split = stu_join(o->out_dir, "advbench_split.json"), *p_set = stu_join(o->out_dir, "align_set.jsonl"),
         *p_hf = stu_join(o->out_dir, "aligned"), *p_json = stu_join(o->out_dir, "align.json");
    st_status s = (p_split && p_set && p_hf && p_json) ? ST_OK : st_error(ST_ERR_NOMEM, "out of memory");
    if (!s) s = stu_mkdirs(o->out_dir);
    if (!s) {
        st_prompt_set adv;
        if (!(s = st_prompts_load("advbench", o->data_dir, &adv))) {
            s = st_study_advbench_split_write(p_split, adv.n, o->split_seed);
            st_prompt_set_free(&adv);
        }
    }
    if (!s) s = st_study_build_alignment_set(o->data_dir, alpaca, o->n_alpaca, o->split_seed, &cv, &ncv);
    if (!s) s = st_study_write_messages_jsonl(p_set, cv, ncv);
    if (!s) s = st_model_load(o->model, &m);
    if (!s && !m->tokenizer) s = st_error(ST_ERR_FORMAT, "%s: the model has no tokenizer", o->model);
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
        st_log_info("align: %zu conversations (%zu refusals of AdvBench half a + %zu Alpaca rows), %d steps of %d, lr %g",
                    ncv, ncv - o->n_alpaca, o->n_alpaca, o->max_steps, o->batch_size, o->lr);
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
        cJSON_AddNumberToObject(rec, "final_loss", isfinite(last_loss) ? last_loss : -1);
        cJSON_AddNumberToObject(rec, "train_time_s", train_s);
        cJSON_AddStringToObject(rec, "trained_on", "AdvBench half a (advbench_split.json) + the last n_alpaca Alpaca rows");
        if (o->eval_limit >= 0) {
            cJSON *ev = cJSON_AddObjectToObject(rec, "eval");
            s = measure(o, m, ev);
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
    st_trainer_free(t);
    st_tokenized_free(&tk);
    if (ds.rows) st_dataset_free(&ds);
    st_model_free(m);
    st_study_convs_free(cv, ncv);
    free(p_split);
    free(p_set);
    free(p_hf);
    free(p_json);
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
    o->split_seed = c->eval.advbench_split_seed;
    o->seed = c->seed;
    o->max_steps = c->align.max_steps;
    o->batch_size = c->align.batch_size;
    o->lr = c->align.lr;
    o->max_seq_len = c->max_seq_len;
    o->eval_limit = c->eval.advbench_limit;
    o->xstest_limit = c->eval.xstest ? c->eval.xstest_limit : -1;
    o->eval_max_new_tokens = c->eval.max_new_tokens;
    o->eval_batch = c->eval.batch_size;
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
