/* cmd_generate.c - `safetune generate`: batched generation for one prompt or a file of prompts,
 * human-readable on stdout or JSONL (--output), progress bar on stderr. */
#include "cli/args.h"
#include "cli/commands.h"
#include "safetune/generate.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char **text;   /* prompt texts */
    cJSON **id;    /* "id" from the JSONL line (owned) or NULL */
    size_t n, cap;
} prompt_list;

static void prompts_free(prompt_list *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->text[i]);
        cJSON_Delete(p->id[i]);
    }
    free(p->text);
    free(p->id);
}

static int prompts_push(prompt_list *p, char *text, cJSON *id) {
    if (p->n == p->cap) {
        size_t nc = p->cap ? 2 * p->cap : 16;
        char **t = realloc(p->text, nc * sizeof *t);
        if (t) p->text = t;
        cJSON **d = realloc(p->id, nc * sizeof *d);
        if (d) p->id = d;
        if (!t || !d) return -1;
        p->cap = nc;
    }
    p->text[p->n] = text;
    p->id[p->n++] = id;
    return 0;
}

/* The "id" written to the output: always a string (as `safetune eval`): a string id as given, a
 * number as its %.17g text, else the 0-based prompt index. */
static const char *id_text(const cJSON *id, size_t index, char *buf, size_t cap) {
    if (cJSON_IsString(id)) return id->valuestring;
    if (cJSON_IsNumber(id)) snprintf(buf, cap, "%.17g", id->valuedouble);
    else snprintf(buf, cap, "%zu", index);
    return buf;
}

/* One prompt per line, or JSONL objects with a string "prompt" (and optional "id"). format
 * "auto": JSONL when the first non-blank line starts with '{', and then every line must be an
 * object; otherwise every line is literal text (a later line starting with '{' too). "text" and
 * "jsonl" force one. Blank lines are skipped. Errors name the file and line. */
static st_status read_prompts(const char *path, const char *format, prompt_list *out) {
    char *data;
    size_t len;
    st_status s = st_read_text_file(path, &data, &len);
    if (s) return s;
    len = st_utf8_strip_bom(data, len);
    size_t line = 0, *lines = NULL; /* lines[i]: file line of prompt i */
    int jsonl = !strcmp(format, "text") ? 0 : !strcmp(format, "jsonl") ? 1 : -1; /* -1: the first line decides */
    char *p = data, *end = data + len;
    while (p < end && !s) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        line++;
        if (e > p && e[-1] == '\r') e[-1] = '\0';
        *e = '\0';
        char *q = p;
        const char *line_start = p;
        p = nl ? nl + 1 : end;
        while (*q == ' ' || *q == '\t') q++;
        if (!*q) continue;
        if (jsonl < 0) jsonl = *q == '{';
        if (jsonl && *q != '{') {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: not a JSON object, but the file is JSONL (%s): one "
                         "{\"prompt\": ...} per line, or --prompts-format text to read every line as text",
                         path, line, strcmp(format, "jsonl") ? "its first line is an object" : "--prompts-format jsonl");
        } else if (jsonl && st_json_nul_escape(q, strlen(q))) {
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: \\u0000 (a NUL character) in a JSON string: text cannot "
                         "hold it; remove it", path, line);
        } else if (jsonl) {
            const char *jend = NULL; /* the whole line must be the object: no text after it */
            cJSON *o = cJSON_ParseWithOpts(q, &jend, 1);
            cJSON *pr = o ? cJSON_GetObjectItemCaseSensitive(o, "prompt") : NULL;
            if (!o)
                s = st_error(ST_ERR_FORMAT, "%s: line %zu, column %zu: invalid JSON (one object per line, "
                             "nothing after it)", path, line,
                             (size_t)((jend && jend >= q ? jend : q) - line_start) + 1);
            else if (!cJSON_IsString(pr))
                s = st_error(ST_ERR_FORMAT, "%s: line %zu: expected a string field \"prompt\"", path, line);
            else if (!pr->valuestring[0])
                s = st_error(ST_ERR_FORMAT, "%s: line %zu: \"prompt\" is empty", path, line);
            if (!s) {
                cJSON *id = cJSON_DetachItemFromObjectCaseSensitive(o, "id");
                char *t = strdup(pr->valuestring);
                size_t *nl2 = realloc(lines, (out->n + 1) * sizeof *lines);
                if (nl2) lines = nl2;
                if (!t || !nl2 || prompts_push(out, t, id)) {
                    free(t);
                    cJSON_Delete(id);
                    s = st_error(ST_ERR_NOMEM, "out of memory");
                } else {
                    lines[out->n - 1] = line;
                    char a[64], b[64];
                    const char *ia = id_text(id, out->n - 1, a, sizeof a);
                    for (size_t j = 0; id && j + 1 < out->n && !s; j++)
                        if (out->id[j] && !strcmp(ia, id_text(out->id[j], j, b, sizeof b)))
                            s = st_error(ST_ERR_FORMAT, "%s: line %zu: duplicate id \"%s\" (also on line %zu)",
                                         path, line, ia, lines[j]);
                }
            }
            cJSON_Delete(o);
        } else {
            char *t = strdup(q);
            size_t *nl2 = realloc(lines, (out->n + 1) * sizeof *lines);
            if (nl2) lines = nl2;
            if (!t || !nl2 || prompts_push(out, t, NULL)) {
                free(t);
                s = st_error(ST_ERR_NOMEM, "out of memory");
            } else {
                lines[out->n - 1] = line;
            }
        }
    }
    free(lines);
    free(data);
    if (!s && out->n == 0) s = st_error(ST_ERR_FORMAT, "%s: no prompts (the file is empty or blank)", path);
    return s;
}

typedef struct {
    double t0, last_draw;
    int enabled;
} progress_state;

static void draw_progress(void *ud, size_t done, size_t total, size_t tokens) {
    progress_state *ps = ud;
    if (!ps->enabled) return;
    double now = st_time_now();
    if (done < total && now - ps->last_draw < 0.2) return;
    ps->last_draw = now;
    int width = 30, fill = total ? (int)(width * done / total) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    double el = now - ps->t0;
    fprintf(stderr, "\r[%s] %zu/%zu prompts, %zu tokens, %.1f tok/s", bar, done, total, tokens,
            el > 0 ? (double)tokens / el : 0.0);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *prompts_file = NULL, *system = NULL, *output = NULL;
    const char *precision = "fp32", *weights = "live", *prompts_format = "auto", *date = NULL, *adapter = NULL;
    int chat = 0, quiet = 0, with_ids = 0;
    st_generate_options go = st_generate_defaults();
    float temperature = 0.0f, top_p = 1.0f;
    int top_k = 0;
    uint64_t seed = 0;
    st_opt_multi stop_ids = {0}, stop_texts = {0};
    int32_t extra_ids[ST_OPT_MULTI_MAX];
    st_opt opts[] = {
        {"model", ST_OPT_STR, &model, "MODEL", "a .gguf file, a Hugging Face checkpoint folder or a training output folder", 0, 0, 0},
        CLI_WEIGHTS_OPT(weights),
        CLI_ADAPTER_OPT(adapter),
        {"prompt", ST_OPT_STR, &prompt, "TEXT", "one prompt", 0, 0, 0},
        {"prompts", ST_OPT_STR, &prompts_file, "FILE", "one prompt per line, or JSONL with \"prompt\" (and \"id\") when the first line is a JSON object", 0, 0, 0},
        {"prompts-format", ST_OPT_CHOICE, &prompts_format, "auto|text|jsonl", "how to read --prompts (auto: by its first line)", 0, 0, 0},
        {"chat", ST_OPT_FLAG, &chat, NULL, "apply the model's chat template (user turn + assistant header)", 0, 0, 0},
        {"system-prompt", ST_OPT_STR, &system, "S", "system prompt with --chat (default: the template's)", 0, 0, 0},
        CLI_DATE_OPT(date),
        {"max-new-tokens", ST_OPT_INT, &go.max_new_tokens, "N", "tokens to generate per prompt", 1, 1 << 20, 0},
        CLI_SAMPLING_OPTS(temperature, top_k, top_p, seed),
        CLI_STOP_OPTS(stop_ids, stop_texts),
        {"batch-size", ST_OPT_INT, &go.batch_size, "B", "sequences decoded together", 1, 4096, 0},
        {"precision", ST_OPT_CHOICE, &precision, "fp32|bf16", "matmuls; bf16 is faster, not token-identical to fp32", 0, 0, 0},
        {"context-length", ST_OPT_INT, &go.context_length, "N", "max prompt+response tokens (default: the model's)", 2, 1 << 24, 0},
        {"output", ST_OPT_STR, &output, "FILE", "write JSONL results (id, prompt, response, finish_reason, tokens); - for stdout", 0, 0, 0},
        {"include-ids", ST_OPT_FLAG, &with_ids, NULL, "add prompt_ids and completion_ids to each JSONL record", 0, 0, 0},
        {"quiet", ST_OPT_FLAG, &quiet, NULL, "no progress bar", 0, 0, 0},
    };
    st_args_spec spec = {"safetune generate", "--model MODEL (--prompt TEXT | --prompts FILE) [options]",
                         "Generate responses for one or many prompts with continuous batching.", opts,
                         (int)(sizeof opts / sizeof opts[0]), 0, 0, NULL, 0};
    st_args args;
    int rc = st_args_parse(&spec, argc, argv, &args);
    if (rc) return rc < 0 ? 0 : rc;
    rc = 1;
    st_model *m = NULL;
    prompt_list pl = {0};
    int32_t **ids = NULL;
    size_t *lens = NULL;
    st_generation *res = NULL;
    char *jsonl = NULL;
    size_t jl = 0, jcap = 0;

    if (!model) { rc = st_args_fail(&spec, "--model is required"); goto out; }
    if (!prompt == !prompts_file) { rc = st_args_fail(&spec, "give exactly one of --prompt TEXT or --prompts FILE"); goto out; }
    if (prompt && !*prompt) { rc = st_args_fail(&spec, "--prompt is empty"); goto out; }
    if (system && !chat) { rc = st_args_fail(&spec, "--system-prompt needs --chat"); goto out; }
    if ((rc = cli_apply_stops(&spec, &stop_ids, &stop_texts, extra_ids, &go))) goto out;
    rc = 1;
    if (with_ids && !output) { rc = st_args_fail(&spec, "--include-ids needs --output FILE (the ids go into its JSONL records)"); goto out; }
    if (output) {
        struct stat so, sp;
        if (stat(output, &so) == 0 && S_ISDIR(so.st_mode)) {
            rc = st_args_fail(&spec, "--output %s is a folder: give a file path", output);
            goto out;
        }
        if (prompts_file && stat(output, &so) == 0 && stat(prompts_file, &sp) == 0 && so.st_dev == sp.st_dev &&
            so.st_ino == sp.st_ino) {
            rc = st_args_fail(&spec, "--output %s is the --prompts file: it would be overwritten", output);
            goto out;
        }
    }
    go.precision = strcmp(precision, "bf16") ? ST_GEN_PRECISION_FP32 : ST_GEN_PRECISION_BF16;
    go.sampling.temperature = temperature;
    go.sampling.top_k = top_k;
    go.sampling.top_p = top_p;
    go.sampling.seed = seed;
    if (prompt) {
        char *t = strdup(prompt);
        if (!t || prompts_push(&pl, t, NULL)) { free(t); fprintf(stderr, "safetune generate: out of memory\n"); goto out; }
    } else if (read_prompts(prompts_file, prompts_format, &pl)) {
        fprintf(stderr, "safetune generate: %s\n", st_last_error());
        goto out;
    }
    for (size_t i = 0; i < pl.n; i++) { /* outputs must be valid UTF-8: repair, and say so */
        size_t nbad = 0;
        char *fixed = st_utf8_repair(pl.text[i], strlen(pl.text[i]), &nbad);
        if (!fixed) { fprintf(stderr, "safetune generate: out of memory\n"); goto out; }
        if (nbad) fprintf(stderr, "safetune generate: warning: prompt %zu (0-based): invalid UTF-8 replaced with U+FFFD\n", i);
        free(pl.text[i]);
        pl.text[i] = fixed;
    }
    if (cli_load_model_adapter(spec.prog, model, weights, adapter, &m) || cli_apply_date(spec.prog, m, date)) goto out;
    ids = calloc(pl.n, sizeof *ids);
    lens = calloc(pl.n, sizeof *lens);
    res = calloc(pl.n, sizeof *res);
    if (!ids || !lens || !res) { fprintf(stderr, "safetune generate: out of memory\n"); goto out; }
    for (size_t i = 0; i < pl.n; i++) {
        if (st_prompt_encode(m, pl.text[i], chat, system, &ids[i], &lens[i])) {
            fprintf(stderr, "safetune generate: prompt %zu (0-based): %s\n", i, st_last_error());
            goto out;
        }
        if (lens[i] == 0) {
            fprintf(stderr, "safetune generate: prompt %zu encodes to no tokens\n", i + 1);
            goto out;
        }
    }
    progress_state ps = {st_time_now(), 0, !quiet && isatty(2)};
    go.progress = draw_progress;
    go.ud = &ps;
    size_t n_trunc = 0, n_gen = 0;
    double t0 = st_time_now();
    if (st_generate(m, (const int32_t *const *)ids, lens, pl.n, &go, res, &n_trunc)) {
        fprintf(stderr, "safetune generate: %s\n", st_last_error());
        goto out;
    }
    double dt = st_time_now() - t0;
    for (size_t i = 0; i < pl.n; i++) n_gen += res[i].completion_tokens;

    if (output) {
        for (size_t i = 0; i < pl.n; i++) {
            cJSON *o = cJSON_CreateObject();
            char idb[64];
            cJSON_AddStringToObject(o, "id", id_text(pl.id[i], i, idb, sizeof idb));
            cJSON_AddStringToObject(o, "prompt", pl.text[i]);
            cJSON_AddStringToObject(o, "response", res[i].text ? res[i].text : "");
            cJSON_AddStringToObject(o, "finish_reason", st_finish_reason_name(res[i].finish));
            cJSON *tk = cJSON_AddObjectToObject(o, "tokens");
            cJSON_AddNumberToObject(tk, "prompt", (double)res[i].prompt_tokens);
            cJSON_AddNumberToObject(tk, "completion", (double)res[i].completion_tokens);
            if (res[i].truncated) cJSON_AddBoolToObject(o, "prompt_truncated", 1);
            if (with_ids) {
                const int32_t *pi = ids[i] + (lens[i] - res[i].prompt_tokens);
                cJSON_AddItemToObject(o, "prompt_ids", cJSON_CreateIntArray((const int *)pi, (int)res[i].prompt_tokens));
                cJSON_AddItemToObject(o, "completion_ids", cJSON_CreateIntArray((const int *)res[i].ids, (int)res[i].n_ids));
            }
            char *line = st_utf8_fix_owned(cJSON_PrintUnformatted(o));
            cJSON_Delete(o);
            if (!line) { fprintf(stderr, "safetune generate: out of memory\n"); goto out; }
            size_t ll = strlen(line);
            if (jl + ll + 2 > jcap) {
                size_t nc = (jl + ll + 2) * 2;
                char *nj = realloc(jsonl, nc);
                if (!nj) { free(line); fprintf(stderr, "safetune generate: out of memory\n"); goto out; }
                jsonl = nj;
                jcap = nc;
            }
            memcpy(jsonl + jl, line, ll);
            jl += ll;
            jsonl[jl++] = '\n';
            free(line);
        }
        if (!strcmp(output, "-")) { /* JSONL on stdout (a pipe) */
            if (jl && (fwrite(jsonl, 1, jl, stdout) != jl || fflush(stdout))) {
                fprintf(stderr, "safetune generate: writing the results to stdout failed\n");
                goto out;
            }
        } else if (st_write_file_atomic(output, jsonl ? jsonl : "", jl)) {
            fprintf(stderr, "safetune generate: %s\n", st_last_error());
            goto out;
        }
        if (!quiet)
            fprintf(stderr, "wrote %zu results to %s (%zu tokens in %.2f s, %.1f tok/s)\n", pl.n, strcmp(output, "-") ? output : "stdout", n_gen, dt,
                    dt > 0 ? n_gen / dt : 0.0);
    } else {
        for (size_t i = 0; i < pl.n; i++) {
            if (pl.n > 1) printf("### [%zu] %s\n", i, pl.text[i]);
            printf("%s\n", res[i].text ? res[i].text : "");
            if (pl.n > 1 || !quiet)
                printf("(%s; %zu prompt + %zu completion tokens%s)\n\n", st_finish_reason_name(res[i].finish),
                       res[i].prompt_tokens, res[i].completion_tokens, res[i].truncated ? "; prompt truncated" : "");
        }
    }
    if (n_trunc) fprintf(stderr, "warning: %zu prompt(s) were left-truncated to fit the context\n", n_trunc);
    rc = 0;
out:
    if (res) st_generations_free(res, pl.n);
    free(res);
    if (ids)
        for (size_t i = 0; i < pl.n; i++) free(ids[i]);
    free(ids);
    free(lens);
    free(jsonl);
    prompts_free(&pl);
    st_model_free(m);
    st_args_free(&args);
    return rc;
}
