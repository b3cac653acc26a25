/* fuzz_study_config.c - study configuration JSON (st_study_config_load: a preset overridden key by
 * key by a file, every key validated), then the grid plan and its printout. Input: byte 0 even:
 * preset "quick" + the file, odd: the file alone; the rest = the JSON file. Runs from a scratch
 * folder shaped like the source folder so the presets' relative paths resolve: models/ is the real
 * model folder, data/ holds the real data subfolders except alpaca/, whose alpaca_5000.json is cut
 * to its first 64 rows (the plan's epoch estimate counts a dataset's rows: parsing the real 2 MB
 * file on every input made this target 10x slower without reaching more code). */
#include "fuzz_util.h"

#include "safetune/study.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[512]; /* the scratch source folder: the working folder while an input runs */
static int g_cwd = -1;   /* the folder libFuzzer runs in (its corpus and dictionary paths are relative) */

/* The scratch source folder (see the file comment). */
static void make_source_dir(void) {
    const char *root = stf_path("src");
    char dd[1024], p[2048], q[2048];
    if (mkdir(root, 0700) != 0) stf_fail("cannot create %s", root);
    snprintf(p, sizeof p, "%s/models", root);
    if (symlink(stf_model_dir(), p) != 0) stf_fail("cannot link %s", p);
    snprintf(dd, sizeof dd, "%s/data", root);
    if (mkdir(dd, 0700) != 0) stf_fail("cannot create %s", dd);
    DIR *d = opendir(stf_data_dir());
    if (!d) stf_fail("cannot read the data folder %s", stf_data_dir());
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "alpaca")) continue;
        snprintf(p, sizeof p, "%s/%s", stf_data_dir(), e->d_name);
        snprintf(q, sizeof q, "%s/%s", dd, e->d_name);
        if (symlink(p, q) != 0) stf_fail("cannot link %s", q);
    }
    closedir(d);
    snprintf(p, sizeof p, "%s/alpaca/alpaca_5000.json", stf_data_dir());
    char *t = NULL;
    size_t len = 0;
    if (st_read_file(p, &t, &len) != ST_OK) stf_fail("%s: %s", p, st_last_error());
    cJSON *all = cJSON_Parse(t), *cut = cJSON_CreateArray();
    free(t);
    if (!cJSON_IsArray(all)) stf_fail("%s: not a JSON array", p);
    for (int i = 0; i < 64 && i < cJSON_GetArraySize(all); i++)
        cJSON_AddItemToArray(cut, cJSON_Duplicate(cJSON_GetArrayItem(all, i), 1));
    char *out = cJSON_Print(cut);
    cJSON_Delete(all);
    cJSON_Delete(cut);
    snprintf(q, sizeof q, "%s/alpaca", dd);
    if (mkdir(q, 0700) != 0) stf_fail("cannot create %s", q);
    snprintf(q, sizeof q, "%s/alpaca/alpaca_5000.json", dd);
    stf_write(q, out, strlen(out));
    free(out);
    snprintf(g_root, sizeof g_root, "%s", root);
}

static FILE *g_null;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    setenv("SAFETUNE_GNUPLOT", "/bin/true", 1); /* report.plots: the check runs it (no gnuplot per input) */
    make_source_dir();
    g_cwd = open(".", O_RDONLY | O_DIRECTORY);
    if (g_cwd < 0) stf_fail("cannot open the working folder");
    g_null = fopen("/dev/null", "w");
    return 0;
}

static void run_one(const uint8_t *data, size_t size) {
    const char *path = stf_path("study.json");
    stf_write(path, data + 1, size - 1);
    st_study_config c;
    if (stf_note("study", st_study_config_load(data[0] & 1 ? NULL : "quick", path, &c)) != ST_OK) return;
    st_study_plan p;
    if (st_study_plan_build(&c, &p) == ST_OK) {
        if (g_null) st_study_print_plan(g_null, &c, &p);
        st_study_plan_free(&p);
    }
    st_study_config_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (chdir(g_root) != 0) stf_fail("cannot enter %s", g_root);
    run_one(data, size);
    if (fchdir(g_cwd) != 0) stf_fail("cannot return to the working folder");
    return 0;
}
