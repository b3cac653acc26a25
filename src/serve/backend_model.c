/* backend_model.c - st_serve_model_backend: chat template -> batched generation (one sequence)
 * -> text, the model behind `safetune serve --model`. Calls are serialised by the server. */
#include "safetune/generate.h"
#include "safetune/serve.h"

#include <stdlib.h>
#include <string.h>

st_status st_serve_model_backend(void *ctx, const st_chat_message *msgs, size_t n, const st_serve_params *p,
                                 st_serve_reply *out) {
    static uint64_t calls; /* seed for requests without one (the server serialises backend calls) */
    const st_model *m = ctx;
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
        return st_error(ST_ERR_ARG, "serve: the conversation renders to no tokens");
    }
    st_generate_options go = st_generate_defaults();
    go.batch_size = 1;
    go.max_new_tokens = p->max_tokens > 0 ? p->max_tokens : 256;
    go.sampling.temperature = p->temperature;
    go.sampling.top_p = p->top_p > 0 ? p->top_p : 1.0f;
    go.sampling.seed = p->has_seed ? p->seed : calls;
    calls++;
    /* no silent truncation: the prompt plus max_tokens must fit the context (OpenAI: HTTP 400) */
    long ctxlen = m->config.max_position_embeddings > 0 ? m->config.max_position_embeddings : 2048;
    if ((long)nid >= ctxlen) {
        free(ids);
        return st_error(ST_ERR_ARG, "the prompt of %zu tokens exceeds the context length %ld (leave room for the reply)",
                        nid, ctxlen);
    }
    if (!p->max_tokens_set && (long)nid + go.max_new_tokens > ctxlen) go.max_new_tokens = (int)(ctxlen - (long)nid);
    if ((long)nid + go.max_new_tokens > ctxlen) {
        free(ids);
        return st_error(ST_ERR_ARG, "max_tokens %d + prompt %zu tokens exceeds the context length %ld",
                        go.max_new_tokens, nid, ctxlen);
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
