/* stopsig.c - SIGINT/SIGTERM for a command that stops cleanly (eval safety): the signals are
 * blocked in every thread and taken by one thread with sigwait, as `train` does (cmd_train.c):
 * no handler ever returns into compute code. */
#include "cli/commands.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

static sigset_t g_set;
static volatile sig_atomic_t *g_stop, *g_phase;
static const char *g_msg;

static void *stop_thread(void *arg) {
    (void)arg;
    for (;;) {
        int sig;
        if (sigwait(&g_set, &sig) != 0) continue;
        if (*g_phase != 1 || *g_stop) cli_signal_exit(sig);
        *g_stop = sig;
        if (g_msg && write(STDERR_FILENO, g_msg, strlen(g_msg)) < 0) { /* stderr is gone: nothing to do */
        }
    }
    return NULL;
}

void cli_stop_signals_start(volatile sig_atomic_t *stop, volatile sig_atomic_t *phase, const char *msg) {
    g_stop = stop;
    g_phase = phase;
    g_msg = msg;
    sigemptyset(&g_set);
    sigaddset(&g_set, SIGINT);
    sigaddset(&g_set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &g_set, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, stop_thread, NULL) == 0) pthread_detach(th);
    else pthread_sigmask(SIG_UNBLOCK, &g_set, NULL); /* no thread: default actions */
}
