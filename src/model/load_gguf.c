/* load_gguf.c - GGUF checkpoint: config from llama.* / qwen2.* keys, tensors dequantised to
 * fp32 through the GGUF <-> HF name map, Q/K rows of llama files un-permuted (inverse of
 * llama.cpp convert_hf_to_gguf.py LlamaModel.permute: GGUF row h*D + 2i + j holds HF row
 * h*D + j*D/2 + i). GGUF ne[] is the reverse of the PyTorch shape. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/load.h"
#include "safetune/gguf.h"

static int has_key(const st_gguf *g, const char *k) { return st_gguf_find_key(g, k) >= 0; }

static st_status get_int(const st_gguf *g, const char *arch, const char *key, int required,
                         int def, int *out) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (!has_key(g, k)) {
        if (required)
            return st_error(ST_ERR_FORMAT, "%s: missing metadata key %s", st_gguf_path(g), k);
        *out = def;
        return ST_OK;
    }
    int64_t v;
    st_status s = st_gguf_get_i64(g, k, &v);
    if (!s) *out = (int)v;
    return s;
}

static st_status get_f(const st_gguf *g, const char *arch, const char *key, float def,
                       float *out) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    *out = def;
    if (!has_key(g, k)) return ST_OK;
    double v;
    st_status s = st_gguf_get_f64(g, k, &v);
    if (!s) *out = (float)v;
    return s;
}

/* llama3 GGUFs carry rope_freqs.weight (per-dim divisors of inv_freq) instead of the
 * rope_scaling parameters; recognise the standard Llama-3.1/3.2 parameters by recomputing them. */
static st_status rope_freqs_to_config(const st_gguf *g, const st_gguf_tensor *t, st_config *c) {
    const int h = c->head_dim / 2;
    if (t->ne[0] != h)
        return st_error(ST_ERR_FORMAT, "%s: rope_freqs.weight has %lld entries, expected %d",
                        st_gguf_path(g), (long long)t->ne[0], h);
    float *f = st_malloc((size_t)h * sizeof *f);
    if (!f) return ST_ERR_NOMEM;
    st_status s = st_gguf_tensor_to_f32(g, t, f);
    float fmax = 0;
    for (int i = 0; !s && i < h; i++) fmax = f[i] > fmax ? f[i] : fmax;
    const int olds[] = {8192, 4096, 2048};
    for (int k = 0; !s && k < 3; k++) {
        st_config c2 = *c;
        c2.rope_scaling.type = ST_ROPE_SCALING_LLAMA3;
        c2.rope_scaling.factor = fmax;
        c2.rope_scaling.low_freq_factor = 1.0f;
        c2.rope_scaling.high_freq_factor = 4.0f;
        c2.rope_scaling.original_max_position_embeddings = olds[k];
        st_config c0 = *c;
        c0.rope_scaling.type = ST_ROPE_SCALING_NONE;
        double a[512], b[512];
        st_config_rope_inv_freq(&c2, a);
        st_config_rope_inv_freq(&c0, b);
        int ok = 1;
        for (int i = 0; i < h && ok; i++) ok = fabs(b[i] / a[i] - f[i]) <= 1e-3 * f[i];
        if (ok) {
            *c = c2;
            free(f);
            return ST_OK;
        }
    }
    free(f);
    if (s) return s;
    return st_error(ST_ERR_UNSUPPORTED, "%s: rope_freqs.weight does not match llama3 rope "
                    "scaling (low 1, high 4); not supported", st_gguf_path(g));
}

static st_status config_from_gguf(const st_gguf *g, st_config *c) {
    memset(c, 0, sizeof *c);
    const char *path = st_gguf_path(g), *a;
    size_t alen;
    st_status s = st_gguf_get_str(g, "general.architecture", &a, &alen);
    if (s) return s;
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)(alen < 31 ? alen : 31), a);
    if (strcmp(arch, "llama") == 0) c->arch = ST_ARCH_LLAMA;
    else if (strcmp(arch, "qwen2") == 0) c->arch = ST_ARCH_QWEN2;
    else
        return st_error(ST_ERR_UNSUPPORTED, "%s: key general.architecture: unknown architecture "
                        "\"%s\" (supported: llama, qwen2)", path, arch);
    if ((s = get_int(g, arch, "embedding_length", 1, 0, &c->hidden_size)) ||
        (s = get_int(g, arch, "feed_forward_length", 1, 0, &c->intermediate_size)) ||
        (s = get_int(g, arch, "block_count", 1, 0, &c->num_hidden_layers)) ||
        (s = get_int(g, arch, "attention.head_count", 1, 0, &c->num_attention_heads)) ||
        (s = get_int(g, arch, "attention.head_count_kv", 0, c->num_attention_heads,
                     &c->num_key_value_heads)) ||
        (s = get_int(g, arch, "context_length", 0, 2048, &c->max_position_embeddings)) ||
        (s = get_f(g, arch, "rope.freq_base", 10000.0f, &c->rope_theta)) ||
        (s = get_f(g, arch, "attention.layer_norm_rms_epsilon", 1e-6f, &c->rms_norm_eps)))
        return s;
    int hd_default = c->num_attention_heads ? c->hidden_size / c->num_attention_heads : 0;
    if ((s = get_int(g, arch, "attention.key_length", 0, hd_default, &c->head_dim))) return s;
    /* vocab: token_embd rows (may exceed the token list when padded), else the token list */
    const st_gguf_tensor *te = st_gguf_find_tensor(g, "token_embd.weight");
    st_gguf_type et;
    uint64_t n = 0;
    const void *d;
    if (te && te->n_dims == 2) {
        c->vocab_size = (int)te->ne[1];
    } else if (has_key(g, "tokenizer.ggml.tokens") &&
               st_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &d) == ST_OK && n > 0) {
        c->vocab_size = (int)n;
    } else {
        return st_error(ST_ERR_FORMAT, "%s: missing tensor token_embd.weight", path);
    }
    c->tie_word_embeddings = st_gguf_find_tensor(g, "output.weight") == NULL;
    c->attention_bias = st_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    c->bos_token_id = c->eos_token_id = -1;
    int64_t v;
    if (has_key(g, "tokenizer.ggml.bos_token_id") &&
        st_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &v) == ST_OK)
        c->bos_token_id = (int)v;
    if (has_key(g, "tokenizer.ggml.eos_token_id") &&
        st_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &v) == ST_OK)
        c->eos_token_id = (int)v;
    char k[128];
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    if (has_key(g, k)) {
        const char *t;
        size_t tl;
        if ((s = st_gguf_get_str(g, k, &t, &tl))) return s;
        if (tl == 6 && memcmp(t, "linear", 6) == 0) {
            c->rope_scaling.type = ST_ROPE_SCALING_LINEAR;
            if ((s = get_f(g, arch, "rope.scaling.factor", 1.0f, &c->rope_scaling.factor)))
                return s;
        } else if (!(tl == 4 && memcmp(t, "none", 4) == 0)) {
            return st_error(ST_ERR_UNSUPPORTED, "%s: key %s: rope scaling \"%.*s\" not "
                            "supported (none, linear, llama3)", path, k, (int)tl, t);
        }
    }
    if ((s = st_config_validate(c, path))) return s;
    const st_gguf_tensor *rf = st_gguf_find_tensor(g, "rope_freqs.weight");
    if (rf && (s = rope_freqs_to_config(g, rf, c))) return s;
    return ST_OK;
}


/* rows [n_head * D] x cols: GGUF interleaved-pair order -> HF rotate_half order */
static st_status unpermute(float *w, int n_head, int D, int64_t cols) {
    const size_t rowb = (size_t)cols * sizeof(float);
    float *tmp = st_malloc((size_t)D * rowb);
    if (!tmp) return ST_ERR_NOMEM;
    for (int h = 0; h < n_head; h++) {
        float *blk = w + (size_t)h * D * cols;
        memcpy(tmp, blk, (size_t)D * rowb);
        for (int i = 0; i < D / 2; i++)
            for (int j = 0; j < 2; j++)
                memcpy(blk + (size_t)(j * D / 2 + i) * cols, tmp + (size_t)(2 * i + j) * cols, rowb);
    }
    free(tmp);
    return ST_OK;
}

st_status st_model_load_gguf(const char *path, int with_tok, const st__tensor_sink *sink,
                             st_model **out) {
    *out = NULL;
    st_gguf *g = NULL;
    st_status s = st_gguf_open(path, &g);
    if (s) return s;
    st_config cfg;
    st_model *m = NULL;
    float *scratch = NULL;
    size_t cap = 0;
    if ((s = config_from_gguf(g, &cfg))) goto done;
    if ((s = sink ? st__model_new_shell(&cfg, &m) : st_model_new(&cfg, &m))) goto done;
    if (sink && (s = sink->begin(sink->user, &cfg))) goto done;
    m->source_path = st_strdup(path);
    for (size_t i = 0; i < m->layout.n_tensors && !s; i++) {
        const st_param_info *p = &m->layout.params[i];
        char gn[96];
        if (!st_gguf_tensor_name(p->name, gn, sizeof gn)) {
            s = st_error(ST_ERR_INTERNAL, "%s: no GGUF name for %s", path, p->name);
            break;
        }
        const st_gguf_tensor *t = st_gguf_find_tensor(g, gn);
        char want[48];
        st_shape_str(want, sizeof want, p->n_dims, p->shape);
        if (!t) {
            s = st_error(ST_ERR_FORMAT, "%s: missing tensor %s (%s, shape %s expected from the "
                         "metadata)", path, gn, p->name, want);
            break;
        }
        /* PyTorch shape = reversed ne[] (trailing 1s allowed) */
        int64_t shp[4] = {1, 1, 1, 1};
        for (uint32_t d = 0; d < t->n_dims; d++) shp[d] = t->ne[t->n_dims - 1 - d];
        int ok = p->n_dims == 1 ? (t->n_dims == 1 && shp[0] == p->shape[0])
                                : (t->n_dims == 2 && shp[0] == p->shape[0] && shp[1] == p->shape[1]);
        if (!ok) {
            char got[64];
            if (t->n_dims <= 2)
                st_shape_str(got, sizeof got, (int)t->n_dims, shp);
            else
                snprintf(got, sizeof got, "%u dims", t->n_dims);
            s = st_error(ST_ERR_FORMAT, "%s: tensor %s (%s): shape %s does not match the "
                         "metadata (expected %s)", path, gn, p->name, got, want);
            break;
        }
        float *dst = sink ? st__sink_scratch(&scratch, &cap, p) : m->params + p->offset;
        if (!dst) {
            s = ST_ERR_NOMEM;
            break;
        }
        if ((s = st_gguf_tensor_to_f32(g, t, dst))) break;
        if (cfg.arch == ST_ARCH_LLAMA) {
            int isq = strstr(gn, ".attn_q.") != NULL, isk = strstr(gn, ".attn_k.") != NULL;
            if (isq || isk)
                s = unpermute(dst, isq ? cfg.num_attention_heads : cfg.num_key_value_heads,
                              cfg.head_dim, p->n_dims == 2 ? p->shape[1] : 1);
        }
        if (!s && sink) {
            s = sink->put(sink->user, i, p, dst);
            st__drop_mapped(t->data, t->nbytes);
        }
    }
    if (!s && with_tok) {
        s = st_tokenizer_from_gguf(g, &m->tokenizer);
        if (!s) {
            const char *ct = NULL;
            size_t cl = 0;
            if (has_key(g, "tokenizer.chat_template") &&
                st_gguf_get_str(g, "tokenizer.chat_template", &ct, &cl) != ST_OK)
                ct = NULL;
            st_model_set_chat_template(m, ct, cl);
        }
    }
done:
    st_free_aligned(scratch);
    st_gguf_close(g);
    if (s) st_model_free(m);
    else *out = m;
    return s;
}
