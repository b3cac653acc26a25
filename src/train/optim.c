/* optim.c - AdamW and SGD(momentum) on the flat parameter vector (see optim.h). */
#include "safetune/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void st_optim_config_default(st_optim_config *c, st_optim_kind kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->lr = 1e-3;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->weight_decay = kind == ST_OPTIM_ADAMW ? 1e-2 : 0.0;
}

st_status st_optim_config_validate(const st_optim_config *c) {
    if (c->kind != ST_OPTIM_ADAMW && c->kind != ST_OPTIM_SGD)
        return st_error(ST_ERR_ARG, "optimizer: unknown kind %d (use adamw or sgd)", (int)c->kind);
    if (!(c->lr >= 0.0) || !isfinite(c->lr))
        return st_error(ST_ERR_ARG, "optimizer: lr = %g must be finite and >= 0", c->lr);
    if (!(c->weight_decay >= 0.0) || !isfinite(c->weight_decay))
        return st_error(ST_ERR_ARG, "optimizer: weight_decay = %g must be finite and >= 0",
                        c->weight_decay);
    if (c->kind == ST_OPTIM_ADAMW) {
        if (!(c->beta1 >= 0.0 && c->beta1 < 1.0))
            return st_error(ST_ERR_ARG, "optimizer: beta1 = %g must be in [0, 1)", c->beta1);
        if (!(c->beta2 >= 0.0 && c->beta2 < 1.0))
            return st_error(ST_ERR_ARG, "optimizer: beta2 = %g must be in [0, 1)", c->beta2);
        if (!(c->eps > 0.0))
            return st_error(ST_ERR_ARG, "optimizer: eps = %g must be > 0", c->eps);
    } else {
        if (!(c->momentum >= 0.0) || !isfinite(c->momentum))
            return st_error(ST_ERR_ARG, "optimizer: momentum = %g must be >= 0", c->momentum);
        if (c->nesterov && (c->momentum <= 0.0 || c->dampening != 0.0))
            return st_error(ST_ERR_ARG,
                            "optimizer: nesterov needs momentum > 0 and dampening = 0");
    }
    return ST_OK;
}

st_status st_optim_kind_parse(const char *name, st_optim_kind *out) {
    if (!strcmp(name, "adamw")) *out = ST_OPTIM_ADAMW;
    else if (!strcmp(name, "sgd")) *out = ST_OPTIM_SGD;
    else return st_error(ST_ERR_ARG, "optimizer: unknown name '%s' (use adamw or sgd)", name);
    return ST_OK;
}

const char *st_optim_kind_name(st_optim_kind k) {
    return k == ST_OPTIM_ADAMW ? "adamw" : k == ST_OPTIM_SGD ? "sgd" : "unknown";
}

/* Merge the layout's tensors into maximal runs of equal weight decay. */
static st_status build_segments(st_optimizer *opt, const st_layout *lay) {
    double wd = opt->cfg.weight_decay;
    size_t cap = lay ? lay->n_tensors + 1 : 1;
    opt->segs = st_malloc(cap * sizeof *opt->segs);
    if (!opt->segs) return ST_ERR_NOMEM;
    opt->n_segs = 0;
    if (!lay) {
        opt->segs[0] = (st_optim_segment){0, opt->n, wd};
        opt->n_segs = opt->n ? 1 : 0;
        return ST_OK;
    }
    /* Tensors may be listed in any order; walk them sorted by offset, check full coverage. */
    size_t *order = st_malloc((lay->n_tensors ? lay->n_tensors : 1) * sizeof *order);
    if (!order) return ST_ERR_NOMEM;
    for (size_t i = 0; i < lay->n_tensors; i++) order[i] = i;
    for (size_t i = 1; i < lay->n_tensors; i++) { /* insertion sort: n_tensors is small */
        size_t k = order[i], j = i;
        while (j > 0 && lay->params[order[j - 1]].offset > lay->params[k].offset) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    size_t pos = 0;
    for (size_t i = 0; i < lay->n_tensors; i++) {
        const st_param_info *p = &lay->params[order[i]];
        if (p->offset != pos) {
            free(order);
            return st_error(ST_ERR_ARG, "optimizer: layout tensor '%s' starts at float %zu, "
                            "expected %zu (layout must tile the flat buffer)", p->name, p->offset, pos);
        }
        double w = (p->no_decay && !opt->cfg.decay_no_decay_params) ? 0.0 : wd;
        if (p->numel == 0) continue;
        if (opt->n_segs > 0 && opt->segs[opt->n_segs - 1].weight_decay == w &&
            opt->segs[opt->n_segs - 1].end == pos)
            opt->segs[opt->n_segs - 1].end = pos + p->numel;
        else
            opt->segs[opt->n_segs++] = (st_optim_segment){pos, pos + p->numel, w};
        pos += p->numel;
    }
    free(order);
    if (pos != opt->n)
        return st_error(ST_ERR_ARG, "optimizer: layout covers %zu floats, buffer has %zu", pos, opt->n);
    return ST_OK;
}

st_status st_optim_init(st_optimizer *opt, const st_optim_config *cfg, const st_layout *lay,
                        size_t n) {
    memset(opt, 0, sizeof *opt);
    st_status s = st_optim_config_validate(cfg);
    if (s) return s;
    if (lay && lay->n_floats != n)
        return st_error(ST_ERR_ARG, "optimizer: layout has %zu floats but n = %zu", lay->n_floats, n);
    opt->cfg = *cfg;
    opt->n = n;
    int need_m = cfg->kind == ST_OPTIM_ADAMW || cfg->momentum != 0.0;
    int need_v = cfg->kind == ST_OPTIM_ADAMW;
    if (need_m && !(opt->m = st_alloc_aligned(n * sizeof(float)))) goto nomem;
    if (need_v && !(opt->v = st_alloc_aligned(n * sizeof(float)))) goto nomem;
    if (opt->m) memset(opt->m, 0, n * sizeof(float));
    if (opt->v) memset(opt->v, 0, n * sizeof(float));
    if ((s = build_segments(opt, lay)) != ST_OK) {
        st_optim_free(opt);
        return s;
    }
    return ST_OK;
nomem:
    st_optim_free(opt);
    return ST_ERR_NOMEM;
}

st_status st_optim_init_slice(st_optimizer *opt, const st_optim_config *cfg, const st_layout *lay, size_t n,
                              size_t off, size_t len) {
    if (off > n || len > n - off)
        return st_error(ST_ERR_ARG, "optimizer: slice [%zu, %zu) outside the %zu floats", off, off + len, n);
    st_optimizer full;
    memset(&full, 0, sizeof full);
    full.cfg = *cfg;
    full.n = n;
    st_status s = st_optim_config_validate(cfg);
    if (!s && lay && lay->n_floats != n)
        s = st_error(ST_ERR_ARG, "optimizer: layout has %zu floats but n = %zu", lay->n_floats, n);
    if (!s) s = build_segments(&full, lay);
    if (!s) s = st_optim_init(opt, cfg, NULL, len); /* moments of the slice only */
    if (s) {
        free(full.segs);
        return s;
    }
    /* the segments that meet [off, off + len), shifted to slice coordinates */
    size_t k = 0;
    for (size_t i = 0; i < full.n_segs; i++) {
        const size_t b = full.segs[i].begin > off ? full.segs[i].begin : off;
        const size_t e = full.segs[i].end < off + len ? full.segs[i].end : off + len;
        if (b < e) full.segs[k++] = (st_optim_segment){b - off, e - off, full.segs[i].weight_decay};
    }
    free(opt->segs);
    opt->segs = full.segs;
    opt->n_segs = k;
    return ST_OK;
}

void st_optim_free(st_optimizer *opt) {
    st_free_aligned(opt->m);
    st_free_aligned(opt->v);
    free(opt->segs);
    memset(opt, 0, sizeof *opt);
}

static void adamw_step(st_optimizer *opt, float *p, const float *g, double lr) {
    const st_optim_config *c = &opt->cfg;
    double t = (double)opt->step;
    double bc1 = 1.0 - pow((double)c->beta1, t);
    double bc2 = 1.0 - pow((double)c->beta2, t);
    const float step_size = (float)(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float b1 = (float)c->beta1, b2 = (float)c->beta2, omb1 = (float)(1.0 - c->beta1),
                omb2 = (float)(1.0 - c->beta2), eps = (float)c->eps;
    float *m = opt->m, *v = opt->v;
#pragma omp parallel
    for (size_t s = 0; s < opt->n_segs; s++) {
        const st_optim_segment seg = opt->segs[s];
        const float decay = (float)(1.0 - lr * seg.weight_decay);
        const int has_decay = seg.weight_decay != 0.0;
#pragma omp for schedule(static) nowait
        for (size_t i = seg.begin; i < seg.end; i++) {
            float pi = p[i], gi = g[i];
            if (has_decay) pi *= decay;
            float mi = b1 * m[i] + omb1 * gi;
            float vi = b2 * v[i] + omb2 * (gi * gi);
            m[i] = mi;
            v[i] = vi;
            float denom = sqrtf(vi) / bc2_sqrt + eps;
            p[i] = pi - step_size * (mi / denom);
        }
    }
}

static void sgd_step(st_optimizer *opt, float *p, const float *g, double lr_d) {
    const st_optim_config *c = &opt->cfg;
    const float mu = (float)c->momentum, omd = (float)(1.0 - c->dampening), lr = (float)lr_d;
    const int first = opt->step == 1, nesterov = c->nesterov;
    float *buf = opt->m;
#pragma omp parallel
    for (size_t s = 0; s < opt->n_segs; s++) {
        const st_optim_segment seg = opt->segs[s];
        const float wd = (float)seg.weight_decay;
#pragma omp for schedule(static) nowait
        for (size_t i = seg.begin; i < seg.end; i++) {
            float d = g[i];
            if (wd != 0.0) d = d + wd * p[i];
            if (buf) {
                float b = first ? d : mu * buf[i] + omd * d;
                buf[i] = b;
                d = nesterov ? d + mu * b : b;
            }
            p[i] = p[i] - lr * d;
        }
    }
}

st_status st_optim_step(st_optimizer *opt, float *params, const float *grads, double lr) {
    if (!params || !grads) return st_error(ST_ERR_ARG, "optimizer step: NULL params or grads");
    if (!(lr >= 0.0) || !isfinite(lr))
        return st_error(ST_ERR_ARG, "optimizer step: lr = %g must be finite and >= 0", lr);
    opt->step++;
    if (opt->cfg.kind == ST_OPTIM_ADAMW) adamw_step(opt, params, grads, lr);
    else sgd_step(opt, params, grads, lr);
    return ST_OK;
}
