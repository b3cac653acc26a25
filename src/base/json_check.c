/* json_check.c - strict config JSON (json_check.h): cJSON parses; a scan of the same text finds
 * duplicate keys with their lines, since cJSON's tree keeps no positions. */
#include "safetune/json_check.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int is_obj;
    int want_key;           /* object: the next string is a key */
    size_t keys0;           /* first of this object's keys in the key list */
    size_t index;           /* array: index of the current element */
    const char *key;        /* object: the current key (raw, between its quotes) */
    size_t key_len;
} frame;

typedef struct {
    const char *p;
    size_t len, line;
} key_at;

/* "a.b[2].c": the path of the key being read at depth d (frames[1..d]), key k of frame d. */
static void key_path(const frame *f, size_t d, const char *k, size_t kl, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 1; i <= d && o < cap; i++) {
        const frame *parent = &f[i - 1];
        if (i == 1) continue; /* the top value has no name */
        if (parent->is_obj)
            o += (size_t)snprintf(buf + o, cap - o, "%s%.*s", o ? "." : "", (int)parent->key_len, parent->key);
        else o += (size_t)snprintf(buf + o, cap - o, "[%zu]", parent->index);
    }
    if (o < cap) snprintf(buf + o, cap - o, "%s%.*s", o ? "." : "", (int)kl, k);
}

static st_status find_duplicates(const char *text, const char *src) {
    size_t cap = 64, n_keys = 0, key_cap = 64, depth = 0, line = 1;
    frame *f = malloc(cap * sizeof *f);
    key_at *keys = malloc(key_cap * sizeof *keys);
    st_status s = f && keys ? ST_OK : st_error(ST_ERR_NOMEM, "out of memory");
    if (!s) f[0] = (frame){0};
    for (const char *p = text; !s && *p; p++) {
        const char c = *p;
        if (c == '\n') line++;
        else if (c == '{' || c == '[') {
            if (depth + 1 >= cap) {
                frame *nf = realloc(f, 2 * cap * sizeof *f);
                if (!nf) { s = st_error(ST_ERR_NOMEM, "out of memory"); break; }
                f = nf;
                cap *= 2;
            }
            f[++depth] = (frame){c == '{', c == '{', n_keys, 0, NULL, 0};
        } else if (c == '}' || c == ']') {
            if (depth) n_keys = f[depth--].keys0;
        } else if (c == ',') {
            if (f[depth].is_obj) f[depth].want_key = 1;
            else f[depth].index++;
        } else if (c == '"') {
            const char *q = p + 1;
            while (*q && *q != '"') q += *q == '\\' && q[1] ? 2 : 1;
            const size_t kl = (size_t)(q - (p + 1));
            if (depth && f[depth].is_obj && f[depth].want_key) {
                for (size_t i = f[depth].keys0; i < n_keys; i++)
                    if (keys[i].len == kl && !memcmp(keys[i].p, p + 1, kl)) {
                        char path[512];
                        key_path(f, depth, p + 1, kl, path, sizeof path);
                        s = st_error(ST_ERR_FORMAT, "%s: line %zu: key '%s' appears twice in one object (first on "
                                     "line %zu); keep one", src, line, path, keys[i].line);
                        break;
                    }
                if (s) break;
                if (n_keys == key_cap) {
                    key_at *nk = realloc(keys, 2 * key_cap * sizeof *keys);
                    if (!nk) { s = st_error(ST_ERR_NOMEM, "out of memory"); break; }
                    keys = nk;
                    key_cap *= 2;
                }
                keys[n_keys++] = (key_at){p + 1, kl, line};
                f[depth].want_key = 0;
                f[depth].key = p + 1;
                f[depth].key_len = kl;
            }
            if (!*q) break;
            p = q; /* the closing quote (strings hold no raw newline in valid JSON) */
        }
    }
    free(f);
    free(keys);
    return s;
}

st_status st_json_parse_checked(const char *text, const char *src, cJSON **out) {
    *out = NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, 1);
    if (!j) {
        size_t line = 1, col = 1;
        for (const char *p = text; end && p < end && *p; p++) {
            if (*p == '\n') {
                line++;
                col = 1;
            } else col++;
        }
        return st_error(ST_ERR_FORMAT, "%s: line %zu, column %zu: invalid JSON", src, line, col);
    }
    st_status s = find_duplicates(text, src);
    if (s) {
        cJSON_Delete(j);
        return s;
    }
    *out = j;
    return ST_OK;
}

size_t st_edit_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > 63 || nb > 63) return 99;
    size_t d[64][64];
    for (size_t i = 0; i <= na; i++) d[i][0] = i;
    for (size_t j = 0; j <= nb; j++) d[0][j] = j;
    for (size_t i = 1; i <= na; i++)
        for (size_t j = 1; j <= nb; j++) {
            size_t c = d[i - 1][j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[na][nb];
}

const char *st_closest_name(const char *name, const char *const *names, size_t n) {
    const char *best = NULL;
    size_t bd = 99, len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        size_t d = st_edit_distance(name, names[i]);
        if (d < bd) {
            bd = d;
            best = names[i];
        }
    }
    const size_t lim = len <= 4 ? 1 : (len <= 8 ? 2 : 3);
    return bd <= lim ? best : NULL;
}
