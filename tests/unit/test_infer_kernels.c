/* test_infer_kernels.c - the kernels of st_forward_infer (model/infer_kernels.h) against plain
 * scalar double-precision references: add + RMSNorm, SwiGLU, GQA decode attention over a
 * contiguous K/V block (fp32 and bf16 cache, the AVX-512 head_dim 64 path and the generic one,
 * tails of the 16-lane loops); bf16 rounding against hand-computed bit patterns; the KV cache's
 * precision switch (fp32 <-> bf16 storage of the positions already held); copy_prefix in both
 * storages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/fastmath.h"
#include "model/infer_kernels.h"
#include "model/kvcache.h"
#include "model_testutil.h"
#include "safetune/forward.h"

static void fill_normal(float *x, size_t n, double sc, st_rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(sc * st_rng_normal(r));
}

static void test_bf16_rounding(void **state) {
    (void)state;
    /* hand-computed: exact, ties to even (both directions), above-tie, sign, inf, NaN */
    const uint32_t in[] = {0x3f800000u, 0x3f808000u, 0x3f818000u, 0x3f808001u, 0xbf80ffffu,
                           0x7f800000u, 0x7f7fffffu, 0x7fc00001u, 0x00000001u};
    const uint16_t want[] = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xbf81, 0x7f80, 0x7f80, 0x7fc0, 0x0000};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        float f;
        memcpy(&f, &in[i], 4);
        assert_int_equal(st_f32_to_bf16(f), want[i]);
    }
    float f;
    uint32_t u = 0x7f800001u; /* signalling NaN payload in the low bits only: must stay NaN */
    memcpy(&f, &u, 4);
    assert_true(isnan(st_bf16_to_f32(st_f32_to_bf16(f))));
    assert_true(st_bf16_to_f32(0x4049) == 3.140625f); /* 0x40490000 = 3.140625 */
}

static void test_add_rmsnorm(void **state) {
    (void)state;
    st_rng r;
    st_rng_seed(&r, 5);
    const int Ns[] = {1, 3, 2}, Cs[] = {576, 61, 16};
    for (int t = 0; t < 3; t++)
        for (int with_y = 0; with_y < 2; with_y++) {
            const int N = Ns[t], C = Cs[t];
            const float eps = 1e-5f;
            float *x = malloc((size_t)N * C * 4), *y = malloc((size_t)N * C * 4);
            float *w = malloc((size_t)C * 4), *ln = malloc((size_t)N * C * 4);
            double *x0 = malloc((size_t)N * C * sizeof(double));
            fill_normal(x, (size_t)N * C, 2.0, &r);
            fill_normal(y, (size_t)N * C, 1.0, &r);
            for (int i = 0; i < C; i++) w[i] = (float)(1.0 + 0.1 * st_rng_normal(&r));
            for (int i = 0; i < N * C; i++) x0[i] = x[i];
            st_infer_add_rmsnorm(x, with_y ? y : NULL, ln, w, N, C, eps);
            for (int n = 0; n < N; n++) {
                double ss = 0;
                for (int i = 0; i < C; i++) {
                    /* the residual add is one fp32 rounding: the reference rounds it too */
                    const double v = with_y ? (double)(float)(x0[n * C + i] + y[n * C + i])
                                            : x0[n * C + i];
                    assert_true(x[n * C + i] == (float)v);
                    ss += v * v;
                }
                const double rs = 1.0 / sqrt(ss / C + eps);
                for (int i = 0; i < C; i++) {
                    const double want = x[n * C + i] * rs * w[i];
                    if (fabs(ln[n * C + i] - want) > 4e-7 * (fabs(want) + 1e-3))
                        fail_msg("N %d C %d row %d col %d: %.9g vs %.9g", N, C, n, i,
                                 ln[n * C + i], want);
                }
            }
            free(x), free(y), free(w), free(ln), free(x0);
        }
}

static void test_swiglu(void **state) {
    (void)state;
    st_rng r;
    st_rng_seed(&r, 6);
    const int N = 3, I = 1536 + 7; /* a tail after the 16-lane body */
    float *gu = malloc((size_t)N * 2 * I * 4), *h = malloc((size_t)N * I * 4);
    fill_normal(gu, (size_t)N * 2 * I, 4.0, &r);
    gu[0] = -100.0f; /* exp overflow side: silu -> -0 */
    gu[1] = 100.0f;  /* silu(x) -> x */
    st_infer_swiglu(h, gu, N, I);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < I; i++) {
            const double g = gu[(size_t)n * 2 * I + i], u = gu[(size_t)n * 2 * I + I + i];
            const double want = g / (1.0 + exp(-g)) * u;
            if (fabs(h[(size_t)n * I + i] - want) > 1e-6 * fabs(want) + 1e-30)
                fail_msg("row %d col %d: %.9g vs %.9g", n, i, h[(size_t)n * I + i], want);
        }
    free(gu), free(h);
}

/* Double reference of one GQA decode row: kd, vd [nk, D] already as the kernel sees them. */
static void ref_decode(double *out, const float *q, const double *kd, const double *vd, int nk,
                       int D, int rep, double scale) {
    double *s = malloc((size_t)nk * sizeof(double));
    for (int r = 0; r < rep; r++) {
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < nk; j++) {
            double a = 0;
            for (int d = 0; d < D; d++) a += (double)q[r * D + d] * kd[(size_t)j * D + d];
            s[j] = a * scale;
            mx = s[j] > mx ? s[j] : mx;
        }
        for (int j = 0; j < nk; j++) sum += (s[j] = exp(s[j] - mx));
        for (int d = 0; d < D; d++) {
            double a = 0;
            for (int j = 0; j < nk; j++) a += s[j] / sum * vd[(size_t)j * D + d];
            out[r * D + d] = a;
        }
    }
    free(s);
}

/* One decode case: random q [rep, D], K/V [nk, D] (fp32 or bf16); errors relative to the
 * largest |V| element. */
static void decode_case(int D, int rep, int nk, int bf, uint64_t seed) {
    st_rng r;
    st_rng_seed(&r, seed);
    float *q = malloc((size_t)rep * D * 4), *out = malloc((size_t)rep * D * 4);
    float *kf = malloc((size_t)nk * D * 4), *vf = malloc((size_t)nk * D * 4);
    uint16_t *kh = malloc((size_t)nk * D * 2), *vh = malloc((size_t)nk * D * 2);
    double *kd = malloc((size_t)nk * D * 8), *vd = malloc((size_t)nk * D * 8);
    double *want = malloc((size_t)rep * D * 8);
    float *p = malloc((size_t)rep * nk * 4);
    fill_normal(q, (size_t)rep * D, 1.0, &r);
    fill_normal(kf, (size_t)nk * D, 1.0, &r);
    fill_normal(vf, (size_t)nk * D, 1.0, &r);
    for (size_t i = 0; i < (size_t)nk * D; i++) {
        kh[i] = st_f32_to_bf16(kf[i]);
        vh[i] = st_f32_to_bf16(vf[i]);
        kd[i] = bf ? st_bf16_to_f32(kh[i]) : kf[i];
        vd[i] = bf ? st_bf16_to_f32(vh[i]) : vf[i];
    }
    const float scale = 1.0f / sqrtf((float)D);
    st_infer_gqa_decode(out, q, bf ? (const void *)kh : kf, bf ? (const void *)vh : vf, bf, nk, D,
                        rep, scale, p);
    ref_decode(want, q, kd, vd, nk, D, rep, scale);
    for (int i = 0; i < rep * D; i++)
        if (fabs(out[i] - want[i]) > 2e-6 * 4.0)
            fail_msg("D %d rep %d nk %d bf %d: out[%d] %.9g vs %.9g", D, rep, nk, bf, i, out[i],
                     want[i]);
    if (bf) { /* and the bf16 cache really is bf16: the fp32 K/V answer differs */
        double *w32 = malloc((size_t)rep * D * 8);
        for (size_t i = 0; i < (size_t)nk * D; i++) kd[i] = kf[i], vd[i] = vf[i];
        ref_decode(w32, q, kd, vd, nk, D, rep, scale);
        double worst = 0;
        for (int i = 0; i < rep * D; i++) worst = fmax(worst, fabs(out[i] - w32[i]));
        assert_true(worst > 1e-5 && worst < 3e-2);
        free(w32);
    }
    free(q), free(out), free(kf), free(vf), free(kh), free(vh), free(kd), free(vd), free(want);
    free(p);
}

static void test_gqa_decode(void **state) {
    (void)state;
    const int nks[] = {1, 15, 16, 17, 107, 300};
    for (int bf = 0; bf < 2; bf++)
        for (size_t t = 0; t < sizeof nks / sizeof nks[0]; t++) {
            decode_case(64, 3, nks[t], bf, 100 + t);  /* SmolLM2: AVX-512 path */
            decode_case(64, 1, nks[t], bf, 200 + t);  /* MHA */
            decode_case(24, 2, nks[t], bf, 300 + t);  /* generic path */
        }
    decode_case(64, 17, 9, 0, 400); /* more heads per group than the kernel's registers */
    decode_case(16, 20, 33, 1, 401);
}

/* set_precision re-stores the positions already in the cache: fp32 -> bf16 rounds each (RNE),
 * bf16 -> fp32 widens exactly; both K and V, every layer, slot and KV head. */
static void test_cache_precision_switch(void **state) {
    (void)state;
    st_config c = st_test_llama_config(48, 64, 4, 2, 12, 50);
    st_model *m = NULL;
    assert_int_equal(st_model_new(&c, &m), ST_OK);
    st_test_randomize(m, 9);
    st_kv_cache *kc;
    assert_int_equal(st_kv_cache_new(&m->config, 3, 16, &kc), ST_OK);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    int32_t toks[2][7] = {{1, 5, 9, 2, 7, 3, 4}, {8, 6, 11, 0, 13, 12, 10}};
    const int slots[2] = {2, 0}, n[2] = {7, 4};
    const int32_t *tp[2] = {toks[0], toks[1]};
    float *logits = malloc(2 * 50 * sizeof(float));
    st_kv_cache_set_precision(kc, ST_MATMUL_F32);
    assert_int_equal(st_forward_infer(ic, kc, slots, tp, n, 2, logits), ST_OK);
    assert_int_equal(kc->kv_bf16, 0);
    const size_t tot = (size_t)c.num_hidden_layers * 3 * 16 * c.num_key_value_heads * c.head_dim;
    float *k32 = malloc(tot * 4), *v32 = malloc(tot * 4);
    memcpy(k32, kc->k, tot * 4);
    memcpy(v32, kc->v, tot * 4);
    st_kv_cache_set_precision(kc, ST_MATMUL_BF16);
    assert_int_equal(kc->kv_bf16, 1);
    size_t checked = 0;
    for (int l = 0; l < c.num_hidden_layers; l++)
        for (int s = 0; s < 3; s++)
            for (int h = 0; h < c.num_key_value_heads; h++) {
                const size_t o = st_kv_block(kc, l, s, h);
                const int len = s == 2 ? 7 : s == 0 ? 4 : 0;
                assert_int_equal(st_kv_cache_len(kc, s), len);
                for (size_t i = 0; i < (size_t)len * c.head_dim; i++, checked++) {
                    assert_int_equal(((uint16_t *)kc->k)[o + i], st_f32_to_bf16(k32[o + i]));
                    assert_int_equal(((uint16_t *)kc->v)[o + i], st_f32_to_bf16(v32[o + i]));
                }
            }
    assert_int_equal(checked, (size_t)2 * 2 * 11 * 12);
    /* decoding on in bf16 mode stays within bf16 error of the fp32 full forward */
    const int one[2] = {1, 1};
    const int32_t *tp2[2] = {toks[0] + 6, toks[1] + 4}; /* slot 2 continues with a repeat */
    int32_t seq0[8], seq1[5];
    memcpy(seq0, toks[0], 7 * 4), seq0[7] = toks[0][6];
    memcpy(seq1, toks[1], 5 * 4);
    assert_int_equal(st_forward_infer(ic, kc, slots, tp2, one, 2, logits), ST_OK);
    float *full = malloc(8 * 50 * sizeof(float));
    assert_int_equal(st_forward_logits(m, seq0, 1, 8, full), ST_OK);
    double e0 = st_test_rel(logits, full + 7 * 50, 50);
    assert_int_equal(st_forward_logits(m, seq1, 1, 5, full), ST_OK);
    double e1 = st_test_rel(logits + 50, full + 4 * 50, 50);
    assert_true(e0 < 3e-2 && e1 < 3e-2);
    /* back to fp32: the held positions widen exactly */
    uint16_t *kh = malloc(tot * 2);
    memcpy(kh, kc->k, tot * 2);
    st_kv_cache_set_precision(kc, ST_MATMUL_F32);
    assert_int_equal(kc->kv_bf16, 0);
    const size_t o = st_kv_block(kc, 1, 2, 1);
    for (size_t i = 0; i < (size_t)8 * c.head_dim; i++)
        assert_true(((float *)kc->k)[o + i] == st_bf16_to_f32(kh[o + i]));
    free(kh), free(full), free(k32), free(v32), free(logits);
    st_infer_ctx_free(ic);
    st_kv_cache_free(kc);
    st_model_free(m);
}

/* bf16 cache with chunked prefill onto a non-empty cache (the widened-block path of the
 * backend attention) and decode, several slots, against the fp32 full forward. */
static void test_bf16_cache_chunked(void **state) {
    (void)state;
    st_config c = st_test_llama_config(192, 96, 3, 1, 64, 61); /* head_dim 64, 3 per group */
    st_model *m = NULL;
    assert_int_equal(st_model_new(&c, &m), ST_OK);
    st_test_randomize(m, 21);
    const int T = 12, V = 61;
    int32_t toks[2][12];
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < T; t++) toks[s][t] = (int32_t)((s * 13 + t * 7 + 1) % V);
    st_kv_cache *kc;
    assert_int_equal(st_kv_cache_new(&m->config, 4, T, &kc), ST_OK);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    st_kv_cache_set_precision(kc, ST_MATMUL_BF16);
    float *out = malloc(2 * V * sizeof(float)), *full = malloc((size_t)T * V * sizeof(float));
    const int chunks[] = {5, 4, 1, 1, 1}, slots[2] = {3, 1};
    int done = 0;
    double worst = 0;
    for (int ci = 0; ci < 5; ci++) {
        const int n[2] = {chunks[ci], chunks[ci]};
        const int32_t *tp[2] = {toks[0] + done, toks[1] + done};
        assert_int_equal(st_forward_infer(ic, kc, slots, tp, n, 2, out), ST_OK);
        done += chunks[ci];
        for (int s = 0; s < 2; s++) {
            assert_int_equal(st_forward_logits(m, toks[s], 1, done, full), ST_OK);
            worst = fmax(worst, st_test_rel(out + (size_t)s * V, full + (size_t)(done - 1) * V, V));
        }
    }
    assert_true(worst > 0 && worst < 3e-2);
    free(out), free(full);
    st_infer_ctx_free(ic);
    st_kv_cache_free(kc);
    st_model_free(m);
}

/* st_kv_cache_copy_prefix in both storages: dst's first n rows of every (layer, KV head) block
 * equal src's, nothing else changes, and decoding the same token from src (shortened to n by a
 * second copy) and from dst gives bit-identical logits. */
static void copy_prefix_case(st_matmul_precision prec) {
    st_config c = st_test_llama_config(192, 96, 3, 1, 64, 61);
    c.num_key_value_heads = 3; /* 3 KV heads: blocks of one slot are not adjacent per layer */
    c.num_attention_heads = 3;
    st_model *m = NULL;
    assert_int_equal(st_model_new(&c, &m), ST_OK);
    st_test_randomize(m, 31);
    st_kv_cache *kc;
    assert_int_equal(st_kv_cache_new(&m->config, 4, 10, &kc), ST_OK);
    st_infer_ctx *ic = NULL;
    assert_int_equal(st_infer_ctx_new(m, NULL, NULL, NULL, &ic), ST_OK);
    st_kv_cache_set_precision(kc, prec);
    const int32_t a[7] = {3, 1, 4, 1, 5, 9, 2}, b2[5] = {2, 7, 1, 8, 2};
    const int slots[2] = {1, 3}, n[2] = {7, 5};
    const int32_t *tp[2] = {a, b2};
    float *lg = malloc(2 * 61 * sizeof(float)), *lg2 = malloc(61 * sizeof(float));
    assert_int_equal(st_forward_infer(ic, kc, slots, tp, n, 2, lg), ST_OK);
    const size_t es = kc->kv_bf16 ? 2 : 4;
    const size_t tot = (size_t)c.num_hidden_layers * 4 * 10 * c.num_key_value_heads * 64 * es;
    char *k0 = malloc(tot), *v0 = malloc(tot);
    memcpy(k0, kc->k, tot), memcpy(v0, kc->v, tot);
    assert_int_equal(st_kv_cache_copy_prefix(kc, 3, 1, 4), ST_OK); /* overwrite slot 3 */
    assert_int_equal(st_kv_cache_len(kc, 3), 4);
    for (int l = 0; l < c.num_hidden_layers; l++)
        for (int s = 0; s < 4; s++)
            for (int h = 0; h < c.num_key_value_heads; h++) {
                const size_t o = st_kv_block(kc, l, s, h) * es, os = st_kv_block(kc, l, 1, h) * es;
                const size_t row = 64 * es, cut = s == 3 ? 4 * row : 0;
                if (cut) { /* copied rows from slot 1, the rest of slot 3 as it was */
                    assert_memory_equal((char *)kc->k + o, k0 + os, cut);
                    assert_memory_equal((char *)kc->v + o, v0 + os, cut);
                }
                assert_memory_equal((char *)kc->k + o + cut, k0 + o + cut, 10 * row - cut);
                assert_memory_equal((char *)kc->v + o + cut, v0 + o + cut, 10 * row - cut);
            }
    /* slot 0 := slot 1's first 4 too; decode token 7 on slots 0 and 3: same state, same logits */
    assert_int_equal(st_kv_cache_copy_prefix(kc, 0, 1, 4), ST_OK);
    const int32_t t7 = 7, *tq = &t7;
    int one = 1, s0 = 0, s3 = 3;
    assert_int_equal(st_forward_infer(ic, kc, &s0, &tq, &one, 1, lg), ST_OK);
    assert_int_equal(st_forward_infer(ic, kc, &s3, &tq, &one, 1, lg2), ST_OK);
    assert_memory_equal(lg, lg2, 61 * sizeof(float));
    /* and (fp32) they equal the full forward of a[0..4) + 7 */
    if (prec == ST_MATMUL_F32) {
        const int32_t seq[5] = {3, 1, 4, 1, 7};
        float *full = malloc(5 * 61 * sizeof(float));
        assert_int_equal(st_forward_logits(m, seq, 1, 5, full), ST_OK);
        assert_true(st_test_rel(lg, full + 4 * 61, 61) <= 1e-5);
        free(full);
    }
    free(k0), free(v0), free(lg), free(lg2);
    st_infer_ctx_free(ic);
    st_kv_cache_free(kc);
    st_model_free(m);
}

static void test_copy_prefix_fp32(void **state) {
    (void)state;
    copy_prefix_case(ST_MATMUL_F32);
}
static void test_copy_prefix_bf16(void **state) {
    (void)state;
    copy_prefix_case(ST_MATMUL_BF16);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_add_rmsnorm),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_gqa_decode),
        cmocka_unit_test(test_cache_precision_switch),
        cmocka_unit_test(test_bf16_cache_chunked),
        cmocka_unit_test(test_copy_prefix_fp32),
        cmocka_unit_test(test_copy_prefix_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
