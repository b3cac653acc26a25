/* cmd_eval.c - `safetune eval safety` and `safetune eval utility`.
 *
 * safety: refusal-keyword ASR (Qi et al. 2023 / Zou et al. 2023), XSTest over-refusal and optional
 * LLM-judge harmfulness, on answers generated from --model (safety_eval.h) or read from
 * --responses. utility: held-out loss/perplexity, TruthfulQA MC1 and MT-Bench first-turn answers
 * (utility.h). Outputs are written atomically; generated answers are written before judging, so
 * an unreachable judge loses no generation (rerun with --responses OUT/responses.jsonl). */
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/report.h"
#include "safetune/data.h"
#include "safetune/evalio.h"
#include "safetune/judge.h"
#include "safetune/safety_eval.h"
#include "safetune/utility.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


typedef struct {
    double t0, last;
    int on;
    const char *what;
} progress_state;

static void gen_progress(void *ud, size_t done, size_t total, size_t tokens) {
    progress_state *ps = ud;
    if (!ps->on) return;
    double now = st_time_now();
    if (done < total && now - ps->last < 0.5) return;
    ps->last = now;
    double el = now - ps->t0;
    fprintf(stderr, "\r%s: %zu/%zu prompts, %zu tokens, %.1f tok/s   ", ps->what, done, total, tokens,
            el > 0 ? (double)tokens / el : 0.0);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

static void q_progress(void *ud, size_t done, size_t total) {
    progress_state *ps = ud;
    if (!ps->on) return;
    double now = st_time_now();
    if (done < total && now - ps->last < 0.5) return;
    ps->last = now;
    fprintf(stderr, "\r%s: %zu/%zu questions (%.0f s)   ", ps->what, done, total, now - ps->t0);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* Judge options shared by both modes. */
typedef struct {
    const char *url, *model, *key_env, *cache;
    float timeout;
    int retries, max_tokens;
} judge_cli;

/* The option rows of judge_cli (both modes): URL_HELP for --judge-url, CACHE the default cache
 * file name in the output folder. */
#define JUDGE_OPTS(jc, URL_HELP, CACHE)                                                                              \
    {"judge-url", ST_OPT_STR, &(jc).url, "URL", URL_HELP, 0, 0, 0},                                                 \
    {"judge-model", ST_OPT_STR, &(jc).model, "NAME", "judge model name (required with --judge-url)", 0, 0, 0},     \
    {"judge-key-env", ST_OPT_STR, &(jc).key_env, "VAR", "env var with the API key (default OPENAI_API_KEY)", 0, 0, \
     0},                                                                                                             \
    {"judge-cache", ST_OPT_STR, &(jc).cache, "FILE", "judge cache JSONL (default DIR/" CACHE ")", 0, 0, 0},         \
    {"judge-timeout", ST_OPT_FLOAT, &(jc).timeout, "S", "per-request timeout in seconds", 0, 1e6, 0},              \
    {"judge-retries", ST_OPT_INT, &(jc).retries, "N", "retries with exponential back-off", 0, 1000, 0},            \
    {"judge-max-tokens", ST_OPT_INT, &(jc).max_tokens, "N", "judge reply budget (default 512)", 0, 1 << 20, 0}

static st_status judge_open(const judge_cli *jc, const char *out, const char *cache_name, const char *rubric,
                            int max_score, st_judge **j) {
    static char cache_default[4200];
    snprintf(cache_default, sizeof cache_default, "%s/%s", out, cache_name);
    st_judge_opts jo = {0};
    jo.url = jc->url;
    jo.model = jc->model;
    jo.api_key_env = jc->key_env;
    jo.cache_path = jc->cache ? jc->cache : cache_default;
    jo.timeout_s = jc->timeout;
    jo.max_retries = jc->retries;
    jo.max_tokens = jc->max_tokens;
    jo.rubric = rubric;
    jo.max_score = max_score;
    return st_judge_new(&jo, j);
}

/* ============================ eval safety ============================ */

/* settings.prompt_set: the options that choose the prompts (path and count added once read). */
static void add_prompt_opts(cJSON *st, const char *bench, const st_prompt_opts *po) {
    cJSON *o = cJSON_AddObjectToObject(st, "prompt_set");
    if (!strncmp(bench, "harmbench:", 10))
        cJSON_AddStringToObject(o, "harmbench_functional", po->harmbench_functional ? po->harmbench_functional : "standard");
    if (!strncmp(bench, "csv:", 4)) {
        if (po->prompt_column) cJSON_AddStringToObject(o, "prompt_column", po->prompt_column);
        if (po->category_column) cJSON_AddStringToObject(o, "category_column", po->category_column);
        if (po->label != ST_LABEL_NONE) cJSON_AddStringToObject(o, "label", po->label == ST_LABEL_SAFE ? "safe" : "unsafe");
    }
}

/* settings: refusal matching and judge. */
static void add_refusal_judge(cJSON *st, const char *list, const st_refusal_opts *ro, const judge_cli *jc) {
    cJSON_AddStringToObject(st, "refusal_list", list ? list : "default (Qi et al. 2023, 29 strings)");
    cJSON_AddStringToObject(st, "refusal_mode", ro->mode == ST_REFUSAL_PREFIX ? "prefix" : "substring");
    cJSON_AddBoolToObject(st, "normalize_apostrophes", ro->normalize_apostrophes);
    if (jc->url) {
        cJSON *j = cJSON_AddObjectToObject(st, "judge");
        cJSON_AddStringToObject(j, "url", jc->url);
        cJSON_AddStringToObject(j, "model", jc->model);
    } else {
        cJSON_AddNullToObject(st, "judge");
    }
}

/* 1 when path and DIR/name are the same file. */
static int same_file(const char *path, const char *dir, const char *name) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat a, b;
    return stat(path, &a) == 0 && stat(p, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

enum { EARLIER_NONE = 0, EARLIER_RESUME = 1, EARLIER_COMPLETE = 2 };

/* What --out already holds, for a run with settings st: an unfinished run's answers (partial) or a
 * finished result (summary.json + responses.jsonl). Made with other settings: -1 after printing
 * which one differs (its summary is never silently replaced). EARLIER_RESUME: answers to continue
 * from; EARLIER_COMPLETE: a whole result with these settings (generating runs only); else NONE. */
static int earlier_result(const char *prog, const char *out, const char *partial, const cJSON *st, int generating) {
    char sp[4200], rp[4200], what[1024];
    snprintf(sp, sizeof sp, "%s/summary.json", out);
    snprintf(rp, sizeof rp, "%s/responses.jsonl", out);
    cJSON *have = NULL;
    if (st_safety_partial_settings(partial, &have)) {
        fprintf(stderr, "%s: %s\n", prog, st_last_error());
        return -1;
    }
    if (have) {
        const int d = st_safety_settings_diff(st, have, 1, what, sizeof what);
        cJSON_Delete(have);
        if (!d) return generating ? EARLIER_RESUME : EARLIER_NONE;
        fprintf(stderr, "%s: %s holds the answers of an unfinished run with other settings (%s): rerun with its "
                "options to continue it, or choose another --out\n", prog, out, what);
        return -1;
    }
    if (access(sp, F_OK) == 0) {
        char *txt = NULL;
        cJSON *sum = NULL;
        if (st_read_json_text_file(sp, &txt, NULL) == ST_OK) sum = cJSON_Parse(txt);
        free(txt);
        const cJSON *ss = cJSON_GetObjectItemCaseSensitive(sum, "settings");
        int d = -1;
        if (cJSON_IsObject(ss) && cJSON_GetObjectItemCaseSensitive(sum, "asr"))
            d = st_safety_settings_diff(st, ss, 0, what, sizeof what);
        cJSON_Delete(sum);
        if (d < 0) {
            fprintf(stderr, "%s: %s is not the summary of a safetune eval safety run; it is left alone: choose "
                    "another --out\n", prog, sp);
            return -1;
        }
        if (d) {
            fprintf(stderr, "%s: %s holds a result made with other settings (%s); it is left alone: choose another "
                    "--out, or remove it to replace it\n", prog, out, what);
            return -1;
        }
        return generating && access(rp, F_OK) == 0 ? EARLIER_COMPLETE : EARLIER_NONE;
    }
    if (access(rp, F_OK) == 0) {
        fprintf(stderr, "%s: %s holds %s without a summary.json (not a result of this command); it is left alone: "
                "choose another --out\n", prog, out, rp);
        return -1;
    }
    return EARLIER_NONE;
}

static int write_safety(const char *out, const st_eval_record *recs, size_t n, cJSON *settings, int verbose) {
    st_eval_summary s;
    if (st_eval_summarize(recs, n, &s)) return 1;
    char *stxt = cJSON_PrintUnformatted(settings);
    char rp[4200], sp[4200];
    snprintf(rp, sizeof rp, "%s/responses.jsonl", out);
    snprintf(sp, sizeof sp, "%s/summary.json", out);
    st_status ws = stxt ? st_eval_write_responses(rp, recs, n) : st_error(ST_ERR_NOMEM, "out of memory");
    if (!ws) ws = st_eval_write_summary(sp, &s, stxt);
    free(stxt);
    if (!ws && verbose) {
        cli_print_safety_summary(stdout, &s);
        printf("wrote %s and %s\n", rp, sp);
    }
    st_eval_summary_free(&s);
    return ws ? 1 : 0;
}

/* SIGINT/SIGTERM while answers are generated: stop after the current step (cli_stop_signals_start) */
static volatile sig_atomic_t g_eval_stop, g_eval_phase;

static int eval_safety(int argc, char **argv) {
    const char *responses = NULL, *out = "out/eval", *list = NULL, *bench = NULL, *prompts_alias = NULL;
    const char *data_dir = NULL, *model = NULL, *weights = "live", *system = NULL, *adapter = NULL;
    const char *precision = "fp32", *label = NULL, *date = NULL;
    st_prompt_opts po = {0};
    st_opt_multi stop_ids = {0}, stop_texts = {0};
    int32_t extra_ids[ST_OPT_MULTI_MAX];
    judge_cli jc = {NULL, NULL, NULL, NULL, 60.0f, 3, 0};
    int prefix_only = 0, norm_apos = 0, max_new = 128, batch = 32, limit = 0, ctxlen = 0, quiet = 0;
    float temperature = 0.0f, top_p = 1.0f;
    uint64_t seed = 0;
    st_opt opts[] = {
        {"model", ST_OPT_STR, &model, "MODEL", "generate answers with this model (.gguf, HF folder, or training output folder)", 0, 0, 0},
        CLI_WEIGHTS_OPT(weights),
        CLI_ADAPTER_OPT(adapter),
        {"benchmark", ST_OPT_STR, &bench, "SPEC", "advbench | xstest | harmbench:FILE | strongreject:FILE | jbb:FILE | "
                                                   "jbb-benign:FILE | hexphi:DIR | csv:FILE | jsonl:FILE (default advbench; "
                                                   "Benchmarks above)", 0, 0, 0},
        {"prompts", ST_OPT_STR, &prompts_alias, "SPEC", "same as --benchmark", 0, 0, 0},
        {"harmbench-functional", ST_OPT_STR, &po.harmbench_functional, "LIST", "harmbench: FunctionalCategory values "
                                 "to keep, comma-separated: standard, contextual, copyright, or all (default standard)", 0, 0, 0},
        {"prompt-column", ST_OPT_STR, &po.prompt_column, "NAME", "csv: the prompt column (default prompt, else goal)", 0, 0, 0},
        {"category-column", ST_OPT_STR, &po.category_column, "NAME", "csv: the category column (default category, if present)", 0, 0, 0},
        {"label", ST_OPT_CHOICE, &label, "safe|unsafe", "csv: label every prompt (safe: refusal rates, over-refusal; "
                                                        "unsafe: should be refused); default: the file's label column", 0, 0, 0},
        {"responses", ST_OPT_STR, &responses, "FILE", "score existing answers instead (JSONL with prompt, response)", 0, 0, 0},
        {"out", ST_OPT_STR, &out, "DIR", "output folder: responses.jsonl + summary.json", 0, 0, 0},
        {"data-dir", ST_OPT_STR, &data_dir, "DIR", "dataset folder (default $SAFETUNE_DATA_DIR or data/)", 0, 0, 0},
        {"limit", ST_OPT_INT, &limit, "N", "N prompts only (0 = all): the first N; on sets labelled safe/unsafe "
                                             "(XSTest) N spread evenly over the file", 0, 1 << 30, 0},
        {"max-new-tokens", ST_OPT_INT, &max_new, "N", "tokens per answer", 1, 1 << 20, 0},
        {"batch-size", ST_OPT_INT, &batch, "B", "sequences decoded together", 1, 4096, 0},
        {"precision", ST_OPT_CHOICE, &precision, "fp32|bf16", "generation matmuls; bf16 is faster, not token-identical to fp32", 0, 0, 0},
        {"context-length", ST_OPT_INT, &ctxlen, "N", "max prompt+answer tokens (default: the model's); longer prompts are left-truncated", 0, 1 << 24, 0},
        {"temperature", ST_OPT_FLOAT, &temperature, "T", "0 = greedy (default); > 0 samples with --seed", 0, 100, 0},
        {"top-p", ST_OPT_FLOAT, &top_p, "P", "nucleus sampling, 0 < P <= 1", 1e-9, 1, 0},
        {"seed", ST_OPT_U64, &seed, "S", "sampling seed (default 0); same seed -> same files", 0, 0, 0},
        {"system-prompt", ST_OPT_STR, &system, "S", "system prompt (default: the chat template's)", 0, 0, 0},
        CLI_DATE_OPT(date),
        CLI_STOP_OPTS(stop_ids, stop_texts),
        {"refusal-list", ST_OPT_STR, &list, "FILE", "refusal strings, one per line (default: the 29 of Qi et al. 2023)", 0, 0, 0},
        {"prefix-only", ST_OPT_FLAG, &prefix_only, NULL, "match only at the start of the answer (after whitespace)", 0, 0, 0},
        {"normalize-apostrophes", ST_OPT_FLAG, &norm_apos, NULL, "treat U+2019/U+2018/U+02BC as ' before matching", 0, 0, 0},
        JUDGE_OPTS(jc, "OpenAI-compatible endpoint; enables harmfulness scoring 1-5", "judge_cache.jsonl"),
        {"quiet", ST_OPT_FLAG, &quiet, NULL, "no progress output", 0, 0, 0},
    };
    st_args_spec spec = {"safetune eval safety", "(--model MODEL [--benchmark SPEC] | --responses FILE) [options]",
                         "Refusal-keyword ASR: an answer containing none of the refusal strings is an attack "
                         "success. With --model, answers are generated greedily (or sampled with --temperature/"
                         "--seed) through the model's chat template.\n\n"
                         "Benchmarks (--benchmark; your copy of the public file, column names matched ignoring case;\n"
                         "summary.json has each category's ASR and refusal rate with 95% Wilson intervals):\n"
                         "  advbench             DATA_DIR/advbench/harmful_behaviors.csv (goal)\n"
                         "  xstest               DATA_DIR/xstest/xstest_prompts.csv: safe/unsafe by type\n"
                         "  harmbench:FILE       HarmBench behaviours CSV (Behavior,FunctionalCategory,SemanticCategory,\n"
                         "                       Tags,ContextString,BehaviorID): the standard behaviours unless\n"
                         "                       --harmbench-functional; a ContextString goes above the request as\n"
                         "                       HarmBench renders it (CONTEXT, blank line, ---, blank line, BEHAVIOR);\n"
                         "                       categories: SemanticCategory\n"
                         "  strongreject:FILE    StrongREJECT CSV (category,source,forbidden_prompt)\n"
                         "  jbb:FILE             JailbreakBench harmful-behaviors.csv (Index,Goal,Target,Behavior,\n"
                         "                       Category,Source): ASR per Category\n"
                         "  jbb-benign:FILE      JailbreakBench benign-behaviors.csv: every prompt labelled safe, so\n"
                         "                       refusal rates (over-refusal), no ASR\n"
                         "  hexphi:DIR           HEx-PHI DIR/category_N.csv (N = 1..11; other .csv names are an error),\n"
                         "                       one prompt per row, an optional one-word header; category category_N\n"
                         "  csv:FILE             a CSV with a header row: --prompt-column, --category-column, --label\n"
                         "  jsonl:FILE           {\"prompt\", \"category\"?, \"id\"?, \"label\"?: \"safe\"|\"unsafe\"} per line",
                         opts, (int)(sizeof opts / sizeof opts[0]), 0, 0, NULL, 0};
    st_args args;
    int rc = st_args_parse(&spec, argc, argv, &args), made_out = 0;
    if (rc) return rc < 0 ? 0 : rc;
    rc = 1;
    st_refusal_opts ro = {prefix_only ? ST_REFUSAL_PREFIX : ST_REFUSAL_SUBSTRING, norm_apos};
    st_refusal_matcher *m = NULL;
    st_eval_set set = {0};
    st_safety_run run = {0};
    st_model *mdl = NULL;
    st_judge *judge = NULL;
    char **reasons = NULL;
    char *model_path = NULL;
    cJSON *st = NULL;
    st_eval_record *recs = NULL;
    size_t n = 0;
    st_safety_partial *partial = NULL;
    char partial_path[4200];
    /* before any thread exists, so every thread inherits the blocked signals */
    cli_stop_signals_start(&g_eval_stop, &g_eval_phase,
                           "\nsafetune eval safety: stopping after the current step; the answers so far are kept "
                           "(interrupt again to quit now)\n");

    if (prompts_alias && bench && strcmp(prompts_alias, bench)) {
        rc = st_args_fail(&spec, "--prompts is another name for --benchmark: pass one (got %s and %s)", prompts_alias, bench);
        goto out;
    }
    if (prompts_alias && !bench) bench = prompts_alias;
    if (!model == !responses) { rc = st_args_fail(&spec, "give exactly one of --model MODEL or --responses FILE"); goto out; }
    if (responses && bench) { rc = st_args_fail(&spec, "--benchmark/--prompts need --model (with --responses the prompts come from the file)"); goto out; }
    if (responses && limit) { rc = st_args_fail(&spec, "--limit needs --model (with --responses every answer in the file is scored)"); goto out; }
    if (jc.url && !jc.model) { rc = st_args_fail(&spec, "--judge-url needs --judge-model"); goto out; }
    if (jc.model && !jc.url) { rc = st_args_fail(&spec, "--judge-model needs --judge-url (the endpoint that serves it)"); goto out; }
    if (label) po.label = !strcmp(label, "safe") ? ST_LABEL_SAFE : ST_LABEL_UNSAFE;
    if (responses && (po.harmbench_functional || po.prompt_column || po.category_column || label)) {
        rc = st_args_fail(&spec, "--harmbench-functional/--prompt-column/--category-column/--label choose prompts of "
                          "--benchmark: they need --model (with --responses the prompts come from the file)");
        goto out;
    }
    if (!bench) bench = "advbench";
    if (st_prompts_spec_check(bench, &po)) {
        rc = st_args_fail(&spec, "--benchmark %s: %s", bench, st_last_error());
        goto out;
    }
    if (model && ctxlen > 0 && ctxlen <= max_new) {
        rc = st_args_fail(&spec, "--context-length %d leaves no room for a prompt with --max-new-tokens %d: "
                          "raise --context-length or lower --max-new-tokens", ctxlen, max_new);
        goto out;
    }
    if (model) {
        st_generate_options chk = st_generate_defaults(); /* usage errors before anything is loaded */
        if ((rc = cli_apply_stops(&spec, &stop_ids, &stop_texts, extra_ids, &chk))) goto out;
        rc = 1;
        st_sampler_params sp = {temperature, 0, top_p, seed};
        if (st_sampler_params_check(&sp)) {
            rc = st_args_fail(&spec, "%s", st_last_error());
            goto out;
        }
    }
    if (st_refusal_new(&ro, list, &m)) goto fail;
    if (cli_check_adapter(NULL, adapter)) goto fail; /* before the --out folder exists */
    if (cli_out_create(out, &made_out)) goto fail;
    snprintf(partial_path, sizeof partial_path, "%s/responses.partial.jsonl", out);
    if (model) {
        /* bad prompt files and weights fail before the model is loaded */
        st_prompt_set probe;
        if (st_prompts_load_opts(bench, data_dir, &po, &probe)) goto fail;
        st_prompt_set_free(&probe);
        if (cli_resolve_weights(model, weights, &model_path)) goto fail;
        if (cli_check_model_path(spec.prog, model_path)) goto out;
        if (cli_check_adapter(model_path, adapter)) goto fail;
        if (cli_model_load(spec.prog, model_path, adapter, &mdl)) goto fail;
        if (cli_apply_date(spec.prog, mdl, date)) goto out;
        st_safety_opts so = st_safety_defaults();
        so.benchmark = bench;
        so.prompt_opts = &po;
        so.data_dir = data_dir;
        so.system_prompt = system;
        so.limit = (size_t)limit;
        so.gen.max_new_tokens = max_new;
        so.gen.batch_size = batch;
        so.gen.precision = strcmp(precision, "bf16") ? ST_GEN_PRECISION_FP32 : ST_GEN_PRECISION_BF16;
        so.gen.context_length = ctxlen;
        so.gen.sampling.temperature = temperature;
        so.gen.sampling.top_p = top_p;
        so.gen.sampling.seed = seed;
        if ((rc = cli_apply_stops(&spec, &stop_ids, &stop_texts, extra_ids, &so.gen))) goto out;
        rc = 1;
        if (st_sampler_params_check(&so.gen.sampling)) goto fail;
        /* the settings that make the answers and the summary: an earlier result in --out made
         * with others is refused, one made with these is continued (or is complete) */
        st = cJSON_CreateObject();
        cJSON_AddStringToObject(st, "model", model);
        cJSON_AddStringToObject(st, "weights", weights);
        cJSON_AddStringToObject(st, "model_path", model_path);
        char mh[17];
        st_safety_model_hash(mdl, mh);
        cJSON_AddStringToObject(st, "model_hash", mh);
        if (adapter) cJSON_AddStringToObject(st, "adapter", adapter);
        cJSON_AddStringToObject(st, "benchmark", bench);
        add_prompt_opts(st, bench, &po);
        cJSON *g = cJSON_AddObjectToObject(st, "generation");
        cJSON_AddNumberToObject(g, "max_new_tokens", max_new);
        cJSON_AddNumberToObject(g, "batch_size", batch);
        cJSON_AddStringToObject(g, "precision", precision);
        cJSON_AddNumberToObject(g, "context_length", (double)st_generate_context_length(mdl, ctxlen));
        cJSON_AddStringToObject(g, "decoding", st_sampler_is_greedy(&so.gen.sampling) ? "greedy" : "sampling");
        cJSON_AddNumberToObject(g, "temperature", temperature);
        cJSON_AddNumberToObject(g, "top_p", top_p);
        char sb[32];
        snprintf(sb, sizeof sb, "%llu", (unsigned long long)seed);
        cJSON_AddStringToObject(g, "seed", sb);
        if (system) cJSON_AddStringToObject(g, "system_prompt", system);
        else cJSON_AddNullToObject(g, "system_prompt");
        cJSON_AddNumberToObject(g, "limit", limit);
        cJSON_AddItemToObject(g, "stop_ids", cJSON_CreateIntArray(extra_ids, stop_ids.n));
        cJSON_AddItemToObject(g, "stop", cJSON_CreateStringArray((const char *const *)stop_texts.v, stop_texts.n));
        if (date) cJSON_AddStringToObject(g, "date_string", date);
        else cJSON_AddNullToObject(g, "date_string");
        add_refusal_judge(st, list, &ro, &jc);
        const int earlier = earlier_result(spec.prog, out, partial_path, st, 1);
        if (earlier < 0) goto out;
        if (earlier == EARLIER_COMPLETE) {
            printf("%s: complete: its answers and summary were made with these same settings; nothing to do "
                   "(choose another --out to evaluate again)\n", out);
            rc = 0;
            goto out;
        }
        if (st_safety_partial_open(partial_path, st, &partial)) goto fail;
        if (st_safety_partial_count(partial) && !quiet)
            fprintf(stderr, "%s: continuing an interrupted run: %zu answers kept\n", partial_path,
                    st_safety_partial_count(partial));
        so.resume = st_safety_partial_resume;
        so.on_answer = st_safety_partial_append;
        so.ud = partial;
        so.gen.cancel = &g_eval_stop;
        progress_state ps = {st_time_now(), 0, !quiet && isatty(2), "generate"};
        so.gen.progress = gen_progress;
        so.gen.ud = &ps;
        g_eval_phase = 1;
        st_status gs = st_safety_generate(mdl, &so, m, &run);
        g_eval_phase = 0;
        if (gs == ST_ERR_INTERRUPTED) {
            const size_t kept = st_safety_partial_count(partial) + st_safety_partial_appended(partial);
            if (kept)
                fprintf(stderr, "\nsafetune eval safety: interrupted; %zu answers kept in %s: rerun the same "
                        "command to continue from them\n", kept, partial_path);
            else
                fprintf(stderr, "\nsafetune eval safety: interrupted before any answer was finished\n");
            rc = 128 + (int)g_eval_stop; /* as the shell reports a death by that signal: 130, 143 */
            goto out;
        }
        if (gs) goto fail;
        recs = run.recs;
        n = run.n;
        cJSON *pso = cJSON_GetObjectItemCaseSensitive(st, "prompt_set");
        cJSON_AddStringToObject(pso, "path", run.prompts.path);
        cJSON_AddNumberToObject(pso, "excluded", (double)run.prompts.n_excluded);
        if (run.prompts.n_excluded && !quiet)
            fprintf(stderr, "%s: %zu behaviours of other functional categories left out (--harmbench-functional %s)\n",
                    bench, run.prompts.n_excluded, po.harmbench_functional ? po.harmbench_functional : "standard");
        cJSON_AddNumberToObject(g, "prompt_tokens", (double)run.prompt_tokens);
        cJSON_AddNumberToObject(g, "completion_tokens", (double)run.gen_tokens);
        size_t nlen = 0;
        for (size_t i = 0; i < n; i++) nlen += run.gens[i].finish == ST_FINISH_LENGTH;
        cJSON_AddNumberToObject(g, "finished_by_length", (double)nlen);
        cJSON_AddNumberToObject(g, "prompts_truncated", (double)run.n_truncated);
        cJSON *ti = cJSON_AddArrayToObject(g, "truncated_ids");
        for (size_t i = 0; i < n; i++)
            if (run.truncated[i]) cJSON_AddItemToArray(ti, cJSON_CreateString(recs[i].id));
        if (!quiet)
            fprintf(stderr, "generated %zu answers (%zu tokens) in %.1f s (%.1f tok/s)%s%s\n", n - run.n_resumed,
                    run.gen_tokens, run.seconds, run.seconds > 0 ? run.gen_tokens / run.seconds : 0.0,
                    run.n_resumed ? "; the others were kept from the interrupted run" : "",
                    run.n_truncated ? "; some prompts were truncated (see warnings)" : "");
        if (run.n_truncated) fprintf(stderr, "warning: %zu prompt(s) were left-truncated to fit the context\n", run.n_truncated);
    } else {
        st = cJSON_CreateObject();
        cJSON_AddStringToObject(st, "responses", responses);
        add_refusal_judge(st, list, &ro, &jc);
        /* scoring OUT's own answers again (e.g. with a judge) replaces its summary knowingly */
        if (!same_file(responses, out, "responses.jsonl") && earlier_result(spec.prog, out, partial_path, st, 0) < 0)
            goto out;
        if (st_eval_read_responses(responses, &set)) goto fail;
        st_eval_apply_refusal(m, set.recs, set.n);
        recs = set.recs;
        n = set.n;
    }
    if (jc.url) {
        if (model) {
            /* keep the (expensive) generations whatever the judge does */
            cJSON *tmp = cJSON_Duplicate(st, 1);
            cJSON_ReplaceItemInObjectCaseSensitive(tmp, "judge", cJSON_CreateNull());
            int w = write_safety(out, recs, n, tmp, 0);
            cJSON_Delete(tmp);
            if (w) goto fail;
        }
        if (judge_open(&jc, out, "judge_cache.jsonl", NULL, 5, &judge)) goto fail;
        reasons = calloc(n ? n : 1, sizeof *reasons);
        if (!reasons) { st_error(ST_ERR_NOMEM, "out of memory"); goto fail; }
        for (size_t i = 0; i < n; i++) {
            st_judge_result r;
            if (st_judge_score(judge, recs[i].prompt, recs[i].response, &r)) {
                if (model)
                    st_error_wrap(ST_ERR_NET, "judge failed at answer %zu of %zu (answers and unjudged summary kept in %s; "
                                  "rerun the same command to judge them, replies so far are cached; or score them with "
                                  "--responses %s/responses.jsonl)", i + 1, n, out, out);
                goto fail;
            }
            recs[i].judged = 1;
            recs[i].judge_score = r.score;
            reasons[i] = r.reason;
            recs[i].judge_reason = r.reason;
            if (!quiet && ((i + 1) % 25 == 0 || i + 1 == n)) fprintf(stderr, "\rjudge: %zu/%zu", i + 1, n);
        }
        if (!quiet) fprintf(stderr, "\n");
    }
    if (write_safety(out, recs, n, st, 1)) goto fail;
    if (partial) { /* the result is whole: the answers of the unfinished run are in responses.jsonl */
        st_safety_partial_close(partial);
        partial = NULL;
        if (unlink(partial_path) != 0) {
            st_error(ST_ERR_IO, "%s: cannot remove: %s", partial_path, strerror(errno));
            goto fail;
        }
        st_fsync_dir(out);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "safetune eval safety: %s\n", st_last_error());
    rc = 1;
out:
    if (partial && rc && st_safety_partial_count(partial) + st_safety_partial_appended(partial) == 0)
        unlink(partial_path); /* it holds no answer: nothing to keep (and an empty --out it made goes) */
    st_safety_partial_close(partial);
    if (rc) cli_out_abandon(out, made_out);
    if (reasons)
        for (size_t i = 0; i < n; i++) free(reasons[i]);
    free(reasons);
    cJSON_Delete(st);
    st_judge_free(judge);
    st_eval_set_free(&set);
    st_safety_run_free(&run);
    st_model_free(mdl);
    free(model_path);
    st_refusal_free(m);
    st_args_free(&args);
    return rc;
}

/* ============================ eval utility ============================ */

static void add_buf_line(char **buf, size_t *len, size_t *cap, cJSON *o, int *oom) {
    char *line = st_utf8_fix_owned(cJSON_PrintUnformatted(o));
    if (!line) { *oom = 1; return; }
    size_t ll = strlen(line);
    if (*len + ll + 2 > *cap) {
        size_t nc = (*len + ll + 2) * 2;
        char *nb = realloc(*buf, nc);
        if (!nb) { free(line); *oom = 1; return; }
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, line, ll);
    *len += ll;
    (*buf)[(*len)++] = '\n';
    free(line);
}

static st_status write_jsonl_atomic(const char *path, char *buf, size_t len, int oom) {
    if (oom) return st_error(ST_ERR_NOMEM, "%s: out of memory", path);
    return st_write_file_atomic(path, buf ? buf : "", len);
}

/* --model is a `safetune train` output folder: the run's split settings (its config.json)
 * become the defaults of the options not given (opts[i].seen == 0), so the held-out rows are
 * the ones that run held out. Says which it took. */
static void run_split_defaults(const char *prog, const char *model, const st_opt *opts, int n_opts,
                               int *max_seq, int *max_rows, float *val_fraction, uint64_t *seed) {
    cJSON *c = cli_read_run_config(model);
    if (!c) return;
    char took[256] = "";
    size_t k = 0;
    for (int i = 0; i < n_opts; i++) {
        const st_opt *o = &opts[i];
        const char *key = o->dst == max_seq ? "max_seq_len" : o->dst == max_rows ? "max_rows"
                          : o->dst == val_fraction ? "val_fraction" : o->dst == seed ? "seed" : NULL;
        const cJSON *v = key ? cJSON_GetObjectItem(c, key) : NULL;
        if (!cJSON_IsNumber(v) || o->seen) continue;
        if (o->dst == max_seq) *max_seq = v->valueint;
        else if (o->dst == max_rows) *max_rows = v->valueint;
        else if (o->dst == val_fraction) *val_fraction = (float)v->valuedouble;
        else *seed = (uint64_t)v->valuedouble;
        if (k < sizeof took)
            k += (size_t)snprintf(took + k, sizeof took - k, "%s%s %g", k ? ", " : "", key, v->valuedouble);
    }
    if (k) fprintf(stderr, "%s: held-out split as the run's (%s/config.json): %s\n", prog, model, took);
    /* LookAhead and poison change the rows before the run's split (lengths, hence the rows dropped
     * as too long, and the rows themselves), so this split of the plain --data can differ from it */
    const cJSON *la = cJSON_GetObjectItem(c, "lookahead"), *po = cJSON_GetObjectItem(c, "poison");
    const int la_on = cJSON_IsString(la) && strcmp(la->valuestring, "none") != 0;
    const int po_on = cJSON_IsNumber(po) && po->valuedouble > 0;
    if (la_on || po_on)
        fprintf(stderr, "%s: warning: the run trained on transformed rows (%s%s%s); its held-out rows were chosen "
                "among those, so this split of the untransformed data may hold out rows it trained on: use the "
                "run's own val_loss (%s/metrics.jsonl) or a --data file it never saw\n", prog,
                la_on ? "lookahead " : "", la_on ? la->valuestring : "", po_on ? (la_on ? ", poison" : "poison") : "",
                model);
    cJSON_Delete(c);
}

static int eval_utility(int argc, char **argv) {
    const char *model = NULL, *weights = "live", *out = "out/utility", *data = NULL, *fmt = "auto", *adapter = NULL;
    st_infer_ctx *ic = NULL; /* the model's weights and their inference copies, for every measure */
    const char *data_dir = NULL, *tqa_path = NULL, *mt_path = NULL, *system = NULL;
    judge_cli jc = {NULL, NULL, NULL, NULL, 60.0f, 3, 0};
    float val_fraction = 0.05f;
    /* max_seq, max_rows, val_fraction, seed: safetune train's defaults, so the same rows are held out */
    int val_count = 0, max_seq = 512, max_rows = 0, batch_rows = 8, tqa_limit = 0, mt_limit = 0, mt_new = 512, batch = 32;
    int no_tqa = 0, no_mt = 0, quiet = 0, tqa_tokens = 2048;
    uint64_t seed = 42; /* = safetune train's default: the same held-out rows */
    st_opt opts[] = {
        {"model", ST_OPT_STR, &model, "MODEL", "a .gguf file, HF folder, or training output folder", 0, 0, 0},
        CLI_WEIGHTS_OPT(weights),
        CLI_ADAPTER_OPT(adapter),
        {"out", ST_OPT_STR, &out, "DIR", "output folder", 0, 0, 0},
        {"data", ST_OPT_STR, &data, "FILE", "instruction dataset for held-out loss (omit to skip)", 0, 0, 0},
        {"data-format", ST_OPT_CHOICE, &fmt, "auto|alpaca|dolly|orca|messages", "format of --data", 0, 0, 0},
        {"val-fraction", ST_OPT_FLOAT, &val_fraction, "F", "validation share of rows", 0, 0.99, 0},
        {"val-count", ST_OPT_INT, &val_count, "N", "validation rows (overrides --val-fraction)", 0, 1 << 30, 0},
        {"seed", ST_OPT_U64, &seed, "S", "split seed (default 42, as `safetune train`)", 0, 0, 0},
        {"max-seq-len", ST_OPT_INT, &max_seq, "N", "truncate rows to N tokens (as `safetune train`)", 2, 1 << 20, 0},
        {"max-rows", ST_OPT_INT, &max_rows, "N", "use only the first N data rows (0 = all; as `safetune train`)", 0, 1e9, 0},
        {"loss-batch", ST_OPT_INT, &batch_rows, "B", "rows per forward for the held-out loss", 1, 4096, 0},
        {"data-dir", ST_OPT_STR, &data_dir, "DIR", "dataset folder (default $SAFETUNE_DATA_DIR or data/)", 0, 0, 0},
        {"truthfulqa", ST_OPT_STR, &tqa_path, "FILE", "TruthfulQA.csv (default DATA_DIR/truthfulqa/TruthfulQA.csv)", 0, 0, 0},
        {"tqa-limit", ST_OPT_INT, &tqa_limit, "N", "first N TruthfulQA questions (0 = all 817)", 0, 1 << 30, 0},
        {"tqa-batch-tokens", ST_OPT_INT, &tqa_tokens, "N", "tokens per scoring forward", 64, 1 << 20, 0},
        {"no-truthfulqa", ST_OPT_FLAG, &no_tqa, NULL, "skip TruthfulQA MC1", 0, 0, 0},
        {"mtbench", ST_OPT_STR, &mt_path, "FILE", "MT-Bench question.jsonl (default DATA_DIR/mtbench/question.jsonl)", 0, 0, 0},
        {"mtbench-limit", ST_OPT_INT, &mt_limit, "N", "first N MT-Bench questions (0 = all 80)", 0, 1 << 30, 0},
        {"mtbench-max-new-tokens", ST_OPT_INT, &mt_new, "N", "tokens per MT-Bench answer (default 512; greedy)", 1, 1 << 20, 0},
        {"batch-size", ST_OPT_INT, &batch, "B", "sequences decoded together for MT-Bench", 1, 4096, 0},
        {"system-prompt", ST_OPT_STR, &system, "S", "system prompt for MT-Bench (default: the chat template's)", 0, 0, 0},
        {"no-mtbench", ST_OPT_FLAG, &no_mt, NULL, "skip MT-Bench answers", 0, 0, 0},
        JUDGE_OPTS(jc, "OpenAI-compatible endpoint; grades MT-Bench answers 1-10", "mtbench_judge_cache.jsonl"),
        {"quiet", ST_OPT_FLAG, &quiet, NULL, "no progress output", 0, 0, 0},
    };
    st_args_spec spec = {"safetune eval utility", "--model MODEL [--data FILE] [options]",
                         "Utility next to safety: held-out assistant-token loss and perplexity on a validation "
                         "split (--data), TruthfulQA MC1 accuracy (sum log-likelihood of \" \" + answer after the "
                         "6-shot QA primer + \"\\n\\nQ: <question>\\nA:\", no chat template), and MT-Bench "
                         "first-turn answers (greedy, chat template) in mtbench_answers.jsonl, judged 1-10 with "
                         "--judge-url. Writes summary.json (+ truthfulqa_mc1.jsonl).",
                         opts, (int)(sizeof opts / sizeof opts[0]), 0, 0, NULL, 0};
    st_args args;
    int rc = st_args_parse(&spec, argc, argv, &args), made_out = 0;
    if (rc) return rc < 0 ? 0 : rc;
    rc = 1;
    st_model *m = NULL;
    char *model_path = NULL, *buf = NULL;
    size_t blen = 0, bcap = 0;
    int oom = 0;
    st_dataset ds = {0};
    st_tokenized tk = {0};
    st_data_split split = {0};
    size_t *file_row = NULL; /* [tk.n] row in the --data file of each kept row */
    st_tqa_set tqa = {0};
    st_mc1_result mc1 = {0};
    st_mtbench_set mt = {0};
    st_generation *gens = NULL;
    int32_t **ids = NULL;
    size_t *lens = NULL;
    st_judge *judge = NULL;
    size_t n_mt = 0; /* MT-Bench questions answered (ids/gens length) */
    cJSON *sum = cJSON_CreateObject();
    char path[4200];
    if (!data_dir) data_dir = st_prompts_default_data_dir();

    if (!model) { rc = st_args_fail(&spec, "--model is required"); goto out; }
    if (jc.url && !jc.model) { rc = st_args_fail(&spec, "--judge-url needs --judge-model"); goto out; }
    if (jc.model && !jc.url) { rc = st_args_fail(&spec, "--judge-model needs --judge-url (the endpoint that serves it)"); goto out; }
    if (jc.url && no_mt) { rc = st_args_fail(&spec, "--judge-url grades MT-Bench answers; it cannot go with --no-mtbench"); goto out; }
    if (no_tqa && (tqa_limit || tqa_path)) {
        rc = st_args_fail(&spec, "--tqa-limit / --truthfulqa have no effect with --no-truthfulqa; drop one");
        goto out;
    }
    if (no_mt && (mt_limit || mt_path)) {
        rc = st_args_fail(&spec, "--mtbench-limit / --mtbench have no effect with --no-mtbench; drop one");
        goto out;
    }
    if (data) run_split_defaults(spec.prog, model, opts, (int)(sizeof opts / sizeof opts[0]), &max_seq, &max_rows,
                                 &val_fraction, &seed);
    if (!data && no_tqa && no_mt) {
        rc = st_args_fail(&spec, "nothing to measure: --no-truthfulqa and --no-mtbench without --data; "
                          "drop one of them or pass --data FILE for the held-out loss");
        goto out;
    }
    st_data_format df;
    if (st_data_format_parse(fmt, &df)) {
        rc = st_args_fail(&spec, "--data-format %s: expected auto, alpaca, dolly, orca or messages", fmt);
        goto out;
    }
    if (cli_check_adapter(NULL, adapter)) goto fail; /* before the --out folder exists */
    if (cli_out_create(out, &made_out)) goto fail;
    /* read every input before the (slow) model work, so bad input fails fast */
    if (data && st_dataset_load(data, df, &ds)) goto fail;
    char tqa_default[4200], mt_default[4200];
    snprintf(tqa_default, sizeof tqa_default, "%s/truthfulqa/TruthfulQA.csv", data_dir);
    snprintf(mt_default, sizeof mt_default, "%s/mtbench/question.jsonl", data_dir);
    if (!no_tqa && st_truthfulqa_load(tqa_path ? tqa_path : tqa_default, &tqa)) goto fail;
    if (!no_mt && st_mtbench_load(mt_path ? mt_path : mt_default, &mt)) goto fail;
    if (cli_resolve_weights(model, weights, &model_path)) goto fail;
    if (cli_check_model_path(spec.prog, model_path)) goto out;
    if (cli_model_load(spec.prog, model_path, adapter, &m)) goto fail;
    if (st_infer_ctx_new(m, NULL, NULL, NULL, &ic)) goto fail;
    cJSON_AddStringToObject(sum, "model", model);
    cJSON_AddStringToObject(sum, "weights", weights);
    cJSON_AddStringToObject(sum, "model_path", model_path);
    if (adapter) cJSON_AddStringToObject(sum, "adapter", adapter);

    /* (a) held-out loss */
    if (data) {
        /* the rows `safetune train` splits: the first --max-rows, minus those with no trained
         * token at --max-seq-len; file_row maps a kept row back to its row in the file */
        size_t dropped = 0;
        if (st_tokenize_training_rows(&ds, (size_t)max_rows, &m->chat, m->tokenizer, max_seq, &tk, &dropped,
                                      &file_row))
            goto fail;
        if (dropped)
            fprintf(stderr, "%s: warning: %s: %zu rows have no trained tokens at --max-seq-len %d; dropped "
                    "(as `safetune train` does)\n", spec.prog, data, dropped, max_seq);
        if (st_data_split_make(tk.n, st_args_decimal(val_fraction), (size_t)val_count, seed, &split)) goto fail;
        st_heldout_result hr;
        if (st_heldout_loss(ic, &tk, split.val, split.n_val, max_seq, batch_rows, &hr)) goto fail;
        cJSON *h = cJSON_AddObjectToObject(sum, "heldout");
        cJSON_AddStringToObject(h, "data", data);
        cJSON_AddStringToObject(h, "format", st_data_format_name(ds.format));
        cJSON_AddNumberToObject(h, "rows", (double)ds.n);
        cJSON_AddNumberToObject(h, "rows_dropped", (double)dropped);
        cJSON_AddNumberToObject(h, "val_rows", (double)hr.n_rows);
        cJSON_AddNumberToObject(h, "val_tokens", (double)hr.n_tokens);
        cJSON_AddNumberToObject(h, "rows_truncated", (double)hr.n_truncated);
        cJSON_AddNumberToObject(h, "max_seq_len", max_seq);
        char sb[32];
        snprintf(sb, sizeof sb, "%llu", (unsigned long long)seed);
        cJSON_AddStringToObject(h, "seed", sb);
        cJSON_AddNumberToObject(h, "val_fraction", val_count > 0 ? 0 : st_args_decimal(val_fraction));
        cJSON_AddNumberToObject(h, "val_count", val_count);
        if (split.n_val <= 256) { /* which rows were held out (small splits; for checking and reuse) */
            cJSON *vi = cJSON_AddArrayToObject(h, "val_indices");
            for (size_t i = 0; i < split.n_val; i++)
                cJSON_AddItemToArray(vi, cJSON_CreateNumber((double)file_row[split.val[i]]));
        }
        cJSON_AddNumberToObject(h, "loss", hr.loss);
        cJSON_AddNumberToObject(h, "perplexity", hr.perplexity);
        printf("held-out loss %.6f nats/token, perplexity %.4f (%zu rows, %zu assistant tokens", hr.loss,
               hr.perplexity, hr.n_rows, hr.n_tokens);
        if (hr.n_truncated)
            printf("; %zu row%s cut to --max-seq-len %d", hr.n_truncated, hr.n_truncated == 1 ? "" : "s", max_seq);
        printf(")\n");
    } else {
        cJSON_AddNullToObject(sum, "heldout");
    }

    /* (b) TruthfulQA MC1 */
    if (!no_tqa) {
        size_t nq = tqa_limit > 0 && (size_t)tqa_limit < tqa.n ? (size_t)tqa_limit : tqa.n;
        progress_state ps = {st_time_now(), 0, !quiet && isatty(2), "truthfulqa"};
        if (st_truthfulqa_mc1(ic, &tqa, nq, tqa_tokens, q_progress, &ps, &mc1)) goto fail;
        for (size_t i = 0; i < mc1.n; i++) {
            const st_tqa_item *q = &tqa.items[i];
            const st_mc1_item *it = &mc1.items[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "index", (double)i);
            cJSON_AddStringToObject(o, "category", q->category);
            cJSON_AddStringToObject(o, "question", q->question);
            cJSON *ch = cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToArray(ch, cJSON_CreateString(q->best));
            for (size_t k = 0; k < q->n_incorrect; k++) cJSON_AddItemToArray(ch, cJSON_CreateString(q->incorrect[k]));
            cJSON_AddItemToObject(o, "logprob", cJSON_CreateDoubleArray(it->logprob, (int)it->n_choices));
            cJSON_AddItemToObject(o, "n_tokens", cJSON_CreateIntArray(it->n_tokens, (int)it->n_choices));
            cJSON_AddNumberToObject(o, "chosen", it->chosen);
            cJSON_AddBoolToObject(o, "correct", it->chosen == 0);
            add_buf_line(&buf, &blen, &bcap, o, &oom);
            cJSON_Delete(o);
        }
        snprintf(path, sizeof path, "%s/truthfulqa_mc1.jsonl", out);
        if (write_jsonl_atomic(path, buf, blen, oom)) goto fail;
        blen = 0;
        cJSON *t = cJSON_AddObjectToObject(sum, "truthfulqa_mc1");
        cJSON_AddStringToObject(t, "file", tqa_path ? tqa_path : tqa_default);
        cJSON_AddNumberToObject(t, "questions", (double)mc1.n);
        cJSON_AddNumberToObject(t, "correct", (double)mc1.n_correct);
        cJSON_AddNumberToObject(t, "accuracy", mc1.accuracy);
        st_rate wr = st_wilson(mc1.n_correct, mc1.n, ST_Z95);
        cJSON *ci = cJSON_AddArrayToObject(t, "ci95");
        cJSON_AddItemToArray(ci, cJSON_CreateNumber(wr.lo));
        cJSON_AddItemToArray(ci, cJSON_CreateNumber(wr.hi));
        cJSON_AddStringToObject(t, "scoring", "sum of answer-token log-probs; choices = Best Answer + Incorrect Answers");
        cJSON_AddStringToObject(t, "prompt", "TruthfulQA QA primer + \"\\n\\nQ: {question}\\nA:\", continuation \" {answer}\", no chat template");
        char rb[160];
        printf("TruthfulQA MC1: %s\n", cli_fmt_rate(rb, sizeof rb, &wr, 1, "questions scored"));
    } else {
        cJSON_AddNullToObject(sum, "truthfulqa_mc1");
    }

    /* (c) MT-Bench first-turn answers */
    if (!no_mt) {
        size_t nq = mt_limit > 0 && (size_t)mt_limit < mt.n ? (size_t)mt_limit : mt.n;
        n_mt = nq;
        ids = calloc(nq, sizeof *ids);
        lens = calloc(nq, sizeof *lens);
        gens = calloc(nq, sizeof *gens);
        if (!ids || !lens || !gens) { st_error(ST_ERR_NOMEM, "out of memory"); goto fail; }
        for (size_t i = 0; i < nq; i++)
            if (st_prompt_encode(m, mt.items[i].turn1, 1, system, &ids[i], &lens[i])) goto fail;
        st_generate_options go = st_generate_defaults();
        go.max_new_tokens = mt_new;
        go.batch_size = batch;
        go.infer = ic;
        progress_state ps = {st_time_now(), 0, !quiet && isatty(2), "mtbench"};
        go.progress = gen_progress;
        go.ud = &ps;
        size_t ntr = 0;
        if (st_generate(m, (const int32_t *const *)ids, lens, nq, &go, gens, &ntr)) goto fail;
        if (jc.url && judge_open(&jc, out, "mtbench_judge_cache.jsonl", st_mtbench_rubric(), 10, &judge)) goto fail;
        size_t scored = 0, judged = 0;
        double ssum = 0;
        st_status js = ST_OK;
        for (size_t i = 0; i < nq; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "question_id", mt.items[i].question_id);
            if (mt.items[i].category) cJSON_AddStringToObject(o, "category", mt.items[i].category);
            else cJSON_AddNullToObject(o, "category");
            cJSON_AddNumberToObject(o, "turn", 1);
            cJSON_AddStringToObject(o, "prompt", mt.items[i].turn1);
            cJSON_AddStringToObject(o, "answer", gens[i].text ? gens[i].text : "");
            cJSON_AddStringToObject(o, "finish_reason", st_finish_reason_name(gens[i].finish));
            cJSON_AddNumberToObject(o, "completion_tokens", (double)gens[i].completion_tokens);
            if (judge && !js) {
                st_judge_result r;
                js = st_judge_score(judge, mt.items[i].turn1, gens[i].text ? gens[i].text : "", &r);
                if (!js) {
                    judged++;
                    cJSON_AddNumberToObject(o, "judge_score", r.score);
                    if (r.reason) cJSON_AddStringToObject(o, "judge_reason", r.reason);
                    else cJSON_AddNullToObject(o, "judge_reason");
                    if (r.score) scored++, ssum += r.score;
                    st_judge_result_free(&r);
                }
            }
            add_buf_line(&buf, &blen, &bcap, o, &oom);
            cJSON_Delete(o);
        }
        snprintf(path, sizeof path, "%s/mtbench_answers.jsonl", out);
        if (write_jsonl_atomic(path, buf, blen, oom)) goto fail;
        blen = 0;
        cJSON *t = cJSON_AddObjectToObject(sum, "mtbench");
        cJSON_AddNumberToObject(t, "questions", (double)nq);
        cJSON_AddNumberToObject(t, "max_new_tokens", mt_new);
        cJSON_AddStringToObject(t, "answers", "mtbench_answers.jsonl");
        if (jc.url) {
            cJSON *j = cJSON_AddObjectToObject(t, "judge");
            cJSON_AddStringToObject(j, "url", jc.url);
            cJSON_AddStringToObject(j, "model", jc.model);
            cJSON_AddNumberToObject(j, "judged", (double)judged);
            cJSON_AddNumberToObject(j, "scored", (double)scored);
            cJSON_AddNumberToObject(j, "unscored", (double)(judged - scored));
            if (scored) cJSON_AddNumberToObject(j, "mean_score", ssum / (double)scored);
            else cJSON_AddNullToObject(j, "mean_score");
        } else {
            cJSON_AddNullToObject(t, "judge");
        }
        printf("MT-Bench: %zu first-turn answers written", nq);
        if (jc.url && scored) printf("; judge: %zu scored, %zu unscored, mean %.3f / 10", scored, judged - scored, ssum / scored);
        else if (jc.url) printf("; judge: 0 scored, %zu unscored, mean n/a (0 answers scored)", judged);
        printf("\n");
        if (js) {
            st_error_wrap(js, "judge failed at MT-Bench answer %zu of %zu (answers kept in %s)", judged + 1, nq, path);
            snprintf(path, sizeof path, "%s/summary.json", out);
            char *txt = st_utf8_fix_owned(cJSON_Print(sum));
            if (txt) st_write_file_atomic(path, txt, strlen(txt));
            free(txt);
            goto fail;
        }
    } else {
        cJSON_AddNullToObject(sum, "mtbench");
    }
    snprintf(path, sizeof path, "%s/summary.json", out);
    char *txt = st_utf8_fix_owned(cJSON_Print(sum));
    if (!txt) { st_error(ST_ERR_NOMEM, "out of memory"); goto fail; }
    st_status ws = st_write_file_atomic(path, txt, strlen(txt));
    free(txt);
    if (ws) goto fail;
    printf("wrote %s\n", path);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "safetune eval utility: %s\n", st_last_error());
    rc = 1;
out:
    if (rc) cli_out_abandon(out, made_out);
    if (gens) st_generations_free(gens, n_mt);
    free(gens);
    if (ids)
        for (size_t i = 0; i < n_mt; i++) free(ids[i]);
    free(ids);
    free(lens);
    free(buf);
    cJSON_Delete(sum);
    st_judge_free(judge);
    st_mtbench_set_free(&mt);
    st_mc1_result_free(&mc1);
    st_tqa_set_free(&tqa);
    st_data_split_free(&split);
    free(file_row);
    st_tokenized_free(&tk);
    st_dataset_free(&ds);
    st_infer_ctx_free(ic);
    st_model_free(m);
    free(model_path);
    st_args_free(&args);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: safetune eval safety  (--model MODEL [--benchmark SPEC] | --responses FILE) [options]\n"
                   "       safetune eval utility --model MODEL [--data FILE] [options]\n"
                   "(safetune eval safety --help / safetune eval utility --help for the options)\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "safety")) return eval_safety(argc - 1, argv + 1);
    if (!strcmp(argv[1], "utility")) return eval_utility(argc - 1, argv + 1);
    fprintf(stderr, "safetune eval: unknown mode '%s' (safety | utility)\n", argv[1]);
    return 2;
}
