/* infer.c - st_forward_infer: batched incremental forward over the KV cache. All new tokens of
 * all sequences go through each projection as ONE GEMM (M = total new tokens, so a decode step
 * of B sequences is an M = B GEMM); attention runs per (sequence, head) over that sequence's
 * own cache. Reference: transformers LlamaModel.forward with past_key_values. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/acts.h"
#include "model/kvcache.h"
#include "safetune/kernels.h"

typedef struct {
    float *x, *ln, *qkv, *att, *tmp, *gu, *h, *cs, *sn, *last;
    int *pos, *row0;
} infer_bufs;

static size_t bufs_layout(const st_config *c, size_t N, infer_bufs *b, float *base) {
    const size_t C = c->hidden_size, I = c->intermediate_size, D = c->head_dim;
    const size_t HD = (size_t)c->num_attention_heads * D;
    const size_t W = (size_t)(c->num_attention_heads + 2 * c->num_key_value_heads) * D;
    size_t off = 0;
#define TAKE(p, n)                                                                           \
    do {                                                                                     \
        if (base) b->p = (void *)(base + off);                                               \
        off += ((size_t)(n) + 15) & ~(size_t)15;                                             \
    } while (0)
    TAKE(x, N * C);
    TAKE(ln, N * C);
    TAKE(qkv, N * W);
    TAKE(att, N * HD);
    TAKE(tmp, N * (C > HD ? C : HD));
    TAKE(gu, N * 2 * I);
    TAKE(h, N * I);
    TAKE(cs, N * D / 2);
    TAKE(sn, N * D / 2);
    TAKE(last, N * C);
    TAKE(pos, N);
    TAKE(row0, N + 1);
#undef TAKE
    return off;
}

st_status st_forward_infer(const st_model *m, st_kv_cache *kc, const int *slots,
                           const int32_t *const *tokens, const int *n_tokens, int n_seqs,
                           float *logits_last) {
    const st_config *c = &m->config;
    const st_weights *w = &m->w;
    const st_backend *be = st_backend_get();
    const int C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const int H = c->num_attention_heads, KV = c->num_key_value_heads, D = c->head_dim;
    const int HD = H * D, Wd = (H + 2 * KV) * D, rep = H / KV, kvd = KV * D;
    if (n_seqs <= 0 || n_seqs > kc->max_batch)
        return st_error(ST_ERR_ARG, "infer: n_seqs %d outside [1, %d]", n_seqs, kc->max_batch);
    if (kc->kvd != kvd || kc->L != c->num_hidden_layers)
        return st_error(ST_ERR_ARG, "infer: KV cache was created for a different model config");
    if (!st_weights_fusable(c, w))
        return st_error(ST_ERR_INTERNAL, "infer: weights not in the fused flat layout");
    size_t N = 0;
    int max_tk = 1;
    for (int i = 0; i < n_seqs; i++) {
        const int s = slots[i];
        if (s < 0 || s >= kc->max_batch)
            return st_error(ST_ERR_ARG, "infer: slot %d outside [0, %d)", s, kc->max_batch);
        for (int j = 0; j < i; j++)
            if (slots[j] == s) return st_error(ST_ERR_ARG, "infer: slot %d given twice", s);
        if (n_tokens[i] <= 0)
            return st_error(ST_ERR_ARG, "infer: sequence %d has %d new tokens", i, n_tokens[i]);
        if (kc->len[s] + n_tokens[i] > kc->max_seq)
            return st_error(ST_ERR_ARG,
                            "infer: slot %d would hold %d tokens, more than max_seq %d", s,
                            kc->len[s] + n_tokens[i], kc->max_seq);
        for (int j = 0; j < n_tokens[i]; j++)
            if (tokens[i][j] < 0 || tokens[i][j] >= V)
                return st_error(ST_ERR_ARG, "infer: token %d (sequence %d, index %d) outside [0, %d)",
                                tokens[i][j], i, j, V);
        N += (size_t)n_tokens[i];
        if (kc->len[s] + n_tokens[i] > max_tk) max_tk = kc->len[s] + n_tokens[i];
    }
    /* scratch: grown only when a call needs more rows than any before */
    if (N > kc->scratch_tokens) {
        infer_bufs probe;
        size_t nf = bufs_layout(c, N, &probe, NULL);
        st_free_aligned(kc->scratch);
        kc->scratch = st_alloc_aligned(nf * sizeof(float));
        kc->scratch_tokens = kc->scratch ? N : 0;
        if (!kc->scratch) return st_error(ST_ERR_NOMEM, "infer: out of memory (%zu tokens)", N);
    }
    size_t att_need = st_attention_scratch_floats(kc->max_seq) * (size_t)omp_get_max_threads();
    if (att_need > kc->att_scratch_floats) {
        st_free_aligned(kc->att_scratch);
        kc->att_scratch = st_alloc_aligned(att_need * sizeof(float));
        kc->att_scratch_floats = kc->att_scratch ? att_need : 0;
        if (!kc->att_scratch) return st_error(ST_ERR_NOMEM, "infer: attention scratch");
    }
    (void)max_tk;
    infer_bufs b;
    bufs_layout(c, kc->scratch_tokens, &b, kc->scratch);
    const size_t per_thread = st_attention_scratch_floats(kc->max_seq);

    /* flatten tokens, positions */
    int32_t *flat = (int32_t *)b.h; /* h is free until the first MLP; N*I >= N */
    b.row0[0] = 0;
    for (int i = 0; i < n_seqs; i++) {
        b.row0[i + 1] = b.row0[i] + n_tokens[i];
        for (int j = 0; j < n_tokens[i]; j++) {
            flat[b.row0[i] + j] = tokens[i][j];
            b.pos[b.row0[i] + j] = kc->len[slots[i]] + j;
        }
    }
    double inv[512];
    if (D / 2 > 512) return st_error(ST_ERR_UNSUPPORTED, "infer: head_dim %d > 1024", D);
    st_config_rope_inv_freq(c, inv);
    st_rope_cos_sin(b.cs, b.sn, b.pos, (int)N, inv, D);
    be->embedding_forward(b.x, flat, w->embed_tokens, (int)N, C);

    for (int l = 0; l < c->num_hidden_layers; l++) {
        const st_layer_weights *Lw = &w->layers[l];
        be->rmsnorm_forward(b.ln, NULL, b.x, Lw->input_layernorm, (int)N, C, c->rms_norm_eps);
        be->matmul_forward(b.qkv, b.ln, Lw->q_proj, Lw->q_bias, (int)N, C, Wd);
        be->rope_forward(b.qkv, (int)N, H + KV, D, Wd, b.cs, b.sn);
        /* append the new keys/values to each slot */
        for (int i = 0; i < n_seqs; i++) {
            float *kd = st_kv_cache_k(kc, l, slots[i]), *vd = st_kv_cache_v(kc, l, slots[i]);
            const int p0 = kc->len[slots[i]];
            for (int j = 0; j < n_tokens[i]; j++) {
                const float *row = b.qkv + (size_t)(b.row0[i] + j) * Wd;
                memcpy(kd + (size_t)(p0 + j) * kvd, row + HD, (size_t)kvd * sizeof(float));
                memcpy(vd + (size_t)(p0 + j) * kvd, row + HD + kvd, (size_t)kvd * sizeof(float));
            }
        }
#pragma omp parallel for schedule(dynamic)
        for (int t = 0; t < n_seqs * H; t++) {
            const int i = t / H, h = t % H, g = h / rep, s = slots[i];
            const int tq = n_tokens[i], tk = kc->len[s] + tq;
            be->attention_head_forward(b.att + (size_t)b.row0[i] * HD + (size_t)h * D, NULL,
                                       b.qkv + (size_t)b.row0[i] * Wd + (size_t)h * D,
                                       st_kv_cache_k(kc, l, s) + (size_t)g * D,
                                       st_kv_cache_v(kc, l, s) + (size_t)g * D, tq, tk, D, Wd,
                                       kvd, HD, kc->att_scratch + per_thread * omp_get_thread_num());
        }
        be->matmul_forward(b.tmp, b.att, Lw->o_proj, NULL, (int)N, HD, C);
        be->add_inplace(b.x, b.tmp, N * C);
        be->rmsnorm_forward(b.ln, NULL, b.x, Lw->post_attention_layernorm, (int)N, C,
                            c->rms_norm_eps);
        be->matmul_forward(b.gu, b.ln, Lw->gate_proj, NULL, (int)N, C, 2 * I);
        be->swiglu_forward(b.h, b.gu, (int)N, I);
        be->matmul_forward(b.tmp, b.h, Lw->down_proj, NULL, (int)N, I, C);
        be->add_inplace(b.x, b.tmp, N * C);
    }
    for (int i = 0; i < n_seqs; i++) {
        kc->len[slots[i]] += n_tokens[i];
        memcpy(b.last + (size_t)i * C, b.x + (size_t)(b.row0[i + 1] - 1) * C,
               (size_t)C * sizeof(float));
    }
    be->rmsnorm_forward(b.ln, NULL, b.last, w->norm, n_seqs, C, c->rms_norm_eps);
    be->matmul_forward(logits_last, b.ln, w->lm_head, NULL, n_seqs, C, V);
    return ST_OK;
}
