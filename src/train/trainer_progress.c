/* trainer_progress.c - progress on stderr: one line rewritten with '\r' on a terminal, plain
 * lines every 10 s (and at the end) otherwise. */
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "train/trainer_internal.h"

void st__progress_start(st_progress *p, int64_t start_step) {
    p->start_step = start_step;
    p->start = st_time_now();
    p->last_print = 0;
    p->tty = isatty(2);
}

static void fmt_time(char *buf, size_t cap, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long v = (long)(s + 0.5);
    if (v >= 3600) snprintf(buf, cap, "%ldh%02ldm", v / 3600, (v / 60) % 60);
    else snprintf(buf, cap, "%ldm%02lds", v / 60, v % 60);
}

void st__progress_update(st_progress *p, const st_step_metrics *m, int64_t total, int final) {
    const double now = st_time_now();
    if (!final && now - p->last_print < (p->tty ? 0.2 : 10.0)) return;
    p->last_print = now;
    const double el = now - p->start;
    int64_t done = m->step - p->start_step;
    double per_step = done > 0 ? el / (double)done : 0;
    char eta[32], ela[32];
    fmt_time(eta, sizeof eta, per_step * (double)(total - m->step));
    fmt_time(ela, sizeof ela, el);
    char val[48] = "";
    if (m->has_val) snprintf(val, sizeof val, " val %.4f", m->val_loss);
    fprintf(stderr, "%strain %lld/%lld [%3.0f%%] loss %.4f%s lr %.3g %.0f tok/s %s ETA %s%s",
            p->tty ? "\r" : "", (long long)m->step, (long long)total,
            100.0 * (double)m->step / (double)(total > 0 ? total : 1), m->loss, val, m->lr,
            m->tokens_per_s, ela, eta, p->tty ? (final ? "\n" : "\x1b[K") : "\n");
    fflush(stderr);
}
