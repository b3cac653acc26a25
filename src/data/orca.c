/* orca.c - ORCA-style rows, three layouts (see data.h):
 *   {system_prompt?, question, response}            OpenOrca / SlimOrca columns
 *   {conversations: [{from, value}]}                 ShareGPT (from: system|human|gpt, also
 *                                                    user|assistant)
 *   {input: {messages}, preferred_output: [...]}     OpenAI preference (DPO) format: SFT on the
 *                                                    input messages + the preferred answer. */
#include "data_internal.h"

#include <string.h>

static int sharegpt(const cJSON *arr, st_conversation *conv, char *why, size_t cap) {
    if (!cJSON_IsArray(arr)) {
        snprintf(why, cap, "field \"conversations\" is %s, expected an array",
                 st_data_json_type(arr));
        return -1;
    }
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        const char *from, *value;
        char inner[256];
        if (!cJSON_IsObject(m)) {
            snprintf(why, cap, "conversations[%d] is %s, expected an object {from, value}", i,
                     st_data_json_type(m));
            return -1;
        }
        if (st_data_get_string(m, "from", 1, &from, inner, sizeof inner) ||
            st_data_get_string(m, "value", 1, &value, inner, sizeof inner)) {
            snprintf(why, cap, "conversations[%d]: %s", i, inner);
            return -1;
        }
        const char *role = !strcmp(from, "human") ? st_data_role("user")
                         : !strcmp(from, "gpt") ? st_data_role("assistant")
                                                : st_data_role(from);
        if (!role) {
            snprintf(why, cap, "conversations[%d]: \"from\" is \"%.40s\", expected system, human "
                     "or gpt", i, from);
            return -1;
        }
        if (st_data_conv_add(conv, role, value, "", NULL, why, cap)) return -1;
        i++;
    }
    return 0;
}

int st_data_orca_row(const cJSON *row, st_conversation *conv, char *why, size_t cap) {
    const cJSON *convs = cJSON_GetObjectItemCaseSensitive(row, "conversations");
    if (convs) return sharegpt(convs, conv, why, cap);
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(row, "input");
    const cJSON *pref = cJSON_GetObjectItemCaseSensitive(row, "preferred_output");
    if (pref || cJSON_IsObject(input)) {
        if (!cJSON_IsObject(input)) {
            snprintf(why, cap, "field \"input\" is %s, expected an object {messages}",
                     st_data_json_type(input));
            return -1;
        }
        if (st_data_add_messages(cJSON_GetObjectItemCaseSensitive(input, "messages"),
                                 "input.messages", conv, why, cap) ||
            st_data_add_messages(pref, "preferred_output", conv, why, cap))
            return -1;
        return 0;
    }
    const char *sys, *question, *response;
    if (!cJSON_GetObjectItemCaseSensitive(row, "question") &&
        !cJSON_GetObjectItemCaseSensitive(row, "response")) {
        snprintf(why, cap, "no ORCA fields: expected \"question\"/\"response\", "
                 "\"conversations\" or \"input\"/\"preferred_output\"");
        return -1;
    }
    if (st_data_get_string(row, "system_prompt", 0, &sys, why, cap) ||
        st_data_get_string(row, "question", 1, &question, why, cap) ||
        st_data_get_string(row, "response", 1, &response, why, cap))
        return -1;
    if ((sys[0] && st_data_conv_add(conv, st_data_role("system"), sys, "", NULL, why, cap)) ||
        st_data_conv_add(conv, st_data_role("user"), question, "", NULL, why, cap) ||
        st_data_conv_add(conv, st_data_role("assistant"), response, "", NULL, why, cap))
        return -1;
    return 0;
}
