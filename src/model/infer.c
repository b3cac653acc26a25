/* infer.c - st_forward_infer: batched incremental forward over the KV cache. All new tokens of
 * all sequences go through each projection as ONE GEMM (M = total new tokens, so a decode step
 * of B sequences is an M = B GEMM) against the inference context's weight cache
 * (infer_weights.c: oneDNN-blocked fp32 or bf16 copies). Attention runs per (sequence, KV head):
 * a decoding row's query heads of one GQA group share a single pass over the cached K/V rows;
 * prefill rows use the blocked GEMM attention kernel. On the CPU backend with the weight cache
 * all layers of a call run inside ONE OpenMP parallel region (fused_thread): each thread
 * multiplies its column parts of every projection with single-threaded oneDNN primitives and
 * the phases meet at OpenMP barriers, instead of ~5 thread wake-ups per layer (one per
 * oneDNN call and per parallel loop). The loop below it is the fallback (no cache, other
 * backends, SAFETUNE_INFER_FUSED=0). Reference: transformers LlamaModel.forward with
 * past_key_values. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "model/acts.h"
#include "model/fastmath.h"
#include "model/infer_kernels.h"
#include "model/infer_weights.h"
#include "model/kvcache.h"
#include "safetune/kernels.h"

/* Small-row elementwise ops run on the calling thread: at decode sizes (32 rows) waking the
 * OpenMP team costs more than the work on a shared machine (rmsnorm was 9% of a decode step). */
enum { PAR_MIN = 1 << 17 }; /* elements below which these loops stay serial */

/* x += y (if y), then ln = rmsnorm(x) * w, [N, C]: st_rmsnorm_forward's arithmetic (double
 * sum of squares, float scaling), the sum vectorised (8 double lanes: the reordering moves the
 * double sum by ~1e-16 relative, far below the float rounding of the scale). */
/* One row of st_infer_add_rmsnorm (also used by the fused path on its private rows). */
static inline void add_rmsnorm_row(float *xr, const float *yr, float *o, const float *w, int C,
                                   float eps) {
    double ss = 0.0;
    if (yr) {
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < C; i++) {
            const float v = xr[i] + yr[i];
            xr[i] = v;
            ss += (double)v * v;
        }
    } else {
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < C; i++) ss += (double)xr[i] * xr[i];
    }
    const float r = (float)(1.0 / sqrt(ss / C + eps));
#pragma omp simd
    for (int i = 0; i < C; i++) o[i] = xr[i] * r * w[i];
}

void st_infer_add_rmsnorm(float *x, const float *y, float *ln, const float *w, int N, int C,
                          float eps) {
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++)
        add_rmsnorm_row(x + (size_t)n * C, y ? y + (size_t)n * C : NULL, ln + (size_t)n * C, w, C,
                        eps);
}

/* h = silu(g) * u for gu = [g | u] rows [N, 2I]: st_swiglu_forward's formula and exp
 * (st_fast_expf), so it matches the training forward bit for bit. */
/* One row of st_infer_swiglu: o[i] = silu(g[i]) * u[i]. */
static inline void swiglu_row(float *o, const float *g, const float *u, int I) {
#pragma omp simd
    for (int i = 0; i < I; i++) o[i] = g[i] / (1.0f + st_fast_expf(-g[i])) * u[i];
}

void st_infer_swiglu(float *h, const float *gu, int N, int I) {
#pragma omp parallel for if ((size_t)N * I > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * I;
        swiglu_row(h + (size_t)n * I, g, g + I, I);
    }
}

#ifdef __AVX512F__
/* e^x for x <= 0 (scores minus their max), 16 lanes: x = n ln2 + r, |r| <= ln2/2, e^r by its
 * degree-7 Taylor polynomial (truncation < 1e-8 relative, below fp32 rounding), times 2^n by
 * vscalefps (underflows to 0 below -87). Cody-Waite range reduction (Cephes expf). */
static inline __m512 exp_neg16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

/* Element j of a K/V block, fp32 or bf16. */
static inline float kv_at(const void *p, size_t j, int bf) {
    return bf ? st_bf16_to_f32(((const uint16_t *)p)[j]) : ((const float *)p)[j];
}

#ifdef __AVX512F__
/* 16 consecutive K/V elements from p + j as fp32 (bf16: the 16-bit pattern shifted up). */
static inline __m512 kv_load16(const void *p, size_t j, int bf) {
    if (!bf) return _mm512_loadu_ps((const float *)p + j);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + j));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
#endif

/* st_infer_gqa_decode for one element type (bf: constant at each call site, so the compiler
 * emits one specialised copy per type). */
static inline __attribute__((always_inline)) void
gqa_decode_impl(float *out, const float *q, const void *k, const void *v, const int bf, int nk,
                int D, int rep, float scale, float *p) {
    float mx[16], inv[16];
    for (int r = 0; r < rep; r++) mx[r] = -INFINITY;
#ifdef __AVX512F__
    if (D == 64) {
        __m512 qv[16][4];
        for (int r = 0; r < rep; r++)
            for (int c = 0; c < 4; c++) qv[r][c] = _mm512_loadu_ps(q + (size_t)r * D + 16 * c);
        const size_t row_bytes = bf ? 128 : 256;
        for (int j = 0; j < nk; j++) {
            const size_t o = (size_t)j * 64;
            /* fetch V row j now, so the second pass finds the block in cache (the two streams
             * overlap: measured 15-25% faster on this memory-bound loop) */
            const char *pv = (const char *)v + j * row_bytes;
            for (size_t cl = 0; cl < row_bytes; cl += 64) _mm_prefetch(pv + cl, _MM_HINT_T0);
            const __m512 k0 = kv_load16(k, o, bf), k1 = kv_load16(k, o + 16, bf),
                         k2 = kv_load16(k, o + 32, bf), k3 = kv_load16(k, o + 48, bf);
            for (int r = 0; r < rep; r++) {
                __m512 a = _mm512_mul_ps(qv[r][0], k0);
                a = _mm512_fmadd_ps(qv[r][1], k1, a);
                a = _mm512_fmadd_ps(qv[r][2], k2, a);
                a = _mm512_fmadd_ps(qv[r][3], k3, a);
                const float sc = _mm512_reduce_add_ps(a) * scale;
                p[(size_t)r * nk + j] = sc;
                mx[r] = sc > mx[r] ? sc : mx[r];
            }
        }
    } else
#endif
    {
        for (int j = 0; j < nk; j++) {
            for (int r = 0; r < rep; r++) {
                const float *qr = q + (size_t)r * D;
                float sc = 0.0f;
                for (int d = 0; d < D; d++) sc += qr[d] * kv_at(k, (size_t)j * D + d, bf);
                sc *= scale;
                p[(size_t)r * nk + j] = sc;
                mx[r] = sc > mx[r] ? sc : mx[r];
            }
        }
    }
    for (int r = 0; r < rep; r++) {
        float *pr = p + (size_t)r * nk, sum = 0.0f;
        int j0 = 0;
#ifdef __AVX512F__
        const __m512 m = _mm512_set1_ps(mx[r]);
        __m512 acc = _mm512_setzero_ps();
        for (; j0 < nk; j0 += 16) {
            const __mmask16 k16 = nk - j0 >= 16 ? (__mmask16)0xffff
                                                : (__mmask16)((1u << (nk - j0)) - 1u);
            const __m512 e = exp_neg16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k16, pr + j0), m));
            _mm512_mask_storeu_ps(pr + j0, k16, e);
            acc = _mm512_mask_add_ps(acc, k16, acc, e);
        }
        sum = _mm512_reduce_add_ps(acc);
#endif
        for (int j = j0; j < nk; j++) {
            pr[j] = expf(pr[j] - mx[r]);
            sum += pr[j];
        }
        inv[r] = 1.0f / sum;
        for (int d = 0; d < D; d++) out[(size_t)r * D + d] = 0.0f;
    }
#ifdef __AVX512F__
    if (D == 64) {
        __m512 acc[16][4];
        for (int r = 0; r < rep; r++)
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
        for (int j = 0; j < nk; j++) {
            const size_t o = (size_t)j * 64;
            const __m512 v0 = kv_load16(v, o, bf), v1 = kv_load16(v, o + 16, bf),
                         v2 = kv_load16(v, o + 32, bf), v3 = kv_load16(v, o + 48, bf);
            for (int r = 0; r < rep; r++) {
                const __m512 w = _mm512_set1_ps(p[(size_t)r * nk + j] * inv[r]);
                acc[r][0] = _mm512_fmadd_ps(w, v0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(w, v1, acc[r][1]);
                acc[r][2] = _mm512_fmadd_ps(w, v2, acc[r][2]);
                acc[r][3] = _mm512_fmadd_ps(w, v3, acc[r][3]);
            }
        }
        for (int r = 0; r < rep; r++)
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(out + (size_t)r * D + 16 * c, acc[r][c]);
        return;
    }
#endif
    for (int j = 0; j < nk; j++) {
        for (int r = 0; r < rep; r++) {
            const float w = p[(size_t)r * nk + j] * inv[r];
            float *o = out + (size_t)r * D;
            for (int d = 0; d < D; d++) o[d] += w * kv_at(v, (size_t)j * D + d, bf);
        }
    }
}

/* One decoding query row: the rep query heads q[r*D..] of one KV group against that group's
 * contiguous K/V blocks k, v ([nk, D], fp32 or bf16) -> out[r*D..]. Same arithmetic as
 * st_attention_head_forward's one-row path (scaled scores, max-shifted exp, normalised
 * weights), but each K/V row is loaded once for all rep heads. p: rep * nk floats. */
void st_infer_gqa_decode(float *out, const float *q, const void *k, const void *v, int kv_bf16,
                         int nk, int D, int rep, float scale, float *p) {
    if (rep > 16) { /* never for real models; keep the generic path correct anyway */
        for (int r = 0; r < rep; r++)
            st_infer_gqa_decode(out + (size_t)r * D, q + (size_t)r * D, k, v, kv_bf16, nk, D, 1,
                                scale, p);
        return;
    }
    if (kv_bf16) gqa_decode_impl(out, q, k, v, 1, nk, D, rep, scale, p);
    else gqa_decode_impl(out, q, k, v, 0, nk, D, rep, scale, p);
}

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

/* ---- fused path: one parallel region per call, column parts of the weight cache ---- */

/* Rotate one head vector v[D] by the position's cos/sin (h = D/2): st_rope_forward's
 * arithmetic (rotate_half convention). */
static inline void rope_head(float *v, const float *c, const float *sn, int h) {
    for (int i = 0; i < h; i++) {
        const float a = v[i], bb = v[i + h], s1 = 1.0f * sn[i];
        v[i] = a * c[i] - bb * s1;
        v[i + h] = bb * c[i] + a * s1;
    }
}

/* Longest spin at a fused-region phase barrier before sleeping (st_barrier_wait adapts below it).
 * Quiet 2-core Zen 4, batch-32 fp32 decode: 99.7% of waits end within it, 8 us on average,
 * against ~30 us for a futex wake-up; whole runs +2.6% vs sleeping at once, and no loss beside a
 * busy process (the budget collapses when waits have to sleep). */
#define ST_FUSED_SPIN_S 200e-6

/* What the threads of the fused region share. */
typedef struct {
    const st_model *m;
    const st_weights *w; /* the context's weights (norms; the projections are in iw) */
    st_kv_cache *kc;
    st_infer_weights *iw;
    const infer_bufs *b;
    const int *slots, *n_tokens;
    int n_seqs, N, pk;
    float scale;
    size_t per_thread, att_floats, pw;
    float *lnp;        /* [threads][N, C] each thread's private normed rows */
    float *pout;       /* [parts][N, pw] part outputs */
    atomic_int *next;  /* [L] attention task counters */
    atomic_int err;    /* a part matmul failed */
    st_barrier bar;    /* the phase barrier */
} fused_ctx;

/* One position's key and value rows (D floats each) into the cache at element offset o (bf16
 * caches round to nearest even). */
static void kv_store(st_kv_cache *kc, size_t o, const float *kr, const float *vr, int D) {
    if (kc->kv_bf16) {
        uint16_t *kd = (uint16_t *)kc->k + o, *vd = (uint16_t *)kc->v + o;
        for (int d = 0; d < D; d++) {
            kd[d] = st_f32_to_bf16(kr[d]);
            vd[d] = st_f32_to_bf16(vr[d]);
        }
    } else {
        memcpy((float *)kc->k + o, kr, (size_t)D * sizeof(float));
        memcpy((float *)kc->v + o, vr, (size_t)D * sizeof(float));
    }
}

/* A bf16 cache block's first tk positions of K and V widened to fp32 in scratch (2 * max_seq * D
 * floats); *kg and *vg then point there. */
static void kv_widen(const st_kv_cache *kc, const void **kg, const void **vg, int tk, int D, float *scratch) {
    float *kf = scratch, *vf = kf + (size_t)kc->max_seq * D;
    for (size_t e = 0; e < (size_t)tk * D; e++) {
        kf[e] = st_bf16_to_f32(((const uint16_t *)*kg)[e]);
        vf[e] = st_bf16_to_f32(((const uint16_t *)*vg)[e]);
    }
    *kg = kf;
    *vg = vf;
}

/* x[n, n0 .. n0+w) += part[n, 0 .. w) for the N rows: a projection part's residual add. */
static void add_part(float *x, const float *part, int N, int C, int n0, int w) {
    for (int n = 0; n < N; n++) {
        float *xr = x + (size_t)n * C + n0;
        const float *src = part + (size_t)n * w;
#pragma omp simd
        for (int j = 0; j < w; j++) xr[j] += src[j];
    }
}

/* Task (sequence i, KV head g) of layer l: RoPE on the group's query heads and key of the new
 * rows, append the keys/values, attention. Same arithmetic as the unfused path. */
static void fused_attend(fused_ctx *f, int l, int task, int t) {
    const st_config *c = &f->m->config;
    st_kv_cache *kc = f->kc;
    const infer_bufs *b = f->b;
    const int KV = c->num_key_value_heads, D = c->head_dim, H = c->num_attention_heads;
    const int rep = H / KV, HD = H * D, Wd = (H + 2 * KV) * D, kvd = KV * D, h2 = D / 2;
    const int i = task / KV, g = task % KV, s = f->slots[i];
    const int tq = f->n_tokens[i], p0 = kc->len[s], tk = p0 + tq;
    const size_t blk = st_kv_block(kc, l, s, g);
    for (int j = 0; j < tq; j++) {
        const int row = b->row0[i] + j;
        float *qr = b->qkv + (size_t)row * Wd;
        const float *cs = b->cs + (size_t)row * h2, *sn = b->sn + (size_t)row * h2;
        for (int r = 0; r < rep; r++) rope_head(qr + (size_t)(g * rep + r) * D, cs, sn, h2);
        float *kr = qr + HD + (size_t)g * D;
        const float *vr = kr + kvd;
        rope_head(kr, cs, sn, h2);
        kv_store(kc, blk + (size_t)(p0 + j) * D, kr, vr, D);
    }
    float *scr = kc->att_scratch + f->per_thread * t;
    const size_t es = kc->kv_bf16 ? sizeof(uint16_t) : sizeof(float);
    const void *kg = (const char *)kc->k + blk * es, *vg = (const char *)kc->v + blk * es;
    float *out = b->att + (size_t)b->row0[i] * HD + (size_t)g * rep * D;
    const float *q = b->qkv + (size_t)b->row0[i] * Wd + (size_t)g * rep * D;
    if (tq == 1) {
        st_infer_gqa_decode(out, q, kg, vg, kc->kv_bf16, tk, D, rep, f->scale, scr);
        return;
    }
    if (kc->kv_bf16) kv_widen(kc, &kg, &vg, tk, D, scr + f->att_floats); /* the kernel reads fp32 */
    for (int h = 0; h < rep; h++)
        st_attention_head_forward(out + (size_t)h * D, NULL, q + (size_t)h * D, kg, vg, tq, tk, D,
                                  Wd, D, HD, scr);
}

/* Thread t of nt: every layer of the call. Threads own parts t, t + nt, ... of each
 * projection (outputs go to disjoint columns), attention tasks come from a shared counter, and
 * each thread normalises all N rows into its own buffer (18k multiplies at decode: cheaper
 * than a barrier). Five barriers per layer, each after a phase whose outputs the next reads. */
static void fused_thread(fused_ctx *f, int t, int nt) {
    const st_config *c = &f->m->config;
    const st_weights *w = f->w;
    st_kv_cache *kc = f->kc;
    st_infer_weights *iw = f->iw;
    const infer_bufs *b = f->b;
    const int C = c->hidden_size, I = c->intermediate_size, N = f->N, P = st_infer_nparts(iw);
    const int H = c->num_attention_heads, KV = c->num_key_value_heads, D = c->head_dim;
    const int Wd = (H + 2 * KV) * D, ntask = f->n_seqs * KV;
    const float eps = c->rms_norm_eps;
    float *ln = f->lnp + (size_t)t * N * C;
    const int prof = kc->profile && t == 0;
    double tp = prof ? omp_get_wtime() : 0.0;
#define FPROF(i)                                                                             \
    do {                                                                                     \
        if (prof) {                                                                          \
            const double t_ = omp_get_wtime();                                               \
            kc->prof[f->pk][i] += t_ - tp;                                                   \
            tp = t_;                                                                         \
        }                                                                                    \
    } while (0)
#define ST_PHASE_BARRIER() st_barrier_wait(&f->bar, nt, ST_FUSED_SPIN_S)
#define PART_MM(kind, in, layer)                                                              \
    float *o = f->pout + (size_t)p * N * f->pw;                                              \
    int n0, n1;                                                                              \
    st_infer_part_range(iw, kind, p, &n0, &n1);                                              \
    const int pwid = n1 - n0;                                                                \
    if (st_infer_matmul_part(iw, layer, kind, p, o, in, N)) atomic_store(&f->err, 1)
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const st_layer_weights *Lw = &w->layers[l];
        for (int n = 0; n < N; n++)
            add_rmsnorm_row(b->x + (size_t)n * C, NULL, ln + (size_t)n * C, Lw->input_layernorm,
                            C, eps);
        FPROF(1);
        for (int p = t; p < P; p += nt) {
            PART_MM(ST_IW_QKV, ln, l);
            const float *bias = Lw->q_bias;
            for (int n = 0; n < N; n++) {
                float *dst = b->qkv + (size_t)n * Wd + n0;
                const float *src = o + (size_t)n * pwid;
                if (bias)
                    for (int j = 0; j < pwid; j++) dst[j] = src[j] + bias[n0 + j];
                else
                    memcpy(dst, src, (size_t)pwid * sizeof(float));
            }
        }
        ST_PHASE_BARRIER();
        FPROF(2);
        for (int task; (task = atomic_fetch_add(&f->next[l], 1)) < ntask;) fused_attend(f, l, task, t);
        ST_PHASE_BARRIER();
        FPROF(4);
        for (int p = t; p < P; p += nt) {
            PART_MM(ST_IW_O, b->att, l);
            add_part(b->x, o, N, C, n0, pwid);
        }
        ST_PHASE_BARRIER();
        FPROF(5);
        for (int n = 0; n < N; n++)
            add_rmsnorm_row(b->x + (size_t)n * C, NULL, ln + (size_t)n * C,
                            Lw->post_attention_layernorm, C, eps);
        FPROF(1);
        for (int p = t; p < P; p += nt) {
            PART_MM(ST_IW_GU, ln, l);
            for (int n = 0; n < N; n++) {
                const float *g = o + (size_t)n * 2 * pwid;
                swiglu_row(b->h + (size_t)n * I + n0, g, g + pwid, pwid);
            }
        }
        ST_PHASE_BARRIER();
        FPROF(6);
        for (int p = t; p < P; p += nt) {
            PART_MM(ST_IW_DOWN, b->h, l);
            add_part(b->x, o, N, C, n0, pwid);
        }
        ST_PHASE_BARRIER();
        FPROF(8);
    }
#undef PART_MM
#undef FPROF
#undef ST_PHASE_BARRIER
}

/* Runs all layers of a call with the fused path; x ends as the final residual stream.
 * ST_ERR_UNSUPPORTED (before anything is written): oneDNN has no primitive for these rows. */
static st_status layers_fused(fused_ctx *f) {
    st_kv_cache *kc = f->kc;
    st_infer_weights *iw = f->iw;
    const st_config *c = &f->m->config;
    const int P = st_infer_nparts(iw), N = f->N, L = c->num_hidden_layers;
    if (st_infer_parts_prepare(iw, N))
        return st_error(ST_ERR_UNSUPPORTED, "infer: oneDNN matmul for %d rows unavailable", N);
    size_t pw = 0;
    for (int k = 0; k < 4; k++)
        for (int p = 0; p < P; p++) {
            int n0, n1;
            st_infer_part_range(iw, (st_iw_kind)k, p, &n0, &n1);
            const size_t wd = (size_t)(n1 - n0) * (k == ST_IW_GU ? 2 : 1);
            if (wd > pw) pw = wd;
        }
    pw = (pw + 15) & ~(size_t)15;
    const size_t need = (size_t)P * N * ((size_t)c->hidden_size + pw);
    if (need > kc->fscratch_floats) {
        st_free_aligned(kc->fscratch);
        kc->fscratch = st_alloc_aligned(need * sizeof(float));
        kc->fscratch_floats = kc->fscratch ? need : 0;
        if (!kc->fscratch) return st_error(ST_ERR_NOMEM, "infer: out of memory (%d rows)", N);
    }
    if (!kc->fctr) {
        kc->fctr = st_calloc((size_t)L, sizeof(atomic_int));
        if (!kc->fctr) return ST_ERR_NOMEM;
    }
    for (int l = 0; l < L; l++) atomic_store(&kc->fctr[l], 0);
    f->pw = pw;
    f->lnp = kc->fscratch;
    f->pout = kc->fscratch + (size_t)P * N * c->hidden_size;
    f->next = kc->fctr;
    atomic_init(&f->err, 0);
    st_barrier_init(&f->bar);
#pragma omp parallel num_threads(P)
    fused_thread(f, omp_get_thread_num(), omp_get_num_threads());
    if (atomic_load(&f->err))
        return st_error(ST_ERR_INTERNAL, "infer: oneDNN matmul failed (%d rows)", N);
    return ST_OK;
}

st_status st_forward_infer(st_infer_ctx *ic, st_kv_cache *kc, const int *slots,
                           const int32_t *const *tokens, const int *n_tokens, int n_seqs,
                           float *logits_last) {
    const st_model *m = ic->m;
    const st_config *c = &m->config;
    const st_weights *w = &ic->w;
    const st_backend *be = st_backend_get();
    const int C = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    const int H = c->num_attention_heads, KV = c->num_key_value_heads, D = c->head_dim;
    const int HD = H * D, Wd = (H + 2 * KV) * D, rep = H / KV, kvd = KV * D;
    if (n_seqs <= 0 || n_seqs > kc->max_batch)
        return st_error(ST_ERR_ARG, "infer: n_seqs %d outside [1, %d]", n_seqs, kc->max_batch);
    if (kc->kvd != kvd || kc->L != c->num_hidden_layers)
        return st_error(ST_ERR_ARG, "infer: KV cache was created for a different model config");
    if (kc->kv_err)
        return st_error(ST_ERR_NOMEM, "infer: KV cache could not be re-stored for the new precision "
                        "(out of memory)");
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
    (void)max_tk;
    infer_bufs b;
    bufs_layout(c, kc->scratch_tokens, &b, kc->scratch);

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

    /* the weight cache (CPU backend only; any failure falls back to the backend's sgemm) */
    const st_matmul_precision prec = kc->prec_set ? kc->prec : st_matmul_get_precision();
    st_infer_weights *iw = NULL;
    const int cpu = be == st_backend_cpu();
    if (cpu && !kc->no_wcache) {
        static int warned;
        if (st_infer_weights_acquire(ic, prec, &iw) && !warned) {
            warned = 1;
            st_log_warn("infer: no inference weight cache (%s); using the plain matmul",
                        st_last_error());
        }
    }
    /* per thread: the attention kernels' scratch, then fp32 K and V blocks (bf16 cache) */
    const size_t att_floats = st_attention_scratch_floats(kc->max_seq);
    const size_t per_thread = att_floats + (size_t)2 * kc->max_seq * D;
    int nthr = omp_get_max_threads();
    if (iw && st_infer_nparts(iw) > nthr) nthr = st_infer_nparts(iw);
    size_t att_need = per_thread * (size_t)nthr;
    if (att_need > kc->att_scratch_floats) {
        st_free_aligned(kc->att_scratch);
        kc->att_scratch = st_alloc_aligned(att_need * sizeof(float));
        kc->att_scratch_floats = kc->att_scratch ? att_need : 0;
        if (!kc->att_scratch) {
            st_infer_weights_release(iw);
            return st_error(ST_ERR_NOMEM, "infer: attention scratch");
        }
    }
    /* the plain matmul reads the context's weights: its adapter is added as a separate term */
#define MM(out, in, layer, kind, wptr, bias, M, K, Nn)                                        \
    do {                                                                                     \
        if (!iw || st_infer_matmul(iw, layer, kind, out, in, bias, M)) {                      \
            be->matmul_forward(out, in, wptr, bias, M, K, Nn);                               \
            st_status ls_ = st_infer_lora_add(ic, layer, kind, out, in, M);                  \
            if (ls_) {                                                                       \
                st_infer_weights_release(iw);                                                \
                return ls_;                                                                  \
            }                                                                                \
        }                                                                                    \
    } while (0)
    double tp = kc->profile ? omp_get_wtime() : 0.0;
    const int pk = N > (size_t)n_seqs; /* profile bucket: 1 when prefill rows are present */
#define PROF(i)                                                                              \
    do {                                                                                     \
        if (kc->profile) {                                                                   \
            double t_ = omp_get_wtime();                                                     \
            kc->prof[pk][i] += t_ - tp;                                                          \
            tp = t_;                                                                         \
        }                                                                                    \
    } while (0)

    st_config_rope_inv_freq(c, inv);
    st_rope_cos_sin(b.cs, b.sn, b.pos, (int)N, inv, D);
    be->embedding_forward(b.x, flat, w->embed_tokens, (int)N, C);
    const float scale = 1.0f / sqrtf((float)D);
    PROF(0);

    /* CPU with the weight cache: all layers in one parallel region (fused_thread) */
    int fused = cpu && iw && !kc->no_fused;
    if (fused) {
        fused_ctx f = {.m = m, .w = w, .kc = kc, .iw = iw, .b = &b, .slots = slots, .n_tokens = n_tokens,
                       .n_seqs = n_seqs, .N = (int)N, .pk = pk, .scale = scale,
                       .per_thread = per_thread, .att_floats = att_floats};
        st_status st = layers_fused(&f);
        if (st == ST_ERR_UNSUPPORTED) { /* no primitive for these rows; nothing touched yet */
            static int warned;
            if (!warned) {
                warned = 1;
                st_log_warn("%s; using the per-op loop", st_last_error());
            }
            fused = 0;
        } else if (st) {
            st_infer_weights_release(iw);
            return st;
        }
        tp = kc->profile ? omp_get_wtime() : 0.0;
    }
    for (int l = 0; l < c->num_hidden_layers && !fused; l++) {
        const st_layer_weights *Lw = &w->layers[l];
        /* residual add of the previous layer's MLP fused into this norm */
        if (cpu) st_infer_add_rmsnorm(b.x, l ? b.tmp : NULL, b.ln, Lw->input_layernorm, (int)N, C,
                             c->rms_norm_eps);
        else be->rmsnorm_forward(b.ln, NULL, b.x, Lw->input_layernorm, (int)N, C, c->rms_norm_eps);
        PROF(1);
        MM(b.qkv, b.ln, l, ST_IW_QKV, Lw->q_proj, Lw->q_bias, (int)N, C, Wd);
        PROF(2);
        be->rope_forward(b.qkv, (int)N, H + KV, D, Wd, b.cs, b.sn);
        /* append the new keys/values: per KV head, row p0 + j of its [max_seq, D] blocks */
        for (int i = 0; i < n_seqs; i++) {
            const int p0 = kc->len[slots[i]];
            for (int g = 0; g < KV; g++) {
                const size_t blk = st_kv_block(kc, l, slots[i], g) + (size_t)p0 * D;
                for (int j = 0; j < n_tokens[i]; j++) {
                    const float *kr = b.qkv + (size_t)(b.row0[i] + j) * Wd + HD + (size_t)g * D;
                    const float *vr = kr + kvd;
                    kv_store(kc, blk + (size_t)j * D, kr, vr, D);
                }
            }
        }
        PROF(3);
        /* one task per (sequence, KV head): decode rows share each K/V pass across the group */
#pragma omp parallel for schedule(dynamic)
        for (int t = 0; t < n_seqs * KV; t++) {
            const int i = t / KV, g = t % KV, s = slots[i];
            const int tq = n_tokens[i], tk = kc->len[s] + tq;
            float *scr = kc->att_scratch + per_thread * omp_get_thread_num();
            const size_t blk = st_kv_block(kc, l, s, g);
            const size_t es = kc->kv_bf16 ? sizeof(uint16_t) : sizeof(float);
            const void *kg = (const char *)kc->k + blk * es, *vg = (const char *)kc->v + blk * es;
            float *out = b.att + (size_t)b.row0[i] * HD + (size_t)g * rep * D;
            const float *q = b.qkv + (size_t)b.row0[i] * Wd + (size_t)g * rep * D;
            if (tq == 1 && cpu) {
                st_infer_gqa_decode(out, q, kg, vg, kc->kv_bf16, tk, D, rep, scale, scr);
                continue;
            }
            if (kc->kv_bf16) kv_widen(kc, &kg, &vg, tk, D, scr + att_floats); /* the kernel reads fp32 */
            for (int h = 0; h < rep; h++)
                be->attention_head_forward(out + (size_t)h * D, NULL, q + (size_t)h * D, kg, vg,
                                           tq, tk, D, Wd, D, HD, scr);
        }
        PROF(4);
        MM(b.tmp, b.att, l, ST_IW_O, Lw->o_proj, NULL, (int)N, HD, C);
        PROF(5);
        if (cpu) {
            st_infer_add_rmsnorm(b.x, b.tmp, b.ln, Lw->post_attention_layernorm, (int)N, C, c->rms_norm_eps);
        } else {
            be->add_inplace(b.x, b.tmp, N * C);
            be->rmsnorm_forward(b.ln, NULL, b.x, Lw->post_attention_layernorm, (int)N, C,
                                c->rms_norm_eps);
        }
        PROF(1);
        MM(b.gu, b.ln, l, ST_IW_GU, Lw->gate_proj, NULL, (int)N, C, 2 * I);
        PROF(6);
        if (cpu) st_infer_swiglu(b.h, b.gu, (int)N, I);
        else be->swiglu_forward(b.h, b.gu, (int)N, I);
        PROF(7);
        MM(b.tmp, b.h, l, ST_IW_DOWN, Lw->down_proj, NULL, (int)N, I, C);
        PROF(8);
        if (!cpu) be->add_inplace(b.x, b.tmp, N * C); /* else fused into the next norm */
        PROF(1);
    }
    for (int i = 0; i < n_seqs; i++) {
        kc->len[slots[i]] += n_tokens[i];
        const size_t r = (size_t)(b.row0[i + 1] - 1) * C;
        float *dst = b.last + (size_t)i * C;
        if (fused) /* x is complete: the parts added their outputs in place */
            memcpy(dst, b.x + r, (size_t)C * sizeof(float));
        else if (cpu) /* the last layer's residual add, needed on these rows only */
            for (int j = 0; j < C; j++) dst[j] = b.x[r + j] + b.tmp[r + j];
        else
            memcpy(dst, b.x + r, (size_t)C * sizeof(float));
    }
    if (cpu) st_infer_add_rmsnorm(b.last, NULL, b.ln, w->norm, n_seqs, C, c->rms_norm_eps);
    else be->rmsnorm_forward(b.ln, NULL, b.last, w->norm, n_seqs, C, c->rms_norm_eps);
    MM(logits_last, b.ln, 0, ST_IW_LM, w->lm_head, NULL, n_seqs, C, V);
    PROF(9);
    kc->prof_calls[pk]++;
    st_infer_weights_release(iw);
#undef MM
#undef PROF
    return ST_OK;
}
