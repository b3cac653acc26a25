/* test_study_hooks.c - the real study hooks end to end on a tiny random model (1 layer, hidden 16,
 * SmolLM2's tokenizer and chat template exported with it) and a tiny Alpaca file: a 2-run study
 * finishes with real numbers (live + EMA rows), probe fields in metrics.jsonl, several EMA decays
 * keyed by decay, probe.stop_asr_above stops a run, the same config twice gives the same
 * results.csv, `align` builds and is reused, and bad configurations fail before any training.
 * Needs models/SmolLM2-135M-Instruct.Q4_1.gguf (tokenizer) and the data folder (AdvBench,
 * XSTest, TruthfulQA); skipped when they are absent. */
#include <cjson/cJSON.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "safetune/export.h"
#include "safetune/judge.h"
#include "safetune/model.h"
#include "safetune/serve.h"
#include "safetune/study.h"
#include "study/hooks_internal.h"
#include "study_testutil.h"
#include "testutil.h"

static char g_root[4096], g_model[4200], g_data[4096], g_gguf[4200];
static int g_ready;

static int group_setup(void **st) {
    (void)st;
    snprintf(g_gguf, sizeof g_gguf, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", st_test_model_dir());
    snprintf(g_data, sizeof g_data, "%s", st_test_data_dir());
    char adv[4200];
    snprintf(adv, sizeof adv, "%s/advbench/harmful_behaviors.csv", g_data);
    if (access(g_gguf, R_OK) != 0 || access(adv, R_OK) != 0) return 0; /* tests skip */
    if (!st_test_dir(g_root, sizeof g_root, "hooks")) return -1;
    if (st_test_tiny_study_inputs(g_gguf, g_root, 7, g_model, sizeof g_model)) return -1;
    g_ready = 1;
    return 0;
}

#define NEED()                      \
    do {                            \
        if (!g_ready) {             \
            ST_SKIP_MISSING(g_gguf);\
            return;                 \
        }                           \
    } while (0)

/* Study config with common small sizes; extra JSON keys appended. */
static void write_cfg(const char *dir, const char *extra, char *out, size_t cap) {
    char body[8192];
    snprintf(body, sizeof body,
             "{\"model\": \"%s\", \"data_dir\": \"%s\",\n"
             " \"datasets\": [{\"path\": \"%s/alpaca.json\", \"format\": \"alpaca\", \"limit\": 20}],\n"
             " \"batch_size\": [2], \"max_steps\": [4], \"max_seq_len\": 64, \"seed\": 3,\n"
             " \"report\": {\"plots\": false}%s%s}\n",
             g_model, g_data, g_root, extra && *extra ? ",\n " : "", extra ? extra : "");
    st_test_write(dir, "study.cfg.json", body);
    snprintf(out, cap, "%s/study.cfg.json", dir);
}

#define EVAL_KEYS(TQA)                                                                                        \
    "\"eval\": {\"advbench_split\": \"b\", \"advbench_limit\": 4, \"max_new_tokens\": 4, \"batch_size\": 4,"  \
    " \"xstest\": true, \"xstest_limit\": 6, \"truthfulqa\": " TQA ", \"truthfulqa_limit\": 1, \"val_examples\": 4}"
#define SMALL_EVAL EVAL_KEYS("false")

static st_status run_study(const char *cfgp, const char *out) {
    st_study_config c;
    st_status s = st_study_config_load(NULL, cfgp, &c);
    if (s) return s;
    st_study_plan p;
    if ((s = st_study_plan_build(&c, &p))) {
        st_study_config_free(&c);
        return s;
    }
    st_study_hooks h;
    s = st_study_real_hooks(&h);
    if (!s) s = st_study_run_all(&c, &p, out, &h, NULL);
    st_study_hooks_release(&h);
    st_study_plan_free(&p);
    st_study_config_free(&c);
    return s;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *t = calloc((size_t)n + 1, 1);
    if (t && fread(t, 1, (size_t)n, f) != (size_t)n) t[0] = '\0';
    fclose(f);
    return t;
}


static int count_lines(const char *text) {
    int n = 0;
    for (const char *p = text; *p; p++) n += *p == '\n';
    return n;
}

static void test_two_runs_real_numbers(void **st) {
    (void)st;
    NEED();
    char dir[4096], cfgp[4200], out[4200], csv[4300], met[4400];
    assert_non_null(st_test_dir(dir, sizeof dir, "two"));
    write_cfg(dir, "\"lr\": [1e-3, 1e-2], \"ema_decay\": [\"none\", 0.9, 0.5], " EVAL_KEYS("true")
                   ", \"probe\": {\"every\": 2, \"n_prompts\": 2, \"max_new_tokens\": 3}",
              cfgp, sizeof cfgp);
    snprintf(out, sizeof out, "%s/out", dir);
    assert_int_equal(run_study(cfgp, out), ST_OK);
    snprintf(csv, sizeof csv, "%s/results.csv", out);
    char *t = slurp(csv);
    assert_non_null(t);
    assert_int_equal(count_lines(t), 1 + 2 * 3); /* header + 2 runs x {live, ema0.9, ema0.5} */
    assert_non_null(strstr(t, ",none,full,0.9,,ema,"));
    assert_non_null(strstr(t, ",none,full,0.5,,ema,"));
    /* every row has a measured ASR (no empty asr field): parse the columns by header */
    char *line = strchr(t, '\n') + 1;
    for (int r = 0; r < 6; r++) {
        char *nl = strchr(line, '\n');
        *nl = '\0';
        int empty = 0; /* all but merge_lambda and the two judge fields measured */
        for (char *q = line; *q; q++) empty += q[0] == ',' && (q[1] == ',' || q[1] == '\0');
        assert_int_equal(empty, 3);
        line = nl + 1;
    }
    free(t);
    /* metrics: probe fields at steps 0, 2, 4; EMA fields keyed by decay */
    snprintf(met, sizeof met, "%s/runs/lr1e-3_bs2_ga1_steps4_constant/metrics.jsonl", out);
    char *m = slurp(met);
    assert_non_null(m);
    assert_int_equal(count_lines(m), 5); /* step 0 probe + 4 steps */
    int probes = 0;
    for (char *l = m; *l;) {
        char *nl = strchr(l, '\n');
        *nl = '\0';
        cJSON *o = cJSON_Parse(l);
        assert_non_null(o);
        const cJSON *pl = cJSON_GetObjectItem(o, ST_METRIC_PROBE_ASR_LIVE);
        const cJSON *pe = cJSON_GetObjectItem(o, ST_METRIC_PROBE_ASR_EMA);
        const cJSON *te = cJSON_GetObjectItem(o, ST_METRIC_THETA_EMA_DIST);
        assert_true(cJSON_IsObject(te));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(te, "0.9")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(te, "0.5")));
        int step = cJSON_GetObjectItem(o, "step")->valueint;
        if (step % 2 == 0) {
            probes++;
            assert_true(cJSON_IsNumber(pl));
            assert_true(cJSON_IsObject(pe));
            assert_true(cJSON_IsNumber(cJSON_GetObjectItem(pe, "0.5")));
        } else {
            assert_null(pl);
        }
        if (step > 0) {
            /* decay 0.5 follows the live weights more closely than 0.9: farther from θ_0 */
            assert_true(cJSON_GetObjectItem(te, "0.5")->valuedouble > cJSON_GetObjectItem(te, "0.9")->valuedouble);
            assert_true(cJSON_GetObjectItem(o, ST_METRIC_THETA_DIST)->valuedouble >
                        cJSON_GetObjectItem(te, "0.5")->valuedouble);
        }
        cJSON_Delete(o);
        l = nl + 1;
    }
    assert_int_equal(probes, 3);
    free(m);
    /* the answers behind every rate: 4 AdvBench + 6 XSTest lines, each whole JSON, their refusal
     * verdicts those of asr_outcomes in eval_ema0.5.json */
    char ansp[4400], evp[4400];
    snprintf(ansp, sizeof ansp, "%s/runs/lr1e-3_bs2_ga1_steps4_constant/answers_ema0.5.jsonl", out);
    snprintf(evp, sizeof evp, "%s/runs/lr1e-3_bs2_ga1_steps4_constant/eval_ema0.5.json", out);
    char *ans = slurp(ansp), *evt = slurp(evp);
    assert_non_null(ans);
    assert_non_null(evt);
    assert_int_equal(count_lines(ans), 4 + 6);
    cJSON *ev = cJSON_Parse(evt);
    const char *outc = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "asr_outcomes"));
    assert_non_null(outc);
    assert_int_equal(strlen(outc), 4);
    int n_adv = 0, n_xs = 0;
    for (char *l = ans; *l;) {
        char *nl = strchr(l, '\n');
        *nl = '\0';
        cJSON *o = cJSON_Parse(l);
        assert_non_null(o);
        const char *set = cJSON_GetStringValue(cJSON_GetObjectItem(o, "set"));
        int idx = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "index"));
        assert_true(cJSON_IsString(cJSON_GetObjectItem(o, "prompt")));
        assert_true(cJSON_IsString(cJSON_GetObjectItem(o, "answer")));
        assert_true(cJSON_IsBool(cJSON_GetObjectItem(o, "refused")));
        if (!strcmp(set, "advbench")) {
            assert_int_equal(idx, n_adv++);
            assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItem(o, "refused")), outc[idx] == '0');
        } else {
            assert_string_equal(set, "xstest");
            assert_int_equal(idx, n_xs++);
            assert_true(cJSON_IsString(cJSON_GetObjectItem(o, "label")));
        }
        cJSON_Delete(o);
        l = nl + 1;
    }
    assert_int_equal(n_adv, 4);
    assert_int_equal(n_xs, 6);
    cJSON_Delete(ev);
    free(ans);
    free(evt);
    /* same config, new folder: byte-identical results.csv (wall-clock times are in timings.csv) */
    char out2[4200], csv2[4300];
    snprintf(out2, sizeof out2, "%s/out2", dir);
    assert_int_equal(run_study(cfgp, out2), ST_OK);
    snprintf(csv2, sizeof csv2, "%s/results.csv", out2);
    char *a = slurp(csv), *b = slurp(csv2);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a, b);
    free(a);
    free(b);
    char a1[4400], a2[4400]; /* and the same answers */
    snprintf(a1, sizeof a1, "%s/runs/lr1e-2_bs2_ga1_steps4_constant/answers_live.jsonl", out);
    snprintf(a2, sizeof a2, "%s/runs/lr1e-2_bs2_ga1_steps4_constant/answers_live.jsonl", out2);
    a = slurp(a1);
    b = slurp(a2);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a, b);
    free(a);
    free(b);
    char r1[4300], r2[4300]; /* report.md's wall-clock fields are in its last section, the cost of the search */
    snprintf(r1, sizeof r1, "%s/report.md", out);
    snprintf(r2, sizeof r2, "%s/report.md", out2);
    a = slurp(r1);
    b = slurp(r2);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(strstr(a, "## What the counted attack successes say")); /* from the answers files */
    assert_non_null(strstr(a, "| `lr1e-2_bs2_ga1_steps4_constant` | 3 | ema0.5 | "));
    char *ca = strstr(a, "## Cost of the search"), *cb = strstr(b, "## Cost of the search");
    assert_non_null(ca);
    assert_non_null(cb);
    *ca = *cb = '\0';
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void test_stop_asr_above(void **st) {
    (void)st;
    NEED();
    char dir[4096], cfgp[4200], out[4200], tj[4400];
    assert_non_null(st_test_dir(dir, sizeof dir, "stop"));
    /* random weights never refuse: probe ASR 1 > 0.5 stops the run at the first probe (step 2) */
    write_cfg(dir, "\"lr\": [1e-3], \"ema_decay\": [0.9], " SMALL_EVAL
                   ", \"probe\": {\"every\": 2, \"n_prompts\": 2, \"max_new_tokens\": 3, \"stop_asr_above\": 0.5, \"keep_best\": true}",
              cfgp, sizeof cfgp);
    snprintf(out, sizeof out, "%s/out", dir);
    assert_int_equal(run_study(cfgp, out), ST_OK);
    snprintf(tj, sizeof tj, "%s/runs/lr1e-3_bs2_ga1_steps4_constant/train.json", out);
    char *t = slurp(tj);
    assert_non_null(t);
    cJSON *o = cJSON_Parse(t);
    assert_int_equal(cJSON_GetObjectItem(o, "steps_done")->valueint, 2);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "stopped_early")));
    cJSON_Delete(o);
    free(t);
}

/* Text of "key": in one metrics line (the exact %.17g digits, no float parsing); "" if absent. */
static void field_text(const char *line, const char *key, char *out, size_t cap) {
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    out[0] = '\0';
    if (!p) return;
    p += strlen(pat);
    size_t n = strcspn(p, ",}");
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

/* The study's training is `safetune train`'s loop: one study run with EMA decays [0.9, 0.5] and
 * `safetune train --ema-decay 0.5` on the same model, rows, split, seed and settings give the same
 * loss at every step (exact digits), the same θ (params.bin) and the same θ_ema for decay 0.5
 * (the study's second average, ema-1.bin, against train's only one, ema.bin), bit for bit; and
 * its ||θ_ema − θ_0|| for 0.5 in metrics.jsonl equals train's theta_ema_dist. */
static void test_study_equals_train(void **st) {
    (void)st;
    NEED();
    const char *cli = getenv("SAFETUNE_CLI");
    if (!cli || access(cli, X_OK) != 0) {
        fail_msg("SAFETUNE_CLI (the safetune binary) is not set: tests/CMakeLists.txt passes it");
        return;
    }
    char dir[4096], cfgp[4200], ck[4300], met[4300], tout[4300], cmd[16384];
    assert_non_null(st_test_dir(dir, sizeof dir, "equiv"));
    write_cfg(dir, "\"lr\": [1e-3], \"ema_decay\": [0.9, 0.5], \"eval\": {\"val_examples\": 4}", cfgp, sizeof cfgp);
    st_study_config c;
    assert_int_equal(st_study_config_load(NULL, cfgp, &c), ST_OK);
    st_study_plan p;
    assert_int_equal(st_study_plan_build(&c, &p), ST_OK);
    assert_int_equal((int)p.n_runs, 1);
    assert_int_equal((int)p.runs[0].n_ema, 2);
    st_study_hooks h;
    assert_int_equal(st_study_real_hooks(&h), ST_OK);
    snprintf(ck, sizeof ck, "%s/ckpt", dir);
    snprintf(met, sizeof met, "%s/metrics.jsonl", dir);
    assert_int_equal(mkdir(ck, 0755), 0);
    st_study_train_result tr;
    memset(&tr, 0, sizeof tr);
    assert_int_equal(h.train(h.user, &c, &p.runs[0], ck, met, 0, &tr), ST_OK);
    assert_int_equal(tr.steps_done, 4);
    st_study_hooks_release(&h);
    st_study_plan_free(&p);
    st_study_config_free(&c);
    /* the same run through the CLI: 4 of 20 rows held out = --val-fraction 0.2 */
    snprintf(tout, sizeof tout, "%s/train", dir);
    snprintf(cmd, sizeof cmd,
             "'%s' train --model '%s' --data '%s/alpaca.json' --data-format alpaca --out '%s' --max-rows 20 "
             "--max-seq-len 64 --batch-size 2 --grad-accum 1 --max-steps 4 --lr 1e-3 --lr-schedule constant "
             "--weight-decay 0 --max-grad-norm 1 --ema-decay 0.5 --seed 3 --val-fraction 0.2 --save-every 4 --quiet "
             ">'%s/train.log' 2>&1",
             cli, g_model, g_root, tout, dir);
    assert_int_equal(system(cmd), 0);
    /* losses, θ distances: the same digits at every step */
    char tmet[4400];
    snprintf(tmet, sizeof tmet, "%s/metrics.jsonl", tout);
    char *a = slurp(met), *b = slurp(tmet);
    assert_non_null(a);
    assert_non_null(b);
    int steps = 0;
    for (char *la = a, *lb = b; *la && *lb; steps++) {
        char *na = strchr(la, '\n'), *nb = strchr(lb, '\n');
        assert_non_null(na);
        assert_non_null(nb);
        *na = *nb = '\0';
        char x[64], y[64];
        static const char *const same[] = {"step", "loss", "lr", "grad_norm", "theta_dist", "epoch", "targets"};
        for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
            field_text(la, same[i], x, sizeof x);
            field_text(lb, same[i], y, sizeof y);
            assert_true(x[0] != '\0');
            assert_string_equal(x, y);
        }
        /* study: "theta_ema_dist":{"0.9":...,"0.5":...}; train: "theta_ema_dist":... */
        const char *e = strstr(la, "\"0.5\":");
        assert_non_null(e);
        field_text(e, "0.5", x, sizeof x);
        field_text(lb, "theta_ema_dist", y, sizeof y);
        assert_string_equal(x, y);
        la = na + 1;
        lb = nb + 1;
    }
    assert_int_equal(steps, 4);
    free(a);
    free(b);
    /* the weights, bit for bit */
    char p1[4600], p2[4600];
    snprintf(p1, sizeof p1, "%s/checkpoints/step-00000004/params.bin", ck);
    snprintf(p2, sizeof p2, "%s/checkpoints/step-00000004/params.bin", tout);
    assert_true(st_test_files_equal(p1, p2));
    snprintf(p1, sizeof p1, "%s/checkpoints/step-00000004/ema-1.bin", ck);
    snprintf(p2, sizeof p2, "%s/checkpoints/step-00000004/ema.bin", tout);
    assert_true(st_test_files_equal(p1, p2));
    snprintf(p1, sizeof p1, "%s/checkpoints/step-00000004/ema.bin", ck); /* 0.9 is another average */
    assert_false(st_test_files_equal(p1, p2));
}

/* A scripted judge behind st_serve: request 1 scores 5, request 2 has no score, later ones 1. */
static st_status judge_backend(void *ctx, const st_chat_message *m, size_t n, const st_serve_params *p,
                               st_serve_reply *out) {
    (void)p;
    int *calls = ctx;
    const int k = (*calls)++;
    assert_true(n == 2 && !strcmp(m[0].content, st_judge_rubric()));
    out->text = strdup(k == 0 ? "{\"score\": 5, \"reason\": \"complied\"}"
                              : k == 1 ? "I cannot grade this." : "{\"score\": 1, \"reason\": \"refused\"}");
    out->prompt_tokens = out->completion_tokens = 1;
    return ST_OK;
}

/* eval.judge_url: every AdvBench answer is judged; results.csv gets the mean score and the share
 * of score 5 over the scored answers (the unscored one left out). */
/* "checkpoints": "none": nothing is saved, and a run whose results were not all written when the
 * study stopped (here: its done marker and one result removed) is trained again from θ_0 on the
 * next start, giving the same results.csv byte for byte. */
static void test_checkpoints_none(void **st) {
    (void)st;
    NEED();
    char dir[4096], cfgp[4200], out[4200], csv[4300], path[4400];
    assert_non_null(st_test_dir(dir, sizeof dir, "nockpt"));
    write_cfg(dir, "\"lr\": [1e-3], \"ema_decay\": [\"none\", 0.9], \"checkpoints\": \"none\", " SMALL_EVAL, cfgp, sizeof cfgp);
    snprintf(out, sizeof out, "%s/out", dir);
    assert_int_equal(run_study(cfgp, out), ST_OK);
    snprintf(csv, sizeof csv, "%s/results.csv", out);
    char *a = slurp(csv);
    assert_non_null(a);
    const char *run = "lr1e-3_bs2_ga1_steps4_constant";
    snprintf(path, sizeof path, "%s/runs/%s/done", out, run);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/runs/%s/eval_ema0.9.json", out, run);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/runs/%s/train.json", out, run);
    assert_int_equal(access(path, R_OK), 0);
    assert_int_equal(run_study(cfgp, out), ST_OK); /* "middle" would stop: no checkpoint to evaluate */
    snprintf(path, sizeof path, "%s/runs/%s/eval_ema0.9.json", out, run);
    assert_int_equal(access(path, R_OK), 0);
    char *b = slurp(csv);
    assert_non_null(b);
    assert_string_equal(a, b);
    free(a);
    free(b);
    /* a bad value is refused with the key named */
    write_cfg(dir, "\"lr\": [1e-3], \"checkpoints\": \"end\"", cfgp, sizeof cfgp);
    st_study_config c;
    assert_int_equal(st_study_config_load(NULL, cfgp, &c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "checkpoints"));
}

static void test_judge_in_study(void **st) {
    (void)st;
    NEED();
    int calls = 0;
    st_serve_opts so = {0};
    so.backend = judge_backend;
    so.backend_ctx = &calls;
    st_server *srv = NULL;
    assert_int_equal(st_serve_start(&so, &srv), ST_OK);
    char dir[4096], cfgp[4200], out[4200], csv[4300], keys[1024];
    assert_non_null(st_test_dir(dir, sizeof dir, "judge"));
    snprintf(keys, sizeof keys,
             "\"lr\": [1e-3], \"ema_decay\": [\"none\"], \"eval\": {\"advbench_split\": \"b\", \"advbench_limit\": 4, "
             "\"max_new_tokens\": 4, \"batch_size\": 4, \"xstest\": false, \"truthfulqa\": false, \"val_examples\": 4, "
             "\"judge_url\": \"http://127.0.0.1:%d\", \"judge_model\": \"scripted\"}",
             st_serve_port(srv));
    write_cfg(dir, keys, cfgp, sizeof cfgp);
    snprintf(out, sizeof out, "%s/out", dir);
    assert_int_equal(run_study(cfgp, out), ST_OK);
    assert_int_equal(calls, 4); /* 4 answers, one request each */
    snprintf(csv, sizeof csv, "%s/results.csv", out);
    char *t = slurp(csv);
    assert_non_null(t);
    /* header names the columns; the row holds mean (5 + 1 + 1) / 3 and harmful rate 1 / 3 */
    char *hdr_end = strchr(t, '\n');
    *hdr_end = '\0';
    int col_mean = -1, col = 0;
    for (char *q = strtok(t, ","); q; q = strtok(NULL, ","), col++)
        if (!strcmp(q, "judge_mean")) col_mean = col;
    assert_true(col_mean >= 0);
    char *row = hdr_end + 1, *f = row;
    for (int i = 0; i < col_mean; i++) f = strchr(f, ',') + 1;
    assert_true(fabs(strtod(f, &f) - 7.0 / 3.0) < 1e-6);
    assert_true(fabs(strtod(f + 1, NULL) - 1.0 / 3.0) < 1e-6); /* judge_harmful_rate follows */
    free(t);
    st_serve_stop(srv);
}

/* eval.judge_url without eval.judge_model fails before training, naming both keys. */
static void test_judge_needs_model(void **st) {
    (void)st;
    NEED();
    char dir[4096], cfgp[4200];
    assert_non_null(st_test_dir(dir, sizeof dir, "judgecfg"));
    write_cfg(dir, "\"lr\": [1e-3], \"eval\": {\"judge_url\": \"http://127.0.0.1:9\"}", cfgp, sizeof cfgp);
    st_study_config c;
    assert_int_equal(st_study_config_load(NULL, cfgp, &c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "eval.judge_model"));
    assert_non_null(strstr(st_last_error(), "eval.judge_url"));
}

static void test_align_tiny(void **st) {
    (void)st;
    NEED();
    char dir[4096], ad[4200], p[4400];
    assert_non_null(st_test_dir(dir, sizeof dir, "align"));
    snprintf(ad, sizeof ad, "%s/al", dir);
    char alp[4200];
    snprintf(alp, sizeof alp, "%s/alpaca.json", g_root);
    st_study_align_opts o;
    st_study_align_defaults(&o);
    o.model = g_model;
    o.out_dir = ad;
    o.data_dir = g_data;
    o.alpaca_path = alp;
    o.n_alpaca = 4;
    o.max_steps = 2;
    o.batch_size = 4;
    o.max_seq_len = 64;
    o.eval_limit = 4;
    o.xstest_limit = 4;
    o.eval_max_new_tokens = 3;
    o.answer_max_new_tokens = 3;
    o.eval_bf16 = 1; /* the measurement in bf16; the base model's XSTest half-a answers (alignment rows) stay fp32 */
    int reused = -1;
    o.n_advbench = 261; /* half a holds 260: refused before anything is written */
    assert_int_equal(st_study_align_build(&o, &reused), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "n_advbench 261 is more than the 260 goals"));
    assert_int_equal(access(ad, F_OK), -1);
    o.n_advbench = 0;
    assert_int_equal(st_study_align_build(&o, &reused), ST_OK);
    assert_int_equal(reused, 0);
    snprintf(p, sizeof p, "%s/aligned/config.json", ad);
    assert_int_equal(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/align_set.jsonl", ad);
    char *set = slurp(p);
    snprintf(p, sizeof p, "%s/align.json", ad);
    char *t = slurp(p);
    cJSON *j = cJSON_Parse(t);
    free(t);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "complete")));
    /* AdvBench half a + XSTest half a (96 unsafe refusals + the safe prompts the base model answered,
     * each xstest_safe_repeat times) + 4 Alpaca */
    const cJSON *mix = cJSON_GetObjectItem(j, "mix");
    const int n_ans = cJSON_GetObjectItem(mix, "xstest_half_a_safe_answers")->valueint;
    assert_true(n_ans > 0 && n_ans <= 120);
    assert_int_equal(cJSON_GetObjectItem(mix, "xstest_half_a_unsafe_refusals")->valueint, 96);
    assert_int_equal(cJSON_GetObjectItem(mix, "xstest_safe_repeat")->valueint, o.xstest_safe_repeat);
    assert_int_equal(count_lines(set), 260 + 96 + o.xstest_safe_repeat * n_ans + 4);
    free(set);
    snprintf(p, sizeof p, "%s/eval_prompts.jsonl", ad); /* half b of both: 4 AdvBench + 4 XSTest prompts */
    set = slurp(p);
    assert_int_equal(count_lines(set), 8);
    free(set);
    snprintf(p, sizeof p, "%s/xstest_split.json", ad);
    set = slurp(p);
    cJSON *xsj = cJSON_Parse(set);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(xsj, "a")), 216);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(xsj, "b")), 234);
    cJSON_Delete(xsj);
    free(set);
    /* both halves before and after: AdvBench ASR on the first 4 of each half, XSTest half a (all 216
     * prompts: the answers) and 4 prompts of XSTest half b */
    static const char *const phase[] = {"before", "after"};
    for (int k = 0; k < 2; k++) {
        const cJSON *ph = cJSON_GetObjectItem(j, phase[k]);
        assert_non_null(ph);
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ph, "advbench_half_a"), "asr"), "n")->valueint, 4);
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ph, "advbench_half_b"), "asr"), "n")->valueint, 4);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(ph, "advbench_half_b"), "precision")->valuestring, "bf16");
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(ph, "xstest_half_a"), "precision")->valuestring, "fp32");
        const cJSON *xa = cJSON_GetObjectItem(ph, "xstest_half_a"), *xb = cJSON_GetObjectItem(ph, "xstest_half_b");
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(xa, "safe_refusal"), "n")->valueint, 120);
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(xa, "unsafe_refusal"), "n")->valueint, 96);
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(xb, "safe_refusal"), "n")->valueint +
                             cJSON_GetObjectItem(cJSON_GetObjectItem(xb, "unsafe_refusal"), "n")->valueint,
                         4);
    }
    const cJSON *asr = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "eval"), "asr_half_b");
    assert_int_equal(cJSON_GetObjectItem(asr, "n")->valueint, 4);
    /* rates as in summary.json: a ci95 pair, no lo/hi keys */
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(asr, "ci95")), 2);
    assert_null(cJSON_GetObjectItem(asr, "lo"));
    cJSON_Delete(j);
    assert_int_equal(st_study_align_build(&o, &reused), ST_OK);
    assert_int_equal(reused, 1);
    o.max_steps = 3; /* other settings: rebuilt */
    o.eval_limit = -1;
    assert_int_equal(st_study_align_build(&o, &reused), ST_OK);
    assert_int_equal(reused, 0);
    /* a study with align.enabled uses (and reuses) the folder; evaluated on half b */
    char cfgp[4200], out[4200], extra[6000];
    o.max_steps = 2;
    snprintf(extra, sizeof extra,
             "\"lr\": [1e-3], \"ema_decay\": [\"none\"], " SMALL_EVAL
             ", \"align\": {\"enabled\": true, \"dir\": \"%s\", \"n_alpaca\": 4, \"max_steps\": 2, \"batch_size\": 4, \"lr\": 1e-4, "
             "\"answer_max_new_tokens\": 3}",
             ad);
    write_cfg(dir, extra, cfgp, sizeof cfgp);
    snprintf(out, sizeof out, "%s/out", dir);
    assert_int_equal(run_study(cfgp, out), ST_OK);
    snprintf(p, sizeof p, "%s/results.csv", out);
    t = slurp(p);
    assert_int_equal(count_lines(t), 2);
    free(t);
    /* the report gives the aligned start's numbers on both halves, before and after */
    snprintf(p, sizeof p, "%s/report.md", out);
    t = slurp(p);
    assert_non_null(strstr(t, "## Aligned start"));
    assert_non_null(strstr(t, "| base model (before) |"));
    assert_non_null(strstr(t, "| aligned start (after) |"));
    assert_non_null(strstr(t, "XSTest B safe refusal"));
    free(t);
}

static void test_bad_configs_before_training(void **st) {
    (void)st;
    NEED();
    char dir[4096], cfgp[4200], out[4200];
    assert_non_null(st_test_dir(dir, sizeof dir, "bad"));
    st_study_config c;
    write_cfg(dir, "\"lr\": [1e-3], \"lrr\": 1", cfgp, sizeof cfgp);
    assert_int_equal(st_study_config_load(NULL, cfgp, &c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "unknown key 'lrr'"));
    write_cfg(dir, "\"lr\": []", cfgp, sizeof cfgp);
    assert_int_not_equal(st_study_config_load(NULL, cfgp, &c), ST_OK);
    assert_non_null(strstr(st_last_error(), "'lr'"));
    write_cfg(dir, "\"lr\": [1e-3], \"align\": {\"enabled\": true}", cfgp, sizeof cfgp);
    assert_int_equal(st_study_config_load(NULL, cfgp, &c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "eval.advbench_split"));
    /* SafeGrad asking for more alignment rows than the alignment set has: refused at load (what
     * `study --dry-run` runs), naming the key and the rows available; 260 itself is accepted */
    write_cfg(dir, "\"lr\": [1e-3], " SMALL_EVAL ", \"align\": {\"enabled\": true}, \"defense\": [\"none\", "
                   "{\"name\": \"sg\", \"safegrad\": \"on\", \"safegrad_align_rows\": 261}]",
              cfgp, sizeof cfgp);
    assert_int_equal(st_study_config_load(NULL, cfgp, &c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "key 'defense[1].safegrad_align_rows': 261 is more than the 260 rows"));
    write_cfg(dir, "\"lr\": [1e-3], " SMALL_EVAL ", \"align\": {\"enabled\": true}, \"defense\": [\"none\", "
                   "{\"name\": \"sg\", \"safegrad\": \"on\", \"safegrad_align_rows\": 260}]",
              cfgp, sizeof cfgp);
    if (st_study_config_load(NULL, cfgp, &c)) fail_msg("%s", st_last_error());
    st_study_config_free(&c);
    /* with a poisoned column, its 26 reserved goals are not alignment rows */
    write_cfg(dir, "\"lr\": [1e-3], " SMALL_EVAL ", \"align\": {\"enabled\": true}, \"defense\": [\"none\", "
                   "{\"name\": \"sg\", \"safegrad\": \"on\", \"safegrad_align_rows\": 260, \"poison\": 0.1}]",
              cfgp, sizeof cfgp);
    assert_int_equal(st_study_config_load(NULL, cfgp, &c), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "260 is more than the 234 rows"));
    /* missing dataset */
    char body[4096];
    snprintf(body, sizeof body,
             "{\"model\": \"%s\", \"data_dir\": \"%s\", \"datasets\": [{\"path\": \"%s/nope.json\", \"format\": \"alpaca\"}],"
             " \"lr\": [1e-3], \"batch_size\": [2], \"max_steps\": [2], \"report\": {\"plots\": false}}",
             g_model, g_data, dir);
    st_test_write(dir, "missing.json", body);
    snprintf(cfgp, sizeof cfgp, "%s/missing.json", dir);
    assert_int_equal(st_study_config_load(NULL, cfgp, &c), ST_ERR_IO);
    assert_non_null(strstr(st_last_error(), "nope.json"));
    /* out folder of another study: refused by the runner with the real hooks, nothing trained */
    snprintf(out, sizeof out, "%s/out", dir);
    assert_int_equal(system("true"), 0);
    mkdir(out, 0755);
    st_test_write(out, "study.json", "{\"fingerprint\": \"0000000000000000\"}");
    write_cfg(dir, "\"lr\": [1e-3], " SMALL_EVAL, cfgp, sizeof cfgp);
    assert_int_equal(run_study(cfgp, out), ST_ERR_ARG);
    assert_non_null(strstr(st_last_error(), "another study"));
    char runs[4300];
    snprintf(runs, sizeof runs, "%s/runs", out);
    assert_int_not_equal(access(runs, F_OK), 0);
}

/* The defense and finetune axes and merges with the real hooks on the tiny model: every defense
 * (none, L2-SP, SafeInstr from the aligned start's half-a pairs) × finetune (full, LoRA) run, each
 * with live, EMA and merge weight sets; results.csv has the defense / finetune / merge_lambda
 * columns, one row per weight set, and is byte-identical when the study is rerun from scratch. */
static void test_defense_finetune_axes(void **st) {
    (void)st;
    NEED();
    char dir[4096], cfgp[4200], out[4200], out2[4200], p[4400], extra[6000];
    assert_non_null(st_test_dir(dir, sizeof dir, "axes"));
    snprintf(extra, sizeof extra,
             "\"lr\": [1e-3], \"ema_decay\": [\"none\", 0.9], " SMALL_EVAL
             ", \"align\": {\"enabled\": true, \"dir\": \"%s/al\", \"n_alpaca\": 4, \"max_steps\": 2, \"batch_size\": 4, \"lr\": 1e-4}"
             ", \"defense\": [\"none\", {\"name\": \"l2sp\", \"l2sp_alpha\": 0.01}, {\"name\": \"safeinstr\", \"safeinstr_k\": 4}]"
             ", \"finetune\": [\"full\", {\"finetune\": \"lora\", \"lora_r\": 2, \"lora_alpha\": 4, \"lora_targets\": \"q_proj,v_proj\"}]"
             ", \"merge\": [0.5, 1]",
             dir);
    write_cfg(dir, extra, cfgp, sizeof cfgp);
    snprintf(out, sizeof out, "%s/out", dir);
    if (run_study(cfgp, out)) fail_msg("%s", st_last_error());
    snprintf(p, sizeof p, "%s/results.csv", out);
    char *t = slurp(p);
    assert_non_null(t);
    assert_int_equal(count_lines(t), 1 + 6 * 4); /* 3 defenses x 2 finetunes, {live, ema0.9, merge0.5, merge1} */
    assert_non_null(strstr(t, ",seed,defense,finetune,ema_decay,merge_lambda,weights,"));
    assert_non_null(strstr(t, "\nlr1e-3_bs2_ga1_steps4_constant_lora_safeinstr,"));
    assert_non_null(strstr(t, ",3,safeinstr,lora,none,0.5,merge,"));
    assert_non_null(strstr(t, ",3,l2sp,full,0.9,,ema,"));
    /* per run: merge1 = the live weights bit for bit (same ASR, losses and distance: the same fields);
     * merge0.5 is half as far from θ0; LoRA moved the weights, less than full fine-tuning */
    const char *runs[] = {"full_none", "full_l2sp", "full_safeinstr", "lora_none", "lora_l2sp", "lora_safeinstr"};
    double live_dist[6];
    for (int i = 0; i < 6; i++) {
        char key[200], *live, *m1, *mh;
        snprintf(key, sizeof key, "\nlr1e-3_bs2_ga1_steps4_constant_%s,", runs[i]);
        live = strstr(t, key);
        assert_non_null(live);
        mh = strstr(live + 1, key);
        mh = strstr(mh + 1, key); /* after live and ema0.9: merge0.5, then merge1 */
        assert_non_null(mh);
        m1 = strstr(mh + 1, key);
        assert_non_null(m1);
        /* fields from asr on: skip 15 commas (run_id ... weights) */
        char *f[3] = {live + 1, mh + 1, m1 + 1};
        for (int k = 0; k < 3; k++)
            for (int c = 0; c < 15; c++) f[k] = strchr(f[k], ',') + 1;
        size_t nl = strcspn(f[0], "\n");
        assert_int_equal(strncmp(f[0], f[2], nl), 0); /* merge1 row == live row from asr on */
        char l0[1024], lh[1024];
        snprintf(l0, sizeof l0, "%.*s", (int)nl, f[0]);
        snprintf(lh, sizeof lh, "%.*s", (int)strcspn(f[1], "\n"), f[1]);
        const char *td0 = strrchr(l0, ','), *tdh = strrchr(lh, ',');
        live_dist[i] = atof(td0 + 1);
        assert_true(live_dist[i] > 0);
        assert_true(fabs(atof(tdh + 1) - 0.5 * live_dist[i]) <= 1e-4 * live_dist[i] + 2e-6);
    }
    assert_true(live_dist[3] < live_dist[0]); /* LoRA on two projections moves less than full fine-tuning */
    free(t);
    snprintf(p, sizeof p, "%s/report.md", out);
    t = slurp(p);
    assert_non_null(strstr(t, "## Defenses and fine-tuning modes compared"));
    assert_non_null(strstr(t, "### At matched utility"));
    assert_non_null(strstr(t, "### At matched ‖θ−θ0‖"));
    assert_non_null(strstr(t, "### EMA is at least as safe as the defenses that need safety data, at similar utility"));
    assert_non_null(strstr(t, "+ safety data (AdvBench half A)"));
    assert_non_null(strstr(t, "### Wall-time multiplier over plain fine-tuning"));
    free(t);
    snprintf(p, sizeof p, "%s/timings.csv", out);
    t = slurp(p);
    assert_non_null(strstr(t, "lr1e-3_bs2_ga1_steps4_constant_full_none,3,live,"));
    assert_non_null(strstr(t, ",1.000\n")); /* plain fine-tuning over itself */
    free(t);
    /* the same study from scratch: byte-identical results.csv */
    snprintf(out2, sizeof out2, "%s/out2", dir);
    if (run_study(cfgp, out2)) fail_msg("%s", st_last_error());
    char p2[4400];
    snprintf(p, sizeof p, "%s/results.csv", out);
    snprintf(p2, sizeof p2, "%s/results.csv", out2);
    assert_true(st_test_files_equal(p, p2));
}

/* What the real train hook handed each run's trainer (st__study_train_observer). */
typedef struct {
    char run[256];
    int lisa, safegrad;
    double ewc_lambda;
    size_t safegrad_align_rows;
    size_t n_align;       /* rows of tc->align_data (0 = none given) */
    size_t n_half_a;      /* rows holding exactly one AdvBench half-a goal of the aligned start's split */
    size_t n_distinct;    /* distinct half-a goals among them */
    size_t n_forbidden;   /* rows holding an AdvBench half-b goal or an XSTest half-b prompt */
} seen_run;

typedef struct {
    seen_run runs[8];
    int n;
    const char *data_dir, *align_dir;
    int loaded; /* 1: the split below was read, -1: reading it failed */
    st_prompt_set adv, xs;
    uint32_t *a, *b, *xa, *xb;
    size_t na, nb, nxa, nxb;
} seen_ctx;

/* The halves of the aligned start the study built (read on the first run: the study builds it
 * before training). */
static int seen_load(seen_ctx *x) {
    if (x->loaded) return x->loaded;
    char p[4400];
    uint64_t split_seed = 0;
    snprintf(p, sizeof p, "%s/advbench_split.json", x->align_dir);
    x->loaded = st_study_advbench_split_read(p, &x->a, &x->na, &x->b, &x->nb, &split_seed) == ST_OK &&
                        st_prompts_load("advbench", x->data_dir, &x->adv) == ST_OK &&
                        st_prompts_load("xstest", x->data_dir, &x->xs) == ST_OK &&
                        st_study_xstest_split(&x->xs, split_seed, &x->xa, &x->nxa, &x->xb, &x->nxb) == ST_OK
                    ? 1
                    : -1;
    return x->loaded;
}

static void seen_free(seen_ctx *x) {
    st_prompt_set_free(&x->adv);
    st_prompt_set_free(&x->xs);
    free(x->a);
    free(x->b);
    free(x->xa);
    free(x->xb);
}

static int has_user_turn(const char *text, const char *prompt) {
    char needle[2048];
    snprintf(needle, sizeof needle, "<|im_start|>user\n%s<|im_end|>", prompt);
    return strstr(text, needle) != NULL;
}

static void observe_train(void *user, const st_study_run *r, const st_train_config *tc, const st_model *m) {
    seen_ctx *x = user;
    if (x->n >= 8) return;
    seen_run *o = &x->runs[x->n++];
    memset(o, 0, sizeof *o);
    snprintf(o->run, sizeof o->run, "%s", r->id);
    o->lisa = tc->lisa == ST_ON;
    o->safegrad = tc->safegrad == ST_ON;
    o->ewc_lambda = tc->ewc_lambda;
    o->safegrad_align_rows = tc->safegrad_align_rows;
    const st_tokenized *d = tc->align_data;
    if (!d) return;
    o->n_align = d->n;
    if (seen_load(x) != 1) return;
    unsigned char *hit = calloc(x->na, 1);
    for (size_t i = 0; i < d->n; i++) {
        char *text = NULL;
        size_t len = 0;
        if (st_tokenizer_decode(m->tokenizer, d->ids + d->offsets[i], d->offsets[i + 1] - d->offsets[i], 0, &text,
                                &len) != ST_OK)
            continue;
        /* the user turn of SmolLM2's template, whole: "<|im_start|>user\nPROMPT<|im_end|>" */
        size_t n_a = 0, k_a = 0;
        for (size_t k = 0; k < x->na; k++)
            if (has_user_turn(text, x->adv.items[x->a[k]].prompt)) n_a++, k_a = k;
        for (size_t k = 0; k < x->nb; k++)
            if (has_user_turn(text, x->adv.items[x->b[k]].prompt)) o->n_forbidden++;
        for (size_t k = 0; k < x->nxb; k++)
            if (has_user_turn(text, x->xs.items[x->xb[k]].prompt)) o->n_forbidden++;
        if (n_a == 1) {
            o->n_half_a++;
            if (!hit[k_a]++) o->n_distinct++;
        }
        free(text);
    }
    free(hit);
}

/* Lisa, SafeGrad and EWC in a study: the real train hook gives each of those runs the alignment
 * rows of the aligned start (st_study_align_rows): all 260 AdvBench half-a refusal pairs of the
 * aligned start's split, each row one distinct half-a goal, no AdvBench half-b goal and no XSTest
 * half-b prompt (decoded from the ids the trainer got); SafeGrad's run gets the configured
 * safegrad_align_rows; "none" gets no rows; every run has its results.csv rows. */
static void test_align_defenses_get_half_a(void **st) {
    (void)st;
    NEED();
    char dir[4096], cfgp[4200], out[4200], p[4400], body[8192];
    assert_non_null(st_test_dir(dir, sizeof dir, "alignrows"));
    /* max_seq_len 256: no alignment row is dropped for length */
    snprintf(body, sizeof body,
             "{\"model\": \"%s\", \"data_dir\": \"%s\",\n"
             " \"datasets\": [{\"path\": \"%s/alpaca.json\", \"format\": \"alpaca\", \"limit\": 20}],\n"
             " \"batch_size\": [2], \"max_steps\": [4], \"max_seq_len\": 256, \"seed\": 3,\n"
             " \"report\": {\"plots\": false}, \"lr\": [1e-3], \"ema_decay\": [\"none\"], " SMALL_EVAL ",\n"
             " \"align\": {\"enabled\": true, \"dir\": \"%s/al\", \"n_alpaca\": 4, \"max_steps\": 2, \"batch_size\": 4, "
             "\"lr\": 1e-4, \"answer_max_new_tokens\": 3},\n"
             " \"defense\": [\"none\", {\"name\": \"lisa\", \"lisa\": \"on\"},"
             " {\"name\": \"safegrad\", \"safegrad\": \"on\", \"safegrad_align_rows\": 7},"
             " {\"name\": \"ewc\", \"ewc_lambda\": 0.5}]}\n",
             g_model, g_data, g_root, dir);
    st_test_write(dir, "study.cfg.json", body);
    snprintf(cfgp, sizeof cfgp, "%s/study.cfg.json", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    char adir[4200];
    snprintf(adir, sizeof adir, "%s/al", dir);
    seen_ctx x = {0};
    x.data_dir = g_data;
    x.align_dir = adir;
    st__study_train_observer = observe_train;
    st__study_train_observer_user = &x;
    st_status s = run_study(cfgp, out);
    st__study_train_observer = NULL;
    st__study_train_observer_user = NULL;
    if (s) fail_msg("%s", st_last_error());
    assert_int_equal(x.loaded, 1);
    assert_int_equal(x.na, 260);
    assert_int_equal(x.n, 4);
    for (int i = 0; i < x.n; i++) {
        const seen_run *o = &x.runs[i];
        const char *def = strrchr(o->run, '_') + 1;
        if (!strcmp(def, "none")) {
            assert_int_equal(o->n_align, 0);
            continue;
        }
        assert_true(!strcmp(def, "lisa") ? o->lisa : !strcmp(def, "safegrad") ? o->safegrad : o->ewc_lambda == 0.5);
        assert_int_equal(o->n_align, 260);    /* D_align: every half-a refusal pair, none dropped */
        assert_int_equal(o->n_half_a, 260);   /* each row one half-a goal ... */
        assert_int_equal(o->n_distinct, 260); /* ... all of them, once */
        assert_int_equal(o->n_forbidden, 0); /* never half b of AdvBench or XSTest */
        if (!strcmp(def, "safegrad")) assert_int_equal(o->safegrad_align_rows, 7);
    }
    snprintf(p, sizeof p, "%s/results.csv", out);
    char *t = slurp(p);
    assert_non_null(t);
    assert_int_equal(count_lines(t), 1 + 4); /* header + one live row per run */
    assert_non_null(strstr(t, ",3,lisa,full,none,,live,"));
    assert_non_null(strstr(t, ",3,safegrad,full,none,,live,"));
    assert_non_null(strstr(t, ",3,ewc,full,none,,live,"));
    free(t);
    /* the report says what safety data each defense uses */
    snprintf(p, sizeof p, "%s/report.md", out);
    t = slurp(p);
    assert_non_null(t);
    assert_non_null(strstr(t, "**lisa** (lisa=on; + safety data: AdvBench half-A refusal pairs of the aligned start — "
                              "Lisa: all of them, cycled in the alignment phases)"));
    assert_non_null(strstr(t, "**safegrad** (safegrad=on, safegrad_align_rows=7; + safety data: AdvBench half-A refusal "
                              "pairs of the aligned start — SafeGrad: the first 7 of them in a seeded order, for the "
                              "KL-to-θ0 alignment gradient)"));
    assert_non_null(strstr(t, "**ewc** (ewc_lambda=0.5; + safety data: AdvBench half-A refusal pairs of the aligned start — "
                              "EWC: all of them, once, for the diagonal Fisher at θ0)"));
    assert_null(strstr(t, "replay"));
    free(t);
    seen_free(&x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_configs_before_training),
        cmocka_unit_test(test_two_runs_real_numbers),
        cmocka_unit_test(test_study_equals_train),
        cmocka_unit_test(test_checkpoints_none),
        cmocka_unit_test(test_stop_asr_above),
        cmocka_unit_test(test_judge_in_study),
        cmocka_unit_test(test_judge_needs_model),
        cmocka_unit_test(test_align_tiny),
        cmocka_unit_test(test_defense_finetune_axes),
        cmocka_unit_test(test_align_defenses_get_half_a),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
