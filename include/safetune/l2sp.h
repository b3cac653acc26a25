/* l2sp.h - L2-SP: a pull of the weights toward the starting point θ_0 (Li, Grandvalet & Davoine,
 * ICML 2018, arXiv 1802.01483; DEFENSES.md §2). All buffers share the flat layout ([n] fp32).
 *   coupled (the paper's): L = L_task + (α/2)‖θ−θ_0‖², so g ← g + α(θ−θ_0), added after the window
 *     normalisation and before clipping, so it goes through clip and the AdamW moments;
 *   decoupled (AdamW-style, a variant): before the AdamW update θ ← θ_0 + (1−η_s·α_d)(θ−θ_0),
 *     the gradient untouched; η_max·α_d < 1. */
#ifndef SAFETUNE_L2SP_H
#define SAFETUNE_L2SP_H

#include "safetune/base.h"

/* g[i] += (float)alpha · (theta[i] − theta0[i]) in fp32; returns (alpha/2)·‖θ−θ_0‖² summed in
 * double in fixed blocks (independent of the thread count). */
double st_l2sp_coupled(float *g, const float *theta, const float *theta0, size_t n, double alpha);
/* theta[i] = theta0[i] + (float)factor · (theta[i] − theta0[i]) in fp32, factor = 1 − η_s·α_d. */
void st_l2sp_decoupled(float *theta, const float *theta0, size_t n, double factor);

#endif
