/* hashmap.c - growable vectors and the two open-addressing hash maps used by the tokenizer:
 * token string -> id, and (left id, right id) -> (merge rank, merged id). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

st_status st__ivec_push(st__ivec *a, int32_t x) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        int32_t *nv = st_realloc(a->v, nc * sizeof *nv);
        if (!nv) return ST_ERR_NOMEM;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return ST_OK;
}

st_status st__bytes_append(st__bytes *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *nv = st_realloc(b->v, nc);
        if (!nv) return ST_ERR_NOMEM;
        b->v = nv;
        b->cap = nc;
    }
    if (n) memcpy(b->v + b->n, p, n);
    b->n += n;
    b->v[b->n] = '\0';
    return ST_OK;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint32_t pow2_for(size_t expected) {
    uint32_t cap = 16;
    while (cap < expected * 2 + 1) cap *= 2;
    return cap;
}

st_status st__strmap_init(st__strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_for(expected);
    m->keys = st_calloc(m->cap, sizeof *m->keys);
    m->lens = st_calloc(m->cap, sizeof *m->lens);
    m->vals = st_calloc(m->cap, sizeof *m->vals);
    if (!m->keys || !m->lens || !m->vals) {
        st__strmap_free(m);
        return ST_ERR_NOMEM;
    }
    return ST_OK;
}

void st__strmap_free(st__strmap *m) {
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static st_status strmap_grow(st__strmap *m) {
    st__strmap nm;
    st_status s = st__strmap_init(&nm, m->cap);
    if (s) return s;
    for (uint32_t i = 0; i < m->cap; i++)
        if (m->keys[i]) st__strmap_put(&nm, m->keys[i], m->lens[i], m->vals[i]);
    st__strmap_free(m);
    *m = nm;
    return ST_OK;
}

st_status st__strmap_put(st__strmap *m, const char *k, size_t len, int32_t v) {
    if ((m->n + 1) * 2 > m->cap) {
        st_status s = strmap_grow(m);
        if (s) return s;
    }
    uint32_t mask = m->cap - 1, i = (uint32_t)hash_bytes(k, len) & mask;
    while (m->keys[i]) {
        if (m->lens[i] == len && memcmp(m->keys[i], k, len) == 0) {
            m->vals[i] = v;
            return ST_OK;
        }
        i = (i + 1) & mask;
    }
    m->keys[i] = k;
    m->lens[i] = (uint32_t)len;
    m->vals[i] = v;
    m->n++;
    return ST_OK;
}

int32_t st__strmap_get(const st__strmap *m, const char *k, size_t len) {
    if (!m->cap) return -1;
    uint32_t mask = m->cap - 1, i = (uint32_t)hash_bytes(k, len) & mask;
    while (m->keys[i]) {
        if (m->lens[i] == len && memcmp(m->keys[i], k, len) == 0) return m->vals[i];
        i = (i + 1) & mask;
    }
    return -1;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

st_status st__pairmap_init(st__pairmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_for(expected);
    m->keys = st_malloc(m->cap * sizeof *m->keys);
    m->rank = st_malloc(m->cap * sizeof *m->rank);
    m->merged = st_malloc(m->cap * sizeof *m->merged);
    if (!m->keys || !m->rank || !m->merged) {
        st__pairmap_free(m);
        return ST_ERR_NOMEM;
    }
    memset(m->keys, 0xff, m->cap * sizeof *m->keys);
    return ST_OK;
}

void st__pairmap_free(st__pairmap *m) {
    free(m->keys);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

st_status st__pairmap_put(st__pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    if ((m->n + 1) * 2 > m->cap) {
        st__pairmap nm;
        st_status s = st__pairmap_init(&nm, m->cap);
        if (s) return s;
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->keys[i] != UINT64_MAX)
                st__pairmap_put(&nm, (int32_t)(m->keys[i] >> 32), (int32_t)(uint32_t)m->keys[i],
                                m->rank[i], m->merged[i]);
        st__pairmap_free(m);
        *m = nm;
    }
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = m->cap - 1, i = (uint32_t)hash_u64(key) & mask;
    while (m->keys[i] != UINT64_MAX) {
        if (m->keys[i] == key) { /* a repeated merge: the later one wins, as in HF's HashMap */
            m->rank[i] = rank;
            m->merged[i] = merged;
            return ST_OK;
        }
        i = (i + 1) & mask;
    }
    m->keys[i] = key;
    m->rank[i] = rank;
    m->merged[i] = merged;
    m->n++;
    return ST_OK;
}

int st__pairmap_get(const st__pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    if (!m->cap) return 0;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = m->cap - 1, i = (uint32_t)hash_u64(key) & mask;
    while (m->keys[i] != UINT64_MAX) {
        if (m->keys[i] == key) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return 1;
        }
        i = (i + 1) & mask;
    }
    return 0;
}
