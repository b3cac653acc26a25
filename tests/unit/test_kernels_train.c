/* test_kernels_train.c - the training-speed kernels: fused cross-entropy (vs a double-precision
 * reference and finite differences), the compacted lm_head path of st_train_forward/backward
 * (vs the same batch sent densely through the lm_head with zero-weighted rows), and the bf16
 * attention (vs the fp32 path within bf16 tolerance, AVX-512 vs portable GEMM). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul_bf16.h"
#include "model_testutil.h"
#include "safetune/backward.h"
#include "safetune/kernels.h"
#include "safetune/model.h"

static st_rng g_rng;

static float *rand_f32(size_t n, double scale) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)(scale * st_rng_normal(&g_rng));
    return v;
}

/* ---- fused cross-entropy ---------------------------------------------------------------- */

/* Σ_n w[n] · CE(x[n], t[n]) in double (rows with t < 0 skipped); per-row losses to out. */
static double ce_ref(const double *x, const int32_t *t, const float *w, int N, int V,
                     double *out) {
    double L = 0;
    for (int n = 0; n < N; n++) {
        if (out) out[n] = 0;
        if (t[n] < 0) continue;
        const double *r = x + (size_t)n * V;
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, r[v]);
        for (int v = 0; v < V; v++) s += exp(r[v] - mx);
        double l = mx + log(s) - r[t[n]];
        if (out) out[n] = l;
        L += w[n] * l;
    }
    return L;
}

static void xent_case(int N, int V, double scale) {
    int32_t *t = malloc((size_t)N * sizeof *t);
    float *w = malloc((size_t)N * sizeof *w), *losses = malloc((size_t)N * sizeof *losses);
    for (int n = 0; n < N; n++) {
        t[n] = (int32_t)(st_rng_u64(&g_rng) % (uint64_t)V);
        w[n] = (float)(0.25 + 0.5 * n);
    }
    t[1] = -100; /* ignored row */
    w[2] = 0.0f; /* masked row: loss written, gradient zero */
    const size_t nv = (size_t)N * V;
    float *x = rand_f32(nv, scale);
    x[(size_t)3 * V + 5] = 40.0f; /* a dominant logit: the max shift matters */
    double *xd = malloc(nv * sizeof *xd), *ref = malloc((size_t)N * sizeof *ref);
    for (size_t i = 0; i < nv; i++) xd[i] = x[i];
    ce_ref(xd, t, w, N, V, ref);
    /* the analytic gradient in double: (softmax - onehot) * w */
    double *gd = calloc(nv, sizeof *gd);
    for (int n = 0; n < N; n++) {
        if (t[n] < 0) continue;
        const double *r = xd + (size_t)n * V;
        double mx = -INFINITY, s = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, r[v]);
        for (int v = 0; v < V; v++) s += exp(r[v] - mx);
        for (int v = 0; v < V; v++)
            gd[(size_t)n * V + v] = (exp(r[v] - mx) / s - (v == t[n])) * w[n];
    }
    st_crossentropy_fused(losses, x, t, w, N, V);
    for (int n = 0; n < N; n++)
        if (!(fabs(losses[n] - ref[n]) <= 2e-6 * fmax(1.0, fabs(ref[n]))))
            fail_msg("fused xent N=%d V=%d row %d: loss %.9g vs %.9g", N, V, n, losses[n], ref[n]);
    assert_true(losses[1] == 0.0f);
    double num = 0, den = 0, mx = 0;
    for (size_t i = 0; i < nv; i++) {
        num += (x[i] - gd[i]) * (x[i] - gd[i]);
        den += gd[i] * gd[i];
        mx = fmax(mx, fabs(x[i] - gd[i]));
    }
    if (!(sqrt(num / den) <= 1e-5)) fail_msg("fused xent V=%d: d(logits) rel err %.3g", V, sqrt(num / den));
    for (int v = 0; v < V; v++) {
        assert_true(x[(size_t)1 * V + v] == 0.0f);
        assert_true(x[(size_t)2 * V + v] == 0.0f);
    }
    free(t); free(w); free(losses); free(x); free(xd); free(ref); free(gd);
}

static void test_xent_fused_reference(void **state) {
    (void)state;
    xent_case(6, 37, 2.0);     /* V not a multiple of 16 (scalar tail) */
    xent_case(5, 64, 3.0);
    xent_case(4, 49152, 4.0); /* SmolLM2's vocabulary: long sums */
}

typedef struct { int N, V; const int32_t *t; const float *w; } fd_ctx;
static double fd_loss(const double *x, void *vc) {
    fd_ctx *c = vc;
    return ce_ref(x, c->t, c->w, c->N, c->V, NULL);
}

/* d(logits) against central finite differences of the double loss */
static void test_xent_fused_fd(void **state) {
    (void)state;
    enum { N = 4, V = 21 };
    int32_t t[N] = {3, 20, -1, 0};
    float w[N] = {0.5f, 1.5f, 1.0f, 0.25f};
    float *x = rand_f32(N * V, 2.0);
    double xd[N * V];
    for (int i = 0; i < N * V; i++) xd[i] = x[i];
    fd_ctx c = {N, V, t, w};
    float losses[N];
    st_crossentropy_fused(losses, x, t, w, N, V);
    for (int i = 0; i < N * V; i++) {
        double x0 = xd[i], h = 1e-5;
        xd[i] = x0 + h;
        double lp = fd_loss(xd, &c);
        xd[i] = x0 - h;
        double lm = fd_loss(xd, &c);
        xd[i] = x0;
        double g = (lp - lm) / (2 * h);
        if (!(fabs(x[i] - g) <= 1e-5 + 1e-4 * fabs(g)))
            fail_msg("fused xent fd: element %d: %.7g vs %.7g", i, x[i], g);
    }
    free(x);
}

/* the fused kernel agrees with the separate forward/backward kernels */
static void test_xent_fused_vs_separate(void **state) {
    (void)state;
    enum { N = 7, V = 300 };
    int32_t t[N] = {1, 299, -5, 17, 0, 150, 3};
    float w[N] = {1, 2, 3, 0, 0.5f, 0.125f, 4};
    float *x = rand_f32(N * V, 3.0), *x2 = malloc(sizeof(float) * N * V);
    memcpy(x2, x, sizeof(float) * N * V);
    float l1[N], l2[N];
    st_crossentropy_forward(l2, x2, t, N, V);
    st_crossentropy_backward(x2, x2, t, w, N, V);
    st_crossentropy_fused(l1, x, t, w, N, V);
    for (int n = 0; n < N; n++) assert_true(fabsf(l1[n] - l2[n]) <= 1e-6f * fmaxf(1.0f, l2[n]));
    for (int i = 0; i < N * V; i++) assert_true(fabsf(x[i] - x2[i]) <= 1e-7f + 1e-5f * fabsf(x2[i]));
    free(x);
    free(x2);
}

/* ---- compacted lm_head ------------------------------------------------------------------ */

/* The same micro-batch twice: (a) untrained rows carry target -1 (compacted away from the
 * lm_head), (b) the same rows carry a real target with mask 0 (all rows through the lm_head,
 * zero-weighted). Loss and every gradient must agree; token losses agree on the trained rows. */
static void compact_case(int precision_bf16) {
    st_config cfg = st_test_llama_config(32, 48, 4, 2, 8, 67);
    cfg.tie_word_embeddings = 0;
    st_model *m = NULL;
    assert_int_equal(st_model_new(&cfg, &m), ST_OK);
    st_test_randomize(m, 5);
    st_matmul_set_precision(precision_bf16 ? ST_MATMUL_BF16 : ST_MATMUL_F32);
    const int B = 3, T = 9, N = B * T, V = cfg.vocab_size;
    int32_t tok[27], tga[27], tgb[27];
    float mask[27];
    for (int n = 0; n < N; n++) {
        tok[n] = (int32_t)((n * 13 + 5) % V);
        int trained = (n % T) >= 4 && n != 20; /* prompt rows untrained, one gap */
        if (n >= 2 * T) trained = n == 2 * T + 8; /* last row: one target at its end */
        tgb[n] = (int32_t)((n * 7 + 2) % V);
        tga[n] = trained ? tgb[n] : -1;
        mask[n] = trained ? 1.0f : 0.0f;
    }
    const size_t P = m->layout.n_floats;
    float *ga = calloc(P, sizeof(float)), *gb = calloc(P, sizeof(float));
    float *la = malloc(sizeof(float) * N), *lb = malloc(sizeof(float) * N);
    st_weights wa, wb;
    assert_int_equal(st_weights_bind(&wa, &m->config, &m->layout, ga), ST_OK);
    assert_int_equal(st_weights_bind(&wb, &m->config, &m->layout, gb), ST_OK);
    st_train_acts *a = NULL;
    assert_int_equal(st_train_acts_new(&m->config, B, T, &a), ST_OK);
    float lossa = 0, lossb = 0;
    assert_int_equal(st_train_forward(&m->config, &m->w, a, tok, tga, mask, B, T, 7.0f, &lossa), ST_OK);
    memcpy(la, st_train_token_losses(a), sizeof(float) * N);
    assert_int_equal(st_train_backward(&m->config, &m->w, a, &wa), ST_OK);
    assert_int_equal(st_train_forward(&m->config, &m->w, a, tok, tgb, mask, B, T, 7.0f, &lossb), ST_OK);
    memcpy(lb, st_train_token_losses(a), sizeof(float) * N);
    assert_int_equal(st_train_backward(&m->config, &m->w, a, &wb), ST_OK);
    /* a second backward without a forward is refused */
    assert_int_equal(st_train_backward(&m->config, &m->w, a, &wb), ST_ERR_ARG);
    assert_true(fabsf(lossa - lossb) <= 1e-6f * fabsf(lossb));
    for (int n = 0; n < N; n++) {
        if (tga[n] >= 0) assert_true(fabsf(la[n] - lb[n]) <= 1e-6f * fabsf(lb[n]));
        else assert_true(la[n] == 0.0f && lb[n] > 0.0f);
    }
    for (size_t i = 0; i < m->layout.n_tensors; i++) {
        const st_param_info *p = &m->layout.params[i];
        double e = st_test_rel(ga + p->offset, gb + p->offset, p->numel);
        if (!(e <= (precision_bf16 ? 1e-3 : 1e-5)))
            fail_msg("compacted vs dense lm_head (%s): %s rel err %.3g",
                     precision_bf16 ? "bf16" : "fp32", p->name, e);
    }
    st_matmul_set_precision(ST_MATMUL_F32);
    st_train_acts_free(a);
    st_weights_unbind(&wa);
    st_weights_unbind(&wb);
    free(ga); free(gb); free(la); free(lb);
    st_model_free(m);
}

static void test_compact_lmhead(void **state) {
    (void)state;
    compact_case(0);
    compact_case(1);
}

/* every target ignored: zero loss, zero gradients, no crash */
static void test_compact_no_targets(void **state) {
    (void)state;
    st_config cfg = st_test_llama_config(16, 24, 2, 1, 8, 31);
    st_model *m = NULL;
    assert_int_equal(st_model_new(&cfg, &m), ST_OK);
    st_test_randomize(m, 9);
    int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tgt[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    float *g = calloc(m->layout.n_floats, sizeof(float));
    st_weights w;
    assert_int_equal(st_weights_bind(&w, &m->config, &m->layout, g), ST_OK);
    st_train_acts *a = NULL;
    assert_int_equal(st_train_acts_new(&m->config, 2, 4, &a), ST_OK);
    float loss = 1;
    assert_int_equal(st_train_forward(&m->config, &m->w, a, tok, tgt, NULL, 2, 4, 1.0f, &loss), ST_OK);
    assert_true(loss == 0.0f);
    assert_int_equal(st_train_backward(&m->config, &m->w, a, &w), ST_OK);
    for (size_t i = 0; i < m->layout.n_floats; i++) assert_true(g[i] == 0.0f);
    st_train_acts_free(a);
    st_weights_unbind(&w);
    free(g);
    st_model_free(m);
}

/* ---- bf16 attention --------------------------------------------------------------------- */

static double rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den + 1e-300));
}

static void att_bf16_case(int B, int T, int H, int KV, int D) {
    const int W = (H + 2 * KV) * D;
    const size_t n = (size_t)B * T * W, no = (size_t)B * T * H * D;
    float *qkv = rand_f32(n, 1.0), *dout = rand_f32(no, 1.0);
    float *o32 = malloc(no * 4), *o16 = malloc(no * 4), *o16p = malloc(no * 4);
    float *l32 = malloc((size_t)B * H * T * 4), *l16 = malloc((size_t)B * H * T * 4),
          *l16p = malloc((size_t)B * H * T * 4);
    float *g32 = calloc(n, 4), *g16 = calloc(n, 4), *g16p = calloc(n, 4);
    float *scr = malloc(st_attention_batch_scratch_floats(T, D) * omp_get_max_threads() * 4);
    st_matmul_set_precision(ST_MATMUL_F32);
    st_attention_forward(o32, l32, qkv, B, T, H, KV, D, scr);
    st_attention_backward(g32, dout, qkv, o32, l32, B, T, H, KV, D, scr);
    st_matmul_set_precision(ST_MATMUL_BF16);
    st_attention_forward(o16, l16, qkv, B, T, H, KV, D, scr);
    st_attention_backward(g16, dout, qkv, o16, l16, B, T, H, KV, D, scr);
    st_attention_bf16_force_portable(1);
    st_attention_forward(o16p, l16p, qkv, B, T, H, KV, D, scr);
    st_attention_backward(g16p, dout, qkv, o16p, l16p, B, T, H, KV, D, scr);
    st_attention_bf16_force_portable(0);
    st_matmul_set_precision(ST_MATMUL_F32);
    /* bf16 operands: ~2^-9 relative rounding per operand, errors averaging over D and T */
    double eo = rel(o16, o32, no), el = rel(l16, l32, (size_t)B * H * T), eg = rel(g16, g32, n);
    if (!(eo < 6e-3 && el < 2e-3 && eg < 8e-3))
        fail_msg("bf16 attention B=%d T=%d H=%d KV=%d D=%d: out %.3g lse %.3g grad %.3g", B, T,
                 H, KV, D, eo, el, eg);
    /* ...and not just fp32 again: bf16 rounding is visible */
    assert_true(eo > 1e-5);
    /* AVX-512 and portable GEMMs: same bf16 operands, only the summation order differs (GEMM
     * sums; in unoptimised builds also the softmax sum, whose last-bit changes can flip the bf16
     * rounding of a few P / dS elements: the bounds allow for that, 30x under bf16-vs-fp32) */
    double po = rel(o16, o16p, no), pg = rel(g16, g16p, n);
    if (!(po < 2e-4 && pg < 2e-4))
        fail_msg("bf16 attention: AVX-512 vs portable GEMM: out %.3g grad %.3g", po, pg);
    free(qkv); free(dout); free(o32); free(o16); free(o16p); free(l32); free(l16); free(l16p);
    free(g32); free(g16); free(g16p); free(scr);
}

static void test_attention_bf16(void **state) {
    (void)state;
    att_bf16_case(2, 70, 6, 2, 64);  /* SmolLM2 head size and GQA, two query blocks */
    att_bf16_case(1, 129, 3, 1, 24); /* odd T (pair padding), 3 blocks, D < 64 columns */
    att_bf16_case(2, 5, 4, 4, 5);    /* odd D, tiny T */
}

int main(void) {
    st_rng_seed(&g_rng, 4321);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xent_fused_reference),
        cmocka_unit_test(test_xent_fused_fd),
        cmocka_unit_test(test_xent_fused_vs_separate),
        cmocka_unit_test(test_compact_lmhead),
        cmocka_unit_test(test_compact_no_targets),
        cmocka_unit_test(test_attention_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
