/* prompts_bench.c - the public harmful-prompt benchmarks, read from the user's copy of their
 * files in the published layout (see prompts.h):
 *   HarmBench (Mazeika et al. 2024): centerforaisafety/HarmBench,
 *     data/behavior_datasets/harmbench_behaviors_text_{all,val,test}.csv
 *   StrongREJECT (Souly et al. 2024): alexandrasouly/strongreject,
 *     strongreject_dataset/strongreject_{,small_}dataset.csv
 *   JailbreakBench JBB-Behaviors (Chao et al. 2024): data/harmful-behaviors.csv and
 *     data/benign-behaviors.csv
 *   HEx-PHI (Qi et al. 2023): LLM-Tuning-Safety/HEx-PHI, category_N.csv
 * Column names match ignoring case (st__csv_col). */
#include "eval/eval_internal.h"
#include "eval/prompts_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

enum { HB_STANDARD = 1, HB_CONTEXTUAL = 2, HB_COPYRIGHT = 4 };

static const char *const HB_NAMES[] = {"standard", "contextual", "copyright"};

st_status st__harmbench_functional_mask(const char *list, unsigned *mask) {
    *mask = 0;
    if (!list) {
        *mask = HB_STANDARD;
        return ST_OK;
    }
    const char *p = list;
    while (1) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        unsigned bit = 0;
        if (l == 3 && !strncmp(p, "all", 3)) bit = HB_STANDARD | HB_CONTEXTUAL | HB_COPYRIGHT;
        for (unsigned i = 0; i < 3; i++)
            if (strlen(HB_NAMES[i]) == l && !strncmp(p, HB_NAMES[i], l)) bit = 1u << i;
        if (!bit)
            return st_error(ST_ERR_ARG, "HarmBench functional category \"%.*s\" in \"%s\": expected a comma-separated "
                            "list of standard, contextual, copyright (or all)", (int)l, p, list);
        *mask |= bit;
        if (!e) break;
        p = e + 1;
    }
    return ST_OK;
}

/* The column `name` of header h, required: its index, or a missing-column error with the hint. */
static st_status need_col(const char *path, const st__csv_row *h, const char *name, const char *hint, int *idx) {
    st_status s = ST_OK;
    *idx = st__csv_col(path, h, name, &s);
    if (s) return s;
    if (*idx < 0) return st__csv_missing_col(path, h, name, hint);
    return ST_OK;
}

/* An optional column: its index or -1. */
static st_status opt_col(const char *path, const st__csv_row *h, const char *name, int *idx) {
    st_status s = ST_OK;
    *idx = st__csv_col(path, h, name, &s);
    return s;
}

/* Load path as a CSV with a header row; an empty file or one without rows is an error naming the
 * expected layout. */
static st_status load_table(const char *path, const char *layout, st__csv_table *t) {
    st_status s = st__csv_load(path, t);
    if (s) return s;
    if (t->n == 0) s = st_error(ST_ERR_FORMAT, "%s: empty file (expected the header row %s)", path, layout);
    else if (t->n == 1) s = st_error(ST_ERR_FORMAT, "%s: no prompts (only a header row)", path);
    else s = st__csv_check_widths(path, t);
    if (s) st__csv_table_free(t);
    return s;
}

static st_status oom(const char *path) {
    return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
}

/* ---------------- HarmBench ---------------- */

#define HB_LAYOUT "Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID"
#define HB_HINT "expected HarmBench's behaviours layout " HB_LAYOUT

st_status st__load_harmbench(const char *path, const st_prompt_opts *o, st_prompt_set *out) {
    unsigned mask;
    st_status s = st__harmbench_functional_mask(o->harmbench_functional, &mask);
    if (s) return s;
    st__csv_table t;
    if ((s = load_table(path, HB_LAYOUT, &t))) return s;
    const st__csv_row *h = &t.rows[0];
    int ib, ifn, isem, ictx, iid;
    if ((s = need_col(path, h, "Behavior", HB_HINT, &ib)) || (s = need_col(path, h, "FunctionalCategory", HB_HINT, &ifn)) ||
        (s = need_col(path, h, "SemanticCategory", HB_HINT, &isem)) ||
        (s = need_col(path, h, "ContextString", HB_HINT, &ictx)) || (s = opt_col(path, h, "BehaviorID", &iid)))
        goto out;
    size_t cap = 0, excluded[3] = {0, 0, 0};
    st__buf b = {0};
    for (size_t r = 1; r < t.n; r++) {
        const st__csv_row *row = &t.rows[r];
        const char *fn = row->f[ifn], *beh = row->f[ib], *ctx = row->f[ictx];
        int which = -1;
        for (int i = 0; i < 3; i++)
            if (!strcasecmp(fn, HB_NAMES[i])) which = i;
        if (which < 0) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: FunctionalCategory \"%s\" is not standard, contextual or "
                         "copyright (HarmBench's text behaviours)", path, row->line, fn);
            break;
        }
        if (st__blank(beh)) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: empty Behavior", path, row->line);
            break;
        }
        if (which == 1 && st__blank(ctx)) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: a contextual behaviour with an empty ContextString (the "
                         "context is part of the request: restore it from HarmBench's file)", path, row->line);
            break;
        }
        if (!(mask & (1u << which))) {
            excluded[which]++;
            out->n_excluded++;
            continue;
        }
        /* HarmBench renders a behaviour with context as "{context}\n\n---\n\n{behavior}" whenever
         * ContextString is non-empty (baselines/direct_request/direct_request.py,
         * DirectRequest.generate_test_cases; the same form in its GCG and AutoDAN baselines). */
        b.n = 0;
        if (ctx[0]) {
            st__buf_puts(&b, ctx);
            st__buf_puts(&b, "\n\n---\n\n");
        }
        st__buf_puts(&b, beh);
        st__buf_putc(&b, '\0');
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "%zu", r - 1);
        const char *id = iid >= 0 && row->f[iid][0] ? row->f[iid] : idbuf;
        const char *cat = row->f[isem][0] ? row->f[isem] : NULL;
        if (b.oom || st__prompt_push(out, &cap, id, b.p, cat, ST_LABEL_NONE)) {
            s = oom(path);
            break;
        }
    }
    st__buf_free(&b);
    if (!s && out->n == 0) {
        char kept[64] = "";
        for (int i = 0; i < 3; i++)
            if (mask & (1u << i)) snprintf(kept + strlen(kept), sizeof kept - strlen(kept), "%s%s", kept[0] ? "," : "", HB_NAMES[i]);
        s = st_error(ST_ERR_FORMAT, "%s: no behaviours with FunctionalCategory %s (the file has %zu standard, %zu "
                     "contextual, %zu copyright left out); choose others with --harmbench-functional",
                     path, kept, excluded[0], excluded[1], excluded[2]);
    }
out:
    st__csv_table_free(&t);
    return s;
}

/* ---------------- StrongREJECT ---------------- */

#define SR_HINT "expected StrongREJECT's layout category,source,forbidden_prompt"

st_status st__load_strongreject(const char *path, st_prompt_set *out) {
    st__csv_table t;
    st_status s = load_table(path, "category,source,forbidden_prompt", &t);
    if (s) return s;
    const st__csv_row *h = &t.rows[0];
    int ip, icat;
    if ((s = need_col(path, h, "forbidden_prompt", SR_HINT, &ip)) || (s = need_col(path, h, "category", SR_HINT, &icat)))
        goto out;
    size_t cap = 0;
    for (size_t r = 1; r < t.n && !s; r++) {
        const st__csv_row *row = &t.rows[r];
        if (st__blank(row->f[ip])) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: empty forbidden_prompt", path, row->line);
            break;
        }
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "%zu", r - 1);
        if (st__prompt_push(out, &cap, idbuf, row->f[ip], row->f[icat][0] ? row->f[icat] : NULL, ST_LABEL_NONE))
            s = oom(path);
    }
out:
    st__csv_table_free(&t);
    return s;
}

/* ---------------- JailbreakBench ---------------- */

#define JBB_LAYOUT "Index,Goal,Target,Behavior,Category,Source"

st_status st__load_jbb(const char *path, int benign, st_prompt_set *out) {
    st__csv_table t;
    st_status s = load_table(path, JBB_LAYOUT, &t);
    if (s) return s;
    const st__csv_row *h = &t.rows[0];
    const char *hint = "expected JailbreakBench's behaviours layout " JBB_LAYOUT;
    int ip, icat, iid;
    if ((s = need_col(path, h, "Goal", hint, &ip)) || (s = need_col(path, h, "Category", hint, &icat)) ||
        (s = opt_col(path, h, "Index", &iid)))
        goto out;
    size_t cap = 0;
    for (size_t r = 1; r < t.n && !s; r++) {
        const st__csv_row *row = &t.rows[r];
        if (st__blank(row->f[ip])) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: empty Goal", path, row->line);
            break;
        }
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "%zu", r - 1);
        const char *id = iid >= 0 && row->f[iid][0] ? row->f[iid] : idbuf;
        if (st__prompt_push(out, &cap, id, row->f[ip], row->f[icat][0] ? row->f[icat] : NULL,
                            benign ? ST_LABEL_SAFE : ST_LABEL_NONE))
            s = oom(path);
    }
out:
    st__csv_table_free(&t);
    return s;
}

/* ---------------- HEx-PHI ---------------- */

#define HEXPHI_N 11 /* HEx-PHI's 11 prohibited-use categories (Qi et al. 2023) */

/* A one-field first row that names the column rather than asking something. */
static int hexphi_header(const st__csv_row *r) {
    static const char *const names[] = {"prompt", "prompts", "instruction", "instructions", "text",
                                        "question", "goal", "behavior", "query"};
    if (r->nf != 1) return 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(r->f[0], names[i])) return 1;
    return 0;
}

/* N of "category_N.csv" (1..HEXPHI_N, no leading zero), else 0. */
static int hexphi_number(const char *name) {
    if (strncmp(name, "category_", 9)) return 0;
    const char *p = name + 9;
    if (*p < '1' || *p > '9') return 0;
    int n = 0;
    while (isdigit((unsigned char)*p) && n <= HEXPHI_N) n = n * 10 + (*p++ - '0');
    if (strcmp(p, ".csv") || n > HEXPHI_N) return 0;
    return n;
}

static int has_csv_ext(const char *name) {
    size_t l = strlen(name);
    return l >= 4 && !strcasecmp(name + l - 4, ".csv");
}

static st_status hexphi_file(const char *path, int n, st_prompt_set *out, size_t *cap) {
    st__csv_table t;
    st_status s = st__csv_load(path, &t);
    if (s) return s;
    char cat[32];
    snprintf(cat, sizeof cat, "category_%d", n);
    size_t first = t.n && hexphi_header(&t.rows[0]) ? 1 : 0, k = 0;
    for (size_t r = first; r < t.n && !s; r++) {
        const st__csv_row *row = &t.rows[r];
        if (row->nf != 1) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: %zu fields; a HEx-PHI category file holds one prompt per row "
                         "(quote a prompt that contains a comma)", path, row->line, row->nf);
            break;
        }
        if (st__blank(row->f[0])) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: empty prompt", path, row->line);
            break;
        }
        char id[48];
        snprintf(id, sizeof id, "%s:%zu", cat, k++);
        if (st__prompt_push(out, cap, id, row->f[0], cat, ST_LABEL_NONE)) s = oom(path);
    }
    if (!s && k == 0)
        s = st_error(ST_ERR_FORMAT, "%s: %s (expected one prompt per row)", path,
                     t.n ? "no prompts (only a header row)" : "empty file");
    st__csv_table_free(&t);
    return s;
}

st_status st__load_hexphi(const char *dir, st_prompt_set *out) {
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return st_error(ST_ERR_IO, "%s: no such folder (hexphi:DIR names the folder that holds HEx-PHI's "
                        "category_N.csv files)", dir);
    if (!S_ISDIR(sb.st_mode))
        return st_error(ST_ERR_ARG, "%s: not a folder (hexphi:DIR names the folder that holds HEx-PHI's "
                        "category_N.csv files)", dir);
    DIR *d = opendir(dir);
    if (!d) return st_error(ST_ERR_IO, "%s: cannot open the folder", dir);
    int have[HEXPHI_N + 1] = {0};
    st_status s = ST_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!has_csv_ext(e->d_name)) continue;
        int n = hexphi_number(e->d_name);
        if (!n) {
            s = st_error(ST_ERR_FORMAT, "%s/%s: not a HEx-PHI category file name (expected category_N.csv with N = "
                         "1..%d, one file per category); rename it or move it out of the folder", dir, e->d_name,
                         HEXPHI_N);
            break;
        }
        have[n] = 1;
    }
    closedir(d);
    if (s) return s;
    size_t cap = 0, nfiles = 0;
    char path[4200];
    for (int n = 1; n <= HEXPHI_N && !s; n++) {
        if (!have[n]) continue;
        nfiles++;
        snprintf(path, sizeof path, "%s/category_%d.csv", dir, n);
        s = hexphi_file(path, n, out, &cap);
    }
    if (!s && nfiles == 0)
        s = st_error(ST_ERR_FORMAT, "%s: no HEx-PHI category files (expected category_1.csv ... category_%d.csv)", dir,
                     HEXPHI_N);
    return s;
}
