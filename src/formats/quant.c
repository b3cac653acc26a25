/* quant.c - ggml block layouts and dequantisation to fp32 (see quant.h).
 *
 * Block layouts follow ggml's ggml-common.h; the arithmetic follows the reference
 * dequantize_row_* in ggml-quants.c, with the same operation order as gguf-py's
 * gguf/quants.py so that results are bit-identical (e.g. Q4_K: (d*sc)*q - (dmin*m)).
 * Multi-byte fields are little-endian and may be unaligned, so they are read byte-wise.
 * This file must not be compiled with FP contraction (-std=c11 implies -ffp-contract=off in
 * GCC); an FMA would change the last bit of a*b+c. */
#include "safetune/quant.h"

#include <string.h>

#define QK 32   /* elements per block for Q4_0..Q8_0 */
#define QK_K 256 /* elements per super-block for the K-quants */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float st_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / NaN (payload kept) */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: man * 2^-24, exact in fp32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t st_f32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff)); /* quiet NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                    /* below 2^-14: fp16 subnormal */
        /* value = ax as float; fp16 subnormal unit is 2^-24. Round-to-nearest-even of
         * mantissa shifted right. */
        if (ax < 0x33000000u) return sign; /* < 2^-25: rounds to zero (2^-25 ties to even 0) */
        uint32_t e = ax >> 23;             /* biased exponent, 102..112 */
        uint32_t m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150); in 2^-24 units: m >> (126-e) */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even (carry may bump
     * the exponent, which is the correct result). */
    uint32_t r = ax - (112u << 23);
    uint32_t lsb = (r >> 13) & 1;
    r += 0xfff + lsb;
    return (uint16_t)(sign | (r >> 13));
}

float st_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t st_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64); /* quiet NaN */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

typedef struct {
    uint32_t id;
    const char *name;
    size_t blck;  /* elements per block */
    size_t bytes; /* bytes per block */
    int supported;
} type_info;

/* All ggml type ids (ggml.h enum ggml_type), so messages can name types we do not dequantise. */
static const type_info k_types[] = {
    {0, "F32", 1, 4, 1},       {1, "F16", 1, 2, 1},       {2, "Q4_0", 32, 18, 1},
    {3, "Q4_1", 32, 20, 1},    {6, "Q5_0", 32, 22, 1},    {7, "Q5_1", 32, 24, 1},
    {8, "Q8_0", 32, 34, 1},    {9, "Q8_1", 32, 36, 0},    {10, "Q2_K", 256, 84, 0},
    {11, "Q3_K", 256, 110, 0}, {12, "Q4_K", 256, 144, 1}, {13, "Q5_K", 256, 176, 1},
    {14, "Q6_K", 256, 210, 1}, {15, "Q8_K", 256, 292, 0}, {16, "IQ2_XXS", 256, 66, 0},
    {17, "IQ2_XS", 256, 74, 0}, {18, "IQ3_XXS", 256, 98, 0}, {19, "IQ1_S", 256, 50, 0},
    {20, "IQ4_NL", 32, 18, 0}, {21, "IQ3_S", 256, 110, 0}, {22, "IQ2_S", 256, 82, 0},
    {23, "IQ4_XS", 256, 136, 0}, {24, "I8", 1, 1, 0},     {25, "I16", 1, 2, 0},
    {26, "I32", 1, 4, 0},      {27, "I64", 1, 8, 0},      {28, "F64", 1, 8, 0},
    {29, "IQ1_M", 256, 56, 0}, {30, "BF16", 1, 2, 1},     {34, "TQ1_0", 256, 54, 0},
    {35, "TQ2_0", 256, 66, 0},
};

static const type_info *find_type(uint32_t type) {
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i].id == type) return &k_types[i];
    return NULL;
}

const char *st_ggml_type_name(uint32_t type) {
    const type_info *t = find_type(type);
    return t && t->supported ? t->name : NULL;
}

const char *st_ggml_type_name_any(uint32_t type) {
    const type_info *t = find_type(type);
    return t ? t->name : NULL;
}

size_t st_ggml_block_size(uint32_t type) {
    const type_info *t = find_type(type);
    return t && t->supported ? t->blck : 0;
}

size_t st_ggml_type_size(uint32_t type) {
    const type_info *t = find_type(type);
    return t && t->supported ? t->bytes : 0;
}

size_t st_ggml_row_bytes(uint32_t type, int64_t n) {
    const type_info *t = find_type(type);
    if (!t || !t->supported || n < 0 || (uint64_t)n % t->blck) return 0;
    return (size_t)((uint64_t)n / t->blck * t->bytes);
}

/* ---- per-type block decoders: one block of src -> y ---- */

static void deq_q4_0(const uint8_t *b, float *y) {
    const float d = st_fp16_to_f32(rd16(b));
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * (float)((int)(qs[j] & 0x0f) - 8);
        y[j + QK / 2] = d * (float)((int)(qs[j] >> 4) - 8);
    }
}

static void deq_q4_1(const uint8_t *b, float *y) {
    const float d = st_fp16_to_f32(rd16(b));
    const float m = st_fp16_to_f32(rd16(b + 2));
    const uint8_t *qs = b + 4;
    for (int j = 0; j < QK / 2; j++) {
        float p0 = d * (float)(qs[j] & 0x0f);
        float p1 = d * (float)(qs[j] >> 4);
        y[j] = p0 + m;
        y[j + QK / 2] = p1 + m;
    }
}

static void deq_q5_0(const uint8_t *b, float *y) {
    const float d = st_fp16_to_f32(rd16(b));
    const uint32_t qh = rd32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < QK / 2; j++) {
        int h0 = (int)((qh >> j) & 1) << 4;
        int h1 = (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (float)(((qs[j] & 0x0f) | h0) - 16);
        y[j + QK / 2] = d * (float)(((qs[j] >> 4) | h1) - 16);
    }
}

static void deq_q5_1(const uint8_t *b, float *y) {
    const float d = st_fp16_to_f32(rd16(b));
    const float m = st_fp16_to_f32(rd16(b + 2));
    const uint32_t qh = rd32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < QK / 2; j++) {
        int h0 = (int)((qh >> j) & 1) << 4;
        int h1 = (int)((qh >> (j + 16)) & 1) << 4;
        float p0 = d * (float)((qs[j] & 0x0f) | h0);
        float p1 = d * (float)((qs[j] >> 4) | h1);
        y[j] = p0 + m;
        y[j + QK / 2] = p1 + m;
    }
}

static void deq_q8_0(const uint8_t *b, float *y) {
    const float d = st_fp16_to_f32(rd16(b));
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < QK; j++) y[j] = (float)qs[j] * d;
}

/* 6-bit scale and min of sub-block j (0..7) packed in 12 bytes (ggml get_scale_min_k4). */
static inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K: f16 d, f16 dmin, scales[12], qs[128]; 8 sub-blocks of 32. */
static void deq_q4_k(const uint8_t *b, float *y) {
    const float d = st_fp16_to_f32(rd16(b));
    const float dmin = st_fp16_to_f32(rd16(b + 2));
    const uint8_t *scales = b + 4;
    const uint8_t *q = b + 16;
    for (int c = 0; c < 8; c += 2) { /* 64 elements per step: low nibbles then high nibbles */
        int sc, m;
        scale_min_k4(c, scales, &sc, &m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        scale_min_k4(c + 1, scales, &sc, &m);
        const float d2 = d * (float)sc, m2 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            float p = d1 * (float)(q[l] & 0x0f);
            y[l] = p - m1;
        }
        for (int l = 0; l < 32; l++) {
            float p = d2 * (float)(q[l] >> 4);
            y[l + 32] = p - m2;
        }
        q += 32;
        y += 64;
    }
}

/* Q5_K: f16 d, f16 dmin, scales[12], qh[32], qs[128]. Bit c of qh[l] is the 5th bit of
 * element 32*c + l. */
static void deq_q5_k(const uint8_t *b, float *y) {
    const float d = st_fp16_to_f32(rd16(b));
    const float dmin = st_fp16_to_f32(rd16(b + 2));
    const uint8_t *scales = b + 4;
    const uint8_t *qh = b + 16;
    const uint8_t *q = b + 48;
    for (int c = 0; c < 8; c += 2) {
        int sc, m;
        scale_min_k4(c, scales, &sc, &m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        scale_min_k4(c + 1, scales, &sc, &m);
        const float d2 = d * (float)sc, m2 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int v = (q[l] & 0x0f) | (((qh[l] >> c) & 1) << 4);
            float p = d1 * (float)v;
            y[l] = p - m1;
        }
        for (int l = 0; l < 32; l++) {
            int v = (q[l] >> 4) | (((qh[l] >> (c + 1)) & 1) << 4);
            float p = d2 * (float)v;
            y[l + 32] = p - m2;
        }
        q += 32;
        y += 64;
    }
}

/* Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d. */
static void deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b;
    const uint8_t *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = st_fp16_to_f32(rd16(b + 208));
    for (int n = 0; n < QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            float s1 = d * (float)sc[is + 0], s2 = d * (float)sc[is + 2];
            float s3 = d * (float)sc[is + 4], s4 = d * (float)sc[is + 6];
            y[l + 0] = s1 * (float)q1;
            y[l + 32] = s2 * (float)q2;
            y[l + 64] = s3 * (float)q3;
            y[l + 96] = s4 * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

st_status st_dequantize(uint32_t type, const void *src, float *dst, int64_t n) {
    const type_info *t = find_type(type);
    if (!t || !t->supported) {
        const char *nm = t ? t->name : "unknown";
        return st_error(ST_ERR_UNSUPPORTED, "dequantize: tensor type %u (%s) not supported", type, nm);
    }
    if (n < 0 || (uint64_t)n % t->blck)
        return st_error(ST_ERR_ARG, "dequantize: %lld elements is not a multiple of the %s block size %zu",
                        (long long)n, t->name, t->blck);
    const uint8_t *s = src;
    const int64_t nb = n / (int64_t)t->blck;
    void (*blk)(const uint8_t *, float *) = NULL;
    switch (type) {
    case ST_GGML_TYPE_F32: memcpy(dst, src, (size_t)n * 4); return ST_OK;
    case ST_GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = st_fp16_to_f32(rd16(s + 2 * i));
        return ST_OK;
    case ST_GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = bits_f32((uint32_t)rd16(s + 2 * i) << 16);
        return ST_OK;
    case ST_GGML_TYPE_Q4_0: blk = deq_q4_0; break;
    case ST_GGML_TYPE_Q4_1: blk = deq_q4_1; break;
    case ST_GGML_TYPE_Q5_0: blk = deq_q5_0; break;
    case ST_GGML_TYPE_Q5_1: blk = deq_q5_1; break;
    case ST_GGML_TYPE_Q8_0: blk = deq_q8_0; break;
    case ST_GGML_TYPE_Q4_K: blk = deq_q4_k; break;
    case ST_GGML_TYPE_Q5_K: blk = deq_q5_k; break;
    case ST_GGML_TYPE_Q6_K: blk = deq_q6_k; break;
    default: return st_error(ST_ERR_INTERNAL, "dequantize: no decoder for type %u", type);
    }
    for (int64_t i = 0; i < nb; i++) blk(s + (size_t)i * t->bytes, dst + (size_t)i * t->blck);
    return ST_OK;
}
