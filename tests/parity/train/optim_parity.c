/* optim_parity.c - run our optimiser + schedule + clipping for S steps on vectors given in files,
 * for comparison with PyTorch by optim_ref.py (which writes the inputs and checks the output).
 * Usage: optim_parity DIR key=value...   reads DIR/params.bin [n f32], DIR/grads.bin [S, n f32],
 * DIR/layout.txt ("numel no_decay" per line); writes DIR/out_params.bin, DIR/out_log.txt
 * (per step: lr pre-clip-norm). Keys: opt lr wd beta1 beta2 eps momentum dampening nesterov
 * decay_all sched warmup total step_size gamma clip steps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetune/optim.h"
#include "safetune/schedule.h"

static float *read_f32(const char *path, size_t *n) {
    char *data;
    size_t len;
    if (st_read_file(path, &data, &len)) return NULL;
    *n = len / sizeof(float);
    return (float *)data;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: optim_parity DIR key=value...\n");
        return 2;
    }
    const char *dir = argv[1];
    st_optim_config oc;
    st_optim_config_default(&oc, ST_OPTIM_ADAMW);
    st_schedule sc;
    st_schedule_default(&sc, ST_SCHED_CONSTANT, 0);
    double clip = 0.0;
    int steps = 10;
    for (int i = 2; i < argc; i++) {
        char key[64];
        const char *eq = strchr(argv[i], '=');
        if (!eq || (size_t)(eq - argv[i]) >= sizeof key) return fprintf(stderr, "bad arg %s\n", argv[i]), 2;
        memcpy(key, argv[i], (size_t)(eq - argv[i]));
        key[eq - argv[i]] = 0;
        const char *v = eq + 1;
        if (!strcmp(key, "opt")) { if (st_optim_kind_parse(v, &oc.kind)) goto err; }
        else if (!strcmp(key, "lr")) oc.lr = strtod(v, NULL);
        else if (!strcmp(key, "wd")) oc.weight_decay = strtod(v, NULL);
        else if (!strcmp(key, "beta1")) oc.beta1 = strtod(v, NULL);
        else if (!strcmp(key, "beta2")) oc.beta2 = strtod(v, NULL);
        else if (!strcmp(key, "eps")) oc.eps = strtod(v, NULL);
        else if (!strcmp(key, "momentum")) oc.momentum = strtod(v, NULL);
        else if (!strcmp(key, "dampening")) oc.dampening = strtod(v, NULL);
        else if (!strcmp(key, "nesterov")) oc.nesterov = atoi(v);
        else if (!strcmp(key, "decay_all")) oc.decay_no_decay_params = atoi(v);
        else if (!strcmp(key, "sched")) { if (st_schedule_kind_parse(v, &sc.kind)) goto err; }
        else if (!strcmp(key, "warmup")) sc.warmup_steps = atoll(v);
        else if (!strcmp(key, "total")) sc.total_steps = atoll(v);
        else if (!strcmp(key, "step_size")) sc.step_size = atoll(v);
        else if (!strcmp(key, "gamma")) sc.gamma = strtod(v, NULL);
        else if (!strcmp(key, "clip")) clip = strtod(v, NULL);
        else if (!strcmp(key, "steps")) steps = atoi(v);
        else return fprintf(stderr, "unknown key %s\n", key), 2;
    }
    if (st_schedule_validate(&sc)) goto err;

    char path[4096];
    size_t n, ng;
    snprintf(path, sizeof path, "%s/params.bin", dir);
    float *p = read_f32(path, &n);
    if (!p) goto err;
    snprintf(path, sizeof path, "%s/grads.bin", dir);
    float *g = read_f32(path, &ng);
    if (!g) goto err;
    if (ng != n * (size_t)steps) return fprintf(stderr, "grads.bin: %zu floats, want %zu\n", ng, n * steps), 1;

    /* Build a layout from layout.txt. */
    snprintf(path, sizeof path, "%s/layout.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) return fprintf(stderr, "%s: cannot open\n", path), 1;
    st_param_info infos[64];
    st_layout lay = {infos, 0, 0};
    size_t numel;
    int nd;
    while (lay.n_tensors < 64 && fscanf(f, "%zu %d", &numel, &nd) == 2) {
        st_param_info *pi = &infos[lay.n_tensors];
        memset(pi, 0, sizeof *pi);
        snprintf(pi->name, sizeof pi->name, "t%zu", lay.n_tensors);
        pi->offset = lay.n_floats;
        pi->numel = numel;
        pi->n_dims = 1;
        pi->shape[0] = (int64_t)numel;
        pi->no_decay = nd;
        lay.n_floats += numel;
        lay.n_tensors++;
    }
    fclose(f);

    st_optimizer opt;
    if (st_optim_init(&opt, &oc, &lay, n)) goto err;
    snprintf(path, sizeof path, "%s/out_log.txt", dir);
    FILE *log = fopen(path, "w");
    if (!log) return 1;
    for (int s = 0; s < steps; s++) {
        float *gs = g + (size_t)s * n;
        double norm = st_clip_grad_norm(gs, n, clip);
        double lr = st_schedule_lr(&sc, oc.lr, opt.step);
        if (st_optim_step(&opt, p, gs, lr)) goto err;
        fprintf(log, "%.17g %.17g\n", lr, norm);
    }
    fclose(log);
    snprintf(path, sizeof path, "%s/out_params.bin", dir);
    if (st_write_file_atomic(path, p, n * sizeof(float))) goto err;
    st_optim_free(&opt);
    free(p);
    free(g);
    return 0;
err:
    fprintf(stderr, "error: %s\n", st_last_error());
    return 1;
}
