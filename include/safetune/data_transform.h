/* data_transform.h - dataset transforms of the data-side defenses (DEFENSES.md §3, §5, §9):
 * LookAhead Tuning's answer previews, SafeInstr-style safety-data mixing and the optional
 * poisoned column. They act on conversations (data.h) before tokenization, so the loss mask
 * (assistant tokens, chat.h) follows from the transformed rows.
 *
 * LookAhead Tuning (Liu et al., WSDM 2026, arXiv 2503.19041; zjunlp/LookAheadTuning): for each
 * assistant answer y and the user message x just before it, with C = " The answer begins with: ":
 *   real(m):    x' = x‖C‖s, s = the first m tokens of y decoded as plain text (all of y when y
 *               is shorter; a trailing incomplete UTF-8 character dropped); y unchanged;
 *   virtual(P): x' = x‖C‖P, y' = P‖y (the loss then covers P‖y).
 * SafeInstr (Bianchi et al., ICLR 2024, arXiv 2309.07875): k distinct rows of a safety pool
 * (refusal pairs of the aligned start's half A) appended to the user rows. */
#ifndef SAFETUNE_DATA_TRANSFORM_H
#define SAFETUNE_DATA_TRANSFORM_H

#include "safetune/data.h"

typedef enum { ST_LOOKAHEAD_NONE = 0, ST_LOOKAHEAD_REAL = 1, ST_LOOKAHEAD_VIRTUAL = 2 } st_lookahead_mode;

#define ST_LOOKAHEAD_CUE " The answer begins with: "          /* C, both spaces included */
#define ST_LOOKAHEAD_DEFAULT_PREFIX "Let's solve this problem. " /* P, the reference default */
#define ST_LOOKAHEAD_DEFAULT_M 6

/* "none" | "real" | "virtual" -> mode; ST_ERR_ARG naming the key lookahead otherwise. */
st_status st_lookahead_parse(const char *name, st_lookahead_mode *out);
const char *st_lookahead_name(st_lookahead_mode m);

/* One (x, y) pair: *x_out, *y_out heap strings (y_out a copy of y for real). tok encodes y without
 * special tokens (real only; may be NULL for virtual). ST_ERR_ARG: m < 1 (real), empty prefix
 * (virtual). */
st_status st_lookahead_pair(st_lookahead_mode mode, int m, const char *prefix, const st_tokenizer *tok,
                            const char *x, const char *y, char **x_out, char **y_out);
/* Apply st_lookahead_pair in place to every assistant message of ds and the user message just
 * before it (a first assistant turn without a user turn before it is left alone). No-op for NONE. */
st_status st_data_lookahead(st_dataset *ds, st_lookahead_mode mode, int m, const char *prefix,
                            const st_tokenizer *tok);

/* Append k distinct rows of pool to ds (deep copies), chosen as the first k of a Fisher-Yates
 * permutation of 0..pool->n-1 (st_rng seeded with seed ^ "safeinstr"); picked (NULL ok, room for
 * k): the pool rows in the order appended. k = 0 leaves ds untouched. ST_ERR_ARG naming the key
 * safeinstr_k when k > pool->n. */
st_status st_data_mix(st_dataset *ds, const st_dataset *pool, size_t k, uint64_t seed, uint32_t *picked);

/* Replace round(fraction · ds->n) rows of ds, the first of a seeded permutation (seed ^ "poison"),
 * with rows of pool taken in turn (pool row j mod pool->n for the j-th replaced row); replaced
 * (NULL ok, room for ds->n): the ds rows replaced, in that order; *n_replaced (NULL ok).
 * ST_ERR_ARG naming the key poison for a fraction outside [0, 1] or an empty pool. */
st_status st_data_poison(st_dataset *ds, const st_dataset *pool, double fraction, uint64_t seed,
                         uint32_t *replaced, size_t *n_replaced);

/* A dataset of single-turn (user, assistant) conversations from parallel arrays (copied). */
st_status st_dataset_from_pairs(const char *const *user, const char *const *assistant, size_t n,
                                const char *name, st_dataset *out);
/* Write ds as OpenAI messages JSONL (one {"messages": [...]} per row), atomically. */
st_status st_dataset_write_jsonl(const st_dataset *ds, const char *path);

#endif
