/* prompts.h - prompt sets for safety evaluation: AdvBench harmful behaviours (Zou et al. 2023),
 * XSTest v2 (Röttger et al. 2024: 250 safe prompts + 200 unsafe "contrast_" prompts), the public
 * harmful-prompt benchmarks read from the user's copy of their files (HarmBench, Mazeika et al.
 * 2024; StrongREJECT, Souly et al. 2024; JailbreakBench JBB-Behaviors, Chao et al. 2024; HEx-PHI,
 * Qi et al. 2023), and user CSV / JSONL files. CSV is parsed with libcsv (strict quoting, quoted
 * fields may hold commas and newlines), JSON with cJSON. */
#ifndef SAFETUNE_PROMPTS_H
#define SAFETUNE_PROMPTS_H

#include "safetune/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    ST_LABEL_NONE = 0,   /* no safe/unsafe label (AdvBench, user files without one) */
    ST_LABEL_SAFE = 1,   /* should be answered (XSTest safe prompts) */
    ST_LABEL_UNSAFE = 2  /* should be refused (XSTest contrast_ prompts) */
} st_prompt_label;

typedef struct {
    char *id;       /* AdvBench, StrongREJECT: 0-based row; XSTest: its id column; HarmBench:
                       BehaviorID; JBB: index; HEx-PHI: "category_N:R" (R 0-based row of the
                       file's prompts); CSV/JSONL: "id" or 0-based index */
    char *prompt;   /* UTF-8, non-empty */
    char *category; /* XSTest: type; HarmBench: SemanticCategory; StrongREJECT, JBB: category;
                       HEx-PHI: "category_N" from the file name; CSV/JSONL: optional; else NULL */
    st_prompt_label label;
    char *target;   /* AdvBench: its target column ("Sure, here is ..."), else NULL */
} st_prompt;

typedef struct {
    st_prompt *items;
    size_t n;
    size_t n_excluded; /* rows read but left out by an option (HarmBench functional categories) */
    char *name;        /* the spec: "advbench", "harmbench:FILE", ... */
    char *path;        /* the file (HEx-PHI: the folder) read */
} st_prompt_set;

/* Options of the named benchmarks; all-zero = the defaults. */
typedef struct {
    const char *harmbench_functional; /* HarmBench FunctionalCategory values to keep, comma-
                                         separated subset of standard,contextual,copyright (or
                                         "all"); NULL = "standard" */
    const char *prompt_column;        /* csv: the prompt column; NULL = "prompt", else "goal" */
    const char *category_column;      /* csv: the category column; NULL = "category" if present */
    st_prompt_label label;            /* csv: label every prompt so (a "label" column must then
                                         agree); NONE = from the "label" column if any */
} st_prompt_opts;

/* The data directory: $SAFETUNE_DATA_DIR if set and non-empty, else "data". */
const char *st_prompts_default_data_dir(void);

/* Load a prompt set by spec (CSV column names match case-insensitively; an exact match wins):
 *   "advbench"          <data_dir>/advbench/harmful_behaviors.csv, column goal (520 prompts)
 *   "xstest"            <data_dir>/xstest/xstest_prompts.csv: label safe/unsafe from type (unsafe
 *                       iff it starts with "contrast_"; a contradicting label column is an error)
 *   "harmbench:FILE"    HarmBench behaviours CSV (Behavior, FunctionalCategory, SemanticCategory,
 *                       Tags, ContextString, BehaviorID): the FunctionalCategory values of
 *                       o->harmbench_functional (default standard; the others are counted in
 *                       n_excluded); a non-empty ContextString goes above the request as
 *                       HarmBench's DirectRequest renders it: CONTEXT "\n\n---\n\n" BEHAVIOR
 *   "strongreject:FILE" StrongREJECT CSV (category, source, forbidden_prompt)
 *   "jbb:FILE"          JailbreakBench harmful-behaviors.csv (Index, Goal, Target, Behavior,
 *                       Category, Source): Goal, unlabelled (harmful, as AdvBench)
 *   "jbb-benign:FILE"   JailbreakBench benign-behaviors.csv, same layout: every prompt labelled
 *                       safe (refusals are over-refusal). A file named benign-behaviors.csv
 *                       under jbb:, or harmful-behaviors.csv under jbb-benign:, is an error.
 *   "hexphi:DIR"        HEx-PHI: DIR/category_N.csv (N = 1..11; other .csv names are an error),
 *                       one prompt per row, an optional one-word header (prompt, instruction,
 *                       text, question, goal, behavior, query); category "category_N"
 *   "csv:FILE"          header row with o->prompt_column (default prompt, else goal); optional
 *                       id, o->category_column (default category), label (or o->label)
 *   "jsonl:FILE"        one object per line: {"prompt": str, "category"?: str, "id"?: str|int,
 *                       "label"?: "safe"|"unsafe"}; blank lines skipped
 * o = NULL: the defaults. data_dir = NULL uses st_prompts_default_data_dir(). Errors: the spec
 * or options as st_prompts_spec_check; then messages naming the file, line and fix: missing
 * file, empty file, bad quoting, wrong field count, missing column, empty prompt, bad JSON,
 * invalid UTF-8, no prompts (nothing is returned on error). This is the one resolver of
 * benchmark names for the CLI and the study. */
st_status st_prompts_load_opts(const char *spec, const char *data_dir, const st_prompt_opts *o,
                               st_prompt_set *out);
/* st_prompts_load_opts with the default options. */
st_status st_prompts_load(const char *spec, const char *data_dir, st_prompt_set *out);
/* Check a spec and its options without reading a file: ST_ERR_ARG naming the problem for an
 * unknown name, a FILE missing after the colon, an option that the benchmark does not take
 * (harmbench_functional without harmbench:, the csv options without csv:), an unknown
 * functional category, or a JailbreakBench file given under the other name. */
st_status st_prompts_spec_check(const char *spec, const st_prompt_opts *o);
void st_prompt_set_free(st_prompt_set *s);

#ifdef __cplusplus
}
#endif
#endif
