/* chat_llama3_parity.c - Llama-3.0 / 3.1 / 3.2 / 3.3 chat templates against Hugging Face
 * (make_llama3_reference.py: the real chat_template texts rendered by jinja2, tokenized by
 * `tokenizers` from the real Llama-3 tokenizer.json): the template kind is recognised from each
 * template's text, then token ids and assistant masks must be identical for every conversation
 * (with and without a system message, multi-turn, with and without the generation prompt, the
 * default and a --date-string date). Fails when a template has fewer than 20 conversations.
 * usage: chat_llama3_parity REF_DIR TEMPLATE_DIR DATA_DIR   (prints the first mismatches; exit 1) */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "safetune/chat.h"
#include "safetune/tokenizer.h"

#define N_TPL 4
static const char *const TPL[N_TPL] = {"llama-3.0", "llama-3.1", "llama-3.2", "llama-3.3"};
static const st_template_kind KIND[N_TPL] = {ST_TEMPLATE_LLAMA3, ST_TEMPLATE_LLAMA31, ST_TEMPLATE_LLAMA31,
                                             ST_TEMPLATE_LLAMA31};

static int first_diff(const int32_t *a, size_t na, const cJSON *b) {
    size_t nb = (size_t)cJSON_GetArraySize(b), m = na < nb ? na : nb;
    for (size_t i = 0; i < m; i++)
        if (a[i] != cJSON_GetArrayItem(b, (int)i)->valueint) return (int)i;
    return na == nb ? -1 : (int)m;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s REF_DIR TEMPLATE_DIR DATA_DIR\n", argv[0]);
        return 2;
    }
    char p[4096];
    st_chat_template tpl[N_TPL];
    for (int i = 0; i < N_TPL; i++) {
        char *src;
        size_t n;
        snprintf(p, sizeof p, "%s/%s.jinja", argv[2], TPL[i]);
        if (st_read_file(p, &src, &n) || st_chat_template_detect(src, &tpl[i])) {
            fprintf(stderr, "%s: %s\n", p, st_last_error());
            return 1;
        }
        free(src);
        if (tpl[i].kind != KIND[i]) {
            fprintf(stderr, "%s: recognised as %s, expected %s\n", p, st_chat_template_name(tpl[i].kind),
                    st_chat_template_name(KIND[i]));
            return 1;
        }
    }
    st_tokenizer *tok[2] = {NULL, NULL};
    const char *tok_name[2] = {"llama-3.0", "llama-3.2"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/tokenizers/%s/tokenizer.json", argv[3], tok_name[i]);
        if (st_tokenizer_from_json(p, &tok[i])) {
            fprintf(stderr, "%s\n", st_last_error());
            return 1;
        }
    }
    snprintf(p, sizeof p, "%s/llama3_chat_expected.jsonl", argv[1]);
    FILE *f = fopen(p, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", p);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    long renders[N_TPL] = {0}, convs[N_TPL] = {0}, fails = 0, tokens = 0, masked = 0, last_conv[N_TPL];
    for (int i = 0; i < N_TPL; i++) last_conv[i] = -1;
    while (getline(&line, &cap, f) > 0) {
        cJSON *r = cJSON_Parse(line);
        if (!r) {
            fprintf(stderr, "%s: bad JSON line\n", p);
            return 1;
        }
        const char *tname = cJSON_GetObjectItem(r, "template")->valuestring;
        const char *kname = cJSON_GetObjectItem(r, "tok")->valuestring;
        int ti = -1, conv = cJSON_GetObjectItem(r, "conv")->valueint, agp = cJSON_GetObjectItem(r, "agp")->valueint;
        for (int i = 0; i < N_TPL; i++)
            if (!strcmp(TPL[i], tname)) ti = i;
        st_tokenizer *t = !strcmp(kname, "llama-3.0") ? tok[0] : tok[1];
        if (ti < 0) {
            fprintf(stderr, "unknown template %s\n", tname);
            return 1;
        }
        st_chat_template c = tpl[ti];
        const cJSON *date = cJSON_GetObjectItem(r, "date");
        if (cJSON_IsString(date) && st_chat_template_set_date(&c, date->valuestring)) {
            fprintf(stderr, "%s\n", st_last_error());
            return 1;
        }
        const cJSON *msgs = cJSON_GetObjectItem(r, "messages");
        size_t nm = (size_t)cJSON_GetArraySize(msgs);
        st_chat_message m[16];
        for (size_t i = 0; i < nm && i < 16; i++) {
            const cJSON *it = cJSON_GetArrayItem(msgs, (int)i);
            m[i].role = cJSON_GetObjectItem(it, "role")->valuestring;
            m[i].content = cJSON_GetObjectItem(it, "content")->valuestring;
        }
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t n = 0;
        int bad = 0;
        if (st_chat_render(&c, t, m, nm, agp, &ids, &mask, &n)) {
            fprintf(stderr, "%s conv %d agp %d: %s\n", tname, conv, agp, st_last_error());
            bad = 1;
        } else {
            const cJSON *rid = cJSON_GetObjectItem(r, "ids"), *rmask = cJSON_GetObjectItem(r, "mask");
            int d = first_diff(ids, n, rid);
            if (d >= 0) {
                fprintf(stderr, "MISMATCH %s conv %d agp %d: ids differ at token %d (ours %zu tokens, HF %d)\n  text: %s\n",
                        tname, conv, agp, d, n, cJSON_GetArraySize(rid), cJSON_GetObjectItem(r, "text")->valuestring);
                bad = 1;
            }
            for (size_t i = 0; i < n && !bad; i++)
                if (mask[i] != cJSON_GetArrayItem(rmask, (int)i)->valueint) {
                    fprintf(stderr, "MISMATCH %s conv %d agp %d: mask at token %zu (id %d): ours %d, HF %d\n", tname,
                            conv, agp, i, ids[i], mask[i], cJSON_GetArrayItem(rmask, (int)i)->valueint);
                    bad = 1;
                }
            tokens += (long)n;
            for (size_t i = 0; i < n; i++) masked += mask[i];
        }
        fails += bad;
        renders[ti]++;
        if (conv != last_conv[ti]) convs[ti]++;
        last_conv[ti] = conv;
        free(ids);
        free(mask);
        cJSON_Delete(r);
        if (fails >= 5) break;
    }
    fclose(f);
    free(line);
    int few = 0;
    for (int i = 0; i < N_TPL; i++) {
        printf("%s (%s): %ld conversations, %ld renders\n", TPL[i], st_chat_template_name(KIND[i]), convs[i], renders[i]);
        few |= convs[i] < 20;
    }
    printf("llama3 chat parity: %ld tokens (%ld in the assistant mask), %ld mismatches\n", tokens, masked, fails);
    for (int i = 0; i < 2; i++) st_tokenizer_free(tok[i]);
    for (int i = 0; i < N_TPL; i++) st_chat_template_free(&tpl[i]);
    if (few) fprintf(stderr, "FAIL: fewer than 20 conversations for a template\n");
    return fails || few ? 1 : 0;
}
