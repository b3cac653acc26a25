/* generate.h - batched generation with continuous batching over a KV cache.
 *
 * A fixed number of slots (batch_size) each hold one sequence. A slot prefills its prompt
 * (in chunks of at most max_step_tokens tokens per step), then all active slots decode one token
 * per step in ONE forward call (st_forward_infer: any mix of prefill and decode). A slot whose
 * sequence ends (stop id, max_new_tokens, or a full context) is refilled at once from the queue
 * of pending prompts. Each prompt i samples with its own RNG (st_sampler_seed_rng(seed, i)) and
 * its own cache slot, so results do not depend on batch size or on which prompts share a batch.
 * Prefix sharing: a slot whose prompt starts with tokens another slot already holds (a shared
 * system prompt, few-shot examples) copies those keys/values instead of recomputing them
 * (automatic prefix caching as in vLLM, Kwon et al., SOSP'23, restricted to live slots).
 * Design follows vLLM/Orca-style iteration-level scheduling (Yu et al., OSDI'22), simplified. */
#ifndef SAFETUNE_GENERATE_H
#define SAFETUNE_GENERATE_H

#include "safetune/model.h"
#include "safetune/sampler.h"

#include <signal.h>

typedef enum { ST_FINISH_STOP = 0, ST_FINISH_LENGTH = 1 } st_finish_reason;
/* "stop" | "length" (OpenAI finish_reason names). */
const char *st_finish_reason_name(st_finish_reason r);

/* Called after every forward step: prompts finished so far, total prompts, tokens generated. */
typedef void (*st_generate_progress_fn)(void *ud, size_t n_done, size_t n_total, size_t n_tokens);
/* Called for every generated token of prompt `prompt_idx` (stop tokens included), in order. */
typedef void (*st_generate_token_fn)(void *ud, size_t prompt_idx, int32_t token);
/* Called after every generated token with the ids so far; nonzero ends that prompt now with
 * finish "stop" (the last id is then not a stop id). Serves OpenAI's "stop" strings. */
typedef int (*st_generate_stop_fn)(void *ud, size_t prompt_idx, const int32_t *ids, size_t n_ids);
struct st_generation;
/* Called once a prompt's answer is complete (in finishing order; st_generate: text decoded and cut
 * at a stop text). A non-OK status ends the generation with it (e.g. the answer could not be saved). */
typedef st_status (*st_generate_finish_fn)(void *ud, size_t prompt_idx, const struct st_generation *g);

/* Matmul precision of generation (st_generate only; st_generate_ids leaves it to the backend). */
typedef enum {
    ST_GEN_PRECISION_DEFAULT = 0, /* st_matmul_get_precision() (fp32 unless set process-wide) */
    ST_GEN_PRECISION_FP32 = 1,
    ST_GEN_PRECISION_BF16 = 2     /* bf16 weights/activations, fp32 accumulation: faster */
} st_generate_precision;

typedef struct {
    int batch_size;          /* slots decoded together; default 32 */
    int max_new_tokens;      /* per prompt; default 256 */
    int context_length;      /* max prompt + generated tokens per sequence; 0 = the model's
                                max_position_embeddings (also the cap: a larger value warns and
                                uses it). Longer prompts are left-truncated to
                                context_length - 1 tokens (warning + counter). */
    int max_step_tokens;     /* prefill tokens per forward call (chunked prefill); default 2048 */
    st_sampler_params sampling;
    const int32_t *stop_ids; /* NULL: st_chat_stop_ids of the model's template, plus EOS */
    int n_stop_ids;
    const int32_t *extra_stop_ids; /* st_generate: also stop at these (--stop-id), beside stop_ids */
    int n_extra_stop_ids;
    const char *const *stop_texts; /* st_generate: end a reply once its decoded text (special tokens
                                      skipped) contains one; the text is cut before it (--stop) */
    int n_stop_texts;
    st_generate_progress_fn progress;
    st_generate_token_fn on_token;
    st_generate_stop_fn stop_check; /* NULL, or ends a prompt early (e.g. on a stop string) */
    void *ud;                /* passed to progress, on_token and stop_check */
    st_generate_precision precision; /* default ST_GEN_PRECISION_DEFAULT */
    int share_prefix;        /* 1 (default): reuse a live slot's cached common prompt prefix of
                                >= ST_GEN_MIN_SHARED_PREFIX tokens (needs backend copy_prefix) */
    st_generate_finish_fn on_finish; /* NULL, or told of each finished answer (with ud) */
    const uint64_t *rng_stream; /* NULL: prompt i samples with st_sampler_seed_rng(seed, i); else
                                   with stream rng_stream[i] (a resumed run generating only the
                                   prompts it lacks keeps each prompt's own stream) */
    const volatile sig_atomic_t *cancel; /* NULL, or set (from a signal-taking thread): generation
                                   ends after the current step with ST_ERR_INTERRUPTED; answers
                                   already finished went to on_finish */
    struct st_infer_ctx *infer; /* st_generate: the weights (+ adapter) to generate with and their
                                   reordered copies, kept across calls (forward.h); NULL: a
                                   context over the model's own weights made for this call */
} st_generate_options;

/* Shortest common prompt prefix worth copying between slots, in tokens. */
enum { ST_GEN_MIN_SHARED_PREFIX = 4 };

/* Defaults listed above (greedy sampling). */
st_generate_options st_generate_defaults(void);

typedef struct st_generation {
    int32_t *ids;            /* generated ids, ending with the stop id when finish == STOP
                                (unless stop_check ended it) */
    size_t n_ids;
    char *text;              /* decoded ids, special tokens skipped (NULL from st_generate_ids) */
    st_finish_reason finish;
    size_t prompt_tokens;    /* after truncation */
    size_t completion_tokens;/* == n_ids */
    int truncated;           /* 1 if the prompt was left-truncated */
} st_generation;

/* Free the arrays of out[0..n) (not out itself). */
void st_generations_free(st_generation *out, size_t n);

/* The inference seam: the scheduler only sees this (a model + KV cache, or a fake in tests).
 * infer has st_forward_infer's contract; clear empties one slot; copy_prefix (optional, NULL =
 * no prefix sharing) has st_kv_cache_copy_prefix's: dst's cache becomes src's first n positions. */
typedef struct {
    void *ctx;
    int n_vocab;
    int max_slots;           /* slots available: 0..max_slots-1 */
    int max_seq;             /* positions per slot */
    st_status (*infer)(void *ctx, const int *slots, const int32_t *const *tokens,
                       const int *n_tokens, int n_seqs, float *logits_last);
    void (*clear)(void *ctx, int slot);
    st_status (*copy_prefix)(void *ctx, int dst, int src, int n);
} st_infer_backend;

/* Generate for prompts[i][0..prompt_lens[i]) (i < n_prompts) on any backend; fills out[i]
 * (text = NULL) and *n_truncated (may be NULL). Uses min(batch_size, max_slots) slots and a
 * context of min(context_length, max_seq). ST_ERR_ARG for an empty prompt or bad options. */
st_status st_generate_ids(const st_infer_backend *be, const int32_t *const *prompts,
                          const size_t *prompt_lens, size_t n_prompts,
                          const st_generate_options *opt, st_generation *out, size_t *n_truncated);

/* The context (prompt + generated tokens) a sequence gets: the model's max_position_embeddings
 * (2048 when unknown), or requested when 0 < requested < that; a larger request warns and gets
 * the model's. Shared by st_generate and the safety eval. */
long st_generate_context_length(const st_model *m, int requested);

/* g->ids -> g->text as st_generate makes it: decoded with special tokens skipped, then cut before
 * the first of opt's stop_texts (finish becomes "stop"). Replaces g->text. For answers kept by an
 * interrupted run (ids saved, text rebuilt byte-identical). ST_ERR_NOMEM or a decode error. */
st_status st_generate_decode(const st_model *m, const st_generate_options *opt, st_generation *g);

/* Same on a loaded model: sizes a KV cache for the batch (only as long as the longest prompt +
 * max_new_tokens needs), fills default stop ids, and decodes each result's text. */
st_status st_generate(const st_model *m, const int32_t *const *prompts, const size_t *prompt_lens,
                      size_t n_prompts, const st_generate_options *opt, st_generation *out,
                      size_t *n_truncated);

/* Prompt text -> ids. chat: the model's chat template with [system (if non-NULL; otherwise the
 * template's default)], user = text, and the assistant header appended. Otherwise plain encoding
 * (special-token text parsed, BOS added where the tokenizer adds it). *ids: heap, caller frees. */
st_status st_prompt_encode(const st_model *m, const char *text, int chat, const char *system,
                           int32_t **ids, size_t *n);

#endif
