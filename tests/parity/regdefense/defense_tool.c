/* defense_tool.c - drives the trainer's defenses against θ_0 (constrained SFT, KL to θ_0, EWC;
 * DEFENSES.md §4, §8) for check_regdefense.py.
 *   defense_tool train MODEL_DIR OUT [key=value ...]
 *     key: any training setting by its JSON key (lr, csft_beta, kl_lambda, ewc_lambda, ...) plus
 *       rows, max_len    synthetic rows (seeded lengths 3..max_len, random ids, first third prompt)
 *       align_rows, dup  EWC: synthetic alignment rows (seed 13); dup=1 lists each row twice
 *       perturb=S        θ ← θ + S·N(0,1)·|θ| before step 1 (θ_0 stays the loaded weights)
 *       save_at=K        also save a checkpoint OUT/ck after step K
 *     writes OUT/steps.txt (step loss lr grad_norm n_micro epoch penalty csft_loss kl), batches.bin
 *     (per step, per micro-batch: i32 B, T, inputs, targets, f32 mask), grad1.bin (the full
 *     gradient of step 1 before clipping, defense terms included), start.bin (θ before step 1),
 *     live.bin, ema.bin (flat f32), layout.txt, data.bin and align.bin (the training and
 *     alignment rows: i32 n, then per row i32 len, ids, u8 mask), and with a checkpoint the cache / Fisher blobs as logp0.bin / fisher.bin.
 *   defense_tool resume MODEL_DIR OUT CKPT [key=value ...]
 *     the same trainer resumed from CKPT and run to the end: writes OUT/steps.txt, live.bin, ema.bin */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/checkpoint.h"
#include "safetune/train_settings.h"
#include "safetune/trainer.h"
#include "train/trainer_internal.h"

#define CHECK(x)                                                                   \
    do {                                                                           \
        if ((x) != ST_OK) {                                                        \
            fprintf(stderr, "error: %s: %s\n", #x, st_last_error());               \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

static const char *kv(int argc, char **argv, const char *key, const char *def) {
    size_t n = strlen(key);
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], key, n) && argv[i][n] == '=') return argv[i] + n + 1;
    return def;
}

static void write_bin(const char *dir, const char *name, const void *p, size_t bytes) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, bytes, f) != bytes) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    fclose(f);
}

/* n rows of lengths in [3, max_len]: the first third is "prompt" (mask 0), the rest trained;
 * dup = 1: every row twice in a row */
static void synth(st_tokenized *tk, int n, int max_len, int V, uint64_t seed, int dup) {
    st_rng r;
    st_rng_seed(&r, seed);
    const int k = dup ? 2 : 1;
    tk->n = (size_t)n * k;
    tk->offsets = calloc(tk->n + 1, sizeof *tk->offsets);
    int *len = malloc((size_t)n * sizeof *len);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        len[i] = 3 + (int)(st_rng_u64(&r) % (uint64_t)(max_len - 2));
        total += (size_t)len[i] * k;
    }
    tk->ids = malloc(total * sizeof *tk->ids);
    tk->mask = malloc(total);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        const size_t start = o;
        for (int t = 0; t < len[i]; t++, o++) {
            tk->ids[o] = (int32_t)(st_rng_u64(&r) % (uint64_t)V);
            tk->mask[o] = t >= len[i] / 3;
        }
        tk->offsets[(size_t)i * k] = start;
        if (dup) {
            memcpy(tk->ids + o, tk->ids + start, (size_t)len[i] * sizeof *tk->ids);
            memcpy(tk->mask + o, tk->mask + start, (size_t)len[i]);
            tk->offsets[(size_t)i * k + 1] = o;
            o += (size_t)len[i];
        }
    }
    tk->offsets[tk->n] = o;
    free(len);
}

static void config(int argc, char **argv, st_train_config *c) {
    st_train_config_default(c);
    /* the parity defaults of check_trainer.py's BASE */
    const char *base[] = {"lr=3e-3", "weight_decay=0.1", "beta2=0.95", "lr_schedule=cosine", "warmup_steps=3",
                          "batch_size=4", "grad_accum=2", "max_steps=10", "ema_decay=0.9", "max_seq_len=24",
                          "val_fraction=0", "seed=7"};
    for (int pass = 0; pass < 2; pass++) {
        const int n = pass ? argc : (int)(sizeof base / sizeof *base);
        char **list = pass ? argv : (char **)base;
        for (int i = 0; i < n; i++) {
            char key[64];
            const char *eq = strchr(list[i], '=');
            if (!eq || (size_t)(eq - list[i]) >= sizeof key) continue;
            memcpy(key, list[i], (size_t)(eq - list[i]));
            key[eq - list[i]] = 0;
            const st_train_setting *s = st_train_setting_find(key);
            if (s) CHECK(st_train_setting_set(c, s, eq + 1));
        }
    }
}

static void write_steps(FILE *fs, const st_step_metrics *sm) {
    fprintf(fs, "%lld %.9g %.17g %.9g %d %.17g %.17g %.17g %.17g\n", (long long)sm->step, sm->loss, sm->lr,
            sm->grad_norm, sm->n_micro, sm->epoch, isfinite(sm->penalty) ? sm->penalty : 0.0,
            isfinite(sm->csft_loss) ? sm->csft_loss : 0.0, isfinite(sm->kl) ? sm->kl : 0.0);
}

int main(int argc, char **argv) {
    if (argc < 4 || (strcmp(argv[1], "train") && strcmp(argv[1], "resume"))) {
        fprintf(stderr, "usage: defense_tool train|resume MODEL_DIR OUT [CKPT] [key=value ...]\n");
        return 2;
    }
    const int resume = !strcmp(argv[1], "resume");
    const char *mdir = argv[2], *out = argv[3], *ck = resume ? argv[4] : NULL;
    const int na = argc - (resume ? 5 : 4);
    char **av = argv + (resume ? 5 : 4);
    st_model *m;
    CHECK(st_model_load_weights(mdir, &m));
    st_train_config c;
    config(na, av, &c);
    st_tokenized tk, al = {0};
    synth(&tk, atoi(kv(na, av, "rows", "40")), atoi(kv(na, av, "max_len", "30")), m->config.vocab_size, 11, 0);
    const int n_align = atoi(kv(na, av, "align_rows", "0"));
    if (n_align > 0) {
        synth(&al, n_align, atoi(kv(na, av, "max_len", "30")), m->config.vocab_size, 13, atoi(kv(na, av, "dup", "0")));
        c.align_data = &al;
    }
    st_trainer *t;
    CHECK(st_trainer_new(m, &tk, &c, &t));
    char path[1024];
    if (resume) CHECK(st_trainer_resume(t, ck));
    const double perturb = atof(kv(na, av, "perturb", "0"));
    if (perturb > 0 && !resume) { /* θ moves away from θ_0; the trainer's θ_0 stays the loaded weights */
        st_rng r;
        st_rng_seed(&r, 99);
        for (size_t i = 0; i < t->n; i++) t->theta[i] += (float)(perturb * st_rng_normal(&r) * fabs(t->theta[i]));
    }
    if (!resume) write_bin(out, "start.bin", t->theta, t->n * 4);
    const int64_t save_at = atoll(kv(na, av, "save_at", "0"));
    snprintf(path, sizeof path, "%s/steps.txt", out);
    FILE *fs = fopen(path, "w");
    snprintf(path, sizeof path, "%s/batches.bin", out);
    FILE *fb = resume ? NULL : fopen(path, "wb");
    if (!fs || (!resume && !fb)) { fprintf(stderr, "cannot write into %s\n", out); return 1; }
    while (st_trainer_steps_done(t) < st_trainer_max_steps(t)) {
        st_step_metrics sm;
        CHECK(st_trainer_step(t, &sm));
        write_steps(fs, &sm);
        if (sm.step == 1 && !resume) write_bin(out, "grad1.bin", t->grads, t->n * 4);
        for (int i = 0; fb && i < sm.n_micro; i++) {
            const st_batch *b = st_trainer_batch(t, i);
            int32_t hdr[2] = {b->B, b->T};
            size_t nt = (size_t)b->B * b->T;
            fwrite(hdr, 4, 2, fb);
            fwrite(b->inputs, 4, nt, fb);
            fwrite(b->targets, 4, nt, fb);
            fwrite(b->loss_mask, 4, nt, fb);
        }
        if (sm.step == save_at && !resume) {
            snprintf(path, sizeof path, "%s/ck", out);
            CHECK(st_trainer_save_checkpoint(t, path));
            if (c.csft_beta > 0) {
                float *b = malloc(tk.offsets[tk.n] * 4);
                CHECK(st_checkpoint_read_blob(path, "x-csft_logp0", 0, b, tk.offsets[tk.n] * 4));
                write_bin(out, "logp0.bin", b, tk.offsets[tk.n] * 4);
                free(b);
            }
            if (c.ewc_lambda > 0) {
                float *b = malloc(t->n * 4);
                CHECK(st_checkpoint_read_blob(path, "x-ewc_fisher", 0, b, t->n * 4));
                write_bin(out, "fisher.bin", b, t->n * 4);
                free(b);
            }
        }
    }
    fclose(fs);
    if (fb) fclose(fb);
    write_bin(out, "live.bin", st_trainer_params(t), t->n * 4);
    for (int j = 0; j < st_trainer_n_ema(t); j++) {
        char name[32];
        snprintf(name, sizeof name, j ? "ema%d.bin" : "ema.bin", j);
        write_bin(out, name, st_trainer_ema_params_k(t, j), t->n * 4);
    }
    snprintf(path, sizeof path, "%s/layout.txt", out);
    FILE *fl = fopen(path, "w");
    for (size_t i = 0; i < m->layout.n_tensors; i++)
        fprintf(fl, "%s %zu %zu\n", m->layout.params[i].name, m->layout.params[i].offset, m->layout.params[i].numel);
    fclose(fl);
    { /* the training rows (cache check): i32 n, then per row i32 len, ids, u8 mask */
        snprintf(path, sizeof path, "%s/data.bin", out);
        FILE *fd = fopen(path, "wb");
        int32_t n = (int32_t)tk.n;
        fwrite(&n, 4, 1, fd);
        for (size_t i = 0; i < tk.n; i++) {
            int32_t len = (int32_t)(tk.offsets[i + 1] - tk.offsets[i]);
            fwrite(&len, 4, 1, fd);
            fwrite(tk.ids + tk.offsets[i], 4, (size_t)len, fd);
            fwrite(tk.mask + tk.offsets[i], 1, (size_t)len, fd);
        }
        fclose(fd);
    }
    if (al.n) { /* the alignment rows for the Python Fisher */
        snprintf(path, sizeof path, "%s/align.bin", out);
        FILE *fa = fopen(path, "wb");
        int32_t n = (int32_t)al.n;
        fwrite(&n, 4, 1, fa);
        for (size_t i = 0; i < al.n; i++) {
            int32_t len = (int32_t)(al.offsets[i + 1] - al.offsets[i]);
            fwrite(&len, 4, 1, fa);
            fwrite(al.ids + al.offsets[i], 4, (size_t)len, fa);
            fwrite(al.mask + al.offsets[i], 1, (size_t)len, fa);
        }
        fclose(fa);
    }
    st_trainer_free(t);
    st_tokenized_free(&tk);
    if (al.n) st_tokenized_free(&al);
    st_model_free(m);
    return 0;
}
