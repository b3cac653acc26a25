/* safegrad.h - SafeGrad gradient surgery (Yi et al. 2025, arXiv 2508.07172; DEFENSES.md §7;
 * reference code JugieQ/JDGrad). Each optimiser step the trainer computes the task gradient g_u
 * over the window and the alignment gradient g_a = ∇L_a of
 *   L_a = (1/|R(A)|)·Σ_{r∈R(A)} KL(p_θ0(·|r) ‖ p_θ(·|r))
 * on a batch A of batch_size rows of D_align (seeded cyclic order over the first
 * safegrad_align_rows rows of a seeded permutation; backward_kl.h), then st_safegrad_combine,
 * then clipping, AdamW and EMA. At θ_0, g_a = 0 and the step is plain fine-tuning.
 * The reference sums the KL over every position and divides by the label count; we use the
 * response positions only. Settings: safegrad (off|on), safegrad_rho ρ, safegrad_project,
 * safegrad_align_rows n_a. Full fine-tuning only. */
#ifndef SAFETUNE_SAFEGRAD_H
#define SAFETUNE_SAFEGRAD_H

#include <stddef.h>

typedef struct {
    double dot;    /* d = ⟨g_u, g_a⟩ before projection (double, blocked sums in a fixed order) */
    double ga_sq;  /* ‖g_a‖² */
    double coef;   /* d/‖g_a‖² when the projection was applied, else 0 */
    int projected; /* 1 when g_u was projected */
} st_safegrad_info;

/* The surgery on vectors of n floats: d = ⟨g_u, g_a⟩; if project and d < 0 and ‖g_a‖² > 1e-9,
 * g_u ← g_u − (d/‖g_a‖²)·g_a (written back into gu, each element computed in double and rounded
 * once); then g = g_u + ρ·g_a (g = g_u exactly when ρ = 0). g may alias gu or ga. After a
 * projection ⟨g_u, g_a⟩ = 0 up to rounding, so ⟨g, g_a⟩ = ρ‖g_a‖² ≥ 0; when d ≥ 0 g_u is
 * untouched. Source: DEFENSES.md §7 steps 3-4. No errors; info may be NULL. */
void st_safegrad_combine(float *g, float *gu, const float *ga, size_t n, double rho, int project,
                         st_safegrad_info *info);

#endif
