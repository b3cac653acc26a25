/* weights.c - flat parameter layout and named views (weights.h).
 * Order inside a layer puts q,k,v weights (and q,k,v biases) next to each other and gate next
 * to up, so the forward can run them as one fused GEMM each (rows of [q|k|v], [gate|up]). */
#include "safetune/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static st_status add(st_layout *lay, size_t *cap, const char *name, int n_dims, int64_t d0,
                     int64_t d1, int no_decay) {
    if (lay->n_tensors == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        st_param_info *p = st_realloc(lay->params, nc * sizeof *p);
        if (!p) return ST_ERR_NOMEM;
        lay->params = p;
        *cap = nc;
    }
    st_param_info *p = &lay->params[lay->n_tensors++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->n_dims = n_dims;
    p->shape[0] = d0;
    p->shape[1] = n_dims == 2 ? d1 : 1;
    p->numel = (size_t)d0 * (size_t)(n_dims == 2 ? d1 : 1);
    p->offset = lay->n_floats;
    p->no_decay = no_decay;
    lay->n_floats += p->numel; /* no padding: fused [q|k|v] and [gate|up] GEMMs need adjacency */
    return ST_OK;
}

st_status st_layout_init(st_layout *lay, const st_config *cfg) {
    memset(lay, 0, sizeof *lay);
    size_t cap = 0;
    const int64_t C = cfg->hidden_size, I = cfg->intermediate_size, V = cfg->vocab_size;
    const int64_t QD = (int64_t)cfg->num_attention_heads * cfg->head_dim;
    const int64_t KD = (int64_t)cfg->num_key_value_heads * cfg->head_dim;
    char n[96];
    st_status s = add(lay, &cap, "model.embed_tokens.weight", 2, V, C, 0);
    for (int l = 0; l < cfg->num_hidden_layers && !s; l++) {
#define ADD(suffix, nd, a, b, nodecay)                                                \
    do {                                                                              \
        snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);                       \
        if (!s) s = add(lay, &cap, n, nd, a, b, nodecay);                             \
    } while (0)
        ADD("input_layernorm.weight", 1, C, 0, 1);
        ADD("self_attn.q_proj.weight", 2, QD, C, 0);
        ADD("self_attn.k_proj.weight", 2, KD, C, 0);
        ADD("self_attn.v_proj.weight", 2, KD, C, 0);
        if (cfg->attention_bias) {
            ADD("self_attn.q_proj.bias", 1, QD, 0, 1);
            ADD("self_attn.k_proj.bias", 1, KD, 0, 1);
            ADD("self_attn.v_proj.bias", 1, KD, 0, 1);
        }
        ADD("self_attn.o_proj.weight", 2, C, QD, 0);
        ADD("post_attention_layernorm.weight", 1, C, 0, 1);
        ADD("mlp.gate_proj.weight", 2, I, C, 0);
        ADD("mlp.up_proj.weight", 2, I, C, 0);
        ADD("mlp.down_proj.weight", 2, C, I, 0);
#undef ADD
    }
    if (!s) s = add(lay, &cap, "model.norm.weight", 1, C, 0, 1);
    if (!s && !cfg->tie_word_embeddings) s = add(lay, &cap, "lm_head.weight", 2, V, C, 0);
    if (s) st_layout_free(lay);
    return s;
}

void st_layout_free(st_layout *lay) {
    free(lay->params);
    memset(lay, 0, sizeof *lay);
}

const st_param_info *st_layout_find(const st_layout *lay, const char *name) {
    for (size_t i = 0; i < lay->n_tensors; i++)
        if (strcmp(lay->params[i].name, name) == 0) return &lay->params[i];
    return NULL;
}

static float *view(const st_layout *lay, float *flat, const char *fmt, int l, st_status *s) {
    char n[96];
    snprintf(n, sizeof n, fmt, l);
    const st_param_info *p = st_layout_find(lay, n);
    if (!p) {
        if (!*s) *s = st_error(ST_ERR_INTERNAL, "weights: layout has no tensor %s", n);
        return NULL;
    }
    return flat + p->offset;
}

st_status st_weights_bind(st_weights *w, const st_config *cfg, const st_layout *lay, float *flat) {
    memset(w, 0, sizeof *w);
    w->layers = st_calloc((size_t)cfg->num_hidden_layers, sizeof *w->layers);
    if (!w->layers) return ST_ERR_NOMEM;
    st_status s = ST_OK;
    w->embed_tokens = view(lay, flat, "model.embed_tokens.weight", 0, &s);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        st_layer_weights *L = &w->layers[l];
        L->input_layernorm = view(lay, flat, "model.layers.%d.input_layernorm.weight", l, &s);
        L->q_proj = view(lay, flat, "model.layers.%d.self_attn.q_proj.weight", l, &s);
        L->k_proj = view(lay, flat, "model.layers.%d.self_attn.k_proj.weight", l, &s);
        L->v_proj = view(lay, flat, "model.layers.%d.self_attn.v_proj.weight", l, &s);
        if (cfg->attention_bias) {
            L->q_bias = view(lay, flat, "model.layers.%d.self_attn.q_proj.bias", l, &s);
            L->k_bias = view(lay, flat, "model.layers.%d.self_attn.k_proj.bias", l, &s);
            L->v_bias = view(lay, flat, "model.layers.%d.self_attn.v_proj.bias", l, &s);
        }
        L->o_proj = view(lay, flat, "model.layers.%d.self_attn.o_proj.weight", l, &s);
        L->post_attention_layernorm =
            view(lay, flat, "model.layers.%d.post_attention_layernorm.weight", l, &s);
        L->gate_proj = view(lay, flat, "model.layers.%d.mlp.gate_proj.weight", l, &s);
        L->up_proj = view(lay, flat, "model.layers.%d.mlp.up_proj.weight", l, &s);
        L->down_proj = view(lay, flat, "model.layers.%d.mlp.down_proj.weight", l, &s);
    }
    w->norm = view(lay, flat, "model.norm.weight", 0, &s);
    w->lm_head = cfg->tie_word_embeddings ? w->embed_tokens
                                          : view(lay, flat, "lm_head.weight", 0, &s);
    if (s) st_weights_unbind(w);
    return s;
}

void st_weights_unbind(st_weights *w) {
    free(w->layers);
    w->layers = NULL;
}

static const uint16_t *view16(const st_layout *lay, const uint16_t *flat, const char *fmt, int l,
                              st_status *s) {
    char n[96];
    snprintf(n, sizeof n, fmt, l);
    const st_param_info *p = st_layout_find(lay, n);
    if (!p) {
        if (!*s) *s = st_error(ST_ERR_INTERNAL, "weights: layout has no tensor %s", n);
        return NULL;
    }
    return flat + p->offset;
}

st_status st_weights16_bind(st_weights16 *w, const st_config *cfg, const st_layout *lay,
                            const uint16_t *flat) {
    memset(w, 0, sizeof *w);
    w->layers = st_calloc((size_t)cfg->num_hidden_layers, sizeof *w->layers);
    if (!w->layers) return ST_ERR_NOMEM;
    st_status s = ST_OK;
    w->embed_tokens = view16(lay, flat, "model.embed_tokens.weight", 0, &s);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        st_layer_weights16 *L = &w->layers[l];
        L->q_proj = view16(lay, flat, "model.layers.%d.self_attn.q_proj.weight", l, &s);
        L->o_proj = view16(lay, flat, "model.layers.%d.self_attn.o_proj.weight", l, &s);
        L->gate_proj = view16(lay, flat, "model.layers.%d.mlp.gate_proj.weight", l, &s);
        L->down_proj = view16(lay, flat, "model.layers.%d.mlp.down_proj.weight", l, &s);
    }
    w->lm_head = cfg->tie_word_embeddings ? w->embed_tokens
                                          : view16(lay, flat, "lm_head.weight", 0, &s);
    if (s) st_weights16_unbind(w);
    return s;
}

void st_weights16_unbind(st_weights16 *w) {
    free(w->layers);
    w->layers = NULL;
}
