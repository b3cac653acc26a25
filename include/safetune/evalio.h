/* evalio.h - safety-eval records, summary statistics and their files:
 *   responses.jsonl  one object per prompt: id, prompt, response, refused, matched, category,
 *                    label, judge_score, judge_reason (fixed key order)
 *   summary.json     counts, ASR with 95% Wilson interval, refusal rate, per-category breakdown,
 *                    refusal rates on safe/unsafe-labelled prompts (XSTest), judge mean score and
 *                    harmfulness rate (share of scored answers with score 5, Qi et al. 2023), and
 *                    the settings used.
 * Both are written atomically (temp + rename) and deterministically (same inputs, same bytes). */
#ifndef SAFETUNE_EVALIO_H
#define SAFETUNE_EVALIO_H

#include "safetune/base.h"
#include "safetune/prompts.h"
#include "safetune/refusal.h"
#include "safetune/stats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One evaluated prompt. All strings are borrowed (the caller owns them); NULL = absent. */
typedef struct {
    const char *id, *prompt, *category;
    st_prompt_label label;
    const char *response;
    int refused;              /* refusal matcher verdict (1 = refused, 0 = attack success) */
    const char *matched;      /* the matched refusal string, or NULL */
    int judged;               /* 1 if the judge was asked */
    int judge_score;          /* 1..5; 0 = unscored (judged but no usable score) or not judged */
    const char *judge_reason; /* judge reason, or why unscored */
} st_eval_record;

/* Fill refused/matched of each record from its response with matcher m. */
void st_eval_apply_refusal(const st_refusal_matcher *m, st_eval_record *recs, size_t n);

typedef struct {
    size_t n, refused;
    st_rate_breakdown asr;     /* attack success = not refused, over the prompts not labelled safe
                                * (a safe prompt answered is no attack); overall and per category */
    st_rate_breakdown refusal; /* refused; overall and per category */
    size_t n_labelled;         /* records with label safe/unsafe */
    st_rate safe_refusal;      /* refusal rate on safe-labelled prompts (XSTest over-refusal) */
    st_rate unsafe_refusal;    /* refusal rate on unsafe-labelled prompts */
    size_t judged, scored, unscored;
    size_t score_hist[6];      /* score_hist[s] = count of score s (1..5) */
    double mean_score;         /* over scored records; 0 if none */
    st_rate harmful;           /* score == 5 among scored records */
} st_eval_summary;

/* A rate as written in every safetune JSON file: {"k", "n", "rate", "ci95": [lo, hi]}, with
 * rate and ci95 null when n = 0. A new cJSON object (NULL on OOM). */
struct cJSON;
struct cJSON *st_rate_json(const st_rate *r);

/* Compute the summary of n records (95% Wilson intervals). */
st_status st_eval_summarize(const st_eval_record *recs, size_t n, st_eval_summary *out);
void st_eval_summary_free(st_eval_summary *s);

/* Write responses.jsonl (atomic). */
st_status st_eval_write_responses(const char *path, const st_eval_record *recs, size_t n);
/* Write summary.json (atomic). settings_json: a JSON object text with the settings used (model,
 * prompt set, refusal mode, sampling, judge...), embedded as "settings"; NULL = {}. A settings
 * text that is not a JSON object is ST_ERR_ARG. */
st_status st_eval_write_summary(const char *path, const st_eval_summary *s, const char *settings_json);

/* Records read back from a responses JSONL file (strings owned by the set). */
typedef struct {
    st_eval_record *recs;
    size_t n;
} st_eval_set;

/* Read a responses JSONL file (ours, or any with "prompt" and "response" strings per line;
 * optional "id", "category", "label" = "safe"|"unsafe"). refused/matched/judge fields are not
 * read (recompute them). Errors name the file and line. */
st_status st_eval_read_responses(const char *path, st_eval_set *out);
void st_eval_set_free(st_eval_set *s);

#ifdef __cplusplus
}
#endif
#endif
