/* collate_real.c - collation on real data with the real SmolLM2 tokenizer and ChatML template:
 * for the first 64 Alpaca rows, the trained targets (loss_mask = 1) decode exactly to the
 * assistant answer + "<|im_end|>" (a prefix of it when truncated), every trained target is the
 * next input token, and n_targets equals the renderer's assistant-token count after the shift.
 * Usage: collate_real MODEL.gguf ALPACA.json   (exit 77 when a file is absent) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetune/data.h"
#include "safetune/gguf.h"

#define CHECK(x)                                                                   \
    do {                                                                           \
        if ((x) != ST_OK) {                                                        \
            fprintf(stderr, "error: %s: %s\n", #x, st_last_error());               \
            return 1;                                                              \
        }                                                                          \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: collate_real MODEL.gguf ALPACA.json\n"), 2;
    if (access(argv[1], R_OK) || access(argv[2], R_OK)) {
        printf("SKIP: %s or %s absent\n", argv[1], argv[2]);
        return 77;
    }
    st_gguf *g;
    st_tokenizer *tok;
    st_chat_template tpl;
    const char *jinja;
    size_t jlen;
    CHECK(st_gguf_open(argv[1], &g));
    CHECK(st_tokenizer_from_gguf(g, &tok));
    CHECK(st_gguf_get_str(g, "tokenizer.chat_template", &jinja, &jlen));
    CHECK(st_chat_template_detect(jinja, &tpl));
    st_dataset ds;
    CHECK(st_dataset_load(argv[2], ST_DATA_ALPACA, &ds));
    size_t n_all = ds.n;
    ds.n = 64; /* tokenize a prefix only */
    st_tokenized tk;
    CHECK(st_tokenize_dataset(&ds, &tpl, tok, &tk));
    enum { B = 8, T = 96 };
    st_batch b;
    CHECK(st_batch_init(&b, B, T));
    int32_t eot = st_tokenizer_find(tok, "<|im_end|>");
    int bad = 0, truncated = 0;
    int64_t total = 0;
    for (uint32_t r0 = 0; r0 < 64; r0 += B) {
        uint32_t rows[B];
        for (int i = 0; i < B; i++) rows[i] = r0 + (uint32_t)i;
        CHECK(st_collate(&tk, rows, B, T, eot, 0, &b));
        int64_t want_count = 0;
        for (int i = 0; i < B; i++) {
            const int32_t *in = b.inputs + (size_t)i * b.T, *tg = b.targets + (size_t)i * b.T;
            const float *lm = b.loss_mask + (size_t)i * b.T;
            size_t off = tk.offsets[rows[i]], len = tk.offsets[rows[i] + 1] - off;
            size_t L = len < T ? len : T;
            for (size_t t = 1; t < L; t++) want_count += tk.mask[off + t];
            int32_t picked[T];
            int np = 0;
            for (int t = 0; t < b.T; t++) {
                if (lm[t] == 0.0f) continue;
                if (t + 1 >= b.T || tg[t] != in[t + 1]) bad++;
                picked[np++] = tg[t];
            }
            char *text;
            size_t tlen;
            CHECK(st_tokenizer_decode(tok, picked, (size_t)np, 0, &text, &tlen));
            const char *answer = ds.rows[rows[i]].msgs[1].content;
            char *want = malloc(strlen(answer) + 16);
            sprintf(want, "%s<|im_end|>", answer);
            int ok = len <= T ? strcmp(text, want) == 0 : strncmp(text, want, tlen) == 0;
            truncated += len > T;
            if (!ok) {
                bad++;
                if (bad < 4) fprintf(stderr, "row %u: decoded targets '%s'\n  want '%s'\n", rows[i], text, want);
            }
            free(want);
            free(text);
        }
        if (b.n_targets != want_count) {
            bad++;
            fprintf(stderr, "rows %u..: n_targets %lld, renderer mask gives %lld\n", r0,
                    (long long)b.n_targets, (long long)want_count);
        }
        total += b.n_targets;
    }
    printf("collate_real: 64 of %zu Alpaca rows, %lld trained targets, %d truncated at %d tokens, "
           "%d mismatches -> %s\n", n_all, (long long)total, truncated, T, bad, bad ? "FAIL" : "ok");
    st_batch_free(&b);
    st_tokenized_free(&tk);
    ds.n = n_all;
    st_dataset_free(&ds);
    st_chat_template_free(&tpl);
    st_tokenizer_free(tok);
    st_gguf_close(g);
    return bad ? 1 : 0;
}
