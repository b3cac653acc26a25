/* dist.c - MPI process group and the trainer's data-parallel seam over it (dist.h). */
#include "safetune/dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

static int g_inited;   /* we called MPI_Init_thread */
static int g_rank, g_world = 1;
static int g_failed_rank = -1; /* the first failing rank of the last failed agreement */
static int g_exit_code;        /* this rank's exit code when it fails its next agreement (0: unknown) */
static int g_failed_exit;      /* the failing rank's exit code from the last failed agreement */

uint64_t st_fnv1a64(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static int launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

st_status st_dist_init(int *argc, char ***argv) {
    if (g_inited || !launched_by_mpi()) return ST_OK;
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return st_error(ST_ERR_INTERNAL, "MPI_Init_thread failed (started by mpirun?)");
    g_inited = 1;
    if (provided < MPI_THREAD_FUNNELED)
        return st_error(ST_ERR_INTERNAL, "MPI gives thread level %d, safetune needs MPI_THREAD_FUNNELED", provided);
    /* errors come back as codes (turned into messages below), never abort inside MPI */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_world);
    return ST_OK;
}

void st_dist_finalize(void) {
    int fin = 0;
#ifdef __SANITIZE_ADDRESS__
    /* the leak check now, while Open MPI's components are loaded: MPI_Finalize unloads them and
     * their allocations would be reported from "<unknown module>", which no suppression can name
     * (tests/parity/mpi/lsan_openmpi.supp names them; our code is checked as at exit) */
    if (g_inited) __lsan_do_leak_check();
#endif
    if (g_inited && MPI_Finalized(&fin) == MPI_SUCCESS && !fin) MPI_Finalize();
    g_inited = 0;
}

int st_dist_rank(void) { return g_inited ? g_rank : 0; }
int st_dist_world(void) { return g_inited ? g_world : 1; }

_Noreturn void st_dist_abort(int code) {
    if (g_inited) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

static st_status mpi_err(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return ST_OK;
    char txt[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, txt, &len) != MPI_SUCCESS) snprintf(txt, sizeof txt, "code %d", rc);
    return st_error(ST_ERR_IO, "MPI %s failed on rank %d: %s (another rank died?)", what, g_rank, txt);
}

st_status st_dist_agree(st_status s) {
    if (!g_inited || g_world == 1) return s;
    /* lowest failing rank: MIN over (failed ? rank : world) */
    int mine = s != ST_OK ? g_rank : g_world, first = g_world;
    st_status e = mpi_err(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "status agreement");
    if (e) return e;
    if (first == g_world) return ST_OK;
    g_failed_rank = first;
    struct { int code, exit_code; char msg[2048]; } pkt = {0};
    if (g_rank == first) {
        pkt.code = (int)s;
        pkt.exit_code = g_exit_code;
        snprintf(pkt.msg, sizeof pkt.msg, "%s", st_last_error());
    }
    if ((e = mpi_err(MPI_Bcast(&pkt, (int)sizeof pkt, MPI_BYTE, first, MPI_COMM_WORLD), "message broadcast")))
        return e;
    pkt.msg[sizeof pkt.msg - 1] = '\0';
    g_failed_exit = pkt.exit_code;
    return st_error((st_status)pkt.code, "rank %d of %d: %s", first, g_world,
                    pkt.msg[0] ? pkt.msg : st_status_name((st_status)pkt.code));
}

st_status st_dist_check_same(uint64_t value, const char *what) {
    if (!g_inited || g_world == 1) return ST_OK;
    /* first an agreement: a rank that failed before getting here (and agrees once on its way
     * out) is met by the same collectives */
    st_status s = st_dist_agree(ST_OK);
    if (s) return s;
    unsigned long long *all = malloc((size_t)g_world * sizeof *all);
    const unsigned long long v = value;
    int rc = all ? MPI_Allgather(&v, 1, MPI_UNSIGNED_LONG_LONG, all, 1, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD)
                 : MPI_ERR_NO_MEM;
    s = mpi_err(rc, "allgather");
    for (int r = 1; !s && r < g_world; r++)
        if (all[r] != all[0])
            s = st_error(ST_ERR_ARG, "rank %d of %d has other %s than rank 0 (hash %016llx, rank 0 %016llx): every rank "
                         "must get the same command line and files (a shared folder, or the same copies)",
                         r, g_world, what, all[r], all[0]);
    free(all);
    return s;
}

int st_dist_failed_rank(void) { return g_failed_rank; }
void st_dist_set_exit_code(int code) { g_exit_code = code; }
int st_dist_failed_exit_code(void) { return g_failed_exit; }

st_status st_dist_bcast_text(const char *mine, char **out) {
    *out = NULL;
    unsigned long long n = strlen(mine);
    const int multi = g_inited && g_world > 1;
    if (multi) {
        st_status s = mpi_err(MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD), "text length broadcast");
        if (s) return s;
        if (n > (unsigned long long)INT_MAX) return st_error(ST_ERR_UNSUPPORTED, "MPI: a text of %llu bytes to broadcast", n);
    }
    char *t = malloc((size_t)n + 1);
    /* every rank has its buffer (or all stop here together) before the broadcast */
    st_status s = st_dist_agree(t ? ST_OK : st_error(ST_ERR_NOMEM, "out of memory (%llu bytes)", n + 1));
    if (!s && multi) {
        if (g_rank == 0) memcpy(t, mine, (size_t)n);
        s = mpi_err(MPI_Bcast(t, (int)n, MPI_CHAR, 0, MPI_COMM_WORLD), "text broadcast");
    } else if (!s) memcpy(t, mine, (size_t)n);
    if (s) {
        free(t);
        return s;
    }
    t[n] = '\0';
    *out = t;
    return ST_OK;
}

void st_dist_slice(size_t n, int rank, int world, size_t *off, size_t *len) {
    if (world < 1) world = 1;
    const size_t q = n / (size_t)world, r = n % (size_t)world, k = (size_t)rank;
    *len = q + (k < r);
    *off = k * q + (k < r ? k : r);
}

/* per-rank counts and displacements (MPI takes int: at most INT_MAX elements per rank) */
static st_status counts_of(size_t n, int **cnt, int **dsp) {
    *cnt = malloc((size_t)g_world * sizeof **cnt);
    *dsp = malloc((size_t)g_world * sizeof **dsp);
    if (!*cnt || !*dsp) {
        free(*cnt);
        free(*dsp);
        return st_error(ST_ERR_NOMEM, "MPI: out of memory");
    }
    for (int r = 0; r < g_world; r++) {
        size_t off, len;
        st_dist_slice(n, r, g_world, &off, &len);
        if (off + len > (size_t)INT_MAX) {
            free(*cnt);
            free(*dsp);
            return st_error(ST_ERR_UNSUPPORTED, "MPI: a vector of %zu floats is more than MPI's int counts address; "
                            "run on more ranks", n);
        }
        (*cnt)[r] = (int)len;
        (*dsp)[r] = (int)off;
    }
    return ST_OK;
}

static st_status rs_f32(float *x, size_t n, void *user) {
    (void)user;
    int *cnt, *dsp;
    st_status s = counts_of(n, &cnt, &dsp);
    if (s) return s;
    /* MPI_IN_PLACE: the full input is x, and the result goes to the start of x; move it to the slice */
    s = mpi_err(MPI_Reduce_scatter(MPI_IN_PLACE, x, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "reduce-scatter");
    if (!s && dsp[g_rank] > 0) memmove(x + dsp[g_rank], x, (size_t)cnt[g_rank] * sizeof *x);
    free(cnt);
    free(dsp);
    return s;
}

static st_status ag_f32(float *x, size_t n, void *user) {
    (void)user;
    int *cnt, *dsp;
    st_status s = counts_of(n, &cnt, &dsp);
    if (s) return s;
    s = mpi_err(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, cnt, dsp, MPI_FLOAT, MPI_COMM_WORLD),
                "allgather");
    free(cnt);
    free(dsp);
    return s;
}

static st_status sum_f32(float *x, size_t n, void *user) {
    st_status s = rs_f32(x, n, user);
    return s ? s : ag_f32(x, n, user);
}

static st_status sum_f64(double *x, size_t n, void *user) {
    (void)user;
    if (n > (size_t)INT_MAX / (size_t)g_world) return st_error(ST_ERR_ARG, "MPI: sum_f64 of %zu values", n);
    double *all = malloc((size_t)g_world * n * sizeof *all);
    if (!all) return st_error(ST_ERR_NOMEM, "MPI: out of memory");
    st_status s = mpi_err(MPI_Allgather(x, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, MPI_COMM_WORLD), "allgather");
    for (size_t i = 0; !s && i < n; i++) {
        double v = 0.0;
        for (int r = 0; r < g_world; r++) v += all[(size_t)r * n + i];
        x[i] = v;
    }
    free(all);
    return s;
}

static st_status agree(st_status s, void *user) {
    (void)user;
    return st_dist_agree(s);
}

st_trainer_comm st_dist_trainer_comm(void) {
    st_trainer_comm c;
    memset(&c, 0, sizeof c);
    c.rank = st_dist_rank();
    c.world = st_dist_world();
    if (c.world > 1) {
        c.sum_f32 = sum_f32;
        c.sum_f64 = sum_f64;
        c.rs_f32 = rs_f32;
        c.ag_f32 = ag_f32;
        c.agree = agree;
    }
    return c;
}

st_status st_dist_sum_f64(double *x, size_t n) {
    return g_inited && g_world > 1 ? sum_f64(x, n, NULL) : ST_OK;
}

struct st_dist_counter {
    MPI_Win win;
    int64_t *base; /* rank 0: the counter; elsewhere unused */
    int64_t local; /* without MPI */
    int mpi;
};

st_status st_dist_counter_open(st_dist_counter **out) {
    st_dist_counter *c = calloc(1, sizeof *c);
    if (!(*out = c)) return st_error(ST_ERR_NOMEM, "MPI: out of memory");
    if (!g_inited || g_world == 1) return ST_OK;
    const MPI_Aint bytes = g_rank == 0 ? (MPI_Aint)sizeof(int64_t) : 0;
    st_status s = mpi_err(MPI_Win_allocate(bytes, sizeof(int64_t), MPI_INFO_NULL, MPI_COMM_WORLD, &c->base, &c->win),
                          "window allocation");
    if (!s) {
        c->mpi = 1;
        if (g_rank == 0) {
            MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, c->win);
            *c->base = 0;
            MPI_Win_unlock(0, c->win);
        }
        s = mpi_err(MPI_Barrier(MPI_COMM_WORLD), "barrier"); /* nobody counts before the reset */
    }
    if (s) {
        st_dist_counter_close(c);
        *out = NULL;
    }
    return s;
}

st_status st_dist_counter_next(st_dist_counter *c, int64_t *value) {
    if (!c->mpi) {
        *value = c->local++;
        return ST_OK;
    }
    const int64_t one = 1;
    int64_t got = 0;
    st_status s = mpi_err(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, c->win), "window lock");
    if (!s) s = mpi_err(MPI_Fetch_and_op(&one, &got, MPI_INT64_T, 0, 0, MPI_SUM, c->win), "fetch-and-add");
    if (!s) s = mpi_err(MPI_Win_unlock(0, c->win), "window unlock");
    *value = got;
    return s;
}

void st_dist_counter_close(st_dist_counter *c) {
    if (!c) return;
    if (c->mpi) MPI_Win_free(&c->win);
    free(c);
}
