/* generate.c - continuous-batching scheduler over an st_infer_backend (see generate.h).
 * The model-backed entry points (st_generate, st_prompt_encode) are in generate_model.c so that
 * this file links without the model (tests drive it with a fake backend). */
#include "safetune/generate.h"

#include <stdlib.h>
#include <string.h>

const char *st_finish_reason_name(st_finish_reason r) { return r == ST_FINISH_STOP ? "stop" : "length"; }

st_generate_options st_generate_defaults(void) {
    st_generate_options o;
    memset(&o, 0, sizeof o);
    o.batch_size = 32;
    o.max_new_tokens = 256;
    o.context_length = 0;
    o.max_step_tokens = 2048;
    o.sampling = st_sampler_defaults();
    o.share_prefix = 1;
    return o;
}

void st_generations_free(st_generation *out, size_t n) {
    if (!out) return;
    for (size_t i = 0; i < n; i++) {
        free(out[i].ids);
        free(out[i].text);
        out[i].ids = NULL;
        out[i].text = NULL;
    }
}

typedef struct {
    long prompt;        /* index into prompts, -1 = free */
    const int32_t *p;   /* prompt start after truncation */
    size_t plen;        /* prompt length after truncation */
    size_t fed;         /* prompt tokens already in the cache */
    int32_t last;       /* last sampled token (fed on the next decode step) */
    size_t cap;         /* capacity of out->ids */
    st_rng rng;
    st_sampler *sampler;
} slot_state;

static int is_stop(const st_generate_options *o, int32_t t) {
    for (int i = 0; i < o->n_stop_ids; i++)
        if (o->stop_ids[i] == t) return 1;
    return 0;
}

static st_status push_id(st_generation *g, slot_state *s, int32_t t) {
    if (g->n_ids == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 64;
        int32_t *nid = st_realloc(g->ids, nc * sizeof *nid);
        if (!nid) return ST_ERR_NOMEM;
        g->ids = nid;
        s->cap = nc;
    }
    g->ids[g->n_ids++] = t;
    g->completion_tokens = g->n_ids;
    return ST_OK;
}

/* Length of the common prefix of a[0..na) and b[0..nb). */
static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Slot k is about to prefill its prompt from position 0: copy the longest prefix (at least
 * ST_GEN_MIN_SHARED_PREFIX tokens, at most plen - 1 so one token still yields logits) that a live
 * slot already has in its cache. *wait = 1 when a slot already in this call (in_call) is computing
 * a longer common prefix right now: k then starts next step and copies it (only slots already in
 * the call are waited for, so the call is never empty and waiting always ends). */
static st_status take_shared_prefix(const st_infer_backend *be, slot_state *S, int nslots, int k,
                                    const unsigned char *in_call, int *wait) {
    slot_state *s = &S[k];
    size_t best = 0, pending = 0;
    int donor = -1;
    *wait = 0;
    for (int d = 0; d < nslots; d++) {
        if (d == k || S[d].prompt < 0) continue;
        const size_t l = common_prefix(s->p, s->plen - 1, S[d].p, S[d].plen);
        if (l < ST_GEN_MIN_SHARED_PREFIX) continue;
        const size_t have = l < S[d].fed ? l : S[d].fed; /* prompt positions in d's cache */
        if (have > best) {
            best = have;
            donor = d;
        }
        if (in_call[d] && l > have && l > pending) pending = l;
    }
    if (pending > best) {
        *wait = 1;
        return ST_OK;
    }
    if (best < ST_GEN_MIN_SHARED_PREFIX) return ST_OK;
    st_status st = be->copy_prefix(be->ctx, k, donor, (int)best);
    if (!st) s->fed = best;
    return st;
}

st_status st_generate_ids(const st_infer_backend *be, const int32_t *const *prompts,
                          const size_t *prompt_lens, size_t n_prompts,
                          const st_generate_options *opt, st_generation *out, size_t *n_truncated) {
    if (n_truncated) *n_truncated = 0;
    if (opt->batch_size <= 0) return st_error(ST_ERR_ARG, "batch_size must be > 0 (got %d)", opt->batch_size);
    if (opt->max_new_tokens <= 0)
        return st_error(ST_ERR_ARG, "max_new_tokens must be > 0 (got %d)", opt->max_new_tokens);
    if (opt->context_length < 0)
        return st_error(ST_ERR_ARG, "context_length must be >= 0 (got %d)", opt->context_length);
    st_status st = st_sampler_params_check(&opt->sampling);
    if (st) return st;
    if (be->max_slots <= 0 || be->max_seq < 2 || be->n_vocab <= 0)
        return st_error(ST_ERR_ARG, "generate: backend has no room (%d slots x %d positions)",
                        be->max_slots, be->max_seq);
    for (size_t i = 0; i < n_prompts; i++)
        if (prompt_lens[i] == 0)
            return st_error(ST_ERR_ARG, "prompt %zu is empty (it needs at least one token)", i + 1);
    memset(out, 0, n_prompts * sizeof *out);
    if (n_prompts == 0) return ST_OK;

    const int ctx = (opt->context_length > 0 && opt->context_length < be->max_seq) ? opt->context_length
                                                                                   : be->max_seq;
    int nslots = opt->batch_size < be->max_slots ? opt->batch_size : be->max_slots;
    if ((size_t)nslots > n_prompts) nslots = (int)n_prompts;
    const int budget = opt->max_step_tokens > 0 ? opt->max_step_tokens : 2048;
    const int V = be->n_vocab;

    slot_state *S = st_calloc((size_t)nslots, sizeof *S);
    float *logits = st_malloc((size_t)nslots * (size_t)V * sizeof(float));
    int *call_slots = st_malloc((size_t)nslots * sizeof(int));
    int *call_n = st_malloc((size_t)nslots * sizeof(int));
    int *call_owner = st_malloc((size_t)nslots * sizeof(int)); /* index into S */
    const int32_t **call_tok = st_malloc((size_t)nslots * sizeof(*call_tok));
    unsigned char *in_call = st_malloc((size_t)nslots);
    const int share = opt->share_prefix && be->copy_prefix;
    if (!S || !logits || !call_slots || !call_n || !call_owner || !call_tok || !in_call) {
        st = ST_ERR_NOMEM;
        goto done;
    }
    for (int k = 0; k < nslots; k++) {
        S[k].prompt = -1;
        if ((st = st_sampler_new(&opt->sampling, V, &S[k].sampler))) goto done;
    }

    size_t next = 0, n_done = 0, n_tokens = 0, n_trunc = 0;
    for (;;) {
        /* refill free slots from the queue (continuous batching) */
        for (int k = 0; k < nslots && next < n_prompts; k++) {
            if (S[k].prompt >= 0) continue;
            size_t i = next++;
            slot_state *s = &S[k];
            s->prompt = (long)i;
            s->p = prompts[i];
            s->plen = prompt_lens[i];
            if (s->plen > (size_t)ctx - 1) {
                st_log_warn("prompt %zu (0-based) has %zu tokens, more than the context allows (%d): "
                            "keeping its last %d tokens", i, s->plen, ctx, ctx - 1);
                s->p += s->plen - (size_t)(ctx - 1);
                s->plen = (size_t)(ctx - 1);
                out[i].truncated = 1;
                n_trunc++;
            }
            s->fed = 0;
            s->cap = 0;
            out[i].prompt_tokens = s->plen;
            st_sampler_seed_rng(&s->rng, opt->sampling.seed, opt->rng_stream ? opt->rng_stream[i] : (uint64_t)i);
            be->clear(be->ctx, k);
        }
        /* build one forward call: every decoding slot + prefill chunks within the budget */
        int n = 0, used = 0;
        memset(in_call, 0, (size_t)nslots);
        for (int k = 0; k < nslots; k++) {
            slot_state *s = &S[k];
            if (s->prompt < 0 || s->fed < s->plen) continue;
            call_slots[n] = k;
            call_owner[n] = k;
            call_tok[n] = &s->last;
            call_n[n] = 1;
            n++;
            used++;
        }
        for (int k = 0; k < nslots; k++) {
            slot_state *s = &S[k];
            if (s->prompt < 0 || s->fed >= s->plen) continue;
            int room = budget - used;
            if (room <= 0 && n > 0) break;
            if (share && s->fed == 0) {
                int wait;
                if ((st = take_shared_prefix(be, S, nslots, k, in_call, &wait))) goto done;
                if (wait) continue;
            }
            if (room <= 0) room = 1;
            size_t chunk = s->plen - s->fed;
            if (chunk > (size_t)room) chunk = (size_t)room;
            call_slots[n] = k;
            call_owner[n] = k;
            call_tok[n] = s->p + s->fed;
            call_n[n] = (int)chunk;
            in_call[k] = 1;
            n++;
            used += (int)chunk;
        }
        if (n == 0) break; /* queue empty and every slot free */
        if ((st = be->infer(be->ctx, call_slots, call_tok, call_n, n, logits))) goto done;

        /* advance prefill positions; sample where a prompt is complete or a slot is decoding */
        for (int j = 0; j < n; j++) {
            slot_state *s = &S[call_owner[j]];
            if (s->fed < s->plen) {
                s->fed += (size_t)call_n[j];
                if (s->fed < s->plen) { call_owner[j] = -1; continue; } /* mid-prompt chunk */
            }
        }
#pragma omp parallel for schedule(dynamic, 1) if (n > 1 && !st_sampler_is_greedy(&opt->sampling))
        for (int j = 0; j < n; j++) {
            if (call_owner[j] < 0) continue;
            slot_state *s = &S[call_owner[j]];
            s->last = st_sampler_sample(s->sampler, logits + (size_t)j * (size_t)V, &s->rng);
        }
        for (int j = 0; j < n; j++) {
            if (call_owner[j] < 0) continue;
            slot_state *s = &S[call_owner[j]];
            st_generation *g = &out[s->prompt];
            if ((st = push_id(g, s, s->last))) goto done;
            n_tokens++;
            if (opt->on_token) opt->on_token(opt->ud, (size_t)s->prompt, s->last);
            int fin = -1;
            if (is_stop(opt, s->last) ||
                (opt->stop_check && opt->stop_check(opt->ud, (size_t)s->prompt, g->ids, g->n_ids)))
                fin = ST_FINISH_STOP;
            else if (g->n_ids >= (size_t)opt->max_new_tokens || s->plen + g->n_ids >= (size_t)ctx)
                fin = ST_FINISH_LENGTH;
            if (fin >= 0) {
                g->finish = (st_finish_reason)fin;
                const size_t done_i = (size_t)s->prompt;
                s->prompt = -1;
                n_done++;
                if (opt->on_finish && (st = opt->on_finish(opt->ud, done_i, g))) goto done;
            }
        }
        if (opt->progress) opt->progress(opt->ud, n_done, n_prompts, n_tokens);
        if (opt->cancel && *opt->cancel && n_done < n_prompts) {
            st = st_error(ST_ERR_INTERRUPTED, "generation interrupted after %zu of %zu answers", n_done, n_prompts);
            goto done;
        }
    }
    if (n_truncated) *n_truncated = n_trunc; /* the caller reports the count */
    else if (n_trunc) st_log_warn("%zu of %zu prompts were left-truncated to fit the context", n_trunc, n_prompts);

done:
    if (S)
        for (int k = 0; k < nslots; k++) st_sampler_free(S[k].sampler);
    free(S);
    free(logits);
    free(call_slots);
    free(call_n);
    free(in_call);
    free(call_owner);
    free(call_tok);
    if (st) st_generations_free(out, n_prompts);
    return st;
}
