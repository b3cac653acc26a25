/* test_infer_fused.c - the fused path of st_forward_infer (one parallel region per call, weight
 * cache split into per-thread column parts, OpenMP barriers between phases): logits match the
 * full-sequence forward (st_forward_logits, the independent path) and the unfused loop (SAFETUNE_INFER_FUSED=0) for uneven part splits (3 parts of 10
 * 16-column units), fewer threads than parts, q/k/v biases and prompts of different lengths. */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/infer_weights.h"
#include "model_testutil.h"
#include "safetune/forward.h"
#include "safetune/kernels.h"

enum { V = 131, STEPS = 4, MAXT = 9 + STEPS };

static st_model *small_model(uint64_t seed, int bias) {
    st_config c = st_test_llama_config(192, 160, 3, 1, 64, V);
    c.attention_bias = bias;
    st_model *m = NULL;
    assert_int_equal(st_model_new(&c, &m), ST_OK);
    st_test_randomize(m, seed);
    return m;
}

/* Two sequences prefill 5 and 9 tokens together, then decode STEPS tokens each in one batched
 * call per step. out[step][s][V]: the last-token logits of every call. */
static void run_calls(st_model *m, int fused, float *out) {
    static const int plen[2] = {5, 9};
    int32_t tok[2][MAXT];
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < MAXT; t++) tok[s][t] = (int32_t)((s * 31 + t * 17 + 3) % V);
    setenv("SAFETUNE_INFER_FUSED", fused ? "1" : "0", 1);
    st_kv_cache *kc;
    assert_int_equal(st_kv_cache_new(&m->config, 2, MAXT, &kc), ST_OK);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    unsetenv("SAFETUNE_INFER_FUSED");
    st_kv_cache_set_precision(kc, ST_MATMUL_F32);
    for (int step = 0; step <= STEPS; step++) {
        const int slots[2] = {0, 1};
        const int32_t *tp[2] = {step ? tok[0] + plen[0] + step - 1 : tok[0],
                                step ? tok[1] + plen[1] + step - 1 : tok[1]};
        const int n[2] = {step ? 1 : plen[0], step ? 1 : plen[1]};
        assert_int_equal(st_forward_infer(ic, kc, slots, tp, n, 2, out + (size_t)step * 2 * V),
                         ST_OK);
    }
    st_infer_ctx_free(ic);
    st_kv_cache_free(kc);
    /* the reference: the whole prefix through the training forward */
    float *full = malloc((size_t)MAXT * V * sizeof(float));
    for (int step = 0; step <= STEPS; step++)
        for (int s = 0; s < 2; s++) {
            const int len = plen[s] + step;
            assert_int_equal(st_forward_logits(m, tok[s], 1, len, full), ST_OK);
            const double e = st_test_rel(out + ((size_t)step * 2 + s) * V,
                                         full + (size_t)(len - 1) * V, V);
            assert_true(e <= 1e-5);
        }
    free(full);
}

/* The weight cache is created at the first call with 3 threads (3 parts: I = 160 is 10
 * 16-column units, split 3/3/4); the calls then run with `threads` threads. */
static void check_parts(int threads, int bias) {
    const int saved = omp_get_max_threads();
    st_model *m = small_model(21 + (uint64_t)bias, bias);
    float *a = malloc((size_t)(STEPS + 1) * 2 * V * sizeof(float));
    float *b = malloc((size_t)(STEPS + 1) * 2 * V * sizeof(float));
    omp_set_num_threads(3);
    run_calls(m, 1, a); /* builds the 3-part cache */
    omp_set_num_threads(threads);
    run_calls(m, 1, a);
    run_calls(m, 0, b); /* the unfused loop */
    assert_true(st_test_rel(a, b, (size_t)(STEPS + 1) * 2 * V) <= 1e-5);
    omp_set_num_threads(saved);
    free(a);
    free(b);
    st_model_free(m);
}

static void test_three_parts_three_threads(void **state) {
    (void)state;
    check_parts(3, 0);
}

static void test_three_parts_two_threads_bias(void **state) {
    (void)state;
    check_parts(2, 1); /* thread 0 runs parts 0 and 2 */
}

static void test_three_parts_one_thread(void **state) {
    (void)state;
    check_parts(1, 0);
}

/* Every part of every layer projection, and the whole lm_head, against a double-precision
 * x · Wᵀ of the model's own [N, K] weights; parts tile the columns in 16-column units. With 3
 * threads at creation: 3 parts. No fallback can hide a failing primitive here. */
static void test_parts_match_reference(void **state) {
    (void)state;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(3);
    st_model *m = small_model(31, 0);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    st_infer_weights *iw;
    assert_int_equal(st_infer_weights_acquire(ic, ST_MATMUL_F32, &iw), ST_OK);
    omp_set_num_threads(saved);
    assert_int_equal(st_infer_nparts(iw), 3);
    enum { M = 5 };
    const st_config *c = &m->config;
    const int C = c->hidden_size, I = c->intermediate_size, HD = c->num_attention_heads * c->head_dim;
    const int Wd = HD + 2 * c->num_key_value_heads * c->head_dim;
    const int Ks[5] = {C, HD, C, I, C}, Ns[5] = {Wd, C, 2 * I, C, V};
    const size_t big = (size_t)M * (C + I + Wd + V); /* more than any [M, K] or [M, N] here */
    float *x = malloc(big * sizeof(float)), *out = malloc(big * sizeof(float));
    float *part = malloc(big * sizeof(float));
    for (size_t i = 0; i < big; i++) x[i] = (float)sin(0.37 * (double)i + 0.1);
    assert_int_equal(st_infer_parts_prepare(iw, M), 0);
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int k = 0; k <= ST_IW_LM; k++) {
            if (k == ST_IW_LM && l) continue;
            const st_layer_weights *Lw = &m->w.layers[l];
            const float *W = k == 0 ? Lw->q_proj : k == 1 ? Lw->o_proj : k == 2 ? Lw->gate_proj
                           : k == 3 ? Lw->down_proj : m->w.lm_head;
            const int K = Ks[k], N = Ns[k];
            if (k == ST_IW_LM) {
                assert_int_equal(st_infer_matmul(iw, 0, ST_IW_LM, out, x, NULL, M), 0);
            } else {
                int prev = 0;
                for (int p = 0; p < 3; p++) {
                    int n0, n1;
                    st_infer_part_range(iw, (st_iw_kind)k, p, &n0, &n1);
                    assert_int_equal(n0, prev);
                    assert_true(p == 2 || (n1 - n0) % 16 == 0);
                    prev = n1;
                    assert_int_equal(st_infer_matmul_part(iw, l, (st_iw_kind)k, p, part, x, M), 0);
                    const int w = n1 - n0, wid = k == ST_IW_GU ? 2 * w : w;
                    for (int r = 0; r < M; r++)
                        for (int j = 0; j < wid; j++) {
                            /* GU part: [gate n0..n1 | up n0..n1] */
                            const int col = k != ST_IW_GU ? n0 + j : j < w ? n0 + j : I + n0 + j - w;
                            out[(size_t)r * N + col] = part[(size_t)r * wid + j];
                        }
                }
                assert_int_equal(prev, k == ST_IW_GU ? I : N);
            }
            double num = 0, den = 0;
            for (int r = 0; r < M; r++)
                for (int n = 0; n < N; n++) {
                    double ref = 0;
                    for (int j = 0; j < K; j++) ref += (double)x[(size_t)r * K + j] * W[(size_t)n * K + j];
                    num += (out[(size_t)r * N + n] - ref) * (out[(size_t)r * N + n] - ref);
                    den += ref * ref;
                }
            assert_true(sqrt(num / den) <= 1e-6);
        }
    st_infer_weights_release(iw);
    st_infer_ctx_free(ic);
    free(x);
    free(out);
    free(part);
    st_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_parts_three_threads),
        cmocka_unit_test(test_three_parts_two_threads_bias),
        cmocka_unit_test(test_three_parts_one_thread),
        cmocka_unit_test(test_parts_match_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
