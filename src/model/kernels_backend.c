/* kernels_backend.c - the backend table (kernels.h st_backend): CPU implementation. */
#include "safetune/kernels.h"

static const st_backend cpu = {
    .name = "cpu",
    .matmul_forward = st_matmul_forward,
    .matmul_backward = st_matmul_backward,
    .rmsnorm_forward = st_rmsnorm_forward,
    .rmsnorm_backward = st_rmsnorm_backward,
    .rope_forward = st_rope_forward,
    .rope_backward = st_rope_backward,
    .attention_head_forward = st_attention_head_forward,
    .attention_forward = st_attention_forward,
    .attention_backward = st_attention_backward,
    .swiglu_forward = st_swiglu_forward,
    .swiglu_backward = st_swiglu_backward,
    .embedding_forward = st_embedding_forward,
    .embedding_backward = st_embedding_backward,
    .crossentropy_forward = st_crossentropy_forward,
    .crossentropy_backward = st_crossentropy_backward,
    .add_inplace = st_add_inplace,
    .crossentropy_fused = st_crossentropy_fused,
    .matmul_forward_bf16 = st_matmul_forward_bf16,
    .matmul_backward_bf16 = st_matmul_backward_bf16,
    .rmsnorm_forward_bf16 = st_rmsnorm_forward_bf16,
    .swiglu_forward_bf16 = st_swiglu_forward_bf16,
    .swiglu_backward_bf16 = st_swiglu_backward_bf16,
    .residual_rmsnorm_forward_bf16 = st_residual_rmsnorm_forward_bf16,
    .rmsnorm_backward_bf16 = st_rmsnorm_backward_bf16,
    .crossentropy_fused_bf16 = st_crossentropy_fused_bf16,
    .rope_backward_bf16 = st_rope_backward_bf16,
    .matmul_forward_w16 = st_matmul_forward_w16,
    .matmul_backward_w16 = st_matmul_backward_w16,
    .embedding_forward_w16 = st_embedding_forward_w16,
};

static const st_backend *g_backend = &cpu;

const st_backend *st_backend_cpu(void) { return &cpu; }
const st_backend *st_backend_get(void) { return g_backend; }
void st_backend_set(const st_backend *b) { g_backend = b ? b : &cpu; }
