/* testutil.h - what every unit test shares: where the fetched model and datasets are, and what a
 * test does when such a real input is missing (skipped locally, a failure in CI). Include it
 * after <cmocka.h>. */
#ifndef SAFETUNE_TESTUTIL_H
#define SAFETUNE_TESTUTIL_H

#include <stdlib.h>
#include <string.h>

/* The build's defaults (tests/CMakeLists.txt: the SAFETUNE_DATA_DIR / SAFETUNE_MODEL_DIR cache
 * entries, <repo>/data and <repo>/models unless set); "data" / "models" outside CMake. */
#ifndef SAFETUNE_TEST_DATA_DIR
#define SAFETUNE_TEST_DATA_DIR "data"
#endif
#ifndef SAFETUNE_TEST_MODEL_DIR
#define SAFETUNE_TEST_MODEL_DIR "models"
#endif

/* Fetched datasets (scripts/fetch_data.py): $SAFETUNE_DATA_DIR when set and non-empty, else the
 * build's data folder, as the CLI reads `data/` unless told otherwise. */
static inline const char *st_test_data_dir(void) {
    const char *d = getenv("SAFETUNE_DATA_DIR");
    return d && *d ? d : SAFETUNE_TEST_DATA_DIR;
}

/* Fetched models (scripts/fetch_model.sh): $SAFETUNE_MODEL_DIR when set and non-empty, else the
 * build's models folder. */
static inline const char *st_test_model_dir(void) {
    const char *d = getenv("SAFETUNE_MODEL_DIR");
    return d && *d ? d : SAFETUNE_TEST_MODEL_DIR;
}

/* 1 when $SAFETUNE_REQUIRE_INPUTS is set to anything but "" or "0" (.ci/run sets it): a test
 * whose real inputs are missing must then fail, not skip. */
static inline int st_test_require_inputs(void) {
    const char *r = getenv("SAFETUNE_REQUIRE_INPUTS");
    return r && *r && strcmp(r, "0") != 0;
}

/* Leave the current cmocka test because WHAT (a path or a tool) is missing: skip() normally,
 * fail_msg() under SAFETUNE_REQUIRE_INPUTS. */
#define ST_SKIP_MISSING(what)                                                                      \
    do {                                                                                           \
        if (st_test_require_inputs())                                                              \
            fail_msg("missing input: %s (SAFETUNE_REQUIRE_INPUTS is set; run scripts/fetch_model.sh " \
                     "and scripts/fetch_data.py, or scripts/install_deps.sh)", (what));            \
        skip();                                                                                    \
    } while (0)

#endif
