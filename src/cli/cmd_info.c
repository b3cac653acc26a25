/* cmd_info.c - `safetune info MODEL`. */
#include "cli/commands.h"
#include "safetune/base.h"

#include <stdio.h>
#include <string.h>

int cmd_info(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        printf("usage: safetune info MODEL\n  MODEL: a .gguf file or a Hugging Face checkpoint folder\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "safetune info: not implemented yet\n");
    return 1;
}
