/* fuzz_safetensors_index.c - model.safetensors.index.json (weight_map: tensor name -> shard file)
 * beside two small valid shards written once at start-up (shard-1.safetensors holds "a" and "b",
 * shard-2.safetensors holds "c"). Input: the index JSON text. */
#include "fuzz_util.h"

#include "safetune/safetensors.h"

#include <stdlib.h>

static void write_shard(const char *path, const char *const *names, int n) {
    static const float v[6] = {1, 2, 3, 4, 5, 6};
    static const int64_t shape[2] = {2, 3};
    st_safetensors_writer *w = NULL;
    if (st_safetensors_writer_new(&w) != ST_OK) stf_fail("writer: %s", st_last_error());
    for (int i = 0; i < n; i++)
        if (st_safetensors_writer_add(w, names[i], i ? ST_DTYPE_BF16 : ST_DTYPE_F32, 2, shape, v) != ST_OK)
            stf_fail("writer add: %s", st_last_error());
    if (st_safetensors_writer_finish(w, path) != ST_OK) stf_fail("writer finish: %s", st_last_error());
    st_safetensors_writer_free(w);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    static const char *const s1[] = {"a", "b"}, *const s2[] = {"c"};
    write_shard(stf_path("shard-1.safetensors"), s1, 2);
    write_shard(stf_path("shard-2.safetensors"), s2, 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = stf_path("model.safetensors.index.json");
    stf_write(path, data, size);
    st_safetensors *s = NULL;
    if (stf_note("index", st_safetensors_open(path, &s)) != ST_OK) return 0;
    for (size_t i = 0; i < st_safetensors_count(s); i++) {
        const st_st_tensor *t = st_safetensors_at(s, i);
        float dst[6];
        if (t->nbytes <= sizeof dst && t->dtype != ST_DTYPE_OTHER) (void)st_safetensors_to_f32(t, dst);
    }
    st_safetensors_close(s);
    return 0;
}
