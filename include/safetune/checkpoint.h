/* checkpoint.h - training-state checkpoints for bit-identical resume.
 *
 * A checkpoint is a folder of binary blobs plus a MANIFEST written last:
 *   state.bin        step, optimiser config/step, EMA settings (count, decays), sampler position,
 *                    RNG (raw bits)
 *   params.bin       live weights θ [n] f32           optim_m.bin / optim_v.bin  moments [n] f32
 *   ema.bin          θ_ema of the first decay [n] f32; ema-J.bin the decay J >= 1 (same size)
 *   theta0.bin       θ_0 [n] f32                      x-NAME.bin  a caller's extra state
 *   sampler_items.bin  data pool order source [n_items] u32     config.json  run config text
 *   MANIFEST         "safetune-checkpoint 1", "step N", one "name bytes hash" line per blob, "end"
 * Each .bin blob = 32-byte header (magic "STCKBLOB", version 1, payload bytes, 64-bit hash) +
 * raw little-endian payload; config.json is plain JSON text (MANIFEST holds its size and hash). Every file is written to a temp name, fsynced and renamed; the whole
 * folder is first built as "<dir>.partial.<pid>" and renamed into place after its MANIFEST, so an
 * interrupted save never leaves a folder that loads. Loading verifies the MANIFEST, every size
 * and hash, and that no temp file is left, before touching the caller's state. */
#ifndef SAFETUNE_CHECKPOINT_H
#define SAFETUNE_CHECKPOINT_H

#include "safetune/base.h"
#include "safetune/data.h"
#include "safetune/ema.h"
#include "safetune/optim.h"

#define ST_CHECKPOINT_VERSION 1

/* Extra state saved as blob x-NAME.bin (NAME of [A-Za-z0-9_-], at most 40 characters); on load
 * the blob must exist with exactly `bytes` bytes and is read into data. */
typedef struct {
    const char *name;
    void *data;
    size_t bytes;
} st_checkpoint_blob;

/* What to save / restore. NULL members are skipped on save; on load every non-NULL member must
 * be present in the checkpoint (ST_ERR_FORMAT otherwise). Checkpoints written before several
 * EMA decays existed (one ema.bin, no count) load as one decay, or as none when ema->k is 0. */
typedef struct {
    int64_t step;            /* trainer step (optimiser updates done) */
    float *params;           /* live weights [n_floats] */
    size_t n_floats;
    st_optimizer *opt;       /* initialised with n_floats; moments, step and config restored */
    st_ema *ema;             /* initialised with n_floats and the run's k decays; every θ_ema_j,
                                θ_0 and the update count restored (k must match) */
    st_data_sampler *sampler;     /* initialised or zeroed; pool, seed, rank/world, epoch, pos restored */
    st_rng *rng;             /* trainer RNG state */
    const char *config_json; /* saved as config.json; on load see st_checkpoint_load */
    const st_checkpoint_blob *extra; /* [n_extra] */
    int n_extra;
} st_train_state;

/* Save to folder `dir` (created; an existing checkpoint there is replaced only once the new one
 * is complete). Errors name the file that failed. */
st_status st_checkpoint_save(const char *dir, const st_train_state *s);
/* Check that `dir` is a complete checkpoint (MANIFEST present and well-formed, blobs present with
 * matching sizes and hashes, no leftover temp files). *step (may be NULL) gets its step. */
st_status st_checkpoint_verify(const char *dir, int64_t *step);
/* Verify, then restore into s (see st_train_state). *config_json (may be NULL) receives the saved
 * config text (heap, caller frees; NULL if none). Sizes must match (ST_ERR_FORMAT names them). */
st_status st_checkpoint_load(const char *dir, st_train_state *s, char **config_json);
/* Read one weight-sized blob of checkpoint dir after verifying the whole checkpoint: "params"
 * (live θ), "ema" for EMA decay j (j = 0.. in the run's order), "theta0", or "x-NAME" (a
 * st_checkpoint_blob), into dst[bytes] (its size must match: ST_ERR_FORMAT names the file). */
st_status st_checkpoint_read_blob(const char *dir, const char *what, int j, void *dst, size_t bytes);
/* Among subfolders of run_dir whose names start with `prefix` (e.g. "ckpt-"), the valid checkpoint
 * with the highest step; incomplete ones are skipped (with a warning). Path into out[cap].
 * ST_ERR_IO if none is valid. */
st_status st_checkpoint_find_latest(const char *run_dir, const char *prefix, char *out, size_t cap);

#endif
