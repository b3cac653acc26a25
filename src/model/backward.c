/* backward.c - training forward (saved activations, masked cross-entropy) and backward.
 * The chain mirrors forward.c in reverse; every kernel backward accumulates, so the buffers
 * receiving a fresh gradient are zeroed first. Structure after llm.c gpt2_backward. */
#include "safetune/backward.h"

#include <string.h>

#include "model/acts.h"
#include "model/matmul_bf16.h"
#include "safetune/kernels.h"

size_t st_train_acts_floats(const st_config *cfg, int B, int T) {
    return st_acts_floats(cfg, B, T, 1, 0);
}

st_status st_train_acts_new(const st_config *cfg, int B, int T, st_train_acts **out) {
    return st_acts_alloc(cfg, B, T, 1, 0, out);
}

const float *st_train_token_losses(const st_train_acts *a) { return a->losses; }

void st_train_acts_set_head_term(st_train_acts *a, const st_head_term *term) { a->head = term; }

st_status st_train_forward_hidden(const st_config *cfg, const st_weights *w, st_train_acts *a,
                                  const int32_t *tokens, int B, int T, float *lnf) {
    if (B * T > a->maxN)
        return st_error(ST_ERR_ARG, "hidden forward: B*T = %d exceeds the allocated %d tokens", B * T, a->maxN);
    const st_lora_weights *lw = a->lora.lw;
    a->lora.lw = NULL; /* the plain model */
    a->has_forward = 0;
    st_status s = st_forward_core(cfg, w, a, tokens, B, T, NULL);
    a->lora.lw = lw;
    if (!s) memcpy(lnf, a->lnf, (size_t)B * T * cfg->hidden_size * sizeof(float));
    return s;
}

/* d(logits) rows of fp32 [n, V] rounded to bf16 in the first half of each row's own slot (row
 * stride 2V bf16), as crossentropy_fused_bf16 leaves them: a chunk is read before its bf16 lands
 * on bytes below it (see kernels_misc.c). */
static void dlogits_to_bf16(float *logits, int n, int V) {
    st_bf16_row(NULL, NULL, 0);
#pragma omp parallel for schedule(static) if (n > 1)
    for (int r = 0; r < n; r++) {
        float *l = logits + (size_t)r * V;
        unsigned char *out = (unsigned char *)l;
        enum { CH = 256 };
        for (int v0 = 0; v0 < V; v0 += CH) {
            const int k = V - v0 < CH ? V - v0 : CH;
            float f[CH];
            uint16_t h[CH];
            memcpy(f, l + v0, (size_t)k * sizeof *f);
            st_bf16_row(h, f, (size_t)k);
            memcpy(out + 2 * (size_t)v0, h, (size_t)k * sizeof *h);
        }
    }
}

st_status st_train_forward(const st_config *cfg, const st_weights *w, st_train_acts *a,
                           const int32_t *tokens, const int32_t *targets, const float *mask,
                           int B, int T, float normaliser, float *loss) {
    a->lora.lw = NULL; /* no adapter */
    return st__train_forward(cfg, w, a, tokens, targets, mask, B, T, normaliser, loss);
}

static float *closs_of(st_train_acts *a, int N, int Nt) { return a->losses + (N - Nt); }

st_status st__train_forward(const st_config *cfg, const st_weights *w, st_train_acts *a,
                            const int32_t *tokens, const int32_t *targets, const float *mask,
                            int B, int T, float normaliser, float *loss) {
    if (!a->save) return st_error(ST_ERR_ARG, "train forward: activations not made for training");
    if (!(normaliser > 0))
        return st_error(ST_ERR_ARG, "train forward: normaliser %g must be > 0", (double)normaliser);
    const int N = B * T, V = cfg->vocab_size;
    if (N > a->maxN)
        return st_error(ST_ERR_ARG, "train forward: B*T = %d exceeds the allocated %d tokens", N,
                        a->maxN);
    for (int n = 0; n < N; n++)
        if (targets[n] >= V)
            return st_error(ST_ERR_ARG, "train forward: target %d at position %d outside [0, %d)",
                            targets[n], n, V);
    if (a->head_rows > 0 && !a->lora.lw)
        return st_error(ST_ERR_ARG, "train forward: a chunked lm_head needs a frozen head (LoRA)");
    a->has_forward = 0;
    st_status s = st_forward_core(cfg, w, a, tokens, B, T, NULL);
    if (s) return s;
    /* lm_head and cross-entropy only on the rows with a target, compacted (gathered in place
     * in a->lnf: rows[j] >= j, so a forward copy never overwrites a row still to be read);
     * untrained rows (prompts, padding) cost nothing. The loss weight of each row is known
     * here, so one fused pass leaves d(logits) for the backward. */
    const int C = cfg->hidden_size;
    int Nt = 0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        a->rows[Nt] = n;
        a->targets[Nt] = targets[n];
        a->dlosses[Nt] = (mask ? mask[n] : 1.0f) / normaliser;
        if (n != Nt)
            memcpy(a->lnf + (size_t)Nt * C, a->lnf + (size_t)n * C, (size_t)C * sizeof(float));
        Nt++;
    }
    a->n_rows = Nt;
    const st_backend *be = st_backend_get();
    float *closs = closs_of(a, N, Nt); /* compact losses at the end, spread below */
    const st_weights16 *w16 = a->w16;
    if (Nt > 0 && a->head_rows > 0) {
        /* frozen head, chunked: logits, loss and d(logits) of head_rows rows at a time, then at
         * once their d(ln_f) (= d(logits)·W, the lm_head backward) into the compact rows of
         * a->dln, so no [rows, V] buffer is kept for the backward */
        for (int j0 = 0; j0 < Nt; j0 += a->head_rows) {
            const int R = Nt - j0 < a->head_rows ? Nt - j0 : a->head_rows;
            const float *x = a->lnf + (size_t)j0 * C;
            float *dx = a->dln + (size_t)j0 * C;
            const uint16_t *dl16 = (const uint16_t *)a->logits; /* bf16 d(logits), stride 2V */
            if (w16)
                ST_PROF("mm_lmhead_fwd", be->matmul_forward_w16(a->logits, x, NULL, w16->lm_head, NULL, R, C, V));
            else
                ST_PROF("mm_lmhead_fwd", be->matmul_forward(a->logits, x, w->lm_head, NULL, R, C, V));
            if (a->head) { /* a defense's per-token loss (st_head_term), chunk by chunk */
                s = a->head->apply(a->head->user, a->logits, a->rows + j0, a->targets + j0,
                                   a->dlosses + j0, closs_of(a, N, Nt) + j0, R, V);
                if (s) return s;
                if (a->bf16_acts) dlogits_to_bf16(a->logits, R, V);
            } else {
                ST_PROF("xent_fused", (a->bf16_acts ? be->crossentropy_fused_bf16 : be->crossentropy_fused)(
                                          closs_of(a, N, Nt) + j0, a->logits, a->targets + j0,
                                          a->dlosses + j0, R, V));
            }
            if (w16) {
                ST_PROF("mm_lmhead_bwd", be->matmul_backward_w16(dx, NULL, dl16, 2 * V, w16->lm_head, R, C, V));
            } else if (a->bf16_acts) {
                ST_PROF("mm_lmhead_bwd", be->matmul_backward_bf16(dx, NULL, NULL, dl16, 2 * V, NULL, NULL,
                                                                  w->lm_head, R, C, V));
            } else {
                memset(dx, 0, (size_t)R * C * sizeof(float));
                ST_PROF("mm_lmhead_bwd", be->matmul_backward(dx, NULL, NULL, a->logits, NULL, w->lm_head, R, C, V));
            }
        }
    } else if (Nt > 0) {
        if (w16) /* unchunked with a bf16 base: refused by st_lora_base_train_forward */
            return st_error(ST_ERR_INTERNAL, "train forward: a bf16 base needs a chunked head");
        ST_PROF("mm_lmhead_fwd", be->matmul_forward(a->logits, a->lnf, w->lm_head, NULL, Nt, C, V));
    }
    if (a->head_rows > 0) {
        /* chunked: losses and d(ln_f) made above */
    } else if (Nt > 0 && a->head) { /* a defense's per-token loss (st_head_term) */
        s = a->head->apply(a->head->user, a->logits, a->rows, a->targets, a->dlosses, closs, Nt, V);
        if (s) return s;
        if (a->bf16_acts) dlogits_to_bf16(a->logits, Nt, V);
    } else if (Nt > 0) {
        /* bf16 path: d(logits) left as bf16 in place (row stride 2V) for the lm_head backward */
        ST_PROF("xent_fused", (a->bf16_acts ? be->crossentropy_fused_bf16
                                                         : be->crossentropy_fused)(
                                  closs, a->logits, a->targets, a->dlosses, Nt, V));
    }
    /* spread the compact losses to their rows (front to back: rows[j] <= (N - Nt) + j) */
    double sum = 0.0;
    for (int n = 0, j = 0; n < N; n++) {
        float l = 0.0f;
        if (j < Nt && a->rows[j] == n) {
            l = closs[j];
            sum += (double)(mask ? mask[n] : 1.0f) * l;
            j++;
        }
        a->losses[n] = l;
    }
    if (loss) *loss = (float)(sum / normaliser);
    a->has_forward = 1;
    return ST_OK;
}

st_status st_train_backward(const st_config *c, const st_weights *w, st_train_acts *a,
                            const st_weights *g) {
    if (!g) return st_error(ST_ERR_ARG, "train backward: no gradient buffer");
    if (a->lora.lw)
        return st_error(ST_ERR_ARG, "train backward: the forward had an adapter "
                        "(use st_lora_train_backward)");
    return st__train_backward(c, w, a, g);
}

/* g NULL: frozen base (input gradients only; the adapter's, if any, go to a->lora.lg) */
st_status st__train_backward(const st_config *c, const st_weights *w, st_train_acts *a,
                             const st_weights *g) {
    if (!a->has_forward || !a->save)
        return st_error(ST_ERR_ARG, "train backward: no training forward to differentiate");
    const st_backend *be = st_backend_get();
    const int B = a->B, T = a->T, N = B * T;
    const int C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const int H = c->num_attention_heads, KV = c->num_key_value_heads, D = c->head_dim;
    const int HD = H * D, Wd = (H + 2 * KV) * D;
    const size_t NC = (size_t)N * C;
    if (g && !st_weights_fusable(c, g))
        return st_error(ST_ERR_ARG, "train backward: gradient buffer not in the flat layout");

    /* head: d(logits) of the compact rows is in a->logits (st_train_forward); lm_head on those
     * rows, then d(ln_f) spread back to [N, C] with zeros for the untrained rows (back to front:
     * rows[j] >= j, so a moved row never lands on one still to be moved) */
    const int Nt = a->n_rows, b16 = a->bf16_acts;
    const st_weights16 *w16 = a->w16;
    if (w16 && (g || !b16))
        return st_error(ST_ERR_INTERNAL, "train backward: a bf16 base is frozen (bf16 path, no base gradients)");
    if (a->head_rows > 0) {
        /* chunked head: the forward left d(ln_f) of the compact rows in a->dln */
    } else if (b16) {
        if (Nt > 0)
            ST_PROF("mm_lmhead_bwd", be->matmul_backward_bf16(a->dln, g ? g->lm_head : NULL, NULL,
                                                              (const uint16_t *)a->logits, 2 * V,
                                                              a->lnf, NULL, w->lm_head, Nt, C, V));
    } else {
        memset(a->dln, 0, (size_t)Nt * C * sizeof(float));
        if (Nt > 0)
            ST_PROF("mm_lmhead_bwd", be->matmul_backward(a->dln, g ? g->lm_head : NULL, NULL, a->logits,
                                                         a->lnf, w->lm_head, Nt, C, V));
    }
    for (int n = N - 1, j = Nt - 1; n >= 0; n--) {
        float *dst = a->dln + (size_t)n * C;
        if (j >= 0 && a->rows[j] == n) {
            if (j != n) memcpy(dst, a->dln + (size_t)j * C, (size_t)C * sizeof(float));
            j--;
        } else {
            memset(dst, 0, (size_t)C * sizeof(float));
        }
    }
    memset(a->dres, 0, NC * sizeof(float));
    /* bf16 path: every rmsnorm backward also leaves bf16 d(residual) in the free tmp, the
     * dout of the next matmul backward (down, then o_proj) */
    uint16_t *dres16 = (uint16_t *)a->tmp;
    if (b16)
        ST_PROF("rmsnorm_bwd", be->rmsnorm_backward_bf16(a->dres, dres16, g ? g->norm : NULL, a->dln, a->x_final, w->norm, a->rstdf, N, C));
    else
        ST_PROF("rmsnorm_bwd", be->rmsnorm_backward(a->dres, g ? g->norm : NULL, a->dln, a->x_final, w->norm, a->rstdf, N, C));
    a->has_forward = 0; /* one backward per forward (d(logits) and the compacted ln_f used) */
    const st_layer_weights frozen = {0}; /* NULL gradient views: kernels skip them */
    const int lora = a->lora.lw != NULL;
    const int lora_qkv = st__lora_has(a, ST_LORA_Q) || st__lora_has(a, ST_LORA_K) ||
                         st__lora_has(a, ST_LORA_V);

    for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
        const st_layer_weights *Lw = &w->layers[l];
        const st_layer_weights *Lg = g ? &g->layers[l] : &frozen;
        const st_layer_weights16 *L16 = w16 ? &w16->layers[l] : NULL;
        st_layer_acts *A = &a->layers[l];
        /* MLP: x_out = x_mid + down(swiglu(gate|up(ln2(x_mid)))) */
        if (b16) { /* bf16 operands held by the forward; input gradients written */
            uint16_t *dgu16 = (uint16_t *)a->dgu;
            if (L16)
                ST_PROF("mm_down_bwd", be->matmul_backward_w16(a->dh, NULL, dres16, 0, L16->down_proj, N, I, C));
            else
                ST_PROF("mm_down_bwd", be->matmul_backward_bf16(a->dh, Lg->down_proj, NULL, dres16, 0, NULL,
                                                                (const uint16_t *)A->hmlp, Lw->down_proj, N, I, C));
            if (lora) st__lora_bwd(a, c, l, ST_LORA_DOWN, NULL, (const uint16_t *)A->hmlp, a->dres, NULL, C, a->dh);
            ST_PROF("swiglu_bwd", be->swiglu_backward_bf16(dgu16, a->dh, A->gu, N, I));
            if (L16)
                ST_PROF("mm_gateup_bwd", be->matmul_backward_w16(a->dln, NULL, dgu16, 0, L16->gate_proj, N, C, 2 * I));
            else
                ST_PROF("mm_gateup_bwd", be->matmul_backward_bf16(a->dln, Lg->gate_proj, NULL, dgu16, 0, NULL,
                                                                  (const uint16_t *)A->ln2, Lw->gate_proj, N, C, 2 * I));
            if (lora) {
                const uint16_t *ln2 = (const uint16_t *)A->ln2;
                st__lora_bwd(a, c, l, ST_LORA_GATE, NULL, ln2, NULL, dgu16, 2 * I, a->dln);
                st__lora_bwd(a, c, l, ST_LORA_UP, NULL, ln2, NULL, dgu16 + I, 2 * I, a->dln);
            }
        } else {
            memset(a->dh, 0, (size_t)N * I * sizeof(float));
            ST_PROF("mm_down_bwd", be->matmul_backward(a->dh, Lg->down_proj, NULL, a->dres, A->hmlp, Lw->down_proj, N, I, C));
            if (lora) st__lora_bwd(a, c, l, ST_LORA_DOWN, A->hmlp, NULL, a->dres, NULL, C, a->dh);
            memset(a->dgu, 0, (size_t)N * 2 * I * sizeof(float));
            ST_PROF("swiglu_bwd", be->swiglu_backward(a->dgu, a->dh, A->gu, N, I));
            memset(a->dln, 0, NC * sizeof(float));
            ST_PROF("mm_gateup_bwd", be->matmul_backward(a->dln, Lg->gate_proj, NULL, a->dgu, A->ln2,
                                                         Lw->gate_proj, N, C, 2 * I));
            if (lora) {
                st__lora_bwd(a, c, l, ST_LORA_GATE, A->ln2, NULL, a->dgu, NULL, 2 * I, a->dln);
                st__lora_bwd(a, c, l, ST_LORA_UP, A->ln2, NULL, a->dgu + I, NULL, 2 * I, a->dln);
            }
        }
        if (b16)
            ST_PROF("rmsnorm_bwd", be->rmsnorm_backward_bf16(a->dres, dres16, Lg->post_attention_layernorm, a->dln,
                                                             A->x_mid, Lw->post_attention_layernorm, A->rstd2, N, C));
        else
            ST_PROF("rmsnorm_bwd", be->rmsnorm_backward(a->dres, Lg->post_attention_layernorm, a->dln, A->x_mid,
                                                        Lw->post_attention_layernorm, A->rstd2, N, C));
        /* attention: x_mid = x_in + o(attn(rope(qkv(ln1(x_in))))) */
        if (b16) {
            if (L16)
                ST_PROF("mm_o_bwd", be->matmul_backward_w16(a->datt, NULL, dres16, 0, L16->o_proj, N, HD, C));
            else
                ST_PROF("mm_o_bwd", be->matmul_backward_bf16(a->datt, Lg->o_proj, NULL, dres16, 0, A->att, NULL, Lw->o_proj, N, HD, C));
        } else {
            memset(a->datt, 0, (size_t)N * HD * sizeof(float));
            ST_PROF("mm_o_bwd", be->matmul_backward(a->datt, Lg->o_proj, NULL, a->dres, A->att, Lw->o_proj, N, HD, C));
        }
        if (lora) st__lora_bwd(a, c, l, ST_LORA_O, A->att, NULL, a->dres, NULL, C, a->datt);
        memset(a->dqkv, 0, (size_t)N * Wd * sizeof(float));
        ST_PROF("attn_bwd", be->attention_backward(a->dqkv, a->datt, A->qkv, A->att, A->lse, B, T,
                                                   H, KV, D, a->att_scratch));
        if (b16 && !c->attention_bias && be->rope_backward_bf16 && !lora_qkv) {
            /* RoPE backward writes the bf16 d(qkv) the matmul needs (into the free dgu) */
            uint16_t *dqkv16 = (uint16_t *)a->dgu;
            ST_PROF("rope_bwd", be->rope_backward_bf16(dqkv16, a->dqkv, N, H + KV, D, Wd, a->rope_cos, a->rope_sin));
            if (L16)
                ST_PROF("mm_qkv_bwd", be->matmul_backward_w16(a->dln, NULL, dqkv16, 0, L16->q_proj, N, C, Wd));
            else
                ST_PROF("mm_qkv_bwd", be->matmul_backward_bf16(a->dln, Lg->q_proj, NULL, dqkv16, 0, NULL,
                                                               (const uint16_t *)A->ln1, Lw->q_proj, N, C, Wd));
        } else {
            ST_PROF("rope_bwd", be->rope_backward(a->dqkv, N, H + KV, D, Wd, a->rope_cos, a->rope_sin));
            if (L16) {
                ST_PROF("mm_qkv_bwd", be->matmul_backward_w16(a->dln, a->dqkv, NULL, 0, L16->q_proj, N, C, Wd));
            } else if (b16) {
                ST_PROF("mm_qkv_bwd", be->matmul_backward_bf16(a->dln, Lg->q_proj, a->dqkv, NULL, 0, NULL,
                                                               (const uint16_t *)A->ln1, Lw->q_proj, N, C, Wd));
                if (Lg->q_bias) be->matmul_backward(NULL, NULL, Lg->q_bias, a->dqkv, NULL, NULL, N, C, Wd);
            } else {
                memset(a->dln, 0, NC * sizeof(float));
                ST_PROF("mm_qkv_bwd", be->matmul_backward(a->dln, Lg->q_proj, Lg->q_bias, a->dqkv, A->ln1, Lw->q_proj, N, C, Wd));
            }
            if (lora_qkv) { /* d(qkv) before RoPE, fp32 in a->dqkv */
                const float *x = b16 ? NULL : A->ln1;
                const uint16_t *x16 = b16 ? (const uint16_t *)A->ln1 : NULL;
                st__lora_bwd(a, c, l, ST_LORA_Q, x, x16, a->dqkv, NULL, Wd, a->dln);
                st__lora_bwd(a, c, l, ST_LORA_K, x, x16, a->dqkv + HD, NULL, Wd, a->dln);
                st__lora_bwd(a, c, l, ST_LORA_V, x, x16, a->dqkv + HD + KV * D, NULL, Wd, a->dln);
            }
        }
        if (b16)
            ST_PROF("rmsnorm_bwd", be->rmsnorm_backward_bf16(a->dres, dres16, Lg->input_layernorm, a->dln, A->x_in,
                                                             Lw->input_layernorm, A->rstd1, N, C));
        else
            ST_PROF("rmsnorm_bwd", be->rmsnorm_backward(a->dres, Lg->input_layernorm, a->dln, A->x_in,
                                                        Lw->input_layernorm, A->rstd1, N, C));
    }
    if (g) ST_PROF("embed_bwd", be->embedding_backward(g->embed_tokens, a->dres, a->tokens, N, C));
    return ST_OK;
}
