/* export_internal.h - helpers shared by export_hf.c / export_gguf.c / export_tokenizer.c. */
#ifndef SAFETUNE_EXPORT_INTERNAL_H
#define SAFETUNE_EXPORT_INTERNAL_H

#include "safetune/model.h"

int st__is_gguf_source(const st_model *m);        /* source_path is a regular file */
st_status st__install_dir(const char *tmp, const char *dir); /* rename, replacing dir */

#endif
