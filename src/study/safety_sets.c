/* safety_sets.c - the safety data of the data-side defenses, read back from an aligned start's
 * folder (`safetune align`): D_align = the AdvBench half-A refusal pairs of align_set.jsonl
 * (DEFENSES.md notation), and the poisoned column's (goal, target) pairs from a seeded reserve of
 * half A (§9). Never half B (the test set) and never XSTest; an alignment set holding a prompt of
 * AdvBench half B or XSTest half B (st_study_xstest_split) is refused. */
#include "study/study_internal.h"

#include <stdlib.h>
#include <string.h>

#include "safetune/data_transform.h"
#include "safetune/prompts.h"

/* Index of text among the rows idx[0..n) of adv, or -1. */
static long find_goal(const st_prompt_set *adv, const uint32_t *idx, size_t n, const char *text) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(adv->items[idx[i]].prompt, text)) return (long)i;
    return -1;
}

/* The AdvBench half-a goals the alignment set holds: align.json's settings.n_advbench (0 or absent =
 * all na; an older align.json has no such key), capped at na. */
static size_t align_n_advbench(const char *align_dir, size_t na) {
    char *p = stu_join(align_dir, "align.json"), *t = NULL;
    size_t len, n = na;
    if (p && st_read_file(p, &t, &len) == ST_OK) {
        cJSON *j = cJSON_Parse(t);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "settings"), "n_advbench");
        if (cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble < (double)na) n = (size_t)v->valuedouble;
        cJSON_Delete(j);
    }
    free(t);
    free(p);
    return n;
}

st_status st_study_safety_sets(const char *align_dir, const char *data_dir, size_t poison_reserve, uint64_t seed,
                               st_dataset *d_align, st_dataset *poison) {
    memset(d_align, 0, sizeof *d_align);
    if (poison) memset(poison, 0, sizeof *poison);
    char *p_split = stu_join(align_dir, "advbench_split.json"), *p_set = stu_join(align_dir, "align_set.jsonl");
    uint32_t *a = NULL, *b = NULL, *perm = NULL, *xa = NULL, *xb = NULL;
    size_t na = 0, nb = 0, nxa = 0, nxb = 0;
    uint64_t split_seed = 0;
    st_prompt_set adv = {0}, xs = {0};
    st_dataset set = {0};
    const char **gu = NULL, **ga = NULL;
    unsigned char *reserved = NULL;
    st_status s = p_split && p_set ? ST_OK : st_error(ST_ERR_NOMEM, "out of memory");
    if (!s && (!stu_exists(p_split) || !stu_exists(p_set)))
        s = st_error(ST_ERR_ARG, "align_dir %s: no advbench_split.json / align_set.jsonl there: pass the folder "
                     "`safetune align --out DIR` wrote (it holds aligned/, align_set.jsonl, advbench_split.json)",
                     align_dir);
    if (!s) s = st_study_advbench_split_read(p_split, &a, &na, &b, &nb, &split_seed);
    if (!s) s = st_prompts_load("advbench", data_dir, &adv);
    if (!s && adv.n != na + nb)
        s = st_error(ST_ERR_FORMAT, "%s: splits %zu AdvBench rows, but %s has %zu", p_split, na + nb, adv.path, adv.n);
    if (!s) s = st_dataset_load(p_set, ST_DATA_MESSAGES, &set);
    if (!s) s = st_prompts_load("xstest", data_dir, &xs);
    if (!s) s = st_study_xstest_split(&xs, split_seed, &xa, &nxa, &xb, &nxb);
    if (!s && poison_reserve > na)
        s = st_error(ST_ERR_ARG, "poison: a reserve of %zu goals is more than half A's %zu", poison_reserve, na);
    if (!s && !(reserved = calloc(na ? na : 1, 1))) s = st_error(ST_ERR_NOMEM, "out of memory");
    if (!s && poison_reserve) { /* the reserve: the first goals of a seeded permutation of half A */
        if (!(perm = malloc(na * sizeof *perm))) s = st_error(ST_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !s && i < na; i++) perm[i] = (uint32_t)i;
        if (!s) {
            st_rng r;
            st_rng_seed(&r, seed ^ 0x726573657276ULL /* "reserv" */);
            st_rng_shuffle(&r, perm, na);
            for (size_t i = 0; i < poison_reserve; i++) reserved[perm[i]] = 1;
        }
    }
    size_t n_pairs = 0;
    if (!s && (!(gu = calloc(set.n + 1, sizeof *gu)) || !(ga = calloc(set.n + 1, sizeof *ga))))
        s = st_error(ST_ERR_NOMEM, "out of memory");
    unsigned char *found = NULL;
    if (!s && !(found = calloc(na ? na : 1, 1))) s = st_error(ST_ERR_NOMEM, "out of memory");
    for (size_t r = 0; !s && r < set.n; r++) {
        const st_conversation *c = &set.rows[r];
        if (c->n_msgs != 2 || strcmp(c->msgs[0].role, "user") || strcmp(c->msgs[1].role, "assistant")) continue;
        if (find_goal(&xs, xb, nxb, c->msgs[0].content) >= 0) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu holds an XSTest half-b prompt (the evaluation half of "
                         "st_study_xstest_split, seed %llu): this is not the alignment set of %s; rebuild it with "
                         "`safetune align`", p_set, r + 1, (unsigned long long)split_seed, p_split);
            break;
        }
        if (find_goal(&adv, b, nb, c->msgs[0].content) >= 0) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu holds an AdvBench half-b goal (the test set): this is not the "
                         "alignment set of %s; rebuild it with `safetune align`", p_set, r + 1, p_split);
            break;
        }
        const long k = find_goal(&adv, a, na, c->msgs[0].content);
        if (k < 0) continue; /* an Alpaca row of the mix */
        if (found[k]++) continue;
        if (reserved[k]) continue; /* kept for the poisoned column, out of D_align */
        gu[n_pairs] = c->msgs[0].content;
        ga[n_pairs++] = c->msgs[1].content;
    }
    size_t n_found = 0;
    for (size_t i = 0; !s && i < na; i++) n_found += found[i] != 0;
    const size_t n_want = s ? na : align_n_advbench(align_dir, na);
    if (!s && n_found != n_want)
        s = st_error(ST_ERR_FORMAT, "%s: holds %zu of the %zu AdvBench half-a goals of %s (align.json's n_advbench); "
                     "rebuild it with `safetune align`", p_set, n_found, n_want, p_split);
    if (!s) {
        char name[4200];
        snprintf(name, sizeof name, "%s (AdvBench half a refusals)", p_set);
        s = st_dataset_from_pairs(gu, ga, n_pairs, name, d_align);
    }
    if (!s && poison && poison_reserve) {
        for (size_t i = 0; i < poison_reserve; i++) {
            const st_prompt *p = &adv.items[a[perm[i]]];
            if (!p->target) {
                s = st_error(ST_ERR_FORMAT, "%s: no target column (the compliance answers of the poisoned column)",
                             adv.path);
                break;
            }
            gu[i] = p->prompt;
            ga[i] = p->target;
        }
        char name[4200];
        snprintf(name, sizeof name, "%s (target column of %zu half-a goals)", adv.path ? adv.path : "advbench", poison_reserve);
        if (!s) s = st_dataset_from_pairs(gu, ga, poison_reserve, name, poison);
    }
    if (s) {
        st_dataset_free(d_align);
        if (poison) st_dataset_free(poison);
    }
    free(found);
    free(gu);
    free(ga);
    free(reserved);
    free(perm);
    free(a);
    free(b);
    st_dataset_free(&set);
    st_prompt_set_free(&adv);
    st_prompt_set_free(&xs);
    free(xa);
    free(xb);
    free(p_split);
    free(p_set);
    return s;
}
