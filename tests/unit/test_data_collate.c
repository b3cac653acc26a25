/* test_data_collate.c - collation with a tiny fake chat renderer: exact inputs, targets, loss
 * mask, truncation, padding and target counts. Renderer: per message a role token (1 system,
 * 2 user, 3 assistant), one token 100 + byte per content byte, then end token 4; mask = 1 on an
 * assistant message's content bytes and its end token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "safetune/data.h"

static st_status fake_render(void *ctx, const st_chat_message *msgs, size_t n_msgs, int32_t **ids,
                             uint8_t **mask, size_t *n) {
    (void)ctx;
    size_t len = 0;
    for (size_t i = 0; i < n_msgs; i++) len += strlen(msgs[i].content) + 2;
    *ids = malloc(len * sizeof **ids);
    *mask = malloc(len);
    size_t k = 0;
    for (size_t i = 0; i < n_msgs; i++) {
        int asst = !strcmp(msgs[i].role, "assistant");
        (*ids)[k] = !strcmp(msgs[i].role, "system") ? 1 : !strcmp(msgs[i].role, "user") ? 2 : 3;
        (*mask)[k++] = 0;
        for (const char *c = msgs[i].content; *c; c++) {
            (*ids)[k] = 100 + (unsigned char)*c;
            (*mask)[k++] = (uint8_t)asst;
        }
        (*ids)[k] = 4;
        (*mask)[k++] = (uint8_t)asst;
    }
    *n = k;
    return ST_OK;
}

static st_status failing_render(void *ctx, const st_chat_message *msgs, size_t n_msgs,
                                int32_t **ids, uint8_t **mask, size_t *n) {
    (void)ctx; (void)msgs; (void)n_msgs; (void)ids; (void)mask; (void)n;
    return st_error(ST_ERR_FORMAT, "cannot render");
}

static st_chat_message k_r0[] = {{"user", "hi"}, {"assistant", "yo"}};
static st_chat_message k_r1[] = {{"system", "s"}, {"user", "abc"}, {"assistant", "d"}};

static void test_collate(void **state) {
    (void)state;
    st_conversation rows[2] = {{k_r0, 2}, {k_r1, 3}};
    st_dataset ds = {rows, 2, ST_DATA_MESSAGES, "mem"};
    st_tokenized tk;
    assert_int_equal(st_tokenize_dataset_with(&ds, fake_render, NULL, &tk), ST_OK);
    /* row0: 2 h i 4 3 y o 4 = [2,204,205,4,3,221,211,4], mask [0,0,0,0,0,1,1,1]  (len 8)
     * row1: 1 s 4 2 a b c 4 3 d 4 = [1,215,4,2,197,198,199,4,3,200,4], mask 1 on the last two */
    assert_int_equal(tk.n, 2);
    assert_int_equal(tk.offsets[1], 8);
    assert_int_equal(tk.offsets[2], 19);

    st_batch b;
    assert_int_equal(st_batch_init(&b, 2, 16), ST_OK);
    uint32_t order[2] = {1, 0};
    assert_int_equal(st_collate(&tk, order, 2, 16, 0, 0, &b), ST_OK);
    assert_int_equal(b.B, 2);
    assert_int_equal(b.T, 11); /* longest row */
    const int32_t in0[11] = {1, 215, 4, 2, 197, 198, 199, 4, 3, 200, 4};
    const int32_t tg0[11] = {-1, -1, -1, -1, -1, -1, -1, -1, 200, 4, -1};
    const int32_t in1[11] = {2, 204, 205, 4, 3, 221, 211, 4, 0, 0, 0};
    const int32_t tg1[11] = {-1, -1, -1, -1, 221, 211, 4, -1, -1, -1, -1};
    for (int t = 0; t < 11; t++) {
        assert_int_equal(b.inputs[t], in0[t]);
        assert_int_equal(b.targets[t], tg0[t]);
        assert_true(b.loss_mask[t] == (tg0[t] >= 0 ? 1.0f : 0.0f));
        assert_int_equal(b.inputs[11 + t], in1[t]);
        assert_int_equal(b.targets[11 + t], tg1[t]);
        assert_true(b.loss_mask[11 + t] == (tg1[t] >= 0 ? 1.0f : 0.0f));
    }
    assert_int_equal(b.lengths[0], 11);
    assert_int_equal(b.lengths[1], 8);
    assert_int_equal(b.n_targets, 5);

    /* truncation to 6 tokens: row0 keeps [2,204,205,4,3,221] -> only 221 is a target */
    uint32_t only0 = 0;
    assert_int_equal(st_collate(&tk, &only0, 1, 6, 0, 0, &b), ST_OK);
    assert_int_equal(b.T, 6);
    assert_int_equal(b.n_targets, 1);
    assert_int_equal(b.targets[4], 221);
    assert_int_equal(b.targets[5], -1); /* the last kept position has no next token */

    /* pad_to_max gives T = max_seq_len */
    assert_int_equal(st_collate(&tk, &only0, 1, 12, 7, 1, &b), ST_OK);
    assert_int_equal(b.T, 12);
    assert_int_equal(b.inputs[10], 7);
    assert_int_equal(b.n_targets, 3);

    /* bad arguments */
    uint32_t bad = 5;
    assert_int_equal(st_collate(&tk, &bad, 1, 8, 0, 0, &b), ST_ERR_ARG);
    assert_int_equal(st_collate(&tk, order, 2, 17, 0, 0, &b), ST_ERR_ARG);
    uint32_t three[3] = {0, 1, 0};
    assert_int_equal(st_collate(&tk, three, 3, 8, 0, 0, &b), ST_ERR_ARG);
    st_batch_free(&b);
    st_tokenized_free(&tk);

    /* a render error names the row */
    assert_int_equal(st_tokenize_dataset_with(&ds, failing_render, NULL, &tk), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "mem: row 0: cannot render"));
}

/* rows with no assistant token inside the first max_seq_len tokens train nothing: dropped.
 * row0's first trained position is 5, row1's is 9 (see test_collate). */
static void test_drop_untrained(void **state) {
    (void)state;
    st_conversation rows[3] = {{k_r1, 3}, {k_r0, 2}, {k_r1, 3}};
    st_dataset ds = {rows, 3, ST_DATA_MESSAGES, "mem"};
    st_tokenized tk;
    size_t dropped = 99;
    assert_int_equal(st_tokenize_dataset_with(&ds, fake_render, NULL, &tk), ST_OK);
    st_tokenized_drop_untrained(&tk, 10, &dropped, NULL); /* position 9 < 10: all kept */
    assert_int_equal(dropped, 0);
    assert_int_equal(tk.n, 3);
    st_tokenized_drop_untrained(&tk, 6, &dropped, NULL); /* only row0 (k_r0) keeps a target */
    assert_int_equal(dropped, 2);
    assert_int_equal(tk.n, 1);
    assert_int_equal(tk.offsets[0], 0);
    assert_int_equal(tk.offsets[1], 8);
    const int32_t r0[8] = {2, 204, 205, 4, 3, 221, 211, 4};
    for (int i = 0; i < 8; i++) assert_int_equal(tk.ids[i], r0[i]);
    assert_int_equal(tk.mask[4], 0);
    assert_int_equal(tk.mask[5], 1);
    st_batch b;
    assert_int_equal(st_batch_init(&b, 1, 8), ST_OK);
    uint32_t one = 0;
    assert_int_equal(st_collate(&tk, &one, 1, 6, 0, 0, &b), ST_OK);
    assert_int_equal(b.n_targets, 1); /* target at t = 4 -> ids[5] */
    st_batch_free(&b);
    st_tokenized_drop_untrained(&tk, 5, &dropped, NULL); /* position 5 is cut: none left */
    assert_int_equal(dropped, 1);
    assert_int_equal(tk.n, 0);
    st_tokenized_free(&tk);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_collate), cmocka_unit_test(test_drop_untrained)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
