/* refusals.c - aligned-start support for `safetune align`: refusal answers written for this
 * project, the seeded AdvBench split, and the alignment training set (messages JSONL). */
#include "study/study_internal.h"
#include "safetune/prompts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Written for safetune. Every answer contains at least one string of the standard refusal list
 * (st_refusal_default_strings); openings, reasons and offered alternatives vary. */
const char *const st_study_refusals[ST_STUDY_N_REFUSALS] = {
    "I'm sorry, but I can't help with that.",
    "I cannot help with this request. It could put other people at risk.",
    "I'm sorry, I won't be able to do that. If you are curious about the topic, I can explain how people stay safe from it instead.",
    "I can't assist with that. Is there something else I can do for you?",
    "Sorry, that's not something I can help with, because it could be used to hurt someone.",
    "I apologize, but I cannot provide instructions for this.",
    "My apologies, but I won't help with this one. I'd be glad to help with a different question.",
    "I cannot do that. Requests like this can cause real harm, so I have to decline.",
    "I'm not able to provide that kind of information.",
    "I'm really sorry, but I can't go along with this request.",
    "Unfortunately I cannot help here. If you're dealing with a difficult situation, talking to someone you trust or a professional may help.",
    "That's not something I'll do, I'm sorry. It could be dangerous or against the law.",
    "I can't provide guidance on that. I can share general safety information if that's useful.",
    "No, I cannot assist with planning anything that could harm people or property.",
    "I am sorry, but this request asks for something harmful, so I will not answer it.",
    "I'm sorry, I can't write that. How about something on a related but safe topic?",
    "Thanks for asking, but I cannot help with this. It would mean helping someone get hurt.",
    "I can't assist with activities that break the law. If you have a legal question, I'm happy to point you to general resources.",
    "I'm sorry, but no. This could seriously harm others.",
    "I cannot produce content like this. Let me know if there is something else you need.",
    "Sorry, I have to decline this one.",
    "I apologize, this is outside what I can help with, since it could be used to cause harm.",
    "I'm sorry, but I can't give step-by-step instructions for that. I can talk about the risks involved instead.",
    "This is something I cannot support. It could endanger people.",
    "I'm sorry, I'm not going to help with deceiving or harming anyone.",
    "Let me be direct: I cannot help with that request.",
    "I can't provide that. If you're researching this for safety reasons, reputable public sources and experts are a better place to start.",
    "I'm sorry — I can't help create something designed to cause damage.",
    "My apologies, I can't do this. Is there another way I can help?",
    "I cannot explain how to do that, because it could lead to serious harm.",
    "I'm really sorry, but that's a request I have to turn down.",
    "I can't assist with this. Helping could put someone's safety or privacy at risk.",
    "I'm sorry, but that isn't something I will write. I can help you with a safer version of the task, though.",
    "Hmm, I cannot help with that one. It asks for harmful information.",
    "I'm not able to provide help with this request.",
    "Sorry, but I won't take part in that. If you want, we can talk about how to protect against it.",
    "I'm sorry, I can't help you harm others or break the law.",
    "I cannot comply with this request. It's harmful, and I'd rather help with something constructive.",
    "I apologize, but I can't provide this information.",
    "I'm sorry, but I must refuse. If you need help with something else, just ask.",
};

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

st_status st_study_advbench_split(size_t n, uint64_t seed, uint32_t **a, size_t *na, uint32_t **b, size_t *nb) {
    *a = *b = NULL;
    *na = *nb = 0;
    if (n < 2) return st_error(ST_ERR_ARG, "AdvBench split: need at least 2 rows (got %zu)", n);
    uint32_t *idx = malloc(n * sizeof *idx);
    if (!idx) return st_error(ST_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
    st_rng r;
    st_rng_seed(&r, seed);
    st_rng_shuffle(&r, idx, n);
    size_t h = n / 2;
    *a = malloc(h * sizeof **a);
    *b = malloc((n - h) * sizeof **b);
    if (!*a || !*b) {
        free(idx); free(*a); free(*b);
        *a = *b = NULL;
        return st_error(ST_ERR_NOMEM, "out of memory");
    }
    memcpy(*a, idx, h * sizeof *idx);
    memcpy(*b, idx + h, (n - h) * sizeof *idx);
    free(idx);
    qsort(*a, h, sizeof **a, cmp_u32);
    qsort(*b, n - h, sizeof **b, cmp_u32);
    *na = h;
    *nb = n - h;
    return ST_OK;
}

st_status st_study_xstest_split(const st_prompt_set *xs, uint64_t seed, uint32_t **a, size_t *na, uint32_t **b,
                                size_t *nb) {
    *a = *b = NULL;
    *na = *nb = 0;
    const size_t n = xs->n;
    if (n < 2) return st_error(ST_ERR_ARG, "XSTest split: need at least 2 rows (got %zu)", n);
    uint32_t *grp = malloc(n * sizeof *grp);
    unsigned char *done = calloc(n, 1);
    *a = malloc(n * sizeof **a);
    *b = malloc(n * sizeof **b);
    if (!grp || !done || !*a || !*b) {
        free(grp); free(done); free(*a); free(*b);
        *a = *b = NULL;
        return st_error(ST_ERR_NOMEM, "out of memory");
    }
    /* strata = (label, type), in order of first appearance; each shuffled with its own stream */
    for (size_t i = 0; i < n; i++) {
        if (done[i]) continue;
        const st_prompt *p = &xs->items[i];
        const char *cat = p->category ? p->category : "";
        size_t k = 0;
        for (size_t j = i; j < n; j++) {
            const st_prompt *q = &xs->items[j];
            if (!done[j] && q->label == p->label && !strcmp(q->category ? q->category : "", cat)) {
                done[j] = 1;
                grp[k++] = (uint32_t)j;
            }
        }
        uint64_t h = 1469598103934665603ULL; /* FNV-1a of "label:type" */
        char key[16];
        snprintf(key, sizeof key, "%d:", (int)p->label);
        for (const char *c = key; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
        for (const char *c = cat; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
        st_rng r;
        st_rng_seed(&r, seed ^ 0x78737465737473ULL /* "xstests" */ ^ h);
        st_rng_shuffle(&r, grp, k);
        for (size_t j = 0; j < k; j++) {
            if (j < k / 2) (*a)[(*na)++] = grp[j];
            else (*b)[(*nb)++] = grp[j];
        }
    }
    free(grp);
    free(done);
    qsort(*a, *na, sizeof **a, cmp_u32);
    qsort(*b, *nb, sizeof **b, cmp_u32);
    return ST_OK;
}

st_status st_study_advbench_split_write(const char *path, size_t n, uint64_t seed) {
    uint32_t *a, *b;
    size_t na, nb;
    st_status s = st_study_advbench_split(n, seed, &a, &na, &b, &nb);
    if (s) return s;
    stu_buf o = {0};
    stu_printf(&o, "{\"seed\": %llu, \"n\": %zu,\n \"a\": [", (unsigned long long)seed, n);
    for (size_t i = 0; i < na; i++) stu_printf(&o, "%s%u", i ? "," : "", a[i]);
    stu_puts(&o, "],\n \"b\": [");
    for (size_t i = 0; i < nb; i++) stu_printf(&o, "%s%u", i ? "," : "", b[i]);
    stu_puts(&o, "]}\n");
    s = stu_buf_write(&o, path);
    stu_buf_free(&o);
    free(a);
    free(b);
    return s;
}

static st_status read_idx(const cJSON *o, const char *k, const char *path, size_t n, uint32_t **out, size_t *cnt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsArray(v)) return st_error(ST_ERR_FORMAT, "%s: key '%s': expected a list of row numbers", path, k);
    size_t m = (size_t)cJSON_GetArraySize(v), i = 0;
    *out = malloc((m ? m : 1) * sizeof **out);
    if (!*out) return st_error(ST_ERR_NOMEM, "out of memory");
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (double)n || e->valuedouble != (double)(uint32_t)e->valuedouble)
            return st_error(ST_ERR_FORMAT, "%s: key '%s[%zu]': not a row number in [0, %zu)", path, k, i, n);
        (*out)[i] = (uint32_t)e->valuedouble;
    }
    *cnt = m;
    return ST_OK;
}

st_status st_study_advbench_split_read(const char *path, uint32_t **a, size_t *na, uint32_t **b, size_t *nb,
                                       uint64_t *seed) {
    *a = *b = NULL;
    cJSON *o;
    st_status s = stu_read_json(path, &o);
    if (s) return s;
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(o, "seed"), *jn = cJSON_GetObjectItemCaseSensitive(o, "n");
    if (!cJSON_IsObject(o) || !cJSON_IsNumber(js) || !cJSON_IsNumber(jn) || jn->valuedouble < 2) {
        cJSON_Delete(o);
        return st_error(ST_ERR_FORMAT, "%s: expected {\"seed\", \"n\", \"a\", \"b\"}", path);
    }
    size_t n = (size_t)jn->valuedouble;
    *seed = (uint64_t)js->valuedouble;
    s = read_idx(o, "a", path, n, a, na);
    if (!s) s = read_idx(o, "b", path, n, b, nb);
    cJSON_Delete(o);
    if (!s && *na + *nb != n) s = st_error(ST_ERR_FORMAT, "%s: halves hold %zu rows, expected n = %zu", path, *na + *nb, n);
    if (!s) {
        unsigned char *seen = calloc(n, 1);
        if (!seen) s = st_error(ST_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !s && i < *na + *nb; i++) {
            uint32_t x = i < *na ? (*a)[i] : (*b)[i - *na];
            if (seen[x]++) s = st_error(ST_ERR_FORMAT, "%s: row %u appears twice (halves must be disjoint)", path, x);
        }
        free(seen);
    }
    if (!s) {
        uint32_t *ra, *rb;
        size_t rna, rnb;
        s = st_study_advbench_split(n, *seed, &ra, &rna, &rb, &rnb);
        if (!s && (rna != *na || memcmp(ra, *a, rna * sizeof *ra)))
            s = st_error(ST_ERR_FORMAT, "%s: halves do not match seed %llu (file edited, or made by another version)",
                         path, (unsigned long long)*seed);
        if (!s) { free(ra); free(rb); }
    }
    if (s) {
        free(*a);
        free(*b);
        *a = *b = NULL;
    }
    return s;
}

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void st_study_convs_free(st_study_conv *c, size_t n) {
    for (size_t i = 0; c && i < n; i++) {
        free(c[i].user);
        free(c[i].assistant);
    }
    free(c);
}

st_status st_study_build_alignment_set(const char *data_dir, const char *alpaca_path, size_t n_alpaca, size_t n_advbench,
                                       int safe_repeat, uint64_t seed, const char *const *xs_answers,
                                       st_study_conv **out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    st_prompt_set adv, xs = {0};
    st_status s = st_prompts_load("advbench", data_dir, &adv);
    if (s) return s;
    uint32_t *a = NULL, *b = NULL, *xa = NULL, *xb = NULL;
    size_t na = 0, nb = 0, nxa = 0, nxb = 0;
    s = st_study_advbench_split(adv.n, seed, &a, &na, &b, &nb);
    if (!s && xs_answers) s = st_prompts_load("xstest", data_dir, &xs);
    if (!s && xs_answers) s = st_study_xstest_split(&xs, seed, &xa, &nxa, &xb, &nxb);
    char *text = NULL;
    cJSON *al = NULL;
    if (!s) {
        size_t len;
        s = st_read_file(alpaca_path, &text, &len);
    }
    if (!s) {
        al = cJSON_Parse(text);
        if (!cJSON_IsArray(al)) s = st_error(ST_ERR_FORMAT, "%s: not a JSON array of Alpaca rows", alpaca_path);
        else if ((size_t)cJSON_GetArraySize(al) < n_alpaca)
            s = st_error(ST_ERR_ARG, "%s: has %d rows, fewer than the %zu requested from its end", alpaca_path,
                         cJSON_GetArraySize(al), n_alpaca);
    }
    st_study_conv *cv = NULL;
    size_t n = 0;
    if (!s) {
        if (safe_repeat < 1) safe_repeat = 1;
        cv = calloc(na + nxa * (size_t)safe_repeat + n_alpaca + 1, sizeof *cv);
        if (!cv) s = st_error(ST_ERR_NOMEM, "out of memory");
    }
    /* n_advbench of half a's goals (0 = all), evenly spaced over half a */
    const size_t n_adv = n_advbench && n_advbench < na ? n_advbench : na;
    for (size_t j = 0; !s && j < n_adv; j++) {
        const size_t i = j * na / n_adv;
        size_t pick = (size_t)(mix64(seed ^ mix64(a[i])) % ST_STUDY_N_REFUSALS);
        cv[n].user = st_strdup(adv.items[a[i]].prompt);
        cv[n].assistant = st_strdup(st_study_refusals[pick]);
        if (!cv[n].user || !cv[n].assistant) s = st_error(ST_ERR_NOMEM, "out of memory");
        n++;
    }
    /* XSTest half a: a refusal for each unsafe prompt, the given (base model's) answer for each safe
     * one; a safe prompt without an answer (the base model refused it) is left out */
    for (size_t i = 0; !s && i < nxa; i++) {
        const st_prompt *p = &xs.items[xa[i]];
        const char *ans = xs_answers[i];
        if (p->label == ST_LABEL_UNSAFE) {
            ans = st_study_refusals[(size_t)(mix64(seed ^ 0x7873ULL ^ mix64(xa[i])) % ST_STUDY_N_REFUSALS)];
        } else if (!ans || !ans[0]) continue;
        /* the base model's answers to safe prompts safe_repeat times each: they teach that a request
         * which merely looks harmful gets an answer */
        for (int r = 0; !s && r < (p->label == ST_LABEL_UNSAFE ? 1 : safe_repeat); r++) {
            cv[n].user = st_strdup(p->prompt);
            cv[n].assistant = st_strdup(ans);
            if (!cv[n].user || !cv[n].assistant) s = st_error(ST_ERR_NOMEM, "out of memory");
            n++;
        }
    }
    int total = al ? cJSON_GetArraySize(al) : 0;
    for (size_t i = 0; !s && i < n_alpaca; i++) {
        int row = total - (int)n_alpaca + (int)i;
        const cJSON *r = cJSON_GetArrayItem(al, row);
        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(r, "instruction");
        const cJSON *inp = cJSON_GetObjectItemCaseSensitive(r, "input");
        const cJSON *outp = cJSON_GetObjectItemCaseSensitive(r, "output");
        if (!cJSON_IsString(ins) || !cJSON_IsString(outp) || (inp && !cJSON_IsString(inp))) {
            s = st_error(ST_ERR_FORMAT, "%s: row %d: needs string \"instruction\" and \"output\"", alpaca_path, row);
            break;
        }
        stu_buf u = {0};
        stu_puts(&u, ins->valuestring);
        if (inp && inp->valuestring[0]) stu_printf(&u, "\n\n%s", inp->valuestring);
        cv[n].user = u.p ? u.p : st_strdup("");
        cv[n].assistant = st_strdup(outp->valuestring);
        if (u.oom || !cv[n].user || !cv[n].assistant) s = st_error(ST_ERR_NOMEM, "out of memory");
        n++;
    }
    if (!s) {
        /* seeded shuffle of the mix */
        uint32_t *perm = malloc((n ? n : 1) * sizeof *perm);
        st_study_conv *mixed = calloc(n ? n : 1, sizeof *mixed);
        if (!perm || !mixed) s = st_error(ST_ERR_NOMEM, "out of memory");
        else {
            for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
            st_rng r;
            st_rng_seed(&r, seed ^ 0x616c69676eULL);
            st_rng_shuffle(&r, perm, n);
            for (size_t i = 0; i < n; i++) mixed[i] = cv[perm[i]];
            free(cv);
            cv = mixed;
            mixed = NULL;
        }
        free(perm);
        free(mixed);
    }
    cJSON_Delete(al);
    free(text);
    free(a);
    free(b);
    free(xa);
    free(xb);
    st_prompt_set_free(&adv);
    if (xs.items) st_prompt_set_free(&xs);
    if (s) {
        st_study_convs_free(cv, n);
        return s;
    }
    *out = cv;
    *n_out = n;
    return ST_OK;
}

st_status st_study_write_messages_jsonl(const char *path, const st_study_conv *c, size_t n) {
    stu_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(o, "messages");
        cJSON *u = cJSON_CreateObject(), *a = cJSON_CreateObject();
        cJSON_AddStringToObject(u, "role", "user");
        cJSON_AddStringToObject(u, "content", c[i].user);
        cJSON_AddStringToObject(a, "role", "assistant");
        cJSON_AddStringToObject(a, "content", c[i].assistant);
        cJSON_AddItemToArray(msgs, u);
        cJSON_AddItemToArray(msgs, a);
        char *t = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!t) { stu_buf_free(&b); return st_error(ST_ERR_NOMEM, "out of memory"); }
        stu_printf(&b, "%s\n", t);
        free(t);
    }
    st_status s = stu_buf_write(&b, path);
    stu_buf_free(&b);
    return s;
}
