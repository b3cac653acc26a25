/* quant.h - ggml tensor types and dequantisation to fp32.
 * Source: ggml ggml-common.h / ggml-quants.c block layouts (reference dequantize_row_*). */
#ifndef SAFETUNE_QUANT_H
#define SAFETUNE_QUANT_H

#include "safetune/base.h"

enum {
    ST_GGML_TYPE_F32 = 0, ST_GGML_TYPE_F16 = 1, ST_GGML_TYPE_Q4_0 = 2, ST_GGML_TYPE_Q4_1 = 3,
    ST_GGML_TYPE_Q5_0 = 6, ST_GGML_TYPE_Q5_1 = 7, ST_GGML_TYPE_Q8_0 = 8,
    ST_GGML_TYPE_Q4_K = 12, ST_GGML_TYPE_Q5_K = 13, ST_GGML_TYPE_Q6_K = 14,
    ST_GGML_TYPE_BF16 = 30
};

/* Name ("Q4_K") or NULL if the id is not supported. */
const char *st_ggml_type_name(uint32_t type);
/* Name of any ggml type id, also ones we cannot dequantise ("Q2_K"); NULL if unknown. */
const char *st_ggml_type_name_any(uint32_t type);
/* Elements per block and bytes per block; 0 if unsupported. */
size_t st_ggml_block_size(uint32_t type);
size_t st_ggml_type_size(uint32_t type);
/* Bytes for n elements (n must be a multiple of the block size); 0 if unsupported/misaligned. */
size_t st_ggml_row_bytes(uint32_t type, int64_t n);

/* Dequantise n elements (multiple of block size) of `type` from src into dst. */
st_status st_dequantize(uint32_t type, const void *src, float *dst, int64_t n);

/* Scalar half-precision conversions (IEEE fp16, bfloat16 with round-to-nearest-even). */
float st_fp16_to_f32(uint16_t h);
uint16_t st_f32_to_fp16(float f);
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);

#endif
