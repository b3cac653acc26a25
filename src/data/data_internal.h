/* data_internal.h - helpers shared by the dataset readers (not public API). */
#ifndef SAFETUNE_DATA_INTERNAL_H
#define SAFETUNE_DATA_INTERNAL_H

#include <cjson/cJSON.h>

#include "safetune/data.h"

/* Convert one JSON row into a conversation. On failure writes the reason (no position) into
 * why[cap] and returns nonzero; conv is then freed by the caller. */
typedef int (*st_data_row_fn)(const cJSON *row, st_conversation *conv, char *why, size_t cap);

int st_data_alpaca_row(const cJSON *row, st_conversation *conv, char *why, size_t cap);
int st_data_dolly_row(const cJSON *row, st_conversation *conv, char *why, size_t cap);
int st_data_orca_row(const cJSON *row, st_conversation *conv, char *why, size_t cap);
int st_data_messages_row(const cJSON *row, st_conversation *conv, char *why, size_t cap);

/* Canonical static role string for "system"/"user"/"assistant" (NULL if other). */
const char *st_data_role(const char *name);
/* Append a message (content copied, parts joined: a + sep + b when b is non-empty and non-NULL). */
int st_data_conv_add(st_conversation *c, const char *role, const char *a, const char *sep,
                     const char *b, char *why, size_t cap);
void st_data_conv_free(st_conversation *c);
/* String field `key` of object row -> *out. required = 0 allows a missing key / null (*out = "").
 * Errors: 'missing field "key"', 'field "key" is a number, expected a string'. */
int st_data_get_string(const cJSON *row, const char *key, int required, const char **out,
                       char *why, size_t cap);
/* Messages array [{role, content}] (role must be system|user|assistant) appended to c; `what`
 * names the array in messages. */
int st_data_add_messages(const cJSON *arr, const char *what, st_conversation *c, char *why,
                         size_t cap);
/* Final check: at least one message with role assistant. */
int st_data_check_conv(const st_conversation *c, char *why, size_t cap);
/* JSON type name for messages ("number", "array", ...). */
const char *st_data_json_type(const cJSON *v);

#endif
