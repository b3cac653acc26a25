/* cmd_serve.c - `safetune serve`: OpenAI-compatible server on 127.0.0.1. Until the generation
 * module is merged, only the --echo backend (replies with the last user message) is available. */
#include "cli/commands.h"
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
    int port = 8080, echo = 0;
    const char *name = "safetune";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: safetune serve --echo [--port N] [--model-name NAME]\n"
                   "  OpenAI-compatible server on 127.0.0.1: POST /v1/chat/completions, GET /v1/models\n"
                   "  --port N          TCP port (default 8080; 0 = pick a free port, printed on start)\n"
                   "  --model-name S    model id reported to clients (default safetune)\n"
                   "  --echo            reply with the last user message (testing; model serving needs\n"
                   "                    the generation module, not built in yet)\n");
            return 0;
        } else if (!strcmp(argv[i], "--echo")) {
            echo = 1;
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
    if (!echo) {
        fprintf(stderr, "safetune serve: serving a model needs the generation module, which is not built in "
                        "yet; use --echo to run the HTTP layer\n");
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* server threads inherit the mask */
    st_serve_opts o = {0};
    o.port = port;
    o.model_name = name;
    o.backend = echo_backend;
    st_server *s;
    if (st_serve_start(&o, &s)) {
        fprintf(stderr, "safetune serve: %s\n", st_last_error());
        return 1;
    }
    printf("listening on http://127.0.0.1:%d (POST /v1/chat/completions, GET /v1/models); Ctrl-C stops\n",
           st_serve_port(s));
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    st_serve_stop(s);
    return 0;
}
