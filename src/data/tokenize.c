/* tokenize.c - render a dataset through the chat template (chat.h) for collation. Kept apart
 * from collate.c so code that passes its own renderer does not link the tokenizer. */
#include "safetune/data.h"

typedef struct {
    const st_chat_template *tpl;
    const st_tokenizer *tok;
} chat_ctx;

static st_status render_chat(void *ctx, const st_chat_message *msgs, size_t n_msgs,
                             int32_t **ids, uint8_t **mask, size_t *n) {
    const chat_ctx *c = ctx;
    return st_chat_render(c->tpl, c->tok, msgs, n_msgs, 0, ids, mask, n);
}

st_status st_tokenize_dataset(const st_dataset *ds, const st_chat_template *tpl,
                              const st_tokenizer *tok, st_tokenized *out) {
    chat_ctx c = {tpl, tok};
    return st_tokenize_dataset_with(ds, render_chat, &c, out);
}
