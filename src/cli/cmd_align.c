/* cmd_align.c - `safetune align`: build the aligned start of a safety study (st_study_align_build:
 * supervised refusals on AdvBench half a and XSTest half a's unsafe prompts, the base model's own
 * answers to XSTest half a's safe prompts, Alpaca rows the study never uses), exported as an HF
 * folder OUT/aligned/, with OUT/align.json (settings, the mix, ASR and XSTest refusal rates on both
 * halves before and after) and OUT/advbench_split.json. Reused (not rebuilt) when OUT/align.json has the same settings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "safetune/prompts.h"
#include "safetune/study.h"

int cmd_align(int argc, char **argv) {
    st_study_align_opts o;
    st_study_align_defaults(&o);
    const char *model = NULL, *out = NULL, *data_dir = NULL, *alpaca = NULL;
    int n_alpaca = (int)o.n_alpaca, n_advbench = (int)o.n_advbench, safe_repeat = o.xstest_safe_repeat, steps = o.max_steps, batch = o.batch_size, seq = o.max_seq_len,
        eval_limit = 0, xstest_limit = 0, max_new = o.eval_max_new_tokens, eval_batch = o.eval_batch, answer_new = o.answer_max_new_tokens, no_eval = 0,
        quiet = 0;
    uint64_t split_seed = o.split_seed, seed = o.seed;
    float lr = (float)o.lr;
    st_opt opts[] = {
        {"model", ST_OPT_STR, &model, "MODEL", "base checkpoint: GGUF file or HF folder (required)", 0, 0, 0},
        {"out", ST_OPT_STR, &out, "DIR", "output folder: DIR/aligned/, DIR/align.json (required)", 0, 0, 0},
        {"data-dir", ST_OPT_STR, &data_dir, "DIR", "AdvBench/XSTest/Alpaca root (default $SAFETUNE_DATA_DIR or data)", 0, 0, 0},
        {"alpaca", ST_OPT_STR, &alpaca, "FILE", "Alpaca JSON (default DATA/alpaca/alpaca_5000.json)", 0, 0, 0},
        {"n-alpaca", ST_OPT_INT, &n_alpaca, "N", "last N Alpaca rows mixed in", 0, 1e7, 0},
        {"n-advbench", ST_OPT_INT, &n_advbench, "N", "AdvBench half-a refusals in the set, evenly spaced (0 = all 260)", 0, 1e6, 0},
        {"xstest-safe-repeat", ST_OPT_INT, &safe_repeat, "K", "copies of each XSTest half-a safe answer in the set", 1, 100, 0},
        {"split-seed", ST_OPT_U64, &split_seed, "S", "AdvBench halves seed; train on half a", 0, 0, 0},
        {"seed", ST_OPT_U64, &seed, "S", "data order", 0, 0, 0},
        {"max-steps", ST_OPT_INT, &steps, "N", "optimiser steps", 1, 1e7, 0},
        {"batch-size", ST_OPT_INT, &batch, "N", "rows per step", 1, 1 << 16, 0},
        {"lr", ST_OPT_FLOAT, &lr, "X", "AdamW learning rate", 1e-9, 1, 0},
        {"max-seq-len", ST_OPT_INT, &seq, "T", "truncate rows to T tokens", 8, 1 << 20, 0},
        {"eval-limit", ST_OPT_INT, &eval_limit, "N", "AdvBench prompts of each half measured before and after (0 = all 260)", 0, 1e6, 0},
        {"xstest-limit", ST_OPT_INT, &xstest_limit, "N", "XSTest half-b prompts, evenly spaced (0 = all 234)", 0, 1e6, 0},
        {"max-new-tokens", ST_OPT_INT, &max_new, "N", "tokens per answer in the measurement", 1, 1 << 16, 0},
        {"answer-max-new-tokens", ST_OPT_INT, &answer_new, "N", "tokens of the base model's answers to XSTest half a", 1, 1 << 16, 0},
        {"eval-batch", ST_OPT_INT, &eval_batch, "N", "prompts generated together", 1, 4096, 0},
        {"no-eval", ST_OPT_FLAG, &no_eval, NULL, "skip the measurement", 0, 0, 0},
        {"quiet", ST_OPT_FLAG, &quiet, NULL, "no progress lines", 0, 0, 0},
    };
    st_args_spec spec = {"safetune align", "--model MODEL --out DIR [options]",
                         "Build the aligned start of a study: refusals to AdvBench half a and XSTest half a's unsafe prompts, the base "
                         "model's answers to XSTest half a's safe ones, Alpaca rows; ASR and XSTest refusal on both halves before and after.",
                         opts, (int)(sizeof opts / sizeof *opts), 0, 0, NULL, 0};
    st_args args;
    int rc = st_args_parse(&spec, argc, argv, &args);
    if (rc) {
        st_args_free(&args);
        return rc < 0 ? 0 : rc;
    }
    if (!model || !out) {
        rc = st_args_fail(&spec, "--model and --out are required");
        st_args_free(&args);
        return rc;
    }
    if (cli_check_model_path("safetune align", model)) {
        st_args_free(&args);
        return 1;
    }
    char lrb[32];
    snprintf(lrb, sizeof lrb, "%.7g", lr);
    o.model = model;
    o.out_dir = out;
    o.data_dir = data_dir ? data_dir : st_prompts_default_data_dir();
    o.alpaca_path = alpaca;
    o.n_alpaca = (size_t)n_alpaca;
    o.n_advbench = (size_t)n_advbench;
    o.xstest_safe_repeat = safe_repeat;
    o.split_seed = split_seed;
    o.seed = seed;
    o.max_steps = steps;
    o.batch_size = batch;
    o.lr = strtod(lrb, NULL);
    o.max_seq_len = seq;
    o.eval_limit = no_eval ? -1 : eval_limit;
    o.xstest_limit = no_eval ? -1 : xstest_limit;
    o.eval_max_new_tokens = max_new;
    o.eval_batch = eval_batch;
    o.answer_max_new_tokens = answer_new;
    o.progress = !quiet;
    int reused = 0;
    if (st_study_align_build(&o, &reused) != ST_OK) {
        fprintf(stderr, "safetune align: %s\n", st_last_error());
        st_args_free(&args);
        return 1;
    }
    printf("%s %s/aligned (record: %s/align.json)\n", reused ? "reused" : "built", out, out);
    st_args_free(&args);
    return 0;
}
