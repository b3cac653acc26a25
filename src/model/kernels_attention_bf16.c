/* kernels_attention_bf16.c - the batched causal attention of kernels_attention.c with its
 * products in bf16 (operands rounded to bf16 round-to-nearest-even, fp32 accumulation), used
 * in ST_MATMUL_BF16 mode as PyTorch's CPU autocast does for matmul/bmm; scores, softmax, the
 * log-sum-exp and dS = P∘(dP − rowsum(dO∘O)) stay fp32. Same blocking and flash-style
 * recomputation as the fp32 path (QB query rows per block, P rebuilt from the saved lse).
 *
 * The products use one small GEMM, C[M,N] (+)= alpha · A[M,K] · B[K,N], with A bf16 row-major
 * (k contiguous) and B in the "VNNI" pair layout B2[k/2][n][2] that AVX512_BF16's VDPBF16PS
 * consumes (Intel SDM, VDPBF16PS: each fp32 lane += a0·b0 + a1·b1 over a bf16 pair). The
 * AVX-512 micro-kernel (6 rows x 64 columns, masked column tails) is chosen at run time when
 * the CPU has avx512_bf16; elsewhere a portable loop computes the same products (bf16-exact
 * operands, fp32 accumulation, different summation order).
 * The GEMM reads A's bf16 pairs through two strides, so dK += dSᵀ·Q and dV += Pᵀ·dO take
 * their transposed A straight from the row-pair interleave of dS / P that the B side of VNNI
 * needs anyway: no transposes, and dK/dV accumulate in place in dqkv (one task per KV group). */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "model/fastmath.h"
#include "model/matmul_bf16.h"
#include "safetune/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define ST_HAVE_X86 1
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#else
#define ST_HAVE_X86 0
#endif

enum { QB = 64, MR = 6, NV = 4 };

static int g_isa = -1; /* 1: AVX512_BF16 kernels, 0: portable; decided before the threads run */

static inline uint16_t bf16_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bf16_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline size_t up2(size_t n) { return (n + 1) & ~(size_t)1; }
static inline size_t up32(size_t n) { return (n + 31) & ~(size_t)31; }

size_t st_attention_batch_scratch_floats(int T, int D) {
    const size_t t = (size_t)(T > 0 ? T : 1), d = (size_t)(D > 0 ? D : 1);
    const size_t t2 = up2(t), d2 = up2(d);
    /* fp32: P and dP [QB, T] */
    const size_t f32 = 2 * up32(QB * t);
    /* bf16 (backward, the larger): K and V pair-packed along d, K along t; Q and dO blocks
     * row-major and row-pair packed; P and dS row-pair interleaved, dS row-major */
    const size_t b16 = 3 * up32(d2 * t2) + 4 * up32(QB * d2) + 3 * up32(QB * t2);
    const size_t bf = f32 + (b16 + 1) / 2 + 16;
    const size_t f = st_attention_scratch_floats(T);
    return bf > f ? bf : f;
}

/* ---- the GEMM ---------------------------------------------------------------------------- */

/* Causal trimming of a product (every skipped term is an exact zero of the masked softmax, so
 * results are unchanged): CZ_N: row i of C needs only columns j < off + i + 1 (the others are
 * left unwritten, and stale: callers read no masked score); CZ_KE: row i's sum stops at
 * k < off + i + 1; CZ_KS: row i's sum starts at k >= i - off. k counts elements (not pairs). */
enum { CZ_NONE = 0, CZ_N = 1, CZ_KE = 2, CZ_KS = 3 };

/* Portable: C = alpha·A·B (+ C when acc). A's k-pair kp of row i (two adjacent bf16) is at
 * A + i·a_rs + kp·a_ks: row-major A [M, 2Kp] has (a_rs, a_ks) = (lda, 2); a pair-packed Aᵀ
 * X2[kp][M][2] has (2, 2M). B2 [Kp][N][2] (ldb >= 2N). cz/off: the causal trimming above. */
static void bgemm_ref(int M, int N, int Kp, float alpha, const uint16_t *A, int a_rs, int a_ks,
                      const uint16_t *B, int ldb, float *C, int ldc, int acc, int cz, int off) {
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        int n1 = N, k0 = 0, k1 = Kp;
        if (cz == CZ_N && off + i + 1 < n1) n1 = off + i + 1;
        if (cz == CZ_KE && (off + i + 2) / 2 < k1) k1 = (off + i + 2) / 2;
        if (cz == CZ_KS && i - off > 0) k0 = (i - off) / 2;
        for (int j = 0; j < n1; j++) {
            float s = 0.0f;
            for (int kp = k0; kp < k1; kp++) {
                const uint16_t *a = A + (size_t)i * a_rs + (size_t)kp * a_ks;
                const uint16_t *b = B + (size_t)kp * ldb + 2 * j;
                s += bf16_f32(a[0]) * bf16_f32(b[0]) + bf16_f32(a[1]) * bf16_f32(b[1]);
            }
            c[j] = acc ? c[j] + alpha * s : alpha * s;
        }
    }
}

#if ST_HAVE_X86
static inline BF16_TARGET __attribute__((always_inline)) void
ukernel(const int mr, const int nv, __mmask16 last, int Kp, float alpha, const uint16_t *A,
        int a_rs, int a_ks, const uint16_t *B, int ldb, float *C, int ldc, int acc) {
    __m512 c[MR][NV];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[r][v] = _mm512_setzero_ps();
    for (int kp = 0; kp < Kp; kp++) {
        const uint16_t *bp = B + (size_t)kp * ldb;
        __m512i b[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            b[v] = v >= nv       ? _mm512_setzero_si512()
                   : v == nv - 1 ? _mm512_maskz_loadu_epi32(last, bp + 32 * v)
                                 : _mm512_loadu_si512(bp + 32 * v);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            if (r >= mr) break;
            int32_t ap;
            memcpy(&ap, A + (size_t)r * a_rs + (size_t)kp * a_ks, 4);
            const __m512i a = _mm512_set1_epi32(ap);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                if (v < nv) c[r][v] = _mm512_dpbf16_ps(c[r][v], (__m512bh)a, (__m512bh)b[v]);
        }
    }
    const __m512 al = _mm512_set1_ps(alpha);
    const int scale = alpha != 1.0f;
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if (r >= mr) break;
        float *cr = C + (size_t)r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            if (v >= nv) break;
            const __mmask16 m = v == nv - 1 ? last : (__mmask16)0xffff;
            __m512 x = scale ? _mm512_mul_ps(c[r][v], al) : c[r][v];
            if (acc) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, cr + 16 * v));
            _mm512_mask_storeu_ps(cr + 16 * v, m, x);
        }
    }
}

#define UK(mr_, nv_)                                                                         \
    ukernel(mr_, nv_, last, k1 - k0, alpha, A + (size_t)i0 * a_rs + (size_t)k0 * a_ks, a_rs,   \
            a_ks, B + (size_t)k0 * ldb + 2 * (size_t)j0, ldb, C + (size_t)i0 * ldc + j0, ldc, acc)

static BF16_TARGET void bgemm_avx512(int M, int N, int Kp, float alpha, const uint16_t *A,
                                     int a_rs, int a_ks, const uint16_t *B, int ldb, float *C,
                                     int ldc, int acc, int cz, int off) {
    for (int j0 = 0; j0 < N; j0 += 16 * NV) {
        const int nb = N - j0 < 16 * NV ? N - j0 : 16 * NV;
        for (int i0 = 0; i0 < M; i0 += MR) {
            const int mr = M - i0 < MR ? M - i0 : MR;
            int n = nb, k0 = 0, k1 = Kp;
            if (cz == CZ_N) { /* the group's last row sees columns < off + i0 + mr */
                const int need = off + i0 + mr - j0;
                if (need <= 0) continue;
                if (need < n) n = need;
            } else if (cz == CZ_KE) {
                const int k = (off + i0 + mr + 1) / 2;
                if (k < k1) k1 = k;
            } else if (cz == CZ_KS && i0 - off > 0) {
                k0 = (i0 - off) / 2;
                if (k0 > k1) k0 = k1;
            }
            const int nv = (n + 15) / 16;
            const __mmask16 last = (__mmask16)(n - 16 * (nv - 1) == 16 ? 0xffff
                                                                     : (1u << (n - 16 * (nv - 1))) - 1);
            switch (mr * 8 + nv) {
            case 6 * 8 + 4: UK(6, 4); break;
            case 6 * 8 + 3: UK(6, 3); break;
            case 6 * 8 + 2: UK(6, 2); break;
            case 6 * 8 + 1: UK(6, 1); break;
            case 5 * 8 + 4: UK(5, 4); break;
            case 5 * 8 + 3: UK(5, 3); break;
            case 5 * 8 + 2: UK(5, 2); break;
            case 5 * 8 + 1: UK(5, 1); break;
            case 4 * 8 + 4: UK(4, 4); break;
            case 4 * 8 + 3: UK(4, 3); break;
            case 4 * 8 + 2: UK(4, 2); break;
            case 4 * 8 + 1: UK(4, 1); break;
            case 3 * 8 + 4: UK(3, 4); break;
            case 3 * 8 + 3: UK(3, 3); break;
            case 3 * 8 + 2: UK(3, 2); break;
            case 3 * 8 + 1: UK(3, 1); break;
            case 2 * 8 + 4: UK(2, 4); break;
            case 2 * 8 + 3: UK(2, 3); break;
            case 2 * 8 + 2: UK(2, 2); break;
            case 2 * 8 + 1: UK(2, 1); break;
            case 1 * 8 + 4: UK(1, 4); break;
            case 1 * 8 + 3: UK(1, 3); break;
            case 1 * 8 + 2: UK(1, 2); break;
            default: UK(1, 1); break;
            }
        }
    }
}
#undef UK
#endif


static int use_avx512(void) {
    if (g_isa < 0) {
#if ST_HAVE_X86
        __builtin_cpu_init();
        g_isa = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
        g_isa = 0;
#endif
    }
    return g_isa;
}

void st_attention_bf16_force_portable(int on) { g_isa = on ? 0 : -1; }

static void bgemm(int M, int N, int Kp, float alpha, const uint16_t *A, int a_rs, int a_ks,
                  const uint16_t *B, int ldb, float *C, int ldc, int acc, int cz, int off) {
    if (M <= 0 || N <= 0) return;
#if ST_HAVE_X86
    if (use_avx512()) {
        bgemm_avx512(M, N, Kp, alpha, A, a_rs, a_ks, B, ldb, C, ldc, acc, cz, off);
        return;
    }
#endif
    bgemm_ref(M, N, Kp, alpha, A, a_rs, a_ks, B, ldb, C, ldc, acc, cz, off);
}

/* ---- fp32 -> bf16 conversion (RNE), vectorised with AVX512_BF16 where present --------- */

#if ST_HAVE_X86
static BF16_TARGET void cvt_row_avx(uint16_t *dst, const float *src, int n) {
    int j = 0;
    for (; j + 16 <= n; j += 16)
        _mm256_storeu_si256((__m256i *)(dst + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + j)));
    if (j < n) {
        const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        const __m256i v = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + j));
        _mm256_mask_storeu_epi16(dst + j, m, v);
    }
}

static BF16_TARGET void cvt_interleave_avx(uint16_t *dst, const float *r0, const float *r1, int n) {
    for (int j = 0; j < n; j += 16) {
        const __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
        const __m256i a = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, r0 + j));
        const __m256i b = r1 ? (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, r1 + j))
                             : _mm256_setzero_si256();
        const __m512i w = _mm512_or_si512(_mm512_cvtepu16_epi32(a),
                                          _mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
        _mm512_mask_storeu_epi32(dst + 2 * j, m, w);
    }
}
#endif

/* dst[j] = bf16(src[j]), j < n */
static void cvt_row(uint16_t *dst, const float *src, int n) {
#if ST_HAVE_X86
    if (g_isa == 1) {
        cvt_row_avx(dst, src, n);
        return;
    }
#endif
    for (int j = 0; j < n; j++) dst[j] = bf16_rne(src[j]);
}

/* dst[2j] = bf16(r0[j]), dst[2j+1] = bf16(r1[j]) (0 when r1 is NULL), j < n */
static void cvt_interleave(uint16_t *dst, const float *r0, const float *r1, int n) {
#if ST_HAVE_X86
    if (g_isa == 1) {
        cvt_interleave_avx(dst, r0, r1, n);
        return;
    }
#endif
    for (int j = 0; j < n; j++) {
        dst[2 * j] = bf16_rne(r0[j]);
        dst[2 * j + 1] = r1 ? bf16_rne(r1[j]) : 0;
    }
}

#if ST_HAVE_X86
static BF16_TARGET void cvt_row_scaled_avx(uint16_t *dst, const float *src, int n, float k) {
    const __m512 kv = _mm512_set1_ps(k);
    int j = 0;
    for (; j + 16 <= n; j += 16)
        _mm256_storeu_si256((__m256i *)(dst + j),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(src + j), kv)));
    if (j < n) {
        const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        const __m256i v = (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + j), kv));
        _mm256_mask_storeu_epi16(dst + j, m, v);
    }
}
#endif

/* dst[j] = bf16(src[j] · k), j < n (the product rounded to fp32 first, as src[j] *= k would) */
static void cvt_row_scaled(uint16_t *dst, const float *src, int n, float k) {
#if ST_HAVE_X86
    if (g_isa == 1) {
        cvt_row_scaled_avx(dst, src, n, k);
        return;
    }
#endif
    for (int j = 0; j < n; j++) dst[j] = bf16_rne(src[j] * k);
}

#if ST_HAVE_X86
/* st_fast_expf (fastmath.h) on 16 lanes: the same IEEE operations in the same order (no FMA,
 * the clamps as the scalar ternaries, NaN passing through), so every lane is bit-identical to
 * the scalar function and to GCC's vectorisation of it. */
static inline BF16_TARGET __attribute__((always_inline)) __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x); /* x < -87 ? -87 : x */
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), x);  /* x > 88 ? 88 : x */
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 t = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), magic);
    const __m512 n = _mm512_sub_ps(t, magic);
    const __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693145751953125f))),
                                   _mm512_mul_ps(n, _mm512_set1_ps(1.428606765330187045e-06f)));
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(0.5f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
    const __m512i sb = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32((int)(127u - 0x4b400000u))), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(sb));
}

static inline __mmask16 tailmask(int left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* st_softmax_exp with masked tails (the vectorised loop left a scalar exp per tail element). The
 * sum keeps the order of GCC's `omp simd reduction` code for st_softmax_exp: 16 lane sums over the
 * full vectors, the tail added to lane 0 in order, then lanes 0..15 added in order to 0, so
 * the result is bit-identical to st_softmax_exp's. */
static BF16_TARGET float softmax_exp_avx(float *row, int n, float *max) {
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n; j += 16) {
        const __mmask16 m = tailmask(n - j);
        mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, row + j));
    }
    const float mx = _mm512_reduce_max_ps(mv);
    const __m512 mxv = _mm512_set1_ps(mx);
    __m512 acc = _mm512_setzero_ps();
    const int nf = n & ~15;
    for (int j = 0; j < nf; j += 16) {
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(row + j), mxv));
        _mm512_storeu_ps(row + j, e);
        acc = _mm512_add_ps(acc, e);
    }
    float lanes[16] __attribute__((aligned(64)));
    _mm512_store_ps(lanes, acc);
    if (nf < n) {
        const __mmask16 m = tailmask(n - nf);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + nf), mxv));
        _mm512_mask_storeu_ps(row + nf, m, e);
        float tl[16] __attribute__((aligned(64)));
        _mm512_store_ps(tl, e);
        for (int j = 0; j < n - nf; j++) lanes[0] += tl[j];
    }
    float sum = 0.0f;
    for (int l = 0; l < 16; l++) sum += lanes[l];
    *max = mx;
    return sum;
}

/* dst[j] = bf16(src[j] · k) for j < vis, 0 for vis <= j < n2 */
static BF16_TARGET void cvt_row_scaled_pad_avx(uint16_t *dst, const float *src, int vis, int n2,
                                               float k) {
    const __m512 kv = _mm512_set1_ps(k);
    for (int j = 0; j < n2; j += 16) {
        const __mmask16 m = tailmask(n2 - j), mv = j < vis ? tailmask(vis - j) : 0;
        const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(mv, src + j), kv);
        _mm256_mask_storeu_epi16(dst + j, m, (__m256i)_mm512_cvtneps_pbh(x));
    }
}

/* row[j] = st_fast_expf(row[j] - l) for j < vis, 0 for vis <= j < n */
static BF16_TARGET void exp_row_avx(float *row, int vis, int n, float l) {
    const __m512 lv = _mm512_set1_ps(l);
    for (int j = 0; j < n; j += 16) {
        const __mmask16 m = tailmask(n - j), mv = j < vis ? tailmask(vis - j) : 0;
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mv, row + j), lv));
        _mm512_mask_storeu_ps(row + j, m, _mm512_maskz_mov_ps(mv, e));
    }
}

/* dr[j] = pr[j] · (dr[j] − delta) · scale for j < vis, 0 for vis <= j < n; sb[j] = bf16(dr[j]),
 * j < n, and sb[n] = 0 when n is odd (its pair padding) */
static BF16_TARGET void ds_row_avx(float *dr, uint16_t *sb, const float *pr, int vis, int n,
                                   float delta, float scale) {
    const __m512 dv = _mm512_set1_ps(delta), sv = _mm512_set1_ps(scale);
    for (int j = 0; j < n; j += 16) {
        const __mmask16 m = tailmask(n - j), mv = j < vis ? tailmask(vis - j) : 0;
        const __m512 x = _mm512_mul_ps(
            _mm512_mul_ps(_mm512_maskz_loadu_ps(mv, pr + j),
                          _mm512_sub_ps(_mm512_maskz_loadu_ps(mv, dr + j), dv)),
            sv);
        const __m512 y = _mm512_maskz_mov_ps(mv, x);
        _mm512_mask_storeu_ps(dr + j, m, y);
        _mm256_mask_storeu_epi16(sb + j, m, (__m256i)_mm512_cvtneps_pbh(y));
    }
    if (n & 1) sb[n] = 0;
}
#endif

/* ---- packing (every pad element written as 0) ------------------------------------------- */

/* x [n, D] (stride ld) -> row-major bf16 [n, D2] (D2 = D rounded up to even). */
static void pack_rows(uint16_t *dst, const float *x, int n, int D, int ld) {
    const int D2 = (int)up2((size_t)D);
    for (int i = 0; i < n; i++) {
        uint16_t *o = dst + (size_t)i * D2;
        cvt_row(o, x + (size_t)i * ld, D);
        if (D2 > D) o[D] = 0;
    }
}

/* x [n, D] (stride ld) -> pairs along d: dst[d/2][n][2] (B operand with k = d, columns = n).
 * tmp: D2 bf16. */
static void pack_pairs_d(uint16_t *dst, const float *x, int n, int D, int ld, uint16_t *tmp) {
    const int D2 = (int)up2((size_t)D);
    tmp[D2 - 1] = 0;
    uint32_t *d32 = (uint32_t *)dst; /* dst is 64-byte aligned scratch */
    for (int i = 0; i < n; i++) {
        cvt_row(tmp, x + (size_t)i * ld, D);
        for (int p = 0; p < D2 / 2; p++) {
            uint32_t v;
            memcpy(&v, tmp + 2 * p, 4);
            d32[(size_t)p * n + i] = v;
        }
    }
}

/* x [n, D] (stride ld) -> pairs along rows: dst[i/2][D][2] for i < up2(n) (B operand with k =
 * row, columns = d). */
static void pack_pairs_rows(uint16_t *dst, const float *x, int n, int D, int ld) {
    for (int i = 0; i < n; i += 2)
        cvt_interleave(dst + (size_t)(i / 2) * 2 * D, x + (size_t)i * ld,
                       i + 1 < n ? x + (size_t)(i + 1) * ld : NULL, D);
}

/* ---- forward ------------------------------------------------------------------------------ */

typedef struct {
    int T, D, D2, T2, W, HD, H, KV;
    float scale;
} geom;

static geom make_geom(int T, int H, int KV, int D) {
    geom g = {T, D, (int)up2((size_t)D), (int)up2((size_t)T), (H + 2 * KV) * D, H * D, H, KV,
              1.0f / sqrtf((float)D)};
    return g;
}

/* One (sequence, KV group): the H/KV query heads sharing K/V. */
static void fwd_group(const geom *G, float *out, float *lse, const float *base, int g,
                      float *scratch) {
    const int T = G->T, D = G->D, D2 = G->D2, W = G->W, rep = G->H / G->KV;
    float *S = scratch;
    uint16_t *Kd = (uint16_t *)(scratch + up32((size_t)QB * T));
    uint16_t *Vt = Kd + up32((size_t)D2 * G->T2);
    uint16_t *Qb = Vt + up32((size_t)D2 * G->T2);
    uint16_t *Pb = Qb + up32((size_t)QB * D2);
    const float *k = base + (size_t)(G->H + g) * D, *v = base + (size_t)(G->H + G->KV + g) * D;
    pack_pairs_d(Kd, k, T, D, W, Qb);
    pack_pairs_rows(Vt, v, T, D, W);
    for (int h = g * rep; h < (g + 1) * rep; h++) {
        const float *q = base + (size_t)h * D;
        float *o = out + (size_t)h * D, *ls = lse + (size_t)h * T;
        for (int i0 = 0; i0 < T; i0 += QB) {
            const int nq = T - i0 < QB ? T - i0 : QB, nk = i0 + nq, nk2 = (int)up2((size_t)nk);
            pack_rows(Qb, q + (size_t)i0 * W, nq, D, W);
            bgemm(nq, nk, D2 / 2, G->scale, Qb, D2, 2, Kd, 2 * T, S, nk, 0, CZ_N, i0);
            for (int i = 0; i < nq; i++) {
                float *row = S + (size_t)i * nk;
                uint16_t *pr = Pb + (size_t)i * nk2;
                const int vis = i0 + i + 1;
                float mx;
#if ST_HAVE_X86
                if (g_isa == 1) {
                    const float sum = softmax_exp_avx(row, vis, &mx);
                    cvt_row_scaled_pad_avx(pr, row, vis, nk2, 1.0f / sum);
                    ls[i0 + i] = mx + logf(sum);
                    continue;
                }
#endif
                const float sum = st_softmax_exp(row, vis, &mx);
                cvt_row_scaled(pr, row, vis, 1.0f / sum); /* P = e / Σe, rounded once */
                for (int j = vis; j < nk2; j++) pr[j] = 0;
                ls[i0 + i] = mx + logf(sum);
            }
            bgemm(nq, D, nk2 / 2, 1.0f, Pb, nk2, 2, Vt, 2 * D, o + (size_t)i0 * G->HD, G->HD, 0,
                  CZ_KE, i0);
        }
    }
}

void st_attention_forward_bf16(float *out, float *lse, const float *qkv, int B, int T, int H,
                               int KV, int D, float *scratch) {
    const geom G = make_geom(T, H, KV, D);
    const size_t per = st_attention_batch_scratch_floats(T, D);
    (void)use_avx512(); /* decided before the threads read it */
#pragma omp parallel for schedule(dynamic)
    for (int bg = 0; bg < B * KV; bg++) {
        const int b = bg / KV, g = bg % KV;
        fwd_group(&G, out + (size_t)b * T * G.HD, lse + (size_t)b * H * T,
                  qkv + (size_t)b * T * G.W, g, scratch + per * omp_get_thread_num());
    }
}

/* ---- backward ----------------------------------------------------------------------------- */

static void bwd_group(const geom *G, float *dbase, const float *dout, const float *base,
                      const float *out, const float *lse, int g, float *scratch) {
    const int T = G->T, D = G->D, D2 = G->D2, T2 = G->T2, W = G->W, HD = G->HD;
    const int rep = G->H / G->KV;
    float *P = scratch, *dP = P + up32((size_t)QB * T);
    uint16_t *Kd = (uint16_t *)(dP + up32((size_t)QB * T));
    uint16_t *Vd = Kd + up32((size_t)D2 * T2), *Kt = Vd + up32((size_t)D2 * T2);
    uint16_t *Qb = Kt + up32((size_t)D2 * T2), *dOb = Qb + up32((size_t)QB * D2);
    uint16_t *Qp = dOb + up32((size_t)QB * D2), *dOp = Qp + up32((size_t)QB * D2);
    uint16_t *Pv = dOp + up32((size_t)QB * D2), *dSv = Pv + up32((size_t)QB * T2);
    uint16_t *dSb = dSv + up32((size_t)QB * T2);
    const float *k = base + (size_t)(G->H + g) * D, *v = base + (size_t)(G->H + G->KV + g) * D;
    float *dk = dbase + (size_t)(G->H + g) * D, *dv = dbase + (size_t)(G->H + G->KV + g) * D;
    pack_pairs_d(Kd, k, T, D, W, Qb);
    pack_pairs_d(Vd, v, T, D, W, Qb);
    pack_pairs_rows(Kt, k, T, D, W);
    for (int h = g * rep; h < (g + 1) * rep; h++) {
        const float *q = base + (size_t)h * D, *o = out + (size_t)h * D;
        const float *dO = dout + (size_t)h * D, *ls = lse + (size_t)h * T;
        float *dq = dbase + (size_t)h * D;
        for (int i0 = 0; i0 < T; i0 += QB) {
            const int nq = T - i0 < QB ? T - i0 : QB, nq2 = (int)up2((size_t)nq);
            const int nk = i0 + nq, nk2 = (int)up2((size_t)nk);
            const float *qb = q + (size_t)i0 * W, *dob = dO + (size_t)i0 * HD;
            pack_rows(Qb, qb, nq, D, W);
            pack_rows(dOb, dob, nq, D, HD);
            pack_pairs_rows(Qp, qb, nq, D, W);
            pack_pairs_rows(dOp, dob, nq, D, HD);
            /* P = exp(scale q kᵀ - lse), causal */
            bgemm(nq, nk, D2 / 2, G->scale, Qb, D2, 2, Kd, 2 * T, P, nk, 0, CZ_N, i0);
            for (int i = 0; i < nq; i++) {
                float *row = P + (size_t)i * nk;
                const int vis = i0 + i + 1;
                const float l = ls[i0 + i];
#if ST_HAVE_X86
                if (g_isa == 1)
                    exp_row_avx(row, vis, nk, l);
                else
#endif
                {
#pragma omp simd
                    for (int j = 0; j < vis; j++) row[j] = st_fast_expf(row[j] - l);
                    for (int j = vis; j < nk; j++) row[j] = 0.0f;
                }
                if (i & 1) /* a finished row pair: its interleave while both rows are hot */
                    cvt_interleave(Pv + (size_t)(i / 2) * 2 * nk, row - nk, row, nk);
            }
            if (nq & 1) cvt_interleave(Pv + (size_t)(nq / 2) * 2 * nk, P + (size_t)(nq - 1) * nk, NULL, nk);
            /* dV += Pᵀ dO (Pᵀ read from P's row-pair interleave) ; dP = dO Vᵀ */
            bgemm(nk, D, nq2 / 2, 1.0f, Pv, 2, 2 * nk, dOp, 2 * D, dv, W, 1, CZ_KS, i0);
            bgemm(nq, nk, D2 / 2, 1.0f, dOb, D2, 2, Vd, 2 * T, dP, nk, 0, CZ_N, i0);
            /* dS = P ∘ (dP - rowsum(dO ∘ O)) * scale */
            for (int i = 0; i < nq; i++) {
                const float *orow = o + (size_t)(i0 + i) * HD, *grow = dob + (size_t)i * HD;
                float delta = 0.0f;
#pragma omp simd reduction(+ : delta)
                for (int d = 0; d < D; d++) delta += orow[d] * grow[d];
                float *pr = P + (size_t)i * nk, *dr = dP + (size_t)i * nk;
                uint16_t *sb = dSb + (size_t)i * nk2;
                const int vis = i0 + i + 1; /* dP past it is unwritten (CZ_N) */
#if ST_HAVE_X86
                if (g_isa == 1)
                    ds_row_avx(dr, sb, pr, vis, nk, delta, G->scale);
                else
#endif
                {
#pragma omp simd
                    for (int j = 0; j < vis; j++) dr[j] = pr[j] * (dr[j] - delta) * G->scale;
                    for (int j = vis; j < nk; j++) dr[j] = 0.0f;
                    cvt_row(sb, dr, nk);
                    if (nk2 > nk) sb[nk] = 0;
                }
                if (i & 1) cvt_interleave(dSv + (size_t)(i / 2) * 2 * nk, dr - nk, dr, nk);
            }
            if (nq & 1) cvt_interleave(dSv + (size_t)(nq / 2) * 2 * nk, dP + (size_t)(nq - 1) * nk, NULL, nk);
            /* dQ += dS K ; dK += dSᵀ Q */
            bgemm(nq, D, nk2 / 2, 1.0f, dSb, nk2, 2, Kt, 2 * D, dq + (size_t)i0 * W, W, 1, CZ_KE,
                  i0);
            bgemm(nk, D, nq2 / 2, 1.0f, dSv, 2, 2 * nk, Qp, 2 * D, dk, W, 1, CZ_KS, i0);
        }
    }
}

void st_attention_backward_bf16(float *dqkv, const float *dout, const float *qkv,
                                const float *out, const float *lse, int B, int T, int H, int KV,
                                int D, float *scratch) {
    const geom G = make_geom(T, H, KV, D);
    const size_t per = st_attention_batch_scratch_floats(T, D);
    (void)use_avx512();
#pragma omp parallel for schedule(dynamic)
    for (int bg = 0; bg < B * KV; bg++) {
        const int b = bg / KV, g = bg % KV;
        bwd_group(&G, dqkv + (size_t)b * T * G.W, dout + (size_t)b * T * G.HD,
                  qkv + (size_t)b * T * G.W, out + (size_t)b * T * G.HD, lse + (size_t)b * H * T,
                  g, scratch + per * omp_get_thread_num());
    }
}
