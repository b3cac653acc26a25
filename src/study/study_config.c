/* study_config.c - study config: compiled-in preset + JSON file overrides, schema checks with
 * one-line errors naming the source and key, normalisation and fingerprint (see study.h). */
#include "study/study_internal.h"
#include "safetune/json_check.h"
#include "safetune/prompts.h"
#include "safetune/train_settings.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_STR, T_NUM, T_INT, T_BOOL, T_LNUM, T_LINT, T_LSTR, T_LEMA, T_DATASETS, T_OBJ, T_LSTR0, T_LANY } ktype;

typedef struct skey {
    const char *name;
    ktype t;
    const struct skey *sub; /* T_OBJ / T_DATASETS: keys of the object(s) */
    int nullable;
} skey;

static const skey K_DATASET[] = {
    {"path", T_STR, NULL, 0}, {"format", T_STR, NULL, 0}, {"name", T_STR, NULL, 1},
    {"limit", T_INT, NULL, 0}, {NULL, 0, NULL, 0}};
static const skey K_EVAL[] = {
    {"advbench_split", T_STR, NULL, 0}, {"advbench_split_seed", T_INT, NULL, 0},
    {"advbench_limit", T_INT, NULL, 0}, {"max_new_tokens", T_INT, NULL, 0},
    {"batch_size", T_INT, NULL, 0}, {"xstest", T_BOOL, NULL, 0}, {"xstest_limit", T_INT, NULL, 0},
    {"truthfulqa", T_BOOL, NULL, 0}, {"truthfulqa_limit", T_INT, NULL, 0},
    {"val_examples", T_INT, NULL, 0}, {"judge_url", T_STR, NULL, 1}, {"judge_model", T_STR, NULL, 1},
    {"benchmarks", T_LSTR0, NULL, 0}, {"benchmark_limit", T_INT, NULL, 0}, {"precision", T_STR, NULL, 0},
    {NULL, 0, NULL, 0}};
static const skey K_PROBE[] = {
    {"every", T_INT, NULL, 0}, {"n_prompts", T_INT, NULL, 0}, {"max_new_tokens", T_INT, NULL, 0},
    {"stop_asr_above", T_NUM, NULL, 0}, {"keep_best", T_BOOL, NULL, 0}, {NULL, 0, NULL, 0}};
static const skey K_REPORT[] = {
    {"utility_metric", T_STR, NULL, 0}, {"utility_tolerance", T_NUM, NULL, 0},
    {"distance_tolerance", T_NUM, NULL, 0}, {"safety_margin", T_NUM, NULL, 0},
    {"plots", T_BOOL, NULL, 0}, {NULL, 0, NULL, 0}};
static const skey K_ESTIMATE[] = {
    {"train_tokens_per_s", T_NUM, NULL, 0}, {"gen_tokens_per_s", T_NUM, NULL, 0},
    {"example_tokens", T_NUM, NULL, 0}, {NULL, 0, NULL, 0}};
static const skey K_ALIGN[] = {
    {"enabled", T_BOOL, NULL, 0}, {"dir", T_STR, NULL, 1}, {"n_alpaca", T_INT, NULL, 0},
    {"max_steps", T_INT, NULL, 0}, {"lr", T_NUM, NULL, 0}, {"batch_size", T_INT, NULL, 0},
    {"answer_max_new_tokens", T_INT, NULL, 0}, {"n_advbench", T_INT, NULL, 0},
    {"xstest_safe_repeat", T_INT, NULL, 0}, {NULL, 0, NULL, 0}};
static const skey K_TOP[] = {
    {"model", T_STR, NULL, 0}, {"datasets", T_DATASETS, K_DATASET, 0}, {"data_dir", T_STR, NULL, 1},
    {"lr", T_LNUM, NULL, 0}, {"batch_size", T_LINT, NULL, 0}, {"grad_accum", T_LINT, NULL, 0},
    {"max_steps", T_LINT, NULL, 0}, {"epochs", T_LNUM, NULL, 0}, {"train_examples", T_LINT, NULL, 0},
    {"lr_schedule", T_LSTR, NULL, 0},
    {"warmup_steps", T_LINT, NULL, 0}, {"ema_decay", T_LEMA, NULL, 0},
    {"defense", T_LANY, NULL, 0}, {"finetune", T_LANY, NULL, 0}, {"merge", T_LANY, NULL, 0},
    {"weight_decay", T_NUM, NULL, 0}, {"max_grad_norm", T_NUM, NULL, 0},
    {"max_seq_len", T_INT, NULL, 0}, {"seed", T_LINT, NULL, 0}, {"precision", T_STR, NULL, 0},
    {"checkpoints", T_STR, NULL, 0}, {"eval", T_OBJ, K_EVAL, 0}, {"probe", T_OBJ, K_PROBE, 0}, {"report", T_OBJ, K_REPORT, 0},
    {"estimate", T_OBJ, K_ESTIMATE, 0}, {"align", T_OBJ, K_ALIGN, 0}, {NULL, 0, NULL, 0}};

/* Defaults applied under the preset and the file. */
static const char DEFAULTS[] =
    "{\"data_dir\": null, \"grad_accum\": [1], \"lr_schedule\": [\"constant\"], \"warmup_steps\": [0],"
    " \"ema_decay\": [\"none\"], \"weight_decay\": 0.0, \"max_grad_norm\": 1.0, \"max_seq_len\": 512,"
    " \"seed\": 42, \"precision\": \"fp32\", \"checkpoints\": \"middle\","
    " \"eval\": {\"advbench_split\": \"all\", \"advbench_split_seed\": 2508, \"advbench_limit\": 0,"
    "  \"max_new_tokens\": 64, \"batch_size\": 16, \"xstest\": true, \"xstest_limit\": 0,"
    "  \"truthfulqa\": true, \"truthfulqa_limit\": 0, \"val_examples\": 100, \"judge_url\": null,"
    "  \"judge_model\": null, \"benchmarks\": [], \"benchmark_limit\": 0, \"precision\": \"fp32\"},"
    " \"probe\": {\"every\": 0, \"n_prompts\": 16, \"max_new_tokens\": 32, \"stop_asr_above\": 1.0,"
    "  \"keep_best\": false},"
    " \"report\": {\"utility_metric\": \"val_loss\", \"utility_tolerance\": 0.05,"
    "  \"distance_tolerance\": 0.1, \"safety_margin\": 0.05, \"plots\": true},"
    " \"estimate\": {\"train_tokens_per_s\": 450, \"gen_tokens_per_s\": 1500, \"example_tokens\": 150},"
    " \"align\": {\"enabled\": false, \"dir\": null, \"n_alpaca\": 260, \"max_steps\": 32, \"lr\": 2e-4,"
    "  \"batch_size\": 8, \"answer_max_new_tokens\": 96, \"n_advbench\": 0, \"xstest_safe_repeat\": 3}}";

/* ---- "did you mean" ---- */

static const char *closest(const skey *keys, const char *name) {
    const char *best = NULL;
    size_t bd = 99, n = strlen(name);
    for (const skey *k = keys; k->name; k++) {
        size_t d = st_edit_distance(name, k->name);
        if (d < bd) { bd = d; best = k->name; }
    }
    size_t lim = n <= 4 ? 1 : (n <= 8 ? 2 : 3);
    return bd <= lim ? best : NULL;
}

static const char *jtype(const cJSON *v) {
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "a list";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid";
}

static int is_int(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 9.0e15;
}

/* Check one scalar / list element against a type; returns an expectation text on mismatch. */
static const char *scalar_mismatch(ktype t, const cJSON *v) {
    switch (t) {
    case T_STR: case T_LSTR: case T_LSTR0: return cJSON_IsString(v) ? NULL : "a string";
    case T_NUM: case T_LNUM: return cJSON_IsNumber(v) ? NULL : "a number";
    case T_INT: case T_LINT: return is_int(v) ? NULL : "an integer";
    case T_BOOL: return cJSON_IsBool(v) ? NULL : "true or false";
    case T_LEMA:
        return (cJSON_IsNumber(v) || (cJSON_IsString(v) && !strcmp(v->valuestring, "none")))
                   ? NULL : "a number in (0, 1) or \"none\"";
    default: return "?";
    }
}

/* Type-check object o (keys at path prefix) against schema keys. */
static st_status check_obj(const cJSON *o, const skey *keys, const char *src, const char *prefix) {
    for (const cJSON *it = o->child; it; it = it->next) {
        const char *name = it->string;
        char path[256];
        snprintf(path, sizeof path, "%s%s", prefix, name);
        const skey *k = NULL;
        for (const skey *q = keys; q->name; q++)
            if (!strcmp(q->name, name)) { k = q; break; }
        if (!k) {
            const char *c = closest(keys, name);
            if (c)
                return st_error(ST_ERR_ARG, "%s: unknown key '%s' (did you mean '%s%s'?)", src, path, prefix, c);
            return st_error(ST_ERR_ARG, "%s: unknown key '%s'", src, path);
        }
        if (cJSON_IsNull(it)) {
            if (k->nullable) continue;
            return st_error(ST_ERR_ARG, "%s: key '%s': must not be null", src, path);
        }
        if (k->t == T_OBJ) {
            if (!cJSON_IsObject(it))
                return st_error(ST_ERR_ARG, "%s: key '%s': expected an object, got %s", src, path, jtype(it));
            char sub[300];
            snprintf(sub, sizeof sub, "%s.", path);
            st_status s = check_obj(it, k->sub, src, sub);
            if (s) return s;
        } else if (k->t == T_DATASETS) {
            if (!cJSON_IsArray(it))
                return st_error(ST_ERR_ARG, "%s: key '%s': expected a list of {\"path\", \"format\"} objects, got %s",
                                src, path, jtype(it));
            if (cJSON_GetArraySize(it) == 0)
                return st_error(ST_ERR_ARG, "%s: key '%s': empty list (give at least one dataset)", src, path);
            int i = 0;
            for (const cJSON *d = it->child; d; d = d->next, i++) {
                char sub[300];
                snprintf(sub, sizeof sub, "%s[%d]", path, i);
                if (!cJSON_IsObject(d))
                    return st_error(ST_ERR_ARG, "%s: key '%s': expected an object {\"path\", \"format\"}, got %s",
                                    src, sub, jtype(d));
                size_t l = strlen(sub);
                snprintf(sub + l, sizeof sub - l, ".");
                st_status s = check_obj(d, k->sub, src, sub);
                if (s) return s;
                if (!cJSON_GetObjectItemCaseSensitive(d, "path") || !cJSON_GetObjectItemCaseSensitive(d, "format"))
                    return st_error(ST_ERR_ARG, "%s: key '%s[%d]': needs both \"path\" and \"format\"", src, path, i);
            }
        } else if (k->t == T_LANY) {
            if (!cJSON_IsArray(it))
                return st_error(ST_ERR_ARG, "%s: key '%s': expected a list, got %s", src, path, jtype(it));
        } else if (k->t == T_LSTR0) {
            if (!cJSON_IsArray(it))
                return st_error(ST_ERR_ARG, "%s: key '%s': expected a list of strings (may be empty), got %s", src, path, jtype(it));
            int i = 0;
            for (const cJSON *e = it->child; e; e = e->next, i++)
                if (!cJSON_IsString(e))
                    return st_error(ST_ERR_ARG, "%s: key '%s[%d]': expected a string, got %s", src, path, i, jtype(e));
        } else if (k->t == T_LNUM || k->t == T_LINT || k->t == T_LSTR || k->t == T_LEMA) {
            if (cJSON_IsArray(it)) {
                if (cJSON_GetArraySize(it) == 0)
                    return st_error(ST_ERR_ARG, "%s: key '%s': empty list (give at least one value)", src, path);
                int i = 0;
                for (const cJSON *e = it->child; e; e = e->next, i++) {
                    const char *want = scalar_mismatch(k->t, e);
                    if (want)
                        return st_error(ST_ERR_ARG, "%s: key '%s[%d]': expected %s, got %s", src, path, i, want, jtype(e));
                }
            } else {
                const char *want = scalar_mismatch(k->t, it);
                if (want)
                    return st_error(ST_ERR_ARG, "%s: key '%s': expected a list of %s (or one value), got %s",
                                    src, path, k->t == T_LSTR ? "strings" : k->t == T_LINT ? "integers" :
                                    k->t == T_LEMA ? "numbers or \"none\"" : "numbers", jtype(it));
            }
        } else {
            const char *want = scalar_mismatch(k->t, it);
            if (want) return st_error(ST_ERR_ARG, "%s: key '%s': expected %s, got %s", src, path, want, jtype(it));
        }
    }
    return ST_OK;
}

/* ---- origins (which source set a key) ---- */

typedef struct {
    char key[64];
    const char *src;
} origin;

typedef struct {
    origin o[128];
    size_t n;
} origins;

static void origin_set(origins *os, const char *key, const char *src) {
    for (size_t i = 0; i < os->n; i++)
        if (!strcmp(os->o[i].key, key)) { os->o[i].src = src; return; }
    if (os->n < 128) {
        snprintf(os->o[os->n].key, sizeof os->o[os->n].key, "%s", key);
        os->o[os->n++].src = src;
    }
}

static const char *origin_get(const origins *os, const char *key) {
    for (size_t i = 0; i < os->n; i++)
        if (!strcmp(os->o[i].key, key)) return os->o[i].src;
    char top[64];
    snprintf(top, sizeof top, "%s", key);
    char *dot = strchr(top, '.');
    if (dot) {
        *dot = '\0';
        for (size_t i = 0; i < os->n; i++)
            if (!strcmp(os->o[i].key, top)) return os->o[i].src;
    }
    return "defaults";
}

/* The training-length keys: one per source (a later source may switch between them). */
static const char *const LENGTH_KEYS[] = {"max_steps", "epochs", "train_examples"};

static st_status check_exclusive(const cJSON *o, const char *src) {
    int n = 0;
    for (size_t i = 0; i < 3; i++) n += cJSON_GetObjectItemCaseSensitive(o, LENGTH_KEYS[i]) != NULL;
    if (n > 1)
        return st_error(ST_ERR_ARG, "%s: keys 'max_steps', 'epochs' and 'train_examples' exclude each other (give one)", src);
    return ST_OK;
}

static void merge(cJSON *dst, const cJSON *src, origins *os, const char *srcname) {
    for (const cJSON *it = src->child; it; it = it->next) {
        cJSON *cur = cJSON_GetObjectItemCaseSensitive(dst, it->string);
        if (cur && cJSON_IsObject(cur) && cJSON_IsObject(it)) {
            for (const cJSON *sub = it->child; sub; sub = sub->next) {
                cJSON_DeleteItemFromObjectCaseSensitive(cur, sub->string);
                cJSON_AddItemToObject(cur, sub->string, cJSON_Duplicate(sub, 1));
                char k[64];
                snprintf(k, sizeof k, "%s.%s", it->string, sub->string);
                origin_set(os, k, srcname);
            }
            continue;
        }
        /* max_steps, epochs and train_examples exclude each other: the higher source's choice wins */
        for (size_t i = 0; i < 3; i++)
            if (!strcmp(it->string, LENGTH_KEYS[i]))
                for (size_t j = 0; j < 3; j++)
                    if (j != i) cJSON_DeleteItemFromObjectCaseSensitive(dst, LENGTH_KEYS[j]);
        cJSON_DeleteItemFromObjectCaseSensitive(dst, it->string);
        cJSON_AddItemToObject(dst, it->string, cJSON_Duplicate(it, 1));
        origin_set(os, it->string, srcname);
    }
}

/* Parse JSON text: invalid JSON located by line:column, duplicate keys refused (json_check.h). */
static st_status parse_json(const char *text, const char *src, cJSON **out) {
    cJSON *j = NULL;
    st_status s = st_json_parse_checked(text, src, &j);
    if (s) return s;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return st_error(ST_ERR_FORMAT, "%s: the config must be a JSON object", src);
    }
    *out = j;
    return ST_OK;
}

/* ---- extraction ---- */

static cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static size_t list_len(const cJSON *v) { return cJSON_IsArray(v) ? (size_t)cJSON_GetArraySize(v) : 1; }
static const cJSON *list_at(const cJSON *v, size_t i) {
    return cJSON_IsArray(v) ? cJSON_GetArrayItem(v, (int)i) : v;
}

static char *dupstr(const cJSON *v) { return cJSON_IsString(v) ? st_strdup(v->valuestring) : NULL; }

#define BAD(key, ...) st_error(ST_ERR_ARG, "%s: key '%s': " __VA_ARGS__)

static st_status get_double_list(const cJSON *root, const char *key, const origins *os, double lo,
                                 double hi, double **out, size_t *n) {
    const cJSON *v = get(root, key);
    *n = list_len(v);
    *out = calloc(*n, sizeof **out);
    if (!*out) return st_error(ST_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < *n; i++) {
        double x = list_at(v, i)->valuedouble;
        if (!(x > lo && x <= hi))
            return BAD(key, "value %g out of range (%g, %g]", origin_get(os, key), key, x, lo, hi);
        for (size_t j = 0; j < i; j++)
            if ((*out)[j] == x) return BAD(key, "duplicate value %g", origin_get(os, key), key, x);
        (*out)[i] = x;
    }
    return ST_OK;
}

static st_status get_int_list(const cJSON *root, const char *key, const origins *os, int lo, int **out,
                              size_t *n) {
    const cJSON *v = get(root, key);
    *n = list_len(v);
    *out = calloc(*n, sizeof **out);
    if (!*out) return st_error(ST_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < *n; i++) {
        double x = list_at(v, i)->valuedouble;
        if (x < lo || x > 1e9) return BAD(key, "value %g must be >= %d", origin_get(os, key), key, x, lo);
        for (size_t j = 0; j < i; j++)
            if ((*out)[j] == (int)x) return BAD(key, "duplicate value %d", origin_get(os, key), key, (int)x);
        (*out)[i] = (int)x;
    }
    return ST_OK;
}

static st_status get_int(const cJSON *o, const char *k, const char *full, const origins *os, int lo,
                         int *out) {
    double x = get(o, k)->valuedouble;
    if (x < lo || x > 2e9) return BAD(full, "value %g must be >= %d", origin_get(os, full), full, x, lo);
    *out = (int)x;
    return ST_OK;
}

static const char *stem_of(const char *path, char *buf, size_t n);

/* eval.benchmarks: prompt-set specs "KIND:PATH" (or a built-in name such as "xstest"), PATH relative
 * to data_dir unless absolute; each is loaded here so that a bad file stops the study before any
 * training. Tags (results.csv columns, report): KIND, or KIND-<file stem> when a kind repeats. */
static st_status get_benchmarks(const cJSON *v, const origins *os, st_study_config *c) {
    const char *src = origin_get(os, "eval.benchmarks");
    size_t n = v ? (size_t)cJSON_GetArraySize(v) : 0;
    if (!n) return ST_OK;
    c->eval.benchmarks = calloc(n, sizeof *c->eval.benchmarks);
    c->eval.benchmark_tags = calloc(n, sizeof *c->eval.benchmark_tags);
    c->eval.benchmark_n = calloc(n, sizeof *c->eval.benchmark_n);
    if (!c->eval.benchmarks || !c->eval.benchmark_tags || !c->eval.benchmark_n) return st_error(ST_ERR_NOMEM, "out of memory");
    c->eval.n_benchmarks = n;
    for (size_t i = 0; i < n; i++) {
        const char *spec = cJSON_GetArrayItem(v, (int)i)->valuestring;
        const char *colon = strchr(spec, ':');
        stu_buf b = {0};
        if (colon && colon[1] && colon[1] != '/')
            stu_printf(&b, "%.*s:%s/%s", (int)(colon - spec), spec, c->data_dir, colon + 1);
        else
            stu_puts(&b, spec);
        if (b.oom || !b.p) {
            stu_buf_free(&b);
            return st_error(ST_ERR_NOMEM, "out of memory");
        }
        c->eval.benchmarks[i] = b.p;
        st_prompt_set ps;
        st_status s = st_prompts_load(b.p, c->data_dir, &ps);
        if (s) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", st_last_error());
            return st_error(s, "%s: key 'eval.benchmarks[%zu]': %s", src, i, msg);
        }
        c->eval.benchmark_n[i] = (int)ps.n;
        st_prompt_set_free(&ps);
        char tag[160], stem[128];
        if (colon) snprintf(tag, sizeof tag, "%.*s", (int)(colon - spec), spec);
        else snprintf(tag, sizeof tag, "%s", spec);
        for (size_t j = 0; j < n; j++) {
            const char *o = cJSON_GetArrayItem(v, (int)j)->valuestring, *oc = strchr(o, ':');
            if (j != i && oc && colon && oc - o == colon - spec && !strncmp(o, spec, (size_t)(colon - spec))) {
                size_t l = strlen(tag);
                snprintf(tag + l, sizeof tag - l, "-%s", stem_of(colon + 1, stem, sizeof stem));
                break;
            }
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(c->eval.benchmark_tags[j], tag))
                return st_error(ST_ERR_ARG, "%s: key 'eval.benchmarks[%zu]': '%s' repeats a benchmark (tag '%s')", src, i, spec, tag);
        if (!(c->eval.benchmark_tags[i] = st_strdup(tag))) return st_error(ST_ERR_NOMEM, "out of memory");
    }
    return ST_OK;
}

static const char *stem_of(const char *path, char *buf, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, n, "%s", b);
    char *dot = strchr(buf, '.');
    if (dot && dot != buf) *dot = '\0';
    for (char *p = buf; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-') *p = '-';
    return buf;
}

/* Canonical JSON: schema order, only known keys. */
static cJSON *canonical(const cJSON *merged, const skey *keys, int skip_report) {
    cJSON *o = cJSON_CreateObject();
    for (const skey *k = keys; k->name; k++) {
        if (skip_report && (!strcmp(k->name, "report") || !strcmp(k->name, "estimate") || !strcmp(k->name, "checkpoints")))
            continue;
        const cJSON *v = get(merged, k->name);
        if (!v) continue;
        if (k->t == T_OBJ) cJSON_AddItemToObject(o, k->name, canonical(v, k->sub, 0));
        else if (k->t == T_DATASETS) {
            cJSON *a = cJSON_CreateArray();
            for (const cJSON *d = v->child; d; d = d->next) cJSON_AddItemToArray(a, canonical(d, k->sub, 0));
            cJSON_AddItemToObject(o, k->name, a);
        } else if (!strcmp(k->name, "seed") && cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1) {
            /* one seed is written as a number: the fingerprint of a one-seed study is what it was
             * before `seed` took a list */
            cJSON_AddItemToObject(o, k->name, cJSON_Duplicate(v->child, 1));
        } else if (!strcmp(k->name, "seed")) {
            cJSON_AddItemToObject(o, k->name, cJSON_Duplicate(v, 1));
        } else if ((k->t == T_LNUM || k->t == T_LINT || k->t == T_LSTR || k->t == T_LEMA) && !cJSON_IsArray(v)) {
            cJSON *a = cJSON_CreateArray();
            cJSON_AddItemToArray(a, cJSON_Duplicate(v, 1));
            cJSON_AddItemToObject(o, k->name, a);
        } else cJSON_AddItemToObject(o, k->name, cJSON_Duplicate(v, 1));
    }
    return o;
}


/* ---- the defense and finetune axes, the merge list ---- */

/* Settings the grid (or the study) sets for every run: a defense may not change them. */
static const char *const GRID_OWNED[] = {"lr", "batch_size", "grad_accum", "max_steps", "epochs", "warmup_steps",
                                         "lr_schedule", "weight_decay", "max_grad_norm", "ema_decay", "seed",
                                         "precision", "max_seq_len", "val_fraction", "val_count", "eval_every",
                                         "save_every", "keep_checkpoints", NULL};
/* The data-side defenses (data_transform.h): not rows of the trainer's table, applied by the study
 * to the rows before tokenization as `safetune train` does. */
static const char *const DATA_KEYS[] = {"safeinstr_k", "poison", "lookahead", "lookahead_m", "lookahead_prefix", NULL};

static int in_list(const char *const *l, const char *k) {
    for (; *l; l++)
        if (!strcmp(*l, k)) return 1;
    return 0;
}

/* A defense value as text: numbers with %.17g, strings as they are. NULL = wrong type. */
static char *value_text(const cJSON *v) {
    char b[64];
    if (cJSON_IsString(v)) return st_strdup(v->valuestring);
    if (!cJSON_IsNumber(v)) return NULL;
    snprintf(b, sizeof b, "%.15g", v->valuedouble);
    if (strtod(b, NULL) != v->valuedouble) snprintf(b, sizeof b, "%.17g", v->valuedouble);
    return st_strdup(b);
}

static int name_ok(const char *n) {
    if (!*n || strlen(n) > 40) return 0;
    for (const char *p = n; *p; p++)
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') return 0;
    return 1;
}

/* Check one data-side key's value (its meaning in data_transform.h). */
static st_status data_key_check(const char *k, const char *v, const char *where) {
    double x;
    char *end;
    if (!strcmp(k, "lookahead")) {
        if (strcmp(v, "none") && strcmp(v, "real") && strcmp(v, "virtual"))
            return st_error(ST_ERR_ARG, "%s.lookahead: unknown value '%s' (none, real or virtual)", where, v);
        return ST_OK;
    }
    if (!strcmp(k, "lookahead_prefix")) {
        if (!*v) return st_error(ST_ERR_ARG, "%s.lookahead_prefix: empty prefix", where);
        return ST_OK;
    }
    x = strtod(v, &end);
    if (!*v || *end || !isfinite(x)) return st_error(ST_ERR_ARG, "%s.%s = '%s': expected a number", where, k, v);
    if (!strcmp(k, "poison") && !(x >= 0 && x <= 1))
        return st_error(ST_ERR_ARG, "%s.poison = %s is outside [0, 1] (the share of user rows replaced)", where, v);
    if (!strcmp(k, "safeinstr_k") && (x < 0 || x != floor(x) || x > 260))
        return st_error(ST_ERR_ARG, "%s.safeinstr_k = %s: expected a whole number in [0, 260] (the half-a refusal pairs)",
                        where, v);
    if (!strcmp(k, "lookahead_m") && (x < 1 || x != floor(x) || x > 1e6))
        return st_error(ST_ERR_ARG, "%s.lookahead_m = %s: expected a whole number >= 1", where, v);
    return ST_OK;
}

const char *st_study_defense_get(const st_study_defense *d, const char *key) {
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->keys[i], key)) return d->values[i];
    return NULL;
}

/* The trainer's settings of a run with defense d and finetune f at learning rate lr (validated
 * like `safetune train`'s): the study's fixed keys, then the finetune axis, then the defense's
 * table rows; data keys are skipped (applied to the rows). */
st_status st_study_defense_train_config(const st_study_config *c, const st_study_defense *d, const st_study_finetune *f,
                                        st_train_config *tc) {
    st_status s = ST_OK;
    if (f) {
        tc->finetune = f->finetune;
        if (f->finetune == ST_FINETUNE_LORA) {
            tc->lora.r = f->lora_r;
            tc->lora.alpha = f->lora_alpha;
            tc->lora.dropout = f->lora_dropout;
            s = st_train_setting_set(tc, st_train_setting_find("lora_targets"), f->lora_targets);
            if (s) return s;
        }
    }
    for (size_t i = 0; d && i < d->n && !s; i++) {
        if (in_list(DATA_KEYS, d->keys[i])) continue;
        s = st_train_setting_set(tc, st_train_setting_find(d->keys[i]), d->values[i]);
    }
    (void)c;
    return s;
}

static st_status get_defenses(const cJSON *root, const origins *os, st_study_config *c) {
    const char *src = origin_get(os, "defense");
    const cJSON *v = get(root, "defense");
    size_t n = v ? (size_t)cJSON_GetArraySize(v) : 1;
    if (v && n == 0) return st_error(ST_ERR_ARG, "%s: key 'defense': empty list (give at least \"none\")", src);
    c->defenses = calloc(n, sizeof *c->defenses);
    if (!c->defenses) return st_error(ST_ERR_NOMEM, "out of memory");
    c->n_defenses = n;
    if (!v) return (c->defenses[0].name = st_strdup("none")) ? ST_OK : st_error(ST_ERR_NOMEM, "out of memory");
    size_t i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        st_study_defense *d = &c->defenses[i];
        char where[96];
        snprintf(where, sizeof where, "defense[%zu]", i);
        if (cJSON_IsString(e)) {
            if (strcmp(e->valuestring, "none"))
                return st_error(ST_ERR_ARG, "%s: key '%s': unknown defense '%s': a defense is a name plus training "
                                "settings, e.g. {\"name\": \"l2sp\", \"l2sp_alpha\": 0.01} or {\"name\": \"safeinstr\", "
                                "\"safeinstr_k\": 135}; only \"none\" (plain fine-tuning) stands alone", src, where,
                                e->valuestring);
            if (!(d->name = st_strdup("none"))) return st_error(ST_ERR_NOMEM, "out of memory");
        } else if (cJSON_IsObject(e)) {
            const cJSON *nm = get(e, "name");
            if (!cJSON_IsString(nm))
                return st_error(ST_ERR_ARG, "%s: key '%s.name': every defense needs a \"name\" (a string)", src, where);
            if (!name_ok(nm->valuestring))
                return st_error(ST_ERR_ARG, "%s: key '%s.name': '%s' must be 1-40 characters of a-z, 0-9, '_', '-', '.' "
                                "(it goes into run ids)", src, where, nm->valuestring);
            if (!(d->name = st_strdup(nm->valuestring))) return st_error(ST_ERR_NOMEM, "out of memory");
            size_t nk = (size_t)cJSON_GetArraySize(e) - 1;
            d->keys = calloc(nk + 1, sizeof *d->keys);
            d->values = calloc(nk + 1, sizeof *d->values);
            if (!d->keys || !d->values) return st_error(ST_ERR_NOMEM, "out of memory");
            for (const cJSON *kv = e->child; kv; kv = kv->next) {
                const char *k = kv->string;
                if (!strcmp(k, "name")) continue;
                const st_train_setting *row = st_train_setting_find(k);
                int data = in_list(DATA_KEYS, k);
                if (row && strcmp(row->key, k)) row = NULL; /* JSON keys only, not flags */
                if (!row && !data) {
                    size_t nrows, best_d = 99;
                    const st_train_setting *rows = st_train_settings(&nrows);
                    const char *best = NULL;
                    for (size_t q = 0; q < nrows; q++) {
                        size_t dd = st_edit_distance(k, rows[q].key);
                        if (dd < best_d && !in_list(GRID_OWNED, rows[q].key)) { best_d = dd; best = rows[q].key; }
                    }
                    for (size_t q = 0; DATA_KEYS[q]; q++) {
                        size_t dd = st_edit_distance(k, DATA_KEYS[q]);
                        if (dd < best_d) { best_d = dd; best = DATA_KEYS[q]; }
                    }
                    if (best && best_d <= 3)
                        return st_error(ST_ERR_ARG, "%s: key '%s.%s': unknown training setting (did you mean '%s'?)", src,
                                        where, k, best);
                    return st_error(ST_ERR_ARG, "%s: key '%s.%s': unknown training setting (a defense takes the keys of "
                                    "`safetune train`'s settings table and safeinstr_k, poison, lookahead, lookahead_m, "
                                    "lookahead_prefix)", src, where, k);
                }
                if (row && in_list(GRID_OWNED, k))
                    return st_error(ST_ERR_ARG, "%s: key '%s.%s': set by the grid for every run, not by a defense (use the "
                                    "top-level key)", src, where, k);
                if (row && (!strcmp(k, "finetune") || !strncmp(k, "lora_", 5)))
                    return st_error(ST_ERR_ARG, "%s: key '%s.%s': LoRA settings belong to the finetune axis (key "
                                    "'finetune'), not to a defense", src, where, k);
                char *t = value_text(kv);
                if (!t)
                    return st_error(ST_ERR_ARG, "%s: key '%s.%s': expected a number or a string, got %s", src, where, k,
                                    jtype(kv));
                d->keys[d->n] = st_strdup(k);
                d->values[d->n++] = t;
                if (!d->keys[d->n - 1]) return st_error(ST_ERR_NOMEM, "out of memory");
                st_status s = ST_OK;
                if (data) s = data_key_check(k, t, where);
                else {
                    st_train_config tc;
                    st_train_config_default(&tc);
                    char def[128], now[128];
                    st_train_setting_text(&tc, row, def, sizeof def);
                    s = st_train_setting_set(&tc, row, t);
                    st_train_setting_text(&tc, row, now, sizeof now);
                    /* a safety-data row set away from its default (off / 0) trains on the alignment set */
                    if (!s && st_train_setting_safety_data(row) && strcmp(def, now)) d->safety_data = d->needs_align = 1;
                }
                if (s) {
                    char msg[512];
                    snprintf(msg, sizeof msg, "%s", st_last_error());
                    return st_error(ST_ERR_ARG, "%s: key '%s.%s': %s", src, where, k, msg);
                }
                if (!strcmp(k, "safeinstr_k") && strtod(t, NULL) > 0) d->safety_data = d->needs_align = 1;
                if (!strcmp(k, "poison") && strtod(t, NULL) > 0) d->needs_align = 1;
            }
            if (!strcmp(d->name, "none") && d->n)
                return st_error(ST_ERR_ARG, "%s: key '%s': \"none\" is plain fine-tuning and takes no settings (name this "
                                "defense otherwise)", src, where);
            if (strcmp(d->name, "none") && !d->n)
                return st_error(ST_ERR_ARG, "%s: key '%s': defense '%s' sets no training setting (it would be plain "
                                "fine-tuning: call it \"none\")", src, where, d->name);
            const char *la = st_study_defense_get(d, "lookahead");
            if (st_study_defense_get(d, "lookahead_m") && !(la && !strcmp(la, "real")))
                return st_error(ST_ERR_ARG, "%s: key '%s.lookahead_m': applies to lookahead \"real\" only", src, where);
            if (st_study_defense_get(d, "lookahead_prefix") && !(la && !strcmp(la, "virtual")))
                return st_error(ST_ERR_ARG, "%s: key '%s.lookahead_prefix': applies to lookahead \"virtual\" only", src, where);
        } else
            return st_error(ST_ERR_ARG, "%s: key '%s': expected \"none\" or an object {\"name\": ..., settings}, got %s", src,
                            where, jtype(e));
        for (size_t j = 0; j < i; j++)
            if (!strcmp(c->defenses[j].name, d->name))
                return st_error(ST_ERR_ARG, "%s: key '%s': name '%s' used twice", src, where, d->name);
    }
    return ST_OK;
}

static st_status get_finetunes(const cJSON *root, const origins *os, st_study_config *c) {
    const char *src = origin_get(os, "finetune");
    const cJSON *v = get(root, "finetune");
    size_t n = v ? (size_t)cJSON_GetArraySize(v) : 1;
    if (v && n == 0) return st_error(ST_ERR_ARG, "%s: key 'finetune': empty list (give \"full\" and/or \"lora\")", src);
    c->finetunes = calloc(n, sizeof *c->finetunes);
    if (!c->finetunes) return st_error(ST_ERR_NOMEM, "out of memory");
    c->n_finetunes = n;
    st_train_config d0;
    st_train_config_default(&d0);
    for (size_t i = 0; i < n; i++) {
        st_study_finetune *f = &c->finetunes[i];
        const cJSON *e = v ? cJSON_GetArrayItem(v, (int)i) : NULL;
        char where[64];
        snprintf(where, sizeof where, "finetune[%zu]", i);
        st_train_config tc = d0;
        const char *mode = !e ? "full" : cJSON_IsString(e) ? e->valuestring : NULL;
        const cJSON *nm = NULL;
        if (e && cJSON_IsObject(e)) {
            const cJSON *m = get(e, "finetune");
            if (!cJSON_IsString(m))
                return st_error(ST_ERR_ARG, "%s: key '%s.finetune': expected \"full\" or \"lora\"", src, where);
            mode = m->valuestring;
            nm = get(e, "name");
            if (nm && (!cJSON_IsString(nm) || !name_ok(nm->valuestring)))
                return st_error(ST_ERR_ARG, "%s: key '%s.name': expected 1-40 characters of a-z, 0-9, '_', '-', '.'", src,
                                where);
        } else if (e && !cJSON_IsString(e))
            return st_error(ST_ERR_ARG, "%s: key '%s': expected \"full\", \"lora\" or an object {\"finetune\": \"lora\", "
                            "\"lora_r\": ...}, got %s", src, where, jtype(e));
        st_status s = st_train_setting_set(&tc, st_train_setting_find("finetune"), mode);
        if (s) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", st_last_error());
            return st_error(ST_ERR_ARG, "%s: key '%s': %s", src, where, msg);
        }
        for (const cJSON *kv = e && cJSON_IsObject(e) ? e->child : NULL; kv; kv = kv->next) {
            if (!strcmp(kv->string, "finetune") || !strcmp(kv->string, "name")) continue;
            if (strncmp(kv->string, "lora_", 5) || !st_train_setting_find(kv->string))
                return st_error(ST_ERR_ARG, "%s: key '%s.%s': unknown (a finetune entry takes finetune, name, lora_r, "
                                "lora_alpha, lora_dropout, lora_targets)", src, where, kv->string);
            if (tc.finetune == ST_FINETUNE_FULL)
                return st_error(ST_ERR_ARG, "%s: key '%s.%s': applies to LoRA: set \"finetune\": \"lora\" (or drop it)", src,
                                where, kv->string);
            char *t = value_text(kv);
            if (!t) return st_error(ST_ERR_ARG, "%s: key '%s.%s': expected a number or a string", src, where, kv->string);
            s = st_train_setting_set(&tc, st_train_setting_find(kv->string), t);
            free(t);
            if (s) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", st_last_error());
                return st_error(ST_ERR_ARG, "%s: key '%s.%s': %s", src, where, kv->string, msg);
            }
        }
        f->finetune = tc.finetune;
        f->lora_r = tc.lora.r;
        f->lora_alpha = tc.lora.alpha;
        f->lora_dropout = tc.lora.dropout;
        char tg[160];
        st_lora_targets_format(tc.lora.targets, tg, sizeof tg);
        f->lora_targets = st_strdup(tg);
        f->name = st_strdup(nm ? nm->valuestring : st_name_of(st_finetune_names, tc.finetune));
        if (!f->lora_targets || !f->name) return st_error(ST_ERR_NOMEM, "out of memory");
        for (size_t j = 0; j < i; j++)
            if (!strcmp(c->finetunes[j].name, f->name))
                return st_error(ST_ERR_ARG, "%s: key '%s': name '%s' used twice (give each LoRA setting a distinct \"name\")",
                                src, where, f->name);
    }
    return ST_OK;
}

static st_status get_merges(const cJSON *root, const origins *os, st_study_config *c) {
    const char *src = origin_get(os, "merge");
    const cJSON *v = get(root, "merge");
    size_t n = v ? (size_t)cJSON_GetArraySize(v) : 0;
    if (!n) return ST_OK;
    if (!(c->merge = calloc(n, sizeof *c->merge))) return st_error(ST_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, (int)i);
        if (!cJSON_IsNumber(e))
            return st_error(ST_ERR_ARG, "%s: key 'merge[%zu]': expected a number λ in [0, 1] (the weight on the fine-tuned "
                            "weights), got %s", src, i, jtype(e));
        double x = e->valuedouble;
        if (!(x >= 0 && x <= 1))
            return st_error(ST_ERR_ARG, "%s: key 'merge[%zu]': lambda %g is outside [0, 1] (θ = (1−λ)·θ0 + λ·θ_ft)", src, i, x);
        for (size_t j = 0; j < i; j++)
            if (c->merge[j] == x) return st_error(ST_ERR_ARG, "%s: key 'merge[%zu]': duplicate value %g", src, i, x);
        c->merge[c->n_merge++] = x;
    }
    return ST_OK;
}

/* Rows of D_align (st_study_safety_sets) a run of defense d gets, known from the config: half a of
 * the AdvBench rows (st_study_advbench_split: n / 2, 260 of 520), align.n_advbench of them when
 * that is set lower, and never the ST_STUDY_POISON_RESERVE goals a poisoned column keeps apart
 * (an upper bound when both are set: the reserve is drawn per run seed). */
static st_status align_set_rows(const st_study_config *c, const st_study_defense *d, size_t *n) {
    st_prompt_set adv = {0};
    st_status s = st_prompts_load("advbench", c->data_dir, &adv);
    if (s) return s;
    size_t na = adv.n / 2;
    st_prompt_set_free(&adv);
    const char *ps = st_study_defense_get(d, "poison");
    size_t keep = ps && strtod(ps, NULL) > 0 ? (na > ST_STUDY_POISON_RESERVE ? na - ST_STUDY_POISON_RESERVE : 0) : na;
    if (c->align.n_advbench > 0 && (size_t)c->align.n_advbench < keep) keep = (size_t)c->align.n_advbench;
    *n = keep;
    return ST_OK;
}

/* Rules between the axes and the rest of the config, before any training: each defense × finetune
 * × lr validated as `safetune train` would (mutually exclusive settings, lr·α_d < 1, ...), the
 * alignment set present where a defense needs it and large enough for safegrad_align_rows,
 * keep_best not with LoRA. */
static st_status check_axes(const origins *os, st_study_config *c) {
    for (size_t i = 0; i < c->n_defenses; i++) {
        const st_study_defense *d = &c->defenses[i];
        if (d->needs_align && !c->align.enabled) {
            const char *k = st_study_defense_get(d, "safeinstr_k") ? "safeinstr_k"
                            : st_study_defense_get(d, "poison") ? "poison" : NULL;
            for (size_t q = 0; !k && q < d->n; q++) {
                const st_train_setting *row = st_train_setting_find(d->keys[q]);
                if (st_train_setting_safety_data(row)) k = d->keys[q];
            }
            return st_error(ST_ERR_ARG, "%s: key 'defense[%zu].%s': defense '%s' needs the alignment set (the AdvBench "
                            "half-a refusal pairs of the aligned start), and none is given: set align.enabled true",
                            origin_get(os, "defense"), i, k ? k : "?", d->name);
        }
        const char *sg = st_study_defense_get(d, "safegrad");
        if (sg && !strcmp(sg, "on")) {
            size_t avail = 0, rows = 0;
            const char *rt = st_study_defense_get(d, "safegrad_align_rows");
            st_status s = align_set_rows(c, d, &avail);
            if (s) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", st_last_error());
                return st_error(s, "%s: key 'defense[%zu].safegrad': sizing the alignment set: %s", origin_get(os, "defense"),
                                i, msg);
            }
            rows = (size_t)strtod(rt ? rt : st_train_setting_find("safegrad_align_rows")->def, NULL);
            if (rows > avail)
                return st_error(ST_ERR_ARG, "%s: key 'defense[%zu].safegrad_align_rows': %zu is more than the %zu rows of "
                                "the alignment set (the AdvBench half-a refusal pairs of the aligned start%s%s); use at "
                                "most %zu", origin_get(os, "defense"), i, rows, avail,
                                c->align.n_advbench > 0 ? ", align.n_advbench" : "",
                                st_study_defense_get(d, "poison") && strtod(st_study_defense_get(d, "poison"), NULL) > 0
                                    ? ", less the poisoned column's reserve"
                                    : "",
                                avail);
        }
        for (size_t f = 0; f < c->n_finetunes; f++)
            for (size_t l = 0; l < c->n_lr; l++) {
                st_train_config tc;
                st_train_config_default(&tc);
                tc.optim.lr = c->lr[l];
                tc.max_steps = 1;
                st_status s = st_study_defense_train_config(c, d, &c->finetunes[f], &tc);
                if (!s) s = st_train_config_validate(&tc);
                if (s) {
                    char msg[768], lr[32];
                    snprintf(msg, sizeof msg, "%s", st_last_error());
                    return st_error(ST_ERR_ARG, "%s: key 'defense[%zu]' ('%s' with finetune %s, lr %s): %s",
                                    origin_get(os, "defense"), i, d->name, c->finetunes[f].name,
                                    st_study_format_lr(c->lr[l], lr, sizeof lr), msg);
                }
            }
    }
    for (size_t f = 0; f < c->n_finetunes; f++)
        if (c->finetunes[f].finetune == ST_FINETUNE_LORA && c->probe.keep_best)
            return st_error(ST_ERR_ARG, "%s: key 'probe.keep_best': not with finetune lora (finetune[%zu]): keep_best keeps "
                            "full weights; use one or the other", origin_get(os, "probe.keep_best"), f);
    return ST_OK;
}

static st_status extract(cJSON *root, const origins *os, st_study_config *c) {
    st_status s;
    static const char *required[] = {"model", "datasets", "lr", "batch_size"};
    for (size_t i = 0; i < 4; i++)
        if (!get(root, required[i]))
            return st_error(ST_ERR_ARG, "%s: key '%s' is required", c->source, required[i]);
    if (!get(root, "max_steps") && !get(root, "epochs") && !get(root, "train_examples"))
        return st_error(ST_ERR_ARG, "%s: one of keys 'max_steps', 'epochs' or 'train_examples' is required", c->source);

    const cJSON *dd = get(root, "data_dir");
    c->data_dir = st_strdup(cJSON_IsString(dd) ? dd->valuestring : st_prompts_default_data_dir());
    c->model = dupstr(get(root, "model"));
    if (!c->data_dir || !c->model) return st_error(ST_ERR_NOMEM, "out of memory");

    /* datasets */
    const cJSON *ds = get(root, "datasets");
    c->n_datasets = (size_t)cJSON_GetArraySize(ds);
    c->datasets = calloc(c->n_datasets, sizeof *c->datasets);
    if (!c->datasets) return st_error(ST_ERR_NOMEM, "out of memory");
    size_t i = 0;
    for (const cJSON *d = ds->child; d; d = d->next, i++) {
        st_study_dataset *x = &c->datasets[i];
        const char *f = get(d, "format")->valuestring;
        static const char *fmts[] = {"alpaca", "dolly", "orca", "messages"};
        int fi = -1;
        for (int k = 0; k < 4; k++)
            if (!strcmp(f, fmts[k])) fi = k;
        if (fi < 0)
            return st_error(ST_ERR_ARG, "%s: key 'datasets[%zu].format': unknown format '%s' (alpaca, dolly, orca or messages)",
                            origin_get(os, "datasets"), i, f);
        x->format = (st_dataset_format)fi;
        const char *p = get(d, "path")->valuestring;
        x->path = p[0] == '/' ? st_strdup(p) : stu_join(c->data_dir, p);
        if (!x->path) return st_error(ST_ERR_NOMEM, "out of memory");
        if (!stu_exists(x->path))
            return st_error(ST_ERR_IO, "%s: key 'datasets[%zu].path': dataset file '%s' does not exist (relative paths are taken against data_dir '%s')",
                            origin_get(os, "datasets"), i, x->path, c->data_dir);
        const cJSON *lim = get(d, "limit");
        x->limit = lim ? (long)lim->valuedouble : 0;
        if (x->limit < 0)
            return st_error(ST_ERR_ARG, "%s: key 'datasets[%zu].limit': must be >= 0 (0 = all rows)", origin_get(os, "datasets"), i);
        char stem[128];
        const cJSON *nm = get(d, "name");
        x->name = st_strdup(cJSON_IsString(nm) ? nm->valuestring : stem_of(p, stem, sizeof stem));
        for (size_t j = 0; j < i; j++)
            if (!strcmp(c->datasets[j].name, x->name))
                return st_error(ST_ERR_ARG, "%s: key 'datasets[%zu]': name '%s' used twice (set a distinct \"name\")",
                                origin_get(os, "datasets"), i, x->name);
    }
    if (!stu_exists(c->model))
        return st_error(ST_ERR_IO, "%s: key 'model': checkpoint '%s' does not exist (for an HF folder, its config.json alone "
                        "lets --dry-run check the memory the study needs)", origin_get(os, "model"), c->model);

    /* grid lists */
    if ((s = get_double_list(root, "lr", os, 0.0, 1.0, &c->lr, &c->n_lr))) return s;
    if ((s = get_int_list(root, "batch_size", os, 1, &c->batch_size, &c->n_batch_size))) return s;
    if ((s = get_int_list(root, "grad_accum", os, 1, &c->grad_accum, &c->n_grad_accum))) return s;
    if (get(root, "max_steps")) {
        if ((s = get_int_list(root, "max_steps", os, 1, &c->max_steps, &c->n_max_steps))) return s;
    } else if (get(root, "train_examples")) {
        if ((s = get_int_list(root, "train_examples", os, 1, &c->train_examples, &c->n_train_examples))) return s;
        for (size_t a = 0; a < c->n_train_examples; a++)
            for (size_t b = 0; b < c->n_batch_size; b++)
                for (size_t g = 0; g < c->n_grad_accum; g++) {
                    long eb = (long)c->batch_size[b] * c->grad_accum[g];
                    if (c->train_examples[a] % eb)
                        return BAD("train_examples", "%d is not a multiple of the effective batch %ld (batch_size %d x grad_accum %d): "
                                   "steps = train_examples / effective batch must be whole for equal data",
                                   origin_get(os, "train_examples"), "train_examples", c->train_examples[a], eb,
                                   c->batch_size[b], c->grad_accum[g]);
                }
    } else if ((s = get_double_list(root, "epochs", os, 0.0, 1000.0, &c->epochs, &c->n_epochs))) return s;
    if ((s = get_int_list(root, "warmup_steps", os, 0, &c->warmup_steps, &c->n_warmup_steps))) return s;
    const cJSON *sch = get(root, "lr_schedule");
    c->n_lr_schedule = list_len(sch);
    c->lr_schedule = calloc(c->n_lr_schedule, sizeof *c->lr_schedule);
    if (!c->lr_schedule) return st_error(ST_ERR_NOMEM, "out of memory");
    for (i = 0; i < c->n_lr_schedule; i++) {
        const char *v = list_at(sch, i)->valuestring;
        int kind; /* the trainer's name table: the names `safetune train --lr-schedule` takes */
        if (st_name_lookup(st_lr_schedule_names, "lr_schedule", v, &kind) != ST_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", st_last_error());
            return BAD("lr_schedule", "%s", origin_get(os, "lr_schedule"), "lr_schedule", why);
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(c->lr_schedule[j], v))
                return BAD("lr_schedule", "duplicate value '%s'", origin_get(os, "lr_schedule"), "lr_schedule", v);
        c->lr_schedule[i] = st_strdup(v);
    }
    const cJSON *ema = get(root, "ema_decay");
    c->n_ema_decay = list_len(ema);
    c->ema_decay = calloc(c->n_ema_decay, sizeof *c->ema_decay);
    if (!c->ema_decay) return st_error(ST_ERR_NOMEM, "out of memory");
    for (i = 0; i < c->n_ema_decay; i++) {
        const cJSON *e = list_at(ema, i);
        double x = cJSON_IsString(e) ? 0.0 : e->valuedouble;
        if (cJSON_IsNumber(e) && !(x > 0.0 && x < 1.0))
            return BAD("ema_decay", "value %g out of range: use a decay in (0, 1) or \"none\"",
                       origin_get(os, "ema_decay"), "ema_decay", x);
        for (size_t j = 0; j < i; j++)
            if (c->ema_decay[j] == x) return BAD("ema_decay", "duplicate value", origin_get(os, "ema_decay"), "ema_decay");
        c->ema_decay[i] = x;
    }

    /* fixed */
    c->weight_decay = get(root, "weight_decay")->valuedouble;
    if (c->weight_decay < 0) return BAD("weight_decay", "must be >= 0", origin_get(os, "weight_decay"), "weight_decay");
    c->max_grad_norm = get(root, "max_grad_norm")->valuedouble;
    if (c->max_grad_norm < 0) return BAD("max_grad_norm", "must be >= 0 (0 = no clipping)", origin_get(os, "max_grad_norm"), "max_grad_norm");
    if ((s = get_int(root, "max_seq_len", "max_seq_len", os, 8, &c->max_seq_len))) return s;
    const cJSON *sd = get(root, "seed");
    c->n_seeds = list_len(sd);
    c->seeds = calloc(c->n_seeds, sizeof *c->seeds);
    if (!c->seeds) return st_error(ST_ERR_NOMEM, "out of memory");
    for (i = 0; i < c->n_seeds; i++) {
        double x = list_at(sd, i)->valuedouble;
        if (x < 0) return BAD("seed", "must be >= 0", origin_get(os, "seed"), "seed");
        for (size_t j = 0; j < i; j++)
            if (c->seeds[j] == (uint64_t)x) return BAD("seed", "duplicate value %.0f", origin_get(os, "seed"), "seed", x);
        c->seeds[i] = (uint64_t)x;
    }
    c->seed = c->seeds[0];
    c->precision = dupstr(get(root, "precision"));
    int prec;
    if (st_name_lookup(st_precision_names, "precision", c->precision, &prec) != ST_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", st_last_error());
        return BAD("precision", "%s", origin_get(os, "precision"), "precision", why);
    }

    const char *ck = get(root, "checkpoints")->valuestring;
    if (strcmp(ck, "middle") && strcmp(ck, "none"))
        return BAD("checkpoints", "must be \"middle\" (save each run at its middle and end) or \"none\" (got '%s')",
                   origin_get(os, "checkpoints"), "checkpoints", ck);
    c->checkpoints = strcmp(ck, "middle") == 0;

    const cJSON *ev = get(root, "eval");
    c->eval.advbench_split = dupstr(get(ev, "advbench_split"));
    if (strcmp(c->eval.advbench_split, "all") && strcmp(c->eval.advbench_split, "a") && strcmp(c->eval.advbench_split, "b"))
        return BAD("eval.advbench_split", "must be \"all\", \"a\" or \"b\" (got '%s')", origin_get(os, "eval.advbench_split"),
                   "eval.advbench_split", c->eval.advbench_split);
    double sseed = get(ev, "advbench_split_seed")->valuedouble;
    if (sseed < 0) return BAD("eval.advbench_split_seed", "must be >= 0", origin_get(os, "eval.advbench_split_seed"), "eval.advbench_split_seed");
    c->eval.advbench_split_seed = (uint64_t)sseed;
    if ((s = get_int(ev, "advbench_limit", "eval.advbench_limit", os, 0, &c->eval.advbench_limit))) return s;
    { /* AdvBench has 520 goals, each half 260 (st_study_advbench_split): a larger limit would be cut silently */
        const int all = !strcmp(c->eval.advbench_split, "all"), nmax = all ? 520 : 260;
        if (c->eval.advbench_limit > nmax)
            return BAD("eval.advbench_limit", "value %d is more than the %d prompts of %s: use 0 (all of them) or at most %d",
                       origin_get(os, "eval.advbench_limit"), "eval.advbench_limit", c->eval.advbench_limit, nmax,
                       all ? "AdvBench" : "an AdvBench half", nmax);
    }
    if ((s = get_int(ev, "max_new_tokens", "eval.max_new_tokens", os, 1, &c->eval.max_new_tokens))) return s;
    if ((s = get_int(ev, "batch_size", "eval.batch_size", os, 1, &c->eval.batch_size))) return s;
    c->eval.precision = dupstr(get(ev, "precision"));
    if (!c->eval.precision) return st_error(ST_ERR_NOMEM, "out of memory");
    if (strcmp(c->eval.precision, "fp32") && strcmp(c->eval.precision, "bf16"))
        return BAD("eval.precision", "must be \"fp32\" or \"bf16\" (got '%s')", origin_get(os, "eval.precision"),
                   "eval.precision", c->eval.precision);
    c->eval.xstest = cJSON_IsTrue(get(ev, "xstest"));
    if ((s = get_int(ev, "xstest_limit", "eval.xstest_limit", os, 0, &c->eval.xstest_limit))) return s;
    { /* XSTest has 450 prompts, half a 216, half b 234 (st_study_xstest_split; the half of eval.advbench_split) */
        const int nmax = !strcmp(c->eval.advbench_split, "all") ? 450 : !strcmp(c->eval.advbench_split, "a") ? 216 : 234;
        if (c->eval.xstest_limit > nmax)
            return BAD("eval.xstest_limit", "value %d is more than the %d XSTest prompts evaluated (half '%s'): use 0 (all of "
                       "them) or at most %d", origin_get(os, "eval.xstest_limit"), "eval.xstest_limit", c->eval.xstest_limit,
                       nmax, c->eval.advbench_split, nmax);
    }
    c->eval.truthfulqa = cJSON_IsTrue(get(ev, "truthfulqa"));
    if ((s = get_int(ev, "truthfulqa_limit", "eval.truthfulqa_limit", os, 0, &c->eval.truthfulqa_limit))) return s;
    if ((s = get_int(ev, "val_examples", "eval.val_examples", os, 0, &c->eval.val_examples))) return s;
    c->eval.judge_url = dupstr(get(ev, "judge_url"));
    c->eval.judge_model = dupstr(get(ev, "judge_model"));
    if ((s = get_int(ev, "benchmark_limit", "eval.benchmark_limit", os, 0, &c->eval.benchmark_limit))) return s;
    if ((s = get_benchmarks(get(ev, "benchmarks"), os, c))) return s;

    const cJSON *pr = get(root, "probe");
    if ((s = get_int(pr, "every", "probe.every", os, 0, &c->probe.every))) return s;
    if ((s = get_int(pr, "n_prompts", "probe.n_prompts", os, 1, &c->probe.n_prompts))) return s;
    if ((s = get_int(pr, "max_new_tokens", "probe.max_new_tokens", os, 1, &c->probe.max_new_tokens))) return s;
    c->probe.stop_asr_above = get(pr, "stop_asr_above")->valuedouble;
    if (c->probe.stop_asr_above < 0 || c->probe.stop_asr_above > 1)
        return BAD("probe.stop_asr_above", "must be in [0, 1] (1 = never stop)", origin_get(os, "probe.stop_asr_above"),
                   "probe.stop_asr_above");
    c->probe.keep_best = cJSON_IsTrue(get(pr, "keep_best"));

    const cJSON *rp = get(root, "report");
    c->report.utility_metric = dupstr(get(rp, "utility_metric"));
    if (!strcmp(c->report.utility_metric, "judge_mean"))
        return BAD("report.utility_metric", "judge_mean is the judge's harmfulness score of the AdvBench answers "
                   "(a safety measure, reported in results.csv), not a utility metric: use val_loss or truthfulqa_mc1",
                   origin_get(os, "report.utility_metric"), "report.utility_metric");
    if (strcmp(c->report.utility_metric, "val_loss") && strcmp(c->report.utility_metric, "truthfulqa_mc1"))
        return BAD("report.utility_metric", "unknown metric '%s' (val_loss or truthfulqa_mc1)",
                   origin_get(os, "report.utility_metric"), "report.utility_metric", c->report.utility_metric);
    if (!strcmp(c->report.utility_metric, "truthfulqa_mc1") && !c->eval.truthfulqa)
        return BAD("report.utility_metric", "truthfulqa_mc1 needs eval.truthfulqa = true",
                   origin_get(os, "report.utility_metric"), "report.utility_metric");
    if (c->eval.judge_url && !c->eval.judge_model)
        return BAD("eval.judge_model", "eval.judge_url needs eval.judge_model (the model name sent to the judge)",
                   origin_get(os, "eval.judge_url"), "eval.judge_model");
    c->report.utility_tolerance = get(rp, "utility_tolerance")->valuedouble;
    if (c->report.utility_tolerance < 0)
        return BAD("report.utility_tolerance", "must be >= 0", origin_get(os, "report.utility_tolerance"), "report.utility_tolerance");
    c->report.plots = cJSON_IsTrue(get(rp, "plots"));

    const cJSON *es = get(root, "estimate");
    c->estimate.train_tokens_per_s = get(es, "train_tokens_per_s")->valuedouble;
    c->estimate.gen_tokens_per_s = get(es, "gen_tokens_per_s")->valuedouble;
    c->estimate.example_tokens = get(es, "example_tokens")->valuedouble;
    if (c->estimate.train_tokens_per_s <= 0 || c->estimate.gen_tokens_per_s <= 0 || c->estimate.example_tokens <= 0)
        return st_error(ST_ERR_ARG, "%s: key 'estimate': speeds and example_tokens must be > 0", origin_get(os, "estimate"));

    const cJSON *al = get(root, "align");
    c->align.enabled = cJSON_IsTrue(get(al, "enabled"));
    if ((s = get_int(al, "n_alpaca", "align.n_alpaca", os, 0, &c->align.n_alpaca))) return s;
    if ((s = get_int(al, "n_advbench", "align.n_advbench", os, 0, &c->align.n_advbench))) return s;
    if (c->align.n_advbench > 260) /* half a's goals (st_study_advbench_split), as `safetune align --n-advbench` */
        return BAD("align.n_advbench", "value %d is more than the 260 goals of AdvBench half a: use 0 (all of them) or at "
                   "most 260", origin_get(os, "align.n_advbench"), "align.n_advbench", c->align.n_advbench);
    if ((s = get_int(al, "xstest_safe_repeat", "align.xstest_safe_repeat", os, 1, &c->align.xstest_safe_repeat))) return s;
    if (c->align.xstest_safe_repeat > 100) /* the bounds of `safetune align --xstest-safe-repeat` */
        return BAD("align.xstest_safe_repeat", "value %d must be <= 100", origin_get(os, "align.xstest_safe_repeat"),
                   "align.xstest_safe_repeat", c->align.xstest_safe_repeat);
    if ((s = get_int(al, "max_steps", "align.max_steps", os, 1, &c->align.max_steps))) return s;
    if ((s = get_int(al, "batch_size", "align.batch_size", os, 1, &c->align.batch_size))) return s;
    if ((s = get_int(al, "answer_max_new_tokens", "align.answer_max_new_tokens", os, 1, &c->align.answer_max_new_tokens)))
        return s;
    c->align.lr = get(al, "lr")->valuedouble;
    if (!(c->align.lr > 0 && c->align.lr < 1))
        return BAD("align.lr", "must be in (0, 1)", origin_get(os, "align.lr"), "align.lr");
    c->align.dir = dupstr(get(al, "dir"));
    if (c->align.enabled) {
        if (strcmp(c->eval.advbench_split, "b"))
            return BAD("eval.advbench_split", "must be \"b\" when align.enabled is true (the aligned start is trained on half a)",
                       origin_get(os, "eval.advbench_split"), "eval.advbench_split");
        for (i = 0; i < c->n_datasets; i++)
            if (c->datasets[i].format == ST_FMT_ALPACA && c->datasets[i].limit == 0 && c->align.n_alpaca > 0)
                return st_error(ST_ERR_ARG, "%s: key 'datasets[%zu].limit': must be > 0 when align.enabled is true (the last align.n_alpaca = %d Alpaca rows are for the aligned start; set limit = rows - %d)",
                                origin_get(os, "datasets"), i, c->align.n_alpaca, c->align.n_alpaca);
    }

    c->report.distance_tolerance = get(rp, "distance_tolerance")->valuedouble;
    if (!(c->report.distance_tolerance >= 0))
        return BAD("report.distance_tolerance", "must be >= 0 (relative: 0.1 = within 10%%)",
                   origin_get(os, "report.distance_tolerance"), "report.distance_tolerance");
    c->report.safety_margin = get(rp, "safety_margin")->valuedouble;
    if (!(c->report.safety_margin >= 0 && c->report.safety_margin < 1))
        return BAD("report.safety_margin", "must be in [0, 1) (an ASR difference: 0.05 = 5 points)",
                   origin_get(os, "report.safety_margin"), "report.safety_margin");
    if ((s = get_defenses(root, os, c)) || (s = get_finetunes(root, os, c)) || (s = get_merges(root, os, c)) ||
        (s = check_axes(os, c)))
        return s;

    if (c->report.plots && (s = st_study_gnuplot_check()))
        return st_error_wrap(s, "%s: key 'report.plots' is true", origin_get(os, "report.plots"));

    /* normalised JSON and fingerprint (report, estimate and checkpoints settings do not change results) */
    cJSON *can = canonical(root, K_TOP, 0), *fp = canonical(root, K_TOP, 1);
    char *t = cJSON_PrintUnformatted(can), *tf = cJSON_PrintUnformatted(fp);
    cJSON_Delete(can);
    cJSON_Delete(fp);
    if (!t || !tf) { free(t); free(tf); return st_error(ST_ERR_NOMEM, "out of memory"); }
    c->json = t;
    stu_fnv1a_hex(tf, c->fingerprint);
    free(tf);
    return ST_OK;
}

st_status st_study_config_load(const char *preset, const char *config_path, st_study_config *out) {
    memset(out, 0, sizeof *out);
    if (!preset && !config_path) return st_error(ST_ERR_ARG, "study: give --config FILE or --preset NAME");
    char psrc[80] = "";
    cJSON *root = NULL, *pj = NULL, *fj = NULL;
    char *ftext = NULL;
    origins *os = calloc(1, sizeof *os);
    st_status s = os ? ST_OK : st_error(ST_ERR_NOMEM, "out of memory");
    if (!s) s = parse_json(DEFAULTS, "defaults", &root);
    if (!s && preset) {
        const char *pt = st_study_preset_json(preset);
        snprintf(psrc, sizeof psrc, "preset:%s", preset);
        if (!pt) {
            stu_buf b = {0};
            for (size_t i = 0; st_study_preset_names[i]; i++) stu_printf(&b, "%s%s", i ? ", " : "", st_study_preset_names[i]);
            s = st_error(ST_ERR_ARG, "unknown preset '%s' (known: %s)", preset, b.p ? b.p : "");
            stu_buf_free(&b);
        }
        if (!s) s = parse_json(pt, psrc, &pj);
        if (!s) s = check_obj(pj, K_TOP, psrc, "");
        if (!s) s = check_exclusive(pj, psrc);
        if (!s) merge(root, pj, os, psrc);
    }
    if (!s && config_path) {
        size_t len;
        s = st_read_file(config_path, &ftext, &len);
        if (s) s = st_error(ST_ERR_IO, "%s: cannot read the study config", config_path);
        if (!s) s = parse_json(ftext, config_path, &fj);
        if (!s) s = check_obj(fj, K_TOP, config_path, "");
        if (!s) s = check_exclusive(fj, config_path);
        if (!s) merge(root, fj, os, config_path);
    }
    if (!s) {
        char src[4200];
        if (preset && config_path) snprintf(src, sizeof src, "%s + %s", psrc, config_path);
        else snprintf(src, sizeof src, "%s", preset ? psrc : config_path);
        out->source = st_strdup(src);
        s = extract(root, os, out);
    }
    cJSON_Delete(root);
    cJSON_Delete(pj);
    cJSON_Delete(fj);
    free(ftext);
    free(os);
    if (s) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", st_last_error());
        st_study_config_free(out);
        st_error(s, "%s", msg);
    }
    return s;
}

void st_study_config_free(st_study_config *c) {
    if (!c) return;
    free(c->model);
    for (size_t i = 0; c->datasets && i < c->n_datasets; i++) {
        free(c->datasets[i].path);
        free(c->datasets[i].name);
    }
    free(c->datasets);
    free(c->data_dir);
    free(c->lr);
    free(c->batch_size);
    free(c->grad_accum);
    free(c->max_steps);
    free(c->epochs);
    free(c->train_examples);
    free(c->seeds);
    for (size_t i = 0; c->lr_schedule && i < c->n_lr_schedule; i++) free(c->lr_schedule[i]);
    free(c->lr_schedule);
    free(c->warmup_steps);
    free(c->ema_decay);
    for (size_t i = 0; c->defenses && i < c->n_defenses; i++) {
        for (size_t k = 0; k < c->defenses[i].n; k++) {
            free(c->defenses[i].keys[k]);
            free(c->defenses[i].values[k]);
        }
        free(c->defenses[i].keys);
        free(c->defenses[i].values);
        free(c->defenses[i].name);
    }
    free(c->defenses);
    for (size_t i = 0; c->finetunes && i < c->n_finetunes; i++) {
        free(c->finetunes[i].name);
        free(c->finetunes[i].lora_targets);
    }
    free(c->finetunes);
    free(c->merge);
    free(c->precision);
    free(c->eval.advbench_split);
    free(c->eval.judge_url);
    free(c->eval.precision);
    free(c->eval.judge_model);
    for (size_t i = 0; i < c->eval.n_benchmarks; i++) {
        if (c->eval.benchmarks) free(c->eval.benchmarks[i]);
        if (c->eval.benchmark_tags) free(c->eval.benchmark_tags[i]);
    }
    free(c->eval.benchmarks);
    free(c->eval.benchmark_tags);
    free(c->eval.benchmark_n);
    free(c->report.utility_metric);
    free(c->align.dir);
    free(c->source);
    free(c->json);
    memset(c, 0, sizeof *c);
}
