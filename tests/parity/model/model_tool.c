/* model_tool.c - driver for the model parity tests (check_model.py): runs our forward /
 * infer / training backward on a checkpoint and writes raw float32 results.
 *   model_tool logits MODEL TOKENS.i32 B T OUT.f32
 *   model_tool infer  MODEL TOKENS.i32 B T PREFILL OUT.f32   (logits of every position via
 *                     prefill of PREFILL tokens then one-token decode steps, all B at once)
 *   model_tool grads  MODEL TOKENS.i32 TARGETS.i32 MASK.f32 B T NORM OUT_DIR
 *                     (OUT_DIR/loss.txt, grads.f32 in flat layout, layout.tsv name offset numel)
 *   model_tool load   MODEL            (prints "ok" or the one-line error; exit 1 on error) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/backward.h"
#include "safetune/forward.h"

static void *read_all(const char *path, size_t want) {
    char *d = NULL;
    size_t n = 0;
    if (st_read_file(path, &d, &n) || n != want) {
        fprintf(stderr, "%s: expected %zu bytes, got %zu\n", path, want, n);
        exit(2);
    }
    return d;
}

static void write_all(const char *path, const void *d, size_t n) {
    if (st_write_file_atomic(path, d, n)) {
        fprintf(stderr, "%s\n", st_last_error());
        exit(2);
    }
}

static st_model *load(const char *p) {
    st_model *m = NULL;
    if (st_model_load_weights(p, &m)) {
        fprintf(stderr, "%s\n", st_last_error());
        exit(1);
    }
    return m;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "load")) {
        st_model *m = NULL;
        if (st_model_load_weights(argv[2], &m)) {
            printf("%s\n", st_last_error());
            return 1;
        }
        printf("ok\n");
        st_model_free(m);
        return 0;
    }
    st_model *m = load(argv[2]);
    const int V = m->config.vocab_size;
    if (!strcmp(cmd, "logits") && argc == 7) {
        int B = atoi(argv[4]), T = atoi(argv[5]);
        int32_t *tok = read_all(argv[3], (size_t)B * T * 4);
        float *out = malloc((size_t)B * T * V * sizeof *out);
        if (st_forward_logits(m, tok, B, T, out)) {
            fprintf(stderr, "%s\n", st_last_error());
            return 1;
        }
        write_all(argv[6], out, (size_t)B * T * V * sizeof *out);
        free(tok);
        free(out);
        st_model_free(m);
        return 0;
    }
    if (!strcmp(cmd, "infer") && argc == 8) {
        int B = atoi(argv[4]), T = atoi(argv[5]), P = atoi(argv[6]);
        int32_t *tok = read_all(argv[3], (size_t)B * T * 4);
        float *out = calloc((size_t)B * T * V, sizeof *out), *step = malloc((size_t)B * V * 4);
        st_kv_cache *kc = NULL;
        st_infer_ctx *ic = NULL;
        if (st_kv_cache_new(&m->config, B, T, &kc) || st_infer_ctx_new(m, NULL, NULL, NULL, &ic)) return 1;
        int *slots = malloc(B * sizeof *slots), *n = malloc(B * sizeof *n);
        const int32_t **tp = malloc(B * sizeof *tp);
        for (int pos = 0; pos < T;) {
            int take = pos == 0 ? P : 1;
            for (int b = 0; b < B; b++) {
                slots[b] = b;
                n[b] = take;
                tp[b] = tok + (size_t)b * T + pos;
            }
            if (st_forward_infer(ic, kc, slots, tp, n, B, step)) {
                fprintf(stderr, "%s\n", st_last_error());
                return 1;
            }
            pos += take;
            for (int b = 0; b < B; b++)
                memcpy(out + ((size_t)b * T + pos - 1) * V, step + (size_t)b * V, (size_t)V * 4);
        }
        write_all(argv[7], out, (size_t)B * T * V * sizeof *out);
        free(tok);
        free(out);
        free(step);
        free(slots);
        free(n);
        free(tp);
        st_kv_cache_free(kc);
        st_infer_ctx_free(ic);
        st_model_free(m);
        return 0;
    }
    if (!strcmp(cmd, "grads") && argc == 10) {
        int B = atoi(argv[6]), T = atoi(argv[7]);
        float norm = (float)atof(argv[8]);
        int32_t *tok = read_all(argv[3], (size_t)B * T * 4), *tgt = read_all(argv[4], (size_t)B * T * 4);
        float *mask = read_all(argv[5], (size_t)B * T * 4);
        float *grads = st_alloc_aligned(m->layout.n_floats * sizeof(float));
        memset(grads, 0, m->layout.n_floats * sizeof(float));
        st_weights g;
        st_train_acts *a = NULL;
        float loss = 0;
        if (st_weights_bind(&g, &m->config, &m->layout, grads) ||
            st_train_acts_new(&m->config, B, T, &a) ||
            st_train_forward(&m->config, &m->w, a, tok, tgt, mask, B, T, norm, &loss) ||
            st_train_backward(&m->config, &m->w, a, &g)) {
            fprintf(stderr, "%s\n", st_last_error());
            return 1;
        }
        char p[4096];
        snprintf(p, sizeof p, "%s/grads.f32", argv[9]);
        write_all(p, grads, m->layout.n_floats * sizeof(float));
        snprintf(p, sizeof p, "%s/loss.txt", argv[9]);
        char buf[64];
        int k = snprintf(buf, sizeof buf, "%.9g\n", (double)loss);
        write_all(p, buf, (size_t)k);
        snprintf(p, sizeof p, "%s/layout.tsv", argv[9]);
        FILE *f = fopen(p, "w");
        for (size_t i = 0; i < m->layout.n_tensors; i++)
            fprintf(f, "%s\t%zu\t%zu\n", m->layout.params[i].name, m->layout.params[i].offset,
                    m->layout.params[i].numel);
        fclose(f);
        st_train_acts_free(a);
        st_weights_unbind(&g);
        st_free_aligned(grads);
        free(tok);
        free(tgt);
        free(mask);
        st_model_free(m);
        return 0;
    }
    fprintf(stderr, "bad arguments\n");
    st_model_free(m);
    return 2;
}
