/* fuzz_tokenizer_roundtrip.c - encode/decode of arbitrary bytes with the project's real tokenizers
 * (SmolLM2 from GGUF, Qwen2.5 and Mistral-7B tokenizer.json).
 * Input: byte 0 = mode (bits 0-1: tokenizer, bit 2: decode the rest as raw int32 ids, bit 3:
 * parse_special/add_special), the rest = the text (or ids).
 * Checks: every id is inside the vocabulary; decode's length matches its text; for valid UTF-8
 * without special-token parsing, decode(encode(text)) == text for the byte-level tokenizers (HF's
 * ByteLevel round trip is lossless) and for Mistral (Prepend "▁" + byte fallback, Strip 1 on decode)
 * unless the text holds "▁" itself (decoded as a space, as HF does), or a byte without a token
 * (SmolLM2's vocabulary lacks 21 of the 256 byte tokens; HF's BPE drops such bytes too); Qwen2.5
 * round-trips to NFC(text) (its normalizer). */
#include "fuzz_util.h"

#include "safetune/tokenizer.h"

#include <stdio.h>
#include <utf8proc.h>
#include <stdlib.h>
#include <string.h>

static uint8_t g_byte_ok[STF_N_TOKENIZERS][256]; /* 1: the vocabulary has a token for this byte */

/* GPT-2 byte-level alphabet: printable Latin-1 bytes map to themselves, the others to U+0100... */
static int byte_to_cp(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) n++;
    return 256 + n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    for (int i = 0; i < STF_N_TOKENIZERS; i++) {
        const st_tokenizer *t = stf_tokenizer(i);
        for (int b = 0; b < 256; b++) {
            char s[16];
            if (st_tokenizer_kind_of(t) == ST_TOK_SPM_BPE) {
                snprintf(s, sizeof s, "<0x%02X>", b);
            } else {
                int cp = byte_to_cp(b);
                if (cp < 0x80) s[0] = (char)cp, s[1] = 0;
                else s[0] = (char)(0xC0 | (cp >> 6)), s[1] = (char)(0x80 | (cp & 0x3F)), s[2] = 0;
            }
            g_byte_ok[i][b] = st_tokenizer_find(t, s) >= 0;
        }
    }
    return 0;
}

static int valid_utf8_no_nul(const uint8_t *s, size_t n) {
    return st_utf8_invalid_count((const char *)s, n) == 0 && memchr(s, 0, n) == NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0];
    int which = (mode & 3) % STF_N_TOKENIZERS;
    const st_tokenizer *t = stf_tokenizer(which);
    int32_t v = st_tokenizer_vocab_size(t);
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (mode & 4) { /* arbitrary ids, in or out of range: decode or refuse, never read outside */
        size_t nid = n / 4;
        int32_t *ids = malloc((nid ? nid : 1) * sizeof *ids);
        if (!ids) abort();
        memcpy(ids, p, nid * 4);
        for (int skip = 0; skip < 2; skip++) {
            char *txt = NULL;
            size_t len = 0;
            if (st_tokenizer_decode(t, ids, nid, skip, &txt, &len) == ST_OK) {
                if (!txt || strlen(txt) > len) stf_fail("decode: text shorter than its length");
            }
            free(txt);
        }
        for (size_t i = 0; i < nid; i++) {
            char buf[64];
            (void)st_tokenizer_token_bytes(t, ids[i], buf, sizeof buf);
            (void)st_tokenizer_token(t, ids[i]);
            (void)st_tokenizer_is_special(t, ids[i]);
        }
        free(ids);
        return 0;
    }
    int special = (mode & 8) != 0;
    int32_t *ids = NULL;
    size_t nid = 0;
    if (st_tokenizer_encode(t, (const char *)p, n, special, special, &ids, &nid) != ST_OK) {
        free(ids);
        return 0;
    }
    for (size_t i = 0; i < nid; i++)
        if (ids[i] < 0 || ids[i] >= v) stf_fail("%s: id %d out of the vocabulary [0, %d)", stf_tokenizer_name(which), ids[i], v);
    char *txt = NULL;
    size_t len = 0;
    if (st_tokenizer_decode(t, ids, nid, 0, &txt, &len) != ST_OK)
        stf_fail("%s: decode of its own encoding failed: %s", stf_tokenizer_name(which), st_last_error());
    /* SentencePiece-style: "▁" (U+2581) in the text is the space marker, decoded as " " (as HF does) */
    int lossy = st_tokenizer_kind_of(t) == ST_TOK_SPM_BPE && memmem(p, n, "\xe2\x96\x81", 3) != NULL;
    for (size_t i = 0; i < n && !lossy; i++) lossy = !g_byte_ok[which][p[i]];
    if (n > 0 && nid == 0 && !lossy) stf_fail("%s: %zu bytes encoded to no token", stf_tokenizer_name(which), n);
    /* Qwen2.5's normalizer is NFC (as HF applies it): its round trip gives NFC(text) */
    const uint8_t *want = p;
    size_t wn = n;
    uint8_t *nfc = NULL;
    if (which == 1 && !special && !lossy && valid_utf8_no_nul(p, n)) {
        char *c = stf_cstr(p, n);
        nfc = utf8proc_NFC((const utf8proc_uint8_t *)c);
        free(c);
        if (nfc) want = nfc, wn = strlen((const char *)nfc);
    }
    if (!special && !lossy && valid_utf8_no_nul(p, n) && (len != wn || memcmp(txt, want, wn) != 0))
        stf_fail("%s: round trip changed the text (%zu bytes in, %zu out)", stf_tokenizer_name(which), n, len);
    free(nfc);
    free(txt);
    free(ids);
    return 0;
}
