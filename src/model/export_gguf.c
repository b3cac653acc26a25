/* export_gguf.c - GGUF v3 export (export.h). Hyper-parameter keys as llama.cpp writes them
 * (convert_hf_to_gguf.py / gguf-py constants: <arch>.embedding_length, ...); tensor names and
 * the Q/K permute (HF rotate_half rows -> interleaved pairs: GGUF row h*D + 2i + j holds HF row
 * h*D + j*D/2 + i) inverse to load_gguf.c. llama3 rope scaling is written as rope_freqs.weight
 * (per-dimension divisors of inv_freq), as llama.cpp does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/export_internal.h"
#include "safetune/export.h"
#include "safetune/gguf.h"
#include "safetune/quant.h"
#include "model/load.h"


/* rows [n_head * D] x cols, HF order -> GGUF interleaved order (into dst) */
static void permute(float *dst, const float *src, int n_head, int D, int64_t cols) {
    const size_t rowb = (size_t)cols * sizeof(float);
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < D / 2; i++)
            for (int j = 0; j < 2; j++)
                memcpy(dst + ((size_t)h * D + 2 * i + j) * cols,
                       src + ((size_t)h * D + (size_t)j * D / 2 + i) * cols, rowb);
}

static st_status arch_keys(st_gguf_writer *w, const st_config *c, const char *arch) {
    char k[128];
    st_status s = ST_OK;
#define U32(key, v) do { snprintf(k, sizeof k, "%s." key, arch); if (!s) s = st_gguf_writer_set_u32(w, k, (uint32_t)(v)); } while (0)
#define F32(key, v) do { snprintf(k, sizeof k, "%s." key, arch); if (!s) s = st_gguf_writer_set_f32(w, k, (float)(v)); } while (0)
    U32("context_length", c->max_position_embeddings);
    U32("embedding_length", c->hidden_size);
    U32("block_count", c->num_hidden_layers);
    U32("feed_forward_length", c->intermediate_size);
    U32("attention.head_count", c->num_attention_heads);
    U32("attention.head_count_kv", c->num_key_value_heads);
    F32("rope.freq_base", c->rope_theta);
    F32("attention.layer_norm_rms_epsilon", c->rms_norm_eps);
    U32("rope.dimension_count", c->head_dim);
    if (c->head_dim * c->num_attention_heads != c->hidden_size) {
        U32("attention.key_length", c->head_dim);
        U32("attention.value_length", c->head_dim);
    }
    U32("vocab_size", c->vocab_size);
    if (c->rope_scaling.type == ST_ROPE_SCALING_LINEAR) {
        snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
        if (!s) s = st_gguf_writer_set_str(w, k, "linear");
        F32("rope.scaling.factor", c->rope_scaling.factor);
    }
#undef U32
#undef F32
    return s;
}

st_status st_export_gguf(const st_model *m, const float *params, const char *path,
                         st_export_dtype dtype) {
    const st_config *c = &m->config;
    const char *arch = c->arch == ST_ARCH_QWEN2 ? "qwen2" : "llama";
    uint32_t type = dtype == ST_EXPORT_BF16 ? ST_GGML_TYPE_BF16
                  : dtype == ST_EXPORT_F16 ? ST_GGML_TYPE_F16 : ST_GGML_TYPE_F32;
    st_gguf_writer *w = NULL;
    st_gguf *src = NULL;
    float *tmp = NULL;
    st_status s = st_gguf_writer_new(&w);
    if (s) return s;
    if ((s = st_gguf_writer_set_str(w, "general.architecture", arch))) goto done;
    const char *name = m->source_path ? strrchr(m->source_path, '/') : NULL;
    name = name ? name + 1 : (m->source_path ? m->source_path : "safetune");
    if ((s = st_gguf_writer_set_str(w, "general.name", name))) goto done;
    if ((s = st_gguf_writer_set_u32(w, "general.file_type",
                                    dtype == ST_EXPORT_BF16 ? 32 : dtype == ST_EXPORT_F16 ? 1 : 0)))
        goto done;
    if ((s = arch_keys(w, c, arch))) goto done;
    if (st__is_gguf_source(m)) {
        if ((s = st_gguf_open(m->source_path, &src))) goto done;
        for (int64_t i = 0; i < st_gguf_n_keys(src) && !s; i++) {
            const char *k = st_gguf_key_name(src, i);
            if (!strncmp(k, "tokenizer.", 10)) s = st_gguf_writer_copy_key(w, src, k);
        }
        if (s) goto done;
    } else {
        st_log_warn("%s: source %s is not a GGUF; the exported GGUF has no tokenizer metadata",
                    path, m->source_path ? m->source_path : "(none)");
    }
    size_t maxn = 0;
    for (size_t i = 0; i < m->layout.n_tensors; i++)
        if (m->layout.params[i].numel > maxn) maxn = m->layout.params[i].numel;
    tmp = st_malloc(maxn * sizeof *tmp);
    if (!tmp) { s = ST_ERR_NOMEM; goto done; }
    for (size_t i = 0; i < m->layout.n_tensors && !s; i++) {
        const st_param_info *p = &m->layout.params[i];
        char gn[96];
        if (!st_gguf_tensor_name(p->name, gn, sizeof gn)) {
            s = st_error(ST_ERR_INTERNAL, "%s: no GGUF name for %s", path, p->name);
            break;
        }
        const float *data = params + p->offset;
        int isq = strstr(gn, ".attn_q.") != NULL, isk = strstr(gn, ".attn_k.") != NULL;
        if (c->arch == ST_ARCH_LLAMA && (isq || isk)) {
            permute(tmp, data, isq ? c->num_attention_heads : c->num_key_value_heads, c->head_dim,
                    p->n_dims == 2 ? p->shape[1] : 1);
            data = tmp;
        }
        int64_t ne[2] = {p->n_dims == 2 ? p->shape[1] : p->shape[0], p->shape[0]};
        /* norms stay F32 (llama.cpp keeps 1-D tensors in F32) */
        s = st_gguf_writer_add_tensor(w, gn, (uint32_t)p->n_dims, ne,
                                      p->n_dims == 1 ? ST_GGML_TYPE_F32 : type, data);
    }
    if (!s && c->rope_scaling.type == ST_ROPE_SCALING_LLAMA3) {
        int h = c->head_dim / 2;
        double *a = st_malloc(2 * (size_t)h * sizeof *a);
        if (!a) { s = ST_ERR_NOMEM; goto done; }
        st_config c0 = *c;
        c0.rope_scaling.type = ST_ROPE_SCALING_NONE;
        st_config_rope_inv_freq(c, a);
        st_config_rope_inv_freq(&c0, a + h);
        for (int i = 0; i < h; i++) tmp[i] = (float)(a[h + i] / a[i]);
        free(a);
        int64_t ne[1] = {h};
        s = st_gguf_writer_add_tensor(w, "rope_freqs.weight", 1, ne, ST_GGML_TYPE_F32, tmp);
    }
    if (!s) s = st_gguf_writer_finish(w, path);
done:
    free(tmp);
    st_gguf_close(src);
    st_gguf_writer_free(w);
    if (s) st_error_wrap(s, "export to %s", path);
    return s;
}
