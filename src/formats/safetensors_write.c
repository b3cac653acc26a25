/* safetensors_write.c - safetensors writer (see safetensors.h). Like the reference
 * (huggingface/safetensors `prepare`/`serialize`): JSON header with "__metadata__" first, the
 * header padded with spaces to a multiple of 8 bytes, tensors ordered by dtype size
 * (largest first) then name, data packed without gaps. Streamed to a temp file + rename. */
#include "formats/afile.h"
#include "safetune/quant.h"
#include "safetune/safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[8];
    const float *data;
    uint64_t numel;
} wt;

struct st_safetensors_writer {
    wt *t;
    size_t n, cap;
};

static size_t esize(st_dtype d) { return d == ST_DTYPE_F32 ? 4 : 2; }

st_status st_safetensors_writer_new(st_safetensors_writer **out) {
    *out = st_calloc(1, sizeof **out);
    return *out ? ST_OK : ST_ERR_NOMEM;
}

void st_safetensors_writer_free(st_safetensors_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    free(w);
}

st_status st_safetensors_writer_add(st_safetensors_writer *w, const char *name, st_dtype dtype, int n_dims,
                                    const int64_t *shape, const float *data) {
    if (!name || !name[0] || !strcmp(name, "__metadata__"))
        return st_error(ST_ERR_ARG, "safetensors writer: invalid tensor name '%s'", name ? name : "");
    if (dtype != ST_DTYPE_F32 && dtype != ST_DTYPE_BF16)
        return st_error(ST_ERR_ARG, "safetensors writer: tensor '%s': dtype must be F32 or BF16", name);
    if (n_dims < 0 || n_dims > 8)
        return st_error(ST_ERR_ARG, "safetensors writer: tensor '%s': %d dimensions (0..8)", name, n_dims);
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return st_error(ST_ERR_ARG, "safetensors writer: duplicate tensor '%s'", name);
    wt t = {0};
    t.dtype = dtype;
    t.n_dims = n_dims;
    t.numel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (shape[d] < 0 || (shape[d] && t.numel > (UINT64_MAX / 8) / (uint64_t)shape[d]))
            return st_error(ST_ERR_ARG, "safetensors writer: tensor '%s': bad shape[%d] = %lld", name, d,
                            (long long)shape[d]);
        t.shape[d] = shape[d];
        t.numel *= (uint64_t)shape[d];
    }
    t.data = data;
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 64;
        wt *nt = st_realloc(w->t, nc * sizeof *nt);
        if (!nt) return ST_ERR_NOMEM;
        w->t = nt;
        w->cap = nc;
    }
    t.name = st_strdup(name);
    if (!t.name) return ST_ERR_NOMEM;
    w->t[w->n++] = t;
    return ST_OK;
}

static int cmp_wt(const void *a, const void *b) {
    const wt *x = a, *y = b;
    size_t ex = esize(x->dtype), ey = esize(y->dtype);
    if (ex != ey) return ex > ey ? -1 : 1;
    return strcmp(x->name, y->name);
}

st_status st_safetensors_writer_finish(st_safetensors_writer *w, const char *path) {
    if (w->n > 1) qsort(w->t, w->n, sizeof *w->t, cmp_wt);
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    int ok = root && meta && cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    for (size_t i = 0; i < w->n && ok; i++) {
        const wt *t = &w->t[i];
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        ok = o && cJSON_AddStringToObject(o, "dtype", t->dtype == ST_DTYPE_F32 ? "F32" : "BF16");
        cJSON *sh = ok ? cJSON_AddArrayToObject(o, "shape") : NULL;
        cJSON *of = ok ? cJSON_AddArrayToObject(o, "data_offsets") : NULL;
        ok = sh && of;
        for (int d = 0; d < t->n_dims && ok; d++) ok = cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        uint64_t nb = t->numel * esize(t->dtype);
        ok = ok && cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off)) &&
             cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
    }
    char *js = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!js) return st_error(ST_ERR_NOMEM, "%s: cannot build the safetensors header", path);
    size_t jl = strlen(js);
    uint64_t hl = (jl + 7) / 8 * 8;
    st_afile a;
    st_status s = st_afile_open(&a, path);
    if (!s) s = st_afile_write(&a, &hl, 8);
    if (!s) s = st_afile_write(&a, js, jl);
    free(js);
    static const char spaces[8] = "        ";
    if (!s) s = st_afile_write(&a, spaces, (size_t)(hl - jl));
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = NULL;
    for (size_t i = 0; i < w->n && !s; i++) {
        const wt *t = &w->t[i];
        if (t->dtype == ST_DTYPE_F32) {
            s = st_afile_write(&a, t->data, (size_t)t->numel * 4);
            continue;
        }
        if (!buf && !(buf = st_malloc(CHUNK * sizeof *buf))) {
            st_afile_abort(&a);
            s = ST_ERR_NOMEM;
            break;
        }
        for (uint64_t p = 0; p < t->numel && !s; p += CHUNK) {
            size_t k = t->numel - p < CHUNK ? (size_t)(t->numel - p) : CHUNK;
            for (size_t j = 0; j < k; j++) buf[j] = st_f32_to_bf16(t->data[p + j]);
            s = st_afile_write(&a, buf, k * 2);
        }
    }
    free(buf);
    if (s) return s; /* st_afile_write already removed the temp file */
    return st_afile_commit(&a);
}
