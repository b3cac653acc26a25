/* fuzz_safetensors.c - safetensors file reader (u64 header length, JSON header, offsets, dtype ×
 * shape = bytes), then fp32 conversion of every small tensor. Input: a whole .safetensors file. */
#include "fuzz_util.h"

#include "safetune/safetensors.h"

#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = stf_path("in.safetensors");
    stf_write(path, data, size);
    st_safetensors *s = NULL;
    if (stf_note("safetensors", st_safetensors_open(path, &s)) != ST_OK) return 0;
    for (size_t i = 0; i < st_safetensors_count(s); i++) {
        const st_st_tensor *t = st_safetensors_at(s, i);
        if (st_safetensors_find(s, t->name) == NULL) stf_fail("tensor '%s' not found by name", t->name);
        int64_t numel = 1;
        for (int d = 0; d < t->n_dims && numel <= (1 << 16); d++) numel *= t->shape[d];
        if (numel > 0 && numel <= (1 << 16) && t->dtype != ST_DTYPE_OTHER) {
            float *dst = malloc((size_t)numel * sizeof *dst);
            if (dst) (void)st_safetensors_to_f32(t, dst);
            free(dst);
        }
    }
    st_safetensors_close(s);
    return 0;
}
