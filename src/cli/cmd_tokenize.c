/* cmd_tokenize.c - `safetune tokenize`: the token ids and token strings of a text, or with --chat
 * the conversation rendered by the model's chat template with its assistant (loss) mask — what
 * `train` feeds the model — to check a template and a mask before a long run. Loads only the
 * tokenizer and chat template (st_model_load_tokenizer), never the weights. */
#include "cli/args.h"
#include "cli/commands.h"
#include "safetune/lora.h"
#include "safetune/chat.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* One token's bytes (byte-level / byte-fallback decoded) as a heap NUL-terminated string. */
static char *piece(const st_tokenizer *t, int32_t id, size_t *len) {
    char buf[512];
    int n = st_tokenizer_token_bytes(t, id, buf, (int)sizeof buf);
    if (n < 0) n = 0;
    char *o = malloc((size_t)n + 1);
    if (o) {
        memcpy(o, buf, (size_t)n);
        o[n] = 0;
    }
    *len = (size_t)n;
    return o;
}

/* s[0..n) on one line: \n, \t, \r, \\, control bytes and bytes that are not part of a complete
 * character (a token may hold part of one) escaped. */
static void put_escaped(FILE *f, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c < 0x20 || c == 0x7f) fprintf(f, "\\x%02x", c);
        else if (c < 0x80) fputc(c, f);
        else {
            size_t k = 2;
            while (k <= 4 && (i + k > n || st_utf8_invalid_count(s + i, k))) k++;
            if (k <= 4) { /* s[i..i+k) is one whole character */
                fwrite(s + i, 1, k, f);
                i += k - 1;
            } else {
                fprintf(f, "\\x%02x", c);
            }
        }
    }
}

/* --chat input: a JSON array of {role, content} (or {"messages": [...]}), else one user message. */
static int parse_messages(const char *prog, const char *in, const char *system, cJSON **root, st_chat_message **msgs,
                          size_t *n) {
    const char *p = in;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    *root = NULL;
    if (*p == '[' || *p == '{') {
        const char *errp = NULL;
        *root = cJSON_ParseWithOpts(in, &errp, 1);
        if (!*root) {
            fprintf(stderr, "%s: the input starts like JSON but is not (byte %zu); give a JSON array of "
                    "{\"role\", \"content\"} messages, or plain text for one user message\n", prog,
                    errp ? (size_t)(errp - in) : 0);
            return 1;
        }
        const cJSON *arr = cJSON_IsObject(*root) ? cJSON_GetObjectItemCaseSensitive(*root, "messages") : *root;
        if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0) {
            fprintf(stderr, "%s: expected a non-empty JSON array of {\"role\", \"content\"} messages (or an object "
                    "with \"messages\")\n", prog);
            return 1;
        }
        size_t k = (size_t)cJSON_GetArraySize(arr);
        *msgs = calloc(k + 1, sizeof **msgs);
        if (!*msgs) return 1;
        size_t i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            const cJSON *r = cJSON_GetObjectItemCaseSensitive(it, "role"), *c = cJSON_GetObjectItemCaseSensitive(it, "content");
            if (!cJSON_IsString(r) || !cJSON_IsString(c)) {
                fprintf(stderr, "%s: message %zu: expected {\"role\": string, \"content\": string}\n", prog, i);
                return 1;
            }
            (*msgs)[i++] = (st_chat_message){r->valuestring, c->valuestring};
        }
        *n = i;
        if (system) {
            fprintf(stderr, "%s: --system-prompt is for a plain user message; put a system message in the JSON\n", prog);
            return 2;
        }
        return 0;
    }
    *msgs = calloc(2, sizeof **msgs);
    if (!*msgs) return 1;
    *n = 0;
    if (system) (*msgs)[(*n)++] = (st_chat_message){"system", system};
    (*msgs)[(*n)++] = (st_chat_message){"user", in};
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *system = NULL, *tpl_name = NULL, *date = NULL, *gen = "auto";
    int chat = 0, as_json = 0;
    st_opt opts[] = {
        {"model", ST_OPT_STR, &model, "MODEL", "a .gguf file, a folder with tokenizer.json [+ tokenizer_config.json], or a tokenizer.json file (weights are not loaded)", 0, 0, 0},
        {"file", ST_OPT_STR, &file, "F", "read the input from file F (default: the TEXT argument)", 0, 0, 0},
        {"chat", ST_OPT_FLAG, &chat, NULL, "render the input with the chat template and show the assistant (loss) mask: a JSON array of {\"role\", \"content\"} messages, or plain text as one user message", 0, 0, 0},
        {"system-prompt", ST_OPT_STR, &system, "S", "with --chat and a plain message: this system message first (default: the template's)", 0, 0, 0},
        {"template", ST_OPT_CHOICE, &tpl_name, "chatml|llama2|llama3|llama3.1|llama3.2|llama3.3|alpaca", "with --chat: this template (default: the model's, recognised from its chat_template)", 0, 0, 0},
        CLI_DATE_OPT(date),
        {"generation-prompt", ST_OPT_CHOICE, &gen, "auto|yes|no", "with --chat: append the assistant header (auto: when the last message is the user's)", 0, 0, 0},
        {"json", ST_OPT_FLAG, &as_json, NULL, "print one JSON object: ids, tokens (vocabulary strings), pieces (each token's text; "
                                              "pieces_hex: its bytes, a token may hold part of a character), n_tokens; with --chat also "
                                              "mask, n_mask, text (the rendered conversation), template, date_string", 0, 0, 0},
    };
    st_args_spec spec = {"safetune tokenize", "--model MODEL [--chat] (TEXT | --file F) [options]",
                         "Token ids and token strings of TEXT (encoded as `generate` encodes a prompt: special-token "
                         "text parsed, BOS where the tokenizer adds one). With --chat: the conversation as the chat "
                         "template renders it for training (message contents are plain text), each token's assistant "
                         "mask (1 = in the loss: assistant content and its end-of-turn token) and the rendered text.",
                         opts, (int)(sizeof opts / sizeof opts[0]), 0, 1, "TEXT", 0};
    st_args args;
    int rc = st_args_parse(&spec, argc, argv, &args);
    if (rc) return rc < 0 ? 0 : rc;
    rc = 1;
    st_model *m = NULL;
    char *input = NULL, *text = NULL;
    size_t in_len = 0, text_len = 0, n = 0;
    cJSON *root = NULL, *out = NULL;
    st_chat_message *msgs = NULL;
    size_t n_msgs = 0;
    int32_t *ids = NULL;
    uint8_t *mask = NULL;
    if (!model) { rc = st_args_fail(&spec, "--model is required"); goto done; }
    if (!file == !args.n_pos) { rc = st_args_fail(&spec, "give exactly one of TEXT or --file F"); goto done; }
    if (!chat && (system || tpl_name || strcmp(gen, "auto"))) {
        rc = st_args_fail(&spec, "--system-prompt, --template and --generation-prompt need --chat");
        goto done;
    }
    if (file) {
        if (st_read_text_file(file, &input, &in_len)) {
            fprintf(stderr, "%s: %s\n", spec.prog, st_last_error());
            goto done;
        }
    } else {
        input = strdup(args.pos[0]);
        in_len = input ? strlen(input) : 0;
    }
    if (!input) goto done;
    /* a `safetune train` output folder: its final/ (or final-ema/); a PEFT adapter folder (a
     * LoRA run's final/): the tokenizer of its base model */
    char *resolved = NULL, *adapter_base = NULL;
    if (cli_resolve_weights(model, "live", &resolved) != ST_OK) {
        st_clear_error();
        free(resolved);
        resolved = NULL;
        if (cli_resolve_weights(model, "ema", &resolved) != ST_OK) {
            st_clear_error();
            free(resolved);
            resolved = NULL;
        }
    }
    const char *tok_path = resolved ? resolved : model;
    if (st_lora_is_adapter_dir(tok_path) && !cli_dir_has_tokenizer(tok_path)) {
        if (st_lora_base_model_path(tok_path, &adapter_base)) {
            fprintf(stderr, "%s: %s\n", spec.prog, st_last_error());
            free(resolved);
            goto done;
        }
        tok_path = adapter_base;
    }
    const st_status ls = st_model_load_tokenizer(tok_path, &m);
    free(resolved);
    free(adapter_base);
    if (ls) {
        char hint[4 * 4200];
        if (cli_model_hint(model, hint, sizeof hint)) fprintf(stderr, "%s: %s\n", spec.prog, hint);
        else fprintf(stderr, "%s: %s\n", spec.prog, st_last_error());
        goto done;
    }
    if (tpl_name) {
        st_chat_template t;
        if (st_chat_template_by_name(tpl_name, &t)) {
            fprintf(stderr, "%s: %s\n", spec.prog, st_last_error());
            goto done;
        }
        st_chat_template_free(&m->chat);
        m->chat = t;
        m->has_chat_template = 1;
    }
    if (cli_apply_date(spec.prog, m, date)) goto done;
    if (chat) {
        int pr = parse_messages(spec.prog, input, system, &root, &msgs, &n_msgs);
        if (pr) { rc = pr; goto done; }
        int agp = !strcmp(gen, "yes") || (!strcmp(gen, "auto") && !strcmp(msgs[n_msgs - 1].role, "user"));
        if (st_chat_render(&m->chat, m->tokenizer, msgs, n_msgs, agp, &ids, &mask, &n) ||
            st_tokenizer_decode(m->tokenizer, ids, n, 0, &text, &text_len)) {
            fprintf(stderr, "%s: %s\n", spec.prog, st_last_error());
            goto done;
        }
    } else if (st_tokenizer_encode(m->tokenizer, input, in_len, 1, 1, &ids, &n)) {
        fprintf(stderr, "%s: %s\n", spec.prog, st_last_error());
        goto done;
    }
    const st_tokenizer *tok = m->tokenizer;
    size_t n_mask = 0;
    for (size_t i = 0; mask && i < n; i++) n_mask += mask[i];
    if (as_json) {
        out = cJSON_CreateObject();
        cJSON *ja = cJSON_AddArrayToObject(out, "ids"), *jt = cJSON_AddArrayToObject(out, "tokens");
        cJSON *jp = cJSON_AddArrayToObject(out, "pieces"), *jm = mask ? cJSON_AddArrayToObject(out, "mask") : NULL;
        cJSON *jh = cJSON_AddArrayToObject(out, "pieces_hex");
        for (size_t i = 0; i < n; i++) {
            size_t pl;
            char *pc = piece(tok, ids[i], &pl);
            const char *ts = st_tokenizer_token(tok, ids[i]);
            cJSON_AddItemToArray(ja, cJSON_CreateNumber(ids[i]));
            cJSON_AddItemToArray(jt, cJSON_CreateString(ts ? ts : ""));
            cJSON_AddItemToArray(jp, cJSON_CreateString(pc ? pc : "")); /* repaired with the whole line below */
            char hex[1100];
            size_t hl = 0;
            for (size_t k = 0; pc && k < pl && hl + 3 < sizeof hex; k++) hl += (size_t)snprintf(hex + hl, 3, "%02x", (unsigned char)pc[k]);
            hex[hl] = 0;
            cJSON_AddItemToArray(jh, cJSON_CreateString(hex));
            if (jm) cJSON_AddItemToArray(jm, cJSON_CreateNumber(mask[i]));
            free(pc);
        }
        cJSON_AddNumberToObject(out, "n_tokens", (double)n);
        if (chat) {
            cJSON_AddStringToObject(out, "template", st_chat_template_name(m->chat.kind));
            if (m->chat.kind == ST_TEMPLATE_LLAMA31)
                cJSON_AddStringToObject(out, "date_string", m->chat.date_string[0] ? m->chat.date_string : ST_CHAT_DEFAULT_DATE);
            cJSON_AddStringToObject(out, "text", text);
            cJSON_AddNumberToObject(out, "n_mask", (double)n_mask);
        }
        char *s = st_utf8_fix_owned(cJSON_PrintUnformatted(out));
        if (!s) goto done;
        puts(s);
        free(s);
    } else {
        if (chat) {
            printf("template: %s", st_chat_template_name(m->chat.kind));
            if (m->chat.kind == ST_TEMPLATE_LLAMA31)
                printf(" (Today Date: %s)", m->chat.date_string[0] ? m->chat.date_string : ST_CHAT_DEFAULT_DATE);
            printf("\nrendered:\n%s\n\n", text);
        }
        printf("%zu tokens%s", n, chat ? "" : "\n");
        if (chat) printf(", %zu in the assistant mask\n", n_mask);
        printf("%6s %8s %s %s\n", "index", "id", mask ? "mask" : "", "token  text");
        for (size_t i = 0; i < n; i++) {
            size_t pl;
            char *pc = piece(tok, ids[i], &pl);
            const char *ts = st_tokenizer_token(tok, ids[i]);
            printf("%6zu %8d ", i, ids[i]);
            if (mask) printf("%4d ", mask[i]);
            put_escaped(stdout, ts ? ts : "", ts ? strlen(ts) : 0);
            fputs("  \"", stdout);
            put_escaped(stdout, pc ? pc : "", pl);
            fputs("\"\n", stdout);
            free(pc);
        }
    }
    rc = 0;
done:
    cJSON_Delete(out);
    cJSON_Delete(root);
    free(msgs);
    free(ids);
    free(mask);
    free(text);
    free(input);
    st_model_free(m);
    st_args_free(&args);
    return rc;
}
