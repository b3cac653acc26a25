/* test_args.c - CLI option parsing (src/cli/args.c): --name value, --name=value, flags,
 * positionals, range/type errors, --config JSON with flags overriding it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.c" /* the CLI is not part of the library */

typedef struct {
    const char *model, *out;
    int n, chat;
    float t;
    uint64_t seed;
} vals;

static st_args_spec make_spec(vals *v, st_opt *o) {
    st_opt init[] = {
        {"model", ST_OPT_STR, &v->model, "MODEL", "model", 0, 0, 0},
        {"max-new-tokens", ST_OPT_INT, &v->n, "N", "n", 1, 1000, 0},
        {"temperature", ST_OPT_FLOAT, &v->t, "T", "t", 0, 100, 0},
        {"seed", ST_OPT_U64, &v->seed, "S", "s", 0, 0, 0},
        {"chat", ST_OPT_FLAG, &v->chat, NULL, "chat", 0, 0, 0},
        {"output", ST_OPT_STR, &v->out, "FILE", "out", 0, 0, 0},
    };
    memcpy(o, init, sizeof init);
    st_args_spec s = {"prog", "[options] X", NULL, o, 6, 0, 1, "X", 0};
    return s;
}

static int parse(vals *v, st_args *a, int argc, const char **argv) {
    static st_opt o[6];
    memset(v, 0, sizeof *v);
    v->n = 16;
    v->t = 0.5f;
    st_args_spec s = make_spec(v, o);
    return st_args_parse(&s, argc, (char **)argv, a);
}

static void test_forms(void **state) {
    (void)state;
    vals v;
    st_args a;
    const char *argv[] = {"prog", "--model", "m.gguf", "--max-new-tokens=12", "pos", "--chat",
                          "--temperature", "0.25", "--seed=18446744073709551615"};
    assert_int_equal(parse(&v, &a, 9, argv), 0);
    assert_string_equal(v.model, "m.gguf");
    assert_int_equal(v.n, 12);
    assert_int_equal(v.chat, 1);
    assert_float_equal(v.t, 0.25, 1e-7);
    assert_true(v.seed == UINT64_MAX);
    assert_int_equal(a.n_pos, 1);
    assert_string_equal(a.pos[0], "pos");
    assert_null(v.out);
    st_args_free(&a);
}

static void test_errors(void **state) {
    (void)state;
    vals v;
    st_args a;
    const char *bad[][3] = {
        {"prog", "--max-new-tokens", "abc"}, {"prog", "--max-new-tokens", "0"},
        {"prog", "--temperature", "nan"},    {"prog", "--bogus", "1"},
        {"prog", "-x", "1"},                 {"prog", "--seed", "-3"},
        {"prog", "a", "b"},                  {"prog", "--max_new_tokens", "3"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(parse(&v, &a, 3, bad[i]), 2);
    const char *missing[] = {"prog", "--model"};
    assert_int_equal(parse(&v, &a, 2, missing), 2);
    const char *help[] = {"prog", "--help"};
    assert_int_equal(parse(&v, &a, 2, help), -1);
}

static void test_config_and_override(void **state) {
    (void)state;
    const char *dir = getenv("SAFETUNE_TEST_TMP");
    char path[512];
    snprintf(path, sizeof path, "%s/args_cfg.json", dir ? dir : "/tmp");
    const char *cfg = "{\"model\": \"cfg.gguf\", \"max_new_tokens\": 99, \"temperature\": 0.7, \"chat\": true}";
    assert_int_equal(st_write_file_atomic(path, cfg, strlen(cfg)), ST_OK);
    vals v;
    st_args a;
    const char *argv[] = {"prog", "--max-new-tokens", "5", "--config", path};
    assert_int_equal(parse(&v, &a, 5, argv), 0);
    assert_string_equal(v.model, "cfg.gguf"); /* from the file */
    assert_int_equal(v.n, 5);                 /* flag wins even though it came first */
    assert_float_equal(v.t, 0.7, 1e-6);
    assert_int_equal(v.chat, 1);
    st_args_free(&a);

    const char *bads[] = {"{\"nope\": 1}", "{\"max_new_tokens\": \"x\"}", "{\"max_new_tokens\": 2.5}",
                          "[1,2]", "{\"model\": 3}", "{bad json"};
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        assert_int_equal(st_write_file_atomic(path, bads[i], strlen(bads[i])), ST_OK);
        assert_int_equal(parse(&v, &a, 5, argv), 2);
        st_args_free(&a);
    }
    /* a --config file that cannot be read is a runtime error (1), like any missing input file */
    const char *nofile[] = {"prog", "--config=/nonexistent/x.json"};
    assert_int_equal(parse(&v, &a, 2, nofile), 1);
}

/* --config messages: invalid JSON located by line:column, a key given twice refused with both
 * lines (also deep inside, with its path; never for equal keys of sibling objects or text inside
 * strings), an unknown key or flag with the closest name, and config_key telling which values came
 * from the file (a flag overrides it). Every message is also st_last_error() (the text an MPI
 * agreement hands the other ranks). */
static void test_config_messages(void **state) {
    (void)state;
    const char *dir = getenv("SAFETUNE_TEST_TMP");
    char path[512];
    snprintf(path, sizeof path, "%s/args_msg.json", dir ? dir : "/tmp");
    vals v;
    st_args a;
    const char *argv[] = {"prog", "--config", path};
    static const struct {
        const char *text, *msg;
    } cases[] = {
        {"{\"model\": \"a\",\n \"max_new_tokens\": 3,\n \"model\": \"b\"}",
         "args_msg.json: line 3: key 'model' appears twice in one object (first on line 1); keep one"},
        {"{\"max_new_tokns\": 3}", "args_msg.json: unknown key 'max_new_tokns' (did you mean 'max_new_tokens'?)"},
        {"{\"max-new-tokns\": 3}", "unknown key 'max-new-tokns' (did you mean 'max-new-tokens'?)"},
        {"{\"zzzzzzzz\": 3}", "args_msg.json: unknown key 'zzzzzzzz'"},
        {"{\n  \"model\": x}", "args_msg.json: line 2, column 12: invalid JSON"},
        {"{\"model\": \"a\"", "args_msg.json: line 1, column 14: invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(st_write_file_atomic(path, cases[i].text, strlen(cases[i].text)), ST_OK);
        assert_int_equal(parse(&v, &a, 3, argv), 2);
        if (!strstr(st_last_error(), cases[i].msg)) fail_msg("case %zu: got '%s'", i, st_last_error());
        st_args_free(&a);
    }
    assert_null(strstr(st_last_error(), "did you mean")); /* nothing close to zzzzzzzz... (case 4 checked above) */
    const char *flag[] = {"prog", "--temprature", "1"};
    assert_int_equal(parse(&v, &a, 3, flag), 2);
    assert_non_null(strstr(st_last_error(), "unknown option '--temprature' (did you mean '--temperature'?)"));

    /* which values came from the file */
    const char *cfg = "{\"max_new_tokens\": 7, \"temperature\": 0.25}";
    assert_int_equal(st_write_file_atomic(path, cfg, strlen(cfg)), ST_OK);
    const char *over[] = {"prog", "--config", path, "--temperature", "0.5"};
    assert_int_equal(parse(&v, &a, 5, over), 0);
    assert_ptr_equal(a.config, path);
    assert_non_null(a.config_key);
    assert_string_equal(a.config_key[1], "max_new_tokens"); /* as the file wrote it */
    assert_null(a.config_key[2]);                            /* the flag won */
    assert_null(a.config_key[0]);                            /* absent */
    assert_float_equal(v.t, 0.5, 1e-7);
    st_args_free(&a);
}

/* st_json_parse_checked on its own: duplicates found at any depth with their path, none where
 * equal keys sit in different objects or inside string values (escaped quotes, braces), and the
 * edit-distance hint's bounds. */
static void test_json_checked(void **state) {
    (void)state;
    cJSON *j = NULL;
    assert_int_equal(st_json_parse_checked("{\"a\": [{\"x\": 1}, {\"x\": 1, \"y\": {\"z\": 1,\n\"z\": 2}}]}", "f.json", &j),
                     ST_ERR_FORMAT);
    assert_null(j);
    assert_non_null(strstr(st_last_error(), "f.json: line 2: key 'a[1].y.z' appears twice in one object (first on line 1)"));
    const char *fine = "{\"s\": \"{\\\"k\\\": 1, \\\"k\\\": 2}\", \"t\": {\"k\": 1}, \"u\": {\"k\": 2}, \"k\": [\"k\", \"k\"],"
                       " \"v\": [{\"k\": 1}, {\"k\": 2}]}";
    assert_int_equal(st_json_parse_checked(fine, "f.json", &j), ST_OK);
    assert_non_null(j);
    cJSON_Delete(j);
    assert_int_equal(st_json_parse_checked("[{\"k\": 1, \"k\": 1}]", "g.json", &j), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "g.json: line 1: key '[0].k' appears twice"));
    assert_int_equal(st_edit_distance("lr", "LR"), 0);
    assert_int_equal(st_edit_distance("kitten", "sitting"), 3);
    const char *names[] = {"lr", "lora_r", "max_steps"};
    assert_string_equal(st_closest_name("max_step", names, 3), "max_steps");
    assert_null(st_closest_name("batch", names, 3));
}

/* --help text of spec into a heap string (caller frees). */
static char *usage_text(const st_args_spec *s) {
    FILE *f = tmpfile();
    assert_non_null(f);
    st_args_usage(s, f);
    long n = ftell(f);
    rewind(f);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return buf;
}

/* The line of the usage text that describes --name. */
static void option_line(const char *txt, const char *name, char *line, size_t cap) {
    char key[64];
    snprintf(key, sizeof key, "  --%s ", name);
    const char *p = strstr(txt, key);
    assert_non_null(p);
    const char *e = strchr(p, '\n');
    snprintf(line, cap, "%.*s", (int)(e - p), p);
}

/* Each option's default is shown from its current value (printed before parsing), unless its help
 * names one itself; flags and unset strings show none. */
static void test_usage_defaults(void **state) {
    (void)state;
    const char *model = NULL, *prec = "fp32";
    int n = 16, flag = 0;
    float lr = 1e-5f;
    uint64_t seed = 42;
    st_opt o[] = {
        {"model", ST_OPT_STR, &model, "MODEL", "model file", 0, 0, 0},
        {"precision", ST_OPT_STR, &prec, "P", "fp32|bf16", 0, 0, 0},
        {"n", ST_OPT_INT, &n, "N", "count", 0, 100, 0},
        {"lr", ST_OPT_FLOAT, &lr, "X", "learning rate", 0, 1, 0},
        {"seed", ST_OPT_U64, &seed, "S", "seed", 0, 0, 0},
        {"ctx", ST_OPT_INT, &n, "N", "context (default: the model's)", 0, 0, 0},
        {"quiet", ST_OPT_FLAG, &flag, NULL, "no progress", 0, 0, 0},
    };
    st_args_spec s = {"prog", NULL, NULL, o, 7, 0, 0, NULL, 0};
    char *txt = usage_text(&s), line[256];
    option_line(txt, "model", line, sizeof line);
    assert_null(strstr(line, "default"));
    option_line(txt, "precision", line, sizeof line);
    assert_non_null(strstr(line, "fp32|bf16 (default: fp32)"));
    option_line(txt, "n", line, sizeof line);
    assert_non_null(strstr(line, "count (default: 16)"));
    option_line(txt, "lr", line, sizeof line);
    assert_non_null(strstr(line, "learning rate (default: 1e-05)"));
    option_line(txt, "seed", line, sizeof line);
    assert_non_null(strstr(line, "seed (default: 42)"));
    option_line(txt, "ctx", line, sizeof line);
    assert_non_null(strstr(line, "context (default: the model's)"));
    assert_null(strstr(line, "(default: 16)"));
    option_line(txt, "quiet", line, sizeof line);
    assert_null(strstr(line, "default"));
    assert_non_null(strstr(txt, "--config FILE"));
    free(txt);
    /* own_config: --config is an ordinary option (no JSON file of option values) */
    const char *cfg = NULL;
    st_opt o2[] = {{"config", ST_OPT_STR, &cfg, "FILE", "study config", 0, 0, 0}};
    st_args_spec s2 = {"prog", NULL, NULL, o2, 1, 0, 0, NULL, 1};
    txt = usage_text(&s2);
    assert_null(strstr(txt, "JSON object of option values"));
    free(txt);
    st_args a;
    const char *argv[] = {"prog", "--config", "/nonexistent/study.json"};
    assert_int_equal(st_args_parse(&s2, 3, (char **)argv, &a), 0);
    assert_string_equal(cfg, "/nonexistent/study.json");
    st_args_free(&a);
}

/* ST_OPT_CHOICE: one of the '|'-separated words of metavar, from flags and config files alike;
 * anything else (a prefix, an empty value) is a usage error naming the option and the value. */
static void test_choice(void **state) {
    (void)state;
    const char *prec = "fp32";
    st_opt o[] = {{"precision", ST_OPT_CHOICE, &prec, "fp32|bf16|f", "matmuls", 0, 0, 0}};
    st_args_spec s = {"prog", NULL, NULL, o, 1, 0, 0, NULL, 0};
    st_args a;
    const char *ok1[] = {"prog", "--precision", "bf16"};
    assert_int_equal(st_args_parse(&s, 3, (char **)ok1, &a), 0);
    assert_string_equal(prec, "bf16");
    st_args_free(&a);
    const char *ok2[] = {"prog", "--precision=f"};
    assert_int_equal(st_args_parse(&s, 2, (char **)ok2, &a), 0);
    assert_string_equal(prec, "f");
    st_args_free(&a);
    const char *bad[] = {"fp", "bf16x", "", "FP32", "fp32|bf16"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[] = {"prog", "--precision", bad[i]};
        prec = "fp32";
        assert_int_equal(st_args_parse(&s, 3, (char **)argv, &a), 2);
        assert_string_equal(prec, "fp32");
        st_args_free(&a);
    }
    const char *dir = getenv("SAFETUNE_TEST_TMP");
    char path[512];
    snprintf(path, sizeof path, "%s/choice_%d.json", dir ? dir : "/tmp", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"precision\": \"fp16\"}", f);
    fclose(f);
    const char *cfg[] = {"prog", "--config", path};
    assert_int_equal(st_args_parse(&s, 3, (char **)cfg, &a), 2);
    st_args_free(&a);
    f = fopen(path, "w");
    fputs("{\"precision\": \"bf16\"}", f);
    fclose(f);
    assert_int_equal(st_args_parse(&s, 3, (char **)cfg, &a), 0);
    assert_string_equal(prec, "bf16");
    st_args_free(&a);
    unlink(path);
    prec = "fp32"; /* the config's copy is freed: print the help with the default back */
    char *txt = usage_text(&s);
    assert_non_null(strstr(txt, "--precision fp32|bf16|f"));
    assert_non_null(strstr(txt, "matmuls (default: fp32)"));
    free(txt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_config_and_override),
        cmocka_unit_test(test_config_messages),
        cmocka_unit_test(test_json_checked),
        cmocka_unit_test(test_usage_defaults),
        cmocka_unit_test(test_choice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
