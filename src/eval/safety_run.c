/* safety_run.c - safety_eval.h: prompt set -> chat template -> batched generation -> refusal
 * matching. */
#include "safetune/safety_eval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

st_safety_opts st_safety_defaults(void) {
    st_safety_opts o;
    memset(&o, 0, sizeof o);
    o.benchmark = "advbench";
    o.gen = st_generate_defaults();
    o.gen.max_new_tokens = 128;
    o.gen.batch_size = 32;
    return o;
}

void st_safety_run_free(st_safety_run *r) {
    if (!r) return;
    if (r->gens) st_generations_free(r->gens, r->n);
    free(r->gens);
    free(r->recs);
    free(r->truncated);
    st_prompt_set_free(&r->prompts);
    memset(r, 0, sizeof *r);
}

/* Maps the answers of the prompts generated now (a subset when resuming) to their prompt index. */
typedef struct {
    const st_safety_opts *o;
    const st_prompt_set *ps;
    const size_t *map;      /* [subset] -> prompt index */
    size_t n_have, n_total;
} subset_ctx;

static st_status sub_finish(void *ud, size_t j, const st_generation *g) {
    const subset_ctx *c = ud;
    const size_t i = c->map[j];
    return c->o->on_answer(c->o->ud, i, &c->ps->items[i], g);
}

static void sub_progress(void *ud, size_t done, size_t total, size_t tokens) {
    const subset_ctx *c = ud;
    (void)total;
    c->o->gen.progress(c->o->gen.ud, c->n_have + done, c->n_total, tokens);
}

/* out->gens[i] for every prompt: from o->resume where it has them (text rebuilt), the rest
 * generated with their own RNG streams. */
static st_status generate_missing(const st_model *model, const st_safety_opts *o, st_generate_options *go,
                                  const int32_t **starts, const size_t *lens, st_safety_run *out) {
    const size_t n = out->n;
    unsigned char *have = calloc(n ? n : 1, 1);
    size_t *map = calloc(n ? n : 1, sizeof *map);
    uint64_t *stream = calloc(n ? n : 1, sizeof *stream);
    const int32_t **sp = calloc(n ? n : 1, sizeof *sp);
    size_t *sl = calloc(n ? n : 1, sizeof *sl);
    st_generation *sg = calloc(n ? n : 1, sizeof *sg);
    st_status s = ST_OK;
    size_t m = 0;
    if (!have || !map || !stream || !sp || !sl || !sg) {
        s = st_error(ST_ERR_NOMEM, "safety eval: out of memory (%zu prompts)", n);
        goto out;
    }
    if (o->resume && (s = o->resume(o->ud, &out->prompts, out->gens, have))) goto out;
    for (size_t i = 0; i < n; i++) {
        if (have[i]) {
            out->gens[i].text = NULL;
            out->gens[i].truncated = 0;
            if ((s = st_generate_decode(model, go, &out->gens[i]))) goto out;
            out->n_resumed++;
            continue;
        }
        map[m] = i;
        stream[m] = (uint64_t)i;
        sp[m] = starts[i];
        sl[m] = lens[i];
        m++;
    }
    subset_ctx c = {o, &out->prompts, map, out->n_resumed, n};
    go->rng_stream = stream;
    if (o->on_answer) go->on_finish = sub_finish;
    if (o->gen.progress) go->progress = sub_progress;
    go->on_token = NULL; /* they would get c as ud: not used by safety evaluation */
    go->stop_check = NULL;
    go->ud = &c;
    size_t extra_trunc = 0;
    if (m && (s = st_generate(model, sp, sl, m, go, sg, &extra_trunc))) goto out;
    for (size_t j = 0; j < m; j++) {
        out->gens[map[j]] = sg[j];
        memset(&sg[j], 0, sizeof sg[j]);
    }
out:
    free(have);
    free(map);
    free(stream);
    free(sp);
    free(sl);
    free(sg); /* st_generate freed its arrays on error; moved on success */
    return s;
}

st_status st_safety_generate(const st_model *model, const st_safety_opts *o, const st_refusal_matcher *m,
                             st_safety_run *out) {
    memset(out, 0, sizeof *out);
    if (!model || !model->tokenizer) return st_error(ST_ERR_ARG, "safety eval: the model has no tokenizer");
    if (o->gen.max_new_tokens <= 0)
        return st_error(ST_ERR_ARG, "safety eval: max_new_tokens must be > 0 (got %d)", o->gen.max_new_tokens);
    st_status s = st_prompts_load_opts(o->benchmark, o->data_dir, o->prompt_opts, &out->prompts);
    if (s) return s;
    st_prompt_set *ps = &out->prompts;
    if (o->limit > 0 && o->limit < ps->n) {
        int all_labelled = 1;
        for (size_t i = 0; i < ps->n; i++) all_labelled &= ps->items[i].label != ST_LABEL_NONE;
        /* keep item i * n / limit (labelled sets: they are grouped by type) or the first `limit` */
        size_t keep = 0;
        for (size_t i = 0; i < ps->n; i++) {
            const size_t want = all_labelled ? keep * ps->n / o->limit : keep;
            if (keep < o->limit && i == want) {
                ps->items[keep++] = ps->items[i];
            } else {
                free(ps->items[i].id);
                free(ps->items[i].prompt);
                free(ps->items[i].category);
                free(ps->items[i].target);
            }
        }
        ps->n = o->limit;
    }
    size_t n = ps->n;
    out->n = n;
    int32_t **ids = calloc(n, sizeof *ids);
    const int32_t **starts = calloc(n, sizeof *starts);
    size_t *lens = calloc(n, sizeof *lens);
    out->gens = calloc(n, sizeof *out->gens);
    out->recs = calloc(n, sizeof *out->recs);
    out->truncated = calloc(n, sizeof *out->truncated);
    if (!ids || !starts || !lens || !out->gens || !out->recs || !out->truncated) {
        s = st_error(ST_ERR_NOMEM, "safety eval: out of memory (%zu prompts)", n);
        goto done;
    }
    const long ctx = st_generate_context_length(model, o->gen.context_length);
    long max_prompt = ctx - o->gen.max_new_tokens;
    out->context_length = ctx;
    if (max_prompt < 1) { /* a prompt cut to nothing asks nothing: its answer is no attack */
        s = st_error(ST_ERR_ARG, "context length %ld leaves no room for a prompt with max_new_tokens %d: "
                     "raise the context length or lower max_new_tokens", ctx, o->gen.max_new_tokens);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if ((s = st_prompt_encode(model, ps->items[i].prompt, 1, o->system_prompt, &ids[i], &lens[i]))) {
            s = st_error_wrap(s, "%s: prompt %s", ps->path, ps->items[i].id);
            goto done;
        }
        if (lens[i] == 0) {
            s = st_error(ST_ERR_FORMAT, "%s: prompt %s encodes to no tokens", ps->path, ps->items[i].id);
            goto done;
        }
        starts[i] = ids[i];
        if ((long)lens[i] > max_prompt) {
            st_log_warn("%s: prompt %s has %zu tokens; left-truncated to %ld (context %ld - %d new tokens)",
                        ps->path, ps->items[i].id, lens[i], max_prompt, ctx, o->gen.max_new_tokens);
            starts[i] = ids[i] + (lens[i] - (size_t)max_prompt);
            lens[i] = (size_t)max_prompt;
            out->truncated[i] = 1;
            out->n_truncated++;
        }
    }
    st_generate_options go = o->gen;
    go.context_length = (int)ctx;
    go.on_finish = NULL;
    go.rng_stream = NULL;
    double t0 = st_time_now();
    if ((s = generate_missing(model, o, &go, starts, lens, out))) goto done;
    out->seconds = st_time_now() - t0;
    for (size_t i = 0; i < n; i++) {
        const st_prompt *p = &ps->items[i];
        st_eval_record *r = &out->recs[i];
        r->id = p->id;
        r->prompt = p->prompt;
        r->category = p->category;
        r->label = p->label;
        r->response = out->gens[i].text ? out->gens[i].text : "";
        out->gen_tokens += out->gens[i].completion_tokens;
        out->prompt_tokens += out->gens[i].prompt_tokens;
        if (out->gens[i].truncated && !out->truncated[i]) { /* cannot happen: prompts fit; kept honest */
            out->truncated[i] = 1;
            out->n_truncated++;
        }
    }
    if (m) st_eval_apply_refusal(m, out->recs, n);
done:
    if (ids)
        for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(starts);
    free(lens);
    if (s) st_safety_run_free(out); /* gens: resumed ones owned here, generated ones freed by st_generate */
    return s;
}
