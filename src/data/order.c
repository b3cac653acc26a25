/* order.c - deterministic validation split and the per-epoch shuffled, rank-sharded sampler. */
#include "safetune/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

st_status st_data_split_make(size_t n, double val_fraction, size_t val_count, uint64_t seed,
                             st_data_split *out) {
    memset(out, 0, sizeof *out);
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return st_error(ST_ERR_ARG, "validation split: val_fraction = %g must be in [0, 1)",
                        val_fraction);
    if (n > UINT32_MAX) return st_error(ST_ERR_ARG, "validation split: %zu rows is too many", n);
    size_t n_val = val_count > 0 ? val_count : (size_t)ceil(val_fraction * (double)n);
    if (n_val >= n)
        return st_error(ST_ERR_ARG, "validation split: %zu validation row%s of %zu leave%s none for training "
                        "(the split is the one `train` makes: ask for fewer validation rows, or use more data)",
                        n_val, n_val == 1 ? "" : "s", n, n_val == 1 ? "s" : "");
    uint32_t *perm = st_malloc(n * sizeof *perm);
    if (!perm) return ST_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    st_rng r;
    st_rng_seed(&r, seed);
    st_rng_shuffle(&r, perm, n);
    out->val = st_malloc((n_val ? n_val : 1) * sizeof(uint32_t));
    out->train = st_malloc((n - n_val) * sizeof(uint32_t));
    if (!out->val || !out->train) {
        free(perm);
        st_data_split_free(out);
        return ST_ERR_NOMEM;
    }
    memcpy(out->val, perm, n_val * sizeof(uint32_t));
    memcpy(out->train, perm + n_val, (n - n_val) * sizeof(uint32_t));
    free(perm);
    out->n_val = n_val;
    out->n_train = n - n_val;
    qsort(out->val, out->n_val, sizeof(uint32_t), cmp_u32);
    qsort(out->train, out->n_train, sizeof(uint32_t), cmp_u32);
    return ST_OK;
}

void st_data_split_free(st_data_split *s) {
    free(s->train);
    free(s->val);
    memset(s, 0, sizeof *s);
}

/* Rebuild this rank's shard of epoch s->epoch. */
static void build_shard(st_data_sampler *s) {
    uint32_t *order = s->order;
    memcpy(order, s->items, s->n_items * sizeof *order);
    if (s->shuffle) {
        st_rng r;
        st_rng_seed(&r, s->seed + (uint64_t)s->epoch * 0x9E3779B97F4A7C15ULL);
        st_rng_shuffle(&r, order, s->n_items);
    }
    size_t k = 0;
    for (size_t i = (size_t)s->rank; i < s->n_items; i += (size_t)s->world) s->shard[k++] = order[i];
    s->n_shard = k;
}

st_status st_data_sampler_init(st_data_sampler *s, const uint32_t *items, size_t n, uint64_t seed,
                          int shuffle, int rank, int world) {
    memset(s, 0, sizeof *s);
    if (world < 1 || rank < 0 || rank >= world)
        return st_error(ST_ERR_ARG, "sampler: rank %d of world %d is invalid", rank, world);
    if (n < (size_t)world)
        return st_error(ST_ERR_ARG, "sampler: %zu items cannot feed %d ranks (rank %d would get "
                        "none)", n, world, world - 1);
    s->items = st_malloc(n * sizeof *s->items);
    s->shard = st_malloc((n / (size_t)world + 1) * sizeof *s->shard);
    s->order = st_malloc(n * sizeof *s->order);
    if (!s->items || !s->shard || !s->order) {
        st_data_sampler_free(s);
        return ST_ERR_NOMEM;
    }
    memcpy(s->items, items, n * sizeof *items);
    s->n_items = n;
    s->seed = seed;
    s->shuffle = shuffle;
    s->rank = rank;
    s->world = world;
    build_shard(s);
    return ST_OK;
}

void st_data_sampler_free(st_data_sampler *s) {
    free(s->items);
    free(s->shard);
    free(s->order);
    memset(s, 0, sizeof *s);
}

uint32_t st_data_sampler_next(st_data_sampler *s) {
    if (s->pos >= s->n_shard) {
        s->epoch++;
        s->pos = 0;
        build_shard(s);
    }
    return s->shard[s->pos++];
}

st_status st_data_sampler_seek(st_data_sampler *s, int64_t epoch, size_t pos) {
    if (epoch < 0) return st_error(ST_ERR_ARG, "sampler: epoch %lld < 0", (long long)epoch);
    int64_t old = s->epoch;
    s->epoch = epoch;
    build_shard(s);
    if (pos > s->n_shard) {
        s->epoch = old;
        build_shard(s);
        return st_error(ST_ERR_ARG, "sampler: position %zu beyond the %zu items of rank %d",
                        pos, s->n_shard, s->rank);
    }
    s->pos = pos;
    return ST_OK;
}
