/* stats_tool.c - line-oriented driver of the study statistics (stats.h) for check_stats.py:
 * each stdin line is one case, each stdout line its result with 17 significant digits.
 *   mcnemar B C MIDP            -> p
 *   tq P DF                     -> t quantile
 *   mean N X1 .. XN             -> n mean sd lo hi
 *   boot NA NB NP NBOOT SEED A B  (A, B: strings of 0/1, row-major units x prompts)
 *                               -> diff lo hi */
#include "safetune/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    static char line[1 << 20];
    while (fgets(line, sizeof line, stdin)) {
        char *save = NULL, *cmd = strtok_r(line, " \n", &save);
        if (!cmd) continue;
        if (!strcmp(cmd, "mcnemar")) {
            size_t b = strtoull(strtok_r(NULL, " \n", &save), NULL, 10);
            size_t c = strtoull(strtok_r(NULL, " \n", &save), NULL, 10);
            int mid = atoi(strtok_r(NULL, " \n", &save));
            printf("%.17g\n", st_mcnemar_exact(b, c, mid));
        } else if (!strcmp(cmd, "tq")) {
            double p = strtod(strtok_r(NULL, " \n", &save), NULL), df = strtod(strtok_r(NULL, " \n", &save), NULL);
            printf("%.17g\n", st_t_quantile(p, df));
        } else if (!strcmp(cmd, "mean")) {
            size_t n = strtoull(strtok_r(NULL, " \n", &save), NULL, 10);
            double *x = malloc((n ? n : 1) * sizeof *x);
            if (!x) return 2;
            for (size_t i = 0; i < n; i++) x[i] = strtod(strtok_r(NULL, " \n", &save), NULL);
            st_mean_ci m = st_mean_t95(x, n);
            printf("%zu %.17g %.17g %.17g %.17g\n", m.n, m.mean, m.sd, m.lo, m.hi);
            free(x);
        } else if (!strcmp(cmd, "boot")) {
            size_t na = strtoull(strtok_r(NULL, " \n", &save), NULL, 10);
            size_t nb = strtoull(strtok_r(NULL, " \n", &save), NULL, 10);
            size_t np = strtoull(strtok_r(NULL, " \n", &save), NULL, 10);
            size_t nboot = strtoull(strtok_r(NULL, " \n", &save), NULL, 10);
            unsigned long long seed = strtoull(strtok_r(NULL, " \n", &save), NULL, 10);
            const char *sa = strtok_r(NULL, " \n", &save), *sb = strtok_r(NULL, " \n", &save);
            if (!sa || !sb || strlen(sa) != na * np || strlen(sb) != nb * np) return 3;
            unsigned char *a = malloc(na * np), *b = malloc(nb * np);
            if (!a || !b) return 2;
            for (size_t i = 0; i < na * np; i++) a[i] = sa[i] == '1';
            for (size_t i = 0; i < nb * np; i++) b[i] = sb[i] == '1';
            st_boot_ci ci;
            if (st_bootstrap_diff(a, na, b, nb, np, nboot, seed, &ci)) {
                fprintf(stderr, "%s\n", st_last_error());
                return 4;
            }
            printf("%.17g %.17g %.17g\n", ci.diff, ci.lo, ci.hi);
            free(a);
            free(b);
        } else {
            fprintf(stderr, "unknown command %s\n", cmd);
            return 1;
        }
        fflush(stdout);
    }
    return 0;
}
