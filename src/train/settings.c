/* settings.c - the training settings table and what derives from it (train_settings.h). */
#include "safetune/train_settings.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const st_name_value st_lr_schedule_names[] = {
    {"constant", ST_SCHED_CONSTANT},
    {"constant_with_warmup", ST_SCHED_CONSTANT_WARMUP},
    {"warmup-constant", ST_SCHED_CONSTANT_WARMUP},
    {"warmup_constant", ST_SCHED_CONSTANT_WARMUP},
    {"linear", ST_SCHED_LINEAR},
    {"cosine", ST_SCHED_COSINE},
    {"step", ST_SCHED_STEP},
    {NULL, 0}};

const st_name_value st_precision_names[] = {{"fp32", 0}, {"bf16", 1}, {NULL, 0}};
const st_name_value st_finetune_names[] = {{"full", ST_FINETUNE_FULL}, {"lora", ST_FINETUNE_LORA}, {NULL, 0}};
const st_name_value st_off_on_names[] = {{"off", ST_OFF}, {"on", ST_ON}, {NULL, 0}};

st_status st_name_lookup(const st_name_value *t, const char *what, const char *name, int *value) {
    for (const st_name_value *e = t; e->name; e++)
        if (name && !strcmp(name, e->name)) {
            *value = e->value;
            return ST_OK;
        }
    char list[256] = "";
    size_t n = 0;
    for (const st_name_value *e = t; e->name && n < sizeof list; e++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", e->name);
    return st_error(ST_ERR_ARG, "%s: unknown value '%s' (one of %s)", what, name ? name : "", list);
}

const char *st_name_of(const st_name_value *t, int value) {
    for (const st_name_value *e = t; e->name; e++)
        if (e->value == value) return e->name;
    return "unknown";
}

/* ST_SET_ENUM fields are read and written as int */
_Static_assert(sizeof(st_sched_kind) == sizeof(int), "lr_schedule is stored as an int");

#define OFF(f) offsetof(st_train_config, f)
#define BIG 1e9

/* Defaults: AdamW (betas 0.9, 0.999, eps 1e-8) at lr 1e-5 without weight decay, a constant
 * schedule, batch 8, one EMA of decay 0.99 (Kim et al. 2025), fp32. max_steps and epochs have no
 * default: a run asks for one of them. */
static const st_train_setting k_rows[] = {
    {"lr", "lr", ST_SET_DOUBLE, OFF(optim.lr), 0, 1, "1e-5", ST_FP_REFUSE, NULL, "X", "peak learning rate"},
    {"batch_size", "batch-size", ST_SET_INT, OFF(batch_size), 1, 1 << 20, "8", ST_FP_REFUSE, NULL, "N",
     "rows per micro-batch"},
    {"grad_accum", "grad-accum", ST_SET_INT, OFF(grad_accum), 1, 1 << 20, "1", ST_FP_REFUSE, NULL, "N",
     "micro-batches per optimiser step (an epoch's last window may hold fewer)"},
    {"max_steps", "max-steps", ST_SET_I64, OFF(max_steps), 0, BIG, "0", ST_FP_GROW, NULL, "N",
     "optimiser steps (0: from --epochs)"},
    {"epochs", "epochs", ST_SET_DOUBLE, OFF(epochs), 0, 1e6, "0", ST_FP_NO, NULL, "E",
     "passes over the training split when --max-steps is 0"},
    {"warmup_steps", "warmup-steps", ST_SET_I64, OFF(sched.warmup_steps), 0, BIG, "0", ST_FP_REFUSE, NULL, "N",
     "linear warm-up steps"},
    {"lr_schedule", "lr-schedule", ST_SET_ENUM, OFF(sched.kind), 0, 0, "constant", ST_FP_REFUSE, st_lr_schedule_names,
     "KIND", "constant|warmup-constant|linear|cosine|step (Hugging Face formulas)"},
    {"weight_decay", "weight-decay", ST_SET_DOUBLE, OFF(optim.weight_decay), 0, 10, "0", ST_FP_REFUSE, NULL, "X",
     "AdamW decoupled weight decay"},
    {"beta1", "beta1", ST_SET_DOUBLE, OFF(optim.beta1), 0, 0.999999, "0.9", ST_FP_REFUSE, NULL, "X", "AdamW beta1"},
    {"beta2", "beta2", ST_SET_DOUBLE, OFF(optim.beta2), 0, 0.9999999, "0.999", ST_FP_REFUSE, NULL, "X", "AdamW beta2"},
    {"eps", "eps", ST_SET_DOUBLE, OFF(optim.eps), 1e-30, 1, "1e-8", ST_FP_REFUSE, NULL, "X", "AdamW eps"},
    {"max_grad_norm", "max-grad-norm", ST_SET_DOUBLE, OFF(max_grad_norm), 0, 1e30, "1", ST_FP_REFUSE, NULL, "X",
     "clip the global grad norm (0 = off)"},
    {"ema_decay", "ema-decay", ST_SET_DECAYS, OFF(ema_decays), 0, 1, "0.99", ST_FP_REFUSE, NULL, "B[,B...]",
     "EMA decay(s) of the weights, each its own average (final-ema/ the first, final-ema-B/ the others); "
     "0 or none = off"},
    {"ema_every", "ema-every", ST_SET_I64, OFF(ema_every), 1, BIG, "1", ST_FP_REFUSE, NULL, "N",
     "update the EMAs every N steps"},
    {"ema_start", "ema-start", ST_SET_I64, OFF(ema_start), 1, BIG, "1", ST_FP_REFUSE, NULL, "N",
     "first step that updates the EMAs"},
    {"precision", "precision", ST_SET_ENUM, OFF(bf16), 0, 0, "fp32", ST_FP_REFUSE, st_precision_names, "fp32|bf16",
     "matmuls (weights, optimiser state and EMAs stay fp32)"},
    {"seed", "seed", ST_SET_U64, OFF(seed), 0, 0, "42", ST_FP_REFUSE, NULL, "N", "data split and order"},
    {"max_seq_len", "max-seq-len", ST_SET_INT, OFF(max_seq_len), 2, 1 << 20, "512", ST_FP_REFUSE, NULL, "T",
     "truncate rows to T tokens"},
    {"val_fraction", "val-fraction", ST_SET_DOUBLE, OFF(val_fraction), 0, 0.99, "0.05", ST_FP_NO, NULL, "F",
     "held-out fraction for val_loss"},
    {"val_count", "val-count", ST_SET_SIZE, OFF(val_count), 0, BIG, "0", ST_FP_NO, NULL, "N",
     "held-out rows (> 0 overrides --val-fraction)"},
    {"eval_every", "eval-every", ST_SET_I64, OFF(eval_every), 0, BIG, "0", ST_FP_NO, NULL, "N",
     "val_loss every N steps (0 = never)"},
    {"save_every", "save-every", ST_SET_I64, OFF(save_every), 0, BIG, "0", ST_FP_NO, NULL, "N",
     "checkpoint every N steps (0 = never)"},
    {"l2sp_alpha", "l2sp-alpha", ST_SET_DOUBLE, OFF(l2sp_alpha), 0, 1e30, "0", ST_FP_REFUSE, NULL, "A",
     "L2-SP toward the start, coupled (Li et al. 2018): loss + (A/2)·‖θ−θ0‖², through clipping and AdamW (0 = off)"},
    {"l2sp_alpha_decoupled", "l2sp-alpha-decoupled", ST_SET_DOUBLE, OFF(l2sp_alpha_decoupled), 0, 1e30, "0", ST_FP_REFUSE,
     NULL, "A", "L2-SP, decoupled: θ ← θ0 + (1 − lr_s·A)(θ − θ0) before each update (time constant 1/(lr·A) steps; "
     "lr·A < 1; 0 = off)"},
    /* Lisa (lisa.h, DEFENSES.md §6) and SafeGrad (safegrad.h, §7): need the alignment set */
    {"lisa", "lisa", ST_SET_ENUM, OFF(lisa), 0, 0, "off", ST_FP_REFUSE, st_off_on_names, "off|on",
     "Lisa (Huang et al. 2024): alternate alignment steps on the alignment set and task steps, with a proximal "
     "pull toward the other phase's last weights (needs the alignment set)"},
    {"lisa_rho", "lisa-rho", ST_SET_DOUBLE, OFF(lisa_rho), 0, 1e6, "1", ST_FP_REFUSE, NULL, "R",
     "Lisa: proximal strength, loss + (R/2)·‖θ−anchor‖² after the first 10% of the steps"},
    {"lisa_align_share", "lisa-align-share", ST_SET_DOUBLE, OFF(lisa_align_share), 0, 1, "0.1", ST_FP_REFUSE, NULL, "F",
     "Lisa: alignment steps' share of each cycle (K1 = round(F·C), at least 1 when F > 0)"},
    {"lisa_cycle_steps", "lisa-cycle-steps", ST_SET_I64, OFF(lisa_cycle_steps), 1, BIG, "1000", ST_FP_REFUSE, NULL, "C",
     "Lisa: steps per alignment + task cycle, K1 + K2 (min(C, max_steps): the paper's 100/900 scaled to short runs)"},
    {"safegrad", "safegrad", ST_SET_ENUM, OFF(safegrad), 0, 0, "off", ST_FP_REFUSE, st_off_on_names, "off|on",
     "SafeGrad (Yi et al. 2025): add the gradient of KL(p_θ0 ‖ p_θ) on an alignment batch and project the task "
     "gradient off it when they conflict (needs the alignment set; full fine-tuning)"},
    {"safegrad_rho", "safegrad-rho", ST_SET_DOUBLE, OFF(safegrad_rho), 0, 1e6, "1", ST_FP_REFUSE, NULL, "R",
     "SafeGrad: weight of the alignment gradient, g = g_u + R·g_a"},
    {"safegrad_project", "safegrad-project", ST_SET_ENUM, OFF(safegrad_project), 0, 0, "on", ST_FP_REFUSE,
     st_off_on_names, "off|on", "SafeGrad: project the task gradient when ⟨g_u, g_a⟩ < 0"},
    {"safegrad_align_rows", "safegrad-align-rows", ST_SET_SIZE, OFF(safegrad_align_rows), 1, BIG, "100", ST_FP_REFUSE,
     NULL, "N", "SafeGrad: alignment rows cycled through, n_a (a seeded choice among the alignment set's rows)"},
    /* defenses against θ_0 on the task step (DEFENSES.md §4, §8) */
    {"csft_beta", "csft-beta", ST_SET_DOUBLE, OFF(csft_beta), 0, 100, "0", ST_FP_REFUSE, NULL, "B",
     "constrained SFT, token-wise (Qi et al. 2024): weight each answer token's CE by max(1e-3, 2(1-sigmoid(B_t(log p - "
     "log p0)))), log p0 of the start cached once; the paper's B is 0.1 (0 = off)"},
    {"csft_first_factor", "csft-first-factor", ST_SET_DOUBLE, OFF(csft_first_factor), 0, 1e6, "5", ST_FP_REFUSE, NULL,
     "F", "constrained SFT: B_1 = B*F at the first answer token"},
    {"csft_factor", "csft-factor", ST_SET_DOUBLE, OFF(csft_factor), 0, 1e6, "20", ST_FP_REFUSE, NULL, "F",
     "constrained SFT: B_t = B*F at answer tokens 2..--csft-prefix, B beyond"},
    {"csft_prefix", "csft-prefix", ST_SET_INT, OFF(csft_prefix), 1, 1 << 20, "5", ST_FP_REFUSE, NULL, "L",
     "constrained SFT: answer tokens with the boosted B"},
    {"kl_lambda", "kl-lambda", ST_SET_DOUBLE, OFF(kl_lambda), 0, 1e6, "0", ST_FP_REFUSE, NULL, "L",
     "KL to the start on the task batch (LwF): loss + L*(1/N)*sum over answer tokens of KL(p_start || p) over the "
     "vocabulary; 0.1 is the reference's (0 = off)"},
    {"ewc_lambda", "ewc-lambda", ST_SET_DOUBLE, OFF(ewc_lambda), 0, 1e30, "0", ST_FP_REFUSE, NULL, "L",
     "EWC (Kirkpatrick et al. 2017): loss + (L/2)*sum F*(theta-theta0)^2, F the diagonal Fisher of the alignment set "
     "(--align-dir) at the start; sweep L*mean(F) like --l2sp-alpha (0 = off)"},
    {"keep_checkpoints", "keep-checkpoints", ST_SET_INT, OFF(keep_checkpoints), 0, 1e6, "2", ST_FP_NO, NULL, "N",
     "keep the newest N checkpoints (0 = keep all)"},
    /* LoRA (lora.h); the lora_* rows apply with finetune lora only (`train` refuses them otherwise) */
    {"finetune", "finetune", ST_SET_ENUM, OFF(finetune), 0, 0, "full", ST_FP_REFUSE, st_finetune_names, "full|lora",
     "train every weight, or a LoRA adapter on the frozen base (final/ and final-ema/ are then PEFT adapter folders)"},
    {"lora_r", "lora-r", ST_SET_INT, OFF(lora.r), 1, 1 << 16, "8", ST_FP_REFUSE, NULL, "R", "LoRA rank"},
    {"lora_alpha", "lora-alpha", ST_SET_DOUBLE, OFF(lora.alpha), 1e-6, 1e6, "16", ST_FP_REFUSE, NULL, "X",
     "LoRA alpha (scale alpha / r)"},
    {"lora_dropout", "lora-dropout", ST_SET_DOUBLE, OFF(lora.dropout), 0, 0.999, "0.05", ST_FP_REFUSE, NULL, "P",
     "dropout on the adapter input"},
    {"lora_targets", "lora-targets", ST_SET_LORA_TARGETS, OFF(lora.targets), 0, 0, "all", ST_FP_REFUSE, NULL, "LIST",
     "all, or some of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"},
    {"base_precision", "base-precision", ST_SET_ENUM, OFF(base_bf16), 0, 0, "fp32", ST_FP_REFUSE, st_precision_names,
     "fp32|bf16", "LoRA: the frozen base in fp32, or held in bf16 (2 bytes a weight; its products take bf16 operands)"},
};

/* The rows whose non-zero value trains on the alignment set's safety data (train_settings.h). */
static const char *const k_safety_data_keys[] = {"lisa", "safegrad", "ewc_lambda", NULL};

int st_train_setting_safety_data(const st_train_setting *s) {
    for (size_t i = 0; s && k_safety_data_keys[i]; i++)
        if (!strcmp(s->key, k_safety_data_keys[i])) return 1;
    return 0;
}

const st_train_setting *st_train_settings(size_t *n) {
    *n = sizeof k_rows / sizeof *k_rows;
    return k_rows;
}

const st_train_setting *st_train_setting_find(const char *key) {
    for (size_t i = 0; i < sizeof k_rows / sizeof *k_rows; i++)
        if (!strcmp(k_rows[i].key, key) || (k_rows[i].flag && !strcmp(k_rows[i].flag, key))) return &k_rows[i];
    return NULL;
}

static void *field(st_train_config *c, const st_train_setting *s) { return (char *)c + s->offset; }
static const void *cfield(const st_train_config *c, const st_train_setting *s) {
    return (const char *)c + s->offset;
}

static st_status range_error(const st_train_setting *s, const char *text) {
    return st_error(ST_ERR_ARG, "%s = %s is out of range [%.15g, %.15g]", s->key, text, s->min, s->max);
}

/* A whole decimal number of text into *x; 0 if it is not one. */
static int read_number(const char *text, double *x) {
    char *end;
    errno = 0;
    *x = strtod(text, &end);
    return *text && !*end && !errno && isfinite(*x);
}

static st_status set_decays(st_train_config *c, const st_train_setting *s, const char *text) {
    int n = 0;
    double d[ST_EMA_MAX];
    if (strcmp(text, "none") != 0) {
        for (const char *p = text;;) {
            char *end;
            errno = 0;
            const double x = strtod(p, &end);
            if (end == p || errno || (*end && *end != ',') || !isfinite(x))
                return st_error(ST_ERR_ARG, "%s = %s: expected none or decays like 0.99 or 0.9,0.5", s->key, text);
            if (x == 0 && n == 0 && !*end) break; /* 0 = no EMA */
            if (!(x > s->min && x < s->max))
                return st_error(ST_ERR_ARG, "%s = %s: %g is not in (0, 1) (decay 1 never moves from the start weights, "
                                "0 follows the live weights; none = no EMA)", s->key, text, x);
            if (n == ST_EMA_MAX) return st_error(ST_ERR_ARG, "%s = %s: at most %d decays", s->key, text, ST_EMA_MAX);
            d[n++] = x;
            if (!*end) break;
            p = end + 1;
        }
    }
    c->n_ema = n;
    for (int j = 0; j < n; j++) c->ema_decays[j] = d[j];
    return ST_OK;
}

st_status st_train_setting_set(st_train_config *c, const st_train_setting *s, const char *text) {
    double x = 0;
    if (!text) text = "";
    switch (s->type) {
    case ST_SET_ENUM: {
        int v;
        st_status st = st_name_lookup(s->names, s->key, text, &v);
        if (st) return st;
        *(int *)field(c, s) = v;
        return ST_OK;
    }
    case ST_SET_DECAYS: return set_decays(c, s, text);
    case ST_SET_LORA_TARGETS: return st_lora_targets_parse(text, (unsigned *)field(c, s));
    case ST_SET_DOUBLE:
        if (!read_number(text, &x)) return st_error(ST_ERR_ARG, "%s = '%s': expected a number", s->key, text);
        if (s->min < s->max && (x < s->min || x > s->max)) return range_error(s, text);
        *(double *)field(c, s) = x;
        return ST_OK;
    default: break;
    }
    /* integers: whole decimal numbers only */
    char *end;
    errno = 0;
    if (s->type == ST_SET_U64) {
        const unsigned long long u = strtoull(text, &end, 10);
        if (!*text || *text == '-' || *end || errno)
            return st_error(ST_ERR_ARG, "%s = '%s': expected a non-negative integer", s->key, text);
        *(uint64_t *)field(c, s) = (uint64_t)u;
        return ST_OK;
    }
    const long long v = strtoll(text, &end, 10);
    if (!*text || *end || errno) return st_error(ST_ERR_ARG, "%s = '%s': expected an integer", s->key, text);
    if (s->min < s->max && ((double)v < s->min || (double)v > s->max)) return range_error(s, text);
    if (s->type == ST_SET_INT) *(int *)field(c, s) = (int)v;
    else if (s->type == ST_SET_I64) *(int64_t *)field(c, s) = (int64_t)v;
    else *(size_t *)field(c, s) = (size_t)v;
    return ST_OK;
}

cJSON *st_train_setting_json(const st_train_config *c, const st_train_setting *s) {
    const void *p = cfield(c, s);
    switch (s->type) {
    case ST_SET_INT: return cJSON_CreateNumber(*(const int *)p);
    case ST_SET_I64: return cJSON_CreateNumber((double)*(const int64_t *)p);
    case ST_SET_U64: return cJSON_CreateNumber((double)*(const uint64_t *)p);
    case ST_SET_SIZE: return cJSON_CreateNumber((double)*(const size_t *)p);
    case ST_SET_DOUBLE: return cJSON_CreateNumber(*(const double *)p);
    case ST_SET_ENUM: return cJSON_CreateString(st_name_of(s->names, *(const int *)p));
    case ST_SET_LORA_TARGETS: {
        char b[128];
        st_lora_targets_format(*(const unsigned *)p, b, sizeof b);
        return cJSON_CreateString(b);
    }
    case ST_SET_DECAYS:
        if (c->n_ema <= 1) return cJSON_CreateNumber(c->n_ema ? c->ema_decays[0] : 0.0);
        cJSON *a = cJSON_CreateArray();
        for (int j = 0; j < c->n_ema; j++) cJSON_AddItemToArray(a, cJSON_CreateNumber(c->ema_decays[j]));
        return a;
    }
    return cJSON_CreateNull();
}

void st_train_setting_text(const st_train_config *c, const st_train_setting *s, char *buf, size_t n) {
    const void *p = cfield(c, s);
    switch (s->type) {
    case ST_SET_INT: snprintf(buf, n, "%d", *(const int *)p); break;
    case ST_SET_I64: snprintf(buf, n, "%lld", (long long)*(const int64_t *)p); break;
    case ST_SET_U64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case ST_SET_SIZE: snprintf(buf, n, "%zu", *(const size_t *)p); break;
    case ST_SET_DOUBLE: snprintf(buf, n, "%.15g", *(const double *)p); break;
    case ST_SET_ENUM: snprintf(buf, n, "%s", st_name_of(s->names, *(const int *)p)); break;
    case ST_SET_LORA_TARGETS: st_lora_targets_format(*(const unsigned *)p, buf, n); break;
    case ST_SET_DECAYS: {
        size_t k = 0;
        buf[0] = '\0';
        if (c->n_ema == 0) snprintf(buf, n, "none");
        for (int j = 0; j < c->n_ema && k < n; j++)
            k += (size_t)snprintf(buf + k, n - k, "%s%.15g", j ? "," : "", c->ema_decays[j]);
        break;
    }
    }
}

void st_train_config_default(st_train_config *c) {
    memset(c, 0, sizeof *c);
    st_optim_config_default(&c->optim, ST_OPTIM_ADAMW);
    st_schedule_default(&c->sched, ST_SCHED_CONSTANT, 1);
    for (size_t i = 0; i < sizeof k_rows / sizeof *k_rows; i++) {
        st_status s = st_train_setting_set(c, &k_rows[i], k_rows[i].def);
        (void)s; /* the defaults are in range (test_train_settings checks each row) */
    }
}

/* The value of a number row as a double (bounds check). */
static double as_double(const st_train_config *c, const st_train_setting *s) {
    const void *p = cfield(c, s);
    switch (s->type) {
    case ST_SET_INT: return *(const int *)p;
    case ST_SET_I64: return (double)*(const int64_t *)p;
    case ST_SET_U64: return (double)*(const uint64_t *)p;
    case ST_SET_SIZE: return (double)*(const size_t *)p;
    case ST_SET_DOUBLE: return *(const double *)p;
    default: return 0;
    }
}

/* Lisa and SafeGrad against each other and the other training-step defenses: each is one value of
 * the study's defense axis (DEFENSES.md §9), and two pulls or two alignment signals in one step
 * have no defined rule (Lisa with K1 = 0 is coupled L2-SP; SafeGrad's guarantee ⟨g, g_a⟩ >= 0
 * needs its term last). */
static st_status lisa_safegrad_rules(const st_train_config *c) {
    const char *other = c->l2sp_alpha > 0 ? "l2sp_alpha" : c->l2sp_alpha_decoupled > 0 ? "l2sp_alpha_decoupled" : NULL;
    if (c->lisa == ST_ON && c->safegrad == ST_ON)
        return st_error(ST_ERR_ARG, "lisa and safegrad are two defenses of the training step: set one (each is one "
                        "value of the study's defense axis)");
    if (c->lisa == ST_ON && other)
        return st_error(ST_ERR_ARG, "lisa with %s: Lisa's proximal term already pulls toward an anchor (with "
                        "lisa_align_share 0 it is coupled L2-SP at alpha = lisa_rho): set one", other);
    if (c->safegrad == ST_ON && other)
        return st_error(ST_ERR_ARG, "safegrad with %s: SafeGrad's projection must see the whole gradient; set one",
                        other);
    if (c->safegrad == ST_ON && c->finetune == ST_FINETUNE_LORA)
        return st_error(ST_ERR_ARG, "safegrad works on full fine-tuning (its θ_0 forward uses the model weights): "
                        "set finetune full, or safegrad off");
    return ST_OK;
}

st_status st_train_config_validate(const st_train_config *c) {
    for (size_t i = 0; i < sizeof k_rows / sizeof *k_rows; i++) {
        const st_train_setting *s = &k_rows[i];
        if (s->type == ST_SET_ENUM) {
            const int v = *(const int *)cfield(c, s);
            if (!strcmp(st_name_of(s->names, v), "unknown"))
                return st_error(ST_ERR_ARG, "%s: unknown value %d", s->key, v);
        } else if (s->type == ST_SET_LORA_TARGETS) {
            const unsigned v = *(const unsigned *)cfield(c, s);
            if (!v || (v & ~ST_LORA_ALL_TARGETS)) return st_error(ST_ERR_ARG, "%s: no target module chosen", s->key);
        } else if (s->type == ST_SET_DECAYS) {
            if (c->n_ema < 0 || c->n_ema > ST_EMA_MAX)
                return st_error(ST_ERR_ARG, "%s: %d decays, at most %d", s->key, c->n_ema, ST_EMA_MAX);
            for (int j = 0; j < c->n_ema; j++) {
                if (!(c->ema_decays[j] >= s->min && c->ema_decays[j] <= s->max))
                    return st_error(ST_ERR_ARG, "%s = %g must be in [0, 1]", s->key, c->ema_decays[j]);
                for (int k = 0; k < j; k++)
                    if ((float)c->ema_decays[k] == (float)c->ema_decays[j])
                        return st_error(ST_ERR_ARG, "%s: %g is listed twice", s->key, c->ema_decays[j]);
            }
        } else if (s->min < s->max) {
            const double x = as_double(c, s);
            if (!(x >= s->min && x <= s->max))
                return st_error(ST_ERR_ARG, "%s = %.15g is out of range [%.15g, %.15g]", s->key, x, s->min, s->max);
        }
    }
    if (c->max_steps == 0 && !(c->epochs > 0))
        return st_error(ST_ERR_ARG, "max_steps or epochs: set max_steps N or epochs E (> 0)");
    if (c->l2sp_alpha_decoupled > 0 && c->optim.lr * c->l2sp_alpha_decoupled >= 1)
        return st_error(ST_ERR_ARG, "l2sp_alpha_decoupled = %g with lr %g: lr * l2sp_alpha_decoupled = %g >= 1 would pull "
                        "θ to or past θ_0 in one step; use l2sp_alpha_decoupled < %g (1/(lr·α_d) is the pull's time "
                        "constant in steps)", c->l2sp_alpha_decoupled, c->optim.lr,
                        c->optim.lr * c->l2sp_alpha_decoupled, 1.0 / c->optim.lr);
    if (c->l2sp_alpha > 0 && c->l2sp_alpha_decoupled > 0)
        return st_error(ST_ERR_ARG, "l2sp_alpha and l2sp_alpha_decoupled are two variants of one defense: set one");
    const st_status rs = lisa_safegrad_rules(c);
    if (rs) return rs;
    if (c->ewc_lambda > 0 && (c->l2sp_alpha > 0 || c->l2sp_alpha_decoupled > 0))
        return st_error(ST_ERR_ARG, "ewc_lambda and %s both pull θ toward θ_0 (EWC with a flat Fisher is L2-SP): set one",
                        c->l2sp_alpha > 0 ? "l2sp_alpha" : "l2sp_alpha_decoupled");
    if (c->kl_lambda > 0 && c->finetune == ST_FINETUNE_LORA)
        return st_error(ST_ERR_ARG, "kl_lambda with finetune lora is not supported (θ_0's forward runs on the full "
                        "weight view); use finetune full or kl_lambda 0");
    const char *mine = c->csft_beta > 0 ? "csft_beta" : c->kl_lambda > 0 ? "kl_lambda" : c->ewc_lambda > 0 ? "ewc_lambda"
                                                                                                         : NULL;
    if (mine && (c->lisa == ST_ON || c->safegrad == ST_ON))
        return st_error(ST_ERR_ARG, "%s with %s: two defenses of the training step that are not composed (each is one "
                        "value of the study's defense axis): set one", mine, c->lisa == ST_ON ? "lisa" : "safegrad");
    return st_optim_config_validate(&c->optim);
}

void st_train_config_to_json(const st_train_config *c, cJSON *o, int fp_only) {
    for (size_t i = 0; i < sizeof k_rows / sizeof *k_rows; i++)
        if (!fp_only || k_rows[i].fingerprint != ST_FP_NO)
            cJSON_AddItemToObject(o, k_rows[i].key, st_train_setting_json(c, &k_rows[i]));
}
