/* bpe.c - the BPE model on one pre-tokenized piece, as huggingface/tokenizers models/bpe
 * (Word::merge_all): initial symbols are bytes (byte-level, mapped through bytes_to_unicode) or
 * characters (SentencePiece-style; unknown characters become <0xNN> byte-fallback tokens or a
 * fused <unk>); then repeatedly apply the lowest-ranked merge, leftmost first, via a heap. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

typedef struct { int32_t id, prev, next, start, end; } sym;
typedef struct { int32_t rank, pos, merged; } cand;

static int cand_less(const cand *a, const cand *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(cand *h, int *n, cand c) {
    int i = (*n)++;
    h[i] = c;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&h[i], &h[p])) break;
        cand t = h[i]; h[i] = h[p]; h[p] = t;
        i = p;
    }
}

static cand heap_pop(cand *h, int *n) {
    cand top = h[0];
    h[0] = h[--(*n)];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && cand_less(&h[l], &h[m])) m = l;
        if (r < *n && cand_less(&h[r], &h[m])) m = r;
        if (m == i) break;
        cand t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
    return top;
}

static st_status emit(st__ivec *ids, st__ivec *offs, int32_t id, int32_t a, int32_t b) {
    if (st__ivec_push(ids, id)) return ST_ERR_NOMEM;
    if (offs && (st__ivec_push(offs, a) || st__ivec_push(offs, b))) return ST_ERR_NOMEM;
    return ST_OK;
}

st_status st__bpe_piece(const st_tokenizer *t, const char *s, size_t len, const int32_t *align,
                        st__ivec *ids, st__ivec *offs) {
    if (len == 0) return ST_OK;
    int32_t whole_a = align[0], whole_b = align[len - 1] + 1;
    char stackbuf[256];
    if (t->ignore_merges) { /* Llama-3: a piece that is itself a token is not split */
        int32_t id = -1;
        if (t->byte_level) {
            char *m = len * 2 <= sizeof stackbuf ? stackbuf : st_malloc(len * 2);
            if (!m) return ST_ERR_NOMEM;
            size_t k = 0;
            for (size_t i = 0; i < len; i++) k += (size_t)st__utf8_encode(st__byte_to_cp((uint8_t)s[i]), m + k);
            id = st__strmap_get(&t->vocab, m, k);
            if (m != stackbuf) free(m);
        } else {
            id = st__strmap_get(&t->vocab, s, len);
        }
        if (id >= 0) return emit(ids, offs, id, whole_a, whole_b);
    }
    /* at most one symbol per byte, at most 4 byte-fallback symbols per 1..4-byte char */
    sym *sy = st_malloc(len * sizeof *sy);
    cand *heap = st_malloc((len * 3 + 3) * sizeof *heap); /* n-1 initial + 2 per merge */
    if (!sy || !heap) {
        free(sy);
        free(heap);
        return ST_ERR_NOMEM;
    }
    int n = 0;
    int32_t unk_start = -1, unk_end = -1; /* pending (fused) unk */
    st_status st = ST_OK;
#define ADD(ID, A, B) do { sy[n] = (sym){(ID), n - 1, n + 1, (A), (B)}; n++; } while (0)
    for (size_t i = 0; i < len;) {
        size_t k;
        int32_t id;
        if (t->byte_level) {
            k = 1;
            id = t->byte_id[(uint8_t)s[i]];
        } else {
            int32_t cp;
            k = (size_t)st__utf8_decode(s + i, len - i, &cp);
            id = st__strmap_get(&t->vocab, s + i, k);
        }
        int32_t a = align[i], b = align[i + k - 1] + 1;
        if (id >= 0) {
            if (unk_start >= 0) {
                ADD(t->unk_id, unk_start, unk_end);
                unk_start = -1;
            }
            ADD(id, a, b);
        } else {
            int done = 0;
            if (t->byte_fallback) {
                int ok = 1;
                for (size_t j = 0; j < k; j++) ok &= t->fallback_id[(uint8_t)s[i + j]] >= 0;
                if (ok) {
                    for (size_t j = 0; j < k; j++) ADD(t->fallback_id[(uint8_t)s[i + j]], a, b);
                    done = 1;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk_start >= 0 && t->fuse_unk) {
                    unk_end = b;
                } else {
                    if (unk_start >= 0) ADD(t->unk_id, unk_start, unk_end);
                    unk_start = a;
                    unk_end = b;
                }
            }
            /* no unk token: the character is dropped, as HF BPE does */
        }
        i += k;
    }
    if (unk_start >= 0) ADD(t->unk_id, unk_start, unk_end);
#undef ADD
    if (n) sy[n - 1].next = -1;
    int hn = 0;
    for (int i = 0; i + 1 < n; i++) {
        int32_t r, m;
        if (st__pairmap_get(&t->merges, sy[i].id, sy[i + 1].id, &r, &m)) heap_push(heap, &hn, (cand){r, i, m});
    }
    while (hn > 0) {
        cand c = heap_pop(heap, &hn);
        sym *L = &sy[c.pos];
        if (L->id < 0 || L->next < 0) continue;
        sym *R = &sy[L->next];
        int32_t r, m;
        if (!st__pairmap_get(&t->merges, L->id, R->id, &r, &m) || m != c.merged) continue;
        L->id = c.merged;
        L->end = R->end;
        L->next = R->next;
        R->id = -1;
        if (L->next >= 0) sy[L->next].prev = c.pos;
        if (L->prev >= 0 && st__pairmap_get(&t->merges, sy[L->prev].id, L->id, &r, &m))
            heap_push(heap, &hn, (cand){r, L->prev, m});
        if (L->next >= 0 && st__pairmap_get(&t->merges, L->id, sy[L->next].id, &r, &m))
            heap_push(heap, &hn, (cand){r, c.pos, m});
    }
    for (int i = 0; n > 0 && i >= 0 && !st; i = sy[i].next) st = emit(ids, offs, sy[i].id, sy[i].start, sy[i].end);
    free(sy);
    free(heap);
    return st;
}
