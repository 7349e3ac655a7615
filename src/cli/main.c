/* main.c - the neox command: git-style dispatch to one cmd_<name>.c per subcommand. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct { const char *name; int (*fn)(int, char **); const char *help; } command;

static const command k_commands[] = {
#define NX_CMD(name, fn, help) {name, fn, help},
#include "commands.def"
#undef NX_CMD
    {NULL, NULL, NULL},
};

static void usage(FILE *f) {
    fprintf(f, "neox %s - EleutherAI's open models (GPT-NeoX/Pythia, GPT-J, GPT-Neo) in C\n\n", nx_version());
    fprintf(f, "usage: neox <command> [options]    (neox <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; k_commands[i].name; i++)
        fprintf(f, "  %-12s %s\n", k_commands[i].name, k_commands[i].help);
    fprintf(f, "  %-12s %s\n", "version", "print the version");
}

int cli_fail(const char *cmd, nx_status st, const char *what) {
    const char *detail = nx_last_error();
    if (detail && *detail)
        fprintf(stderr, "neox %s: %s: %s\n", cmd, what, detail);
    else
        fprintf(stderr, "neox %s: %s: %s\n", cmd, what, nx_status_str(st));
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "neox %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see neox %s --help)\n", cmd);
    return 2;
}

bool cli_is_help(const char *arg) { return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0; }

bool cli_parse_long(const char *s, long min, long max, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

bool cli_parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

bool cli_parse_kv_type(const char *cmd, const char *v, nx_dtype *out) {
    if ((*out = nx_kv_type_from_name(v)) != NX_DTYPE_INVALID) return true;
    cli_usage_error(cmd, "--kv-type: '%s' is not one of f32, f16, bf16, q8", v);
    return false;
}

const char *cli_next_arg(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        cli_usage_error(cmd, "option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (cli_is_help(name) || strcmp(name, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("neox %s\n", nx_version());
        return 0;
    }
    for (size_t i = 0; k_commands[i].name; i++)
        if (strcmp(k_commands[i].name, name) == 0) return k_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "neox: unknown command '%s' (see neox --help)\n", name);
    return 2;
}
