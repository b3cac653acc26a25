/* tok_internal.h - private tokenizer structures shared by the src/tokenizer sources.
 * The pipeline mirrors Hugging Face `tokenizers`: added-token split -> normalizer ->
 * pre-tokenizer -> BPE model -> post-processor; decode goes through the decoder chain. */
#ifndef SAFETUNE_TOK_INTERNAL_H
#define SAFETUNE_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "safetune/tokenizer.h"

/* ---- growable vectors ---- */
typedef struct { int32_t *v; size_t n, cap; } st__ivec;
typedef struct { char *v; size_t n, cap; } st__bytes;
st_status st__ivec_push(st__ivec *a, int32_t x);
st_status st__bytes_append(st__bytes *b, const void *p, size_t n);

/* ---- hash maps ---- */
/* String -> id (open addressing; keys are borrowed pointers that must outlive the map). */
typedef struct {
    uint32_t cap; /* power of two */
    uint32_t n;
    const char **keys;
    uint32_t *lens;
    int32_t *vals;
} st__strmap;
st_status st__strmap_init(st__strmap *m, size_t expected);
void st__strmap_free(st__strmap *m);
/* Inserts or overwrites. */
st_status st__strmap_put(st__strmap *m, const char *k, size_t len, int32_t v);
int32_t st__strmap_get(const st__strmap *m, const char *k, size_t len); /* -1 if absent */

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint32_t cap, n;
    uint64_t *keys; /* UINT64_MAX = empty */
    int32_t *rank;
    int32_t *merged;
} st__pairmap;
st_status st__pairmap_init(st__pairmap *m, size_t expected);
void st__pairmap_free(st__pairmap *m);
/* A repeated pair overwrites (HF collects merges into a HashMap: the last one wins). */
st_status st__pairmap_put(st__pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
int st__pairmap_get(const st__pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged);

/* ---- UTF-8 helpers (utf8.c) ---- */
/* Replace each invalid sequence by U+FFFD (maximal-subpart rule, as Python
 * bytes.decode('utf-8', 'replace') and Rust String::from_utf8_lossy). Returns 1 when the input
 * was valid (out untouched), 0 when *out holds a new heap string. */
int st__utf8_sanitize(const char *s, size_t len, char **out, size_t *out_len);
/* Decode one code point from valid UTF-8; returns its byte length. */
int st__utf8_decode(const char *s, size_t len, int32_t *cp);
int st__utf8_encode(int32_t cp, char *out);
int st__is_white_space(int32_t cp); /* Unicode White_Space (Rust char::is_whitespace) */
int st__is_numeric(int32_t cp);     /* general category N* (Rust char::is_numeric) */
int st__is_alnum(int32_t cp);       /* L* or N* (Rust char::is_alphanumeric) */

/* ---- byte-level map (bytelevel.c): GPT-2 bytes_to_unicode ---- */
int32_t st__byte_to_cp(uint8_t b);
int st__cp_to_byte(int32_t cp); /* -1 if cp is not in the map */

/* ---- normalizer ---- */
typedef enum { ST__NORM_NFC, ST__NORM_PREPEND, ST__NORM_REPLACE } st__norm_kind;
typedef struct {
    st__norm_kind kind;
    char *a; /* prepend string / replace pattern */
    char *b; /* replace content */
} st__norm;

/* Text with, per byte, the offset in the segment it came from (for chat masks). */
typedef struct {
    st__bytes s;
    st__ivec align;
} st__astr;
st_status st__normalize(const st__norm *steps, int n_steps, const char *text, size_t len,
                        int32_t base_off, st__astr *out);

/* ---- pre-tokenizer (pretokenize.c) ---- */
typedef enum {
    ST__PT_SPLIT, ST__PT_DIGITS, ST__PT_BYTELEVEL, ST__PT_METASPACE, ST__PT_WSPLIT
} st__pt_kind;
typedef enum {
    ST__SPLIT_ISOLATED, ST__SPLIT_REMOVED, ST__SPLIT_MERGED_PREV, ST__SPLIT_MERGED_NEXT,
    ST__SPLIT_CONTIGUOUS
} st__split_behavior;
typedef struct {
    st__pt_kind kind;
    pcre2_code *re;       /* SPLIT, BYTELEVEL(use_regex) */
    st__split_behavior behavior;
    int individual_digits; /* DIGITS */
    int add_prefix_space;  /* BYTELEVEL */
    int prepend_scheme;    /* METASPACE: 0 always, 1 first, 2 never */
    int split;             /* METASPACE */
    char replacement[8];   /* METASPACE, usually "\xe2\x96\x81" */
} st__pretok;
/* Compile an HF/onig-style pattern with PCRE2 (UTF + UCP; \s rewritten to Unicode White_Space).
 * Errors name `where` (file: field). */
st_status st__regex_compile(const char *pattern, const char *where, pcre2_code **out);
/* A piece of pre-tokenized text: [off, off+len) in the arena. first = starts the segment. */
typedef struct { uint32_t off, len; } st__piece;
typedef struct { st__piece *v; size_t n, cap; } st__pieces;
/* Run the pre-tokenizer chain on arena[0..len); appends to arena when prefixes are added. */
st_status st__pretokenize(const st__pretok *steps, int n_steps, st__astr *arena,
                          st__pieces *out);

/* ---- decoder ---- */
typedef enum {
    ST__DEC_BYTELEVEL, ST__DEC_REPLACE, ST__DEC_BYTEFALLBACK, ST__DEC_FUSE, ST__DEC_STRIP,
    ST__DEC_METASPACE
} st__dec_kind;
typedef struct {
    st__dec_kind kind;
    char *a, *b;     /* replace pattern/content; strip content; metaspace replacement */
    int start, stop; /* strip counts */
    int prepend_scheme;
} st__dec;

/* ---- added tokens ---- */
typedef struct {
    char *content;
    uint32_t len;
    int32_t id;
    uint8_t special, lstrip, rstrip, normalized, single_word;
} st__added;

struct st_tokenizer {
    st_tokenizer_kind kind;
    char *source; /* path, for messages */
    /* vocabulary: id -> string (model vocab and added tokens) */
    int32_t n_vocab;
    char **tok;
    uint32_t *tok_len;
    uint8_t *is_special; /* per id */
    st__strmap vocab;      /* model vocab string -> id */
    st__strmap added_map;  /* added token content -> id */
    /* BPE model */
    st__pairmap merges;
    int ignore_merges;
    int byte_fallback;
    int fuse_unk;
    int32_t unk_id;
    int32_t byte_id[256];     /* byte-level: id of the mapped char, or -1 */
    int32_t fallback_id[256]; /* <0xNN> tokens, or -1 */
    int byte_level;           /* model input is byte-level mapped */
    /* pipeline */
    st__norm *norm; int n_norm;
    st__pretok *pre; int n_pre;
    st__dec *dec; int n_dec;
    st__added *added; int n_added;
    int has_normalized_added;
    /* added tokens by first byte (CSR), longest first: leftmost-longest matching */
    int32_t *added_by_byte;
    int32_t added_bucket[257];
    /* post-processor (single sequence) */
    int32_t *post_prefix; int n_post_prefix;
    int32_t *post_suffix; int n_post_suffix;
    int32_t bos_id, eos_id, pad_id;
};

/* tokenizer.c */
st_tokenizer *st__tok_new(const char *source);
st_status st__tok_set_vocab_size(st_tokenizer *t, int32_t n);
/* Set token string for id (copies). */
st_status st__tok_set_token(st_tokenizer *t, int32_t id, const char *s, size_t len);
st_status st__tok_add_added(st_tokenizer *t, const st__added *a); /* copies content */
/* Finish: build byte maps, added-token tables. */
st_status st__tok_finish(st_tokenizer *t);
/* Encode with per-token byte offsets [start, end) into text (which must be valid UTF-8 when
 * offs is wanted; offs may be NULL). Appends to ids/offs. */
st_status st__tok_encode_ex(const st_tokenizer *t, const char *text, size_t len, int parse_special,
                            int add_special, st__ivec *ids, st__ivec *offs);

/* bpe.c: BPE on one pre-tokenized piece; appends ids and (if offs) [start,end) pairs. align maps
 * piece bytes to source offsets. */
st_status st__bpe_piece(const st_tokenizer *t, const char *s, size_t len, const int32_t *align,
                        st__ivec *ids, st__ivec *offs);

/* added_tokens.c: split text into [added token | text] segments. */
typedef struct { int32_t id; uint32_t start, end; } st__seg; /* id -1 = text */
typedef struct { st__seg *v; size_t n, cap; } st__segs;
st_status st__added_split(const st_tokenizer *t, const char *s, size_t len, int normalized_pass,
                          int parse_special, st__segs *out);

#endif
