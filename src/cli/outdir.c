/* outdir.c - the --out folder of a command: created on demand, and removed again when the
 * command fails before writing anything into it (a failed run leaves no empty folder behind). */
#include "cli/commands.h"
#include "safetune/base.h"

#include <unistd.h>

int cli_out_create(const char *out, int *made) {
    *made = access(out, F_OK) != 0;
    if (st_mkdir_p(out) == ST_OK) return 0;
    *made = 0;
    return 1;
}

void cli_out_abandon(const char *out, int made) {
    if (made) rmdir(out); /* fails, harmlessly, once the folder holds anything */
}
