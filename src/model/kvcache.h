/* kvcache.h - internal layout of st_kv_cache (forward.h) for infer.c. */
#ifndef SAFETUNE_MODEL_KVCACHE_H
#define SAFETUNE_MODEL_KVCACHE_H

#include <stdatomic.h>
#include <stdint.h>

#include "safetune/forward.h"

/* Phases timed by st_forward_infer when profiling (names in kvcache.c). The fused path times
 * thread 0: each matmul phase includes the barrier after it, rope + KV append are counted in
 * attention and swiglu in gate/up (those two rows stay 0). */
enum { ST_INFER_NPROF = 10 };
extern const char *const st_infer_prof_names[ST_INFER_NPROF];

/* Keys and values are stored per (layer, slot, KV head) as one contiguous [max_seq, D] block:
 * [L][max_batch][KV][max_seq][D], so a decode attention task (one sequence, one KV head)
 * streams two contiguous blocks. Elements are fp32, or bf16 (uint16_t, round to nearest even)
 * when kv_bf16 is set (st_kv_cache_set_precision(ST_MATMUL_BF16)). */
struct st_kv_cache {
    st_config cfg;
    int L, max_batch, max_seq, kvd, KV, D;
    int kv_bf16;         /* k, v hold uint16_t bf16 elements */
    int kv_err;          /* a precision switch could not reallocate: st_forward_infer fails */
    void *k, *v;         /* [L][max_batch][KV][max_seq][D] */
    int *len;            /* [max_batch] */
    float *scratch;      /* st_forward_infer activations, scratch_tokens rows */
    size_t scratch_tokens;
    float *att_scratch;  /* per-thread attention scratch */
    size_t att_scratch_floats;
    int prec_set;        /* st_kv_cache_set_precision was called */
    st_matmul_precision prec;
    int profile;         /* SAFETUNE_INFER_PROFILE=1: per-phase seconds printed on free */
    int no_wcache;       /* SAFETUNE_INFER_WCACHE=0: plain backend matmul (A/B checks) */
    int no_fused;        /* SAFETUNE_INFER_FUSED=0: one oneDNN call (own threads) per matmul */
    float *fscratch;     /* fused path: per-thread normed rows, per-part matmul outputs */
    size_t fscratch_floats;
    atomic_int *fctr;    /* fused path: [L] attention task counters */
    double prof[2][ST_INFER_NPROF]; /* [decode-only call, call with prefill rows] */
    long prof_calls[2];
};

/* Element offset of the [max_seq, D] block of (layer, slot, KV head) in k / v. */
static inline size_t st_kv_block(const st_kv_cache *c, int layer, int slot, int head) {
    return ((((size_t)layer * c->max_batch + slot) * c->KV + head) * c->max_seq) * c->D;
}

#endif
