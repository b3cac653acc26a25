/* trainer_metrics.c - metrics.jsonl records (one JSON object per line, flushed each step).
 * Field names are the interface read by the study module: step, loss, lr, grad_norm,
 * tokens_per_s, theta_dist, theta_ema_dist, epoch, val_loss + hook fields; with the defenses penalty
 * (L2-SP, Lisa), phase ("align" | "task", Lisa), loss_align, align_dot, proj_coef (SafeGrad).
 * Non-finite -> null.
 * A per-decay field is a number with one EMA decay and an object keyed by st_ema_decay_key
 * ({"0.9": ..., "0.5": ...}) with several. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "train/trainer_internal.h"

typedef struct { char *p; size_t n, cap; } sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
    if (!b->p) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        char *np = realloc(b->p, b->cap * 2 + (size_t)k);
        if (!np) {
            free(b->p);
            b->p = NULL;
            return;
        }
        b->p = np;
        b->cap = b->cap * 2 + (size_t)k;
    }
}

/* %.17g round-trips a double exactly (losses compare as strings across resumes). */
static void num(sbuf *b, const char *key, double v) {
    if (isfinite(v)) put(b, ",\"%s\":%.17g", key, v);
    else put(b, ",\"%s\":null", key);
}

static void keyed_num(sbuf *b, int first, const char *key, double v) {
    if (isfinite(v)) put(b, "%s\"%s\":%.17g", first ? "" : ",", key, v);
    else put(b, "%s\"%s\":null", first ? "" : ",", key);
}

char *st__trainer_metrics_line(const st_trainer *t, const st_step_metrics *m) {
    sbuf b = {malloc(512), 0, 512};
    put(&b, "{\"step\":%lld", (long long)m->step);
    num(&b, "loss", m->loss);
    num(&b, "lr", m->lr);
    num(&b, "grad_norm", m->grad_norm);
    if (t->cfg.l2sp_alpha > 0 || t->cfg.lisa == ST_ON || t->cfg.ewc_lambda > 0) num(&b, "penalty", m->penalty);
    if (t->cfg.lisa == ST_ON && m->step > 0) put(&b, ",\"phase\":\"%s\"", m->phase == 1 ? "align" : "task");
    if (t->cfg.safegrad == ST_ON && m->step > 0) {
        num(&b, "loss_align", m->loss_align);
        num(&b, "align_dot", m->align_dot);
        num(&b, "proj_coef", m->proj_coef);
    }
    if (t->cfg.csft_beta > 0) num(&b, "csft_loss", m->csft_loss);
    if (t->cfg.kl_lambda > 0) num(&b, "kl", m->kl);
    if (m->setup_s > 0) num(&b, "defense_setup_s", m->setup_s); /* the one-off θ_0 pass, once */
    if (isfinite(m->fisher_mean)) num(&b, "ewc_fisher_mean", m->fisher_mean);
    num(&b, "tokens_per_s", m->tokens_per_s);
    num(&b, "theta_dist", m->theta_dist);
    if (t->ema.k <= 1) {
        num(&b, "theta_ema_dist", m->theta_ema_dist);
    } else {
        put(&b, ",\"theta_ema_dist\":{");
        for (int j = 0; j < t->ema.k; j++) {
            char d[32];
            keyed_num(&b, j == 0, st_ema_decay_key(t->ema.decay[j], d, sizeof d), m->theta_ema_dists[j]);
        }
        put(&b, "}");
    }
    num(&b, "epoch", m->epoch);
    if (m->has_val) num(&b, "val_loss", m->val_loss);
    put(&b, ",\"tokens\":%lld,\"targets\":%lld", (long long)m->tokens, (long long)m->targets);
    for (int i = 0; i < t->n_extra; i++) {
        if (!t->extra[i].key[0]) {
            num(&b, t->extra[i].name, t->extra[i].v);
            continue;
        }
        int seen = 0; /* a keyed name is written once, at its first field, with all its keys */
        for (int p = 0; p < i && !seen; p++) seen = t->extra[p].key[0] && !strcmp(t->extra[p].name, t->extra[i].name);
        if (seen) continue;
        put(&b, ",\"%s\":{", t->extra[i].name);
        for (int q = i, first = 1; q < t->n_extra; q++)
            if (t->extra[q].key[0] && !strcmp(t->extra[q].name, t->extra[i].name)) {
                keyed_num(&b, first, t->extra[q].key, t->extra[q].v);
                first = 0;
            }
        put(&b, "}");
    }
    put(&b, "}\n");
    return b.p;
}

void st__trainer_metrics_path(const st_trainer *t, char *buf, size_t cap) {
    if (t->cfg.metrics_path) snprintf(buf, cap, "%s", t->cfg.metrics_path);
    else snprintf(buf, cap, "%s/metrics.jsonl", t->cfg.out_dir);
}

st_status st__trainer_append_metrics(const st_trainer *t, const char *line) {
    char p[4200];
    st__trainer_metrics_path(t, p, sizeof p);
    FILE *f = fopen(p, "a");
    if (!f) return st_error(ST_ERR_IO, "%s: cannot open for appending: %s", p, strerror(errno));
    size_t n = strlen(line);
    int bad = fwrite(line, 1, n, f) != n;
    bad |= fflush(f) != 0;
    bad |= fclose(f) != 0;
    return bad ? st_error(ST_ERR_IO, "%s: write failed: %s", p, strerror(errno)) : ST_OK;
}

st_status st__trainer_truncate_metrics(const st_trainer *t, int64_t max_step) {
    char p[4200];
    st__trainer_metrics_path(t, p, sizeof p);
    char *txt = NULL;
    size_t len = 0;
    FILE *f = fopen(p, "r");
    if (!f) return ST_OK; /* nothing logged yet */
    fclose(f);
    st_status s = st_read_file(p, &txt, &len);
    if (s) return s;
    char *out = st_malloc(len + 1);
    if (!out) {
        free(txt);
        return ST_ERR_NOMEM;
    }
    size_t on = 0;
    for (char *line = txt; *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) break; /* an unterminated last line was cut by a kill */
        *nl = '\0';
        cJSON *o = cJSON_Parse(line);
        const cJSON *st = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (cJSON_IsNumber(st) && st->valuedouble <= (double)max_step) {
            size_t l = strlen(line);
            memcpy(out + on, line, l);
            out[on + l] = '\n';
            on += l + 1;
        }
        cJSON_Delete(o);
        line = nl + 1;
    }
    s = st_write_file_atomic(p, out, on);
    free(out);
    free(txt);
    return s;
}
