/* test_serve.c - the OpenAI-compatible server on loopback with a scripted backend: request
 * parsing, parameter passing, OpenAI-style errors and HTTP codes, serialised backend calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_testutil.h"
#include "safetune/model.h"
#include "safetune/forward.h"
#include "safetune/serve.h"
#include "testutil.h"

typedef struct {
    atomic_int inflight, max_inflight, calls;
    st_serve_params last;
    char last_roles[64];
    int fail;
    int fail_arg; /* return ST_ERR_ARG (a request that cannot be served) */
    int slow_ms;
} fake_ctx;

/* Echoes the last message and the roles it saw; can be told to fail. */
static st_status fake_backend(void *ctx, const st_chat_message *msgs, size_t n, const st_serve_params *p,
                              st_serve_reply *out) {
    fake_ctx *f = ctx;
    int now = ++f->inflight;
    if (now > f->max_inflight) f->max_inflight = now;
    if (f->slow_ms) {
        struct timespec ts = {0, f->slow_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    f->calls++;
    f->last = *p;
    f->last_roles[0] = '\0';
    for (size_t i = 0; i < n && strlen(f->last_roles) < 50; i++) {
        strncat(f->last_roles, msgs[i].role, 1);
    }
    f->inflight--;
    if (f->fail) return st_error(ST_ERR_INTERNAL, "scripted failure");
    if (f->fail_arg == 2) return st_error(ST_ERR_ARG, "the prompt is empty (it encodes to no tokens)");
    if (f->fail_arg) {
        out->context_exceeded = 1;
        return st_error(ST_ERR_ARG, "max_tokens 99 + prompt 3 tokens exceeds the context length 100");
    }
    size_t m = strlen(msgs[n - 1].content) + 16;
    out->text = malloc(m);
    snprintf(out->text, m, "echo: %s", msgs[n - 1].content);
    out->prompt_tokens = 11;
    out->completion_tokens = 5;
    out->finish_length = p->max_tokens == 5;
    return ST_OK;
}

static st_server *start(fake_ctx *f, size_t max_body) {
    st_serve_opts o = {0};
    o.port = 0;
    o.model_name = "test-model";
    o.backend = fake_backend;
    o.backend_ctx = f;
    o.max_body_bytes = max_body;
    st_server *s = NULL;
    assert_int_equal(st_serve_start(&o, &s), ST_OK);
    assert_true(st_serve_port(s) > 0);
    return s;
}

/* Parse a body and check it is an OpenAI error of the given type/param. */
static void check_error(const char *body, const char *type, const char *param) {
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    assert_true(cJSON_IsObject(e));
    assert_true(cJSON_IsString(cJSON_GetObjectItem(e, "message")));
    assert_string_equal(cJSON_GetObjectItem(e, "type")->valuestring, type);
    const cJSON *pp = cJSON_GetObjectItem(e, "param");
    if (param) assert_string_equal(pp->valuestring, param);
    else assert_true(cJSON_IsNull(pp));
    cJSON_Delete(j);
}

static void test_models_and_chat(void **state) {
    (void)state;
    fake_ctx f = {0};
    st_server *s = start(&f, 0);
    int port = st_serve_port(s);
    char *b;
    assert_int_equal(http_do("GET", port, "/v1/models", NULL, &b, NULL), 200);
    cJSON *j = cJSON_Parse(b);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "list");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "id")->valuestring,
                        "test-model");
    cJSON_Delete(j);
    free(b);

    const char *rq = "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"be nice\"},"
                     "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi \"},{\"type\":\"text\",\"text\":\"there\"}]}],"
                     "\"max_tokens\":17,\"temperature\":0.25,\"top_p\":0.5,\"seed\":1234}";
    assert_int_equal(http_do("POST", port, "/v1/chat/completions", rq, &b, NULL), 200);
    j = cJSON_Parse(b);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "test-model");
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItem(c0, "message");
    assert_string_equal(cJSON_GetObjectItem(msg, "role")->valuestring, "assistant");
    assert_string_equal(cJSON_GetObjectItem(msg, "content")->valuestring, "echo: hi there");
    assert_string_equal(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "stop");
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 11);
    assert_int_equal(cJSON_GetObjectItem(u, "completion_tokens")->valueint, 5);
    assert_int_equal(cJSON_GetObjectItem(u, "total_tokens")->valueint, 16);
    cJSON_Delete(j);
    free(b);
    assert_int_equal(f.last.max_tokens, 17);
    assert_true(f.last.temperature == 0.25f);
    assert_true(f.last.top_p == 0.5f);
    assert_true(f.last.has_seed);
    assert_int_equal(f.last.seed, 1234);
    assert_string_equal(f.last_roles, "su");

    /* defaults: max_tokens 256, temperature 1, top_p 1, no seed; "length" finish */
    assert_int_equal(http_do("POST", port, "/v1/chat/completions",
                             "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &b, NULL), 200);
    free(b);
    assert_int_equal(f.last.max_tokens, 256);
    assert_true(f.last.temperature == 1.0f && f.last.top_p == 1.0f && !f.last.has_seed);
    assert_int_equal(http_do("POST", port, "/v1/chat/completions",
                             "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":5}", &b, NULL), 200);
    assert_non_null(strstr(b, "\"finish_reason\":\"length\""));
    free(b);
    assert_int_equal(st_serve_backend_calls(s), 3);
    st_serve_stop(s);
}

static void test_errors(void **state) {
    (void)state;
    fake_ctx f = {0};
    st_server *s = start(&f, 4096);
    int port = st_serve_port(s);
    char *b, *h;
    const char *P = "/v1/chat/completions";
    assert_int_equal(http_do("POST", port, P, "{\"messages\": [", &b, NULL), 400);
    check_error(b, "invalid_request_error", NULL);
    assert_non_null(strstr(b, "invalid JSON"));
    free(b);
    assert_int_equal(http_do("POST", port, P, "", &b, NULL), 400);
    check_error(b, "invalid_request_error", NULL);
    free(b);
    assert_int_equal(http_do("POST", port, P, "[1]", &b, NULL), 400);
    free(b);
    assert_int_equal(http_do("POST", port, P, "{\"model\":\"m\"}", &b, NULL), 400);
    check_error(b, "invalid_request_error", "messages");
    free(b);
    assert_int_equal(http_do("POST", port, P, "{\"messages\":[]}", &b, NULL), 400);
    check_error(b, "invalid_request_error", "messages");
    free(b);
    assert_int_equal(http_do("POST", port, P, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", &b, NULL), 400);
    check_error(b, "invalid_request_error", "messages[0]");
    free(b);
    assert_int_equal(http_do("POST", port, P, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\"}]}", &b, NULL), 400);
    check_error(b, "invalid_request_error", "messages[1]");
    free(b);
    const char *um = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],";
    static const struct { const char *tail, *param; } badp[] = {
        {"\"max_tokens\":0}", "max_tokens"}, {"\"max_tokens\":2.5}", "max_tokens"},
        {"\"temperature\":3}", "temperature"}, {"\"temperature\":\"hot\"}", "temperature"},
        {"\"top_p\":0}", "top_p"}, {"\"seed\":1.5}", "seed"}, {"\"stream\":true}", "stream"}, {"\"n\":2}", "n"}};
    for (size_t i = 0; i < sizeof badp / sizeof badp[0]; i++) {
        char rq[256];
        snprintf(rq, sizeof rq, "%s%s", um, badp[i].tail);
        assert_int_equal(http_do("POST", port, P, rq, &b, NULL), 400);
        check_error(b, "invalid_request_error", badp[i].param);
        free(b);
    }
    assert_int_equal(f.calls, 0); /* no bad request reached the backend */
    /* 404 / 405 */
    assert_int_equal(http_do("GET", port, "/v1/nope", NULL, &b, NULL), 404);
    check_error(b, "invalid_request_error", NULL);
    free(b);
    assert_int_equal(http_do("GET", port, P, NULL, &b, &h), 405);
    check_error(b, "invalid_request_error", NULL);
    assert_non_null(strcasestr(h, "Allow: POST"));
    free(b);
    free(h);
    assert_int_equal(http_do("POST", port, "/v1/models", "{}", &b, &h), 405);
    assert_non_null(strcasestr(h, "Allow: GET"));
    free(b);
    free(h);
    /* 413: body over the 4096-byte limit */
    char *big = malloc(10000);
    memset(big, ' ', 9999);
    big[0] = '{';
    big[9998] = '}';
    big[9999] = '\0';
    assert_int_equal(http_do("POST", port, P, big, &b, NULL), 413);
    check_error(b, "invalid_request_error", NULL);
    free(b);
    free(big);
    /* 500: backend failure carries its message */
    f.fail = 1;
    assert_int_equal(http_do("POST", port, P, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &b, NULL), 500);
    check_error(b, "server_error", NULL);
    assert_non_null(strstr(b, "scripted failure"));
    free(b);
    /* 400: the backend says the request cannot be served (too long for the context) */
    f.fail = 0;
    f.fail_arg = 1;
    assert_int_equal(http_do("POST", port, P, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":99}", &b, NULL), 400);
    check_error(b, "invalid_request_error", "messages");
    assert_non_null(strstr(b, "\"message\":\"max_tokens 99 + prompt 3 tokens exceeds the context length 100\""));
    assert_non_null(strstr(b, "\"code\":\"context_length_exceeded\""));
    assert_int_equal(f.last.max_tokens_set, 1);
    free(b);
    /* 400 for another unservable request: its own message, no context-length code */
    f.fail_arg = 2;
    assert_int_equal(http_do("POST", port, "/v1/completions", "{\"prompt\":\"\"}", &b, NULL), 400);
    check_error(b, "invalid_request_error", "prompt");
    assert_non_null(strstr(b, "\"message\":\"the prompt is empty (it encodes to no tokens)\""));
    assert_non_null(strstr(b, "\"code\":null"));
    free(b);
    f.fail_arg = 0;
    /* a second server on the same port fails cleanly */
    st_serve_opts o = {0};
    o.port = port;
    o.backend = fake_backend;
    st_server *s2 = (st_server *)1;
    assert_int_equal(st_serve_start(&o, &s2), ST_ERR_NET);
    assert_null(s2);
    assert_non_null(strstr(st_last_error(), "127.0.0.1"));
    o.backend = NULL;
    assert_int_equal(st_serve_start(&o, &s2), ST_ERR_ARG);
    st_serve_stop(s);
}

/* Content ("message.content" or "text") and finish_reason of choice 0 of a 200 reply. */
static void reply_of(const char *body, int chat, char *text, size_t cap, char *finish, size_t fcap) {
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *t = chat ? cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "message"), "content") : cJSON_GetObjectItem(c0, "text");
    assert_true(cJSON_IsString(t));
    snprintf(text, cap, "%s", t->valuestring);
    snprintf(finish, fcap, "%s", cJSON_GetObjectItem(c0, "finish_reason")->valuestring);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, chat ? "chat.completion" : "text_completion");
    cJSON_Delete(j);
}

/* "stop" cuts the reply before the earliest stop string (finish_reason "stop", even when the
 * backend ran into max_tokens); /v1/completions passes the prompt raw; parameters the server does
 * not implement get 400 "unsupported parameter" unless neutral. The fake replies "echo: <last>". */
static void test_stop_completions_unsupported(void **state) {
    (void)state;
    fake_ctx f = {0};
    st_server *s = start(&f, 0);
    int port = st_serve_port(s);
    char *b, text[256], fin[32];
    static const struct { const char *path, *body, *text, *finish; } ok[] = {
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"one two three\"}],\"stop\":\"two\"}",
         "echo: one ", "stop"},
        /* earliest of several wins, whatever their order in the list */
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"one two three\"}],\"stop\":[\"three\",\"e t\"]}",
         "echo: on", "stop"},
        /* stop found although the backend stopped at max_tokens (5 -> finish_length) */
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"abc\"}],\"max_tokens\":5,\"stop\":[\"b\"]}",
         "echo: a", "stop"},
        /* not found: text unchanged, "length" kept */
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"abc\"}],\"max_tokens\":5,\"stop\":\"zz\"}",
         "echo: abc", "length"},
        /* neutral values of unimplemented parameters are fine */
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":false,\"tools\":[],"
         "\"presence_penalty\":0,\"logit_bias\":{},\"n\":1,\"stop\":null,\"user\":\"u1\"}", "echo: x", "stop"},
        {"/v1/completions", "{\"model\":\"m\",\"prompt\":\"Once upon a time\",\"stop\":[\"a t\"]}", "echo: Once upon ", "stop"},
        {"/v1/completions", "{\"prompt\":[\"hello\"],\"logprobs\":null,\"echo\":false}", "echo: hello", "stop"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int chat = !strcmp(ok[i].path, "/v1/chat/completions");
        assert_int_equal(http_do("POST", port, ok[i].path, ok[i].body, &b, NULL), 200);
        reply_of(b, chat, text, sizeof text, fin, sizeof fin);
        assert_string_equal(text, ok[i].text);
        assert_string_equal(fin, ok[i].finish);
        assert_int_equal(f.last.raw_prompt, !chat);
        if (!chat) assert_string_equal(f.last_roles, "u");
        free(b);
    }
    int calls = f.calls;
    static const struct { const char *path, *body, *param, *words; } bad[] = {
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true}", "logprobs",
         "unsupported parameter 'logprobs'"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}",
         "tools", "unsupported parameter 'tools'"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"frequency_penalty\":0.5}",
         "frequency_penalty", "does not implement"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":3}", "n", "only n = 1"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":\"\"}", "stop", "empty"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",3]}", "stop", "strings"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
         "stop", "at most 4"},
        {"/v1/chat/completions", "{\"prompt\":\"x\"}", "prompt", "unsupported parameter 'prompt'"},
        {"/v1/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "messages", "unsupported parameter 'messages'"},
        {"/v1/completions", "{}", "prompt", "missing required parameter 'prompt'"},
        {"/v1/completions", "{\"prompt\":[1,2,3]}", "prompt", "token-id prompts"},
        {"/v1/completions", "{\"prompt\":[\"a\",\"b\"]}", "prompt", "batches"},
        {"/v1/completions", "{\"prompt\":\"x\",\"best_of\":2}", "best_of", "unsupported parameter 'best_of'"},
        {"/v1/completions", "{\"prompt\":\"x\",\"echo\":true}", "echo", "unsupported parameter 'echo'"},
        {"/v1/completions", "{\"prompt\":\"x\",\"suffix\":\"end\"}", "suffix", "unsupported parameter 'suffix'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(http_do("POST", port, bad[i].path, bad[i].body, &b, NULL), 400);
        check_error(b, "invalid_request_error", bad[i].param);
        if (!strstr(b, bad[i].words)) fail_msg("%s %s: %s lacks '%s'", bad[i].path, bad[i].body, b, bad[i].words);
        free(b);
    }
    assert_int_equal(f.calls, calls); /* no rejected request reached the backend */
    assert_int_equal(http_do("GET", port, "/v1/completions", NULL, &b, NULL), 405);
    free(b);
    st_serve_stop(s);
}

typedef struct {
    int port;
    int ok;
} client_arg;

static void *client_main(void *a) {
    client_arg *c = a;
    for (int i = 0; i < 3; i++) {
        char *b;
        if (http_do("POST", c->port, "/v1/chat/completions",
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"par\"}]}", &b, NULL) == 200 &&
            strstr(b, "echo: par"))
            c->ok++;
        free(b);
    }
    return NULL;
}

static void test_serialised_backend(void **state) {
    (void)state;
    fake_ctx f = {0};
    f.slow_ms = 20; /* widen the window in which overlapping calls would be seen */
    st_server *s = start(&f, 0);
    pthread_t th[6];
    client_arg ca[6];
    for (int i = 0; i < 6; i++) {
        ca[i].port = st_serve_port(s);
        ca[i].ok = 0;
        pthread_create(&th[i], NULL, client_main, &ca[i]);
    }
    int ok = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        ok += ca[i].ok;
    }
    assert_int_equal(ok, 18);
    assert_int_equal(f.calls, 18);
    assert_int_equal(f.max_inflight, 1);
    st_serve_stop(s);
}

/* The model backend on the real model: no silent truncation. SmolLM2's context is 8192 tokens. */
static void test_model_backend_context(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", st_test_model_dir());
    if (access(path, R_OK) != 0) ST_SKIP_MISSING(path);
    st_model *m = NULL;
    assert_int_equal(st_model_load(path, &m), ST_OK);
    assert_int_equal(m->config.max_position_embeddings, 8192);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    st_chat_message msg = {"user", "Hi"};
    st_serve_params p = {9000, 0.0f, 1.0f, 0, 0, 1, 0, NULL, 0, NULL, 0, NULL, 0};
    st_serve_reply r;
    assert_int_equal(st_serve_model_backend(ic, &msg, 1, &p, &r), ST_ERR_ARG);
    const char *e = st_last_error();
    if (!strstr(e, "max_tokens 9000 + prompt ") || !strstr(e, " tokens exceeds the context length 8192"))
        fail_msg("unexpected error: %s", e);
    assert_int_equal(r.context_exceeded, 1);
    /* /v1/completions with an empty prompt: its own message, not a context-length error */
    st_chat_message empty = {"user", ""};
    p.raw_prompt = 1;
    assert_int_equal(st_serve_model_backend(ic, &empty, 1, &p, &r), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "the prompt is empty"));
    assert_int_equal(r.context_exceeded, 0);
    p.raw_prompt = 0;
    /* a prompt longer than the context: ~10000 tokens of " a" */
    size_t n = 20000;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i += 2) memcpy(big + i, " a", 2);
    big[n] = 0;
    st_chat_message bm = {"user", big};
    p.max_tokens = 1;
    assert_int_equal(st_serve_model_backend(ic, &bm, 1, &p, &r), ST_ERR_ARG);
    if (!strstr(st_last_error(), "exceeds the context length 8192")) fail_msg("unexpected error: %s", st_last_error());
    free(big);
    /* fits: 1 new token */
    assert_int_equal(st_serve_model_backend(ic, &msg, 1, &p, &r), ST_OK);
    assert_int_equal(r.completion_tokens, 1);
    free(r.text);

    /* "stop": generation ends at the token that completes the stop string, not at max_tokens */
    st_chat_message cm = {"user", "Count from 1 to 30, separated by commas."};
    p.max_tokens = 48;
    st_serve_reply full, cut;
    assert_int_equal(st_serve_model_backend(ic, &cm, 1, &p, &full), ST_OK);
    const size_t fl = strlen(full.text);
    if (fl < 16) fail_msg("reply too short to test stop strings: '%s'", full.text);
    char stop[4];
    memcpy(stop, full.text + fl / 2, 3); /* a string the greedy reply reaches half-way */
    stop[3] = 0;
    const char *stops[1] = {stop};
    p.stops = stops;
    p.n_stops = 1;
    assert_int_equal(st_serve_model_backend(ic, &cm, 1, &p, &cut), ST_OK);
    assert_non_null(strstr(cut.text, stop));
    assert_int_equal(strncmp(cut.text, full.text, strlen(cut.text)), 0); /* same greedy prefix */
    assert_true(strlen(cut.text) < fl);
    assert_true(cut.completion_tokens < full.completion_tokens);
    assert_int_equal(cut.finish_length, 0);
    /* it ends with the token completing the first occurrence (no token is longer than 16 bytes) */
    const size_t end = (size_t)(strstr(full.text, stop) - full.text) + strlen(stop);
    assert_true(strlen(cut.text) >= end && strlen(cut.text) < end + 16);
    free(full.text);
    free(cut.text);
    st_infer_ctx_free(ic);
    st_model_free(m);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models_and_chat),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_stop_completions_unsupported),
        cmocka_unit_test(test_serialised_backend),
        cmocka_unit_test(test_model_backend_context),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return r;
}
