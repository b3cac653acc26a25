/* backward_kl.h - training forward whose loss is a KL divergence to reference distributions
 * (SafeGrad's alignment loss, DEFENSES.md §7; Yi et al. 2025, arXiv 2508.07172).
 *
 * Rows n of a [B, T] batch with targets[n] >= 0 are the supervised (response) positions R, in
 * row-major order; only they go through the lm_head. For those rows:
 *   st_train_logprobs     log p(·|n) = log_softmax(z_n) over the vocabulary, [|R|, V] floats;
 *   st_train_forward_kl   L = Σ_{n∈R} Σ_v p_ref(v|n)·(log p_ref(v|n) − log p_θ(v|n)) / normaliser,
 *                         i.e. KL(p_ref ‖ p_θ) summed over R, leaving d(logits) =
 *                         (softmax(z_n) − p_ref(·|n)) / normaliser for st_train_backward.
 * Both use the training forward's kernels and the same log-softmax (double sums in a fixed
 * order), so at θ = θ_ref with the same batch L = 0 and d(logits) = 0 exactly.
 * Reference: PyTorch F.kl_div(log_softmax(z), log p_ref, log_target=True, reduction="sum") /
 * normaliser (tests/parity/safegrad). Full fine-tuning weights only (no LoRA adapter). */
#ifndef SAFETUNE_BACKWARD_KL_H
#define SAFETUNE_BACKWARD_KL_H

#include "safetune/backward.h"

/* Forward over tokens [B, T]; writes log p at the rows with targets >= 0 into logp [cap_rows, V]
 * (row-major), their count into *n_rows. Leaves no d(logits): run st_train_forward(_kl) before a
 * backward. ST_ERR_ARG if B*T exceeds the activations, a target is >= V, or more than cap_rows
 * rows have a target. */
st_status st_train_logprobs(const st_config *cfg, const st_weights *w, st_train_acts *a,
                            const int32_t *tokens, const int32_t *targets, int B, int T,
                            float *logp, int cap_rows, int *n_rows);
/* Forward with the KL loss above against ref_logp [n_ref, V] (st_train_logprobs of the same
 * tokens and targets, so n_ref must equal the number of rows with a target: ST_ERR_ARG
 * otherwise); *loss = L (double, may be NULL). normaliser > 0 (|R| of the whole batch, summed
 * over ranks). Then st_train_backward accumulates dL/dθ. */
st_status st_train_forward_kl(const st_config *cfg, const st_weights *w, st_train_acts *a,
                              const int32_t *tokens, const int32_t *targets, const float *ref_logp,
                              int n_ref, int B, int T, double normaliser, double *loss);

#endif
