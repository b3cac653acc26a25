/* test_generate_sched.c - the continuous-batching scheduler (generate.h) on a fake backend whose
 * next token is a hash of the WHOLE sequence in its cache slot (so stale or mixed-up cache slots
 * change the output). Expected outputs come from a plain one-prompt-at-a-time loop over the same
 * hash, written independently of the scheduler. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "safetune/generate.h"

enum { V = 50, STOP = 7, MAXSLOT = 64, MAXSEQ = 64 };

typedef struct {
    int32_t hist[MAXSLOT][MAXSEQ];
    int len[MAXSLOT];
    int calls, max_seqs_in_call, max_tokens_in_call;
    long fed_tokens, copied_tokens, copies;
    int sampled_logits; /* unused */
} fake;

static int32_t next_token(const int32_t *h, int n) {
    uint32_t x = 2166136261u;
    for (int i = 0; i < n; i++) x = (x ^ (uint32_t)(h[i] + 1000 * i)) * 16777619u;
    x ^= x >> 13;
    return (int32_t)(x % V);
}

static st_status fake_infer(void *ctx, const int *slots, const int32_t *const *tokens, const int *n_tokens,
                            int n_seqs, float *logits) {
    fake *f = ctx;
    int tot = 0;
    f->calls++;
    if (n_seqs > f->max_seqs_in_call) f->max_seqs_in_call = n_seqs;
    for (int i = 0; i < n_seqs; i++) {
        int s = slots[i];
        for (int j = 0; j < i; j++)
            if (slots[j] == s) return st_error(ST_ERR_ARG, "slot %d twice in one call", s);
        if (n_tokens[i] <= 0 || f->len[s] + n_tokens[i] > MAXSEQ)
            return st_error(ST_ERR_ARG, "slot %d overflow", s);
        memcpy(&f->hist[s][f->len[s]], tokens[i], (size_t)n_tokens[i] * sizeof(int32_t));
        f->len[s] += n_tokens[i];
        tot += n_tokens[i];
        f->fed_tokens += n_tokens[i];
        float *row = logits + (size_t)i * V;
        for (int v = 0; v < V; v++) row[v] = 0.0f;
        row[next_token(f->hist[s], f->len[s])] = 5.0f;
    }
    if (tot > f->max_tokens_in_call) f->max_tokens_in_call = tot;
    return ST_OK;
}

static void fake_clear(void *ctx, int slot) { ((fake *)ctx)->len[slot] = 0; }

/* st_kv_cache_copy_prefix's contract on the fake's history */
static st_status fake_copy(void *ctx, int dst, int src, int n) {
    fake *f = ctx;
    if (dst == src || n < 0 || n > f->len[src]) return st_error(ST_ERR_ARG, "bad copy %d <- %d (%d)", dst, src, n);
    memcpy(f->hist[dst], f->hist[src], (size_t)n * sizeof(int32_t));
    f->len[dst] = n;
    f->copied_tokens += n;
    f->copies++;
    return ST_OK;
}

/* Reference: one prompt alone, greedy, same stop/length rules. */
static int reference(const int32_t *p, int plen, int max_new, int ctx, int32_t *out, int *finish) {
    int32_t h[256];
    if (plen > ctx - 1) {
        p += plen - (ctx - 1);
        plen = ctx - 1;
    }
    memcpy(h, p, (size_t)plen * sizeof(int32_t));
    int n = 0, len = plen;
    for (;;) {
        int32_t t = next_token(h, len);
        out[n++] = t;
        h[len++] = t;
        if (t == STOP) { *finish = ST_FINISH_STOP; return n; }
        if (n >= max_new || len >= ctx) { *finish = ST_FINISH_LENGTH; return n; }
    }
}

typedef struct { size_t calls, last_done, last_total, last_tokens; } progress_rec;
static void on_progress(void *ud, size_t d, size_t t, size_t k) {
    progress_rec *r = ud;
    assert_true(d >= r->last_done && k >= r->last_tokens);
    r->calls++;
    r->last_done = d;
    r->last_total = t;
    r->last_tokens = k;
}

enum { NP = 23 };

/* Random prompts of 1..max_len tokens. shared > 0: most prompts start with one of two common
 * prefixes of `shared` tokens (like a system prompt), some are identical, one is a prefix of
 * another, the rest are random. */
static void make_prompts_shared(int32_t **pp, size_t *lens, int max_len, int shared) {
    st_rng r;
    st_rng_seed(&r, 99);
    int32_t pre[2][64];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 64; j++) pre[k][j] = (int32_t)(st_rng_u64(&r) % V);
    for (int i = 0; i < NP; i++) {
        lens[i] = 1 + st_rng_u64(&r) % (uint64_t)max_len;
        if (shared && i % 5 != 4) lens[i] += (size_t)shared;
        pp[i] = malloc(lens[i] * sizeof(int32_t));
        for (size_t j = 0; j < lens[i]; j++) pp[i][j] = (int32_t)(st_rng_u64(&r) % V);
        if (shared && i % 5 != 4) memcpy(pp[i], pre[i % 3 == 0], (size_t)shared * sizeof(int32_t));
    }
    if (shared) {
        lens[7] = lens[2]; /* identical prompts */
        memcpy(pp[7], pp[2], lens[2] * sizeof(int32_t));
        if (lens[8] > lens[1]) { /* prompt 1 is a prefix of prompt 8 */
            memcpy(pp[8], pp[1], lens[1] * sizeof(int32_t));
        }
    }
}
static void make_prompts(int32_t **pp, size_t *lens, int max_len) { make_prompts_shared(pp, lens, max_len, 0); }

/* Generates NP prompts and checks every result against the one-prompt reference. shared: common
 * prefix length of make_prompts_shared; share: prefix sharing on (backend copy_prefix set).
 * Returns the prompt tokens the backend computed (fed), for the sharing tests. */
static long run_case_shared(int batch, int step_tokens, int max_new, int ctx, int max_len, int shared,
                            int share) {
    int32_t *pp[NP];
    size_t lens[NP];
    make_prompts_shared(pp, lens, max_len, shared);
    fake *f = calloc(1, sizeof *f);
    st_infer_backend be = {f, V, MAXSLOT, MAXSEQ, fake_infer, fake_clear, share ? fake_copy : NULL};
    st_generate_options o = st_generate_defaults();
    o.batch_size = batch;
    o.max_step_tokens = step_tokens;
    o.max_new_tokens = max_new;
    o.context_length = ctx;
    int32_t stop = STOP;
    o.stop_ids = &stop;
    o.n_stop_ids = 1;
    progress_rec pr = {0};
    o.progress = on_progress;
    o.ud = &pr;
    st_generation g[NP];
    size_t ntr = 99;
    assert_int_equal(st_generate_ids(&be, (const int32_t *const *)pp, lens, NP, &o, g, &ntr), ST_OK);
    size_t want_tr = 0, total_tokens = 0;
    for (int i = 0; i < NP; i++) {
        int32_t want[256];
        int fin;
        int n = reference(pp[i], (int)lens[i], max_new, ctx, want, &fin);
        assert_int_equal(g[i].n_ids, n);
        assert_memory_equal(g[i].ids, want, (size_t)n * sizeof(int32_t));
        assert_int_equal(g[i].finish, fin);
        assert_int_equal(g[i].completion_tokens, n);
        int tr = (int)lens[i] > ctx - 1;
        assert_int_equal(g[i].truncated, tr);
        assert_int_equal(g[i].prompt_tokens, tr ? (size_t)ctx - 1 : lens[i]);
        assert_null(g[i].text);
        want_tr += (size_t)tr;
        total_tokens += (size_t)n;
    }
    assert_int_equal(ntr, want_tr);
    assert_true(f->max_seqs_in_call <= batch);
    assert_true(pr.calls == (size_t)f->calls);
    assert_int_equal(pr.last_done, NP);
    assert_int_equal(pr.last_total, NP);
    assert_int_equal(pr.last_tokens, total_tokens);
    if (!share) assert_int_equal(f->copies, 0);
    /* every generated token but each prompt's last is fed back once, plus the computed prompt part */
    const long prompt_fed = f->fed_tokens - (long)(total_tokens - NP);
    st_generations_free(g, NP);
    for (int i = 0; i < NP; i++) free(pp[i]);
    free(f);
    return prompt_fed;
}

static void run_case(int batch, int step_tokens, int max_new, int ctx, int max_len) {
    run_case_shared(batch, step_tokens, max_new, ctx, max_len, 0, 1);
}

static void test_batch_sizes_match_reference(void **state) {
    (void)state;
    const int batches[] = {1, 2, 3, 7, 23, 32};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) run_case(batches[b], 2048, 12, 64, 20);
}

static void test_chunked_prefill(void **state) {
    (void)state;
    run_case(4, 3, 10, 64, 20);
    run_case(32, 1, 5, 64, 20);
}

static void test_left_truncation_and_context_limit(void **state) {
    (void)state;
    /* ctx 16: prompts up to 30 tokens get truncated to 15; generation stops at 16 tokens total */
    run_case(5, 2048, 40, 16, 30);
}

/* Shared prompt prefixes: results identical with and without sharing, for every batch size and
 * prefill chunk size (continuous batching refills slots mid-run, so donors may be decoding), and
 * with sharing the backend computes fewer prompt tokens. */
static void test_prefix_sharing(void **state) {
    (void)state;
    const int batches[] = {1, 2, 5, 23};
    const int steps[] = {2048, 3};
    for (size_t b = 0; b < 4; b++)
        for (size_t k = 0; k < 2; k++) {
            const long plain = run_case_shared(batches[b], steps[k], 6, 64, 12, 16, 0);
            const long shared = run_case_shared(batches[b], steps[k], 6, 64, 12, 16, 1);
            if (batches[b] > 1) assert_true(shared < plain);
            else assert_true(shared <= plain);
        }
    /* truncated prompts (context 20) share too, from their truncated start */
    run_case_shared(5, 2048, 8, 20, 12, 16, 1);
}

static void test_bad_input(void **state) {
    (void)state;
    fake *f = calloc(1, sizeof *f);
    st_infer_backend be = {f, V, MAXSLOT, MAXSEQ, fake_infer, fake_clear, fake_copy};
    st_generate_options o = st_generate_defaults();
    int32_t a[] = {1, 2}, *pp[] = {a, a};
    size_t lens[] = {2, 0};
    st_generation g[2];
    assert_int_equal(st_generate_ids(&be, (const int32_t *const *)pp, lens, 2, &o, g, NULL), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "prompt 2 is empty"));
    lens[1] = 2;
    o.batch_size = 0;
    assert_int_equal(st_generate_ids(&be, (const int32_t *const *)pp, lens, 2, &o, g, NULL), ST_ERR_ARG);
    o = st_generate_defaults();
    o.sampling.top_p = 2;
    assert_int_equal(st_generate_ids(&be, (const int32_t *const *)pp, lens, 2, &o, g, NULL), ST_ERR_ARG);
    /* backend errors propagate and leave nothing allocated */
    o = st_generate_defaults();
    o.max_new_tokens = 100; /* 2 + 100 > MAXSEQ, but context is clamped to MAXSEQ: no error */
    assert_int_equal(st_generate_ids(&be, (const int32_t *const *)pp, lens, 2, &o, g, NULL), ST_OK);
    assert_true(g[0].n_ids <= MAXSEQ - 2);
    st_generations_free(g, 2);
    free(f);
}

/* Sampling: each prompt's result is independent of batch size (per-prompt RNG streams). */
static st_status noisy_infer(void *ctx, const int *slots, const int32_t *const *tokens, const int *n_tokens,
                             int n_seqs, float *logits) {
    st_status s = fake_infer(ctx, slots, tokens, n_tokens, n_seqs, logits);
    for (int i = 0; i < n_seqs; i++)
        for (int v = 0; v < V; v++) logits[(size_t)i * V + v] = (float)((v * 7 + i * 0) % 11) * 0.3f;
    return s;
}

static void test_sampling_independent_of_batch(void **state) {
    (void)state;
    int32_t *pp[NP];
    size_t lens[NP];
    make_prompts(pp, lens, 10);
    st_generation ref[NP], g[NP];
    for (int bi = 0; bi < 3; bi++) {
        fake *f = calloc(1, sizeof *f);
        st_infer_backend be = {f, V, MAXSLOT, MAXSEQ, noisy_infer, fake_clear, fake_copy};
        st_generate_options o = st_generate_defaults();
        o.batch_size = (int[]){1, 5, 32}[bi];
        o.max_new_tokens = 15;
        o.sampling.temperature = 1.0f;
        o.sampling.top_p = 0.9f;
        o.sampling.seed = 1234;
        int32_t stop = STOP;
        o.stop_ids = &stop;
        o.n_stop_ids = 1;
        assert_int_equal(st_generate_ids(&be, (const int32_t *const *)pp, lens, NP, &o, bi ? g : ref, NULL), ST_OK);
        if (bi) {
            for (int i = 0; i < NP; i++) {
                assert_int_equal(g[i].n_ids, ref[i].n_ids);
                assert_memory_equal(g[i].ids, ref[i].ids, g[i].n_ids * sizeof(int32_t));
            }
            st_generations_free(g, NP);
        }
        free(f);
    }
    int differs = 0;
    for (int i = 1; i < NP; i++)
        differs |= ref[i].n_ids != ref[0].n_ids || memcmp(ref[i].ids, ref[0].ids, 4 * sizeof(int32_t));
    assert_true(differs); /* different prompts got different random streams */
    st_generations_free(ref, NP);
    for (int i = 0; i < NP; i++) free(pp[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_sizes_match_reference),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_left_truncation_and_context_limit),
        cmocka_unit_test(test_prefix_sharing),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_sampling_independent_of_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
