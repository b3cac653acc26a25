/* infer_weights.h - internal: the inference context (st_infer_ctx, forward.h) and the weight
 * cache it owns (infer_weights.c). Projection and lm_head weights reordered once into the
 * blocked layout oneDNN's matmul (brgemm) is fastest with, in fp32 and/or bf16 (a LoRA adapter
 * merged in as they are built), plus matmul primitives per (rows, shape, precision). Used by
 * st_forward_infer only; training never reads it. */
#ifndef SAFETUNE_MODEL_INFER_WEIGHTS_H
#define SAFETUNE_MODEL_INFER_WEIGHTS_H

#include <pthread.h>

#include "safetune/forward.h"
#include "safetune/kernels.h"
#include "safetune/lora.h"
#include "safetune/model.h"

/* The four per-layer projections (fused layouts of st_weights) and the lm_head. */
typedef enum { ST_IW_QKV = 0, ST_IW_O, ST_IW_GU, ST_IW_DOWN, ST_IW_LM, ST_IW_NSHAPES } st_iw_kind;

typedef struct st_infer_weights st_infer_weights;

/* The context: views only, except the cache. */
struct st_infer_ctx {
    const st_model *m;
    st_weights w;              /* bound to the context's params (the model's own by default) */
    const st_lora *ad;         /* NULL, or the adapter applied on top */
    st_lora_weights lw;        /* ad's views bound to the context's adapter params */
    pthread_mutex_t mu;        /* guards the lazy creation of iw */
    st_infer_weights *iw;      /* the reordered copies (owned), NULL until first use */
};

/* Most column parts a projection is split into (one per OpenMP thread at cache creation). */
enum { ST_IW_MAXPARTS = 16 };

/* Lock ic's cache for precision prec and return it, building the reordered copies of ic's
 * weights (+ adapter) when they are missing or stale (st_infer_ctx_refresh was called). Pair
 * with st_infer_weights_release.
 * ST_ERR_NOMEM / ST_ERR_UNSUPPORTED (oneDNN refused): the caller falls back to fp32 sgemm. */
st_status st_infer_weights_acquire(st_infer_ctx *ic, st_matmul_precision prec,
                                   st_infer_weights **out);
/* out[M, ld] columns of projection `kind` of `layer` += the adapter's (alpha/r)·(in·Aᵀ)·Bᵀ for
 * every targeted projection inside it (the plain-matmul path; the cache merges instead).
 * in [M, K]. ST_ERR_NOMEM. No-op without an adapter. */
st_status st_infer_lora_add(const st_infer_ctx *ic, int layer, st_iw_kind kind, float *out,
                            const float *in, int M);
void st_infer_weights_release(st_infer_weights *iw);
/* out[M, N] = in[M, K] · Wᵀ (+ bias[N]) for projection `kind` of `layer` (ignored for
 * ST_IW_LM); K, N from the model config. Layer projections only when the cache has one part
 * (st_infer_nparts). Non-zero when oneDNN fails (caller falls back). */
int st_infer_matmul(st_infer_weights *iw, int layer, st_iw_kind kind, float *out, const float *in,
                    const float *bias, int M);
/* Column parts: each of the four layer projections is stored as nparts column blocks (one per
 * OpenMP thread when the cache was created, 16-column aligned), each with its own
 * single-threaded oneDNN primitive, so st_forward_infer runs a whole layer inside one parallel
 * region (thread t computes parts t, t + nthreads, ...) with no oneDNN-internal thread wake-ups.
 * ST_IW_GU part p holds gate rows [n0, n1) AND up rows [n0, n1) of I: output [M, 2 (n1-n0)] =
 * [gate | up], ready for swiglu. The lm_head stays whole (st_infer_matmul). */
int st_infer_nparts(const st_infer_weights *iw);
/* Columns [*n0, *n1) of part `part` of `kind` (ST_IW_GU: of the intermediate size I). */
void st_infer_part_range(const st_infer_weights *iw, st_iw_kind kind, int part, int *n0, int *n1);
/* Serial, before a parallel region: the single-threaded primitives of every part for M rows
 * (and bf16 activation buffers). Non-zero when oneDNN fails. */
int st_infer_parts_prepare(st_infer_weights *iw, int M);
/* out[M, width] (dense) = in[M, K] · W_partᵀ for one part of a layer projection; after
 * st_infer_parts_prepare(iw, M), different parts may run concurrently on different threads.
 * Empty parts do nothing. Non-zero when oneDNN fails. */
int st_infer_matmul_part(st_infer_weights *iw, int layer, st_iw_kind kind, int part, float *out,
                         const float *in, int M);
/* Frees the cache (st_infer_ctx_free calls it). */
void st_infer_weights_free(st_infer_weights *iw);

#endif
