/* fuzz_prompts.c - prompt-set and benchmark readers: user CSV (libcsv) and JSONL prompt files, the
 * AdvBench and XSTest CSVs read by name from a data folder, the named benchmark files (HarmBench,
 * StrongREJECT, JailbreakBench harmful and benign, a HEx-PHI category file), TruthfulQA.csv and
 * MT-Bench question.jsonl. Input: byte 0 = reader (mod 12: csv, jsonl, advbench, xstest, truthfulqa,
 * mtbench, harmbench, strongreject, jbb, jbb-benign, hexphi, csv with options: prompt column goal,
 * every prompt labelled safe; bit 7 with harmbench: functional categories "all"), the rest = the file. Checks: every
 * prompt is non-empty text with an id. */
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
    mkdir(stf_path("hexphi"), 0700);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] % 12;
    static const char *const files[] = {"p.csv", "p.jsonl", "advbench/harmful_behaviors.csv", "xstest/xstest_prompts.csv",
                                        "TruthfulQA.csv", "question.jsonl", "harmbench_behaviors.csv", "strongreject.csv",
                                        "harmful-behaviors.csv", "benign-behaviors.csv", "hexphi/category_1.csv", "o.csv"};
    static const char *const prefixes[] = {"csv:", "jsonl:", NULL, NULL, NULL, NULL, "harmbench:", "strongreject:",
                                           "jbb:", "jbb-benign:", "hexphi:", "csv:"};
    const char *path = stf_path(files[which]);
    stf_write(path, data + 1, size - 1);
    if (which < 4 || which >= 6) {
        char spec[600];
        if (which == 2 || which == 3) snprintf(spec, sizeof spec, "%s", which == 2 ? "advbench" : "xstest");
        else if (which == 10) snprintf(spec, sizeof spec, "%s%s", prefixes[which], stf_path("hexphi"));
        else snprintf(spec, sizeof spec, "%s%s", prefixes[which], path);
        char dir[512];
        snprintf(dir, sizeof dir, "%s", stf_path(""));
        st_prompt_opts o = {0};
        if (which == 11) {
            o.prompt_column = "goal";
            o.label = ST_LABEL_SAFE;
        }
        if (which == 6 && (data[0] & 0x80)) o.harmbench_functional = "all";
        st_prompt_set ps;
        if (stf_note("prompts", st_prompts_load_opts(spec, dir, &o, &ps)) == ST_OK) {
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
