/* safetensors.h - Hugging Face safetensors reader (single file or sharded via
 * model.safetensors.index.json) and writer. Source: huggingface/safetensors README (format:
 * u64 little-endian header size, JSON header {name: {dtype, shape, data_offsets}}, data). */
#ifndef SAFETUNE_SAFETENSORS_H
#define SAFETUNE_SAFETENSORS_H

#include "safetune/base.h"

typedef enum { ST_DTYPE_F32, ST_DTYPE_F16, ST_DTYPE_BF16, ST_DTYPE_OTHER } st_dtype;

typedef struct {
    const char *name;
    st_dtype dtype;
    const char *dtype_name; /* as in the header: "F32", "BF16", ... */
    int n_dims;
    int64_t shape[8];       /* row-major, as in PyTorch */
    const void *data;       /* pointer into the mapping */
    size_t nbytes;
} st_st_tensor;

typedef struct st_safetensors st_safetensors;

/* Open a .safetensors file, a model.safetensors.index.json, or a directory holding either.
 * Validates header JSON, offsets within the file, shape×dtype = byte size. */
st_status st_safetensors_open(const char *path, st_safetensors **out);
void st_safetensors_close(st_safetensors *s);
size_t st_safetensors_count(const st_safetensors *s);
const st_st_tensor *st_safetensors_at(const st_safetensors *s, size_t i);
const st_st_tensor *st_safetensors_find(const st_safetensors *s, const char *name);
/* Convert a F32/F16/BF16 tensor to fp32 (numel floats). */
st_status st_safetensors_to_f32(const st_st_tensor *t, float *dst);

/* Writer. Tensors are added as fp32 source and stored as F32 or BF16; written atomically with
 * "__metadata__": {"format": "pt"}. Data pointers must stay valid until finish. */
typedef struct st_safetensors_writer st_safetensors_writer;
st_status st_safetensors_writer_new(st_safetensors_writer **out);
st_status st_safetensors_writer_add(st_safetensors_writer *w, const char *name, st_dtype dtype,
                                    int n_dims, const int64_t *shape, const float *data);
st_status st_safetensors_writer_finish(st_safetensors_writer *w, const char *path);
void st_safetensors_writer_free(st_safetensors_writer *w);

#endif
