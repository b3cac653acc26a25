/* lora.c - LoRA adapters (lora.h): config and target names, the flat adapter layout and its
 * views, PEFT's initialisation, the adapter products hooked into the training forward and
 * backward (acts.h st__lora_fwd / st__lora_bwd), and merging into the base weights.
 * Reference: peft/tuners/lora/layer.py (Linear.forward, reset_lora_parameters, get_delta_weight). */
#include "safetune/lora.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/acts.h"
#include "model/load.h"
#include "safetune/model.h"
#include "model/fastmath.h"
#include "model/matmul_bf16.h"

static const char *const k_names[ST_LORA_N_TARGETS] = {"q_proj", "k_proj",    "v_proj",
                                                       "o_proj", "gate_proj", "up_proj",
                                                       "down_proj"};

const char *st_lora_target_name(st_lora_target t) {
    return (unsigned)t < ST_LORA_N_TARGETS ? k_names[t] : "?";
}

const char *st_lora_target_parent(st_lora_target t) {
    return t <= ST_LORA_O ? "self_attn" : "mlp";
}

void st_lora_config_default(st_lora_config *lc) {
    lc->r = 8;
    lc->alpha = 16.0;
    lc->dropout = 0.05;
    lc->targets = ST_LORA_ALL_TARGETS;
}

void st_lora_targets_format(unsigned targets, char *buf, size_t n) {
    size_t k = 0;
    if (n) buf[0] = 0;
    for (int t = 0; t < ST_LORA_N_TARGETS; t++)
        if (targets & (1u << t)) {
            int w = snprintf(buf + k, n > k ? n - k : 0, "%s%s", k ? "," : "", k_names[t]);
            if (w > 0) k += (size_t)w;
        }
}

st_status st_lora_targets_parse(const char *list, unsigned *out) {
    *out = 0;
    if (!list || !*list)
        return st_error(ST_ERR_ARG, "lora_targets: empty; give a comma-separated list of "
                        "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or \"all\"");
    if (!strcmp(list, "all")) {
        *out = ST_LORA_ALL_TARGETS;
        return ST_OK;
    }
    unsigned bits = 0;
    const char *p = list;
    for (int pos = 1;; pos++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int t = 0; t < ST_LORA_N_TARGETS; t++)
            if (strlen(k_names[t]) == len && !strncmp(p, k_names[t], len)) found = t;
        if (found < 0)
            return st_error(ST_ERR_ARG, "lora_targets: item %d \"%.*s\" is not a target module; "
                            "valid: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj "
                            "or \"all\"", pos, (int)len, p);
        if (bits & (1u << found))
            return st_error(ST_ERR_ARG, "lora_targets: %s given twice (item %d)", k_names[found],
                            pos);
        bits |= 1u << found;
        if (!e) break;
        p = e + 1;
    }
    *out = bits;
    return ST_OK;
}

st_status st_lora_config_validate(const st_lora_config *lc) {
    if (lc->r < 1)
        return st_error(ST_ERR_ARG, "lora_r: %d must be >= 1 (the adapter rank)", lc->r);
    if (!(lc->alpha > 0) || !isfinite(lc->alpha))
        return st_error(ST_ERR_ARG, "lora_alpha: %g must be a finite number > 0", lc->alpha);
    if (!(lc->dropout >= 0 && lc->dropout < 1))
        return st_error(ST_ERR_ARG, "lora_dropout: %g must be in [0, 1)", lc->dropout);
    if (!lc->targets || (lc->targets & ~ST_LORA_ALL_TARGETS))
        return st_error(ST_ERR_ARG, "lora_targets: no target module chosen");
    return ST_OK;
}

float st_lora_scale(const st_lora_config *lc) { return (float)(lc->alpha / lc->r); }

void st_lora_target_dims(const st_config *c, st_lora_target t, int *in, int *out) {
    const int C = c->hidden_size, I = c->intermediate_size;
    const int HD = c->num_attention_heads * c->head_dim, KD = c->num_key_value_heads * c->head_dim;
    static const int is_in_c[ST_LORA_N_TARGETS] = {1, 1, 1, 0, 1, 1, 0};
    switch (t) {
    case ST_LORA_Q: *out = HD; break;
    case ST_LORA_K: case ST_LORA_V: *out = KD; break;
    case ST_LORA_O: case ST_LORA_DOWN: *out = C; break;
    default: *out = I; break;
    }
    *in = is_in_c[t] ? C : t == ST_LORA_O ? HD : I;
}

static void tensor_name(char *buf, size_t n, int l, int t, int is_b) {
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", l,
             st_lora_target_parent((st_lora_target)t), k_names[t], is_b ? 'B' : 'A');
}

st_status st_lora_layout_init(st_layout *lay, const st_config *cfg, const st_lora_config *lc) {
    memset(lay, 0, sizeof *lay);
    st_status s = st_lora_config_validate(lc);
    if (s) return s;
    size_t n = 0;
    for (int t = 0; t < ST_LORA_N_TARGETS; t++)
        if (lc->targets & (1u << t)) n += 2;
    n *= (size_t)cfg->num_hidden_layers;
    lay->params = st_calloc(n ? n : 1, sizeof *lay->params);
    if (!lay->params) return ST_ERR_NOMEM;
    for (int l = 0; l < cfg->num_hidden_layers; l++)
        for (int t = 0; t < ST_LORA_N_TARGETS; t++) {
            if (!(lc->targets & (1u << t))) continue;
            int in, out;
            st_lora_target_dims(cfg, (st_lora_target)t, &in, &out);
            for (int b = 0; b < 2; b++) {
                st_param_info *p = &lay->params[lay->n_tensors++];
                tensor_name(p->name, sizeof p->name, l, t, b);
                p->n_dims = 2;
                p->shape[0] = b ? out : lc->r;
                p->shape[1] = b ? lc->r : in;
                p->numel = (size_t)p->shape[0] * (size_t)p->shape[1];
                p->offset = lay->n_floats;
                lay->n_floats += (p->numel + 15) & ~(size_t)15; /* 64-byte aligned views */
            }
        }
    return ST_OK;
}

st_status st_lora_bind(st_lora_weights *w, const st_config *cfg, const st_lora_config *lc,
                       const st_layout *lay, float *flat) {
    w->layers = st_calloc((size_t)cfg->num_hidden_layers, sizeof *w->layers);
    if (!w->layers) return ST_ERR_NOMEM;
    char name[96];
    for (int l = 0; l < cfg->num_hidden_layers; l++)
        for (int t = 0; t < ST_LORA_N_TARGETS; t++) {
            if (!(lc->targets & (1u << t))) continue;
            for (int b = 0; b < 2; b++) {
                tensor_name(name, sizeof name, l, t, b);
                const st_param_info *p = st_layout_find(lay, name);
                if (!p) {
                    st_lora_unbind(w);
                    return st_error(ST_ERR_INTERNAL, "lora: layout has no tensor %s", name);
                }
                (b ? w->layers[l].B : w->layers[l].A)[t] = flat + p->offset;
            }
        }
    return ST_OK;
}

void st_lora_unbind(st_lora_weights *w) {
    free(w->layers);
    w->layers = NULL;
}

void st_lora_init_params(const st_layout *lay, float *flat, uint64_t seed) {
    st_rng rng;
    st_rng_seed(&rng, seed);
    memset(flat, 0, lay->n_floats * sizeof *flat);
    for (size_t i = 0; i < lay->n_tensors; i++) {
        const st_param_info *p = &lay->params[i];
        if (strstr(p->name, ".lora_B.")) continue; /* B = 0 */
        /* kaiming_uniform_(a=√5): gain √(2/(1+5)), bound gain·√(3/fan_in) = 1/√fan_in */
        const double bound = 1.0 / sqrt((double)p->shape[1]);
        float *d = flat + p->offset;
        for (size_t j = 0; j < p->numel; j++)
            d[j] = (float)((2.0 * st_rng_double(&rng) - 1.0) * bound);
    }
}

st_status st_lora_new(const st_config *cfg, const st_lora_config *lc, st_lora **out) {
    *out = NULL;
    st_lora *l = st_calloc(1, sizeof *l);
    if (!l) return ST_ERR_NOMEM;
    l->lc = *lc;
    st_status s = st_lora_layout_init(&l->layout, cfg, lc);
    if (!s) {
        l->params = st_alloc_aligned((l->layout.n_floats ? l->layout.n_floats : 1) * sizeof(float));
        if (!l->params) s = ST_ERR_NOMEM;
        else memset(l->params, 0, l->layout.n_floats * sizeof(float));
    }
    if (!s) s = st_lora_bind(&l->w, cfg, lc, &l->layout, l->params);
    if (s) {
        st_lora_free(l);
        return s;
    }
    *out = l;
    return ST_OK;
}

void st_lora_free(st_lora *l) {
    if (!l) return;
    st_lora_unbind(&l->w);
    st_layout_free(&l->layout);
    st_free_aligned(l->params);
    free(l);
}

/* ---- the adapter products in the training forward / backward ---------------------------- */

static inline uint64_t mix64(uint64_t z) { /* splitmix64 finaliser (Steele et al. 2014) */
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Inverted-dropout keep decision of element (n, i) of target t in layer l: a pure function of
 * (seed, l, t, n, i), so the backward and a resumed run recompute the forward's masks. */
static inline int keep(uint64_t row_key, int i, uint32_t thresh) {
    return (uint32_t)(mix64(row_key + (uint64_t)i) >> 32) < thresh;
}

static uint64_t row_key(uint64_t seed, int l, int t, int n) {
    return mix64(mix64(seed ^ mix64(((uint64_t)l << 8) | (uint64_t)t)) + (uint64_t)n);
}

static int dropout_on(const st_lora_run *R) { return R->seed != 0 && R->lc->dropout > 0; }
static uint32_t keep_thresh(const st_lora_run *R) {
    double k = (1.0 - R->lc->dropout) * 4294967296.0;
    return k >= 4294967295.0 ? 0xffffffffu : (uint32_t)k;
}

/* The adapter input dropout(x) [N, in] as fp32: x itself when fp32 and no dropout, else
 * written to R->xs (bf16 widened, dropped elements 0, kept ones · 1/(1−p)). */
static const float *adapter_input(st_lora_run *R, int N, int l, int t, const float *x,
                                  const uint16_t *x16, int in) {
    const int drop = dropout_on(R);
    if (x && !drop) return x;
    float *xs = R->xs;
    const uint32_t th = drop ? keep_thresh(R) : 0;
    const float inv = drop ? (float)(1.0 / (1.0 - R->lc->dropout)) : 1.0f;
#pragma omp parallel for schedule(static) if ((size_t)N * in > 65536)
    for (int n = 0; n < N; n++) {
        float *d = xs + (size_t)n * in;
        if (x16)
            for (int i = 0; i < in; i++) d[i] = st_bf16_to_f32(x16[(size_t)n * in + i]);
        else
            memcpy(d, x + (size_t)n * in, (size_t)in * sizeof *d);
        if (drop) {
            const uint64_t k = row_key(R->seed, l, t, n);
            for (int i = 0; i < in; i++) d[i] = keep(k, i, th) ? d[i] * inv : 0.0f;
        }
    }
    return xs;
}

static float *saved_u(const struct st_train_acts *a, int l, int t) {
    return a->lora.u + ((size_t)l * ST_LORA_N_TARGETS + (size_t)t) * (size_t)a->maxN *
                           (size_t)a->lora.lc->r;
}

int st__lora_has(const struct st_train_acts *a, int t) {
    return a->lora.lw && (a->lora.lc->targets & (1u << t));
}

void st__lora_fwd(struct st_train_acts *a, const st_config *c, int l, int t, const float *x,
                  const uint16_t *x16, float *y, int ldy) {
    if (!st__lora_has(a, t)) return;
    st_lora_run *R = &a->lora;
    const st_lora_layer *LW = &R->lw->layers[l];
    int in, out;
    st_lora_target_dims(c, (st_lora_target)t, &in, &out);
    const int N = a->B * a->T, r = R->lc->r;
    const float *xd = adapter_input(R, N, l, t, x, x16, in);
    float *U = saved_u(a, l, t);
    st_sgemm('N', 'T', N, r, in, 1.0f, xd, in, LW->A[t], in, 0.0f, U, r);
    st_sgemm('N', 'T', N, out, r, st_lora_scale(R->lc), U, r, LW->B[t], r, 1.0f, y, ldy);
}

void st__lora_bwd(struct st_train_acts *a, const st_config *c, int l, int t, const float *x,
                  const uint16_t *x16, const float *dy, const uint16_t *dy16, int ldy, float *dx) {
    if (!st__lora_has(a, t)) return;
    st_lora_run *R = &a->lora;
    const st_lora_layer *LW = &R->lw->layers[l], *LG = &R->lg->layers[l];
    int in, out;
    st_lora_target_dims(c, (st_lora_target)t, &in, &out);
    const int N = a->B * a->T, r = R->lc->r;
    const float s = st_lora_scale(R->lc);
    if (dy16) { /* widen the bf16 gradient of the output columns */
        float *ys = R->ys;
#pragma omp parallel for schedule(static) if ((size_t)N * out > 65536)
        for (int n = 0; n < N; n++)
            for (int j = 0; j < out; j++)
                ys[(size_t)n * out + j] = st_bf16_to_f32(dy16[(size_t)n * ldy + j]);
        dy = ys;
        ldy = out;
    }
    const float *U = saved_u(a, l, t);
    st_sgemm('T', 'N', out, r, N, s, dy, ldy, U, r, 1.0f, LG->B[t], r);   /* dB += s·dyᵀU */
    st_sgemm('N', 'N', N, r, out, s, dy, ldy, LW->B[t], r, 0.0f, R->du, r); /* dU = s·dy·B */
    const float *xd = adapter_input(R, N, l, t, x, x16, in);
    st_sgemm('T', 'N', r, in, N, 1.0f, R->du, r, xd, in, 1.0f, LG->A[t], in); /* dA += dUᵀxd */
    if (!dropout_on(R)) { /* dx += dU·A */
        st_sgemm('N', 'N', N, in, r, 1.0f, R->du, r, LW->A[t], in, 1.0f, dx, in);
        return;
    }
    float *xs = R->xs; /* d(dropout(x)) = dU·A, then through the same mask */
    st_sgemm('N', 'N', N, in, r, 1.0f, R->du, r, LW->A[t], in, 0.0f, xs, in);
    const uint32_t th = keep_thresh(R);
    const float inv = (float)(1.0 / (1.0 - R->lc->dropout));
#pragma omp parallel for schedule(static) if ((size_t)N * in > 65536)
    for (int n = 0; n < N; n++) {
        const uint64_t k = row_key(R->seed, l, t, n);
        const float *sx = xs + (size_t)n * in;
        float *d = dx + (size_t)n * in;
        for (int i = 0; i < in; i++)
            if (keep(k, i, th)) d[i] += sx[i] * inv;
    }
}

/* Scratch for micro-batches of up to a->maxN rows (allocated once per st_train_acts). */
static st_status lora_scratch(struct st_train_acts *a, const st_config *c, const st_lora_config *lc) {
    int max_in = 0, max_out = 0;
    for (int t = 0; t < ST_LORA_N_TARGETS; t++) {
        int in, out;
        st_lora_target_dims(c, (st_lora_target)t, &in, &out);
        if (in > max_in) max_in = in;
        if (out > max_out) max_out = out;
    }
    const size_t N = (size_t)a->maxN, r = (size_t)lc->r;
    const size_t nu = (size_t)c->num_hidden_layers * ST_LORA_N_TARGETS * N * r;
    const size_t need = nu + N * (size_t)max_in + N * (size_t)max_out + N * r;
    st_lora_run *R = &a->lora;
    if (need > R->cap_floats) {
        st_free_aligned(R->u);
        R->u = st_alloc_aligned(need * sizeof(float));
        R->cap_floats = R->u ? need : 0;
        if (!R->u)
            return st_error(ST_ERR_NOMEM, "lora: cannot allocate %zu MiB of adapter activations",
                            need * sizeof(float) >> 20);
    }
    R->xs = R->u + nu;
    R->ys = R->xs + N * (size_t)max_in;
    R->du = R->ys + N * (size_t)max_out;
    return ST_OK;
}

st_status st_lora_train_forward(const st_config *cfg, const st_weights *w,
                                const st_lora_config *lc, const st_lora_weights *lw,
                                uint64_t dropout_seed, st_train_acts *a, const int32_t *tokens,
                                const int32_t *targets, const float *mask, int B, int T,
                                float normaliser, float *loss) {
    st_status s = st_lora_config_validate(lc);
    if (s) return s;
    if (!a->save) return st_error(ST_ERR_ARG, "lora forward: activations not made for training");
    if ((s = lora_scratch(a, cfg, lc))) return s;
    a->lora.lc = lc;
    a->lora.lw = lw;
    a->lora.lg = NULL;
    a->lora.seed = dropout_seed;
    s = st__train_forward(cfg, w, a, tokens, targets, mask, B, T, normaliser, loss);
    if (s) a->lora.lw = NULL;
    return s;
}

static st_status base_forward(const st_config *cfg, const st_weights *w, const st_weights16 *w16,
                              const st_lora_config *lc, const st_lora_weights *lw,
                              uint64_t dropout_seed, st_train_acts *a, const int32_t *tokens,
                              const int32_t *targets, const float *mask, int B, int T,
                              float normaliser, float *loss) {
    if (w16 && a->head_rows <= 0)
        return st_error(ST_ERR_ARG, "lora forward: a bf16 base needs activations from "
                        "st_lora_train_acts_new (chunked lm_head)");
    a->w16 = w16; /* borrowed for this call only */
    st_status s = st_lora_train_forward(cfg, w, lc, lw, dropout_seed, a, tokens, targets, mask, B,
                                        T, normaliser, loss);
    a->w16 = NULL;
    return s;
}

st_status st_lora_train_backward(const st_config *cfg, const st_weights *w, st_train_acts *a,
                                 const st_lora_weights *lg) {
    if (!a->lora.lw)
        return st_error(ST_ERR_ARG, "lora backward: the last forward had no adapter");
    a->lora.lg = lg;
    st_status s = st__train_backward(cfg, w, a, NULL);
    a->lora.lg = NULL;
    return s;
}

static int head_rows_of(const st_config *cfg, int head_rows) {
    if (head_rows == 0) { /* logits [rows, V] of at most 16 Mi floats (64 MiB) */
        const size_t cap = ((size_t)16 << 20) / (size_t)(cfg->vocab_size > 0 ? cfg->vocab_size : 1);
        head_rows = cap < 1 ? 1 : cap > (size_t)INT32_MAX ? INT32_MAX : (int)cap;
    }
    return head_rows;
}

st_status st_lora_train_acts_new(const st_config *cfg, int B, int T, int head_rows,
                                 st_train_acts **out) {
    *out = NULL;
    if (head_rows < 0) return st_error(ST_ERR_ARG, "lora activations: head_rows %d < 0", head_rows);
    return st_acts_alloc_chunked(cfg, B, T, head_rows_of(cfg, head_rows), out);
}

size_t st_lora_train_acts_floats(const st_config *cfg, const st_lora_config *lc, int B, int T,
                                 int head_rows) {
    int max_in = 0, max_out = 0;
    for (int t = 0; t < ST_LORA_N_TARGETS; t++) {
        int in, out;
        st_lora_target_dims(cfg, (st_lora_target)t, &in, &out);
        if (in > max_in) max_in = in;
        if (out > max_out) max_out = out;
    }
    const size_t N = (size_t)B * (size_t)T, r = (size_t)lc->r;
    const size_t lora = (size_t)cfg->num_hidden_layers * ST_LORA_N_TARGETS * N * r +
                        N * (size_t)max_in + N * (size_t)max_out + N * r; /* lora_scratch */
    return st_acts_floats_chunked(cfg, B, T, head_rows_of(cfg, head_rows < 0 ? 0 : head_rows)) + lora;
}

/* ---- the frozen base ---------------------------------------------------------------------- */

/* bf16 base: the fp32 views of its 1-D tensors (norms, biases) packed in b->small in layout
 * order with no padding (so q|k|v biases stay adjacent), the matrices' views NULL; src (a
 * model-layout fp32 buffer) fills them, or NULL leaves norms 1 and biases 0. */
static st_status bind_small(st_lora_base *b, const float *src) {
    const st_layout *lay = &b->layout;
    size_t n = 0;
    for (size_t i = 0; i < lay->n_tensors; i++)
        if (lay->params[i].n_dims == 1) n += lay->params[i].numel;
    b->small = st_alloc_aligned((n ? n : 1) * sizeof(float));
    if (!b->small) return ST_ERR_NOMEM;
    memset(&b->w, 0, sizeof b->w);
    b->w.layers = st_calloc((size_t)b->config.num_hidden_layers, sizeof *b->w.layers);
    if (!b->w.layers) return ST_ERR_NOMEM;
    size_t off = 0;
    for (size_t i = 0; i < lay->n_tensors; i++) {
        const st_param_info *p = &lay->params[i];
        if (p->n_dims != 1) continue;
        float *d = b->small + off;
        off += p->numel;
        if (src) memcpy(d, src + p->offset, p->numel * sizeof *d);
        else
            for (size_t j = 0; j < p->numel; j++) d[j] = strstr(p->name, "norm") ? 1.0f : 0.0f;
        int l = -1;
        char what[96] = "";
        if (sscanf(p->name, "model.layers.%d.%95s", &l, what) == 2) {
            if (l < 0 || l >= b->config.num_hidden_layers) continue;
            st_layer_weights *L = &b->w.layers[l];
            if (!strcmp(what, "input_layernorm.weight")) L->input_layernorm = d;
            else if (!strcmp(what, "post_attention_layernorm.weight")) L->post_attention_layernorm = d;
            else if (!strcmp(what, "self_attn.q_proj.bias")) L->q_bias = d;
            else if (!strcmp(what, "self_attn.k_proj.bias")) L->k_bias = d;
            else if (!strcmp(what, "self_attn.v_proj.bias")) L->v_bias = d;
        } else if (!strcmp(p->name, "model.norm.weight")) {
            b->w.norm = d;
        }
    }
    return ST_OK;
}

static st_status base_alloc(const st_config *cfg, st_base_precision prec, st_lora_base **out) {
    *out = NULL;
    if (prec != ST_BASE_F32 && prec != ST_BASE_BF16)
        return st_error(ST_ERR_ARG, "base_precision: %d is neither fp32 nor bf16", (int)prec);
    st_lora_base *b = st_calloc(1, sizeof *b);
    if (!b) return ST_ERR_NOMEM;
    b->config = *cfg;
    b->precision = prec;
    st_status s = st_layout_init(&b->layout, cfg);
    if (s) {
        free(b);
        return s;
    }
    *out = b;
    return ST_OK;
}

st_status st_lora_base_new(const st_model *m, st_base_precision prec, st_lora_base **out) {
    st_lora_base *b;
    st_status s = base_alloc(&m->config, prec, &b);
    if (s) return s;
    *out = NULL;
    if (prec == ST_BASE_F32) { /* the model's own fp32 weights, read in place */
        s = st_weights_bind(&b->w, &b->config, &m->layout, m->params);
    } else {
        const st_layout *lay = &b->layout;
        b->buf16 = st_alloc_aligned((lay->n_floats ? lay->n_floats : 1) * sizeof *b->buf16);
        if (!b->buf16) {
            s = st_error(ST_ERR_NOMEM, "lora: cannot allocate %zu MiB for the bf16 base",
                         lay->n_floats * sizeof *b->buf16 >> 20);
        } else {
            st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
            for (size_t i = 0; i < lay->n_tensors; i++) {
                const st_param_info *p = &lay->params[i];
                if (p->n_dims != 2) continue;
                const size_t rows = (size_t)p->shape[0], cols = (size_t)p->shape[1];
#pragma omp parallel for schedule(static) if (p->numel > 65536)
                for (size_t r = 0; r < rows; r++)
                    st_bf16_row(b->buf16 + p->offset + r * cols, m->params + p->offset + r * cols, cols);
            }
            s = bind_small(b, m->params);
            if (!s) s = st_weights16_bind(&b->w16, &b->config, lay, b->buf16);
        }
    }
    if (s) {
        st_lora_base_free(b);
        return s;
    }
    *out = b;
    return ST_OK;
}

st_status st_lora_base_new_bf16(const st_config *cfg, st_lora_base **out) {
    st_lora_base *b;
    st_status s = base_alloc(cfg, ST_BASE_BF16, &b);
    if (s) return s;
    *out = NULL;
    b->buf16 = st_alloc_aligned((b->layout.n_floats ? b->layout.n_floats : 1) * sizeof *b->buf16);
    if (!b->buf16)
        s = st_error(ST_ERR_NOMEM, "lora: cannot allocate %zu MiB for the bf16 base",
                     b->layout.n_floats * sizeof *b->buf16 >> 20);
    if (!s) s = bind_small(b, NULL);
    if (!s) s = st_weights16_bind(&b->w16, &b->config, &b->layout, b->buf16);
    if (s) {
        st_lora_base_free(b);
        return s;
    }
    *out = b;
    return ST_OK;
}

/* the sink of st_lora_base_load: the base made from the final config, matrices rounded to bf16
 * row by row from the loader's one-tensor scratch, 1-D tensors copied into their fp32 slot */
typedef struct {
    st_lora_base *b;
} base_sink;

static st_status sink_begin(void *user, const st_config *cfg) {
    base_sink *k = user;
    return st_lora_base_new_bf16(cfg, &k->b);
}

static st_status sink_put(void *user, size_t idx, const st_param_info *p, const float *data) {
    st_lora_base *b = ((base_sink *)user)->b;
    const st_layout *lay = &b->layout;
    if (idx >= lay->n_tensors || lay->params[idx].numel != p->numel || lay->params[idx].n_dims != p->n_dims)
        return st_error(ST_ERR_INTERNAL, "bf16 base: tensor %s does not match the base's layout", p->name);
    if (p->n_dims == 2) {
        const size_t rows = (size_t)p->shape[0], cols = (size_t)p->shape[1];
        uint16_t *dst = b->buf16 + lay->params[idx].offset;
#pragma omp parallel for schedule(static) if (p->numel > 65536)
        for (size_t r = 0; r < rows; r++) st_bf16_row(dst + r * cols, data + r * cols, cols);
        return ST_OK;
    }
    size_t off = 0; /* bind_small's packing: the 1-D tensors in layout order */
    for (size_t i = 0; i < idx; i++)
        if (lay->params[i].n_dims == 1) off += lay->params[i].numel;
    memcpy(b->small + off, data, p->numel * sizeof *data);
    return ST_OK;
}

st_status st_lora_base_load(const char *path, int with_tokenizer, st_model **m, st_lora_base **out) {
    *m = NULL;
    *out = NULL;
    base_sink k = {NULL};
    const st__tensor_sink sink = {sink_begin, sink_put, &k};
    struct stat sb;
    if (stat(path, &sb) != 0)
        return st_error(ST_ERR_IO, "%s: no such file or folder (expected a .gguf file or a Hugging Face "
                        "checkpoint folder)", path);
    st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
    st_status s = S_ISDIR(sb.st_mode) ? st_model_load_hf(path, with_tokenizer, &sink, m)
                                      : st_model_load_gguf(path, with_tokenizer, &sink, m);
    if (!s && !k.b) s = st_error(ST_ERR_INTERNAL, "%s: the loader made no bf16 base", path);
    if (s) {
        st_model_free(*m);
        *m = NULL;
        st_lora_base_free(k.b);
        return s;
    }
    if (!(*m)->source_path) (*m)->source_path = st_strdup(path);
    *out = k.b;
    return ST_OK;
}

void st_lora_base_free(st_lora_base *b) {
    if (!b) return;
    st_weights_unbind(&b->w);
    st_weights16_unbind(&b->w16);
    st_free_aligned(b->buf16);
    st_free_aligned(b->small);
    st_layout_free(&b->layout);
    free(b);
}

st_status st_lora_base_train_forward(const st_lora_base *base, const st_lora_config *lc,
                                     const st_lora_weights *lw, uint64_t dropout_seed,
                                     st_train_acts *a, const int32_t *tokens,
                                     const int32_t *targets, const float *mask, int B, int T,
                                     float normaliser, float *loss) {
    return base_forward(&base->config, &base->w, base->buf16 ? &base->w16 : NULL, lc, lw,
                        dropout_seed, a, tokens, targets, mask, B, T, normaliser, loss);
}

st_status st_lora_base_train_backward(const st_lora_base *base, st_train_acts *a,
                                      const st_lora_weights *lg) {
    a->w16 = base->buf16 ? &base->w16 : NULL;
    st_status s = st_lora_train_backward(&base->config, &base->w, a, lg);
    a->w16 = NULL;
    return s;
}

void st_lora_merge(const st_config *cfg, const st_weights *w, const st_lora_config *lc,
                   const st_lora_weights *lw) {
    const float s = st_lora_scale(lc);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        const st_layer_weights *L = &w->layers[l];
        float *W[ST_LORA_N_TARGETS] = {L->q_proj, L->k_proj,  L->v_proj,  L->o_proj,
                                       L->gate_proj, L->up_proj, L->down_proj};
        for (int t = 0; t < ST_LORA_N_TARGETS; t++) {
            if (!(lc->targets & (1u << t)) || !lw->layers[l].A[t]) continue;
            int in, out;
            st_lora_target_dims(cfg, (st_lora_target)t, &in, &out);
            /* W[out, in] += s·B[out, r]·A[r, in] */
            st_sgemm('N', 'N', out, in, lc->r, s, lw->layers[l].B[t], lc->r, lw->layers[l].A[t],
                     in, 1.0f, W[t], in);
        }
    }
}

/* The layout holds (A [r, in], B [out, r]) pairs in order (st_lora_layout_init). */
double st_lora_delta_norm(const st_lora *ad, const float *params) {
    const int r = ad->lc.r;
    const double sc = st_lora_scale(&ad->lc);
    double *ga = malloc((size_t)r * r * sizeof *ga), *gb = malloc((size_t)r * r * sizeof *gb);
    if (!ga || !gb) {
        free(ga);
        free(gb);
        return NAN;
    }
    double sum = 0.0;
    for (size_t i = 0; i + 1 < ad->layout.n_tensors; i += 2) {
        const st_param_info *pa = &ad->layout.params[i], *pb = &ad->layout.params[i + 1];
        const float *A = params + pa->offset, *B = params + pb->offset;
        const int64_t in = pa->shape[1], out = pb->shape[0];
        /* ‖B·A‖²_F = Σ_jk (A·Aᵀ)_jk (Bᵀ·B)_jk: two r x r Gram matrices in double */
        for (int j = 0; j < r; j++)
            for (int k = j; k < r; k++) {
                double a = 0.0, b = 0.0;
                for (int64_t c = 0; c < in; c++) a += (double)A[j * in + c] * A[k * in + c];
                for (int64_t o = 0; o < out; o++) b += (double)B[o * r + j] * B[o * r + k];
                ga[j * r + k] = ga[k * r + j] = a;
                gb[j * r + k] = gb[k * r + j] = b;
            }
        for (int j = 0; j < r * r; j++) sum += ga[j] * gb[j];
    }
    free(ga);
    free(gb);
    return sc * sqrt(sum > 0.0 ? sum : 0.0);
}

float *st_lora_scaled_params(const st_lora *ad, const float *params, float lambda) {
    float *p = st_alloc_aligned(ad->layout.n_floats * sizeof(float));
    if (!p) return NULL;
    memcpy(p, params, ad->layout.n_floats * sizeof(float));
    for (size_t i = 1; i < ad->layout.n_tensors; i += 2) { /* every B */
        const st_param_info *pb = &ad->layout.params[i];
        for (size_t e = 0; e < pb->numel; e++) p[pb->offset + e] *= lambda;
    }
    return p;
}
