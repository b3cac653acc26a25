/* main.c - `safetune` command dispatcher. One file per subcommand (cmd_*.c). */
#include "cli/commands.h"

#include "git_version.h" /* SAFETUNE_GIT_COMMIT, written at build time by cmake/git_version.cmake */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "safetune/dist.h"

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

/* Commands that run as the ranks of one MPI job (docs/mpi.md); the others refuse mpirun -np > 1. */
static int mpi_command(const char *name) { return !strcmp(name, "train") || !strcmp(name, "study"); }

/* The last non-empty line of the text held by fd (a rank's captured stderr), into buf, passing
 * over the "(see safetune CMD --help)" hint that follows a usage error (st_args_fail): the
 * message is the line before it. */
static void last_line(int fd, char *buf, size_t cap) {
    buf[0] = '\0';
    off_t end = lseek(fd, 0, SEEK_END);
    if (end <= 0) return;
    size_t n = (size_t)end < cap - 1 ? (size_t)end : cap - 1;
    ssize_t got = pread(fd, buf, n, end - (off_t)n);
    if (got <= 0) return;
    buf[got] = '\0';
    for (;;) {
        while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == ' ')) buf[--got] = '\0';
        char *nl = strrchr(buf, '\n');
        const char *line = nl ? nl + 1 : buf;
        if (!nl || strncmp(line, "(see ", 5)) break;
        *nl = '\0'; /* the hint: take the line before */
        got = (ssize_t)(nl - buf);
    }
    char *nl = strrchr(buf, '\n');
    if (nl) memmove(buf, nl + 1, strlen(nl + 1) + 1);
    char *colon = strstr(buf, ": ");
    if (!strncmp(buf, "safetune ", 9) && colon) memmove(buf, colon + 2, strlen(colon + 2) + 1); /* "safetune CMD: " */
}

/* One rank of `mpirun -np N safetune CMD`. Rank 0 alone speaks: the others' stderr goes to a
 * memory file (SAFETUNE_MPI_ALL_STDERR=1 keeps it). A command ends every run, good or bad, with
 * st_dist_agree, so a rank that fails alone is never waited for: it agrees here, with its last
 * message line, and the others stop at their next agreement, rank 0 printing that line. */
static int run_mpi(const st_command *cmd, int argc, char **argv) {
    const int rank = st_dist_rank();
    int cap = -1, keep = -1;
    if (rank > 0 && !getenv("SAFETUNE_MPI_ALL_STDERR") && (cap = memfd_create("safetune-stderr", 0)) >= 0) {
        fflush(stderr);
        keep = dup(STDERR_FILENO);
        dup2(cap, STDERR_FILENO);
    }
    int rc;
    if (!mpi_command(cmd->name)) {
        st_error(ST_ERR_ARG, "safetune %s runs in one process: start it without mpirun (or with -np 1); "
                 "train and study run over MPI ranks", cmd->name);
        fprintf(stderr, "%s\n", st_last_error());
        rc = 2;
    } else {
        rc = cmd->run(argc, argv);
    }
    /* failed without an agreement every rank saw: one agreement here, which the ranks still
     * running meet at their next st_dist_agree (all agreements are the same collectives) */
    if (rc != 0 && st_dist_failed_rank() < 0) {
        char line[1024];
        if (cap >= 0) last_line(cap, line, sizeof line);
        else snprintf(line, sizeof line, "%s", st_last_error());
        st_error(ST_ERR_ARG, "%s", line[0] ? line : "failed (SAFETUNE_MPI_ALL_STDERR=1 shows its stderr)");
        st_dist_set_exit_code(rc); /* 2 for a usage error: every rank ends with it */
        st_status s = st_dist_agree(ST_ERR_ARG);
        (void)s;
    }
    /* the ranks stopped by another rank's failure end with that rank's exit code (the same
     * mistake gives the same code however it is launched) */
    if (rc != 0 && st_dist_failed_exit_code() > 0) rc = st_dist_failed_exit_code();
    if (keep >= 0) {
        fflush(stderr);
        dup2(keep, STDERR_FILENO);
        close(keep);
    }
    if (cap >= 0) close(cap);
    st_dist_finalize();
    return rc;
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
            if (st_dist_init(&argc, &argv) != ST_OK) {
                fprintf(stderr, "safetune %s: %s\n", argv[1], st_last_error());
                st_dist_abort(1);
            }
            if (st_dist_world() == 1) return COMMANDS[i].run(argc - 1, argv + 1);
            return run_mpi(&COMMANDS[i], argc - 1, argv + 1);
        }
    fprintf(stderr, "safetune: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
