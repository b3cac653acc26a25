/* checkpoint.h - training-state checkpoints for bit-identical resume.
 *
 * A checkpoint is a folder of binary blobs plus a MANIFEST written last:
 *   state.bin        step, optimiser config/step, EMA settings, sampler position, RNG (raw bits)
 *   params.bin       live weights θ [n] f32           optim_m.bin / optim_v.bin  moments [n] f32
 *   ema.bin          θ_ema [n] f32                    theta0.bin  θ_0 [n] f32
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

/* What to save / restore. NULL members are skipped on save; on load every non-NULL member must
 * be present in the checkpoint (ST_ERR_FORMAT otherwise). */
typedef struct {
    int64_t step;            /* trainer step (optimiser updates done) */
    float *params;           /* live weights [n_floats] */
    size_t n_floats;
    st_optimizer *opt;       /* initialised with n_floats; moments, step and config restored */
    st_ema *ema;             /* initialised with n_floats; θ_ema, θ_0, settings restored */
    st_data_sampler *sampler;     /* initialised or zeroed; pool, seed, rank/world, epoch, pos restored */
    st_rng *rng;             /* trainer RNG state */
    const char *config_json; /* saved as config.json; on load see st_checkpoint_load */
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
/* Among subfolders of run_dir whose names start with `prefix` (e.g. "ckpt-"), the valid checkpoint
 * with the highest step; incomplete ones are skipped (with a warning). Path into out[cap].
 * ST_ERR_IO if none is valid. */
st_status st_checkpoint_find_latest(const char *run_dir, const char *prefix, char *out, size_t cap);

#endif
