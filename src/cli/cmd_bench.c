/* cmd_bench.c - `neox bench`: prompt (prefill) and generation (decode) speed of a model
 * directory or of a random model with a released shape, as one JSON line. Each repetition runs
 * two tests, as llama-bench does: prefill of P random ids into an empty cache, then generation
 * of N tokens one at a time (greedy) after D tokens already in the cache (--depth; default 0,
 * an empty cache: llama-bench's tg). Medians over the repetitions are reported, with the load
 * time, the time to the first token (load + session + the first prefill), the bytes used in
 * place from the mapped file (mapped_mb) and in the interleaved Q4_0 layout (interleaved_mb),
 * and the resident memory after the last token and at its peak.
 * decode_read_mb is the weights one decoded token streams; kv_read_mb the KV cache bytes its
 * attention reads, averaged over the N decoded tokens (token k sees D + k + 1 positions); kv_mb
 * the cache allocated. */
#include "cli.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox bench (-m DIR | --random-shape NAME) [-p 512] [-n 128] [-d 0] [-t N] [-r 3]\n"
            "  -m, --model DIR        model directory\n"
            "  --random-shape NAME    random fp32 weights of a released shape: pythia-14m, pythia-70m,\n"
            "                         pythia-160m, pythia-410m, pythia-1b, pythia-1.4b, gpt-neo-125m, ...\n"
            "  -p, --prompt-tokens P  prefill length (default 512)\n"
            "  -n, --gen-tokens N     decoded tokens (default 128)\n"
            "  -d, --depth D          tokens in the cache before generation is timed (default 0:\n"
            "                         an empty cache, as llama-bench's tg; -d 512: after a 512-token prompt)\n"
            "  -t, --threads N        threads (default: all CPUs)\n"
            "  -r, --reps R           repetitions; medians are reported (default 3)\n"
            "  --dtype T              run dtype of the matrices: f32, bf16, f16, q8, q4 (default: as stored;\n"
            "                         a random model is generated in fp32, then converted)\n"
            CLI_KV_TYPE_HELP);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Resident set now (Linux /proc/self/statm), or -1 where unavailable. */
static double rss_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = -1, resident = -1;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
        fclose(f);
    }
    return resident < 0 ? -1.0 : (double)resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

/* Resident memory mapped in 2 MiB pages (Linux /proc/self/smaps_rollup: AnonHugePages, the
 * weights converted at load, plus FilePmdMapped, those used in place from the file), or -1
 * where unavailable. Weights in 4 KiB pages stream slower (docs/QUANT.md, "Zero copy"). */
static double huge_mb(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f) return -1.0;
    char line[256];
    long kb, total = 0;
    int seen = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %ld", &kb) == 1 || sscanf(line, "FilePmdMapped: %ld", &kb) == 1) {
            total += kb;
            seen++;
        }
    fclose(f);
    return seen ? (double)total / 1024.0 : -1.0;
}

int cmd_bench(int argc, char **argv) {
    const char *cmd = "bench", *dir = NULL, *shape = NULL;
    long P = 512, N = 128, D = 0, threads = 0, reps = 3;
    nx_model_opts mopts = {0};
    nx_dtype kv_type = NX_DTYPE_INVALID;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(dir = cli_next_arg(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--random-shape")) {
            if (!(shape = cli_next_arg(cmd, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt-tokens")) {
            if (!(v = cli_next_arg(cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 1, 1 << 20, &P)) return cli_usage_error(cmd, "-p: '%s' is not a positive integer", v);
        } else if (!strcmp(a, "-n") || !strcmp(a, "--gen-tokens")) {
            if (!(v = cli_next_arg(cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 0, 1 << 20, &N)) return cli_usage_error(cmd, "-n: '%s' is not an integer >= 0", v);
        } else if (!strcmp(a, "-d") || !strcmp(a, "--depth")) {
            if (!(v = cli_next_arg(cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 0, 1 << 20, &D)) return cli_usage_error(cmd, "-d: '%s' is not an integer >= 0", v);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!(v = cli_next_arg(cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 1, 1024, &threads)) return cli_usage_error(cmd, "-t: '%s' is not in [1, 1024]", v);
        } else if (!strcmp(a, "--dtype")) {
            if (!(v = cli_next_arg(cmd, argc, argv, &i))) return 2;
            if ((mopts.dtype = nx_run_dtype_from_name(v)) == NX_DTYPE_INVALID)
                return cli_usage_error(cmd, "--dtype: '%s' is not one of f32, bf16, f16, q8, q4", v);
        } else if (!strcmp(a, "--kv-type")) {
            if (!(v = cli_next_arg(cmd, argc, argv, &i)) || !cli_parse_kv_type(cmd, v, &kv_type)) return 2;
        } else if (!strcmp(a, "-r") || !strcmp(a, "--reps")) {
            if (!(v = cli_next_arg(cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 1, 100, &reps)) return cli_usage_error(cmd, "-r: '%s' is not in [1, 100]", v);
        } else {
            return cli_usage_error(cmd, "unknown option '%s'", a);
        }
    }
    if (!dir == !shape) return cli_usage_error(cmd, "give exactly one of -m DIR and --random-shape NAME");

    nx_model *m = NULL;
    nx_session *s = NULL;
    nx_sampler *smp = NULL;
    int32_t *ids = NULL;
    int rc = 1;
    double t0 = nx_time_s();
    nx_status st;
    if (dir) {
        st = nx_model_load(dir, &mopts, &m);
    } else {
        nx_model_config cfg;
        st = nx_model_config_preset(shape, &cfg);
        if (st == NX_OK) st = nx_model_create_random(&cfg, 1234, 0.02f, &m);
        if (st == NX_OK) st = nx_model_convert(m, mopts.dtype);
    }
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, dir ? dir : shape);
        goto done;
    }
    double t_load = nx_time_s() - t0;
    const nx_model_config *cfg = nx_model_get_config(m);
    if (P > cfg->max_position_embeddings || D + N > cfg->max_position_embeddings) {
        fprintf(stderr, "neox bench: -p %ld, or -d %ld + -n %ld, exceed max_position_embeddings %d\n", P, D, N,
                cfg->max_position_embeddings);
        rc = 2;
        goto done;
    }
    nx_session_opts so = {0};
    so.n_threads = (int)threads;
    long n_ids = P > D ? P : D;
    so.n_ctx = (int)(P > D + N ? P : D + N);
    so.kv_type = kv_type;
    st = nx_session_create(m, &so, &s);
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, "creating a session");
        goto done;
    }
    /* Each generated token is picked as `neox generate` picks a greedy one. */
    nx_sampler_params sp = nx_sampler_defaults();
    st = nx_sampler_create(&sp, &smp);
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, "creating a sampler");
        goto done;
    }
    ids = malloc((size_t)n_ids * sizeof *ids);
    if (!ids) goto done;
    uint64_t x = 88172645463325252ull;
    for (long i = 0; i < n_ids; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)cfg->vocab_size);
    }
    double pp[100], tg[100], ttft = 0.0;
    int V = cfg->vocab_size;
    for (long r = 0; r < reps; r++) {
        nx_session_reset(s);
        double a = nx_time_s();
        st = nx_session_forward(s, ids, (int)P, NULL);
        double b = nx_time_s();
        if (r == 0) ttft = b - t0;
        if (st == NX_OK && N) {   /* generation: a fresh cache with D tokens in it */
            nx_session_reset(s);
            if (D) st = nx_session_forward(s, ids, (int)D, NULL);
        }
        double b0 = nx_time_s();
        for (long k = 0; k < N && st == NX_OK; k++) {
            const float *lg = nx_session_logits(s);
            int32_t best = ids[0];   /* an empty cache: start from one of the prompt's ids */
            if (lg) st = nx_sampler_sample(smp, lg, V, NULL, 0, &best);
            if (st == NX_OK) st = nx_session_forward(s, &best, 1, NULL);
        }
        double c = nx_time_s();
        if (st != NX_OK) {
            rc = cli_fail(cmd, st, "forward");
            goto done;
        }
        pp[r] = (double)P / (b - a);
        tg[r] = N ? (double)N / (c - b0) : 0.0;
    }
    char dtname[16];   /* lower case, as --dtype takes it: f32, bf16, f16, q8_0, q4_0 */
    snprintf(dtname, sizeof dtname, "%s", nx_dtype_name(nx_model_weight_dtype(m)));
    for (char *c = dtname; *c; c++) *c = (char)tolower((unsigned char)*c);
    double kv_read = 0.0;
    for (long k = 0; k < N; k++) kv_read += (double)nx_session_kv_read_bytes(s, (int)(D + k + 1));
    kv_read = N ? kv_read / (double)N : 0.0;
    char kvname[8];
    snprintf(kvname, sizeof kvname, "%s", nx_dtype_name(nx_session_kv_type(s)));
    for (char *c = kvname; *c; c++) *c = (char)tolower((unsigned char)*c);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"model\": \"%s%s\", \"arch\": \"%s\", \"dtype\": \"%s\", \"kernels\": \"%s\", \"threads\": %d, "
           "\"weights_mb\": %.1f, \"mapped_mb\": %.1f, \"interleaved_mb\": %.1f, \"decode_read_mb\": %.1f, "
           "\"kv_type\": \"%s\", \"kv_mb\": %.1f, "
           "\"kv_read_mb\": %.1f, \"prompt_tokens\": %ld, "
           "\"prompt_tok_s\": %.2f, \"gen_tokens\": %ld, \"gen_depth\": %ld, \"gen_tok_s\": %.2f, \"reps\": %ld, \"load_s\": %.3f, "
           "\"ttft_s\": %.3f, \"rss_mb\": %.1f, \"huge_mb\": %.1f, \"peak_rss_mb\": %.1f}\n",
           dir ? dir : shape, dir ? "" : " (random)", cfg->model_type, dtname, nx_kernels_name(),
           threads ? (int)threads : (int)sysconf(_SC_NPROCESSORS_ONLN), (double)nx_model_weight_bytes(m) / 1e6,
           (double)nx_model_mapped_bytes(m) / 1e6, (double)nx_model_interleaved_bytes(m) / 1e6,
           (double)nx_model_decode_bytes(m) / 1e6, kvname,
           (double)nx_session_kv_bytes(s) / 1e6, kv_read / 1e6, P, median(pp, (int)reps), N, D,
           median(tg, (int)reps), reps, t_load, ttft, rss_mb(), huge_mb(), (double)ru.ru_maxrss / 1024.0);
    rc = 0;
done:
    free(ids);
    nx_sampler_free(smp);
    nx_session_free(s);
    nx_model_free(m);
    return rc;
}
