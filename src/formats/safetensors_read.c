/* safetensors_read.c - safetensors reader: one file, a model.safetensors.index.json with
 * shards, or a directory holding either (see safetensors.h). Format (huggingface/safetensors
 * README): u64 little-endian N, N bytes of JSON {name: {dtype, shape, data_offsets: [b, e]},
 * "__metadata__": {str: str}}, then the data; offsets are relative to the data start. Every
 * file is mmapped and fully validated at open. */
#include "safetune/quant.h"
#include "safetune/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *path;
    const uint8_t *map;
    size_t size;
} st_file;

struct st_safetensors {
    st_file *files;
    size_t nfiles;
    st_st_tensor *t;
    size_t n, cap;
};

static const struct {
    const char *name;
    size_t size;
    st_dtype dtype;
} k_dtypes[] = {
    {"F64", 8, ST_DTYPE_OTHER},     {"F32", 4, ST_DTYPE_F32},       {"F16", 2, ST_DTYPE_F16},
    {"BF16", 2, ST_DTYPE_BF16},     {"I64", 8, ST_DTYPE_OTHER},     {"I32", 4, ST_DTYPE_OTHER},
    {"I16", 2, ST_DTYPE_OTHER},     {"I8", 1, ST_DTYPE_OTHER},      {"U64", 8, ST_DTYPE_OTHER},
    {"U32", 4, ST_DTYPE_OTHER},     {"U16", 2, ST_DTYPE_OTHER},     {"U8", 1, ST_DTYPE_OTHER},
    {"BOOL", 1, ST_DTYPE_OTHER},    {"F8_E4M3", 1, ST_DTYPE_OTHER}, {"F8_E5M2", 1, ST_DTYPE_OTHER},
};

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

void st_safetensors_close(st_safetensors *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free((char *)s->t[i].name);
    for (size_t i = 0; i < s->nfiles; i++) {
        if (s->files[i].map) munmap((void *)s->files[i].map, s->files[i].size);
        free(s->files[i].path);
    }
    free(s->files);
    free(s->t);
    free(s);
}

size_t st_safetensors_count(const st_safetensors *s) { return s->n; }
const st_st_tensor *st_safetensors_at(const st_safetensors *s, size_t i) { return i < s->n ? &s->t[i] : NULL; }
const st_st_tensor *st_safetensors_find(const st_safetensors *s, const char *name) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

static st_status map_file(const char *path, st_file *f) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return st_error(ST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat stt;
    if (fstat(fd, &stt) != 0 || !S_ISREG(stt.st_mode)) {
        close(fd);
        return st_error(ST_ERR_IO, "%s: not a regular file", path);
    }
    f->size = (size_t)stt.st_size;
    f->map = NULL;
    if (f->size < 8) {
        close(fd);
        return st_error(ST_ERR_FORMAT, "%s: byte 0: file is %zu bytes, too short for the 8-byte header length (file "
                                       "truncated or not a safetensors file)",
                        path, f->size);
    }
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return st_error(ST_ERR_IO, "%s: cannot mmap: %s", path, strerror(errno));
    f->map = m;
    return ST_OK;
}

/* JSON number -> exact non-negative integer below 2^53. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d < 9007199254740992.0) || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

static st_status add_tensor(st_safetensors *s, const st_st_tensor *t) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 64;
        st_st_tensor *nt = st_realloc(s->t, nc * sizeof *nt);
        if (!nt) return ST_ERR_NOMEM;
        s->t = nt;
        s->cap = nc;
    }
    s->t[s->n++] = *t;
    return ST_OK;
}

typedef struct {
    uint64_t b, e;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->b < y->b ? -1 : x->b > y->b ? 1 : (x->e < y->e ? -1 : x->e > y->e);
}

/* Parse and validate the header of an already mapped file; append its tensors to s. */
static st_status parse_file(st_safetensors *s, const st_file *f) {
    const char *path = f->path;
    uint64_t hlen = 0;
    memcpy(&hlen, f->map, 8);
    if (hlen > f->size - 8)
        return st_error(ST_ERR_FORMAT,
                        "%s: byte 0: header length %llu runs past end of file (%zu bytes): file truncated or not a "
                        "safetensors file",
                        path, (unsigned long long)hlen, f->size);
    if (hlen < 2 || f->map[8] != '{')
        return st_error(ST_ERR_FORMAT, "%s: byte 8: header is not a JSON object (expected '{'): not a safetensors file",
                        path);
    const char *hdr = (const char *)f->map + 8;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = 8 + (end && end >= hdr ? (size_t)(end - hdr) : 0);
        const char *err = cJSON_GetErrorPtr();
        if (err && err >= hdr && err <= hdr + hlen) at = 8 + (size_t)(err - hdr);
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: malformed JSON header (%llu bytes)", path, at,
                        (unsigned long long)hlen);
    }
    /* the rest of the header may only be padding spaces */
    for (const char *p = end; p && p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != '\0') {
            cJSON_Delete(root);
            return st_error(ST_ERR_FORMAT, "%s: byte %zu: unexpected data after the JSON header", path,
                            8 + (size_t)(p - hdr));
        }
    st_status st = ST_OK;
    const size_t data_start = 8 + (size_t)hlen, data_size = f->size - data_start;
    size_t first = s->n;
    if (!cJSON_IsObject(root)) {
        st = st_error(ST_ERR_FORMAT, "%s: byte 8: header is not a JSON object", path);
        goto done;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *name = it->string;
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(it)) {
                st = st_error(ST_ERR_FORMAT, "%s: header key '__metadata__' must be an object of strings", path);
                goto done;
            }
            continue;
        }
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsObject(it) || !cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of) ||
            cJSON_GetArraySize(of) != 2) {
            st = st_error(ST_ERR_FORMAT,
                          "%s: header tensor '%s': needs \"dtype\" (string), \"shape\" (array) and \"data_offsets\" "
                          "([begin, end])",
                          path, name);
            goto done;
        }
        st_st_tensor t = {0};
        size_t esz = 0;
        for (size_t k = 0; k < sizeof k_dtypes / sizeof k_dtypes[0]; k++)
            if (!strcmp(dt->valuestring, k_dtypes[k].name)) {
                esz = k_dtypes[k].size;
                t.dtype = k_dtypes[k].dtype;
                t.dtype_name = k_dtypes[k].name;
            }
        if (!esz) {
            st = st_error(ST_ERR_FORMAT, "%s: header tensor '%s': unknown dtype '%s'", path, name, dt->valuestring);
            goto done;
        }
        int nd = cJSON_GetArraySize(sh);
        if (nd > 8) {
            st = st_error(ST_ERR_UNSUPPORTED, "%s: header tensor '%s': %d dimensions (at most 8 supported)", path,
                          name, nd);
            goto done;
        }
        t.n_dims = nd;
        uint64_t numel = 1;
        int d = 0;
        int ovf = 0;
        for (const cJSON *x = sh->child; x; x = x->next, d++) {
            uint64_t v;
            if (!json_uint(x, &v)) {
                st = st_error(ST_ERR_FORMAT, "%s: header tensor '%s': shape[%d] is not a non-negative integer", path,
                              name, d);
                goto done;
            }
            t.shape[d] = (int64_t)v;
            ovf |= __builtin_mul_overflow(numel, v, &numel);
        }
        uint64_t b, e;
        if (!json_uint(of->child, &b) || !json_uint(of->child->next, &e) || e < b) {
            st = st_error(ST_ERR_FORMAT, "%s: header tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= end",
                          path, name);
            goto done;
        }
        uint64_t want;
        ovf |= __builtin_mul_overflow(numel, (uint64_t)esz, &want);
        if (ovf || want != e - b) {
            char shp[200];
            size_t p = 0;
            shp[0] = '\0';
            for (int k = 0; k < nd && p < sizeof shp - 24; k++)
                p += (size_t)snprintf(shp + p, sizeof shp - p, "%s%lld", k ? ", " : "", (long long)t.shape[k]);
            st = st_error(ST_ERR_FORMAT,
                          "%s: header tensor '%s': shape [%s] x %s (%zu bytes) = %llu bytes, but data_offsets [%llu, "
                          "%llu) span %llu bytes",
                          path, name, shp, t.dtype_name, esz, ovf ? 0ull : (unsigned long long)want,
                          (unsigned long long)b, (unsigned long long)e, (unsigned long long)(e - b));
            goto done;
        }
        if (e > data_size) {
            st = st_error(ST_ERR_FORMAT,
                          "%s: header tensor '%s': data_offsets [%llu, %llu) past end of data (%zu bytes from byte %zu):"
                          " file truncated?",
                          path, name, (unsigned long long)b, (unsigned long long)e, data_size, data_start);
            goto done;
        }
        t.data = f->map + data_start + b;
        t.nbytes = (size_t)(e - b);
        t.name = st_strdup(name);
        if (!t.name) {
            st = ST_ERR_NOMEM;
            goto done;
        }
        if ((st = add_tensor(s, &t))) {
            free((char *)t.name);
            goto done;
        }
    }
    /* no overlaps between tensors of this file */
    size_t nt = s->n - first;
    if (nt > 1) {
        span *sp = st_malloc(nt * sizeof *sp);
        if (!sp) {
            st = ST_ERR_NOMEM;
            goto done;
        }
        const uint8_t *base = f->map + data_start;
        for (size_t i = 0; i < nt; i++) {
            const st_st_tensor *t = &s->t[first + i];
            sp[i].b = (uint64_t)((const uint8_t *)t->data - base);
            sp[i].e = sp[i].b + t->nbytes;
            sp[i].name = t->name;
        }
        qsort(sp, nt, sizeof *sp, cmp_span);
        for (size_t i = 1; i < nt && !st; i++)
            if (sp[i].b < sp[i - 1].e && sp[i].e > sp[i].b && sp[i - 1].e > sp[i - 1].b)
                st = st_error(ST_ERR_FORMAT, "%s: header tensor '%s': data_offsets [%llu, %llu) overlap tensor '%s'",
                              path, sp[i].name, (unsigned long long)sp[i].b, (unsigned long long)sp[i].e,
                              sp[i - 1].name);
        free(sp);
    }
done:
    cJSON_Delete(root);
    return st;
}

static st_status add_file(st_safetensors *s, const char *path, size_t *idx) {
    st_file *nf = st_realloc(s->files, (s->nfiles + 1) * sizeof *nf);
    if (!nf) return ST_ERR_NOMEM;
    s->files = nf;
    st_file *f = &s->files[s->nfiles];
    memset(f, 0, sizeof *f);
    f->path = st_strdup(path);
    if (!f->path) return ST_ERR_NOMEM;
    s->nfiles++;
    *idx = s->nfiles - 1;
    st_status st = map_file(path, f);
    if (st) return st;
    return parse_file(s, f);
}

static st_status open_index(st_safetensors *s, const char *ipath) {
    char *text;
    size_t len;
    st_status st = st_read_file(ipath, &text, &len);
    if (st) return st;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        const char *err = cJSON_GetErrorPtr();
        size_t at = err && err >= text && err <= text + len ? (size_t)(err - text) : 0;
        free(text);
        return st_error(ST_ERR_FORMAT, "%s: byte %zu: malformed JSON", ipath, at);
    }
    free(text);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return st_error(ST_ERR_FORMAT, "%s: key 'weight_map' missing or not an object", ipath);
    }
    /* directory of the index */
    char *dir = st_strdup(ipath);
    if (!dir) {
        cJSON_Delete(root);
        return ST_ERR_NOMEM;
    }
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else strcpy(dir, ".");
    /* open each distinct shard once, in order of first mention */
    for (const cJSON *it = wm->child; it && !st; it = it->next) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/')) {
            st = st_error(ST_ERR_FORMAT, "%s: weight_map['%s'] must be a shard file name in the same folder", ipath,
                          it->string);
            break;
        }
        int seen = 0;
        for (const cJSON *p = wm->child; p != it; p = p->next)
            if (!strcmp(p->valuestring, it->valuestring)) seen = 1;
        if (seen) continue;
        char *sp = st_path_join(dir, it->valuestring);
        if (!sp) {
            st = ST_ERR_NOMEM;
            break;
        }
        if (access(sp, F_OK) != 0) {
            st = st_error(ST_ERR_IO, "%s: weight_map['%s']: shard file '%s' is missing (%s)", ipath, it->string,
                          it->valuestring, sp);
            free(sp);
            break;
        }
        size_t idx;
        st = add_file(s, sp, &idx);
        free(sp);
    }
    /* every mapped tensor must be in its shard; tensors must not repeat across shards */
    for (const cJSON *it = wm->child; it && !st; it = it->next) {
        const st_st_tensor *t = st_safetensors_find(s, it->string);
        if (!t) {
            st = st_error(ST_ERR_FORMAT, "%s: weight_map['%s']: tensor not found in shard '%s'", ipath, it->string,
                          it->valuestring);
            break;
        }
    }
    free(dir);
    cJSON_Delete(root);
    return st;
}

st_status st_safetensors_open(const char *path, st_safetensors **out) {
    *out = NULL;
    struct stat stt;
    if (stat(path, &stt) != 0) return st_error(ST_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    st_safetensors *s = st_calloc(1, sizeof *s);
    if (!s) return ST_ERR_NOMEM;
    st_status st;
    if (S_ISDIR(stt.st_mode)) {
        char *ip = st_path_join(path, "model.safetensors.index.json");
        char *fp = st_path_join(path, "model.safetensors");
        if (!ip || !fp) st = ST_ERR_NOMEM;
        else if (access(ip, F_OK) == 0) st = open_index(s, ip);
        else if (access(fp, F_OK) == 0) {
            size_t idx;
            st = add_file(s, fp, &idx);
        } else
            st = st_error(ST_ERR_IO, "%s: folder has neither model.safetensors nor model.safetensors.index.json", path);
        free(ip);
        free(fp);
    } else if (ends_with(path, ".json")) {
        st = open_index(s, path);
    } else {
        size_t idx;
        st = add_file(s, path, &idx);
    }
    /* a name may appear once (a JSON header with a repeated key, or two shards) */
    for (size_t i = 0; i < s->n && !st; i++)
        for (size_t j = i + 1; j < s->n; j++)
            if (!strcmp(s->t[i].name, s->t[j].name)) {
                st = st_error(ST_ERR_FORMAT, "%s: tensor '%s' appears more than once", path, s->t[i].name);
                break;
            }
    if (st) {
        st_safetensors_close(s);
        return st;
    }
    *out = s;
    return ST_OK;
}

st_status st_safetensors_to_f32(const st_st_tensor *t, float *dst) {
    size_t n;
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_DTYPE_F32: memcpy(dst, t->data, t->nbytes); return ST_OK;
    case ST_DTYPE_F16:
        n = t->nbytes / 2;
        for (size_t i = 0; i < n; i++) dst[i] = st_fp16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        return ST_OK;
    case ST_DTYPE_BF16:
        n = t->nbytes / 2;
        for (size_t i = 0; i < n; i++) dst[i] = st_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        return ST_OK;
    default:
        return st_error(ST_ERR_UNSUPPORTED, "tensor '%s': dtype %s cannot be converted to fp32 (F32, F16, BF16 only)",
                        t->name, t->dtype_name);
    }
}
