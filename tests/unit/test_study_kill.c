/* test_study_kill.c - a real study (`safetune study`, the real hooks: training with checkpoints,
 * probes, evaluation, results, plots and report) on a tiny random model is SIGKILLed 20 times at
 * random moments (seeded) and restarted after each kill. Proves: (1) at every kill, each file under
 * the study folder that carries its final name is whole (JSON parses, JSONL lines all terminated
 * and parsing, CSV rows complete, PNG ending with IEND, checkpoints verified by their MANIFEST,
 * report.md ending with its last section); (2) the restarted study ends with results.csv and
 * report.md byte-identical to an uninterrupted study (report.md up to its cost section: wall-clock
 * times vary between runs and are kept apart, as in timings.csv).
 * The kill moments are spread over the whole study: each process is killed at a uniform random
 * moment in [0, T/2) of its life, T the measured duration of the uninterrupted study, and restarted
 * on the same folder; each restart resumes further on, so the kills move through start-up,
 * training (checkpoint writes included), evaluation, results and the report with its plots. When
 * a restart finishes before its kill moment the study is complete: it is compared, and the next
 * kills go to a fresh folder (a new round). The phase each kill hit is read from the last line
 * the killed process logged. ST_KILL_SEED (default 16) picks the moments; ST_KILL_COUNT (default
 * 20) the number of kills.
 * Needs models/SmolLM2-135M-Instruct.Q4_1.gguf (tokenizer) and the data folder (AdvBench, XSTest);
 * skipped when they are absent. Runs the CLI ($SAFETUNE_CLI). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <cmocka.h>

#include "safetune/checkpoint.h"
#include "safetune/export.h"
#include "safetune/model.h"
#include "study_testutil.h"
#include "testutil.h"

static char g_root[4096], g_model[4200], g_data[4096], g_gguf[4200], g_cfg[4300];
static const char *g_cli;
static int g_ready;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int group_setup(void **st) {
    (void)st;
    g_cli = getenv("SAFETUNE_CLI");
    snprintf(g_gguf, sizeof g_gguf, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", st_test_model_dir());
    snprintf(g_data, sizeof g_data, "%s", st_test_data_dir());
    char adv[4200];
    snprintf(adv, sizeof adv, "%s/advbench/harmful_behaviors.csv", g_data);
    if (!g_cli || access(g_cli, X_OK) != 0 || access(g_gguf, R_OK) != 0 || access(adv, R_OK) != 0) return 0;
    if (!st_test_dir(g_root, sizeof g_root, "kill")) return -1;
    if (st_test_tiny_study_inputs(g_gguf, g_root, 11, g_model, sizeof g_model)) return -1;
    /* two runs (lr), live + two EMA decays, checkpoints half-way and at the end, probes, plots when
     * gnuplot can make PNGs */
    const char *gp = getenv("SAFETUNE_GNUPLOT");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' -e 'set terminal pngcairo' >/dev/null 2>&1", gp && *gp ? gp : "gnuplot");
    int plots = system(cmd) == 0;
    char body[8192];
    snprintf(body, sizeof body,
             "{\"model\": \"%s\", \"data_dir\": \"%s\",\n"
             " \"datasets\": [{\"path\": \"%s/alpaca.json\", \"format\": \"alpaca\", \"limit\": 20}],\n"
             " \"lr\": [1e-3, 3e-3], \"batch_size\": [2], \"max_steps\": [16], \"ema_decay\": [\"none\", 0.9, 0.5],\n"
             " \"max_seq_len\": 64, \"seed\": 3,\n"
             " \"probe\": {\"every\": 4, \"n_prompts\": 2, \"max_new_tokens\": 3},\n"
             " \"eval\": {\"advbench_split\": \"b\", \"advbench_limit\": 8, \"max_new_tokens\": 6, \"batch_size\": 4,"
             " \"xstest\": true, \"xstest_limit\": 6, \"truthfulqa\": false, \"val_examples\": 4},\n"
             " \"report\": {\"plots\": %s}}\n",
             g_model, g_data, g_root, plots ? "true" : "false");
    st_test_write(g_root, "study.cfg.json", body);
    snprintf(g_cfg, sizeof g_cfg, "%s/study.cfg.json", g_root);
    g_ready = 1;
    return 0;
}

/* ---- running the CLI ---- */

/* Start `safetune study --config CFG --out OUT`, its output appended to LOG. */
static pid_t start_study(const char *out, const char *log) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(g_cli, g_cli, "study", "--config", g_cfg, "--out", out, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Wait for pid up to `secs` (< 0: no limit). Returns its wait status, or -1 when it was SIGKILLed by
 * us at the deadline. */
static int wait_or_kill(pid_t pid, double secs, int *killed) {
    double end = now_s() + secs;
    int st = 0;
    *killed = 0;
    for (;;) {
        pid_t w = waitpid(pid, &st, secs < 0 ? 0 : WNOHANG);
        if (w == pid) return st;
        if (w < 0 && errno != EINTR) return -2;
        if (secs >= 0 && now_s() >= end) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
            *killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
            return st;
        }
        struct timespec ts = {0, 2000000}; /* 2 ms */
        nanosleep(&ts, NULL);
    }
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *t = calloc((size_t)n + 1, 1);
    if (t && fread(t, 1, (size_t)n, f) != (size_t)n) {
        free(t);
        t = NULL;
    }
    fclose(f);
    if (len) *len = (size_t)n;
    return t;
}

/* ---- the whole-file checks ---- */

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Fields of one CSV line (RFC 4180 quotes). */
static int csv_fields(const char *l, const char *end) {
    int n = 1, q = 0;
    for (const char *p = l; p < end; p++) {
        if (*p == '"') q = !q;
        else if (*p == ',' && !q) n++;
    }
    return n;
}

/* NULL when the file at path (named name) is whole; else what is wrong (static text). */
static const char *check_file(const char *path, const char *name, char *why, size_t cap) {
    size_t n = 0;
    char *t = slurp(path, &n);
    if (!t) return snprintf(why, cap, "cannot read"), why;
    const char *bad = NULL;
    if (!strcmp(name, "done")) {
        if (strcmp(t, "done\n")) bad = "not \"done\\n\"";
    } else if (ends_with(name, ".jsonl")) {
        if (n > 0 && t[n - 1] != '\n') bad = "last line not terminated";
        for (char *l = t; !bad && *l;) {
            char *nl = strchr(l, '\n');
            if (!nl) break;
            *nl = '\0';
            cJSON *o = cJSON_Parse(l);
            if (!o) bad = "a line does not parse";
            cJSON_Delete(o);
            l = nl + 1;
        }
    } else if (ends_with(name, ".json")) {
        cJSON *o = cJSON_ParseWithLength(t, n);
        if (!o) bad = "does not parse";
        cJSON_Delete(o);
    } else if (ends_with(name, ".csv") || ends_with(name, ".dat")) {
        if (n == 0 || t[n - 1] != '\n') bad = "empty or last line not terminated";
        if (!bad && ends_with(name, ".csv")) {
            char *nl = strchr(t, '\n');
            int want = csv_fields(t, nl);
            for (char *l = nl + 1; !bad && *l; l = strchr(l, '\n') + 1)
                if (csv_fields(l, strchr(l, '\n')) != want) bad = "a row with another number of fields than the header";
        }
    } else if (ends_with(name, ".gp")) {
        if (n == 0 || t[n - 1] != '\n' || !strstr(t, "set output")) bad = "incomplete gnuplot script";
    } else if (ends_with(name, ".png")) {
        static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
        if (n < 20 || memcmp(t, sig, 8) || memcmp(t + n - 8, "IEND", 4)) bad = "not a whole PNG (signature .. IEND)";
    } else if (!strcmp(name, "report.md")) {
        if (!strstr(t, "## Cost of the search") || !strstr(t, "| **whole grid** |") || n < 2 || strcmp(t + n - 2, "\n\n"))
            bad = "report.md without its last section";
    } else {
        bad = "a file the check does not know (teach check_file its format)";
    }
    free(t);
    return bad;
}

/* Walk dir: every file with a final name is whole; checkpoints (checkpoints/step-N) verify. Temp
 * names (NAME.tmp.PID, step-N.partial.PID, step-N.old.PID, checkpoints.deleting) are skipped: they are not final names. Returns
 * the number of bad files (each printed). */
static int check_tree(const char *dir, int *n_files) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int bad = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (strstr(e->d_name, ".tmp.") || strstr(e->d_name, ".partial") || strstr(e->d_name, ".old") || strstr(e->d_name, ".deleting"))
            continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (!strncmp(e->d_name, "step-", 5) && ends_with(dir, "/checkpoints")) {
                int64_t step = 0;
                if (st_checkpoint_verify(p, &step) != ST_OK) {
                    printf("# half-written checkpoint under its final name: %s: %s\n", p, st_last_error());
                    bad++;
                }
                (*n_files)++;
                continue;
            }
            bad += check_tree(p, n_files);
            continue;
        }
        char why[256];
        const char *w = check_file(p, e->d_name, why, sizeof why);
        (*n_files)++;
        if (w) {
            printf("# half-written file under its final name: %s: %s\n", p, w);
            bad++;
        }
    }
    closedir(d);
    return bad;
}

/* results.csv byte for byte; report.md up to its cost section (wall-clock times) byte for byte. */
static void assert_same_results(const char *ref, const char *out) {
    char a[4400], b[4400];
    snprintf(a, sizeof a, "%s/results.csv", ref);
    snprintf(b, sizeof b, "%s/results.csv", out);
    size_t na = 0, nb = 0;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
    snprintf(a, sizeof a, "%s/report.md", ref);
    snprintf(b, sizeof b, "%s/report.md", out);
    x = slurp(a, &na);
    y = slurp(b, &nb);
    assert_non_null(x);
    assert_non_null(y);
    char *cx = strstr(x, "## Cost of the search"), *cy = strstr(y, "## Cost of the search");
    assert_non_null(cx);
    assert_non_null(cy);
    *cx = *cy = '\0';
    assert_string_equal(x, y);
    free(x);
    free(y);
}

static uint64_t g_rng;
static double uniform01(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static void test_killed_study(void **st) {
    (void)st;
    if (!g_ready) {
        ST_SKIP_MISSING(g_gguf);
        return;
    }
    const char *se = getenv("ST_KILL_SEED"), *ce = getenv("ST_KILL_COUNT");
    g_rng = se && *se ? strtoull(se, NULL, 10) : 16;
    const int want_kills = ce && *ce ? atoi(ce) : 20;
    char ref[4300], out[4300], log[4300];
    snprintf(ref, sizeof ref, "%s/ref", g_root);
    snprintf(log, sizeof log, "%s/study.log", g_root);
    int killed;
    /* the uninterrupted study, timed */
    double t0 = now_s();
    int ws = wait_or_kill(start_study(ref, log), -1, &killed);
    double T = now_s() - t0;
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) fail_msg("uninterrupted study failed (status %d); see %s", ws, log);
    /* start-up cost: the same study again on its finished folder (load, skip, results, report) */
    t0 = now_s();
    ws = wait_or_kill(start_study(ref, log), -1, &killed);
    double T0 = now_s() - t0;
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    printf("# uninterrupted study %.2f s, restart on a finished folder %.2f s\n", T, T0);

    int kills = 0, rounds = 0, checked = 0, files_seen = 0, bad = 0;
    int phase[5] = {0, 0, 0, 0, 0};
    static const char *const phase_name[5] = {"start-up", "training", "evaluation", "results/report", "other"};
    while (kills < want_kills) {
        /* one round: a fresh folder, killed and restarted until the study finishes */
        snprintf(out, sizeof out, "%s/killed%d", g_root, rounds++);
        assert_true(rounds <= want_kills);
        for (;;) {
            double at = uniform01() * T / 2;
            long from = st_test_file_size(log);
            ws = wait_or_kill(start_study(out, log), at, &killed);
            if (!killed) {
                if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
                    fail_msg("restarted study failed (status %d) after %d kills; see %s", ws, kills, log);
                break; /* finished: the round is complete */
            }
            kills++;
            /* the phase: the last line this process logged */
            size_t n = 0;
            char *t = slurp(log, &n), last[256] = "";
            if (t && from >= 0 && (size_t)from < n) {
                char *p = t + from, *l = p;
                for (char *q = p; *q; q++)
                    if (*q == '\n' && q[1]) l = q + 1;
                snprintf(last, sizeof last, "%.*s", (int)strcspn(l, "\n"), l);
            }
            free(t);
            int k1 = 0, k2 = 0;
            int last_run = sscanf(last, "[%d/%d]", &k1, &k2) == 2 && k1 == k2;
            int ph = !last[0] ? 0
                     : strstr(last, "skipped") ? (last_run ? 3 : 0)
                     : strstr(last, "study done") || strstr(last, "##") || strstr(last, "| ") || strstr(last, "results:") ||
                               strstr(last, "report:") || strstr(last, "plots:") || strstr(last, "cost of")
                         ? 3
                     : strstr(last, "evaluating") || strstr(last, "ASR") ? 2
                     : strstr(last, "training") || strstr(last, " step ") || strstr(last, "resumed") ? 1
                                                                                              : 4;
            phase[ph]++;
            int nf = 0;
            int b = check_tree(out, &nf);
            files_seen += nf;
            checked++;
            bad += b;
            printf("# kill %2d at %.2f s: %-14s (last line: %.90s)%s\n", kills, at, phase_name[ph], last, b ? "  HALF-WRITTEN FILES" : "");
            if (kills == want_kills) { /* the last restart runs to the end */
                ws = wait_or_kill(start_study(out, log), -1, &killed);
                if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
                    fail_msg("the study did not finish after its last kill (status %d); see %s", ws, log);
                break;
            }
        }
        int nf = 0;
        bad += check_tree(out, &nf);
        assert_same_results(ref, out);
    }
    printf("# %d SIGKILLs in %d round(s): %d at start-up, %d in training, %d in evaluation, %d in results/report, %d other; "
           "%d folder checks of %d files/checkpoints: %d half-written; results.csv and report.md identical to the "
           "uninterrupted study in every round\n",
           kills, rounds, phase[0], phase[1], phase[2], phase[3], phase[4], checked, files_seen, bad);
    assert_int_equal(bad, 0);
    assert_int_equal(kills, want_kills);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_killed_study),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
