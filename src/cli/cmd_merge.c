/* cmd_merge.c - `safetune merge`: post-hoc merge of fine-tuned weights θ_ft back with the aligned
 * start θ0 (linear / SLERP / DARE, merge.h; DEFENSES.md §1), written as a Hugging Face folder
 * with merge.json (the spec and its statistics). cli_merge_write is shared with `train --merge`. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "safetune/export.h"
#include "safetune/merge.h"
#include "safetune/model.h"

/* ST_ERR_ARG naming both models and the first difference when the layouts differ. */
static st_status same_layout(const st_layout *a, const st_layout *b, const char *pa, const char *pb) {
    if (a->n_tensors != b->n_tensors || a->n_floats != b->n_floats)
        return st_error(ST_ERR_ARG, "%s (%zu tensors, %zu parameters) and %s (%zu tensors, %zu parameters) are "
                        "not the same architecture: merge a fine-tuned run with its own start", pa, a->n_tensors,
                        a->n_floats, pb, b->n_tensors, b->n_floats);
    for (size_t t = 0; t < a->n_tensors; t++) {
        const st_param_info *x = &a->params[t], *y = &b->params[t];
        if (strcmp(x->name, y->name) || x->offset != y->offset || x->numel != y->numel)
            return st_error(ST_ERR_ARG, "%s and %s differ at tensor %zu (%s [%zu] vs %s [%zu]): not the same "
                            "architecture", pa, pb, t, x->name, x->numel, y->name, y->numel);
    }
    return ST_OK;
}

st_status cli_merge_write(const st_model *tmpl, const float *theta0, const float *theta_ft,
                          const st_merge_spec *spec_in, uint64_t default_seed, const char *dir,
                          st_export_dtype dtype, const char *spec_text, st_merge_stats *stats_out) {
    st_merge_spec spec = *spec_in;
    if (spec.method == ST_MERGE_DARE && !spec.has_seed) spec.seed = default_seed;
    const size_t n = tmpl->layout.n_floats;
    float *buf = st_alloc_aligned(n * sizeof *buf);
    if (!buf) return st_error(ST_ERR_NOMEM, "merge %s: out of memory for %zu parameters", spec_text, n);
    st_merge_stats stt;
    st_status s = st_merge_apply(&spec, &tmpl->layout, theta0, theta_ft, buf, &stt);
    if (!s) s = st_export_hf(tmpl, buf, dir, dtype);
    st_free_aligned(buf);
    if (s) return s;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "merge", spec_text);
    cJSON_AddStringToObject(r, "method", spec.method == ST_MERGE_SLERP ? "slerp"
                                         : spec.method == ST_MERGE_DARE ? "dare" : "linear");
    cJSON_AddNumberToObject(r, spec.method == ST_MERGE_SLERP ? "t" : "lambda", spec.weight);
    if (spec.method == ST_MERGE_DARE) {
        cJSON_AddNumberToObject(r, "p", spec.p);
        cJSON_AddNumberToObject(r, "seed", (double)spec.seed);
        cJSON_AddNumberToObject(r, "kept_fraction", stt.n_params ? (double)stt.n_kept / (double)stt.n_params : 0);
    }
    cJSON_AddNumberToObject(r, "tensors", (double)stt.n_tensors);
    if (spec.method == ST_MERGE_SLERP) {
        cJSON_AddNumberToObject(r, "slerp_fallback_tensors", (double)stt.n_fallback);
        cJSON_AddNumberToObject(r, "slerp_fallback_fraction",
                                stt.n_tensors ? (double)stt.n_fallback / (double)stt.n_tensors : 0);
    }
    cJSON_AddNumberToObject(r, "theta_dist", stt.theta_dist);
    cJSON_AddNumberToObject(r, "lambda_proj", stt.lambda_proj);
    char *txt = st_utf8_fix_owned(cJSON_Print(r));
    cJSON_Delete(r);
    char *p = st_path_join(dir, "merge.json");
    s = txt && p ? st_write_file_atomic(p, txt, strlen(txt)) : st_error(ST_ERR_NOMEM, "out of memory");
    free(txt);
    free(p);
    if (stats_out) *stats_out = stt;
    return s;
}

void cli_merge_print(const char *prog, const char *dir, const st_merge_spec *spec, const st_merge_stats *stt) {
    fprintf(stderr, "%s: wrote %s (‖θ−θ0‖ %.6g, λ_proj %.4f", prog, dir, stt->theta_dist, stt->lambda_proj);
    if (spec->method == ST_MERGE_SLERP)
        fprintf(stderr, ", %zu of %zu tensors |c| > 0.9995: merged linearly", stt->n_fallback, stt->n_tensors);
    if (spec->method == ST_MERGE_DARE)
        fprintf(stderr, ", kept %.4f of the parameters", stt->n_params ? (double)stt->n_kept / stt->n_params : 0.0);
    fprintf(stderr, ")\n");
}

/* --model is a train run (its folder, or its final/ or final-ema/ folder): the run's config.json names the start
 * it trained from; a different --base makes θ−θ0 mix two models, so say which one to pass. */
static void warn_other_start(const char *base, const char *model) {
    char *parent = strdup(model);
    if (!parent) return;
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;
    char *slash = strrchr(parent, '/');
    if (slash) *slash = 0;
    else strcpy(parent, ".");
    cJSON *c = cli_read_run_config(model);
    const char *run = model;
    if (!c) c = cli_read_run_config(parent), run = parent;
    const cJSON *start = c ? cJSON_GetObjectItemCaseSensitive(c, "model") : NULL;
    char rb[PATH_MAX], rs[PATH_MAX];
    if (cJSON_IsString(start) && realpath(base, rb) && realpath(start->valuestring, rs) && strcmp(rb, rs) != 0)
        fprintf(stderr, "safetune merge: warning: --base %s is not the start this run trained from (%s/config.json: "
                "model %s); θ−θ0 then mixes two models: pass --base %s\n", base, run, start->valuestring,
                start->valuestring);
    cJSON_Delete(c);
    free(parent);
}

int cmd_merge(int argc, char **argv) {
    const char *base = NULL, *model = NULL, *out = NULL, *merge = NULL, *weights = "live", *export_dtype = "f32";
    uint64_t seed = 42;
    int overwrite = 0;
    st_opt opts[] = {
        {"base", ST_OPT_STR, &base, "MODEL", "θ0, the aligned start the run began from: GGUF file or HF folder (required)", 0, 0, 0},
        {"model", ST_OPT_STR, &model, "MODEL", "θ_ft, the fine-tuned weights: HF folder, GGUF file or a `safetune train` output folder (required)", 0, 0, 0},
        CLI_WEIGHTS_OPT(weights),
        {"merge", ST_OPT_STR, &merge, "SPEC", "linear:L (θ = (1−L)·θ0 + L·θ_ft), slerp:T (per tensor, mergekit's) or "
                                             "dare:L:P[:SEED] (drop rate P) (required)", 0, 0, 0},
        {"seed", ST_OPT_U64, &seed, "S", "DARE mask seed when the spec names none", 0, 0, 0},
        {"out", ST_OPT_STR, &out, "DIR", "Hugging Face folder to write (required)", 0, 0, 0},
        {"export-dtype", ST_OPT_CHOICE, &export_dtype, "f32|bf16", "safetensors dtype of DIR", 0, 0, 0},
        {"overwrite", ST_OPT_FLAG, &overwrite, NULL, "replace an existing DIR", 0, 0, 0},
    };
    st_args_spec spec = {"safetune merge", "--base MODEL --model MODEL --merge SPEC --out DIR [options]",
                         "Merge fine-tuned weights back with the aligned start (Farn et al. 2024): linear, "
                         "SLERP or DARE over every floating tensor. Writes DIR (Hugging Face folder) with "
                         "DIR/merge.json: ‖θ−θ0‖, λ_proj, SLERP's linear-fallback fraction, DARE's kept fraction.",
                         opts, (int)(sizeof opts / sizeof *opts), 0, 0, NULL, 0};
    st_args args;
    int rc = st_args_parse(&spec, argc, argv, &args);
    if (rc) {
        st_args_free(&args);
        return rc < 0 ? 0 : rc;
    }
    st_merge_spec ms;
    st_export_dtype edt = ST_EXPORT_F32;
    struct stat sb;
    if (!base || !model || !merge || !out) rc = st_args_fail(&spec, "--base, --model, --merge and --out are required");
    else if (st_merge_spec_parse(merge, &ms)) rc = st_args_fail(&spec, "--merge: %s", st_last_error());
    else if (st_export_dtype_parse(export_dtype, &edt) || edt == ST_EXPORT_F16)
        rc = st_args_fail(&spec, "--export-dtype %s: expected f32 or bf16", export_dtype);
    else if (!overwrite && stat(out, &sb) == 0)
        rc = st_args_fail(&spec, "--out %s exists; pass --overwrite to replace it, or choose a new --out", out);
    if (rc) {
        st_args_free(&args);
        return rc;
    }
    rc = 1;
    warn_other_start(base, model);
    st_model *m0 = NULL, *mft = NULL;
    char *ft_path = NULL;
    if (cli_check_model_path("safetune merge", base)) goto done;
    if (st_model_load_weights(base, &m0)) {
        fprintf(stderr, "safetune merge: --base: %s\n", st_last_error());
        goto done;
    }
    /* θ_ft gives the export its config and tokenizer; an HF folder without tokenizer.json gives a
     * weights-only folder like itself */
    if (cli_resolve_weights(model, weights, &ft_path)) {
        fprintf(stderr, "safetune merge: %s\n", st_last_error());
        goto done;
    }
    if (cli_check_model_path("safetune merge", ft_path)) goto done;
    {
        char *tj = st_path_join(ft_path, "tokenizer.json");
        const int weights_only = tj && stat(ft_path, &sb) == 0 && S_ISDIR(sb.st_mode) && stat(tj, &sb) != 0;
        free(tj);
        if ((weights_only ? st_model_load_weights : st_model_load)(ft_path, &mft)) {
            fprintf(stderr, "safetune merge: --model: %s\n", st_last_error());
            goto done;
        }
    }
    if (same_layout(&m0->layout, &mft->layout, base, model)) {
        fprintf(stderr, "safetune merge: %s\n", st_last_error());
        goto done;
    }
    st_merge_stats stt;
    if (cli_merge_write(mft, m0->params, mft->params, &ms, seed, out, edt, merge, &stt)) {
        fprintf(stderr, "safetune merge: %s\n", st_last_error());
        goto done;
    }
    cli_merge_print("safetune merge", out, &ms, &stt);
    rc = 0;
done:
    st_model_free(m0);
    st_model_free(mft);
    free(ft_path);
    st_args_free(&args);
    return rc;
}
