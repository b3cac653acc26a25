/* prompts.h - prompt sets for safety evaluation: AdvBench harmful behaviours (Zou et al. 2023),
 * XSTest v2 (Röttger et al. 2024: 250 safe prompts + 200 unsafe "contrast_" prompts), and user
 * CSV / JSONL files. CSV is parsed with libcsv (strict quoting), JSON with cJSON. */
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
    char *id;       /* AdvBench: 0-based row; XSTest: its id column; CSV/JSONL: "id" or 0-based index */
    char *prompt;   /* UTF-8, non-empty */
    char *category; /* XSTest: type column; CSV/JSONL: optional "category"; else NULL */
    st_prompt_label label;
} st_prompt;

typedef struct {
    st_prompt *items;
    size_t n;
    char *name; /* "advbench", "xstest", "csv:FILE", "jsonl:FILE" */
    char *path; /* the file read */
} st_prompt_set;

/* The data directory: $SAFETUNE_DATA_DIR if set and non-empty, else "data". */
const char *st_prompts_default_data_dir(void);

/* Load a prompt set by spec:
 *   "advbench"   <data_dir>/advbench/harmful_behaviors.csv, column goal (520 prompts)
 *   "xstest"     <data_dir>/xstest/xstest_prompts.csv: label safe/unsafe from type (unsafe iff
 *                it starts with "contrast_"; a contradicting label column is an error)
 *   "csv:FILE"   header row with column prompt (or goal); optional id, category, label
 *   "jsonl:FILE" one object per line: {"prompt": str, "category"?: str, "id"?: str|int,
 *                "label"?: "safe"|"unsafe"}; blank lines skipped
 * data_dir = NULL uses st_prompts_default_data_dir(). Errors name the file and line: missing
 * file, empty file, bad quoting, wrong field count, missing column, empty prompt, bad JSON,
 * invalid UTF-8, no prompts. */
st_status st_prompts_load(const char *spec, const char *data_dir, st_prompt_set *out);
void st_prompt_set_free(st_prompt_set *s);

#ifdef __cplusplus
}
#endif
#endif
