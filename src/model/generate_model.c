/* generate_model.c - st_generate / st_prompt_encode: the scheduler (generate.c) on a loaded model
 * with a KV cache (forward.h), default stop ids from the chat template, text decoding. */
#include "safetune/forward.h"
#include "safetune/generate.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    st_infer_ctx *ic;
    st_kv_cache *c;
} model_backend;

static st_status mb_infer(void *ctx, const int *slots, const int32_t *const *tokens, const int *n_tokens,
                          int n_seqs, float *logits_last) {
    model_backend *b = ctx;
    return st_forward_infer(b->ic, b->c, slots, tokens, n_tokens, n_seqs, logits_last);
}

static void mb_clear(void *ctx, int slot) {
    model_backend *b = ctx;
    st_kv_cache_clear(b->c, slot);
}

static st_status mb_copy_prefix(void *ctx, int dst, int src, int n) {
    model_backend *b = ctx;
    return st_kv_cache_copy_prefix(b->c, dst, src, n);
}

/* Stop strings (opt->stop_texts) and finished answers (opt->on_finish): a wrapper around the
 * caller's callbacks and ud. */
typedef struct {
    const st_generate_options *user;
    const st_model *m;
    st_generation *out;
} text_stop;

static void ts_progress(void *ud, size_t d, size_t t, size_t n) {
    const text_stop *c = ud;
    c->user->progress(c->user->ud, d, t, n);
}

static void ts_token(void *ud, size_t i, int32_t tok) {
    const text_stop *c = ud;
    c->user->on_token(c->user->ud, i, tok);
}

/* First byte of the earliest stop string in text, or NULL. */
static char *find_stop(char *text, const char *const *stops, int n) {
    char *first = NULL;
    for (int k = 0; k < n; k++) {
        char *h = stops[k][0] ? strstr(text, stops[k]) : NULL;
        if (h && (!first || h < first)) first = h;
    }
    return first;
}

/* Decodes the whole reply each time (replies are short; a stop string may span tokens). */
static int ts_check(void *ud, size_t i, const int32_t *ids, size_t n) {
    const text_stop *c = ud;
    if (c->user->stop_check && c->user->stop_check(c->user->ud, i, ids, n)) return 1;
    if (c->user->n_stop_texts <= 0) return 0;
    char *text = NULL;
    size_t len = 0;
    if (st_tokenizer_decode(c->m->tokenizer, ids, n, 1, &text, &len) != ST_OK) return 0;
    int hit = find_stop(text, c->user->stop_texts, c->user->n_stop_texts) != NULL;
    free(text);
    return hit;
}

/* The answer's text now, then the caller's callback. */
static st_status ts_finish(void *ud, size_t i, const st_generation *g) {
    const text_stop *c = ud;
    (void)g; /* == &c->out[i], which gets its text */
    st_status s = st_generate_decode(c->m, c->user, &c->out[i]);
    return s ? s : c->user->on_finish(c->user->ud, i, &c->out[i]);
}

st_status st_generate_decode(const st_model *m, const st_generate_options *opt, st_generation *g) {
    free(g->text);
    g->text = NULL;
    size_t len;
    st_status st = st_tokenizer_decode(m->tokenizer, g->ids, g->n_ids, 1, &g->text, &len);
    if (st) return st;
    char *cut = opt->n_stop_texts > 0 ? find_stop(g->text, opt->stop_texts, opt->n_stop_texts) : NULL;
    if (cut) { /* the stop string and what follows it are not part of the reply */
        *cut = '\0';
        g->finish = ST_FINISH_STOP;
    }
    return ST_OK;
}

long st_generate_context_length(const st_model *m, int requested) {
    const long ctx = m->config.max_position_embeddings > 0 ? m->config.max_position_embeddings : 2048;
    if (requested > ctx)
        st_log_warn("context length %d is more than the model's max_position_embeddings (%ld); using %ld",
                    requested, ctx, ctx);
    return requested > 0 && requested < ctx ? requested : ctx;
}

st_status st_generate(const st_model *m, const int32_t *const *prompts, const size_t *prompt_lens,
                      size_t n_prompts, const st_generate_options *opt, st_generation *out,
                      size_t *n_truncated) {
    if (n_truncated) *n_truncated = 0;
    if (opt->batch_size <= 0) return st_error(ST_ERR_ARG, "batch_size must be > 0 (got %d)", opt->batch_size);
    if (opt->max_new_tokens <= 0)
        return st_error(ST_ERR_ARG, "max_new_tokens must be > 0 (got %d)", opt->max_new_tokens);
    if (n_prompts == 0) return ST_OK;

    /* context: the model's limit (or the option), but only as long as this batch needs */
    const long ctx = st_generate_context_length(m, opt->context_length);
    size_t need = 2;
    for (size_t i = 0; i < n_prompts; i++) {
        size_t l = prompt_lens[i] < (size_t)ctx - 1 ? prompt_lens[i] : (size_t)ctx - 1;
        if (l + (size_t)opt->max_new_tokens > need) need = l + (size_t)opt->max_new_tokens;
    }
    int max_seq = need < (size_t)ctx ? (int)need : (int)ctx;
    int slots = opt->batch_size < (long)n_prompts ? opt->batch_size : (int)n_prompts;

    st_generate_options o = *opt;
    o.context_length = (int)ctx;
    int32_t stops[16], *all = NULL;
    if (!o.stop_ids) {
        int ns = st_chat_stop_ids(&m->chat, m->tokenizer, stops, 15);
        int32_t eos = st_tokenizer_eos_id(m->tokenizer);
        int have = 0;
        for (int i = 0; i < ns; i++) have |= stops[i] == eos;
        if (eos >= 0 && !have) stops[ns++] = eos;
        o.stop_ids = stops;
        o.n_stop_ids = ns;
    }
    if (o.n_extra_stop_ids > 0) {
        const int32_t nv = st_tokenizer_vocab_size(m->tokenizer);
        for (int i = 0; i < o.n_extra_stop_ids; i++)
            if (o.extra_stop_ids[i] < 0 || (nv > 0 && o.extra_stop_ids[i] >= nv))
                return st_error(ST_ERR_ARG, "stop id %d is outside the vocabulary [0, %d)", o.extra_stop_ids[i], nv);
        all = malloc((size_t)(o.n_stop_ids + o.n_extra_stop_ids) * sizeof *all);
        if (!all) return st_error(ST_ERR_NOMEM, "generate: out of memory");
        memcpy(all, o.stop_ids, (size_t)o.n_stop_ids * sizeof *all);
        memcpy(all + o.n_stop_ids, o.extra_stop_ids, (size_t)o.n_extra_stop_ids * sizeof *all);
        o.stop_ids = all;
        o.n_stop_ids += o.n_extra_stop_ids;
    }
    text_stop tsc = {opt, m, out};
    if (o.n_stop_texts > 0 || o.on_finish) {
        o.stop_check = o.n_stop_texts > 0 || opt->stop_check ? ts_check : NULL;
        o.progress = opt->progress ? ts_progress : NULL;
        o.on_token = opt->on_token ? ts_token : NULL;
        o.on_finish = opt->on_finish ? ts_finish : NULL;
        o.ud = &tsc;
    }

    /* the caller's inference context (its weight copies outlive this call), else one for m */
    model_backend mb = {opt->infer, NULL};
    if (mb.ic && st_infer_ctx_model(mb.ic) != m) {
        free(all);
        return st_error(ST_ERR_ARG, "generate: the inference context (options.infer) was made for another model");
    }
    st_status st = mb.ic ? ST_OK : st_infer_ctx_new(m, NULL, NULL, NULL, &mb.ic);
    if (!st) st = st_kv_cache_new(&m->config, slots, max_seq, &mb.c);
    if (st) {
        if (mb.ic != opt->infer) st_infer_ctx_free(mb.ic);
        free(all);
        return st;
    }
    if (opt->precision == ST_GEN_PRECISION_FP32) st_kv_cache_set_precision(mb.c, ST_MATMUL_F32);
    if (opt->precision == ST_GEN_PRECISION_BF16) st_kv_cache_set_precision(mb.c, ST_MATMUL_BF16);
    st_infer_backend be = {&mb, m->config.vocab_size, slots, max_seq, mb_infer, mb_clear,
                          mb_copy_prefix};
    st = st_generate_ids(&be, prompts, prompt_lens, n_prompts, &o, out, n_truncated);
    st_kv_cache_free(mb.c);
    if (mb.ic != opt->infer) st_infer_ctx_free(mb.ic);
    free(all);
    if (st) return st;
    for (size_t i = 0; i < n_prompts; i++) {
        if (out[i].text) continue; /* decoded when it finished (on_finish) */
        if ((st = st_generate_decode(m, &o, &out[i]))) {
            st_generations_free(out, n_prompts);
            return st;
        }
    }
    return ST_OK;
}

st_status st_prompt_encode(const st_model *m, const char *text, int chat, const char *system,
                           int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!chat) return st_tokenizer_encode(m->tokenizer, text, strlen(text), 1, 1, ids, n);
    st_chat_message msgs[2];
    size_t k = 0;
    if (system) msgs[k++] = (st_chat_message){"system", system};
    msgs[k++] = (st_chat_message){"user", text};
    return st_chat_render(&m->chat, m->tokenizer, msgs, k, 1, ids, NULL, n);
}
