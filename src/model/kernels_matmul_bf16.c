/* kernels_matmul_bf16.c - the three products of a linear layer through cached oneDNN matmul
 * primitives, in fp32 or bf16 (operands rounded to bf16 round-to-nearest-even, fp32
 * accumulation and fp32 destination):
 *   FWD  out[M,N]  = in[M,K] · W[N,K]ᵀ          (W read through strides, no copy)
 *   DIN  din[M,K] += dout[M,N] · W[N,K]          (sum post-op accumulates into fp32)
 *   DW   dw[N,K]  += dout[M,N]ᵀ · in[M,K]        (dout read transposed through strides)
 * The matmul primitive beats dnnl_sgemm on the NN/TN backward shapes here (~100 vs ~70
 * GFLOP/s per core, fp32) and is oneDNN's bf16 path (avx512_bf16 / AMX where exposed).
 * bf16 backward works on column chunks of dout so the bf16 copy stays small for the lm_head
 * ([tokens, vocab]). Source: oneDNN developer guide, "Matrix Multiplication" primitive and
 * "Primitive Attributes: Post-ops" (sum), C API v2.x. */
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul_bf16.h"
#include "safetune/base.h"

enum { CACHE = 96 };
/* bf16 backward: columns of dout per chunk so that a chunk holds at most this many elements */
static size_t g_chunk_elems = (size_t)16 << 20;

typedef struct {
    int kind, bf16, M, K, N, ld; /* ld: row stride of the DIN / DW src (dout), 0 = N */
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src, wei, dst;
} entry;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t g_eng;
static dnnl_stream_t g_stream;
static entry g_cache[CACHE];
static int g_n, g_next, g_broken;
static uint16_t *g_a, *g_b, *g_c; /* bf16 scratch: activations / weights / second activations */
static size_t g_acap, g_bcap, g_ccap;

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* 16 lanes per VCVTNEPS2BF16 (round to nearest even, NaN stays NaN; denormal inputs flush
 * to zero, which no weight or activation here relies on) */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
to_bf16_avx512(uint16_t *dst, const float *src, size_t n) {
    const size_t nb = n / 16;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t b = 0; b < nb; b++)
        _mm256_storeu_si256((__m256i *)(dst + 16 * b),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + 16 * b)));
    const size_t j = nb * 16;
    if (j < n) {
        const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        _mm256_mask_storeu_epi16(dst + j, m,
                                 (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + j)));
    }
}
/* one thread: the row converter of fused kernels */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
to_bf16_avx512_serial(uint16_t *dst, const float *src, size_t n) {
    size_t j = 0;
    for (; j + 16 <= n; j += 16)
        _mm256_storeu_si256((__m256i *)(dst + j),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + j)));
    if (j < n) {
        const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        _mm256_mask_storeu_epi16(dst + j, m,
                                 (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + j)));
    }
}
#define ST_MM_X86 1
#else
#define ST_MM_X86 0
#endif

#if ST_MM_X86
static int g_isa = -1; /* 1: AVX512_BF16 conversion */

/* 1 when the CPU converts fp32 -> bf16 in AVX512_BF16 (detected once; a benign race: every
 * thread computes the same value). */
static int has_bf16_isa(void) {
    if (g_isa < 0) {
        __builtin_cpu_init();
        g_isa = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl");
    }
    return g_isa;
}
#endif

static inline uint16_t bf16_rne1(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static void to_bf16_scalar(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_rne1(src[i]);
}

static void to_bf16(uint16_t *dst, const float *src, size_t n) {
#if ST_MM_X86
    if (has_bf16_isa()) {
        to_bf16_avx512(dst, src, n);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = bf16_rne1(src[i]);
}

/* Memory descriptors of one product; dims follow oneDNN's src [m,k] · wei [k,n] = dst [m,n]. */
static int make_descs(entry *e) {
    const dnnl_data_type_t dt = e->bf16 ? dnnl_bf16 : dnnl_f32;
    const int64_t M = e->M, K = e->K, N = e->N, ld = e->ld ? e->ld : e->N;
    dnnl_dims_t sd, ss, wd, ws, dd;
    switch (e->kind) {
    case ST_MM_FWD: /* [M,K] · W[N,K]ᵀ */
        sd[0] = M, sd[1] = K, ss[0] = K, ss[1] = 1;
        wd[0] = K, wd[1] = N, ws[0] = 1, ws[1] = K;
        dd[0] = M, dd[1] = N;
        break;
    case ST_MM_DIN: /* dout[M,N] · W[N,K] */
        sd[0] = M, sd[1] = N, ss[0] = ld, ss[1] = 1;
        wd[0] = N, wd[1] = K, ws[0] = K, ws[1] = 1;
        dd[0] = M, dd[1] = K;
        break;
    case ST_MM_DINW: /* as DIN, written */
        sd[0] = M, sd[1] = N, ss[0] = ld, ss[1] = 1;
        wd[0] = N, wd[1] = K, ws[0] = K, ws[1] = 1;
        dd[0] = M, dd[1] = K;
        break;
    default: /* DW: dout[M,N]ᵀ · in[M,K] */
        sd[0] = N, sd[1] = M, ss[0] = 1, ss[1] = ld;
        wd[0] = M, wd[1] = K, ws[0] = K, ws[1] = 1;
        dd[0] = N, dd[1] = K;
        break;
    }
    return dnnl_memory_desc_init_by_strides(&e->src, 2, sd, dt, ss) ||
           dnnl_memory_desc_init_by_strides(&e->wei, 2, wd, dt, ws) ||
           dnnl_memory_desc_init_by_tag(&e->dst, 2, dd, dnnl_f32, dnnl_ab);
}

static entry *get(int kind, int bf16, int M, int K, int N, int ld) {
    if (ld == N) ld = 0;
    for (int i = 0; i < g_n; i++) {
        entry *c = &g_cache[i];
        if (c->kind == kind && c->bf16 == bf16 && c->M == M && c->K == K && c->N == N &&
            c->ld == ld)
            return c;
    }
    entry e = {kind, bf16, M, K, N, ld, NULL, {0}, {0}, {0}};
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    int bad = make_descs(&e) || dnnl_matmul_desc_init(&md, &e.src, &e.wei, NULL, &e.dst) ||
              dnnl_primitive_attr_create(&attr);
    if (!bad && kind != ST_MM_FWD && kind != ST_MM_DINW) /* accumulate: dst = dst + src · wei */
        bad = dnnl_post_ops_create(&po) || dnnl_post_ops_append_sum(po, 1.0f) ||
              dnnl_primitive_attr_set_post_ops(attr, po);
    if (!bad) bad = dnnl_primitive_desc_create(&pd, &md, attr, g_eng, NULL) != dnnl_success;
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (bad) return NULL;
    dnnl_status_t s = dnnl_primitive_create(&e.prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s) return NULL;
    int slot = g_n < CACHE ? g_n++ : (g_next++ % CACHE); /* round-robin eviction */
    if (g_cache[slot].prim) dnnl_primitive_destroy(g_cache[slot].prim);
    g_cache[slot] = e;
    return &g_cache[slot];
}

static int grow(uint16_t **buf, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    st_free_aligned(*buf);
    *buf = st_alloc_aligned(n * sizeof(uint16_t));
    *cap = *buf ? n : 0;
    return *buf ? 0 : -1;
}

/* Runs a product whose primitive get() already made; an execution failure after that is a
 * programming error (bad pointers/dims), so it aborts like st_sgemm rather than leave a
 * half-accumulated gradient behind. */
static int exec(int kind, int bf16, int M, int K, int N, int ld, const void *src,
                const void *wei, float *dst) {
    entry *e = get(kind, bf16, M, K, N, ld);
    if (!e) return -1;
    int rc = -1;
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL;
    if (!dnnl_memory_create(&ms, &e->src, g_eng, (void *)src) &&
        !dnnl_memory_create(&mw, &e->wei, g_eng, (void *)wei) &&
        !dnnl_memory_create(&md, &e->dst, g_eng, dst)) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
        if (!dnnl_primitive_execute(e->prim, g_stream, 3, args) && !dnnl_stream_wait(g_stream))
            rc = 0;
    }
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(md);
    if (rc) {
        fprintf(stderr, "safetune: oneDNN matmul failed (kind %d, M=%d K=%d N=%d)\n", kind, M, K, N);
        abort();
    }
    return rc;
}

static int ready(void) {
    if (g_broken) return 0;
    if (!g_eng && (dnnl_engine_create(&g_eng, dnnl_cpu, 0) ||
                   dnnl_stream_create(&g_stream, g_eng, dnnl_stream_default_flags))) {
        g_broken = 1;
        return 0;
    }
    return 1;
}

int st_mm_forward(float *out, const float *in, const float *w, int M, int K, int N, int bf16) {
    if (M <= 0 || N <= 0 || K <= 0) return -1;
    int rc = -1;
    pthread_mutex_lock(&g_mu);
    if (!ready()) goto done;
    if (!bf16) {
        rc = get(ST_MM_FWD, 0, M, K, N, 0) ? exec(ST_MM_FWD, 0, M, K, N, 0, in, w, out) : -1;
    } else if (!grow(&g_a, &g_acap, (size_t)M * K) && !grow(&g_b, &g_bcap, (size_t)N * K)) {
        if (get(ST_MM_FWD, 1, M, K, N, 0)) {
            to_bf16(g_a, in, (size_t)M * K);
            to_bf16(g_b, w, (size_t)N * K);
            rc = exec(ST_MM_FWD, 1, M, K, N, 0, g_a, g_b, out);
        }
    }
done:
    pthread_mutex_unlock(&g_mu);
    return rc;
}

int st_mm_forward_b(float *out, const uint16_t *in, const float *w, int M, int K, int N) {
    if (M <= 0 || N <= 0 || K <= 0) return -1;
    int rc = -1;
    pthread_mutex_lock(&g_mu);
    if (ready() && !grow(&g_b, &g_bcap, (size_t)N * K) && get(ST_MM_FWD, 1, M, K, N, 0)) {
        to_bf16(g_b, w, (size_t)N * K);
        rc = exec(ST_MM_FWD, 1, M, K, N, 0, in, g_b, out);
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

void st_bf16_row(uint16_t *dst, const float *src, size_t n) {
#if ST_MM_X86
    if (has_bf16_isa()) {
        to_bf16_avx512_serial(dst, src, n);
        return;
    }
#endif
    to_bf16_scalar(dst, src, n);
}

/* The backward products; dout16 / in16 (bf16, when given) replace dout / in and skip their
 * conversion; din_write: din is written (no sum post-op) instead of accumulated. */
static int bwd(float *din, float *dw, const float *dout, const uint16_t *dout16, int ld16,
               const float *in, const uint16_t *in16, const float *w, const uint16_t *w16, int M,
               int K, int N, int bf16, int din_write) {
    if (M <= 0 || N <= 0 || K <= 0) return -1;
    const int kdin = din_write ? ST_MM_DINW : ST_MM_DIN;
    int rc = -1;
    pthread_mutex_lock(&g_mu);
    if (!ready()) goto done;
    /* bf16 with fp32 dout: column chunks dout[:, n0:n0+nc], so the bf16 copy stays small for
     * the lm_head ([tokens, vocab]) while every product still runs over all M rows: dw's rows
     * n0.. are written once, din (small) accumulates over the chunks */
    size_t cols = bf16 && !dout16 ? g_chunk_elems / (size_t)M : (size_t)N;
    if (cols < 1) cols = 1;
    if (cols > (size_t)N) cols = (size_t)N;
    const int tail = (int)((size_t)N % cols), multi = cols < (size_t)N;
    const int ld = dout16 && ld16 > 0 ? ld16 : 0; /* multi never has dout16 */
    /* make every primitive first: a failure then leaves the gradients untouched */
    if ((din && !get(kdin, bf16, M, K, (int)cols, ld)) ||
        (din && multi && !get(ST_MM_DIN, bf16, M, K, (int)cols, 0)) ||
        (dw && !get(ST_MM_DW, bf16, M, K, (int)cols, ld)) ||
        (tail && din && !get(ST_MM_DIN, bf16, M, K, tail, 0)) ||
        (tail && dw && !get(ST_MM_DW, bf16, M, K, tail, 0)))
        goto done;
    if (!bf16) {
        if (din) exec(kdin, 0, M, K, N, 0, dout, w, din);
        if (dw) exec(ST_MM_DW, 0, M, K, N, 0, dout, in, dw);
        rc = 0;
        goto done;
    }
    if ((!dout16 && grow(&g_a, &g_acap, (size_t)M * cols)) ||
        (din && !w16 && grow(&g_b, &g_bcap, (size_t)N * K)) ||
        (dw && !in16 && grow(&g_c, &g_ccap, (size_t)M * K)))
        goto done;
    if (din && !w16) to_bf16(g_b, w, (size_t)N * K);
    const uint16_t *b16 = w16 ? w16 : g_b; /* the bf16 weight: held by the caller or converted */
    const uint16_t *c16 = in16;
    if (dw && !in16) {
        to_bf16(g_c, in, (size_t)M * K);
        c16 = g_c;
    }
    rc = 0;
    for (size_t n0 = 0; n0 < (size_t)N; n0 += cols) {
        const int nc = (int)((size_t)N - n0 < cols ? (size_t)N - n0 : cols);
        const uint16_t *a16 = dout16;
        if (!dout16 && !multi) {
            to_bf16(g_a, dout, (size_t)M * N);
            a16 = g_a;
        } else if (!dout16) {
            st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
#pragma omp parallel for schedule(static) if ((size_t)M * nc > 65536)
            for (int m = 0; m < M; m++)
                st_bf16_row(g_a + (size_t)m * nc, dout + (size_t)m * N + n0, (size_t)nc);
            a16 = g_a;
        }
        if (din) exec(n0 == 0 ? kdin : ST_MM_DIN, 1, M, K, nc, ld, a16, b16 + n0 * K, din);
        if (dw) exec(ST_MM_DW, 1, M, K, nc, ld, a16, c16, dw + n0 * K);
    }
done:
    pthread_mutex_unlock(&g_mu);
    return rc;
}

int st_mm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                   int M, int K, int N, int bf16) {
    return bwd(din, dw, dout, NULL, 0, in, NULL, w, NULL, M, K, N, bf16, 0);
}

int st_mm_backward_b(float *din, float *dw, const float *dout, const uint16_t *dout16, int ld16,
                     const float *in, const uint16_t *in16, const float *w, int M, int K, int N) {
    if ((!dout) == (!dout16) || (dw && (!in) == (!in16)) || (ld16 && ld16 < N)) return -1;
    return bwd(din, dw, dout, dout16, ld16, in, in16, w, NULL, M, K, N, 1, 1);
}

int st_mm_backward_w16(float *din, const float *dout, const uint16_t *dout16, int ld16,
                       const uint16_t *w16, int M, int K, int N) {
    if ((!dout) == (!dout16) || !w16 || !din || (ld16 && ld16 < N)) return -1;
    return bwd(din, NULL, dout, dout16, ld16, NULL, NULL, NULL, w16, M, K, N, 1, 1);
}

int st_mm_forward_w16(float *out, const float *in, const uint16_t *in16, const uint16_t *w16,
                      int M, int K, int N) {
    if (M <= 0 || N <= 0 || K <= 0 || (!in) == (!in16) || !w16) return -1;
    int rc = -1;
    pthread_mutex_lock(&g_mu);
    if (ready() && (in16 || !grow(&g_a, &g_acap, (size_t)M * K)) && get(ST_MM_FWD, 1, M, K, N, 0)) {
        if (!in16) to_bf16(g_a, in, (size_t)M * K);
        rc = exec(ST_MM_FWD, 1, M, K, N, 0, in16 ? in16 : g_a, w16, out);
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

void st_mm_set_chunk_elems(size_t n) {
    pthread_mutex_lock(&g_mu);
    g_chunk_elems = n ? n : (size_t)16 << 20;
    pthread_mutex_unlock(&g_mu);
}
