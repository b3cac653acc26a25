/* cmd_serve.c - `safetune serve`: OpenAI-compatible server on 127.0.0.1 (/v1/chat/completions,
 * /v1/completions, /v1/models; see serve.h) over a loaded model (--model, st_serve_model_backend)
 * or the --echo backend (replies with the last user message, or the prompt of /v1/completions). */
#include "cli/args.h"
#include "cli/commands.h"
#include "safetune/forward.h"
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

static int serve_main(const st_args_spec *spec, int echo, const char *model, const char *weights, const char *host,
                      int port, int max_tokens, const char *name, const char *date, const st_generate_options *stops,
                      const char *adapter);

int cmd_serve(int argc, char **argv) {
    int port = 8080, echo = 0, max_tokens = 256;
    const char *name = NULL, *model = NULL, *weights = "live", *host = "127.0.0.1", *date = NULL, *adapter = NULL;
    st_opt_multi stop_ids = {0}, stop_texts = {0};
    st_opt opts[] = {
        {"model", ST_OPT_STR, &model, "MODEL", "serve this model (.gguf, HF folder, or training output folder)", 0, 0, 0},
        {"weights", ST_OPT_CHOICE, &weights, "live|ema", "final/ or final-ema/ of a training output folder", 0, 0, 0},
        CLI_ADAPTER_OPT(adapter),
        {"max-tokens", ST_OPT_INT, &max_tokens, "N", "reply budget when a request has no max_tokens", 1, 1 << 20, 0},
        {"host", ST_OPT_STR, &host, "H", "127.0.0.1 only (loopback; the server never binds other addresses)", 0, 0, 0},
        {"port", ST_OPT_INT, &port, "N", "TCP port (0 = pick a free port, printed on start)", 0, 65535, 0},
        {"model-name", ST_OPT_STR, &name, "S", "model id reported to clients (default: MODEL's file name, or safetune)", 0, 0, 0},
        CLI_DATE_OPT(date),
        CLI_STOP_OPTS(stop_ids, stop_texts),
        {"echo", ST_OPT_FLAG, &echo, NULL, "reply with the last user message / the prompt (testing the HTTP layer)", 0, 0, 0},
    };
    st_args_spec spec = {"safetune serve", "(--model MODEL | --echo) [--port N] [options]",
                         "OpenAI-compatible server on 127.0.0.1: POST /v1/chat/completions, POST /v1/completions,\n"
                         "GET /v1/models (non-streaming; request parameters it does not implement get HTTP 400).\n"
                         "A request without \"temperature\" samples at 1, as OpenAI's API does; send 0 for greedy answers.",
                         opts, (int)(sizeof opts / sizeof *opts), 0, 0, NULL, 0};
    st_args args;
    int prc = st_args_parse(&spec, argc, argv, &args);
    if (prc) {
        st_args_free(&args);
        return prc < 0 ? 0 : prc;
    }
    int32_t extra_ids[ST_OPT_MULTI_MAX];
    st_generate_options go = st_generate_defaults();
    int rc = cli_apply_stops(&spec, &stop_ids, &stop_texts, extra_ids, &go);
    if (!rc) rc = serve_main(&spec, echo, model, weights, host, port, max_tokens, name, date, &go, adapter);
    st_args_free(&args);
    return rc;
}

static int serve_main(const st_args_spec *spec, int echo, const char *model, const char *weights, const char *host,
                      int port, int max_tokens, const char *name, const char *date, const st_generate_options *stops,
                      const char *adapter) {
    if (!echo == !model) return st_args_fail(spec, "give exactly one of --model MODEL or --echo");
    if (adapter && !model) return st_args_fail(spec, "--adapter applies on top of --model; drop it with --echo");
    if (strcmp(host, "127.0.0.1") && strcmp(host, "localhost")) {
        return st_args_fail(spec, "--host %s: only 127.0.0.1 (loopback) is supported", host);
    }
    st_model *m = NULL;
    if (model) {
        char *mp = NULL;
        if (cli_resolve_weights(model, weights, &mp) == ST_OK && cli_check_model_path("safetune serve", mp)) {
            free(mp);
            return 1;
        }
        if (!mp || cli_model_load("safetune serve", mp, adapter, &m)) {
            fprintf(stderr, "safetune serve: %s\n", st_last_error());
            free(mp);
            return 1;
        }
        free(mp);
        if (cli_apply_date("safetune serve", m, date)) {
            st_model_free(m);
            return 1;
        }
        const int vocab = (int)st_tokenizer_vocab_size(m->tokenizer);
        for (int i = 0; i < stops->n_extra_stop_ids; i++)
            if (stops->extra_stop_ids[i] >= vocab) {
                st_model_free(m); /* the message reads vocab, not m (freed) */
                return st_args_fail(spec, "--stop-id %d: not a token id of this model (vocabulary of %d)",
                                    (int)stops->extra_stop_ids[i], vocab);
            }
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
    st_infer_ctx *ic = NULL; /* the served weights' inference copies, built once for all requests */
    if (m && st_infer_ctx_new(m, NULL, NULL, NULL, &ic)) {
        fprintf(stderr, "safetune serve: %s\n", st_last_error());
        st_model_free(m);
        return 1;
    }
    o.backend = m ? st_serve_model_backend : echo_backend;
    o.backend_ctx = m ? (void *)ic : NULL;
    o.default_max_tokens = max_tokens;
    o.extra_stop_ids = stops->extra_stop_ids;
    o.n_extra_stop_ids = stops->n_extra_stop_ids;
    o.stop_texts = stops->stop_texts;
    o.n_stop_texts = stops->n_stop_texts;
    st_server *s;
    if (st_serve_start(&o, &s)) {
        fprintf(stderr, "safetune serve: %s\n", st_last_error());
        st_infer_ctx_free(ic);
        st_model_free(m);
        return 1;
    }
    printf("listening on http://127.0.0.1:%d (POST /v1/chat/completions, POST /v1/completions, GET /v1/models); Ctrl-C stops\n",
           st_serve_port(s));
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    st_serve_stop(s);
    st_infer_ctx_free(ic);
    st_model_free(m);
    return 0;
}
