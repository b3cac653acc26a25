/* modelpath.c - MODEL argument checks shared by the subcommands: --weights live|ema on a training
 * output folder, a missing path, and folders that safetune writes but that are not models
 * (training output, trainer checkpoints, study and align folders) get one line saying what the
 * folder is and which path to pass instead. */
#include "cli/commands.h"
#include "safetune/base.h"
#include "safetune/lora.h"
#include "safetune/model.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int has(const char *dir, const char *name, int want_dir) {
    char p[4200];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (stat(p, &sb) != 0) return 0;
    return want_dir ? S_ISDIR(sb.st_mode) : S_ISREG(sb.st_mode);
}

cJSON *cli_read_run_config(const char *dir) {
    char p[4200], *txt = NULL;
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (st_read_file(p, &txt, NULL) != ST_OK) {
        st_clear_error();
        return NULL;
    }
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    int run = cJSON_IsObject(j) && !cJSON_GetObjectItemCaseSensitive(j, "model_type") &&
              !cJSON_GetObjectItemCaseSensitive(j, "architectures") &&
              (cJSON_GetObjectItemCaseSensitive(j, "run") ||
               (cJSON_GetObjectItemCaseSensitive(j, "lr") && cJSON_GetObjectItemCaseSensitive(j, "data")));
    if (!run) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static int is_run_config(const char *dir) {
    cJSON *j = cli_read_run_config(dir);
    cJSON_Delete(j);
    return j != NULL;
}

static int is_dir_path(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

st_status cli_resolve_weights(const char *model, const char *weights, char **out) {
    *out = NULL;
    if (!weights || !*weights) weights = "live";
    int ema = !strcmp(weights, "ema");
    if (!ema && strcmp(weights, "live"))
        return st_error(ST_ERR_ARG, "--weights: '%s' is not live or ema", weights);
    struct stat sb;
    if (stat(model, &sb) != 0)
        return st_error(ST_ERR_IO, "%s: no such file or directory (MODEL is a .gguf file, a Hugging Face "
                                   "folder or a training output folder)", model);
    char *fin = st_path_join(model, "final"), *fema = st_path_join(model, "final-ema"),
         *cfg = st_path_join(model, "config.json");
    if (!fin || !fema || !cfg) {
        free(fin), free(fema), free(cfg);
        return st_error(ST_ERR_NOMEM, "out of memory");
    }
    int train_out = S_ISDIR(sb.st_mode) && (is_dir_path(fin) || is_dir_path(fema));
    st_status s = ST_OK;
    if (ema) {
        if (train_out && is_dir_path(fema)) {
            *out = fema;
            fema = NULL;
        } else if (train_out) {
            /* the run's config.json says why: EMA off, or only the live weights saved */
            char *txt = NULL;
            size_t len;
            cJSON *rc = st_read_file(cfg, &txt, &len) == ST_OK ? cJSON_Parse(txt) : NULL;
            const cJSON *dec = cJSON_GetObjectItem(rc, "ema_decay"), *sw = cJSON_GetObjectItem(rc, "save_weights");
            const int saved_live = cJSON_IsNumber(dec) && dec->valuedouble > 0 && cJSON_IsString(sw) &&
                                   !strcmp(sw->valuestring, "live");
            s = st_error(ST_ERR_ARG, "%s: no EMA weights: the folder has final/ but no final-ema/ (%s); use "
                                     "--weights live", model,
                         saved_live ? "the run kept an EMA but saved only its live weights, --save-weights live"
                                    : "the run was trained without EMA");
            cJSON_Delete(rc);
            free(txt);
        } else {
            s = st_error(ST_ERR_ARG, "%s: --weights ema needs a training output folder holding final-ema/ "
                                     "(written by `safetune train` with EMA on); this is %s", model,
                         S_ISDIR(sb.st_mode) ? "a folder without final-ema/" : "a file");
        }
    } else if (train_out && is_dir_path(fin)) {
        *out = fin;
        fin = NULL;
    } else if (train_out) {
        s = st_error(ST_ERR_ARG, "%s: no live weights: the folder has final-ema/ but no final/; use --weights ema",
                     model);
    } else {
        *out = st_strdup(model);
        if (!*out) s = st_error(ST_ERR_NOMEM, "out of memory");
    }
    free(fin), free(fema), free(cfg);
    return s;
}

int cli_model_hint(const char *path, char *msg, size_t cap) {
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return 0;
    int fin = has(path, "final", 1), ema = has(path, "final-ema", 1);
    if (fin || ema) {
        snprintf(msg, cap, "%s is a `safetune train` output folder: pass %s/%s (%s weights)%s%s%s", path, path,
                 fin ? "final" : "final-ema", fin ? "live" : "EMA", fin && ema ? " or " : "",
                 fin && ema ? path : "", fin && ema ? "/final-ema (EMA weights)" : "");
        return 1;
    }
    if (has(path, "MANIFEST", 0) && has(path, "state.bin", 0)) {
        snprintf(msg, cap, "%s is a trainer checkpoint (resume state, not a model): continue the run with "
                 "`safetune train --config %s/../../config.json --resume %s`; the model is exported to the run's "
                 "final/ (and final-ema/) when training finishes", path, path, path);
        return 1;
    }
    if (has(path, "checkpoints", 1) || is_run_config(path)) {
        snprintf(msg, cap, "%s is the output folder of a `safetune train` run that has not finished (%s, no "
                 "final/ yet): continue it with `safetune train --config %s/config.json --resume auto`, then pass %s/final",
                 path, has(path, "checkpoints", 1) ? "checkpoints/ only" : "config.json holds the run's settings",
                 path, path);
        return 1;
    }
    if (has(path, "study.json", 0)) {
        snprintf(msg, cap, "%s is a `safetune study` folder (results.csv, report.md); it holds no exported "
                 "model: its base model is the \"model\" key of %s/study.json", path, path);
        return 1;
    }
    if (has(path, "train.json", 0) || has(path, "ckpt", 1) || has(path, "eval_live.json", 0)) {
        snprintf(msg, cap, "%s is a run folder of `safetune study`: study runs keep no exported model (the "
                 "weights are evaluated in memory; results in its eval_*.json and the study's results.csv); "
                 "to get a model, rerun that setting with `safetune train` (its final/ folder loads)", path);
        return 1;
    }
    if (has(path, "aligned", 1) && has(path, "align.json", 0)) {
        snprintf(msg, cap, "%s is a `safetune align` output folder: pass %s/aligned", path, path);
        return 1;
    }
    return 0;
}

int cli_dir_has_tokenizer(const char *dir) { return has(dir, "tokenizer.json", 0); }

st_status cli_check_adapter(const char *model_path, const char *adapter) {
    if (!adapter) return ST_OK;
    struct stat sb;
    if (stat(adapter, &sb) != 0)
        return st_error(ST_ERR_IO, "--adapter %s: no such folder (a PEFT adapter folder: adapter_config.json + "
                        "adapter_model.safetensors)", adapter);
    if (!S_ISDIR(sb.st_mode) || !st_lora_is_adapter_dir(adapter))
        return st_error(ST_ERR_ARG, "--adapter %s: not a PEFT adapter folder (no adapter_config.json); a "
                        "`safetune train --finetune lora` run writes them as OUT/final and OUT/final-ema", adapter);
    if (model_path && is_dir_path(model_path) && st_lora_is_adapter_dir(model_path) && !has(model_path, "config.json", 0))
        return st_error(ST_ERR_ARG, "--model %s is an adapter folder itself (it loads its own base with it "
                        "merged): pass the base model as --model and the adapter as --adapter, or drop --adapter",
                        model_path);
    return ST_OK;
}

st_status cli_model_load(const char *prog, const char *model_path, const char *adapter, st_model **m) {
    *m = NULL;
    if (!adapter) return st_model_load(model_path, m);
    st_status s = cli_check_adapter(model_path, adapter);
    if (s) return s;
    char *named = NULL, a[4200], b[4200];
    if (st_lora_base_model_path(adapter, &named) == ST_OK) {
        if (realpath(named, a) && realpath(model_path, b) && strcmp(a, b))
            fprintf(stderr, "%s: warning: %s/adapter_config.json names base model %s; applying it to %s (its tensor "
                    "shapes are checked)\n", prog, adapter, named, model_path);
    } else {
        st_clear_error();
    }
    free(named);
    return st_model_load_with_adapter(model_path, adapter, m);
}

int cli_load_model_adapter(const char *prog, const char *model, const char *weights, const char *adapter,
                           st_model **m) {
    char *path = NULL;
    *m = NULL;
    int rc = 1;
    if (cli_resolve_weights(model, weights, &path)) fprintf(stderr, "%s: %s\n", prog, st_last_error());
    else if (!cli_check_model_path(prog, path)) {
        if (cli_model_load(prog, path, adapter, m)) fprintf(stderr, "%s: %s\n", prog, st_last_error());
        else rc = 0;
    }
    free(path);
    return rc;
}

int cli_load_model(const char *prog, const char *model, const char *weights, st_model **m) {
    return cli_load_model_adapter(prog, model, weights, NULL, m);
}

int cli_apply_date(const char *prog, st_model *m, const char *date) {
    if (!date || !m) return 0;
    if (st_chat_template_set_date(&m->chat, date)) {
        fprintf(stderr, "%s: --date-string: %s\n", prog, st_last_error());
        return 1;
    }
    if (m->chat.kind != ST_TEMPLATE_LLAMA31)
        fprintf(stderr, "%s: warning: --date-string has no effect: the chat template is %s (only Llama-3.1/3.2/3.3 "
                        "write a date)\n", prog, st_chat_template_name(m->chat.kind));
    return 0;
}

int cli_check_model_path(const char *prog, const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "%s: %s: no such file or directory (MODEL is a .gguf file or a Hugging Face "
                        "checkpoint folder)\n", prog, path);
        return 1;
    }
    char msg[4 * 4200];
    int weights = has(path, "model.safetensors", 0) || has(path, "model.safetensors.index.json", 0);
    if ((!weights || is_run_config(path)) && cli_model_hint(path, msg, sizeof msg)) {
        fprintf(stderr, "%s: %s\n", prog, msg);
        return 1;
    }
    return 0;
}
