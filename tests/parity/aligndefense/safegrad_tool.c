/* safegrad_tool.c - drives SafeGrad steps of the trainer for the PyTorch parity check
 * (check_align_defenses.py safegrad_parity).
 *   safegrad_tool MODEL_DIR OUT [key=value ...]   (steps, lr, rho, project, rows, align_rows, max_seq, bf16)
 * Synthetic user rows and alignment rows (the same prompts answered with other ids, so the two
 * gradients can conflict); per step k it writes OUT/theta-K.bin (θ before the step, flat f32),
 * OUT/g-K.bin (the step's gradient before clipping: g_u' + ρ·g_a), OUT/gu-K.bin (g_u', the
 * projected task gradient), OUT/batches-K.bin (task micro-batches then the alignment batch: i32 B,
 * T, inputs, targets, f32 mask each), and one line of OUT/steps.txt: step loss loss_align
 * align_dot proj_coef grad_norm n_micro. OUT/theta0.bin, OUT/layout.txt (name offset numel). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* n rows of lengths in [6, max_len]: the first third prompt (mask 0), the rest trained. With
 * `answer_seed` != 0 the prompt ids are those of the seed-11 rows and the answers come from
 * answer_seed (alignment rows: same prompts, other answers). */
static void synth(st_tokenized *tk, int n, int max_len, int V, uint64_t answer_seed) {
    st_rng r, ra;
    st_rng_seed(&r, 11);
    st_rng_seed(&ra, answer_seed);
    tk->n = (size_t)n;
    tk->offsets = calloc((size_t)n + 1, sizeof *tk->offsets);
    int *len = malloc((size_t)n * sizeof *len);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)(len[i] = 6 + (int)(st_rng_u64(&r) % (uint64_t)(max_len - 5)));
    tk->ids = malloc(total * sizeof *tk->ids);
    tk->mask = malloc(total);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        tk->offsets[i] = o;
        for (int t = 0; t < len[i]; t++, o++) {
            const uint64_t u = st_rng_u64(&r), a = st_rng_u64(&ra);
            tk->mask[o] = t >= len[i] / 3;
            tk->ids[o] = (int32_t)(((answer_seed && tk->mask[o]) ? a : u) % (uint64_t)V);
        }
    }
    tk->offsets[n] = o;
    free(len);
}

static void put_batch(FILE *f, const st_batch *b) {
    int32_t hdr[2] = {b->B, b->T};
    const size_t nt = (size_t)b->B * b->T;
    fwrite(hdr, 4, 2, f);
    fwrite(b->inputs, 4, nt, f);
    fwrite(b->targets, 4, nt, f);
    fwrite(b->loss_mask, 4, nt, f);
}

/* the alignment batch of the last step: re-collated from the stream positions it read */
int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: safegrad_tool MODEL_DIR OUT [key=value ...]\n"); return 2; }
    const char *mdir = argv[1], *out = argv[2];
    argc -= 3, argv += 3;
    st_model *m;
    CHECK(st_model_load_weights(mdir, &m));
    st_train_config c;
    st_train_config_default(&c);
    c.optim.lr = atof(kv(argc, argv, "lr", "3e-3"));
    c.optim.beta2 = 0.95;
    c.batch_size = atoi(kv(argc, argv, "batch", "3"));
    c.grad_accum = atoi(kv(argc, argv, "accum", "2"));
    c.max_steps = atoi(kv(argc, argv, "steps", "6"));
    c.max_grad_norm = 1.0;
    c.max_seq_len = atoi(kv(argc, argv, "max_seq", "24"));
    c.val_fraction = 0;
    c.seed = 7;
    c.n_ema = 2, c.ema_decays[0] = 0.9, c.ema_decays[1] = 0.5;
    c.bf16 = atoi(kv(argc, argv, "bf16", "0"));
    c.safegrad = ST_ON;
    c.safegrad_rho = atof(kv(argc, argv, "rho", "1"));
    c.safegrad_project = atoi(kv(argc, argv, "project", "1")) ? ST_ON : ST_OFF;
    c.safegrad_align_rows = (size_t)atoi(kv(argc, argv, "align_rows", "8"));
    st_tokenized user, align;
    const int V = m->config.vocab_size;
    synth(&user, atoi(kv(argc, argv, "rows", "30")), 24, V, 0);
    synth(&align, 12, 24, V, 99);
    c.align_data = &align;
    st_trainer *t;
    CHECK(st_trainer_new(m, &user, &c, &t));
    const size_t n = t->n;
    char path[1024], name[64];
    snprintf(path, sizeof path, "%s/steps.txt", out);
    FILE *fs = fopen(path, "w");
    if (!fs) { fprintf(stderr, "cannot write %s\n", path); return 1; }
    write_bin(out, "theta0.bin", st_trainer_theta0(t), n * 4);
    for (int64_t k = 0; k < st_trainer_max_steps(t); k++) {
        snprintf(name, sizeof name, "theta-%lld.bin", (long long)k);
        write_bin(out, name, st_trainer_params(t), n * 4);
        st_step_metrics sm;
        CHECK(st_trainer_step(t, &sm));
        fprintf(fs, "%lld %.17g %.17g %.17g %.17g %.17g %d\n", (long long)sm.step, sm.loss, sm.loss_align, sm.align_dot,
                sm.proj_coef, sm.grad_norm, sm.n_micro);
        snprintf(name, sizeof name, "g-%lld.bin", (long long)k);
        write_bin(out, name, t->grads, n * 4); /* fused AdamW leaves the gradient unclipped */
        snprintf(name, sizeof name, "gu-%lld.bin", (long long)k);
        write_bin(out, name, st__safegrad_gu(t), n * 4);
        snprintf(path, sizeof path, "%s/batches-%lld.bin", out, (long long)k);
        FILE *fb = fopen(path, "wb");
        if (!fb) { fprintf(stderr, "cannot write %s\n", path); return 1; }
        for (int i = 0; i < sm.n_micro; i++) put_batch(fb, st_trainer_batch(t, i));
        put_batch(fb, st__safegrad_batch(t));
        fclose(fb);
    }
    fclose(fs);
    snprintf(path, sizeof path, "%s/layout.txt", out);
    FILE *fl = fopen(path, "w");
    for (size_t i = 0; i < m->layout.n_tensors; i++)
        fprintf(fl, "%s %zu %zu\n", m->layout.params[i].name, m->layout.params[i].offset, m->layout.params[i].numel);
    fclose(fl);
    st_trainer_free(t);
    st_tokenized_free(&user);
    st_tokenized_free(&align);
    st_model_free(m);
    return 0;
}
