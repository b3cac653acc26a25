/* gguf.h - GGUF v2/v3 reader (memory-mapped) and writer.
 * Source: ggml docs/gguf.md (github.com/ggml-org/ggml). All metadata value types, arrays,
 * general.alignment; tensor data dequantised to fp32 through quant.h. */
#ifndef SAFETUNE_GGUF_H
#define SAFETUNE_GGUF_H

#include "safetune/base.h"

typedef enum {
    ST_GGUF_UINT8 = 0, ST_GGUF_INT8 = 1, ST_GGUF_UINT16 = 2, ST_GGUF_INT16 = 3,
    ST_GGUF_UINT32 = 4, ST_GGUF_INT32 = 5, ST_GGUF_FLOAT32 = 6, ST_GGUF_BOOL = 7,
    ST_GGUF_STRING = 8, ST_GGUF_ARRAY = 9, ST_GGUF_UINT64 = 10, ST_GGUF_INT64 = 11,
    ST_GGUF_FLOAT64 = 12
} st_gguf_type;

typedef struct {
    const char *name;     /* NUL-terminated copy */
    uint32_t n_dims;      /* 1..4 */
    int64_t ne[4];        /* ggml order: ne[0] is the contiguous (fastest) dimension */
    uint32_t type;        /* ggml tensor type id (quant.h ST_GGML_TYPE_*) */
    uint64_t offset;      /* relative to the start of the tensor data section */
    const void *data;     /* pointer into the mapping */
    size_t nbytes;
} st_gguf_tensor;

typedef struct st_gguf st_gguf;

/* Open and fully validate `path` (magic, version 2|3, every key/value, tensor infos, tensor data
 * within the file, known tensor types). Errors name the file and the byte offset. */
st_status st_gguf_open(const char *path, st_gguf **out);
void st_gguf_close(st_gguf *g);

uint32_t st_gguf_version(const st_gguf *g);
const char *st_gguf_path(const st_gguf *g);
/* general.alignment (default 32) and the absolute file offset of the tensor data section. */
uint64_t st_gguf_alignment(const st_gguf *g);
size_t st_gguf_data_offset(const st_gguf *g);

/* Metadata. Index of `key` or -1. */
int64_t st_gguf_find_key(const st_gguf *g, const char *key);
int64_t st_gguf_n_keys(const st_gguf *g);
const char *st_gguf_key_name(const st_gguf *g, int64_t i);
st_gguf_type st_gguf_key_type(const st_gguf *g, int64_t i);
/* Typed getters: convert any integer/float/bool scalar type to the requested C type; return
 * ST_ERR_FORMAT naming file and key if missing (use find_key first for optional keys) or of a
 * non-numeric type. */
st_status st_gguf_get_i64(const st_gguf *g, const char *key, int64_t *out);
st_status st_gguf_get_f64(const st_gguf *g, const char *key, double *out);
st_status st_gguf_get_bool(const st_gguf *g, const char *key, int *out);
/* String value: pointer into the mapping (NOT NUL-terminated) and its length. */
st_status st_gguf_get_str(const st_gguf *g, const char *key, const char **s, size_t *len);
/* Array value: element type and count. For numeric arrays *data points at the packed values
 * (little-endian, possibly unaligned: read with memcpy); for string arrays use get_arr_str. */
st_status st_gguf_get_arr(const st_gguf *g, const char *key, st_gguf_type *elem_type,
                          uint64_t *n, const void **data);
st_status st_gguf_get_arr_str(const st_gguf *g, const char *key, uint64_t i, const char **s,
                              size_t *len);

/* Tensors. */
int64_t st_gguf_n_tensors(const st_gguf *g);
const st_gguf_tensor *st_gguf_tensor_at(const st_gguf *g, int64_t i);
const st_gguf_tensor *st_gguf_find_tensor(const st_gguf *g, const char *name);
/* Number of elements ne[0]*ne[1]*ne[2]*ne[3]. */
int64_t st_gguf_tensor_numel(const st_gguf_tensor *t);
/* Dequantise the whole tensor into dst (ne[0]*ne[1]*ne[2]*ne[3] floats, ggml order), rows in
 * parallel with OpenMP. Bit-exact with gguf-py gguf.quants.dequantize. */
st_status st_gguf_tensor_to_f32(const st_gguf *g, const st_gguf_tensor *t, float *dst);

/* Writer: builds a GGUF v3 file (keys and tensors in insertion order; setting a key again
 * replaces it), written atomically on finish (temp file + rename). Tensors are stored as F32
 * (or F16/BF16 via type, round-to-nearest-even), each aligned to general.alignment (32 unless
 * that key is set as a uint32). Errors name the key / tensor / path. */
typedef struct st_gguf_writer st_gguf_writer;
st_status st_gguf_writer_new(st_gguf_writer **out);
/* Any scalar type (UINT8..FLOAT64, BOOL): `value` points at one value of that C type. */
st_status st_gguf_writer_set_scalar(st_gguf_writer *w, const char *key, st_gguf_type type,
                                    const void *value);
st_status st_gguf_writer_set_u32(st_gguf_writer *w, const char *key, uint32_t v);
st_status st_gguf_writer_set_i32(st_gguf_writer *w, const char *key, int32_t v);
st_status st_gguf_writer_set_f32(st_gguf_writer *w, const char *key, float v);
st_status st_gguf_writer_set_bool(st_gguf_writer *w, const char *key, int v);
st_status st_gguf_writer_set_str(st_gguf_writer *w, const char *key, const char *s);
/* Arrays: numeric (elem_type scalar) or strings (strs[i], lens[i] may be NULL for strlen). */
st_status st_gguf_writer_set_arr(st_gguf_writer *w, const char *key, st_gguf_type elem_type,
                                 const void *data, uint64_t n);
st_status st_gguf_writer_set_arr_str(st_gguf_writer *w, const char *key, const char *const *strs,
                                     const size_t *lens, uint64_t n);
/* Copy a whole key (any type) from an open reader. */
st_status st_gguf_writer_copy_key(st_gguf_writer *w, const st_gguf *src, const char *key);
/* Add a tensor from fp32 data (ggml order ne[]), stored as `type` (F32, F16 or BF16). The data
 * is copied. */
st_status st_gguf_writer_add_tensor(st_gguf_writer *w, const char *name, uint32_t n_dims,
                                    const int64_t *ne, uint32_t type, const float *data);
st_status st_gguf_writer_finish(st_gguf_writer *w, const char *path); /* atomic */
void st_gguf_writer_free(st_gguf_writer *w);

#endif
