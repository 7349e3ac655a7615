/* cmd_logits.c - `neox logits`: raw little-endian float32 logits [T x vocab_size] for a list
 * of token ids, computed in one prefill or (--incremental) token by token through the KV
 * cache. Nothing else is written to the output, so it can be compared byte for byte with a
 * numpy dump. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox logits -m DIR --ids \"ID ID ...\" -o OUT [--incremental] [--threads N]\n"
            "  -m, --model DIR     model directory (config.json + weights)\n"
            "  --ids \"...\"         token ids, separated by spaces or commas\n"
            "  -o, --output OUT    output file ('-' for stdout): T x vocab_size float32, little-endian\n"
            "  --incremental       feed the ids one at a time through the KV cache\n"
            "  -t, --threads N     threads (default: all CPUs)\n"
            "  --dtype T           run dtype of the matrices: f32, bf16, f16, q8, q4 (default: as stored)\n"
            CLI_KV_TYPE_HELP);
}

/* Parses "1 2, 3" into a malloc'd array. Returns the count, or -1 on a bad token. */
int cli_parse_ids(const char *s, int32_t **out);
int cli_parse_ids(const char *s, int32_t **out) {
    size_t cap = 16, n = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return -1;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return -1;
        }
        if (n == cap) {
            int32_t *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
            cap *= 2;
        }
        v[n++] = (int32_t)x;
        p = end;
    }
    *out = v;
    return (int)n;
}

/* Writes via a temporary file renamed over the target, so a reader never sees half a file. */
static int write_atomic(const char *path, const void *data, size_t n) {
    if (strcmp(path, "-") == 0) return fwrite(data, 1, n, stdout) == n && fflush(stdout) == 0 ? 0 : -1;
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp) return -1;
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(data, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) remove(tmp);
    free(tmp);
    return ok ? 0 : -1;
}

static int is_little_endian(void) {
    uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

int cmd_logits(int argc, char **argv) {
    const char *cmd = "logits", *dir = NULL, *ids_s = NULL, *out = NULL;
    bool incremental = false;
    nx_dtype kv_type = NX_DTYPE_INVALID;
    nx_model_opts mopts = {0};
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(dir = cli_next_arg(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--ids")) {
            if (!(ids_s = cli_next_arg(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = cli_next_arg(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--incremental")) {
            incremental = true;
        } else if (!strcmp(a, "--dtype")) {
            const char *v = cli_next_arg(cmd, argc, argv, &i);
            if (!v) return 2;
            if ((mopts.dtype = nx_run_dtype_from_name(v)) == NX_DTYPE_INVALID)
                return cli_usage_error(cmd, "--dtype: '%s' is not one of f32, bf16, f16, q8, q4", v);
        } else if (!strcmp(a, "--kv-type")) {
            const char *v = cli_next_arg(cmd, argc, argv, &i);
            if (!v || !cli_parse_kv_type(cmd, v, &kv_type)) return 2;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            const char *v = cli_next_arg(cmd, argc, argv, &i);
            if (!v) return 2;
            if (!cli_parse_long(v, 1, 1024, &threads)) return cli_usage_error(cmd, "--threads: '%s' is not in [1, 1024]", v);
        } else {
            return cli_usage_error(cmd, "unknown option '%s'", a);
        }
    }
    if (!dir) return cli_usage_error(cmd, "missing -m DIR");
    if (!ids_s) return cli_usage_error(cmd, "missing --ids");
    if (!out) return cli_usage_error(cmd, "missing -o OUT");
    int32_t *ids = NULL;
    int n = cli_parse_ids(ids_s, &ids);
    if (n < 0) return cli_usage_error(cmd, "--ids: expected non-negative integers separated by spaces or commas");
    if (n == 0) {
        free(ids);
        return cli_usage_error(cmd, "--ids: no ids given");
    }
    nx_model *m = NULL;
    nx_session *s = NULL;
    float *logits = NULL;
    int rc = 1;
    nx_status st = nx_model_load(dir, &mopts, &m);
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, dir);
        goto done;
    }
    int V = nx_model_get_config(m)->vocab_size;
    nx_session_opts so = {0};
    so.n_threads = (int)threads;
    so.kv_type = kv_type;
    st = nx_session_create(m, &so, &s);
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, "creating a session");
        goto done;
    }
    logits = malloc((size_t)n * (size_t)V * sizeof(float));
    if (!logits) {
        fprintf(stderr, "neox logits: out of memory for %d x %d logits\n", n, V);
        goto done;
    }
    if (incremental) {
        for (int t = 0; t < n && st == NX_OK; t++) st = nx_session_forward(s, &ids[t], 1, logits + (size_t)t * V);
    } else {
        st = nx_session_forward(s, ids, n, logits);
    }
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, "forward");
        goto done;
    }
    if (!is_little_endian()) {
        for (size_t i = 0; i < (size_t)n * V; i++) {
            uint32_t u;
            memcpy(&u, &logits[i], 4);
            u = __builtin_bswap32(u);
            memcpy(&logits[i], &u, 4);
        }
    }
    if (write_atomic(out, logits, (size_t)n * V * sizeof(float)) != 0) {
        fprintf(stderr, "neox logits: cannot write '%s': %s\n", out, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(logits);
    free(ids);
    nx_session_free(s);
    nx_model_free(m);
    return rc;
}
