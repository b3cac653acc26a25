/* fuzz_serve.c - the server's request handling (src/serve/serve.c) called directly, without sockets:
 * URL, method and body as libmicrohttpd would deliver them, a stub backend that echoes the last
 * message (and refuses or fails on request). Input: byte 0 = route (mod 8: chat POST, completions
 * POST, models GET, chat GET, models POST, unknown path, chat POST over the body limit, a URL taken
 * from the body's first line), byte 1 = backend behaviour (mod 3: answer, refuse 400, fail 500), the
 * rest = the body. Checks: every answer is a JSON object with a known status; every 4xx/5xx carries
 * {"error": {"message": string, "type": string}}. */
#include "fuzz_util.h"

#include "serve/serve_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static int g_mode;

static st_status backend(void *ctx, const st_chat_message *msgs, size_t n, const st_serve_params *p, st_serve_reply *out) {
    (void)ctx;
    if (n == 0 || !msgs[n - 1].content) stf_fail("backend called with no message");
    if (p->max_tokens < 1 || p->temperature < 0 || p->temperature > 2 || !(p->top_p > 0 && p->top_p <= 1) ||
        p->n_stops < 0 || p->n_stops > 4)
        stf_fail("backend called with invalid params");
    for (size_t i = 0; i < n; i++)
        if (strcmp(msgs[i].role, "system") && strcmp(msgs[i].role, "user") && strcmp(msgs[i].role, "assistant"))
            stf_fail("backend called with role '%s'", msgs[i].role);
    if (g_mode == 1) {
        out->context_exceeded = 1;
        return st_error(ST_ERR_ARG, "prompt too long");
    }
    if (g_mode == 2) return st_error(ST_ERR_INTERNAL, "backend broke");
    out->text = strdup(msgs[n - 1].content);
    out->prompt_tokens = 3;
    out->completion_tokens = 2;
    out->finish_length = 1;
    return ST_OK;
}

static st_server *g_s;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    st_serve_opts o = {0};
    o.backend = backend;
    o.max_body_bytes = 1 << 16;
    if (st__serve_new(&o, &g_s) != ST_OK) stf_fail("%s", st_last_error());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    static const char *const urls[] = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/chat/completions",
                                       "/v1/models", "/v1/nothing", "/v1/chat/completions", NULL};
    static const char *const methods[] = {"POST", "POST", "GET", "GET", "POST", "POST", "POST", "POST"};
    int route = data[0] & 7;
    g_mode = data[1] % 3;
    const uint8_t *b = data + 2;
    size_t n = size - 2;
    char url[256];
    if (urls[route]) {
        snprintf(url, sizeof url, "%s", urls[route]);
    } else { /* the URL from the body's first line (libmicrohttpd hands over any bytes but NUL) */
        size_t k = 0;
        while (k < n && k < sizeof url - 1 && b[k] != '\n' && b[k] != 0) k++;
        memcpy(url, b, k);
        url[k] = '\0';
        if (k < n) k++;
        b += k;
        n -= k;
    }
    st__buf body = {0};
    if (n) st__buf_put(&body, b, n);
    st__serve_answer a = {0, NULL, NULL};
    st__serve_route(g_s, url, methods[route], &body, route == 6, &a);
    st__buf_free(&body);
    if (!a.body) stf_fail("no answer (out of memory?)");
    cJSON *j = cJSON_Parse(a.body);
    if (!cJSON_IsObject(j)) stf_fail("answer is not a JSON object: %.200s", a.body);
    if (a.code != 200 && a.code != 400 && a.code != 404 && a.code != 405 && a.code != 413 && a.code != 500)
        stf_fail("unexpected status %u", a.code);
    if (a.code != 200) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "type")))
            stf_fail("status %u without an error object: %.200s", a.code, a.body);
    }
    if (route == 6 && a.code != 413) stf_fail("oversized body answered %u", a.code);
    cJSON_Delete(j);
    free(a.body);
    return 0;
}
