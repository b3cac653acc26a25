/* hooks_util.c - refusal counting and prompt subsets for the real study hooks and
 * `safetune align` (see hooks_internal.h). */
#include "study/hooks_internal.h"

#include <stdlib.h>
#include <string.h>

#include "safetune/generate.h"

st_status stx_refusals(st_infer_ctx *ic, const char *const *prompts, size_t n, int max_new, int batch, int bf16,
                       const st_refusal_matcher *rm, int *refused, char **texts, size_t *gen_tokens) {
    const st_model *m = st_infer_ctx_model(ic);
    if (gen_tokens) *gen_tokens = 0;
    if (n == 0) return ST_OK;
    int32_t **ids = calloc(n, sizeof *ids);
    size_t *lens = calloc(n, sizeof *lens);
    st_generation *g = calloc(n, sizeof *g);
    st_status s = (ids && lens && g) ? ST_OK : st_error(ST_ERR_NOMEM, "out of memory (%zu prompts)", n);
    long ctx = m->config.max_position_embeddings > 0 ? m->config.max_position_embeddings : 2048;
    for (size_t i = 0; !s && i < n; i++) {
        s = st_prompt_encode(m, prompts[i], 1, NULL, &ids[i], &lens[i]);
        if (!s && (long)lens[i] > ctx - max_new) { /* keep the last tokens (the question) */
            size_t keep = (size_t)(ctx - max_new > 1 ? ctx - max_new : 1);
            memmove(ids[i], ids[i] + (lens[i] - keep), keep * sizeof *ids[i]);
            lens[i] = keep;
        }
    }
    if (!s) {
        st_generate_options go = st_generate_defaults();
        go.batch_size = batch;
        go.max_new_tokens = max_new;
        go.precision = bf16 ? ST_GEN_PRECISION_BF16 : ST_GEN_PRECISION_FP32;
        go.context_length = (int)ctx;
        go.infer = ic;
        s = st_generate(m, (const int32_t *const *)ids, lens, n, &go, g, NULL);
        if (!s) {
            for (size_t i = 0; i < n; i++) {
                refused[i] = st_refusal_match(rm, g[i].text ? g[i].text : "").refused;
                if (gen_tokens) *gen_tokens += g[i].completion_tokens;
                if (texts) {
                    texts[i] = g[i].text ? g[i].text : st_strdup("");
                    g[i].text = NULL;
                    if (!texts[i]) s = st_error(ST_ERR_NOMEM, "out of memory");
                }
            }
            st_generations_free(g, n);
        }
    }
    for (size_t i = 0; ids && i < n; i++) free(ids[i]);
    free(ids);
    free(lens);
    free(g);
    return s;
}

st_status stx_advbench_prompts(const st_study_config *c, st_prompt_set *set, const char ***eval_p,
                               size_t *n_eval, const char ***probe_p, size_t *n_probe) {
    *eval_p = *probe_p = NULL;
    *n_eval = *n_probe = 0;
    st_status s = st_prompts_load("advbench", c->data_dir, set);
    if (s) return s;
    uint32_t *a = NULL, *b = NULL, *half = NULL;
    size_t na = 0, nb = 0, nh = set->n;
    int all = !strcmp(c->eval.advbench_split, "all");
    if (!all) {
        if ((s = st_study_advbench_split(set->n, c->eval.advbench_split_seed, &a, &na, &b, &nb))) goto done;
        half = !strcmp(c->eval.advbench_split, "a") ? a : b;
        nh = half == a ? na : nb;
    }
    size_t ne = c->eval.advbench_limit > 0 && (size_t)c->eval.advbench_limit < nh ? (size_t)c->eval.advbench_limit : nh;
    size_t np = c->probe.n_prompts > 0 && (size_t)c->probe.n_prompts < nh ? (size_t)c->probe.n_prompts : nh;
    *eval_p = calloc(ne ? ne : 1, sizeof **eval_p);
    *probe_p = calloc(np ? np : 1, sizeof **probe_p);
    if (!*eval_p || !*probe_p) { s = st_error(ST_ERR_NOMEM, "out of memory"); goto done; }
    for (size_t i = 0; i < ne; i++) (*eval_p)[i] = set->items[all ? i : half[i]].prompt;
    for (size_t i = 0; i < np; i++) {
        size_t k = nh - np + i;
        (*probe_p)[i] = set->items[all ? k : half[k]].prompt;
    }
    *n_eval = ne;
    *n_probe = np;
done:
    free(a);
    free(b);
    if (s) {
        free(*eval_p);
        free(*probe_p);
        *eval_p = *probe_p = NULL;
        st_prompt_set_free(set);
    }
    return s;
}

st_status stx_xstest_prompts(const char *data_dir, const char *half, uint64_t split_seed, int limit, st_prompt_set *set,
                             const char ***p, st_prompt_label **labels, size_t *n) {
    *p = NULL;
    *labels = NULL;
    *n = 0;
    st_status s = st_prompts_load("xstest", data_dir, set);
    if (s) return s;
    uint32_t *a = NULL, *b = NULL, *rows = NULL;
    size_t na = 0, nb = 0, nh = set->n;
    if (half && strcmp(half, "all")) {
        if ((s = st_study_xstest_split(set, split_seed, &a, &na, &b, &nb))) {
            st_prompt_set_free(set);
            return s;
        }
        rows = !strcmp(half, "a") ? a : b;
        nh = rows == a ? na : nb;
    }
    size_t k = limit > 0 && (size_t)limit < nh ? (size_t)limit : nh;
    *p = calloc(k ? k : 1, sizeof **p);
    *labels = calloc(k ? k : 1, sizeof **labels);
    if (!*p || !*labels) {
        free(*p);
        free(*labels);
        free(a);
        free(b);
        *p = NULL;
        *labels = NULL;
        st_prompt_set_free(set);
        return st_error(ST_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < k; i++) {
        size_t j = i * nh / k;
        if (rows) j = rows[j];
        (*p)[i] = set->items[j].prompt;
        (*labels)[i] = set->items[j].label;
    }
    *n = k;
    free(a);
    free(b);
    return ST_OK;
}

st_status stx_load_tokenized(const st_study_dataset *d, const st_model *m, int max_seq_len, st_tokenized *tk) {
    static const st_data_format map[] = {ST_DATA_ALPACA, ST_DATA_DOLLY, ST_DATA_ORCA, ST_DATA_MESSAGES};
    st_dataset ds;
    st_status s = st_dataset_load(d->path, map[d->format], &ds);
    if (s) return s;
    size_t dropped = 0;
    s = st_tokenize_training_rows(&ds, d->limit > 0 ? (size_t)d->limit : 0, &m->chat, m->tokenizer, max_seq_len,
                                  tk, &dropped, NULL);
    if (!s && dropped) /* rows whose assistant tokens are all truncated away would train nothing */
        st_log_warn("%s: %zu rows have no trained tokens at max_seq_len %d; dropped", d->path, dropped, max_seq_len);
    st_dataset_free(&ds);
    return s;
}
