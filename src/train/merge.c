/* merge.c - linear / SLERP / DARE merges of θ_ft with θ0 over the flat layout (merge.h).
 * Work is cut into fixed chunks of at most CHUNK floats inside each tensor; every sum is kept
 * per chunk and added in chunk order, so results do not depend on the OpenMP thread count. */
#include "safetune/merge.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK ((size_t)1 << 16)
#define SLERP_DOT_THRESHOLD 0.9995 /* mergekit's DOT_THRESHOLD */
#define SLERP_EPS 1e-8             /* mergekit's normalize() eps */

static uint64_t mix64(uint64_t z) { /* splitmix64 finaliser (Steele, Lea & Flood 2014) */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

double st_merge_dare_uniform(uint64_t seed, uint64_t index) {
    /* element index+1 of the splitmix64 stream whose state starts at mix64(seed) */
    const uint64_t h = mix64(mix64(seed) + (index + 1) * 0x9E3779B97F4A7C15ULL);
    return (double)(h >> 11) * 0x1.0p-53;
}

double st_merge_ema_lambda_eff(double beta, int64_t T) {
    if (T <= 0) return 0.0;
    if (beta <= 0) return 1.0;
    return 1.0 - beta * (1.0 - pow(beta, (double)T)) / ((double)T * (1.0 - beta));
}

static const char *method_name(st_merge_method m) {
    return m == ST_MERGE_SLERP ? "slerp" : m == ST_MERGE_DARE ? "dare" : "linear";
}

/* ST_ERR_ARG naming `what` (the spec text or its method) and the key when s is out of range. */
static st_status check_spec(const st_merge_spec *s, const char *what) {
    const char *wkey = s->method == ST_MERGE_SLERP ? "t" : "lambda";
    if (s->method != ST_MERGE_LINEAR && s->method != ST_MERGE_SLERP && s->method != ST_MERGE_DARE)
        return st_error(ST_ERR_ARG, "merge %s: unknown method (expected linear, slerp or dare)", what);
    if (!(s->weight >= 0.0 && s->weight <= 1.0))
        return st_error(ST_ERR_ARG, "merge %s: %s %g is outside [0, 1] (the weight on the fine-tuned weights: "
                        "0 gives the aligned start, 1 the fine-tuned run)", what, wkey, s->weight);
    if (s->method == ST_MERGE_DARE && !(s->p >= 0.0 && s->p < 1.0))
        return st_error(ST_ERR_ARG, "merge %s: p %g is outside [0, 1) (DARE's drop rate; 0.9 is usual)", what, s->p);
    return ST_OK;
}

/* One number field [b, e) of a spec; 0 on success. */
static int parse_num(const char *b, const char *e, double *v) {
    char buf[64];
    size_t n = (size_t)(e - b);
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, b, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    *v = strtod(buf, &end);
    return *end || errno || !isfinite(*v) ? -1 : 0;
}

st_status st_merge_spec_parse(const char *text, st_merge_spec *out) {
    memset(out, 0, sizeof *out);
    if (!text) return st_error(ST_ERR_ARG, "merge: empty spec (expected linear:L, slerp:T or dare:L:P[:SEED])");
    const char *f[5];
    size_t nf = 0;
    f[nf++] = text;
    for (const char *c = text; *c; c++)
        if (*c == ':') {
            if (nf == 5) return st_error(ST_ERR_ARG, "merge '%s': too many ':' fields (expected linear:L, slerp:T "
                                                     "or dare:L:P[:SEED])", text);
            f[nf++] = c + 1;
        }
    const char *end = text + strlen(text);
#define FIELD_END(i) ((i) + 1 < nf ? f[(i) + 1] - 1 : end)
    const size_t mlen = (size_t)(FIELD_END(0) - f[0]);
    int want;
    if (mlen == 6 && !strncmp(text, "linear", 6)) out->method = ST_MERGE_LINEAR, want = 2;
    else if (mlen == 5 && !strncmp(text, "slerp", 5)) out->method = ST_MERGE_SLERP, want = 2;
    else if (mlen == 4 && !strncmp(text, "dare", 4)) out->method = ST_MERGE_DARE, want = 3;
    else
        return st_error(ST_ERR_ARG, "merge '%s': unknown method '%.*s' (expected linear:L, slerp:T or dare:L:P[:SEED])",
                        text, (int)mlen, text);
    if (nf != (size_t)want && !(out->method == ST_MERGE_DARE && nf == 4))
        return st_error(ST_ERR_ARG, "merge '%s': %s takes %s", text, method_name(out->method),
                        out->method == ST_MERGE_LINEAR ? "one number, the weight lambda on the fine-tuned weights "
                                                         "(linear:0.6)"
                        : out->method == ST_MERGE_SLERP ? "one number, the interpolation t (slerp:0.7)"
                                                        : "lambda and the drop rate p, and optionally a seed "
                                                          "(dare:0.7:0.9 or dare:0.7:0.9:42)");
    if (parse_num(f[1], FIELD_END(1), &out->weight))
        return st_error(ST_ERR_ARG, "merge '%s': %s '%.*s' is not a number", text,
                        out->method == ST_MERGE_SLERP ? "t" : "lambda", (int)(FIELD_END(1) - f[1]), f[1]);
    if (out->method == ST_MERGE_DARE && parse_num(f[2], FIELD_END(2), &out->p))
        return st_error(ST_ERR_ARG, "merge '%s': p '%.*s' is not a number", text, (int)(FIELD_END(2) - f[2]), f[2]);
    if (nf == 4) {
        const char *b = f[3];
        char *e;
        errno = 0;
        unsigned long long v = *b >= '0' && *b <= '9' ? strtoull(b, &e, 10) : 0;
        if (!(*b >= '0' && *b <= '9') || *e || errno)
            return st_error(ST_ERR_ARG, "merge '%s': seed '%s' is not an unsigned integer", text, b);
        out->seed = v;
        out->has_seed = 1;
    }
#undef FIELD_END
    char what[300];
    snprintf(what, sizeof what, "'%s'", text);
    return check_spec(out, what);
}

const char *st_merge_spec_name(const st_merge_spec *s, char *buf, size_t cap) {
    if (s->method == ST_MERGE_DARE && s->has_seed)
        snprintf(buf, cap, "dare-%g-%g-s%llu", s->weight, s->p, (unsigned long long)s->seed);
    else if (s->method == ST_MERGE_DARE)
        snprintf(buf, cap, "dare-%g-%g", s->weight, s->p);
    else
        snprintf(buf, cap, "%s-%g", method_name(s->method), s->weight);
    return buf;
}

typedef struct {
    size_t off, n, tensor;
} chunk;

/* Per-tensor coefficients: out = a·θ0 + b·θ_ft, or a copy of one side (copy = 1: θ0, 2: θ_ft). */
typedef struct {
    double a, b;
    int copy;
} coef;

static coef linear_coef(double w) {
    coef c = {1.0 - w, w, 0};
    if (w == 0.0) c.copy = 1;
    else if (w == 1.0) c.copy = 2;
    return c;
}

st_status st_merge_apply(const st_merge_spec *s, const st_layout *lay, const float *theta0,
                         const float *theta_ft, float *out, st_merge_stats *stats) {
    st_status st = check_spec(s, method_name(s->method));
    if (st) return st;
    size_t nch = 0;
    for (size_t t = 0; t < lay->n_tensors; t++) nch += (lay->params[t].numel + CHUNK - 1) / CHUNK;
    chunk *ch = st_calloc(nch ? nch : 1, sizeof *ch);
    double *part = st_calloc(nch ? 3 * nch : 1, sizeof *part); /* per chunk: 3 sums (pass 1, then pass 2) */
    size_t *kept = st_calloc(nch ? nch : 1, sizeof *kept);
    coef *cf = st_calloc(lay->n_tensors ? lay->n_tensors : 1, sizeof *cf);
    if (!ch || !part || !kept || !cf) {
        free(ch), free(part), free(kept), free(cf);
        return st_error(ST_ERR_NOMEM, "merge: out of memory for %zu chunks", nch);
    }
    size_t k = 0;
    for (size_t t = 0; t < lay->n_tensors; t++)
        for (size_t o = 0; o < lay->params[t].numel; o += CHUNK) {
            ch[k].off = lay->params[t].offset + o;
            ch[k].n = lay->params[t].numel - o < CHUNK ? lay->params[t].numel - o : CHUNK;
            ch[k].tensor = t;
            k++;
        }
    const long long nchl = (long long)nch;
    size_t n_fallback = 0;
    if (s->method == ST_MERGE_SLERP) {
        /* pass 1: ‖θ0‖², ‖θ_ft‖², ⟨θ0, θ_ft⟩ per chunk */
#pragma omp parallel for schedule(dynamic, 4)
        for (long long i = 0; i < nchl; i++) {
            const float *x = theta0 + ch[i].off, *y = theta_ft + ch[i].off;
            double xx = 0, yy = 0, xy = 0;
            for (size_t j = 0; j < ch[i].n; j++) {
                xx += (double)x[j] * x[j];
                yy += (double)y[j] * y[j];
                xy += (double)x[j] * y[j];
            }
            part[3 * i] = xx, part[3 * i + 1] = yy, part[3 * i + 2] = xy;
        }
        size_t i = 0;
        for (size_t t = 0; t < lay->n_tensors; t++) {
            double xx = 0, yy = 0, xy = 0;
            for (; i < nch && ch[i].tensor == t; i++) xx += part[3 * i], yy += part[3 * i + 1], xy += part[3 * i + 2];
            double n0 = sqrt(xx), n1 = sqrt(yy);
            if (!(n0 > SLERP_EPS)) n0 = 1.0; /* mergekit: a norm <= eps leaves the vector undivided */
            if (!(n1 > SLERP_EPS)) n1 = 1.0;
            const double c = xy / (n0 * n1);
            if (fabs(c) > SLERP_DOT_THRESHOLD || !isfinite(c)) {
                cf[t] = linear_coef(s->weight);
                n_fallback++;
            } else {
                const double om = acos(c), so = sin(om);
                cf[t] = (coef){sin((1.0 - s->weight) * om) / so, sin(s->weight * om) / so, 0};
            }
        }
    } else {
        for (size_t t = 0; t < lay->n_tensors; t++) cf[t] = linear_coef(s->weight);
    }
    const double dscale = s->method == ST_MERGE_DARE ? s->weight / (1.0 - s->p) : 0.0;
    const uint64_t seed = s->seed;
    const double p = s->p;
    const int dare = s->method == ST_MERGE_DARE;
    /* pass 2: the merge, plus ‖out−θ0‖², ⟨out−θ0, δ⟩, ‖δ‖² and kept counts per chunk */
#pragma omp parallel for schedule(dynamic, 4)
    for (long long i = 0; i < nchl; i++) {
        const size_t off = ch[i].off, n = ch[i].n;
        const float *x = theta0 + off, *y = theta_ft + off;
        float *z = out + off;
        const coef c = cf[ch[i].tensor];
        size_t kk = 0;
        if (dare) {
            for (size_t j = 0; j < n; j++) {
                if (st_merge_dare_uniform(seed, off + j) >= p) {
                    z[j] = (float)((double)x[j] + dscale * ((double)y[j] - (double)x[j]));
                    kk++;
                } else {
                    z[j] = x[j];
                }
            }
        } else if (c.copy == 1) {
            memcpy(z, x, n * sizeof *z);
        } else if (c.copy == 2) {
            memcpy(z, y, n * sizeof *z);
        } else {
            for (size_t j = 0; j < n; j++) z[j] = (float)(c.a * x[j] + c.b * y[j]);
        }
        double dd = 0, dp = 0, pp = 0;
        for (size_t j = 0; j < n; j++) {
            const double d = (double)z[j] - x[j], e = (double)y[j] - x[j];
            dd += d * d, dp += d * e, pp += e * e;
        }
        part[3 * i] = dd, part[3 * i + 1] = dp, part[3 * i + 2] = pp;
        kept[i] = kk;
    }
    if (stats) {
        memset(stats, 0, sizeof *stats);
        double dd = 0, dp = 0, pp = 0;
        for (size_t i = 0; i < nch; i++) {
            dd += part[3 * i], dp += part[3 * i + 1], pp += part[3 * i + 2];
            stats->n_kept += kept[i];
            stats->n_params += ch[i].n;
        }
        stats->n_tensors = lay->n_tensors;
        stats->n_fallback = n_fallback;
        stats->theta_dist = sqrt(dd);
        stats->lambda_proj = pp > 0 ? dp / pp : 0.0;
    }
    free(ch), free(part), free(kept), free(cf);
    return ST_OK;
}
