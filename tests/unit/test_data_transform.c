/* test_data_transform.c - data-side defenses (data_transform.h, DEFENSES.md §3, §5, §9):
 * LookAhead's strings for the France example with SmolLM2's tokenizer (GGUF) and Qwen2.5's
 * (tokenizer.json), the full preview when m >= |y|, no broken UTF-8 at the cut, the loss mask over
 * y (real) or P‖y (virtual) through the ChatML template; SafeInstr mixing (N+k rows, k distinct
 * pool rows, seeded) and the poisoned column; bad settings naming the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetune/chat.h"
#include "safetune/data_transform.h"
#include "safetune/gguf.h"
#include "safetune/tokenizer.h"

static const char *env_or(const char *k, const char *d) {
    const char *v = getenv(k);
    return v && v[0] ? v : d;
}

/* SmolLM2's tokenizer (from the GGUF) and Qwen2.5's (tokenizer.json); NULL when absent. */
static st_tokenizer *load_tok(int which) {
    char p[4096];
    st_tokenizer *t = NULL;
    if (which == 0) {
        snprintf(p, sizeof p, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", env_or("SAFETUNE_MODEL_DIR", "models"));
        if (access(p, R_OK)) return NULL;
        st_gguf *g = NULL;
        assert_int_equal(st_gguf_open(p, &g), ST_OK);
        assert_int_equal(st_tokenizer_from_gguf(g, &t), ST_OK);
        st_gguf_close(g);
    } else {
        snprintf(p, sizeof p, "%s/tokenizers/qwen2.5/tokenizer.json", env_or("SAFETUNE_DATA_DIR", "data"));
        if (access(p, R_OK)) return NULL;
        assert_int_equal(st_tokenizer_from_json(p, &t), ST_OK);
    }
    return t;
}

static const char *X = "Name the capital of France.";
static const char *Y = "The capital of France is Paris, a city on the Seine.";

static void pair(st_lookahead_mode mode, int m, const char *prefix, const st_tokenizer *tok, const char *x,
                 const char *y, char **xo, char **yo) {
    assert_int_equal(st_lookahead_pair(mode, m, prefix, tok, x, y, xo, yo), ST_OK);
}

static void test_lookahead_france(void **state) {
    (void)state;
    for (int which = 0; which < 2; which++) {
        st_tokenizer *tok = load_tok(which);
        if (!tok) fail_msg("tokenizer %d absent (SAFETUNE_MODEL_DIR / SAFETUNE_DATA_DIR)", which);
        char *x, *y;
        pair(ST_LOOKAHEAD_REAL, 6, NULL, tok, X, Y, &x, &y);
        assert_string_equal(x, "Name the capital of France. The answer begins with: The capital of France is Paris");
        assert_string_equal(y, Y);
        free(x), free(y);
        pair(ST_LOOKAHEAD_VIRTUAL, 0, ST_LOOKAHEAD_DEFAULT_PREFIX, tok, X, Y, &x, &y);
        assert_string_equal(x, "Name the capital of France. The answer begins with: Let's solve this problem. ");
        assert_string_equal(y, "Let's solve this problem. The capital of France is Paris, a city on the Seine.");
        free(x), free(y);
        /* m >= |y| previews all of y */
        pair(ST_LOOKAHEAD_REAL, 1000, NULL, tok, X, Y, &x, &y);
        assert_string_equal(x, "Name the capital of France. The answer begins with: The capital of France is Paris, a city on the Seine.");
        free(x), free(y);
        /* every cut of a multi-byte answer is valid UTF-8 and a prefix of y; some cut splits a character */
        const char *yu = "𓀀𓀁 ꙮ 𝔘𝔫𝔦 🤖🎉 日本語のテキスト, Ünïcödé — ok";
        size_t xl = strlen(X) + strlen(ST_LOOKAHEAD_CUE);
        int split_seen = 0;
        for (int m = 1; m <= 30; m++) {
            pair(ST_LOOKAHEAD_REAL, m, NULL, tok, X, yu, &x, &y);
            const char *s = x + xl;
            assert_int_equal(st_utf8_invalid_count(s, strlen(s)), 0);
            assert_null(strstr(s, "\xEF\xBF\xBD"));
            assert_true(!strncmp(s, yu, strlen(s)));
            int32_t *ids;
            size_t n;
            assert_int_equal(st_tokenizer_encode(tok, yu, strlen(yu), 0, 0, &ids, &n), ST_OK);
            size_t bytes = 0;
            for (int i = 0; i < m && (size_t)i < n; i++) {
                char b[64];
                bytes += (size_t)st_tokenizer_token_bytes(tok, ids[i], b, sizeof b);
            }
            split_seen |= strlen(s) < bytes; /* the incomplete character was dropped */
            free(ids);
            free(x), free(y);
        }
        assert_true(split_seen);
        st_tokenizer_free(tok);
    }
}

/* Ids under the loss mask of one (user, assistant) conversation rendered with ChatML. */
static char *masked_text(const st_tokenizer *tok, const char *u, const char *a, int32_t **mids, size_t *nm) {
    st_chat_template tpl;
    assert_int_equal(st_chat_template_by_name("chatml", &tpl), ST_OK);
    st_chat_message msgs[2] = {{"user", u}, {"assistant", a}};
    int32_t *ids;
    uint8_t *mask;
    size_t n;
    assert_int_equal(st_chat_render(&tpl, tok, msgs, 2, 0, &ids, &mask, &n), ST_OK);
    int32_t *out = malloc(n * sizeof *out);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (mask[i]) out[k++] = ids[i];
    char *txt;
    size_t len;
    assert_int_equal(st_tokenizer_decode(tok, out, k, 0, &txt, &len), ST_OK);
    free(ids), free(mask);
    st_chat_template_free(&tpl);
    *mids = out;
    *nm = k;
    return txt;
}

static void test_lookahead_loss_mask(void **state) {
    (void)state;
    st_tokenizer *tok = load_tok(0);
    if (!tok) fail_msg("SmolLM2 GGUF absent");
    int32_t *m0, *m1, *m2;
    size_t n0, n1, n2;
    char *plain = masked_text(tok, X, Y, &m0, &n0);
    assert_true(!strncmp(plain, Y, strlen(Y)));  /* plain FT: y and the end-of-turn token */
    const char *eot = plain + strlen(Y);
    char *x, *y;
    pair(ST_LOOKAHEAD_REAL, 6, NULL, tok, X, Y, &x, &y);
    char *real = masked_text(tok, x, y, &m1, &n1);
    assert_int_equal(n1, n0);                     /* real: exactly y, as plain FT */
    assert_memory_equal(m1, m0, n0 * sizeof *m0);
    free(x), free(y);
    pair(ST_LOOKAHEAD_VIRTUAL, 0, ST_LOOKAHEAD_DEFAULT_PREFIX, tok, X, Y, &x, &y);
    char *virt = masked_text(tok, x, y, &m2, &n2);
    char want[512];
    snprintf(want, sizeof want, "%s%s%s", ST_LOOKAHEAD_DEFAULT_PREFIX, Y, eot); /* virtual: P‖y */
    assert_string_equal(virt, want);
    free(x), free(y), free(plain), free(real), free(virt), free(m0), free(m1), free(m2);
    st_tokenizer_free(tok);
}

static void test_lookahead_dataset_and_errors(void **state) {
    (void)state;
    const char *u[] = {"q1", "q2"}, *a[] = {"a1", "a2"};
    st_dataset ds;
    assert_int_equal(st_dataset_from_pairs(u, a, 2, "t", &ds), ST_OK);
    assert_int_equal(st_data_lookahead(&ds, ST_LOOKAHEAD_NONE, 6, NULL, NULL), ST_OK);
    assert_string_equal(ds.rows[0].msgs[0].content, "q1");
    assert_int_equal(st_data_lookahead(&ds, ST_LOOKAHEAD_VIRTUAL, 0, "P. ", NULL), ST_OK);
    assert_string_equal(ds.rows[1].msgs[0].content, "q2 The answer begins with: P. ");
    assert_string_equal(ds.rows[1].msgs[1].content, "P. a2");
    st_dataset_free(&ds);
    char *x, *y;
    assert_int_equal(st_lookahead_pair(ST_LOOKAHEAD_REAL, 0, NULL, NULL, "x", "y", &x, &y), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "lookahead_m 0"));
    assert_int_equal(st_lookahead_pair(ST_LOOKAHEAD_VIRTUAL, 6, "", NULL, "x", "y", &x, &y), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "lookahead_prefix"));
    st_lookahead_mode mo;
    assert_int_equal(st_lookahead_parse("virtual", &mo), ST_OK);
    assert_int_equal(mo, ST_LOOKAHEAD_VIRTUAL);
    assert_int_equal(st_lookahead_parse("both", &mo), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "lookahead 'both'"));
}

static void make_sets(st_dataset *user, st_dataset *pool, size_t nu, size_t np) {
    char **uu = calloc(nu + np, sizeof *uu), **aa = calloc(nu + np, sizeof *aa);
    for (size_t i = 0; i < nu + np; i++) {
        uu[i] = malloc(32), aa[i] = malloc(32);
        snprintf(uu[i], 32, i < nu ? "user %zu" : "goal %zu", i < nu ? i : i - nu);
        snprintf(aa[i], 32, i < nu ? "answer %zu" : "refusal %zu", i < nu ? i : i - nu);
    }
    assert_int_equal(st_dataset_from_pairs((const char *const *)uu, (const char *const *)aa, nu, "user", user), ST_OK);
    assert_int_equal(st_dataset_from_pairs((const char *const *)uu + nu, (const char *const *)aa + nu, np, "pool", pool),
                     ST_OK);
    for (size_t i = 0; i < nu + np; i++) free(uu[i]), free(aa[i]);
    free(uu), free(aa);
}

static void test_safeinstr_mix(void **state) {
    (void)state;
    st_dataset u, p, u2, p2;
    make_sets(&u, &p, 50, 26);
    make_sets(&u2, &p2, 50, 26);
    uint32_t pick[26], pick2[26];
    assert_int_equal(st_data_mix(&u, &p, 10, 7, pick), ST_OK);
    assert_int_equal(u.n, 60);
    int seen[26] = {0};
    for (int j = 0; j < 10; j++) {
        assert_true(pick[j] < 26 && !seen[pick[j]]);  /* distinct */
        seen[pick[j]] = 1;
        char w[32];
        snprintf(w, sizeof w, "goal %u", pick[j]);
        assert_string_equal(u.rows[50 + j].msgs[0].content, w);
        assert_true(u.rows[50 + j].msgs[0].content != p.rows[pick[j]].msgs[0].content); /* a copy */
    }
    for (int i = 0; i < 50; i++) {                  /* user rows untouched, in order */
        char w[32];
        snprintf(w, sizeof w, "user %d", i);
        assert_string_equal(u.rows[i].msgs[0].content, w);
    }
    assert_int_equal(st_data_mix(&u2, &p2, 10, 7, pick2), ST_OK); /* same seed, same rows */
    assert_memory_equal(pick, pick2, sizeof *pick * 10);
    st_dataset_free(&u2);
    st_dataset_free(&p2);
    make_sets(&u2, &p2, 50, 26);
    assert_int_equal(st_data_mix(&u2, &p2, 10, 8, pick2), ST_OK);
    assert_memory_not_equal(pick, pick2, sizeof *pick * 10);
    st_dataset_free(&u2);
    st_dataset_free(&p2);
    make_sets(&u2, &p2, 50, 26);
    assert_int_equal(st_data_mix(&u2, &p2, 0, 7, NULL), ST_OK);  /* k = 0: nothing */
    assert_int_equal(u2.n, 50);
    assert_int_equal(st_data_mix(&u2, &p2, 26, 7, pick2), ST_OK); /* all of the pool */
    assert_int_equal(u2.n, 76);
    assert_int_equal(st_data_mix(&u2, &p2, 27, 7, NULL), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "safeinstr_k 27"));
    st_dataset_free(&u), st_dataset_free(&p), st_dataset_free(&u2), st_dataset_free(&p2);
}

static void test_poison(void **state) {
    (void)state;
    st_dataset u, p;
    make_sets(&u, &p, 100, 4);
    uint32_t rep[100];
    size_t nr;
    assert_int_equal(st_data_poison(&u, &p, 0.1, 3, rep, &nr), ST_OK);
    assert_int_equal(nr, 10);
    int hit[100] = {0}, n_goal = 0;
    for (size_t j = 0; j < nr; j++) {
        assert_false(hit[rep[j]]);
        hit[rep[j]] = 1;
        char w[32];
        snprintf(w, sizeof w, "goal %zu", j % 4);      /* the pool's rows in turn */
        assert_string_equal(u.rows[rep[j]].msgs[0].content, w);
    }
    for (int i = 0; i < 100; i++) {
        n_goal += !strncmp(u.rows[i].msgs[0].content, "goal", 4);
        if (!hit[i]) {
            char w[32];
            snprintf(w, sizeof w, "user %d", i);
            assert_string_equal(u.rows[i].msgs[0].content, w);
        }
    }
    assert_int_equal(n_goal, 10);
    assert_int_equal(u.n, 100);
    assert_int_equal(st_data_poison(&u, &p, 0.0, 3, NULL, &nr), ST_OK);
    assert_int_equal(nr, 0);
    assert_int_equal(st_data_poison(&u, &p, 1.5, 3, NULL, NULL), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "poison 1.5"));
    st_dataset_free(&u), st_dataset_free(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookahead_france),  cmocka_unit_test(test_lookahead_loss_mask),
        cmocka_unit_test(test_lookahead_dataset_and_errors), cmocka_unit_test(test_safeinstr_mix),
        cmocka_unit_test(test_poison),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
