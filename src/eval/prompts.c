/* prompts.c - AdvBench / XSTest / CSV / JSONL prompt sets (see prompts.h). */
#include "safetune/prompts.h"

#include "eval/eval_internal.h"

#include <cjson/cJSON.h>
#include <csv.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

const char *st_prompts_default_data_dir(void) {
    const char *e = getenv("SAFETUNE_DATA_DIR");
    return e && *e ? e : "data";
}

void st_prompt_set_free(st_prompt_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].id);
        free(s->items[i].prompt);
        free(s->items[i].category);
    }
    free(s->items);
    free(s->name);
    free(s->path);
    memset(s, 0, sizeof *s);
}

static st_status push_prompt(st_prompt_set *s, size_t *cap, const char *id, const char *prompt,
                             const char *category, st_prompt_label label) {
    if (s->n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        st_prompt *q = st_realloc(s->items, c * sizeof *q);
        if (!q) return ST_ERR_NOMEM;
        s->items = q;
        *cap = c;
    }
    st_prompt *p = &s->items[s->n];
    memset(p, 0, sizeof *p);
    p->id = st_strdup(id);
    p->prompt = st_strdup(prompt);
    p->category = category ? st_strdup(category) : NULL;
    p->label = label;
    s->n++; /* counted even on OOM so st_prompt_set_free releases the parts */
    if (!p->id || !p->prompt || (category && !p->category)) return ST_ERR_NOMEM;
    return ST_OK;
}

/* Line and column (1-based) of byte offset off in data. */
static void line_col(const char *data, size_t off, size_t *line, size_t *col) {
    size_t l = 1, c = 1;
    for (size_t i = 0; i < off; i++) {
        if (data[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static st_status check_utf8(const char *path, const char *data, size_t len) {
    size_t bad;
    if (st__utf8_valid(data, len, &bad)) return ST_OK;
    size_t l, c;
    line_col(data, bad, &l, &c);
    return st_error(ST_ERR_FORMAT, "%s: line %zu, column %zu: invalid UTF-8 (re-save the file as UTF-8)",
                    path, l, c);
}

static int blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

static st_status parse_label(const char *path, size_t line, const char *v, st_prompt_label *out) {
    if (!v || !*v) *out = ST_LABEL_NONE;
    else if (!strcmp(v, "safe")) *out = ST_LABEL_SAFE;
    else if (!strcmp(v, "unsafe")) *out = ST_LABEL_UNSAFE;
    else
        return st_error(ST_ERR_FORMAT, "%s: line %zu: label \"%s\" is not \"safe\" or \"unsafe\"", path, line, v);
    return ST_OK;
}

/* ---------------- CSV (libcsv, strict) ---------------- */

typedef struct {
    char **f;
    size_t nf, cap;
    size_t line; /* line the row starts on */
} csv_row;

typedef struct {
    csv_row *rows;
    size_t n, cap;
    csv_row cur;
    size_t line;      /* line of the byte being fed */
    int at_row_start; /* next non-newline byte opens a row */
    int oom;
} csv_ctx;

static void csv_cb_field(void *s, size_t len, void *data) {
    csv_ctx *c = data;
    if (c->oom) return;
    if (c->cur.nf == c->cur.cap) {
        size_t cap = c->cur.cap ? 2 * c->cur.cap : 8;
        char **q = realloc(c->cur.f, cap * sizeof *q);
        if (!q) {
            c->oom = 1;
            return;
        }
        c->cur.f = q;
        c->cur.cap = cap;
    }
    char *v = malloc(len + 1);
    if (!v) {
        c->oom = 1;
        return;
    }
    if (len) memcpy(v, s, len);
    v[len] = '\0';
    c->cur.f[c->cur.nf++] = v;
}

static void csv_cb_row(int term, void *data) {
    (void)term;
    csv_ctx *c = data;
    c->at_row_start = 1;
    if (c->oom) return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        csv_row *q = realloc(c->rows, cap * sizeof *q);
        if (!q) {
            c->oom = 1;
            return;
        }
        c->rows = q;
        c->cap = cap;
    }
    c->rows[c->n++] = c->cur;
    memset(&c->cur, 0, sizeof c->cur);
}

static void csv_row_free(csv_row *r) {
    for (size_t i = 0; i < r->nf; i++) free(r->f[i]);
    free(r->f);
}

static void csv_ctx_free(csv_ctx *c) {
    for (size_t i = 0; i < c->n; i++) csv_row_free(&c->rows[i]);
    free(c->rows);
    csv_row_free(&c->cur);
}

static int csv_no_space(unsigned char ch) {
    (void)ch;
    return 0; /* keep leading/trailing spaces, as Python's csv module does */
}

/* Parse data into rows; errors name path and line. */
static st_status csv_read(const char *path, const char *data, size_t len, csv_ctx *c) {
    memset(c, 0, sizeof *c);
    c->line = 1;
    c->at_row_start = 1;
    struct csv_parser p;
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0)
        return st_error(ST_ERR_NOMEM, "out of memory");
    csv_set_space_func(&p, csv_no_space);
    st_status s = ST_OK;
    size_t i = 0;
    if (len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) i = 3;
    for (; i < len; i++) {
        char ch = data[i];
        if (c->at_row_start && ch != '\n' && ch != '\r') {
            c->at_row_start = 0;
            c->cur.line = c->line;
        }
        if (csv_parse(&p, data + i, 1, csv_cb_field, csv_cb_row, c) != 1) {
            s = st_error(ST_ERR_FORMAT,
                         "%s: line %zu: malformed CSV quoting (a quote inside an unquoted field, or text "
                         "after a closing quote); quote the whole field and double inner quotes (\"\")",
                         path, c->line);
            goto out;
        }
        if (c->oom) {
            s = st_error(ST_ERR_NOMEM, "%s: out of memory", path);
            goto out;
        }
        if (ch == '\n') c->line++;
    }
    if (csv_fini(&p, csv_cb_field, csv_cb_row, c) != 0) {
        s = st_error(ST_ERR_FORMAT, "%s: line %zu: unterminated quoted field (the quote opened in the row "
                     "starting on line %zu is never closed)", path, c->line, c->cur.line);
        goto out;
    }
    if (c->oom) s = st_error(ST_ERR_NOMEM, "%s: out of memory", path);
out:
    csv_free(&p);
    if (s) csv_ctx_free(c);
    return s;
}

static int col_index(const csv_row *h, const char *name) {
    for (size_t i = 0; i < h->nf; i++)
        if (!strcmp(h->f[i], name)) return (int)i;
    return -1;
}

typedef enum { CSV_GENERIC, CSV_ADVBENCH, CSV_XSTEST } csv_kind;

static st_status load_csv(const char *path, csv_kind kind, st_prompt_set *out) {
    char *data;
    size_t len;
    st_status s = st_read_text_file(path, &data, &len);
    if (s) return s;
    len = st_utf8_strip_bom(data, len);
    if ((s = check_utf8(path, data, len))) {
        free(data);
        return s;
    }
    csv_ctx c;
    s = csv_read(path, data, len, &c);
    free(data);
    if (s) return s;
    size_t cap = 0;
    if (c.n == 0) {
        s = st_error(ST_ERR_FORMAT, "%s: empty file (expected a header row and one prompt per row)", path);
        goto out;
    }
    const csv_row *h = &c.rows[0];
    int ip, iid = col_index(h, "id"), icat, ilab = col_index(h, "label");
    if (kind == CSV_ADVBENCH) {
        ip = col_index(h, "goal");
        icat = -1;
        iid = -1;
        ilab = -1;
    } else if (kind == CSV_XSTEST) {
        ip = col_index(h, "prompt");
        icat = col_index(h, "type");
        if (icat < 0) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: header has no column \"type\" (XSTest v2 layout "
                         "id,prompt,type,label,...)", path, h->line);
            goto out;
        }
    } else {
        ip = col_index(h, "prompt");
        if (ip < 0) ip = col_index(h, "goal");
        icat = col_index(h, "category");
    }
    if (ip < 0) {
        st__buf b = {0};
        for (size_t i = 0; i < h->nf; i++) {
            if (i) st__buf_puts(&b, ",");
            st__buf_puts(&b, h->f[i]);
        }
        s = st_error(ST_ERR_FORMAT, "%s: line %zu: header has no column \"%s\" (columns: %s)", path, h->line,
                     kind == CSV_ADVBENCH ? "goal" : kind == CSV_XSTEST ? "prompt" : "prompt\" or \"goal",
                     b.p ? b.p : "");
        st__buf_free(&b);
        goto out;
    }
    for (size_t r = 1; r < c.n; r++) {
        const csv_row *row = &c.rows[r];
        if (row->nf != h->nf) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: %zu fields, the header has %zu", path, row->line,
                         row->nf, h->nf);
            goto out;
        }
        const char *prompt = row->f[ip];
        if (blank(prompt)) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: empty prompt", path, row->line);
            goto out;
        }
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "%zu", r - 1);
        const char *id = iid >= 0 && row->f[iid][0] ? row->f[iid] : idbuf;
        const char *cat = icat >= 0 && row->f[icat][0] ? row->f[icat] : NULL;
        st_prompt_label lab = ST_LABEL_NONE;
        if (ilab >= 0 && (s = parse_label(path, row->line, row->f[ilab], &lab))) goto out;
        if (kind == CSV_XSTEST) {
            st_prompt_label bytype = !strncmp(row->f[icat], "contrast_", 9) ? ST_LABEL_UNSAFE : ST_LABEL_SAFE;
            if (lab != ST_LABEL_NONE && lab != bytype) {
                s = st_error(ST_ERR_FORMAT, "%s: line %zu: type \"%s\" implies %s but label is \"%s\"", path,
                             row->line, row->f[icat], bytype == ST_LABEL_UNSAFE ? "unsafe" : "safe",
                             row->f[ilab]);
                goto out;
            }
            lab = bytype;
        }
        if ((s = push_prompt(out, &cap, id, prompt, cat, lab))) {
            s = st_error(ST_ERR_NOMEM, "%s: out of memory", path);
            goto out;
        }
    }
    if (out->n == 0)
        s = st_error(ST_ERR_FORMAT, "%s: no prompts (only a header row)", path);
out:
    csv_ctx_free(&c);
    return s;
}

/* ---------------- JSONL ---------------- */

static st_status load_jsonl(const char *path, st_prompt_set *out) {
    char *data;
    size_t len;
    st_status s = st_read_json_text_file(path, &data, &len);
    if (s) return s;
    len = st_utf8_strip_bom(data, len);
    if ((s = check_utf8(path, data, len))) {
        free(data);
        return s;
    }
    size_t cap = 0, line = 0, pos = 0, *id_lines = NULL; /* file line of each prompt's explicit id, else 0 */
    if (len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) pos = 3;
    while (pos < len) {
        line++;
        size_t e = pos;
        while (e < len && data[e] != '\n') e++;
        const char *ln = data + pos;
        size_t ll = e - pos;
        pos = e < len ? e + 1 : e;
        size_t k = 0;
        while (k < ll && isspace((unsigned char)ln[k])) k++;
        if (k == ll) continue;
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithLengthOpts(ln, ll, &end, 0);
        if (o && end) {
            while (end < ln + ll && isspace((unsigned char)*end)) end++;
            if (end < ln + ll) {
                cJSON_Delete(o);
                o = NULL;
            }
        }
        if (!o) {
            size_t col = end && end >= ln ? (size_t)(end - ln) + 1 : 1;
            s = st_error(ST_ERR_FORMAT, "%s: line %zu, column %zu: invalid JSON (expected one object per line)",
                         path, line, col);
            goto out;
        }
        const cJSON *jp = cJSON_GetObjectItemCaseSensitive(o, "prompt");
        const cJSON *jc = cJSON_GetObjectItemCaseSensitive(o, "category");
        const cJSON *ji = cJSON_GetObjectItemCaseSensitive(o, "id");
        const cJSON *jl = cJSON_GetObjectItemCaseSensitive(o, "label");
        const char *err = NULL;
        if (!cJSON_IsObject(o)) err = "not a JSON object";
        else if (!cJSON_IsString(jp)) err = jp ? "\"prompt\" is not a string" : "missing key \"prompt\"";
        else if (blank(jp->valuestring)) err = "empty prompt";
        else if (jc && !cJSON_IsNull(jc) && !cJSON_IsString(jc)) err = "\"category\" is not a string";
        else if (ji && !cJSON_IsString(ji) && !cJSON_IsNumber(ji)) err = "\"id\" is not a string or number";
        else if (jl && !cJSON_IsNull(jl) && !cJSON_IsString(jl)) err = "\"label\" is not a string";
        if (err) {
            cJSON_Delete(o);
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: %s", path, line, err);
            goto out;
        }
        st_prompt_label lab = ST_LABEL_NONE;
        if (cJSON_IsString(jl) && (s = parse_label(path, line, jl->valuestring, &lab))) {
            cJSON_Delete(o);
            goto out;
        }
        char idbuf[64];
        if (cJSON_IsString(ji)) snprintf(idbuf, sizeof idbuf, "%s", ji->valuestring);
        else if (cJSON_IsNumber(ji)) snprintf(idbuf, sizeof idbuf, "%.17g", ji->valuedouble);
        else snprintf(idbuf, sizeof idbuf, "%zu", out->n);
        const char *cat = cJSON_IsString(jc) && jc->valuestring[0] ? jc->valuestring : NULL;
        s = push_prompt(out, &cap, cJSON_IsString(ji) ? ji->valuestring : idbuf, jp->valuestring, cat, lab);
        cJSON_Delete(o);
        size_t *nl2 = s ? NULL : realloc(id_lines, out->n * sizeof *id_lines);
        if (s || !nl2) {
            s = st_error(ST_ERR_NOMEM, "%s: out of memory", path);
            goto out;
        }
        id_lines = nl2;
        id_lines[out->n - 1] = ji ? line : 0; /* explicit ids must be unique */
        for (size_t j = 0; ji && j + 1 < out->n; j++)
            if (id_lines[j] && !strcmp(out->items[j].id, out->items[out->n - 1].id)) {
                s = st_error(ST_ERR_FORMAT, "%s: line %zu: duplicate id \"%s\" (also on line %zu)", path, line,
                             out->items[j].id, id_lines[j]);
                goto out;
            }
    }
    if (out->n == 0)
        s = st_error(ST_ERR_FORMAT, "%s: no prompts (empty file); expected one {\"prompt\": ...} object per line",
                     path);
out:
    free(id_lines);
    free(data);
    return s;
}

st_status st_prompts_load(const char *spec, const char *data_dir, st_prompt_set *out) {
    memset(out, 0, sizeof *out);
    if (!spec || !*spec) return st_error(ST_ERR_ARG, "empty prompt set name (use advbench, xstest, csv:FILE or jsonl:FILE)");
    if (!data_dir) data_dir = st_prompts_default_data_dir();
    char path[4096];
    st_status s;
    if (!strcmp(spec, "advbench")) {
        snprintf(path, sizeof path, "%s/advbench/harmful_behaviors.csv", data_dir);
        s = load_csv(path, CSV_ADVBENCH, out);
    } else if (!strcmp(spec, "xstest")) {
        snprintf(path, sizeof path, "%s/xstest/xstest_prompts.csv", data_dir);
        s = load_csv(path, CSV_XSTEST, out);
    } else if (!strncmp(spec, "csv:", 4) && spec[4]) {
        snprintf(path, sizeof path, "%s", spec + 4);
        s = load_csv(path, CSV_GENERIC, out);
    } else if (!strncmp(spec, "jsonl:", 6) && spec[6]) {
        snprintf(path, sizeof path, "%s", spec + 6);
        s = load_jsonl(path, out);
    } else {
        return st_error(ST_ERR_ARG, "unknown prompt set \"%s\" (use advbench, xstest, csv:FILE or jsonl:FILE)", spec);
    }
    if (s == ST_OK) {
        out->name = st_strdup(spec);
        out->path = st_strdup(path);
        if (!out->name || !out->path) s = ST_ERR_NOMEM;
    }
    if (s) {
        /* keep the message, drop partial output */
        st_prompt_set_free(out);
    }
    return s;
}
