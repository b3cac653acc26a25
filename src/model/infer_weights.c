/* infer_weights.c - the inference weight cache (infer_weights.h): per precision, every
 * projection and the lm_head reordered once from Hugging Face's [N, K] layout into the blocked
 * layout oneDNN's matmul picks for "any" weights (brgemm; at 32 decode rows 2-5x faster than
 * dnnl_sgemm('N', 'T') on [N, K]); bf16 copies feed avx512_bf16 brgemm with fp32 accumulation.
 * Staleness: a fingerprint of ~256 sampled floats per matrix (and the weight pointers) is
 * checked on every acquire, so in-place training updates rebuild the copies; edits that could
 * miss the samples call st_infer_weights_refresh. Source: oneDNN developer guide, "Matrix
 * Multiplication" and "Memory Format Propagation" (format_tag_any + reorder), v2.x C API. */
#include "model/infer_weights.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/forward.h"

enum { NPRIM = 128, NSAMPLE = 256, REF_M = 32 };

typedef struct {
    int M, kind, prec;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src, dst;
    dnnl_memory_t msrc, mdst; /* created once without a buffer; each call sets the handles */
} iw_prim;

typedef struct {
    int built;             /* copies valid for fingerprint fp */
    int broken;            /* oneDNN refused this precision: do not retry */
    uint64_t fp;
    dnnl_memory_desc_t wmd[ST_IW_NSHAPES]; /* blocked weights md per shape */
    void **data;           /* [L * 4 + 1] reordered matrices (lm_head last) */
    dnnl_memory_t *mem;    /* [L * 4 + 1] memory objects over data */
} iw_set;

struct st_infer_weights {
    pthread_mutex_t mu;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    int L, K[ST_IW_NSHAPES], N[ST_IW_NSHAPES];
    int stale;             /* st_infer_weights_refresh was called */
    iw_set set[2];         /* by st_matmul_precision */
    iw_prim prims[NPRIM];
    int n_prims, next_prim;
    uint16_t *abuf;        /* bf16 activations */
    size_t acap;
    int prec;              /* precision of the current acquire */
};

static pthread_mutex_t g_create_mu = PTHREAD_MUTEX_INITIALIZER;

static const float *src_matrix(const st_model *m, int layer, st_iw_kind kind) {
    if (kind == ST_IW_LM) return m->w.lm_head;
    const st_layer_weights *Lw = &m->w.layers[layer];
    switch (kind) {
    case ST_IW_QKV: return Lw->q_proj;   /* fused [Wd, C] */
    case ST_IW_O: return Lw->o_proj;
    case ST_IW_GU: return Lw->gate_proj; /* fused [2I, C] */
    default: return Lw->down_proj;
    }
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

static uint64_t fingerprint(const st_infer_weights *iw, const st_model *m) {
    uint64_t h = mix(0, (uint64_t)(uintptr_t)m->params);
    for (int l = 0; l <= iw->L; l++)
        for (int k = 0; k < (l < iw->L ? 4 : 1); k++) {
            const st_iw_kind kind = l < iw->L ? (st_iw_kind)k : ST_IW_LM;
            const float *w = src_matrix(m, l, kind);
            const size_t n = (size_t)iw->K[kind] * iw->N[kind], step = n / NSAMPLE + 1;
            h = mix(h, (uint64_t)(uintptr_t)w);
            for (size_t i = (size_t)(l * 7 + k) % step; i < n; i += step) {
                uint32_t u;
                memcpy(&u, &w[i], 4);
                h = mix(h, u);
            }
        }
    return h;
}

static void set_free(iw_set *s, int L) {
    if (s->mem)
        for (int i = 0; i < L * 4 + 1; i++)
            if (s->mem[i]) dnnl_memory_destroy(s->mem[i]);
    free(s->mem);
    s->mem = NULL;
    if (s->data)
        for (int i = 0; i < L * 4 + 1; i++) st_free_aligned(s->data[i]);
    free(s->data);
    s->data = NULL;
    s->built = 0;
}

void st_infer_weights_free(st_infer_weights *iw) {
    if (!iw) return;
    for (int i = 0; i < iw->n_prims; i++) {
        dnnl_primitive_destroy(iw->prims[i].prim);
        dnnl_memory_destroy(iw->prims[i].msrc);
        dnnl_memory_destroy(iw->prims[i].mdst);
    }
    for (int p = 0; p < 2; p++) set_free(&iw->set[p], iw->L);
    st_free_aligned(iw->abuf);
    if (iw->stream) dnnl_stream_destroy(iw->stream);
    if (iw->eng) dnnl_engine_destroy(iw->eng);
    pthread_mutex_destroy(&iw->mu);
    free(iw);
}

st_status st_infer_weights_refresh(const st_model *m) {
    pthread_mutex_lock(&g_create_mu);
    st_infer_weights *iw = m->infer;
    pthread_mutex_unlock(&g_create_mu);
    if (!iw) return ST_OK;
    pthread_mutex_lock(&iw->mu);
    iw->stale = 1;
    pthread_mutex_unlock(&iw->mu);
    return ST_OK;
}

static dnnl_data_type_t dt_of(int prec) { return prec == ST_MATMUL_BF16 ? dnnl_bf16 : dnnl_f32; }

/* Weights md oneDNN prefers for this shape (independent of M on the CPUs tried; primitives
 * for other M are created against exactly this md, so a mismatch fails loudly, not silently). */
static int pick_wmd(st_infer_weights *iw, int prec, int kind, dnnl_memory_desc_t *out) {
    dnnl_memory_desc_t sd, wd, dd;
    dnnl_dims_t s = {REF_M, iw->K[kind]}, w = {iw->K[kind], iw->N[kind]}, d = {REF_M, iw->N[kind]};
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_memory_desc_init_by_tag(&sd, 2, s, dt_of(prec), dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&wd, 2, w, dt_of(prec), dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&dd, 2, d, dnnl_f32, dnnl_ab) ||
        dnnl_matmul_desc_init(&md, &sd, &wd, NULL, &dd) ||
        dnnl_primitive_desc_create(&pd, &md, NULL, iw->eng, NULL))
        return -1;
    *out = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    return 0;
}

/* [N, K] fp32 (= [K, N] with strides {1, K}) -> the blocked md, converting to bf16 if asked. */
static int reorder_in(st_infer_weights *iw, const float *src, int kind, const dnnl_memory_desc_t *to,
                      void *dst) {
    dnnl_memory_desc_t from;
    dnnl_dims_t w = {iw->K[kind], iw->N[kind]}, ws = {1, iw->K[kind]};
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    dnnl_memory_t a = NULL, b = NULL;
    int rc = -1;
    if (!dnnl_memory_desc_init_by_strides(&from, 2, w, dnnl_f32, ws) &&
        !dnnl_reorder_primitive_desc_create(&rpd, &from, iw->eng, to, iw->eng, NULL) &&
        !dnnl_primitive_create(&r, rpd) &&
        !dnnl_memory_create(&a, &from, iw->eng, (void *)src) &&
        !dnnl_memory_create(&b, to, iw->eng, dst)) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
        rc = dnnl_primitive_execute(r, iw->stream, 2, args) || dnnl_stream_wait(iw->stream);
    }
    dnnl_memory_destroy(a);
    dnnl_memory_destroy(b);
    if (r) dnnl_primitive_destroy(r);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    return rc;
}

static st_status build(st_infer_weights *iw, const st_model *m, int prec, uint64_t fp) {
    iw_set *s = &iw->set[prec];
    const int nm = iw->L * 4 + 1;
    double t0 = st_time_now();
    if (!s->data) {
        for (int k = 0; k < ST_IW_NSHAPES; k++)
            if (pick_wmd(iw, prec, k, &s->wmd[k])) {
                s->broken = 1;
                return st_error(ST_ERR_UNSUPPORTED, "infer weights: oneDNN has no %s matmul for "
                                "%d x %d weights here", prec ? "bf16" : "fp32", iw->K[k], iw->N[k]);
            }
        s->data = st_calloc((size_t)nm, sizeof *s->data);
        s->mem = st_calloc((size_t)nm, sizeof *s->mem);
        if (!s->data || !s->mem) {
            set_free(s, iw->L);
            return ST_ERR_NOMEM;
        }
        for (int i = 0; i < nm; i++) {
            const int kind = i == nm - 1 ? ST_IW_LM : i % 4;
            s->data[i] = st_alloc_aligned(dnnl_memory_desc_get_size(&s->wmd[kind]));
            if (!s->data[i] || dnnl_memory_create(&s->mem[i], &s->wmd[kind], iw->eng, s->data[i])) {
                set_free(s, iw->L);
                return st_error(ST_ERR_NOMEM, "infer weights: out of memory for the %s copy",
                                prec ? "bf16" : "fp32");
            }
        }
    }
    for (int i = 0; i < nm; i++) {
        const int kind = i == nm - 1 ? ST_IW_LM : i % 4;
        if (reorder_in(iw, src_matrix(m, i == nm - 1 ? 0 : i / 4, (st_iw_kind)kind), kind,
                       &s->wmd[kind], s->data[i])) {
            set_free(s, iw->L);
            s->broken = 1;
            return st_error(ST_ERR_UNSUPPORTED, "infer weights: oneDNN reorder failed");
        }
    }
    s->built = 1;
    s->fp = fp;
    st_log_debug("infer weights: %s copy built in %.2f s", prec ? "bf16" : "fp32",
                 st_time_now() - t0);
    return ST_OK;
}

st_status st_infer_weights_acquire(const st_model *m, st_matmul_precision prec, int check,
                                   st_infer_weights **out) {
    *out = NULL;
    const st_config *c = &m->config;
    const int p = prec == ST_MATMUL_BF16 ? 1 : 0;
    pthread_mutex_lock(&g_create_mu);
    st_infer_weights *iw = m->infer;
    if (!iw) {
        iw = st_calloc(1, sizeof *iw);
        if (!iw) {
            pthread_mutex_unlock(&g_create_mu);
            return ST_ERR_NOMEM;
        }
        pthread_mutex_init(&iw->mu, NULL);
        const int Wd = (c->num_attention_heads + 2 * c->num_key_value_heads) * c->head_dim;
        const int HD = c->num_attention_heads * c->head_dim;
        iw->L = c->num_hidden_layers;
        iw->K[ST_IW_QKV] = c->hidden_size, iw->N[ST_IW_QKV] = Wd;
        iw->K[ST_IW_O] = HD, iw->N[ST_IW_O] = c->hidden_size;
        iw->K[ST_IW_GU] = c->hidden_size, iw->N[ST_IW_GU] = 2 * c->intermediate_size;
        iw->K[ST_IW_DOWN] = c->intermediate_size, iw->N[ST_IW_DOWN] = c->hidden_size;
        iw->K[ST_IW_LM] = c->hidden_size, iw->N[ST_IW_LM] = c->vocab_size;
        if (dnnl_engine_create(&iw->eng, dnnl_cpu, 0) ||
            dnnl_stream_create(&iw->stream, iw->eng, dnnl_stream_default_flags)) {
            st_infer_weights_free(iw);
            pthread_mutex_unlock(&g_create_mu);
            return st_error(ST_ERR_UNSUPPORTED, "infer weights: no oneDNN CPU engine");
        }
        /* the model owns the cache; st_model is const here only because readers share it */
        ((st_model *)m)->infer = iw;
    }
    pthread_mutex_unlock(&g_create_mu);
    pthread_mutex_lock(&iw->mu);
    iw_set *s = &iw->set[p];
    if (s->broken) {
        pthread_mutex_unlock(&iw->mu);
        return st_error(ST_ERR_UNSUPPORTED, "infer weights: %s matmul unavailable", p ? "bf16" : "fp32");
    }
    if (iw->stale) {
        iw->set[0].built = iw->set[1].built = 0;
        iw->stale = 0;
    }
    const uint64_t fp = check || !s->built ? fingerprint(iw, m) : s->fp;
    if (!s->built || s->fp != fp) {
        st_status st = build(iw, m, p, fp);
        if (st) {
            pthread_mutex_unlock(&iw->mu);
            return st;
        }
    }
    iw->prec = p;
    *out = iw;
    return ST_OK;
}

void st_infer_weights_release(st_infer_weights *iw) {
    if (iw) pthread_mutex_unlock(&iw->mu);
}

static iw_prim *get_prim(st_infer_weights *iw, int M, int kind) {
    const int p = iw->prec;
    for (int i = 0; i < iw->n_prims; i++)
        if (iw->prims[i].M == M && iw->prims[i].kind == kind && iw->prims[i].prec == p)
            return &iw->prims[i];
    iw_prim e = {M, kind, p, NULL, {0}, {0}, NULL, NULL};
    dnnl_dims_t sd = {M, iw->K[kind]}, dd = {M, iw->N[kind]};
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_memory_desc_init_by_tag(&e.src, 2, sd, dt_of(p), dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&e.dst, 2, dd, dnnl_f32, dnnl_ab) ||
        dnnl_matmul_desc_init(&md, &e.src, &iw->set[p].wmd[kind], NULL, &e.dst) ||
        dnnl_primitive_desc_create(&pd, &md, NULL, iw->eng, NULL))
        return NULL;
    dnnl_status_t st = dnnl_primitive_create(&e.prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (!st) st = dnnl_memory_create(&e.msrc, &e.src, iw->eng, DNNL_MEMORY_NONE);
    if (!st) st = dnnl_memory_create(&e.mdst, &e.dst, iw->eng, DNNL_MEMORY_NONE);
    if (st) {
        if (e.prim) dnnl_primitive_destroy(e.prim);
        if (e.msrc) dnnl_memory_destroy(e.msrc);
        return NULL;
    }
    const int slot = iw->n_prims < NPRIM ? iw->n_prims++ : (iw->next_prim++ % NPRIM);
    if (iw->prims[slot].prim) {
        dnnl_primitive_destroy(iw->prims[slot].prim);
        dnnl_memory_destroy(iw->prims[slot].msrc);
        dnnl_memory_destroy(iw->prims[slot].mdst);
    }
    iw->prims[slot] = e;
    return &iw->prims[slot];
}

/* fp32 -> bf16, round to nearest even (NaN stays NaN). */
static void to_bf16(uint16_t *dst, const float *src, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) dst[i] = (uint16_t)((u >> 16) | 0x40);
        else dst[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

int st_infer_matmul(st_infer_weights *iw, int layer, st_iw_kind kind, float *out, const float *in,
                    const float *bias, int M) {
    if (M <= 0) return 0;
    iw_prim *e = get_prim(iw, M, kind);
    if (!e) return -1;
    const int K = iw->K[kind], N = iw->N[kind];
    const void *src = in;
    if (iw->prec) {
        const size_t n = (size_t)M * K;
        if (n > iw->acap) {
            st_free_aligned(iw->abuf);
            iw->abuf = st_alloc_aligned(n * sizeof(uint16_t));
            iw->acap = iw->abuf ? n : 0;
            if (!iw->abuf) return -1;
        }
        to_bf16(iw->abuf, in, n);
        src = iw->abuf;
    }
    dnnl_memory_t mw = iw->set[iw->prec].mem[kind == ST_IW_LM ? iw->L * 4 : layer * 4 + (int)kind];
    int rc = -1;
    if (!dnnl_memory_set_data_handle(e->msrc, (void *)src) &&
        !dnnl_memory_set_data_handle(e->mdst, out)) {
        dnnl_exec_arg_t args[3] = {
            {DNNL_ARG_SRC, e->msrc}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, e->mdst}};
        rc = dnnl_primitive_execute(e->prim, iw->stream, 3, args) || dnnl_stream_wait(iw->stream);
    }
    if (!rc && bias) {
#pragma omp parallel for if ((size_t)M * N > 65536)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) out[(size_t)i * N + j] += bias[j];
    }
    return rc;
}
