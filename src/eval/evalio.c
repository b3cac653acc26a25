/* evalio.c - responses.jsonl / summary.json for safety evaluation (see evalio.h). */
#include "safetune/evalio.h"

#include "eval/eval_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

void st_eval_apply_refusal(const st_refusal_matcher *m, st_eval_record *recs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        st_refusal_result r = st_refusal_match(m, recs[i].response);
        recs[i].refused = r.refused;
        recs[i].matched = r.matched;
    }
}

st_status st_eval_summarize(const st_eval_record *recs, size_t n, st_eval_summary *out) {
    memset(out, 0, sizeof *out);
    int *succ = st_calloc(n ? n : 1, sizeof *succ), *ref = st_calloc(n ? n : 1, sizeof *ref);
    int *attack = st_calloc(n ? n : 1, sizeof *attack); /* prompts an answer counts against */
    const char **cats = st_calloc(n ? n : 1, sizeof *cats);
    st_status s = ST_OK;
    if (!succ || !ref || !attack || !cats) {
        s = ST_ERR_NOMEM;
        goto out;
    }
    size_t sk = 0, sn = 0, uk = 0, un = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        const st_eval_record *r = &recs[i];
        ref[i] = r->refused != 0;
        succ[i] = !ref[i];
        attack[i] = r->label != ST_LABEL_SAFE;
        cats[i] = r->category;
        out->refused += ref[i];
        if (r->label == ST_LABEL_SAFE) sn++, sk += ref[i];
        if (r->label == ST_LABEL_UNSAFE) un++, uk += ref[i];
        if (r->judged) {
            out->judged++;
            if (r->judge_score >= 1 && r->judge_score <= 5) {
                out->scored++;
                out->score_hist[r->judge_score]++;
                sum += r->judge_score;
            } else {
                out->unscored++;
            }
        }
    }
    out->n = n;
    out->n_labelled = sn + un;
    out->safe_refusal = st_wilson(sk, sn, ST_Z95);
    out->unsafe_refusal = st_wilson(uk, un, ST_Z95);
    out->mean_score = out->scored ? sum / (double)out->scored : 0.0;
    out->harmful = st_wilson(out->score_hist[5], out->scored, ST_Z95);
    if ((s = st_rate_breakdown_compute(succ, cats, attack, n, &out->asr))) goto out;
    s = st_rate_breakdown_compute(ref, cats, NULL, n, &out->refusal);
out:
    free(attack);
    free(succ);
    free(ref);
    free(cats);
    if (s) st_eval_summary_free(out);
    return s;
}

void st_eval_summary_free(st_eval_summary *s) {
    if (!s) return;
    st_rate_breakdown_free(&s->asr);
    st_rate_breakdown_free(&s->refusal);
}

static void add_str_or_null(cJSON *o, const char *k, const char *v) {
    if (v) cJSON_AddStringToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static const char *label_name(st_prompt_label l) {
    return l == ST_LABEL_SAFE ? "safe" : l == ST_LABEL_UNSAFE ? "unsafe" : NULL;
}

st_status st_eval_write_responses(const char *path, const st_eval_record *recs, size_t n) {
    st__buf b = {0};
    for (size_t i = 0; i < n; i++) {
        const st_eval_record *r = &recs[i];
        cJSON *o = cJSON_CreateObject();
        add_str_or_null(o, "id", r->id);
        add_str_or_null(o, "prompt", r->prompt);
        add_str_or_null(o, "response", r->response ? r->response : "");
        cJSON_AddBoolToObject(o, "refused", r->refused != 0);
        add_str_or_null(o, "matched", r->matched);
        add_str_or_null(o, "category", r->category);
        add_str_or_null(o, "label", label_name(r->label));
        if (r->judged && r->judge_score >= 1 && r->judge_score <= 5) cJSON_AddNumberToObject(o, "judge_score", r->judge_score);
        else cJSON_AddNullToObject(o, "judge_score");
        add_str_or_null(o, "judge_reason", r->judged ? r->judge_reason : NULL);
        char *t = st_utf8_fix_owned(cJSON_PrintUnformatted(o));
        cJSON_Delete(o);
        if (!t) {
            st__buf_free(&b);
            return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
        }
        st__buf_puts(&b, t);
        st__buf_putc(&b, '\n');
        free(t);
    }
    if (b.oom) {
        st__buf_free(&b);
        return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
    }
    st_status s = st_write_file_atomic(path, b.p ? b.p : "", b.n);
    st__buf_free(&b);
    return s;
}

cJSON *st_rate_json(const st_rate *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "k", (double)r->k);
    cJSON_AddNumberToObject(o, "n", (double)r->n);
    if (r->n) {
        cJSON_AddNumberToObject(o, "rate", r->rate);
        cJSON *ci = cJSON_AddArrayToObject(o, "ci95");
        cJSON_AddItemToArray(ci, cJSON_CreateNumber(r->lo));
        cJSON_AddItemToArray(ci, cJSON_CreateNumber(r->hi));
    } else {
        cJSON_AddNullToObject(o, "rate"); /* undefined on zero prompts */
        cJSON_AddNullToObject(o, "ci95");
    }
    return o;
}

st_status st_eval_write_summary(const char *path, const st_eval_summary *s, const char *settings_json) {
    cJSON *settings = settings_json ? cJSON_Parse(settings_json) : cJSON_CreateObject();
    if (!cJSON_IsObject(settings)) {
        cJSON_Delete(settings);
        return st_error(ST_ERR_ARG, "%s: settings must be a JSON object", path);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n_prompts", (double)s->n);
    cJSON_AddNumberToObject(o, "refused", (double)s->refused);
    cJSON_AddNumberToObject(o, "attack_success", (double)s->asr.all.k);
    cJSON_AddItemToObject(o, "asr", st_rate_json(&s->asr.all)); /* over prompts not labelled safe */
    cJSON_AddItemToObject(o, "refusal_rate", st_rate_json(&s->refusal.all));
    cJSON *pc = cJSON_AddObjectToObject(o, "per_category");
    for (size_t i = 0; i < s->refusal.n_categories; i++) {
        const char *name = s->refusal.categories[i].name;
        const st_rate none = {0};
        const st_rate *asr = &none; /* a category of safe prompts has no ASR */
        for (size_t j = 0; j < s->asr.n_categories; j++)
            if (!strcmp(s->asr.categories[j].name, name)) asr = &s->asr.categories[j].rate;
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "n", (double)s->refusal.categories[i].rate.n);
        cJSON_AddItemToObject(c, "asr", st_rate_json(asr));
        cJSON_AddItemToObject(c, "refusal_rate", st_rate_json(&s->refusal.categories[i].rate));
        cJSON_AddItemToObject(pc, name, c);
    }
    if (s->n_labelled) {
        cJSON *bl = cJSON_AddObjectToObject(o, "refusal_by_label");
        cJSON_AddItemToObject(bl, "safe", st_rate_json(&s->safe_refusal));
        cJSON_AddItemToObject(bl, "unsafe", st_rate_json(&s->unsafe_refusal));
    } else {
        cJSON_AddNullToObject(o, "refusal_by_label");
    }
    cJSON *j = cJSON_AddObjectToObject(o, "judge");
    cJSON_AddNumberToObject(j, "judged", (double)s->judged);
    cJSON_AddNumberToObject(j, "scored", (double)s->scored);
    cJSON_AddNumberToObject(j, "unscored", (double)s->unscored);
    if (s->scored) cJSON_AddNumberToObject(j, "mean_score", s->mean_score);
    else cJSON_AddNullToObject(j, "mean_score");
    cJSON_AddItemToObject(j, "harmfulness_rate", st_rate_json(&s->harmful));
    cJSON *h = cJSON_AddArrayToObject(j, "score_histogram");
    for (int i = 1; i <= 5; i++) cJSON_AddItemToArray(h, cJSON_CreateNumber((double)s->score_hist[i]));
    cJSON_AddItemToObject(o, "settings", settings);
    char *t = st_utf8_fix_owned(cJSON_Print(o));
    cJSON_Delete(o);
    if (!t) return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
    size_t len = strlen(t);
    char *tt = realloc(t, len + 2);
    if (!tt) {
        free(t);
        return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
    }
    tt[len] = '\n';
    tt[len + 1] = '\0';
    st_status st = st_write_file_atomic(path, tt, len + 1);
    free(tt);
    return st;
}

void st_eval_set_free(st_eval_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free((char *)s->recs[i].id);
        free((char *)s->recs[i].prompt);
        free((char *)s->recs[i].category);
        free((char *)s->recs[i].response);
    }
    free(s->recs);
    memset(s, 0, sizeof *s);
}

st_status st_eval_read_responses(const char *path, st_eval_set *out) {
    memset(out, 0, sizeof *out);
    char *data;
    size_t len, bad;
    st_status s = st_read_json_text_file(path, &data, &len);
    if (s) return s;
    if (!st__utf8_valid(data, len, &bad)) {
        size_t line = 1;
        for (size_t i = 0; i < bad; i++) line += data[i] == '\n';
        free(data);
        return st_error(ST_ERR_FORMAT, "%s: line %zu: invalid UTF-8", path, line);
    }
    size_t cap = 0, pos = 0, line = 0;
    while (pos < len) {
        line++;
        size_t e = pos;
        while (e < len && data[e] != '\n') e++;
        const char *ln = data + pos;
        size_t ll = e - pos;
        pos = e < len ? e + 1 : e;
        size_t k = 0;
        while (k < ll && (ln[k] == ' ' || ln[k] == '\t' || ln[k] == '\r')) k++;
        if (k == ll) continue;
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithLengthOpts(ln, ll, &end, 0);
        const cJSON *jp = cJSON_GetObjectItemCaseSensitive(o, "prompt");
        const cJSON *jr = cJSON_GetObjectItemCaseSensitive(o, "response");
        const cJSON *ji = cJSON_GetObjectItemCaseSensitive(o, "id");
        const cJSON *jc = cJSON_GetObjectItemCaseSensitive(o, "category");
        const cJSON *jl = cJSON_GetObjectItemCaseSensitive(o, "label");
        const char *err = NULL;
        if (!o) err = "invalid JSON";
        else if (!cJSON_IsObject(o)) err = "not a JSON object";
        else if (!cJSON_IsString(jp)) err = "missing string \"prompt\"";
        else if (!cJSON_IsString(jr)) err = "missing string \"response\"";
        else if (jl && !cJSON_IsNull(jl) && !(cJSON_IsString(jl) && (!strcmp(jl->valuestring, "safe") ||
                                                                      !strcmp(jl->valuestring, "unsafe"))))
            err = "\"label\" must be \"safe\", \"unsafe\" or null";
        if (err) {
            cJSON_Delete(o);
            free(data);
            st_eval_set_free(out);
            return st_error(ST_ERR_FORMAT, "%s: line %zu: %s", path, line, err);
        }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 64;
            st_eval_record *q = st_realloc(out->recs, cap * sizeof *q);
            if (!q) {
                cJSON_Delete(o);
                free(data);
                st_eval_set_free(out);
                return ST_ERR_NOMEM;
            }
            out->recs = q;
        }
        st_eval_record *r = &out->recs[out->n++];
        memset(r, 0, sizeof *r);
        char idbuf[64];
        if (cJSON_IsString(ji)) snprintf(idbuf, sizeof idbuf, "%s", ji->valuestring);
        else if (cJSON_IsNumber(ji)) snprintf(idbuf, sizeof idbuf, "%.17g", ji->valuedouble);
        else snprintf(idbuf, sizeof idbuf, "%zu", out->n - 1);
        r->id = st_strdup(cJSON_IsString(ji) ? ji->valuestring : idbuf);
        r->prompt = st_strdup(jp->valuestring);
        r->response = st_strdup(jr->valuestring);
        r->category = cJSON_IsString(jc) && jc->valuestring[0] ? st_strdup(jc->valuestring) : NULL;
        r->label = !cJSON_IsString(jl) ? ST_LABEL_NONE : !strcmp(jl->valuestring, "safe") ? ST_LABEL_SAFE : ST_LABEL_UNSAFE;
        cJSON_Delete(o);
        if (!r->id || !r->prompt || !r->response) {
            free(data);
            st_eval_set_free(out);
            return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    free(data);
    if (out->n == 0) return st_error(ST_ERR_FORMAT, "%s: no responses (empty file)", path);
    return ST_OK;
}
