/* dataset.c - read a dataset file (JSON array or JSONL) row by row into conversations, with
 * errors naming the file and the line (JSONL) or the array index and byte offset (JSON). */
#include "data_internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const k_fmt_names[] = {"auto", "alpaca", "dolly", "orca", "messages"};

st_status st_data_format_parse(const char *name, st_data_format *out) {
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, k_fmt_names[i])) {
            *out = (st_data_format)i;
            return ST_OK;
        }
    return st_error(ST_ERR_ARG, "dataset format '%s' unknown (use auto, alpaca, dolly, orca or "
                    "messages)", name);
}

const char *st_data_format_name(st_data_format f) {
    return (unsigned)f < 5 ? k_fmt_names[f] : "unknown";
}

static st_data_row_fn row_fn(st_data_format f) {
    switch (f) {
    case ST_DATA_ALPACA: return st_data_alpaca_row;
    case ST_DATA_DOLLY: return st_data_dolly_row;
    case ST_DATA_ORCA: return st_data_orca_row;
    case ST_DATA_MESSAGES: return st_data_messages_row;
    default: return NULL;
    }
}

static int has(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k) != NULL; }

static st_data_format detect(const cJSON *row) {
    if (has(row, "messages")) return ST_DATA_MESSAGES;
    if (has(row, "conversations") || has(row, "question") || has(row, "preferred_output") ||
        has(row, "system_prompt"))
        return ST_DATA_ORCA;
    if (has(row, "instruction") && has(row, "output")) return ST_DATA_ALPACA;
    if (has(row, "instruction") && (has(row, "response") || has(row, "context")))
        return ST_DATA_DOLLY;
    return ST_DATA_AUTO;
}

typedef struct {
    const char *path;
    st_dataset *ds;
    size_t cap;
    char where[96]; /* "line 12" or "array index 3 (byte 1042)" */
} loader;

/* Convert one parsed row and append it. */
static st_status add_row(loader *L, const cJSON *row) {
    char why[512];
    if (!cJSON_IsObject(row))
        return st_error(ST_ERR_FORMAT, "%s: %s: row is %s, expected a JSON object", L->path,
                        L->where, st_data_json_type(row));
    if (L->ds->format == ST_DATA_AUTO) {
        L->ds->format = detect(row);
        if (L->ds->format == ST_DATA_AUTO)
            return st_error(ST_ERR_FORMAT, "%s: %s: cannot tell the dataset format from this "
                            "row's keys; pass it explicitly (alpaca, dolly, orca, messages)",
                            L->path, L->where);
    }
    if (L->ds->n == L->cap) {
        size_t nc = L->cap ? 2 * L->cap : 256;
        st_conversation *r = realloc(L->ds->rows, nc * sizeof *r);
        if (!r) return st_error(ST_ERR_NOMEM, "%s: out of memory at %s", L->path, L->where);
        L->ds->rows = r;
        L->cap = nc;
    }
    st_conversation conv = {NULL, 0};
    if (row_fn(L->ds->format)(row, &conv, why, sizeof why) ||
        st_data_check_conv(&conv, why, sizeof why)) {
        st_data_conv_free(&conv);
        return st_error(ST_ERR_FORMAT, "%s: %s: %s (%s format)", L->path, L->where, why,
                        st_data_format_name(L->ds->format));
    }
    L->ds->rows[L->ds->n++] = conv;
    return ST_OK;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Parse s[0..len) as exactly one JSON value (surrounding whitespace allowed). On error returns
 * NULL and the byte offset of the problem within s in *err_off. */
static cJSON *parse_one(const char *s, size_t len, size_t *err_off) {
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (!v) {
        const char *e = cJSON_GetErrorPtr();
        *err_off = (e && e >= s && e <= s + len) ? (size_t)(e - s) : 0;
        return NULL;
    }
    size_t off = (size_t)(end - s);
    while (off < len && is_ws(s[off])) off++;
    if (off < len) {
        cJSON_Delete(v);
        *err_off = off;
        return NULL;
    }
    return v;
}

static st_status load_jsonl(loader *L, const char *s, size_t n) {
    size_t line = 0, i = 0;
    while (i < n) {
        size_t b = i;
        while (i < n && s[i] != '\n') i++;
        size_t e = i;
        i++; /* past '\n' */
        line++;
        size_t k = b;
        while (k < e && is_ws(s[k])) k++;
        if (k == e) continue; /* blank line */
        snprintf(L->where, sizeof L->where, "line %zu", line);
        size_t err;
        cJSON *row = parse_one(s + b, e - b, &err);
        if (!row)
            return st_error(ST_ERR_FORMAT, "%s: line %zu: invalid JSON at column %zu (each line "
                            "must hold one JSON object)", L->path, line, err + 1);
        st_status st = add_row(L, row);
        cJSON_Delete(row);
        if (st) return st;
    }
    return ST_OK;
}

/* End of the JSON value starting at s[i]: stops at ',' / ']' / '}' at depth 0 or at EOF. */
static size_t scan_value(const char *s, size_t n, size_t i) {
    int depth = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\') i++;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return i;
            depth--;
        } else if (c == ',' && depth == 0) {
            return i;
        }
        i++;
    }
    return n;
}

static st_status load_json_array(loader *L, const char *s, size_t n, size_t i) {
    i++; /* past '[' */
    for (size_t idx = 0;; idx++) {
        while (i < n && is_ws(s[i])) i++;
        if (i >= n)
            return st_error(ST_ERR_FORMAT, "%s: byte %zu: unterminated JSON array (missing ']')",
                            L->path, i);
        if (s[i] == ']' && idx == 0) break;
        size_t b = i, e = scan_value(s, n, i);
        snprintf(L->where, sizeof L->where, "array index %zu (byte %zu)", idx, b);
        size_t err;
        cJSON *row = parse_one(s + b, e - b, &err);
        if (!row)
            return st_error(ST_ERR_FORMAT, "%s: array index %zu (byte %zu): invalid JSON at "
                            "byte %zu", L->path, idx, b, b + err);
        st_status st = add_row(L, row);
        cJSON_Delete(row);
        if (st) return st;
        i = e;
        if (i >= n)
            return st_error(ST_ERR_FORMAT, "%s: byte %zu: unterminated JSON array (missing ']')",
                            L->path, i);
        if (s[i] == ']') break;
        if (s[i] != ',')
            return st_error(ST_ERR_FORMAT, "%s: byte %zu: expected ',' or ']' after array "
                            "index %zu", L->path, i, idx);
        i++;
    }
    for (i++; i < n; i++)
        if (!is_ws(s[i]))
            return st_error(ST_ERR_FORMAT, "%s: byte %zu: unexpected text after the JSON array",
                            L->path, i);
    return ST_OK;
}

st_status st_dataset_load(const char *path, st_data_format fmt, st_dataset *out) {
    memset(out, 0, sizeof *out);
    if ((unsigned)fmt >= 5) return st_error(ST_ERR_ARG, "%s: unknown dataset format %d", path, (int)fmt);
    char *data;
    size_t n;
    st_status st = st_read_json_text_file(path, &data, &n);
    if (st) return st;
    st_dataset ds = {NULL, 0, fmt, NULL};
    loader L = {path, &ds, 0, ""};
    size_t i = 0;
    if (n >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) i = 3; /* UTF-8 BOM */
    size_t first = i;
    while (first < n && is_ws(data[first])) first++;
    if (first < n && data[first] == '[') st = load_json_array(&L, data, n, first);
    else st = load_jsonl(&L, data + i, n - i);
    free(data);
    if (!st && ds.n == 0)
        st = st_error(ST_ERR_FORMAT, "%s: empty dataset (no rows)", path);
    if (!st && !(ds.path = st_strdup(path))) st = ST_ERR_NOMEM;
    if (st) {
        st_dataset_free(&ds);
        return st;
    }
    *out = ds;
    return ST_OK;
}

void st_dataset_truncate(st_dataset *ds, size_t n) {
    if (n == 0 || n >= ds->n) return;
    for (size_t i = n; i < ds->n; i++) st_data_conv_free(&ds->rows[i]);
    ds->n = n;
}

void st_dataset_free(st_dataset *ds) {
    for (size_t i = 0; i < ds->n; i++) st_data_conv_free(&ds->rows[i]);
    free(ds->rows);
    free(ds->path);
    memset(ds, 0, sizeof *ds);
}
