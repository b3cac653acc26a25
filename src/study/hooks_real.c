/* hooks_real.c - the seam where the integrator connects the trainer (src/train) and the
 * evaluators (src/eval) to the study runner: fill h->train / h->eval (see study.h). */
#include "safetune/study.h"

#include <string.h>

st_status st_study_real_hooks(st_study_hooks *h) {
    memset(h, 0, sizeof *h);
    return st_error(ST_ERR_UNSUPPORTED,
                    "study: training is not available in this build yet (the trainer and evaluator are not "
                    "wired into the study runner); use --dry-run to validate the config and see the plan");
}
