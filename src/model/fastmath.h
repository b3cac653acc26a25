/* fastmath.h - internal: bf16 <-> fp32 conversion, and a branch-free expf that GCC vectorises
 * (AVX-512: 16 lanes) inside `#pragma omp simd` loops, for softmax / cross-entropy / SiLU.
 * Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then a degree-7 Taylor polynomial
 * of e^r (truncation r^8/8! < 3e-9 relative) and the scale 2^n built in the exponent bits:
 * ~1-2 ulp over the clamped range. x is clamped to [-87, 88] (e^-87 ~ 1.6e-38 stands in for 0
 * and underflow, e^88 for overflow); NaN propagates (comparisons leave it unclamped and the
 * polynomial keeps it). */
#ifndef SAFETUNE_MODEL_FASTMATH_H
#define SAFETUNE_MODEL_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma omp declare simd notinbranch
static inline float st_fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float t = x * 1.44269504088896341f + magic;
    const float n = t - magic;
    const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t tb, mb, sb;
    memcpy(&tb, &t, 4);
    memcpy(&mb, &magic, 4);
    sb = (tb - mb + 127u) << 23; /* n + 127 in the exponent field (n in [-126, 127]) */
    float s;
    memcpy(&s, &sb, 4);
    return p * s;
}

/* row[0..n) <- exp(row - max) in place (st_fast_expf); returns the sum and sets *max (the first
 * two passes of st_softmax_inplace, for callers that fold the normalisation elsewhere). n >= 1. */
static inline float st_softmax_exp(float *row, int n, float *max) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        row[j] = st_fast_expf(row[j] - mx);
        sum += row[j];
    }
    *max = mx;
    return sum;
}

/* Softmax of row[0..n) in place (max-shifted st_fast_expf, then normalised); returns the sum of
 * the shifted exponentials and sets *max, so log-sum-exp = *max + log(sum). n >= 1. */
static inline float st_softmax_inplace(float *row, int n, float *max) {
    const float sum = st_softmax_exp(row, n, max);
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j < n; j++) row[j] *= inv;
    return sum;
}

/* fp32 -> bf16 (the high 16 bits), round to nearest even; NaN stays a (quiet) NaN. */
static inline uint16_t st_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* bf16 -> fp32 (exact). */
static inline float st_bf16_to_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
