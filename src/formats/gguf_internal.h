/* gguf_internal.h - shared between gguf_read.c and gguf_write.c (not public API). */
#ifndef SAFETUNE_GGUF_INTERNAL_H
#define SAFETUNE_GGUF_INTERNAL_H

#include "safetune/gguf.h"

#define ST_GGUF_MAGIC 0x46554747u /* "GGUF" read as little-endian u32 */
#define ST_GGUF_DEFAULT_ALIGNMENT 32

/* Size in bytes of a fixed-size scalar value type; 0 for string/array/unknown. */
size_t st_gguf__scalar_size(uint32_t type);
/* Name of a metadata value type ("uint32", "string"...), or NULL if unknown. */
const char *st_gguf__type_name(uint32_t type);
/* The serialized value bytes (everything after the u32 type field) of key i. */
void st_gguf__raw_value(const st_gguf *g, int64_t i, const void **data, size_t *len);

#endif
