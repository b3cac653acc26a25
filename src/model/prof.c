/* prof.c - opt-in wall-clock profile of the training step by phase (kernels.h st_prof_*).
 * Enabled by SAFETUNE_PROFILE=1 (read once); off, each probe costs one branch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "safetune/kernels.h"

enum { SLOTS = 64 };
static struct { const char *name; double s, cpu; long calls; } g_slot[SLOTS];
static int g_on = -1, g_n;

int st_prof_on(void) {
    if (g_on < 0) {
        const char *e = getenv("SAFETUNE_PROFILE");
        g_on = e && *e && strcmp(e, "0") != 0;
    }
    return g_on;
}

double st_prof_cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

void st_prof_add(const char *name, double seconds, double cpu_seconds) {
    int i = 0;
    while (i < g_n && strcmp(g_slot[i].name, name) != 0) i++;
    if (i == g_n) {
        if (g_n == SLOTS) return;
        g_slot[g_n++].name = name;
    }
    g_slot[i].s += seconds;
    g_slot[i].cpu += cpu_seconds;
    g_slot[i].calls++;
}

void st_prof_report(FILE *f, const char *title) {
    if (!g_n) return;
    double tot = 0, ctot = 0;
    for (int i = 0; i < g_n; i++) /* *_total slots enclose others */
        if (!strstr(g_slot[i].name, "_total")) tot += g_slot[i].s, ctot += g_slot[i].cpu;
    fprintf(f, "profile %s (%.2f s wall, %.2f s cpu in probes):\n", title, tot, ctot);
    for (int i = 0; i < g_n; i++)
        fprintf(f, "  %-22s %8.3f s %5.1f%% %8.3f s cpu %6ld calls\n", g_slot[i].name, g_slot[i].s,
                tot > 0 ? 100.0 * g_slot[i].s / tot : 0.0, g_slot[i].cpu, g_slot[i].calls);
}

void st_prof_reset(void) {
    memset(g_slot, 0, sizeof g_slot);
    g_n = 0;
}
