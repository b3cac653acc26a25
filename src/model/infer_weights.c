/* infer_weights.c - the inference weight cache (infer_weights.h): per precision, every
 * projection and the lm_head reordered once from Hugging Face's [N, K] layout into the blocked
 * layout oneDNN's matmul picks for "any" weights (brgemm; at 32 decode rows 2-5x faster than
 * dnnl_sgemm('N', 'T') on [N, K]); bf16 copies feed avx512_bf16 brgemm with fp32 accumulation.
 * The four layer projections are stored as one column part per OpenMP thread (threads at
 * creation), each with single-threaded primitives, so st_forward_infer can run a whole layer
 * inside one parallel region (infer_weights.h); the lm_head stays whole.
 * The cache belongs to an inference context (st_infer_ctx, forward.h), never to the model: it is
 * built from the context's weight views on first use per precision, with the context's LoRA
 * adapter merged into each projection as it is reordered (W + (alpha/r)·B·A in fp32, the order
 * of PEFT's merge_and_unload, then rounded), and rebuilt only after st_infer_ctx_refresh.
 * Source: oneDNN developer guide, "Matrix Multiplication" and "Memory Format Propagation"
 * (format_tag_any + reorder), v2.x C API. */
#include "model/infer_weights.h"
#include "model/matmul_bf16.h"
#include "safetune/backward.h"

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { NPRIM = 128, REF_M = 32 };

typedef struct {
    int M, kind, prec, part; /* part -1: the whole matrix, oneDNN's own threading */
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src, dst;
    dnnl_memory_t msrc, mdst; /* created once without a buffer; each call sets the handles */
} iw_prim;

typedef struct {
    int built;             /* copies hold the context's weights */
    int broken;            /* oneDNN refused this precision: do not retry */
    dnnl_memory_desc_t wmd[ST_IW_NSHAPES][ST_IW_MAXPARTS]; /* blocked md per shape, part */
    void **data;           /* [(L * 4 + 1) * P] reordered parts (lm_head last, one part) */
    dnnl_memory_t *mem;    /* [(L * 4 + 1) * P] memory objects over data */
} iw_set;

struct st_infer_weights {
    pthread_mutex_t mu;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    int L, K[ST_IW_NSHAPES], N[ST_IW_NSHAPES];
    int P;                 /* column parts of the four layer projections (threads at creation) */
    int n0[ST_IW_NSHAPES][ST_IW_MAXPARTS + 1]; /* part p: columns [n0[p], n0[p+1]) (GU: of I) */
    dnnl_stream_t pstream[ST_IW_MAXPARTS];     /* one per part: parts run concurrently */
    iw_prim *cur[4][ST_IW_MAXPARTS];           /* st_infer_parts_prepare's primitives */
    uint16_t *pbuf[ST_IW_MAXPARTS];            /* bf16 activations per part */
    size_t pcap[ST_IW_MAXPARTS];
    int stale;             /* st_infer_ctx_refresh was called */
    iw_set set[2];         /* by st_matmul_precision */
    iw_prim prims[NPRIM];
    int n_prims, next_prim;
    uint16_t *abuf;        /* bf16 activations */
    size_t acap;
    int prec;              /* precision of the current acquire */
};

static const float *src_matrix(const st_weights *w, int layer, st_iw_kind kind) {
    if (kind == ST_IW_LM) return w->lm_head;
    const st_layer_weights *Lw = &w->layers[layer];
    switch (kind) {
    case ST_IW_QKV: return Lw->q_proj;   /* fused [Wd, C] */
    case ST_IW_O: return Lw->o_proj;
    case ST_IW_GU: return Lw->gate_proj; /* fused [2I, C] */
    default: return Lw->down_proj;
    }
}

/* The adapter targets inside fused projection kind: their targets, first rows (of the fused
 * [N, K] matrix) and row counts; returns how many (0 for the lm_head). */
static int lora_segments(const st_config *c, st_iw_kind kind, int t[3], int off[3], int n[3]) {
    const int HD = c->num_attention_heads * c->head_dim, KD = c->num_key_value_heads * c->head_dim;
    const int I = c->intermediate_size, C = c->hidden_size;
    switch (kind) {
    case ST_IW_QKV:
        t[0] = ST_LORA_Q, off[0] = 0, n[0] = HD;
        t[1] = ST_LORA_K, off[1] = HD, n[1] = KD;
        t[2] = ST_LORA_V, off[2] = HD + KD, n[2] = KD;
        return 3;
    case ST_IW_O: t[0] = ST_LORA_O, off[0] = 0, n[0] = C; return 1;
    case ST_IW_GU:
        t[0] = ST_LORA_GATE, off[0] = 0, n[0] = I;
        t[1] = ST_LORA_UP, off[1] = I, n[1] = I;
        return 2;
    case ST_IW_DOWN: t[0] = ST_LORA_DOWN, off[0] = 0, n[0] = C; return 1;
    default: return 0;
    }
}

/* dst [nrows, K] holds rows [row0, row0 + nrows) of fused projection kind of layer: add the
 * adapter's (alpha/r)·B·A to the rows of every targeted projection among them. */
static void lora_merge_rows(const st_infer_ctx *ic, int layer, st_iw_kind kind, int row0,
                            int nrows, int K, float *dst) {
    int t[3], off[3], n[3];
    const int ns = ic->ad ? lora_segments(&ic->m->config, kind, t, off, n) : 0;
    const st_lora_layer *ll = ns ? &ic->lw.layers[layer] : NULL;
    const int r = ic->ad ? ic->ad->lc.r : 0;
    const float sc = ic->ad ? st_lora_scale(&ic->ad->lc) : 0.0f;
    for (int i = 0; i < ns; i++) {
        if (!ll->A[t[i]]) continue;
        const int a = row0 > off[i] ? row0 : off[i];
        const int b = row0 + nrows < off[i] + n[i] ? row0 + nrows : off[i] + n[i];
        if (a >= b) continue;
        /* rows [a, b): W[a - off .., K] += s·B[a - off .., r]·A[r, K] */
        st_sgemm('N', 'N', b - a, K, r, sc, ll->B[t[i]] + (size_t)(a - off[i]) * r, r,
                 ll->A[t[i]], K, 1.0f, dst + (size_t)(a - row0) * K, K);
    }
}

st_status st_infer_lora_add(const st_infer_ctx *ic, int layer, st_iw_kind kind, float *out,
                            const float *in, int M) {
    int t[3], off[3], n[3];
    const int ns = ic->ad ? lora_segments(&ic->m->config, kind, t, off, n) : 0;
    if (!ns || M <= 0) return ST_OK;
    const st_config *c = &ic->m->config;
    const int r = ic->ad->lc.r;
    const float sc = st_lora_scale(&ic->ad->lc);
    const int ldo = off[ns - 1] + n[ns - 1]; /* the segments tile the fused output in order */
    int K, out0;
    st_lora_target_dims(c, (st_lora_target)t[0], &K, &out0); /* one input width per fused kind */
    float *u = st_alloc_aligned((size_t)M * r * sizeof(float));
    if (!u) return st_error(ST_ERR_NOMEM, "infer: out of memory (LoRA, %d rows)", M);
    const st_lora_layer *ll = &ic->lw.layers[layer];
    for (int i = 0; i < ns; i++) {
        if (!ll->A[t[i]]) continue;
        /* u[M, r] = in·Aᵀ, then out[:, off .. off + n) += s·u·Bᵀ */
        st_sgemm('N', 'T', M, r, K, 1.0f, in, K, ll->A[t[i]], K, 0.0f, u, r);
        st_sgemm('N', 'T', M, n[i], r, sc, u, r, ll->B[t[i]], r, 1.0f, out + off[i], ldo);
    }
    st_free_aligned(u);
    return ST_OK;
}

static void set_free(iw_set *s, int n) {
    if (s->mem)
        for (int i = 0; i < n; i++)
            if (s->mem[i]) dnnl_memory_destroy(s->mem[i]);
    free(s->mem);
    s->mem = NULL;
    if (s->data)
        for (int i = 0; i < n; i++) st_free_aligned(s->data[i]);
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
    for (int p = 0; p < 2; p++) set_free(&iw->set[p], (iw->L * 4 + 1) * iw->P);
    st_free_aligned(iw->abuf);
    for (int p = 0; p < ST_IW_MAXPARTS; p++) {
        st_free_aligned(iw->pbuf[p]);
        if (iw->pstream[p]) dnnl_stream_destroy(iw->pstream[p]);
    }
    if (iw->stream) dnnl_stream_destroy(iw->stream);
    if (iw->eng) dnnl_engine_destroy(iw->eng);
    pthread_mutex_destroy(&iw->mu);
    free(iw);
}

static dnnl_data_type_t dt_of(int prec) { return prec == ST_MATMUL_BF16 ? dnnl_bf16 : dnnl_f32; }

/* Columns of part p of shape kind (GU: of I; the part holds those gate AND up rows). */
static int part_width(const st_infer_weights *iw, int kind, int p) {
    const int w = iw->n0[kind][p + 1] - iw->n0[kind][p];
    return kind == ST_IW_GU ? 2 * w : w;
}

/* Parts of shape kind: P for the layer projections, 1 (the whole matrix) for the lm_head. */
static int nparts(const st_infer_weights *iw, int kind) { return kind == ST_IW_LM ? 1 : iw->P; }

/* Weights md for a [K, N] matrix: fp32 layer parts take the 48-column blocked layout
 * (BA16a48b) when brgemm accepts it, else (and for bf16 and the lm_head) the md oneDNN's matmul
 * picks for "any" (BA16a64b on AVX-512). 48 columns: at 32 rows brgemm's register blocking
 * then covers the rows without a tail; in the decode loop it measured 3-7% faster per
 * projection than 64b (qkv 0.77 vs 0.80 s, o 0.48 vs 0.51, gate/up 2.40-2.45 vs 2.52, down
 * 1.18-1.20 vs 1.27 over 127 steps, alternating runs). Primitives for other M are created
 * against exactly this md, so a mismatch fails loudly, not silently. */
static int pick_wmd(st_infer_weights *iw, int prec, int K, int N, int part, dnnl_memory_desc_t *out) {
    for (int try48 = part && prec == ST_MATMUL_F32 && !getenv("SAFETUNE_INFER_W64"); try48 >= 0;
         try48--) {
        dnnl_memory_desc_t sd, wd, dd;
        dnnl_dims_t s = {REF_M, K}, w = {K, N}, d = {REF_M, N};
        dnnl_matmul_desc_t md;
        dnnl_primitive_desc_t pd = NULL;
        if (dnnl_memory_desc_init_by_tag(&sd, 2, s, dt_of(prec), dnnl_ab) ||
            dnnl_memory_desc_init_by_tag(&wd, 2, w, dt_of(prec),
                                         try48 ? dnnl_BA16a48b : dnnl_format_tag_any) ||
            dnnl_memory_desc_init_by_tag(&dd, 2, d, dnnl_f32, dnnl_ab) ||
            dnnl_matmul_desc_init(&md, &sd, &wd, NULL, &dd) ||
            dnnl_primitive_desc_create(&pd, &md, NULL, iw->eng, NULL))
            continue;
        const char *impl = NULL;
        if (try48 && (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) ||
                      !impl || strncmp(impl, "brg", 3))) {
            dnnl_primitive_desc_destroy(pd); /* only a reference kernel takes it: use "any" */
            continue;
        }
        *out = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        dnnl_primitive_desc_destroy(pd);
        return 0;
    }
    return -1;
}

/* [N, K] fp32 (= [K, N] with strides {1, K}) -> the blocked md, converting to bf16 if asked. */
static int reorder_in(st_infer_weights *iw, const float *src, int K, int N,
                      const dnnl_memory_desc_t *to, void *dst) {
    dnnl_memory_desc_t from;
    dnnl_dims_t w = {K, N}, ws = {1, K};
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

/* Part p of matrix kind of layer (rows of the [N, K] source) into its blocked copy dst. GU
 * parts gather their gate rows then their up rows into one temporary [2w, K] matrix first; with
 * an adapter on the projection its rows are merged in that temporary. */
static int reorder_part(const st_infer_ctx *ic, st_infer_weights *iw, int layer, const float *src,
                        int kind, int p, const dnnl_memory_desc_t *to, void *dst) {
    const int K = iw->K[kind], w = part_width(iw, kind, p), r0 = iw->n0[kind][p];
    int t[3], off[3], n[3], lora = 0;
    const int ns = ic->ad ? lora_segments(&ic->m->config, (st_iw_kind)kind, t, off, n) : 0;
    for (int i = 0; i < ns; i++) lora |= ic->lw.layers[layer].A[t[i]] != NULL;
    if (kind != ST_IW_GU && !lora) return reorder_in(iw, src + (size_t)r0 * K, K, w, to, dst);
    float *tmp = st_alloc_aligned((size_t)w * K * sizeof(float));
    if (!tmp) return -1;
    if (kind == ST_IW_GU) {
        const int I = iw->N[ST_IW_GU] / 2, h = w / 2;
        memcpy(tmp, src + (size_t)r0 * K, (size_t)h * K * sizeof(float));
        memcpy(tmp + (size_t)h * K, src + (size_t)(I + r0) * K, (size_t)h * K * sizeof(float));
        if (lora) {
            lora_merge_rows(ic, layer, ST_IW_GU, r0, h, K, tmp);
            lora_merge_rows(ic, layer, ST_IW_GU, I + r0, h, K, tmp + (size_t)h * K);
        }
    } else {
        memcpy(tmp, src + (size_t)r0 * K, (size_t)w * K * sizeof(float));
        lora_merge_rows(ic, layer, (st_iw_kind)kind, r0, w, K, tmp);
    }
    const int rc = reorder_in(iw, tmp, K, w, to, dst);
    st_free_aligned(tmp);
    return rc;
}

static st_status build(st_infer_weights *iw, const st_infer_ctx *ic, int prec) {
    iw_set *s = &iw->set[prec];
    const int nm = iw->L * 4 + 1, P = iw->P, ns = nm * P;
    double t0 = st_time_now();
    if (!s->data) {
        /* the parts run single-threaded (one per thread): pick their layouts for one thread */
        const int nthr = omp_get_max_threads();
        int bad = -1;
        for (int k = 0; k < ST_IW_NSHAPES && bad < 0; k++) {
            if (k != ST_IW_LM) omp_set_num_threads(1);
            for (int p = 0; p < nparts(iw, k) && bad < 0; p++) {
                const int w = part_width(iw, k, p);
                if (w > 0 && pick_wmd(iw, prec, iw->K[k], w, k != ST_IW_LM, &s->wmd[k][p])) bad = k;
            }
            omp_set_num_threads(nthr);
        }
        if (bad >= 0) {
            s->broken = 1;
            return st_error(ST_ERR_UNSUPPORTED, "infer weights: oneDNN has no %s matmul for "
                            "%d x %d weights here", prec ? "bf16" : "fp32", iw->K[bad], iw->N[bad]);
        }
        s->data = st_calloc((size_t)ns, sizeof *s->data);
        s->mem = st_calloc((size_t)ns, sizeof *s->mem);
        if (!s->data || !s->mem) {
            set_free(s, ns);
            return ST_ERR_NOMEM;
        }
        for (int i = 0; i < nm; i++) {
            const int kind = i == nm - 1 ? ST_IW_LM : i % 4;
            for (int p = 0; p < nparts(iw, kind); p++) {
                if (part_width(iw, kind, p) == 0) continue;
                const int j = i * P + p;
                s->data[j] = st_alloc_aligned(dnnl_memory_desc_get_size(&s->wmd[kind][p]));
                if (!s->data[j] ||
                    dnnl_memory_create(&s->mem[j], &s->wmd[kind][p], iw->eng, s->data[j])) {
                    set_free(s, ns);
                    return st_error(ST_ERR_NOMEM, "infer weights: out of memory for the %s copy",
                                    prec ? "bf16" : "fp32");
                }
            }
        }
    }
    for (int i = 0; i < nm; i++) {
        const int kind = i == nm - 1 ? ST_IW_LM : i % 4;
        const int layer = i == nm - 1 ? 0 : i / 4;
        const float *src = src_matrix(&ic->w, layer, (st_iw_kind)kind);
        for (int p = 0; p < nparts(iw, kind); p++) {
            if (part_width(iw, kind, p) == 0) continue;
            if (reorder_part(ic, iw, layer, src, kind, p, &s->wmd[kind][p], s->data[i * P + p])) {
                set_free(s, ns);
                s->broken = 1;
                return st_error(ST_ERR_UNSUPPORTED, "infer weights: oneDNN reorder failed");
            }
        }
    }
    s->built = 1;
    st_bf16_row(NULL, NULL, 0); /* its ISA detection, before any parallel region converts */
    st_log_debug("infer weights: %s copy built in %.2f s (%d parts)", prec ? "bf16" : "fp32",
                 st_time_now() - t0, P);
    return ST_OK;
}

st_status st_infer_weights_acquire(st_infer_ctx *ic, st_matmul_precision prec,
                                   st_infer_weights **out) {
    *out = NULL;
    const st_config *c = &ic->m->config;
    const int p = prec == ST_MATMUL_BF16 ? 1 : 0;
    pthread_mutex_lock(&ic->mu);
    st_infer_weights *iw = ic->iw;
    if (!iw) {
        iw = st_calloc(1, sizeof *iw);
        if (!iw) {
            pthread_mutex_unlock(&ic->mu);
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
        int P = omp_get_max_threads();
        iw->P = P = P < 1 ? 1 : P > ST_IW_MAXPARTS ? ST_IW_MAXPARTS : P;
        for (int k = 0; k < ST_IW_NSHAPES; k++) {
            /* split in units of 16 columns (one AVX-512 vector), the last part takes the rest */
            const int n = k == ST_IW_GU ? c->intermediate_size : iw->N[k], units = n / 16;
            const int np = k == ST_IW_LM ? 1 : P; /* the lm_head stays whole */
            for (int q = 0; q < np; q++) iw->n0[k][q] = units * q / np * 16;
            iw->n0[k][np] = n;
        }
        int bad = dnnl_engine_create(&iw->eng, dnnl_cpu, 0) ||
                  dnnl_stream_create(&iw->stream, iw->eng, dnnl_stream_default_flags);
        for (int q = 0; q < P && !bad; q++)
            bad = dnnl_stream_create(&iw->pstream[q], iw->eng, dnnl_stream_default_flags) != 0;
        if (bad) {
            st_infer_weights_free(iw);
            pthread_mutex_unlock(&ic->mu);
            return st_error(ST_ERR_UNSUPPORTED, "infer weights: no oneDNN CPU engine");
        }
        ic->iw = iw;
    }
    pthread_mutex_unlock(&ic->mu);
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
    if (!s->built) {
        st_status st = build(iw, ic, p);
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

static iw_prim *get_prim(st_infer_weights *iw, int M, int kind, int part) {
    const int p = iw->prec;
    for (int i = 0; i < iw->n_prims; i++)
        if (iw->prims[i].M == M && iw->prims[i].kind == kind && iw->prims[i].prec == p &&
            iw->prims[i].part == part)
            return &iw->prims[i];
    iw_prim e = {M, kind, p, part, NULL, {0}, {0}, NULL, NULL};
    const int w = part < 0 ? iw->N[kind] : part_width(iw, kind, part);
    dnnl_dims_t sd = {M, iw->K[kind]}, dd = {M, w};
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_memory_desc_init_by_tag(&e.src, 2, sd, dt_of(p), dnnl_ab) ||
        dnnl_memory_desc_init_by_tag(&e.dst, 2, dd, dnnl_f32, dnnl_ab) ||
        dnnl_matmul_desc_init(&md, &e.src, &iw->set[p].wmd[kind][part < 0 ? 0 : part], NULL,
                              &e.dst) ||
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

/* st_bf16_row (RNE, the training kernels' rounding) on all threads for large n. */
static void to_bf16(uint16_t *dst, const float *src, size_t n) {
    const size_t chunk = 65536;
    st_bf16_row(dst, src, 0); /* ISA detection outside the parallel region */
#pragma omp parallel for if (n > chunk)
    for (size_t i = 0; i < n; i += chunk) st_bf16_row(dst + i, src + i, n - i < chunk ? n - i : chunk);
}

/* Runs primitive e on src (fp32, or converted to bf16 into *buf) into out; stream st. */
static int run_prim(st_infer_weights *iw, iw_prim *e, dnnl_memory_t mw, dnnl_stream_t st,
                    float *out, const float *in, int M, int K, uint16_t *buf, int parallel) {
    const void *src = in;
    if (iw->prec) {
        if (parallel) to_bf16(buf, in, (size_t)M * K);
        else st_bf16_row(buf, in, (size_t)M * K);
        src = buf;
    }
    if (dnnl_memory_set_data_handle(e->msrc, (void *)src) ||
        dnnl_memory_set_data_handle(e->mdst, out))
        return -1;
    dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_SRC, e->msrc}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, e->mdst}};
    return dnnl_primitive_execute(e->prim, st, 3, args) || dnnl_stream_wait(st);
}

/* Grows *buf to at least n bf16 elements. */
static int grow(uint16_t **buf, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    st_free_aligned(*buf);
    *buf = st_alloc_aligned(n * sizeof(uint16_t));
    *cap = *buf ? n : 0;
    return *buf ? 0 : -1;
}

int st_infer_matmul(st_infer_weights *iw, int layer, st_iw_kind kind, float *out, const float *in,
                    const float *bias, int M) {
    if (M <= 0) return 0;
    if (kind != ST_IW_LM && iw->P != 1) return -1; /* split into parts: st_infer_matmul_part */
    iw_prim *e = get_prim(iw, M, kind, -1);
    if (!e) return -1;
    const int K = iw->K[kind], N = iw->N[kind];
    if (iw->prec && grow(&iw->abuf, &iw->acap, (size_t)M * K)) return -1;
    dnnl_memory_t mw = iw->set[iw->prec].mem[(kind == ST_IW_LM ? iw->L * 4 : layer * 4 + (int)kind) * iw->P];
    const int rc = run_prim(iw, e, mw, iw->stream, out, in, M, K, iw->abuf, 1);
    if (!rc && bias) {
#pragma omp parallel for if ((size_t)M * N > 65536)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) out[(size_t)i * N + j] += bias[j];
    }
    return rc;
}

int st_infer_nparts(const st_infer_weights *iw) { return iw->P; }

void st_infer_part_range(const st_infer_weights *iw, st_iw_kind kind, int part, int *n0, int *n1) {
    *n0 = iw->n0[kind][part];
    *n1 = iw->n0[kind][part + 1];
}

int st_infer_parts_prepare(st_infer_weights *iw, int M) {
    const int nthr = omp_get_max_threads();
    int rc = 0;
    size_t kmax = 0;
    omp_set_num_threads(1); /* single-threaded primitives: each part runs on one thread */
    for (int k = 0; k < 4 && !rc; k++) {
        if ((size_t)iw->K[k] > kmax) kmax = (size_t)iw->K[k];
        for (int p = 0; p < iw->P && !rc; p++) {
            iw->cur[k][p] = NULL;
            if (part_width(iw, k, p) == 0) continue;
            iw->cur[k][p] = get_prim(iw, M, k, p);
            rc = iw->cur[k][p] == NULL;
        }
    }
    omp_set_num_threads(nthr);
    for (int p = 0; p < iw->P && !rc && iw->prec; p++)
        rc = grow(&iw->pbuf[p], &iw->pcap[p], (size_t)M * kmax);
    return rc ? -1 : 0;
}

int st_infer_matmul_part(st_infer_weights *iw, int layer, st_iw_kind kind, int part, float *out,
                         const float *in, int M) {
    iw_prim *e = iw->cur[kind][part];
    if (!e) return part_width(iw, kind, part) == 0 ? 0 : -1;
    if (e->M != M) return -1;
    dnnl_memory_t mw = iw->set[iw->prec].mem[(layer * 4 + (int)kind) * iw->P + part];
    /* the primitive was made for one thread; outside an active parallel region oneDNN would
     * run it on omp_get_max_threads() threads (and overrun its one-thread scratchpad) */
    const int nthr = omp_in_parallel() ? 0 : omp_get_max_threads();
    if (nthr) omp_set_num_threads(1);
    const int rc = run_prim(iw, e, mw, iw->pstream[part], out, in, M, iw->K[kind], iw->pbuf[part], 0);
    if (nthr) omp_set_num_threads(nthr);
    return rc;
}

/* ---- the inference context (forward.h) ---- */

st_status st_infer_ctx_new(const st_model *m, const float *params, const st_lora *adapter,
                           const float *adapter_params, st_infer_ctx **out) {
    *out = NULL;
    if (!m || (!params && !m->params))
        return st_error(ST_ERR_ARG, "infer context: a model with weights is needed");
    if (adapter) { /* the adapter's layout must be the one its config gives on this model */
        st_layout lay;
        st_status s = st_lora_layout_init(&lay, &m->config, &adapter->lc);
        const int same = !s && lay.n_floats == adapter->layout.n_floats;
        if (!s) st_layout_free(&lay);
        if (!same)
            return s ? s : st_error(ST_ERR_ARG, "infer context: the LoRA adapter (%zu floats) was "
                                    "made for another model config", adapter->layout.n_floats);
    }
    st_infer_ctx *ic = st_calloc(1, sizeof *ic);
    if (!ic) return st_error(ST_ERR_NOMEM, "infer context: out of memory");
    ic->m = m;
    ic->ad = adapter;
    pthread_mutex_init(&ic->mu, NULL);
    st_status s = st_weights_bind(&ic->w, &m->config, &m->layout, (float *)(params ? params : m->params));
    if (!s && adapter)
        s = st_lora_bind(&ic->lw, &m->config, &adapter->lc, &adapter->layout,
                         (float *)(adapter_params ? adapter_params : adapter->params));
    if (s) {
        st_infer_ctx_free(ic);
        return s;
    }
    *out = ic;
    return ST_OK;
}

void st_infer_ctx_free(st_infer_ctx *ic) {
    if (!ic) return;
    st_infer_weights_free(ic->iw);
    if (ic->ad) st_lora_unbind(&ic->lw);
    st_weights_unbind(&ic->w);
    pthread_mutex_destroy(&ic->mu);
    free(ic);
}

void st_infer_ctx_refresh(st_infer_ctx *ic) {
    pthread_mutex_lock(&ic->mu);
    st_infer_weights *iw = ic->iw;
    pthread_mutex_unlock(&ic->mu);
    if (!iw) return;
    pthread_mutex_lock(&iw->mu);
    iw->stale = 1;
    pthread_mutex_unlock(&iw->mu);
}

const st_model *st_infer_ctx_model(const st_infer_ctx *ic) { return ic->m; }

st_status st_infer_ctx_score(const st_infer_ctx *ic, struct st_train_acts *a,
                             const int32_t *tokens, const int32_t *targets, const float *mask,
                             int B, int T, float normaliser, float *loss) {
    const st_config *c = &ic->m->config;
    if (ic->ad)
        return st_lora_train_forward(c, &ic->w, &ic->ad->lc, &ic->lw, 0, a, tokens, targets, mask,
                                     B, T, normaliser, loss);
    return st_train_forward(c, &ic->w, a, tokens, targets, mask, B, T, normaliser, loss);
}
