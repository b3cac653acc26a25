/* serve_internal.h - the server's request handling without sockets (not public API): what
 * on_request answers for one complete request, callable directly (tests/fuzz/fuzz_serve.c). */
#ifndef SAFETUNE_SERVE_INTERNAL_H
#define SAFETUNE_SERVE_INTERNAL_H

#include "eval/eval_internal.h"
#include "safetune/serve.h"

typedef struct {
    unsigned code;     /* HTTP status */
    char *body;        /* JSON text, heap (caller frees); NULL = out of memory (connection closed) */
    const char *allow; /* Allow header value for 405, else NULL */
} st__serve_answer;

/* A server with opts' settings and no listening daemon (st_serve_stop frees it). Same errors as
 * st_serve_start apart from ST_ERR_NET. */
st_status st__serve_new(const st_serve_opts *opts, st_server **out);
/* Answer one request: url and method as received, body = the uploaded bytes (body->p NULL when
 * none), too_large = 1 when the upload passed opts.max_body_bytes. Calls the backend for valid
 * completion requests. */
void st__serve_route(st_server *s, const char *url, const char *method, const st__buf *body, int too_large,
                     st__serve_answer *out);

#endif
