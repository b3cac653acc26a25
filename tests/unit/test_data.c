/* test_data.c - dataset readers on the real shared files (row counts from MANIFEST.tsv, spot
 * checks of fields) and bad input (missing field, wrong type, malformed line, empty file) giving
 * one error naming the file and the line / array index + byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetune/data.h"
#include "testutil.h"

/* Rows column of MANIFEST.tsv for `file` (e.g. "alpaca/alpaca_5000.json"), -1 if absent. */
static long manifest_rows(const char *file) {
    char path[4096], line[4096];
    snprintf(path, sizeof path, "%s/MANIFEST.tsv", st_test_data_dir());
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long rows = -1;
    while (fgets(line, sizeof line, f)) {
        char *name = strtok(line, "\t"), *fn = strtok(NULL, "\t"), *r = strtok(NULL, "\t");
        if (name && fn && r && !strcmp(fn, file)) rows = atol(r);
    }
    fclose(f);
    return rows;
}

static int load_real(const char *rel, st_data_format fmt, st_dataset *ds) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", st_test_data_dir(), rel);
    if (access(path, R_OK) != 0) return 0;
    st_status s = st_dataset_load(path, fmt, ds);
    if (s) fprintf(stderr, "%s\n", st_last_error());
    assert_int_equal(s, ST_OK);
    return 1;
}

static void expect_msg(const st_conversation *c, size_t i, const char *role, const char *prefix,
                       int exact) {
    assert_true(i < c->n_msgs);
    assert_string_equal(c->msgs[i].role, role);
    if (exact) assert_string_equal(c->msgs[i].content, prefix);
    else assert_memory_equal(c->msgs[i].content, prefix, strlen(prefix));
}

static void test_alpaca_real(void **state) {
    (void)state;
    st_dataset ds;
    if (!load_real("alpaca/alpaca_5000.json", ST_DATA_AUTO, &ds)) ST_SKIP_MISSING("alpaca/alpaca_5000.json in the data folder");
    assert_int_equal(ds.format, ST_DATA_ALPACA);
    long want = manifest_rows("alpaca/alpaca_5000.json");
    assert_true(want > 0);
    assert_int_equal(ds.n, (size_t)want);
    assert_int_equal(ds.rows[0].n_msgs, 2);
    expect_msg(&ds.rows[0], 0, "user",
               "Are the two sentences below grammatically correct? Output yes or no.\n\n"
               "Sentence 1: I am going to the store.\nSentence 2: I goes to the store.", 1);
    expect_msg(&ds.rows[0], 1, "assistant", "No", 1);
    /* row 4 has an empty input: user is the instruction alone */
    expect_msg(&ds.rows[4], 0, "user", "Generate a new solution to address the global climate crisis.", 1);
    expect_msg(&ds.rows[4], 1, "assistant", "One solution to address the global climate crisis", 0);
    st_dataset_free(&ds);
}

static void test_dolly_real(void **state) {
    (void)state;
    st_dataset ds;
    if (!load_real("dolly/databricks-dolly-15k.prefix.jsonl", ST_DATA_DOLLY, &ds)) ST_SKIP_MISSING("dolly/databricks-dolly-15k.prefix.jsonl in the data folder");
    long want = manifest_rows("dolly/databricks-dolly-15k.prefix.jsonl");
    assert_true(want > 0);
    assert_int_equal(ds.n, (size_t)want);
    expect_msg(&ds.rows[0], 0, "user", "When did Virgin Australia start operating?\n\n"
               "Virgin Australia, the trading name of Virgin Australia Airlines Pty Ltd", 0);
    expect_msg(&ds.rows[0], 1, "assistant", "Virgin Australia commenced services on 31 August "
               "2000 as Virgin Blue, with two aircraft on a single route.", 1);
    expect_msg(&ds.rows[1], 0, "user", "Which is a species of fish? Tope or Rope", 1);
    expect_msg(&ds.rows[1], 1, "assistant", "Tope", 1);
    st_dataset_free(&ds);
    /* auto-detects dolly too */
    if (!load_real("dolly/databricks-dolly-15k.prefix.jsonl", ST_DATA_AUTO, &ds)) ST_SKIP_MISSING("dolly/databricks-dolly-15k.prefix.jsonl in the data folder");
    assert_int_equal(ds.format, ST_DATA_DOLLY);
    st_dataset_free(&ds);
}

static void test_orca_real(void **state) {
    (void)state;
    st_dataset ds;
    if (!load_real("orca/validation.jsonl", ST_DATA_AUTO, &ds)) ST_SKIP_MISSING("orca/validation.jsonl in the data folder");
    assert_int_equal(ds.format, ST_DATA_ORCA);
    long want = manifest_rows("orca/validation.jsonl");
    assert_true(want > 0);
    assert_int_equal(ds.n, (size_t)want); /* last line has no trailing newline */
    assert_int_equal(ds.rows[0].n_msgs, 3);
    expect_msg(&ds.rows[0], 0, "system", "You are an AI assistant. User will you give you a task.", 0);
    expect_msg(&ds.rows[0], 1, "user", "MM. Georges Colombier, Samad Seyidov", 0);
    expect_msg(&ds.rows[0], 2, "assistant", "Step 1: Identify the names", 0);
    st_dataset_free(&ds);
}

/* ---- synthetic files ---- */

static char g_path[4096];

static const char *write_tmp(const char *name, const char *text) {
    const char *dir = getenv("SAFETUNE_TEST_TMP");
    snprintf(g_path, sizeof g_path, "%s/%s", dir ? dir : "/tmp", name);
    FILE *f = fopen(g_path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return g_path;
}

/* Loading must fail with ST_ERR_FORMAT and a message containing the path and each needle. */
static void expect_error(const char *name, const char *text, st_data_format fmt,
                         const char *needle1, const char *needle2) {
    const char *p = write_tmp(name, text);
    st_dataset ds;
    st_status s = st_dataset_load(p, fmt, &ds);
    const char *msg = st_last_error();
    if (s != ST_ERR_FORMAT || !strstr(msg, p) || !strstr(msg, needle1) ||
        (needle2 && !strstr(msg, needle2)))
        fprintf(stderr, "unexpected: status %d, message: %s\n", (int)s, msg);
    assert_int_equal(s, ST_ERR_FORMAT);
    assert_non_null(strstr(msg, p));
    assert_non_null(strstr(msg, needle1));
    if (needle2) assert_non_null(strstr(msg, needle2));
    assert_null(strchr(msg, '\n')); /* one line */
    assert_null(ds.rows);
    unlink(p);
}

static void test_bad_jsonl(void **state) {
    (void)state;
    expect_error("d1.jsonl",
                 "{\"instruction\": \"a\", \"context\": \"\", \"response\": \"b\"}\n"
                 "\n"
                 "{\"instruction\": \"a\", \"context\": \"\"}\n",
                 ST_DATA_DOLLY, "line 3:", "missing field \"response\"");
    expect_error("d2.jsonl", "{\"instruction\": 5, \"response\": \"b\"}\n", ST_DATA_DOLLY,
                 "line 1:", "field \"instruction\" is a number, expected a string");
    expect_error("d3.jsonl",
                 "{\"instruction\": \"a\", \"response\": \"b\"}\n"
                 "{\"instruction\": \"a\", \"response\": \"b\"\n",
                 ST_DATA_DOLLY, "line 2: invalid JSON", NULL);
    expect_error("d4.jsonl", "{\"instruction\": \"a\", \"response\": \"b\"} x\n", ST_DATA_DOLLY,
                 "line 1: invalid JSON at column 39", NULL); /* the x */
    expect_error("d5.jsonl", "", ST_DATA_AUTO, "empty dataset", NULL);
    expect_error("d6.jsonl", "\n  \n\n", ST_DATA_DOLLY, "empty dataset", NULL);
    expect_error("d7.jsonl", "[1, 2]\n", ST_DATA_AUTO, "array index 0", "expected a JSON object");
    expect_error("d8.jsonl", "{\"foo\": 1}\n", ST_DATA_AUTO, "line 1:", "cannot tell the dataset format");
}

static void test_bad_json_array(void **state) {
    (void)state;
    const char *text = "[{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"},\n"
                       " {\"instruction\": \"c\", \"input\": \"d\"}]";
    char want[64];
    snprintf(want, sizeof want, "array index 1 (byte %d)", (int)(strstr(text, "\n {") + 2 - text));
    expect_error("a1.json", text, ST_DATA_ALPACA, want, "missing field \"output\"");
    const char *bad = "[{\"instruction\": \"a\", \"output\": \"b\"}, {\"instruction\": }]";
    snprintf(want, sizeof want, "array index 1 (byte %d): invalid JSON at byte %d",
             (int)(strstr(bad, ", {") + 2 - bad), (int)(strstr(bad, ": }") + 2 - bad));
    expect_error("a2.json", bad, ST_DATA_ALPACA, want, NULL);
    expect_error("a3.json", "[{\"instruction\": \"a\", \"output\": \"b\"}", ST_DATA_ALPACA,
                 "unterminated JSON array", NULL);
    expect_error("a4.json", "[]", ST_DATA_ALPACA, "empty dataset", NULL);
    expect_error("a5.json", "[{\"instruction\": \"a\", \"output\": [\"b\"]}]", ST_DATA_ALPACA,
                 "array index 0", "field \"output\" is an array");
    expect_error("a6.json", "[{\"instruction\": \"a\", \"output\": \"b\"}] x", ST_DATA_ALPACA,
                 "unexpected text after the JSON array", NULL);
}

static void test_messages_and_orca_forms(void **state) {
    (void)state;
    const char *p = write_tmp("m.jsonl",
        "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", "
        "\"content\": \"U\"}, {\"role\": \"assistant\", \"content\": \"A\"}]}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"u2\"}, {\"role\": \"assistant\", "
        "\"content\": \"a2\"}, {\"role\": \"user\", \"content\": \"u3\"}, {\"role\": "
        "\"assistant\", \"content\": \"a3\"}]}\n");
    st_dataset ds;
    assert_int_equal(st_dataset_load(p, ST_DATA_AUTO, &ds), ST_OK);
    assert_int_equal(ds.format, ST_DATA_MESSAGES);
    assert_int_equal(ds.n, 2);
    expect_msg(&ds.rows[0], 0, "system", "S", 1);
    expect_msg(&ds.rows[1], 3, "assistant", "a3", 1);
    st_dataset_free(&ds);

    p = write_tmp("o.jsonl",
        "{\"system_prompt\": \"\", \"question\": \"Q1\", \"response\": \"R1\"}\n"
        "{\"system_prompt\": \"SYS\", \"question\": \"Q2\", \"response\": \"R2\"}\n"
        "{\"conversations\": [{\"from\": \"system\", \"value\": \"s\"}, {\"from\": \"human\", "
        "\"value\": \"h\"}, {\"from\": \"gpt\", \"value\": \"g\"}]}\n");
    assert_int_equal(st_dataset_load(p, ST_DATA_ORCA, &ds), ST_OK);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.rows[0].n_msgs, 2); /* empty system prompt dropped */
    expect_msg(&ds.rows[0], 0, "user", "Q1", 1);
    expect_msg(&ds.rows[1], 0, "system", "SYS", 1);
    expect_msg(&ds.rows[1], 2, "assistant", "R2", 1);
    expect_msg(&ds.rows[2], 1, "user", "h", 1);
    expect_msg(&ds.rows[2], 2, "assistant", "g", 1);
    st_dataset_free(&ds);

    expect_error("m1.jsonl", "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}\n",
                 ST_DATA_MESSAGES, "line 1:", "messages[0]: role \"tool\"");
    expect_error("m2.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n",
                 ST_DATA_MESSAGES, "line 1:", "no assistant message");
    expect_error("m3.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": null}]}\n",
                 ST_DATA_MESSAGES, "messages[0]: field \"content\" is null", NULL);
    expect_error("o1.jsonl", "{\"conversations\": [{\"from\": \"bot\", \"value\": \"x\"}]}\n",
                 ST_DATA_ORCA, "conversations[0]", "\"from\" is \"bot\"");
    expect_error("o2.jsonl", "{\"question\": \"q\"}\n", ST_DATA_ORCA, "line 1:",
                 "missing field \"response\"");
}

static void test_io_error(void **state) {
    (void)state;
    st_dataset ds;
    assert_int_equal(st_dataset_load("/nonexistent/x.jsonl", ST_DATA_AUTO, &ds), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "/nonexistent/x.jsonl"));
    st_data_format f;
    assert_int_equal(st_data_format_parse("sharegpt", &f), ST_ERR_ARG);
    assert_int_equal(st_data_format_parse("orca", &f), ST_OK);
    assert_int_equal(f, ST_DATA_ORCA);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alpaca_real),     cmocka_unit_test(test_dolly_real),
        cmocka_unit_test(test_orca_real),       cmocka_unit_test(test_bad_jsonl),
        cmocka_unit_test(test_bad_json_array),  cmocka_unit_test(test_messages_and_orca_forms),
        cmocka_unit_test(test_io_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
