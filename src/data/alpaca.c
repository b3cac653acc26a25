/* alpaca.c - Alpaca rows {instruction, input, output} (tatsu-lab/stanford_alpaca):
 * user = instruction (+ "\n\n" + input when non-empty), assistant = output. A missing or null
 * "input" is treated as empty. */
#include "data_internal.h"

int st_data_alpaca_row(const cJSON *row, st_conversation *conv, char *why, size_t cap) {
    const char *instr, *input, *output;
    if (st_data_get_string(row, "instruction", 1, &instr, why, cap) ||
        st_data_get_string(row, "input", 0, &input, why, cap) ||
        st_data_get_string(row, "output", 1, &output, why, cap))
        return -1;
    if (st_data_conv_add(conv, st_data_role("user"), instr, "\n\n", input, why, cap) ||
        st_data_conv_add(conv, st_data_role("assistant"), output, "", NULL, why, cap))
        return -1;
    return 0;
}
