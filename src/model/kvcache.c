/* kvcache.c - the KV cache: per layer, slot and KV head, a [max_seq, D] block of keys and one of
 * values (fp32, or bf16 in bf16 mode: kvcache.h), plus the reusable scratch of st_forward_infer
 * (grown on demand, so steady-state decode allocates nothing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/fastmath.h"
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
    c->KV = cfg->num_key_value_heads;
    c->D = cfg->head_dim;
    c->kvd = c->KV * c->D;
    const char *pe = getenv("SAFETUNE_INFER_PROFILE");
    c->profile = pe && *pe && *pe != '0';
    const char *wc = getenv("SAFETUNE_INFER_WCACHE");
    c->no_wcache = wc && *wc == '0';
    const char *fu = getenv("SAFETUNE_INFER_FUSED");
    c->no_fused = fu && *fu == '0';
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
    st_free_aligned(c->fscratch);
    free(c->fctr);
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
/* Elements in each of k, v. */
static size_t kv_elems(const st_kv_cache *c) {
    return (size_t)c->L * c->max_batch * c->max_seq * c->kvd;
}

/* Re-store k and v as bf16 (to_bf16) or fp32, converting the positions they hold. On allocation
 * failure the old storage stays and kv_err makes st_forward_infer fail with ST_ERR_NOMEM. */
static void kv_convert(st_kv_cache *c, int to_bf16) {
    if (c->kv_bf16 == to_bf16) return;
    const size_t n = kv_elems(c), es = to_bf16 ? sizeof(uint16_t) : sizeof(float);
    void *nk = st_alloc_aligned(n * es), *nv = st_alloc_aligned(n * es);
    if (!nk || !nv) {
        st_free_aligned(nk);
        st_free_aligned(nv);
        c->kv_err = 1;
        return;
    }
    for (int a = 0; a < 2; a++) {
        void *src = a ? c->v : c->k, *dst = a ? nv : nk;
        for (int l = 0; l < c->L; l++)
            for (int s = 0; s < c->max_batch; s++)
                for (int h = 0; h < c->KV; h++) {
                    const size_t o = st_kv_block(c, l, s, h), m = (size_t)c->len[s] * c->D;
                    if (to_bf16)
                        for (size_t i = 0; i < m; i++)
                            ((uint16_t *)dst)[o + i] = st_f32_to_bf16(((float *)src)[o + i]);
                    else
                        for (size_t i = 0; i < m; i++)
                            ((float *)dst)[o + i] = st_bf16_to_f32(((uint16_t *)src)[o + i]);
                }
        st_free_aligned(src);
    }
    c->k = nk;
    c->v = nv;
    c->kv_bf16 = to_bf16;
    c->kv_err = 0;
}

void st_kv_cache_set_precision(st_kv_cache *c, st_matmul_precision p) {
    c->prec = p;
    c->prec_set = 1;
    kv_convert(c, p == ST_MATMUL_BF16);
}

st_status st_kv_cache_copy_prefix(st_kv_cache *c, int dst, int src, int n) {
    if (dst < 0 || dst >= c->max_batch || src < 0 || src >= c->max_batch || dst == src)
        return st_error(ST_ERR_ARG, "kv cache: copy_prefix slots %d <- %d invalid (%d slots)", dst,
                        src, c->max_batch);
    if (n < 0 || n > c->len[src])
        return st_error(ST_ERR_ARG, "kv cache: copy_prefix of %d positions, slot %d holds %d", n,
                        src, c->len[src]);
    /* per (layer, KV head) block: the first n rows of D elements */
    const size_t es = c->kv_bf16 ? sizeof(uint16_t) : sizeof(float);
    const size_t bytes = (size_t)n * c->D * es;
    for (int l = 0; l < c->L; l++)
        for (int h = 0; h < c->KV; h++) {
            const size_t od = st_kv_block(c, l, dst, h) * es, os = st_kv_block(c, l, src, h) * es;
            memcpy((char *)c->k + od, (const char *)c->k + os, bytes);
            memcpy((char *)c->v + od, (const char *)c->v + os, bytes);
        }
    c->len[dst] = n;
    return ST_OK;
}
