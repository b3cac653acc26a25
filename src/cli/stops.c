/* stops.c - --stop-id N / --stop TEXT (commands.h CLI_STOP_OPTS) into st_generate_options. */
#include "cli/commands.h"

#include <errno.h>
#include <stdlib.h>

int cli_apply_stops(const st_args_spec *spec, const st_opt_multi *ids, const st_opt_multi *texts, int32_t *ids_buf,
                    st_generate_options *go) {
    for (int i = 0; i < ids->n; i++) {
        char *end;
        errno = 0;
        long v = strtol(ids->v[i], &end, 10);
        if (!*ids->v[i] || *end || errno || v < 0 || v > INT32_MAX)
            return st_args_fail(spec, "--stop-id: expected a token id (an integer >= 0), got '%s'", ids->v[i]);
        ids_buf[i] = (int32_t)v;
    }
    for (int i = 0; i < texts->n; i++)
        if (!texts->v[i][0]) return st_args_fail(spec, "--stop: the text is empty");
    go->extra_stop_ids = ids->n ? ids_buf : NULL;
    go->n_extra_stop_ids = ids->n;
    go->stop_texts = texts->n ? texts->v : NULL;
    go->n_stop_texts = texts->n;
    return 0;
}
