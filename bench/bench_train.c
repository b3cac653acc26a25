/* bench_train.c - training throughput of one full optimiser step (forward, backward, clip,
 * AdamW, EMA) on a real checkpoint, fp32 and bf16 matmuls, in two data configurations:
 *   random  B rows of T+1 random tokens, every position trained (the dense worst case);
 *   alpaca  Alpaca rows (ALPACA_JSON) rendered with the model's chat template, the loss on
 *           assistant tokens only, packed back to back into B rows of T+1 tokens (as SFT
 *           packing does; attention is not reset between packed conversations).
 * Usage: bench_train MODEL [B=8] [T=512] [steps=2] [ALPACA_JSON [DUMP_DIR]]
 *   steps counts the untimed warm-up step; without ALPACA_JSON only the random configuration
 *   runs. DUMP_DIR receives {random,alpaca}_ids.i32 ([B, T+1] int32) and _mask.u8 ([B, T+1],
 *   1 = assistant token) so bench/train_ref.py trains PyTorch on exactly the same batches.
 *   BENCH_TRAIN_PREC=fp32|bf16 runs one precision only (A/B runs).
 * Each row is truncated to T tokens by the collator, so position t < T-1 predicts token t+1
 * where that token is trained; the last position has no target (the same on the PyTorch side).
 * Prints tokens/s (B*T per step) per configuration and precision, the share of trained
 * positions, and peak RSS vs 1.3 x (20 bytes x parameters) + activations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "safetune/backward.h"
#include "safetune/data.h"
#include "safetune/kernels.h"
#include "safetune/model.h"
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

static int alloc_rows(st_tokenized *tk, int B, size_t L) {
    tk->n = (size_t)B;
    tk->ids = malloc(L * B * sizeof *tk->ids);
    tk->mask = malloc(L * B);
    tk->offsets = malloc((B + 1) * sizeof *tk->offsets);
    if (!tk->ids || !tk->mask || !tk->offsets) return -1;
    for (int i = 0; i <= B; i++) tk->offsets[i] = (size_t)i * L;
    return 0;
}

/* B rows of L random tokens, all trained */
static int make_random(st_tokenized *tk, int B, size_t L, int V) {
    if (alloc_rows(tk, B, L)) return -1;
    st_rng r;
    st_rng_seed(&r, 1);
    for (size_t i = 0; i < L * B; i++) {
        tk->ids[i] = (int32_t)(st_rng_u64(&r) % (uint64_t)V);
        tk->mask[i] = 1;
    }
    return 0;
}

/* Alpaca rows 0, 1, 2, ... rendered (chat template, assistant mask) and concatenated until
 * B rows of L tokens are full. */
static int make_alpaca(st_tokenized *tk, int B, size_t L, const st_model *m, const char *path,
                       size_t *n_convs) {
    st_dataset ds;
    if (st_dataset_load(path, ST_DATA_ALPACA, &ds)) return -1;
    if (alloc_rows(tk, B, L)) {
        st_dataset_free(&ds);
        return -1;
    }
    size_t fill = 0, need = L * B, r = 0;
    for (; r < ds.n && fill < need; r++) {
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t n = 0;
        if (st_chat_render(&m->chat, m->tokenizer, ds.rows[r].msgs, ds.rows[r].n_msgs, 0, &ids,
                           &mask, &n)) {
            st_dataset_free(&ds);
            return -1;
        }
        size_t take = n < need - fill ? n : need - fill;
        memcpy(tk->ids + fill, ids, take * sizeof *ids);
        memcpy(tk->mask + fill, mask, take);
        fill += take;
        free(ids);
        free(mask);
    }
    *n_convs = r;
    st_dataset_free(&ds);
    if (fill < need) {
        fprintf(stderr, "bench_train: %s: only %zu tokens for %zu\n", path, fill, need);
        return -1;
    }
    return 0;
}

/* positions the collator trains in a row of L tokens truncated to T: t < T-1 with mask[t+1] */
static size_t trained_positions(const st_tokenized *tk, int B, int T) {
    size_t n = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t + 1 < T; t++) n += tk->mask[tk->offsets[b] + (size_t)t + 1] != 0;
    return n;
}

static int dump(const char *dir, const char *name, const st_tokenized *tk, int B, size_t L) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s_ids.i32", dir, name);
    FILE *f = fopen(p, "wb");
    int ok = f && fwrite(tk->ids, sizeof *tk->ids, L * B, f) == L * B;
    if (f && fclose(f)) ok = 0;
    snprintf(p, sizeof p, "%s/%s_mask.u8", dir, name);
    f = ok ? fopen(p, "wb") : NULL;
    ok = f && fwrite(tk->mask, 1, L * B, f) == L * B;
    if (f && fclose(f)) ok = 0;
    if (!ok) fprintf(stderr, "bench_train: cannot write %s\n", p);
    return ok ? 0 : -1;
}

/* steps optimiser steps on tk (the first untimed); returns tokens/s, or -1 on error */
static double run(st_model *m, const st_tokenized *tk, int B, int T, int steps, int bf16,
                  const char *label) {
    st_train_config c;
    st_train_config_default(&c);
    c.batch_size = B;
    c.max_seq_len = T;
    c.max_steps = steps;
    c.val_fraction = 0;
    c.bf16 = bf16;
    c.optim.lr = 1e-6;
    st_trainer *t;
    if (st_trainer_new(m, tk, &c, &t)) {
        fprintf(stderr, "bench_train: %s\n", st_last_error());
        return -1;
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
            st_trainer_free(t);
            return -1;
        }
        if (s >= 1) tok += (double)B * T;
        printf("  %s step %d: %.2f s (cpu %.2f s), loss %.4f\n", label, s + 1, sm.step_s,
               cpu_s() - c0, sm.loss);
        fflush(stdout);
    }
    double tps = steps > 1 ? tok / (st_time_now() - t0) : 0;
    st_prof_report(stdout, label);
    st_prof_reset();
    st_trainer_free(t);
    return tps;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_train MODEL [B] [T] [steps] [ALPACA_JSON [DUMP_DIR]]\n");
        return 2;
    }
    const int B = argc > 2 ? atoi(argv[2]) : 8, T = argc > 3 ? atoi(argv[3]) : 512;
    const int steps = argc > 4 ? atoi(argv[4]) : 2;
    const char *alpaca = argc > 5 ? argv[5] : NULL, *dir = argc > 6 ? argv[6] : NULL;
    const char *prec = getenv("BENCH_TRAIN_PREC");
    const int p0 = prec && !strcmp(prec, "bf16") ? 1 : 0, p1 = prec && !strcmp(prec, "fp32") ? 0 : 1;
    st_model *m;
    if ((alpaca ? st_model_load(argv[1], &m) : st_model_load_weights(argv[1], &m))) {
        fprintf(stderr, "bench_train: %s\n", st_last_error());
        return 1;
    }
    const size_t L = (size_t)T + 1;
    st_tokenized tk[2];
    memset(tk, 0, sizeof tk);
    size_t n_convs = 0;
    if (make_random(&tk[0], B, L, m->config.vocab_size) ||
        (alpaca && make_alpaca(&tk[1], B, L, m, alpaca, &n_convs))) {
        fprintf(stderr, "bench_train: %s\n", st_last_error());
        return 1;
    }
    if (dir && (dump(dir, "random", &tk[0], B, L) || dump(dir, "alpaca", &tk[1], B, L))) return 1;
    const size_t n = m->layout.n_floats;
    const size_t acts = st_train_acts_floats(&m->config, B, T) * sizeof(float);
    printf("bench_train: %s, %.1fM parameters, batch %d x %d tokens, %d timed steps, %d threads\n",
           argv[1], n / 1e6, B, T, steps - 1, st_num_threads());
    const char *names[2] = {"random", "alpaca"};
    double tps[2][2] = {{0, 0}, {0, 0}};
    for (int d = 0; d < (alpaca ? 2 : 1); d++) {
        const size_t tr = trained_positions(&tk[d], B, T);
        printf("config %s: %zu of %d positions trained (%.1f%%)", names[d], tr, B * T,
               100.0 * (double)tr / (B * T));
        if (d == 1) printf(", %zu conversations packed", n_convs);
        printf("\n");
        for (int p = p0; p <= p1; p++) {
            char label[32];
            snprintf(label, sizeof label, "%s %s", p ? "bf16" : "fp32", names[d]);
            tps[d][p] = run(m, &tk[d], B, T, steps, p, label);
            if (tps[d][p] < 0) return 1;
        }
    }
    double rss = peak_rss_mib(), budget = (1.3 * 20.0 * (double)n + (double)acts) / 1048576.0;
    for (int d = 0; d < (alpaca ? 2 : 1); d++)
        for (int p = p0; p <= p1; p++)
            printf("safetune %s %s: %.1f tokens/s\n", p ? "bf16" : "fp32", names[d], tps[d][p]);
    printf("peak RSS %.0f MiB vs budget 1.3 x 20 B x %.1fM params + %.0f MiB activations = %.0f MiB (%s)\n",
           rss, n / 1e6, acts / 1048576.0, budget, rss <= budget ? "within" : "OVER");
    for (int d = 0; d < 2; d++) st_tokenized_free(&tk[d]);
    st_model_free(m);
    return 0;
}
