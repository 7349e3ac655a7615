/* cmd_tokenizer.c - `neox tokenizer`: tokenizer tools.
 *
 *   neox tokenizer train --vocab-size N [--min-frequency F] [--special TOKEN]... [-j THREADS]
 *                        -o tokenizer.json FILE...
 *   neox tokenizer info -t TOKENIZER
 *
 * train: byte-level BPE as HF's BpeTrainer with a ByteLevel pre-tokenizer (see
 * docs/TOKENIZER.md); progress goes to stderr once a run takes more than a second. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox tokenizer train --vocab-size N [options] -o OUT.json FILE...\n"
            "       neox tokenizer info -t TOKENIZER\n"
            "train options:\n"
            "  --vocab-size N        final vocabulary size (special tokens + 256 bytes + merges)\n"
            "  --min-frequency F     stop when the most frequent pair occurs fewer than F times (default 0)\n"
            "  --special TOKEN       a special token (repeatable; ids 0, 1, ... in order)\n"
            "  -j, --threads N       threads for word counting (default: all CPUs)\n"
            "  -o, --output PATH     where to write the tokenizer.json (written atomically)\n"
            "  -q, --quiet           no progress on stderr\n");
}

typedef struct { double t0, last; bool quiet, shown; } progress_state;

static bool on_progress(const char *stage, uint64_t done, uint64_t total, void *user) {
    progress_state *p = user;
    double now = nx_time_s();
    if (p->quiet || now - p->t0 < 1.0 || (now - p->last < 0.5 && done < total)) return true;
    p->last = now;
    p->shown = true;
    double pct = total ? 100.0 * (double)done / (double)total : 100.0;
    if (!strcmp(stage, "count"))
        fprintf(stderr, "\rcounting words: %5.1f%% of %.1f MB  ", pct, (double)total / 1e6);
    else
        fprintf(stderr, "\rmerging: %llu / %llu merges (%.0f%%)  ", (unsigned long long)done,
                (unsigned long long)total, pct);
    if (!isatty(2) || done >= total) fputc('\n', stderr);
    return true;
}

static int train(int argc, char **argv) {
    long vocab = 0, threads = 0;
    double minf = 0;
    const char *out = NULL;
    const char **special = calloc((size_t)argc + 1, sizeof *special);
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    size_t ns = 0, nf = 0;
    bool quiet = false;
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i], *v;
        if (cli_is_help(a)) { usage(stdout); goto done; }
        if (!strcmp(a, "--vocab-size")) {
            if (!(v = cli_next_arg("tokenizer train", argc, argv, &i))) { rc = 2; break; }
            if (!cli_parse_long(v, 1, 1 << 24, &vocab)) rc = cli_usage_error("tokenizer train", "bad --vocab-size %s", v);
        } else if (!strcmp(a, "--min-frequency")) {
            if (!(v = cli_next_arg("tokenizer train", argc, argv, &i))) { rc = 2; break; }
            if (!cli_parse_double(v, &minf) || minf < 0)
                rc = cli_usage_error("tokenizer train", "bad --min-frequency %s", v);
        } else if (!strcmp(a, "--special")) {
            if (!(v = cli_next_arg("tokenizer train", argc, argv, &i))) { rc = 2; break; }
            special[ns++] = v;
        } else if (!strcmp(a, "-j") || !strcmp(a, "--threads")) {
            if (!(v = cli_next_arg("tokenizer train", argc, argv, &i))) { rc = 2; break; }
            if (!cli_parse_long(v, 1, 1024, &threads)) rc = cli_usage_error("tokenizer train", "bad --threads %s", v);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = cli_next_arg("tokenizer train", argc, argv, &i))) { rc = 2; break; }
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = true;
        else if (a[0] == '-' && a[1]) rc = cli_usage_error("tokenizer train", "unknown option %s", a);
        else files[nf++] = a;
    }
    if (rc) goto done;
    if (!vocab) { rc = cli_usage_error("tokenizer train", "--vocab-size is required"); goto done; }
    if (!out) { rc = cli_usage_error("tokenizer train", "-o OUT.json is required"); goto done; }
    if (!nf) { rc = cli_usage_error("tokenizer train", "no input files"); goto done; }
    progress_state ps = {nx_time_s(), 0, quiet, false};
    nx_bpe_train_opts o = {(int32_t)vocab, (uint64_t)minf, special, ns, (int)threads, on_progress, &ps};
    double t0 = nx_time_s();
    nx_status st = nx_bpe_train_files(files, nf, &o, out);
    if (st) { rc = cli_fail("tokenizer train", st, "training"); goto done; }
    if (!quiet) fprintf(stderr, "wrote %s in %.2f s\n", out, nx_time_s() - t0);
done:
    free(special);
    free(files);
    return rc;
}

static int info(int argc, char **argv) {
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage(stdout); return 0; }
        if (!strcmp(argv[i], "-t") || !strcmp(argv[i], "--tokenizer")) {
            if (!(path = cli_next_arg("tokenizer info", argc, argv, &i))) return 2;
        } else if (!path && argv[i][0] != '-') path = argv[i];
        else return cli_usage_error("tokenizer info", "unknown argument %s", argv[i]);
    }
    if (!path) return cli_usage_error("tokenizer info", "no tokenizer given (-t PATH)");
    double t0 = nx_time_s();
    nx_tokenizer *tok = NULL;
    nx_status st = nx_tokenizer_load(path, &tok);
    if (st) return cli_fail("tokenizer info", st, "loading the tokenizer");
    double dt = nx_time_s() - t0;
    int32_t vs = nx_tokenizer_vocab_size(tok);
    printf("path: %s\nvocab_size: %d\nload_ms: %.1f\n", path, vs, dt * 1e3);
    const int32_t sp[3] = {nx_tokenizer_bos_id(tok), nx_tokenizer_eos_id(tok), nx_tokenizer_pad_id(tok)};
    const char *names[3] = {"bos", "eos", "pad"};
    for (int k = 0; k < 3; k++) {
        if (sp[k] < 0) printf("%s: none\n", names[k]);
        else printf("%s: %d %s\n", names[k], sp[k], nx_tokenizer_id_to_token(tok, sp[k]));
    }
    int nspecial = 0;
    for (int32_t id = 0; id < vs; id++) nspecial += nx_tokenizer_is_special(tok, id);
    printf("special_tokens: %d\n", nspecial);
    nx_tokenizer_free(tok);
    return 0;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2 || cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "train")) return train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info")) return info(argc - 1, argv + 1);
    return cli_usage_error("tokenizer", "unknown subcommand %s (train, info)", argv[1]);
}
