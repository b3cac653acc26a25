/* cmd_serve.c - `safetune serve`: OpenAI-compatible server on 127.0.0.1 over a loaded model
 * (--model, st_serve_model_backend) or the --echo backend (replies with the last user message). */
#include "cli/commands.h"
#include "safetune/safety_eval.h"
#include "safetune/serve.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static st_status echo_backend(void *ctx, const st_chat_message *msgs, size_t n, const st_serve_params *p,
                              st_serve_reply *out) {
    (void)ctx;
    const char *last = msgs[n - 1].content;
    size_t len = strlen(last);
    out->text = malloc(len + 1);
    if (!out->text) return st_error(ST_ERR_NOMEM, "out of memory");
    memcpy(out->text, last, len + 1);
    out->prompt_tokens = 0;
    out->completion_tokens = 0;
    (void)p;
    return ST_OK;
}

int cmd_serve(int argc, char **argv) {
    int port = 8080, echo = 0, max_tokens = 256;
    const char *name = NULL, *model = NULL, *weights = "live", *host = "127.0.0.1";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: safetune serve (--model MODEL | --echo) [--port N] [--model-name NAME]\n"
                   "  OpenAI-compatible server on 127.0.0.1: POST /v1/chat/completions, GET /v1/models\n"
                   "  --model MODEL     serve this model (.gguf, HF folder, or training output folder)\n"
                   "  --weights W       live | ema: final/ or final-ema/ of a training output folder\n"
                   "  --max-tokens N    reply budget when a request has no max_tokens (default 256)\n"
                   "  --host H          127.0.0.1 only (loopback; the server never binds other addresses)\n"
                   "  --port N          TCP port (default 8080; 0 = pick a free port, printed on start)\n"
                   "  --model-name S    model id reported to clients (default: MODEL's file name, or safetune)\n"
                   "  --echo            reply with the last user message (testing the HTTP layer)\n");
            return 0;
        } else if (!strcmp(argv[i], "--echo")) {
            echo = 1;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--weights") && i + 1 < argc) {
            weights = argv[++i];
        } else if (!strcmp(argv[i], "--host") && i + 1 < argc) {
            host = argv[++i];
        } else if (!strcmp(argv[i], "--max-tokens") && i + 1 < argc) {
            char *e;
            long v = strtol(argv[++i], &e, 10);
            if (*e || v < 1 || v > (1 << 20)) {
                fprintf(stderr, "safetune serve: --max-tokens: '%s' is not a positive integer\n", argv[i]);
                return 2;
            }
            max_tokens = (int)v;
        } else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
            char *e;
            long v = strtol(argv[++i], &e, 10);
            if (*e || v < 0 || v > 65535) {
                fprintf(stderr, "safetune serve: --port: '%s' is not a port number (0-65535)\n", argv[i]);
                return 2;
            }
            port = (int)v;
        } else if (!strcmp(argv[i], "--model-name") && i + 1 < argc) {
            name = argv[++i];
        } else {
            fprintf(stderr, "safetune serve: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!echo == !model) {
        fprintf(stderr, "safetune serve: give exactly one of --model MODEL or --echo (see --help)\n");
        return 2;
    }
    if (strcmp(host, "127.0.0.1") && strcmp(host, "localhost")) {
        fprintf(stderr, "safetune serve: --host %s: only 127.0.0.1 (loopback) is supported\n", host);
        return 2;
    }
    st_model *m = NULL;
    if (model) {
        char *mp = NULL;
        if (st_model_resolve_weights(model, weights, &mp) || st_model_load(mp, &m)) {
            fprintf(stderr, "safetune serve: %s\n", st_last_error());
            free(mp);
            return 1;
        }
        free(mp);
        if (!name) {
            const char *b = strrchr(model, '/');
            name = b && b[1] ? b + 1 : model;
        }
    }
    if (!name) name = "safetune";
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* server threads inherit the mask */
    st_serve_opts o = {0};
    o.port = port;
    o.model_name = name;
    o.backend = m ? st_serve_model_backend : echo_backend;
    o.backend_ctx = m;
    o.default_max_tokens = max_tokens;
    st_server *s;
    if (st_serve_start(&o, &s)) {
        fprintf(stderr, "safetune serve: %s\n", st_last_error());
        st_model_free(m);
        return 1;
    }
    printf("listening on http://127.0.0.1:%d (POST /v1/chat/completions, GET /v1/models); Ctrl-C stops\n",
           st_serve_port(s));
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    st_serve_stop(s);
    st_model_free(m);
    return 0;
}
