/* head_terms.h - per-token loss terms against the aligned start θ_0 on the task batch
 * (DEFENSES.md §4 and §8a), as kernels on one lm_head output row. fp32 logits in, d(loss)/d(logits)
 * out; sums in double.
 *
 * Constrained SFT, token-wise (Qi et al., ICLR 2025, arXiv 2406.05946; reference code
 * Unispac/shallow-vs-deep-alignment): at response position t (t = 1 the first answer token),
 *   Δ_t = log p_θ(y_t|·) − log p_θ0(y_t|·),  w_t = max(1e-3, 2·(1 − σ(β_t·Δ_t))) (a constant: no
 *   gradient through it),  L = −(1/N)·Σ_t w_t·log p_θ(y_t|·), N = L_task's target count;
 *   β_1 = β·f1, β_t = β·f for 2 <= t <= L, β_t = β beyond (defaults β 0.1, f1 5, f 20, L 5).
 * KL to θ_0 (LwF, Li & Hoiem, arXiv 1606.09282): L += λ·(1/N)·Σ_r KL(p_θ0(·|r) ‖ p_θ(·|r)) over the
 *   vocabulary axis at the response positions r; its logit gradient is λ·(p_θ − p_θ0)/N. */
#ifndef SAFETUNE_HEAD_TERMS_H
#define SAFETUNE_HEAD_TERMS_H

#include <stdint.h>

#include "safetune/base.h"

/* Defaults of the constrained-SFT schedule (the reference's). */
#define ST_CSFT_CLAMP 1e-3

/* β_t of response position t >= 1 (1-based): beta·first_factor at t = 1, beta·factor for
 * 2 <= t <= prefix_len, beta beyond (prefix_len 0 or 1: only t = 1 differs). Source: DEFENSES.md §4,
 * the reference's schedule (Unispac/shallow-vs-deep-alignment). Never fails. */
double st_csft_beta_t(double beta, double first_factor, double factor, int prefix_len, int t);
/* w = max(1e-3, 2·(1 − σ(beta_t·delta))) in double: 1 at delta 0, in [1e-3, 2); delta in nats.
 * Source: Qi et al. 2025 eq. (token-wise constrained objective); its gradient equals that of
 * −(2/β_t)·log σ(β_t·Δ_t) where the clamp is inactive. Never fails. */
double st_csft_weight(double beta_t, double delta);

/* One trained row. l: θ's logits [V] (overwritten with d(loss)/d(logits)); target in [0, V);
 * g: the plain-CE weight of the row (mask / N). Constrained SFT when beta_t > 0: the CE weight
 * becomes g·w with w = st_csft_weight(beta_t, log p_θ(target) − ref_logp) (*w_out = w, else 1).
 * KL when l0 (θ_0's logits [V]) is not NULL: adds k·(softmax(l) − softmax(l0)) and sets *kl_out =
 * KL(softmax(l0) ‖ softmax(l)) in nats (else 0). Returns the unweighted CE −log p_θ(target).
 * Shapes: V >= 1; nothing is allocated; never fails. Source: DEFENSES.md §4 and §8a (vocabulary-axis
 * KL, direction KL(p_θ0 ‖ p_θ)); checked against PyTorch autograd in tests/parity/regdefense. */
float st_head_row(float *l, const float *l0, int V, int32_t target, float g, double beta_t,
                  float ref_logp, float k, double *kl_out, double *w_out);

#endif
