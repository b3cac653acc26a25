/* load.h - internal: per-format loaders behind st_model_load / st_model_load_weights. */
#ifndef SAFETUNE_MODEL_LOAD_H
#define SAFETUNE_MODEL_LOAD_H

#include "safetune/model.h"

/* Where a loader puts the tensors it reads. NULL: into the model's fp32 buffer (m->params). A
 * sink: the model is made without weights (st__model_new_shell, params NULL); `begin` is called
 * once with the final config (tie_word_embeddings settled), then each layout tensor is read
 * (dequantised, GGUF Q/K un-permuted) into one fp32 scratch of the largest tensor's size,
 * reused, and handed to `put` (idx: its index in the layout of that config); the file's pages of
 * that tensor are released from the process (madvise) once it is put. */
typedef struct {
    st_status (*begin)(void *user, const st_config *cfg);
    st_status (*put)(void *user, size_t idx, const st_param_info *p, const float *data);
    void *user;
} st__tensor_sink;
/* with_tokenizer: also load the tokenizer and chat template. sink: see above (NULL: fp32). */
st_status st_model_load_gguf(const char *path, int with_tokenizer, const st__tensor_sink *sink,
                             st_model **out);
st_status st_model_load_hf(const char *dir, int with_tokenizer, const st__tensor_sink *sink,
                           st_model **out);
/* A model of cfg without weights: config and layout only, params NULL and w unbound (a sink
 * load). Free with st_model_free. */
st_status st__model_new_shell(const st_config *cfg, st_model **out);
/* The fp32 scratch of a sink load: dst for tensor p (grown to p's size; *buf / *cap owned by the
 * caller, freed with st_free_aligned). */
float *st__sink_scratch(float **buf, size_t *cap, const st_param_info *p);
/* Drop a mapped file range [data, data + nbytes) from the process's resident pages (read-only
 * mappings: they come back from the file if read again). */
void st__drop_mapped(const void *data, size_t nbytes);
/* m's chat template from DIR/tokenizer_config.json "chat_template" (ChatML when absent). */
void st_model_load_chat_template_dir(st_model *m, const char *dir);
/* Fill m->chat from Jinja source (or ChatML when NULL / not recognised). */
void st_model_set_chat_template(st_model *m, const char *jinja, size_t len);
/* "[a, b]" / "[a]" into buf. */
const char *st_shape_str(char *buf, size_t cap, int n_dims, const int64_t *shape);
/* GGUF name of a Hugging Face tensor name (model.layers.3.self_attn.q_proj.weight ->
 * blk.3.attn_q.weight) into out; 0 if the name has no GGUF counterpart. */
int st_gguf_tensor_name(const char *hf, char *out, size_t cap);

#endif
