/* data_dump.c - load a dataset with st_dataset_load and print each conversation as one JSON
 * line [{"role": ..., "content": ...}, ...], for data_ref.py. Usage: data_dump FILE [FORMAT] */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "safetune/data.h"

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: data_dump FILE [FORMAT]\n"), 2;
    st_data_format fmt = ST_DATA_AUTO;
    if (argc > 2 && st_data_format_parse(argv[2], &fmt)) return fprintf(stderr, "%s\n", st_last_error()), 2;
    st_dataset ds;
    if (st_dataset_load(argv[1], fmt, &ds)) return fprintf(stderr, "error: %s\n", st_last_error()), 1;
    for (size_t r = 0; r < ds.n; r++) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < ds.rows[r].n_msgs; i++) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", ds.rows[r].msgs[i].role);
            cJSON_AddStringToObject(m, "content", ds.rows[r].msgs[i].content);
            cJSON_AddItemToArray(arr, m);
        }
        char *s = cJSON_PrintUnformatted(arr);
        puts(s);
        free(s);
        cJSON_Delete(arr);
    }
    st_dataset_free(&ds);
    return 0;
}
