/* test_kernels_bf16ops.c - the bf16-operand training path: the kernels that write bf16 matmul
 * operands (RMSNorm, SwiGLU forward/backward: exactly the round-to-nearest-even of the fp32
 * kernels' values, rounding written out here independently), the bf16-operand matmuls (vs a
 * double-precision product of the bf16-rounded operands, and bit-equal to the fp32-operand
 * calls in ST_MATMUL_BF16 mode), and a whole training forward/backward (bit-equal to the same
 * step through a backend without the bf16 entries, i.e. the fp32-operand path). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdint.h>
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

/* bf16 round-to-nearest-even of a finite float, from its definition: keep the top 16 bits,
 * round on the 16 dropped ones (ties to the even kept value) */
static uint16_t rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t lo = u & 0xffffu, hi = u >> 16;
    if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u))) return (uint16_t)(hi + 1);
    return (uint16_t)hi;
}

static double b2d(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t *to16(const float *x, size_t n) {
    uint16_t *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = rne(x[i]);
    return h;
}

static float *widen(const uint16_t *h, size_t n) {
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) f[i] = (float)b2d(h[i]);
    return f;
}

static void assert_bf16_of(const uint16_t *got, const float *f32, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (got[i] != rne(f32[i]))
            fail_msg("%s[%zu]: bf16 0x%04x, expected 0x%04x (rne of %.9g)", what, i, got[i],
                     rne(f32[i]), f32[i]);
}

static double rel(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den + 1e-300));
}

/* ---- RMSNorm / SwiGLU bf16 writers --------------------------------------------------------- */

/* rstd[n] in double: 1/sqrt(mean x² + eps) */
static double rstd_ref(const float *x, int C, double eps) {
    double ss = 0;
    for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
    return 1.0 / sqrt(ss / C + eps);
}

static void test_rmsnorm_bf16(void **state) {
    (void)state;
    const int Cs[] = {17, 300, 576}; /* < one chunk, a partial second chunk, SmolLM2's C */
    for (int k = 0; k < 3; k++) {
        const int N = 23, C = Cs[k];
        const size_t n = (size_t)N * C;
        float *x = rand_f32(n, 2.0), *y = rand_f32(n, 1.0), *w = rand_f32((size_t)C, 1.0);
        float *r16 = malloc(N * 4), *r2 = malloc(N * 4), *xo = malloc(n * 4);
        uint16_t *o16 = malloc(n * 2), *o2 = malloc(n * 2);
        st_rmsnorm_forward_bf16(o16, r16, x, w, N, C, 1e-5f);
        for (int r = 0; r < N; r++) {
            const double ref = rstd_ref(x + (size_t)r * C, C, 1e-5);
            if (!(fabs(r16[r] - ref) <= 1e-6 * ref)) fail_msg("rstd row %d: %.9g vs %.9g", r, r16[r], ref);
            for (int i = 0; i < C; i++) { /* the bf16 of the fp32 x·r·w */
                const float v = x[(size_t)r * C + i] * r16[r] * w[i];
                if (o16[(size_t)r * C + i] != rne(v))
                    fail_msg("rmsnorm bf16 [%d,%d]: 0x%04x vs rne(%.9g)", r, i, o16[(size_t)r * C + i], v);
            }
        }
        st_rmsnorm_forward_bf16(o2, NULL, x, w, N, C, 1e-5f); /* rstd optional */
        assert_memory_equal(o2, o16, n * 2);
        /* residual fused: xo = x + y exactly, then the same norm of xo */
        st_residual_rmsnorm_forward_bf16(xo, o16, r16, x, y, w, N, C, 1e-5f);
        for (size_t i = 0; i < n; i++) assert_true(xo[i] == x[i] + y[i]);
        st_rmsnorm_forward_bf16(o2, r2, xo, w, N, C, 1e-5f);
        assert_memory_equal(o2, o16, n * 2);
        assert_memory_equal(r2, r16, N * 4);
        /* in place (xo aliasing x) */
        st_residual_rmsnorm_forward_bf16(x, o2, r2, x, y, w, N, C, 1e-5f);
        assert_memory_equal(x, xo, n * 4);
        assert_memory_equal(o2, o16, n * 2);
        free(x); free(y); free(w); free(r16); free(r2); free(xo); free(o16); free(o2);
    }
}

/* rmsnorm backward, lane-order dot, vs double reference and the fp32 kernel */
static void test_rmsnorm_backward_bf16(void **state) {
    (void)state;
    const int Cs[] = {17, 576};
    for (int k = 0; k < 2; k++) {
        const int N = 21, C = Cs[k];
        const size_t n = (size_t)N * C;
        float *x = rand_f32(n, 2.0), *g = rand_f32(n, 1.0), *w = rand_f32((size_t)C, 1.0);
        float *dx0 = rand_f32(n, 1.0), *dw0 = rand_f32((size_t)C, 1.0), *rstd = malloc(N * 4);
        float *dx = malloc(n * 4), *dw = malloc(C * 4), *dx2 = malloc(n * 4), *dw2 = malloc(C * 4);
        double *rdx = malloc(n * sizeof *rdx), *rdw = malloc(C * sizeof *rdw);
        for (int r = 0; r < N; r++) rstd[r] = (float)rstd_ref(x + (size_t)r * C, C, 1e-5);
        for (int i = 0; i < C; i++) rdw[i] = dw0[i];
        for (int r = 0; r < N; r++) {
            const float *xr = x + (size_t)r * C, *gr = g + (size_t)r * C;
            const double rs = rstd[r];
            double dot = 0;
            for (int i = 0; i < C; i++) dot += (double)gr[i] * w[i] * xr[i];
            for (int i = 0; i < C; i++) {
                rdx[(size_t)r * C + i] = dx0[(size_t)r * C + i] + rs * w[i] * gr[i] -
                                         xr[i] * rs * rs * rs * dot / C;
                rdw[i] += (double)gr[i] * xr[i] * rs;
            }
        }
        memcpy(dx, dx0, n * 4); memcpy(dw, dw0, C * 4);
        memcpy(dx2, dx0, n * 4); memcpy(dw2, dw0, C * 4);
        uint16_t *dx16 = malloc(n * 2);
        st_rmsnorm_backward_bf16(dx, dx16, dw, g, x, w, rstd, N, C);
        assert_bf16_of(dx16, dx, n, "rmsnorm bwd bf16 dx16");
        free(dx16);
        st_rmsnorm_backward(dx2, dw2, g, x, w, rstd, N, C);
        if (!(rel(dx, rdx, n) < 1e-6 && rel(dw, rdw, (size_t)C) < 1e-6))
            fail_msg("rmsnorm bwd bf16 C=%d: dx %.3g dw %.3g", C, rel(dx, rdx, n), rel(dw, rdw, (size_t)C));
        assert_memory_equal(dw, dw2, C * 4); /* same column sums */
        free(x); free(g); free(w); free(dx0); free(dw0); free(rstd); free(dx); free(dw);
        free(dx2); free(dw2); free(rdx); free(rdw);
    }
}

static void test_swiglu_bf16(void **state) {
    (void)state;
    const int Is[] = {5, 300, 1536};
    for (int k = 0; k < 3; k++) {
        const int N = 19, I = Is[k];
        const size_t n1 = (size_t)N * I, n2 = 2 * n1;
        float *gu = rand_f32(n2, 3.0), *d = rand_f32(n1, 1.0);
        float *h32 = malloc(n1 * 4), *dgu32 = calloc(n2, 4);
        uint16_t *h16 = malloc(n1 * 2), *dgu16 = malloc(n2 * 2);
        memset(dgu16, 0x7f, n2 * 2); /* garbage: the bf16 backward writes, never reads */
        st_swiglu_forward(h32, gu, N, I);
        st_swiglu_forward_bf16(h16, gu, N, I);
        assert_bf16_of(h16, h32, n1, "swiglu fwd bf16");
        st_swiglu_backward(dgu32, d, gu, N, I);
        st_swiglu_backward_bf16(dgu16, d, gu, N, I);
        assert_bf16_of(dgu16, dgu32, n2, "swiglu bwd bf16");
        free(gu); free(d); free(h32); free(dgu32); free(h16); free(dgu16);
    }
}

static void test_rope_backward_bf16(void **state) {
    (void)state;
    const int N = 9, D = 10, n_heads = 5, stride = 7 * D + 3; /* 2 unrotated heads + 3 extra */
    const int h = D / 2;
    float *dx = rand_f32((size_t)N * stride, 1.0), *ref = malloc((size_t)N * stride * 4);
    float *c = malloc((size_t)N * h * 4), *sn = malloc((size_t)N * h * 4);
    for (int i = 0; i < N * h; i++) {
        c[i] = cosf(0.3f * (float)i);
        sn[i] = sinf(0.3f * (float)i);
    }
    memcpy(ref, dx, (size_t)N * stride * 4);
    st_rope_backward(ref, N, n_heads, D, stride, c, sn);
    uint16_t *o = malloc((size_t)N * stride * 2);
    float *keep = malloc((size_t)N * stride * 4);
    memcpy(keep, dx, (size_t)N * stride * 4);
    st_rope_backward_bf16(o, dx, N, n_heads, D, stride, c, sn);
    assert_bf16_of(o, ref, (size_t)N * stride, "rope bwd bf16");
    assert_memory_equal(dx, keep, (size_t)N * stride * 4); /* input only read */
    free(dx); free(ref); free(c); free(sn); free(o); free(keep);
}

/* ---- bf16-operand matmuls ------------------------------------------------------------------ */

static void mm_case(int M, int K, int N) {
    st_matmul_set_precision(ST_MATMUL_BF16);
    float *in = rand_f32((size_t)M * K, 1.0), *w = rand_f32((size_t)N * K, 0.5);
    float *bias = rand_f32((size_t)N, 1.0), *dout = rand_f32((size_t)M * N, 1.0);
    uint16_t *in16 = to16(in, (size_t)M * K), *dout16 = to16(dout, (size_t)M * N);
    uint16_t *w16 = to16(w, (size_t)N * K);
    float *inr = widen(in16, (size_t)M * K); /* the bf16 values as fp32 */
    /* forward: vs double product of bf16 operands; bit-equal to the fp32-operand call */
    float *o = malloc((size_t)M * N * 4), *o2 = malloc((size_t)M * N * 4);
    double *ref = malloc((size_t)(M > N ? M : N) * (K > N ? K : N) * sizeof *ref);
    st_matmul_forward_bf16(o, in16, w, bias, M, K, N);
    st_matmul_forward(o2, inr, w, bias, M, K, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = bias[j];
            for (int k = 0; k < K; k++)
                s += b2d(in16[(size_t)i * K + k]) * b2d(w16[(size_t)j * K + k]);
            ref[(size_t)i * N + j] = s;
        }
    if (!(rel(o, ref, (size_t)M * N) < 1e-5))
        fail_msg("bf16 matmul fwd %dx%dx%d: rel %.3g", M, K, N, rel(o, ref, (size_t)M * N));
    assert_memory_equal(o, o2, (size_t)M * N * 4);
    /* backward, each operand form: din written over garbage, dw accumulated onto dw0 */
    float *dw0 = rand_f32((size_t)N * K, 1.0);
    double *rdin = malloc((size_t)M * K * sizeof *rdin), *rdw = malloc((size_t)N * K * sizeof *rdw);
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int j = 0; j < N; j++)
                s += b2d(dout16[(size_t)i * N + j]) * b2d(w16[(size_t)j * K + k]);
            rdin[(size_t)i * K + k] = s;
        }
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++) {
            double s = dw0[(size_t)j * K + k];
            for (int i = 0; i < M; i++)
                s += b2d(dout16[(size_t)i * N + j]) * b2d(in16[(size_t)i * K + k]);
            rdw[(size_t)j * K + k] = s;
        }
    float *din = malloc((size_t)M * K * 4), *dw = malloc((size_t)N * K * 4);
    float *din2 = calloc((size_t)M * K, 4), *dw2 = malloc((size_t)N * K * 4);
    memcpy(dw2, dw0, (size_t)N * K * 4);
    st_matmul_backward(din2, dw2, NULL, dout, in, w, M, K, N); /* fp32 operands, bf16 mode */
    for (int form = 0; form < 4; form++) {
        const int d16 = form & 1, i16 = form >> 1;
        for (size_t i = 0; i < (size_t)M * K; i++) din[i] = 1e30f;
        memcpy(dw, dw0, (size_t)N * K * 4);
        st_matmul_backward_bf16(din, dw, d16 ? NULL : dout, d16 ? dout16 : NULL, 0, i16 ? NULL : in,
                                i16 ? in16 : NULL, w, M, K, N);
        const double ed = rel(din, rdin, (size_t)M * K), ew = rel(dw, rdw, (size_t)N * K);
        if (!(ed < 1e-5 && ew < 1e-5))
            fail_msg("bf16 matmul bwd %dx%dx%d form %d: din %.3g dw %.3g", M, K, N, form, ed, ew);
        assert_memory_equal(dw, dw2, (size_t)N * K * 4);
        for (size_t i = 0; i < (size_t)M * K; i++) assert_true(din[i] == din2[i]);
    }
    /* din only / dw only */
    for (size_t i = 0; i < (size_t)M * K; i++) din[i] = 1e30f;
    st_matmul_backward_bf16(din, NULL, NULL, dout16, 0, NULL, NULL, w, M, K, N);
    for (size_t i = 0; i < (size_t)M * K; i++) assert_true(din[i] == din2[i]);
    memcpy(dw, dw0, (size_t)N * K * 4);
    st_matmul_backward_bf16(NULL, dw, dout, NULL, 0, NULL, in16, w, M, K, N);
    assert_memory_equal(dw, dw2, (size_t)N * K * 4);
    /* bf16 dout with a row stride (the lm_head's in-place d(logits): stride 2N) */
    {
        uint16_t *wide = malloc((size_t)M * 2 * N * 2);
        for (size_t i = 0; i < (size_t)M * 2 * N; i++) wide[i] = 0x7fc0; /* NaN padding */
        for (int i = 0; i < M; i++) memcpy(wide + (size_t)i * 2 * N, dout16 + (size_t)i * N, (size_t)N * 2);
        for (size_t i = 0; i < (size_t)M * K; i++) din[i] = 1e30f;
        memcpy(dw, dw0, (size_t)N * K * 4);
        st_matmul_backward_bf16(din, dw, NULL, wide, 2 * N, in, NULL, w, M, K, N);
        for (size_t i = 0; i < (size_t)M * K; i++) assert_true(din[i] == din2[i]);
        assert_memory_equal(dw, dw2, (size_t)N * K * 4);
        free(wide);
    }
    /* fp32 dout in column chunks (the lm_head path): each chunk writes its rows of din */
    st_mm_set_chunk_elems((size_t)N * 3);
    for (size_t i = 0; i < (size_t)M * K; i++) din[i] = 1e30f;
    memcpy(dw, dw0, (size_t)N * K * 4);
    st_matmul_backward_bf16(din, dw, dout, NULL, 0, in, NULL, w, M, K, N);
    st_mm_set_chunk_elems(0);
    if (!(rel(din, rdin, (size_t)M * K) < 1e-5 && rel(dw, rdw, (size_t)N * K) < 1e-5))
        fail_msg("bf16 matmul bwd chunked: din %.3g dw %.3g", rel(din, rdin, (size_t)M * K),
                 rel(dw, rdw, (size_t)N * K));
    st_matmul_set_precision(ST_MATMUL_F32);
    free(in); free(w); free(bias); free(dout); free(in16); free(dout16); free(w16); free(inr);
    free(o); free(o2); free(ref); free(dw0); free(rdin); free(rdw); free(din); free(dw);
    free(din2); free(dw2);
}

static void test_matmul_bf16_operands(void **state) {
    (void)state;
    mm_case(37, 70, 45); /* odd sizes: the 3-row chunks leave a tail */
    mm_case(64, 32, 96);
}

/* ---- cross-entropy with bf16 d(logits) in place ------------------------------------------ */

static void test_xent_fused_bf16(void **state) {
    (void)state;
    const int N = 6, Vs[] = {49, 1000}; /* a partial 16-chunk; V > 2·16 */
    for (int k = 0; k < 2; k++) {
        const int V = Vs[k];
        const size_t nv = (size_t)N * V;
        int32_t t[6] = {3, -1, 0, V - 1, 17 % V, 5};
        float w[6] = {0.5f, 1.0f, 0.0f, 2.0f, 1.0f, 0.25f}; /* row 2: weight 0 */
        float *x = rand_f32(nv, 3.0), *a = malloc(nv * 4), *b = malloc(nv * 4);
        float la[6], lb[6];
        memcpy(a, x, nv * 4);
        memcpy(b, x, nv * 4);
        st_crossentropy_fused(la, a, t, w, N, V);
        st_crossentropy_fused_bf16(lb, b, t, w, N, V);
        assert_memory_equal(la, lb, sizeof la);
        for (int n = 0; n < N; n++) {
            const uint16_t *row = (const uint16_t *)(b + (size_t)n * V);
            for (int v = 0; v < V; v++)
                if (row[v] != rne(a[(size_t)n * V + v]))
                    fail_msg("xent bf16 V=%d row %d col %d: 0x%04x vs rne(%.9g)", V, n, v, row[v],
                             a[(size_t)n * V + v]);
        }
        free(x); free(a); free(b);
    }
}

/* ---- a whole training step --------------------------------------------------------------- */

/* The training forward/backward in ST_MATMUL_BF16 mode through the CPU backend (bf16 operands
 * kept by their producers, fused residual + norm, input gradients written) and through a copy
 * of it without the bf16 entries (every matmul rounds fp32 operands itself, gradients zeroed
 * and accumulated). The same products on bf16 values that differ only where the RMSNorm's
 * lane-order Σx² moves rstd by an ulp and flips a rounding: agreement to ~1e-4. */
static void step_case(int bias) {
    st_config cfg = st_test_llama_config(32, 48, 4, 2, 8, 67);
    cfg.tie_word_embeddings = 0;
    cfg.attention_bias = bias;
    st_model *m = NULL;
    assert_int_equal(st_model_new(&cfg, &m), ST_OK);
    st_test_randomize(m, 11);
    st_backend plain = *st_backend_cpu();
    plain.matmul_forward_bf16 = NULL;
    plain.matmul_backward_bf16 = NULL;
    plain.rmsnorm_forward_bf16 = NULL;
    plain.swiglu_forward_bf16 = NULL;
    plain.swiglu_backward_bf16 = NULL;
    const int B = 2, T = 11, N = B * T, V = cfg.vocab_size;
    int32_t tok[22], tgt[22];
    for (int n = 0; n < N; n++) {
        tok[n] = (int32_t)((n * 17 + 3) % V);
        tgt[n] = n % T < 3 ? -1 : (int32_t)((n * 5 + 1) % V);
    }
    const size_t P = m->layout.n_floats;
    float *g[2] = {calloc(P, 4), calloc(P, 4)}, loss[2], tl[2][22];
    st_matmul_set_precision(ST_MATMUL_BF16);
    for (int k = 0; k < 2; k++) {
        st_backend_set(k ? &plain : NULL);
        st_weights gw;
        assert_int_equal(st_weights_bind(&gw, &m->config, &m->layout, g[k]), ST_OK);
        st_train_acts *a = NULL;
        assert_int_equal(st_train_acts_new(&m->config, B, T, &a), ST_OK);
        for (int rep = 0; rep < 2; rep++) { /* twice: gradients accumulate over micro-batches */
            assert_int_equal(st_train_forward(&m->config, &m->w, a, tok, tgt, NULL, B, T, 5.0f,
                                              &loss[k]), ST_OK);
            memcpy(tl[k], st_train_token_losses(a), sizeof tl[k]);
            assert_int_equal(st_train_backward(&m->config, &m->w, a, &gw), ST_OK);
        }
        st_train_acts_free(a);
        st_weights_unbind(&gw);
    }
    st_backend_set(NULL);
    st_matmul_set_precision(ST_MATMUL_F32);
    assert_true(fabsf(loss[0] - loss[1]) <= 1e-5f * loss[1] && loss[0] > 0.0f);
    for (int n = 0; n < N; n++) assert_true(fabsf(tl[0][n] - tl[1][n]) <= 1e-4f * (tl[1][n] + 1e-3f));
    size_t nz = 0;
    for (size_t i = 0; i < P; i++) nz += g[0][i] != 0.0f;
    assert_true(nz > P / 2);
    for (size_t i = 0; i < m->layout.n_tensors; i++) {
        const st_param_info *p = &m->layout.params[i];
        const double e = st_test_rel(g[0] + p->offset, g[1] + p->offset, p->numel);
        if (!(e <= 2e-3)) fail_msg("bf16 step (bias %d): %s rel err %.3g", bias, p->name, e);
    }
    free(g[0]);
    free(g[1]);
    st_model_free(m);
}

static void test_train_step_bf16(void **state) {
    (void)state;
    step_case(0);
    step_case(1);
}

int main(void) {
    st_rng_seed(&g_rng, 2718);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_bf16),
        cmocka_unit_test(test_rmsnorm_backward_bf16),
        cmocka_unit_test(test_swiglu_bf16),
        cmocka_unit_test(test_rope_backward_bf16),
        cmocka_unit_test(test_matmul_bf16_operands),
        cmocka_unit_test(test_xent_fused_bf16),
        cmocka_unit_test(test_train_step_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
