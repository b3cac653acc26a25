/* spinbar.h - internal: a barrier for the threads of one OpenMP parallel region that spins for
 * a bounded time, then sleeps (Linux futex). st_forward_infer runs a whole forward pass in one
 * region with several barriers per layer; libgomp's own barrier under OMP_WAIT_POLICY=passive
 * (the CLI's and the benches' policy: unbounded spinning collapsed on a shared machine) sleeps
 * at once, and each futex wake-up costs tens of microseconds. The bound keeps a preempted
 * partner from costing more than spin_s of wasted CPU per barrier.
 * Source: Linux futex(2) (FUTEX_WAIT/FUTEX_WAKE on the generation word, the wait re-checks it
 * atomically); Mellor-Crummey & Scott 1991, sense-reversing centralized barrier. */
#ifndef SAFETUNE_MODEL_SPINBAR_H
#define SAFETUNE_MODEL_SPINBAR_H

#include <omp.h>
#include <stdatomic.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ST_SPIN_PAUSE() _mm_pause()
#else
#define ST_SPIN_PAUSE() ((void)0)
#endif

typedef struct {
    atomic_uint count;  /* threads arrived in this generation */
    atomic_uint gen;    /* bumped by the last arriver; waiters watch it (the futex word) */
    atomic_int sleepers; /* threads in (or entering) FUTEX_WAIT: the last arriver wakes them */
} st_spinbar;

/* Zeroed barrier; call before the parallel region. */
static inline void st_spinbar_init(st_spinbar *b) {
    atomic_init(&b->count, 0);
    atomic_init(&b->gen, 0);
    atomic_init(&b->sleepers, 0);
}

/* Wait until n threads (all callers pass the same n) have arrived; the arrivals' writes are
 * visible to every thread after it returns (seq_cst). Spins up to *spin_s seconds, then sleeps.
 * *spin_s adapts per caller: halved (down to 1 us) when the spin ran out, doubled (up to max_s)
 * when it caught the release, so a machine where partners get preempted (spins run out) wastes
 * little CPU on spinning while a quiet one keeps spinning. spin_s NULL or 0: sleep at once. */
static inline void st_spinbar_wait(st_spinbar *b, int n, double *spin_s, double max_s) {
    if (n <= 1) return;
    const unsigned g = atomic_load(&b->gen);
    if (atomic_fetch_add(&b->count, 1) == (unsigned)n - 1) {
        atomic_store(&b->count, 0);
        atomic_fetch_add(&b->gen, 1);
#ifdef __linux__
        if (atomic_load(&b->sleepers))
            syscall(SYS_futex, (unsigned *)&b->gen, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
#endif
        return;
    }
    if (spin_s && *spin_s > 0) {
        const double t0 = omp_get_wtime();
        int caught = 0;
        for (unsigned it = 1;; it++) {
            if (atomic_load(&b->gen) != g) {
                caught = 1;
                break;
            }
            ST_SPIN_PAUSE();
            if ((it & 63) == 0 && omp_get_wtime() - t0 > *spin_s) break;
        }
        if (caught) {
            *spin_s = *spin_s * 2 < max_s ? *spin_s * 2 : max_s;
            return;
        }
        *spin_s = *spin_s * 0.5 > 1e-6 ? *spin_s * 0.5 : 1e-6;
    }
    while (atomic_load(&b->gen) == g) {
#ifdef __linux__
        atomic_fetch_add(&b->sleepers, 1);
        /* sleeps only while gen still equals g (checked by the kernel under its lock) */
        if (atomic_load(&b->gen) == g)
            syscall(SYS_futex, (unsigned *)&b->gen, FUTEX_WAIT_PRIVATE, g, NULL, NULL, 0);
        atomic_fetch_sub(&b->sleepers, 1);
#else
        sched_yield();
#endif
    }
}

#endif
