/* model_testutil.h - shared helpers for unit tests that build small random models. */
#ifndef SAFETUNE_TEST_MODEL_TESTUTIL_H
#define SAFETUNE_TEST_MODEL_TESTUTIL_H

#include <math.h>
#include <string.h>

#include "safetune/model.h"

/* A 2-layer tied Llama config: hidden C, intermediate I, H heads, KV heads of size D, vocab V,
 * 64 positions, rope_theta 1e4, rms_norm_eps 1e-5. */
static inline st_config st_test_llama_config(int C, int I, int H, int KV, int D, int V) {
    st_config c = {0};
    c.arch = ST_ARCH_LLAMA;
    c.hidden_size = C;
    c.intermediate_size = I;
    c.num_hidden_layers = 2;
    c.num_attention_heads = H;
    c.num_key_value_heads = KV;
    c.head_dim = D;
    c.vocab_size = V;
    c.max_position_embeddings = 64;
    c.rope_theta = 10000.0f;
    c.rms_norm_eps = 1e-5f;
    c.tie_word_embeddings = 1;
    return c;
}

/* Fill m's flat parameters: norms ~ 1 + 0.1 N(0,1), projections ~ N(0, 1/in), embeddings N(0,1);
 * deterministic in seed. */
static inline void st_test_randomize(st_model *m, uint64_t seed) {
    st_rng r;
    st_rng_seed(&r, seed);
    for (size_t t = 0; t < m->layout.n_tensors; t++) {
        const st_param_info *p = &m->layout.params[t];
        float *d = m->params + p->offset;
        double sc = p->n_dims == 2 ? 1.0 / sqrt((double)p->shape[1]) : 0.1;
        if (strstr(p->name, "embed")) sc = 1.0;
        for (size_t i = 0; i < p->numel; i++)
            d[i] = (float)((strstr(p->name, "norm") ? 1.0 : 0.0) + sc * st_rng_normal(&r));
    }
}

/* ||a - b|| / ||b|| in double. */
static inline double st_test_rel(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

#endif
