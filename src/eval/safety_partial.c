/* safety_partial.c - the answers of an unfinished `eval safety` run (safety_eval.h): appended to
 * OUT/responses.partial.jsonl one whole line at a time as each finishes, read back on a rerun.
 *
 * Line 1:  {"safetune_partial":"eval safety","settings":{...}}
 * Then:    {"index":I,"id":"...","prompt_fnv1a64":"16 hex","finish":"stop"|"length",
 *           "prompt_tokens":N,"ids":[...],"response":"..."}   (response: for a reader only; the
 *           text is rebuilt from ids, as the uninterrupted run decodes it)
 * A line is one write(2) of whole bytes ending in '\n', then fdatasync, so a kill leaves at most
 * one torn last line (no '\n'): it is dropped and the file cut back to the last whole line. */
#include "safetune/safety_eval.h"

#include "eval/eval_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PARTIAL_TAG "eval safety"

struct st_safety_partial {
    char *path;
    int fd;
    cJSON **lines;   /* [n] answers read back (index order of the file) */
    size_t n, cap;
    size_t appended; /* answers written by this run */
    off_t size;      /* bytes of whole lines in the file */
};

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Writes all of buf (short writes and EINTR retried). errno set on failure. */
static int write_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Top-level keys that name files as typed ("run/final" and "$PWD/run/final" are one adapter):
 * skipped when both sides carry the same model_hash, the hash of the weights they name. */
static int path_key(const char *k) { return !strcmp(k, "model") || !strcmp(k, "model_path") || !strcmp(k, "adapter"); }

/* "key: 16 there, 32 here" for the first value of want that have lacks or holds otherwise
 * (objects compared key by key, depth first); strict: a key of have that want lacks also differs;
 * skip_paths: path_key keys of the top level are not compared. */
static int diff_json(const cJSON *want, const cJSON *have, int strict, int skip_paths, char *key, size_t kcap,
                     char *what, size_t wcap) {
    if (cJSON_IsObject(want) && cJSON_IsObject(have)) {
        const size_t kl = strlen(key);
        const cJSON *w;
        cJSON_ArrayForEach(w, want) {
            if (skip_paths && !kl && path_key(w->string)) continue;
            snprintf(key + kl, kcap - kl, "%s%s", kl ? "." : "", w->string);
            const cJSON *h = cJSON_GetObjectItemCaseSensitive(have, w->string);
            if (!h) {
                char *tw = cJSON_PrintUnformatted(w);
                snprintf(what, wcap, "%s: %s here, absent in the earlier result", key, tw ? tw : "?");
                free(tw);
                return 1;
            }
            if (diff_json(w, h, strict, 0, key, kcap, what, wcap)) return 1;
            key[kl] = '\0';
        }
        if (strict) {
            const cJSON *h;
            cJSON_ArrayForEach(h, have) {
                if (cJSON_GetObjectItemCaseSensitive(want, h->string)) continue;
                if (skip_paths && !kl && path_key(h->string)) continue;
                snprintf(key + kl, kcap - kl, "%s%s", kl ? "." : "", h->string);
                snprintf(what, wcap, "%s: set in the earlier result, absent here", key);
                return 1;
            }
        }
        return 0;
    }
    if (cJSON_Compare(want, have, 1)) return 0;
    char *tw = cJSON_PrintUnformatted(want), *th = cJSON_PrintUnformatted(have);
    snprintf(what, wcap, "%s: %s there, %s here", key[0] ? key : "settings", th ? th : "?", tw ? tw : "?");
    free(tw);
    free(th);
    return 1;
}

int st_safety_settings_diff(const cJSON *want, const cJSON *have, int strict, char *what, size_t cap) {
    char key[512] = "";
    if (cap) what[0] = '\0';
    const cJSON *hw = cJSON_GetObjectItemCaseSensitive(want, "model_hash");
    const cJSON *hh = cJSON_GetObjectItemCaseSensitive(have, "model_hash");
    const int same_weights = hw && hh && cJSON_Compare(hw, hh, 1);
    return diff_json(want, have, strict, same_weights, key, sizeof key, what, cap);
}

/* Whole lines of data[0..len): *whole = bytes up to the last '\n'. */
static size_t whole_prefix(const char *data, size_t len) {
    size_t w = len;
    while (w > 0 && data[w - 1] != '\n') w--;
    return w;
}

st_status st_safety_partial_settings(const char *path, cJSON **settings) {
    *settings = NULL;
    char *data = NULL;
    size_t len = 0;
    if (access(path, F_OK) != 0) return ST_OK;
    st_status s = st_read_file(path, &data, &len);
    if (s) return s;
    size_t e = 0;
    while (e < len && data[e] != '\n') e++;
    if (e == len) { /* no whole header line: torn when the run began; nothing kept */
        free(data);
        return ST_OK;
    }
    cJSON *h = cJSON_ParseWithLength(data, e);
    free(data);
    const cJSON *tag = cJSON_GetObjectItemCaseSensitive(h, "safetune_partial");
    const int ours = cJSON_IsString(tag) && !strcmp(tag->valuestring, PARTIAL_TAG);
    cJSON *st = cJSON_DetachItemFromObjectCaseSensitive(h, "settings");
    cJSON_Delete(h);
    if (!ours || !cJSON_IsObject(st)) {
        cJSON_Delete(st);
        return st_error(ST_ERR_FORMAT, "%s: line 1: not the header of a safetune eval safety partial file "
                        "(remove the file, or choose another --out)", path);
    }
    *settings = st;
    return ST_OK;
}

static st_status partial_create(st_safety_partial *p, const cJSON *settings) {
    p->fd = open(p->path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (p->fd < 0) return st_error(ST_ERR_IO, "%s: cannot create: %s", p->path, strerror(errno));
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "safetune_partial", PARTIAL_TAG);
    cJSON_AddItemToObject(h, "settings", cJSON_Duplicate(settings, 1));
    char *t = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!t) return st_error(ST_ERR_NOMEM, "%s: out of memory", p->path);
    size_t l = strlen(t);
    char *line = realloc(t, l + 2);
    if (!line) {
        free(t);
        return st_error(ST_ERR_NOMEM, "%s: out of memory", p->path);
    }
    line[l] = '\n';
    const int bad = write_all(p->fd, line, l + 1) != 0 || fdatasync(p->fd) != 0;
    const int e = errno;
    free(line);
    if (bad) return st_error(ST_ERR_IO, "%s: cannot write: %s", p->path, strerror(e));
    p->size = (off_t)(l + 1);
    return ST_OK;
}

/* Reads the answer lines after the header; drops a torn last line (cutting the file back). */
static st_status partial_load(st_safety_partial *p, const cJSON *settings) {
    char *data = NULL;
    size_t len = 0;
    st_status s = st_read_file(p->path, &data, &len);
    if (s) return s;
    const size_t whole = whole_prefix(data, len);
    size_t pos = 0, line = 0;
    while (pos < whole) {
        line++;
        size_t e = pos;
        while (data[e] != '\n') e++;
        cJSON *o = cJSON_ParseWithLength(data + pos, e - pos);
        pos = e + 1;
        if (line == 1) {
            char what[1024];
            const cJSON *hs = cJSON_GetObjectItemCaseSensitive(o, "settings");
            const cJSON *tag = cJSON_GetObjectItemCaseSensitive(o, "safetune_partial");
            if (!cJSON_IsObject(hs) || !cJSON_IsString(tag) || strcmp(tag->valuestring, PARTIAL_TAG))
                s = st_error(ST_ERR_FORMAT, "%s: line 1: not a partial-file header", p->path);
            else if (st_safety_settings_diff(settings, hs, 1, what, sizeof what))
                s = st_error(ST_ERR_ARG, "%s: its answers were generated with other settings (%s)", p->path, what);
            cJSON_Delete(o);
            if (s) goto out;
            continue;
        }
        const cJSON *ji = cJSON_GetObjectItemCaseSensitive(o, "index");
        const cJSON *jids = cJSON_GetObjectItemCaseSensitive(o, "ids");
        const cJSON *jf = cJSON_GetObjectItemCaseSensitive(o, "finish");
        const cJSON *jt = cJSON_GetObjectItemCaseSensitive(o, "prompt_tokens");
        if (!cJSON_IsNumber(ji) || ji->valuedouble < 0 || !cJSON_IsArray(jids) || !cJSON_IsString(jf) ||
            !cJSON_IsNumber(jt) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "id")) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "prompt_fnv1a64"))) {
            cJSON_Delete(o);
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: not a saved answer (the file is damaged: remove it to "
                         "generate every answer again)", p->path, line);
            goto out;
        }
        if (p->n == p->cap) {
            size_t nc = p->cap ? 2 * p->cap : 64;
            cJSON **q = realloc(p->lines, nc * sizeof *q);
            if (!q) {
                cJSON_Delete(o);
                s = st_error(ST_ERR_NOMEM, "%s: out of memory", p->path);
                goto out;
            }
            p->lines = q;
            p->cap = nc;
        }
        p->lines[p->n++] = o;
    }
    if (line == 0) { /* the header itself was torn: start again */
        free(data);
        data = NULL;
        return partial_create(p, settings);
    }
    p->fd = open(p->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (p->fd < 0) {
        s = st_error(ST_ERR_IO, "%s: cannot open for appending: %s", p->path, strerror(errno));
        goto out;
    }
    p->size = (off_t)whole;
    if (whole < len) { /* a torn last line: the run was killed while writing it */
        st_log_warn("%s: dropping its torn last line (%zu bytes; the run was killed while writing it)", p->path,
                    len - whole);
        if (ftruncate(p->fd, (off_t)whole) != 0 || fdatasync(p->fd) != 0)
            s = st_error(ST_ERR_IO, "%s: cannot cut off its torn last line: %s", p->path, strerror(errno));
    }
out:
    free(data);
    return s;
}

st_status st_safety_partial_open(const char *path, const cJSON *settings, st_safety_partial **out) {
    *out = NULL;
    st_safety_partial *p = calloc(1, sizeof *p);
    if (!p || !(p->path = st_strdup(path))) {
        free(p);
        return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
    }
    p->fd = -1;
    st_status s = access(path, F_OK) == 0 ? partial_load(p, settings) : partial_create(p, settings);
    if (s) {
        st_safety_partial_close(p);
        return s;
    }
    *out = p;
    return ST_OK;
}

size_t st_safety_partial_count(const st_safety_partial *p) { return p ? p->n : 0; }

size_t st_safety_partial_appended(const st_safety_partial *p) { return p ? p->appended : 0; }

void st_safety_partial_close(st_safety_partial *p) {
    if (!p) return;
    if (p->fd >= 0) close(p->fd);
    for (size_t i = 0; i < p->n; i++) cJSON_Delete(p->lines[i]);
    free(p->lines);
    free(p->path);
    free(p);
}

st_status st_safety_partial_resume(void *ud, const st_prompt_set *ps, st_generation *gens, unsigned char *have) {
    st_safety_partial *p = ud;
    for (size_t k = 0; k < p->n; k++) {
        const cJSON *o = p->lines[k];
        const double di = cJSON_GetObjectItemCaseSensitive(o, "index")->valuedouble;
        const char *id = cJSON_GetObjectItemCaseSensitive(o, "id")->valuestring;
        const char *fnv = cJSON_GetObjectItemCaseSensitive(o, "prompt_fnv1a64")->valuestring;
        const cJSON *jids = cJSON_GetObjectItemCaseSensitive(o, "ids");
        const char *fin = cJSON_GetObjectItemCaseSensitive(o, "finish")->valuestring;
        const double pt = cJSON_GetObjectItemCaseSensitive(o, "prompt_tokens")->valuedouble;
        const size_t line = k + 2;
        if (di >= (double)ps->n || di != (double)(size_t)di)
            return st_error(ST_ERR_ARG, "%s: line %zu: answer %.0f, but the prompt set has %zu prompts (it changed "
                            "since: remove the file to start again)", p->path, line, di, ps->n);
        const size_t i = (size_t)di;
        char hex[17];
        snprintf(hex, sizeof hex, "%016" PRIx64, fnv1a64(ps->items[i].prompt));
        if (strcmp(id, ps->items[i].id) || strcmp(fnv, hex))
            return st_error(ST_ERR_ARG, "%s: line %zu: answer %zu was generated for another prompt (id %s; now %s): the "
                            "prompt file changed since; remove the partial file to start again", p->path, line, i,
                            id, ps->items[i].id);
        if (have[i])
            return st_error(ST_ERR_FORMAT, "%s: line %zu: a second answer to prompt %zu (the file is damaged: "
                            "remove it to start again)", p->path, line, i);
        const int n_ids = cJSON_GetArraySize(jids);
        st_generation *g = &gens[i];
        memset(g, 0, sizeof *g);
        g->ids = malloc((size_t)(n_ids ? n_ids : 1) * sizeof *g->ids);
        if (!g->ids) return st_error(ST_ERR_NOMEM, "%s: out of memory", p->path);
        int k2 = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, jids) {
            if (!cJSON_IsNumber(t) || t->valuedouble < 0 || t->valuedouble > 2147483647.0)
                return st_error(ST_ERR_FORMAT, "%s: line %zu: \"ids\" must hold token ids", p->path, line);
            g->ids[k2++] = (int32_t)t->valuedouble;
        }
        g->n_ids = (size_t)n_ids;
        g->completion_tokens = g->n_ids;
        g->finish = !strcmp(fin, "stop") ? ST_FINISH_STOP : ST_FINISH_LENGTH;
        g->prompt_tokens = (size_t)pt;
        have[i] = 1;
    }
    return ST_OK;
}

st_status st_safety_partial_append(void *ud, size_t i, const st_prompt *pr, const st_generation *g) {
    st_safety_partial *p = ud;
    cJSON *o = cJSON_CreateObject();
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, fnv1a64(pr->prompt));
    cJSON_AddNumberToObject(o, "index", (double)i);
    cJSON_AddStringToObject(o, "id", pr->id);
    cJSON_AddStringToObject(o, "prompt_fnv1a64", hex);
    cJSON_AddStringToObject(o, "finish", st_finish_reason_name(g->finish));
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)g->prompt_tokens);
    cJSON *ids = cJSON_AddArrayToObject(o, "ids");
    for (size_t k = 0; k < g->n_ids; k++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(g->ids[k]));
    cJSON_AddStringToObject(o, "response", g->text ? g->text : "");
    char *t = st_utf8_fix_owned(cJSON_PrintUnformatted(o));
    cJSON_Delete(o);
    if (!t) return st_error(ST_ERR_NOMEM, "%s: out of memory", p->path);
    size_t l = strlen(t);
    char *line = realloc(t, l + 2);
    if (!line) {
        free(t);
        return st_error(ST_ERR_NOMEM, "%s: out of memory", p->path);
    }
    line[l] = '\n';
    const int bad = write_all(p->fd, line, l + 1) != 0 || fdatasync(p->fd) != 0;
    const int e = errno;
    free(line);
    if (bad) {
        if (ftruncate(p->fd, p->size) != 0) { /* the torn line stays: the next run drops it */
        }
        return st_error(ST_ERR_IO, "%s: cannot save answer %zu: %s (the answers saved before it are kept; free "
                        "space and rerun the same command to continue)", p->path, i + 1, strerror(e));
    }
    p->size += (off_t)(l + 1);
    p->appended++;
    return ST_OK;
}

void st_safety_model_hash(const st_model *m, char hex[17]) {
    uint64_t h = 1469598103934665603ull;
    const size_t nb = m->params ? m->layout.n_floats * sizeof(float) : 0;
    const unsigned char *b = (const unsigned char *)m->params;
    size_t k = 0;
    for (; k + 8 <= nb; k += 8) { /* 8 bytes a step: ~1 s for a 1B model */
        uint64_t w;
        memcpy(&w, b + k, 8);
        h = (h ^ w) * 1099511628211ull;
    }
    for (; k < nb; k++) h = (h ^ b[k]) * 1099511628211ull;
    for (const char *s = m->chat_template_src ? m->chat_template_src : ""; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    snprintf(hex, 17, "%016" PRIx64, h);
}
