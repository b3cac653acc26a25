/* presets.c - compiled-in study configs (`safetune study --preset NAME`). Sizes are explained in
 * docs/study.md; change the numbers here (or override them with --config) when speeds are known. */
#include "safetune/study.h"

#include <string.h>

/* quick: SmolLM2-135M-Instruct on Alpaca from the aligned start (SmolLM2 itself answers ~94% of
 * AdvBench, docs/eval.md), sized for <= 30 min on the shared 2-core machine at the speeds measured
 * there (training ~25 tok/s, generation ~50 tok/s under load 10; docs/study.md has the arithmetic):
 * 3 lr x 2 effective batch = 6 runs of 8 steps, each evaluated live and with EMA 0.9. The sizes
 * are the numbers below: scale max_steps / eval.advbench_limit up on a faster machine. */
static const char QUICK[] =
    "{\n"
    "  \"model\": \"models/SmolLM2-135M-Instruct.Q4_1.gguf\",\n"
    "  \"datasets\": [{\"path\": \"alpaca/alpaca_5000.json\", \"format\": \"alpaca\", \"limit\": 4500}],\n"
    "  \"lr\": [2e-5, 1e-4, 5e-4],\n"
    "  \"batch_size\": [1, 4],\n"
    "  \"grad_accum\": [1],\n"
    "  \"max_steps\": [8],\n"
    "  \"lr_schedule\": [\"constant\"],\n"
    "  \"warmup_steps\": [0],\n"
    "  \"ema_decay\": [\"none\", 0.9],\n"
    "  \"weight_decay\": 0.0,\n"
    "  \"max_grad_norm\": 1.0,\n"
    "  \"max_seq_len\": 192,\n"
    "  \"seed\": 42,\n"
    "  \"precision\": \"fp32\",\n"
    "  \"eval\": {\"advbench_split\": \"b\", \"advbench_split_seed\": 2508, \"advbench_limit\": 32,\n"
    "           \"max_new_tokens\": 16, \"batch_size\": 32, \"xstest\": true, \"xstest_limit\": 16,\n"
    "           \"truthfulqa\": false, \"truthfulqa_limit\": 0, \"val_examples\": 8},\n"
    "  \"probe\": {\"every\": 4, \"n_prompts\": 8, \"max_new_tokens\": 12, \"stop_asr_above\": 1.0,\n"
    "            \"keep_best\": false},\n"
    "  \"align\": {\"enabled\": true, \"dir\": null, \"n_alpaca\": 130, \"max_steps\": 10, \"lr\": 2e-4,\n"
    "            \"batch_size\": 8},\n"
    "  \"report\": {\"utility_metric\": \"val_loss\", \"utility_tolerance\": 0.05, \"plots\": true},\n"
    "  \"estimate\": {\"train_tokens_per_s\": 25, \"gen_tokens_per_s\": 50, \"example_tokens\": 95}\n"
    "}\n";

/* paper: the setting of Kim et al. 2025 as far as we could establish it (Llama-2-7B-chat; Alpaca,
 * Dolly, ORCA; lr and effective batch swept; EMA momentum) - see docs/study.md for which values
 * are the paper's and which are our choice. Meant for machines with a large GPU. */
static const char PAPER[] =
    "{\n"
    "  \"model\": \"models/Llama-2-7b-chat-hf\",\n"
    "  \"datasets\": [{\"path\": \"alpaca/alpaca_5000.json\", \"format\": \"alpaca\", \"limit\": 4500},\n"
    "               {\"path\": \"dolly/databricks-dolly-15k.prefix.jsonl\", \"format\": \"dolly\"},\n"
    "               {\"path\": \"orca/validation.jsonl\", \"format\": \"orca\"}],\n"
    "  \"lr\": [1e-5, 2e-5, 5e-5, 1e-4],\n"
    "  \"batch_size\": [16],\n"
    "  \"grad_accum\": [1, 4, 8],\n"
    "  \"max_steps\": [500],\n"
    "  \"lr_schedule\": [\"cosine\"],\n"
    "  \"warmup_steps\": [10],\n"
    "  \"ema_decay\": [\"none\", 0.99, 0.999],\n"
    "  \"weight_decay\": 0.0,\n"
    "  \"max_grad_norm\": 1.0,\n"
    "  \"max_seq_len\": 1024,\n"
    "  \"seed\": 42,\n"
    "  \"precision\": \"bf16\",\n"
    "  \"eval\": {\"advbench_split\": \"all\", \"advbench_split_seed\": 2508, \"advbench_limit\": 0,\n"
    "           \"max_new_tokens\": 256, \"batch_size\": 32, \"xstest\": true, \"xstest_limit\": 0,\n"
    "           \"truthfulqa\": true, \"truthfulqa_limit\": 0, \"val_examples\": 500},\n"
    "  \"probe\": {\"every\": 50, \"n_prompts\": 64, \"max_new_tokens\": 64, \"stop_asr_above\": 1.0,\n"
    "            \"keep_best\": false},\n"
    "  \"report\": {\"utility_metric\": \"val_loss\", \"utility_tolerance\": 0.05, \"plots\": true},\n"
    "  \"estimate\": {\"train_tokens_per_s\": 3000, \"gen_tokens_per_s\": 4000, \"example_tokens\": 300}\n"
    "}\n";

const char *const st_study_preset_names[] = {"quick", "paper", NULL};

const char *st_study_preset_json(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "quick")) return QUICK;
    if (!strcmp(name, "paper")) return PAPER;
    return NULL;
}
