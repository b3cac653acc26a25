/* data.h - training datasets as chat conversations, deterministic ordering, and collation.
 *
 * Readers (one row -> one conversation of {role, content} messages; roles system|user|assistant):
 *   alpaca   JSON array (or JSONL) of {instruction, input?, output}: user = instruction, plus
 *            "\n\n" + input when input is non-empty; assistant = output (tatsu-lab/stanford_alpaca).
 *   dolly    JSONL {instruction, context?, response}: user = instruction (+ "\n\n" + context when
 *            non-empty), assistant = response (databricks-dolly-15k).
 *   orca     JSONL rows in any of: {system_prompt?, question, response} (OpenOrca/SlimOrca);
 *            {conversations: [{from: system|human|gpt, value}]} (ShareGPT);
 *            {input: {messages: [...]}, preferred_output: [{role: assistant, ...}]} (OpenAI
 *            preference format, e.g. orca_dpo_pairs: SFT uses input messages + preferred output).
 *   messages JSONL {messages: [{role, content}]} (OpenAI chat fine-tuning format).
 * A bad row is an error naming the file and the line (JSONL) or the array item and its byte
 * offset (JSON array), and what is wrong. Every conversation has at least one assistant message.
 *
 * Ordering: a deterministic validation split, then a sampler that reshuffles per epoch as a pure
 * function of (seed, epoch) and gives rank r of `world` every world-th item of the epoch order.
 * Collation: conversations -> token ids + assistant mask (chat.h) -> [B, T] micro-batches. */
#ifndef SAFETUNE_DATA_H
#define SAFETUNE_DATA_H

#include "safetune/base.h"
#include "safetune/chat.h"

typedef enum {
    ST_DATA_AUTO = 0,      /* from the first row's keys */
    ST_DATA_ALPACA = 1,
    ST_DATA_DOLLY = 2,
    ST_DATA_ORCA = 3,
    ST_DATA_MESSAGES = 4
} st_data_format;

typedef struct {
    st_chat_message *msgs; /* role: static string; content: heap, owned by the dataset */
    size_t n_msgs;
} st_conversation;

typedef struct {
    st_conversation *rows;
    size_t n;
    st_data_format format; /* the format actually read (never AUTO) */
    char *path;
} st_dataset;

/* "auto" | "alpaca" | "dolly" | "orca" | "messages" -> format; ST_ERR_ARG otherwise. */
st_status st_data_format_parse(const char *name, st_data_format *out);
const char *st_data_format_name(st_data_format f);
/* Read a whole dataset file (JSON array or JSONL; UTF-8, optional BOM, blank lines skipped).
 * Errors: ST_ERR_IO (cannot read), ST_ERR_FORMAT (bad row / empty dataset; message names the
 * file and line or item+byte). Nothing is returned on error. Free with st_dataset_free. */
st_status st_dataset_load(const char *path, st_data_format fmt, st_dataset *out);
void st_dataset_free(st_dataset *ds);
/* Keep the first n rows (no-op when n == 0 or n >= ds->n), freeing the rest: --max-rows. */
void st_dataset_truncate(st_dataset *ds, size_t n);

/* ---- splitting and ordering ---- */

typedef struct {
    uint32_t *train; size_t n_train; /* row indices, ascending */
    uint32_t *val; size_t n_val;     /* row indices, ascending, disjoint from train */
} st_data_split;

/* Split rows 0..n-1: n_val = val_count if > 0, else ceil(val_fraction * n) (as HF datasets
 * train_test_split); the val rows are the first n_val of a permutation seeded by `seed`.
 * ST_ERR_ARG if val_fraction is outside [0, 1) or no training rows would remain. */
st_status st_data_split_make(size_t n, double val_fraction, size_t val_count, uint64_t seed,
                             st_data_split *out);
void st_data_split_free(st_data_split *s);

typedef struct {
    uint32_t *items; size_t n_items; /* pool (owned copy), e.g. the train split */
    uint64_t seed;
    int shuffle;                     /* 0: epoch order = pool order */
    int rank, world;                 /* data-parallel shard: rank r takes order[r::world] */
    int64_t epoch;                   /* current epoch (0-based) */
    size_t pos;                      /* next position in this epoch's shard */
    uint32_t *shard; size_t n_shard; /* this rank's items for the current epoch */
    uint32_t *order;                 /* [n_items] scratch: the whole epoch order */
} st_data_sampler;

/* Epoch e's order is a Fisher-Yates shuffle (st_rng seeded with seed + e * 0x9E3779B97F4A7C15)
 * of the pool, so resuming needs only (epoch, pos). Ranks get ceil or floor of n / world items.
 * ST_ERR_ARG if world < 1, rank outside [0, world) or a rank would get no items. */
st_status st_data_sampler_init(st_data_sampler *s, const uint32_t *items, size_t n, uint64_t seed,
                          int shuffle, int rank, int world);
void st_data_sampler_free(st_data_sampler *s);
/* Next item of this rank; at the end of the shard moves to the next epoch (reshuffled). */
uint32_t st_data_sampler_next(st_data_sampler *s);
/* Jump to (epoch, pos) (resume); ST_ERR_ARG if pos > shard length. */
st_status st_data_sampler_seek(st_data_sampler *s, int64_t epoch, size_t pos);

/* ---- tokenization and collation ---- */

/* Renders one conversation to ids + per-token training mask (1 = assistant token), heap arrays
 * of length *n. st_tokenize_dataset uses st_chat_render; tests may pass their own. */
typedef st_status (*st_render_fn)(void *ctx, const st_chat_message *msgs, size_t n_msgs,
                                  int32_t **ids, uint8_t **mask, size_t *n);

typedef struct {
    int32_t *ids;      /* all rows concatenated */
    uint8_t *mask;     /* same length: 1 where the token is an assistant token */
    size_t *offsets;   /* [n + 1]: row i is ids[offsets[i] .. offsets[i+1]) */
    size_t n;
} st_tokenized;

/* Render every row with `render`. Errors name the dataset row. Free with st_tokenized_free. */
st_status st_tokenize_dataset_with(const st_dataset *ds, st_render_fn render, void *ctx,
                                   st_tokenized *out);
/* Render every row with st_chat_render(tpl, tok, ..., add_generation_prompt = 0). */
st_status st_tokenize_dataset(const st_dataset *ds, const st_chat_template *tpl,
                              const st_tokenizer *tok, st_tokenized *out);
/* The rows a training run trains on and splits: the first max_rows rows of ds (0 = all; the
 * others are freed), rendered as st_tokenize_dataset, minus the rows with no trained target
 * within max_seq_len (st_tokenized_drop_untrained). *n_dropped: rows dropped; file_rows (NULL
 * ok): malloc'd [out->n] row in ds of each kept row. ST_ERR_ARG naming ds->path when no row is
 * left. Shared by `safetune train`, `eval utility` and the study. */
st_status st_tokenize_training_rows(st_dataset *ds, size_t max_rows, const st_chat_template *tpl,
                                    const st_tokenizer *tok, int max_seq_len, st_tokenized *out,
                                    size_t *n_dropped, size_t **file_rows);
void st_tokenized_free(st_tokenized *t);
/* Remove, in place, the rows with no trained target once truncated to max_seq_len tokens (no
 * assistant token at positions 1..min(len, max_seq_len) - 1, as st_collate counts them); keeps
 * the order. *n_dropped: rows removed. kept (NULL ok; room for t->n): the former index of each
 * row kept. Such rows would give a window 0 targets. */
void st_tokenized_drop_untrained(st_tokenized *t, int max_seq_len, size_t *n_dropped, size_t *kept);

typedef struct {
    int B;             /* rows in this micro-batch */
    int T;             /* columns used: max row length (or max_seq_len when pad_to_max) */
    int cap_B, cap_T;  /* allocated capacity */
    int32_t *inputs;   /* [B, T] token ids; pad_id after a row's end */
    int32_t *targets;  /* [B, T] next token ids[t + 1]; -1 where not trained (ignore index) */
    float *loss_mask;  /* [B, T] 1 where targets[b, t] is an assistant token, else 0 */
    int32_t *lengths;  /* [B] tokens per row after truncation */
    int64_t n_targets; /* sum of loss_mask: normalise the summed loss of a whole gradient-
                        * accumulation window by the sum of n_targets over its micro-batches */
} st_batch;

/* Allocate a batch of capacity [cap_B, cap_T]. */
st_status st_batch_init(st_batch *b, int cap_B, int cap_T);
void st_batch_free(st_batch *b);
/* Fill b with rows[0..n_rows) of tk. Each row is truncated to max_seq_len tokens (HF
 * truncation of input_ids); inputs[t] = ids[t], targets[t] = ids[t + 1] for t < len - 1 when
 * mask[t + 1] is set (so the model's position t predicts token t + 1, as HF's shifted labels),
 * right-padded with pad_id / -1 / 0 (right padding needs no attention mask under causal
 * attention). ST_ERR_ARG if n_rows > cap_B or max_seq_len > cap_T. */
st_status st_collate(const st_tokenized *tk, const uint32_t *rows, int n_rows, int max_seq_len,
                     int32_t pad_id, int pad_to_max, st_batch *b);

#endif
