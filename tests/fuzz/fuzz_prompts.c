/* fuzz_prompts.c - prompt-set and benchmark readers: user CSV (libcsv) and JSONL prompt files, the
 * AdvBench and XSTest CSVs read by name from a data folder, TruthfulQA.csv and MT-Bench
 * question.jsonl. Input: byte 0 = reader (mod 6: csv, jsonl, advbench, xstest, truthfulqa,
 * mtbench), the rest = the file. Checks: every prompt is non-empty text. */
#include "fuzz_util.h"

#include "safetune/prompts.h"
#include "safetune/utility.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    mkdir(stf_path("advbench"), 0700);
    mkdir(stf_path("xstest"), 0700);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] % 6;
    static const char *const files[] = {"p.csv", "p.jsonl", "advbench/harmful_behaviors.csv",
                                        "xstest/xstest_prompts.csv", "TruthfulQA.csv", "question.jsonl"};
    const char *path = stf_path(files[which]);
    stf_write(path, data + 1, size - 1);
    if (which < 4) {
        char spec[600];
        if (which == 0) snprintf(spec, sizeof spec, "csv:%s", path);
        else if (which == 1) snprintf(spec, sizeof spec, "jsonl:%s", path);
        else snprintf(spec, sizeof spec, "%s", which == 2 ? "advbench" : "xstest");
        char dir[512];
        snprintf(dir, sizeof dir, "%s", stf_path(""));
        st_prompt_set ps;
        if (stf_note("prompts", st_prompts_load(spec, dir, &ps)) == ST_OK) {
            if (ps.n == 0) stf_fail("prompt set loaded with no prompts");
            for (size_t i = 0; i < ps.n; i++)
                if (!ps.items[i].prompt || !ps.items[i].prompt[0] || !ps.items[i].id)
                    stf_fail("prompt %zu: empty prompt or no id", i);
            st_prompt_set_free(&ps);
        }
    } else if (which == 4) {
        st_tqa_set s;
        if (stf_note("truthfulqa", st_truthfulqa_load(path, &s)) == ST_OK) st_tqa_set_free(&s);
    } else {
        st_mtbench_set s;
        if (stf_note("mtbench", st_mtbench_load(path, &s)) == ST_OK) st_mtbench_set_free(&s);
    }
    return 0;
}
