/* model.c - st_model lifecycle (allocation of the flat buffer and views). Loading from files is
 * in load*.c. */
#include <stdlib.h>
#include <string.h>

#include "safetune/model.h"

#include "model/load.h"

st_status st_model_new(const st_config *cfg, st_model **out) {
    st_model *m = NULL;
    st_status s = st__model_new_shell(cfg, &m);
    if (s) return s;
    m->params = st_alloc_aligned(m->layout.n_floats * sizeof(float));
    if (!m->params) {
        s = st_error(ST_ERR_NOMEM, "model: cannot allocate %zu MiB of weights",
                     m->layout.n_floats * sizeof(float) >> 20);
        goto fail;
    }
    memset(m->params, 0, m->layout.n_floats * sizeof(float));
    if ((s = st_weights_bind(&m->w, cfg, &m->layout, m->params))) goto fail;
    *out = m;
    return ST_OK;
fail:
    st_model_free(m);
    return s;
}

st_status st__model_new_shell(const st_config *cfg, st_model **out) {
    *out = NULL;
    st_status s = st_config_validate(cfg, "config");
    if (s) return s;
    st_model *m = st_calloc(1, sizeof *m);
    if (!m) return ST_ERR_NOMEM;
    m->config = *cfg;
    if ((s = st_layout_init(&m->layout, cfg))) {
        st_model_free(m);
        return s;
    }
    *out = m;
    return ST_OK;
}

void st_model_free(st_model *m) {
    if (!m) return;
    st_weights_unbind(&m->w);
    st_free_aligned(m->params);
    st_layout_free(&m->layout);
    if (m->tokenizer) st_tokenizer_free(m->tokenizer);
    if (m->has_chat_template) st_chat_template_free(&m->chat);
    free(m->source_path);
    free(m->chat_template_src);
    free(m);
}
