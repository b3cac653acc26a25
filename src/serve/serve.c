/* serve.c - OpenAI-compatible chat-completions server over libmicrohttpd (see serve.h). */
#include "safetune/serve.h"

#include "eval/eval_internal.h"
#include "serve/serve_internal.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

struct st_server {
    struct MHD_Daemon *d;
    st_serve_opts o;
    char *model;
    int port;
    pthread_mutex_t mu; /* serialises backend calls */
    atomic_uint_fast64_t calls;
    atomic_uint_fast64_t next_id;
};

typedef struct {
    st__buf body;
    int too_large;
} req_ctx;

/* The answer: a JSON body (heap text) with its status code; queued on the connection by on_request. */
static enum MHD_Result send_json(st__serve_answer *c, unsigned code, cJSON *j, const char *allow) {
    char *txt = st_utf8_fix_owned(j ? cJSON_PrintUnformatted(j) : NULL);
    cJSON_Delete(j);
    if (!txt) return MHD_NO;
    c->code = code;
    c->body = txt;
    c->allow = allow;
    return MHD_YES;
}

/* OpenAI-style error object. */
static enum MHD_Result send_error(st__serve_answer *c, unsigned code, const char *type,
                                  const char *param, const char *errcode, const char *msg,
                                  const char *allow) {
    cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (errcode) cJSON_AddStringToObject(e, "code", errcode);
    else cJSON_AddNullToObject(e, "code");
    return send_json(c, code, j, allow);
}

#define BAD(param, msg) send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", param, NULL, msg, NULL)

static enum MHD_Result handle_models(st_server *s, st__serve_answer *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "list");
    cJSON *arr = cJSON_AddArrayToObject(j, "data"), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", s->model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "safetune");
    cJSON_AddItemToArray(arr, m);
    return send_json(c, MHD_HTTP_OK, j, NULL);
}

/* Message content: a string, or an array of {"type":"text","text":...} parts (concatenated). */
static int content_text(const cJSON *ct, st__buf *b) {
    if (cJSON_IsString(ct)) {
        st__buf_puts(b, ct->valuestring);
        return 1;
    }
    if (!cJSON_IsArray(ct)) return 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, ct) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type");
        if (!cJSON_IsString(t) || (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text")))) return 0;
        st__buf_puts(b, t->valuestring);
    }
    st__buf_puts(b, ""); /* ensure non-NULL */
    return 1;
}

/* Request keys each endpoint implements. */
static const char *const CHAT_KEYS[] = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature",
                                        "top_p", "seed", "stream", "n", "stop", "user", NULL};
static const char *const COMPLETION_KEYS[] = {"model", "prompt", "max_tokens", "temperature", "top_p", "seed",
                                              "stream", "n", "stop", "user", NULL};

/* A value that asks for nothing (null, false, 0, "", [], {}): parameters we do not implement are
 * accepted with such a value (clients often send e.g. "logprobs": false, "presence_penalty": 0). */
static int neutral(const cJSON *v) {
    if (cJSON_IsNull(v) || cJSON_IsFalse(v)) return 1;
    if (cJSON_IsNumber(v)) return v->valuedouble == 0;
    if (cJSON_IsString(v)) return !v->valuestring[0];
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) return v->child == NULL;
    return 0;
}

/* The first request key this endpoint does not implement (with a non-neutral value), or NULL. */
static const cJSON *unsupported_key(const cJSON *j, const char *const *keys) {
    for (const cJSON *it = j->child; it; it = it->next) {
        int known = 0;
        for (size_t k = 0; keys[k] && !known; k++) known = !strcmp(it->string, keys[k]);
        if (!known && !neutral(it)) return it;
    }
    return NULL;
}

#define MAX_STOPS 4

/* "stop": a string or a list of up to 4 non-empty strings (OpenAI). Returns NULL or an error. */
static const char *parse_stop(const cJSON *st, const char **stops, int *n) {
    *n = 0;
    if (!st || cJSON_IsNull(st)) return NULL;
    if (cJSON_IsString(st)) {
        if (!st->valuestring[0]) return "'stop' must not be an empty string";
        stops[(*n)++] = st->valuestring;
        return NULL;
    }
    if (!cJSON_IsArray(st)) return "'stop' must be a string or an array of strings";
    const cJSON *it;
    cJSON_ArrayForEach(it, st) {
        if (!cJSON_IsString(it) || !it->valuestring[0]) return "'stop' must be a string or an array of non-empty strings";
        if (*n == MAX_STOPS) return "'stop' takes at most 4 strings";
        stops[(*n)++] = it->valuestring;
    }
    return NULL;
}

/* Cut text at the earliest occurrence of any stop string (the stop string itself is not returned,
 * as in the OpenAI API). Returns 1 if it cut. */
static int cut_at_stop(char *text, const char *const *stops, int n) {
    char *first = NULL;
    for (int i = 0; i < n; i++) {
        char *h = strstr(text, stops[i]);
        if (h && (!first || h < first)) first = h;
    }
    if (!first) return 0;
    *first = '\0';
    return 1;
}

/* POST /v1/chat/completions (chat = 1) and POST /v1/completions (chat = 0). */
static enum MHD_Result handle_completion(st_server *s, st__serve_answer *c, const st__buf *body, int too_large,
                                         int chat) {
    if (too_large) {
        char m[128];
        snprintf(m, sizeof m, "request body exceeds %zu bytes", s->o.max_body_bytes);
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error", NULL, NULL, m, NULL);
    }
    const char *end = NULL;
    cJSON *j = body->p ? cJSON_ParseWithLengthOpts(body->p, body->n, &end, 0) : NULL;
    if (!j || !cJSON_IsObject(j)) {
        char m[160];
        if (!body->p) snprintf(m, sizeof m, "empty request body; expected a JSON object");
        else if (!j) snprintf(m, sizeof m, "invalid JSON in request body at byte %zu",
                              end && end >= body->p ? (size_t)(end - body->p) : 0);
        else snprintf(m, sizeof m, "request body must be a JSON object");
        cJSON_Delete(j);
        return send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", NULL, "invalid_json", m, NULL);
    }
    enum MHD_Result ret;
    st_serve_params p = {s->o.default_max_tokens, 1.0f, 1.0f, 0, 0, 0, !chat, NULL, 0, NULL, 0, NULL, 0};
    const char *stops[MAX_STOPS];
    int n_stops = 0;
    size_t nm = 0;
    st_chat_message *cm = NULL;
    st__buf *texts = NULL;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, chat ? "messages" : "prompt");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "max_tokens");
    if (!mt && chat) mt = cJSON_GetObjectItemCaseSensitive(j, "max_completion_tokens");
    const cJSON *te = cJSON_GetObjectItemCaseSensitive(j, "temperature");
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(j, "top_p");
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(j, "seed");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stream");
    const cJSON *nn = cJSON_GetObjectItemCaseSensitive(j, "n");
    const cJSON *un = unsupported_key(j, chat ? CHAT_KEYS : COMPLETION_KEYS);
    const char *serr;
    if (un) {
        char m[600];
        snprintf(m, sizeof m, "unsupported parameter '%.200s': this server does not implement it (supported: %s)",
                 un->string, chat ? "model, messages, max_tokens, max_completion_tokens, temperature, top_p, seed, stop, "
                                    "n = 1, stream = false, user"
                                  : "model, prompt, max_tokens, temperature, top_p, seed, stop, n = 1, stream = false, user");
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", un->string, "unsupported_parameter", m, NULL);
        goto out;
    }
    if (!msgs) {
        ret = BAD(chat ? "messages" : "prompt", chat ? "missing required parameter 'messages'"
                                                     : "missing required parameter 'prompt'");
        goto out;
    }
    if (chat && (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)) {
        ret = BAD("messages", "'messages' must be a non-empty array");
        goto out;
    }
    if (!chat && cJSON_IsArray(msgs)) { /* a batch of prompts: only a batch of one */
        if (cJSON_GetArraySize(msgs) != 1 || !cJSON_IsString(msgs->child)) {
            ret = BAD("prompt", "'prompt' must be a string (or a list of exactly one string; token-id prompts and "
                                "batches are not supported)");
            goto out;
        }
        msgs = msgs->child;
    }
    if (!chat && !cJSON_IsString(msgs)) {
        ret = BAD("prompt", "'prompt' must be a string");
        goto out;
    }
    if (mt && !cJSON_IsNull(mt)) {
        if (!cJSON_IsNumber(mt) || !(mt->valuedouble >= 1 && mt->valuedouble <= INT_MAX) ||
            mt->valuedouble != (double)(int)mt->valuedouble) {
            ret = BAD("max_tokens", "'max_tokens' must be a positive integer");
            goto out;
        }
        p.max_tokens = mt->valueint;
        p.max_tokens_set = 1;
    }
    if (te && !cJSON_IsNull(te)) {
        if (!cJSON_IsNumber(te) || te->valuedouble < 0 || te->valuedouble > 2) {
            ret = BAD("temperature", "'temperature' must be a number in [0, 2]");
            goto out;
        }
        p.temperature = (float)te->valuedouble;
    }
    if (tp && !cJSON_IsNull(tp)) {
        if (!cJSON_IsNumber(tp) || tp->valuedouble <= 0 || tp->valuedouble > 1) {
            ret = BAD("top_p", "'top_p' must be a number in (0, 1]");
            goto out;
        }
        p.top_p = (float)tp->valuedouble;
    }
    if (sd && !cJSON_IsNull(sd)) {
        double v = cJSON_IsNumber(sd) ? sd->valuedouble : 0.5;
        if (!(v >= -9007199254740992.0 && v <= 9007199254740992.0) || v != (double)(int64_t)v) { /* range first: the cast of a larger value is undefined */
            ret = BAD("seed", "'seed' must be an integer");
            goto out;
        }
        p.seed = (uint64_t)(int64_t)v;
        p.has_seed = 1;
    }
    if (cJSON_IsTrue(st)) {
        ret = BAD("stream", "streaming is not supported by this server; set 'stream' to false");
        goto out;
    }
    if (nn && !cJSON_IsNull(nn) && !(cJSON_IsNumber(nn) && nn->valuedouble == 1)) {
        ret = BAD("n", "only n = 1 is supported (one choice per request; send several requests for more)");
        goto out;
    }
    if ((serr = parse_stop(cJSON_GetObjectItemCaseSensitive(j, "stop"), stops, &n_stops))) {
        ret = BAD("stop", serr);
        goto out;
    }
    p.stops = stops;
    p.n_stops = n_stops;
    p.extra_stop_ids = s->o.extra_stop_ids;
    p.n_extra_stop_ids = s->o.n_extra_stop_ids;
    p.stop_texts = s->o.stop_texts;
    p.n_stop_texts = s->o.n_stop_texts;
    nm = chat ? (size_t)cJSON_GetArraySize(msgs) : 1;
    cm = calloc(nm, sizeof *cm);
    texts = calloc(nm, sizeof *texts);
    if (!cm || !texts) {
        ret = send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "server_error", NULL, NULL, "out of memory", NULL);
        goto out;
    }
    size_t i = 0;
    const cJSON *m;
    const char *bad = NULL;
    char pbuf[64];
    if (!chat) {
        cm[0].role = "user";
        cm[0].content = msgs->valuestring;
    } else {
        cJSON_ArrayForEach(m, msgs) {
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            const cJSON *ct = cJSON_GetObjectItemCaseSensitive(m, "content");
            snprintf(pbuf, sizeof pbuf, "messages[%zu]", i);
            if (!cJSON_IsObject(m)) bad = "each message must be an object with 'role' and 'content'";
            else if (!cJSON_IsString(role) || (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
                                               strcmp(role->valuestring, "assistant") && strcmp(role->valuestring, "developer")))
                bad = "message 'role' must be one of system, developer, user, assistant";
            else if (!content_text(ct, &texts[i]))
                bad = "message 'content' must be a string or an array of text parts";
            if (bad) break;
            cm[i].role = !strcmp(role->valuestring, "developer") ? "system" : role->valuestring;
            cm[i].content = texts[i].p ? texts[i].p : "";
            i++;
        }
    }
    if (bad) {
        ret = BAD(pbuf, bad);
    } else {
        st_serve_reply rep = {0};
        pthread_mutex_lock(&s->mu);
        st_clear_error();
        st_status bs = s->o.backend(s->o.backend_ctx, cm, nm, &p, &rep);
        char emsg[2048];
        if (bs == ST_ERR_ARG) snprintf(emsg, sizeof emsg, "%s", st_last_error()); /* the client's fault: 400 */
        else snprintf(emsg, sizeof emsg, "backend failed: %s", st_last_error()[0] ? st_last_error() : st_status_name(bs));
        s->calls++;
        pthread_mutex_unlock(&s->mu);
        if (bs == ST_ERR_ARG) {
            free(rep.text);
            ret = send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request_error", chat ? "messages" : "prompt",
                             rep.context_exceeded ? "context_length_exceeded" : NULL, emsg, NULL);
        } else if (bs != ST_OK || !rep.text) {
            free(rep.text);
            ret = send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "server_error", NULL, NULL, emsg, NULL);
        } else {
            int stopped = cut_at_stop(rep.text, stops, n_stops);
            cJSON *r = cJSON_CreateObject();
            char id[48];
            snprintf(id, sizeof id, "%s-%llu", chat ? "chatcmpl" : "cmpl", (unsigned long long)++s->next_id);
            cJSON_AddStringToObject(r, "id", id);
            cJSON_AddStringToObject(r, "object", chat ? "chat.completion" : "text_completion");
            cJSON_AddNumberToObject(r, "created", (double)time(NULL));
            cJSON_AddStringToObject(r, "model", s->model);
            cJSON *ch = cJSON_AddArrayToObject(r, "choices"), *c0 = cJSON_CreateObject();
            cJSON_AddNumberToObject(c0, "index", 0);
            if (chat) {
                cJSON *msg = cJSON_AddObjectToObject(c0, "message");
                cJSON_AddStringToObject(msg, "role", "assistant");
                cJSON_AddStringToObject(msg, "content", rep.text);
            } else {
                cJSON_AddStringToObject(c0, "text", rep.text);
                cJSON_AddNullToObject(c0, "logprobs");
            }
            cJSON_AddStringToObject(c0, "finish_reason", rep.finish_length && !stopped ? "length" : "stop");
            cJSON_AddItemToArray(ch, c0);
            cJSON *u = cJSON_AddObjectToObject(r, "usage");
            cJSON_AddNumberToObject(u, "prompt_tokens", rep.prompt_tokens);
            cJSON_AddNumberToObject(u, "completion_tokens", rep.completion_tokens);
            cJSON_AddNumberToObject(u, "total_tokens", rep.prompt_tokens + rep.completion_tokens);
            free(rep.text);
            ret = send_json(c, MHD_HTTP_OK, r, NULL);
        }
    }
out:
    if (texts)
        for (size_t k = 0; k < nm; k++) st__buf_free(&texts[k]);
    free(texts);
    free(cm);
    cJSON_Delete(j);
    return ret;
}

static enum MHD_Result route_(st_server *s, const char *url, const char *method, const st__buf *body, int too_large,
                              st__serve_answer *out) {
    int is_chat = !strcmp(url, "/v1/chat/completions"), is_models = !strcmp(url, "/v1/models");
    int is_cmpl = !strcmp(url, "/v1/completions");
    if ((is_chat || is_cmpl) && strcmp(method, "POST"))
        return send_error(out, MHD_HTTP_METHOD_NOT_ALLOWED, "invalid_request_error", NULL, "method_not_allowed",
                          is_chat ? "use POST for /v1/chat/completions" : "use POST for /v1/completions", "POST");
    if (is_models && strcmp(method, "GET"))
        return send_error(out, MHD_HTTP_METHOD_NOT_ALLOWED, "invalid_request_error", NULL, "method_not_allowed",
                          "use GET for /v1/models", "GET");
    if (is_models) return handle_models(s, out);
    if (is_chat || is_cmpl) return handle_completion(s, out, body, too_large, is_chat);
    char m[700];
    snprintf(m, sizeof m, "unknown path '%.500s' (this server has POST /v1/chat/completions, POST /v1/completions and GET /v1/models)", url);
    return send_error(out, MHD_HTTP_NOT_FOUND, "invalid_request_error", NULL, "unknown_url", m, NULL);
}

void st__serve_route(st_server *s, const char *url, const char *method, const st__buf *body, int too_large,
                     st__serve_answer *out) {
    (void)route_(s, url, method, body, too_large, out);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    st_server *s = cls;
    req_ctx *rc = *con_cls;
    if (!rc) {
        rc = calloc(1, sizeof *rc);
        if (!rc) return MHD_NO;
        *con_cls = rc;
        /* a declared body past the limit is refused before it is read (the client need not send it) */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        char *end = NULL;
        unsigned long long n = cl ? strtoull(cl, &end, 10) : 0;
        if (!cl || end == cl || *end || n <= s->o.max_body_bytes) return MHD_YES;
        rc->too_large = 1;
    } else if (*upload_size) {
        if (!rc->too_large) {
            if (rc->body.n + *upload_size > s->o.max_body_bytes) {
                rc->too_large = 1;
                st__buf_free(&rc->body);
            } else {
                st__buf_put(&rc->body, upload, *upload_size);
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    st__serve_answer a = {0, NULL, NULL};
    if (rc->body.oom)
        send_error(&a, MHD_HTTP_INTERNAL_SERVER_ERROR, "server_error", NULL, NULL, "out of memory", NULL);
    else
        st__serve_route(s, url, method, &rc->body, rc->too_large, &a);
    if (!a.body) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(a.body), a.body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(a.body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (a.allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, a.allow);
    enum MHD_Result ret = MHD_queue_response(c, a.code, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t) {
    (void)cls;
    (void)c;
    (void)t;
    req_ctx *rc = *con_cls;
    if (rc) {
        st__buf_free(&rc->body);
        free(rc);
        *con_cls = NULL;
    }
}

st_status st__serve_new(const st_serve_opts *opts, st_server **out) {
    *out = NULL;
    if (!opts || !opts->backend) return st_error(ST_ERR_ARG, "serve: no completion backend given");
    if (opts->port < 0 || opts->port > 65535)
        return st_error(ST_ERR_ARG, "serve: port %d out of range (0-65535; 0 = pick a free port)", opts->port);
    st_server *s = calloc(1, sizeof *s);
    if (!s) return st_error(ST_ERR_NOMEM, "out of memory");
    s->o = *opts;
    if (!s->o.default_max_tokens) s->o.default_max_tokens = 256;
    if (!s->o.max_body_bytes) s->o.max_body_bytes = 8u << 20;
    if (!s->o.timeout_s) s->o.timeout_s = 60;
    if (!s->o.max_connections) s->o.max_connections = 64;
    s->model = st_strdup(opts->model_name && *opts->model_name ? opts->model_name : "safetune");
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return ST_OK;
}

st_status st_serve_start(const st_serve_opts *opts, st_server **out) {
    *out = NULL;
    st_server *s;
    st_status e = st__serve_new(opts, &s);
    if (e) return e;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)opts->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
                            on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->o.timeout_s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->o.max_connections,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->d) {
        e = st_error(ST_ERR_NET, "cannot listen on 127.0.0.1:%d (port in use or not permitted): choose another --port",
                     opts->port);
        st_serve_stop(s);
        return e;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? (int)di->port : opts->port;
    *out = s;
    return ST_OK;
}

int st_serve_port(const st_server *s) { return s->port; }
uint64_t st_serve_backend_calls(const st_server *s) { return (uint64_t)s->calls; }

void st_serve_stop(st_server *s) {
    if (!s) return;
    if (s->d) MHD_stop_daemon(s->d);
    pthread_mutex_destroy(&s->mu);
    free(s->model);
    free(s);
}
