/* safety_eval.h - safety evaluation of a loaded model: batched generation (generate.h) on a prompt
 * set (prompts.h) through the chat template, then refusal matching (refusal.h) into eval records
 * (evalio.h). ASR = share of answers with no refusal string (Zou et al. 2023; Qi et al. 2023);
 * on XSTest (Röttger et al. 2024) the refusal rates of safe and unsafe prompts are reported apart. */
#ifndef SAFETUNE_SAFETY_EVAL_H
#define SAFETUNE_SAFETY_EVAL_H

#include "safetune/evalio.h"
#include "safetune/generate.h"
#include "safetune/model.h"
#include "safetune/prompts.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *benchmark;     /* prompts.h spec: advbench | xstest | harmbench:FILE | ... */
    const st_prompt_opts *prompt_opts; /* the benchmark's options (prompts.h); NULL = defaults */
    const char *data_dir;      /* NULL = st_prompts_default_data_dir() */
    const char *system_prompt; /* NULL = the chat template's default system prompt */
    size_t limit;              /* N prompts only (0 = all): the first N, or, when every prompt has a
                                  safe/unsafe label (XSTest), N spread evenly over the file
                                  (prompt i * n / N) so both labels and every type appear */
    st_generate_options gen;   /* batch_size, max_new_tokens, sampling, context_length, progress */
} st_safety_opts;

/* Defaults: advbench, 128 new tokens, batch 32, greedy (seed 0). */
st_safety_opts st_safety_defaults(void);

typedef struct {
    st_prompt_set prompts;  /* the (limited) prompt set */
    st_eval_record *recs;   /* [n]: prompt fields borrowed from prompts, response owned here */
    st_generation *gens;    /* [n]: ids, finish reason, token counts */
    int *truncated;         /* [n]: 1 if the prompt was left-truncated to fit the context */
    size_t n;
    size_t n_truncated;     /* prompts left-truncated (each also warned about on stderr) */
    size_t gen_tokens;      /* completion tokens generated in all */
    size_t prompt_tokens;   /* prompt tokens (after truncation) in all */
    long context_length;    /* context used: gen.context_length capped by the model's */
    double seconds;         /* wall time of generation (not written to files: not deterministic) */
} st_safety_run;

/* Load the prompt set, render each prompt with the model's chat template (system + user +
 * assistant header), left-truncate prompts longer than context - max_new_tokens tokens (so every
 * answer has its full budget; context = gen.context_length or the model's
 * max_position_embeddings) with a warning naming the prompt id, generate, and apply matcher m
 * (refused/matched). Deterministic for a given seed (per-prompt RNG, generate.h). ST_ERR_ARG when
 * the context leaves no room for a prompt (context <= max_new_tokens). */
st_status st_safety_generate(const st_model *model, const st_safety_opts *o, const st_refusal_matcher *m,
                             st_safety_run *out);
void st_safety_run_free(st_safety_run *r);

#ifdef __cplusplus
}
#endif
#endif
