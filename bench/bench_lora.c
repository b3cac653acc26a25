/* bench_lora.c - LoRA training throughput and peak RSS: one optimiser step = training forward
 * with adapters, backward into the adapter gradients only (frozen base), AdamW and EMA over the
 * adapter vector; random tokens, every position trained; fp32 or bf16 matmuls, the frozen base
 * held in fp32 or bf16 (st_lora_base; a bf16 base implies bf16 products), the lm_head and
 * cross-entropy chunked (st_lora_train_acts_new).
 * Usage: bench_lora MODEL|llama-1b [B=8] [T=512] [steps=2] [r=16] [fp32|bf16] [base fp32|bf16]
 *   llama-1b: random weights (N(0, 0.02²)) of a Llama-3.2-1B-shaped model (hidden 2048, 16
 *   layers, 32 heads, 8 KV heads, intermediate 8192, vocab 128256, tied, llama3 RoPE scaling);
 *   with a bf16 base they are drawn straight into it (no fp32 copy ever exists).
 *   steps counts the untimed warm-up step. Adapters: r, alpha 2r, on all seven projections.
 * Prints tokens/s (B*T per timed step) and the process's peak RSS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <sys/resource.h>

#include "safetune/ema.h"
#include "safetune/kernels.h"
#include "safetune/lora.h"
#include "safetune/model.h"
#include "safetune/optim.h"
#include "safetune/quant.h"

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static void llama_1b_config(st_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = ST_ARCH_LLAMA;
    c->hidden_size = 2048;
    c->intermediate_size = 8192;
    c->num_hidden_layers = 16;
    c->num_attention_heads = 32;
    c->num_key_value_heads = 8;
    c->head_dim = 64;
    c->vocab_size = 128256;
    c->max_position_embeddings = 131072;
    c->rope_theta = 500000.0f;
    c->rms_norm_eps = 1e-5f;
    c->tie_word_embeddings = 1;
    c->rope_scaling.type = ST_ROPE_SCALING_LLAMA3;
    c->rope_scaling.factor = 32.0f;
    c->rope_scaling.low_freq_factor = 1.0f;
    c->rope_scaling.high_freq_factor = 4.0f;
    c->rope_scaling.original_max_position_embeddings = 8192;
    c->bos_token_id = 128000;
    c->eos_token_id = 128009;
}

/* U(±0.02·√3) (std 0.02) for the matrices of layout lay, into f32 (fp32 buffer) or b16 */
static void fill_random(const st_layout *lay, float *f32, uint16_t *b16) {
    for (size_t i = 0; i < lay->n_tensors; i++) { /* norms 1 (fp32) / kept by the base (bf16) */
        const st_param_info *p = &lay->params[i];
        const int is_norm = p->n_dims == 1;
        if (is_norm && !f32) continue;
#pragma omp parallel
        {
            st_rng r;
            st_rng_seed(&r, 1000 + i * 7919 + (uint64_t)omp_get_thread_num());
#pragma omp for schedule(static)
            for (size_t j = 0; j < p->numel; j++) {
                const float v = is_norm ? 1.0f : (float)(0.02 * (2.0 * st_rng_double(&r) - 1.0) * 1.7320508);
                if (f32) f32[p->offset + j] = v;
                else b16[p->offset + j] = st_f32_to_bf16(v);
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_lora MODEL|llama-1b [B] [T] [steps] [r] [fp32|bf16] [base fp32|bf16]\n");
        return 2;
    }
    const int B = argc > 2 ? atoi(argv[2]) : 8, T = argc > 3 ? atoi(argv[3]) : 512;
    const int steps = argc > 4 ? atoi(argv[4]) : 2, r = argc > 5 ? atoi(argv[5]) : 16;
    const int bf16_base = argc > 7 && !strcmp(argv[7], "bf16");
    const int bf16 = bf16_base || (argc > 6 && !strcmp(argv[6], "bf16"));
    st_model *m = NULL;
    st_lora_base *base = NULL;
    st_config cfg1b;
    llama_1b_config(&cfg1b);
    st_status st = ST_OK;
    if (!strcmp(argv[1], "llama-1b") && bf16_base) {
        if (!(st = st_lora_base_new_bf16(&cfg1b, &base))) fill_random(&base->layout, NULL, base->buf16);
    } else {
        if (!strcmp(argv[1], "llama-1b")) {
            if (!(st = st_model_new(&cfg1b, &m))) fill_random(&m->layout, m->params, NULL);
        } else {
            st = st_model_load_weights(argv[1], &m);
        }
        if (!st) st = st_lora_base_new(m, bf16_base ? ST_BASE_BF16 : ST_BASE_F32, &base);
        if (!st && bf16_base) { /* the fp32 weights are not needed any more */
            st_model_free(m);
            m = NULL;
        }
    }
    if (st) {
        fprintf(stderr, "bench_lora: %s\n", st_last_error());
        return 1;
    }
    st_matmul_set_precision(bf16 ? ST_MATMUL_BF16 : ST_MATMUL_F32);
    const st_config *c = &base->config;
    st_lora_config lc = {.r = r, .alpha = 2.0 * r, .dropout = 0.05, .targets = ST_LORA_ALL_TARGETS};
    st_lora *ad = NULL, *gr = NULL;
    st_train_acts *a = NULL;
    st_optimizer opt;
    st_ema ema;
    st_optim_config oc;
    st_optim_config_default(&oc, ST_OPTIM_ADAMW);
    oc.lr = 1e-4;
    if (st_lora_new(c, &lc, &ad) || st_lora_new(c, &lc, &gr) ||
        st_lora_train_acts_new(c, B, T, 0, &a) || st_optim_init(&opt, &oc, &ad->layout, ad->layout.n_floats)) {
        fprintf(stderr, "bench_lora: %s\n", st_last_error());
        return 1;
    }
    { /* what the step holds, by owner (the allocations; peak RSS below is what was touched) */
        const double mib = 1.0 / (1 << 20);
        const double base_b = base->buf16 ? (double)base->layout.n_floats * 2.0 : (double)base->layout.n_floats * 4.0;
        const double ad_b = (double)ad->layout.n_floats * 4.0 * 5.0; /* params, grads, 2 moments, EMA */
        printf("holds: base %.0f MiB (%s), adapter + grads + AdamW moments + EMA %.0f MiB, "
               "activations %.0f MiB (chunked head)\n", base_b * mib, base->buf16 ? "bf16" : "fp32",
               ad_b * mib, (double)st_lora_train_acts_floats(c, &lc, B, T, 0) * 4.0 * mib);
    }
    st_lora_init_params(&ad->layout, ad->params, 3);
    const float decay = 0.99f;
    if (st_ema_init(&ema, ad->params, ad->layout.n_floats, &decay, 1, 1, 1)) return 1;
    const size_t N = (size_t)B * T;
    int32_t *tok = malloc(N * sizeof *tok), *tgt = malloc(N * sizeof *tgt);
    st_rng rng;
    st_rng_seed(&rng, 1);
    for (size_t i = 0; i < N; i++) tok[i] = (int32_t)(st_rng_u64(&rng) % (uint64_t)c->vocab_size);
    for (size_t i = 0; i < N; i++) tgt[i] = (i + 1) % (size_t)T ? tok[i + 1] : -100;
    printf("bench_lora: %s, B %d x T %d, r %d on all seven projections (%zu adapter floats), %s, "
           "%s base\n", argv[1], B, T, r, ad->layout.n_floats, bf16 ? "bf16 matmuls" : "fp32",
           bf16_base ? "bf16" : "fp32");
    double t0 = 0;
    for (int s = 0; s < steps; s++) {
        if (s == 1) t0 = st_time_now();
        const double ts = st_time_now();
        memset(gr->params, 0, gr->layout.n_floats * sizeof(float));
        float loss = 0;
        if (st_lora_base_train_forward(base, &lc, &ad->w, 100 + (uint64_t)s, a, tok, tgt, NULL, B, T,
                                       (float)(N - B), &loss) ||
            st_lora_base_train_backward(base, a, &gr->w) ||
            st_optim_step(&opt, ad->params, gr->params, oc.lr)) {
            fprintf(stderr, "bench_lora: %s\n", st_last_error());
            return 1;
        }
        st_ema_step(&ema, ad->params, opt.step);
        printf("  step %d: %.2f s, loss %.4f\n", s + 1, st_time_now() - ts, (double)loss);
        fflush(stdout);
    }
    const double tps = steps > 1 ? (double)N * (steps - 1) / (st_time_now() - t0) : 0;
    printf("safetune lora %s%s: %.1f tokens/s\n", bf16 ? "bf16" : "fp32", bf16_base ? " (bf16 base)" : "", tps);
    printf("peak RSS %.0f MiB\n", peak_rss_mib());
    st_prof_report(stdout, "bench_lora (SAFETUNE_PROFILE=1)");
    st_ema_free(&ema);
    st_optim_free(&opt);
    st_train_acts_free(a);
    st_lora_free(gr);
    st_lora_free(ad);
    free(tok);
    free(tgt);
    st_lora_base_free(base);
    st_model_free(m);
    return 0;
}
