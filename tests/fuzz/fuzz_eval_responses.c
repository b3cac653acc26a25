/* fuzz_eval_responses.c - the responses JSONL reader of `eval` (re-scoring earlier answers) and the
 * Hugging Face config.json reader of checkpoints. Input: byte 0 = reader (even: responses JSONL,
 * odd: config.json), the rest = the file text. */
#include "fuzz_util.h"

#include "safetune/config.h"
#include "safetune/evalio.h"

#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (data[0] & 1) {
        char *text = stf_cstr(data + 1, size - 1);
        st_config cfg;
        if (stf_note("config", st_config_from_hf_json_text(text, "config.json", &cfg)) == ST_OK) {
            (void)st_config_validate(&cfg, "config.json");
            char *json = NULL;
            (void)st_config_to_hf_json(&cfg, &json);
            free(json);
        }
        free(text);
        return 0;
    }
    const char *path = stf_path("responses.jsonl");
    stf_write(path, data + 1, size - 1);
    st_eval_set s;
    if (stf_note("responses", st_eval_read_responses(path, &s)) == ST_OK) {
        for (size_t i = 0; i < s.n; i++)
            if (!s.recs[i].prompt || !s.recs[i].response) stf_fail("record %zu without prompt or response", i);
        st_eval_set_free(&s);
    }
    return 0;
}
