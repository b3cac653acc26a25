/* sampler.c - greedy / temperature / top-k / top-p sampling (see sampler.h).
 * Order and tie rules follow transformers' TemperatureLogitsWarper, TopKLogitsWarper (keeps every
 * token whose score is >= the k-th largest) and TopPLogitsWarper (min_tokens_to_keep = 1). */
#include "safetune/sampler.h"

#include <math.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

struct st_sampler {
    st_sampler_params p;
    int n;
    float *x;     /* scaled logits [n] */
    float *tmp;   /* quickselect scratch [n] */
    double *w;    /* unnormalised probabilities exp(x - max) [n], 0 outside the kept set */
    int32_t *idx; /* candidate indices [n] */
};

st_sampler_params st_sampler_defaults(void) {
    st_sampler_params p = {0.0f, 0, 1.0f, 0};
    return p;
}

st_status st_sampler_params_check(const st_sampler_params *p) {
    if (!isfinite(p->temperature) || p->temperature < 0)
        return st_error(ST_ERR_ARG, "temperature must be a finite number >= 0 (got %g)",
                        (double)p->temperature);
    if (p->top_k < 0) return st_error(ST_ERR_ARG, "top_k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return st_error(ST_ERR_ARG, "top_p must be in (0, 1] (got %g)", (double)p->top_p);
    return ST_OK;
}

int st_sampler_is_greedy(const st_sampler_params *p) { return p->temperature <= 0.0f || p->top_k == 1; }

void st_sampler_seed_rng(st_rng *r, uint64_t seed, uint64_t seq_id) {
    /* splitmix64 finaliser over (seed, seq_id) so neighbouring ids give unrelated streams */
    uint64_t z = seed ^ (seq_id * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    st_rng_seed(r, z ^ (z >> 31));
}

/* Two passes: the largest non-NaN value (a SIMD max keeps the running max where x is NaN:
 * MAXPS returns its second operand when either is NaN), then the first index holding it. The
 * one-pass compare with a branch ran at ~1 element per cycle: 2-3% of a batch-32 greedy step. */
int32_t st_argmax(const float *logits, int n) {
    int i = 0;
    float m = -INFINITY;
#ifdef __AVX512F__
    __m512 vm = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= n; i += 16) vm = _mm512_max_ps(_mm512_loadu_ps(logits + i), vm);
    m = _mm512_reduce_max_ps(vm);
#endif
    for (; i < n; i++) m = logits[i] > m ? logits[i] : m;
    i = 0;
#ifdef __AVX512F__
    const __m512 vt = _mm512_set1_ps(m);
    for (; i + 16 <= n; i += 16) {
        const __mmask16 k = _mm512_cmp_ps_mask(_mm512_loadu_ps(logits + i), vt, _CMP_EQ_OQ);
        if (k) return i + __builtin_ctz(k);
    }
#endif
    for (; i < n; i++)
        if (logits[i] == m) return i;
    return 0; /* all NaN */
}

st_status st_sampler_new(const st_sampler_params *p, int n_vocab, st_sampler **out) {
    *out = NULL;
    st_status s = st_sampler_params_check(p);
    if (s) return s;
    if (n_vocab <= 0) return st_error(ST_ERR_ARG, "sampler: vocabulary size must be > 0 (got %d)", n_vocab);
    st_sampler *sm = st_calloc(1, sizeof *sm);
    if (!sm) return ST_ERR_NOMEM;
    sm->p = *p;
    sm->n = n_vocab;
    sm->x = st_malloc(sizeof(float) * (size_t)n_vocab);
    sm->tmp = st_malloc(sizeof(float) * (size_t)n_vocab);
    sm->w = st_malloc(sizeof(double) * (size_t)n_vocab);
    sm->idx = st_malloc(sizeof(int32_t) * (size_t)n_vocab);
    if (!sm->x || !sm->tmp || !sm->w || !sm->idx) {
        st_sampler_free(sm);
        return ST_ERR_NOMEM;
    }
    *out = sm;
    return ST_OK;
}

void st_sampler_free(st_sampler *s) {
    if (!s) return;
    free(s->x);
    free(s->tmp);
    free(s->w);
    free(s->idx);
    free(s);
}

/* k-th largest (1-based) of a[0..n) by quickselect; a is reordered. */
static float kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++, j--;
            }
        }
        if (target <= j) hi = j;
        else if (target >= i) lo = i;
        else return a[target];
    }
    return a[target];
}

static _Thread_local const double *g_sort_w; /* qsort has no context argument in C11 */
static int cmp_desc(const void *a, const void *b) {
    int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
    double wa = g_sort_w[ia], wb = g_sort_w[ib];
    if (wa > wb) return -1;
    if (wa < wb) return 1;
    return (ia > ib) - (ia < ib);
}

/* Fill s->w with the kept unnormalised probabilities; returns their sum. The kept set is listed
 * in s->idx[0..*n_kept). */
static double kept_weights(st_sampler *s, const float *logits, int *n_kept) {
    const int n = s->n;
    const float inv_t = 1.0f / s->p.temperature;
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        float v = logits[i] * inv_t;
        if (v != v) v = -INFINITY; /* NaN logits are never chosen */
        s->x[i] = v;
        if (v > mx) mx = v;
    }
    float thresh = -INFINITY;
    if (s->p.top_k > 0 && s->p.top_k < n) {
        memcpy(s->tmp, s->x, sizeof(float) * (size_t)n);
        thresh = kth_largest(s->tmp, n, s->p.top_k);
    }
    double z = 0.0;
    int m = 0;
    for (int i = 0; i < n; i++) {
        double wi = 0.0;
        if (s->x[i] >= thresh && s->x[i] > -INFINITY) {
            wi = exp((double)s->x[i] - (double)mx);
            s->idx[m++] = i;
        }
        s->w[i] = wi;
        z += wi;
    }
    if (m == 0) { /* every logit -inf or NaN: fall back to token 0 */
        s->w[0] = 1.0;
        s->idx[0] = 0;
        *n_kept = 1;
        return 1.0;
    }
    if (s->p.top_p < 1.0f) {
        const double target = (double)s->p.top_p * z;
        /* The nucleus is a prefix of the candidates sorted by weight. Sort only those above a
         * threshold t: if their mass reaches the target, every smaller token is outside it. */
        double t = 1e-2; /* relative to the max weight, which is exp(0) = 1 */
        int c;
        for (;;) {
            double mass = 0.0;
            c = 0;
            for (int j = 0; j < m; j++) {
                int32_t i = s->idx[j];
                if (s->w[i] >= t) {
                    int32_t tmpi = s->idx[c];
                    s->idx[c] = i;
                    s->idx[j] = tmpi;
                    c++;
                    mass += s->w[i];
                }
            }
            if (mass >= target || c == m || t == 0.0) break;
            t = t < 1e-300 ? 0.0 : t * 1e-4;
        }
        g_sort_w = s->w;
        qsort(s->idx, (size_t)c, sizeof(int32_t), cmp_desc);
        double cum = 0.0;
        int keep = 0;
        while (keep < c && (keep == 0 || cum < target)) cum += s->w[s->idx[keep++]];
        for (int j = keep; j < m; j++) s->w[s->idx[j]] = 0.0;
        m = keep;
        z = cum;
    }
    *n_kept = m;
    return z;
}

st_status st_sampler_probs(st_sampler *s, const float *logits, float *probs) {
    if (st_sampler_is_greedy(&s->p)) {
        memset(probs, 0, sizeof(float) * (size_t)s->n);
        probs[st_argmax(logits, s->n)] = 1.0f;
        return ST_OK;
    }
    int m;
    double z = kept_weights(s, logits, &m);
    for (int i = 0; i < s->n; i++) probs[i] = (float)(s->w[i] / z);
    return ST_OK;
}

int32_t st_sampler_sample(st_sampler *s, const float *logits, st_rng *rng) {
    if (st_sampler_is_greedy(&s->p)) return st_argmax(logits, s->n);
    int m;
    double z = kept_weights(s, logits, &m);
    double u = st_rng_double(rng) * z, cum = 0.0;
    for (int j = 0; j < m; j++) {
        cum += s->w[s->idx[j]];
        if (u < cum) return s->idx[j];
    }
    return s->idx[m - 1]; /* rounding: u landed at the very top */
}
