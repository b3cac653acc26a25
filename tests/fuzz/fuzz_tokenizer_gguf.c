/* fuzz_tokenizer_gguf.c - tokenizer from GGUF metadata (tokenizer.ggml.model, .pre, .tokens,
 * .merges / .scores, .token_type, special token ids, chat template), then encode + decode of a
 * fixed text. Input: a whole .gguf file (seeds: small vocabularies cut from real models). */
#include "fuzz_util.h"

#include "safetune/chat.h"
#include "safetune/gguf.h"
#include "safetune/tokenizer.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = stf_path("tok.gguf");
    stf_write(path, data, size);
    st_gguf *g = NULL;
    if (st_gguf_open(path, &g) != ST_OK) return 0;
    st_tokenizer *t = NULL;
    if (stf_note("tokenizer", st_tokenizer_from_gguf(g, &t)) == ST_OK) {
        static const char text[] = "Hello, world! 123 ünï  \n<|im_end|></s> \xff";
        int32_t v = st_tokenizer_vocab_size(t);
        for (int mode = 0; mode < 2; mode++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (st_tokenizer_encode(t, text, sizeof text - 1, mode, mode, &ids, &n) == ST_OK) {
                for (size_t i = 0; i < n; i++)
                    if (ids[i] < 0 || ids[i] >= v) stf_fail("id %d out of the vocabulary [0, %d)", ids[i], v);
                char *txt = NULL;
                size_t len = 0;
                (void)st_tokenizer_decode(t, ids, n, mode, &txt, &len);
                free(txt);
            }
            free(ids);
        }
        const char *ct;
        size_t cl;
        if (st_gguf_find_key(g, "tokenizer.chat_template") >= 0 &&
            st_gguf_get_str(g, "tokenizer.chat_template", &ct, &cl) == ST_OK) {
            char *src = stf_cstr((const uint8_t *)ct, cl);
            st_chat_template tpl;
            if (st_chat_template_detect(src, &tpl) == ST_OK) {
                st_chat_message m[2] = {{"user", "Hi"}, {"assistant", "Hello."}};
                int32_t *ids = NULL;
                uint8_t *mask = NULL;
                size_t n = 0;
                (void)st_chat_render(&tpl, t, m, 2, 1, &ids, &mask, &n);
                free(ids);
                free(mask);
                st_chat_template_free(&tpl);
            }
            free(src);
        }
        st_tokenizer_free(t);
    }
    st_gguf_close(g);
    return 0;
}
