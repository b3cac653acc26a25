/* kvcache.h - internal layout of st_kv_cache (forward.h) for infer.c. */
#ifndef SAFETUNE_MODEL_KVCACHE_H
#define SAFETUNE_MODEL_KVCACHE_H

#include "safetune/forward.h"

/* Phases timed by st_forward_infer when profiling (names in kvcache.c). */
enum { ST_INFER_NPROF = 10 };
extern const char *const st_infer_prof_names[ST_INFER_NPROF];

struct st_kv_cache {
    st_config cfg;
    int L, max_batch, max_seq, kvd;
    float *k, *v;        /* [L][max_batch][max_seq][KV*D] */
    int *len;            /* [max_batch] */
    float *scratch;      /* st_forward_infer activations, scratch_tokens rows */
    size_t scratch_tokens;
    float *att_scratch;  /* per-thread attention scratch */
    size_t att_scratch_floats;
    int prec_set;        /* st_kv_cache_set_precision was called */
    st_matmul_precision prec;
    int profile;         /* SAFETUNE_INFER_PROFILE=1: per-phase seconds printed on free */
    int no_wcache;       /* SAFETUNE_INFER_WCACHE=0: plain backend matmul (A/B checks) */
    double prof[2][ST_INFER_NPROF]; /* [decode-only call, call with prefill rows] */
    long prof_calls[2];
};

float *st_kv_cache_k(st_kv_cache *c, int layer, int slot);
float *st_kv_cache_v(st_kv_cache *c, int layer, int slot);

#endif
