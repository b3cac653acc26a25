/* checkpoint.c - atomic training-state checkpoints (format in checkpoint.h). */
#include "safetune/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOB_MAGIC "STCKBLOB"
#define HEADER_BYTES 32
#define MAX_BLOBS 64
#define CHUNK (1u << 20) /* multiple of 8: the hash consumes whole words per chunk */

/* ---- 64-bit hash over 8-byte words (FNV-1a style with a rotation), tail bytes and length ---- */

static uint64_t hash_words(uint64_t h, const uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h = (h << 31) | (h >> 33);
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}
static uint64_t hash_init(void) { return 0xcbf29ce484222325ULL; }
static uint64_t hash_final(uint64_t h, uint64_t total) { return (h ^ total) * 0x9E3779B97F4A7C15ULL; }

/* ---- small byte buffer for state.bin ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} wbuf;

static void put(wbuf *b, const void *v, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 256;
        while (nc < b->n + n) nc *= 2;
        uint8_t *q = realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, v, n);
    b->n += n;
}
static void put_u64(wbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_i64(wbuf *b, int64_t v) { put(b, &v, 8); }
static void put_f64(wbuf *b, double v) { put(b, &v, 8); }

typedef struct {
    const uint8_t *p;
    size_t n, off;
    int bad;
} rbuf;

static void get(rbuf *r, void *v, size_t n) {
    if (r->bad || r->off + n > r->n) {
        r->bad = 1;
        memset(v, 0, n);
        return;
    }
    memcpy(v, r->p + r->off, n);
    r->off += n;
}
static uint64_t get_u64(rbuf *r) { uint64_t v; get(r, &v, 8); return v; }
static int64_t get_i64(rbuf *r) { int64_t v; get(r, &v, 8); return v; }
static double get_f64(rbuf *r) { double v; get(r, &v, 8); return v; }

/* ---- files ---- */

typedef struct {
    char name[64];
    uint64_t bytes; /* file size including the header */
    uint64_t hash;
} blob_entry;

typedef struct {
    int64_t step;
    blob_entry blobs[MAX_BLOBS];
    int n;
} manifest;

static st_status write_all(int fd, const void *data, size_t len, const char *path) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return st_error(ST_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return ST_OK;
}

/* A .json blob is stored as plain text (no header; MANIFEST holds its size and hash) so that
 * users and tools can read it. Checkpoints from before kept a header on it too: still read. */
static int is_text_blob(const char *name) {
    const size_t n = strlen(name);
    return n > 5 && !strcmp(name + n - 5, ".json");
}

/* Write header + payload to dir/name via temp file + fsync + rename; record it in m. */
static st_status write_blob(const char *dir, const char *name, const void *data, size_t bytes,
                            manifest *m) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    uint64_t h = hash_final(hash_words(hash_init(), data, bytes), bytes);
    const int raw = is_text_blob(name);
    uint8_t hdr[HEADER_BYTES] = {0};
    uint32_t version = ST_CHECKPOINT_VERSION;
    uint64_t b64 = bytes;
    memcpy(hdr, BLOB_MAGIC, 8);
    memcpy(hdr + 8, &version, 4);
    memcpy(hdr + 16, &b64, 8);
    memcpy(hdr + 24, &h, 8);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return st_error(ST_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    st_status s = raw ? ST_OK : write_all(fd, hdr, sizeof hdr, tmp);
    if (!s && bytes) s = write_all(fd, data, bytes, tmp);
    if (!s && fsync(fd) != 0) s = st_error(ST_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && !s) s = st_error(ST_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!s && rename(tmp, path) != 0)
        s = st_error(ST_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
    if (s) {
        unlink(tmp);
        return s;
    }
    blob_entry *e = &m->blobs[m->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->bytes = bytes + (raw ? 0 : HEADER_BYTES);
    e->hash = h;
    return ST_OK;
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}



/* F_EMA_K: the EMA record is followed by the number of decays and each decay's bits (one
 * ema.bin only, and no count, in checkpoints written before several decays existed) */
enum { F_PARAMS = 1, F_OPT = 2, F_EMA = 4, F_SAMPLER = 8, F_RNG = 16, F_CONFIG = 32, F_EMA_K = 64 };

static void ema_blob_name(int j, char *buf, size_t n) {
    if (j == 0) snprintf(buf, n, "ema.bin");
    else snprintf(buf, n, "ema-%d.bin", j);
}

static st_status extra_blob_name(const st_checkpoint_blob *x, char *buf, size_t n) {
    size_t l = x->name ? strlen(x->name) : 0;
    int ok = l > 0 && l <= 40;
    for (size_t i = 0; ok && i < l; i++) {
        const char c = x->name[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    }
    if (!ok) return st_error(ST_ERR_ARG, "checkpoint: extra state name \"%s\" must be 1-40 of [A-Za-z0-9_-]",
                             x->name ? x->name : "");
    snprintf(buf, n, "x-%s.bin", x->name);
    return ST_OK;
}

static st_status write_all_blobs(const char *dir, const st_train_state *s, manifest *m) {
    wbuf b = {0};
    uint64_t flags = (s->params ? F_PARAMS : 0) | (s->opt ? F_OPT : 0) | (s->ema ? F_EMA : 0) |
                     (s->sampler ? F_SAMPLER : 0) | (s->rng ? F_RNG : 0) |
                     (s->config_json ? F_CONFIG : 0) | (s->ema ? F_EMA_K : 0);
    put_i64(&b, s->step);
    put_u64(&b, s->n_floats);
    put_u64(&b, flags);
    if (s->opt) {
        const st_optim_config *c = &s->opt->cfg;
        put_u64(&b, (uint64_t)c->kind);
        put_f64(&b, c->lr); put_f64(&b, c->beta1); put_f64(&b, c->beta2); put_f64(&b, c->eps);
        put_f64(&b, c->weight_decay); put_f64(&b, c->momentum); put_f64(&b, c->dampening);
        put_i64(&b, c->nesterov); put_i64(&b, c->decay_no_decay_params);
        put_i64(&b, s->opt->step);
        put_u64(&b, s->opt->n);
        put_u64(&b, s->opt->m != NULL);
        put_u64(&b, s->opt->v != NULL);
    }
    if (s->ema) {
        uint32_t bits;
        const float d0 = s->ema->k > 0 ? s->ema->decay[0] : 1.0f;
        memcpy(&bits, &d0, 4);
        put_u64(&b, s->ema->n);
        put_u64(&b, bits);
        put_i64(&b, s->ema->start_step); put_i64(&b, s->ema->every); put_i64(&b, s->ema->n_updates);
        put_u64(&b, (uint64_t)s->ema->k);
        for (int j = 0; j < s->ema->k; j++) {
            memcpy(&bits, &s->ema->decay[j], 4);
            put_u64(&b, bits);
        }
    }
    if (s->sampler) {
        const st_data_sampler *sa = s->sampler;
        put_u64(&b, sa->n_items); put_u64(&b, sa->seed); put_i64(&b, sa->shuffle);
        put_i64(&b, sa->rank); put_i64(&b, sa->world); put_i64(&b, sa->epoch); put_u64(&b, sa->pos);
    }
    if (s->rng)
        for (int i = 0; i < 4; i++) put_u64(&b, s->rng->s[i]);
    if (b.oom) {
        free(b.p);
        return st_error(ST_ERR_NOMEM, "checkpoint: out of memory serialising state");
    }
    st_status st = write_blob(dir, "state.bin", b.p, b.n, m);
    free(b.p);
    size_t nf = s->n_floats * sizeof(float);
    if (!st && s->params) st = write_blob(dir, "params.bin", s->params, nf, m);
    if (!st && s->opt && s->opt->m)
        st = write_blob(dir, "optim_m.bin", s->opt->m, s->opt->n * sizeof(float), m);
    if (!st && s->opt && s->opt->v)
        st = write_blob(dir, "optim_v.bin", s->opt->v, s->opt->n * sizeof(float), m);
    for (int j = 0; !st && s->ema && j < s->ema->k; j++) {
        char name[32];
        ema_blob_name(j, name, sizeof name);
        st = write_blob(dir, name, s->ema->ema[j], s->ema->n * sizeof(float), m);
    }
    for (int j = 0; !st && j < s->n_extra; j++) {
        char name[64];
        if (!(st = extra_blob_name(&s->extra[j], name, sizeof name)))
            st = write_blob(dir, name, s->extra[j].data, s->extra[j].bytes, m);
    }
    if (!st && s->ema)
        st = write_blob(dir, "theta0.bin", s->ema->theta0, s->ema->n * sizeof(float), m);
    if (!st && s->sampler)
        st = write_blob(dir, "sampler_items.bin", s->sampler->items,
                        s->sampler->n_items * sizeof(uint32_t), m);
    if (!st && s->config_json)
        st = write_blob(dir, "config.json", s->config_json, strlen(s->config_json), m);
    return st;
}

st_status st_checkpoint_save(const char *dir, const st_train_state *s) {
    if (s->params && s->opt && s->opt->n != s->n_floats)
        return st_error(ST_ERR_ARG, "checkpoint %s: optimizer has %zu floats, params %zu", dir,
                        s->opt->n, s->n_floats);
    if (8 + (s->ema ? s->ema->k : 0) + s->n_extra > MAX_BLOBS)
        return st_error(ST_ERR_ARG, "checkpoint %s: more than %d files", dir, MAX_BLOBS);
    if (s->params && s->ema && s->ema->n != s->n_floats)
        return st_error(ST_ERR_ARG, "checkpoint %s: EMA has %zu floats, params %zu", dir,
                        s->ema->n, s->n_floats);
    char partial[4200], old[4200], parent[4096];
    snprintf(partial, sizeof partial, "%s.partial.%ld", dir, (long)getpid());
    snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) *slash = '\0';
    else snprintf(parent, sizeof parent, "%s", slash ? "/" : ".");
    st_status st = st_mkdir_p(parent);
    if (st) return st;
    st_remove_flat_dir(partial);
    if (mkdir(partial, 0755) != 0)
        return st_error(ST_ERR_IO, "%s: cannot create folder: %s", partial, strerror(errno));
    manifest m = {.step = s->step};
    st = write_all_blobs(partial, s, &m);
    if (!st) {
        wbuf t = {0};
        char line[256];
        int k = snprintf(line, sizeof line, "safetune-checkpoint %d\nstep %" PRId64 "\n",
                         ST_CHECKPOINT_VERSION, m.step);
        put(&t, line, (size_t)k);
        for (int i = 0; i < m.n; i++) {
            k = snprintf(line, sizeof line, "blob %s %" PRIu64 " %016" PRIx64 "\n", m.blobs[i].name,
                         m.blobs[i].bytes, m.blobs[i].hash);
            put(&t, line, (size_t)k);
        }
        put(&t, "end\n", 4);
        char mpath[4300];
        snprintf(mpath, sizeof mpath, "%s/MANIFEST", partial);
        st = t.oom ? st_error(ST_ERR_NOMEM, "checkpoint: out of memory")
                   : st_write_file_atomic(mpath, t.p, t.n);
        free(t.p);
    }
    if (!st) {
        fsync_dir(partial);
        struct stat sb;
        int had_old = stat(dir, &sb) == 0;
        if (had_old && rename(dir, old) != 0)
            st = st_error(ST_ERR_IO, "%s: cannot move the previous checkpoint aside: %s", dir,
                          strerror(errno));
        else if (rename(partial, dir) != 0) {
            st = st_error(ST_ERR_IO, "%s: cannot rename %s into place: %s", dir, partial,
                          strerror(errno));
            if (had_old) rename(old, dir);
        } else {
            if (had_old) st_remove_flat_dir(old);
            fsync_dir(parent);
        }
    }
    if (st) {
        st_remove_flat_dir(partial);
        st_error_wrap(st, "saving checkpoint %s", dir);
    }
    return st;
}

/* ---- reading ---- */

static st_status parse_manifest(const char *dir, manifest *m) {
    char path[4300], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/MANIFEST", dir);
    if (access(path, F_OK) != 0) {
        struct stat sb;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return st_error(ST_ERR_IO, "%s: not a checkpoint folder (does not exist)", dir);
        DIR *dd = opendir(dir);
        int entries = 0;
        for (struct dirent *de; dd && (de = readdir(dd)) != NULL;)
            entries += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
        if (dd) closedir(dd);
        if (!entries)
            return st_error(ST_ERR_FORMAT, "%s: an empty folder, not a checkpoint (pass a step-N folder "
                            "under OUT/checkpoints)", dir);
        return st_error(ST_ERR_FORMAT, "%s: no MANIFEST: incomplete checkpoint (the save was "
                        "interrupted); use an earlier checkpoint", dir);
    }
    st_status st = st_read_file(path, &text, &len);
    if (st) return st;
    memset(m, 0, sizeof *m);
    int version = 0, line_no = 0, ended = 0, have_step = 0;
    char *save = NULL;
    for (char *ln = strtok_r(text, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        line_no++;
        char name[64];
        uint64_t bytes, hash;
        long long step;
        if (line_no == 1) {
            if (sscanf(ln, "safetune-checkpoint %d", &version) != 1) {
                st = st_error(ST_ERR_FORMAT, "%s: line 1: not a safetune checkpoint manifest", path);
                break;
            }
            if (version != ST_CHECKPOINT_VERSION) {
                st = st_error(ST_ERR_UNSUPPORTED, "%s: checkpoint version %d, this build reads %d",
                              path, version, ST_CHECKPOINT_VERSION);
                break;
            }
        } else if (ended) {
            st = st_error(ST_ERR_FORMAT, "%s: line %d: text after \"end\"", path, line_no);
            break;
        } else if (!strcmp(ln, "end")) {
            ended = 1;
        } else if (sscanf(ln, "step %lld", &step) == 1) {
            m->step = step;
            have_step = 1;
        } else if (sscanf(ln, "blob %63s %" SCNu64 " %" SCNx64, name, &bytes, &hash) == 3 &&
                   m->n < MAX_BLOBS && !strchr(name, '/')) {
            blob_entry *e = &m->blobs[m->n++];
            snprintf(e->name, sizeof e->name, "%s", name);
            e->bytes = bytes;
            e->hash = hash;
        } else {
            st = st_error(ST_ERR_FORMAT, "%s: line %d: unrecognised line", path, line_no);
            break;
        }
    }
    free(text);
    if (!st && (!ended || !have_step))
        st = st_error(ST_ERR_FORMAT, "%s: truncated manifest (no %s line)", path,
                      have_step ? "\"end\"" : "\"step\"");
    return st;
}

static const blob_entry *find_blob(const manifest *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->blobs[i].name, name)) return &m->blobs[i];
    return NULL;
}

/* Read blob e of dir, checking header, size and hash. dst (payload bytes) may be NULL to only
 * verify; *payload (may be NULL) receives the payload size. */
static st_status read_blob(const char *dir, const blob_entry *e, void *dst, uint64_t *payload) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, e->name);
    FILE *f = fopen(path, "rb");
    if (!f) return st_error(ST_ERR_FORMAT, "%s: listed in MANIFEST but cannot be opened: %s", path,
                            strerror(errno));
    uint8_t hdr[HEADER_BYTES];
    st_status st = ST_OK;
    uint64_t bytes = 0, hash = 0;
    uint32_t version = 0;
    const size_t got_hdr = fread(hdr, 1, HEADER_BYTES, f);
    const int headed = got_hdr == HEADER_BYTES && memcmp(hdr, BLOB_MAGIC, 8) == 0;
    if (!headed && is_text_blob(e->name)) { /* plain text: MANIFEST has its size and hash */
        rewind(f);
        version = ST_CHECKPOINT_VERSION;
        bytes = e->bytes;
        hash = e->hash;
    } else if (!headed) {
        st = st_error(ST_ERR_FORMAT, "%s: offset 0: bad blob header (truncated or not a checkpoint "
                      "blob)", path);
        goto done;
    } else {
        memcpy(&version, hdr + 8, 4);
        memcpy(&bytes, hdr + 16, 8);
        memcpy(&hash, hdr + 24, 8);
    }
    const uint64_t hdr_bytes = headed ? HEADER_BYTES : 0;
    if (payload) *payload = bytes;
    if (version != ST_CHECKPOINT_VERSION || bytes + hdr_bytes != e->bytes || hash != e->hash) {
        st = st_error(ST_ERR_FORMAT, "%s: header disagrees with MANIFEST (version %u, %" PRIu64
                      " payload bytes)", path, version, bytes);
        goto done;
    }
    uint8_t *buf = dst ? NULL : st_malloc(CHUNK);
    if (!dst && !buf) {
        st = ST_ERR_NOMEM;
        goto done;
    }
    uint64_t h = hash_init(), off = 0;
    while (off < bytes) {
        size_t want = bytes - off > CHUNK ? CHUNK : (size_t)(bytes - off);
        uint8_t *p = dst ? (uint8_t *)dst + off : buf;
        size_t got = fread(p, 1, want, f);
        if (got != want) {
            st = st_error(ST_ERR_FORMAT, "%s: truncated at byte %" PRIu64 " of %" PRIu64, path,
                          hdr_bytes + off + got, e->bytes);
            break;
        }
        h = hash_words(h, p, got);
        off += got;
    }
    free(buf);
    if (!st && fgetc(f) != EOF)
        st = st_error(ST_ERR_FORMAT, "%s: longer than the %" PRIu64 " bytes in MANIFEST", path, e->bytes);
    if (!st && hash_final(h, bytes) != hash)
        st = st_error(ST_ERR_FORMAT, "%s: checksum mismatch (corrupted file)", path);
done:
    fclose(f);
    return st;
}

static st_status verify(const char *dir, manifest *m) {
    st_status st = parse_manifest(dir, m);
    if (st) return st;
    DIR *d = opendir(dir);
    if (!d) return st_error(ST_ERR_IO, "%s: cannot list folder: %s", dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".tmp.")) {
            st = st_error(ST_ERR_FORMAT, "%s: contains unfinished temp file %s (interrupted "
                          "write); use an earlier checkpoint", dir, de->d_name);
            break;
        }
    closedir(d);
    if (st) return st;
    if (!find_blob(m, "state.bin"))
        return st_error(ST_ERR_FORMAT, "%s/MANIFEST: no state.bin entry", dir);
    for (int i = 0; i < m->n && !st; i++) st = read_blob(dir, &m->blobs[i], NULL, NULL);
    return st;
}

st_status st_checkpoint_verify(const char *dir, int64_t *step) {
    manifest m;
    st_status st = verify(dir, &m);
    if (!st && step) *step = m.step;
    return st;
}

static st_status need_blob(const char *dir, const manifest *m, const char *name, uint64_t bytes,
                           const blob_entry **out) {
    const blob_entry *e = find_blob(m, name);
    if (!e) return st_error(ST_ERR_FORMAT, "%s: checkpoint has no %s", dir, name);
    if (e->bytes != bytes + HEADER_BYTES)
        return st_error(ST_ERR_FORMAT, "%s/%s: holds %" PRIu64 " bytes, this run needs %" PRIu64
                        " (different model or settings?)", dir, name, e->bytes - HEADER_BYTES, bytes);
    *out = e;
    return ST_OK;
}

st_status st_checkpoint_load(const char *dir, st_train_state *s, char **config_json) {
    if (config_json) *config_json = NULL;
    manifest m;
    st_status st = verify(dir, &m);
    if (st) return st;
    const blob_entry *se = find_blob(&m, "state.bin");
    uint8_t *sb = st_malloc(se->bytes - HEADER_BYTES + 1);
    if (!sb) return ST_ERR_NOMEM;
    if ((st = read_blob(dir, se, sb, NULL))) {
        free(sb);
        return st;
    }
    rbuf r = {sb, se->bytes - HEADER_BYTES, 0, 0};
    int64_t step = get_i64(&r);
    uint64_t n_floats = get_u64(&r), flags = get_u64(&r);
    st_optim_config oc = {0};
    int64_t opt_step = 0;
    uint64_t opt_n = 0, has_m = 0, has_v = 0;
    if (flags & F_OPT) {
        oc.kind = (st_optim_kind)get_u64(&r);
        oc.lr = get_f64(&r); oc.beta1 = get_f64(&r); oc.beta2 = get_f64(&r); oc.eps = get_f64(&r);
        oc.weight_decay = get_f64(&r); oc.momentum = get_f64(&r); oc.dampening = get_f64(&r);
        oc.nesterov = (int)get_i64(&r); oc.decay_no_decay_params = (int)get_i64(&r);
        opt_step = get_i64(&r);
        opt_n = get_u64(&r); has_m = get_u64(&r); has_v = get_u64(&r);
    }
    uint64_t ema_n = 0, ema_bits = 0, ema_k = 0, ema_kbits[ST_EMA_MAX] = {0};
    int64_t ema_start = 0, ema_every = 0, ema_updates = 0;
    if (flags & F_EMA) {
        ema_n = get_u64(&r); ema_bits = get_u64(&r);
        ema_start = get_i64(&r); ema_every = get_i64(&r); ema_updates = get_i64(&r);
        ema_k = 1;
        ema_kbits[0] = ema_bits;
        if (flags & F_EMA_K) {
            ema_k = get_u64(&r);
            if (ema_k > ST_EMA_MAX) r.bad = 1;
            for (uint64_t j = 0; j < ema_k && !r.bad; j++) ema_kbits[j] = get_u64(&r);
        }
    }
    uint64_t sa_n = 0, sa_seed = 0, sa_pos = 0;
    int64_t sa_shuffle = 0, sa_rank = 0, sa_world = 1, sa_epoch = 0;
    if (flags & F_SAMPLER) {
        sa_n = get_u64(&r); sa_seed = get_u64(&r); sa_shuffle = get_i64(&r);
        sa_rank = get_i64(&r); sa_world = get_i64(&r); sa_epoch = get_i64(&r); sa_pos = get_u64(&r);
    }
    st_rng rng = {{0}};
    if (flags & F_RNG)
        for (int i = 0; i < 4; i++) rng.s[i] = get_u64(&r);
    int bad = r.bad || r.off != r.n;
    free(sb);
    if (bad) return st_error(ST_ERR_FORMAT, "%s/state.bin: malformed state record", dir);

    /* Check everything requested is present and sized right before writing anything. */
    const blob_entry *bp = NULL, *bm = NULL, *bv = NULL, *be[ST_EMA_MAX] = {0}, *bt = NULL, *bi = NULL;
    const blob_entry *bx[MAX_BLOBS] = {0};
    if (s->params) {
        if (!(flags & F_PARAMS)) return st_error(ST_ERR_FORMAT, "%s: checkpoint has no params", dir);
        if (n_floats != s->n_floats)
            return st_error(ST_ERR_FORMAT, "%s: checkpoint has %" PRIu64 " parameters, model has %zu",
                            dir, n_floats, s->n_floats);
        if ((st = need_blob(dir, &m, "params.bin", n_floats * sizeof(float), &bp))) return st;
    }
    if (s->opt) {
        if (!(flags & F_OPT)) return st_error(ST_ERR_FORMAT, "%s: checkpoint has no optimizer state", dir);
        if (oc.kind != s->opt->cfg.kind)
            return st_error(ST_ERR_FORMAT, "%s: checkpoint optimizer is %s, this run uses %s", dir,
                            st_optim_kind_name(oc.kind), st_optim_kind_name(s->opt->cfg.kind));
        if (opt_n != s->opt->n || has_m != (s->opt->m != NULL) || has_v != (s->opt->v != NULL))
            return st_error(ST_ERR_FORMAT, "%s: optimizer state shape differs (%" PRIu64 " floats, "
                            "momentum %s) from this run's", dir, opt_n, has_m ? "on" : "off");
        if (has_m && (st = need_blob(dir, &m, "optim_m.bin", opt_n * sizeof(float), &bm))) return st;
        if (has_v && (st = need_blob(dir, &m, "optim_v.bin", opt_n * sizeof(float), &bv))) return st;
    }
    if (s->ema) {
        if (!(flags & F_EMA)) return st_error(ST_ERR_FORMAT, "%s: checkpoint has no EMA state", dir);
        if (ema_n != s->ema->n)
            return st_error(ST_ERR_FORMAT, "%s: checkpoint EMA has %" PRIu64 " floats, this run %zu",
                            dir, ema_n, s->ema->n);
        /* an old checkpoint of a run without EMA kept θ_0 in ema.bin (decay 1): nothing to read */
        const int old_off = !(flags & F_EMA_K) && s->ema->k == 0;
        if (!old_off && ema_k != (uint64_t)s->ema->k)
            return st_error(ST_ERR_FORMAT, "%s: checkpoint has %" PRIu64 " EMA decay%s, this run %d", dir, ema_k,
                            ema_k == 1 ? "" : "s", s->ema->k);
        for (int j = 0; j < s->ema->k; j++) {
            char name[32];
            ema_blob_name(j, name, sizeof name);
            if ((st = need_blob(dir, &m, name, ema_n * sizeof(float), &be[j]))) return st;
        }
        if ((st = need_blob(dir, &m, "theta0.bin", ema_n * sizeof(float), &bt))) return st;
    }
    if (s->n_extra > MAX_BLOBS) return st_error(ST_ERR_ARG, "%s: more than %d extra blobs asked for", dir, MAX_BLOBS);
    for (int j = 0; j < s->n_extra; j++) {
        char name[64];
        if ((st = extra_blob_name(&s->extra[j], name, sizeof name))) return st;
        const blob_entry *e = find_blob(&m, name);
        if (!e) return st_error(ST_ERR_FORMAT, "%s: checkpoint has no %s", dir, name);
        if (e->bytes != s->extra[j].bytes + HEADER_BYTES)
            return st_error(ST_ERR_FORMAT, "%s/%s: holds %" PRIu64 " bytes, this run needs %zu", dir, name,
                            e->bytes - HEADER_BYTES, s->extra[j].bytes);
        bx[j] = e;
    }
    if (s->sampler) {
        if (!(flags & F_SAMPLER)) return st_error(ST_ERR_FORMAT, "%s: checkpoint has no data order", dir);
        if ((st = need_blob(dir, &m, "sampler_items.bin", sa_n * sizeof(uint32_t), &bi))) return st;
    }
    if (s->rng && !(flags & F_RNG)) return st_error(ST_ERR_FORMAT, "%s: checkpoint has no RNG state", dir);

    /* Restore. */
    if (bp && (st = read_blob(dir, bp, s->params, NULL))) return st;
    if (s->opt) {
        const st_optim_config *c = &s->opt->cfg;
        if (oc.lr != c->lr || oc.beta1 != c->beta1 || oc.beta2 != c->beta2 || oc.eps != c->eps ||
            oc.weight_decay != c->weight_decay || oc.momentum != c->momentum ||
            oc.dampening != c->dampening || oc.nesterov != c->nesterov ||
            oc.decay_no_decay_params != c->decay_no_decay_params)
            st_log_warn("%s: optimizer hyper-parameters differ from the checkpoint's; using this "
                        "run's (resume is then not bit-identical)", dir);
        if (bm && (st = read_blob(dir, bm, s->opt->m, NULL))) return st;
        if (bv && (st = read_blob(dir, bv, s->opt->v, NULL))) return st;
        s->opt->step = opt_step;
    }
    if (s->ema) {
        int differ = ema_start != s->ema->start_step || ema_every != s->ema->every;
        for (int j = 0; j < s->ema->k; j++) {
            uint32_t cur;
            memcpy(&cur, &s->ema->decay[j], 4);
            differ |= cur != (uint32_t)ema_kbits[j];
        }
        if (differ) st_log_warn("%s: EMA settings differ from the checkpoint's; using this run's", dir);
        for (int j = 0; j < s->ema->k; j++)
            if ((st = read_blob(dir, be[j], s->ema->ema[j], NULL))) return st;
        if ((st = read_blob(dir, bt, s->ema->theta0, NULL))) return st;
        s->ema->n_updates = ema_updates;
    }
    for (int j = 0; j < s->n_extra; j++)
        if ((st = read_blob(dir, bx[j], s->extra[j].data, NULL))) return st;
    if (s->sampler) {
        uint32_t *items = st_malloc(sa_n ? sa_n * sizeof(uint32_t) : 1);
        if (!items) return ST_ERR_NOMEM;
        if ((st = read_blob(dir, bi, items, NULL))) {
            free(items);
            return st;
        }
        st_data_sampler_free(s->sampler);
        st = st_data_sampler_init(s->sampler, items, sa_n, sa_seed, (int)sa_shuffle, (int)sa_rank,
                             (int)sa_world);
        free(items);
        if (!st) st = st_data_sampler_seek(s->sampler, sa_epoch, sa_pos);
        if (st) return st_error_wrap(st, "%s: restoring the data order", dir);
    }
    if (s->rng) *s->rng = rng;
    s->step = step;
    if (config_json && (flags & F_CONFIG)) {
        const blob_entry *bc = find_blob(&m, "config.json");
        if (!bc) return st_error(ST_ERR_FORMAT, "%s: checkpoint has no config.json", dir);
        char *txt = st_malloc(bc->bytes + 1);
        uint64_t n = 0;
        if (!txt) return ST_ERR_NOMEM;
        if ((st = read_blob(dir, bc, txt, &n))) {
            free(txt);
            return st;
        }
        txt[n] = '\0';
        *config_json = txt;
    }
    return ST_OK;
}

st_status st_checkpoint_read_blob(const char *dir, const char *what, int j, void *dst, size_t bytes) {
    char name[80];
    if (!strcmp(what, "ema")) ema_blob_name(j, name, sizeof name);
    else snprintf(name, sizeof name, "%s.bin", what);
    manifest m;
    st_status st = verify(dir, &m);
    if (st) return st;
    const blob_entry *e = NULL;
    if ((st = need_blob(dir, &m, name, bytes, &e))) return st;
    return read_blob(dir, e, dst, NULL);
}

st_status st_checkpoint_find_latest(const char *run_dir, const char *prefix, char *out, size_t cap) {
    DIR *d = opendir(run_dir);
    if (!d) return st_error(ST_ERR_IO, "%s: cannot list folder: %s", run_dir, strerror(errno));
    struct dirent *de;
    int64_t best = -1;
    char path[4400];
    size_t plen = strlen(prefix);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, plen) != 0 || strstr(de->d_name, ".partial.") ||
            strstr(de->d_name, ".old."))
            continue;
        snprintf(path, sizeof path, "%s/%s", run_dir, de->d_name);
        int64_t step;
        if (st_checkpoint_verify(path, &step) != ST_OK) {
            st_log_warn("skipping checkpoint: %s", st_last_error());
            continue;
        }
        if (step > best) {
            best = step;
            snprintf(out, cap, "%s", path);
        }
    }
    closedir(d);
    if (best < 0)
        return st_error(ST_ERR_IO, "%s: no complete checkpoint named %s* found", run_dir, prefix);
    return ST_OK;
}
