/* lisa.c - Lisa's phase schedule (lisa.h; DEFENSES.md §6). The trainer side (alignment windows,
 * proximal term, anchor switches) is in trainer_align.c. */
#include "safetune/lisa.h"

#include <math.h>

st_lisa_schedule st_lisa_schedule_make(double align_share, int64_t cycle_steps, int64_t total_steps) {
    st_lisa_schedule sc = {0, 1};
    if (total_steps < 1) total_steps = 1;
    if (cycle_steps < 1) cycle_steps = 1;
    if (!(align_share >= 0)) align_share = 0; /* NaN too */
    if (align_share > 1) align_share = 1;
    const int64_t C = cycle_steps < total_steps ? cycle_steps : total_steps;
    int64_t k1 = (int64_t)floor(align_share * (double)C + 0.5);
    if (align_share > 0 && k1 < 1) k1 = 1;
    if (k1 > C - 1) k1 = C - 1; /* every cycle keeps a task step */
    if (k1 < 0) k1 = 0;
    sc.k1 = k1;
    sc.k2 = C - k1;
    return sc;
}

int st_lisa_is_align(const st_lisa_schedule *sc, int64_t s) {
    const int64_t c = sc->k1 + sc->k2;
    return sc->k1 > 0 && c > 0 && s >= 0 && s % c < sc->k1;
}

int st_lisa_switch_after(const st_lisa_schedule *sc, int64_t s) {
    return st_lisa_is_align(sc, s) != st_lisa_is_align(sc, s + 1);
}

int st_lisa_prox_on(int64_t s, int64_t total_steps) { return 10 * s > total_steps; }
