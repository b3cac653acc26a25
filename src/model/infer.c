/* infer.c - st_forward_infer: batched incremental forward over the KV cache. All new tokens of
 * all sequences go through each projection as ONE GEMM (M = total new tokens, so a decode step
 * of B sequences is an M = B GEMM) against the model's inference weight cache
 * (infer_weights.c: oneDNN-blocked fp32 or bf16 copies). Attention runs per (sequence, KV head):
 * a decoding row's query heads of one GQA group share a single pass over the cached K/V rows;
 * prefill rows use the blocked GEMM attention kernel. Reference: transformers
 * LlamaModel.forward with past_key_values. */
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
void st_infer_add_rmsnorm(float *x, const float *y, float *ln, const float *w, int N, int C,
                          float eps) {
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *xr = x + (size_t)n * C, *o = ln + (size_t)n * C;
        double ss = 0.0;
        if (y) {
            const float *yr = y + (size_t)n * C;
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
}

/* h = silu(g) * u for gu = [g | u] rows [N, 2I]: st_swiglu_forward's formula and exp
 * (st_fast_expf), so it matches the training forward bit for bit. */
void st_infer_swiglu(float *h, const float *gu, int N, int I) {
#pragma omp parallel for if ((size_t)N * I > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * I, *u = g + I;
        float *o = h + (size_t)n * I;
#pragma omp simd
        for (int i = 0; i < I; i++) o[i] = g[i] / (1.0f + st_fast_expf(-g[i])) * u[i];
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

/* One decoding query row against its cache: the `rep` query heads q[r*D..] of one KV group,
 * keys/values k, v (rows kv_stride apart, nk of them) -> out[r*D..]. Same arithmetic as
 * st_attention_head_forward's one-row path (scaled scores, max-shifted exp, normalised
 * weights), but each K/V row is loaded once for all rep heads. p: rep * nk floats. */
static void gqa_decode_row(float *out, const float *q, const float *k, const float *v, int nk,
                           int D, int rep, int kv_stride, float scale, float *p) {
    float mx[16], inv[16];
    if (rep > 16) { /* never for real models; keep the generic path correct anyway */
        for (int r = 0; r < rep; r++)
            gqa_decode_row(out + (size_t)r * D, q + (size_t)r * D, k, v, nk, D, 1, kv_stride,
                           scale, p);
        return;
    }
    for (int r = 0; r < rep; r++) mx[r] = -INFINITY;
#ifdef __AVX512F__
    if (D == 64) {
        __m512 qv[16][4];
        for (int r = 0; r < rep; r++)
            for (int c = 0; c < 4; c++) qv[r][c] = _mm512_loadu_ps(q + (size_t)r * D + 16 * c);
        for (int j = 0; j < nk; j++) {
            const float *kr = k + (size_t)j * kv_stride;
            const __m512 k0 = _mm512_loadu_ps(kr), k1 = _mm512_loadu_ps(kr + 16),
                         k2 = _mm512_loadu_ps(kr + 32), k3 = _mm512_loadu_ps(kr + 48);
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
            const float *kr = k + (size_t)j * kv_stride;
            for (int r = 0; r < rep; r++) {
                const float *qr = q + (size_t)r * D;
                float sc = 0.0f;
                for (int d = 0; d < D; d++) sc += qr[d] * kr[d];
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
            const float *vr = v + (size_t)j * kv_stride;
            const __m512 v0 = _mm512_loadu_ps(vr), v1 = _mm512_loadu_ps(vr + 16),
                         v2 = _mm512_loadu_ps(vr + 32), v3 = _mm512_loadu_ps(vr + 48);
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
        const float *vr = v + (size_t)j * kv_stride;
        for (int r = 0; r < rep; r++) {
            const float w = p[(size_t)r * nk + j] * inv[r];
            float *o = out + (size_t)r * D;
            for (int d = 0; d < D; d++) o[d] += w * vr[d];
        }
    }
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

    /* the weight cache (CPU backend only; any failure falls back to the backend's sgemm) */
    const st_matmul_precision prec = kc->prec_set ? kc->prec : st_matmul_get_precision();
    st_infer_weights *iw = NULL;
    const int cpu = be == st_backend_cpu();
    if (cpu && !kc->no_wcache) {
        static int warned;
        if (st_infer_weights_acquire(m, prec, &iw) && !warned) {
            warned = 1;
            st_log_warn("infer: no inference weight cache (%s); using the plain matmul",
                        st_last_error());
        }
    }
#define MM(out, in, layer, kind, wptr, bias, M, K, Nn)                                        \
    do {                                                                                     \
        if (!iw || st_infer_matmul(iw, layer, kind, out, in, bias, M))                        \
            be->matmul_forward(out, in, wptr, bias, M, K, Nn);                               \
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

    for (int l = 0; l < c->num_hidden_layers; l++) {
        const st_layer_weights *Lw = &w->layers[l];
        /* residual add of the previous layer's MLP fused into this norm */
        if (cpu) st_infer_add_rmsnorm(b.x, l ? b.tmp : NULL, b.ln, Lw->input_layernorm, (int)N, C,
                             c->rms_norm_eps);
        else be->rmsnorm_forward(b.ln, NULL, b.x, Lw->input_layernorm, (int)N, C, c->rms_norm_eps);
        PROF(1);
        MM(b.qkv, b.ln, l, ST_IW_QKV, Lw->q_proj, Lw->q_bias, (int)N, C, Wd);
        PROF(2);
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
        PROF(3);
        /* one task per (sequence, KV head): decode rows share each K/V pass across the group */
#pragma omp parallel for schedule(dynamic)
        for (int t = 0; t < n_seqs * KV; t++) {
            const int i = t / KV, g = t % KV, s = slots[i];
            const int tq = n_tokens[i], tk = kc->len[s] + tq;
            float *scr = kc->att_scratch + per_thread * omp_get_thread_num();
            const float *kg = st_kv_cache_k(kc, l, s) + (size_t)g * D;
            const float *vg = st_kv_cache_v(kc, l, s) + (size_t)g * D;
            if (tq == 1 && cpu) {
                gqa_decode_row(b.att + (size_t)b.row0[i] * HD + (size_t)g * rep * D,
                               b.qkv + (size_t)b.row0[i] * Wd + (size_t)g * rep * D, kg, vg, tk,
                               D, rep, kvd, scale, scr);
                continue;
            }
            for (int h = g * rep; h < (g + 1) * rep; h++)
                be->attention_head_forward(b.att + (size_t)b.row0[i] * HD + (size_t)h * D, NULL,
                                           b.qkv + (size_t)b.row0[i] * Wd + (size_t)h * D, kg, vg,
                                           tq, tk, D, Wd, kvd, HD, scr);
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
        if (cpu) /* the last layer's residual add, needed on these rows only */
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
