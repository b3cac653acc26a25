/* backward_kl.c - KL-to-reference training forward and reference log-probabilities
 * (backward_kl.h). Shares the forward core and the compaction of supervised rows with
 * st_train_forward (backward.c); the head differs: an exact log-softmax per row. */
#include "safetune/backward_kl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/acts.h"
#include "model/matmul_bf16.h"
#include "safetune/kernels.h"

/* Forward core, then the rows with a target compacted into a->lnf and their logits [Nt, V] in
 * a->logits (as st__train_forward does before its cross-entropy). */
static st_status head_logits(const st_config *cfg, const st_weights *w, st_train_acts *a,
                             const int32_t *tokens, const int32_t *targets, int B, int T) {
    if (!a->save) return st_error(ST_ERR_ARG, "KL forward: activations not made for training");
    const int N = B * T, V = cfg->vocab_size, C = cfg->hidden_size;
    if (N > a->maxN)
        return st_error(ST_ERR_ARG, "KL forward: B*T = %d exceeds the allocated %d tokens", N, a->maxN);
    for (int n = 0; n < N; n++)
        if (targets[n] >= V)
            return st_error(ST_ERR_ARG, "KL forward: target %d at position %d outside [0, %d)", targets[n], n, V);
    if (a->head_rows > 0) /* st_lora_train_acts_new: logits hold one chunk of rows only */
        return st_error(ST_ERR_ARG, "KL forward: activations with a chunked lm_head (LoRA) keep no logits of every row");
    a->has_forward = 0;
    a->lora.lw = NULL; /* no adapter */
    st_status s = st_forward_core(cfg, w, a, tokens, B, T, NULL);
    if (s) return s;
    int Nt = 0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        a->rows[Nt] = n;
        a->targets[Nt] = targets[n];
        if (n != Nt) memcpy(a->lnf + (size_t)Nt * C, a->lnf + (size_t)n * C, (size_t)C * sizeof(float));
        Nt++;
    }
    a->n_rows = Nt;
    if (Nt > 0) ST_PROF("mm_lmhead_fwd", st_backend_get()->matmul_forward(a->logits, a->lnf, w->lm_head, NULL, Nt, C, V));
    return ST_OK;
}

/* log Σ_v exp(z_v) of one row: max, then the exps summed in double in index order. */
static double row_lse(const float *z, int V) {
    float mx = z[0];
    for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp((double)z[v] - (double)mx);
    return (double)mx + log(s);
}

st_status st_train_logprobs(const st_config *cfg, const st_weights *w, st_train_acts *a,
                            const int32_t *tokens, const int32_t *targets, int B, int T,
                            float *logp, int cap_rows, int *n_rows) {
    int Nt = 0;
    for (int n = 0; n < B * T; n++) Nt += targets[n] >= 0;
    if (Nt > cap_rows)
        return st_error(ST_ERR_ARG, "KL forward: %d supervised rows, room for %d", Nt, cap_rows);
    st_status s = head_logits(cfg, w, a, tokens, targets, B, T);
    if (s) return s;
    const int V = cfg->vocab_size;
#pragma omp parallel for schedule(static) if (Nt > 1)
    for (int j = 0; j < Nt; j++) {
        const float *z = a->logits + (size_t)j * V;
        const double lse = row_lse(z, V);
        float *o = logp + (size_t)j * V;
        for (int v = 0; v < V; v++) o[v] = (float)((double)z[v] - lse);
    }
    *n_rows = Nt;
    return ST_OK;
}

st_status st_train_forward_kl(const st_config *cfg, const st_weights *w, st_train_acts *a,
                              const int32_t *tokens, const int32_t *targets, const float *ref_logp,
                              int n_ref, int B, int T, double normaliser, double *loss) {
    if (!(normaliser > 0))
        return st_error(ST_ERR_ARG, "KL forward: normaliser %g must be > 0", normaliser);
    int Nt = 0;
    for (int n = 0; n < B * T; n++) Nt += targets[n] >= 0;
    if (Nt != n_ref)
        return st_error(ST_ERR_ARG, "KL forward: %d supervised rows but %d reference rows", Nt, n_ref);
    st_status s = head_logits(cfg, w, a, tokens, targets, B, T);
    if (s) return s;
    const int V = cfg->vocab_size; /* a->bf16_acts: set by the forward core, the backward follows it */
    double *part = malloc((size_t)(Nt > 0 ? Nt : 1) * sizeof *part);
    if (!part) return ST_ERR_NOMEM;
    const double inv = 1.0 / normaliser;
    if (a->bf16_acts) st_bf16_row(NULL, NULL, 0); /* ISA decided before the threads run */
#pragma omp parallel for schedule(static) if (Nt > 1)
    for (int j = 0; j < Nt; j++) {
        float *z = a->logits + (size_t)j * V;
        const float *r = ref_logp + (size_t)j * V;
        const double lse = row_lse(z, V);
        double kl = 0.0;
        for (int v = 0; v < V; v++) {
            const double lq = (double)z[v] - lse, lp = (double)(float)lq, lr = (double)r[v];
            const double pr = exp(lr);
            kl += pr * (lr - lp);
            z[v] = (float)((exp(lp) - pr) * inv); /* d(logits) in place */
        }
        part[j] = kl;
        if (a->bf16_acts) { /* the bf16 lm_head backward reads bf16 d(logits), row stride 2V */
            enum { CH = 256 };
            unsigned char *out = (unsigned char *)z;
            for (int v0 = 0; v0 < V; v0 += CH) {
                const int n = V - v0 < CH ? V - v0 : CH;
                uint16_t h[CH];
                st_bf16_row(h, z + v0, (size_t)n);
                memcpy(out + 2 * (size_t)v0, h, (size_t)n * sizeof *h);
            }
        }
    }
    double sum = 0.0;
    for (int j = 0; j < Nt; j++) sum += part[j];
    free(part);
    memset(a->losses, 0, (size_t)B * T * sizeof *a->losses); /* no per-token CE here */
    a->has_forward = 1;
    if (loss) *loss = sum * inv;
    return ST_OK;
}
