/* gguf_write.c - GGUF v3 writer (see gguf.h). Spec: ggml docs/gguf.md. Keys are kept as
 * serialized value bytes in insertion order (setting an existing key replaces its value);
 * tensors are converted to F32/F16/BF16 when added and laid out in insertion order, each at a
 * multiple of general.alignment (32 unless that key was set). The file is streamed to a temp
 * file and renamed into place. Assumes a little-endian host, like ggml. */
#include "formats/afile.h"
#include "formats/gguf_internal.h"
#include "safetune/quant.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;
    uint32_t type;
    uint8_t *val;
    size_t len;
} wkv;

typedef struct {
    char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
    void *data;
    size_t nbytes;
} wtensor;

struct st_gguf_writer {
    wkv *kv;
    size_t nkv, kcap;
    wtensor *t;
    size_t nt, tcap;
};

st_status st_gguf_writer_new(st_gguf_writer **out) {
    *out = st_calloc(1, sizeof **out);
    return *out ? ST_OK : ST_ERR_NOMEM;
}

void st_gguf_writer_free(st_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->nkv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->nt; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

/* Store (taking ownership of val) under key, replacing an existing value. */
static st_status put(st_gguf_writer *w, const char *key, uint32_t type, uint8_t *val, size_t len) {
    if (!key || !key[0]) {
        free(val);
        return st_error(ST_ERR_ARG, "gguf writer: empty key name");
    }
    for (size_t i = 0; i < w->nkv; i++)
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].len = len;
            return ST_OK;
        }
    if (w->nkv == w->kcap) {
        size_t nc = w->kcap ? 2 * w->kcap : 16;
        wkv *nk = st_realloc(w->kv, nc * sizeof *nk);
        if (!nk) {
            free(val);
            return ST_ERR_NOMEM;
        }
        w->kv = nk;
        w->kcap = nc;
    }
    char *k = st_strdup(key);
    if (!k) {
        free(val);
        return ST_ERR_NOMEM;
    }
    w->kv[w->nkv++] = (wkv){k, type, val, len};
    return ST_OK;
}

static st_status put_copy(st_gguf_writer *w, const char *key, uint32_t type, const void *val, size_t len) {
    uint8_t *v = st_malloc(len);
    if (!v) return ST_ERR_NOMEM;
    memcpy(v, val, len);
    return put(w, key, type, v, len);
}

st_status st_gguf_writer_set_scalar(st_gguf_writer *w, const char *key, st_gguf_type type, const void *value) {
    size_t sz = st_gguf__scalar_size(type);
    if (!sz) return st_error(ST_ERR_ARG, "gguf writer: key '%s': type %u is not a scalar type", key, type);
    if (type == ST_GGUF_BOOL && *(const uint8_t *)value > 1)
        return st_error(ST_ERR_ARG, "gguf writer: key '%s': bool value must be 0 or 1", key);
    return put_copy(w, key, type, value, sz);
}

st_status st_gguf_writer_set_u32(st_gguf_writer *w, const char *key, uint32_t v) {
    return st_gguf_writer_set_scalar(w, key, ST_GGUF_UINT32, &v);
}
st_status st_gguf_writer_set_i32(st_gguf_writer *w, const char *key, int32_t v) {
    return st_gguf_writer_set_scalar(w, key, ST_GGUF_INT32, &v);
}
st_status st_gguf_writer_set_f32(st_gguf_writer *w, const char *key, float v) {
    return st_gguf_writer_set_scalar(w, key, ST_GGUF_FLOAT32, &v);
}
st_status st_gguf_writer_set_bool(st_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return st_gguf_writer_set_scalar(w, key, ST_GGUF_BOOL, &b);
}

st_status st_gguf_writer_set_str(st_gguf_writer *w, const char *key, const char *s) {
    uint64_t n = strlen(s);
    uint8_t *v = st_malloc(8 + n);
    if (!v) return ST_ERR_NOMEM;
    memcpy(v, &n, 8);
    memcpy(v + 8, s, n);
    return put(w, key, ST_GGUF_STRING, v, 8 + n);
}

st_status st_gguf_writer_set_arr(st_gguf_writer *w, const char *key, st_gguf_type elem_type, const void *data,
                                 uint64_t n) {
    size_t sz = st_gguf__scalar_size(elem_type);
    if (!sz)
        return st_error(ST_ERR_ARG, "gguf writer: key '%s': array element type %u is not numeric (use set_arr_str)",
                        key, elem_type);
    if (n > (SIZE_MAX - 12) / sz) return st_error(ST_ERR_ARG, "gguf writer: key '%s': array too large", key);
    uint8_t *v = st_malloc(12 + n * sz);
    if (!v) return ST_ERR_NOMEM;
    uint32_t et = elem_type;
    memcpy(v, &et, 4);
    memcpy(v + 4, &n, 8);
    if (n) memcpy(v + 12, data, n * sz);
    return put(w, key, ST_GGUF_ARRAY, v, 12 + n * sz);
}

st_status st_gguf_writer_set_arr_str(st_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens,
                                     uint64_t n) {
    size_t total = 12;
    for (uint64_t i = 0; i < n; i++) total += 8 + (lens ? lens[i] : strlen(strs[i]));
    uint8_t *v = st_malloc(total);
    if (!v) return ST_ERR_NOMEM;
    uint32_t et = ST_GGUF_STRING;
    memcpy(v, &et, 4);
    memcpy(v + 4, &n, 8);
    size_t p = 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l = lens ? lens[i] : strlen(strs[i]);
        memcpy(v + p, &l, 8);
        if (l) memcpy(v + p + 8, strs[i], l);
        p += 8 + l;
    }
    return put(w, key, ST_GGUF_ARRAY, v, total);
}

st_status st_gguf_writer_copy_key(st_gguf_writer *w, const st_gguf *src, const char *key) {
    int64_t i = st_gguf_find_key(src, key);
    if (i < 0) return st_error(ST_ERR_ARG, "%s: metadata key '%s' not found (copy_key)", st_gguf_path(src), key);
    const void *data;
    size_t len;
    st_gguf__raw_value(src, i, &data, &len);
    return put_copy(w, key, st_gguf_key_type(src, i), data, len);
}

st_status st_gguf_writer_add_tensor(st_gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                                    uint32_t type, const float *data) {
    if (!name || !name[0]) return st_error(ST_ERR_ARG, "gguf writer: empty tensor name");
    if (n_dims < 1 || n_dims > 4)
        return st_error(ST_ERR_ARG, "gguf writer: tensor '%s': n_dims %u out of range (1..4)", name, n_dims);
    if (type != ST_GGML_TYPE_F32 && type != ST_GGML_TYPE_F16 && type != ST_GGML_TYPE_BF16)
        return st_error(ST_ERR_ARG, "gguf writer: tensor '%s': type %u not writable (F32, F16 or BF16 only)", name, type);
    for (size_t i = 0; i < w->nt; i++)
        if (!strcmp(w->t[i].name, name)) return st_error(ST_ERR_ARG, "gguf writer: duplicate tensor name '%s'", name);
    wtensor t = {0};
    t.n_dims = n_dims;
    uint64_t n = 1;
    for (int d = 0; d < 4; d++) {
        t.ne[d] = d < (int)n_dims ? ne[d] : 1;
        if (t.ne[d] < 0 || (t.ne[d] && n > (uint64_t)INT64_MAX / 8 / (uint64_t)t.ne[d]))
            return st_error(ST_ERR_ARG, "gguf writer: tensor '%s': bad dimension %lld", name, (long long)t.ne[d]);
        n *= (uint64_t)t.ne[d];
    }
    t.type = type;
    t.nbytes = st_ggml_row_bytes(type, (int64_t)n);
    t.data = st_malloc(t.nbytes);
    t.name = st_strdup(name);
    if (!t.data || !t.name) {
        free(t.data);
        free(t.name);
        return ST_ERR_NOMEM;
    }
    if (type == ST_GGML_TYPE_F32) {
        if (n) memcpy(t.data, data, t.nbytes);
    } else {
        uint16_t *h = t.data;
        if (type == ST_GGML_TYPE_F16)
            for (uint64_t i = 0; i < n; i++) h[i] = st_f32_to_fp16(data[i]);
        else
            for (uint64_t i = 0; i < n; i++) h[i] = st_f32_to_bf16(data[i]);
    }
    if (w->nt == w->tcap) {
        size_t nc = w->tcap ? 2 * w->tcap : 64;
        wtensor *nt = st_realloc(w->t, nc * sizeof *nt);
        if (!nt) {
            free(t.data);
            free(t.name);
            return ST_ERR_NOMEM;
        }
        w->t = nt;
        w->tcap = nc;
    }
    w->t[w->nt++] = t;
    return ST_OK;
}

static st_status wr_u32(st_afile *a, uint32_t v) { return st_afile_write(a, &v, 4); }
static st_status wr_u64(st_afile *a, uint64_t v) { return st_afile_write(a, &v, 8); }
static st_status wr_str(st_afile *a, const char *s) {
    st_status st = wr_u64(a, strlen(s));
    return st ? st : st_afile_write(a, s, strlen(s));
}

st_status st_gguf_writer_finish(st_gguf_writer *w, const char *path) {
    uint64_t align = ST_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->nkv; i++)
        if (!strcmp(w->kv[i].key, "general.alignment")) {
            uint32_t a = 0;
            if (w->kv[i].type == ST_GGUF_UINT32) memcpy(&a, w->kv[i].val, 4);
            if (!a || (a & (a - 1)))
                return st_error(ST_ERR_ARG, "%s: general.alignment must be a uint32 power of two", path);
            align = a;
        }
    st_afile a;
    st_status s = st_afile_open(&a, path);
    if (s) return s;
    if ((s = wr_u32(&a, ST_GGUF_MAGIC)) || (s = wr_u32(&a, 3)) || (s = wr_u64(&a, w->nt)) || (s = wr_u64(&a, w->nkv)))
        return s;
    for (size_t i = 0; i < w->nkv; i++)
        if ((s = wr_str(&a, w->kv[i].key)) || (s = wr_u32(&a, w->kv[i].type)) ||
            (s = st_afile_write(&a, w->kv[i].val, w->kv[i].len)))
            return s;
    uint64_t off = 0;
    for (size_t i = 0; i < w->nt; i++) {
        const wtensor *t = &w->t[i];
        if ((s = wr_str(&a, t->name)) || (s = wr_u32(&a, t->n_dims))) return s;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if ((s = wr_u64(&a, (uint64_t)t->ne[d]))) return s;
        if ((s = wr_u32(&a, t->type)) || (s = wr_u64(&a, off))) return s;
        off += (t->nbytes + align - 1) / align * align;
    }
    if ((s = st_afile_zeros(&a, (size_t)((align - a.written % align) % align)))) return s;
    for (size_t i = 0; i < w->nt; i++) {
        const wtensor *t = &w->t[i];
        size_t pad = (size_t)((align - t->nbytes % align) % align);
        if ((s = st_afile_write(&a, t->data, t->nbytes)) || (s = st_afile_zeros(&a, pad))) return s;
    }
    return st_afile_commit(&a);
}
