/* bench_train.c - training throughput of one full optimiser step (forward, backward, clip,
 * AdamW, EMA) on a real checkpoint with random tokens, fp32 and bf16 matmuls.
 * Usage: bench_train MODEL [B=8] [T=512] [steps=3]  (first step is a warm-up, not timed)
 * Prints tokens/s per precision and peak RSS vs 1.3 x (20 bytes x parameters) + activations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "safetune/backward.h"
#include "safetune/kernels.h"
#include "safetune/trainer.h"

/* user + system CPU seconds of the process: under load from other users, tokens per CPU
 * second is steadier than tokens per wall second */
static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_train MODEL [B] [T] [steps]\n");
        return 2;
    }
    const int B = argc > 2 ? atoi(argv[2]) : 8, T = argc > 3 ? atoi(argv[3]) : 512;
    const int steps = argc > 4 ? atoi(argv[4]) : 3;
    st_model *m;
    if (st_model_load_weights(argv[1], &m)) {
        fprintf(stderr, "bench_train: %s\n", st_last_error());
        return 1;
    }
    /* B rows of T+1 random tokens, all trained */
    st_tokenized tk = {0};
    tk.n = (size_t)B;
    size_t L = (size_t)T + 1;
    tk.ids = malloc(L * B * sizeof *tk.ids);
    tk.mask = malloc(L * B);
    tk.offsets = malloc((B + 1) * sizeof *tk.offsets);
    st_rng r;
    st_rng_seed(&r, 1);
    for (size_t i = 0; i < L * B; i++) {
        tk.ids[i] = (int32_t)(st_rng_u64(&r) % (uint64_t)m->config.vocab_size);
        tk.mask[i] = 1;
    }
    for (int i = 0; i <= B; i++) tk.offsets[i] = (size_t)i * L;
    const size_t n = m->layout.n_floats;
    const size_t acts = st_train_acts_floats(&m->config, B, T) * sizeof(float);
    printf("bench_train: %s, %.1fM parameters, batch %d x %d tokens, %d timed steps, %d threads\n",
           argv[1], n / 1e6, B, T, steps - 1, st_num_threads());
    double tps[2] = {0, 0};
    for (int prec = 0; prec < 2; prec++) {
        st_train_config c;
        st_train_config_default(&c);
        c.batch_size = B;
        c.max_seq_len = T;
        c.max_steps = steps;
        c.val_fraction = 0;
        c.bf16 = prec;
        c.optim.lr = 1e-6;
        st_trainer *t;
        if (st_trainer_new(m, &tk, &c, &t)) {
            fprintf(stderr, "bench_train: %s\n", st_last_error());
            return 1;
        }
        double t0 = 0, tok = 0;
        for (int s = 0; s < steps; s++) {
            st_step_metrics sm;
            const double c0 = cpu_s();
            if (s == 1) {
                t0 = st_time_now();
                st_prof_reset(); /* profile the timed steps only */
            }
            if (st_trainer_step(t, &sm)) {
                fprintf(stderr, "bench_train: %s\n", st_last_error());
                return 1;
            }
            if (s >= 1) tok += (double)B * T;
            printf("  %s step %d: %.2f s (cpu %.2f s), loss %.4f\n", prec ? "bf16" : "fp32", s + 1,
                   sm.step_s, cpu_s() - c0, sm.loss);
            fflush(stdout);
        }
        tps[prec] = steps > 1 ? tok / (st_time_now() - t0) : 0;
        st_prof_report(stdout, prec ? "bf16" : "fp32");
        st_prof_reset();
        st_trainer_free(t);
    }
    double rss = peak_rss_mib(), budget = (1.3 * 20.0 * (double)n + (double)acts) / 1048576.0;
    printf("safetune fp32: %.1f tokens/s\nsafetune bf16: %.1f tokens/s\n", tps[0], tps[1]);
    printf("peak RSS %.0f MiB vs budget 1.3 x 20 B x %.1fM params + %.0f MiB activations = %.0f MiB (%s)\n",
           rss, n / 1e6, acts / 1048576.0, budget, rss <= budget ? "within" : "OVER");
    st_model_free(m);
    return 0;
}
