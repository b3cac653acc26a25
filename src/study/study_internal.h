/* study_internal.h - helpers shared by src/study/ files (not public API). */
#ifndef SAFETUNE_STUDY_INTERNAL_H
#define SAFETUNE_STUDY_INTERNAL_H

#include "safetune/study.h"
#include "safetune/trainer.h"

#include <cjson/cJSON.h>
#include <stdarg.h>

/* Growable text buffer; on allocation failure `oom` is set and further writes are dropped. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} stu_buf;
void stu_printf(stu_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void stu_puts(stu_buf *b, const char *s);
void stu_buf_free(stu_buf *b);
/* A JSON file read and parsed: *out NULL when the text is not JSON (the caller checks its type);
 * reading errors (missing file, I/O) returned with the path named. */
st_status stu_read_json(const char *path, cJSON **out);
/* A run's train.json (runner.c): its training wall and CPU seconds (NaN where absent). */
st_status stu_read_train_json(const char *path, double *train_time_s, double *train_cpu_s);
/* Write the buffer atomically to path (ST_ERR_NOMEM if the buffer overflowed). */
st_status stu_buf_write(stu_buf *b, const char *path);

/* The report's audit of the refusal-keyword rule (answers.c): per row of r whose
 * DIR/runs/<id>/answers_<weights>.jsonl is readable, the AdvBench answers counted as attack
 * successes and their two most common openings (first five words); a damaged file or a count that
 * differs from the row's asr_outcomes is said in its row (and warned); nothing when no row has one. */
void stu_answers_section(stu_buf *b, const st_study_results *r, const char *dir);

/* The report's "Aligned start" section: both halves' numbers before and after alignment from the
 * align.json of c's aligned start (align.c); a line saying it is missing otherwise. */
void stu_align_report(stu_buf *b, const st_study_config *c);
/* The aligned start's own AdvBench ASR on the study's prompts: align.json's "after"
 * advbench_half_b {k, n}, when c trains from an aligned start, its align.json is readable and it
 * was measured at the study's eval.max_new_tokens and precision. 1 and *k, *n; else 0. */
int stu_align_start_asr(const st_study_config *c, size_t *k, size_t *n);

/* "%s/%s" into a heap string (NULL on OOM). */
char *stu_join(const char *a, const char *b);
/* mkdir -p (mode 0755). */
st_status stu_mkdirs(const char *path);
int stu_exists(const char *path);
int stu_dir_is_empty(const char *path); /* 1 = empty or absent */

/* FNV-1a 64 of a string, as 16 lowercase hex digits + NUL. */
void stu_fnv1a_hex(const char *s, char out[17]);

/* Weight-set name: "live", "ema<decay>" or "merge<lambda>" (decay holds λ for ST_WEIGHTS_MERGE). */
void stu_weights_init(st_study_weights *w, st_weights_kind kind, double decay);

/* One metrics.jsonl line, parsed (NaN = absent). For EMA fields the value of decay `ema` is taken
 * (a plain number applies to any decay). */
typedef struct {
    int step;
    double loss, val_loss, lr, grad_norm, tokens_per_s, theta_dist, theta_ema_dist;
    double probe_asr_live, probe_asr_ema;
} stu_metric;
/* Read metrics.jsonl for EMA decay `ema` (0 = none). Missing file = 0 lines. Bad lines are
 * ST_ERR_FORMAT naming the file and line. */
st_status stu_metrics_read(const char *path, double ema, stu_metric **out, size_t *n);

/* Process CPU time in seconds (all threads; CLOCK_PROCESS_CPUTIME_ID). */
double stu_cpu_now(void);

/* The trainer settings of defense d and finetune f on top of tc (already holding the study's
 * fixed keys and the run's grid values): the finetune axis's LoRA settings, then the defense's
 * rows of the settings table (its data keys are applied to the rows, not here). d, f may be NULL.
 * ST_ERR_ARG naming the key. */
st_status st_study_defense_train_config(const st_study_config *c, const st_study_defense *d, const st_study_finetune *f,
                                        st_train_config *tc);

/* Findings (report.c): add a group (counts its verdict); set the verdict and move b's text into
 * f->text (none_reason when there is no group); the bootstrap seed of a comparison label. */
st_status stu_finding_add(st_finding *f, const st_finding_group *g);
void stu_finding_finish(st_finding *f, stu_buf *b, const char *none_reason);
uint64_t stu_boot_seed(const st_study_config *c, const char *label);

/* Number formatting for files: "%.6f" of v, or "" for NaN. */
void stu_fmt_num(char *buf, size_t n, double v, int decimals);

#endif
