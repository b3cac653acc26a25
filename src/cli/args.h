/* args.h - shared option parsing for CLI subcommands.
 * Long options `--name value` or `--name=value`, `--help`/`-h`, positional arguments, `--` to end
 * options, and `--config FILE`: a JSON object whose keys are option names ("max-new-tokens" or
 * "max_new_tokens"); values given as flags override the file (flags win). The file is parsed
 * strictly (json_check.h: invalid JSON located by line:column, a key given twice refused); an
 * unknown key or option gets the closest known name as a hint. */
#ifndef SAFETUNE_CLI_ARGS_H
#define SAFETUNE_CLI_ARGS_H

#include <stdint.h>
#include <stdio.h>

typedef enum {
    ST_OPT_STR,   /* dst: char ** (points into argv, or a copy owned by st_args) */
    ST_OPT_INT,   /* dst: int * */
    ST_OPT_FLOAT, /* dst: float * */
    ST_OPT_U64,   /* dst: uint64_t * */
    ST_OPT_FLAG,  /* dst: int * (set to 1; "--name=false"/JSON false sets 0) */
    ST_OPT_CHOICE, /* dst: char **; one of the '|'-separated words of metavar ("fp32|bf16") */
    ST_OPT_LIST,  /* dst: char **; text such as "0.9,0.5"; in a --config file a number, a string
                     or an array of numbers / strings (joined with ',') */
    ST_OPT_MULTI  /* dst: st_opt_multi *; repeatable: each --name V appends V (a config file gives a
                     JSON array, or one value); flags replace the config's values */
} st_opt_type;

/* Values of a repeatable option (ST_OPT_MULTI), in the order given. */
#define ST_OPT_MULTI_MAX 32
typedef struct {
    const char *v[ST_OPT_MULTI_MAX];
    int n;
    int from_flags; /* internal: 1 once a flag has replaced the config's values */
} st_opt_multi;

typedef struct {
    const char *name;    /* long name without "--", words joined by '-' */
    st_opt_type type;
    void *dst;           /* receives the value; keeps its default when the option is absent */
    const char *metavar; /* e.g. "N", "FILE" (NULL for flags); ST_OPT_CHOICE: the choices "a|b|c" */
    const char *help;
    double min, max;     /* inclusive range for numbers when min < max */
    int seen;            /* out: 1 if given (flag or config) */
} st_opt;

typedef struct {
    const char *prog;      /* "safetune generate" */
    const char *synopsis;  /* "--model MODEL (--prompt TEXT | --prompts FILE) [options]" */
    const char *about;     /* one paragraph printed by --help */
    st_opt *opts;
    int n_opts;
    int min_pos, max_pos;  /* allowed number of positional arguments */
    const char *pos_names; /* e.g. "MODEL", for messages */
    int own_config;        /* 1: "--config" is one of opts (no JSON file of option values) */
} st_args_spec;

typedef struct {
    char *pos[8];          /* positional arguments (pointers into argv) */
    int n_pos;
    const char *config;    /* the --config FILE (points into argv), or NULL */
    const char **config_key; /* [spec->n_opts] or NULL: the key as the --config file wrote it
                               ("max_steps") where option i's value came from there; NULL where it
                               is absent or a flag overrode it */
    char **owned;          /* strings copied from a config file */
    int n_owned;
} st_args;

/* Parse argv[1..argc). Returns 0 to continue, -1 after printing --help (exit 0), or 2 after
 * printing one error line and a usage hint to stderr (exit 2); on any non-zero return *out holds
 * nothing to free (st_args_free on it is harmless). */
int st_args_parse(st_args_spec *spec, int argc, char **argv, st_args *out);
/* Free strings copied from a config file (option values pointing at them become invalid). */
void st_args_free(st_args *a);
/* " (default: X)" from o's current value (call before parsing: the value is then the default);
 * "" for flags and unset strings. Returns buf. */
const char *st_args_default_text(const st_opt *o, char *buf, size_t cap);
/* Print usage + options to f; each option's help gets its default appended unless the help text
 * already names one ("default"). */
void st_args_usage(const st_args_spec *spec, FILE *f);
/* Print "PROG: MESSAGE" then "(see PROG --help)" to stderr, record MESSAGE as st_last_error()
 * (ST_ERR_ARG); returns 2. */
int st_args_fail(const st_args_spec *spec, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The double the user typed for a float option: any decimal with <= 7 significant digits
 * (0.05, 1e-5) round-trips exactly through %.7g (0.05f widened would be 0.0500000007). */
double st_args_decimal(float f);

#endif
