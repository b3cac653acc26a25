/* args.c - see args.h. */
#include "cli/args.h"

#include "safetune/base.h"
#include "safetune/json_check.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *st_args_default_text(const st_opt *o, char *buf, size_t cap) {
    buf[0] = '\0';
    switch (o->type) {
    case ST_OPT_STR:
    case ST_OPT_CHOICE:
    case ST_OPT_LIST:
        if (*(const char *const *)o->dst) snprintf(buf, cap, " (default: %s)", *(const char *const *)o->dst);
        break;
    case ST_OPT_INT: snprintf(buf, cap, " (default: %d)", *(const int *)o->dst); break;
    case ST_OPT_FLOAT: snprintf(buf, cap, " (default: %.7g)", *(const float *)o->dst); break;
    case ST_OPT_U64: snprintf(buf, cap, " (default: %llu)", (unsigned long long)*(const uint64_t *)o->dst); break;
    case ST_OPT_FLAG:
    case ST_OPT_MULTI: break;
    }
    return buf;
}

void st_args_usage(const st_args_spec *spec, FILE *f) {
    fprintf(f, "usage: %s %s\n", spec->prog, spec->synopsis ? spec->synopsis : "[options]");
    if (spec->about) fprintf(f, "\n%s\n", spec->about);
    fprintf(f, "\noptions:\n");
    for (int i = 0; i < spec->n_opts; i++) {
        const st_opt *o = &spec->opts[i];
        char left[128];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        char def[96];
        const char *help = o->help ? o->help : "";
        if (strlen(left) > 28) fprintf(f, "  %s\n  %-28s", left, ""); /* long choice lists: help below */
        else fprintf(f, "  %-28s", left);
        fprintf(f, " %s%s\n", help, strstr(help, "default") ? "" : st_args_default_text(o, def, sizeof def));
    }
    if (!spec->own_config)
        fprintf(f, "  %-28s %s\n", "--config FILE", "JSON object of option values (keys as above); flags win");
    fprintf(f, "  %-28s %s\n", "--help", "show this help");
}

double st_args_decimal(float f) {
    char b[32];
    snprintf(b, sizeof b, "%.7g", f);
    return strtod(b, NULL);
}

int st_args_fail(const st_args_spec *spec, const char *fmt, ...) {
    char msg[2048]; /* formatted first: the arguments may be st_last_error() itself */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n(see %s --help)\n", spec->prog, msg, spec->prog);
    st_error(ST_ERR_ARG, "%s", msg); /* st_last_error(): what an MPI agreement hands the other ranks */
    return 2;
}

/* Option by name; '_' in `name` matches '-' (config keys). len: bytes of name to compare. */
static st_opt *find_opt(st_args_spec *spec, const char *name, size_t len) {
    for (int i = 0; i < spec->n_opts; i++) {
        const char *o = spec->opts[i].name;
        if (strlen(o) != len) continue;
        size_t k = 0;
        for (; k < len; k++) {
            char c = name[k] == '_' ? '-' : name[k];
            if (c != o[k]) break;
        }
        if (k == len) return &spec->opts[i];
    }
    return NULL;
}

/* " (did you mean 'max_steps'?)" for the option closest to name (json_check.h st_closest_name),
 * spelled with '_' (config keys written that way) or '-', after prefix ("--" for flags); "" when
 * none is close. */
static void closest_hint(const st_args_spec *spec, const char *name, int underscores, const char *prefix, char *buf,
                         size_t cap) {
    buf[0] = '\0';
    char norm[64];
    snprintf(norm, sizeof norm, "%s", name);
    for (char *p = norm; *p; p++)
        if (*p == '_') *p = '-';
    const char **names = malloc((size_t)(spec->n_opts ? spec->n_opts : 1) * sizeof *names);
    if (!names) return;
    size_t n = 0;
    for (int i = 0; i < spec->n_opts; i++)
        if (strcmp(spec->opts[i].name, "config") && strcmp(spec->opts[i].name, "help")) names[n++] = spec->opts[i].name;
    const char *best = st_closest_name(norm, names, n);
    free(names);
    if (!best) return;
    char b[64];
    snprintf(b, sizeof b, "%s", best);
    for (char *p = b; underscores && *p; p++)
        if (*p == '-') *p = '_';
    snprintf(buf, cap, " (did you mean '%s%s'?)", prefix, b);
}

/* Whether v is one of the '|'-separated words of list. */
static int is_choice(const char *list, const char *v) {
    size_t n = strlen(v);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* Set an option from text; returns 0 or prints an error and returns 2. `where` prefixes it. */
static int set_value(st_args_spec *spec, st_opt *o, const char *v, const char *where) {
    char *end;
    errno = 0;
    switch (o->type) {
    case ST_OPT_MULTI: {
        st_opt_multi *l = o->dst;
        if (!*where && !l->from_flags) { /* the first flag replaces the config file's values */
            l->n = 0;
            l->from_flags = 1;
        }
        if (l->n >= ST_OPT_MULTI_MAX)
            return st_args_fail(spec, "%s--%s: given more than %d times", where, o->name, ST_OPT_MULTI_MAX);
        l->v[l->n++] = v;
        break;
    }
    case ST_OPT_STR:
    case ST_OPT_LIST:
        *(const char **)o->dst = v;
        break;
    case ST_OPT_CHOICE:
        if (!is_choice(o->metavar, v))
            return st_args_fail(spec, "%s--%s: expected one of %s, got '%s'", where, o->name, o->metavar, v);
        *(const char **)o->dst = v;
        break;
    case ST_OPT_FLAG:
        if (!strcmp(v, "1") || !strcmp(v, "true")) *(int *)o->dst = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false")) *(int *)o->dst = 0;
        else return st_args_fail(spec, "%s--%s: expected true or false, got '%s'", where, o->name, v);
        break;
    case ST_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < INT32_MIN || x > INT32_MAX)
            return st_args_fail(spec, "%s--%s: expected an integer, got '%s'", where, o->name, v);
        if (o->min < o->max && (x < o->min || x > o->max))
            return st_args_fail(spec, "%s--%s: %ld is out of range [%.15g, %.15g]", where, o->name, x, o->min, o->max);
        *(int *)o->dst = (int)x;
        break;
    }
    case ST_OPT_U64: {
        if (*v == '-') return st_args_fail(spec, "%s--%s: expected a non-negative integer, got '%s'", where, o->name, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno)
            return st_args_fail(spec, "%s--%s: expected a non-negative integer, got '%s'", where, o->name, v);
        *(uint64_t *)o->dst = (uint64_t)x;
        break;
    }
    case ST_OPT_FLOAT: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x))
            return st_args_fail(spec, "%s--%s: expected a number, got '%s'", where, o->name, v);
        if (o->min < o->max && (x < o->min || x > o->max))
            return st_args_fail(spec, "%s--%s: %g is out of range [%.15g, %.15g]", where, o->name, x, o->min, o->max);
        *(float *)o->dst = (float)x;
        break;
    }
    }
    o->seen = 1;
    return 0;
}

static int keep_string(st_args *out, const char *s, const char **copy) {
    char **n = realloc(out->owned, (size_t)(out->n_owned + 1) * sizeof *n);
    if (!n) return -1;
    out->owned = n;
    if (!(n[out->n_owned] = strdup(s))) return -1;
    *copy = n[out->n_owned++];
    return 0;
}

static int apply_config(st_args_spec *spec, const char *path, st_args *out) {
    char *text;
    size_t len;
    if (st_read_text_file(path, &text, &len)) { /* a file that cannot be read: a runtime error (1), as elsewhere */
        fprintf(stderr, "%s: --config: %s\n", spec->prog, st_last_error());
        return 1;
    }
    cJSON *root = NULL;
    int rc = 0;
    if (!(out->config_key = calloc((size_t)(spec->n_opts ? spec->n_opts : 1), sizeof *out->config_key))) {
        rc = st_args_fail(spec, "out of memory");
        goto done;
    }
    if (st_json_parse_checked(text, path, &root) != ST_OK) {
        rc = st_args_fail(spec, "%s", st_last_error());
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        rc = st_args_fail(spec, "%s: expected a JSON object of option values", path);
        goto done;
    }
    for (cJSON *it = root->child; it && !rc; it = it->next) {
        char where[512];
        snprintf(where, sizeof where, "%s: key '%s': ", path, it->string);
        st_opt *o = find_opt(spec, it->string, strlen(it->string));
        if (!o || !strcmp(it->string, "config") || !strcmp(it->string, "help")) {
            char hint[96];
            closest_hint(spec, it->string, strchr(it->string, '_') != NULL, "", hint, sizeof hint);
            rc = st_args_fail(spec, "%s: unknown key '%s'%s", path, it->string, hint);
            break;
        }
        const char *key_copy = NULL;
        if (keep_string(out, it->string, &key_copy)) { rc = st_args_fail(spec, "out of memory"); break; }
        char buf[64];
        const char *v = NULL;
        if (o->type == ST_OPT_MULTI) { /* an array of strings/numbers, or one */
            const cJSON *one = cJSON_IsArray(it) ? it->child : it;
            for (; one && !rc; one = cJSON_IsArray(it) ? one->next : NULL) {
                const char *lv = NULL;
                char nb[64];
                if (cJSON_IsString(one)) {
                    lv = one->valuestring;
                } else if (cJSON_IsNumber(one)) {
                    snprintf(nb, sizeof nb, "%.17g", one->valuedouble);
                    lv = nb;
                } else {
                    rc = st_args_fail(spec, "%sexpected a string, a number or an array of them", where);
                    break;
                }
                if (keep_string(out, lv, &lv)) { rc = st_args_fail(spec, "out of memory"); break; }
                rc = set_value(spec, o, lv, where);
            }
            out->config_key[o - spec->opts] = key_copy;
            continue;
        }
        if (o->type == ST_OPT_STR || o->type == ST_OPT_CHOICE) {
            if (!cJSON_IsString(it)) { rc = st_args_fail(spec, "%sexpected a string", where); break; }
            if (keep_string(out, it->valuestring, &v)) { rc = st_args_fail(spec, "out of memory"); break; }
        } else if (o->type == ST_OPT_LIST) {
            char lb[1024] = "";
            size_t ln = 0;
            int bad = !(cJSON_IsNumber(it) || cJSON_IsString(it) || (cJSON_IsArray(it) && it->child));
            const cJSON *first = cJSON_IsArray(it) ? it->child : it;
            for (const cJSON *e = first; e && !bad; e = cJSON_IsArray(it) ? e->next : NULL) {
                if (cJSON_IsNumber(e)) ln += (size_t)snprintf(lb + ln, sizeof lb - ln, "%s%.17g", ln ? "," : "", e->valuedouble);
                else if (cJSON_IsString(e)) ln += (size_t)snprintf(lb + ln, sizeof lb - ln, "%s%s", ln ? "," : "", e->valuestring);
                else bad = 1;
                if (ln >= sizeof lb) bad = 1;
            }
            if (bad) { rc = st_args_fail(spec, "%sexpected a number, a string or a list of numbers", where); break; }
            if (keep_string(out, lb, &v)) { rc = st_args_fail(spec, "out of memory"); break; }
        } else if (o->type == ST_OPT_FLAG) {
            if (!cJSON_IsBool(it)) { rc = st_args_fail(spec, "%sexpected true or false", where); break; }
            v = cJSON_IsTrue(it) ? "true" : "false";
        } else {
            if (!cJSON_IsNumber(it)) { rc = st_args_fail(spec, "%sexpected a number", where); break; }
            snprintf(buf, sizeof buf, "%.17g", it->valuedouble);
            v = buf;
        }
        rc = set_value(spec, o, v, where);
        out->config_key[o - spec->opts] = key_copy;
    }
done:
    cJSON_Delete(root);
    free(text);
    return rc;
}

static int parse_args(st_args_spec *spec, int argc, char **argv, st_args *out);

int st_args_parse(st_args_spec *spec, int argc, char **argv, st_args *out) {
    const int rc = parse_args(spec, argc, argv, out);
    if (rc) st_args_free(out); /* nothing of a failed parse is used: callers may return at once */
    return rc;
}

static int parse_args(st_args_spec *spec, int argc, char **argv, st_args *out) {
    memset(out, 0, sizeof *out);
    /* pass 1: --help and --config */
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) break;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            st_args_usage(spec, stdout);
            return -1;
        }
        if (spec->own_config) continue;
        if (!strcmp(a, "--config")) {
            if (i + 1 >= argc) return st_args_fail(spec, "--config needs a value (FILE)");
            config = argv[++i];
        } else if (!strncmp(a, "--config=", 9)) {
            config = a + 9;
        }
    }
    if (config) {
        out->config = config;
        int rc = apply_config(spec, config, out);
        if (rc) return rc;
    }
    /* pass 2: flags (override the config) and positionals */
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!only_pos && !strcmp(a, "--")) { only_pos = 1; continue; }
        if (only_pos || a[0] != '-' || !a[1]) {
            if (out->n_pos >= spec->max_pos || out->n_pos >= 8)
                return st_args_fail(spec, "unexpected argument '%s'", a);
            out->pos[out->n_pos++] = a;
            continue;
        }
        if (a[1] != '-') return st_args_fail(spec, "unknown option '%s' (options are long: --name value)", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        if (!spec->own_config && nlen == 6 && !strncmp(name, "config", 6)) {
            if (!eq) i++;
            continue;
        }
        st_opt *o = find_opt(spec, name, nlen);
        if (!o || memchr(name, '_', nlen)) {
            char nm[64], hint[96];
            snprintf(nm, sizeof nm, "%.*s", (int)(nlen < 63 ? nlen : 63), name);
            closest_hint(spec, nm, 0, "--", hint, sizeof hint);
            return st_args_fail(spec, "unknown option '--%.*s'%s", (int)nlen, name, hint);
        }
        const char *v;
        if (eq) v = eq + 1;
        else if (o->type == ST_OPT_FLAG) v = "true";
        else if (i + 1 < argc) v = argv[++i];
        else return st_args_fail(spec, "--%s needs a value (%s)", o->name, o->metavar ? o->metavar : "VALUE");
        int rc = set_value(spec, o, v, "");
        if (rc) return rc;
        if (out->config_key) out->config_key[o - spec->opts] = NULL; /* the flag wins over the file */
    }
    if (out->n_pos < spec->min_pos)
        return st_args_fail(spec, "missing %s", spec->pos_names ? spec->pos_names : "argument");
    return 0;
}

void st_args_free(st_args *a) {
    for (int i = 0; i < a->n_owned; i++) free(a->owned[i]);
    free(a->owned);
    a->owned = NULL;
    free(a->config_key);
    a->config_key = NULL;
    a->n_owned = 0;
}
