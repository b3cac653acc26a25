/* study_testutil.h - helpers for the study unit tests: a fresh temp folder with a dummy model and
 * dataset, config files written from strings, and the tiny real study inputs (a random 1-layer
 * model with SmolLM2's tokenizer and chat template, 24 Alpaca rows) of the real-hooks tests. */
#ifndef SAFETUNE_STUDY_TESTUTIL_H
#define SAFETUNE_STUDY_TESTUTIL_H

/* test paths are short; silence GCC's worst-case truncation analysis of snprintf into fixed buffers */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetune/export.h"
#include "safetune/model.h"

/* Temp folder unique to this process and tag: $SAFETUNE_TEST_TMP/study_<pid>_<tag> (emptied). */
static inline const char *st_test_dir(char *buf, size_t cap, const char *tag) {
    const char *d = getenv("SAFETUNE_TEST_TMP");
    if (!d || !*d) d = "/tmp";
    snprintf(buf, cap, "%s/study_%ld_%s", d, (long)getpid(), tag);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) return NULL;
    return buf;
}

static inline void st_test_write(const char *dir, const char *name, const char *text) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static inline long st_test_file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Files for a config: DIR/model.gguf (dummy), DIR/train.json (dummy alpaca), and DIR/study.cfg.json
 * with the given body inserted after the common keys. Returns the config path in out. */
static inline void st_test_config(const char *dir, const char *extra, char *out, size_t cap) {
    st_test_write(dir, "model.gguf", "GGUF");
    st_test_write(dir, "train.json", "[{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\"}]");
    char body[8192];
    /* extra may give its own "report" (a key given twice is refused): then it replaces this one */
    const int own_report = extra && strstr(extra, "\"report\":");
    snprintf(body, sizeof body,
             "{\"model\": \"%s/model.gguf\", \"data_dir\": \"%s\",\n"
             " \"datasets\": [{\"path\": \"train.json\", \"format\": \"alpaca\"}]%s%s%s}\n",
             dir, dir, own_report ? "" : ",\n \"report\": {\"plots\": false}", extra && *extra ? ",\n " : "",
             extra ? extra : "");
    st_test_write(dir, "study.cfg.json", body);
    snprintf(out, cap, "%s/study.cfg.json", dir);
}

static inline int st_test_files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    while (eq) {
        int x = fgetc(fa), y = fgetc(fb);
        if (x != y) eq = 0;
        if (x == EOF || y == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

/* The tiny study inputs: DIR/tiny (HF export of a random llama: 1 layer, hidden 16, 2 heads, 1 KV
 * head, weights N(0, 0.2²) from seed, with the vocabulary, tokenizer and chat template of the GGUF
 * model at gguf) and DIR/alpaca.json (24 rows "Name the number i." -> "It is i, a number.").
 * model_out = DIR/tiny. Returns 0, or -1 when a step failed. */
static inline int st_test_tiny_study_inputs(const char *gguf, const char *dir, uint64_t seed, char *model_out,
                                            size_t cap) {
    st_model *big = NULL, *tiny = NULL;
    if (st_model_load(gguf, &big) != ST_OK) return -1;
    char cj[512];
    snprintf(cj, sizeof cj,
             "{\"model_type\": \"llama\", \"hidden_size\": 16, \"intermediate_size\": 32, \"num_hidden_layers\": 1, "
             "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": %d, \"max_position_embeddings\": 512, "
             "\"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": true}",
             big->config.vocab_size);
    st_config cfg;
    if (st_config_from_hf_json_text(cj, "tiny", &cfg) != ST_OK || st_model_new(&cfg, &tiny) != ST_OK) {
        st_model_free(big);
        return -1;
    }
    st_rng r;
    st_rng_seed(&r, seed);
    for (size_t i = 0; i < tiny->layout.n_floats; i++) tiny->params[i] = (float)(0.2 * st_rng_normal(&r));
    tiny->source_path = st_strdup(gguf);
    tiny->chat_template_src = big->chat_template_src ? st_strdup(big->chat_template_src) : NULL;
    snprintf(model_out, cap, "%s/tiny", dir);
    st_status s = st_export_hf(tiny, tiny->params, model_out, ST_EXPORT_F32);
    st_model_free(tiny);
    st_model_free(big);
    if (s) return -1;
    char rows[8192] = "[";
    for (int i = 0; i < 24; i++) {
        char row[256];
        snprintf(row, sizeof row, "%s{\"instruction\": \"Name the number %d.\", \"input\": \"\", \"output\": \"It is %d, a number.\"}",
                 i ? "," : "", i, i);
        strcat(rows, row);
    }
    strcat(rows, "]");
    st_test_write(dir, "alpaca.json", rows);
    return 0;
}

#endif
