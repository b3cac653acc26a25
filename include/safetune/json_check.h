/* json_check.h - strict parsing of hand-written JSON configs (`train --config`, study configs):
 * errors located by line and column, duplicate keys refused (cJSON keeps both as siblings, and
 * lookups would silently take the first), and the edit distance behind "did you mean" hints. */
#ifndef SAFETUNE_JSON_CHECK_H
#define SAFETUNE_JSON_CHECK_H

#include <cjson/cJSON.h>

#include "safetune/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Parse the NUL-terminated text of file src (the name used in messages) into *out (caller frees
 * with cJSON_Delete). Errors: ST_ERR_FORMAT "SRC: line L, column C: invalid JSON" (C counts
 * bytes from 1), or "SRC: line L: key 'PATH' appears twice in one object (first on line M);
 * keep one" where PATH is the key's path (defense[1].lr) and keys compare as written
 * (escapes not decoded). Any JSON value is accepted at the top (RFC 8259). */
st_status st_json_parse_checked(const char *text, const char *src, cJSON **out);

/* Levenshtein distance between a and b, ASCII letters compared case-insensitively; 99 when
 * either is longer than 63 bytes (no hint for long names). */
size_t st_edit_distance(const char *a, const char *b);

/* The name of names[0..n) closest to name by st_edit_distance, if it is within 1 edit (names of
 * up to 4 characters), 2 (up to 8) or 3; else NULL. */
const char *st_closest_name(const char *name, const char *const *names, size_t n);

#ifdef __cplusplus
}
#endif

#endif
