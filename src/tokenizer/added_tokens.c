/* added_tokens.c - split text around added tokens before the model sees it, as
 * huggingface/tokenizers AddedVocabulary::find_matches: leftmost-longest matching, `single_word`
 * (no word character on either side), `lstrip`/`rstrip` (absorb adjacent whitespace), and
 * encode_special_tokens (parse_special = 0: special tokens are left in the text). Tokens with
 * normalized = 0 are matched in the raw text, normalized = 1 ones in the normalized text. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

static st_status segs_push(st__segs *o, int32_t id, size_t a, size_t b) {
    if (a == b && id < 0) return ST_OK;
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 16;
        st__seg *nv = st_realloc(o->v, nc * sizeof *nv);
        if (!nv) return ST_ERR_NOMEM;
        o->v = nv;
        o->cap = nc;
    }
    o->v[o->n++] = (st__seg){id, (uint32_t)a, (uint32_t)b};
    return ST_OK;
}

/* Last code point before s+end (valid UTF-8). */
static int32_t cp_before(const char *s, size_t end, size_t *start) {
    size_t i = end;
    do { i--; } while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80);
    int32_t cp;
    st__utf8_decode(s + i, end - i, &cp);
    if (start) *start = i;
    return cp;
}

static int is_word(int32_t cp) { return cp == '_' || st__is_alnum(cp); }

st_status st__added_split(const st_tokenizer *t, const char *s, size_t len, int normalized_pass,
                          int parse_special, st__segs *out) {
    size_t done = 0; /* start of the not-yet-emitted text */
    size_t i = 0;
    while (i < len) {
        uint8_t c = (uint8_t)s[i];
        const st__added *hit = NULL;
        for (int32_t k = t->added_bucket[c]; k < t->added_bucket[c + 1]; k++) {
            const st__added *a = &t->added[t->added_by_byte[k]];
            if (a->normalized != normalized_pass || a->len > len - i) continue;
            if (memcmp(s + i, a->content, a->len) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t start = i, stop = i + hit->len;
        i = stop; /* matching resumes after this match whatever happens to it */
        if (hit->special && !parse_special) continue;
        if (hit->single_word) {
            int left_ok = start == 0 || !is_word(cp_before(s, start, NULL));
            int32_t cp = 0;
            if (stop < len) st__utf8_decode(s + stop, len - stop, &cp);
            int right_ok = stop == len || !is_word(cp);
            if (!left_ok || !right_ok) continue;
        }
        if (hit->lstrip) {
            size_t ns = start, p;
            while (ns > 0 && st__is_white_space(cp_before(s, ns, &p))) ns = p;
            start = ns > done ? ns : done;
        }
        if (hit->rstrip) {
            while (stop < len) {
                int32_t cp;
                int k = st__utf8_decode(s + stop, len - stop, &cp);
                if (!st__is_white_space(cp)) break;
                stop += (size_t)k;
            }
            i = stop > i ? stop : i;
        }
        if (start > done && segs_push(out, -1, done, start)) return ST_ERR_NOMEM;
        if (segs_push(out, hit->id, start, stop)) return ST_ERR_NOMEM;
        done = stop;
    }
    if (done < len && segs_push(out, -1, done, len)) return ST_ERR_NOMEM;
    return ST_OK;
}
