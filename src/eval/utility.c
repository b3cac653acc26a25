/* utility.c - utility.h scoring: held-out loss and TruthfulQA MC1 log-likelihoods, both through
 * the training forward (backward.h st_train_forward + st_train_token_losses). */
#include "safetune/backward.h"
#include "safetune/utility.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- held-out loss ---------------- */

static const st_tokenized *g_sort_tk; /* qsort context (single-threaded use) */
static int by_len(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    size_t lx = g_sort_tk->offsets[x + 1] - g_sort_tk->offsets[x], ly = g_sort_tk->offsets[y + 1] - g_sort_tk->offsets[y];
    if (lx != ly) return lx < ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

st_status st_heldout_loss(const st_infer_ctx *ic, const st_tokenized *tk, const uint32_t *rows, size_t n_rows,
                          int max_seq_len, int batch_rows, st_heldout_result *out) {
    const st_model *m = st_infer_ctx_model(ic);
    memset(out, 0, sizeof *out);
    if (n_rows == 0) return st_error(ST_ERR_ARG, "held-out loss: no validation rows");
    if (max_seq_len < 2 || batch_rows < 1)
        return st_error(ST_ERR_ARG, "held-out loss: max_seq_len %d / batch_rows %d too small", max_seq_len, batch_rows);
    for (size_t i = 0; i < n_rows; i++)
        if (rows[i] >= tk->n) return st_error(ST_ERR_ARG, "held-out loss: row %u outside the %zu rows", rows[i], tk->n);
    /* rows sorted by length so each micro-batch pads little; the result is a sum, order-free up to
     * double rounding */
    uint32_t *order = malloc(n_rows * sizeof *order);
    if (!order) return st_error(ST_ERR_NOMEM, "held-out loss: out of memory");
    memcpy(order, rows, n_rows * sizeof *order);
    g_sort_tk = tk;
    qsort(order, n_rows, sizeof *order, by_len);
    st_batch b = {0};
    st_train_acts *acts = NULL;
    st_status s = st_batch_init(&b, batch_rows, max_seq_len);
    if (!s) s = st_train_acts_new(&m->config, batch_rows, max_seq_len, &acts);
    double sum = 0;
    size_t ntok = 0;
    int32_t pad = m->tokenizer ? st_tokenizer_eos_id(m->tokenizer) : 0;
    if (pad < 0) pad = 0;
    for (size_t i = 0; !s && i < n_rows; i += (size_t)batch_rows) {
        int nb = (int)(n_rows - i < (size_t)batch_rows ? n_rows - i : (size_t)batch_rows);
        for (int r = 0; r < nb; r++) {
            uint32_t row = order[i + (size_t)r];
            if (tk->offsets[row + 1] - tk->offsets[row] > (size_t)max_seq_len) out->n_truncated++;
        }
        if ((s = st_collate(tk, order + i, nb, max_seq_len, pad, 0, &b))) break;
        if (b.n_targets == 0) continue;
        float loss;
        if ((s = st_infer_ctx_score(ic, acts, b.inputs, b.targets, b.loss_mask, b.B, b.T, 1.0f, &loss)))
            break;
        const float *tl = st_train_token_losses(acts);
        for (int k = 0; k < b.B * b.T; k++)
            if (b.loss_mask[k] != 0) {
                sum += (double)tl[k];
                ntok++;
            }
    }
    st_train_acts_free(acts);
    st_batch_free(&b);
    free(order);
    if (s) return s;
    if (ntok == 0) return st_error(ST_ERR_ARG, "held-out loss: the validation rows have no assistant tokens to score");
    out->n_rows = n_rows;
    out->n_tokens = ntok;
    out->loss = sum / (double)ntok;
    out->perplexity = exp(out->loss);
    return ST_OK;
}

/* ---------------- continuation log-likelihoods ---------------- */

typedef struct {
    int32_t *ids;   /* context + continuation */
    int len, ctx;   /* total tokens, context tokens (continuation = ids[ctx..len)) */
    double logprob; /* out: Σ log p(ids[t] | ids[<t]) for t in [ctx, len) */
} ll_seq;

/* Score seqs[0..n) in micro-batches of at most cap tokens (B * T <= cap, T = longest row).
 * Position t of the row predicts token t + 1 (targets -1 outside the continuation). */
static st_status score_seqs(const st_infer_ctx *ic, st_train_acts *acts, int cap, ll_seq *seqs, size_t n,
                            int32_t *tok, int32_t *tgt) {
    size_t i = 0;
    while (i < n) {
        int T = 0, B = 0;
        while (i + (size_t)B < n) {
            int t = seqs[i + (size_t)B].len - 1;
            int nt = t > T ? t : T;
            if ((B + 1) * nt > cap && B > 0) break;
            T = nt;
            B++;
        }
        for (int r = 0; r < B; r++) {
            const ll_seq *q = &seqs[i + (size_t)r];
            for (int t = 0; t < T; t++) {
                tok[r * T + t] = t < q->len - 1 ? q->ids[t] : 0;
                tgt[r * T + t] = (t < q->len - 1 && t + 1 >= q->ctx) ? q->ids[t + 1] : -1;
            }
        }
        float loss;
        st_status s = st_infer_ctx_score(ic, acts, tok, tgt, NULL, B, T, 1.0f, &loss);
        if (s) return s;
        const float *tl = st_train_token_losses(acts);
        for (int r = 0; r < B; r++) {
            ll_seq *q = &seqs[i + (size_t)r];
            double lp = 0;
            for (int t = q->ctx - 1; t < q->len - 1; t++) lp -= (double)tl[r * T + t];
            q->logprob = lp;
        }
        i += (size_t)B;
    }
    return ST_OK;
}

/* ids of text (BOS as the tokenizer adds it; special-token text kept as plain text). */
static st_status enc(const st_model *m, const char *text, int32_t **ids, size_t *n) {
    return st_tokenizer_encode(m->tokenizer, text, strlen(text), 0, 1, ids, n);
}

void st_mc1_result_free(st_mc1_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->items[i].logprob);
        free(r->items[i].n_tokens);
    }
    free(r->items);
    memset(r, 0, sizeof *r);
}

/* Context + choice token ids for one question (see st_truthfulqa_primer). */
static st_status build_question(const st_model *m, const st_tqa_item *q, ll_seq *seqs) {
    const char *primer = st_truthfulqa_primer();
    size_t cl = strlen(primer) + strlen(q->question) + 16;
    char *ctx = malloc(cl);
    if (!ctx) return st_error(ST_ERR_NOMEM, "out of memory");
    snprintf(ctx, cl, "%s\n\nQ: %s\nA:", primer, q->question);
    int32_t *cids = NULL;
    size_t nc = 0;
    st_status s = enc(m, ctx, &cids, &nc);
    for (size_t k = 0; !s && k <= q->n_incorrect; k++) {
        const char *ans = k == 0 ? q->best : q->incorrect[k - 1];
        size_t fl = cl + strlen(ans) + 2;
        char *full = malloc(fl);
        if (!full) { s = st_error(ST_ERR_NOMEM, "out of memory"); break; }
        snprintf(full, fl, "%s %s", ctx, ans);
        int32_t *fids = NULL;
        size_t nf = 0;
        s = enc(m, full, &fids, &nf);
        free(full);
        if (s) break;
        int prefix = nf > nc && !memcmp(fids, cids, nc * sizeof *cids);
        if (!prefix) { /* context tokens merged with the answer: score encode(" " + ans) after it */
            free(fids);
            char *sp = malloc(strlen(ans) + 2);
            if (!sp) { s = st_error(ST_ERR_NOMEM, "out of memory"); break; }
            snprintf(sp, strlen(ans) + 2, " %s", ans);
            int32_t *aids = NULL;
            size_t na = 0;
            s = st_tokenizer_encode(m->tokenizer, sp, strlen(sp), 0, 0, &aids, &na);
            free(sp);
            if (s) break;
            fids = malloc((nc + na) * sizeof *fids);
            if (!fids) { free(aids); s = st_error(ST_ERR_NOMEM, "out of memory"); break; }
            memcpy(fids, cids, nc * sizeof *cids);
            memcpy(fids + nc, aids, na * sizeof *aids);
            free(aids);
            nf = nc + na;
        }
        seqs[k].ids = fids;
        seqs[k].len = (int)nf;
        seqs[k].ctx = (int)nc;
        if (nf <= nc || nc == 0) s = st_error(ST_ERR_FORMAT, "TruthfulQA: question \"%.60s\": answer %zu encodes to no tokens", q->question, k);
    }
    free(cids);
    free(ctx);
    return s;
}

st_status st_truthfulqa_mc1(const st_infer_ctx *ic, const st_tqa_set *set, size_t n, int max_batch_tokens,
                            void (*progress)(void *ud, size_t done, size_t total), void *ud,
                            st_mc1_result *out) {
    const st_model *m = st_infer_ctx_model(ic);
    memset(out, 0, sizeof *out);
    if (!m->tokenizer) return st_error(ST_ERR_ARG, "TruthfulQA: the model has no tokenizer");
    if (n > set->n) n = set->n;
    if (max_batch_tokens <= 0) max_batch_tokens = 2048;
    out->items = calloc(n ? n : 1, sizeof *out->items);
    if (!out->items) return st_error(ST_ERR_NOMEM, "out of memory");
    size_t maxc = 1;
    for (size_t i = 0; i < n; i++)
        if (set->items[i].n_incorrect + 1 > maxc) maxc = set->items[i].n_incorrect + 1;
    ll_seq *seqs = calloc(maxc, sizeof *seqs);
    int32_t *tok = malloc((size_t)max_batch_tokens * sizeof *tok), *tgt = malloc((size_t)max_batch_tokens * sizeof *tgt);
    st_train_acts *acts = NULL;
    st_status s = (!seqs || !tok || !tgt) ? st_error(ST_ERR_NOMEM, "out of memory")
                                           : st_train_acts_new(&m->config, 1, max_batch_tokens, &acts);
    for (size_t i = 0; !s && i < n; i++) {
        const st_tqa_item *q = &set->items[i];
        size_t nch = q->n_incorrect + 1;
        memset(seqs, 0, maxc * sizeof *seqs);
        s = build_question(m, q, seqs);
        for (size_t k = 0; !s && k < nch; k++)
            if (seqs[k].len - 1 > max_batch_tokens)
                s = st_error(ST_ERR_ARG, "TruthfulQA: question %zu needs %d tokens, more than the batch budget %d",
                             i, seqs[k].len, max_batch_tokens);
        if (!s) s = score_seqs(ic, acts, max_batch_tokens, seqs, nch, tok, tgt);
        st_mc1_item *it = &out->items[i];
        it->n_choices = nch;
        it->logprob = malloc(nch * sizeof *it->logprob);
        it->n_tokens = malloc(nch * sizeof *it->n_tokens);
        out->n = i + 1;
        if (!s && (!it->logprob || !it->n_tokens)) s = st_error(ST_ERR_NOMEM, "out of memory");
        if (!s) {
            it->chosen = 0;
            for (size_t k = 0; k < nch; k++) {
                it->logprob[k] = seqs[k].logprob;
                it->n_tokens[k] = seqs[k].len - seqs[k].ctx;
                if (seqs[k].logprob > seqs[it->chosen].logprob) it->chosen = (int)k;
            }
            if (it->chosen == 0) out->n_correct++;
        }
        for (size_t k = 0; k < nch; k++) free(seqs[k].ids);
        if (progress && !s) progress(ud, i + 1, n);
    }
    st_train_acts_free(acts);
    free(seqs);
    free(tok);
    free(tgt);
    if (s) {
        st_mc1_result_free(out);
        return s;
    }
    out->accuracy = n ? (double)out->n_correct / (double)n : 0;
    return ST_OK;
}
