/* test_kernels_infer.c - the KV-cache path (st_forward_infer) must reproduce the full-sequence
 * forward (st_forward_logits) on random tiny models: prefill, then token-by-token decode, for
 * several sequences of different lengths in one batch; plus argument errors. Also checks that
 * the training forward's loss equals the cross-entropy recomputed here from st_forward_logits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/backward.h"
#include "safetune/forward.h"
#include "model_testutil.h"

static st_model *random_model(int arch_qwen, int tied, int H, int KV, uint64_t seed) {
    st_config c = {0};
    c.arch = arch_qwen ? ST_ARCH_QWEN2 : ST_ARCH_LLAMA;
    c.hidden_size = 48;
    c.intermediate_size = 80;
    c.num_hidden_layers = 2;
    c.num_attention_heads = H;
    c.num_key_value_heads = KV;
    c.head_dim = 48 / H;
    c.vocab_size = 97;
    c.max_position_embeddings = 128;
    c.rope_theta = 10000.0f;
    c.rms_norm_eps = 1e-5f;
    c.tie_word_embeddings = tied;
    c.attention_bias = arch_qwen;
    c.rope_scaling.type = ST_ROPE_SCALING_LLAMA3;
    c.rope_scaling.factor = 4;
    c.rope_scaling.low_freq_factor = 1;
    c.rope_scaling.high_freq_factor = 4;
    c.rope_scaling.original_max_position_embeddings = 16;
    st_model *m = NULL;
    assert_int_equal(st_model_new(&c, &m), ST_OK);
    st_test_randomize(m, seed);
    return m;
}

static void infer_matches_full(int qwen, int tied, int H, int KV) {
    st_model *m = random_model(qwen, tied, H, KV, 7 + qwen + 2 * tied);
    const int V = m->config.vocab_size, S = 3, T = 21;
    const int lens[3] = {21, 9, 14};      /* total length per sequence */
    const int prefill[3] = {5, 1, 14};    /* then a 4-token chunk, then one token at a time */
    int32_t toks[3][21];
    st_rng r;
    st_rng_seed(&r, 99);
    for (int s = 0; s < S; s++)
        for (int t = 0; t < T; t++) toks[s][t] = (int32_t)(st_rng_u64(&r) % V);
    /* reference: full forward per sequence */
    float *full[3];
    for (int s = 0; s < S; s++) {
        full[s] = malloc((size_t)lens[s] * V * sizeof(float));
        assert_int_equal(st_forward_logits(m, toks[s], 1, lens[s], full[s]), ST_OK);
    }
    st_kv_cache *kc = NULL;
    assert_int_equal(st_kv_cache_new(&m->config, 5, 32, &kc), ST_OK);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    const int slot_of[3] = {4, 0, 2};
    int done[3] = {0, 0, 0};
    float *out = malloc((size_t)S * V * sizeof(float));
    for (int step = 0;; step++) {
        int slots[3], n[3], idx[3], ns = 0;
        const int32_t *tp[3];
        for (int s = 0; s < S; s++) {
            if (done[s] >= lens[s]) continue;
            /* step 1 appends a 4-token chunk onto a non-empty cache (chunked prefill) */
            int take = step == 0 ? prefill[s] : step == 1 ? 4 : 1;
            if (take > lens[s] - done[s]) take = lens[s] - done[s];
            slots[ns] = slot_of[s];
            n[ns] = take;
            tp[ns] = toks[s] + done[s];
            idx[ns++] = s;
        }
        if (!ns) break;
        assert_int_equal(st_forward_infer(ic, kc, slots, tp, n, ns, out), ST_OK);
        for (int i = 0; i < ns; i++) {
            int s = idx[i];
            done[s] += n[i];
            assert_int_equal(st_kv_cache_len(kc, slot_of[s]), done[s]);
            double e = st_test_rel(out + (size_t)i * V, full[s] + (size_t)(done[s] - 1) * V, V);
            if (e > 1e-5) fail_msg("seq %d after %d tokens: rel error %.3g", s, done[s], e);
        }
    }
    /* clearing a slot restarts it */
    st_kv_cache_clear(kc, 0);
    assert_int_equal(st_kv_cache_len(kc, 0), 0);
    int slot = 0, n1 = lens[1];
    const int32_t *tp = toks[1];
    assert_int_equal(st_forward_infer(ic, kc, &slot, &tp, &n1, 1, out), ST_OK);
    assert_true(st_test_rel(out, full[1] + (size_t)(lens[1] - 1) * V, V) <= 1e-5);
    /* errors: overflow, duplicate slot, bad token */
    int big = 40;
    int32_t many[40] = {0};
    const int32_t *mp = many;
    slot = 1;
    assert_int_equal(st_forward_infer(ic, kc, &slot, &mp, &big, 1, out), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "max_seq"));
    int sl2[2] = {3, 3}, n2[2] = {1, 1};
    const int32_t *tp2[2] = {many, many};
    assert_int_equal(st_forward_infer(ic, kc, sl2, tp2, n2, 2, out), ST_ERR_ARG);
    int32_t bad = V;
    const int32_t *bp = &bad;
    int one = 1;
    assert_int_equal(st_forward_infer(ic, kc, &slot, &bp, &one, 1, out), ST_ERR_ARG);
    for (int s = 0; s < S; s++) free(full[s]);
    free(out);
    st_infer_ctx_free(ic);
    st_kv_cache_free(kc);
    st_model_free(m);
}

static void test_infer_llama_gqa_untied(void **state) {
    (void)state;
    infer_matches_full(0, 0, 4, 2);
}
static void test_infer_qwen_bias_tied(void **state) {
    (void)state;
    infer_matches_full(1, 1, 6, 2);
}
static void test_infer_mha(void **state) {
    (void)state;
    infer_matches_full(0, 1, 3, 3);
}

/* training forward loss == Σ mask·CE / normaliser recomputed from st_forward_logits */
static void test_train_loss_matches_logits(void **state) {
    (void)state;
    st_model *m = random_model(0, 0, 4, 2, 3);
    const int B = 2, T = 6, V = m->config.vocab_size;
    int32_t tok[12], tgt[12];
    float mask[12];
    for (int i = 0; i < 12; i++) {
        tok[i] = (i * 7 + 3) % V;
        tgt[i] = (i * 5 + 1) % V;
        mask[i] = (float)(i % 3 != 0);
    }
    tgt[4] = -100;
    float *logits = malloc((size_t)B * T * V * sizeof(float));
    assert_int_equal(st_forward_logits(m, tok, B, T, logits), ST_OK);
    double want = 0;
    for (int n = 0; n < B * T; n++) {
        if (tgt[n] < 0 || !mask[n]) continue;
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, logits[(size_t)n * V + v]);
        for (int v = 0; v < V; v++) s += exp(logits[(size_t)n * V + v] - mx);
        want += mx + log(s) - logits[(size_t)n * V + tgt[n]];
    }
    want /= 5.0;
    st_train_acts *a = NULL;
    assert_int_equal(st_train_acts_new(&m->config, B, T, &a), ST_OK);
    float loss = 0;
    assert_int_equal(st_train_forward(&m->config, &m->w, a, tok, tgt, mask, B, T, 5.0f, &loss),
                     ST_OK);
    assert_true(fabs(loss - want) <= 1e-5 * fabs(want));
    /* too many tokens for the allocation */
    assert_int_equal(st_train_forward(&m->config, &m->w, a, tok, tgt, mask, 3, T, 5.0f, &loss),
                     ST_ERR_ARG);
    st_train_acts_free(a);
    free(logits);
    st_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infer_llama_gqa_untied),
        cmocka_unit_test(test_infer_qwen_bias_tied),
        cmocka_unit_test(test_infer_mha),
        cmocka_unit_test(test_train_loss_matches_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
