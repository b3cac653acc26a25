/* gguf_names.c - Hugging Face <-> GGUF tensor names (llama.cpp gguf-py constants.py
 * TENSOR_NAMES for the llama/qwen2 architectures). */
#include "model/load.h"

#include <stdio.h>
#include <string.h>

int st_gguf_tensor_name(const char *hf, char *out, size_t cap) {
    static const struct { const char *hf, *gg; } per_layer[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    if (strcmp(hf, "model.embed_tokens.weight") == 0) return snprintf(out, cap, "token_embd.weight") > 0;
    if (strcmp(hf, "model.norm.weight") == 0) return snprintf(out, cap, "output_norm.weight") > 0;
    if (strcmp(hf, "lm_head.weight") == 0) return snprintf(out, cap, "output.weight") > 0;
    int l, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &l, &used) == 1 && used > 0)
        for (size_t i = 0; i < sizeof per_layer / sizeof *per_layer; i++)
            if (strcmp(hf + used, per_layer[i].hf) == 0)
                return snprintf(out, cap, "blk.%d.%s", l, per_layer[i].gg) > 0;
    return 0;
}
