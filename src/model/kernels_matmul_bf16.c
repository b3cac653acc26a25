/* kernels_matmul_bf16.c - bf16 matmul path (placeholder: not yet implemented, falls back). */
#include "model/matmul_bf16.h"

int st_matmul_bf16(float *out, const float *in, const float *w, int M, int K, int N) {
    (void)out; (void)in; (void)w; (void)M; (void)K; (void)N;
    return -1;
}
