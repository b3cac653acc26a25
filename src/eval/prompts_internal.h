/* prompts_internal.h - the CSV table and helpers shared by the prompt-set readers: prompts.c
 * (AdvBench, XSTest, csv:, jsonl:, the spec resolver) and prompts_bench.c (HarmBench,
 * StrongREJECT, JailbreakBench, HEx-PHI). Not public API. */
#ifndef SAFETUNE_PROMPTS_INTERNAL_H
#define SAFETUNE_PROMPTS_INTERNAL_H

#include "safetune/prompts.h"

/* One CSV record: its fields (NUL-terminated copies) and the file line it starts on. */
typedef struct {
    char **f;
    size_t nf, cap;
    size_t line;
} st__csv_row;

/* A whole CSV file as rows (the header, if any, is rows[0]); the other fields are parse state. */
typedef struct {
    st__csv_row *rows;
    size_t n, cap;
    st__csv_row cur;
    size_t line;
    int at_row_start;
    int oom;
} st__csv_table;

/* Read path (UTF-8, an optional BOM skipped) into t with libcsv in strict mode: quoted fields may
 * hold commas, doubled quotes and newlines; blank lines are skipped. Errors name the file and
 * line: missing file (ST_ERR_IO), invalid UTF-8, bad quoting, an unterminated quote. An empty
 * file gives t->n = 0 (the caller words that error). */
st_status st__csv_load(const char *path, st__csv_table *t);
void st__csv_table_free(st__csv_table *t);

/* Index of column `name` in header h: the exact name, else the one column equal to it ignoring
 * ASCII case; -1 if none. Two columns equal to it ignoring case (and none exactly) is an error
 * naming both (ST_ERR_FORMAT, *status set; returns -1). */
int st__csv_col(const char *path, const st__csv_row *h, const char *name, st_status *status);

/* ST_ERR_FORMAT: "PATH: line L: header has no column "NAME" (columns: a,b,c)" + hint. */
st_status st__csv_missing_col(const char *path, const st__csv_row *h, const char *name, const char *hint);

/* Check every row after the header has the header's field count, naming the first that does not. */
st_status st__csv_check_widths(const char *path, const st__csv_table *t);

/* 1 if s is empty or only whitespace. */
int st__blank(const char *s);

/* Append a prompt (copies of the strings) to s; *cap is the allocated length. ST_ERR_NOMEM. */
st_status st__prompt_push(st_prompt_set *s, size_t *cap, const char *id, const char *prompt,
                          const char *category, st_prompt_label label);

/* The named-benchmark readers (prompts_bench.c); o is never NULL; out is filled from empty and
 * freed by the caller on error. */
st_status st__load_harmbench(const char *path, const st_prompt_opts *o, st_prompt_set *out);
st_status st__load_strongreject(const char *path, st_prompt_set *out);
st_status st__load_jbb(const char *path, int benign, st_prompt_set *out);
st_status st__load_hexphi(const char *dir, st_prompt_set *out);

/* Parse a HarmBench functional-category list ("standard,contextual", "all") into a bit mask
 * (1 standard, 2 contextual, 4 copyright); NULL = standard. ST_ERR_ARG naming a bad word. */
st_status st__harmbench_functional_mask(const char *list, unsigned *mask);

#endif
