/* serve.h - minimal OpenAI-compatible HTTP server (libmicrohttpd) on 127.0.0.1:
 *   POST /v1/chat/completions  {messages, max_tokens?, temperature?, top_p?, seed?, stop?} (non-streaming)
 *   POST /v1/completions       {prompt, max_tokens?, temperature?, top_p?, seed?, stop?} (no chat template)
 *   GET  /v1/models
 * "stop" (a string or up to 4): the model backend ends generation at the token that completes a stop
 * string; the text is cut before the first stop string found, finish_reason "stop" (usage counts
 * the tokens generated, up to the one completing the stop string). Parameters the server does not implement (logprobs,
 * tools, n > 1, penalties, ...) get HTTP 400 "unsupported parameter" unless their value is neutral
 * (null, false, 0, "", [], {}).
 * Errors are OpenAI-style {"error": {"message", "type", "param", "code"}} with HTTP 400 (bad JSON,
 * missing/invalid fields), 404 (unknown path), 405 (wrong method), 413 (body too large),
 * 500 (backend failure). Completions come from a backend callback, so any generator can be
 * plugged in; backend calls are serialised with a mutex. Request/response shapes follow the
 * OpenAI Chat Completions API reference. */
#ifndef SAFETUNE_SERVE_H
#define SAFETUNE_SERVE_H

#include <stdint.h>

#include "safetune/base.h"
#include "safetune/chat.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int max_tokens;    /* > 0; default from st_serve_opts.default_max_tokens */
    float temperature; /* [0, 2], default 1 (OpenAI default); 0 = greedy */
    float top_p;       /* (0, 1], default 1 */
    uint64_t seed;     /* valid when has_seed */
    int has_seed;
    int max_tokens_set; /* 1 if the request gave max_tokens (else the default may be capped to fit) */
    int raw_prompt;     /* 1: /v1/completions: msgs[0].content is a plain prompt (no chat template) */
    const char *const *stops; /* "stop" strings (n_stops <= 4): generation may end at the first one */
    int n_stops;
    /* the server's own stops (serve --stop-id / --stop, st_serve_opts), for every request: token
     * ids and texts as st_generate_options' extra_stop_ids / stop_texts (generate.h) */
    const int32_t *extra_stop_ids;
    int n_extra_stop_ids;
    const char *const *stop_texts;
    int n_stop_texts;
} st_serve_params;

typedef struct {
    char *text;             /* completion text, heap (the server frees it with free()) */
    int prompt_tokens;      /* token counts reported in "usage" */
    int completion_tokens;
    int finish_length;      /* 1 if generation stopped at max_tokens ("length"), else "stop" */
    int context_exceeded;   /* with ST_ERR_ARG: 1 = prompt + max_tokens do not fit the context */
} st_serve_reply;

/* Backend: produce one assistant reply for msgs[0..n). Return ST_OK and fill *out, or a status
 * with st_error() set: ST_ERR_ARG = the request cannot be served (e.g. longer than the context;
 * HTTP 400 with that message), anything else HTTP 500. Called under the
 * server's mutex, from a server thread. */
typedef st_status (*st_serve_backend)(void *ctx, const st_chat_message *msgs, size_t n,
                                      const st_serve_params *params, st_serve_reply *out);

typedef struct {
    int port;                  /* TCP port on 127.0.0.1; 0 = pick a free one (see st_serve_port) */
    const char *model_name;    /* reported in /v1/models and replies (default "safetune") */
    st_serve_backend backend;  /* required */
    void *backend_ctx;
    int default_max_tokens;    /* used when the request has none (default 256) */
    size_t max_body_bytes;     /* larger bodies get 413 (default 8 MiB) */
    unsigned timeout_s;        /* idle connection timeout (default 60) */
    unsigned max_connections;  /* open connections at most, one thread each (default 64); more are
                                  closed at once: bounds threads and memory under slow clients */
    const int32_t *extra_stop_ids; /* passed to the backend with every request (st_serve_params) */
    int n_extra_stop_ids;
    const char *const *stop_texts;
    int n_stop_texts;
} st_serve_opts;

typedef struct st_server st_server;

/* Start serving in background threads. ST_ERR_NET if the port cannot be bound. */
st_status st_serve_start(const st_serve_opts *opts, st_server **out);
/* The bound port (the real one when opts.port was 0). */
int st_serve_port(const st_server *s);
/* Number of completed backend calls so far. */
uint64_t st_serve_backend_calls(const st_server *s);
/* Stop accepting, finish/close connections, free. NULL is a no-op. */
void st_serve_stop(st_server *s);

/* Backend over a loaded model (src/serve/backend_model.c): ctx is its `st_infer_ctx *` (forward.h). Renders
 * msgs with the model's chat template (+ assistant header) (params->raw_prompt: encodes
 * msgs[0].content as is, BOS where the tokenizer adds one), generates up to max_tokens with
 * generate.h (temperature/top_p; seed when given, else a per-call counter), stops at the
 * template's end-of-turn/EOS ids and returns the decoded text (special tokens skipped). */
st_status st_serve_model_backend(void *ctx, const st_chat_message *msgs, size_t n,
                                 const st_serve_params *params, st_serve_reply *out);

#ifdef __cplusplus
}
#endif
#endif
