/* kernels_attention.c - causal scaled-dot-product attention with GQA, forward and backward.
 * Scores are computed in blocks of QB query rows with GEMMs (dnnl_sgemm); backward recomputes
 * the probabilities from the saved log-sum-exp (as FlashAttention does, Dao et al. 2022), so
 * no [T, T] tensor is kept between passes. Semantics: transformers eager attention
 * (softmax(q kᵀ / sqrt(D) + causal mask) v, repeat_kv for GQA). */
#include "safetune/kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "model/fastmath.h"
#include "model/matmul_bf16.h"

enum { QB = 64 }; /* query rows per block */

size_t st_attention_scratch_floats(int Tk) { return (size_t)2 * QB * (size_t)(Tk > 0 ? Tk : 1); }

/* Small case (one query row, e.g. decode): plain loops. */
static void head_forward_row(float *out, float *lse, const float *q, const float *k,
                             const float *v, int nk, int D, int kv_stride, float scale,
                             float *p) {
    float mx = -INFINITY;
    for (int j = 0; j < nk; j++) {
        const float *kr = k + (size_t)j * kv_stride;
        float s = 0.0f;
        for (int d = 0; d < D; d++) s += q[d] * kr[d];
        p[j] = s * scale;
        mx = p[j] > mx ? p[j] : mx;
    }
    float sum = 0.0f;
    for (int j = 0; j < nk; j++) {
        p[j] = expf(p[j] - mx);
        sum += p[j];
    }
    const float inv = 1.0f / sum;
    for (int d = 0; d < D; d++) out[d] = 0.0f;
    for (int j = 0; j < nk; j++) {
        const float *vr = v + (size_t)j * kv_stride;
        const float pj = p[j] * inv;
        for (int d = 0; d < D; d++) out[d] += pj * vr[d];
    }
    if (lse) *lse = mx + logf(sum);
}

void st_attention_head_forward(float *out, float *lse, const float *q, const float *k,
                               const float *v, int Tq, int Tk, int D, int q_stride,
                               int kv_stride, int out_stride, float *scratch) {
    const float scale = 1.0f / sqrtf((float)D);
    const int off = Tk - Tq;
    if (Tq <= 2) {
        for (int i = 0; i < Tq; i++)
            head_forward_row(out + (size_t)i * out_stride, lse ? lse + i : NULL,
                             q + (size_t)i * q_stride, k, v, off + i + 1, D, kv_stride, scale,
                             scratch);
        return;
    }
    float *S = scratch;
    for (int i0 = 0; i0 < Tq; i0 += QB) {
        const int nq = Tq - i0 < QB ? Tq - i0 : QB;
        const int nk = off + i0 + nq; /* keys visible to the last row of the block */
        st_sgemm('N', 'T', nq, nk, D, scale, q + (size_t)i0 * q_stride, q_stride, k, kv_stride,
                 0.0f, S, nk);
        for (int i = 0; i < nq; i++) {
            float *row = S + (size_t)i * nk;
            const int vis = off + i0 + i + 1;
            float mx;
            const float sum = st_softmax_inplace(row, vis, &mx);
            for (int j = vis; j < nk; j++) row[j] = 0.0f;
            if (lse) lse[i0 + i] = mx + logf(sum);
        }
        st_sgemm('N', 'N', nq, D, nk, 1.0f, S, nk, v, kv_stride, 0.0f,
                 out + (size_t)i0 * out_stride, out_stride);
    }
}

void st_attention_head_backward(float *dq, float *dk, float *dv, const float *dout,
                                const float *q, const float *k, const float *v, const float *out,
                                const float *lse, int Tq, int Tk, int D, int q_stride,
                                int kv_stride, int out_stride, float *scratch) {
    const float scale = 1.0f / sqrtf((float)D);
    const int off = Tk - Tq;
    for (int i0 = 0; i0 < Tq; i0 += QB) {
        const int nq = Tq - i0 < QB ? Tq - i0 : QB;
        const int nk = off + i0 + nq;
        float *P = scratch, *dP = scratch + (size_t)nq * nk;
        const float *qb = q + (size_t)i0 * q_stride;
        const float *dob = dout + (size_t)i0 * out_stride;
        /* P = exp(scale q kᵀ - lse), causal */
        st_sgemm('N', 'T', nq, nk, D, scale, qb, q_stride, k, kv_stride, 0.0f, P, nk);
        for (int i = 0; i < nq; i++) {
            float *row = P + (size_t)i * nk;
            const int vis = off + i0 + i + 1;
            const float l = lse[i0 + i];
#pragma omp simd
            for (int j = 0; j < vis; j++) row[j] = st_fast_expf(row[j] - l);
            for (int j = vis; j < nk; j++) row[j] = 0.0f;
        }
        /* dV += Pᵀ dO ; dP = dO Vᵀ */
        st_sgemm('T', 'N', nk, D, nq, 1.0f, P, nk, dob, out_stride, 1.0f, dv, kv_stride);
        st_sgemm('N', 'T', nq, nk, D, 1.0f, dob, out_stride, v, kv_stride, 0.0f, dP, nk);
        /* dS = P ∘ (dP - rowsum(dO ∘ O)) * scale */
        for (int i = 0; i < nq; i++) {
            const float *o = out + (size_t)(i0 + i) * out_stride, *g = dob + (size_t)i * out_stride;
            float delta = 0.0f;
            for (int d = 0; d < D; d++) delta += o[d] * g[d];
            float *pr = P + (size_t)i * nk, *dr = dP + (size_t)i * nk;
            for (int j = 0; j < nk; j++) dr[j] = pr[j] * (dr[j] - delta) * scale;
        }
        /* dQ += dS K ; dK += dSᵀ Q */
        st_sgemm('N', 'N', nq, D, nk, 1.0f, dP, nk, k, kv_stride, 1.0f,
                 dq + (size_t)i0 * q_stride, q_stride);
        st_sgemm('T', 'N', nk, D, nq, 1.0f, dP, nk, qb, q_stride, 1.0f, dk, kv_stride);
    }
}

void st_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int H, int KV,
                          int D, float *scratch) {
    if (st_matmul_get_precision() == ST_MATMUL_BF16) {
        st_attention_forward_bf16(out, lse, qkv, B, T, H, KV, D, scratch);
        return;
    }
    const int W = (H + 2 * KV) * D, rep = H / KV;
    const size_t per = st_attention_batch_scratch_floats(T, D);
#pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H, g = h / rep;
        const float *base = qkv + (size_t)b * T * W;
        st_attention_head_forward(out + (size_t)b * T * H * D + (size_t)h * D,
                                  lse + (size_t)bh * T, base + (size_t)h * D,
                                  base + (size_t)(H + g) * D, base + (size_t)(H + KV + g) * D, T,
                                  T, D, W, W, H * D, scratch + per * omp_get_thread_num());
    }
}

void st_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                           const float *lse, int B, int T, int H, int KV, int D, float *scratch) {
    if (st_matmul_get_precision() == ST_MATMUL_BF16) {
        st_attention_backward_bf16(dqkv, dout, qkv, out, lse, B, T, H, KV, D, scratch);
        return;
    }
    const int W = (H + 2 * KV) * D, rep = H / KV;
    const size_t per = st_attention_batch_scratch_floats(T, D);
    /* one task per (b, kv head): the rep query heads sharing it accumulate into the same dk/dv */
#pragma omp parallel for schedule(dynamic)
    for (int bg = 0; bg < B * KV; bg++) {
        const int b = bg / KV, g = bg % KV;
        const float *base = qkv + (size_t)b * T * W;
        float *dbase = dqkv + (size_t)b * T * W;
        for (int h = g * rep; h < (g + 1) * rep; h++)
            st_attention_head_backward(
                dbase + (size_t)h * D, dbase + (size_t)(H + g) * D,
                dbase + (size_t)(H + KV + g) * D, dout + (size_t)b * T * H * D + (size_t)h * D,
                base + (size_t)h * D, base + (size_t)(H + g) * D,
                base + (size_t)(H + KV + g) * D, out + (size_t)b * T * H * D + (size_t)h * D,
                lse + ((size_t)b * H + h) * T, T, T, D, W, W, H * D,
                scratch + per * omp_get_thread_num());
    }
}
