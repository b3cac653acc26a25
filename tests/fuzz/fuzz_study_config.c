/* fuzz_study_config.c - study configuration JSON (st_study_config_load: a preset overridden key by
 * key by a file, every key validated), then the grid plan and its printout. Input: byte 0 even:
 * preset "quick" + the file, odd: the file alone; the rest = the JSON file. Runs from the source
 * folder so the presets' model and data paths resolve. */
#include "fuzz_util.h"

#include "safetune/study.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static FILE *g_null;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    setenv("SAFETUNE_GNUPLOT", "/bin/true", 1); /* report.plots: the check runs it (no gnuplot per input) */
    if (chdir(SAFETUNE_SOURCE_DIR) != 0) stf_fail("cannot enter %s", SAFETUNE_SOURCE_DIR);
    g_null = fopen("/dev/null", "w");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *path = stf_path("study.json");
    stf_write(path, data + 1, size - 1);
    st_study_config c;
    if (stf_note("study", st_study_config_load(data[0] & 1 ? NULL : "quick", path, &c)) != ST_OK) return 0;
    st_study_plan p;
    if (st_study_plan_build(&c, &p) == ST_OK) {
        if (g_null) st_study_print_plan(g_null, &c, &p);
        st_study_plan_free(&p);
    }
    st_study_config_free(&c);
    return 0;
}
