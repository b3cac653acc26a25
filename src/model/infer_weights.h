/* infer_weights.h - internal: the inference weight cache of a loaded model (infer_weights.c).
 * Projection and lm_head weights reordered once into the blocked layout oneDNN's matmul
 * (brgemm) is fastest with, in fp32 and/or bf16, plus matmul primitives per (rows, shape,
 * precision). Used by st_forward_infer only; training never reads it. */
#ifndef SAFETUNE_MODEL_INFER_WEIGHTS_H
#define SAFETUNE_MODEL_INFER_WEIGHTS_H

#include "safetune/kernels.h"
#include "safetune/model.h"

/* The four per-layer projections (fused layouts of st_weights) and the lm_head. */
typedef enum { ST_IW_QKV = 0, ST_IW_O, ST_IW_GU, ST_IW_DOWN, ST_IW_LM, ST_IW_NSHAPES } st_iw_kind;

typedef struct st_infer_weights st_infer_weights;

/* Most column parts a projection is split into (one per OpenMP thread at cache creation). */
enum { ST_IW_MAXPARTS = 16 };

/* Lock m's cache for precision prec and return it, (re)building the reordered copies when
 * they are missing or stale (st_infer_weights_refresh was called, or - only when check != 0 -
 * a sampled fingerprint of the weights changed; ~31k scattered reads, so st_forward_infer
 * checks only when its KV cache holds nothing: weights cannot legitimately change under
 * cached keys/values). Pair with st_infer_weights_release.
 * ST_ERR_NOMEM / ST_ERR_UNSUPPORTED (oneDNN refused): the caller falls back to fp32 sgemm. */
st_status st_infer_weights_acquire(const st_model *m, st_matmul_precision prec, int check,
                                   st_infer_weights **out);
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
/* Frees the cache (st_model_free calls it). */
void st_infer_weights_free(st_infer_weights *iw);

#endif
