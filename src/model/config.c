/* config.c - Hugging Face config.json <-> st_config, validation, RoPE frequencies.
 * Defaults follow transformers LlamaConfig / Qwen2Config. */
#include "safetune/config.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fits_int(double d) { return d == floor(d) && d >= INT_MIN && d <= INT_MAX; }
/* An optional integer key (eos_token_id: [a, b] gives a). A number that is not an integer in int
 * range gives def and *bad = k (the caller reports it). */
static int get_int(const cJSON *o, const char *k, int def, const char **bad) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (!cJSON_IsNumber(v)) return def;
    if (!fits_int(v->valuedouble)) {
        if (!*bad) *bad = k;
        return def;
    }
    return (int)v->valuedouble;
}
static double get_num(const cJSON *o, const char *k, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}
static int get_bool(const cJSON *o, const char *k, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return def;
}

static st_status require(const cJSON *o, const char *k, const char *src, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v))
        return st_error(ST_ERR_FORMAT, "%s: key \"%s\" missing or not a number", src, k);
    if (!fits_int(v->valuedouble))
        return st_error(ST_ERR_FORMAT, "%s: key \"%s\": %g is not an integer in [%d, %d]", src, k, v->valuedouble,
                        INT_MIN, INT_MAX);
    *out = (int)v->valuedouble;
    return ST_OK;
}

st_status st_config_from_hf_json_text(const char *json, const char *src, st_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t off = e && e >= json && e <= json + strlen(json) ? (size_t)(e - json) : 0, line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            col = json[i] == '\n' ? 1 : col + 1;
            line += json[i] == '\n';
        }
        return st_error(ST_ERR_FORMAT, "%s: line %zu, column %zu (byte %zu): invalid JSON", src, line, col, off);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return st_error(ST_ERR_FORMAT, "%s: not a JSON object (config.json expected)", src);
    }
    st_status s = ST_OK;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const char *a0 = cJSON_IsArray(archs) && cJSON_IsString(cJSON_GetArrayItem(archs, 0))
                         ? cJSON_GetArrayItem(archs, 0)->valuestring : NULL;
    const char *mts = cJSON_IsString(mt) ? mt->valuestring : NULL;
    if ((mts && strcmp(mts, "qwen2") == 0) || (!mts && a0 && strcmp(a0, "Qwen2ForCausalLM") == 0))
        cfg->arch = ST_ARCH_QWEN2;
    else if ((mts && strcmp(mts, "llama") == 0) ||
             (!mts && a0 && strcmp(a0, "LlamaForCausalLM") == 0))
        cfg->arch = ST_ARCH_LLAMA;
    else {
        s = st_error(ST_ERR_UNSUPPORTED,
                     "%s: unknown architecture (model_type \"%s\", architectures[0] \"%s\"); "
                     "supported: llama, qwen2", src, mts ? mts : "?", a0 ? a0 : "?");
        goto done;
    }
    if ((s = require(root, "hidden_size", src, &cfg->hidden_size)) ||
        (s = require(root, "intermediate_size", src, &cfg->intermediate_size)) ||
        (s = require(root, "num_hidden_layers", src, &cfg->num_hidden_layers)) ||
        (s = require(root, "num_attention_heads", src, &cfg->num_attention_heads)) ||
        (s = require(root, "vocab_size", src, &cfg->vocab_size)))
        goto done;
    const char *bad = NULL;
    cfg->num_key_value_heads = get_int(root, "num_key_value_heads", cfg->num_attention_heads, &bad);
    cfg->head_dim = get_int(root, "head_dim",
                            cfg->num_attention_heads ? cfg->hidden_size / cfg->num_attention_heads : 0, &bad);
    cfg->max_position_embeddings = get_int(root, "max_position_embeddings", 2048, &bad);
    cfg->rope_theta = (float)get_num(root, "rope_theta", 10000.0);
    cfg->rms_norm_eps = (float)get_num(root, "rms_norm_eps", 1e-6);
    cfg->tie_word_embeddings = get_bool(root, "tie_word_embeddings", 0);
    cfg->attention_bias = cfg->arch == ST_ARCH_QWEN2 ? 1 : get_bool(root, "attention_bias", 0);
    cfg->bos_token_id = get_int(root, "bos_token_id", -1, &bad);
    cfg->eos_token_id = get_int(root, "eos_token_id", -1, &bad);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (cJSON_IsObject(rs)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
        const char *ts = cJSON_IsString(t) ? t->valuestring : "default";
        cfg->rope_scaling.factor = (float)get_num(rs, "factor", 1.0);
        if (strcmp(ts, "default") == 0) {
            cfg->rope_scaling.type = ST_ROPE_SCALING_NONE;
        } else if (strcmp(ts, "linear") == 0) {
            cfg->rope_scaling.type = ST_ROPE_SCALING_LINEAR;
        } else if (strcmp(ts, "llama3") == 0) {
            cfg->rope_scaling.type = ST_ROPE_SCALING_LLAMA3;
            cfg->rope_scaling.low_freq_factor = (float)get_num(rs, "low_freq_factor", 1.0);
            cfg->rope_scaling.high_freq_factor = (float)get_num(rs, "high_freq_factor", 4.0);
            cfg->rope_scaling.original_max_position_embeddings =
                get_int(rs, "original_max_position_embeddings", 8192, &bad);
        } else {
            s = st_error(ST_ERR_UNSUPPORTED,
                         "%s: key \"rope_scaling\": type \"%s\" not supported (default, linear, "
                         "llama3)", src, ts);
            goto done;
        }
    }
    if (bad) {
        s = st_error(ST_ERR_FORMAT, "%s: key \"%s\": not an integer in [%d, %d]", src, bad, INT_MIN, INT_MAX);
        goto done;
    }
    s = st_config_validate(cfg, src);
done:
    cJSON_Delete(root);
    return s;
}

st_status st_config_from_hf_json(const char *path, st_config *cfg) {
    char *txt = NULL;
    size_t len = 0;
    st_status s = st_read_file(path, &txt, &len);
    if (s) return s;
    s = st_config_from_hf_json_text(txt, path, cfg);
    free(txt);
    return s;
}

st_status st_config_validate(const st_config *c, const char *src) {
#define POS(f)                                                                                  \
    if (c->f <= 0) return st_error(ST_ERR_FORMAT, "%s: config " #f " = %d must be > 0", src, c->f)
    POS(hidden_size);
    POS(intermediate_size);
    POS(num_hidden_layers);
    POS(num_attention_heads);
    POS(num_key_value_heads);
    POS(head_dim);
    POS(vocab_size);
#undef POS
    if (c->num_attention_heads % c->num_key_value_heads)
        return st_error(ST_ERR_FORMAT,
                        "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                        src, c->num_attention_heads, c->num_key_value_heads);
    if (c->head_dim % 2)
        return st_error(ST_ERR_FORMAT, "%s: head_dim %d must be even (RoPE)", src, c->head_dim);
    if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0))
        return st_error(ST_ERR_FORMAT, "%s: rms_norm_eps and rope_theta must be > 0", src);
    if (c->rope_scaling.type != ST_ROPE_SCALING_NONE && !(c->rope_scaling.factor > 0))
        return st_error(ST_ERR_FORMAT, "%s: rope_scaling.factor must be > 0", src);
    if (c->rope_scaling.type == ST_ROPE_SCALING_LLAMA3 &&
        (!(c->rope_scaling.high_freq_factor > c->rope_scaling.low_freq_factor) ||
         c->rope_scaling.original_max_position_embeddings <= 0))
        return st_error(ST_ERR_FORMAT, "%s: rope_scaling llama3 needs high_freq_factor > "
                        "low_freq_factor and original_max_position_embeddings > 0", src);
    return ST_OK;
}

st_status st_config_to_hf_json(const st_config *c, char **json) {
    cJSON *r = cJSON_CreateObject();
    if (!r) return st_error(ST_ERR_NOMEM, "config: out of memory");
    int q = c->arch == ST_ARCH_QWEN2;
    cJSON *archs = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString(q ? "Qwen2ForCausalLM" : "LlamaForCausalLM"));
    cJSON_AddStringToObject(r, "model_type", q ? "qwen2" : "llama");
    cJSON_AddNumberToObject(r, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(r, "intermediate_size", c->intermediate_size);
    cJSON_AddNumberToObject(r, "num_hidden_layers", c->num_hidden_layers);
    cJSON_AddNumberToObject(r, "num_attention_heads", c->num_attention_heads);
    cJSON_AddNumberToObject(r, "num_key_value_heads", c->num_key_value_heads);
    cJSON_AddNumberToObject(r, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(r, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(r, "max_position_embeddings", c->max_position_embeddings);
    cJSON_AddNumberToObject(r, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(r, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddBoolToObject(r, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddBoolToObject(r, "attention_bias", c->attention_bias);
    if (c->bos_token_id >= 0) cJSON_AddNumberToObject(r, "bos_token_id", c->bos_token_id);
    if (c->eos_token_id >= 0) cJSON_AddNumberToObject(r, "eos_token_id", c->eos_token_id);
    if (c->rope_scaling.type == ST_ROPE_SCALING_NONE) {
        cJSON_AddNullToObject(r, "rope_scaling");
    } else {
        cJSON *rs = cJSON_AddObjectToObject(r, "rope_scaling");
        int l3 = c->rope_scaling.type == ST_ROPE_SCALING_LLAMA3;
        cJSON_AddStringToObject(rs, "rope_type", l3 ? "llama3" : "linear");
        cJSON_AddNumberToObject(rs, "factor", c->rope_scaling.factor);
        if (l3) {
            cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_scaling.low_freq_factor);
            cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_scaling.high_freq_factor);
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                    c->rope_scaling.original_max_position_embeddings);
        }
    }
    cJSON_AddStringToObject(r, "torch_dtype", "float32");
    char *txt = cJSON_Print(r);
    cJSON_Delete(r);
    if (!txt) return st_error(ST_ERR_NOMEM, "config: out of memory");
    *json = st_strdup(txt);
    cJSON_free(txt);
    return *json ? ST_OK : ST_ERR_NOMEM;
}

void st_config_rope_inv_freq(const st_config *c, double *inv) {
    const int D = c->head_dim;
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < D / 2; i++) {
        double f = pow((double)c->rope_theta, -(2.0 * i) / D);
        if (c->rope_scaling.type == ST_ROPE_SCALING_LINEAR) {
            f /= c->rope_scaling.factor;
        } else if (c->rope_scaling.type == ST_ROPE_SCALING_LLAMA3) {
            double factor = c->rope_scaling.factor, lo = c->rope_scaling.low_freq_factor,
                   hi = c->rope_scaling.high_freq_factor,
                   old = c->rope_scaling.original_max_position_embeddings;
            double wl = 2 * pi / f, lo_wl = old / lo, hi_wl = old / hi;
            if (wl > lo_wl) {
                f = f / factor;
            } else if (wl >= hi_wl) { /* medium band: interpolate */
                double sm = (old / wl - lo) / (hi - lo);
                f = (1 - sm) * f / factor + sm * f;
            }
        }
        inv[i] = f;
    }
}
