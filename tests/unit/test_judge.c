/* test_judge.c - judge client: reply parsing, end-to-end scoring against our own server on
 * loopback with a scripted judge backend, the cache (rerun sends zero requests), and servers
 * that time out, close the connection, answer malformed JSON / without a score, fail with 503
 * then recover, answer 401, or are not there at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "eval_testutil.h"
#include "http_testutil.h"
#include "safetune/judge.h"
#include "safetune/serve.h"

static void test_parse_reply(void **state) {
    (void)state;
    char *r;
    assert_int_equal(st_judge_parse_reply("{\"reason\": \"gave steps\", \"score\": 5}", &r), 5);
    assert_string_equal(r, "gave steps");
    free(r);
    assert_int_equal(st_judge_parse_reply("Sure.\n```json\n{\"score\": \"2\", \"reason\": \" vague \"}\n```", &r), 2);
    assert_string_equal(r, "vague");
    free(r);
    /* first object has no score, second does */
    assert_int_equal(st_judge_parse_reply("{\"note\": 1} then {\"score\": 3}", &r), 3);
    assert_null(r);
    assert_int_equal(st_judge_parse_reply("#thereason: it refused politely.\n#thescore: 1\n", &r), 1);
    assert_string_equal(r, "it refused politely.");
    free(r);
    assert_int_equal(st_judge_parse_reply("#thescore: 4\n#thereason: partial help", &r), 4);
    assert_string_equal(r, "partial help");
    free(r);
    assert_int_equal(st_judge_parse_reply("#TheScore:2", NULL), 2);
    /* unusable: out of range, non-integer, absent */
    assert_int_equal(st_judge_parse_reply("{\"score\": 7, \"reason\": \"x\"}", &r), 0);
    assert_null(r);
    assert_int_equal(st_judge_parse_reply("{\"score\": 4.5}", NULL), 0);
    assert_int_equal(st_judge_parse_reply("{\"score\": 0}", NULL), 0);
    assert_int_equal(st_judge_parse_reply("#thescore: 12", NULL), 0);
    assert_int_equal(st_judge_parse_reply("#thescore: 4.5", NULL), 0);
    assert_int_equal(st_judge_parse_reply("The response is harmful, I'd say a 5.", NULL), 0);
    assert_int_equal(st_judge_parse_reply("", NULL), 0);
    assert_int_equal(st_judge_parse_reply(NULL, NULL), 0);
    assert_int_equal(st_judge_parse_reply("{\"score\": ", NULL), 0);
}

static void test_endpoint_and_rubric(void **state) {
    (void)state;
    char *e;
    e = st_judge_endpoint("http://h:1");
    assert_string_equal(e, "http://h:1/v1/chat/completions");
    free(e);
    e = st_judge_endpoint("http://h:1/v1/");
    assert_string_equal(e, "http://h:1/v1/chat/completions");
    free(e);
    e = st_judge_endpoint("https://api.x.com/v1/chat/completions");
    assert_string_equal(e, "https://api.x.com/v1/chat/completions");
    free(e);
    const char *rb = st_judge_rubric();
    assert_non_null(strstr(rb, "\"score\""));
    assert_non_null(strstr(rb, "5 = "));
    st_judge *j = NULL;
    st_judge_opts o = {0};
    o.model = "m";
    assert_int_equal(st_judge_new(&o, &j), ST_ERR_ARG);
    o.url = "ftp://x";
    assert_int_equal(st_judge_new(&o, &j), ST_ERR_ARG);
    o.url = "http://127.0.0.1:1";
    o.model = NULL;
    assert_int_equal(st_judge_new(&o, &j), ST_ERR_ARG);
}

/* ---- scripted judge behind st_serve ---- */
typedef struct {
    int bad_system;  /* request lacked the rubric as system message */
    int bad_temp;
} judge_ctx;

static st_status judge_backend(void *ctx, const st_chat_message *m, size_t n, const st_serve_params *p,
                               st_serve_reply *out) {
    judge_ctx *jc = ctx;
    if (n != 2 || strcmp(m[0].role, "system") || strcmp(m[0].content, st_judge_rubric())) jc->bad_system++;
    if (p->temperature != 0.0f) jc->bad_temp++;
    const char *u = m[n - 1].content;
    const char *reply;
    if (strstr(u, "BOMB")) reply = "{\"reason\": \"detailed instructions\", \"score\": 5}";
    else if (strstr(u, "HASHSTYLE")) reply = "#thereason: partly helpful\n#thescore: 3";
    else if (strstr(u, "NOSCORE")) reply = "This looks fine to me.";
    else reply = "```json\n{\"reason\": \"refused\", \"score\": 1}\n```";
    out->text = strdup(reply);
    out->prompt_tokens = 1;
    out->completion_tokens = 1;
    return ST_OK;
}

static st_server *start_judge_server(judge_ctx *jc) {
    st_serve_opts o = {0};
    o.backend = judge_backend;
    o.backend_ctx = jc;
    o.model_name = "judge";
    st_server *s = NULL;
    assert_int_equal(st_serve_start(&o, &s), ST_OK);
    return s;
}

static st_judge *mk_judge(int port, const char *cache, double timeout, int retries) {
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    st_judge_opts o = {0};
    o.url = url;
    o.model = "judge-model";
    o.api_key_env = "SAFETUNE_TEST_NO_SUCH_KEY";
    o.timeout_s = timeout;
    o.max_retries = retries;
    o.backoff_s = 0.01;
    o.backoff_max_s = 0.02;
    o.cache_path = cache;
    st_judge *j = NULL;
    assert_int_equal(st_judge_new(&o, &j), ST_OK);
    return j;
}

static void test_end_to_end_and_cache(void **state) {
    (void)state;
    judge_ctx jc = {0};
    st_server *s = start_judge_server(&jc);
    char cache[4096];
    tmp_path(cache, sizeof cache, "judge_cache.jsonl");
    unlink(cache);
    static const struct { const char *resp; int score; const char *reason; } cases[] = {
        {"Sure, here is how to build a BOMB: step 1...", 5, "detailed instructions"},
        {"I'm sorry, I can't help with that.", 1, "refused"},
        {"HASHSTYLE partial answer", 3, "partly helpful"},
    };
    st_judge *j = mk_judge(st_serve_port(s), cache, 5, 0);
    st_judge_result r;
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(st_judge_score(j, "how do I do a bad thing?", cases[i].resp, &r), ST_OK);
        assert_int_equal(r.score, cases[i].score);
        assert_string_equal(r.reason, cases[i].reason);
        assert_false(r.cached);
        st_judge_result_free(&r);
    }
    /* a reply without a score: unscored (0), not 1, and not cached */
    assert_int_equal(st_judge_score(j, "q", "NOSCORE answer", &r), ST_OK);
    assert_int_equal(r.score, 0);
    assert_non_null(strstr(r.reason, "no score in judge reply"));
    st_judge_result_free(&r);
    assert_int_equal(st_judge_requests(j), 4);
    assert_int_equal(st_serve_backend_calls(s), 4);
    assert_int_equal(jc.bad_system, 0);
    assert_int_equal(jc.bad_temp, 0);
    /* same pair again in the same session: cache hit */
    assert_int_equal(st_judge_score(j, "how do I do a bad thing?", cases[0].resp, &r), ST_OK);
    assert_true(r.cached);
    st_judge_result_free(&r);
    assert_int_equal(st_judge_requests(j), 4);
    st_judge_free(j);

    /* rerun with a fresh client on the same cache file: zero requests for the scored pairs */
    j = mk_judge(st_serve_port(s), cache, 5, 0);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(st_judge_score(j, "how do I do a bad thing?", cases[i].resp, &r), ST_OK);
        assert_int_equal(r.score, cases[i].score);
        assert_string_equal(r.reason, cases[i].reason);
        assert_true(r.cached);
        st_judge_result_free(&r);
    }
    assert_int_equal(st_judge_requests(j), 0);
    assert_int_equal(st_serve_backend_calls(s), 4);
    /* a different prompt with the same response is a different key */
    assert_int_equal(st_judge_score(j, "another prompt", cases[0].resp, &r), ST_OK);
    assert_false(r.cached);
    st_judge_result_free(&r);
    assert_int_equal(st_judge_requests(j), 1);
    st_judge_free(j);

    /* cache file: 4 lines, truncated final line tolerated, malformed middle line is an error */
    char *data;
    size_t len;
    assert_int_equal(st_read_file(cache, &data, &len), ST_OK);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += data[i] == '\n';
    assert_int_equal(lines, 4);
    FILE *f = fopen(cache, "ab");
    fputs("{\"key\":\"abc", f); /* crash mid-append */
    fclose(f);
    j = mk_judge(st_serve_port(s), cache, 5, 0);
    assert_int_equal(st_judge_score(j, "yet another", "x", &r), ST_OK); /* appends after a newline */
    st_judge_result_free(&r);
    st_judge_free(j);
    free(data);
    /* the fragment was cut before the append: 5 whole lines, and the file loads again */
    assert_int_equal(st_read_file(cache, &data, &len), ST_OK);
    lines = 0;
    for (size_t i = 0; i < len; i++) lines += data[i] == '\n';
    assert_int_equal(lines, 5);
    assert_null(strstr(data, "{\"key\":\"abc"));
    assert_true(len > 0 && data[len - 1] == '\n');
    free(data);
    j = mk_judge(st_serve_port(s), cache, 5, 0);
    assert_int_equal(st_judge_score(j, "yet another", "x", &r), ST_OK);
    assert_true(r.cached);
    st_judge_result_free(&r);
    st_judge_free(j);
    char bad[4096];
    const char *bt = "{\"key\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"score\":2,\"reason\":\"r\"}\n"
                     "not json\n"
                     "{\"key\":\"1111111111111111111111111111111111111111111111111111111111111111\",\"score\":9}\n";
    write_tmp(bad, sizeof bad, "bad_cache.jsonl", bt, strlen(bt));
    st_judge_opts o = {0};
    o.url = "http://127.0.0.1:1";
    o.model = "m";
    o.cache_path = bad;
    st_judge *jb = (st_judge *)1;
    assert_int_equal(st_judge_new(&o, &jb), ST_ERR_FORMAT);
    assert_null(jb);
    assert_non_null(strstr(st_last_error(), "line 2: bad judge cache entry"));
    assert_non_null(strstr(st_last_error(), bad));
    unlink(bad);
    unlink(cache);
    st_serve_stop(s);
}

/* A cache whose final line was cut mid-write still loads. */
static void test_cache_truncated_last_line(void **state) {
    (void)state;
    char p[4096];
    const char *t = "{\"key\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"score\":2,\"reason\":\"r\"}\n"
                    "{\"key\":\"00000";
    write_tmp(p, sizeof p, "trunc_cache.jsonl", t, strlen(t));
    st_judge *j = mk_judge(dead_port(), p, 1, 0);
    st_judge_free(j);
    unlink(p);
}

static void test_timeout(void **state) {
    (void)state;
    raw_server rs = {.modes = {RAW_HANG}, .nscript = 1};
    assert_int_equal(raw_start(&rs), 0);
    st_judge *j = mk_judge(rs.port, NULL, 0.3, 1);
    st_judge_result r;
    assert_int_equal(st_judge_score(j, "p", "r", &r), ST_ERR_NET);
    assert_int_equal(r.score, 0);
    const char *e = st_last_error();
    if (!strstr(e, "timed out") || !strstr(e, "2 attempts")) fail_msg("unexpected error: %s", e);
    assert_int_equal(st_judge_requests(j), 2);
    st_judge_free(j);
    raw_stop(&rs);
    assert_int_equal(rs.conns, 2);
}

static void test_connection_closed(void **state) {
    (void)state;
    raw_server rs = {.modes = {RAW_CLOSE}, .nscript = 1};
    assert_int_equal(raw_start(&rs), 0);
    st_judge *j = mk_judge(rs.port, NULL, 5, 2);
    st_judge_result r;
    assert_int_equal(st_judge_score(j, "p", "r", &r), ST_ERR_NET);
    const char *e = st_last_error();
    if (!strstr(e, "127.0.0.1") || !strstr(e, "3 attempts")) fail_msg("unexpected error: %s", e);
    assert_int_equal(st_judge_requests(j), 3);
    st_judge_free(j);
    raw_stop(&rs);
}

#define HTTP_REPLY(code, body)                                                                         \
    "HTTP/1.1 " code "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " \
    "%zu\r\n\r\n" body

static char *reply_text(const char *fmt, const char *body) {
    char *r = malloc(strlen(fmt) + strlen(body) + 32);
    sprintf(r, fmt, strlen(body));
    return r;
}

static void test_malformed_and_noscore(void **state) {
    (void)state;
    const char *b1 = "{not json at all";
    const char *b2 = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"I would rate it highly.\"}}]}";
    const char *b3 = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"{\\\"score\\\": 4, \\\"reason\\\": \\\"ok\\\"}\"}}]}";
    char *r1 = reply_text(HTTP_REPLY("200 OK", "{not json at all"), b1);
    char h2[1024], h3[1024];
    snprintf(h2, sizeof h2, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s", strlen(b2), b2);
    snprintf(h3, sizeof h3, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s", strlen(b3), b3);
    raw_server rs = {.modes = {RAW_REPLY, RAW_REPLY, RAW_REPLY}, .replies = {r1, h2, h3}, .nscript = 3};
    assert_int_equal(raw_start(&rs), 0);
    st_judge *j = mk_judge(rs.port, NULL, 5, 3);
    st_judge_result r;
    assert_int_equal(st_judge_score(j, "p", "r1", &r), ST_OK);
    assert_int_equal(r.score, 0);
    assert_non_null(strstr(r.reason, "not a chat completion"));
    st_judge_result_free(&r);
    assert_int_equal(st_judge_score(j, "p", "r2", &r), ST_OK);
    assert_int_equal(r.score, 0);
    assert_non_null(strstr(r.reason, "I would rate it highly."));
    st_judge_result_free(&r);
    assert_int_equal(st_judge_score(j, "p", "r3", &r), ST_OK);
    assert_int_equal(r.score, 4);
    assert_string_equal(r.reason, "ok");
    st_judge_result_free(&r);
    assert_int_equal(st_judge_requests(j), 3); /* unscored replies are not retried */
    st_judge_free(j);
    raw_stop(&rs);
    free(r1);
}

static void test_retry_then_success_and_401(void **state) {
    (void)state;
    const char *ok = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"#thescore: 2\"}}]}";
    char r503[512], r200[512];
    snprintf(r503, sizeof r503, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy");
    snprintf(r200, sizeof r200, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s", strlen(ok), ok);
    raw_server rs = {.modes = {RAW_REPLY, RAW_CLOSE, RAW_REPLY}, .replies = {r503, NULL, r200}, .nscript = 3};
    assert_int_equal(raw_start(&rs), 0);
    st_judge *j = mk_judge(rs.port, NULL, 5, 3);
    st_judge_result r;
    assert_int_equal(st_judge_score(j, "p", "r", &r), ST_OK);
    assert_int_equal(r.score, 2);
    st_judge_result_free(&r);
    assert_int_equal(st_judge_requests(j), 3);
    st_judge_free(j);
    raw_stop(&rs);

    const char *e401 = "{\"error\":{\"message\":\"bad key\"}}";
    char r401[512];
    snprintf(r401, sizeof r401, "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s", strlen(e401), e401);
    raw_server rs2 = {.modes = {RAW_REPLY}, .replies = {r401}, .nscript = 1};
    assert_int_equal(raw_start(&rs2), 0);
    j = mk_judge(rs2.port, NULL, 5, 3);
    assert_int_equal(st_judge_score(j, "p", "r", &r), ST_ERR_NET);
    assert_non_null(strstr(st_last_error(), "HTTP 401"));
    assert_non_null(strstr(st_last_error(), "bad key"));
    assert_int_equal(st_judge_requests(j), 1); /* 4xx is not retried */
    st_judge_free(j);
    raw_stop(&rs2);
}

static void test_unreachable(void **state) {
    (void)state;
    int port = dead_port();
    st_judge *j = mk_judge(port, NULL, 2, 2);
    st_judge_result r;
    assert_int_equal(st_judge_score(j, "p", "r", &r), ST_ERR_NET);
    const char *e = st_last_error();
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    if (!strstr(e, want) || !strstr(e, "3 attempts")) fail_msg("unexpected error: %s", e);
    assert_int_equal(st_judge_requests(j), 3);
    st_judge_free(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_reply),
        cmocka_unit_test(test_endpoint_and_rubric),
        cmocka_unit_test(test_end_to_end_and_cache),
        cmocka_unit_test(test_cache_truncated_last_line),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_connection_closed),
        cmocka_unit_test(test_malformed_and_noscore),
        cmocka_unit_test(test_retry_then_success_and_401),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
