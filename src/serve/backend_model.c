/* backend_model.c - st_serve_model_backend: chat template -> batched generation (one sequence)
 * -> text, the model behind `safetune serve --model` (ctx: its st_infer_ctx, forward.h). Calls
 * are serialised by the server. */
#include "safetune/forward.h"
#include "safetune/generate.h"
#include "safetune/serve.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const st_tokenizer *tok;
    const char *const *stops;
    int n_stops;
} stop_ctx;

/* st_generate_stop_fn: 1 once the decoded reply contains a stop string. Decodes the whole reply
 * each time (replies are short; a stop string may span tokens). */
static int hit_stop(void *ud, size_t prompt_idx, const int32_t *ids, size_t n) {
    const stop_ctx *c = ud;
    (void)prompt_idx;
    char *text = NULL;
    size_t len = 0;
    if (st_tokenizer_decode(c->tok, ids, n, 1, &text, &len) != ST_OK) return 0;
    int hit = 0;
    for (int k = 0; k < c->n_stops && !hit; k++) hit = strstr(text, c->stops[k]) != NULL;
    free(text);
    return hit;
}

st_status st_serve_model_backend(void *ctx, const st_chat_message *msgs, size_t n, const st_serve_params *p,
                                 st_serve_reply *out) {
    static uint64_t calls; /* seed for requests without one (the server serialises backend calls) */
    st_infer_ctx *ic = ctx;
    const st_model *m = ic ? st_infer_ctx_model(ic) : NULL;
    memset(out, 0, sizeof *out);
    if (!m || !m->tokenizer) return st_error(ST_ERR_INTERNAL, "serve: no model loaded");
    /* OpenAI's "developer" role is the system role of newer models */
    st_chat_message *mm = malloc((n ? n : 1) * sizeof *mm);
    if (!mm) return st_error(ST_ERR_NOMEM, "serve: out of memory");
    for (size_t i = 0; i < n; i++) {
        mm[i] = msgs[i];
        if (!strcmp(mm[i].role, "developer")) mm[i].role = "system";
        if (strcmp(mm[i].role, "system") && strcmp(mm[i].role, "user") && strcmp(mm[i].role, "assistant")) {
            free(mm);
            return st_error(ST_ERR_ARG, "serve: message %zu has role '%s' (system, user or assistant)", i, msgs[i].role);
        }
    }
    int32_t *ids = NULL;
    size_t nid = 0;
    st_status s = p->raw_prompt ? st_prompt_encode(m, n ? mm[0].content : "", 0, NULL, &ids, &nid)
                                : st_chat_render(&m->chat, m->tokenizer, mm, n, 1, &ids, NULL, &nid);
    free(mm);
    if (s) return s;
    if (nid == 0) {
        free(ids);
        return st_error(ST_ERR_ARG, p->raw_prompt ? "the prompt is empty (it encodes to no tokens)"
                                                  : "the conversation renders to no tokens");
    }
    st_generate_options go = st_generate_defaults();
    go.batch_size = 1;
    go.infer = ic;
    go.max_new_tokens = p->max_tokens > 0 ? p->max_tokens : 256;
    go.sampling.temperature = p->temperature;
    go.sampling.top_p = p->top_p > 0 ? p->top_p : 1.0f;
    go.sampling.seed = p->has_seed ? p->seed : calls;
    calls++;
    /* no silent truncation: the prompt plus max_tokens must fit the context (OpenAI: HTTP 400) */
    long ctxlen = m->config.max_position_embeddings > 0 ? m->config.max_position_embeddings : 2048;
    if ((long)nid >= ctxlen) {
        free(ids);
        out->context_exceeded = 1;
        return st_error(ST_ERR_ARG, "the prompt of %zu tokens exceeds the context length %ld (leave room for the reply)",
                        nid, ctxlen);
    }
    if (!p->max_tokens_set && (long)nid + go.max_new_tokens > ctxlen) go.max_new_tokens = (int)(ctxlen - (long)nid);
    if ((long)nid + go.max_new_tokens > ctxlen) {
        free(ids);
        out->context_exceeded = 1;
        return st_error(ST_ERR_ARG, "max_tokens %d + prompt %zu tokens exceeds the context length %ld",
                        go.max_new_tokens, nid, ctxlen);
    }
    go.extra_stop_ids = p->extra_stop_ids;
    go.n_extra_stop_ids = p->n_extra_stop_ids;
    go.stop_texts = p->stop_texts;
    go.n_stop_texts = p->n_stop_texts;
    stop_ctx sc = {m->tokenizer, p->stops, p->n_stops};
    if (p->n_stops > 0) {
        go.stop_check = hit_stop;
        go.ud = &sc;
    }
    const int32_t *start = ids;
    size_t len = nid;
    st_generation g;
    memset(&g, 0, sizeof g);
    s = st_generate(m, &start, &len, 1, &go, &g, NULL);
    free(ids);
    if (s) return s;
    out->text = g.text ? g.text : strdup("");
    g.text = NULL;
    out->prompt_tokens = (int)g.prompt_tokens;
    out->completion_tokens = (int)g.completion_tokens;
    out->finish_length = g.finish == ST_FINISH_LENGTH;
    st_generations_free(&g, 1);
    if (!out->text) return st_error(ST_ERR_NOMEM, "serve: out of memory");
    return ST_OK;
}
