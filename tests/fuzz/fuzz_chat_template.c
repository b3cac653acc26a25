/* fuzz_chat_template.c - chat-template detection (Jinja source from GGUF / tokenizer_config.json)
 * and rendering of arbitrary conversations with the real tokenizers.
 * Input: byte 0 = mode. Mode even: the rest is a Jinja chat_template; detected templates render a
 * fixed conversation. Mode odd: bits 1-2 pick the template (chatml, llama2, llama3, alpaca), bits
 * 3-4 the tokenizer, bit 5 add_generation_prompt; the rest is split at NUL bytes into messages whose
 * first byte picks the role ('s' system, 'u' user, 'a' assistant, anything else an unknown role).
 * Checks: ids inside the vocabulary, mask only 0/1. */
#include "fuzz_util.h"

#include "safetune/chat.h"
#include "safetune/tokenizer.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    for (int i = 0; i < STF_N_TOKENIZERS; i++) (void)stf_tokenizer(i);
    return 0;
}

static void render(const st_chat_template *tpl, const st_tokenizer *t, const st_chat_message *m, size_t n, int gen) {
    int32_t *ids = NULL;
    uint8_t *mask = NULL;
    size_t nid = 0;
    if (st_chat_render(tpl, t, m, n, gen, &ids, &mask, &nid) == ST_OK) {
        int32_t v = st_tokenizer_vocab_size(t);
        for (size_t i = 0; i < nid; i++) {
            if (ids[i] < 0 || ids[i] >= v) stf_fail("render: id %d out of the vocabulary [0, %d)", ids[i], v);
            if (mask[i] > 1) stf_fail("render: mask value %d", mask[i]);
        }
    }
    free(ids);
    free(mask);
    int32_t stops[8];
    int ns = st_chat_stop_ids(tpl, t, stops, 8);
    for (int i = 0; i < ns && i < 8; i++)
        if (stops[i] < 0 || stops[i] >= st_tokenizer_vocab_size(t)) stf_fail("stop id %d out of range", stops[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0];
    char *rest = stf_cstr(data + 1, size - 1);
    if (!(mode & 1)) {
        st_chat_template tpl;
        if (stf_note("detect", st_chat_template_detect(rest, &tpl)) == ST_OK) {
            st_chat_message m[3] = {{"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};
            for (int k = 0; k < STF_N_TOKENIZERS; k++) render(&tpl, stf_tokenizer(k), m, 3, 1);
            st_chat_template_free(&tpl);
        }
        free(rest);
        return 0;
    }
    static const char *const names[] = {"chatml", "llama2", "llama3", "alpaca"};
    st_chat_template tpl;
    if (st_chat_template_by_name(names[(mode >> 1) & 3], &tpl) != ST_OK) stf_fail("%s", st_last_error());
    const st_tokenizer *t = stf_tokenizer(((mode >> 3) & 3) % STF_N_TOKENIZERS);
    size_t cap = 1;
    for (size_t i = 0; i + 1 < size; i++) cap += data[1 + i] == 0;
    st_chat_message *m = calloc(cap, sizeof *m);
    size_t n = 0;
    char *s = rest, *end = rest + (size - 1);
    while (s <= end && n < cap) {
        size_t len = strlen(s);
        char r = len ? s[0] : 'u';
        m[n].role = r == 's' ? "system" : r == 'u' ? "user" : r == 'a' ? "assistant" : "tool";
        m[n].content = len ? s + 1 : s;
        n++;
        s += len + 1;
    }
    render(&tpl, t, m, n, (mode >> 5) & 1);
    free(m);
    st_chat_template_free(&tpl);
    free(rest);
    return 0;
}
