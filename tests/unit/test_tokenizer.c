/* test_tokenizer.c - tokenizer core on hand-built vocabularies with hand-computed ids, UTF-8
 * replacement (maximal subpart), byte-level map, and bad-input errors (tokenizer.json and GGUF). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetune/tokenizer.h"
#include "tokenizer/tok_internal.h"

static char g_path[1024];

static const char *write_tmp(const char *name, const char *content) {
    const char *d = getenv("SAFETUNE_TEST_TMP");
    snprintf(g_path, sizeof g_path, "%s/%s", d ? d : "/tmp", name);
    assert_int_equal(st_write_file_atomic(g_path, content, strlen(content)), ST_OK);
    return g_path;
}

/* A SentencePiece-style toy: no pre-tokenizer, Prepend/Replace normalizer, byte fallback. */
static const char *TOY =
    "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true, \"fuse_unk\": true,"
    " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"a\": 2, \"b\": 3, \"c\": 4, \"ab\": 5, \"abc\": 6, \"bc\": 7,"
    "  \"\\u2581\": 8, \"\\u2581a\": 9, \"<0x78>\": 10, \"<0xC3>\": 11, \"<0xA9>\": 12},"
    " \"merges\": [\"a b\", \"ab c\", \"b c\", \"\\u2581 a\"]},"
    " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"},"
    "  {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},"
    " \"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false}],"
    " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
    "  {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}},"
    " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"},"
    "  {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}}";

static void expect_ids(st_tokenizer *t, const char *text, int ps, int as, const int32_t *want, size_t nw) {
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(st_tokenizer_encode(t, text, strlen(text), ps, as, &ids, &n), ST_OK);
    assert_int_equal(n, nw);
    for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], want[i]);
    free(ids);
}

static void test_toy_bpe(void **state) {
    (void)state;
    st_tokenizer *t = NULL;
    assert_int_equal(st_tokenizer_from_json(write_tmp("toy.json", TOY), &t), ST_OK);
    assert_int_equal(st_tokenizer_kind_of(t), ST_TOK_SPM_BPE);
    /* "abc" -> "▁abc": ▁ a b c; ranks: (▁,a)=3 (a,b)=0 (b,c)=2 -> ab, then (ab,c)=1 -> abc; ▁ stays */
    expect_ids(t, "abc", 1, 0, (const int32_t[]){8, 6}, 2);
    /* "bcab" -> ▁ b c a b: (a,b)=0 first -> ▁ b c ab; (b,c)=2 -> ▁ bc ab */
    expect_ids(t, "bcab", 1, 0, (const int32_t[]){8, 7, 5}, 3);
    /* "a" -> ▁ a -> ▁a; BOS prepended by the TemplateProcessing post-processor */
    expect_ids(t, "a", 1, 1, (const int32_t[]){1, 9}, 2);
    /* byte fallback: 'x' -> <0x78>, 'é' -> <0xC3><0xA9>; 'y','z' unknown without fallback tokens -> one
     * fused <unk> */
    expect_ids(t, "x\xc3\xa9yz", 1, 0, (const int32_t[]){8, 10, 11, 12, 0}, 5);
    /* "<s>" parsed as the special token when parse_special = 1, as plain text otherwise */
    expect_ids(t, "<s>a", 1, 0, (const int32_t[]){1, 9}, 2);
    expect_ids(t, "", 1, 0, NULL, 0);
    /* decode: ▁ -> space, byte tokens fused into UTF-8, leading space stripped */
    char *out;
    size_t ol;
    assert_int_equal(st_tokenizer_decode(t, (const int32_t[]){8, 6, 8, 11, 12, 1}, 6, 0, &out, &ol), ST_OK);
    assert_string_equal(out, "abc \xc3\xa9<s>");
    free(out);
    assert_int_equal(st_tokenizer_decode(t, (const int32_t[]){9, 1, 11}, 3, 1, &out, &ol), ST_OK);
    assert_string_equal(out, "a\xef\xbf\xbd"); /* lone <0xC3> -> U+FFFD; <s> skipped */
    free(out);
    char buf[8];
    assert_int_equal(st_tokenizer_token_bytes(t, 9, buf, 8), 2);
    assert_memory_equal(buf, " a", 2);
    assert_int_equal(st_tokenizer_token_bytes(t, 12, buf, 8), 1);
    assert_int_equal((uint8_t)buf[0], 0xA9);
    assert_int_equal(st_tokenizer_find(t, "abc"), 6);
    assert_int_equal(st_tokenizer_find(t, "zzz"), -1);
    assert_true(st_tokenizer_is_special(t, 1));
    assert_false(st_tokenizer_is_special(t, 2));
    assert_int_equal(st_tokenizer_bos_id(t), 1);
    assert_true(st_tokenizer_adds_bos(t));
    st_tokenizer_free(t);
}

static void test_utf8_replacement(void **state) {
    (void)state;
    struct { const char *in; size_t n; const char *out; } c[] = {
        {"ok", 2, NULL},
        {"\xe2\x82 x", 4, "\xef\xbf\xbd x"},                         /* truncated 3-byte seq: one U+FFFD */
        {"\xf0\x9f\x98", 3, "\xef\xbf\xbd"},                           /* truncated 4-byte seq: one */
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},   /* surrogate: three */
        {"\xc3\x28", 2, "\xef\xbf\xbd("},                              /* bad continuation */
        {"\xff\xfe", 2, "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
        {"\xe0\x80\xaf", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},   /* overlong */
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char *o = NULL;
        size_t ol = 0;
        int valid = st__utf8_sanitize(c[i].in, c[i].n, &o, &ol);
        if (!c[i].out) {
            assert_true(valid);
            continue;
        }
        assert_false(valid);
        assert_int_equal(ol, strlen(c[i].out));
        assert_memory_equal(o, c[i].out, ol);
        free(o);
    }
}

static void test_bytelevel_map(void **state) {
    (void)state;
    assert_int_equal(st__byte_to_cp(' '), 0x120);  /* 'Ġ' */
    assert_int_equal(st__byte_to_cp('\n'), 0x10A); /* 'Ċ' */
    assert_int_equal(st__byte_to_cp('a'), 'a');
    assert_int_equal(st__byte_to_cp(0xAD), 0x143);
    for (int b = 0; b < 256; b++) assert_int_equal(st__cp_to_byte(st__byte_to_cp((uint8_t)b)), b);
    assert_int_equal(st__cp_to_byte(0x144), -1);
    assert_int_equal(st__cp_to_byte(' '), -1);
}

static void expect_json_error(const char *json, st_status code, const char *needle) {
    st_tokenizer *t = NULL;
    const char *p = write_tmp("bad_tokenizer.json", json);
    assert_int_equal(st_tokenizer_from_json(p, &t), code);
    assert_null(t);
    const char *e = st_last_error();
    if (!strstr(e, p) || !strstr(e, needle)) fail_msg("error \"%s\" should name %s and %s", e, p, needle);
}

static void test_json_errors(void **state) {
    (void)state;
    expect_json_error("{\"added_tokens\": []}", ST_ERR_FORMAT, "\"model\"");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"merges\": []}}", ST_ERR_FORMAT, "model.vocab");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", ST_ERR_FORMAT, "model.merges");
    expect_json_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", ST_ERR_UNSUPPORTED, "Unigram");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", ST_ERR_FORMAT,
                      "model.merges");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": "
                      "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}",
                      ST_ERR_FORMAT, "regex");
    expect_json_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": "
                      "{\"type\": \"NFKD\"}}", ST_ERR_UNSUPPORTED, "NFKD");
    expect_json_error("{\"model\": ", ST_ERR_FORMAT, "invalid JSON");
    st_tokenizer *t = NULL;
    assert_int_equal(st_tokenizer_from_json("/nonexistent/tokenizer.json", &t), ST_ERR_IO);
}

static void test_gguf_errors(void **state) {
    (void)state;
    const char *d = getenv("SAFETUNE_TEST_TMP");
    char path[1024];
    snprintf(path, sizeof path, "%s/tok_missing_tokens.gguf", d ? d : "/tmp");
    st_gguf_writer *w = NULL;
    assert_int_equal(st_gguf_writer_new(&w), ST_OK);
    assert_int_equal(st_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), ST_OK);
    assert_int_equal(st_gguf_writer_finish(w, path), ST_OK);
    st_gguf_writer_free(w);
    st_gguf *g = NULL;
    assert_int_equal(st_gguf_open(path, &g), ST_OK);
    st_tokenizer *t = NULL;
    assert_int_equal(st_tokenizer_from_gguf(g, &t), ST_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(st_last_error(), path));
    assert_non_null(strstr(st_last_error(), "tokenizer.ggml.tokens"));
    st_gguf_close(g);

    /* unknown model / pre-tokenizer */
    const char *toks[] = {"a", "b", "ab"};
    const char *merges[] = {"a b"};
    const char *cases[][2] = {{"bert", NULL}, {"gpt2", "mystery-pre"}};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(st_gguf_writer_new(&w), ST_OK);
        st_gguf_writer_set_str(w, "tokenizer.ggml.model", cases[k][0]);
        if (cases[k][1]) st_gguf_writer_set_str(w, "tokenizer.ggml.pre", cases[k][1]);
        st_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3);
        st_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 1);
        assert_int_equal(st_gguf_writer_finish(w, path), ST_OK);
        st_gguf_writer_free(w);
        assert_int_equal(st_gguf_open(path, &g), ST_OK);
        assert_int_equal(st_tokenizer_from_gguf(g, &t), ST_ERR_UNSUPPORTED);
        assert_non_null(strstr(st_last_error(), k ? "mystery-pre" : "bert"));
        st_gguf_close(g);
    }
    /* a minimal valid gpt2 GGUF: "ab" -> one token via the merge; "ba" -> two */
    assert_int_equal(st_gguf_writer_new(&w), ST_OK);
    st_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    st_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3);
    st_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 1);
    assert_int_equal(st_gguf_writer_finish(w, path), ST_OK);
    st_gguf_writer_free(w);
    assert_int_equal(st_gguf_open(path, &g), ST_OK);
    assert_int_equal(st_tokenizer_from_gguf(g, &t), ST_OK);
    expect_ids(t, "ab", 1, 1, (const int32_t[]){2}, 1);
    expect_ids(t, "ba", 1, 1, (const int32_t[]){1, 0}, 2);
    expect_ids(t, "a c", 1, 1, (const int32_t[]){0}, 1); /* no byte tokens for ' ', 'c': dropped as HF */
    st_tokenizer_free(t);
    st_gguf_close(g);
}

/* Special-token ids outside the vocabulary are an error naming the key and the value (they were
 * dropped silently); ids inside it are kept. */
static void test_gguf_special_ids(void **state) {
    (void)state;
    const char *d = getenv("SAFETUNE_TEST_TMP");
    char path[1024];
    snprintf(path, sizeof path, "%s/tok_special_ids.gguf", d ? d : "/tmp");
    const char *toks[] = {"a", "b", "ab"};
    const char *merges[] = {"a b"};
    const char *keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id",
                          "tokenizer.ggml.eot_token_id"};
    for (int k = -1; k < 5; k++) {
        st_gguf_writer *w = NULL;
        assert_int_equal(st_gguf_writer_new(&w), ST_OK);
        st_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
        st_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3);
        st_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 1);
        for (int j = 0; j < 5; j++) st_gguf_writer_set_u32(w, keys[j], j == k ? 128000u : (uint32_t)(j % 3));
        assert_int_equal(st_gguf_writer_finish(w, path), ST_OK);
        st_gguf_writer_free(w);
        st_gguf *g = NULL;
        st_tokenizer *t = NULL;
        assert_int_equal(st_gguf_open(path, &g), ST_OK);
        if (k < 0) { /* all in range */
            assert_int_equal(st_tokenizer_from_gguf(g, &t), ST_OK);
            assert_int_equal(st_tokenizer_bos_id(t), 0);
            assert_int_equal(st_tokenizer_eos_id(t), 1);
            st_tokenizer_free(t);
        } else {
            assert_int_equal(st_tokenizer_from_gguf(g, &t), ST_ERR_FORMAT);
            assert_null(t);
            char want[200];
            snprintf(want, sizeof want, "%s = 128000 is outside the vocabulary (ids 0..2)", keys[k]);
            assert_non_null(strstr(st_last_error(), want));
            assert_non_null(strstr(st_last_error(), path));
        }
        st_gguf_close(g);
    }
}

/* GGUF "llama" (SentencePiece-style): merges derived from scores as HF LlamaConverter does. */
static void test_gguf_spm(void **state) {
    (void)state;
    const char *d = getenv("SAFETUNE_TEST_TMP");
    char path[1024];
    snprintf(path, sizeof path, "%s/tok_spm.gguf", d ? d : "/tmp");
    const char *toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab", "\xe2\x96\x81" "ab", "<0x63>"};
    const float scores[] = {0, 0, 0, -1, -2, -3, -4, -5, -6, 0};
    const int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 6};
    st_gguf_writer *w = NULL;
    assert_int_equal(st_gguf_writer_new(&w), ST_OK);
    st_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    st_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 10);
    st_gguf_writer_set_arr(w, "tokenizer.ggml.scores", ST_GGUF_FLOAT32, scores, 10);
    st_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", ST_GGUF_INT32, types, 10);
    st_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    st_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    assert_int_equal(st_gguf_writer_finish(w, path), ST_OK);
    st_gguf_writer_free(w);
    st_gguf *g = NULL;
    st_tokenizer *t = NULL;
    assert_int_equal(st_gguf_open(path, &g), ST_OK);
    assert_int_equal(st_tokenizer_from_gguf(g, &t), ST_OK);
    assert_int_equal(st_tokenizer_kind_of(t), ST_TOK_SPM_BPE);
    /* merge ranks by merged score: (▁,a)=0 (a,b)=1 (▁,ab)=2 (▁a,b)=3.
     * "ab" -> ▁ a b -> ▁a b -> ▁ab; BOS added (add_bos_token defaults to true for llama) */
    expect_ids(t, "ab", 1, 1, (const int32_t[]){1, 8}, 2);
    /* "b c": ▁ b ▁ c -> c via <0x63> byte fallback; no merges apply */
    expect_ids(t, "b c", 1, 0, (const int32_t[]){3, 5, 3, 9}, 4);
    /* 'd' has neither a piece nor a byte token: <unk> */
    expect_ids(t, "d", 1, 0, (const int32_t[]){3, 0}, 2);
    char *out;
    size_t ol;
    assert_int_equal(st_tokenizer_decode(t, (const int32_t[]){1, 8, 3, 9}, 4, 1, &out, &ol), ST_OK);
    assert_string_equal(out, "ab c");
    free(out);
    st_tokenizer_free(t);
    st_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_toy_bpe),        cmocka_unit_test(test_utf8_replacement),
        cmocka_unit_test(test_bytelevel_map),  cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_gguf_errors),
        cmocka_unit_test(test_gguf_special_ids),    cmocka_unit_test(test_gguf_spm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
