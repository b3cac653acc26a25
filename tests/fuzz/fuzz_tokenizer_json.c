/* fuzz_tokenizer_json.c - Hugging Face tokenizer.json loader (model, vocab, merges, added tokens,
 * normalizer / pre-tokenizer / decoder / post-processor), then encode + decode of fixed texts and
 * a render with each built-in chat template. Input: the tokenizer.json text. */
#include "fuzz_util.h"

#include "safetune/chat.h"
#include "safetune/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char *const TEXTS[] = {"Hello, world! 123 ünïcödé  \n\t<|im_end|> <s>[INST] x",
                                    "", " ", "\xff\xfe bad utf-8 \xc3"};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    return 0;
}

static void check_ids(const st_tokenizer *t, const int32_t *ids, size_t n) {
    int32_t v = st_tokenizer_vocab_size(t);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= v) stf_fail("id %d out of the vocabulary [0, %d)", ids[i], v);
        char buf[256];
        (void)st_tokenizer_token_bytes(t, ids[i], buf, sizeof buf);
        (void)st_tokenizer_token(t, ids[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = stf_path("tokenizer.json");
    stf_write(path, data, size);
    st_tokenizer *t = NULL;
    if (stf_note("tokenizer.json", st_tokenizer_from_json(path, &t)) != ST_OK) return 0;
    (void)st_tokenizer_kind_of(t);
    (void)st_tokenizer_bos_id(t);
    (void)st_tokenizer_eos_id(t);
    for (size_t k = 0; k < sizeof TEXTS / sizeof *TEXTS; k++) {
        for (int mode = 0; mode < 2; mode++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (st_tokenizer_encode(t, TEXTS[k], strlen(TEXTS[k]), mode, mode, &ids, &n) == ST_OK) {
                check_ids(t, ids, n);
                char *txt = NULL;
                size_t len = 0;
                if (st_tokenizer_decode(t, ids, n, mode, &txt, &len) == ST_OK && strlen(txt) > len)
                    stf_fail("decode: strlen %zu > len %zu", strlen(txt), len);
                free(txt);
            }
            free(ids);
        }
    }
    static const char *const names[] = {"chatml", "llama2", "llama3", "alpaca"};
    st_chat_message msgs[3] = {{"system", "Be brief."}, {"user", "Hi <|im_end|>"}, {"assistant", "Hello."}};
    for (int k = 0; k < 4; k++) {
        st_chat_template tpl;
        if (st_chat_template_by_name(names[k], &tpl) != ST_OK) stf_fail("template %s: %s", names[k], st_last_error());
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t n = 0;
        if (st_chat_render(&tpl, t, msgs, 3, 0, &ids, &mask, &n) == ST_OK) check_ids(t, ids, n);
        free(ids);
        free(mask);
        int32_t stops[16];
        (void)st_chat_stop_ids(&tpl, t, stops, 16);
        st_chat_template_free(&tpl);
    }
    st_tokenizer_free(t);
    return 0;
}
