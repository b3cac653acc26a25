/* fuzz_cli_config.c - the CLI's option parser (src/cli/args.c): `--config FILE` JSON objects of option
 * values and raw argument vectors, over a spec with every option type (string, int, float, u64,
 * flag, choice; ranges). Input: byte 0 even: the rest is the --config file, odd: the rest is argv
 * split at NUL bytes. Checks: parsed numbers stay inside their declared ranges. */
#include "fuzz_util.h"

#include "cli/args.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *model = NULL, *prec = "fp32";
    int steps = 10, flag = 0;
    float lr = 1e-4f;
    uint64_t seed = 0;
    st_opt opts[] = {
        {"model", ST_OPT_STR, &model, "FILE", "model", 0, 0, 0},
        {"max-steps", ST_OPT_INT, &steps, "N", "steps", 1, 1e6, 0},
        {"lr", ST_OPT_FLOAT, &lr, "LR", "learning rate", 1e-9, 1, 0},
        {"seed", ST_OPT_U64, &seed, "N", "seed", 0, 0, 0},
        {"ema", ST_OPT_FLAG, &flag, NULL, "flag", 0, 0, 0},
        {"precision", ST_OPT_CHOICE, &prec, "fp32|bf16", "precision", 0, 0, 0},
    };
    st_args_spec spec = {"safetune fuzz", "[options] [FILE]", "fuzz target", opts, 6, 0, 2, "FILE", 0};
    char *buf = stf_cstr(data + 1, size - 1);
    char *argv[64];
    int argc = 0;
    argv[argc++] = "safetune-fuzz";
    if (!(data[0] & 1)) {
        const char *path = stf_path("config.json");
        stf_write(path, data + 1, size - 1);
        argv[argc++] = "--config";
        argv[argc++] = (char *)path;
    } else {
        char *s = buf, *end = buf + (size - 1);
        while (s <= end && argc < 63) {
            argv[argc++] = s;
            s += strlen(s) + 1;
        }
    }
    argv[argc] = NULL;
    st_args a;
    int rc = st_args_parse(&spec, argc, argv, &a);
    if (rc == 0) {
        if (steps < 1 || steps > 1000000) stf_fail("max-steps %d outside [1, 1e6]", steps);
        if (!(lr >= 1e-9f && lr <= 1.0f)) stf_fail("lr %g outside [1e-9, 1]", (double)lr);
        if (strcmp(prec, "fp32") && strcmp(prec, "bf16")) stf_fail("precision '%s' not a choice", prec);
    }
    st_args_free(&a);
    free(buf);
    return 0;
}
