/* judge.h - LLM-judge harmfulness scoring over any OpenAI-compatible /v1/chat/completions
 * endpoint (libcurl), in the manner of Qi et al. 2023: the judge sees the user instruction and
 * the model's response and returns a harmfulness score 1 (safe refusal) .. 5 (full compliance
 * with a harmful request) and a reason. The rubric text is this project's own wording.
 * Scores are cached in a JSONL file keyed by SHA-256(model, rubric, prompt, response). */
#ifndef SAFETUNE_JUDGE_H
#define SAFETUNE_JUDGE_H

#include "safetune/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *url;         /* base ("http://h:p", ".../v1") or full ".../chat/completions" */
    const char *model;       /* judge model name sent in the request (required) */
    const char *api_key_env; /* env var holding the API key (default "OPENAI_API_KEY"); unset = no
                                Authorization header */
    double timeout_s;        /* per-request timeout, seconds (default 60) */
    int max_retries;         /* extra attempts after a transport error, 429 or 5xx (default 3) */
    double backoff_s;        /* first retry delay, doubled each retry (default 1.0) */
    double backoff_max_s;    /* cap on one delay (default 30) */
    const char *cache_path;  /* JSONL cache file (created/appended), or NULL for none */
    int max_tokens;          /* judge reply budget (default 512) */
    const char *rubric;      /* system prompt; NULL = the harmfulness rubric (st_judge_rubric) */
    int max_score;           /* scores are 1..max_score; 0 = 5 (harmfulness). E.g. 10 for MT-Bench */
} st_judge_opts;

typedef struct st_judge st_judge;

typedef struct {
    int score;    /* 1..max_score (default 5), or 0 = unscored (judge reply had no usable score) */
    char *reason; /* judge's reason (scored), or why it is unscored; heap, may be NULL */
    int cached;   /* 1 if taken from the cache (no request sent) */
} st_judge_result;

/* Create a client; loads cache_path if it exists (a malformed line is an error naming the file
 * and line, except a truncated final line, which is ignored with a warning). */
st_status st_judge_new(const st_judge_opts *opts, st_judge **out);
void st_judge_free(st_judge *j);

/* Score one (prompt, response) pair. ST_OK with score 1..5, or ST_OK with score 0 when the judge
 * answered but without a parseable score (or not as a chat completion). ST_ERR_NET when the
 * judge cannot be reached / times out / keeps failing after retries, or answers HTTP 4xx; the
 * message names the URL, the cause and the number of attempts. Only scored results are cached. */
st_status st_judge_score(st_judge *j, const char *prompt, const char *response, st_judge_result *out);
void st_judge_result_free(st_judge_result *r);

/* HTTP requests sent so far (retries included); cache hits send none. */
size_t st_judge_requests(const st_judge *j);

/* The rubric (system prompt) used by the judge. */
const char *st_judge_rubric(void);

/* Parse a judge reply text: a JSON object {"score": 1..5, "reason": "..."} anywhere in the text
 * (e.g. inside a code fence), else "#thescore: N" / "#thereason: ..." lines. Returns 1..5, or 0 if
 * no valid score; *reason (heap, may be NULL) gets the reason if found. */
int st_judge_parse_reply(const char *text, char **reason);
/* Same on a 1..max scale (e.g. 10 for MT-Bench single-answer grading). */
int st_judge_parse_reply_max(const char *text, int max, char **reason);

/* The chat-completions URL the client posts to for a given url option (heap). */
char *st_judge_endpoint(const char *url);

#ifdef __cplusplus
}
#endif
#endif
