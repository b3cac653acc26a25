/* report.c - see report.h. */
#include "cli/report.h"

#include <string.h>

const char *cli_fmt_rate(char *buf, size_t cap, const st_rate *r, int ci, const char *unit) {
    if (r->n == 0)
        snprintf(buf, cap, "n/a (0 %s)", unit);
    else if (ci)
        snprintf(buf, cap, "%.2f%% (%zu/%zu) [95%% CI %.2f, %.2f]", 100 * r->rate, r->k, r->n, 100 * r->lo,
                 100 * r->hi);
    else
        snprintf(buf, cap, "%.2f%% (%zu/%zu)", 100 * r->rate, r->k, r->n);
    return buf;
}

void cli_print_safety_summary(FILE *f, const st_eval_summary *s) {
    char a[160], b[160];
    int refusal_only = s->n > 0 && s->n_labelled == s->n; /* XSTest: every prompt labelled */
    if (refusal_only) {
        fprintf(f, "prompts: %zu (%zu safe, %zu unsafe)  refused: %zu\n", s->n, s->safe_refusal.n,
                s->unsafe_refusal.n, s->refused);
    } else {
        fprintf(f, "prompts: %zu  refused: %zu  attack success: %zu\n", s->n, s->refused, s->asr.all.k);
        if (s->n_labelled) /* answering a safe-labelled prompt is no attack */
            fprintf(f, "ASR (prompts not labelled safe): %s\n",
                    cli_fmt_rate(a, sizeof a, &s->asr.all, 1, "prompts not labelled safe"));
        else
            fprintf(f, "ASR: %s\n", cli_fmt_rate(a, sizeof a, &s->asr.all, 1, "prompts"));
    }
    if (s->n_labelled)
        fprintf(f, "refusal rate: safe prompts %s, unsafe prompts %s\n",
                cli_fmt_rate(a, sizeof a, &s->safe_refusal, refusal_only, "safe prompts"),
                cli_fmt_rate(b, sizeof b, &s->unsafe_refusal, refusal_only, "unsafe prompts"));
    if (s->refusal.n_categories) { /* per category: ASR (not on a refusal-only set) and refusal rate */
        fprintf(f, "per category:\n");
        for (size_t i = 0; i < s->refusal.n_categories; i++) {
            const st_category_rate *c = &s->refusal.categories[i];
            const st_rate none = {0}, *asr = &none;
            for (size_t j = 0; j < s->asr.n_categories; j++)
                if (!strcmp(s->asr.categories[j].name, c->name)) asr = &s->asr.categories[j].rate;
            if (refusal_only)
                fprintf(f, "  %s: refusal rate %s\n", c->name, cli_fmt_rate(a, sizeof a, &c->rate, 1, "prompts"));
            else
                fprintf(f, "  %s: ASR %s, refusal rate %s\n", c->name,
                        cli_fmt_rate(a, sizeof a, asr, 1, "prompts not labelled safe"),
                        cli_fmt_rate(b, sizeof b, &c->rate, 0, "prompts"));
        }
    }
    if (s->judged) {
        if (s->scored)
            fprintf(f, "judge: %zu scored, %zu unscored, mean %.3f, harmfulness rate (score 5) %s\n", s->scored,
                    s->unscored, s->mean_score, cli_fmt_rate(a, sizeof a, &s->harmful, 0, "answers scored"));
        else
            fprintf(f, "judge: 0 scored, %zu unscored, mean n/a, harmfulness rate (score 5) n/a (0 answers scored)\n",
                    s->unscored);
    }
}
