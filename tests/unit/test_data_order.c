/* test_data_order.c - validation split and sampler: determinism, coverage (every row exactly
 * once per epoch), disjointness, per-rank sharding, resume by (epoch, pos). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "safetune/data.h"

static void test_split(void **state) {
    (void)state;
    st_data_split a, b;
    assert_int_equal(st_data_split_make(1000, 0.05, 0, 7, &a), ST_OK);
    assert_int_equal(a.n_val, 50);
    assert_int_equal(a.n_train, 950);
    int *seen = calloc(1000, sizeof *seen);
    for (size_t i = 0; i < a.n_val; i++) seen[a.val[i]] += 1;
    for (size_t i = 0; i < a.n_train; i++) seen[a.train[i]] += 2;
    for (int i = 0; i < 1000; i++) assert_true(seen[i] == 1 || seen[i] == 2); /* disjoint, full */
    for (size_t i = 1; i < a.n_train; i++) assert_true(a.train[i - 1] < a.train[i]);
    /* deterministic; another seed gives another split */
    assert_int_equal(st_data_split_make(1000, 0.05, 0, 7, &b), ST_OK);
    assert_memory_equal(a.val, b.val, a.n_val * sizeof(uint32_t));
    st_data_split_free(&b);
    assert_int_equal(st_data_split_make(1000, 0.05, 0, 8, &b), ST_OK);
    assert_true(memcmp(a.val, b.val, a.n_val * sizeof(uint32_t)) != 0);
    st_data_split_free(&b);
    /* the val set is not just the first rows */
    assert_true(a.val[a.n_val - 1] > 100);
    st_data_split_free(&a);
    /* count wins over fraction; ceil of the fraction */
    assert_int_equal(st_data_split_make(10, 0.5, 3, 1, &a), ST_OK);
    assert_int_equal(a.n_val, 3);
    st_data_split_free(&a);
    assert_int_equal(st_data_split_make(10, 0.01, 0, 1, &a), ST_OK);
    assert_int_equal(a.n_val, 1);
    st_data_split_free(&a);
    assert_int_equal(st_data_split_make(10, 0.0, 0, 1, &a), ST_OK);
    assert_int_equal(a.n_val, 0);
    assert_int_equal(a.n_train, 10);
    st_data_split_free(&a);
    assert_int_equal(st_data_split_make(10, 1.0, 0, 1, &a), ST_ERR_ARG);
    assert_int_equal(st_data_split_make(10, 0.0, 10, 1, &a), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "leave none for training"));
    free(seen);
}

static void test_sampler_epochs(void **state) {
    (void)state;
    enum { N = 97 };
    uint32_t items[N];
    for (int i = 0; i < N; i++) items[i] = (uint32_t)(1000 + 3 * i);
    st_data_sampler s, t;
    assert_int_equal(st_data_sampler_init(&s, items, N, 42, 1, 0, 1), ST_OK);
    assert_int_equal(st_data_sampler_init(&t, items, N, 42, 1, 0, 1), ST_OK);
    uint32_t first[N];
    for (int e = 0; e < 3; e++) {
        int count[N] = {0};
        int moved = 0;
        for (int i = 0; i < N; i++) {
            assert_int_equal(s.epoch, e == 0 || i > 0 ? e : e - 1);
            uint32_t v = st_data_sampler_next(&s);
            assert_int_equal(v, st_data_sampler_next(&t)); /* same seed, same order */
            assert_true(v >= 1000 && (v - 1000) % 3 == 0 && (v - 1000) / 3 < N);
            count[(v - 1000) / 3]++;
            moved += v != items[i];
            if (e == 0) first[i] = v;
            else if (e == 1 && i == N - 1) assert_true(memcmp(first, s.shard, sizeof first) != 0);
        }
        for (int i = 0; i < N; i++) assert_int_equal(count[i], 1); /* each item once per epoch */
        assert_true(moved > N / 2);
    }
    /* resume: seek to (1, 10) reproduces the original stream from there */
    st_data_sampler r;
    assert_int_equal(st_data_sampler_init(&r, items, N, 42, 1, 0, 1), ST_OK);
    assert_int_equal(st_data_sampler_seek(&r, 1, 10), ST_OK);
    st_data_sampler_seek(&s, 0, 0);
    for (int i = 0; i < N + 10; i++) st_data_sampler_next(&s);
    for (int i = 0; i < 200; i++) assert_int_equal(st_data_sampler_next(&r), st_data_sampler_next(&s));
    assert_int_equal(st_data_sampler_seek(&r, 0, N + 1), ST_ERR_ARG);
    st_data_sampler_free(&r);
    st_data_sampler_free(&s);
    st_data_sampler_free(&t);
    /* shuffle off: pool order */
    assert_int_equal(st_data_sampler_init(&s, items, N, 42, 0, 0, 1), ST_OK);
    for (int i = 0; i < 2 * N; i++) assert_int_equal(st_data_sampler_next(&s), items[i % N]);
    st_data_sampler_free(&s);
}

static void test_sampler_ranks(void **state) {
    (void)state;
    enum { N = 10, W = 3 };
    uint32_t items[N];
    for (int i = 0; i < N; i++) items[i] = (uint32_t)i;
    st_data_sampler one, r[W];
    assert_int_equal(st_data_sampler_init(&one, items, N, 5, 1, 0, 1), ST_OK);
    int count[N] = {0};
    for (int k = 0; k < W; k++) {
        assert_int_equal(st_data_sampler_init(&r[k], items, N, 5, 1, k, W), ST_OK);
        assert_int_equal(r[k].n_shard, k == 0 ? 4 : 3);
        /* rank k takes every W-th item of the single-process order */
        for (size_t i = 0; i < r[k].n_shard; i++) {
            assert_int_equal(r[k].shard[i], one.shard[k + i * W]);
            count[r[k].shard[i]]++;
        }
    }
    for (int i = 0; i < N; i++) assert_int_equal(count[i], 1); /* ranks partition the epoch */
    for (int k = 0; k < W; k++) st_data_sampler_free(&r[k]);
    st_data_sampler_free(&one);
    assert_int_equal(st_data_sampler_init(&one, items, N, 5, 1, 3, 3), ST_ERR_ARG);
    assert_int_equal(st_data_sampler_init(&one, items, 2, 5, 1, 0, 3), ST_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split), cmocka_unit_test(test_sampler_epochs),
        cmocka_unit_test(test_sampler_ranks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
