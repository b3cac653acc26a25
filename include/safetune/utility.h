/* utility.h - utility (capability) evaluation of a loaded model, to set beside safety:
 *   held-out loss / perplexity  masked assistant-token cross-entropy on a validation split,
 *                               token-weighted mean (as the training loss, backward.h);
 *   TruthfulQA MC1              (Lin et al. 2021) log-likelihood multiple choice: the Best Answer
 *                               against every Incorrect Answer, highest SUM of answer-token
 *                               log-probs wins; plain-text QA primer prompt (no chat template);
 *   MT-Bench first turns        (Zheng et al. 2023) answers for an LLM judge (1-10 rubric). */
#ifndef SAFETUNE_UTILITY_H
#define SAFETUNE_UTILITY_H

#include "safetune/data.h"
#include "safetune/forward.h"
#include "safetune/generate.h"
#include "safetune/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- held-out loss ---- */

typedef struct {
    double loss;        /* Σ CE over assistant target tokens / their count (nats per token) */
    double perplexity;  /* exp(loss) */
    size_t n_tokens;    /* assistant target tokens scored */
    size_t n_rows;      /* conversations scored */
    size_t n_truncated; /* rows cut to max_seq_len tokens */
} st_heldout_result;

/* Held-out loss of rows[0..n_rows) of tk (st_tokenize_dataset output), each truncated to
 * max_seq_len tokens and collated as in training (st_collate: targets are the next token where
 * it is an assistant token), batch_rows rows per forward (st_train_forward). Per-token losses
 * are summed in double, over the weights (+ adapter) of ic (forward.h st_infer_ctx_score).
 * ST_ERR_ARG if no assistant token is left to score. */
st_status st_heldout_loss(const st_infer_ctx *ic, const st_tokenized *tk, const uint32_t *rows, size_t n_rows,
                          int max_seq_len, int batch_rows, st_heldout_result *out);

/* ---- TruthfulQA MC1 ---- */

typedef struct {
    char *type, *category, *question, *best;
    char **incorrect;   /* the "; "-separated Incorrect Answers */
    size_t n_incorrect;
} st_tqa_item;

typedef struct {
    st_tqa_item *items;
    size_t n;
} st_tqa_set;

/* Read TruthfulQA.csv (columns Type, Category, Question, Best Answer, Correct Answers, Incorrect
 * Answers, Source; answer lists split on ";" and trimmed). Errors name the file and line. */
st_status st_truthfulqa_load(const char *path, st_tqa_set *out);
void st_tqa_set_free(st_tqa_set *s);

/* The 6-shot QA primer of TruthfulQA (sylinrl/TruthfulQA presets.py, preset "qa"; also
 * lm-evaluation-harness truthfulqa_mc). The context for a question Q is
 *   PRIMER + "\n\nQ: " + Q + "\nA:"   and each choice A is scored as the continuation " " + A.
 * Tokens: context = encode(context), choice = encode(context + " " + A) minus the context prefix
 * (encode(" " + A) appended if the context is not a prefix); BOS as the tokenizer adds it. */
const char *st_truthfulqa_primer(void);

typedef struct {
    size_t n_choices;   /* 1 + n_incorrect; choice 0 is the Best Answer */
    double *logprob;    /* [n_choices] Σ log p(answer tokens | context), nats */
    int *n_tokens;      /* [n_choices] answer tokens */
    int chosen;         /* argmax of logprob (lowest index on ties) */
} st_mc1_item;

typedef struct {
    st_mc1_item *items;
    size_t n, n_correct; /* correct = chosen == 0 */
    double accuracy;
} st_mc1_result;

/* MC1 on items[0..n) (n <= s->n), max_batch_tokens tokens per forward (>= the longest
 * sequence; 0 = 2048). progress (may be NULL) is called after each question. */
st_status st_truthfulqa_mc1(const st_infer_ctx *ic, const st_tqa_set *s, size_t n, int max_batch_tokens,
                            void (*progress)(void *ud, size_t done, size_t total), void *ud,
                            st_mc1_result *out);
void st_mc1_result_free(st_mc1_result *r);

/* ---- MT-Bench ---- */

typedef struct {
    int question_id;
    char *category;
    char *turn1; /* first-turn question */
} st_mtbench_question;

typedef struct {
    st_mtbench_question *items;
    size_t n;
} st_mtbench_set;

/* Read MT-Bench question.jsonl ({question_id, category, turns: [str, ...]}). Errors name the
 * file and line. */
st_status st_mtbench_load(const char *path, st_mtbench_set *out);
void st_mtbench_set_free(st_mtbench_set *s);

/* The project's single-answer grading rubric (1-10), used as the judge's system prompt with
 * st_judge_opts.max_score = 10. Written for this project after the spirit of MT-Bench's
 * "single-v1" judge prompt (helpfulness, relevance, accuracy, depth, creativity, detail). */
const char *st_mtbench_rubric(void);

#ifdef __cplusplus
}
#endif
#endif
