/* lisa.h - Lisa, lazy safety alignment (Huang et al., NeurIPS 2024, arXiv 2405.18641;
 * DEFENSES.md §6; reference code git-disl/Lisa). Training alternates phases, alignment first:
 * K1 optimiser steps on D_align windows, then K2 steps on D_user windows, repeated; the steps
 * count toward T (max_steps). One anchor a starts at θ_0 and becomes θ after the last step of
 * every phase (the reference keeps two anchors, one per phase). Each step's gradient gains
 * ρ(θ−a), the gradient of (ρ/2)‖θ−a‖², except while s ≤ 0.1·T (s = steps done, 0-based). One
 * AdamW runs throughout (moments and step count never reset). The user stream does not advance
 * during alignment steps (the reference drops those user batches instead).
 * Settings (train_settings.h): lisa (off|on), lisa_rho ρ, lisa_align_share, lisa_cycle_steps. */
#ifndef SAFETUNE_LISA_H
#define SAFETUNE_LISA_H

#include <stdint.h>

/* Phase lengths in optimiser steps: k1 alignment steps then k2 task steps, repeated. */
typedef struct {
    int64_t k1, k2;
} st_lisa_schedule;

/* The schedule of a T-step run: cycle C = min(cycle_steps, T) (for T < 1000 the paper's
 * 100/900 then scales by T/1000), k1 = round(share·C) but at least 1 when share > 0 and at most
 * C − 1 (a task step in every cycle; T = 1 gets none), k2 = C − k1. Paper defaults share 0.1,
 * cycle 1000: T = 8 gives 1 + 7, T >= 1000 gives 100 + 900. share in [0, 1], cycle_steps >= 1,
 * T >= 1 (no errors: out-of-range inputs are clamped). */
st_lisa_schedule st_lisa_schedule_make(double align_share, int64_t cycle_steps, int64_t total_steps);
/* 1 when step s (0-based: optimiser steps done before it) is an alignment step. */
int st_lisa_is_align(const st_lisa_schedule *sc, int64_t s);
/* 1 when steps s and s+1 are in different phases: after step s the anchor becomes θ. */
int st_lisa_switch_after(const st_lisa_schedule *sc, int64_t s);
/* 1 when the proximal term applies at step s of a T-step run: s > 0.1·T (exact, as 10·s > T). */
int st_lisa_prox_on(int64_t s, int64_t total_steps);

#endif
