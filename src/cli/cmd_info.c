/* cmd_info.c - `safetune info MODEL`: config (Hugging Face names), parameter count, tensor table
 * as stored in the file, tokenizer and chat template. --json prints one JSON object instead. */
#include "cli/args.h"
#include "cli/commands.h"
#include "safetune/gguf.h"
#include "safetune/lora.h"
#include "safetune/model.h"
#include "safetune/quant.h"
#include "safetune/safetensors.h"
#include "safetune/safety_eval.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *tok_kind_name(st_tokenizer_kind k) {
    return k == ST_TOK_BYTE_LEVEL_BPE ? "byte-level BPE" : "SentencePiece BPE";
}

/* Tensor table rows as a JSON array of {name, shape (row-major), type}. */
static st_status tensor_table(const char *path, int is_dir, cJSON *arr) {
    if (!is_dir) {
        st_gguf *g;
        st_status s = st_gguf_open(path, &g);
        if (s) return s;
        for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
            const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
            cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
            cJSON_AddStringToObject(o, "name", t->name);
            for (int d = (int)t->n_dims - 1; d >= 0; d--) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->ne[d]));
            cJSON_AddItemToObject(o, "shape", sh);
            const char *tn = st_ggml_type_name(t->type);
            cJSON_AddStringToObject(o, "type", tn ? tn : "?");
            cJSON_AddItemToArray(arr, o);
        }
        st_gguf_close(g);
        return ST_OK;
    }
    st_safetensors *sf;
    st_status s = st_safetensors_open(path, &sf);
    if (s) return s;
    for (size_t i = 0; i < st_safetensors_count(sf); i++) {
        const st_st_tensor *t = st_safetensors_at(sf, i);
        cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "name", t->name);
        for (int d = 0; d < t->n_dims; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddItemToObject(o, "shape", sh);
        cJSON_AddStringToObject(o, "type", t->dtype_name);
        cJSON_AddItemToArray(arr, o);
    }
    st_safetensors_close(sf);
    return ST_OK;
}

static void add_token(cJSON *o, const char *key, const st_tokenizer *t, int32_t id) {
    if (id < 0) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    cJSON *x = cJSON_AddObjectToObject(o, key);
    cJSON_AddNumberToObject(x, "id", id);
    const char *s = st_tokenizer_token(t, id);
    cJSON_AddStringToObject(x, "token", s ? s : "");
}

int cmd_info(int argc, char **argv) {
    int as_json = 0, all_tensors = 0;
    const char *weights = "live";
    st_opt opts[] = {
        {"weights", ST_OPT_CHOICE, &weights, "live|ema", "with a `safetune train` output folder: final/ (live) or final-ema/ (ema)", 0, 0, 0},
        {"json", ST_OPT_FLAG, &as_json, NULL, "print one JSON object (config, parameters, tokenizer, chat_template, tensors)", 0, 0, 0},
        {"all-tensors", ST_OPT_FLAG, &all_tensors, NULL, "list every tensor (default: layer 0 and the rest)", 0, 0, 0},
    };
    st_args_spec spec = {"safetune info", "MODEL [--json]",
                         "Show a model's config (Hugging Face names), parameter count, tensors as stored, "
                         "tokenizer and chat template.\nMODEL: a .gguf file, a Hugging Face checkpoint folder, or a "
                         "`safetune train` output folder (its final/ or, with --weights ema, final-ema/).",
                         opts, (int)(sizeof opts / sizeof *opts), 1, 1, "MODEL", 0};
    st_args args;
    int rc = st_args_parse(&spec, argc, argv, &args);
    if (rc) return rc < 0 ? 0 : rc;
    const char *arg = args.pos[0], *path = arg;
    st_model *m = NULL;
    cJSON *root = NULL;
    char *cfg_json = NULL, *resolved = NULL, *adapter_file = NULL;
    rc = 1;
    /* a `safetune train` output folder: its final/ (or final-ema/) */
    if (cli_resolve_weights(arg, weights, &resolved)) {
        fprintf(stderr, "safetune info: %s\n", st_last_error());
        goto out;
    }
    path = resolved;
    if (cli_check_model_path(spec.prog, path)) goto out;
    struct stat sb;
    stat(path, &sb);
    int is_dir = S_ISDIR(sb.st_mode);
    /* a PEFT adapter folder (a LoRA run's final/): its base with the adapter merged; the tensor
     * table is the adapter's */
    char *cfg_path = is_dir ? st_path_join(path, "config.json") : NULL;
    struct stat cs;
    const int adapter = is_dir && st_lora_is_adapter_dir(path) && cfg_path && stat(cfg_path, &cs) != 0;
    free(cfg_path);
    if (adapter) adapter_file = st_path_join(path, "adapter_model.safetensors");
    if (st_model_load(path, &m)) {
        fprintf(stderr, "safetune info: %s\n", st_last_error());
        goto out;
    }
    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "path", path);
    if (strcmp(path, arg)) cJSON_AddStringToObject(root, "training_output", arg);
    cJSON_AddStringToObject(root, "format", adapter ? "peft-lora" : is_dir ? "safetensors" : "gguf");
    if (adapter) {
        st_lora *ad = NULL;
        char *bp = NULL, tg[128];
        if (st_lora_base_model_path(path, &bp) || st_lora_load_peft(path, &m->config, &ad)) {
            fprintf(stderr, "safetune info: %s\n", st_last_error());
            free(bp);
            goto out;
        }
        cJSON *a = cJSON_AddObjectToObject(root, "adapter");
        cJSON_AddStringToObject(a, "base_model", bp);
        cJSON_AddNumberToObject(a, "r", ad->lc.r);
        cJSON_AddNumberToObject(a, "lora_alpha", ad->lc.alpha);
        st_lora_targets_format(ad->lc.targets, tg, sizeof tg);
        cJSON_AddStringToObject(a, "target_modules", tg);
        cJSON_AddNumberToObject(a, "parameters", (double)ad->layout.n_floats);
        st_lora_free(ad);
        free(bp);
    }
    if (st_config_to_hf_json(&m->config, &cfg_json)) {
        fprintf(stderr, "safetune info: %s\n", st_last_error());
        goto out;
    }
    cJSON *cfg = cJSON_Parse(cfg_json);
    if (!cfg) { fprintf(stderr, "safetune info: internal error: config JSON does not parse\n"); goto out; }
    /* torch_dtype: the checkpoint's own (weights are held in fp32 here; the tensor table gives the
     * stored types); GGUF has no such key */
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "torch_dtype");
    if (is_dir) {
        char cp[4200], *txt = NULL;
        snprintf(cp, sizeof cp, "%s/config.json", path);
        cJSON *hf = st_read_file(cp, &txt, NULL) == ST_OK ? cJSON_Parse(txt) : NULL;
        const cJSON *td = cJSON_GetObjectItemCaseSensitive(hf, "torch_dtype");
        if (cJSON_IsString(td)) cJSON_AddStringToObject(cfg, "torch_dtype", td->valuestring);
        cJSON_Delete(hf);
        free(txt);
    }
    cJSON_AddItemToObject(root, "config", cfg);
    cJSON_AddNumberToObject(root, "parameters", (double)m->layout.n_floats);
    cJSON *tk = cJSON_AddObjectToObject(root, "tokenizer");
    cJSON_AddStringToObject(tk, "kind", tok_kind_name(st_tokenizer_kind_of(m->tokenizer)));
    cJSON_AddNumberToObject(tk, "vocab_size", st_tokenizer_vocab_size(m->tokenizer));
    add_token(tk, "bos", m->tokenizer, st_tokenizer_bos_id(m->tokenizer));
    add_token(tk, "eos", m->tokenizer, st_tokenizer_eos_id(m->tokenizer));
    cJSON_AddBoolToObject(tk, "adds_bos", st_tokenizer_adds_bos(m->tokenizer));
    int32_t stops[16];
    int ns = st_chat_stop_ids(&m->chat, m->tokenizer, stops, 16);
    cJSON *ch = cJSON_AddObjectToObject(root, "chat_template");
    cJSON_AddStringToObject(ch, "kind", st_chat_template_name(m->chat.kind));
    cJSON_AddBoolToObject(ch, "from_checkpoint", m->has_chat_template);
    if (m->chat.default_system) cJSON_AddStringToObject(ch, "default_system_prompt", m->chat.default_system);
    else cJSON_AddNullToObject(ch, "default_system_prompt");
    if (m->chat.kind == ST_TEMPLATE_LLAMA31)
        cJSON_AddStringToObject(ch, "date_string", m->chat.date_string[0] ? m->chat.date_string : ST_CHAT_DEFAULT_DATE);
    cJSON *sa = cJSON_AddArrayToObject(ch, "stop_ids");
    for (int i = 0; i < ns; i++) cJSON_AddItemToArray(sa, cJSON_CreateNumber(stops[i]));
    cJSON *tens = cJSON_AddArrayToObject(root, "tensors");
    if (tensor_table(adapter ? adapter_file : path, is_dir, tens)) {
        fprintf(stderr, "safetune info: %s\n", st_last_error());
        goto out;
    }

    if (as_json) {
        char *s = cJSON_Print(root);
        if (s) puts(s);
        free(s);
        rc = 0;
        goto out;
    }
    if (strcmp(path, arg)) printf("training output folder %s: %s weights\n", arg, strcmp(weights, "ema") ? "live" : "EMA");
    printf("model: %s (%s)\n", path, adapter ? "PEFT LoRA adapter, shown merged into its base" : is_dir ? "Hugging Face safetensors" : "GGUF");
    if (adapter) {
        const cJSON *a = cJSON_GetObjectItem(root, "adapter");
        printf("  base model %s, r %d, lora_alpha %g, target_modules %s (%.0f adapter parameters)\n",
               cJSON_GetObjectItem(a, "base_model")->valuestring, cJSON_GetObjectItem(a, "r")->valueint,
               cJSON_GetObjectItem(a, "lora_alpha")->valuedouble, cJSON_GetObjectItem(a, "target_modules")->valuestring,
               cJSON_GetObjectItem(a, "parameters")->valuedouble);
    }
    printf("\nconfig (Hugging Face names):\n");
    for (cJSON *it = cfg->child; it; it = it->next) {
        char *v = cJSON_PrintUnformatted(it);
        printf("  %-26s %s\n", it->string, v ? v : "?");
        free(v);
    }
    double np = (double)m->layout.n_floats;
    printf("\nparameters: %.0f (%.1fM)\n", np, np / 1e6);
    printf("\ntokenizer: %s, vocab %d\n", tok_kind_name(st_tokenizer_kind_of(m->tokenizer)),
           st_tokenizer_vocab_size(m->tokenizer));
    const char *names[] = {"bos", "eos"};
    int32_t sid[] = {st_tokenizer_bos_id(m->tokenizer), st_tokenizer_eos_id(m->tokenizer)};
    for (int i = 0; i < 2; i++) {
        if (sid[i] < 0) printf("  %s: none\n", names[i]);
        else printf("  %s: %d %s\n", names[i], sid[i], st_tokenizer_token(m->tokenizer, sid[i]));
    }
    printf("  adds BOS: %s\n", st_tokenizer_adds_bos(m->tokenizer) ? "yes" : "no");
    printf("\nchat template: %s%s\n", st_chat_template_name(m->chat.kind), m->has_chat_template ? "" : " (default; none in the checkpoint)");
    printf("  default system prompt: %s\n", m->chat.default_system ? m->chat.default_system : "(none)");
    printf("  stop ids:");
    for (int i = 0; i < ns; i++) printf(" %d %s", stops[i], st_tokenizer_token(m->tokenizer, stops[i]));
    int nt = cJSON_GetArraySize(tens);
    printf("\n\ntensors (%d):\n  %-44s %-16s %s\n", nt, "name", "shape", "type");
    int shown = 0;
    for (cJSON *t = tens->child; t; t = t->next) {
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        /* default: everything except layers >= 1 */
        const char *b = strstr(name, "blk.");
        if (!b) b = strstr(name, "layers.");
        if (!all_tensors && b) {
            const char *d = strchr(b, '.') + 1;
            if (!(d[0] == '0' && d[1] == '.')) continue;
        }
        char shape[64] = "[";
        cJSON *sh = cJSON_GetObjectItem(t, "shape");
        for (cJSON *x = sh->child; x; x = x->next)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%.0f", x == sh->child ? "" : ", ", x->valuedouble);
        strncat(shape, "]", sizeof shape - strlen(shape) - 1);
        printf("  %-44s %-16s %s\n", name, shape, cJSON_GetObjectItem(t, "type")->valuestring);
        shown++;
    }
    if (shown < nt) printf("  ... %d more (layers 1..%d follow the layer-0 pattern; --all-tensors lists them)\n",
                           nt - shown, m->config.num_hidden_layers - 1);
    rc = 0;
out:
    cJSON_Delete(root);
    free(cfg_json);
    free(resolved);
    free(adapter_file);
    st_model_free(m);
    st_args_free(&args);
    return rc;
}
