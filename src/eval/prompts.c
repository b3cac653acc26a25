/* prompts.c - AdvBench / XSTest / CSV / JSONL prompt sets, the CSV table the benchmark readers
 * share, and the spec resolver (see prompts.h; HarmBench, StrongREJECT, JailbreakBench and
 * HEx-PHI are read in prompts_bench.c). */
#include "safetune/prompts.h"

#include "eval/eval_internal.h"
#include "eval/prompts_internal.h"

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
        free(s->items[i].target);
    }
    free(s->items);
    free(s->name);
    free(s->path);
    memset(s, 0, sizeof *s);
}

st_status st__prompt_push(st_prompt_set *s, size_t *cap, const char *id, const char *prompt,
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

int st__blank(const char *s) {
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

static void csv_cb_field(void *s, size_t len, void *data) {
    st__csv_table *c = data;
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
    st__csv_table *c = data;
    c->at_row_start = 1;
    if (c->oom) return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        st__csv_row *q = realloc(c->rows, cap * sizeof *q);
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

static void csv_row_free(st__csv_row *r) {
    for (size_t i = 0; i < r->nf; i++) free(r->f[i]);
    free(r->f);
}

void st__csv_table_free(st__csv_table *c) {
    for (size_t i = 0; i < c->n; i++) csv_row_free(&c->rows[i]);
    free(c->rows);
    csv_row_free(&c->cur);
    memset(c, 0, sizeof *c);
}

static int csv_no_space(unsigned char ch) {
    (void)ch;
    return 0; /* keep leading/trailing spaces, as Python's csv module does */
}

/* Parse data into rows; errors name path and line. */
static st_status csv_read(const char *path, const char *data, size_t len, st__csv_table *c) {
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
    if (s) st__csv_table_free(c);
    return s;
}

st_status st__csv_load(const char *path, st__csv_table *t) {
    memset(t, 0, sizeof *t);
    char *data;
    size_t len;
    st_status s = st_read_text_file(path, &data, &len);
    if (s) return s;
    len = st_utf8_strip_bom(data, len);
    if (!(s = check_utf8(path, data, len))) s = csv_read(path, data, len, t);
    free(data);
    return s;
}

static int ascii_ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

int st__csv_col(const char *path, const st__csv_row *h, const char *name, st_status *status) {
    int found = -1;
    for (size_t i = 0; i < h->nf; i++)
        if (!strcmp(h->f[i], name)) return (int)i;
    for (size_t i = 0; i < h->nf; i++) {
        if (!ascii_ieq(h->f[i], name)) continue;
        if (found >= 0) {
            *status = st_error(ST_ERR_FORMAT, "%s: line %zu: columns \"%s\" and \"%s\" both match \"%s\" "
                               "(names are matched ignoring case); rename one", path, h->line, h->f[found],
                               h->f[i], name);
            return -1;
        }
        found = (int)i;
    }
    return found;
}

st_status st__csv_missing_col(const char *path, const st__csv_row *h, const char *name, const char *hint) {
    st__buf b = {0};
    for (size_t i = 0; i < h->nf; i++) {
        if (i) st__buf_puts(&b, ",");
        st__buf_puts(&b, h->f[i]);
    }
    st_status s = st_error(ST_ERR_FORMAT, "%s: line %zu: header has no column \"%s\" (columns: %s)%s%s", path,
                           h->line, name, b.p ? b.p : "", hint ? "; " : "", hint ? hint : "");
    st__buf_free(&b);
    return s;
}

st_status st__csv_check_widths(const char *path, const st__csv_table *t) {
    for (size_t r = 1; r < t->n; r++)
        if (t->rows[r].nf != t->rows[0].nf)
            return st_error(ST_ERR_FORMAT, "%s: line %zu: %zu fields, the header has %zu (quote a field that "
                            "holds a comma)", path, t->rows[r].line, t->rows[r].nf, t->rows[0].nf);
    return ST_OK;
}

typedef enum { CSV_GENERIC, CSV_ADVBENCH, CSV_XSTEST } csv_kind;

static st_status load_csv(const char *path, csv_kind kind, const st_prompt_opts *o, st_prompt_set *out) {
    st__csv_table c;
    st_status s = st__csv_load(path, &c);
    if (s) return s;
    size_t cap = 0;
    if (c.n == 0) {
        s = st_error(ST_ERR_FORMAT, "%s: empty file (expected a header row and one prompt per row)", path);
        goto out;
    }
    const st__csv_row *h = &c.rows[0];
    int ip, iid = -1, icat = -1, ilab = -1, itarget = -1;
    if (kind == CSV_ADVBENCH) {
        ip = st__csv_col(path, h, "goal", &s);
        if (!s) itarget = st__csv_col(path, h, "target", &s); /* the compliance prefix ("Sure, here is ...") */
    } else if (kind == CSV_XSTEST) {
        ip = st__csv_col(path, h, "prompt", &s);
        if (!s) iid = st__csv_col(path, h, "id", &s);
        if (!s) ilab = st__csv_col(path, h, "label", &s);
        if (!s) icat = st__csv_col(path, h, "type", &s);
        if (!s && icat < 0) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: header has no column \"type\" (XSTest v2 layout "
                         "id,prompt,type,label,...)", path, h->line);
            goto out;
        }
    } else {
        if (o->prompt_column) {
            ip = st__csv_col(path, h, o->prompt_column, &s);
        } else {
            ip = st__csv_col(path, h, "prompt", &s);
            if (!s && ip < 0) ip = st__csv_col(path, h, "goal", &s);
        }
        if (!s) iid = st__csv_col(path, h, "id", &s);
        if (!s) ilab = st__csv_col(path, h, "label", &s);
        if (!s) icat = st__csv_col(path, h, o->category_column ? o->category_column : "category", &s);
        if (!s && icat < 0 && o->category_column) {
            s = st__csv_missing_col(path, h, o->category_column, "check --category-column");
            goto out;
        }
    }
    if (s) goto out;
    if (ip < 0) {
        s = st__csv_missing_col(path, h,
                                kind == CSV_ADVBENCH ? "goal" : kind == CSV_XSTEST ? "prompt"
                                : o->prompt_column ? o->prompt_column : "prompt\" or \"goal",
                                kind == CSV_GENERIC ? "name the prompt column with --prompt-column" : NULL);
        goto out;
    }
    if ((s = st__csv_check_widths(path, &c))) goto out;
    for (size_t r = 1; r < c.n; r++) {
        const st__csv_row *row = &c.rows[r];
        const char *prompt = row->f[ip];
        if (st__blank(prompt)) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: empty prompt", path, row->line);
            goto out;
        }
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "%zu", r - 1);
        const char *id = iid >= 0 && row->f[iid][0] ? row->f[iid] : idbuf;
        const char *cat = icat >= 0 && row->f[icat][0] ? row->f[icat] : NULL;
        st_prompt_label lab = ST_LABEL_NONE;
        if (ilab >= 0 && (s = parse_label(path, row->line, row->f[ilab], &lab))) goto out;
        st_prompt_label want = ST_LABEL_NONE;
        const char *why = NULL;
        if (kind == CSV_XSTEST) {
            want = !strncmp(row->f[icat], "contrast_", 9) ? ST_LABEL_UNSAFE : ST_LABEL_SAFE;
            why = "type";
        } else if (kind == CSV_GENERIC && o->label != ST_LABEL_NONE) {
            want = o->label;
            why = "--label";
        }
        if (why) {
            if (lab != ST_LABEL_NONE && lab != want) {
                if (kind == CSV_XSTEST)
                    s = st_error(ST_ERR_FORMAT, "%s: line %zu: type \"%s\" implies %s but label is \"%s\"", path,
                                 row->line, row->f[icat], want == ST_LABEL_UNSAFE ? "unsafe" : "safe", row->f[ilab]);
                else
                    s = st_error(ST_ERR_FORMAT, "%s: line %zu: label \"%s\" contradicts --label %s (drop --label "
                                 "to use the file's labels)", path, row->line, row->f[ilab],
                                 want == ST_LABEL_UNSAFE ? "unsafe" : "safe");
                goto out;
            }
            lab = want;
        }
        if ((s = st__prompt_push(out, &cap, id, prompt, cat, lab)) ||
            (itarget >= 0 && !(out->items[out->n - 1].target = st_strdup(row->f[itarget])))) {
            s = st_error(ST_ERR_NOMEM, "%s: out of memory", path);
            goto out;
        }
    }
    if (out->n == 0)
        s = st_error(ST_ERR_FORMAT, "%s: no prompts (only a header row)", path);
out:
    st__csv_table_free(&c);
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
        else if (st__blank(jp->valuestring)) err = "empty prompt";
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
        s = st__prompt_push(out, &cap, cJSON_IsString(ji) ? ji->valuestring : idbuf, jp->valuestring, cat, lab);
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

/* ---------------- spec resolver ---------------- */

typedef enum {
    SPEC_ADVBENCH, SPEC_XSTEST, SPEC_HARMBENCH, SPEC_STRONGREJECT, SPEC_JBB, SPEC_JBB_BENIGN, SPEC_HEXPHI,
    SPEC_CSV, SPEC_JSONL
} spec_kind;

static const struct {
    const char *prefix; /* "name:" for the FILE forms, the whole name otherwise */
    spec_kind kind;
} SPECS[] = {
    {"advbench", SPEC_ADVBENCH},          {"xstest", SPEC_XSTEST},   {"harmbench:", SPEC_HARMBENCH},
    {"strongreject:", SPEC_STRONGREJECT}, {"jbb:", SPEC_JBB},        {"jbb-benign:", SPEC_JBB_BENIGN},
    {"hexphi:", SPEC_HEXPHI},             {"csv:", SPEC_CSV},        {"jsonl:", SPEC_JSONL},
};

#define SPEC_NAMES "advbench, xstest, harmbench:FILE, strongreject:FILE, jbb:FILE, jbb-benign:FILE, hexphi:DIR, " \
                   "csv:FILE or jsonl:FILE"

/* The kind of spec and its FILE part (NULL for advbench/xstest); ST_ERR_ARG when unknown. */
static st_status spec_parse(const char *spec, spec_kind *kind, const char **file) {
    if (!spec || !*spec) return st_error(ST_ERR_ARG, "empty prompt set name (use " SPEC_NAMES ")");
    for (size_t i = 0; i < sizeof SPECS / sizeof SPECS[0]; i++) {
        size_t l = strlen(SPECS[i].prefix);
        if (SPECS[i].prefix[l - 1] != ':') {
            if (strcmp(spec, SPECS[i].prefix)) continue;
            *kind = SPECS[i].kind;
            *file = NULL;
            return ST_OK;
        }
        if (strncmp(spec, SPECS[i].prefix, l)) continue;
        if (!spec[l])
            return st_error(ST_ERR_ARG, "prompt set \"%s\" names no %s: write %s%s", spec,
                            SPECS[i].kind == SPEC_HEXPHI ? "folder" : "file", SPECS[i].prefix,
                            SPECS[i].kind == SPEC_HEXPHI ? "DIR" : "FILE");
        *kind = SPECS[i].kind;
        *file = spec + l;
        return ST_OK;
    }
    return st_error(ST_ERR_ARG, "unknown prompt set \"%s\" (use " SPEC_NAMES ")", spec);
}

static const char *base_name(const char *path) {
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

st_status st_prompts_spec_check(const char *spec, const st_prompt_opts *o) {
    static const st_prompt_opts none = {0};
    if (!o) o = &none;
    spec_kind k = SPEC_ADVBENCH;
    const char *file = NULL;
    st_status s = spec_parse(spec, &k, &file);
    if (s) return s;
    if (o->harmbench_functional) {
        if (k != SPEC_HARMBENCH)
            return st_error(ST_ERR_ARG, "HarmBench functional categories apply to harmbench:FILE only, not to %s",
                            spec);
        unsigned mask;
        if ((s = st__harmbench_functional_mask(o->harmbench_functional, &mask))) return s;
    }
    if ((o->prompt_column || o->category_column || o->label != ST_LABEL_NONE) && k != SPEC_CSV)
        return st_error(ST_ERR_ARG, "the prompt column, category column and label options apply to csv:FILE only, "
                        "not to %s (a named benchmark knows its columns)", spec);
    if (o->prompt_column && !*o->prompt_column) return st_error(ST_ERR_ARG, "empty prompt column name");
    if (o->category_column && !*o->category_column) return st_error(ST_ERR_ARG, "empty category column name");
    /* the two JailbreakBench files share one layout: only the name tells them apart */
    if (k == SPEC_JBB && !strcmp(base_name(file), "benign-behaviors.csv"))
        return st_error(ST_ERR_ARG, "%s is JailbreakBench's benign file: read it as jbb-benign:%s (safe prompts, "
                        "reported as refusal rates), not jbb: (harmful, reported as ASR)", file, file);
    if (k == SPEC_JBB_BENIGN && !strcmp(base_name(file), "harmful-behaviors.csv"))
        return st_error(ST_ERR_ARG, "%s is JailbreakBench's harmful file: read it as jbb:%s (ASR), not "
                        "jbb-benign: (safe prompts)", file, file);
    return ST_OK;
}

st_status st_prompts_load_opts(const char *spec, const char *data_dir, const st_prompt_opts *o,
                               st_prompt_set *out) {
    static const st_prompt_opts none = {0};
    memset(out, 0, sizeof *out);
    if (!o) o = &none;
    st_status s = st_prompts_spec_check(spec, o);
    if (s) return s;
    spec_kind k = SPEC_ADVBENCH;
    const char *file = NULL;
    spec_parse(spec, &k, &file);
    if (!data_dir) data_dir = st_prompts_default_data_dir();
    char path[4096];
    if (k == SPEC_ADVBENCH) snprintf(path, sizeof path, "%s/advbench/harmful_behaviors.csv", data_dir);
    else if (k == SPEC_XSTEST) snprintf(path, sizeof path, "%s/xstest/xstest_prompts.csv", data_dir);
    else snprintf(path, sizeof path, "%s", file);
    switch (k) {
    case SPEC_ADVBENCH: s = load_csv(path, CSV_ADVBENCH, o, out); break;
    case SPEC_XSTEST: s = load_csv(path, CSV_XSTEST, o, out); break;
    case SPEC_CSV: s = load_csv(path, CSV_GENERIC, o, out); break;
    case SPEC_JSONL: s = load_jsonl(path, out); break;
    case SPEC_HARMBENCH: s = st__load_harmbench(path, o, out); break;
    case SPEC_STRONGREJECT: s = st__load_strongreject(path, out); break;
    case SPEC_JBB: s = st__load_jbb(path, 0, out); break;
    case SPEC_JBB_BENIGN: s = st__load_jbb(path, 1, out); break;
    case SPEC_HEXPHI: s = st__load_hexphi(path, out); break;
    }
    if (s == ST_OK) {
        out->name = st_strdup(spec);
        out->path = st_strdup(path);
        if (!out->name || !out->path) s = st_error(ST_ERR_NOMEM, "out of memory");
    }
    if (s) st_prompt_set_free(out); /* keep the message, drop partial output */
    return s;
}

st_status st_prompts_load(const char *spec, const char *data_dir, st_prompt_set *out) {
    return st_prompts_load_opts(spec, data_dir, NULL, out);
}
