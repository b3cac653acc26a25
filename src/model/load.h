/* load.h - internal: per-format loaders behind st_model_load / st_model_load_weights. */
#ifndef SAFETUNE_MODEL_LOAD_H
#define SAFETUNE_MODEL_LOAD_H

#include "safetune/model.h"

/* with_tokenizer: also load the tokenizer and chat template. */
st_status st_model_load_gguf(const char *path, int with_tokenizer, st_model **out);
st_status st_model_load_hf(const char *dir, int with_tokenizer, st_model **out);
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
