/* cmd_study.c - `safetune study`: validate a study config, print the run plan with a time
 * estimate (--dry-run), or run the grid and write results.csv, report.md and plots. */
#include "cli/args.h"
#include "cli/commands.h"
#include "safetune/dist.h"
#include "safetune/study.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The paper-form table and the findings' verdict lines of DIR/report.md, then where the outputs
 * are. */
static void print_summary(const char *out, int plots) {
    char path[4096], *md = NULL;
    snprintf(path, sizeof path, "%s/report.md", out);
    if (st_read_file(path, &md, NULL) == ST_OK) {
        int in_table = 0;
        for (char *line = strtok(md, "\n"); line; line = strtok(NULL, "\n")) {
            if (!strncmp(line, "## ", 3)) in_table = !strcmp(line, "## Paper-form table");
            if (in_table || !strncmp(line, "### ", 4)) printf("%s\n", line);
            if (!strncmp(line, "| **whole grid** |", 18)) printf("\ncost of the search (wall s / CPU s, train and eval):\n%s\n", line);
        }
        free(md);
    }
    printf("\nresults: %s/results.csv\nreport:  %s/report.md\n", out, out);
    if (plots) printf("plots:   %s/plots/\n", out);
}

int cmd_study(int argc, char **argv) {
    const char *config = NULL, *preset = NULL, *out = NULL;
    int dry = 0, fake = 0, print_cfg = 0, stop_after = 0;
    st_opt opts[] = {
        {"config", ST_OPT_STR, &config, "FILE", "JSON study config (keys override the preset's, one by one)", 0, 0, 0},
        {"preset", ST_OPT_STR, &preset, "NAME", "compiled-in config: quick (SmolLM2-135M, 3 seeds) | standard (Alpaca, Dolly, ORCA) | paper (Llama-2-7B) | defenses (every defense, one cell)", 0, 0, 0},
        {"out", ST_OPT_STR, &out, "DIR", "study folder (required unless --dry-run / --print-config)", 0, 0, 0},
        {"dry-run", ST_OPT_FLAG, &dry, NULL, "validate, time two real steps and a short generation here, print the plan, time estimate and peak memory; trains nothing", 0, 0, 0},
        {"print-config", ST_OPT_FLAG, &print_cfg, NULL, "print the merged, normalised config (JSON) and exit", 0, 0, 0},
        {"fake", ST_OPT_FLAG, &fake, NULL, "deterministic fake training/evaluation (pipeline tests only; the report is marked SYNTHETIC)", 0, 0, 0},
        {"fake-stop-after", ST_OPT_INT, &stop_after, "N", "with --fake: stop after N runs, as if killed (tests of resume; 0 = never)", 0, 1 << 30, 0},
    };
    st_args_spec spec = {"safetune study", "(--config FILE | --preset NAME) --out DIR [--dry-run]",
                         "Fine-tuning safety study (Kim et al. 2025): a grid over lr x batch_size x grad_accum x steps (or\n"
                         "train_examples at equal data) x lr_schedule x warmup_steps x seed x ema_decay; every weight set\n"
                         "(live, EMA) evaluated for AdvBench ASR, XSTest refusals and utility. Results: DIR/results.csv,\n"
                         "DIR/report.md, DIR/plots/. Rerunning with the same config and DIR resumes (finished runs are\n"
                         "skipped). See docs/study.md.",
                         opts, (int)(sizeof opts / sizeof *opts), 0, 0, NULL, 1};
    st_args args;
    int prc = st_args_parse(&spec, argc, argv, &args);
    st_args_free(&args);
    if (prc) return prc < 0 ? 0 : prc;
    if (!config && !preset) return st_args_fail(&spec, "give --config FILE or --preset NAME");
    if (!out && !dry && !print_cfg) return st_args_fail(&spec, "--out DIR is required (or use --dry-run)");
    if (stop_after && !fake) return st_args_fail(&spec, "--fake-stop-after needs --fake (it stops the fake study only)");
    const int rank = st_dist_rank();
    if (st_dist_world() > 1 && (dry || print_cfg)) /* mpirun -np N: the runs are handed out to the ranks */
        return st_args_fail(&spec, "--%s runs in one process: start it without mpirun", dry ? "dry-run" : "print-config");
    st_study_config cfg;
    if (preset && !st_study_preset_json(preset)) { /* a bad option value: usage error */
        char known[256] = "";
        for (size_t i = 0; st_study_preset_names[i]; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                     st_study_preset_names[i]);
        return st_args_fail(&spec, "--preset: unknown preset '%s' (known: %s)", preset, known);
    }
    st_status ls = st_study_config_load(preset, config, &cfg);
    if (ls) {
        fprintf(stderr, "safetune study: %s\n", st_last_error());
        /* a mistake in the config (a key, a value, its JSON) is a usage error, as the same mistake
         * in `train --config` or a flag (exit 2); a file that cannot be read is a runtime one */
        return ls == ST_ERR_ARG || ls == ST_ERR_FORMAT ? 2 : 1;
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
    if (out) { /* a wrong --out is told before anything is measured or trained (every rank reads the same folder) */
        int resumable;
        st_status ds = st_study_check_dir(&cfg, out, &resumable);
        if (ds) {
            fprintf(stderr, "safetune study: %s\n", st_last_error());
            st_study_plan_free(&plan);
            st_study_config_free(&cfg);
            return ds == ST_ERR_ARG || ds == ST_ERR_FORMAT ? 2 : 1;
        }
    }
    if (dry) {
        /* measure this machine first (two real steps, a short generation, peak memory) */
        st_study_measured ms;
        memset(&ms, 0, sizeof ms);
        st_status mst = fake ? ST_ERR_UNSUPPORTED : st_study_measure(&cfg, &plan, &ms);
        if (mst == ST_ERR_NOMEM) {
            fprintf(stderr, "safetune study: %s\n", st_last_error());
            st_study_plan_free(&plan);
            st_study_config_free(&cfg);
            return 1;
        }
        char note[1200] = "";
        if (!mst) {
            cfg.estimate.train_tokens_per_s = ms.train_tokens_per_s;
            cfg.estimate.gen_tokens_per_s = ms.gen_tokens_per_s;
            cfg.estimate.example_tokens = ms.example_tokens;
            cfg.estimate.step_overhead_s = ms.step_overhead_s;
            cfg.estimate.prompt_s = ms.prompt_s;
            cfg.estimate.n_params = (double)ms.n_params;
        } else if (!fake)
            snprintf(note, sizeof note, "%s", st_last_error());
        st_study_print_plan(stdout, &cfg, &plan);
        if (!mst)
            printf("measured here: an optimiser step at micro-batch %d took %.2f s (%.0f training tokens/s and %.2f s a step "
                   "beyond its tokens, with a step at micro-batch 1; %.0f tokens per example); greedy generation of %d prompts "
                   "x %d tokens: %.3f s a prompt's prefill, %.0f tokens/s after it; %zu parameters; peak memory "
                   "%.2f GiB, planned peak %.2f GiB of %.1f GiB\n",
                   ms.train_batch, ms.train_step_s, ms.train_tokens_per_s, ms.step_overhead_s, ms.example_tokens,
                   ms.gen_prompts, ms.gen_tokens, ms.prompt_s, ms.gen_tokens_per_s, ms.n_params, ms.peak_rss_gib,
                   ms.planned_gib, ms.available_gib);
        else if (!fake)
            printf("not measured here (%s): the estimate uses the config's 'estimate' speeds\n", note);
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
        else if (!fake) st_study_hooks_release(&h);
    } else {
        st_study_hooks h;
        if (fake) st_study_fake_hooks(&h, stop_after);
        else if (st_study_real_hooks(&h)) {
            fprintf(stderr, "safetune study: %s\n", st_last_error());
            rc = 1;
        }
        if (!rc && (cli_same_as_rank0(cfg.json, "study config (--config / --preset)", 0) ||
                    st_dist_check_same(st_fnv1a64(ST_FNV_INIT, cfg.json, strlen(cfg.json)),
                                       "study config (--config / --preset)"))) {
            fprintf(stderr, "safetune study: %s\n", st_last_error());
            rc = 1;
        }
        if (!rc) {
            st_study_run_stats stats;
            if (st_study_run_all(&cfg, &plan, out, &h, &stats)) {
                fprintf(stderr, "safetune study: %s\n", st_last_error());
                rc = 1;
            } else if (rank == 0) {
                printf("study done: %zu runs trained (%zu resumed), %zu skipped as finished, %zu weight sets evaluated\n",
                       stats.trained, stats.resumed, stats.skipped_runs, stats.evaluated);
                print_summary(out, cfg.report.plots);
            }
        }
        st_study_hooks_release(&h);
    }
    st_study_plan_free(&plan);
    st_study_config_free(&cfg);
    return rc;
}
