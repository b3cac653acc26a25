/* train_settings.h - one description per training setting (after Redis's config.c: one static
 * array of settings, each knowing where its value lives, its bounds and default).
 *
 * Each key of st_train_config that a user sets is one st_train_setting row: JSON key (the name in
 * config.json, study configs and checkpoint fingerprints: "lr", "ema_decay"), the `train` flag,
 * the type, where the value lives (offsetof), bounds, default and whether a resumed run must have
 * the same value. From the rows come st_train_config_default, the `train` options, config.json,
 * the checkpoint fingerprint and st_train_config_validate (messages name the key). An enumerated
 * setting reads its names from a name table (st_name_value, looked up both ways). A new setting
 * (a defense's coefficient) is a new field plus one row. */
#ifndef SAFETUNE_TRAIN_SETTINGS_H
#define SAFETUNE_TRAIN_SETTINGS_H

#include <cjson/cJSON.h>

#include "safetune/trainer.h"

/* Name <-> value of an enumerated setting; tables end with {NULL, 0}. The first name of a value
 * is its canonical name (later ones are accepted spellings). */
typedef struct {
    const char *name;
    int value;
} st_name_value;

extern const st_name_value st_lr_schedule_names[]; /* constant, constant_with_warmup, linear, cosine, step */
extern const st_name_value st_precision_names[];   /* fp32 (0), bf16 (1) */
extern const st_name_value st_finetune_names[];    /* full (0), lora (1) */
extern const st_name_value st_off_on_names[];      /* off (ST_OFF), on (ST_ON) */

/* ST_OK and *value, or ST_ERR_ARG naming `what` and every accepted name. */
st_status st_name_lookup(const st_name_value *t, const char *what, const char *name, int *value);
/* Canonical name of value, or "unknown". */
const char *st_name_of(const st_name_value *t, int value);

typedef enum {
    ST_SET_INT,    /* int */
    ST_SET_I64,    /* int64_t */
    ST_SET_U64,    /* uint64_t */
    ST_SET_SIZE,   /* size_t */
    ST_SET_DOUBLE, /* double */
    ST_SET_ENUM,   /* int-sized enum through `names` */
    ST_SET_DECAYS, /* the EMA decays: ema_decays[] + n_ema ("none" or 0 = no EMA) */
    ST_SET_LORA_TARGETS /* unsigned bit set of LoRA target modules ("all" or "q_proj,v_proj") */
} st_setting_type;

typedef enum {
    ST_FP_NO,     /* not part of the fingerprint (logging, checkpointing, derived elsewhere) */
    ST_FP_REFUSE, /* resume refuses a checkpoint with another value */
    ST_FP_GROW    /* may grow on resume (max_steps: a warning when the schedule depends on it) */
} st_setting_fp;

typedef struct {
    const char *key;     /* JSON key: "lr", "batch_size", "ema_decay" */
    const char *flag;    /* `train` option without "--": "lr", "batch-size" */
    st_setting_type type;
    size_t offset;       /* offsetof(st_train_config, field) */
    double min, max;     /* inclusive bounds of numbers (each decay for ST_SET_DECAYS) */
    const char *def;     /* default as text, read by the row's type */
    st_setting_fp fingerprint;
    const st_name_value *names; /* ST_SET_ENUM */
    const char *metavar, *help;
} st_train_setting;

/* 1 when a non-zero value of row s makes the run use the alignment set's safety data (the AdvBench
 * half-a refusal pairs of the aligned start: Lisa, SafeGrad, EWC's Fisher; DEFENSES.md §9): the
 * study refuses such a defense without an aligned start and labels it "+ safety data". */
int st_train_setting_safety_data(const st_train_setting *s);

/* The rows, in help order; *n gets their count. */
const st_train_setting *st_train_settings(size_t *n);
/* Row by JSON key or flag; NULL if none. */
const st_train_setting *st_train_setting_find(const char *key_or_flag);
/* Parse text (a number, a name of the row's table, "0.9,0.5" for decays) into c, checking type
 * and bounds; ST_ERR_ARG names the key, the value and the range. */
st_status st_train_setting_set(st_train_config *c, const st_train_setting *s, const char *text);
/* The value as JSON: a number, a canonical name, or for decays a number (0 = none) with one decay
 * and a list with several. */
cJSON *st_train_setting_json(const st_train_config *c, const st_train_setting *s);
/* The value as text (help defaults): "1e-05", "constant", "0.99", "0.9,0.5", "none". */
void st_train_setting_text(const st_train_config *c, const st_train_setting *s, char *buf, size_t n);
/* Every row's bounds, then the rules between keys (max_steps or epochs, distinct decays);
 * ST_ERR_ARG naming the key. */
st_status st_train_config_validate(const st_train_config *c);
/* Add every row to o as "key": value (only ST_FP_REFUSE / ST_FP_GROW rows when fp_only). */
void st_train_config_to_json(const st_train_config *c, cJSON *o, int fp_only);

#endif
