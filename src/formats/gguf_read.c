/* gguf_read.c - memory-mapped GGUF v2/v3 reader with full validation at open (see gguf.h).
 * Spec: ggml docs/gguf.md. Layout: magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 * n_kv x (string key, u32 type, value), n_tensors x (string name, u32 n_dims, u64 ne[n_dims],
 * u32 type, u64 offset), padding to general.alignment, tensor data. Strings are u64 length +
 * bytes (no NUL). v1 (u32 counts) is rejected. */
#include "formats/gguf_internal.h"
#include "safetune/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ARRAY_DEPTH 8

typedef struct {
    char *key;
    st_gguf_type type;
    size_t val_off;        /* first byte of the value (after the u32 type) */
    size_t val_len;        /* serialized size of the value */
    st_gguf_type elem_type; /* arrays only */
    uint64_t n;             /* arrays only */
    size_t data_off;        /* arrays: first element */
    size_t *str_off;        /* string arrays: offset of each element's u64 length */
} kv_entry;

struct st_gguf {
    char *path;
    const uint8_t *map;
    size_t size;
    uint32_t version;
    uint64_t alignment;
    size_t data_start;
    int64_t n_kv;
    kv_entry *kv;
    int64_t n_tensors;
    st_gguf_tensor *tensors;
};

/* ---- little-endian reads from the mapping (possibly unaligned) ---- */
static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

static const char *k_type_names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                     "bool", "string", "array", "uint64", "int64", "float64"};

const char *st_gguf__type_name(uint32_t type) { return type <= 12 ? k_type_names[type] : NULL; }

size_t st_gguf__scalar_size(uint32_t type) {
    switch (type) {
    case ST_GGUF_UINT8: case ST_GGUF_INT8: case ST_GGUF_BOOL: return 1;
    case ST_GGUF_UINT16: case ST_GGUF_INT16: return 2;
    case ST_GGUF_UINT32: case ST_GGUF_INT32: case ST_GGUF_FLOAT32: return 4;
    case ST_GGUF_UINT64: case ST_GGUF_INT64: case ST_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Parsing cursor. `what` describes the item being read, for error messages. */
typedef struct {
    const uint8_t *p;
    size_t size, pos;
    const char *path;
    char what[320];
} cursor;

static st_status truncated(const cursor *c, uint64_t need, const char *item) {
    return st_error(ST_ERR_FORMAT,
                    "%s: byte %zu: truncated: %s%s%s needs %llu bytes but the file ends at %zu bytes"
                    " (file truncated?)",
                    c->path, c->pos, c->what, c->what[0] ? " " : "", item, (unsigned long long)need,
                    c->size);
}

static st_status rd_u32(cursor *c, uint32_t *v, const char *item) {
    if (c->size - c->pos < 4) return truncated(c, 4, item);
    *v = le32(c->p + c->pos);
    c->pos += 4;
    return ST_OK;
}

static st_status rd_u64(cursor *c, uint64_t *v, const char *item) {
    if (c->size - c->pos < 8) return truncated(c, 8, item);
    *v = le64(c->p + c->pos);
    c->pos += 8;
    return ST_OK;
}

/* String: u64 length + bytes. Returns offset and length of the bytes. */
static st_status rd_str(cursor *c, size_t *off, uint64_t *len, const char *item) {
    size_t start = c->pos;
    st_status s = rd_u64(c, len, item);
    if (s) return s;
    if (*len > c->size - c->pos) {
        c->pos = start;
        return st_error(ST_ERR_FORMAT,
                        "%s: byte %zu: %s%s%s: string length %llu runs past end of file (%zu bytes):"
                        " file truncated or corrupt?",
                        c->path, start, c->what, c->what[0] ? " " : "", item, (unsigned long long)*len,
                        c->size);
    }
    *off = c->pos;
    c->pos += (size_t)*len;
    return ST_OK;
}

/* Skip over (and validate) one value of `type`. */
static st_status skip_value(cursor *c, uint32_t type, int depth) {
    size_t sz = st_gguf__scalar_size(type);
    if (sz) {
        if (c->size - c->pos < sz) return truncated(c, sz, "value");
        if (type == ST_GGUF_BOOL && c->p[c->pos] > 1)
            return st_error(ST_ERR_FORMAT, "%s: byte %zu: %s: bool value %u is not 0 or 1", c->path,
                            c->pos, c->what, c->p[c->pos]);
        c->pos += sz;
        return ST_OK;
    }
    if (type == ST_GGUF_STRING) {
        size_t off;
        uint64_t len;
        return rd_str(c, &off, &len, "string value");
    }
    if (type != ST_GGUF_ARRAY)
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: %s: unknown value type %u (valid: 0..12)", c->path,
                        c->pos >= 4 ? c->pos - 4 : 0, c->what, type);
    if (depth >= MAX_ARRAY_DEPTH)
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: %s: arrays nested deeper than %d levels", c->path,
                        c->pos, c->what, MAX_ARRAY_DEPTH);
    uint32_t et = 0;
    uint64_t n = 0;
    size_t at = c->pos;
    st_status s = rd_u32(c, &et, "array element type");
    if (!s) s = rd_u64(c, &n, "array length");
    if (s) return s;
    if (et > 12)
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: %s: unknown array element type %u (valid: 0..12)",
                        c->path, at, c->what, et);
    size_t esz = st_gguf__scalar_size(et);
    if (esz) {
        if (n > (c->size - c->pos) / esz)
            return st_error(ST_ERR_FORMAT,
                            "%s: byte %zu: %s: array of %llu %s values runs past end of file (%zu bytes):"
                            " file truncated?",
                            c->path, at, c->what, (unsigned long long)n, st_gguf__type_name(et), c->size);
        if (et == ST_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (c->p[c->pos + i] > 1)
                    return st_error(ST_ERR_FORMAT, "%s: byte %zu: %s: bool element %llu is %u, not 0 or 1",
                                    c->path, c->pos + (size_t)i, c->what, (unsigned long long)i,
                                    c->p[c->pos + i]);
        c->pos += (size_t)(n * esz);
        return ST_OK;
    }
    /* strings (>= 8 bytes each) or nested arrays (>= 12 bytes each) */
    size_t min_sz = et == ST_GGUF_STRING ? 8 : 12;
    if (n > (c->size - c->pos) / min_sz)
        return st_error(ST_ERR_FORMAT,
                        "%s: byte %zu: %s: array of %llu %s values cannot fit in the rest of the file"
                        " (%zu bytes): file truncated?",
                        c->path, at, c->what, (unsigned long long)n, st_gguf__type_name(et), c->size);
    for (uint64_t i = 0; i < n; i++) {
        s = skip_value(c, et, depth + 1);
        if (s) return s;
    }
    return ST_OK;
}

static int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

static st_status parse_kv(st_gguf *g, cursor *c) {
    for (int64_t i = 0; i < g->n_kv; i++) {
        kv_entry *e = &g->kv[i];
        snprintf(c->what, sizeof c->what, "key #%lld", (long long)i);
        size_t koff, at = c->pos;
        uint64_t klen;
        st_status s = rd_str(c, &koff, &klen, "name");
        if (s) return s;
        if (klen == 0) return st_error(ST_ERR_FORMAT, "%s: byte %zu: key #%lld has an empty name", g->path, at, (long long)i);
        if (memchr(c->p + koff, 0, klen))
            return st_error(ST_ERR_FORMAT, "%s: byte %zu: key #%lld name contains a NUL byte", g->path, at,
                            (long long)i);
        e->key = st_malloc(klen + 1);
        if (!e->key) return ST_ERR_NOMEM;
        memcpy(e->key, c->p + koff, klen);
        e->key[klen] = '\0';
        for (int64_t j = 0; j < i; j++)
            if (!strcmp(g->kv[j].key, e->key))
                return st_error(ST_ERR_FORMAT, "%s: byte %zu: duplicate key '%s'", g->path, at, e->key);
        snprintf(c->what, sizeof c->what, "key '%.256s'", e->key);
        uint32_t type = 0;
        s = rd_u32(c, &type, "value type");
        if (s) return s;
        if (type > 12)
            return st_error(ST_ERR_FORMAT, "%s: byte %zu: key '%s': unknown value type %u (valid: 0..12)",
                            g->path, c->pos - 4, e->key, type);
        e->type = (st_gguf_type)type;
        e->val_off = c->pos;
        s = skip_value(c, type, 0);
        if (s) return s;
        e->val_len = c->pos - e->val_off;
        if (type == ST_GGUF_ARRAY) {
            e->elem_type = (st_gguf_type)le32(c->p + e->val_off);
            e->n = le64(c->p + e->val_off + 4);
            e->data_off = e->val_off + 12;
            if (e->elem_type == ST_GGUF_STRING) {
                e->str_off = st_malloc((size_t)(e->n ? e->n : 1) * sizeof(size_t));
                if (!e->str_off) return ST_ERR_NOMEM;
                size_t p = e->data_off;
                for (uint64_t k = 0; k < e->n; k++) {
                    e->str_off[k] = p;
                    p += 8 + (size_t)le64(c->p + p);
                }
            }
        }
    }
    c->what[0] = '\0';
    return ST_OK;
}

static st_status parse_tensors(st_gguf *g, cursor *c) {
    size_t *info_at = st_malloc((size_t)(g->n_tensors ? g->n_tensors : 1) * sizeof(size_t));
    if (!info_at) return ST_ERR_NOMEM;
    st_status s = ST_OK;
    for (int64_t i = 0; i < g->n_tensors && !s; i++) {
        st_gguf_tensor *t = &g->tensors[i];
        snprintf(c->what, sizeof c->what, "tensor info #%lld", (long long)i);
        size_t noff, at = c->pos;
        uint64_t nlen;
        if ((s = rd_str(c, &noff, &nlen, "name"))) break;
        if (memchr(c->p + noff, 0, nlen)) {
            s = st_error(ST_ERR_FORMAT, "%s: byte %zu: tensor #%lld name contains a NUL byte", g->path, at, (long long)i);
            break;
        }
        char *name = st_malloc(nlen + 1);
        if (!name) { s = ST_ERR_NOMEM; break; }
        memcpy(name, c->p + noff, nlen);
        name[nlen] = '\0';
        t->name = name;
        for (int64_t j = 0; j < i; j++)
            if (!strcmp(g->tensors[j].name, name)) {
                s = st_error(ST_ERR_FORMAT, "%s: byte %zu: duplicate tensor name '%s'", g->path, at, name);
                break;
            }
        if (s) break;
        snprintf(c->what, sizeof c->what, "tensor '%.256s'", name);
        size_t dims_at = c->pos;
        if ((s = rd_u32(c, &t->n_dims, "n_dims"))) break;
        if (t->n_dims < 1 || t->n_dims > 4) {
            s = st_error(ST_ERR_FORMAT, "%s: byte %zu: tensor '%s': n_dims %u out of range (1..4)", g->path,
                         dims_at, name, t->n_dims);
            break;
        }
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        uint64_t nel = 1;
        for (uint32_t d = 0; d < t->n_dims && !s; d++) {
            uint64_t v = 0;
            size_t dat = c->pos;
            if ((s = rd_u64(c, &v, "dimension"))) break;
            if (v > (uint64_t)INT64_MAX || (v && nel > (uint64_t)INT64_MAX / v))
                s = st_error(ST_ERR_FORMAT, "%s: byte %zu: tensor '%s': dimension %u = %llu is too large",
                             g->path, dat, name, d, (unsigned long long)v);
            t->ne[d] = (int64_t)v;
            nel *= v;
        }
        if (s) break;
        size_t type_at = c->pos;
        if ((s = rd_u32(c, &t->type, "type"))) break;
        if (!st_ggml_type_name(t->type)) {
            const char *any = st_ggml_type_name_any(t->type);
            if (any)
                s = st_error(ST_ERR_UNSUPPORTED,
                             "%s: byte %zu: tensor '%s': tensor type %u (%s) is not supported (supported: F32,"
                             " F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)",
                             g->path, type_at, name, t->type, any);
            else
                s = st_error(ST_ERR_FORMAT, "%s: byte %zu: tensor '%s': unknown tensor type %u", g->path,
                             type_at, name, t->type);
            break;
        }
        size_t blck = st_ggml_block_size(t->type);
        if ((uint64_t)t->ne[0] % blck) {
            s = st_error(ST_ERR_FORMAT,
                         "%s: byte %zu: tensor '%s': ne[0] = %lld is not a multiple of the %s block size %zu",
                         g->path, dims_at + 4, name, (long long)t->ne[0], st_ggml_type_name(t->type), blck);
            break;
        }
        uint64_t bytes = nel / blck;
        if (bytes > SIZE_MAX / st_ggml_type_size(t->type)) {
            s = st_error(ST_ERR_FORMAT, "%s: byte %zu: tensor '%s': size overflows", g->path, dims_at, name);
            break;
        }
        t->nbytes = (size_t)(bytes * st_ggml_type_size(t->type));
        info_at[i] = c->pos;
        if ((s = rd_u64(c, &t->offset, "data offset"))) break;
    }
    if (s) {
        free(info_at);
        return s;
    }
    c->what[0] = '\0';
    /* data section starts at the next multiple of the alignment */
    uint64_t ds = (c->pos + g->alignment - 1) / g->alignment * g->alignment;
    g->data_start = ds > c->size ? c->size : (size_t)ds;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        st_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment) {
            s = st_error(ST_ERR_FORMAT,
                         "%s: byte %zu: tensor '%s': data offset %llu is not a multiple of the alignment %llu",
                         g->path, info_at[i], t->name, (unsigned long long)t->offset,
                         (unsigned long long)g->alignment);
            break;
        }
        uint64_t lo, hi;
        int ovf = __builtin_add_overflow(ds, t->offset, &lo);
        ovf |= __builtin_add_overflow(lo, (uint64_t)t->nbytes, &hi);
        if (ovf || hi > c->size) {
            s = st_error(ST_ERR_FORMAT,
                         "%s: byte %zu: tensor '%s': data [%llu, %llu) past end of file (%zu bytes): file"
                         " truncated?",
                         g->path, info_at[i], t->name, (unsigned long long)lo,
                         ovf ? (unsigned long long)UINT64_MAX : (unsigned long long)hi, c->size);
            break;
        }
        t->data = c->p + lo;
    }
    /* no two tensors may share bytes (O(n^2) over a few hundred tensors is negligible) */
    for (int64_t i = 0; i < g->n_tensors && !s; i++)
        for (int64_t j = i + 1; j < g->n_tensors; j++) {
            const st_gguf_tensor *a = &g->tensors[i], *b = &g->tensors[j];
            if (a->nbytes && b->nbytes && a->offset < b->offset + b->nbytes && b->offset < a->offset + a->nbytes) {
                s = st_error(ST_ERR_FORMAT, "%s: byte %zu: tensor '%s': data [%llu, %llu) overlaps tensor '%s'",
                             g->path, info_at[j], b->name, (unsigned long long)(ds + b->offset),
                             (unsigned long long)(ds + b->offset + b->nbytes), a->name);
                break;
            }
        }
    free(info_at);
    return s;
}

static st_status parse(st_gguf *g) {
    cursor c = {.p = g->map, .size = g->size, .pos = 0, .path = g->path};
    c.what[0] = '\0';
    uint32_t magic = 0;
    st_status s = rd_u32(&c, &magic, "magic");
    if (s) return s;
    if (magic != ST_GGUF_MAGIC) {
        char shown[5];
        for (int i = 0; i < 4; i++) {
            uint8_t ch = g->map[i];
            shown[i] = (ch >= 32 && ch < 127) ? (char)ch : '.';
        }
        shown[4] = '\0';
        return st_error(ST_ERR_FORMAT, "%s: byte 0: bad magic 0x%08x (\"%s\"), expected \"GGUF\": not a GGUF file",
                        g->path, magic, shown);
    }
    if ((s = rd_u32(&c, &g->version, "version"))) return s;
    if (g->version == 1)
        return st_error(ST_ERR_UNSUPPORTED,
                        "%s: byte 4: unsupported GGUF version 1 (only v2 and v3 are read): re-convert the model"
                        " with a current llama.cpp",
                        g->path);
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0 && g->version)
            return st_error(ST_ERR_UNSUPPORTED,
                            "%s: byte 4: GGUF version 0x%08x looks byte-swapped: big-endian GGUF files are not"
                            " supported",
                            g->path, g->version);
        return st_error(ST_ERR_UNSUPPORTED, "%s: byte 4: unsupported GGUF version %u (expected 2 or 3)", g->path,
                        g->version);
    }
    uint64_t nt = 0, nkv = 0;
    if ((s = rd_u64(&c, &nt, "tensor count"))) return s;
    if ((s = rd_u64(&c, &nkv, "metadata key/value count"))) return s;
    /* each key/value needs >= 8 + 1 + 4 + 1 bytes and each tensor info >= 8 + 4 + 8 + 4 + 8 */
    if (nkv > (c.size - c.pos) / 14)
        return st_error(ST_ERR_FORMAT,
                        "%s: byte 16: metadata key/value count %llu cannot fit in a %zu-byte file (corrupt header"
                        " or file truncated)",
                        g->path, (unsigned long long)nkv, c.size);
    if (nt > (c.size - c.pos) / 32)
        return st_error(ST_ERR_FORMAT,
                        "%s: byte 8: tensor count %llu cannot fit in a %zu-byte file (corrupt header or file"
                        " truncated)",
                        g->path, (unsigned long long)nt, c.size);
    g->n_kv = (int64_t)nkv;
    g->n_tensors = (int64_t)nt;
    g->kv = st_calloc(nkv ? nkv : 1, sizeof *g->kv);
    g->tensors = st_calloc(nt ? nt : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return ST_ERR_NOMEM;
    if ((s = parse_kv(g, &c))) return s;
    g->alignment = ST_GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = st_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        int64_t a;
        if (st_gguf_get_i64(g, "general.alignment", &a) || a <= 0 || !is_pow2((uint64_t)a))
            return st_error(ST_ERR_FORMAT,
                            "%s: byte %zu: general.alignment must be a positive power-of-two integer (uint32)",
                            g->path, g->kv[ai].val_off);
        g->alignment = (uint64_t)a;
    }
    return parse_tensors(g, &c);
}

st_status st_gguf_open(const char *path, st_gguf **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return st_error(ST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat stt;
    if (fstat(fd, &stt) != 0 || !S_ISREG(stt.st_mode)) {
        close(fd);
        return st_error(ST_ERR_IO, "%s: not a regular file", path);
    }
    st_gguf *g = st_calloc(1, sizeof *g);
    if (!g) {
        close(fd);
        return ST_ERR_NOMEM;
    }
    g->path = st_strdup(path);
    g->size = (size_t)stt.st_size;
    if (!g->path) {
        close(fd);
        st_gguf_close(g);
        return ST_ERR_NOMEM;
    }
    if (g->size == 0) {
        close(fd);
        st_gguf_close(g);
        return st_error(ST_ERR_FORMAT, "%s: byte 0: file is empty (0 bytes): not a GGUF file", path);
    }
    void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        st_gguf_close(g);
        return st_error(ST_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, (size_t)stt.st_size, strerror(errno));
    }
    g->map = m;
    st_status s = parse(g);
    if (s) {
        st_gguf_close(g);
        return s;
    }
    *out = g;
    return ST_OK;
}

void st_gguf_close(st_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].str_off);
        }
    if (g->tensors)
        for (int64_t i = 0; i < g->n_tensors; i++) free((char *)g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    if (g->map) munmap((void *)g->map, g->size);
    free(g->path);
    free(g);
}

uint32_t st_gguf_version(const st_gguf *g) { return g->version; }
const char *st_gguf_path(const st_gguf *g) { return g->path; }
uint64_t st_gguf_alignment(const st_gguf *g) { return g->alignment; }
size_t st_gguf_data_offset(const st_gguf *g) { return g->data_start; }

int64_t st_gguf_find_key(const st_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return i;
    return -1;
}
int64_t st_gguf_n_keys(const st_gguf *g) { return g->n_kv; }
const char *st_gguf_key_name(const st_gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL; }
st_gguf_type st_gguf_key_type(const st_gguf *g, int64_t i) { return g->kv[i].type; }

void st_gguf__raw_value(const st_gguf *g, int64_t i, const void **data, size_t *len) {
    *data = g->map + g->kv[i].val_off;
    *len = g->kv[i].val_len;
}

static st_status find_kv(const st_gguf *g, const char *key, const kv_entry **e) {
    int64_t i = st_gguf_find_key(g, key);
    if (i < 0) return st_error(ST_ERR_FORMAT, "%s: metadata key '%s' not found", g->path, key);
    *e = &g->kv[i];
    return ST_OK;
}

/* Read a numeric scalar as double and (exactly) as int64 where it is an integer. */
static int scalar_value(const uint8_t *p, st_gguf_type t, double *d, int64_t *i, int *is_int, int *u64_big) {
    *is_int = 1;
    *u64_big = 0;
    switch (t) {
    case ST_GGUF_UINT8: *i = p[0]; break;
    case ST_GGUF_INT8: *i = (int8_t)p[0]; break;
    case ST_GGUF_BOOL: *i = p[0]; break;
    case ST_GGUF_UINT16: *i = (uint16_t)(p[0] | (p[1] << 8)); break;
    case ST_GGUF_INT16: *i = (int16_t)(uint16_t)(p[0] | (p[1] << 8)); break;
    case ST_GGUF_UINT32: *i = le32(p); break;
    case ST_GGUF_INT32: *i = (int32_t)le32(p); break;
    case ST_GGUF_UINT64: {
        uint64_t u = le64(p);
        *u64_big = u > (uint64_t)INT64_MAX;
        *i = (int64_t)(u & (uint64_t)INT64_MAX);
        *d = (double)u;
        return 1;
    }
    case ST_GGUF_INT64: *i = (int64_t)le64(p); break;
    case ST_GGUF_FLOAT32: {
        uint32_t u = le32(p);
        float f;
        memcpy(&f, &u, 4);
        *d = f;
        *is_int = 0;
        return 1;
    }
    case ST_GGUF_FLOAT64: {
        uint64_t u = le64(p);
        memcpy(d, &u, 8);
        *is_int = 0;
        return 1;
    }
    default: return 0;
    }
    *d = (double)*i;
    return 1;
}

st_status st_gguf_get_i64(const st_gguf *g, const char *key, int64_t *out) {
    const kv_entry *e = NULL;
    st_status s = find_kv(g, key, &e);
    if (s) return s;
    double d;
    int64_t i;
    int is_int, big;
    if (!scalar_value(g->map + e->val_off, e->type, &d, &i, &is_int, &big))
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: key '%s' is a %s, expected an integer", g->path, e->val_off,
                        key, st_gguf__type_name(e->type));
    if (big) return st_error(ST_ERR_FORMAT, "%s: byte %zu: key '%s' = %.0f does not fit in int64", g->path, e->val_off, key, d);
    if (!is_int) {
        if (!(d >= -9.2e18 && d <= 9.2e18) || d != (double)(int64_t)d)
            return st_error(ST_ERR_FORMAT, "%s: byte %zu: key '%s' = %g is not an integer", g->path, e->val_off, key, d);
        i = (int64_t)d;
    }
    *out = i;
    return ST_OK;
}

st_status st_gguf_get_f64(const st_gguf *g, const char *key, double *out) {
    const kv_entry *e = NULL;
    st_status s = find_kv(g, key, &e);
    if (s) return s;
    double d;
    int64_t i;
    int is_int, big;
    if (!scalar_value(g->map + e->val_off, e->type, &d, &i, &is_int, &big))
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: key '%s' is a %s, expected a number", g->path, e->val_off, key,
                        st_gguf__type_name(e->type));
    *out = d;
    return ST_OK;
}

st_status st_gguf_get_bool(const st_gguf *g, const char *key, int *out) {
    int64_t v;
    st_status s = st_gguf_get_i64(g, key, &v);
    if (s) return s;
    *out = v != 0;
    return ST_OK;
}

st_status st_gguf_get_str(const st_gguf *g, const char *key, const char **str, size_t *len) {
    const kv_entry *e = NULL;
    st_status s = find_kv(g, key, &e);
    if (s) return s;
    if (e->type != ST_GGUF_STRING)
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: key '%s' is a %s, expected a string", g->path, e->val_off, key,
                        st_gguf__type_name(e->type));
    *len = (size_t)le64(g->map + e->val_off);
    *str = (const char *)g->map + e->val_off + 8;
    return ST_OK;
}

st_status st_gguf_get_arr(const st_gguf *g, const char *key, st_gguf_type *elem_type, uint64_t *n,
                          const void **data) {
    const kv_entry *e = NULL;
    st_status s = find_kv(g, key, &e);
    if (s) return s;
    if (e->type != ST_GGUF_ARRAY)
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: key '%s' is a %s, expected an array", g->path, e->val_off, key,
                        st_gguf__type_name(e->type));
    if (elem_type) *elem_type = e->elem_type;
    if (n) *n = e->n;
    if (data) *data = g->map + e->data_off;
    return ST_OK;
}

st_status st_gguf_get_arr_str(const st_gguf *g, const char *key, uint64_t i, const char **str, size_t *len) {
    const kv_entry *e = NULL;
    st_status s = find_kv(g, key, &e);
    if (s) return s;
    if (e->type != ST_GGUF_ARRAY || e->elem_type != ST_GGUF_STRING)
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: key '%s' is not an array of strings", g->path, e->val_off, key);
    if (i >= e->n)
        return st_error(ST_ERR_ARG, "%s: key '%s': index %llu out of range (array has %llu strings)", g->path, key,
                        (unsigned long long)i, (unsigned long long)e->n);
    *len = (size_t)le64(g->map + e->str_off[i]);
    *str = (const char *)g->map + e->str_off[i] + 8;
    return ST_OK;
}

int64_t st_gguf_n_tensors(const st_gguf *g) { return g->n_tensors; }

const st_gguf_tensor *st_gguf_tensor_at(const st_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const st_gguf_tensor *st_gguf_find_tensor(const st_gguf *g, const char *name) {
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

int64_t st_gguf_tensor_numel(const st_gguf_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

st_status st_gguf_tensor_to_f32(const st_gguf *g, const st_gguf_tensor *t, float *dst) {
    const int64_t ne0 = t->ne[0];
    const int64_t nrows = t->ne[1] * t->ne[2] * t->ne[3];
    const size_t rb = st_ggml_row_bytes(t->type, ne0);
    if (ne0 == 0 || nrows == 0) return ST_OK;
    if (!rb) return st_error(ST_ERR_UNSUPPORTED, "%s: tensor '%s': cannot dequantise type %u", g->path, t->name, t->type);
    const uint8_t *src = t->data;
    int failed = 0;
    /* rows are independent; type and ne[0] were validated at open so st_dequantize cannot fail */
#pragma omp parallel for schedule(static) if (ne0 * nrows >= (1 << 16)) reduction(| : failed)
    for (int64_t r = 0; r < nrows; r++)
        failed |= st_dequantize(t->type, src + (size_t)r * rb, dst + (size_t)r * (size_t)ne0, ne0) != ST_OK;
    if (failed) return st_error(ST_ERR_INTERNAL, "%s: tensor '%s': dequantisation failed", g->path, t->name);
    return ST_OK;
}
