/* barrier.c - spin-then-sleep barrier for a fixed thread team (see base.h). */
#include "safetune/base.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void futex_wait(_Atomic unsigned *addr, unsigned val) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic unsigned *addr) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void st_barrier_init(st_barrier *b) {
    atomic_init(&b->arrived, 0);
    atomic_init(&b->gen, 0);
    atomic_init(&b->sleepers, 0);
}

/* This thread's current spin budget (seconds; < 0: not yet set). A wait that has to sleep
 * quarters it (the peers are off the CPU: a loaded machine, where spinning only delays them); a
 * wait that a spin ends raises it again by an eighth of the maximum. */
static _Thread_local double tl_budget = -1.0;

void st_barrier_wait(st_barrier *b, int nthreads, double spin_s) {
    if (nthreads <= 1) return;
    const unsigned g = atomic_load(&b->gen);
    if (atomic_fetch_add(&b->arrived, 1) == (unsigned)nthreads - 1) {
        atomic_store(&b->arrived, 0);
        atomic_fetch_add(&b->gen, 1);
        /* seq_cst pairs with the sleeper's increment then futex check: one of the two sees the other */
        if (atomic_load(&b->sleepers)) futex_wake_all(&b->gen);
        return;
    }
    if (tl_budget < 0 || tl_budget > spin_s) tl_budget = spin_s;
    const double deadline = st_time_now() + tl_budget;
    for (unsigned i = 1; atomic_load(&b->gen) == g; i++) {
        cpu_relax();
        if ((i & 63) != 0 || st_time_now() < deadline) continue;
        tl_budget *= 0.25;
        atomic_fetch_add(&b->sleepers, 1);
        while (atomic_load(&b->gen) == g) futex_wait(&b->gen, g);
        atomic_fetch_sub(&b->sleepers, 1);
        return;
    }
    tl_budget += spin_s * 0.125;
}
