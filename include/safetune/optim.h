/* optim.h - optimisers and gradient clipping over the flat parameter vector.
 *
 * Parameters, gradients and optimiser moments are fp32 buffers of one st_layout (weights.h), so
 * every update is one OpenMP loop over the vector. Semantics follow PyTorch 1.13:
 *   AdamW (torch.optim.AdamW, decoupled decay, Loshchilov & Hutter 2019), per element, t = step:
 *     θ ← θ·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
 *     θ ← θ − (lr / (1−β1^t)) · m / (sqrt(v)/sqrt(1−β2^t) + eps)      (eps outside the sqrt)
 *   SGD (torch.optim.SGD): d = g + wd·θ (coupled L2); with momentum μ: b ← d at the first step,
 *     else b ← μ·b + (1−dampening)·d; d = nesterov ? d + μ·b : b;  θ ← θ − lr·d.
 * Tensors flagged no_decay in the layout (norms, biases) get weight decay 0 unless
 * decay_no_decay_params is set (the usual HF Trainer grouping). */
#ifndef SAFETUNE_OPTIM_H
#define SAFETUNE_OPTIM_H

#include "safetune/base.h"
#include "safetune/weights.h"

typedef enum { ST_OPTIM_ADAMW = 0, ST_OPTIM_SGD = 1 } st_optim_kind;

typedef struct {
    st_optim_kind kind;
    /* Hyper-parameters are doubles like torch's Python floats; each update casts the derived
     * scalars (1 - beta1, lr / bias_correction1, ...) to fp32 as torch's CPU kernels do. */
    double lr;             /* base learning rate (a schedule multiplies it) */
    double beta1, beta2;   /* AdamW */
    double eps;            /* AdamW, added outside the sqrt */
    double weight_decay;   /* AdamW: decoupled; SGD: coupled L2 */
    double momentum;       /* SGD */
    double dampening;      /* SGD */
    int nesterov;          /* SGD */
    int decay_no_decay_params; /* 1 = also decay tensors flagged no_decay (default 0) */
} st_optim_config;

/* Defaults of torch.optim: AdamW lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 1e-2;
 * SGD lr 1e-3 (torch has no default), momentum 0, dampening 0, wd 0, nesterov off. */
void st_optim_config_default(st_optim_config *c, st_optim_kind kind);
/* Check ranges (lr >= 0, 0 <= betas < 1, eps > 0, wd >= 0, nesterov needs momentum > 0 and
 * dampening 0); ST_ERR_ARG names the offending option. */
st_status st_optim_config_validate(const st_optim_config *c);
/* "adamw" | "sgd" -> kind; ST_ERR_ARG otherwise. */
st_status st_optim_kind_parse(const char *name, st_optim_kind *out);
const char *st_optim_kind_name(st_optim_kind k);

/* A contiguous run of the flat vector sharing one weight-decay setting. */
typedef struct {
    size_t begin, end;     /* [begin, end) in floats */
    double weight_decay;
} st_optim_segment;

typedef struct {
    st_optim_config cfg;
    size_t n;              /* length of the vectors (layout n_floats) */
    int64_t step;          /* optimiser steps taken so far (torch state["step"]) */
    float *m;              /* AdamW exp_avg / SGD momentum_buffer [n] (NULL for plain SGD) */
    float *v;              /* AdamW exp_avg_sq [n] (NULL for SGD) */
    st_optim_segment *segs;/* weight-decay groups covering [0, n) */
    size_t n_segs;
} st_optimizer;

/* Allocate zeroed state for n floats. lay (may be NULL = decay everything) supplies the
 * no_decay flags; when given, lay->n_floats must equal n. Free with st_optim_free. */
st_status st_optim_init(st_optimizer *opt, const st_optim_config *cfg, const st_layout *lay,
                        size_t n);
/* The same for the slice [off, off + len) of an n-float vector (ZeRO-1: each rank keeps the
 * moments of its slice): moments of len floats, weight-decay segments of lay cut to the slice and
 * shifted to start at 0, so st_optim_step(opt, params + off, grads + off, lr) updates the slice
 * exactly as the full optimizer would. */
st_status st_optim_init_slice(st_optimizer *opt, const st_optim_config *cfg, const st_layout *lay, size_t n,
                              size_t off, size_t len);
void st_optim_free(st_optimizer *opt);
/* One update of params[n] with grads[n] at learning rate lr (the scheduled value: base lr times
 * the schedule factor). Increments opt->step first, as torch does. */
st_status st_optim_step(st_optimizer *opt, float *params, const float *grads, double lr);

/* Global L2 norm of g[n], accumulated in double in fixed blocks (bit-identical for any thread
 * count). */
double st_grad_norm(const float *g, size_t n);
/* torch.nn.utils.clip_grad_norm_: norm = ||g||_2; coef = min(1, max_norm / (norm + 1e-6));
 * g *= coef. Returns the pre-clip norm. A non-finite norm leaves g unchanged (the caller should
 * skip the step); max_norm <= 0 disables clipping (norm still returned). */
double st_clip_grad_norm(float *g, size_t n, double max_norm);
/* The factor st_clip_grad_norm multiplies the gradients by for this norm (1 when it leaves them
 * alone: norm <= max_norm, max_norm <= 0, or a non-finite norm), for callers that fold the
 * scaling into their next pass over the gradients. */
float st_clip_grad_scale(double norm, double max_norm);

#endif
