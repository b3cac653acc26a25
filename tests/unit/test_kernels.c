/* test_kernels.c - every kernel's forward against a naive double-precision evaluation of the op
 * written here, and every backward against central finite differences of that double op.
 *
 * Method: inputs x (all of an op's inputs, concatenated) and a random cotangent R; the scalar
 * L(x) = Σ op(x)·R is evaluated in double, and dL/dx by central differences with h = 1e-5
 * (truncation O(h²) ~ 1e-10, rounding ~1e-16/h ~ 1e-11: the FD gradient is exact to ~1e-9).
 * Our fp32 backward(R) must match it to ‖ours - fd‖ / ‖fd‖ ≤ 1e-4: fp32 arithmetic on O(1)
 * values over these tiny sizes accumulates ~1e-6 relative error, so 1e-4 leaves margin but
 * catches any wrong term (a missing term is O(1) relative). Forward: same 1e-5 bound vs double. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/config.h"
#include "model/matmul_bf16.h"
#include "safetune/kernels.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static st_rng g_rng;

static double *drand_vec(size_t n, double scale) {
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = scale * st_rng_normal(&g_rng);
    return v;
}
static float *to_f32(const double *d, size_t n) {
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++) f[i] = (float)d[i];
    return f;
}
/* relative error ‖a - b‖ / ‖b‖ (float vs double) */
static double rel_err(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num) / (sqrt(den) + 1e-300);
}

typedef double (*loss_fn)(const double *x, void *ctx);

/* central differences of f at x (n inputs), in double */
static double *fd_grad(loss_fn f, double *x, size_t n, void *ctx) {
    const double h = 1e-5;
    double *g = malloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double lp = f(x, ctx);
        x[i] = x0 - h;
        double lm = f(x, ctx);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * h);
    }
    return g;
}

#define CHECK_REL(ours, ref, n, tol, what)                                                       \
    do {                                                                                         \
        double e_ = rel_err(ours, ref, n);                                                       \
        if (!(e_ <= (tol))) fail_msg("%s: relative error %.3g > %.1g", what, e_, (double)(tol)); \
    } while (0)

/* ---- matmul ----------------------------------------------------------------------------- */
typedef struct { int M, K, N; const double *R; double *out; } mm_ctx;

static double mm_loss(const double *x, void *vc) {
    mm_ctx *c = vc;
    const double *in = x, *w = x + c->M * c->K, *b = w + c->N * c->K;
    double L = 0;
    for (int i = 0; i < c->M; i++)
        for (int j = 0; j < c->N; j++) {
            double s = b[j];
            for (int k = 0; k < c->K; k++) s += in[i * c->K + k] * w[j * c->K + k];
            if (c->out) c->out[i * c->N + j] = s;
            L += s * c->R[i * c->N + j];
        }
    return L;
}

static void test_matmul(void **state) {
    (void)state;
    mm_ctx c = {5, 7, 6, NULL, NULL};
    size_t nin = c.M * c.K, nw = c.N * c.K, n = nin + nw + c.N;
    double *x = drand_vec(n, 1.0);
    c.R = drand_vec(c.M * c.N, 1.0);
    double *out_ref = calloc(c.M * c.N, sizeof(double));
    c.out = out_ref;
    mm_loss(x, &c);
    c.out = NULL;
    float *xf = to_f32(x, n), *Rf = to_f32(c.R, c.M * c.N);
    float *out = malloc(c.M * c.N * sizeof *out);
    st_matmul_forward(out, xf, xf + nin, xf + nin + nw, c.M, c.K, c.N);
    CHECK_REL(out, out_ref, (size_t)c.M * c.N, 1e-5, "matmul forward");
    /* no bias */
    st_matmul_forward(out, xf, xf + nin, NULL, c.M, c.K, c.N);
    for (int i = 0; i < c.M; i++)
        for (int j = 0; j < c.N; j++) out_ref[i * c.N + j] -= x[nin + nw + j];
    CHECK_REL(out, out_ref, (size_t)c.M * c.N, 1e-5, "matmul forward (no bias)");

    double *g = fd_grad(mm_loss, x, n, &c);
    float *gf = calloc(n, sizeof *gf);
    /* accumulate semantics: start from 1 and subtract afterwards */
    for (size_t i = 0; i < n; i++) gf[i] = 1.0f;
    st_matmul_backward(gf, gf + nin, gf + nin + nw, Rf, xf, xf + nin, c.M, c.K, c.N);
    for (size_t i = 0; i < n; i++) gf[i] -= 1.0f;
    CHECK_REL(gf, g, n, 1e-4, "matmul backward");
    free(x); free((void *)c.R); free(out_ref); free(xf); free(Rf); free(out); free(g); free(gf);
}

/* bf16 operands: nearest value with 8 significant bits, ties to even (rint), via frexp */
static double bf16_round(double x) {
    int e;
    double m = frexp(x, &e);
    return ldexp(rint(ldexp(m, 8)), e - 8);
}

static void test_matmul_bf16(void **state) {
    (void)state;
    const int M = 9, K = 37, N = 11;
    double *a = drand_vec((size_t)M * K, 1.0), *w = drand_vec((size_t)N * K, 1.0);
    float *af = to_f32(a, (size_t)M * K), *wf = to_f32(w, (size_t)N * K);
    double *ref = malloc((size_t)M * N * sizeof *ref), *ref32 = malloc((size_t)M * N * sizeof *ref);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, s32 = 0;
            for (int k = 0; k < K; k++) {
                s += bf16_round(af[i * K + k]) * bf16_round(wf[j * K + k]);
                s32 += (double)af[i * K + k] * wf[j * K + k];
            }
            ref[i * N + j] = s;
            ref32[i * N + j] = s32;
        }
    float *out = malloc((size_t)M * N * sizeof *out), bias[11];
    st_matmul_set_precision(ST_MATMUL_BF16);
    assert_int_equal(st_matmul_get_precision(), ST_MATMUL_BF16);
    for (int rep = 0; rep < 2; rep++) { /* second call hits the primitive cache */
        st_matmul_forward(out, af, wf, NULL, M, K, N);
        CHECK_REL(out, ref, (size_t)M * N, 1e-5, "bf16 matmul vs bf16-rounded double");
    }
    assert_true(rel_err(out, ref32, (size_t)M * N) > 1e-4); /* it really rounded to bf16 */
    for (int j = 0; j < N; j++) bias[j] = (float)j;
    st_matmul_forward(out, af, wf, bias, M, K, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) ref[i * N + j] += j;
    CHECK_REL(out, ref, (size_t)M * N, 1e-5, "bf16 matmul with bias");
    st_matmul_set_precision(ST_MATMUL_F32);
    free(a); free(w); free(af); free(wf); free(ref); free(ref32); free(out);
}

/* bf16 backward: din += dout·W and dw += doutᵀ·x with bf16-rounded operands, fp32 accumulation,
 * vs the same products in double on bf16-rounded inputs; whole and column-chunked (7·N elements
 * per chunk: 3 of the 11 columns of dout, and a tail of 2). */
static void test_matmul_bf16_backward(void **state) {
    (void)state;
    const int M = 23, K = 37, N = 11;
    double *x = drand_vec((size_t)M * K, 1.0), *w = drand_vec((size_t)N * K, 1.0);
    double *g = drand_vec((size_t)M * N, 1.0);
    float *xf = to_f32(x, (size_t)M * K), *wf = to_f32(w, (size_t)N * K);
    float *gf = to_f32(g, (size_t)M * N);
    double *rdin = malloc((size_t)M * K * sizeof *rdin), *rdw = malloc((size_t)N * K * sizeof *rdw);
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            double s = 0.5; /* the accumulated-into start value */
            for (int j = 0; j < N; j++) s += bf16_round(gf[i * N + j]) * bf16_round(wf[j * K + k]);
            rdin[i * K + k] = s;
        }
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++) {
            double s = -0.25;
            for (int i = 0; i < M; i++) s += bf16_round(gf[i * N + j]) * bf16_round(xf[i * K + k]);
            rdw[j * K + k] = s;
        }
    float *din = malloc((size_t)M * K * sizeof *din), *dw = malloc((size_t)N * K * sizeof *dw);
    st_matmul_set_precision(ST_MATMUL_BF16);
    for (int chunked = 0; chunked < 2; chunked++) {
        st_mm_set_chunk_elems(chunked ? (size_t)7 * N : 0);
        for (int i = 0; i < M * K; i++) din[i] = 0.5f;
        for (int i = 0; i < N * K; i++) dw[i] = -0.25f;
        st_matmul_backward(din, dw, NULL, gf, xf, wf, M, K, N);
        CHECK_REL(din, rdin, (size_t)M * K, 1e-5, "bf16 matmul backward din");
        CHECK_REL(dw, rdw, (size_t)N * K, 1e-5, "bf16 matmul backward dw");
    }
    st_mm_set_chunk_elems(0);
    st_matmul_set_precision(ST_MATMUL_F32);
    free(x); free(w); free(g); free(xf); free(wf); free(gf); free(rdin); free(rdw); free(din);
    free(dw);
}

/* ---- rmsnorm ---------------------------------------------------------------------------- */
typedef struct { int N, C; double eps; const double *R; double *out; } rms_ctx;

static double rms_loss(const double *x, void *vc) {
    rms_ctx *c = vc;
    const double *w = x + c->N * c->C;
    double L = 0;
    for (int n = 0; n < c->N; n++) {
        double ms = 0;
        for (int i = 0; i < c->C; i++) ms += x[n * c->C + i] * x[n * c->C + i];
        double r = 1.0 / sqrt(ms / c->C + c->eps);
        for (int i = 0; i < c->C; i++) {
            double y = x[n * c->C + i] * r * w[i];
            if (c->out) c->out[n * c->C + i] = y;
            L += y * c->R[n * c->C + i];
        }
    }
    return L;
}

static void test_rmsnorm(void **state) {
    (void)state;
    rms_ctx c = {4, 8, 1e-5, NULL, NULL};
    size_t nx = c.N * c.C, n = nx + c.C;
    double *x = drand_vec(n, 1.0);
    c.R = drand_vec(nx, 1.0);
    double *ref = calloc(nx, sizeof(double));
    c.out = ref;
    rms_loss(x, &c);
    c.out = NULL;
    float *xf = to_f32(x, n), *Rf = to_f32(c.R, nx), *out = malloc(nx * sizeof *out);
    float rstd[4];
    st_rmsnorm_forward(out, rstd, xf, xf + nx, c.N, c.C, (float)c.eps);
    CHECK_REL(out, ref, nx, 1e-5, "rmsnorm forward");
    double *g = fd_grad(rms_loss, x, n, &c);
    float *gf = calloc(n, sizeof *gf);
    st_rmsnorm_backward(gf, gf + nx, Rf, xf, xf + nx, rstd, c.N, c.C);
    CHECK_REL(gf, g, n, 1e-4, "rmsnorm backward");
    free(x); free((void *)c.R); free(ref); free(xf); free(Rf); free(out); free(g); free(gf);
}

/* ---- rope ------------------------------------------------------------------------------- */
typedef struct { int N, nh, D, stride; const int *pos; const double *inv, *R; double *out; } rope_ctx;

/* rotate_half written from the HF definition: q*cos + cat(-q2, q1)*sin */
static double rope_loss(const double *x, void *vc) {
    rope_ctx *c = vc;
    const int h = c->D / 2;
    double L = 0;
    for (int n = 0; n < c->N; n++)
        for (int hd = 0; hd < c->nh; hd++) {
            const double *v = x + n * c->stride + hd * c->D;
            for (int i = 0; i < c->D; i++) {
                double ang = c->pos[n] * c->inv[i % h];
                double rot = i < h ? -v[i + h] : v[i - h];
                double y = v[i] * cos(ang) + rot * sin(ang);
                if (c->out) c->out[n * c->stride + hd * c->D + i] = y;
                L += y * c->R[n * c->stride + hd * c->D + i];
            }
        }
    return L;
}

static void test_rope(void **state) {
    (void)state;
    int pos[3] = {0, 5, 117};
    double inv[4];
    st_config cfg = {.head_dim = 8, .rope_theta = 10000.0f};
    st_config_rope_inv_freq(&cfg, inv);
    for (int i = 0; i < 4; i++) assert_true(fabs(inv[i] - pow(10000.0, -2.0 * i / 8)) < 1e-6 * inv[i]);
    rope_ctx c = {3, 2, 8, 19, pos, inv, NULL, NULL}; /* stride 19 > 2*8: padding untouched */
    size_t n = (size_t)c.N * c.stride;
    double *x = drand_vec(n, 1.0);
    double *R = drand_vec(n, 1.0);
    for (int r = 0; r < c.N; r++)
        for (int i = 16; i < 19; i++) R[r * 19 + i] = 0; /* padding is not an output */
    c.R = R;
    double *ref = malloc(n * sizeof *ref);
    memcpy(ref, x, n * sizeof *ref); /* padding keeps its input value */
    c.out = ref;
    rope_loss(x, &c);
    c.out = NULL;
    float cs[3 * 4], sn[3 * 4];
    st_rope_cos_sin(cs, sn, pos, 3, inv, 8);
    float *xf = to_f32(x, n);
    st_rope_forward(xf, c.N, c.nh, c.D, c.stride, cs, sn);
    CHECK_REL(xf, ref, n, 1e-5, "rope forward");
    double *g = fd_grad(rope_loss, x, n, &c);
    float *gf = to_f32(R, n);
    st_rope_backward(gf, c.N, c.nh, c.D, c.stride, cs, sn);
    CHECK_REL(gf, g, n, 1e-4, "rope backward");
    free(x); free(R); free(ref); free(xf); free(g); free(gf);
}

static void test_rope_scaling(void **state) {
    (void)state;
    /* llama3 scaling, hand-computed from transformers _compute_llama3_parameters:
     * factor 8, low 1, high 4, old 64 => low_wl 64, high_wl 16. D = 8, theta = 10000:
     * inv = [1, 0.1, 0.01, 0.001], wavelengths 2π/inv = [6.28, 62.8, 628, 6283].
     * i=0: wl < 16 -> unchanged 1. i=1: 16 <= 62.8 <= 64 -> medium: smooth = (64/62.83 - 1)/3
     * = 0.006197..., f = (1-s)*0.1/8 + s*0.1. i=2,3: wl > 64 -> inv/8. */
    st_config c = {.head_dim = 8, .rope_theta = 10000.0f};
    c.rope_scaling.type = ST_ROPE_SCALING_LLAMA3;
    c.rope_scaling.factor = 8;
    c.rope_scaling.low_freq_factor = 1;
    c.rope_scaling.high_freq_factor = 4;
    c.rope_scaling.original_max_position_embeddings = 64;
    double inv[4];
    st_config_rope_inv_freq(&c, inv);
    double s = (64.0 / (2 * M_PI / 0.1) - 1.0) / 3.0;
    double want[4] = {1.0, (1 - s) * 0.1 / 8 + s * 0.1, 0.01 / 8, 0.001 / 8};
    for (int i = 0; i < 4; i++) assert_true(fabs(inv[i] - want[i]) < 1e-9 * want[i]);
    c.rope_scaling.type = ST_ROPE_SCALING_LINEAR;
    c.rope_scaling.factor = 4;
    st_config_rope_inv_freq(&c, inv);
    assert_true(fabs(inv[1] - 0.1 / 4) < 1e-12);
}

/* ---- attention -------------------------------------------------------------------------- */
typedef struct { int B, T, H, KV, D; const double *R; double *out; } att_ctx;

static double att_loss(const double *x, void *vc) {
    att_ctx *c = vc;
    const int W = (c->H + 2 * c->KV) * c->D, rep = c->H / c->KV;
    double L = 0, *p = malloc(c->T * sizeof *p);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++) {
            const int g = h / rep;
            for (int i = 0; i < c->T; i++) {
                const double *q = x + (size_t)(b * c->T + i) * W + h * c->D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const double *k = x + (size_t)(b * c->T + j) * W + (c->H + g) * c->D;
                    double s = 0;
                    for (int d = 0; d < c->D; d++) s += q[d] * k[d];
                    p[j] = s / sqrt((double)c->D);
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < c->D; d++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++)
                        o += p[j] / sum * x[(size_t)(b * c->T + j) * W + (c->H + c->KV + g) * c->D + d];
                    size_t oi = (size_t)(b * c->T + i) * c->H * c->D + h * c->D + d;
                    if (c->out) c->out[oi] = o;
                    L += o * c->R[oi];
                }
            }
        }
    free(p);
    return L;
}

static void attention_case(int B, int T, int H, int KV, int D) {
    att_ctx c = {B, T, H, KV, D, NULL, NULL};
    const int W = (H + 2 * KV) * D;
    size_t n = (size_t)B * T * W, no = (size_t)B * T * H * D;
    double *x = drand_vec(n, 1.0);
    c.R = drand_vec(no, 1.0);
    double *ref = calloc(no, sizeof *ref);
    c.out = ref;
    att_loss(x, &c);
    c.out = NULL;
    float *xf = to_f32(x, n), *Rf = to_f32(c.R, no), *out = malloc(no * sizeof *out);
    float *lse = malloc((size_t)B * H * T * sizeof *lse);
    float *scratch = malloc(st_attention_batch_scratch_floats(T, D) * omp_get_max_threads() * sizeof(float));
    st_attention_forward(out, lse, xf, B, T, H, KV, D, scratch);
    CHECK_REL(out, ref, no, 1e-5, "attention forward");
    double *g = fd_grad(att_loss, x, n, &c);
    float *gf = calloc(n, sizeof *gf);
    st_attention_backward(gf, Rf, xf, out, lse, B, T, H, KV, D, scratch);
    CHECK_REL(gf, g, n, 1e-4, "attention backward");

    /* head kernel with Tq < Tk (cached prefix): the last Tq queries of a sequence see the same
     * keys as in the full causal pass, so their outputs must equal the full pass rows. */
    if (B == 1) {
        int Tq = T > 3 ? 3 : 1;
        float *o2 = malloc((size_t)Tq * D * sizeof *o2);
        for (int h = 0; h < H; h++) {
            int gq = h / (H / KV);
            st_attention_head_forward(o2, NULL, xf + (size_t)(T - Tq) * W + h * D,
                                      xf + (H + gq) * D, xf + (H + KV + gq) * D, Tq, T, D, W, W,
                                      D, scratch);
            for (int i = 0; i < Tq; i++)
                CHECK_REL(o2 + i * D, ref + (size_t)(T - Tq + i) * H * D + h * D, (size_t)D,
                          1e-5, "attention head with cache offset");
        }
        free(o2);
    }
    free(x); free((void *)c.R); free(ref); free(xf); free(Rf); free(out); free(lse);
    free(scratch); free(g); free(gf);
}

static void test_attention(void **state) {
    (void)state;
    attention_case(2, 5, 4, 2, 4);  /* GQA, several batch rows, loop path for short rows */
    attention_case(1, 7, 3, 1, 6);  /* MQA */
    attention_case(1, 70, 2, 1, 4); /* > one query block of 64 rows (GEMM path, blocking) */
}

/* ---- swiglu ----------------------------------------------------------------------------- */
typedef struct { int N, I; const double *R; double *out; } sw_ctx;

static double sw_loss(const double *x, void *vc) {
    sw_ctx *c = vc;
    double L = 0;
    for (int n = 0; n < c->N; n++)
        for (int i = 0; i < c->I; i++) {
            double g = x[n * 2 * c->I + i], u = x[n * 2 * c->I + c->I + i];
            double y = g / (1 + exp(-g)) * u;
            if (c->out) c->out[n * c->I + i] = y;
            L += y * c->R[n * c->I + i];
        }
    return L;
}

static void test_swiglu(void **state) {
    (void)state;
    sw_ctx c = {3, 5, NULL, NULL};
    size_t n = 2 * c.N * c.I, no = c.N * c.I;
    double *x = drand_vec(n, 2.0);
    c.R = drand_vec(no, 1.0);
    double *ref = calloc(no, sizeof *ref);
    c.out = ref;
    sw_loss(x, &c);
    c.out = NULL;
    float *xf = to_f32(x, n), *Rf = to_f32(c.R, no), *out = malloc(no * sizeof *out);
    st_swiglu_forward(out, xf, c.N, c.I);
    CHECK_REL(out, ref, no, 1e-5, "swiglu forward");
    double *g = fd_grad(sw_loss, x, n, &c);
    float *gf = calloc(n, sizeof *gf);
    st_swiglu_backward(gf, Rf, xf, c.N, c.I);
    CHECK_REL(gf, g, n, 1e-4, "swiglu backward");
    free(x); free((void *)c.R); free(ref); free(xf); free(Rf); free(out); free(g); free(gf);
}

/* ---- embedding (exact) ------------------------------------------------------------------ */
static void test_embedding(void **state) {
    (void)state;
    float table[4 * 3], dtab[4 * 3] = {0}, out[5 * 3], dout[5 * 3];
    int32_t tok[5] = {2, 0, 2, 3, 2};
    for (int i = 0; i < 12; i++) table[i] = (float)i;
    for (int i = 0; i < 15; i++) dout[i] = (float)(i + 1);
    st_embedding_forward(out, tok, table, 5, 3);
    for (int n = 0; n < 5; n++)
        for (int c = 0; c < 3; c++) assert_true(out[n * 3 + c] == table[tok[n] * 3 + c]);
    st_embedding_backward(dtab, dout, tok, 5, 3);
    /* row 2 gets rows 0, 2, 4 of dout: (1+7+13, 2+8+14, 3+9+15); row 0 gets row 1; row 1 none */
    float want[12] = {4, 5, 6, 0, 0, 0, 21, 24, 27, 10, 11, 12};
    for (int i = 0; i < 12; i++) assert_true(dtab[i] == want[i]);
}

/* ---- cross-entropy ---------------------------------------------------------------------- */
typedef struct { int N, V; const int32_t *t; const double *R; double *out; } ce_ctx;

static double ce_loss(const double *x, void *vc) {
    ce_ctx *c = vc;
    double L = 0;
    for (int n = 0; n < c->N; n++) {
        if (c->t[n] < 0) {
            if (c->out) c->out[n] = 0;
            continue;
        }
        double s = 0;
        for (int v = 0; v < c->V; v++) s += exp(x[n * c->V + v]);
        double l = log(s) - x[n * c->V + c->t[n]];
        if (c->out) c->out[n] = l;
        L += l * c->R[n];
    }
    return L;
}

static void test_crossentropy(void **state) {
    (void)state;
    int32_t t[4] = {3, -100, 0, 6};
    ce_ctx c = {4, 7, t, NULL, NULL};
    size_t n = 28;
    double *x = drand_vec(n, 3.0);
    double R[4] = {0.5, 0.7, 0.0, 1.25}; /* row 2 has zero weight (masked) */
    c.R = R;
    double ref[4];
    c.out = ref;
    ce_loss(x, &c);
    c.out = NULL;
    float *xf = to_f32(x, n), losses[4], Rf[4] = {0.5f, 0.7f, 0.0f, 1.25f};
    st_crossentropy_forward(losses, xf, t, 4, 7);
    CHECK_REL(losses, ref, 4, 1e-5, "cross-entropy forward");
    assert_true(losses[1] == 0.0f);
    double *g = fd_grad(ce_loss, x, n, &c);
    float *gf = malloc(n * sizeof *gf);
    st_crossentropy_backward(gf, xf, t, Rf, 4, 7);
    CHECK_REL(gf, g, n, 1e-4, "cross-entropy backward");
    /* in place (dlogits aliasing logits) gives the same */
    st_crossentropy_backward(xf, xf, t, Rf, 4, 7);
    for (size_t i = 0; i < n; i++) assert_true(xf[i] == gf[i]);
    free(x); free(xf); free(g); free(gf);
}

static void test_backend_table(void **state) {
    (void)state;
    const st_backend *b = st_backend_get();
    assert_non_null(b);
    assert_ptr_equal(b, st_backend_cpu());
    assert_ptr_equal(b->matmul_forward, st_matmul_forward);
    assert_ptr_equal(b->attention_backward, st_attention_backward);
}

int main(void) {
    st_rng_seed(&g_rng, 1234);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),    cmocka_unit_test(test_matmul_bf16),
        cmocka_unit_test(test_matmul_bf16_backward),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),      cmocka_unit_test(test_rope_scaling),
        cmocka_unit_test(test_attention), cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_embedding), cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_backend_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
