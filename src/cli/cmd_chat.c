/* cmd_chat.c - `safetune chat`: interactive multi-turn chat on stdin (works with piped input).
 * Each turn re-renders the whole conversation with the model's chat template and streams the
 * reply to stdout through st_text_stream: a character cut by the token budget is never written
 * half (its bytes wait for the rest, or end as U+FFFD), and a --stop text is never shown.
 * Commands: /reset (forget the conversation), /quit (or end of input). */
#include "cli/args.h"
#include "cli/commands.h"
#include "safetune/forward.h"
#include "safetune/generate.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const st_model *m;
    const int32_t *stops, *extra;
    int n_stops, n_extra;
    st_text_stream out;
} stream_ctx;

static void stream_token(void *ud, size_t prompt_idx, int32_t tok) {
    (void)prompt_idx;
    stream_ctx *c = ud;
    for (int i = 0; i < c->n_stops; i++)
        if (c->stops[i] == tok) return;
    for (int i = 0; i < c->n_extra; i++)
        if (c->extra[i] == tok) return;
    if (st_tokenizer_is_special(c->m->tokenizer, tok)) return;
    char buf[256];
    int n = st_tokenizer_token_bytes(c->m->tokenizer, tok, buf, (int)sizeof buf);
    if (n > 0) st_text_stream_push(&c->out, buf, (size_t)n, stdout);
}

int cmd_chat(int argc, char **argv) {
    const char *model = NULL, *system = NULL, *weights = "live", *date = NULL, *adapter = NULL;
    st_generate_options go = st_generate_defaults();
    float temperature = 0.0f, top_p = 1.0f;
    int top_k = 0;
    uint64_t seed = 0;
    st_opt_multi stop_ids = {0}, stop_texts = {0};
    int32_t extra_ids[ST_OPT_MULTI_MAX];
    go.max_new_tokens = 512;
    st_opt opts[] = {
        {"model", ST_OPT_STR, &model, "MODEL", "a .gguf file, a Hugging Face checkpoint folder or a training output folder", 0, 0, 0},
        CLI_WEIGHTS_OPT(weights),
        CLI_ADAPTER_OPT(adapter),
        {"system-prompt", ST_OPT_STR, &system, "S", "system prompt (default: the template's)", 0, 0, 0},
        CLI_DATE_OPT(date),
        {"max-new-tokens", ST_OPT_INT, &go.max_new_tokens, "N", "max tokens per reply", 1, 1 << 20, 0},
        CLI_SAMPLING_OPTS(temperature, top_k, top_p, seed),
        CLI_STOP_OPTS(stop_ids, stop_texts),
        {"context-length", ST_OPT_INT, &go.context_length, "N", "max conversation tokens (default: the model's)", 2, 1 << 24, 0},
    };
    st_args_spec spec = {"safetune chat", "--model MODEL [options]",
                         "Chat with a model on stdin/stdout. Type /reset to start over, /quit to leave.", opts,
                         (int)(sizeof opts / sizeof opts[0]), 0, 0, NULL, 0};
    st_args args;
    int rc = st_args_parse(&spec, argc, argv, &args);
    if (rc) return rc < 0 ? 0 : rc;
    rc = 1;
    st_model *m = NULL;
    st_infer_ctx *ic = NULL; /* the weight copies, kept across turns */
    st_chat_message *msgs = NULL;
    char **owned = NULL; /* contents of msgs (heap) */
    size_t n_msgs = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    int32_t stops[16];
    stream_ctx sc = {0};
    if (!model) { rc = st_args_fail(&spec, "--model is required"); goto out; }
    if ((rc = cli_apply_stops(&spec, &stop_ids, &stop_texts, extra_ids, &go))) goto out;
    rc = 1;
    go.sampling = (st_sampler_params){temperature, top_k, top_p, seed};
    if (st_sampler_params_check(&go.sampling)) { rc = st_args_fail(&spec, "%s", st_last_error()); goto out; }
    if (cli_load_model_adapter(spec.prog, model, weights, adapter, &m) || cli_apply_date(spec.prog, m, date)) goto out;
    if (st_infer_ctx_new(m, NULL, NULL, NULL, &ic)) {
        fprintf(stderr, "safetune chat: %s\n", st_last_error());
        goto out;
    }
    go.infer = ic;
    int ns = st_chat_stop_ids(&m->chat, m->tokenizer, stops, 15);
    int32_t eos = st_tokenizer_eos_id(m->tokenizer);
    if (eos >= 0) stops[ns++] = eos;
    sc = (stream_ctx){m, stops, go.extra_stop_ids, ns, go.n_extra_stop_ids, {0}};
    st_text_stream_init(&sc.out, go.stop_texts, go.n_stop_texts);
    go.stop_ids = stops;
    go.n_stop_ids = ns;
    go.batch_size = 1;
    go.on_token = stream_token;
    go.ud = &sc;
    long ctx = m->config.max_position_embeddings > 0 ? m->config.max_position_embeddings : 2048;
    if (go.context_length > 0 && go.context_length < ctx) ctx = go.context_length;
    const int tty = isatty(0);
    if (tty) fprintf(stderr, "safetune chat: /reset to start over, /quit to leave\n");
    unsigned turn = 0;
    for (;;) {
        if (tty) { fputs("> ", stdout); fflush(stdout); }
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        char *q = line;
        while (*q == ' ' || *q == '\t') q++;
        if (!*q) continue;
        if (!strcmp(q, "/quit") || !strcmp(q, "/exit")) break;
        if (!strcmp(q, "/reset")) {
            for (size_t i = 0; i < n_msgs; i++) free(owned[i]);
            n_msgs = 0;
            printf("(conversation reset)\n");
            fflush(stdout);
            continue;
        }
        if (n_msgs + 3 > cap) {
            size_t nc = cap ? 2 * cap : 16;
            st_chat_message *nm = realloc(msgs, nc * sizeof *nm);
            if (nm) msgs = nm;
            char **no = realloc(owned, nc * sizeof *no);
            if (no) owned = no;
            if (!nm || !no) { fprintf(stderr, "safetune chat: out of memory\n"); goto out; }
            cap = nc;
        }
        if (system && n_msgs == 0) {
            if (!(owned[0] = strdup(system))) { fprintf(stderr, "safetune chat: out of memory\n"); goto out; }
            msgs[0] = (st_chat_message){"system", owned[0]};
            n_msgs = 1;
        }
        if (!(owned[n_msgs] = strdup(q))) { fprintf(stderr, "safetune chat: out of memory\n"); goto out; }
        msgs[n_msgs] = (st_chat_message){"user", owned[n_msgs]};
        n_msgs++;
        int32_t *ids = NULL;
        size_t n_ids = 0;
        /* history + reply room must fit the context: drop whole oldest turns (user + assistant),
         * keeping the system prompt; never let the generator cut into the template */
        const size_t first = msgs[0].role[0] == 's' ? 1 : 0; /* "system" */
        int dropped = 0;
        for (;;) {
            if (st_chat_render(&m->chat, m->tokenizer, msgs, n_msgs, 1, &ids, NULL, &n_ids)) {
                fprintf(stderr, "safetune chat: %s\n", st_last_error());
                goto out;
            }
            if ((long)n_ids + go.max_new_tokens <= ctx || n_msgs - first <= 1) break;
            free(ids);
            ids = NULL;
            size_t k = n_msgs - first - 1 >= 2 && !strcmp(msgs[first + 1].role, "assistant") ? 2 : 1;
            for (size_t i = first; i < first + k; i++) free(owned[i]);
            memmove(msgs + first, msgs + first + k, (n_msgs - first - k) * sizeof *msgs);
            memmove(owned + first, owned + first + k, (n_msgs - first - k) * sizeof *owned);
            n_msgs -= k;
            dropped++;
        }
        if (dropped) fprintf(stderr, "(context full: dropped %d oldest turn%s)\n", dropped, dropped == 1 ? "" : "s");
        if ((long)n_ids + go.max_new_tokens > ctx) {
            fprintf(stderr, "(message too long: %zu tokens + --max-new-tokens %d exceed the context of %ld tokens; "
                    "not sent)\n", n_ids, go.max_new_tokens, ctx);
            free(ids);
            free(owned[--n_msgs]);
            continue;
        }
        st_generation g;
        go.sampling.seed = seed + turn++;
        const int32_t *pp = ids;
        st_status s = st_generate(m, &pp, &n_ids, 1, &go, &g, NULL);
        st_text_stream_finish(&sc.out, stdout);
        free(ids);
        if (s) {
            fprintf(stderr, "safetune chat: %s\n", st_last_error());
            goto out;
        }
        fputc('\n', stdout);
        if (g.finish == ST_FINISH_LENGTH && g.completion_tokens >= (size_t)go.max_new_tokens)
            fprintf(stderr, "(reply cut at %d tokens)\n", go.max_new_tokens);
        fflush(stdout);
        owned[n_msgs] = g.text;
        g.text = NULL;
        msgs[n_msgs] = (st_chat_message){"assistant", owned[n_msgs]};
        n_msgs++;
        st_generations_free(&g, 1);
    }
    rc = 0;
out:
    for (size_t i = 0; i < n_msgs; i++) free(owned[i]);
    free(owned);
    free(msgs);
    free(line);
    st_text_stream_free(&sc.out);
    st_infer_ctx_free(ic);
    st_model_free(m);
    st_args_free(&args);
    return rc;
}
