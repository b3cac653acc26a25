/* collate.c - tokenized rows -> [B, T] micro-batches of inputs, next-token targets and the
 * assistant-only loss mask (see data.h). */
#include "safetune/data.h"

#include <stdlib.h>
#include <string.h>

st_status st_tokenize_dataset_with(const st_dataset *ds, st_render_fn render, void *ctx,
                                   st_tokenized *out) {
    memset(out, 0, sizeof *out);
    size_t cap = 0, len = 0;
    st_tokenized t = {NULL, NULL, st_malloc((ds->n + 1) * sizeof(size_t)), ds->n};
    if (!t.offsets) return ST_ERR_NOMEM;
    t.offsets[0] = 0;
    for (size_t r = 0; r < ds->n; r++) {
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t n = 0;
        st_status st = render(ctx, ds->rows[r].msgs, ds->rows[r].n_msgs, &ids, &mask, &n);
        if (st) {
            st_tokenized_free(&t);
            return st_error_wrap(st, "%s: row %zu", ds->path ? ds->path : "dataset", r);
        }
        if (len + n > cap) {
            size_t nc = cap ? cap : 4096;
            while (nc < len + n) nc *= 2;
            int32_t *ni = realloc(t.ids, nc * sizeof *ni);
            if (ni) t.ids = ni;
            uint8_t *nm = realloc(t.mask, nc);
            if (nm) t.mask = nm;
            if (!ni || !nm) {
                free(ids);
                free(mask);
                st_tokenized_free(&t);
                return st_error(ST_ERR_NOMEM, "out of memory tokenizing row %zu", r);
            }
            cap = nc;
        }
        if (n) {
            memcpy(t.ids + len, ids, n * sizeof *ids);
            if (mask) memcpy(t.mask + len, mask, n);
            else memset(t.mask + len, 0, n);
        }
        len += n;
        t.offsets[r + 1] = len;
        free(ids);
        free(mask);
    }
    *out = t;
    return ST_OK;
}

void st_tokenized_free(st_tokenized *t) {
    free(t->ids);
    free(t->mask);
    free(t->offsets);
    memset(t, 0, sizeof *t);
}

/* 1 when row r keeps a trained target once truncated to max_seq_len tokens. */
static int row_trained(const st_tokenized *t, size_t r, int max_seq_len) {
    const size_t o = t->offsets[r], n = t->offsets[r + 1] - o;
    const size_t lim = n < (size_t)max_seq_len ? n : (size_t)max_seq_len;
    for (size_t i = 1; i < lim; i++)
        if (t->mask[o + i]) return 1;
    return 0;
}

void st_tokenized_drop_untrained(st_tokenized *t, int max_seq_len, size_t *n_dropped, size_t *kept_rows) {
    size_t kept = 0, len = 0;
    for (size_t r = 0; r < t->n; r++) {
        const size_t o = t->offsets[r], n = t->offsets[r + 1] - o;
        if (!row_trained(t, r, max_seq_len)) continue;
        if (kept_rows) kept_rows[kept] = r;
        memmove(t->ids + len, t->ids + o, n * sizeof *t->ids);
        memmove(t->mask + len, t->mask + o, n);
        len += n;
        t->offsets[++kept] = len;
    }
    *n_dropped = t->n - kept;
    t->n = kept;
}

st_status st_batch_init(st_batch *b, int cap_B, int cap_T) {
    memset(b, 0, sizeof *b);
    if (cap_B < 1 || cap_T < 2)
        return st_error(ST_ERR_ARG, "batch: capacity [%d, %d] must be at least [1, 2]", cap_B, cap_T);
    size_t n = (size_t)cap_B * (size_t)cap_T;
    b->inputs = st_malloc(n * sizeof *b->inputs);
    b->targets = st_malloc(n * sizeof *b->targets);
    b->loss_mask = st_malloc(n * sizeof *b->loss_mask);
    b->lengths = st_malloc((size_t)cap_B * sizeof *b->lengths);
    if (!b->inputs || !b->targets || !b->loss_mask || !b->lengths) {
        st_batch_free(b);
        return ST_ERR_NOMEM;
    }
    b->cap_B = cap_B;
    b->cap_T = cap_T;
    return ST_OK;
}

void st_batch_free(st_batch *b) {
    free(b->inputs);
    free(b->targets);
    free(b->loss_mask);
    free(b->lengths);
    memset(b, 0, sizeof *b);
}

st_status st_collate(const st_tokenized *tk, const uint32_t *rows, int n_rows, int max_seq_len,
                     int32_t pad_id, int pad_to_max, st_batch *b) {
    if (n_rows < 1 || n_rows > b->cap_B)
        return st_error(ST_ERR_ARG, "collate: %d rows for a batch of capacity %d", n_rows, b->cap_B);
    if (max_seq_len < 2 || max_seq_len > b->cap_T)
        return st_error(ST_ERR_ARG, "collate: max_seq_len %d must be in [2, %d] (batch capacity)",
                        max_seq_len, b->cap_T);
    int T = pad_to_max ? max_seq_len : 1;
    for (int r = 0; r < n_rows; r++) {
        if (rows[r] >= tk->n)
            return st_error(ST_ERR_ARG, "collate: row %u out of range (%zu rows)", rows[r], tk->n);
        size_t len = tk->offsets[rows[r] + 1] - tk->offsets[rows[r]];
        if (len > (size_t)max_seq_len) len = (size_t)max_seq_len;
        b->lengths[r] = (int32_t)len;
        if ((int)len > T) T = (int)len;
    }
    b->B = n_rows;
    b->T = T;
    int64_t count = 0;
    for (int r = 0; r < n_rows; r++) {
        const int32_t *ids = tk->ids + tk->offsets[rows[r]];
        const uint8_t *mask = tk->mask + tk->offsets[rows[r]];
        int len = b->lengths[r];
        int32_t *in = b->inputs + (size_t)r * T, *tg = b->targets + (size_t)r * T;
        float *lm = b->loss_mask + (size_t)r * T;
        for (int t = 0; t < T; t++) {
            in[t] = t < len ? ids[t] : pad_id;
            int train = t + 1 < len && mask[t + 1];
            tg[t] = train ? ids[t + 1] : -1;
            lm[t] = train ? 1.0f : 0.0f;
            count += train;
        }
    }
    b->n_targets = count;
    return ST_OK;
}
