/* forward.c - full-sequence forward (no cache): activations allocation, the decoder stack and
 * st_forward_logits. Reference: transformers modeling_llama.py LlamaModel.forward. */
#include "safetune/forward.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/acts.h"
#include "safetune/backward.h"
#include "safetune/kernels.h"

static size_t acts_layout(const st_config *c, int N, int B, int T, int save, int logits_ext,
                          int head_rows, struct st_train_acts *a, float *base) {
    const size_t C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const size_t HD = (size_t)c->num_attention_heads * c->head_dim;
    const size_t W = (size_t)(c->num_attention_heads + 2 * c->num_key_value_heads) * c->head_dim;
    const size_t n = (size_t)N;
    size_t off = 0;
#define TAKE(ptr, count)                                                                     \
    do {                                                                                     \
        if (base) ptr = (void *)(base + off);                                                \
        off += ((size_t)(count) + 15) & ~(size_t)15;                                         \
    } while (0)
    const int nl = save ? c->num_hidden_layers : 1;
    for (int l = 0; l < nl; l++) {
        st_layer_acts tmp = {0}, *L = base ? &a->layers[l] : &tmp;
        TAKE(L->x_in, n * C);
        TAKE(L->ln1, n * C);
        TAKE(L->rstd1, n);
        TAKE(L->qkv, n * W);
        TAKE(L->att, n * HD);
        TAKE(L->lse, (size_t)B * c->num_attention_heads * T);
        TAKE(L->x_mid, n * C);
        TAKE(L->ln2, n * C);
        TAKE(L->rstd2, n);
        TAKE(L->gu, n * 2 * I);
        TAKE(L->hmlp, n * I);
    }
    if (base && !save)
        for (int l = 1; l < c->num_hidden_layers; l++) a->layers[l] = a->layers[0];
    float *xf = NULL;
    TAKE(xf, n * C);
    if (base) a->x_final = save ? xf : a->layers[0].x_in;
    TAKE(a->lnf, n * C);
    TAKE(a->rstdf, n);
    if (!logits_ext) TAKE(a->logits, (head_rows > 0 && (size_t)head_rows < n ? (size_t)head_rows : n) * V);
    TAKE(a->losses, n);
    TAKE(a->dlosses, n);
    TAKE(a->tokens, n);
    TAKE(a->targets, n);
    TAKE(a->rows, n);
    TAKE(a->rope_cos, n * c->head_dim / 2);
    TAKE(a->rope_sin, n * c->head_dim / 2);
    TAKE(a->tmp, n * (C > HD ? C : HD));
    if (save) {
        TAKE(a->dres, n * C);
        TAKE(a->dln, n * C);
        TAKE(a->datt, n * HD);
        TAKE(a->dqkv, n * W);
        TAKE(a->dgu, n * 2 * I);
        TAKE(a->dh, n * I);
    }
#undef TAKE
    return off;
}

size_t st_acts_floats(const st_config *cfg, int B, int T, int save, int logits_external) {
    struct st_train_acts probe = {0};
    return acts_layout(cfg, B * T, B, T, save, logits_external, 0, &probe, NULL);
}

size_t st_acts_floats_chunked(const st_config *cfg, int B, int T, int head_rows) {
    struct st_train_acts probe = {0};
    return acts_layout(cfg, B * T, B, T, 1, 0, head_rows, &probe, NULL);
}

static st_status acts_alloc(const st_config *cfg, int B, int T, int save, int logits_external,
                            int head_rows, struct st_train_acts **out) {
    *out = NULL;
    if (B <= 0 || T <= 0) return st_error(ST_ERR_ARG, "activations: B=%d T=%d must be > 0", B, T);
    struct st_train_acts *a = st_calloc(1, sizeof *a);
    if (!a) return ST_ERR_NOMEM;
    a->maxN = B * T;
    a->B = B;
    a->T = T;
    a->save = save;
    a->L = cfg->num_hidden_layers;
    a->layers = st_calloc((size_t)cfg->num_hidden_layers, sizeof *a->layers);
    struct st_train_acts probe = {0};
    size_t nf = acts_layout(cfg, B * T, B, T, save, logits_external, head_rows, &probe, NULL);
    a->buf = a->layers ? st_alloc_aligned(nf * sizeof(float)) : NULL;
    if (!a->buf) {
        free(a->layers);
        free(a);
        return st_error(ST_ERR_NOMEM, "activations: cannot allocate %zu MiB for B=%d rows of T=%d tokens "
                        "(lower the batch size or the sequence length)", nf * sizeof(float) >> 20, B, T);
    }
    acts_layout(cfg, B * T, B, T, save, logits_external, head_rows, a, a->buf);
    a->head_rows = head_rows > 0 && head_rows < B * T ? head_rows : (head_rows > 0 ? B * T : 0);
    *out = a;
    return ST_OK;
}

st_status st_acts_alloc(const st_config *cfg, int B, int T, int save, int logits_external,
                        struct st_train_acts **out) {
    return acts_alloc(cfg, B, T, save, logits_external, 0, out);
}

st_status st_acts_alloc_chunked(const st_config *cfg, int B, int T, int head_rows,
                                struct st_train_acts **out) {
    if (head_rows <= 0) return st_error(ST_ERR_ARG, "activations: head_rows %d must be > 0", head_rows);
    return acts_alloc(cfg, B, T, 1, 0, head_rows, out);
}

st_status st_acts_ensure_scratch(struct st_train_acts *a, int T, int D) {
    size_t need = st_attention_batch_scratch_floats(T, D) * (size_t)omp_get_max_threads();
    if (need <= a->att_scratch_floats) return ST_OK;
    st_free_aligned(a->att_scratch);
    a->att_scratch = st_alloc_aligned(need * sizeof(float));
    a->att_scratch_floats = a->att_scratch ? need : 0;
    return a->att_scratch ? ST_OK : st_error(ST_ERR_NOMEM, "attention scratch: out of memory");
}

void st_train_acts_free(st_train_acts *a) {
    if (!a) return;
    st_free_aligned(a->buf);
    st_free_aligned(a->att_scratch);
    st_free_aligned(a->lora.u);
    free(a->layers);
    free(a);
}

int st_backend_bf16_entries(const st_backend *be) {
    return be->matmul_forward_bf16 && be->matmul_backward_bf16 && be->rmsnorm_forward_bf16 &&
           be->swiglu_forward_bf16 && be->swiglu_backward_bf16 &&
           be->residual_rmsnorm_forward_bf16 && be->rmsnorm_backward_bf16 &&
           be->crossentropy_fused_bf16;
}

int st_backend_w16_entries(const st_backend *be) {
    return st_backend_bf16_entries(be) && be->matmul_forward_w16 && be->matmul_backward_w16 &&
           be->embedding_forward_w16;
}

int st_backend_bf16_ready(const st_backend *be) {
    return st_matmul_get_precision() == ST_MATMUL_BF16 && st_backend_bf16_entries(be);
}

int st_weights_fusable(const st_config *c, const st_weights *w) {
    const size_t C = c->hidden_size, I = c->intermediate_size;
    const size_t HD = (size_t)c->num_attention_heads * c->head_dim;
    const size_t KD = (size_t)c->num_key_value_heads * c->head_dim;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const st_layer_weights *L = &w->layers[l];
        if (L->k_proj != L->q_proj + HD * C || L->v_proj != L->k_proj + KD * C) return 0;
        if (c->attention_bias && (L->k_bias != L->q_bias + HD || L->v_bias != L->k_bias + KD))
            return 0;
        if (L->up_proj != L->gate_proj + I * C) return 0;
    }
    return 1;
}

st_status st_forward_core(const st_config *c, const st_weights *w, struct st_train_acts *a,
                          const int32_t *tokens, int B, int T, float *logits) {
    const st_backend *be = st_backend_get();
    const int N = B * T, C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const int H = c->num_attention_heads, KV = c->num_key_value_heads, D = c->head_dim;
    const int HD = H * D, Wd = (H + 2 * KV) * D;
    if (N > a->maxN)
        return st_error(ST_ERR_ARG, "forward: B*T = %d exceeds the allocated %d tokens", N,
                        a->maxN);
    const st_weights16 *w16 = a->w16; /* frozen bf16 base: its matrices replace w's */
    if (w16 && !st_backend_w16_entries(be))
        return st_error(ST_ERR_UNSUPPORTED, "forward: backend %s has no bf16-weight products "
                        "(use an fp32 base)", be->name);
    if (!w16 && !st_weights_fusable(c, w))
        return st_error(ST_ERR_INTERNAL, "forward: weights not in the fused flat layout");
    for (int n = 0; n < N; n++)
        if (tokens[n] < 0 || tokens[n] >= V)
            return st_error(ST_ERR_ARG, "forward: token %d at position %d is outside [0, %d)",
                            tokens[n], n, V);
    st_status s = st_acts_ensure_scratch(a, T, D);
    if (s) return s;
    a->B = B;
    a->T = T;
    memcpy(a->tokens, tokens, (size_t)N * sizeof *tokens);

    /* RoPE tables for positions 0..T-1 of every row */
    double inv[512];
    if (D / 2 > 512) return st_error(ST_ERR_UNSUPPORTED, "forward: head_dim %d > 1024", D);
    st_config_rope_inv_freq(c, inv);
    int *pos = st_malloc((size_t)N * sizeof *pos);
    if (!pos) return ST_ERR_NOMEM;
    for (int n = 0; n < N; n++) pos[n] = n % T;
    st_rope_cos_sin(a->rope_cos, a->rope_sin, pos, N, inv, D);
    free(pos);

    if (w16)
        ST_PROF("embed_fwd", be->embedding_forward_w16(a->layers[0].x_in, tokens, w16->embed_tokens, N, C));
    else
        ST_PROF("embed_fwd", be->embedding_forward(a->layers[0].x_in, tokens, w->embed_tokens, N, C));
    /* a bf16 base takes the bf16-operand path whatever the process precision */
    const int b16 = a->bf16_acts = w16 ? 1 : st_backend_bf16_ready(be);
    const int lora = a->lora.lw != NULL; /* adapters (lora.c); only training forwards set it */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const st_layer_weights *Lw = &w->layers[l];
        const st_layer_weights16 *L16 = w16 ? &w16->layers[l] : NULL;
        st_layer_acts *A = &a->layers[l];
        uint16_t *ln1 = (uint16_t *)A->ln1, *ln2 = (uint16_t *)A->ln2, *hm = (uint16_t *)A->hmlp;
        if (b16) {
            /* layers after the first got x_in, ln1 and rstd1 from the previous layer's fused
             * residual + norm */
            if (l == 0)
                ST_PROF("rmsnorm_fwd", be->rmsnorm_forward_bf16(ln1, A->rstd1, A->x_in, Lw->input_layernorm, N, C, c->rms_norm_eps));
            if (L16)
                ST_PROF("mm_qkv_fwd", be->matmul_forward_w16(A->qkv, NULL, ln1, L16->q_proj, Lw->q_bias, N, C, Wd));
            else
                ST_PROF("mm_qkv_fwd", be->matmul_forward_bf16(A->qkv, ln1, Lw->q_proj, Lw->q_bias, N, C, Wd));
        } else {
            ST_PROF("rmsnorm_fwd", be->rmsnorm_forward(A->ln1, A->rstd1, A->x_in, Lw->input_layernorm, N, C, c->rms_norm_eps));
            ST_PROF("mm_qkv_fwd", be->matmul_forward(A->qkv, A->ln1, Lw->q_proj, Lw->q_bias, N, C, Wd));
        }
        if (lora) { /* adapters on q, k, v (before RoPE, as PEFT wraps the projections) */
            const float *x = b16 ? NULL : A->ln1;
            const uint16_t *x16 = b16 ? ln1 : NULL;
            st__lora_fwd(a, c, l, ST_LORA_Q, x, x16, A->qkv, Wd);
            st__lora_fwd(a, c, l, ST_LORA_K, x, x16, A->qkv + HD, Wd);
            st__lora_fwd(a, c, l, ST_LORA_V, x, x16, A->qkv + HD + KV * D, Wd);
        }
        ST_PROF("rope_fwd", be->rope_forward(A->qkv, N, H + KV, D, Wd, a->rope_cos, a->rope_sin));
        ST_PROF("attn_fwd", be->attention_forward(A->att, A->lse, A->qkv, B, T, H, KV, D, a->att_scratch));
        if (L16)
            ST_PROF("mm_o_fwd", be->matmul_forward_w16(a->tmp, A->att, NULL, L16->o_proj, NULL, N, HD, C));
        else
            ST_PROF("mm_o_fwd", be->matmul_forward(a->tmp, A->att, Lw->o_proj, NULL, N, HD, C));
        if (lora) st__lora_fwd(a, c, l, ST_LORA_O, A->att, NULL, a->tmp, C);
        /* x_mid = x_in + o_proj(att) */
        if (b16) {
            ST_PROF("rmsnorm_fwd", be->residual_rmsnorm_forward_bf16(A->x_mid, ln2, A->rstd2, A->x_in, a->tmp, Lw->post_attention_layernorm, N, C, c->rms_norm_eps));
            if (L16)
                ST_PROF("mm_gateup_fwd", be->matmul_forward_w16(A->gu, NULL, ln2, L16->gate_proj, NULL, N, C, 2 * I));
            else
                ST_PROF("mm_gateup_fwd", be->matmul_forward_bf16(A->gu, ln2, Lw->gate_proj, NULL, N, C, 2 * I));
            if (lora) {
                st__lora_fwd(a, c, l, ST_LORA_GATE, NULL, ln2, A->gu, 2 * I);
                st__lora_fwd(a, c, l, ST_LORA_UP, NULL, ln2, A->gu + I, 2 * I);
            }
            ST_PROF("swiglu_fwd", be->swiglu_forward_bf16(hm, A->gu, N, I));
            if (L16)
                ST_PROF("mm_down_fwd", be->matmul_forward_w16(a->tmp, NULL, hm, L16->down_proj, NULL, N, I, C));
            else
                ST_PROF("mm_down_fwd", be->matmul_forward_bf16(a->tmp, hm, Lw->down_proj, NULL, N, I, C));
            if (lora) st__lora_fwd(a, c, l, ST_LORA_DOWN, NULL, hm, a->tmp, C);
            if (l + 1 < c->num_hidden_layers) { /* next x_in = x_mid + down(...), and its norm */
                st_layer_acts *A1 = &a->layers[l + 1];
                ST_PROF("rmsnorm_fwd", be->residual_rmsnorm_forward_bf16(A1->x_in, (uint16_t *)A1->ln1, A1->rstd1, A->x_mid, a->tmp, w->layers[l + 1].input_layernorm, N, C, c->rms_norm_eps));
                continue;
            }
        } else {
            memcpy(A->x_mid, A->x_in, (size_t)N * C * sizeof(float));
            be->add_inplace(A->x_mid, a->tmp, (size_t)N * C);
            ST_PROF("rmsnorm_fwd", be->rmsnorm_forward(A->ln2, A->rstd2, A->x_mid, Lw->post_attention_layernorm, N, C, c->rms_norm_eps));
            ST_PROF("mm_gateup_fwd", be->matmul_forward(A->gu, A->ln2, Lw->gate_proj, NULL, N, C, 2 * I));
            if (lora) {
                st__lora_fwd(a, c, l, ST_LORA_GATE, A->ln2, NULL, A->gu, 2 * I);
                st__lora_fwd(a, c, l, ST_LORA_UP, A->ln2, NULL, A->gu + I, 2 * I);
            }
            ST_PROF("swiglu_fwd", be->swiglu_forward(A->hmlp, A->gu, N, I));
            ST_PROF("mm_down_fwd", be->matmul_forward(a->tmp, A->hmlp, Lw->down_proj, NULL, N, I, C));
            if (lora) st__lora_fwd(a, c, l, ST_LORA_DOWN, A->hmlp, NULL, a->tmp, C);
        }
        float *next = l + 1 < c->num_hidden_layers ? a->layers[l + 1].x_in : a->x_final;
        if (next != A->x_mid) memcpy(next, A->x_mid, (size_t)N * C * sizeof(float));
        be->add_inplace(next, a->tmp, (size_t)N * C);
    }
    ST_PROF("rmsnorm_fwd", be->rmsnorm_forward(a->lnf, a->rstdf, a->x_final, w->norm, N, C, c->rms_norm_eps));
    if (logits && w16)
        ST_PROF("mm_lmhead_fwd", be->matmul_forward_w16(logits, a->lnf, NULL, w16->lm_head, NULL, N, C, V));
    else if (logits)
        ST_PROF("mm_lmhead_fwd", be->matmul_forward(logits, a->lnf, w->lm_head, NULL, N, C, V));
    a->has_forward = 1;
    return ST_OK;
}

st_status st_forward_logits_w(const st_config *cfg, const st_weights *w, const int32_t *tokens,
                              int B, int T, float *logits) {
    struct st_train_acts *a = NULL;
    st_status s = st_acts_alloc(cfg, B, T, 0, 1, &a);
    if (s) return s;
    s = st_forward_core(cfg, w, a, tokens, B, T, logits);
    st_train_acts_free(a);
    return s;
}

st_status st_forward_logits(const st_model *m, const int32_t *tokens, int B, int T,
                            float *logits) {
    return st_forward_logits_w(&m->config, &m->w, tokens, B, T, logits);
}
