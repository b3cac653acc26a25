/* align_rows.c - D_align tokenized for the defenses inside the training step (study.h
 * st_study_align_rows; DEFENSES.md §6 Lisa, §7 SafeGrad). */
#include "safetune/study.h"

st_status st_study_align_rows(const char *align_dir, const char *data_dir, size_t poison_reserve, uint64_t seed,
                              const st_chat_template *tpl, const st_tokenizer *tok, int max_seq_len,
                              st_tokenized *out, size_t *n_dropped) {
    st_dataset pool = {0};
    size_t dropped = 0;
    st_status s = st_study_safety_sets(align_dir, data_dir, poison_reserve, seed, &pool, NULL);
    if (!s) s = st_tokenize_training_rows(&pool, 0, tpl, tok, max_seq_len, out, &dropped, NULL);
    if (n_dropped) *n_dropped = dropped;
    st_dataset_free(&pool);
    return s;
}
