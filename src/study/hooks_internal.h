/* hooks_internal.h - helpers of the real study hooks and `safetune align` (src/study/hooks_*.c,
 * align.c); not public API. */
#ifndef SAFETUNE_STUDY_HOOKS_INTERNAL_H
#define SAFETUNE_STUDY_HOOKS_INTERNAL_H

#include "safetune/data.h"
#include "safetune/forward.h"
#include "safetune/model.h"
#include "safetune/prompts.h"
#include "safetune/refusal.h"
#include "safetune/study.h"
#include "safetune/trainer.h"

/* Greedy generation (chat template, default system prompt) with the weights (+ adapter) of
 * inference context ic (forward.h; its model's tokenizer) of max_new tokens for prompts[0..n),
 * batch slots at once, in bf16 matmuls (bf16 = 1) or fp32 whatever the trainer holds, then the refusal rule of refusal.h: refused[i] = 1 if answer i refused.
 * texts (may be NULL): texts[i] = answer i (heap; the caller frees each). *gen_tokens (may be
 * NULL) = completion tokens generated. */
st_status stx_refusals(st_infer_ctx *ic, const char *const *prompts, size_t n, int max_new, int batch, int bf16,
                       const st_refusal_matcher *rm, int *refused, char **texts, size_t *gen_tokens);

/* The AdvBench prompts used by a study: the half cfg->eval.advbench_split of
 * st_study_advbench_split (or all rows), in row order. Evaluation = the first advbench_limit
 * (0 = all); probe = the LAST probe.n_prompts of the same half (disjoint from the evaluation
 * prompts when advbench_limit + n_prompts <= half size). Pointers borrow from *set. */
st_status stx_advbench_prompts(const st_study_config *c, st_prompt_set *set, const char ***eval_p,
                               size_t *n_eval, const char ***probe_p, size_t *n_probe);

/* XSTest subset: the half `half` ("a" | "b" of st_study_xstest_split(split_seed); NULL or "all" =
 * all 450 rows), then limit = 0 -> all of it, else `limit` evenly spaced rows of it (index
 * i*size/limit, in row order), so both safe and unsafe prompts are present. Pointers borrow from
 * *set; labels[i] copied. */
st_status stx_xstest_prompts(const char *data_dir, const char *half, uint64_t split_seed, int limit, st_prompt_set *set,
                             const char ***p, st_prompt_label **labels, size_t *n);

/* Load dataset d of the study (first `limit` rows) and tokenize it with m's chat template. */
st_status stx_load_tokenized(const st_study_dataset *d, const st_model *m, int max_seq_len, st_tokenized *tk);

/* Test seam (unit tests only; NULL in the program): when set, the real train hook calls it with each
 * run's trainer settings just before the trainer is made, so a test can check what a run trains
 * on (tc->align_data: the D_align rows Lisa, SafeGrad and EWC get, or NULL). m: the study's model
 * (its tokenizer decodes the rows). */
typedef void (*st__study_train_observer_fn)(void *user, const st_study_run *r, const st_train_config *tc,
                                            const st_model *m);
extern st__study_train_observer_fn st__study_train_observer;
extern void *st__study_train_observer_user;

#endif
