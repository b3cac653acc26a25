/* base.h - status codes, error messages, logging, allocation, RNG, timing.
 *
 * Conventions (see shared GUIDE.md): every fallible public function returns st_status
 * (ST_OK = 0) and, on failure, records one human-readable line retrievable with
 * st_last_error(). Messages name the file, the position and the fix where known. */
#ifndef SAFETUNE_BASE_H
#define SAFETUNE_BASE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    ST_OK = 0,
    ST_ERR_IO,          /* cannot open/read/write a file */
    ST_ERR_FORMAT,      /* malformed input file (bad magic, truncated, bad JSON...) */
    ST_ERR_UNSUPPORTED, /* valid input we do not handle (unknown tensor type, architecture) */
    ST_ERR_ARG,         /* bad argument / option value / config key */
    ST_ERR_NOMEM,       /* allocation failed */
    ST_ERR_NUMERIC,     /* NaN/inf encountered */
    ST_ERR_NET,         /* network / HTTP failure */
    ST_ERR_INTERNAL,
    ST_ERR_INTERRUPTED  /* stopped on request (SIGINT / SIGTERM) after saving what it could */
} st_status;

/* Record an error message (printf-style) for the calling thread and return `code`.
 * Typical use: return st_error(ST_ERR_FORMAT, "%s: offset %zu: bad magic", path, off); */
st_status st_error(st_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "ctx: " (to add outer context while propagating). */
st_status st_error_wrap(st_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The last message recorded on this thread ("" if none). Valid until the next st_error. */
const char *st_last_error(void);
void st_clear_error(void);
/* Short name of a status code ("io error", "format error", ...). */
const char *st_status_name(st_status s);

/* Logging to stderr. Level: 0 = errors only, 1 = warnings, 2 = info (default), 3 = debug. */
void st_log_set_level(int level);
int st_log_level(void);
void st_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void st_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void st_log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation. st_malloc/st_calloc return NULL and set ST_ERR_NOMEM on failure.
 * st_alloc_aligned returns 64-byte aligned memory, freed with st_free_aligned. */
void *st_malloc(size_t n);
void *st_calloc(size_t count, size_t size);
void *st_realloc(void *p, size_t n);
void *st_alloc_aligned(size_t n);
void st_free_aligned(void *p);
char *st_strdup(const char *s);

/* Read a whole file into a NUL-terminated heap buffer. *len excludes the NUL. */
st_status st_read_file(const char *path, char **data, size_t *len);
/* st_read_file for a text input (datasets, prompt files, configs): ST_ERR_FORMAT naming the
 * byte and line of the first NUL byte, which text never holds (a binary file, or UTF-16). */
st_status st_read_text_file(const char *path, char **data, size_t *len);
/* st_read_text_file for a JSON / JSONL input: also ST_ERR_FORMAT, naming the line, for a \u0000
 * escape, which would cut the string short (JSON strings become C strings here). */
st_status st_read_json_text_file(const char *path, char **data, size_t *len);
/* The first \u0000 escape of JSON text s[0..n) (escaped backslashes skipped), or NULL. */
const char *st_json_nul_escape(const char *s, size_t n);
/* Write `len` bytes atomically: to "<path>.tmp.<pid>", fsync, rename over `path`. */
st_status st_write_file_atomic(const char *path, const void *data, size_t len);

/* Create a folder and its parents (mkdir -p, mode 0755); error if the path exists and is not a
 * folder. Remove a flat folder (its files, then itself) that we created; missing is fine. */
st_status st_mkdir_p(const char *path);
/* "dir/name" in a new heap string (trailing slashes of dir dropped); NULL (ST_ERR_NOMEM) on OOM. */
char *st_path_join(const char *dir, const char *name);
/* fsync folder `dir` so the renames and removals made in it survive a crash (POSIX leaves them in
 * the page cache until then). Best effort: a folder that cannot be opened is skipped. */
void st_fsync_dir(const char *dir);
void st_remove_flat_dir(const char *dir);
/* Remove the flat folders (or files) dir/PREFIX*.{partial,old,tmp}.PID whose process PID no
 * longer exists: what a save, export or prune killed mid-way leaves behind. Never the caller's
 * own; errors are ignored (what cannot go stays). */
void st_remove_stale_temp_dirs(const char *dir, const char *prefix);

/* Barrier for a fixed team of nthreads (barrier.c): a counter plus a generation number (the
 * centralised barrier of Mellor-Crummey & Scott 1991); waiters spin up to spin_s seconds (less
 * after waits that had to sleep), then sleep on the generation with futex(2) (Linux). OpenMP's
 * passive barrier sleeps at once and pays a ~30 us wake-up per phase; its active one spins
 * without bound and starves co-scheduled work. st_barrier_init before a team uses it; every
 * thread passes the same nthreads. */
typedef struct {
    _Atomic unsigned arrived, gen, sleepers;
} st_barrier;
void st_barrier_init(st_barrier *b);
void st_barrier_wait(st_barrier *b, int nthreads, double spin_s);

/* UTF-8 (utf8.c; RFC 3629): number of invalid bytes in s[0..n); a heap NUL-terminated copy with
 * each invalid byte replaced by U+FFFD (*n_replaced: how many; NULL ok). NULL on OOM. cJSON does
 * not validate: every JSON text we write goes through st_utf8_repair. */
size_t st_utf8_invalid_count(const char *s, size_t n);
char *st_utf8_repair(const char *s, size_t n, size_t *n_replaced);
/* Takes ownership of heap string s (NULL passes through): returns s if valid UTF-8, else a
 * repaired copy (s freed). For wrapping cJSON_Print* output: st_utf8_fix_owned(cJSON_Print(o)). */
char *st_utf8_fix_owned(char *s);
/* Streaming text output, token by token (safetune chat): holds back the bytes of an incomplete
 * UTF-8 sequence until it completes, and text that may be the start of a stop string, so what is
 * written is always valid UTF-8 and never shows a stop string. Invalid bytes become U+FFFD. */
typedef struct {
    char *buf;               /* bytes pushed but not written yet */
    size_t n, cap;
    const char *const *stops; /* stop strings (valid UTF-8, non-empty), or NULL */
    int n_stops;
    int stopped;             /* 1 once a stop string was seen: nothing more is written */
} st_text_stream;
void st_text_stream_init(st_text_stream *s, const char *const *stops, int n_stops);
/* Append n bytes and write to f what is safe to show. Returns 1 once a stop string has appeared
 * (the text before it is written, it and everything after are dropped), else 0; -1 on OOM. */
int st_text_stream_push(st_text_stream *s, const char *bytes, size_t n, FILE *f);
/* End of the reply: writes what is held back; an incomplete UTF-8 sequence at the end is written
 * as one U+FFFD (as Hugging Face decode does). Resets s for the next reply (stops kept). */
void st_text_stream_finish(st_text_stream *s, FILE *f);
void st_text_stream_free(st_text_stream *s);

/* Drop a leading UTF-8 BOM (EF BB BF) in place from a NUL-terminated buffer of len bytes
 * (as from st_read_file); returns the new length. */
size_t st_utf8_strip_bom(char *data, size_t len);

/* Deterministic RNG: xoshiro256** seeded with splitmix64 (Blackman & Vigna 2018).
 * The state is plain data so it can be checkpointed and restored bit-exactly. */
typedef struct { uint64_t s[4]; } st_rng;
void st_rng_seed(st_rng *r, uint64_t seed);
uint64_t st_rng_u64(st_rng *r);
/* Uniform in [0, 1) with 24 random bits (float) / 53 bits (double). */
float st_rng_float(st_rng *r);
double st_rng_double(st_rng *r);
/* Standard normal (Box-Muller). */
double st_rng_normal(st_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void st_rng_shuffle(st_rng *r, uint32_t *idx, size_t n);

/* Monotonic wall clock in seconds. */
double st_time_now(void);

/* Number of threads compute kernels should use (OMP_NUM_THREADS or all cores). */
int st_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif
