/* kernels_matmul_bf16.c - out[M,N] = bf16(in)[M,K] · bf16(W)[N,K]ᵀ, fp32 accumulation, through a
 * oneDNN matmul primitive (avx512_bf16 / AMX where the CPU has them). Primitives are cached per
 * (M, K, N); operands are rounded to bf16 (round-to-nearest-even) into reusable buffers.
 * Source: oneDNN developer guide, "Matrix Multiplication" primitive (C API, v2.x). */
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul_bf16.h"
#include "safetune/base.h"

enum { CACHE = 64 };

typedef struct {
    int M, K, N;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src, wei, dst;
} entry;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t g_eng;
static dnnl_stream_t g_stream;
static entry g_cache[CACHE];
static int g_n, g_next, g_broken;
static uint16_t *g_a, *g_b;
static size_t g_acap, g_bcap;

static void to_bf16(uint16_t *dst, const float *src, size_t n) {
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            dst[i] = (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
        } else {
            u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
            dst[i] = (uint16_t)(u >> 16);
        }
    }
}

static entry *get(int M, int K, int N) {
    for (int i = 0; i < g_n; i++)
        if (g_cache[i].M == M && g_cache[i].K == K && g_cache[i].N == N) return &g_cache[i];
    entry e = {M, K, N, NULL, {0}, {0}, {0}};
    dnnl_dims_t sd = {M, K}, wd = {K, N}, ws = {1, K}, dd = {M, N};
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_memory_desc_init_by_tag(&e.src, 2, sd, dnnl_bf16, dnnl_ab) ||
        dnnl_memory_desc_init_by_strides(&e.wei, 2, wd, dnnl_bf16, ws) ||
        dnnl_memory_desc_init_by_tag(&e.dst, 2, dd, dnnl_f32, dnnl_ab) ||
        dnnl_matmul_desc_init(&md, &e.src, &e.wei, NULL, &e.dst) ||
        dnnl_primitive_desc_create(&pd, &md, NULL, g_eng, NULL))
        return NULL;
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

int st_matmul_bf16(float *out, const float *in, const float *w, int M, int K, int N) {
    int rc = -1;
    pthread_mutex_lock(&g_mu);
    if (g_broken) goto done;
    if (!g_eng && (dnnl_engine_create(&g_eng, dnnl_cpu, 0) ||
                   dnnl_stream_create(&g_stream, g_eng, dnnl_stream_default_flags))) {
        g_broken = 1;
        goto done;
    }
    entry *e = get(M, K, N);
    if (!e || grow(&g_a, &g_acap, (size_t)M * K) || grow(&g_b, &g_bcap, (size_t)N * K)) goto done;
    to_bf16(g_a, in, (size_t)M * K);
    to_bf16(g_b, w, (size_t)N * K);
    dnnl_memory_t ms = NULL, mw = NULL, mdst = NULL;
    if (!dnnl_memory_create(&ms, &e->src, g_eng, g_a) &&
        !dnnl_memory_create(&mw, &e->wei, g_eng, g_b) &&
        !dnnl_memory_create(&mdst, &e->dst, g_eng, out)) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, mdst}};
        if (!dnnl_primitive_execute(e->prim, g_stream, 3, args) && !dnnl_stream_wait(g_stream))
            rc = 0;
    }
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(mdst);
done:
    pthread_mutex_unlock(&g_mu);
    return rc;
}
