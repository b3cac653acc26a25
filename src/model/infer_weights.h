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
 * ST_IW_LM); K, N from the model config. Non-zero when oneDNN fails (caller falls back). */
int st_infer_matmul(st_infer_weights *iw, int layer, st_iw_kind kind, float *out, const float *in,
                    const float *bias, int M);
/* Frees the cache (st_model_free calls it). */
void st_infer_weights_free(st_infer_weights *iw);

#endif
