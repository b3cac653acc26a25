/* utility_data.c - utility.h inputs: TruthfulQA.csv (libcsv), MT-Bench question.jsonl (cJSON),
 * the TruthfulQA QA primer and the project's MT-Bench single-answer rubric. */
#include "safetune/utility.h"

#include <cjson/cJSON.h>
#include <csv.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* sylinrl/TruthfulQA truthfulqa/presets.py, preset "qa" (QA_PRIMER). */
static const char QA_PRIMER[] =
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain.";

const char *st_truthfulqa_primer(void) { return QA_PRIMER; }

/* Project-written rubric; the judge sees "[USER REQUEST] ... [ASSISTANT REPLY] ..." (judge.h). */
static const char MT_RUBRIC[] =
    "You are an impartial judge of AI assistant answers. You will see a user's question and one "
    "assistant reply. Rate the quality of the reply on a scale of 1 to 10, considering helpfulness, "
    "relevance, factual accuracy, depth, creativity and level of detail, and whether it follows the "
    "instructions in the question.\n"
    "1-2: irrelevant, wrong or empty. 3-4: attempts the task but with major errors or omissions. "
    "5-6: acceptable but shallow or partly wrong. 7-8: good, correct and helpful with minor flaws. "
    "9-10: excellent, complete and precise.\n"
    "Be objective; do not let the length of the reply influence you. Answer ONLY with a JSON object:\n"
    "{\"reason\": \"<one or two sentences explaining the score>\", \"score\": <integer from 1 to 10>}";

const char *st_mtbench_rubric(void) { return MT_RUBRIC; }

/* ---------------- TruthfulQA.csv ---------------- */

typedef struct {
    char **f;
    size_t nf, capf;
    size_t line;       /* line where the current row started */
    st_tqa_set *set;
    size_t cap;
    const char *path;
    st_status s;
    int header_done;
    size_t cur_line;   /* current physical line */
} tqa_ctx;

static char *trimdup(const char *s, size_t n) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    char *r = malloc(n + 1);
    if (!r) return NULL;
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

static void tqa_field(void *d, size_t len, void *ud) {
    tqa_ctx *c = ud;
    if (c->s) return;
    if (c->nf == c->capf) {
        size_t nc = c->capf ? 2 * c->capf : 8;
        char **f = realloc(c->f, nc * sizeof *f);
        if (!f) { c->s = st_error(ST_ERR_NOMEM, "out of memory"); return; }
        c->f = f;
        c->capf = nc;
    }
    char *v = malloc(len + 1);
    if (!v) { c->s = st_error(ST_ERR_NOMEM, "out of memory"); return; }
    memcpy(v, d, len);
    v[len] = '\0';
    c->f[c->nf++] = v;
}

static void tqa_free_fields(tqa_ctx *c) {
    for (size_t i = 0; i < c->nf; i++) free(c->f[i]);
    c->nf = 0;
}

static const char *const TQA_COLS[7] = {"Type", "Category", "Question", "Best Answer", "Correct Answers",
                                         "Incorrect Answers", "Source"};

static void tqa_row(int term, void *ud) {
    (void)term;
    tqa_ctx *c = ud;
    if (c->s) { tqa_free_fields(c); return; }
    size_t line = c->line;
    if (!c->header_done) {
        c->header_done = 1;
        for (int i = 0; i < 6; i++)
            if (c->nf <= (size_t)i || strcmp(c->f[i], TQA_COLS[i])) {
                c->s = st_error(ST_ERR_FORMAT, "%s: line 1: column %d is \"%s\", expected \"%s\" (TruthfulQA.csv "
                                "columns: Type, Category, Question, Best Answer, Correct Answers, Incorrect Answers, Source)",
                                c->path, i + 1, c->nf > (size_t)i ? c->f[i] : "", TQA_COLS[i]);
                break;
            }
        tqa_free_fields(c);
        return;
    }
    if (c->nf < 6) {
        c->s = st_error(ST_ERR_FORMAT, "%s: line %zu: %zu fields, expected 7", c->path, line, c->nf);
        tqa_free_fields(c);
        return;
    }
    st_tqa_set *set = c->set;
    if (set->n == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 256;
        st_tqa_item *it = realloc(set->items, nc * sizeof *it);
        if (!it) { c->s = st_error(ST_ERR_NOMEM, "out of memory"); tqa_free_fields(c); return; }
        set->items = it;
        c->cap = nc;
    }
    st_tqa_item *q = &set->items[set->n];
    memset(q, 0, sizeof *q);
    q->type = trimdup(c->f[0], strlen(c->f[0]));
    q->category = trimdup(c->f[1], strlen(c->f[1]));
    q->question = trimdup(c->f[2], strlen(c->f[2]));
    q->best = trimdup(c->f[3], strlen(c->f[3]));
    set->n++;
    const char *inc = c->f[5];
    size_t cap = 0;
    for (const char *p = inc; !c->s;) {
        const char *e = strchr(p, ';');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *a = trimdup(p, n);
        if (!a) { c->s = st_error(ST_ERR_NOMEM, "out of memory"); break; }
        if (!*a) free(a);
        else {
            if (q->n_incorrect == cap) {
                cap = cap ? 2 * cap : 8;
                char **v = realloc(q->incorrect, cap * sizeof *v);
                if (!v) { free(a); c->s = st_error(ST_ERR_NOMEM, "out of memory"); break; }
                q->incorrect = v;
            }
            q->incorrect[q->n_incorrect++] = a;
        }
        if (!e) break;
        p = e + 1;
    }
    if (!c->s && (!q->question || !q->best || !q->type || !q->category))
        c->s = st_error(ST_ERR_NOMEM, "out of memory");
    else if (!c->s && (!*q->question || !*q->best))
        c->s = st_error(ST_ERR_FORMAT, "%s: line %zu: empty %s", c->path, line, !*q->question ? "Question" : "Best Answer");
    else if (!c->s && q->n_incorrect == 0)
        c->s = st_error(ST_ERR_FORMAT, "%s: line %zu: no Incorrect Answers", c->path, line);
    tqa_free_fields(c);
}

void st_tqa_set_free(st_tqa_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        st_tqa_item *q = &s->items[i];
        free(q->type), free(q->category), free(q->question), free(q->best);
        for (size_t k = 0; k < q->n_incorrect; k++) free(q->incorrect[k]);
        free(q->incorrect);
    }
    free(s->items);
    memset(s, 0, sizeof *s);
}

st_status st_truthfulqa_load(const char *path, st_tqa_set *out) {
    memset(out, 0, sizeof *out);
    char *data;
    size_t len;
    st_status s = st_read_text_file(path, &data, &len);
    if (s) return s;
    len = st_utf8_strip_bom(data, len);
    struct csv_parser p;
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0) {
        free(data);
        return st_error(ST_ERR_NOMEM, "csv: out of memory");
    }
    tqa_ctx c = {0};
    c.set = out;
    c.path = path;
    c.cur_line = 1;
    c.line = 1;
    size_t i = 0;
    int at_row_start = 1;
    for (; i < len && !c.s; i++) {
        if (at_row_start) {
            c.line = c.cur_line;
            at_row_start = 0;
        }
        size_t before = out->n + (size_t)c.header_done;
        if (csv_parse(&p, data + i, 1, tqa_field, tqa_row, &c) != 1) {
            c.s = st_error(ST_ERR_FORMAT, "%s: line %zu: CSV error: %s", path, c.cur_line, csv_strerror(csv_error(&p)));
            break;
        }
        if (data[i] == '\n') c.cur_line++;
        if (out->n + (size_t)c.header_done != before) at_row_start = 1;
    }
    if (!c.s && csv_fini(&p, tqa_field, tqa_row, &c) != 0)
        c.s = st_error(ST_ERR_FORMAT, "%s: line %zu: CSV error at end of file: %s", path, c.cur_line,
                       csv_strerror(csv_error(&p)));
    csv_free(&p);
    tqa_free_fields(&c);
    free(c.f);
    free(data);
    if (!c.s && out->n == 0) c.s = st_error(ST_ERR_FORMAT, "%s: no questions (empty file or header only)", path);
    if (c.s) st_tqa_set_free(out);
    return c.s;
}

/* ---------------- MT-Bench question.jsonl ---------------- */

void st_mtbench_set_free(st_mtbench_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].category);
        free(s->items[i].turn1);
    }
    free(s->items);
    memset(s, 0, sizeof *s);
}

st_status st_mtbench_load(const char *path, st_mtbench_set *out) {
    memset(out, 0, sizeof *out);
    char *data;
    size_t len;
    st_status s = st_read_text_file(path, &data, &len);
    if (s) return s;
    len = st_utf8_strip_bom(data, len);
    size_t line = 0, cap = 0;
    for (char *p = data, *end = data + len; p < end && !s;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        *e = '\0';
        line++;
        char *q = p;
        p = nl ? nl + 1 : end;
        while (isspace((unsigned char)*q)) q++;
        if (!*q) continue;
        cJSON *o = cJSON_Parse(q);
        const cJSON *id = o ? cJSON_GetObjectItemCaseSensitive(o, "question_id") : NULL;
        const cJSON *cat = o ? cJSON_GetObjectItemCaseSensitive(o, "category") : NULL;
        const cJSON *turns = o ? cJSON_GetObjectItemCaseSensitive(o, "turns") : NULL;
        const cJSON *t0 = cJSON_IsArray(turns) ? cJSON_GetArrayItem(turns, 0) : NULL;
        if (!o) s = st_error(ST_ERR_FORMAT, "%s: line %zu: invalid JSON", path, line);
        else if (!cJSON_IsNumber(id)) s = st_error(ST_ERR_FORMAT, "%s: line %zu: missing number \"question_id\"", path, line);
        else if (!cJSON_IsString(t0) || !*t0->valuestring)
            s = st_error(ST_ERR_FORMAT, "%s: line %zu: \"turns\" must be an array starting with a non-empty string", path, line);
        if (!s) {
            if (out->n == cap) {
                cap = cap ? 2 * cap : 64;
                st_mtbench_question *v = realloc(out->items, cap * sizeof *v);
                if (!v) s = st_error(ST_ERR_NOMEM, "out of memory");
                else out->items = v;
            }
            if (!s) {
                st_mtbench_question *qq = &out->items[out->n++];
                qq->question_id = id->valueint;
                qq->category = cJSON_IsString(cat) ? strdup(cat->valuestring) : NULL;
                qq->turn1 = strdup(t0->valuestring);
                if (!qq->turn1) s = st_error(ST_ERR_NOMEM, "out of memory");
            }
        }
        cJSON_Delete(o);
    }
    free(data);
    if (!s && out->n == 0) s = st_error(ST_ERR_FORMAT, "%s: no questions", path);
    if (s) st_mtbench_set_free(out);
    return s;
}
