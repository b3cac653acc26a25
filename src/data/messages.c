/* messages.c - conversation building helpers and the OpenAI `messages` JSONL reader:
 * {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}
 * (OpenAI chat fine-tuning data format). */
#include "data_internal.h"

#include <stdlib.h>
#include <string.h>

static const char k_system[] = "system", k_user[] = "user", k_assistant[] = "assistant";

const char *st_data_role(const char *name) {
    if (!strcmp(name, "system")) return k_system;
    if (!strcmp(name, "user")) return k_user;
    if (!strcmp(name, "assistant")) return k_assistant;
    return NULL;
}

const char *st_data_json_type(const cJSON *v) {
    if (!v) return "missing";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid";
}

int st_data_conv_add(st_conversation *c, const char *role, const char *a, const char *sep,
                     const char *b, char *why, size_t cap) {
    size_t la = strlen(a), ls = 0, lb = 0;
    if (b && b[0]) {
        ls = strlen(sep);
        lb = strlen(b);
    }
    char *s = malloc(la + ls + lb + 1);
    st_chat_message *m = realloc(c->msgs, (c->n_msgs + 1) * sizeof *m);
    if (!s || !m) {
        free(s);
        if (m) c->msgs = m;
        snprintf(why, cap, "out of memory");
        return -1;
    }
    memcpy(s, a, la);
    if (lb) {
        memcpy(s + la, sep, ls);
        memcpy(s + la + ls, b, lb);
    }
    s[la + ls + lb] = '\0';
    c->msgs = m;
    c->msgs[c->n_msgs].role = role;
    c->msgs[c->n_msgs].content = s;
    c->n_msgs++;
    return 0;
}

void st_data_conv_free(st_conversation *c) {
    for (size_t i = 0; i < c->n_msgs; i++) free((char *)c->msgs[i].content);
    free(c->msgs);
    c->msgs = NULL;
    c->n_msgs = 0;
}

int st_data_get_string(const cJSON *row, const char *key, int required, const char **out,
                       char *why, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, key);
    if (!v || (!required && cJSON_IsNull(v))) {
        if (required) {
            snprintf(why, cap, "missing field \"%s\"", key);
            return -1;
        }
        *out = "";
        return 0;
    }
    if (!cJSON_IsString(v) || !v->valuestring) {
        snprintf(why, cap, "field \"%s\" is %s, expected a string", key, st_data_json_type(v));
        return -1;
    }
    *out = v->valuestring;
    return 0;
}

int st_data_add_messages(const cJSON *arr, const char *what, st_conversation *c, char *why,
                         size_t cap) {
    if (!arr) {
        snprintf(why, cap, "missing field \"%s\"", what);
        return -1;
    }
    if (!cJSON_IsArray(arr)) {
        snprintf(why, cap, "field \"%s\" is %s, expected an array of messages", what,
                 st_data_json_type(arr));
        return -1;
    }
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        const char *role, *content;
        char inner[256];
        if (!cJSON_IsObject(m)) {
            snprintf(why, cap, "%s[%d] is %s, expected an object {role, content}", what, i,
                     st_data_json_type(m));
            return -1;
        }
        if (st_data_get_string(m, "role", 1, &role, inner, sizeof inner) ||
            st_data_get_string(m, "content", 1, &content, inner, sizeof inner)) {
            snprintf(why, cap, "%s[%d]: %s", what, i, inner);
            return -1;
        }
        const char *r = st_data_role(role);
        if (!r) {
            snprintf(why, cap, "%s[%d]: role \"%.40s\" is not system, user or assistant", what, i,
                     role);
            return -1;
        }
        if (st_data_conv_add(c, r, content, "", NULL, why, cap)) return -1;
        i++;
    }
    return 0;
}

int st_data_check_conv(const st_conversation *c, char *why, size_t cap) {
    for (size_t i = 0; i < c->n_msgs; i++)
        if (c->msgs[i].role == k_assistant) return 0;
    snprintf(why, cap, "no assistant message (nothing to train on)");
    return -1;
}

int st_data_messages_row(const cJSON *row, st_conversation *conv, char *why, size_t cap) {
    return st_data_add_messages(cJSON_GetObjectItemCaseSensitive(row, "messages"), "messages",
                                conv, why, cap);
}
