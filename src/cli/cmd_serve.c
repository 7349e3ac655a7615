/* cmd_serve.c - `neox serve`: an OpenAI-compatible HTTP server (docs/SERVER.md).
 *
 * Blocks SIGINT/SIGTERM before any thread starts (so every thread inherits the mask and
 * none of them is interrupted), then waits for one with sigwait and shuts down cleanly:
 * running requests are cancelled, threads joined, memory freed. */
#include "cli.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox serve -m DIR [options]\n"
            "  -m, --model DIR        model directory (config.json, weights, tokenizer.json)\n"
            "  --host ADDR            numeric address to bind (default 127.0.0.1; 0.0.0.0 exposes it)\n"
            "  --port N               TCP port (default 8080; 0 = any free port)\n"
            "  -t, --threads N        compute threads (default: all CPUs)\n"
            "  --parallel N           sequences computed concurrently, one KV cache each (default 4)\n"
            "  -c, --ctx N            context per sequence (default max_position_embeddings)\n"
            "  --api-key KEY          require \"Authorization: Bearer KEY\" (or $NEOX_API_KEY)\n"
            "  --max-body BYTES       largest request body (default 16777216)\n"
            "  --max-queue N          sequences waiting for a slot before 503 (default 256)\n"
            "  --name NAME            model id reported to clients (default: the directory name)\n"
            CLI_KV_TYPE_HELP);
}

int cmd_serve(int argc, char **argv) {
    const char *cmd = "serve";
    nx_server_opts o = nx_server_defaults();
    long port = 8080, threads = 0, parallel = 4, ctx = 0, max_body = 16L << 20, max_queue = 256;
    o.host = "127.0.0.1";
    o.api_key = getenv("NEOX_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
#define VAL() do { if (!(v = cli_next_arg(cmd, argc, argv, &i))) return 2; } while (0)
#define LONG_OPT(var, lo, hi) do { VAL(); if (!cli_parse_long(v, lo, hi, &var)) \
            return cli_usage_error(cmd, "%s: '%s' is not an integer in [%ld, %ld]", a, v, (long)(lo), (long)(hi)); } while (0)
        if (cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            VAL(); o.model_dir = v;
        } else if (!strcmp(a, "--host")) {
            VAL(); o.host = v;
        } else if (!strcmp(a, "--port")) {
            LONG_OPT(port, 0, 65535);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            LONG_OPT(threads, 1, 1024);
        } else if (!strcmp(a, "--parallel") || !strcmp(a, "-np")) {
            LONG_OPT(parallel, 1, 256);
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            LONG_OPT(ctx, 1, 1 << 24);
        } else if (!strcmp(a, "--api-key")) {
            VAL(); o.api_key = v;
        } else if (!strcmp(a, "--max-body")) {
            LONG_OPT(max_body, 64, 1L << 32);
        } else if (!strcmp(a, "--max-queue")) {
            LONG_OPT(max_queue, 1, 1 << 20);
        } else if (!strcmp(a, "--name")) {
            VAL(); o.model_name = v;
        } else if (!strcmp(a, "--kv-type")) {
            VAL();
            if (!cli_parse_kv_type(cmd, v, &o.kv_type)) return 2;
        } else {
            return cli_usage_error(cmd, "unknown option '%s'", a);
        }
#undef VAL
#undef LONG_OPT
    }
    if (!o.model_dir) return cli_usage_error(cmd, "missing -m DIR");
    o.port = (int)port;
    o.n_threads = (int)threads;
    o.n_parallel = (int)parallel;
    o.n_ctx = (int)ctx;
    o.max_body = (size_t)max_body;
    o.max_queue = (int)max_queue;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);   /* a client closing mid-response must not kill the server */

    double t0 = nx_time_s();
    nx_server *srv = NULL;
    nx_status st = nx_server_start(&o, &srv);
    if (st != NX_OK) return cli_fail(cmd, st, o.model_dir);
    fprintf(stderr, "neox serve: %s loaded in %.2f s; listening on http://%s%s%s:%d (%d slots%s)\n", o.model_dir,
            nx_time_s() - t0, strchr(o.host, ':') ? "[" : "", o.host, strchr(o.host, ':') ? "]" : "", nx_server_port(srv),
            o.n_parallel, o.api_key && o.api_key[0] ? ", API key required" : "");
    fflush(stderr);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "neox serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    nx_server_free(srv);
    return 0;
}
