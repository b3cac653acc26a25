/* load.c - st_model_load / st_model_load_weights: dispatch on GGUF file vs HF folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/load.h"
#include "safetune/lora.h"

const char *st_shape_str(char *buf, size_t cap, int n_dims, const int64_t *shape) {
    if (n_dims == 1)
        snprintf(buf, cap, "[%lld]", (long long)shape[0]);
    else
        snprintf(buf, cap, "[%lld, %lld]", (long long)shape[0], (long long)shape[1]);
    return buf;
}

void st_model_set_chat_template(st_model *m, const char *jinja, size_t len) {
    if (jinja) {
        free(m->chat_template_src);
        m->chat_template_src = st_malloc(len + 1);
        if (m->chat_template_src) {
            memcpy(m->chat_template_src, jinja, len);
            m->chat_template_src[len] = 0;
            if (st_chat_template_detect(m->chat_template_src, &m->chat) == ST_OK) {
                m->has_chat_template = 1;
                return;
            }
            st_log_warn("%s: chat template not recognised (%s); using ChatML", m->source_path,
                        st_last_error());
        }
    }
    if (st_chat_template_by_name("chatml", &m->chat) == ST_OK) m->has_chat_template = 1;
}

static st_status load(const char *path, int with_tok, st_model **out);

float *st__sink_scratch(float **buf, size_t *cap, const st_param_info *p) {
    if (p->numel > *cap) {
        st_free_aligned(*buf);
        *buf = st_alloc_aligned(p->numel * sizeof **buf);
        *cap = *buf ? p->numel : 0;
        if (!*buf) st_error(ST_ERR_NOMEM, "loading: cannot allocate %zu MiB for tensor %s", p->numel * 4 >> 20, p->name);
    }
    return *buf;
}

void st__drop_mapped(const void *data, size_t nbytes) {
    const long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || !data || !nbytes) return;
    const uintptr_t a = (uintptr_t)data, e = a + nbytes;
    const uintptr_t lo = (a + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1), hi = e & ~((uintptr_t)pg - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED); /* whole pages inside the tensor only */
}

/* Base model + PEFT adapter merged into its weights (W += alpha/r · B·A). */
static st_status load_merged(const char *base, const char *adapter_dir, int with_tok,
                             st_model **out) {
    *out = NULL;
    st_model *m = NULL;
    st_lora *ad = NULL;
    st_status s = load(base, with_tok, &m);
    if (!s) s = st_lora_load_peft(adapter_dir, &m->config, &ad);
    if (s) {
        st_model_free(m);
        return st_error_wrap(s, "loading adapter %s on base model %s", adapter_dir, base);
    }
    st_lora_merge(&m->config, &m->w, &ad->lc, &ad->w);
    st_lora_free(ad);
    *out = m;
    return ST_OK;
}

/* A PEFT adapter folder alone: its base from adapter_config.json base_model_name_or_path (a
 * relative path is taken from the adapter's folder). */
static st_status load_adapter_dir(const char *dir, int with_tok, st_model **out) {
    char *base = NULL;
    st_status s = st_lora_base_model_path(dir, &base);
    if (s) return s;
    s = load_merged(base, dir, with_tok, out);
    free(base);
    return s;
}

st_status st_model_load_with_adapter(const char *base, const char *adapter_dir, st_model **out) {
    return load_merged(base, adapter_dir, 1, out);
}

static st_status load(const char *path, int with_tok, st_model **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return st_error(ST_ERR_IO, "%s: no such file or folder (expected a .gguf file or a "
                        "Hugging Face checkpoint folder)", path);
    const size_t n = strlen(path);
    if (!S_ISDIR(sb.st_mode) && ((n >= 12 && !strcmp(path + n - 12, ".safetensors")) ||
                                 (n >= 5 && !strcmp(path + n - 5, ".json")))) {
        const char *slash = strrchr(path, '/');
        const int dl = slash ? (int)(slash - path) : 1;
        char cfg[4200];
        snprintf(cfg, sizeof cfg, "%.*s/config.json", dl, slash ? path : ".");
        if (access(cfg, F_OK) == 0) /* it sits in a checkpoint folder */
            return st_error(ST_ERR_ARG, "%s: a file of a Hugging Face checkpoint: pass its folder (%.*s) "
                            "instead, or a .gguf file", path, dl, slash ? path : ".");
        return st_error(ST_ERR_ARG, "%s: not a model: pass a .gguf file or a Hugging Face checkpoint "
                        "folder (config.json + model.safetensors + tokenizer.json)", path);
    }
    if (S_ISDIR(sb.st_mode) && st_lora_is_adapter_dir(path)) {
        char *cj = st_path_join(path, "config.json");
        const int has_cfg = cj && access(cj, F_OK) == 0;
        free(cj);
        if (!has_cfg) return load_adapter_dir(path, with_tok, out);
    }
    st_status s = S_ISDIR(sb.st_mode) ? st_model_load_hf(path, with_tok, NULL, out)
                                      : st_model_load_gguf(path, with_tok, NULL, out);
    if (!s && *out && !(*out)->source_path) (*out)->source_path = st_strdup(path);
    return s;
}

st_status st_model_load_weights(const char *path, st_model **out) { return load(path, 0, out); }
st_status st_model_load(const char *path, st_model **out) { return load(path, 1, out); }

st_status st_model_load_tokenizer(const char *path, st_model **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return st_error(ST_ERR_IO, "%s: no such file or folder (expected a .gguf file, a folder with tokenizer.json, "
                        "or a tokenizer.json file)", path);
    st_model *m = st_calloc(1, sizeof *m);
    if (!m) return st_error(ST_ERR_NOMEM, "out of memory");
    m->source_path = st_strdup(path);
    const size_t n = strlen(path);
    st_status s;
    char dir[4200];
    if (S_ISDIR(sb.st_mode) || (n >= 5 && !strcmp(path + n - 5, ".json"))) {
        char tj[4300];
        if (S_ISDIR(sb.st_mode)) {
            snprintf(dir, sizeof dir, "%s", path);
            snprintf(tj, sizeof tj, "%s/tokenizer.json", path);
        } else {
            const char *slash = strrchr(path, '/');
            snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
            snprintf(tj, sizeof tj, "%s", path);
        }
        s = st_tokenizer_from_json(tj, &m->tokenizer);
        if (!s) st_model_load_chat_template_dir(m, dir);
    } else {
        st_gguf *g = NULL;
        s = st_gguf_open(path, &g);
        if (!s) s = st_tokenizer_from_gguf(g, &m->tokenizer);
        if (!s) {
            const char *ct = NULL;
            size_t cl = 0;
            if (st_gguf_find_key(g, "tokenizer.chat_template") < 0 ||
                st_gguf_get_str(g, "tokenizer.chat_template", &ct, &cl) != ST_OK)
                ct = NULL;
            st_model_set_chat_template(m, ct, cl);
        }
        st_gguf_close(g);
    }
    if (s) {
        st_model_free(m);
        return s;
    }
    *out = m;
    return ST_OK;
}
