/* tokenize.c - render a dataset through the chat template (chat.h) for collation. Kept apart
 * from collate.c so code that passes its own renderer does not link the tokenizer. */
#include "safetune/data.h"

#include <stdlib.h>

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

st_status st_tokenize_training_rows(st_dataset *ds, size_t max_rows, const st_chat_template *tpl,
                                    const st_tokenizer *tok, int max_seq_len, st_tokenized *out,
                                    size_t *n_dropped, size_t **file_rows) {
    *n_dropped = 0;
    if (file_rows) *file_rows = NULL;
    st_dataset_truncate(ds, max_rows);
    st_status s = st_tokenize_dataset(ds, tpl, tok, out);
    if (s) return s;
    size_t *rows = NULL;
    if (file_rows && !(rows = st_malloc((out->n ? out->n : 1) * sizeof *rows))) {
        st_tokenized_free(out);
        return ST_ERR_NOMEM;
    }
    st_tokenized_drop_untrained(out, max_seq_len, n_dropped, rows);
    if (out->n == 0) {
        free(rows);
        st_tokenized_free(out);
        return st_error(ST_ERR_ARG, "%s: no row has trained tokens at max_seq_len %d (--max-seq-len): raise it",
                        ds->path ? ds->path : "dataset", max_seq_len);
    }
    if (file_rows) *file_rows = rows;
    return ST_OK;
}
