/* cmd_study.c - `safetune study`: validate a study config, print the run plan with a time
 * estimate (--dry-run), or run the grid and write results.csv, report.md and plots. */
#include "cli/commands.h"
#include "safetune/study.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void study_usage(FILE *f) {
    fprintf(f,
            "usage: safetune study (--config FILE | --preset NAME) --out DIR [--dry-run]\n"
            "\n"
            "Fine-tuning safety study (Kim et al. 2025): a grid over lr x batch_size x grad_accum x steps x\n"
            "lr_schedule x warmup_steps x ema_decay; every weight set (live, EMA) evaluated for AdvBench ASR,\n"
            "XSTest refusals and utility. Results: DIR/results.csv, DIR/report.md, DIR/plots/. Rerunning with\n"
            "the same config and DIR resumes (finished runs are skipped). See docs/study.md.\n"
            "  --config FILE     JSON study config (keys override the preset's, one by one)\n"
            "  --preset NAME     compiled-in config: quick (SmolLM2-135M, <= 30 min on 2 cores) | paper\n"
            "  --out DIR         study folder\n"
            "  --dry-run         validate and print the run plan with an estimated time; trains nothing\n"
            "  --print-config    print the merged, normalised config (JSON) and exit\n"
            "  --fake            use deterministic fake training/evaluation (pipeline tests only;\n"
            "                    the report is marked SYNTHETIC)\n");
}

/* The paper-form table and the findings' verdict lines of DIR/report.md, then where the outputs
 * are. */
static void print_summary(const char *out) {
    char path[4096], *md = NULL;
    snprintf(path, sizeof path, "%s/report.md", out);
    if (st_read_file(path, &md, NULL) == ST_OK) {
        int in_table = 0;
        for (char *line = strtok(md, "\n"); line; line = strtok(NULL, "\n")) {
            if (!strncmp(line, "## ", 3)) in_table = !strcmp(line, "## Paper-form table");
            if (in_table || !strncmp(line, "### ", 4)) printf("%s\n", line);
        }
        free(md);
    }
    printf("\nresults: %s/results.csv\nreport:  %s/report.md\nplots:   %s/plots/\n", out, out, out);
}

int cmd_study(int argc, char **argv) {
    const char *config = NULL, *preset = NULL, *out = NULL;
    int dry = 0, fake = 0, print_cfg = 0, stop_after = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { study_usage(stdout); return 0; }
        else if (!strcmp(a, "--config") && has) config = argv[++i];
        else if (!strcmp(a, "--preset") && has) preset = argv[++i];
        else if (!strcmp(a, "--out") && has) out = argv[++i];
        else if (!strcmp(a, "--dry-run")) dry = 1;
        else if (!strcmp(a, "--print-config")) print_cfg = 1;
        else if (!strcmp(a, "--fake")) fake = 1;
        else if (!strcmp(a, "--fake-stop-after") && has) stop_after = atoi(argv[++i]); /* tests: simulated kill */
        else {
            fprintf(stderr, "safetune study: unknown or incomplete option '%s'\n", a);
            study_usage(stderr);
            return 2;
        }
    }
    if (!config && !preset) {
        fprintf(stderr, "safetune study: give --config FILE or --preset NAME\n");
        study_usage(stderr);
        return 2;
    }
    if (!out && !dry && !print_cfg) {
        fprintf(stderr, "safetune study: --out DIR is required (or use --dry-run)\n");
        return 2;
    }
    st_study_config cfg;
    if (st_study_config_load(preset, config, &cfg)) {
        fprintf(stderr, "safetune study: %s\n", st_last_error());
        return 1;
    }
    if (print_cfg) {
        printf("%s\n", cfg.json);
        st_study_config_free(&cfg);
        return 0;
    }
    st_study_plan plan;
    if (st_study_plan_build(&cfg, &plan)) {
        fprintf(stderr, "safetune study: %s\n", st_last_error());
        st_study_config_free(&cfg);
        return 1;
    }
    int rc = 0;
    if (dry) {
        st_study_print_plan(stdout, &cfg, &plan);
        if (out) {
            int resumable;
            if (st_study_check_dir(&cfg, out, &resumable)) {
                fprintf(stderr, "safetune study: %s\n", st_last_error());
                rc = 1;
            } else {
                printf("output folder %s: %s\n", out, resumable ? "same study, finished runs will be skipped" : "new study");
            }
        }
        st_study_hooks h;
        if (!fake && st_study_real_hooks(&h)) printf("note: %s\n", st_last_error());
    } else {
        st_study_hooks h;
        if (fake) st_study_fake_hooks(&h, stop_after);
        else if (st_study_real_hooks(&h)) {
            fprintf(stderr, "safetune study: %s\n", st_last_error());
            rc = 1;
        }
        if (!rc) {
            st_study_run_stats stats;
            if (st_study_run_all(&cfg, &plan, out, &h, &stats)) {
                fprintf(stderr, "safetune study: %s\n", st_last_error());
                rc = 1;
            } else {
                printf("study done: %zu runs trained (%zu resumed), %zu skipped as finished, %zu weight sets evaluated\n",
                       stats.trained, stats.resumed, stats.skipped_runs, stats.evaluated);
                print_summary(out);
            }
        }
    }
    st_study_plan_free(&plan);
    st_study_config_free(&cfg);
    return rc;
}
