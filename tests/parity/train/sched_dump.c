/* sched_dump.c - print lr(k) = base_lr * factor(k) for k = 0..K-1, one per line (%.17g), for
 * sched_ref.py. Usage: sched_dump KIND BASE_LR WARMUP TOTAL K [NUM_CYCLES STEP_SIZE GAMMA] */
#include <stdio.h>
#include <stdlib.h>

#include "safetune/schedule.h"

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: sched_dump KIND BASE_LR WARMUP TOTAL K [NUM_CYCLES STEP_SIZE GAMMA]\n");
        return 2;
    }
    st_schedule s;
    st_sched_kind kind;
    if (st_schedule_kind_parse(argv[1], &kind)) return fprintf(stderr, "%s\n", st_last_error()), 1;
    st_schedule_default(&s, kind, atoll(argv[4]));
    double base = strtod(argv[2], NULL);
    s.warmup_steps = atoll(argv[3]);
    long K = atol(argv[5]);
    if (argc > 6) s.num_cycles = strtod(argv[6], NULL);
    if (argc > 7) s.step_size = atoll(argv[7]);
    if (argc > 8) s.gamma = strtod(argv[8], NULL);
    if (st_schedule_validate(&s)) return fprintf(stderr, "%s\n", st_last_error()), 1;
    for (long k = 0; k < K; k++) printf("%.17g\n", st_schedule_lr(&s, base, k));
    return 0;
}
