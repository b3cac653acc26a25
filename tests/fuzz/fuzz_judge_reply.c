/* fuzz_judge_reply.c - the judge's reply parser (JSON {"score", "reason"} anywhere in the text, or
 * "#thescore:" / "#thereason:" lines) on the 1-5 and 1-10 scales.
 * Input: byte 0 = scale (even: 5, odd: 10), the rest = the reply text. Checks: the score is 0 or
 * within 1..max. */
#include "fuzz_util.h"

#include "safetune/judge.h"

#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    stf_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int max = data[0] & 1 ? 10 : 5;
    char *text = stf_cstr(data + 1, size - 1);
    char *reason = NULL;
    int score = st_judge_parse_reply_max(text, max, &reason);
    if (score < 0 || score > max) stf_fail("score %d outside 0..%d", score, max);
    free(reason);
    free(text);
    return 0;
}
