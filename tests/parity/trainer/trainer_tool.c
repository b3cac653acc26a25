/* trainer_tool.c - drives the trainer / export for the Python parity checks (check_trainer.py).
 *   trainer_tool train MODEL_DIR OUT [key=value ...]
 *       synthetic rows (seeded lengths 3..max_len, random ids, prompt part unmasked), trains
 *       `steps` optimiser steps with st_trainer_step and writes OUT/steps.txt (step loss lr
 *       grad_norm n_micro epoch), OUT/batches.bin (per step, per micro-batch: i32 B, T, inputs, targets,
 *       f32 mask), OUT/live.bin, OUT/ema.bin (flat f32), OUT/layout.txt (name offset numel).
 *   trainer_tool export MODEL OUT      HF (f32, bf16) + GGUF (f32, f16, bf16) exports of the
 *       weights, reloaded with st_model_load(_weights): prints max |Δparam| and max |Δlogit|;
 *       writes OUT/tokens.bin and OUT/logits.bin (the source model's logits) for Python.
 *   trainer_tool tokjson GGUF OUT.json      tokenizer.json from GGUF metadata
 *   trainer_tool encode MODEL TEXTS.txt OUT.txt   ids of each line (\n-escaped) with our tokenizer */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/checkpoint.h"
#include "safetune/export.h"
#include "safetune/forward.h"
#include "safetune/trainer.h"

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

/* n rows of lengths in [3, max_len]: the first third is "prompt" (mask 0), the rest trained. */
static void synth(st_tokenized *tk, int n, int max_len, int V, uint64_t seed) {
    st_rng r;
    st_rng_seed(&r, seed);
    tk->n = (size_t)n;
    tk->offsets = calloc((size_t)n + 1, sizeof *tk->offsets);
    size_t total = 0;
    int *len = malloc((size_t)n * sizeof *len);
    for (int i = 0; i < n; i++) {
        len[i] = 3 + (int)(st_rng_u64(&r) % (uint64_t)(max_len - 2));
        total += (size_t)len[i];
    }
    tk->ids = malloc(total * sizeof *tk->ids);
    tk->mask = malloc(total);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        tk->offsets[i] = o;
        for (int t = 0; t < len[i]; t++, o++) {
            tk->ids[o] = (int32_t)(st_rng_u64(&r) % (uint64_t)V);
            tk->mask[o] = t >= len[i] / 3;
        }
    }
    tk->offsets[n] = o;
    free(len);
}

static int cmd_train(int argc, char **argv) {
    const char *mdir = argv[0], *out = argv[1];
    st_model *m;
    CHECK(st_model_load_weights(mdir, &m));
    st_train_config c;
    st_train_config_default(&c);
    c.optim.lr = atof(kv(argc, argv, "lr", "1e-3"));
    c.optim.weight_decay = atof(kv(argc, argv, "wd", "0.1"));
    c.optim.beta1 = atof(kv(argc, argv, "beta1", "0.9"));
    c.optim.beta2 = atof(kv(argc, argv, "beta2", "0.95"));
    c.optim.eps = atof(kv(argc, argv, "eps", "1e-8"));
    CHECK(st_schedule_kind_parse(kv(argc, argv, "sched", "cosine"), &c.sched.kind));
    c.sched.warmup_steps = atoi(kv(argc, argv, "warmup", "3"));
    c.batch_size = atoi(kv(argc, argv, "batch", "4"));
    c.grad_accum = atoi(kv(argc, argv, "accum", "2"));
    c.max_steps = atoi(kv(argc, argv, "steps", "10"));
    c.epochs = atof(kv(argc, argv, "epochs", "0")); /* with steps=0 */
    c.max_grad_norm = atof(kv(argc, argv, "clip", "1.0"));
    c.l2sp_alpha = atof(kv(argc, argv, "l2sp", "0"));
    c.n_ema = 1;
    c.ema_decays[0] = atof(kv(argc, argv, "ema", "0.9"));
    c.ema_every = atoi(kv(argc, argv, "ema_every", "1"));
    c.ema_start = atoi(kv(argc, argv, "ema_start", "1"));
    c.max_seq_len = atoi(kv(argc, argv, "max_seq", "24"));
    c.val_fraction = 0;
    c.bf16 = atoi(kv(argc, argv, "bf16", "0"));
    c.seed = 7;
    st_tokenized tk;
    synth(&tk, atoi(kv(argc, argv, "rows", "40")), atoi(kv(argc, argv, "max_len", "30")),
          m->config.vocab_size, 11);
    st_trainer *t;
    CHECK(st_trainer_new(m, &tk, &c, &t));
    char path[1024];
    snprintf(path, sizeof path, "%s/steps.txt", out);
    FILE *fs = fopen(path, "w");
    snprintf(path, sizeof path, "%s/batches.bin", out);
    FILE *fb = fopen(path, "wb");
    if (!fs || !fb) { fprintf(stderr, "cannot write into %s\n", out); return 1; }
    for (int64_t k = 0; k < st_trainer_max_steps(t); k++) {
        st_step_metrics sm;
        CHECK(st_trainer_step(t, &sm));
        fprintf(fs, "%lld %.9g %.17g %.9g %d %.17g\n", (long long)sm.step, sm.loss, sm.lr, sm.grad_norm, sm.n_micro,
                sm.epoch);
        for (int i = 0; i < sm.n_micro; i++) {
            const st_batch *b = st_trainer_batch(t, i);
            int32_t hdr[2] = {b->B, b->T};
            size_t nt = (size_t)b->B * b->T;
            fwrite(hdr, 4, 2, fb);
            fwrite(b->inputs, 4, nt, fb);
            fwrite(b->targets, 4, nt, fb);
            fwrite(b->loss_mask, 4, nt, fb);
        }
    }
    fclose(fs);
    fclose(fb);
    write_bin(out, "live.bin", st_trainer_params(t), m->layout.n_floats * 4);
    write_bin(out, "ema.bin", st_trainer_ema_params(t), m->layout.n_floats * 4);
    snprintf(path, sizeof path, "%s/layout.txt", out);
    FILE *fl = fopen(path, "w");
    for (size_t i = 0; i < m->layout.n_tensors; i++)
        fprintf(fl, "%s %zu %zu\n", m->layout.params[i].name, m->layout.params[i].offset,
                m->layout.params[i].numel);
    fclose(fl);
    st_trainer_free(t);
    st_tokenized_free(&tk);
    st_model_free(m);
    return 0;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - b[i]);
        if (!(x <= d)) d = x; /* NaN propagates */
    }
    return d;
}

static int cmd_export(int argc, char **argv) {
    (void)argc;
    const char *src = argv[0], *out = argv[1];
    st_model *m;
    st_status ls = st_model_load(src, &m);
    if (ls) CHECK(st_model_load_weights(src, &m));
    const int T = 12, V = m->config.vocab_size;
    int32_t tok[12];
    for (int i = 0; i < T; i++) tok[i] = (int32_t)((i * 7919 + 13) % V);
    float *ref = malloc((size_t)T * V * 4), *got = malloc((size_t)T * V * 4);
    CHECK(st_forward_logits(m, tok, 1, T, ref));
    write_bin(out, "tokens.bin", tok, sizeof tok);
    write_bin(out, "logits.bin", ref, (size_t)T * V * 4);
    int quick = argc > 2 && !strcmp(argv[2], "quick");
    struct { const char *name; int gguf; st_export_dtype dt; } cases[] = {
        {"hf_f32", 0, ST_EXPORT_F32}, {"hf_bf16", 0, ST_EXPORT_BF16},
        {"f32.gguf", 1, ST_EXPORT_F32}, {"f16.gguf", 1, ST_EXPORT_F16}, {"bf16.gguf", 1, ST_EXPORT_BF16}};
    int bad = 0;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        if (quick && k != 0 && k != 4) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", out, cases[k].name);
        if (cases[k].gguf) CHECK(st_export_gguf(m, m->params, p, cases[k].dt));
        else CHECK(st_export_hf(m, m->params, p, cases[k].dt));
        st_model *r;
        /* with the tokenizer when the source had one (checks the exported tokenizer loads) */
        if (m->tokenizer) CHECK(st_model_load(p, &r));
        else CHECK(st_model_load_weights(p, &r));
        if (r->layout.n_floats != m->layout.n_floats) { printf("%s: layout differs\n", p); return 1; }
        double dp = max_abs_diff(m->params, r->params, m->layout.n_floats);
        CHECK(st_forward_logits(r, tok, 1, T, got));
        double dl = max_abs_diff(ref, got, (size_t)T * V);
        int exact = cases[k].dt == ST_EXPORT_F32;
        int ok = exact ? (dp == 0 && dl == 0) : dl < 0.5;
        printf("%s: max|dparam| %.3g max|dlogit| %.3g %s\n", cases[k].name, dp, dl, ok ? "ok" : "FAIL");
        bad += !ok;
        if (m->tokenizer && (!r->tokenizer || st_tokenizer_vocab_size(r->tokenizer) != st_tokenizer_vocab_size(m->tokenizer))) {
            printf("%s: tokenizer missing or vocab differs\n", cases[k].name);
            bad++;
        }
        st_model_free(r);
    }
    free(ref);
    free(got);
    st_model_free(m);
    return bad ? 1 : 0;
}

static int cmd_tokjson(char **argv) {
    char *j;
    CHECK(st_export_tokenizer_json_from_gguf(argv[0], &j));
    CHECK(st_write_file_atomic(argv[1], j, strlen(j)));
    free(j);
    return 0;
}

static int cmd_encode(char **argv) {
    st_model *m;
    CHECK(st_model_load(argv[0], &m));
    char *txt;
    size_t len;
    CHECK(st_read_file(argv[1], &txt, &len));
    FILE *fo = fopen(argv[2], "w");
    for (char *line = txt; *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        /* unescape \n and \\ */
        char *u = malloc(strlen(line) + 1), *w = u;
        for (char *p = line; *p; p++) {
            if (*p == '\\' && p[1] == 'n') { *w++ = '\n'; p++; }
            else if (*p == '\\' && p[1] == '\\') { *w++ = '\\'; p++; }
            else *w++ = *p;
        }
        int32_t *ids;
        size_t n;
        CHECK(st_tokenizer_encode(m->tokenizer, u, (size_t)(w - u), 1, 0, &ids, &n));
        for (size_t i = 0; i < n; i++) fprintf(fo, i ? " %d" : "%d", ids[i]);
        fprintf(fo, "\n");
        free(ids);
        free(u);
        if (!nl) break;
        line = nl + 1;
    }
    fclose(fo);
    free(txt);
    st_model_free(m);
    return 0;
}

static int cmd_logits(char **argv) {
    st_model *m;
    CHECK(st_model_load_weights(argv[0], &m));
    const int T = 12, V = m->config.vocab_size;
    int32_t tok[12];
    for (int i = 0; i < T; i++) tok[i] = (int32_t)((i * 7919 + 13) % V);
    float *lg = malloc((size_t)T * V * 4);
    CHECK(st_forward_logits(m, tok, 1, T, lg));
    write_bin(argv[1], "tokens.bin", tok, sizeof tok);
    write_bin(argv[1], "logits.bin", lg, (size_t)T * V * 4);
    free(lg);
    st_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "verify")) {
        int64_t step;
        if (st_checkpoint_verify(argv[2], &step)) { printf("invalid: %s\n", st_last_error()); return 1; }
        printf("ok %lld\n", (long long)step);
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "logits")) return cmd_logits(argv + 2);
    if (argc >= 4 && !strcmp(argv[1], "train")) return cmd_train(argc - 2, argv + 2);
    if (argc >= 4 && !strcmp(argv[1], "export")) return cmd_export(argc - 2, argv + 2);
    if (argc >= 4 && !strcmp(argv[1], "tokjson")) return cmd_tokjson(argv + 2);
    if (argc >= 5 && !strcmp(argv[1], "encode")) return cmd_encode(argv + 2);
    fprintf(stderr, "usage: trainer_tool train|export|tokjson|encode ...\n");
    return 2;
}
