/* sampler.h - next-token selection from logits: greedy, temperature, top-k, top-p (nucleus).
 * Semantics follow Hugging Face transformers' logits warpers, applied in HF's order:
 * temperature, then top-k, then top-p (keep the smallest most-probable set whose cumulative
 * probability is >= p; always at least one token). Randomness comes from a caller-owned st_rng
 * (one per sequence), so a sequence's samples never depend on the batch it is in. */
#ifndef SAFETUNE_SAMPLER_H
#define SAFETUNE_SAMPLER_H

#include "safetune/base.h"

typedef struct {
    float temperature; /* <= 0: greedy (argmax). Default 0. */
    int top_k;         /* <= 0: disabled. */
    float top_p;       /* >= 1: disabled. Must be > 0. */
    uint64_t seed;     /* base seed; sequence i uses st_sampler_seed_rng(seed, i) */
} st_sampler_params;

/* Defaults: greedy, top_k 0, top_p 1, seed 0. */
st_sampler_params st_sampler_defaults(void);
/* ST_ERR_ARG (naming the option) unless temperature is finite and >= 0, top_k >= 0 and
 * 0 < top_p <= 1. */
st_status st_sampler_params_check(const st_sampler_params *p);
/* Whether p selects greedily (temperature <= 0 or top_k == 1). */
int st_sampler_is_greedy(const st_sampler_params *p);

/* Per-sequence RNG derived from (seed, sequence id) with splitmix64-style mixing. */
void st_sampler_seed_rng(st_rng *r, uint64_t seed, uint64_t seq_id);

/* Index of the largest of logits[0..n); the lowest index wins ties; NaNs are ignored
 * (returns 0 if all are NaN). */
int32_t st_argmax(const float *logits, int n);

/* Scratch space for sampling over a vocabulary of n_vocab (one per thread). */
typedef struct st_sampler st_sampler;
st_status st_sampler_new(const st_sampler_params *p, int n_vocab, st_sampler **out);
void st_sampler_free(st_sampler *s);

/* Choose the next token from logits [n_vocab] (not modified). Greedy params never touch rng.
 * Sampling draws exactly one st_rng_double from rng per call. */
int32_t st_sampler_sample(st_sampler *s, const float *logits, st_rng *rng);

/* The normalised distribution st_sampler_sample draws from, written to probs [n_vocab]
 * (zeros outside the kept set). For tests and inspection. */
st_status st_sampler_probs(st_sampler *s, const float *logits, float *probs);

#endif
