/*
 * cli.h - shared helpers for the neox command's subcommands. Each cmd_<name>.c defines
 * `int cmd_<name>(int argc, char **argv)` where argv[0] is the subcommand name, and
 * returns the process exit code. Subcommands use only the public API (neox.h).
 */
#ifndef NX_CLI_H
#define NX_CLI_H

#include "neox.h"

#include <stdbool.h>
#include <stdio.h>

#define NX_CMD(name, fn, help) int fn(int argc, char **argv);
#include "commands.def"
#undef NX_CMD

/* Prints "neox <cmd>: <what>: <nx_last_error()>" to stderr and returns 1. */
int cli_fail(const char *cmd, nx_status st, const char *what);
/* Prints "neox <cmd>: <formatted message>" to stderr and returns 2 (usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when argv[i] is -h or --help. */
bool cli_is_help(const char *arg);
/* Strict number parsers: whole string must parse and be in range; false otherwise. */
bool cli_parse_long(const char *s, long min, long max, long *out);
bool cli_parse_double(const char *s, double *out);
/* Fetches the value after a flag (argv[*i + 1]) or reports a usage error. */
const char *cli_next_arg(const char *cmd, int argc, char **argv, int *i);
/* --kv-type's value (f32, f16, bf16, q8) into *out; false after a usage error naming it. */
bool cli_parse_kv_type(const char *cmd, const char *v, nx_dtype *out);
/* The usage line of --kv-type, shared by the commands that create sessions. */
#define CLI_KV_TYPE_HELP \
    "  --kv-type T            KV cache type: f32, f16, bf16, q8 (default: f32 for fp32 weights, else bf16)\n"

#endif
