/* main.c - `safetune` command dispatcher. One file per subcommand (cmd_*.c). */
#include "cli/commands.h"

#include "git_version.h" /* SAFETUNE_GIT_COMMIT, written at build time by cmake/git_version.cmake */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SAFETUNE_VERSION
#define SAFETUNE_VERSION "unknown"
#endif

static const st_command COMMANDS[] = {
    {"info", "show a model's config, tensors, tokenizer and chat template", cmd_info},
    {"generate", "generate responses for a prompt or a file of prompts (batched)", cmd_generate},
    {"chat", "interactive multi-turn chat on stdin", cmd_chat},
    {"tokenize", "token ids and strings of a text; with --chat the rendered conversation and its loss mask", cmd_tokenize},
    {"eval", "eval safety (refusal-keyword ASR, XSTest over-refusal, LLM judge) | eval utility", cmd_eval},
    {"serve", "OpenAI-compatible HTTP server on 127.0.0.1", cmd_serve},
    {"train", "full fine-tuning (AdamW, LR schedule, clipping, EMA of the weights)", cmd_train},
    {"align", "build the aligned start of a study (refusal tuning on AdvBench half a)", cmd_align},
    {"merge", "merge fine-tuned weights back with the aligned start (linear, SLERP, DARE)", cmd_merge},
    {"study", "fine-tuning safety study: grid of runs, results.csv, report.md, plots", cmd_study},
};

static void usage(FILE *f) {
    fprintf(f, "usage: safetune <command> [options]   (safetune <command> --help)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "  %-10s %s\n", "version", "print the version and the git commit it was built from (also --version)");
    fprintf(f, "\nexit status: 0 success, 1 runtime error (bad file, failed run), 2 usage error (bad option),\n"
               "128+N ended by signal N: 130 Ctrl-C, 143 SIGTERM (train: after saving a checkpoint of the current step)\n");
    fprintf(f, "OpenMP threads wait passively unless OMP_WAIT_POLICY is set (active: ~2%% faster on idle cores)\n");
}

/* libgomp reads OMP_WAIT_POLICY once, when it loads (before main). Its default lets idle threads
 * spin at every barrier, which on cores shared with other jobs made generation 15-20x slower
 * here (1.0 vs 18 tok/s). Unless the user chose a policy, run the command once more with
 * passive waiting (re-executing this binary; on failure, go on as we are). */
static void prefer_passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        if (argc > 2) {
            fprintf(stderr, "safetune %s: unexpected argument '%s'\n", argv[1], argv[2]);
            return 2;
        }
        printf("safetune %s (git %s)\n", SAFETUNE_VERSION, SAFETUNE_GIT_COMMIT);
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) {
            prefer_passive_openmp(argv);
            return COMMANDS[i].run(argc - 1, argv + 1);
        }
    fprintf(stderr, "safetune: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
