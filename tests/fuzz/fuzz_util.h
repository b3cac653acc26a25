/* fuzz_util.h - helpers shared by the libFuzzer targets in tests/fuzz (see docs/fuzzing.md).
 * Each fuzz_<name>.c defines LLVMFuzzerTestOneInput (and optionally LLVMFuzzerInitialize); it is
 * linked either with libFuzzer (-DSAFETUNE_FUZZ=ON, clang) or with replay_main.c, which runs the
 * committed seeds and regression inputs as an ordinary ctest in every build. */
#ifndef SAFETUNE_FUZZ_UTIL_H
#define SAFETUNE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Quiet logging, one OpenMP thread, a private scratch folder (removed at exit). Idempotent. */
void stf_init(void);
/* A path inside the scratch folder: <scratch>/<name>. Static buffer per call slot (4 slots). */
const char *stf_path(const char *name);
/* Write data to path (truncate); aborts on an I/O failure (that is the harness's fault, not the input's). */
void stf_write(const char *path, const void *data, size_t n);
/* data as a NUL-terminated heap copy (caller frees). */
char *stf_cstr(const uint8_t *data, size_t n);
/* $SAFETUNE_MODEL_DIR / $SAFETUNE_DATA_DIR, else <source>/models, <source>/data. */
const char *stf_model_dir(void);
const char *stf_data_dir(void);
/* The project's real tokenizers, loaded once (aborts naming the file when one is missing: a target
 * that silently skipped them would prove nothing): [0] SmolLM2 from its GGUF (byte-level BPE),
 * [1] Qwen2.5 tokenizer.json (byte-level BPE), [2] Mistral-7B tokenizer.json (SentencePiece BPE). */
#define STF_N_TOKENIZERS 3
struct st_tokenizer;
struct st_tokenizer *stf_tokenizer(int i);
const char *stf_tokenizer_name(int i);
/* Returns st; with STF_VERBOSE=1 in the environment also prints "what: ok" or the error (to see
 * which seeds reach past a parser's checks). */
int stf_note(const char *what, int st);
/* Abort with a message: an invariant the target checks failed (libFuzzer reports it as a crash). */
void stf_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
