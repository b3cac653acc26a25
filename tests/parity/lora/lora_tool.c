/* lora_tool.c - driver for the LoRA parity tests (check_lora.py): adapter gradients, AdamW +
 * EMA steps on adapters over a frozen base, writing raw float32 results.
 * SPEC = r:alpha:dropout:targets:init_seed:dropout_seed:b_std:precision (targets "q_proj,v_proj"
 * or "all"; b_std > 0 replaces PEFT's B = 0 by N(0, b_std²) so that every gradient is nonzero;
 * precision f32|bf16|bf16base: fp32 products, bf16 products on the fp32 base, or a frozen base
 * held in bf16 (st_lora_base) with the bf16 products). Activations from st_lora_train_acts_new (chunked lm_head) with
 * LORA_HEAD_ROWS (environment) rows per chunk, default 0 (64 MiB).
 *   lora_tool grads MODEL SPEC TOK.i32 TGT.i32 MASK.f32 B T NORM OUT_DIR
 *       OUT_DIR/loss.txt, params.f32, grads.f32, layout.tsv (name offset numel r0 r1)
 *   lora_tool train MODEL SPEC TOK.i32 TGT.i32 MASK.f32 B T NORM LR WD EMA_DECAY STEPS OUT_DIR
 *       STEPS AdamW steps on the same batch (dropout seed + step), EMA after each:
 *       OUT_DIR/losses.txt, init.f32, params.f32, ema.f32, layout.tsv
 *   lora_tool peft MODEL SPEC OUT_DIR [export]
 *       OUT_DIR/adapter (PEFT folder), its read-back compared bit for bit (prints "roundtrip ok");
 *       with export: OUT_DIR/merged (HF F32 export of base + adapter), OUT_DIR/merged.gguf
 *   lora_tool load MODEL ADAPTER_DIR   prints "ok" or the one-line error (exit 1)
 *   lora_tool logits MODEL TOK.i32 B T OUT.f32   logits [B, T, V] of st_model_load_weights(MODEL)
 *       (MODEL may be a PEFT adapter folder: its base with the adapter merged) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/ema.h"
#include "safetune/export.h"
#include "safetune/forward.h"
#include "safetune/kernels.h"
#include "safetune/lora.h"
#include "safetune/model.h"
#include "safetune/optim.h"

static void die(void) {
    fprintf(stderr, "%s\n", st_last_error());
    exit(1);
}

static void *read_all(const char *path, size_t want) {
    char *d = NULL;
    size_t n = 0;
    if (st_read_file(path, &d, &n) || n != want) {
        fprintf(stderr, "%s: expected %zu bytes, got %zu\n", path, want, n);
        exit(2);
    }
    return d;
}

static void write_floats(const char *dir, const char *name, const float *d, size_t n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (st_write_file_atomic(p, d, n * sizeof *d)) die();
}

static void write_layout(const char *dir, const st_layout *lay) {
    char p[4096];
    snprintf(p, sizeof p, "%s/layout.tsv", dir);
    FILE *f = fopen(p, "w");
    if (!f) exit(2);
    for (size_t i = 0; i < lay->n_tensors; i++)
        fprintf(f, "%s\t%zu\t%zu\t%lld\t%lld\n", lay->params[i].name, lay->params[i].offset,
                lay->params[i].numel, (long long)lay->params[i].shape[0],
                (long long)lay->params[i].shape[1]);
    fclose(f);
}

typedef struct {
    st_lora_config lc;
    uint64_t init_seed, drop_seed;
    double b_std;
    int bf16_base;
} spec;

static spec parse_spec(const char *s) {
    spec sp;
    char targets[256], prec[16];
    unsigned long long is, ds;
    if (sscanf(s, "%d:%lf:%lf:%255[^:]:%llu:%llu:%lf:%15s", &sp.lc.r, &sp.lc.alpha,
               &sp.lc.dropout, targets, &is, &ds, &sp.b_std, prec) != 8) {
        fprintf(stderr, "bad SPEC %s\n", s);
        exit(2);
    }
    if (st_lora_targets_parse(targets, &sp.lc.targets)) die();
    sp.init_seed = is;
    sp.drop_seed = ds;
    sp.bf16_base = !strcmp(prec, "bf16base");
    if (strcmp(prec, "f32") && strcmp(prec, "bf16") && !sp.bf16_base) {
        fprintf(stderr, "bad precision %s\n", prec);
        exit(2);
    }
    st_matmul_set_precision(strcmp(prec, "f32") ? ST_MATMUL_BF16 : ST_MATMUL_F32);
    return sp;
}

static st_lora *make_adapter(const st_model *m, const spec *sp) {
    st_lora *ad = NULL;
    if (st_lora_new(&m->config, &sp->lc, &ad)) die();
    st_lora_init_params(&ad->layout, ad->params, sp->init_seed);
    if (sp->b_std > 0) {
        st_rng rng;
        st_rng_seed(&rng, sp->init_seed + 1);
        for (size_t i = 0; i < ad->layout.n_tensors; i++) {
            const st_param_info *p = &ad->layout.params[i];
            if (!strstr(p->name, ".lora_B.")) continue;
            for (size_t j = 0; j < p->numel; j++)
                ad->params[p->offset + j] = (float)(sp->b_std * st_rng_normal(&rng));
        }
    }
    return ad;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "logits") && argc == 7) {
        st_model *m = NULL;
        if (st_model_load_weights(argv[2], &m)) die();
        const int B = atoi(argv[4]), T = atoi(argv[5]), V = m->config.vocab_size;
        int32_t *tok = read_all(argv[3], (size_t)B * T * 4);
        float *lg = malloc((size_t)B * T * V * sizeof *lg);
        if (!lg || st_forward_logits(m, tok, B, T, lg)) die();
        if (st_write_file_atomic(argv[6], lg, (size_t)B * T * V * sizeof *lg)) die();
        free(lg);
        free(tok);
        st_model_free(m);
        return 0;
    }
    if (!strcmp(cmd, "load") && argc == 4) {
        st_model *m = NULL;
        st_lora *ad = NULL;
        if (st_model_load_weights(argv[2], &m)) die();
        if (st_lora_load_peft(argv[3], &m->config, &ad)) {
            printf("%s\n", st_last_error());
            st_model_free(m);
            return 1;
        }
        printf("ok\n");
        st_lora_free(ad);
        st_model_free(m);
        return 0;
    }
    if (!strcmp(cmd, "peft") && (argc == 5 || (argc == 6 && !strcmp(argv[5], "export")))) {
        const int do_export = argc == 6;
        st_model *m = NULL;
        if ((do_export ? st_model_load : st_model_load_weights)(argv[2], &m)) die();
        spec sp = parse_spec(argv[3]);
        st_lora *ad = make_adapter(m, &sp), *back = NULL;
        char p[4096];
        snprintf(p, sizeof p, "%s/adapter", argv[4]);
        if (st_lora_save_peft(ad, ad->params, argv[2], p) ||
            st_lora_load_peft(p, &m->config, &back))
            die();
        int same = back->layout.n_floats == ad->layout.n_floats && back->lc.r == ad->lc.r &&
                   back->lc.targets == ad->lc.targets && back->lc.alpha == ad->lc.alpha &&
                   !memcmp(back->params, ad->params, ad->layout.n_floats * sizeof(float));
        printf("roundtrip %s\n", same ? "ok" : "DIFFERS");
        float *merged = NULL;
        if (do_export && st_lora_merged_params(&m->config, &m->layout, m->params, back, back->params, &merged))
            die();
        snprintf(p, sizeof p, "%s/merged", argv[4]);
        if (do_export && st_export_hf(m, merged, p, ST_EXPORT_F32)) die();
        snprintf(p, sizeof p, "%s/merged.gguf", argv[4]);
        if (do_export && st_export_gguf(m, merged, p, ST_EXPORT_F32)) die();
        st_free_aligned(merged);
        st_lora_free(back);
        st_lora_free(ad);
        st_model_free(m);
        return same ? 0 : 1;
    }
    const int is_grads = !strcmp(cmd, "grads") && argc == 11;
    const int is_train = !strcmp(cmd, "train") && argc == 15;
    if (!is_grads && !is_train) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    st_model *m = NULL;
    if (st_model_load_weights(argv[2], &m)) die();
    spec sp = parse_spec(argv[3]);
    const int B = atoi(argv[7]), T = atoi(argv[8]);
    const float norm = (float)atof(argv[9]);
    int32_t *tok = read_all(argv[4], (size_t)B * T * 4), *tgt = read_all(argv[5], (size_t)B * T * 4);
    float *mask = read_all(argv[6], (size_t)B * T * 4);
    const char *out = argv[argc - 1];
    st_lora *ad = make_adapter(m, &sp);
    const size_t n = ad->layout.n_floats;
    float *grads = st_alloc_aligned(n * sizeof(float));
    st_lora_weights gw;
    st_train_acts *a = NULL;
    st_lora_base *base = NULL;
    const char *hr = getenv("LORA_HEAD_ROWS");
    if (!grads || st_lora_bind(&gw, &m->config, &sp.lc, &ad->layout, grads) ||
        st_lora_train_acts_new(&m->config, B, T, hr ? atoi(hr) : 0, &a) ||
        st_lora_base_new(m, sp.bf16_base ? ST_BASE_BF16 : ST_BASE_F32, &base))
        die();
    write_layout(out, &ad->layout);
    if (is_grads) {
        memset(grads, 0, n * sizeof(float));
        float loss = 0;
        if (st_lora_base_train_forward(base, &sp.lc, &ad->w, sp.drop_seed, a, tok, tgt, mask, B, T,
                                       norm, &loss) ||
            st_lora_base_train_backward(base, a, &gw))
            die();
        char p[4096], buf[64];
        snprintf(p, sizeof p, "%s/loss.txt", out);
        int k = snprintf(buf, sizeof buf, "%.9g\n", (double)loss);
        if (st_write_file_atomic(p, buf, (size_t)k)) die();
        write_floats(out, "params.f32", ad->params, n);
        write_floats(out, "grads.f32", grads, n);
    } else {
        st_optim_config oc;
        st_optim_config_default(&oc, ST_OPTIM_ADAMW);
        oc.lr = atof(argv[10]);
        oc.weight_decay = atof(argv[11]);
        const float decay = (float)atof(argv[12]);
        const int steps = atoi(argv[13]);
        st_optimizer opt;
        st_ema ema;
        if (st_optim_init(&opt, &oc, &ad->layout, n) ||
            st_ema_init(&ema, ad->params, n, &decay, 1, 1, 1))
            die();
        write_floats(out, "init.f32", ad->params, n);
        char p[4096];
        snprintf(p, sizeof p, "%s/losses.txt", out);
        FILE *f = fopen(p, "w");
        for (int s = 0; s < steps; s++) {
            memset(grads, 0, n * sizeof(float));
            float loss = 0;
            const uint64_t ds = sp.drop_seed ? sp.drop_seed + (uint64_t)s : 0;
            if (st_lora_base_train_forward(base, &sp.lc, &ad->w, ds, a, tok, tgt, mask, B, T, norm,
                                           &loss) ||
                st_lora_base_train_backward(base, a, &gw) ||
                st_optim_step(&opt, ad->params, grads, oc.lr))
                die();
            st_ema_step(&ema, ad->params, opt.step);
            fprintf(f, "%.9g\n", (double)loss);
        }
        fclose(f);
        write_floats(out, "params.f32", ad->params, n);
        write_floats(out, "ema.f32", ema.ema[0], n);
        st_ema_free(&ema);
        st_optim_free(&opt);
    }
    st_train_acts_free(a);
    st_lora_base_free(base);
    st_lora_unbind(&gw);
    st_free_aligned(grads);
    st_lora_free(ad);
    free(tok);
    free(tgt);
    free(mask);
    st_model_free(m);
    return 0;
}
