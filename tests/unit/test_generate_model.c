/* test_generate_model.c - batched generation through the real forward (st_forward_infer + KV
 * cache) on a random tiny model: for every batch size, each prompt's greedy ids must equal a
 * plain greedy loop that recomputes the full sequence with st_forward_logits at every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/forward.h"
#include "model_testutil.h"
#include "safetune/generate.h"

enum { V = 97, NP = 9, MAX_NEW = 14, STOP = 5 };

static st_model *random_model(uint64_t seed) {
    st_config c = st_test_llama_config(48, 80, 4, 2, 12, V);
    st_model *m = NULL;
    assert_int_equal(st_model_new(&c, &m), ST_OK);
    st_test_randomize(m, seed);
    return m;
}

typedef struct {
    st_infer_ctx *ic;
    st_kv_cache *c;
    int copies;
} be_ctx;

static st_status be_infer(void *ctx, const int *slots, const int32_t *const *tokens, const int *n, int ns,
                          float *logits) {
    be_ctx *b = ctx;
    return st_forward_infer(b->ic, b->c, slots, tokens, n, ns, logits);
}
static void be_clear(void *ctx, int slot) { st_kv_cache_clear(((be_ctx *)ctx)->c, slot); }
static st_status be_copy(void *ctx, int dst, int src, int n) {
    ((be_ctx *)ctx)->copies++;
    return st_kv_cache_copy_prefix(((be_ctx *)ctx)->c, dst, src, n);
}

/* Greedy by full recomputation (no cache). Returns the number of new ids. */
static int recompute_greedy(const st_model *m, const int32_t *p, int plen, int32_t *out) {
    int32_t seq[160];
    float *lg = malloc(sizeof(float) * 160 * V);
    memcpy(seq, p, sizeof(int32_t) * (size_t)plen);
    int len = plen, n = 0;
    while (n < MAX_NEW) {
        assert_int_equal(st_forward_logits(m, seq, 1, len, lg), ST_OK);
        int32_t t = st_argmax(lg + (size_t)(len - 1) * V, V);
        out[n++] = seq[len++] = t;
        if (t == STOP) break;
    }
    free(lg);
    return n;
}

/* shared > 0: all but every third prompt start with the same `shared` tokens (a system prompt),
 * so generation copies cached prefixes between slots (st_kv_cache_copy_prefix). */
static void run_batched_equals_recompute(int shared) {
    st_model *m = random_model(11);
    int32_t *pp[NP];
    size_t lens[NP];
    st_rng r;
    st_rng_seed(&r, 5);
    int32_t pre[32];
    for (int j = 0; j < 32; j++) pre[j] = (int32_t)(st_rng_u64(&r) % V);
    for (int i = 0; i < NP; i++) {
        lens[i] = 1 + st_rng_u64(&r) % 30 + (shared && i % 3 ? (size_t)shared : 0);
        pp[i] = malloc(lens[i] * sizeof(int32_t));
        for (size_t j = 0; j < lens[i]; j++) pp[i][j] = (int32_t)(st_rng_u64(&r) % V);
        if (shared && i % 3) memcpy(pp[i], pre, (size_t)shared * sizeof(int32_t));
    }
    int32_t want[NP][MAX_NEW];
    int nwant[NP];
    for (int i = 0; i < NP; i++) nwant[i] = recompute_greedy(m, pp[i], (int)lens[i], want[i]);
    const int batches[] = {1, 4, NP};
    const int steps[] = {2048, 7};
    for (int bi = 0; bi < 3; bi++) {
        for (int si = 0; si < 2; si++) {
            be_ctx b = {NULL, NULL, 0};
            assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &b.ic), ST_OK);
            assert_int_equal(st_kv_cache_new(&m->config, batches[bi], 64, &b.c), ST_OK);
            st_infer_backend be = {&b, V, batches[bi], 64, be_infer, be_clear, be_copy};
            st_generate_options o = st_generate_defaults();
            o.batch_size = batches[bi];
            o.max_new_tokens = MAX_NEW;
            o.max_step_tokens = steps[si];
            int32_t stop = STOP;
            o.stop_ids = &stop;
            o.n_stop_ids = 1;
            st_generation g[NP];
            assert_int_equal(st_generate_ids(&be, (const int32_t *const *)pp, lens, NP, &o, g, NULL), ST_OK);
            for (int i = 0; i < NP; i++) {
                assert_int_equal(g[i].n_ids, nwant[i]);
                assert_memory_equal(g[i].ids, want[i], (size_t)nwant[i] * sizeof(int32_t));
                assert_int_equal(g[i].finish, want[i][nwant[i] - 1] == STOP ? ST_FINISH_STOP : ST_FINISH_LENGTH);
            }
            if (shared && batches[bi] > 1) assert_true(b.copies > 0);
            if (!shared) assert_int_equal(b.copies, 0);
            st_generations_free(g, NP);
            st_kv_cache_free(b.c);
            st_infer_ctx_free(b.ic);
        }
    }
    for (int i = 0; i < NP; i++) free(pp[i]);
    st_model_free(m);
}

static void test_batched_equals_recompute(void **state) {
    (void)state;
    run_batched_equals_recompute(0);
}

static void test_shared_prefix_equals_recompute(void **state) {
    (void)state;
    run_batched_equals_recompute(20);
}

/* copy_prefix: dst holds exactly src's first n positions (later steps see them: checked above);
 * here its errors and length bookkeeping. */
static void test_copy_prefix_contract(void **state) {
    (void)state;
    st_model *m = random_model(3);
    st_kv_cache *c;
    assert_int_equal(st_kv_cache_new(&m->config, 3, 16, &c), ST_OK);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    const int32_t t[5] = {1, 2, 3, 4, 5}, *tp = t;
    const int slot = 0, n5 = 5;
    float *lg = malloc(sizeof(float) * V);
    assert_int_equal(st_forward_infer(ic, c, &slot, &tp, &n5, 1, lg), ST_OK);
    assert_int_equal(st_kv_cache_copy_prefix(c, 2, 0, 3), ST_OK);
    assert_int_equal(st_kv_cache_len(c, 2), 3);
    assert_int_equal(st_kv_cache_copy_prefix(c, 1, 0, 6), ST_ERR_ARG); /* more than src holds */
    assert_int_equal(st_kv_cache_copy_prefix(c, 0, 0, 1), ST_ERR_ARG); /* dst == src */
    assert_int_equal(st_kv_cache_copy_prefix(c, 3, 0, 1), ST_ERR_ARG); /* slot out of range */
    assert_int_equal(st_kv_cache_copy_prefix(c, 1, -1, 1), ST_ERR_ARG);
    assert_int_equal(st_kv_cache_len(c, 1), 0);
    /* the copied prefix + the remaining tokens give the same logits as the full prompt */
    float *lg2 = malloc(sizeof(float) * V);
    const int32_t *rest = t + 3;
    const int slot2 = 2, n2 = 2;
    assert_int_equal(st_forward_infer(ic, c, &slot2, &rest, &n2, 1, lg2), ST_OK);
    for (int v = 0; v < V; v++) assert_true(fabsf(lg[v] - lg2[v]) <= 1e-5f * (1.0f + fabsf(lg[v])));
    free(lg);
    free(lg2);
    st_infer_ctx_free(ic);
    st_kv_cache_free(c);
    st_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_equals_recompute),
        cmocka_unit_test(test_shared_prefix_equals_recompute),
        cmocka_unit_test(test_copy_prefix_contract),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
