/* export_hf.c - Hugging Face folder export (export.h): config.json, model.safetensors,
 * tokenizer.json, tokenizer_config.json; built in a temp folder and renamed into place. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/export_internal.h"
#include "safetune/export.h"
#include "safetune/safetensors.h"

/* The model loaders reference the tokenizer loaders weakly (#pragma weak in load_*.c), so a
 * program could link without them; exports must reload with their tokenizer, so reference them
 * strongly here (pulls tokenizer_gguf.o / tokenizer_json.o out of libsafetune.a). */
st_status (*const st__export_keep_gguf_tok)(const st_gguf *, st_tokenizer **) = st_tokenizer_from_gguf;
st_status (*const st__export_keep_json_tok)(const char *, st_tokenizer **) = st_tokenizer_from_json;
st_status (*const st__export_keep_chat)(const char *, st_chat_template *) = st_chat_template_detect;

st_status st_export_dtype_parse(const char *name, st_export_dtype *out) {
    if (!strcasecmp(name, "f32") || !strcasecmp(name, "fp32") || !strcasecmp(name, "float32")) *out = ST_EXPORT_F32;
    else if (!strcasecmp(name, "bf16") || !strcasecmp(name, "bfloat16")) *out = ST_EXPORT_BF16;
    else if (!strcasecmp(name, "f16") || !strcasecmp(name, "fp16") || !strcasecmp(name, "float16")) *out = ST_EXPORT_F16;
    else return st_error(ST_ERR_ARG, "export dtype \"%s\": expected f32, bf16 or f16", name);
    return ST_OK;
}



int st__is_gguf_source(const st_model *m) {
    struct stat sb;
    return m->source_path && stat(m->source_path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static st_status write_text(const char *dir, const char *name, const char *text) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return st_write_file_atomic(p, text, strlen(text));
}

static st_status copy_file(const char *src_dir, const char *name, const char *dst_dir, int required) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", src_dir, name);
    if (access(p, R_OK) != 0) {
        if (!required) return ST_OK;
        return st_error(ST_ERR_IO, "%s: cannot read the source tokenizer: %s", p, strerror(errno));
    }
    char *data;
    size_t len;
    st_status s = st_read_file(p, &data, &len);
    if (s) return s;
    char q[4400];
    snprintf(q, sizeof q, "%s/%s", dst_dir, name);
    s = st_write_file_atomic(q, data, len);
    free(data);
    return s;
}

static st_status tokenizer_config(const st_model *m, char **out) {
    cJSON *r = cJSON_CreateObject();
    const st_tokenizer *tk = m->tokenizer;
    int32_t bos = tk ? st_tokenizer_bos_id(tk) : -1, eos = tk ? st_tokenizer_eos_id(tk) : -1;
    cJSON_AddBoolToObject(r, "add_bos_token", tk ? st_tokenizer_adds_bos(tk) : 0);
    cJSON_AddBoolToObject(r, "add_eos_token", 0);
    if (bos >= 0 && st_tokenizer_token(tk, bos)) cJSON_AddStringToObject(r, "bos_token", st_tokenizer_token(tk, bos));
    else cJSON_AddNullToObject(r, "bos_token");
    if (eos >= 0 && st_tokenizer_token(tk, eos)) {
        cJSON_AddStringToObject(r, "eos_token", st_tokenizer_token(tk, eos));
        cJSON_AddStringToObject(r, "pad_token", st_tokenizer_token(tk, eos));
    }
    if (m->chat_template_src) cJSON_AddStringToObject(r, "chat_template", m->chat_template_src);
    cJSON_AddBoolToObject(r, "clean_up_tokenization_spaces", 0);
    cJSON_AddNumberToObject(r, "model_max_length", m->config.max_position_embeddings);
    cJSON_AddStringToObject(r, "tokenizer_class", "PreTrainedTokenizerFast");
    char *t = cJSON_Print(r);
    cJSON_Delete(r);
    if (!t) return ST_ERR_NOMEM;
    *out = st_strdup(t);
    cJSON_free(t);
    return *out ? ST_OK : ST_ERR_NOMEM;
}

static st_status write_tokenizer(const st_model *m, const char *dir) {
    if (!m->source_path) return ST_OK;
    st_status s;
    if (!st__is_gguf_source(m)) {
        if ((s = copy_file(m->source_path, "tokenizer.json", dir, m->tokenizer != NULL))) return s;
        char p[4400];
        snprintf(p, sizeof p, "%s/tokenizer_config.json", m->source_path);
        if (access(p, R_OK) == 0) return copy_file(m->source_path, "tokenizer_config.json", dir, 1);
    } else {
        char *tj = NULL;
        if ((s = st_export_tokenizer_json_from_gguf(m->source_path, &tj))) return s;
        s = write_text(dir, "tokenizer.json", tj);
        free(tj);
        if (s) return s;
    }
    char *tc = NULL;
    if ((s = tokenizer_config(m, &tc))) return s;
    s = write_text(dir, "tokenizer_config.json", tc);
    free(tc);
    return s;
}

st_status st__install_dir(const char *tmp, const char *dir) {
    if (rename(tmp, dir) == 0) return ST_OK;
    if (errno != ENOTEMPTY && errno != EEXIST)
        return st_error(ST_ERR_IO, "%s: cannot move the export into place: %s", dir, strerror(errno));
    char old[4400];
    snprintf(old, sizeof old, "%s.old.%d", dir, (int)getpid());
    if (rename(dir, old) != 0)
        return st_error(ST_ERR_IO, "%s: cannot replace the existing folder: %s", dir, strerror(errno));
    if (rename(tmp, dir) != 0) {
        int e = errno;
        rename(old, dir);
        return st_error(ST_ERR_IO, "%s: cannot move the export into place: %s", dir, strerror(e));
    }
    st_remove_flat_dir(old);
    return ST_OK;
}

st_status st_export_hf(const st_model *m, const float *params, const char *dir,
                       st_export_dtype dtype) {
    if (dtype == ST_EXPORT_F16)
        return st_error(ST_ERR_UNSUPPORTED, "%s: HF export supports f32 and bf16 (safetensors "
                        "writer), not f16", dir);
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", dir, (int)getpid()) >= (int)sizeof tmp)
        return st_error(ST_ERR_ARG, "%s: path too long", dir);
    st_remove_flat_dir(tmp);
    st_status s = st_mkdir_p(tmp);
    if (s) return s;
    char *cj = NULL;
    if ((s = st_config_to_hf_json(&m->config, &cj))) goto fail;
    if (dtype == ST_EXPORT_BF16) { /* torch_dtype reflects the stored dtype */
        cJSON *r = cJSON_Parse(cj);
        if (r) {
            cJSON_ReplaceItemInObject(r, "torch_dtype", cJSON_CreateString("bfloat16"));
            char *t = cJSON_Print(r);
            if (t) {
                free(cj);
                cj = st_strdup(t);
                cJSON_free(t);
            }
            cJSON_Delete(r);
        }
    }
    if (!cj) { s = ST_ERR_NOMEM; goto fail; }
    s = write_text(tmp, "config.json", cj);
    free(cj);
    if (s) goto fail;
    st_safetensors_writer *w = NULL;
    if ((s = st_safetensors_writer_new(&w))) goto fail;
    for (size_t i = 0; i < m->layout.n_tensors && !s; i++) {
        const st_param_info *p = &m->layout.params[i];
        s = st_safetensors_writer_add(w, p->name, dtype == ST_EXPORT_BF16 ? ST_DTYPE_BF16 : ST_DTYPE_F32,
                                      p->n_dims, p->shape, params + p->offset);
    }
    char sp[4400];
    snprintf(sp, sizeof sp, "%s/model.safetensors", tmp);
    if (!s) s = st_safetensors_writer_finish(w, sp);
    st_safetensors_writer_free(w);
    if (s) goto fail;
    if ((s = write_tokenizer(m, tmp))) goto fail;
    if ((s = st__install_dir(tmp, dir))) goto fail;
    return ST_OK;
fail:
    st_remove_flat_dir(tmp);
    return st_error_wrap(s, "export to %s", dir);
}
