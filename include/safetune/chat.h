/* chat.h - chat templates: ChatML (SmolLM2, Qwen), Llama-2 [INST], Llama-3 headers, Alpaca.
 * Rendered directly to token ids with a per-token assistant mask (the training loss mask).
 * Message content is always tokenized as plain text (special-token text in a message is never
 * a control token). Source: each model's chat_template (Jinja) in tokenizer_config.json / GGUF
 * tokenizer.chat_template; Alpaca prompt from tatsu-lab/stanford_alpaca. */
#ifndef SAFETUNE_CHAT_H
#define SAFETUNE_CHAT_H

#include "safetune/tokenizer.h"

typedef enum {
    ST_TEMPLATE_CHATML = 0,
    ST_TEMPLATE_LLAMA2 = 1,
    ST_TEMPLATE_LLAMA3 = 2,
    ST_TEMPLATE_ALPACA = 3
} st_template_kind;

typedef struct {
    st_template_kind kind;
    char *default_system; /* system prompt inserted when none is given (SmolLM2), or NULL */
} st_chat_template;

typedef struct {
    const char *role;     /* "system" | "user" | "assistant" */
    const char *content;
} st_chat_message;

/* Recognise a Jinja chat_template source (from GGUF or tokenizer_config.json); ST_ERR_UNSUPPORTED
 * if none matches. Extracts the default system prompt where the template has one. */
st_status st_chat_template_detect(const char *jinja, st_chat_template *out);
/* By name: "chatml", "llama2", "llama3", "alpaca". */
st_status st_chat_template_by_name(const char *name, st_chat_template *out);
void st_chat_template_free(st_chat_template *t);

/* Render messages to ids. mask[i] = 1 for tokens the assistant produced (content and its
 * end-of-turn token), else 0. add_generation_prompt appends the assistant header.
 * ids/mask are heap arrays of length *n (caller frees; mask may be NULL if not wanted). */
st_status st_chat_render(const st_chat_template *tpl, const st_tokenizer *tok,
                         const st_chat_message *msgs, size_t n_msgs, int add_generation_prompt,
                         int32_t **ids, uint8_t **mask, size_t *n);
/* Token ids that end an assistant turn (end-of-turn marker and EOS). Returns count (<= cap). */
int st_chat_stop_ids(const st_chat_template *tpl, const st_tokenizer *tok, int32_t *out, int cap);

#endif
