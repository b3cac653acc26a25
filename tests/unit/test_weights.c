/* test_weights.c - flat layout, config.json parsing, and loader errors on small broken
 * checkpoints built here (HF folders and GGUF files); GGUF Q/K un-permute on a hand-made file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "safetune/gguf.h"
#include "safetune/model.h"
#include "safetune/quant.h"
#include "safetune/safetensors.h"
#include "testutil.h"

static char g_tmp[1024];

static const char *tmp_path(const char *name) {
    static char buf[4][1200];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, name);
    return buf[k];
}

static void write_text(const char *path, const char *txt) {
    assert_int_equal(st_write_file_atomic(path, txt, strlen(txt)), ST_OK);
}

/* tiny config: C=8, I=12, L=1, H=2, KV=1, D=4, V=10 */
static const char *TINY_JSON =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 8,"
    " \"intermediate_size\": 12, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
    " \"num_key_value_heads\": 1, \"vocab_size\": 10, \"rms_norm_eps\": 1e-5,"
    " \"rope_theta\": 10000.0, \"tie_word_embeddings\": true}";

static void tiny_cfg(st_config *c) {
    assert_int_equal(st_config_from_hf_json_text(TINY_JSON, "tiny", c), ST_OK);
}

static void test_layout(void **state) {
    (void)state;
    st_config c;
    tiny_cfg(&c);
    st_layout lay;
    assert_int_equal(st_layout_init(&lay, &c), ST_OK);
    /* embed 80 + layer (8 + 64 + 32 + 32 + 64 + 8 + 96 + 96 + 96) + norm 8, tied: no lm_head */
    assert_int_equal(lay.n_floats, 80 + 496 + 8);
    assert_int_equal(lay.n_tensors, 1 + 9 + 1);
    assert_null(st_layout_find(&lay, "lm_head.weight"));
    const st_param_info *q = st_layout_find(&lay, "model.layers.0.self_attn.q_proj.weight");
    assert_non_null(q);
    assert_int_equal(q->shape[0], 8);
    assert_int_equal(q->shape[1], 8);
    assert_false(q->no_decay);
    assert_true(st_layout_find(&lay, "model.norm.weight")->no_decay);
    float *buf = calloc(lay.n_floats, sizeof(float));
    st_weights w;
    assert_int_equal(st_weights_bind(&w, &c, &lay, buf), ST_OK);
    assert_ptr_equal(w.layers[0].q_proj, buf + q->offset);
    assert_ptr_equal(w.lm_head, w.embed_tokens);
    assert_null(w.layers[0].q_bias);
    st_weights_unbind(&w);
    st_layout_free(&lay);
    c.tie_word_embeddings = 0;
    c.attention_bias = 1;
    assert_int_equal(st_layout_init(&lay, &c), ST_OK);
    assert_int_equal(lay.n_floats, 80 + 496 + 8 + 8 + 4 + 4 + 80);
    assert_true(st_layout_find(&lay, "model.layers.0.self_attn.k_proj.bias")->no_decay);
    st_layout_free(&lay);
    free(buf);
}

static void test_config_json(void **state) {
    (void)state;
    st_config c, d;
    tiny_cfg(&c);
    assert_int_equal(c.head_dim, 4);
    assert_int_equal(c.num_key_value_heads, 1);
    assert_int_equal(c.bos_token_id, -1);
    c.rope_scaling.type = ST_ROPE_SCALING_LLAMA3;
    c.rope_scaling.factor = 8;
    c.rope_scaling.low_freq_factor = 1;
    c.rope_scaling.high_freq_factor = 4;
    c.rope_scaling.original_max_position_embeddings = 8192;
    char *js = NULL;
    assert_int_equal(st_config_to_hf_json(&c, &js), ST_OK);
    assert_int_equal(st_config_from_hf_json_text(js, "roundtrip", &d), ST_OK);
    free(js);
    assert_int_equal(memcmp(&c, &d, sizeof c), 0);
    /* qwen2 always has q/k/v bias; eos list takes the first */
    assert_int_equal(st_config_from_hf_json_text(
                         "{\"model_type\": \"qwen2\", \"hidden_size\": 8, \"intermediate_size\": 4,"
                         " \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
                         " \"vocab_size\": 5, \"eos_token_id\": [3, 4]}", "q", &d), ST_OK);
    assert_int_equal(d.arch, ST_ARCH_QWEN2);
    assert_int_equal(d.attention_bias, 1);
    assert_int_equal(d.eos_token_id, 3);
    /* errors */
    assert_int_equal(st_config_from_hf_json_text("{\"model_type\": \"gpt2\"}", "x/config.json", &d),
                     ST_ERR_UNSUPPORTED);
    assert_non_null(strstr(st_last_error(), "x/config.json"));
    assert_non_null(strstr(st_last_error(), "gpt2"));
    assert_int_equal(st_config_from_hf_json_text("{\"model_type\": \"llama\", \"hidden_size\": 8}",
                                                 "y.json", &d), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "intermediate_size"));
    assert_int_equal(st_config_from_hf_json_text(
                         "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 4,"
                         " \"num_hidden_layers\": 1, \"num_attention_heads\": 3,"
                         " \"num_key_value_heads\": 2, \"head_dim\": 4, \"vocab_size\": 5}",
                         "z.json", &d), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "num_key_value_heads"));
    assert_int_equal(st_config_from_hf_json_text("[1", "bad.json", &d), ST_ERR_FORMAT);
    /* malformed / truncated: the position of the problem */
    assert_int_equal(st_config_from_hf_json_text("{\n  \"a\": 1,\n  \"b\": x}", "m.json", &d), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "m.json: line 3, column 8 (byte 19): invalid JSON"));
    assert_int_equal(st_config_from_hf_json_text("{\"a\": 1,", "t.json", &d), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "t.json: line 1, column 9 (byte 8): invalid JSON"));
    assert_int_equal(st_config_from_hf_json_text("[1]", "arr.json", &d), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "arr.json: not a JSON object"));
}

/* Write an HF folder for the tiny config; `skip` omits a tensor, `bad` gets a wrong shape. */
static const char *make_hf(const char *name, const char *skip, const char *bad) {
    const char *dir = tmp_path(name);
    mkdir(dir, 0755);
    char p[1400];
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_text(p, TINY_JSON);
    st_config c;
    tiny_cfg(&c);
    st_layout lay;
    assert_int_equal(st_layout_init(&lay, &c), ST_OK);
    float *data = calloc(lay.n_floats + 64, sizeof(float));
    for (size_t i = 0; i < lay.n_floats; i++) data[i] = (float)(i % 17) * 0.25f - 2.0f;
    st_safetensors_writer *w = NULL;
    assert_int_equal(st_safetensors_writer_new(&w), ST_OK);
    for (size_t i = 0; i < lay.n_tensors; i++) {
        const st_param_info *pi = &lay.params[i];
        if (skip && strcmp(pi->name, skip) == 0) continue;
        int64_t shape[2] = {pi->shape[0], pi->shape[1]};
        if (bad && strcmp(pi->name, bad) == 0) shape[0] += 1;
        assert_int_equal(st_safetensors_writer_add(w, pi->name, ST_DTYPE_F32, pi->n_dims, shape,
                                                   data + pi->offset), ST_OK);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    assert_int_equal(st_safetensors_writer_finish(w, p), ST_OK);
    st_safetensors_writer_free(w);
    st_layout_free(&lay);
    free(data);
    return dir;
}

static void test_hf_load_and_errors(void **state) {
    (void)state;
    st_model *m = NULL;
    const char *ok = make_hf("hf_ok", NULL, NULL);
    assert_int_equal(st_model_load_weights(ok, &m), ST_OK);
    assert_int_equal(m->config.hidden_size, 8);
    assert_true(m->params[3] == (float)(3 % 17) * 0.25f - 2.0f);
    const st_param_info *pi = st_layout_find(&m->layout, "model.norm.weight");
    assert_true(m->params[pi->offset + 1] == (float)((pi->offset + 1) % 17) * 0.25f - 2.0f);
    st_model_free(m);

    const char *miss = make_hf("hf_missing", "model.layers.0.mlp.up_proj.weight", NULL);
    assert_int_not_equal(st_model_load_weights(miss, &m), ST_OK);
    assert_null(m);
    assert_non_null(strstr(st_last_error(), "missing tensor model.layers.0.mlp.up_proj.weight"));
    assert_non_null(strstr(st_last_error(), "hf_missing"));
    assert_null(strchr(st_last_error(), '\n'));

    const char *bad = make_hf("hf_shape", NULL, "model.layers.0.self_attn.k_proj.weight");
    assert_int_equal(st_model_load_weights(bad, &m), ST_ERR_FORMAT);
    const char *e = st_last_error();
    assert_non_null(strstr(e, "hf_shape"));
    assert_non_null(strstr(e, "model.layers.0.self_attn.k_proj.weight"));
    assert_non_null(strstr(e, "[5, 8]")); /* found */
    assert_non_null(strstr(e, "[4, 8]")); /* expected */

    /* a file inside an HF folder: the folder is named as the path to pass */
    char f[1400];
    snprintf(f, sizeof f, "%s/model.safetensors", bad);
    assert_int_equal(st_model_load_weights(f, &m), ST_ERR_ARG);
    char want[1500];
    snprintf(want, sizeof want, "pass its folder (%s) instead", bad);
    assert_non_null(strstr(st_last_error(), want));
    /* a .json that is in no checkpoint folder: not a model, not "pass its folder" */
    const char *lone_dir = tmp_path("lone_json");
    mkdir(lone_dir, 0755);
    snprintf(f, sizeof f, "%s/rows.json", lone_dir);
    write_text(f, "[]");
    assert_int_equal(st_model_load_weights(f, &m), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "not a model"));
    assert_null(strstr(st_last_error(), "pass its folder"));
    unlink(f);
    rmdir(lone_dir);

    const char *empty = tmp_path("hf_noconfig");
    mkdir(empty, 0755);
    assert_int_equal(st_model_load_weights(empty, &m), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "hf_noconfig"));
    assert_non_null(strstr(st_last_error(), "config.json"));

    char p[1400];
    snprintf(p, sizeof p, "%s/config.json", make_hf("hf_arch", NULL, NULL));
    write_text(p, "{\"model_type\": \"mamba\", \"architectures\": [\"MambaForCausalLM\"]}");
    assert_int_equal(st_model_load_weights(tmp_path("hf_arch"), &m), ST_ERR_UNSUPPORTED);
    assert_non_null(strstr(st_last_error(), "mamba"));
    assert_non_null(strstr(st_last_error(), "config.json"));

    assert_int_not_equal(st_model_load_weights(tmp_path("does_not_exist"), &m), ST_OK);
    assert_non_null(strstr(st_last_error(), "does_not_exist"));
}

/* config.json says tie_word_embeddings = true, the checkpoint also stores lm_head.weight: a head
 * that differs from the embedding is used (untied) with a warning naming it; an identical one
 * keeps the model tied, silently. (Before: the stored head was ignored without a word.) */
static void test_hf_stored_head(void **state) {
    (void)state;
    st_config c;
    tiny_cfg(&c);
    st_layout lay;
    assert_int_equal(st_layout_init(&lay, &c), ST_OK);
    float *data = calloc(lay.n_floats, sizeof(float));
    for (size_t i = 0; i < lay.n_floats; i++) data[i] = (float)(i % 13) * 0.5f - 3.0f;
    const st_param_info *emb = st_layout_find(&lay, "model.embed_tokens.weight");
    float *head = malloc(emb->numel * sizeof(float));
    for (int differ = 0; differ < 2; differ++) {
        const char *dir = tmp_path(differ ? "hf_head_differs" : "hf_head_same");
        mkdir(dir, 0755);
        char p[1400];
        snprintf(p, sizeof p, "%s/config.json", dir);
        write_text(p, TINY_JSON);
        memcpy(head, data + emb->offset, emb->numel * sizeof(float));
        if (differ) head[5] += 0.75f;
        st_safetensors_writer *w = NULL;
        assert_int_equal(st_safetensors_writer_new(&w), ST_OK);
        for (size_t i = 0; i < lay.n_tensors; i++) {
            const st_param_info *pi = &lay.params[i];
            int64_t shape[2] = {pi->shape[0], pi->shape[1]};
            assert_int_equal(st_safetensors_writer_add(w, pi->name, ST_DTYPE_F32, pi->n_dims, shape, data + pi->offset),
                             ST_OK);
        }
        int64_t hs[2] = {emb->shape[0], emb->shape[1]};
        assert_int_equal(st_safetensors_writer_add(w, "lm_head.weight", ST_DTYPE_F32, 2, hs, head), ST_OK);
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        assert_int_equal(st_safetensors_writer_finish(w, p), ST_OK);
        st_safetensors_writer_free(w);

        /* stderr into a file, to read the warning */
        char logp[1400];
        snprintf(logp, sizeof logp, "%s/stderr.txt", dir);
        fflush(stderr);
        int saved = dup(2), fd = open(logp, O_CREAT | O_TRUNC | O_WRONLY, 0644);
        dup2(fd, 2);
        close(fd);
        st_model *m = NULL;
        st_status s = st_model_load_weights(dir, &m);
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        assert_int_equal(s, ST_OK);
        char *log = NULL;
        size_t ll = 0;
        assert_int_equal(st_read_file(logp, &log, &ll), ST_OK);
        if (differ) {
            assert_false(m->config.tie_word_embeddings);
            assert_true(m->w.lm_head != m->w.embed_tokens);
            for (size_t i = 0; i < emb->numel; i++) assert_true(m->w.lm_head[i] == head[i]);
            assert_true(m->w.embed_tokens[5] == data[emb->offset + 5]);
            assert_non_null(strstr(log, "hf_head_differs"));
            assert_non_null(strstr(log, "tie_word_embeddings"));
            assert_non_null(strstr(log, "max |difference| 0.75"));
            assert_non_null(strstr(log, "using the stored lm_head.weight"));
        } else {
            assert_true(m->config.tie_word_embeddings);
            assert_true(m->w.lm_head == m->w.embed_tokens);
            assert_null(strstr(log, "lm_head"));
        }
        free(log);
        st_model_free(m);
    }
    free(head);
    free(data);
    st_layout_free(&lay);
}

/* GGUF for the tiny config with Q/K rows permuted the llama.cpp way. HF q row r of head h,
 * r = j*D/2 + i, is stored at GGUF row h*D + 2i + j. */
static const char *make_gguf(const char *name, const char *arch, const char *skip,
                             const char *bad, float **hf_out) {
    st_config c;
    tiny_cfg(&c);
    st_layout lay;
    assert_int_equal(st_layout_init(&lay, &c), ST_OK);
    float *hf = calloc(lay.n_floats, sizeof(float));
    for (size_t i = 0; i < lay.n_floats; i++) hf[i] = (float)i;
    st_gguf_writer *w = NULL;
    assert_int_equal(st_gguf_writer_new(&w), ST_OK);
    st_gguf_writer_set_str(w, "general.architecture", arch);
    char k[64];
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    st_gguf_writer_set_u32(w, KEY("embedding_length"), 8);
    st_gguf_writer_set_u32(w, KEY("feed_forward_length"), 12);
    st_gguf_writer_set_u32(w, KEY("block_count"), 1);
    st_gguf_writer_set_u32(w, KEY("attention.head_count"), 2);
    st_gguf_writer_set_u32(w, KEY("attention.head_count_kv"), 1);
    st_gguf_writer_set_f32(w, KEY("rope.freq_base"), 10000.0f);
    st_gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
#undef KEY
    static const struct { const char *hf, *gg; } names[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
        {"model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"},
        {"model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight"},
        {"model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight"},
        {"model.layers.0.self_attn.o_proj.weight", "blk.0.attn_output.weight"},
        {"model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight"},
        {"model.layers.0.mlp.gate_proj.weight", "blk.0.ffn_gate.weight"},
        {"model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight"},
        {"model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"},
        {"model.norm.weight", "output_norm.weight"},
    };
    float tmp[64];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (skip && strcmp(names[i].gg, skip) == 0) continue;
        const st_param_info *p = st_layout_find(&lay, names[i].hf);
        const float *src = hf + p->offset;
        int isq = strstr(names[i].gg, "attn_q") != NULL, isk = strstr(names[i].gg, "attn_k") != NULL;
        if ((isq || isk) && strcmp(arch, "llama") == 0) {
            int nh = isq ? 2 : 1, D = 4, C = 8;
            for (int h = 0; h < nh; h++)
                for (int ii = 0; ii < D / 2; ii++)
                    for (int j = 0; j < 2; j++)
                        memcpy(tmp + (h * D + 2 * ii + j) * C, src + (h * D + j * D / 2 + ii) * C,
                               C * sizeof(float));
            src = tmp;
        }
        int64_t ne[2] = {p->n_dims == 2 ? p->shape[1] : p->shape[0], p->shape[0]};
        if (bad && strcmp(names[i].gg, bad) == 0) ne[0] += 0, ne[1] -= 1;
        assert_int_equal(st_gguf_writer_add_tensor(w, names[i].gg, (uint32_t)p->n_dims, ne,
                                                   ST_GGML_TYPE_F32, src), ST_OK);
    }
    const char *path = tmp_path(name);
    assert_int_equal(st_gguf_writer_finish(w, path), ST_OK);
    st_gguf_writer_free(w);
    st_layout_free(&lay);
    if (hf_out) *hf_out = hf;
    else free(hf);
    return path;
}

static void test_gguf_load_and_errors(void **state) {
    (void)state;
    float *hf = NULL;
    st_model *m = NULL;
    const char *ok = make_gguf("ok.gguf", "llama", NULL, NULL, &hf);
    assert_int_equal(st_model_load_weights(ok, &m), ST_OK);
    assert_int_equal(m->config.num_key_value_heads, 1);
    assert_int_equal(m->config.vocab_size, 10);
    assert_true(m->config.tie_word_embeddings);
    /* every tensor, including un-permuted Q/K, equals the HF-order original */
    for (size_t i = 0; i < m->layout.n_floats; i++)
        if (m->params[i] != hf[i]) fail_msg("float %zu: %g != %g", i, m->params[i], hf[i]);
    st_model_free(m);
    free(hf);

    const char *miss = make_gguf("miss.gguf", "llama", "blk.0.ffn_up.weight", NULL, NULL);
    assert_int_equal(st_model_load_weights(miss, &m), ST_ERR_FORMAT);
    assert_non_null(strstr(st_last_error(), "miss.gguf"));
    assert_non_null(strstr(st_last_error(), "missing tensor blk.0.ffn_up.weight"));

    const char *bad = make_gguf("bad.gguf", "llama", NULL, "blk.0.attn_k.weight", NULL);
    assert_int_equal(st_model_load_weights(bad, &m), ST_ERR_FORMAT);
    const char *e = st_last_error();
    assert_non_null(strstr(e, "bad.gguf"));
    assert_non_null(strstr(e, "blk.0.attn_k.weight"));
    assert_non_null(strstr(e, "[3, 8]"));
    assert_non_null(strstr(e, "[4, 8]"));

    const char *arch = make_gguf("arch.gguf", "falcon", NULL, NULL, NULL);
    assert_int_equal(st_model_load_weights(arch, &m), ST_ERR_UNSUPPORTED);
    assert_non_null(strstr(st_last_error(), "falcon"));
    assert_non_null(strstr(st_last_error(), "arch.gguf"));
}

/* st_model_load on the real SmolLM2 GGUF: weights + tokenizer + detected ChatML template */
static void test_full_load_smollm(void **state) {
    (void)state;
    char p[1200];
    snprintf(p, sizeof p, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", st_test_model_dir());
    struct stat sb;
    if (stat(p, &sb) != 0) ST_SKIP_MISSING(p);
    st_model *m = NULL;
    if (st_model_load(p, &m)) fail_msg("%s", st_last_error());
    assert_int_equal(m->config.hidden_size, 576);
    assert_int_equal(m->config.num_hidden_layers, 30);
    assert_int_equal(m->config.num_key_value_heads, 3);
    assert_int_equal(m->config.vocab_size, 49152);
    assert_true(m->config.tie_word_embeddings);
    assert_true(m->config.rope_theta == 100000.0f);
    assert_non_null(m->tokenizer);
    assert_int_equal(st_tokenizer_vocab_size(m->tokenizer), 49152);
    assert_true(m->has_chat_template);
    assert_int_equal(m->chat.kind, ST_TEMPLATE_CHATML);
    assert_non_null(m->chat_template_src);
    st_model_free(m);
}

int main(void) {
    const char *t = getenv("SAFETUNE_TEST_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_weights", t ? t : "/tmp");
    mkdir(t ? t : "/tmp", 0755);
    mkdir(g_tmp, 0755);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_config_json),
        cmocka_unit_test(test_hf_load_and_errors),
        cmocka_unit_test(test_hf_stored_head),
        cmocka_unit_test(test_gguf_load_and_errors),
        cmocka_unit_test(test_full_load_smollm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
