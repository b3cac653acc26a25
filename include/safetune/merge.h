/* merge.h - post-hoc merge of fine-tuned weights θ_ft back with the aligned start θ0 (Farn et al.
 * 2024, arXiv 2412.19512; rules in DEFENSES.md §1). All three act on flat fp32 buffers of the
 * model layout (weights.h), so every floating tensor is merged and a tied embedding only once.
 *   linear(λ):     θ = (1−λ)·θ0 + λ·θ_ft, λ = weight on θ_ft in [0, 1]; λ = 0 / 1 are copies.
 *   slerp(t):      per tensor, mergekit's `slerp` (arcee-ai/mergekit, merge_methods/slerp.py) with
 *                  θ0 as base: u0 = θ0/‖θ0‖, u1 = θ_ft/‖θ_ft‖ (a norm ≤ 1e-8 stays undivided),
 *                  c = ⟨u0,u1⟩ (double); |c| > 0.9995 → linear(t); else Ω = arccos c and
 *                  θ = [sin((1−t)Ω)·θ0 + sin(tΩ)·θ_ft] / sin Ω.
 *   dare(λ, p, seed): δ = θ_ft − θ0; keep m_i ~ Bernoulli(1−p); θ = θ0 + λ·m⊙δ/(1−p) (Yu et al.
 *                  2023, arXiv 2311.03099). m_i = [U(seed, i) ≥ p] with U a counter-based uniform
 *                  of (seed, flat index i): the mask depends on neither threads nor tensor order.
 * Arithmetic is in double, rounded once to fp32. */
#ifndef SAFETUNE_MERGE_H
#define SAFETUNE_MERGE_H

#include "safetune/weights.h"

typedef enum { ST_MERGE_LINEAR = 0, ST_MERGE_SLERP = 1, ST_MERGE_DARE = 2 } st_merge_method;

typedef struct {
    st_merge_method method;
    double weight;   /* λ (linear, dare) or t (slerp): the weight on θ_ft, in [0, 1] */
    double p;        /* dare: drop rate in [0, 1) */
    uint64_t seed;   /* dare: mask seed */
    int has_seed;    /* dare: 1 when the spec named the seed (else the caller's default applies) */
} st_merge_spec;

typedef struct {
    size_t n_tensors;      /* tensors merged */
    size_t n_fallback;     /* slerp: tensors with |c| > 0.9995 merged linearly */
    size_t n_params;       /* floats merged */
    size_t n_kept;         /* dare: coordinates kept (m_i = 1) */
    double theta_dist;     /* ‖θ_merged − θ0‖ */
    double lambda_proj;    /* ⟨θ_merged−θ0, θ_ft−θ0⟩ / ‖θ_ft−θ0‖² (0 when θ_ft = θ0), DEFENSES.md §9 */
} st_merge_stats;

/* Parse one spec: "linear:L", "slerp:T", "dare:L:P" or "dare:L:P:SEED" (L, T in [0, 1], P in
 * [0, 1), SEED an unsigned integer). ST_ERR_ARG with a message naming the spec and the key
 * (lambda, t, p, seed) and the allowed range. */
st_status st_merge_spec_parse(const char *text, st_merge_spec *out);
/* Folder-safe name of a spec: "linear-0.6", "slerp-0.7", "dare-0.7-0.9" (+ "-s<seed>" when the spec
 * named a seed); numbers as %g. Returns buf. */
const char *st_merge_spec_name(const st_merge_spec *s, char *buf, size_t cap);

/* out[lay->n_floats] = merge of theta0 and theta_ft (same layout) by spec s; out may not alias the
 * inputs. stats (may be NULL) receives the counts above. ST_ERR_ARG for a spec out of range
 * (as st_merge_spec_parse), ST_ERR_NOMEM. Threads: OpenMP; the bytes of out do not depend on the
 * thread count (per-tensor dots use fixed chunks summed in order). */
st_status st_merge_apply(const st_merge_spec *s, const st_layout *lay, const float *theta0,
                         const float *theta_ft, float *out, st_merge_stats *stats);

/* The counter-based uniform of DARE's mask: a double in [0, 1) from (seed, index) through two
 * rounds of splitmix64's finaliser (Steele et al. 2014), 53 bits. */
double st_merge_dare_uniform(uint64_t seed, uint64_t index);

/* λ_eff of an EMA of decay β updated after each of T steps from θ0 along a straight path
 * θ_k = θ0 + (k/T)Δ: θ_ema = θ0 + λ_eff·Δ, λ_eff = 1 − β(1−β^T)/(T(1−β)) (DEFENSES.md §9);
 * 1 for β = 0, 0 for T = 0. */
double st_merge_ema_lambda_eff(double beta, int64_t T);

#endif
