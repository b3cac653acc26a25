/* outdir.c - the --out folder of a command: created on demand, and removed again when the
 * command fails, or is interrupted (SIGINT, SIGTERM), before writing anything into it (a failed
 * or cancelled run leaves no empty folder behind). */
#include "cli/commands.h"
#include "safetune/base.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static char made_path[4096];
static volatile sig_atomic_t made_set;

/* Also the SIGINT/SIGTERM handler cli_out_create installs: rmdir, signal, pthread_sigmask
 * (sigprocmask) and raise are async-signal-safe, and rmdir removes the folder only while empty. */
void cli_signal_exit(int sig) {
    if (made_set) rmdir(made_path);
    signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    raise(sig); /* this thread: the default action ends the process */
    _exit(128 + sig);
}

int cli_out_create(const char *out, int *made) {
    *made = access(out, F_OK) != 0;
    if (*made && strlen(out) < sizeof made_path) { /* armed before the folder exists: no window */
        memcpy(made_path, out, strlen(out) + 1);
        made_set = 1;
        signal(SIGINT, cli_signal_exit);
        signal(SIGTERM, cli_signal_exit);
    }
    if (st_mkdir_p(out) == ST_OK) return 0;
    made_set = 0;
    *made = 0;
    return 1;
}

void cli_out_abandon(const char *out, int made) {
    if (made) rmdir(out); /* fails, harmlessly, once the folder holds anything */
}
