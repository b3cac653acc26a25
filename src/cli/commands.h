/* commands.h - CLI subcommands. Each returns the process exit code (0 ok, 1 error, 2 usage). */
#ifndef SAFETUNE_CLI_COMMANDS_H
#define SAFETUNE_CLI_COMMANDS_H

typedef struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} st_command;

int cmd_info(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_study(int argc, char **argv);
int cmd_align(int argc, char **argv);

/* 0 if MODEL exists; else prints "PROG: MODEL: no such file or directory ..." and returns 1. */
int cli_check_model_path(const char *prog, const char *path);

#endif
