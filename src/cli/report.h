/* report.h - console lines of `safetune eval` (the machine-readable numbers are in summary.json,
 * where a rate with a zero denominator is null; here it is "n/a (0 <unit>)"). */
#ifndef SAFETUNE_CLI_REPORT_H
#define SAFETUNE_CLI_REPORT_H

#include <stddef.h>
#include <stdio.h>

#include "safetune/evalio.h"
#include "safetune/stats.h"

/* "12.34% (k/n)" (with " [95% CI lo, hi]" when ci), or "n/a (0 UNIT)" when r->n == 0 (UNIT
 * names what was counted, e.g. "prompts scored"). Returns buf. */
const char *cli_fmt_rate(char *buf, size_t cap, const st_rate *r, int ci, const char *unit);
/* The console summary of a safety evaluation. A set whose every prompt is labelled safe/unsafe
 * (XSTest) measures refusals, not attacks: only its refusal rates are printed; otherwise the
 * attack success rate (AdvBench) and, for the labelled part, the refusal rates. Then, when the
 * prompts have categories, one line per category (ASR and refusal rate, or only the refusal rate
 * on a refusal-only set). */
void cli_print_safety_summary(FILE *f, const st_eval_summary *s);

#endif
