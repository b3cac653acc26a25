/* chat.h - chat templates: ChatML (SmolLM2, Qwen), Llama-2 [INST], Llama-3.0 headers, Llama-3.1/3.2/3.3
 * headers with their system block (knowledge date + "Today Date"), Alpaca.
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
    ST_TEMPLATE_ALPACA = 3,
    ST_TEMPLATE_LLAMA31 = 4 /* Llama-3.1 / 3.2 / 3.3: a system block is always written */
} st_template_kind;

/* Date written on Llama-3.1+ "Today Date:" lines unless set: the templates' own fallback
 * (Llama-3.1/3.3 always, Llama-3.2 when strftime_now is undefined), so renders are reproducible. */
#define ST_CHAT_DEFAULT_DATE "26 Jul 2024"

typedef struct {
    st_template_kind kind;
    char *default_system; /* system prompt inserted when none is given (SmolLM2), or NULL */
    char date_string[32]; /* Llama-3.1+: HF's date_string ("" = ST_CHAT_DEFAULT_DATE) */
} st_chat_template;

typedef struct {
    const char *role;     /* "system" | "user" | "assistant" */
    const char *content;
} st_chat_message;

/* Recognise a Jinja chat_template source (from GGUF or tokenizer_config.json); ST_ERR_UNSUPPORTED
 * if none matches. Extracts the default system prompt where the template has one. */
st_status st_chat_template_detect(const char *jinja, st_chat_template *out);
/* By name: "chatml", "llama2", "llama3" (3.0), "llama3.1" (also "llama3.2", "llama3.3"), "alpaca". */
st_status st_chat_template_by_name(const char *name, st_chat_template *out);
void st_chat_template_free(st_chat_template *t);
/* Name of a kind as st_chat_template_by_name takes it ("llama3.1" for ST_TEMPLATE_LLAMA31). */
const char *st_chat_template_name(st_template_kind k);
/* Set the Llama-3.1+ "Today Date: D" text (HF's date_string variable, e.g. "26 Jul 2024");
 * NULL or "" restores ST_CHAT_DEFAULT_DATE. ST_ERR_ARG if longer than 31 bytes or it holds a
 * control character. Other templates ignore it. */
st_status st_chat_template_set_date(st_chat_template *t, const char *date);

/* Render messages to ids. mask[i] = 1 for tokens the assistant produced (content and its
 * end-of-turn token), else 0. add_generation_prompt appends the assistant header.
 * ids/mask are heap arrays of length *n (caller frees; mask may be NULL if not wanted). */
st_status st_chat_render(const st_chat_template *tpl, const st_tokenizer *tok,
                         const st_chat_message *msgs, size_t n_msgs, int add_generation_prompt,
                         int32_t **ids, uint8_t **mask, size_t *n);
/* Token ids that end an assistant turn: the template's end-of-turn markers (ChatML <|im_end|>;
 * Llama-3.x <|eot_id|>, <|eom_id|>, <|end_of_text|>) that the tokenizer has, and EOS.
 * Returns count (<= cap). */
int st_chat_stop_ids(const st_chat_template *tpl, const st_tokenizer *tok, int32_t *out, int cap);

#endif
