/* bench_generate.c - batched greedy generation throughput on a real model (not a test).
 * usage: bench_generate MODEL PROMPTS.csv [N_PROMPTS=32] [MAX_NEW=128] [BATCH=32] [IDS_OUT.json]
 *        [PRECISION=fp32|bf16]
 * Takes the first CSV column of rows 2.. (AdvBench harmful_behaviors.csv "goal"), applies the chat
 * template, generates, prints one JSON line with tokens/s. IDS_OUT gets {"prompts": [[ids]...],
 * "completions": [[ids]...]} so bench/run_generate.sh can feed the same prompts to PyTorch. */
#include "safetune/forward.h"
#include "safetune/generate.h"

#include <stdlib.h>
#include <string.h>

/* First field of a CSV line (RFC 4180 quoting), heap copy. */
static char *first_field(const char *line) {
    size_t n = strlen(line);
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    const char *p = line;
    if (*p == '"') {
        for (p++; *p; p++) {
            if (*p == '"' && p[1] == '"') *o++ = '"', p++;
            else if (*p == '"') break;
            else *o++ = *p;
        }
    } else {
        while (*p && *p != ',' && *p != '\n' && *p != '\r') *o++ = *p++;
    }
    *o = '\0';
    return out;
}

static void write_ids(FILE *f, int32_t **ids, const size_t *n, size_t count) {
    fputc('[', f);
    for (size_t i = 0; i < count; i++) {
        fprintf(f, "%s[", i ? "," : "");
        for (size_t j = 0; j < n[i]; j++) fprintf(f, "%s%d", j ? "," : "", ids[i][j]);
        fputc(']', f);
    }
    fputc(']', f);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL PROMPTS.csv [N_PROMPTS=32] [MAX_NEW=128] [BATCH=32] [IDS_OUT.json] [fp32|bf16]\n", argv[0]);
        return 2;
    }
    int np = argc > 3 ? atoi(argv[3]) : 32, max_new = argc > 4 ? atoi(argv[4]) : 128;
    int batch = argc > 5 ? atoi(argv[5]) : 32;
    const char *ids_out = argc > 6 && *argv[6] && strcmp(argv[6], "-") ? argv[6] : NULL;
    const char *prec = argc > 7 ? argv[7] : "fp32";
    if (strcmp(prec, "fp32") && strcmp(prec, "bf16")) {
        fprintf(stderr, "bench_generate: precision %s: expected fp32 or bf16\n", prec);
        return 2;
    }
    char *csv;
    size_t len;
    st_model *m;
    if (st_read_file(argv[2], &csv, &len) || st_model_load(argv[1], &m)) {
        fprintf(stderr, "bench_generate: %s\n", st_last_error());
        return 1;
    }
    int32_t **ids = calloc((size_t)np, sizeof *ids);
    size_t *lens = calloc((size_t)np, sizeof *lens);
    int got = 0, row = 0;
    for (char *line = strtok(csv, "\n"); line && got < np; line = strtok(NULL, "\n"), row++) {
        if (row == 0) continue; /* header */
        char *text = first_field(line);
        if (!text || !*text) { free(text); continue; }
        if (st_prompt_encode(m, text, 1, NULL, &ids[got], &lens[got])) {
            fprintf(stderr, "bench_generate: %s\n", st_last_error());
            return 1;
        }
        free(text);
        got++;
    }
    st_generate_options o = st_generate_defaults();
    o.batch_size = batch;
    o.max_new_tokens = max_new;
    o.precision = strcmp(prec, "bf16") ? ST_GEN_PRECISION_FP32 : ST_GEN_PRECISION_BF16;
    st_infer_ctx *ic = NULL; /* the weight copies: built in the warm-up, reused by the timed run */
    if (st_infer_ctx_new(m, NULL, NULL, NULL, &ic)) { fprintf(stderr, "bench_generate: %s\n", st_last_error()); return 1; }
    o.infer = ic;
    st_generation *res = calloc((size_t)got, sizeof *res);
    /* warm-up (thread pools, page faults) */
    const int32_t *w0 = ids[0];
    size_t wl = lens[0] < 8 ? lens[0] : 8;
    st_generation wres;
    st_generate_options wo = o;
    wo.max_new_tokens = 2; /* also builds the inference weight copies (timed apart below) */
    double tw = st_time_now();
    if (st_generate(m, &w0, &wl, 1, &wo, &wres, NULL)) { fprintf(stderr, "bench_generate: %s\n", st_last_error()); return 1; }
    st_generations_free(&wres, 1);
    tw = st_time_now() - tw;
    double t0 = st_time_now();
    if (st_generate(m, (const int32_t *const *)ids, lens, (size_t)got, &o, res, NULL)) {
        fprintf(stderr, "bench_generate: %s\n", st_last_error());
        return 1;
    }
    double dt = st_time_now() - t0;
    size_t tokens = 0, ptok = 0;
    for (int i = 0; i < got; i++) tokens += res[i].completion_tokens, ptok += res[i].prompt_tokens;
    printf("{\"config\": \"safetune %s\", \"warmup_s\": %.3f, \"threads\": %d, \"prompts\": %d, \"prompt_tokens\": %zu, \"tokens\": %zu, "
           "\"seconds\": %.3f, \"tok_per_s\": %.2f}\n", prec, tw, st_num_threads(), got, ptok, tokens, dt, tokens / dt);
    if (ids_out) {
        FILE *f = fopen(ids_out, "w");
        if (!f) { fprintf(stderr, "bench_generate: cannot write %s\n", ids_out); return 1; }
        fputs("{\"prompts\": ", f);
        write_ids(f, ids, lens, (size_t)got);
        fputs(", \"completions\": ", f);
        int32_t **cids = calloc((size_t)got, sizeof *cids);
        size_t *clens = calloc((size_t)got, sizeof *clens);
        for (int i = 0; i < got; i++) cids[i] = res[i].ids, clens[i] = res[i].n_ids;
        write_ids(f, cids, clens, (size_t)got);
        fputs("}\n", f);
        fclose(f);
        free(cids);
        free(clens);
    }
    st_generations_free(res, (size_t)got);
    free(res);
    for (int i = 0; i < got; i++) free(ids[i]);
    free(ids);
    free(lens);
    free(csv);
    st_infer_ctx_free(ic);
    st_model_free(m);
    return 0;
}
