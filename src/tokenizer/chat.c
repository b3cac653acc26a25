/* chat.c - chat templates rendered straight to ids with an assistant mask. Each template is a
 * hand translation of its published Jinja source: ChatML (SmolLM2 / Qwen2.5 chat_template, with
 * their default system prompt), Llama-2 (meta-llama/Llama-2-7b-chat-hf chat_template), Llama-3.0
 * (meta-llama/Meta-Llama-3-8B-Instruct chat_template), Llama-3.1/3.2/3.3 (Llama-3.1-8B-Instruct,
 * Llama-3.2-1B-Instruct, Llama-3.3-70B-Instruct chat_template without tools: the system block with
 * "Cutting Knowledge Date: December 2023" and "Today Date: {date_string}" is always written; the
 * texts are in tests/parity/tokenizer/templates/) and the Stanford Alpaca prompt.
 * Template text and message content between two template special tokens are tokenized together
 * (as HF tokenizes the rendered string) but with parse_special = 0, so special-token text inside
 * content stays plain text. mask[i] = 1 when token i overlaps an assistant message's content
 * bytes, or is the end-of-turn token that closes an assistant message. */
#include <stdlib.h>
#include <string.h>

#include "safetune/chat.h"
#include "tokenizer/tok_internal.h"

static const char *const ALPACA_SYSTEM =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

void st_chat_template_free(st_chat_template *t) {
    if (!t) return;
    free(t->default_system);
    t->default_system = NULL;
}

st_status st_chat_template_by_name(const char *name, st_chat_template *out) {
    memset(out, 0, sizeof *out);
    if (!strcmp(name, "chatml")) out->kind = ST_TEMPLATE_CHATML;
    else if (!strcmp(name, "llama2")) out->kind = ST_TEMPLATE_LLAMA2;
    else if (!strcmp(name, "llama3") || !strcmp(name, "llama3.0")) out->kind = ST_TEMPLATE_LLAMA3;
    else if (!strcmp(name, "llama3.1") || !strcmp(name, "llama3.2") || !strcmp(name, "llama3.3"))
        out->kind = ST_TEMPLATE_LLAMA31;
    else if (!strcmp(name, "alpaca")) out->kind = ST_TEMPLATE_ALPACA;
    else
        return st_error(ST_ERR_ARG,
                        "chat template \"%s\" is unknown (chatml, llama2, llama3, llama3.1, llama3.2, llama3.3, alpaca)",
                        name);
    return ST_OK;
}

const char *st_chat_template_name(st_template_kind k) {
    switch (k) {
    case ST_TEMPLATE_CHATML: return "chatml";
    case ST_TEMPLATE_LLAMA2: return "llama2";
    case ST_TEMPLATE_LLAMA3: return "llama3";
    case ST_TEMPLATE_LLAMA31: return "llama3.1";
    case ST_TEMPLATE_ALPACA: return "alpaca";
    }
    return "unknown";
}

st_status st_chat_template_set_date(st_chat_template *t, const char *date) {
    if (!date) date = "";
    size_t n = strlen(date);
    if (n >= sizeof t->date_string)
        return st_error(ST_ERR_ARG, "date string \"%s\" is %zu bytes; at most %zu (e.g. \"26 Jul 2024\")", date, n,
                        sizeof t->date_string - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)date[i] < 0x20 || date[i] == 0x7f)
            return st_error(ST_ERR_ARG, "date string: control character at byte %zu (e.g. \"26 Jul 2024\")", i);
    memcpy(t->date_string, date, n + 1);
    return ST_OK;
}

/* The literal of the template's own `set date_string = "..."` (Llama-3.1/3.3; Llama-3.2's
 * strftime_now fallback), copied into out when it fits; else out is left empty. */
static void template_date(const char *j, char *out, size_t cap) {
    for (const char *p = strstr(j, "date_string = "); p; p = strstr(p + 1, "date_string = ")) {
        const char *q = p + strlen("date_string = ");
        if (*q != '"' && *q != '\'') continue;
        const char *e = strchr(q + 1, *q);
        if (!e || (size_t)(e - q - 1) >= cap) continue;
        memcpy(out, q + 1, (size_t)(e - q - 1));
        out[e - q - 1] = 0;
        return;
    }
}

/* Default system prompt of a ChatML template: a literal '<|im_start|>system\n...<|im_end|>'
 * (newline written literally or as the escape \n) whose text is not built from variables. */
static char *chatml_default_system(const char *j) {
    const char *key = "<|im_start|>system";
    for (const char *p = strstr(j, key); p; p = strstr(p + 1, key)) {
        const char *q = p + strlen(key);
        if (*q == '\n') q++;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *e = strstr(q, "<|im_end|>");
        if (!e) break;
        int literal = e > q;
        for (const char *c = q; c < e && literal; c++) literal = *c != '\'' && *c != '"' && *c != '{' && *c != '+';
        if (!literal) continue;
        char *o = st_malloc((size_t)(e - q) + 1);
        if (!o) return NULL;
        size_t n = 0;
        for (const char *c = q; c < e; c++) {
            if (c[0] == '\\' && c + 1 < e) {
                c++;
                o[n++] = *c == 'n' ? '\n' : *c == 't' ? '\t' : *c;
            } else {
                o[n++] = *c;
            }
        }
        o[n] = '\0';
        return o;
    }
    return NULL;
}

st_status st_chat_template_detect(const char *jinja, st_chat_template *out) {
    memset(out, 0, sizeof *out);
    if (!jinja) return st_error(ST_ERR_ARG, "chat template: no template source");
    if (strstr(jinja, "<|im_start|>")) {
        out->kind = ST_TEMPLATE_CHATML;
        out->default_system = chatml_default_system(jinja);
        return ST_OK;
    }
    if (strstr(jinja, "<|start_header_id|>")) {
        out->kind = strstr(jinja, "Cutting Knowledge Date") ? ST_TEMPLATE_LLAMA31 : ST_TEMPLATE_LLAMA3;
        if (out->kind == ST_TEMPLATE_LLAMA31) template_date(jinja, out->date_string, sizeof out->date_string);
        return ST_OK;
    }
    if (strstr(jinja, "[INST]") && strstr(jinja, "<<SYS>>")) {
        out->kind = ST_TEMPLATE_LLAMA2;
        return ST_OK;
    }
    if (strstr(jinja, "### Instruction:")) {
        out->kind = ST_TEMPLATE_ALPACA;
        return ST_OK;
    }
    return st_error(ST_ERR_UNSUPPORTED,
                    "chat template not recognised (known: ChatML, Llama-2 [INST] <<SYS>>, Llama-3.0 and Llama-3.1+ "
                    "headers, Alpaca); choose one by name (chatml, llama2, llama3, llama3.1, alpaca)");
}

/* ---- renderer ---- */
typedef struct {
    const st_tokenizer *tok;
    st__bytes run;        /* pending text */
    st__ivec spans;       /* assistant [a, b) pairs in run */
    st__ivec ids;
    st__bytes mask;
    st_status err;
} render;

static void text(render *r, const char *s, size_t n, int assistant) {
    if (r->err) return;
    if (assistant) {
        if (st__ivec_push(&r->spans, (int32_t)r->run.n) || st__ivec_push(&r->spans, (int32_t)(r->run.n + n)))
            r->err = ST_ERR_NOMEM;
    }
    if (!r->err && st__bytes_append(&r->run, s, n)) r->err = ST_ERR_NOMEM;
}

static void lit(render *r, const char *s) { text(r, s, strlen(s), 0); }

static void flush(render *r) {
    if (r->err || r->run.n == 0) return;
    st__ivec ids = {0}, offs = {0};
    r->err = st__tok_encode_ex(r->tok, r->run.v, r->run.n, 0, 0, &ids, &offs);
    for (size_t i = 0; i < ids.n && !r->err; i++) {
        int32_t a = offs.v[2 * i], b = offs.v[2 * i + 1];
        char m = 0;
        for (size_t k = 0; k + 1 < r->spans.n; k += 2)
            if (a < r->spans.v[k + 1] && b > r->spans.v[k]) m = 1;
        if (st__ivec_push(&r->ids, ids.v[i]) || st__bytes_append(&r->mask, &m, 1)) r->err = ST_ERR_NOMEM;
    }
    free(ids.v);
    free(offs.v);
    r->run.n = 0;
    r->spans.n = 0;
}

static void special(render *r, int32_t id, int assistant_eot) {
    flush(r);
    if (r->err) return;
    char m = (char)(assistant_eot ? 1 : 0);
    if (st__ivec_push(&r->ids, id) || st__bytes_append(&r->mask, &m, 1)) r->err = ST_ERR_NOMEM;
}

/* Python str.strip() / Jinja trim whitespace. */
static int py_space(int32_t c) { return st__is_white_space(c) || (c >= 0x1C && c <= 0x1F); }

static void strip(const char *s, size_t n, const char **o, size_t *on) {
    size_t a = 0, b = n;
    while (a < b) {
        int32_t cp;
        int k = st__utf8_decode(s + a, b - a, &cp);
        if (!py_space(cp)) break;
        a += (size_t)k;
    }
    while (b > a) {
        size_t p = b;
        do { p--; } while (p > a && ((uint8_t)s[p] & 0xC0) == 0x80);
        int32_t cp;
        st__utf8_decode(s + p, b - p, &cp);
        if (!py_space(cp)) break;
        b = p;
    }
    *o = s + a;
    *on = b - a;
}

static st_status need(const st_tokenizer *tok, const char *name, const char *tokstr, int32_t *id) {
    *id = st_tokenizer_find(tok, tokstr);
    if (*id < 0)
        return st_error(ST_ERR_UNSUPPORTED, "chat template %s needs the token \"%s\", which tokenizer %s lacks", name,
                        tokstr, tok->source);
    return ST_OK;
}

st_status st_chat_render(const st_chat_template *tpl, const st_tokenizer *tok, const st_chat_message *msgs,
                         size_t n_msgs, int add_generation_prompt, int32_t **ids_out, uint8_t **mask_out,
                         size_t *n_out) {
    *ids_out = NULL;
    if (mask_out) *mask_out = NULL;
    *n_out = 0;
    /* sanitize contents (invalid UTF-8 -> U+FFFD, as the tokenizer would) */
    char **clean = st_calloc(n_msgs + 1, sizeof *clean);
    size_t *clen = st_calloc(n_msgs + 1, sizeof *clen);
    if (!clean || !clen) {
        free(clean);
        free(clen);
        return st_error(ST_ERR_NOMEM, "chat: out of memory");
    }
    st_status s = ST_OK;
    for (size_t i = 0; i < n_msgs && !s; i++) {
        const char *role = msgs[i].role, *c = msgs[i].content ? msgs[i].content : "";
        if (!role || (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")))
            s = st_error(ST_ERR_ARG, "chat: message %zu: role \"%s\" is not system, user or assistant", i,
                         role ? role : "(null)");
        size_t l = strlen(c);
        if (st__utf8_sanitize(c, l, &clean[i], &clen[i])) {
            clean[i] = st_strdup(c);
            clen[i] = l;
        }
        if (!clean[i]) s = ST_ERR_NOMEM;
    }
    render r = {.tok = tok};
    int32_t im_start = -1, im_end = -1, bos = -1, eos = -1, sh = -1, eh = -1, eot = -1;
#define ROLE(i) msgs[i].role
#define IS(i, x) (!strcmp(msgs[i].role, x))
    if (!s) switch (tpl->kind) {
    case ST_TEMPLATE_CHATML:
        if ((s = need(tok, "chatml", "<|im_start|>", &im_start)) || (s = need(tok, "chatml", "<|im_end|>", &im_end))) break;
        if (tpl->default_system && n_msgs > 0 && !IS(0, "system")) {
            special(&r, im_start, 0);
            lit(&r, "system\n");
            lit(&r, tpl->default_system);
            special(&r, im_end, 0);
            lit(&r, "\n");
        }
        for (size_t i = 0; i < n_msgs; i++) {
            int a = IS(i, "assistant");
            special(&r, im_start, 0);
            lit(&r, ROLE(i));
            lit(&r, "\n");
            text(&r, clean[i], clen[i], a);
            special(&r, im_end, a);
            lit(&r, "\n");
        }
        if (add_generation_prompt) {
            special(&r, im_start, 0);
            lit(&r, "assistant\n");
        }
        break;
    case ST_TEMPLATE_LLAMA2: {
        bos = tok->bos_id;
        eos = tok->eos_id;
        if (bos < 0 || eos < 0) {
            s = st_error(ST_ERR_UNSUPPORTED, "chat template llama2 needs BOS and EOS tokens, which tokenizer %s lacks",
                         tok->source);
            break;
        }
        size_t first = n_msgs > 0 && IS(0, "system") ? 1 : 0;
        for (size_t i = first; i < n_msgs && !s; i++) {
            int user = IS(i, "user");
            if (user != ((i - first) % 2 == 0)) {
                s = st_error(ST_ERR_ARG, "chat template llama2: message %zu: roles must alternate user/assistant/...", i);
                break;
            }
            const char *c;
            size_t cl;
            if (user) {
                special(&r, bos, 0);
                lit(&r, "[INST] ");
                if (i == first && first) { /* '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content, then strip */
                    const char *sy;
                    size_t syl;
                    st__bytes tmp = {0};
                    if (st__bytes_append(&tmp, "<<SYS>>\n", 8) || st__bytes_append(&tmp, clean[0], clen[0]) ||
                        st__bytes_append(&tmp, "\n<</SYS>>\n\n", 11) || st__bytes_append(&tmp, clean[i], clen[i]))
                        r.err = ST_ERR_NOMEM;
                    if (!r.err) {
                        strip(tmp.v, tmp.n, &sy, &syl);
                        text(&r, sy, syl, 0);
                    }
                    free(tmp.v);
                } else {
                    strip(clean[i], clen[i], &c, &cl);
                    text(&r, c, cl, 0);
                }
                lit(&r, " [/INST]");
            } else {
                strip(clean[i], clen[i], &c, &cl);
                lit(&r, " ");
                text(&r, c, cl, 1);
                lit(&r, " ");
                special(&r, eos, 1);
            }
        }
        break;
    }
    case ST_TEMPLATE_LLAMA3:
    case ST_TEMPLATE_LLAMA31: {
        const char *name = tpl->kind == ST_TEMPLATE_LLAMA3 ? "llama3" : "llama3.1";
        if ((s = need(tok, name, "<|start_header_id|>", &sh)) || (s = need(tok, name, "<|end_header_id|>", &eh)) ||
            (s = need(tok, name, "<|eot_id|>", &eot)))
            break;
        bos = st_tokenizer_find(tok, "<|begin_of_text|>");
        if (bos < 0) bos = tok->bos_id;
        size_t first = 0;
        if (tpl->kind == ST_TEMPLATE_LLAMA31) { /* bos, then the system block, always */
            if (bos >= 0) special(&r, bos, 0);
            special(&r, sh, 0);
            lit(&r, "system");
            special(&r, eh, 0);
            lit(&r, "\n\nCutting Knowledge Date: December 2023\nToday Date: ");
            lit(&r, tpl->date_string[0] ? tpl->date_string : ST_CHAT_DEFAULT_DATE);
            lit(&r, "\n\n");
            if (n_msgs > 0 && IS(0, "system")) {
                const char *c;
                size_t cl;
                strip(clean[0], clen[0], &c, &cl);
                text(&r, c, cl, 0);
                first = 1;
            }
            special(&r, eot, 0);
        }
        for (size_t i = first; i < n_msgs; i++) {
            const char *c;
            size_t cl;
            int a = IS(i, "assistant");
            if (i == 0 && bos >= 0 && tpl->kind == ST_TEMPLATE_LLAMA3) special(&r, bos, 0);
            special(&r, sh, 0);
            lit(&r, ROLE(i));
            special(&r, eh, 0);
            lit(&r, "\n\n");
            strip(clean[i], clen[i], &c, &cl);
            text(&r, c, cl, a);
            special(&r, eot, a);
        }
        if (add_generation_prompt) {
            special(&r, sh, 0);
            lit(&r, "assistant");
            special(&r, eh, 0);
            lit(&r, "\n\n");
        }
        break;
    }
    case ST_TEMPLATE_ALPACA: {
        eos = tok->eos_id;
        if (eos < 0) {
            s = st_error(ST_ERR_UNSUPPORTED, "chat template alpaca needs an EOS token, which tokenizer %s lacks", tok->source);
            break;
        }
        size_t first = n_msgs > 0 && IS(0, "system") ? 1 : 0;
        if (st_tokenizer_adds_bos(tok)) special(&r, tok->bos_id, 0);
        if (first) text(&r, clean[0], clen[0], 0);
        else lit(&r, tpl->default_system ? tpl->default_system : ALPACA_SYSTEM);
        lit(&r, "\n\n");
        for (size_t i = first; i < n_msgs; i++) {
            if (IS(i, "user")) {
                lit(&r, "### Instruction:\n");
                text(&r, clean[i], clen[i], 0);
                lit(&r, "\n\n### Response:\n");
            } else if (IS(i, "assistant")) {
                text(&r, clean[i], clen[i], 1);
                special(&r, eos, 1);
                if (i + 1 < n_msgs) lit(&r, "\n\n");
            }
        }
        break;
    }
    default:
        s = st_error(ST_ERR_ARG, "chat: unknown template kind %d", (int)tpl->kind);
    }
#undef ROLE
#undef IS
    if (!s) flush(&r);
    if (!s && r.err) s = r.err == ST_ERR_NOMEM ? st_error(ST_ERR_NOMEM, "chat: out of memory") : r.err;
    for (size_t i = 0; i < n_msgs; i++) free(clean[i]);
    free(clean);
    free(clen);
    free(r.run.v);
    free(r.spans.v);
    if (s) {
        free(r.ids.v);
        free(r.mask.v);
        return s;
    }
    if (!r.ids.v && st__ivec_push(&r.ids, 0) == ST_OK) r.ids.n = 0; /* non-NULL even when empty */
    if (!r.mask.v) st__bytes_append(&r.mask, "", 0);
    if (!r.ids.v || !r.mask.v) {
        free(r.ids.v);
        free(r.mask.v);
        return st_error(ST_ERR_NOMEM, "chat: out of memory");
    }
    *ids_out = r.ids.v;
    *n_out = r.ids.n;
    if (mask_out) *mask_out = (uint8_t *)r.mask.v;
    else free(r.mask.v);
    return ST_OK;
}

int st_chat_stop_ids(const st_chat_template *tpl, const st_tokenizer *tok, int32_t *out, int cap) {
    int32_t c[5];
    int n = 0;
    int llama3 = tpl->kind == ST_TEMPLATE_LLAMA3 || tpl->kind == ST_TEMPLATE_LLAMA31;
    if (tpl->kind == ST_TEMPLATE_CHATML) c[n++] = st_tokenizer_find(tok, "<|im_end|>");
    if (llama3) { /* end of turn; end of message (Llama-3.1+ tool calls); end of text */
        c[n++] = st_tokenizer_find(tok, "<|eot_id|>");
        c[n++] = st_tokenizer_find(tok, "<|eom_id|>");
    }
    c[n++] = tok->eos_id;
    if (llama3) c[n++] = st_tokenizer_find(tok, "<|end_of_text|>");
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (c[i] < 0) continue;
        int dup = 0;
        for (int j = 0; j < k; j++) dup |= out[j] == c[i];
        if (!dup && k < cap) out[k++] = c[i];
    }
    return k;
}
