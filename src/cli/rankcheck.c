/* rankcheck.c - `mpirun -np N safetune train|study`: every rank must run the same settings; a
 * rank whose settings differ from rank 0's names the first key that differs (commands.h
 * cli_same_as_rank0). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "safetune/dist.h"
#include "safetune/train_settings.h"

/* The first place a (this rank) and b (rank 0) differ, as a dotted path into *path, with both
 * values (compact JSON, or "absent") into *here / *there (heap); 0 when equal, -1 out of memory. */
static int first_diff(const cJSON *a, const cJSON *b, char *path, size_t cap, char **here, char **there) {
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        const size_t n = strlen(path);
        for (int pass = 0; pass < 2; pass++) /* keys of a (also in b or not), then keys only b has */
            for (const cJSON *x = (pass ? b : a)->child; x; x = x->next) {
                const cJSON *y = cJSON_GetObjectItemCaseSensitive(pass ? a : b, x->string);
                if (pass && y) continue;
                snprintf(path + n, cap - n, "%s%s", n ? "." : "", x->string);
                const int d = y ? (pass ? first_diff(y, x, path, cap, here, there) : first_diff(x, y, path, cap, here, there))
                                : 1;
                if (d && !y) {
                    char *t = cJSON_PrintUnformatted(x);
                    *here = pass ? NULL : t;
                    *there = pass ? t : NULL;
                    if (!t) return -1;
                }
                if (d) return d;
                path[n] = '\0';
            }
        return 0;
    }
    char *ta = cJSON_PrintUnformatted(a), *tb = cJSON_PrintUnformatted(b);
    if (!ta || !tb) {
        free(ta);
        free(tb);
        return -1;
    }
    if (!strcmp(ta, tb)) {
        free(ta);
        free(tb);
        return 0;
    }
    *here = ta;
    *there = tb;
    return 1;
}

st_status cli_same_as_rank0(const char *mine, const char *what, int train_flags) {
    char *lead = NULL;
    st_status s = st_dist_bcast_text(mine, &lead);
    if (s) return s; /* already agreed by every rank */
    cJSON *a = cJSON_Parse(mine), *b = cJSON_Parse(lead);
    char path[512] = "", *here = NULL, *there = NULL;
    const int d = a && b ? first_diff(a, b, path, sizeof path, &here, &there) : -1;
    if (d < 0) s = st_error(ST_ERR_NOMEM, "out of memory");
    else if (d > 0) {
        const st_train_setting *row = st_train_setting_find(path);
        char flag[80] = "";
        if (train_flags && row && !strcmp(row->key, path)) snprintf(flag, sizeof flag, " (--%s)", row->flag);
        s = st_error(ST_ERR_ARG, "key '%s'%s is %s here but %s on rank 0: every rank must get the same %s", path, flag,
                     here ? here : "absent", there ? there : "absent", what);
    }
    free(here);
    free(there);
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(lead);
    return st_dist_agree(s);
}
