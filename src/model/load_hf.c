/* load_hf.c - Hugging Face checkpoint folder: config.json + model.safetensors (or sharded
 * model.safetensors.index.json) [+ tokenizer.json, tokenizer_config.json chat_template].
 * Tensor names are HF's, so the layout names map 1:1. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/load.h"
#include "safetune/safetensors.h"

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = st_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void st_model_load_chat_template_dir(st_model *m, const char *dir) {
    char *p = join(dir, "tokenizer_config.json"), *txt = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    if (p && access(p, R_OK) == 0 && st_read_file(p, &txt, &len) == ST_OK)
        root = cJSON_Parse(txt);
    const cJSON *ct = root ? cJSON_GetObjectItemCaseSensitive(root, "chat_template") : NULL;
    const char *src = NULL;
    if (cJSON_IsString(ct)) {
        src = ct->valuestring;
    } else if (cJSON_IsArray(ct)) { /* [{"name": "default", "template": "..."}, ...] */
        const cJSON *it;
        cJSON_ArrayForEach(it, ct) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
            const cJSON *tp = cJSON_GetObjectItemCaseSensitive(it, "template");
            if (cJSON_IsString(tp) && (!src || (cJSON_IsString(nm) &&
                                                strcmp(nm->valuestring, "default") == 0)))
                src = tp->valuestring;
        }
    }
    st_model_set_chat_template(m, src, src ? strlen(src) : 0);
    cJSON_Delete(root);
    free(txt);
    free(p);
}

/* config.json says tie_word_embeddings but the checkpoint also stores lm_head.weight: when it
 * differs from model.embed_tokens.weight, the stored head is the model's (cfg is untied, with a
 * warning naming the largest difference); when equal, tying changes nothing. */
static st_status stored_head(const char *dir, const st_safetensors *st, st_config *cfg) {
    const st_st_tensor *lh = st_safetensors_find(st, "lm_head.weight");
    const st_st_tensor *em = st_safetensors_find(st, "model.embed_tokens.weight");
    if (!lh || !em) return ST_OK;
    if (lh->n_dims != 2 || lh->shape[0] != cfg->vocab_size || lh->shape[1] != cfg->hidden_size) {
        char got[96];
        if (lh->n_dims <= 2) st_shape_str(got, sizeof got, lh->n_dims, lh->shape);
        else snprintf(got, sizeof got, "%d dims", lh->n_dims);
        return st_error(ST_ERR_FORMAT, "%s: tensor lm_head.weight: shape %s does not match config.json (expected [%d, %d])",
                        dir, got, cfg->vocab_size, cfg->hidden_size);
    }
    size_t n = (size_t)cfg->vocab_size * (size_t)cfg->hidden_size;
    float *a = st_malloc(n * sizeof *a), *b = st_malloc(n * sizeof *b);
    st_status s = a && b ? ST_OK : st_error(ST_ERR_NOMEM, "%s: out of memory comparing lm_head.weight", dir);
    if (!s && (s = st_safetensors_to_f32(lh, a))) st_error_wrap(s, "%s: tensor lm_head.weight", dir);
    if (!s && (s = st_safetensors_to_f32(em, b))) st_error_wrap(s, "%s: tensor model.embed_tokens.weight", dir);
    if (!s) {
        double maxd = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)a[i] - (double)b[i]);
            if (d > maxd || d != d) maxd = d != d ? INFINITY : d;
        }
        if (maxd > 0) {
            st_log_warn("%s: config.json says tie_word_embeddings = true, but the stored lm_head.weight differs from "
                        "model.embed_tokens.weight (max |difference| %g); using the stored lm_head.weight (untied)",
                        dir, maxd);
            cfg->tie_word_embeddings = 0;
        }
    }
    free(a);
    free(b);
    return s;
}

st_status st_model_load_hf(const char *dir, int with_tok, const st__tensor_sink *sink,
                           st_model **out) {
    *out = NULL;
    char *cpath = join(dir, "config.json");
    if (!cpath) return ST_ERR_NOMEM;
    if (access(cpath, R_OK) != 0) {
        free(cpath);
        return st_error(ST_ERR_IO, "%s: folder has no config.json (expected a Hugging Face "
                        "checkpoint: config.json + model.safetensors)", dir);
    }
    st_config cfg;
    st_status s = st_config_from_hf_json(cpath, &cfg);
    free(cpath);
    if (s) return s;
    st_safetensors *st = NULL;
    if ((s = st_safetensors_open(dir, &st))) return s;
    st_model *m = NULL;
    float *scratch = NULL;
    size_t cap = 0;
    if (cfg.tie_word_embeddings && (s = stored_head(dir, st, &cfg))) goto done;
    if ((s = sink ? st__model_new_shell(&cfg, &m) : st_model_new(&cfg, &m))) goto done;
    if (sink && (s = sink->begin(sink->user, &cfg))) goto done;
    m->source_path = st_strdup(dir);
    for (size_t i = 0; i < m->layout.n_tensors && !s; i++) {
        const st_param_info *p = &m->layout.params[i];
        const st_st_tensor *t = st_safetensors_find(st, p->name);
        if (!t) {
            s = st_error(ST_ERR_FORMAT, "%s: missing tensor %s (shape %s expected from "
                         "config.json)", dir, p->name,
                         st_shape_str((char[48]){0}, 48, p->n_dims, p->shape));
            break;
        }
        int ok = t->n_dims == p->n_dims && t->shape[0] == p->shape[0] &&
                 (p->n_dims == 1 || t->shape[1] == p->shape[1]);
        if (!ok) {
            char want[48], got[96];
            if (t->n_dims <= 2)
                st_shape_str(got, sizeof got, t->n_dims, t->shape);
            else
                snprintf(got, sizeof got, "%d dims", t->n_dims);
            s = st_error(ST_ERR_FORMAT, "%s: tensor %s: shape %s does not match config.json "
                         "(expected %s)", dir, p->name, got,
                         st_shape_str(want, sizeof want, p->n_dims, p->shape));
            break;
        }
        float *dst = sink ? st__sink_scratch(&scratch, &cap, p) : m->params + p->offset;
        if (!dst) {
            s = ST_ERR_NOMEM;
            break;
        }
        if ((s = st_safetensors_to_f32(t, dst))) {
            st_error_wrap(s, "%s: tensor %s", dir, p->name);
            break;
        }
        if (sink) {
            s = sink->put(sink->user, i, p, dst);
            st__drop_mapped(t->data, t->nbytes);
        }
    }
    if (!s && with_tok) {
        char *tp = join(dir, "tokenizer.json");
        s = tp ? st_tokenizer_from_json(tp, &m->tokenizer) : ST_ERR_NOMEM;
        free(tp);
        if (!s) st_model_load_chat_template_dir(m, dir);
    }
done:
    st_free_aligned(scratch);
    st_safetensors_close(st);
    if (s) st_model_free(m);
    else *out = m;
    return s;
}
