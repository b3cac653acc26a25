/* formats_tool.c - parity helper driven by check_formats.py (the Python side holds the
 * independent reference: gguf-py, safetensors, torch).
 *   dump FILE            GGUF or safetensors (file/dir/index): every tensor dequantised to fp32
 *                        on stdout as: u32 name_len, name, u32 n_dims, i64 shape[n_dims] (numpy
 *                        order, slowest first), f32 data; terminated by u32 0xffffffff.
 *   gguf-rewrite IN OUT  copy every key of IN with st_gguf_writer_copy_key, add typed keys
 *                        "safetune.test.*", re-store each tensor as F32 / F16 / BF16 by name
 *                        suffix (".f16", ".bf16"; others F32).
 *   st-rewrite IN OUT DTYPE  read safetensors IN, write all tensors to OUT as F32 or BF16.
 * Exit status 0 on success, 1 with the error on stderr otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/gguf.h"
#include "safetune/quant.h"
#include "safetune/safetensors.h"

static int fail(const char *what) {
    fprintf(stderr, "formats_tool: %s: %s\n", what, st_last_error());
    return 1;
}

static void put_header(const char *name, int n_dims, const int64_t *shape_numpy) {
    uint32_t l = (uint32_t)strlen(name), nd = (uint32_t)n_dims;
    fwrite(&l, 4, 1, stdout);
    fwrite(name, 1, l, stdout);
    fwrite(&nd, 4, 1, stdout);
    fwrite(shape_numpy, 8, (size_t)n_dims, stdout);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int dump_gguf(const char *path) {
    st_gguf *g;
    if (st_gguf_open(path, &g)) return fail("open");
    for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
        int64_t shape[4];
        for (uint32_t d = 0; d < t->n_dims; d++) shape[d] = t->ne[t->n_dims - 1 - d];
        int64_t n = st_gguf_tensor_numel(t);
        float *buf = malloc((size_t)(n ? n : 1) * sizeof(float));
        if (!buf || st_gguf_tensor_to_f32(g, t, buf)) return fail(t->name);
        put_header(t->name, (int)t->n_dims, shape);
        fwrite(buf, 4, (size_t)n, stdout);
        free(buf);
    }
    st_gguf_close(g);
    return 0;
}

static int dump_st(const char *path) {
    st_safetensors *s;
    if (st_safetensors_open(path, &s)) return fail("open");
    for (size_t i = 0; i < st_safetensors_count(s); i++) {
        const st_st_tensor *t = st_safetensors_at(s, i);
        int64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
        float *buf = malloc((size_t)(n ? n : 1) * sizeof(float));
        if (!buf || st_safetensors_to_f32(t, buf)) return fail(t->name);
        put_header(t->name, t->n_dims, t->shape);
        fwrite(buf, 4, (size_t)n, stdout);
        free(buf);
    }
    st_safetensors_close(s);
    return 0;
}

static int gguf_rewrite(const char *in, const char *out) {
    st_gguf *g;
    st_gguf_writer *w;
    if (st_gguf_open(in, &g)) return fail("open");
    if (st_gguf_writer_new(&w)) return fail("writer");
    for (int64_t i = 0; i < st_gguf_n_keys(g); i++) {
        const char *k = st_gguf_key_name(g, i);
        if (!strcmp(k, "general.alignment")) continue; /* the writer uses 32 */
        if (st_gguf_writer_copy_key(w, g, k)) return fail(k);
    }
    const char *strs[] = {"alpha", "", "gamma \xce\xb3"};
    const int32_t ints[] = {-1, 0, 2147483647};
    if (st_gguf_writer_set_u32(w, "safetune.test.u32", 4000000000u) ||
        st_gguf_writer_set_i32(w, "safetune.test.i32", -123456) ||
        st_gguf_writer_set_f32(w, "safetune.test.f32", 0.1f) ||
        st_gguf_writer_set_bool(w, "safetune.test.bool", 1) ||
        st_gguf_writer_set_str(w, "safetune.test.str", "h\xc3\xa9llo") ||
        st_gguf_writer_set_arr(w, "safetune.test.arr_i32", ST_GGUF_INT32, ints, 3) ||
        st_gguf_writer_set_arr_str(w, "safetune.test.arr_str", strs, NULL, 3))
        return fail("set");
    for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
        int64_t n = st_gguf_tensor_numel(t);
        float *buf = malloc((size_t)(n ? n : 1) * sizeof(float));
        if (!buf || st_gguf_tensor_to_f32(g, t, buf)) return fail(t->name);
        uint32_t type = ends_with(t->name, ".bf16") ? ST_GGML_TYPE_BF16
                        : ends_with(t->name, ".f16") ? ST_GGML_TYPE_F16 : ST_GGML_TYPE_F32;
        if (st_gguf_writer_add_tensor(w, t->name, t->n_dims, t->ne, type, buf)) return fail(t->name);
        free(buf);
    }
    if (st_gguf_writer_finish(w, out)) return fail("finish");
    st_gguf_writer_free(w);
    st_gguf_close(g);
    return 0;
}

static int st_rewrite(const char *in, const char *out, const char *dt) {
    st_safetensors *s;
    st_safetensors_writer *w;
    st_dtype dtype = !strcmp(dt, "BF16") ? ST_DTYPE_BF16 : ST_DTYPE_F32;
    if (st_safetensors_open(in, &s)) return fail("open");
    if (st_safetensors_writer_new(&w)) return fail("writer");
    size_t n = st_safetensors_count(s);
    float **bufs = calloc(n ? n : 1, sizeof *bufs);
    for (size_t i = 0; i < n; i++) {
        const st_st_tensor *t = st_safetensors_at(s, i);
        int64_t ne = 1;
        for (int d = 0; d < t->n_dims; d++) ne *= t->shape[d];
        bufs[i] = malloc((size_t)(ne ? ne : 1) * sizeof(float));
        if (!bufs[i] || st_safetensors_to_f32(t, bufs[i])) return fail(t->name);
        if (st_safetensors_writer_add(w, t->name, dtype, t->n_dims, t->shape, bufs[i])) return fail(t->name);
    }
    if (st_safetensors_writer_finish(w, out)) return fail("finish");
    st_safetensors_writer_free(w);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    st_safetensors_close(s);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 2;
    if (argc == 3 && !strcmp(argv[1], "dump"))
        rc = (ends_with(argv[2], ".gguf") ? dump_gguf : dump_st)(argv[2]);
    else if (argc == 4 && !strcmp(argv[1], "gguf-rewrite"))
        rc = gguf_rewrite(argv[2], argv[3]);
    else if (argc == 5 && !strcmp(argv[1], "st-rewrite"))
        rc = st_rewrite(argv[2], argv[3], argv[4]);
    else
        fprintf(stderr, "usage: formats_tool dump FILE | gguf-rewrite IN OUT | st-rewrite IN OUT F32|BF16\n");
    if (rc == 0) {
        uint32_t end = 0xffffffffu;
        if (!strcmp(argv[1], "dump")) fwrite(&end, 4, 1, stdout);
        if (fflush(stdout)) return 1;
    }
    return rc;
}
