/* tokenizer_parity.c - compare our tokenizer with Hugging Face `tokenizers` reference output
 * (make_reference.py): exact ids for every text, exact decode (with and without special tokens),
 * decode(encode(text)) == text where HF round-trips, SmolLM2 loaded from GGUF and from the
 * tokenizer.json built by the reference give identical ids, and chat renders + masks.
 * usage: tokenizer_parity REF_DIR DATA_DIR MODEL.gguf   (prints the first mismatch; exit 1) */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "safetune/chat.h"
#include "safetune/gguf.h"
#include "safetune/tokenizer.h"

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c - 'a' + 10; }

static char *unhex(const char *h, size_t *n) {
    size_t l = strlen(h) / 2;
    char *o = malloc(l + 1);
    for (size_t i = 0; i < l; i++) o[i] = (char)(hexval(h[2 * i]) * 16 + hexval(h[2 * i + 1]));
    o[l] = 0;
    *n = l;
    return o;
}

static void show(const char *what, const char *s, size_t n) {
    fprintf(stderr, "  %s: \"", what);
    for (size_t i = 0; i < n && i < 300; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fprintf(stderr, "\\n");
        else if (c < 0x20 || c == 0x7f) fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
    fprintf(stderr, "%s\"\n", n > 300 ? "..." : "");
}

static int cmp_ids(const char *label, const char *text, size_t tl, const int32_t *ours, size_t n,
                   const cJSON *ref) {
    size_t rn = (size_t)cJSON_GetArraySize(ref);
    size_t m = n < rn ? n : rn, pos = m;
    for (size_t i = 0; i < m; i++)
        if (ours[i] != cJSON_GetArrayItem(ref, (int)i)->valueint) {
            pos = i;
            break;
        }
    if (pos == m && n == rn) return 0;
    fprintf(stderr, "MISMATCH %s at token %zu (ours %zu tokens, HF %zu)\n", label, pos, n, rn);
    show("text", text, tl);
    fprintf(stderr, "  ours:");
    for (size_t i = pos > 3 ? pos - 3 : 0; i < n && i < pos + 6; i++) fprintf(stderr, " %d", ours[i]);
    fprintf(stderr, "\n  HF:  ");
    for (size_t i = pos > 3 ? pos - 3 : 0; i < rn && i < pos + 6; i++)
        fprintf(stderr, " %d", cJSON_GetArrayItem(ref, (int)i)->valueint);
    fprintf(stderr, "\n");
    return 1;
}

typedef struct { const char *name; st_tokenizer *t; } named;

static st_tokenizer *find_tok(named *ts, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(ts[i].name, name)) return ts[i].t;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s REF_DIR DATA_DIR MODEL.gguf\n", argv[0]);
        return 2;
    }
    const char *ref = argv[1], *data = argv[2], *model = argv[3];
    char p[4096];
    named ts[5] = {{"smollm2", NULL}, {"mistral", NULL}, {"qwen", NULL}, {"qwen_llama3", NULL}, {"smollm2_gguf", NULL}};
    const char *files[4] = {"%s/smollm2_tokenizer.json", "%s/tokenizers/mistral-7b/tokenizer.json",
                            "%s/tokenizers/qwen2.5/tokenizer.json", "%s/qwen_llama3_tokenizer.json"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, files[i], (i == 1 || i == 2) ? data : ref);
        if (st_tokenizer_from_json(p, &ts[i].t)) {
            fprintf(stderr, "load failed: %s\n", st_last_error());
            return 1;
        }
    }
    st_gguf *g = NULL;
    if (st_gguf_open(model, &g) || st_tokenizer_from_gguf(g, &ts[4].t)) {
        fprintf(stderr, "GGUF load failed: %s\n", st_last_error());
        return 1;
    }
    snprintf(p, sizeof p, "%s/tokenizer_expected.jsonl", ref);
    FILE *f = fopen(p, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", p);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    long n_cases = 0, n_fail = 0, n_tokens = 0, n_roundtrip = 0, n_gguf = 0;
    double t_enc = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *r = cJSON_Parse(line);
        const char *tname = cJSON_GetObjectItem(r, "tok")->valuestring;
        const char *set = cJSON_GetObjectItem(r, "set")->valuestring;
        int idx = cJSON_GetObjectItem(r, "i")->valueint, ps = cJSON_GetObjectItem(r, "ps")->valueint;
        int as = cJSON_GetObjectItem(r, "as")->valueint;
        size_t tl, dl, dsl;
        char *text = unhex(cJSON_GetObjectItem(r, "text_hex")->valuestring, &tl);
        char *dec = unhex(cJSON_GetObjectItem(r, "dec_hex")->valuestring, &dl);
        char *decs = unhex(cJSON_GetObjectItem(r, "dec_skip_hex")->valuestring, &dsl);
        const cJSON *ids_ref = cJSON_GetObjectItem(r, "ids");
        char label[256];
        snprintf(label, sizeof label, "%s/%s[%d] parse_special=%d add_special=%d", tname, set, idx, ps, as);
        st_tokenizer *t = find_tok(ts, 5, tname);
        int32_t *ids = NULL;
        size_t n = 0;
        double t0 = st_time_now();
        if (st_tokenizer_encode(t, text, tl, ps, as, &ids, &n)) {
            fprintf(stderr, "%s: encode error: %s\n", label, st_last_error());
            n_fail++;
        } else {
            t_enc += st_time_now() - t0;
            n_tokens += (long)n;
            int bad = cmp_ids(label, text, tl, ids, n, ids_ref);
            if (!strcmp(tname, "smollm2")) { /* the GGUF-loaded tokenizer must agree */
                int32_t *g_ids = NULL;
                size_t gn = 0;
                char gl[300];
                snprintf(gl, sizeof gl, "%s (GGUF)", label);
                if (st_tokenizer_encode(ts[4].t, text, tl, ps, as, &g_ids, &gn) == ST_OK) {
                    bad |= cmp_ids(gl, text, tl, g_ids, gn, ids_ref);
                    n_gguf++;
                }
                free(g_ids);
            }
            for (int skip = 0; skip < 2 && !bad; skip++) {
                char *out = NULL;
                size_t ol = 0;
                if (st_tokenizer_decode(t, ids, n, skip, &out, &ol)) {
                    fprintf(stderr, "%s: decode error: %s\n", label, st_last_error());
                    bad = 1;
                    break;
                }
                const char *want = skip ? decs : dec;
                size_t wl = skip ? dsl : dl;
                if (ol != wl || memcmp(out, want, wl)) {
                    fprintf(stderr, "MISMATCH decode(skip_special=%d) %s\n", skip, label);
                    show("ours", out, ol);
                    show("HF  ", want, wl);
                    bad = 1;
                }
                if (!skip && wl == tl && !memcmp(want, text, tl)) n_roundtrip++; /* HF round-trips: so do we */
                free(out);
            }
            n_fail += bad;
        }
        n_cases++;
        free(ids);
        free(text);
        free(dec);
        free(decs);
        cJSON_Delete(r);
        if (n_fail >= 5) break;
    }
    fclose(f);
    printf("tokenizer parity: %ld cases, %ld tokens, %ld mismatches; %ld GGUF-vs-JSON checks; %ld exact "
           "round-trips; encode %.1f ms total\n",
           n_cases, n_tokens, n_fail, n_gguf, n_roundtrip, t_enc * 1e3);

    /* chat */
    snprintf(p, sizeof p, "%s/chat_expected.jsonl", ref);
    f = fopen(p, "r");
    long c_cases = 0, c_fail = 0;
    while (f && getline(&line, &cap, f) > 0) {
        cJSON *r = cJSON_Parse(line);
        const char *tpl_name = cJSON_GetObjectItem(r, "template")->valuestring;
        const char *tname = cJSON_GetObjectItem(r, "tok")->valuestring;
        int agp = cJSON_GetObjectItem(r, "agp")->valueint;
        st_chat_template tpl = {0};
        st_status s;
        if (!strcmp(tpl_name, "chatml_smollm2") || !strcmp(tpl_name, "chatml_qwen")) {
            char *src = NULL;
            size_t sl;
            if (!strcmp(tpl_name, "chatml_smollm2")) {
                const char *tv;
                st_gguf_get_str(g, "tokenizer.chat_template", &tv, &sl);
                src = strndup(tv, sl);
            } else {
                snprintf(p, sizeof p, "%s/tokenizers/qwen2.5/tokenizer_config.json", data);
                char *cfg;
                st_read_file(p, &cfg, &sl);
                cJSON *c = cJSON_Parse(cfg);
                src = strdup(cJSON_GetObjectItem(c, "chat_template")->valuestring);
                cJSON_Delete(c);
                free(cfg);
            }
            s = st_chat_template_detect(src, &tpl);
            free(src);
        } else {
            s = st_chat_template_by_name(tpl_name, &tpl);
        }
        const cJSON *msgs = cJSON_GetObjectItem(r, "messages");
        size_t nm = (size_t)cJSON_GetArraySize(msgs);
        st_chat_message m[16];
        for (size_t i = 0; i < nm; i++) {
            const cJSON *it = cJSON_GetArrayItem(msgs, (int)i);
            m[i].role = cJSON_GetObjectItem(it, "role")->valuestring;
            m[i].content = cJSON_GetObjectItem(it, "content")->valuestring;
        }
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t n = 0;
        char label[256];
        snprintf(label, sizeof label, "chat %s/%s conv %d agp %d", tpl_name, tname,
                 cJSON_GetObjectItem(r, "conv")->valueint, agp);
        /* SmolLM2 chats use the GGUF-loaded tokenizer (its EOS is <|im_end|>, from the metadata) */
        st_tokenizer *ct = !strcmp(tname, "smollm2") ? ts[4].t : find_tok(ts, 5, tname);
        if (s || st_chat_render(&tpl, ct, m, nm, agp, &ids, &mask, &n)) {
            fprintf(stderr, "%s: error: %s\n", label, st_last_error());
            c_fail++;
        } else {
            const char *txt = cJSON_GetObjectItem(r, "text")->valuestring;
            int bad = cmp_ids(label, txt, strlen(txt), ids, n, cJSON_GetObjectItem(r, "ids"));
            const cJSON *mref = cJSON_GetObjectItem(r, "mask");
            for (size_t i = 0; i < n && !bad; i++)
                if (mask[i] != cJSON_GetArrayItem(mref, (int)i)->valueint) {
                    fprintf(stderr, "MISMATCH %s: mask at token %zu (id %d): ours %d, reference %d\n", label, i,
                            ids[i], mask[i], cJSON_GetArrayItem(mref, (int)i)->valueint);
                    bad = 1;
                }
            c_fail += bad;
        }
        free(ids);
        free(mask);
        st_chat_template_free(&tpl);
        cJSON_Delete(r);
        c_cases++;
    }
    if (f) fclose(f);
    printf("chat parity: %ld renders, %ld mismatches\n", c_cases, c_fail);
    free(line);
    for (int i = 0; i < 5; i++) st_tokenizer_free(ts[i].t);
    st_gguf_close(g);
    return (n_fail || c_fail || c_cases == 0) ? 1 : 0;
}
