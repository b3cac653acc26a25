/* util.c - small helpers for the study layer: text buffer, paths, hashing, metrics reader. */
#include "study/study_internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void stu_printf(stu_buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->p && (size_t)k < room) { b->n += (size_t)k; return; }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
}

void stu_puts(stu_buf *b, const char *s) { stu_printf(b, "%s", s); }

void stu_buf_free(stu_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

st_status stu_buf_write(stu_buf *b, const char *path) {
    if (b->oom) return st_error(ST_ERR_NOMEM, "%s: out of memory while building the file", path);
    return st_write_file_atomic(path, b->p ? b->p : "", b->n);
}

char *stu_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", a, b);
    return s;
}

st_status stu_mkdirs(const char *path) { return st_mkdir_p(path); }

int stu_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int stu_dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 1;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) { empty = 0; break; }
    }
    closedir(d);
    return empty;
}

void stu_fnv1a_hex(const char *s, char out[17]) {
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

void stu_weights_init(st_study_weights *w, st_weights_kind kind, double decay) {
    memset(w, 0, sizeof *w);
    w->kind = kind;
    w->ema_decay = kind == ST_WEIGHTS_EMA ? decay : 0.0;
    w->merge_lambda = kind == ST_WEIGHTS_MERGE ? decay : NAN;
    if (kind == ST_WEIGHTS_LIVE) {
        snprintf(w->name, sizeof w->name, "live");
    } else if (kind == ST_WEIGHTS_MERGE) {
        snprintf(w->name, sizeof w->name, "merge%.6g", decay);
    } else {
        char d[32];
        snprintf(w->name, sizeof w->name, "ema%s", st_study_format_decay(decay, d, sizeof d));
    }
}

void stu_fmt_num(char *buf, size_t n, double v, int decimals) {
    if (isnan(v)) buf[0] = '\0';
    else snprintf(buf, n, "%.*f", decimals, v);
}

/* Value of an EMA field: a number, or an object keyed by decay. */
static double ema_field(const cJSON *o, const char *key, double ema) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return NAN;
    if (cJSON_IsNumber(v)) return v->valuedouble;
    if (cJSON_IsObject(v) && ema > 0) {
        char d[32];
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(v, st_study_format_decay(ema, d, sizeof d));
        if (cJSON_IsNumber(x)) return x->valuedouble;
    }
    return NAN;
}

static double num_field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

st_status stu_metrics_read(const char *path, double ema, stu_metric **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!stu_exists(path)) return ST_OK;
    char *text;
    size_t len;
    st_status s = st_read_file(path, &text, &len);
    if (s) return s;
    size_t cap = 0, cnt = 0, line = 0;
    stu_metric *m = NULL;
    char *p = text;
    while (*p) {
        char *e = strchr(p, '\n');
        line++;
        if (e) *e = '\0'; /* a last line without newline may be cut by a kill: parsed if whole */
        if (p[strspn(p, " \t\r")] != '\0') {
            cJSON *o = cJSON_Parse(p);
            const cJSON *st = o ? cJSON_GetObjectItemCaseSensitive(o, ST_METRIC_STEP) : NULL;
            if (!o || !cJSON_IsObject(o) || !cJSON_IsNumber(st)) {
                cJSON_Delete(o);
                if (!e) break; /* truncated last line (interrupted write): ignore it */
                free(m);
                free(text);
                return st_error(ST_ERR_FORMAT, "%s: line %zu: not a JSON object with a numeric \"step\"",
                                path, line);
            }
            if (cnt == cap) {
                cap = cap ? cap * 2 : 64;
                stu_metric *nm = realloc(m, cap * sizeof *m);
                if (!nm) { cJSON_Delete(o); free(m); free(text); return st_error(ST_ERR_NOMEM, "out of memory"); }
                m = nm;
            }
            stu_metric *r = &m[cnt++];
            r->step = st->valueint;
            r->loss = num_field(o, ST_METRIC_LOSS);
            r->val_loss = num_field(o, ST_METRIC_VAL_LOSS);
            r->lr = num_field(o, ST_METRIC_LR);
            r->grad_norm = num_field(o, ST_METRIC_GRAD_NORM);
            r->tokens_per_s = num_field(o, ST_METRIC_TOKENS_PER_S);
            r->theta_dist = num_field(o, ST_METRIC_THETA_DIST);
            r->probe_asr_live = num_field(o, ST_METRIC_PROBE_ASR_LIVE);
            r->theta_ema_dist = ema_field(o, ST_METRIC_THETA_EMA_DIST, ema);
            r->probe_asr_ema = ema_field(o, ST_METRIC_PROBE_ASR_EMA, ema);
            cJSON_Delete(o);
        }
        if (!e) break;
        p = e + 1;
    }
    free(text);
    *out = m;
    *n = cnt;
    return ST_OK;
}

double stu_cpu_now(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)) return NAN;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t st_study_run_n_weights(const st_study_run *r) { return (size_t)r->has_live + r->n_ema + r->n_merge; }

void st_study_run_weights(const st_study_run *r, size_t k, st_study_weights *w) {
    if (r->has_live && k == 0) stu_weights_init(w, ST_WEIGHTS_LIVE, 0);
    else if ((k -= (size_t)r->has_live) < r->n_ema) stu_weights_init(w, ST_WEIGHTS_EMA, r->ema_decays[k]);
    else stu_weights_init(w, ST_WEIGHTS_MERGE, r->merges[k - r->n_ema]);
}

const char *st_study_defense_name(const st_study_config *c, const st_study_run *r) {
    return c->n_defenses && r->defense < c->n_defenses ? c->defenses[r->defense].name : "none";
}

const char *st_study_finetune_name(const st_study_config *c, const st_study_run *r) {
    return c->n_finetunes && r->finetune < c->n_finetunes ? c->finetunes[r->finetune].name : "full";
}

st_status stu_read_json(const char *path, cJSON **out) {
    char *t;
    size_t len;
    *out = NULL;
    st_status s = st_read_file(path, &t, &len);
    if (s) return s;
    *out = cJSON_Parse(t);
    free(t);
    return ST_OK;
}

st_status stu_read_train_json(const char *path, double *tt, double *tc) {
    cJSON *o;
    st_status s = stu_read_json(path, &o);
    if (s) return s;
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, "train_time_s");
    *tt = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    x = cJSON_GetObjectItemCaseSensitive(o, "train_cpu_s");
    *tc = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    cJSON_Delete(o);
    return ST_OK;
}
