/* answers.c - the report's audit of the refusal-keyword rule: what the AdvBench answers it counted
 * as attack successes say, read back from each weight set's runs/<id>/answers_<weights>.jsonl. */
#include "study/study_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define OPEN_WORDS 5   /* an opening: the answer's first words */
#define OPEN_BYTES 64  /* at most this many bytes of them (cut at a UTF-8 boundary) */

typedef struct {
    char text[OPEN_BYTES + 8];
    int count;
} opening;

/* The first OPEN_WORDS words of s, single-spaced, markdown-safe ('|' and '`' replaced), at most
 * OPEN_BYTES bytes (a character cut by that limit is dropped whole). */
static void opening_of(const char *s, char *out) {
    size_t n = 0;
    int words = 0, cut = 0;
    while (*s && isspace((unsigned char)*s)) s++;
    while (*s && words < OPEN_WORDS && !cut) {
        while (*s && !isspace((unsigned char)*s) && !cut) {
            if (n + 1 > OPEN_BYTES) cut = 1;
            else out[n++] = *s == '|' ? '/' : *s == '`' ? '\'' : *s, s++;
        }
        words++;
        while (*s && isspace((unsigned char)*s)) s++;
        if (*s && words < OPEN_WORDS && !cut) out[n++] = ' ';
    }
    if (cut) { /* drop a last multi-byte character that lost its tail */
        size_t k = n;
        while (k > 0 && ((unsigned char)out[k - 1] & 0xC0) == 0x80) k--;
        if (k > 0 && ((unsigned char)out[k - 1] & 0x80)) {
            const unsigned char lead = (unsigned char)out[k - 1];
            const size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (n - (k - 1) < want) n = k - 1;
        }
    }
    while (n > 0 && out[n - 1] == ' ') n--;
    out[n] = '\0';
}

static int cmp_opening(const void *a, const void *b) {
    const opening *x = a, *y = b;
    if (x->count != y->count) return y->count - x->count;
    return strcmp(x->text, y->text);
}

/* Counted successes of one answers file and their openings, most common first. *n_succ = -1 when
 * the file is missing, -2 when it cannot be read or a line is not a whole answer record. */
static opening *read_openings(const char *path, int *n_succ, size_t *n_open) {
    *n_succ = -1;
    *n_open = 0;
    char *text = NULL;
    size_t len = 0;
    if (!stu_exists(path)) return NULL;
    *n_succ = -2;
    if (st_read_file(path, &text, &len) != ST_OK) return NULL;
    opening *o = NULL;
    size_t cap = 0;
    int succ = 0, bad = 0;
    for (char *line = text; *line && !bad;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        cJSON *j = cJSON_Parse(line);
        const char *set = j ? cJSON_GetStringValue(cJSON_GetObjectItem(j, "set")) : NULL;
        const char *ans = j ? cJSON_GetStringValue(cJSON_GetObjectItem(j, "answer")) : NULL;
        const cJSON *ref = j ? cJSON_GetObjectItem(j, "refused") : NULL;
        if (!set || !ans || !cJSON_IsBool(ref)) bad = 1;
        else if (!strcmp(set, "advbench") && cJSON_IsFalse(ref)) {
            char t[OPEN_BYTES + 8];
            opening_of(ans, t);
            size_t k = 0;
            while (k < *n_open && strcmp(o[k].text, t)) k++;
            if (k == *n_open) {
                if (*n_open == cap) {
                    opening *g = realloc(o, (cap = cap ? 2 * cap : 16) * sizeof *o);
                    if (!g) bad = 1;
                    else o = g;
                }
                if (!bad) {
                    memcpy(o[k].text, t, sizeof t);
                    o[k].count = 0;
                    (*n_open)++;
                }
            }
            if (!bad) {
                o[k].count++;
                succ++;
            }
        }
        cJSON_Delete(j);
        line = nl ? nl + 1 : line + strlen(line);
    }
    free(text);
    if (bad) {
        free(o);
        *n_open = 0;
        return NULL;
    }
    if (*n_open) qsort(o, *n_open, sizeof *o, cmp_opening);
    *n_succ = succ;
    return o;
}

void stu_answers_section(stu_buf *b, const st_study_results *r, const char *dir) {
    int header = 0;
    for (size_t i = 0; i < r->n; i++) {
        const st_study_row *w = &r->rows[i];
        char path[4400];
        snprintf(path, sizeof path, "%s/runs/%s/answers_%s.jsonl", dir, w->run->id, w->w.name);
        int succ;
        size_t n_open;
        opening *o = read_openings(path, &succ, &n_open);
        if (succ == -1) continue;
        if (!header) {
            stu_puts(b, "## What the counted attack successes say\n\nThe refusal-keyword rule counts every answer "
                        "that contains none of its refusal strings as an attack success, whatever the answer says. Per "
                        "weight set, the most common openings (first five words) of the AdvBench answers it counted so: "
                        "an opening that refuses in words the list does not hold (e.g. \"I can't do that.\") is a "
                        "refusal the ASR above counts as a success. Every answer with the rule's verdict: "
                        "`runs/<run>/answers_<weights>.jsonl`.\n\n| run | seed | weights | counted successes | most "
                        "common opening | next |\n|---|---|---|---|---|---|\n");
            header = 1;
        }
        if (succ == -2) {
            st_log_warn("study report: %s is damaged (not every line a whole answer record): left out of the audit", path);
            stu_printf(b, "| `%s` | %llu | %s | — | the answers file is damaged: not read | |\n", w->run->id,
                       (unsigned long long)w->run->seed, w->w.name);
            continue;
        }
        int outc = -1; /* the same count from the weight set's eval json, when it has its outcomes */
        if (w->r.asr_outcomes) {
            outc = 0;
            for (const char *q = w->r.asr_outcomes; *q; q++) outc += *q == '1';
        }
        char count[96];
        if (outc >= 0 && outc != succ) {
            st_log_warn("study report: %s counts %d successes, its eval json's asr_outcomes %d", path, succ, outc);
            snprintf(count, sizeof count, "%d/%d (≠ %d in asr_outcomes: the file was changed)", succ, w->r.n_prompts, outc);
        } else
            snprintf(count, sizeof count, "%d/%d", succ, w->r.n_prompts);
        char first[OPEN_BYTES + 32] = "—", second[OPEN_BYTES + 32] = "—";
        for (size_t k = 0; k < n_open && k < 2; k++)
            snprintf(k ? second : first, sizeof first, *o[k].text ? "`%s` (%d)" : "%s(empty answer) (%d)", o[k].text,
                     o[k].count);
        stu_printf(b, "| `%s` | %llu | %s | %s | %s | %s |\n", w->run->id, (unsigned long long)w->run->seed,
                   w->w.name, count, first, second);
        free(o);
    }
    if (header) stu_puts(b, "\n");
}
