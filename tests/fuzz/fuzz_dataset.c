/* fuzz_dataset.c - training-data readers (Alpaca JSON, Dolly JSONL, ORCA/ShareGPT, OpenAI messages,
 * and format detection), then rendering the first 8 rows with the ChatML template and SmolLM2's tokenizer.
 * Input: byte 0 = format (mod 5: auto, alpaca, dolly, orca, messages; bit 3: file name .json
 * instead of .jsonl), the rest = the file. Checks: rows have messages with content. */
#include "fuzz_util.h"

#include "safetune/chat.h"
#include "safetune/data.h"

#include <stdlib.h>

#define MAX_TOKENIZED 8

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    (void)stf_tokenizer(0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const st_data_format fmts[] = {ST_DATA_AUTO, ST_DATA_ALPACA, ST_DATA_DOLLY, ST_DATA_ORCA, ST_DATA_MESSAGES};
    st_data_format f = fmts[(data[0] & 7) % 5];
    const char *path = stf_path(data[0] & 8 ? "data.json" : "data.jsonl");
    stf_write(path, data + 1, size - 1);
    st_dataset ds;
    if (stf_note("dataset", st_dataset_load(path, f, &ds)) != ST_OK) return 0;
    if (ds.n == 0) stf_fail("dataset loaded with no rows");
    if (ds.format == ST_DATA_AUTO) stf_fail("dataset format left as auto");
    for (size_t i = 0; i < ds.n; i++)
        for (size_t k = 0; k < ds.rows[i].n_msgs; k++)
            if (!ds.rows[i].msgs[k].role || !ds.rows[i].msgs[k].content) stf_fail("row %zu message %zu has a NULL field", i, k);
    st_chat_template tpl;
    if (st_chat_template_by_name("chatml", &tpl) != ST_OK) stf_fail("%s", st_last_error());
    /* the first MAX_TOKENIZED rows only: tokenizing is fuzzed by the tokenizer targets, and
     * tokenizing every row of a large input made this target several times slower */
    const size_t n_all = ds.n;
    if (ds.n > MAX_TOKENIZED) ds.n = MAX_TOKENIZED;
    st_tokenized tk;
    st_status ts = st_tokenize_dataset(&ds, &tpl, stf_tokenizer(0), &tk);
    const size_t n_tok = ds.n;
    ds.n = n_all;
    if (ts == ST_OK) {
        if (tk.n != n_tok) stf_fail("tokenized %zu rows of %zu", tk.n, n_tok);
        size_t dropped = 0;
        st_tokenized_drop_untrained(&tk, 64, &dropped, NULL);
        st_tokenized_free(&tk);
    }
    st_chat_template_free(&tpl);
    st_dataset_free(&ds);
    return 0;
}
