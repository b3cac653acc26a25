/* lora_io.c - PEFT adapter folders (lora.h): adapter_config.json + adapter_model.safetensors,
 * written atomically (temp folder + rename) and read back with every mismatch against the base
 * model named. Source: peft/config.py (PeftConfig.save_pretrained: the LoraConfig fields as
 * JSON), peft/utils/save_and_load.py (get_peft_model_state_dict: "base_model.model." + module
 * path + ".lora_A.weight", adapter name removed). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/export_internal.h"
#include "safetune/lora.h"
#include "safetune/json_check.h"
#include "safetune/safetensors.h"

static st_status config_json(const st_lora_config *lc, const char *base_model, char **out) {
    *out = NULL;
    cJSON *r = cJSON_CreateObject();
    cJSON *tm = cJSON_CreateArray();
    if (!r || !tm) {
        cJSON_Delete(r);
        cJSON_Delete(tm);
        return ST_ERR_NOMEM;
    }
    for (int t = 0; t < ST_LORA_N_TARGETS; t++)
        if (lc->targets & (1u << t))
            cJSON_AddItemToArray(tm, cJSON_CreateString(st_lora_target_name((st_lora_target)t)));
    if (base_model) cJSON_AddStringToObject(r, "base_model_name_or_path", base_model);
    else cJSON_AddNullToObject(r, "base_model_name_or_path");
    cJSON_AddStringToObject(r, "bias", "none");
    cJSON_AddBoolToObject(r, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(r, "inference_mode", 1);
    cJSON_AddBoolToObject(r, "init_lora_weights", 1);
    cJSON_AddNullToObject(r, "layers_to_transform");
    cJSON_AddNullToObject(r, "layers_pattern");
    cJSON_AddNumberToObject(r, "lora_alpha", lc->alpha);
    cJSON_AddNumberToObject(r, "lora_dropout", lc->dropout);
    cJSON_AddNullToObject(r, "modules_to_save");
    cJSON_AddStringToObject(r, "peft_type", "LORA");
    cJSON_AddNumberToObject(r, "r", lc->r);
    cJSON_AddItemToObject(r, "rank_pattern", cJSON_CreateObject());
    cJSON_AddItemToObject(r, "alpha_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(r, "revision");
    cJSON_AddItemToObject(r, "target_modules", tm);
    cJSON_AddStringToObject(r, "task_type", "CAUSAL_LM");
    cJSON_AddBoolToObject(r, "use_rslora", 0);
    cJSON_AddBoolToObject(r, "use_dora", 0);
    char *t = cJSON_Print(r);
    cJSON_Delete(r);
    if (!t) return ST_ERR_NOMEM;
    *out = st_strdup(t);
    cJSON_free(t);
    return *out ? ST_OK : ST_ERR_NOMEM;
}

st_status st_lora_save_peft(const st_lora *ad, const float *params, const char *base_model,
                            const char *dir) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", dir, (int)getpid()) >= (int)sizeof tmp)
        return st_error(ST_ERR_ARG, "%s: path too long", dir);
    st_remove_flat_dir(tmp);
    st_status s = st_mkdir_p(tmp);
    if (s) return s;
    char *cj = NULL, p[4400];
    if ((s = config_json(&ad->lc, base_model, &cj))) goto fail;
    snprintf(p, sizeof p, "%s/adapter_config.json", tmp);
    s = st_write_file_atomic(p, cj, strlen(cj));
    free(cj);
    if (s) goto fail;
    st_safetensors_writer *w = NULL;
    if ((s = st_safetensors_writer_new(&w))) goto fail;
    for (size_t i = 0; i < ad->layout.n_tensors && !s; i++) {
        const st_param_info *pi = &ad->layout.params[i];
        s = st_safetensors_writer_add(w, pi->name, ST_DTYPE_F32, 2, pi->shape, params + pi->offset);
    }
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", tmp);
    if (!s) s = st_safetensors_writer_finish(w, p);
    st_safetensors_writer_free(w);
    if (s) goto fail;
    if ((s = st__install_dir(tmp, dir))) goto fail;
    return ST_OK;
fail:
    st_remove_flat_dir(tmp);
    return st_error_wrap(s, "saving the adapter to %s", dir);
}

st_status st_lora_base_model_path(const char *dir, char **out) {
    *out = NULL;
    char *cp = st_path_join(dir, "adapter_config.json");
    if (!cp) return ST_ERR_NOMEM;
    char *text = NULL;
    size_t len = 0;
    st_status s = st_read_json_text_file(cp, &text, &len);
    cJSON *r = s ? NULL : cJSON_Parse(text);
    free(text);
    const cJSON *b = r ? cJSON_GetObjectItemCaseSensitive(r, "base_model_name_or_path") : NULL;
    if (!s && !cJSON_IsString(b))
        s = st_error(ST_ERR_FORMAT, "%s: no base_model_name_or_path; give the base model and "
                     "the adapter separately", cp);
    if (!s) {
        const char *v = b->valuestring;
        char *p = v[0] == '/' ? st_strdup(v) : st_path_join(dir, v);
        struct stat sb;
        if (!p) s = ST_ERR_NOMEM;
        else if (stat(p, &sb) != 0) {
            s = st_error(ST_ERR_FORMAT, "%s: base_model_name_or_path \"%s\" is not a local file "
                         "or folder (a Hub id?); give the base model and the adapter separately",
                         cp, v);
            free(p);
        } else {
            *out = p;
        }
    }
    cJSON_Delete(r);
    free(cp);
    return s;
}

int st_lora_is_adapter_dir(const char *path) {
    struct stat sb;
    if (!path || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return 0;
    char *p = st_path_join(path, "adapter_config.json");
    int ok = p && access(p, R_OK) == 0;
    free(p);
    return ok;
}

/* adapter_config.json -> lc, refusing what safetune does not implement. */
static st_status read_config(const char *path, st_lora_config *lc) {
    char *text = NULL;
    size_t len = 0;
    st_status s = st_read_json_text_file(path, &text, &len);
    if (s) return s;
    cJSON *r = NULL;
    s = st_json_parse_checked(text, path, &r); /* invalid JSON located by line and column */
    free(text);
    if (s) return s;
    if (!cJSON_IsObject(r)) {
        cJSON_Delete(r);
        return st_error(ST_ERR_FORMAT, "%s: not a JSON object (a PEFT adapter_config.json)", path);
    }
    s = ST_OK;
#define FAIL(...) do { s = st_error(ST_ERR_FORMAT, __VA_ARGS__); goto done; } while (0)
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(r, "peft_type");
    if (!cJSON_IsString(pt) || strcmp(pt->valuestring, "LORA"))
        FAIL("%s: peft_type is %s%s%s, expected \"LORA\" (only LoRA adapters are supported)", path,
             cJSON_IsString(pt) ? "\"" : "", cJSON_IsString(pt) ? pt->valuestring : "missing",
             cJSON_IsString(pt) ? "\"" : "");
    const cJSON *rr = cJSON_GetObjectItemCaseSensitive(r, "r");
    if (!cJSON_IsNumber(rr) || rr->valuedouble != (double)(int)rr->valuedouble || rr->valuedouble < 1)
        FAIL("%s: \"r\" must be an integer >= 1 (the adapter rank)", path);
    lc->r = (int)rr->valuedouble;
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(r, "lora_alpha");
    if (!cJSON_IsNumber(al) || !(al->valuedouble > 0))
        FAIL("%s: \"lora_alpha\" must be a number > 0", path);
    lc->alpha = al->valuedouble;
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(r, "lora_dropout");
    lc->dropout = cJSON_IsNumber(dr) ? dr->valuedouble : 0.0;
    static const char *const must_false[] = {"use_dora", "use_rslora", "fan_in_fan_out"};
    for (size_t i = 0; i < sizeof must_false / sizeof *must_false; i++)
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, must_false[i])))
            FAIL("%s: \"%s\": true is not supported (plain LoRA only)", path, must_false[i]);
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(r, "bias");
    if (cJSON_IsString(bias) && strcmp(bias->valuestring, "none"))
        FAIL("%s: \"bias\": \"%s\" is not supported (only \"none\": no trained biases)", path,
             bias->valuestring);
    static const char *const must_empty[] = {"rank_pattern", "alpha_pattern", "modules_to_save",
                                             "layers_to_transform"};
    for (size_t i = 0; i < sizeof must_empty / sizeof *must_empty; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(r, must_empty[i]);
        if (it && !cJSON_IsNull(it) &&
            (!(cJSON_IsArray(it) || cJSON_IsObject(it)) || cJSON_GetArraySize(it) > 0))
            FAIL("%s: \"%s\" is not supported (one r and alpha for every module of every layer)",
                 path, must_empty[i]);
    }
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(r, "target_modules");
    unsigned bits = 0;
    if (cJSON_IsString(tm)) { /* a string is a regex in PEFT; accept the exact "all-linear" */
        if (strcmp(tm->valuestring, "all-linear"))
            FAIL("%s: \"target_modules\": \"%s\" (a regular expression) is not supported; give a "
                 "list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", path,
                 tm->valuestring);
        bits = ST_LORA_ALL_TARGETS;
    } else if (cJSON_IsArray(tm)) {
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, tm) {
            i++;
            int found = -1;
            for (int t = 0; t < ST_LORA_N_TARGETS && cJSON_IsString(e); t++)
                if (!strcmp(e->valuestring, st_lora_target_name((st_lora_target)t))) found = t;
            if (found < 0)
                FAIL("%s: \"target_modules\" item %d (%s) is not a target module; valid: "
                     "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", path, i,
                     cJSON_IsString(e) ? e->valuestring : "not a string");
            bits |= 1u << found;
        }
    } else {
        FAIL("%s: \"target_modules\" missing (a list of module names)", path);
    }
    lc->targets = bits;
    if ((s = st_lora_config_validate(lc))) s = st_error_wrap(s, "%s", path);
#undef FAIL
done:
    cJSON_Delete(r);
    return s;
}

st_status st_lora_load_peft(const char *dir, const st_config *cfg, st_lora **out) {
    *out = NULL;
    char *cp = st_path_join(dir, "adapter_config.json");
    char *wp = st_path_join(dir, "adapter_model.safetensors");
    st_safetensors *sf = NULL;
    st_lora *ad = NULL;
    st_lora_config lc;
    st_status s = !cp || !wp ? ST_ERR_NOMEM : ST_OK;
    if (!s && access(cp, R_OK) != 0)
        s = st_error(ST_ERR_IO, "%s: no adapter_config.json (not a PEFT adapter folder)", dir);
    if (!s) s = read_config(cp, &lc);
    if (!s && access(wp, R_OK) != 0)
        s = st_error(ST_ERR_IO, "%s: missing (PEFT's .bin adapters are not read; save with "
                     "safe_serialization=True)", wp);
    if (!s) s = st_safetensors_open(wp, &sf);
    if (!s) s = st_lora_new(cfg, &lc, &ad);
    /* every file tensor must be one the config and the base model call for, with its shape */
    for (size_t i = 0; !s && i < st_safetensors_count(sf); i++) {
        const st_st_tensor *t = st_safetensors_at(sf, i);
        const st_param_info *p = st_layout_find(&ad->layout, t->name);
        if (!p) {
            int l = -1;
            if (sscanf(t->name, "base_model.model.model.layers.%d.", &l) == 1 &&
                l >= cfg->num_hidden_layers)
                s = st_error(ST_ERR_FORMAT, "%s: tensor %s is for layer %d, but the base model has "
                             "%d layers (an adapter for another base model?)", wp, t->name, l,
                             cfg->num_hidden_layers);
            else
                s = st_error(ST_ERR_FORMAT, "%s: tensor %s is not a LoRA A/B of the target modules "
                             "in adapter_config.json", wp, t->name);
            break;
        }
        if (t->n_dims != 2 || t->shape[0] != p->shape[0] || t->shape[1] != p->shape[1]) {
            s = st_error(ST_ERR_FORMAT, "%s: tensor %s has shape [%lld, %lld], the base model and "
                         "r = %d need [%lld, %lld] (an adapter for another base model?)", wp,
                         t->name, (long long)t->shape[0],
                         (long long)(t->n_dims > 1 ? t->shape[1] : 1), lc.r,
                         (long long)p->shape[0], (long long)p->shape[1]);
            break;
        }
        if (t->dtype == ST_DTYPE_OTHER) {
            s = st_error(ST_ERR_FORMAT, "%s: tensor %s has dtype %s (F32, F16 or BF16 expected)", wp,
                         t->name, t->dtype_name);
            break;
        }
        s = st_safetensors_to_f32(t, ad->params + p->offset);
    }
    for (size_t i = 0; !s && i < ad->layout.n_tensors; i++)
        if (!st_safetensors_find(sf, ad->layout.params[i].name))
            s = st_error(ST_ERR_FORMAT, "%s: tensor %s missing (target_modules lists %s for every "
                         "layer)", wp, ad->layout.params[i].name,
                         strstr(ad->layout.params[i].name, "_proj") ? "its module" : "it");
    st_safetensors_close(sf);
    free(cp);
    free(wp);
    if (s) {
        st_lora_free(ad);
        return s;
    }
    *out = ad;
    return ST_OK;
}

st_status st_lora_merged_params(const st_config *cfg, const st_layout *base_layout,
                                const float *base_params, const st_lora *ad, const float *params,
                                float **out) {
    *out = NULL;
    float *m = st_alloc_aligned(base_layout->n_floats * sizeof(float));
    if (!m) return st_error(ST_ERR_NOMEM, "merge: cannot allocate %zu MiB for the merged weights",
                            base_layout->n_floats * sizeof(float) >> 20);
    memcpy(m, base_params, base_layout->n_floats * sizeof(float));
    st_weights w;
    st_lora_weights lw;
    st_status s = st_weights_bind(&w, cfg, base_layout, m);
    if (s) {
        st_free_aligned(m);
        return s;
    }
    s = st_lora_bind(&lw, cfg, &ad->lc, &ad->layout, (float *)params);
    if (!s) {
        st_lora_merge(cfg, &w, &ad->lc, &lw);
        st_lora_unbind(&lw);
    }
    st_weights_unbind(&w);
    if (s) {
        st_free_aligned(m);
        return s;
    }
    *out = m;
    return ST_OK;
}
