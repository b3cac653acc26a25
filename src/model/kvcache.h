/* kvcache.h - internal layout of st_kv_cache (forward.h) for infer.c. */
#ifndef SAFETUNE_MODEL_KVCACHE_H
#define SAFETUNE_MODEL_KVCACHE_H

#include "safetune/forward.h"

struct st_kv_cache {
    st_config cfg;
    int L, max_batch, max_seq, kvd;
    float *k, *v;        /* [L][max_batch][max_seq][KV*D] */
    int *len;            /* [max_batch] */
    float *scratch;      /* st_forward_infer activations, scratch_tokens rows */
    size_t scratch_tokens;
    float *att_scratch;  /* per-thread attention scratch */
    size_t att_scratch_floats;
};

float *st_kv_cache_k(st_kv_cache *c, int layer, int slot);
float *st_kv_cache_v(st_kv_cache *c, int layer, int slot);

#endif
