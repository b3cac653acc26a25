/* fuzz_gguf.c - GGUF reader (st_gguf_open: header, metadata, tensor table, data bounds), then every
 * getter on every key and dequantisation of every small tensor. Input: a whole .gguf file. */
#include "fuzz_util.h"

#include "safetune/gguf.h"

#include <stdlib.h>

unsigned char g_sink;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = stf_path("in.gguf");
    stf_write(path, data, size);
    st_gguf *g = NULL;
    if (stf_note("gguf", st_gguf_open(path, &g)) != ST_OK) return 0;
    (void)st_gguf_version(g);
    (void)st_gguf_alignment(g);
    (void)st_gguf_data_offset(g);
    for (int64_t i = 0; i < st_gguf_n_keys(g); i++) {
        const char *k = st_gguf_key_name(g, i);
        if (st_gguf_find_key(g, k) < 0) stf_fail("key %lld '%s' not found by name", (long long)i, k);
        int64_t iv;
        double dv;
        int bv;
        const char *s;
        size_t len;
        (void)st_gguf_get_i64(g, k, &iv);
        (void)st_gguf_get_f64(g, k, &dv);
        (void)st_gguf_get_bool(g, k, &bv);
        if (st_gguf_get_str(g, k, &s, &len) == ST_OK)
            for (size_t j = 0; j < len; j++) g_sink ^= (unsigned char)s[j]; /* every byte readable */
        st_gguf_type et;
        uint64_t n;
        const void *arr;
        if (st_gguf_get_arr(g, k, &et, &n, &arr) == ST_OK && et == ST_GGUF_STRING) {
            for (uint64_t j = 0; j < n && j < 64; j++) (void)st_gguf_get_arr_str(g, k, j, &s, &len);
            (void)st_gguf_get_arr_str(g, k, n, &s, &len); /* out of range: an error, not a read */
        }
    }
    for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
        if (st_gguf_find_tensor(g, t->name) == NULL) stf_fail("tensor '%s' not found by name", t->name);
        int64_t numel = st_gguf_tensor_numel(t);
        if (numel > 0 && numel <= (1 << 16)) {
            float *dst = malloc((size_t)numel * sizeof *dst);
            if (dst) (void)st_gguf_tensor_to_f32(g, t, dst);
            free(dst);
        }
    }
    st_gguf_close(g);
    return 0;
}
