/* dolly.c - databricks-dolly-15k rows {instruction, context, response, category}:
 * user = instruction (+ "\n\n" + context when non-empty), assistant = response. A missing or
 * null "context" is treated as empty; "category" is ignored. */
#include "data_internal.h"

int st_data_dolly_row(const cJSON *row, st_conversation *conv, char *why, size_t cap) {
    const char *instr, *context, *response;
    if (st_data_get_string(row, "instruction", 1, &instr, why, cap) ||
        st_data_get_string(row, "context", 0, &context, why, cap) ||
        st_data_get_string(row, "response", 1, &response, why, cap))
        return -1;
    if (st_data_conv_add(conv, st_data_role("user"), instr, "\n\n", context, why, cap) ||
        st_data_conv_add(conv, st_data_role("assistant"), response, "", NULL, why, cap))
        return -1;
    return 0;
}
