/* dist.h - the processes of an MPI job (Open MPI, MPI-3.1): `mpirun -np N safetune train|study`.
 *
 * MPI is initialised only when an MPI launcher started the process (mpirun / mpiexec / srun set
 * OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK); a plain `safetune ...` never touches MPI, so it
 * runs as before (no Open MPI singleton runtime started for a one-process job, nothing for the
 * sanitizers to report). Every collective below is a no-op returning ST_OK in one process.
 * Threads: MPI_THREAD_FUNNELED (only the main thread calls MPI; OpenMP threads compute).
 *
 * Failure rule: a rank that fails must not leave the others waiting in a collective. Code that
 * can fail on one rank only (files, memory) ends in st_dist_agree, which every rank calls; the
 * first failing rank's message then reaches all ranks and rank 0 prints it once. */
#ifndef SAFETUNE_DIST_H
#define SAFETUNE_DIST_H

#include "safetune/base.h"
#include "safetune/trainer.h"

/* Initialise MPI when launched by an MPI launcher (above); idempotent. ST_ERR_INTERNAL when
 * MPI_Init_thread fails or gives less than MPI_THREAD_FUNNELED. */
st_status st_dist_init(int *argc, char ***argv);
/* MPI_Finalize when st_dist_init initialised MPI. */
void st_dist_finalize(void);
/* Rank in [0, world) and number of processes (0 and 1 without MPI). */
int st_dist_rank(void);
int st_dist_world(void);
/* MPI_Abort(MPI_COMM_WORLD, code) under MPI (ends every rank), else exit(code). Last resort. */
_Noreturn void st_dist_abort(int code);

/* Collective. s = this rank's status. All ST_OK -> ST_OK. Else every rank returns the status of
 * the lowest failing rank R and st_last_error() on every rank is "rank R of N: <R's message>". */
st_status st_dist_agree(st_status s);
/* The first failing rank of the last st_dist_agree that failed (every rank knows it), or -1 when
 * none failed: a command that returns an error after such an agreement needs no other. */
int st_dist_failed_rank(void);
/* The exit code (2: usage error, 1: other) this rank will end with if it fails its next
 * st_dist_agree; the agreement hands it to every rank, so the same mistake ends every rank (and
 * mpirun) with the code one process would give. 0 = not set. */
void st_dist_set_exit_code(int code);
/* The failing rank's exit code from the last failed st_dist_agree (0 = it set none). */
int st_dist_failed_exit_code(void);
/* Collective: rank 0's NUL-terminated text `mine` on every rank, as a heap copy in *out (caller
 * frees); without MPI a copy of mine. A rank that cannot allocate the copy fails every rank
 * through st_dist_agree (ST_ERR_NOMEM); ST_ERR_IO when MPI fails. */
st_status st_dist_bcast_text(const char *mine, char **out);
/* Collective. ST_ERR_ARG on every rank (message names `what` and the first rank whose value
 * differs from rank 0's) unless all ranks pass the same 64-bit value. */
st_status st_dist_check_same(uint64_t value, const char *what);

/* The trainer's data-parallel seam over MPI_COMM_WORLD (trainer.h st_trainer_comm):
 *   sum_f32: MPI_Reduce_scatter then MPI_Allgatherv (the ring all-reduce's two halves): every
 *            element is summed once, at one rank, then copied, so every rank holds the same bits;
 *   sum_f64: MPI_Allgather of the n values of each rank, summed locally in rank order
 *            (deterministic; for short vectors: counts, losses, norms);
 *   rs_f32:  MPI_Reduce_scatter only: the slice [st_dist_slice] of the sum (ZeRO-1);
 *   ag_f32:  MPI_Allgatherv in place: each rank's slice copied to every rank (ZeRO-1);
 *   agree:   st_dist_agree.
 * Without MPI the functions are NULL (world 1). */
st_trainer_comm st_dist_trainer_comm(void);
/* The slice [*off, *off + *len) of n elements owned by `rank` of `world`: n / world elements,
 * one more for the first n % world ranks (the counts MPI_Reduce_scatter uses here). */
void st_dist_slice(size_t n, int rank, int world, size_t *off, size_t *len);

/* A shared counter for dynamic dispatch (MPI-3 one-sided: MPI_Fetch_and_op on a window of rank
 * 0): each st_dist_counter_next returns the next unclaimed value 0, 1, 2, ... to whichever rank
 * asks first. open and close are collective. Without MPI the counter is a plain variable. */
typedef struct st_dist_counter st_dist_counter;
st_status st_dist_counter_open(st_dist_counter **out);
st_status st_dist_counter_next(st_dist_counter *c, int64_t *value);
void st_dist_counter_close(st_dist_counter *c);
/* Collective: x[n] summed over the ranks in place, in rank order (the same bits everywhere). */
st_status st_dist_sum_f64(double *x, size_t n);

/* 64-bit FNV-1a of bytes, continuing from h (start with ST_FNV_INIT). */
#define ST_FNV_INIT 0xcbf29ce484222325ULL
uint64_t st_fnv1a64(uint64_t h, const void *p, size_t n);

#endif
