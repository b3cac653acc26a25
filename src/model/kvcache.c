/* kvcache.c - the KV cache: per layer, per slot, max_seq rows of KV*D keys and values, plus the
 * reusable scratch of st_forward_infer (grown on demand, so steady-state decode allocates
 * nothing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kvcache.h"

const char *const st_infer_prof_names[ST_INFER_NPROF] = {
    "embed+rope tables", "rmsnorm", "qkv matmul", "rope+kv append", "attention",
    "o matmul", "gate/up matmul", "swiglu", "down matmul", "final norm+lm_head"};

st_status st_kv_cache_new(const st_config *cfg, int max_batch, int max_seq, st_kv_cache **out) {
    *out = NULL;
    if (max_batch <= 0 || max_seq <= 0)
        return st_error(ST_ERR_ARG, "kv cache: max_batch %d and max_seq %d must be > 0",
                        max_batch, max_seq);
    st_kv_cache *c = st_calloc(1, sizeof *c);
    if (!c) return ST_ERR_NOMEM;
    c->cfg = *cfg;
    c->L = cfg->num_hidden_layers;
    c->max_batch = max_batch;
    c->max_seq = max_seq;
    c->kvd = cfg->num_key_value_heads * cfg->head_dim;
    const char *pe = getenv("SAFETUNE_INFER_PROFILE");
    c->profile = pe && *pe && *pe != '0';
    const char *wc = getenv("SAFETUNE_INFER_WCACHE");
    c->no_wcache = wc && *wc == '0';
    size_t n = (size_t)c->L * max_batch * max_seq * c->kvd;
    c->k = st_alloc_aligned(n * sizeof(float));
    c->v = st_alloc_aligned(n * sizeof(float));
    c->len = st_calloc((size_t)max_batch, sizeof *c->len);
    if (!c->k || !c->v || !c->len) {
        st_kv_cache_free(c);
        return st_error(ST_ERR_NOMEM, "kv cache: cannot allocate %zu MiB (max_batch %d, max_seq %d)",
                        2 * n * sizeof(float) >> 20, max_batch, max_seq);
    }
    *out = c;
    return ST_OK;
}

void st_kv_cache_free(st_kv_cache *c) {
    if (!c) return;
    for (int k = 0; k < 2 && c->profile; k++) {
        if (!c->prof_calls[k]) continue;
        double tot = 0;
        for (int i = 0; i < ST_INFER_NPROF; i++) tot += c->prof[k][i];
        fprintf(stderr, "infer profile (%s): %ld calls, %.3f s\n", k ? "with prefill" : "decode",
                c->prof_calls[k], tot);
        for (int i = 0; i < ST_INFER_NPROF; i++)
            fprintf(stderr, "  %-20s %8.3f s %5.1f%%\n", st_infer_prof_names[i], c->prof[k][i],
                    tot > 0 ? 100.0 * c->prof[k][i] / tot : 0.0);
    }
    st_free_aligned(c->k);
    st_free_aligned(c->v);
    st_free_aligned(c->scratch);
    st_free_aligned(c->att_scratch);
    free(c->len);
    free(c);
}

void st_kv_cache_clear(st_kv_cache *c, int slot) {
    if (slot >= 0 && slot < c->max_batch) c->len[slot] = 0;
}
int st_kv_cache_len(const st_kv_cache *c, int slot) {
    return slot >= 0 && slot < c->max_batch ? c->len[slot] : -1;
}
int st_kv_cache_max_seq(const st_kv_cache *c) { return c->max_seq; }
void st_kv_cache_set_precision(st_kv_cache *c, st_matmul_precision p) {
    c->prec = p;
    c->prec_set = 1;
}

st_status st_kv_cache_copy_prefix(st_kv_cache *c, int dst, int src, int n) {
    if (dst < 0 || dst >= c->max_batch || src < 0 || src >= c->max_batch || dst == src)
        return st_error(ST_ERR_ARG, "kv cache: copy_prefix slots %d <- %d invalid (%d slots)", dst,
                        src, c->max_batch);
    if (n < 0 || n > c->len[src])
        return st_error(ST_ERR_ARG, "kv cache: copy_prefix of %d positions, slot %d holds %d", n,
                        src, c->len[src]);
    const size_t bytes = (size_t)n * c->kvd * sizeof(float);
    for (int l = 0; l < c->L; l++) {
        memcpy(st_kv_cache_k(c, l, dst), st_kv_cache_k(c, l, src), bytes);
        memcpy(st_kv_cache_v(c, l, dst), st_kv_cache_v(c, l, src), bytes);
    }
    c->len[dst] = n;
    return ST_OK;
}

float *st_kv_cache_k(st_kv_cache *c, int layer, int slot) {
    return c->k + (((size_t)layer * c->max_batch + slot) * c->max_seq) * c->kvd;
}
float *st_kv_cache_v(st_kv_cache *c, int layer, int slot) {
    return c->v + (((size_t)layer * c->max_batch + slot) * c->max_seq) * c->kvd;
}
