/* ewc.h - elastic weight consolidation toward θ_0 with a diagonal Fisher from the alignment set
 * (Kirkpatrick et al., PNAS 2017, arXiv 1612.00796; DEFENSES.md §8b). All buffers share the flat
 * layout of the trained vector ([n] fp32).
 *   Fisher, once at θ_0: F_i = (1/N_a)·Σ_n (∂ℓ_n/∂θ_i)², ℓ_n the mean response NLL of alignment
 *     example n alone (a batch of one); normalising by N_a makes F independent of the set's size.
 *   Penalty (λ/2)·Σ_i F_i·(θ_i − θ0_i)²: the gradient gains λ·F⊙(θ − θ_0), added after the window
 *     normalisation and before clipping (as coupled L2-SP, which is EWC with F ≡ 1). */
#ifndef SAFETUNE_EWC_H
#define SAFETUNE_EWC_H

#include "safetune/base.h"

/* fisher[i] += g[i]² in fp32 (g: one example's gradient [n]); Kirkpatrick et al. 2017, DEFENSES.md §8b. */
void st_ewc_fisher_add(float *fisher, const float *g, size_t n);
/* fisher[i] *= 1/n_examples in fp32 (n_examples 0 is read as 1): the mean over examples. Returns
 * mean_i(F_i) (double, units of squared loss gradient), 0 for n = 0. */
double st_ewc_fisher_finish(float *fisher, size_t n, size_t n_examples);
/* g[i] += (float)lambda · fisher[i] · (theta[i] − theta0[i]) in fp32; returns
 * (lambda/2)·Σ F_i(θ_i − θ0_i)² summed in double in fixed blocks (independent of the thread
 * count). With fisher ≡ 1 both equal st_l2sp_coupled(g, θ, θ_0, n, lambda) bit for bit. */
double st_ewc_penalty(float *g, const float *theta, const float *theta0, const float *fisher, size_t n,
                      double lambda);

#endif
