/* cmd_data.c - `neox data`: inspect, dump and verify Megatron/GPT-NeoX indexed datasets. */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *k_cmd = "data";

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox data <action> [options]\n\n"
            "  info PREFIX                      documents, items, tokens, dtype, item-size distribution\n"
            "  dump PREFIX (--doc N | --item N) [-t TOKENIZER] [--raw]\n"
            "                                   token ids of a document (or, with -t, its text)\n"
            "  verify PREFIX [--vocab V]        full structural check plus every token in [0, V)\n"
            "  tokenize -t TOKENIZER -o PREFIX [options] INPUT...\n"
            "                                   .jsonl, .jsonl.zst, .json.zst, .zst, .txt, .txt.zst files or\n"
            "                                   directories -> PREFIX.bin/.idx, one item per document\n"
            "      --text-key K     JSON key holding the text (default \"text\")\n"
            "      --threads N      worker threads (default: all CPUs); output is identical for any N\n"
            "      --no-eod         do not append the EOD token (default: append, as --append-eod)\n"
            "      --strict         stop at the first malformed line (default: report, count, skip)\n"
            "      --quiet          no progress or issue lines\n"
            "  build RECIPE -o DIR [-t TOKENIZER] [--threads N]\n"
            "                                   Pile-style corpus: collect, dedup (exact + MinHash), mix by\n"
            "                                   epochs, shuffle, tokenize -> DIR/train, DIR/validation,\n"
            "                                   DIR/DATASHEET.md, DIR/datasheet.json. The tokenizer defaults\n"
            "                                   to the recipe's, else $NEOX_ASSETS/tokenizers/gpt-neox-20b\n\n"
            "PREFIX names PREFIX.bin and PREFIX.idx (a path ending in .bin or .idx works too).\n");
}

static const char *dtype_label(int code) {
    switch (code) {
    case NX_IDX_U8: return "uint8";
    case NX_IDX_I8: return "int8";
    case NX_IDX_I16: return "int16";
    case NX_IDX_I32: return "int32";
    case NX_IDX_I64: return "int64";
    case NX_IDX_F32: return "float32";
    case NX_IDX_F64: return "float64";
    case NX_IDX_U16: return "uint16";
    default: return "?";
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int do_info(int argc, char **argv) {
    if (argc != 2) return cli_usage_error(k_cmd, "info takes one PREFIX");
    nx_indexed *ds = NULL;
    nx_status st = nx_indexed_open(argv[1], &ds);
    if (st != NX_OK) return cli_fail(k_cmd, st, "cannot open dataset");
    nx_indexed_info in;
    nx_indexed_get_info(ds, &in);
    printf("dataset:    %s\n", argv[1]);
    printf("dtype:      %s (code %d, %zu bytes/token)\n", dtype_label(in.dtype_code), in.dtype_code, in.itemsize);
    printf("documents:  %llu\n", (unsigned long long)in.n_docs);
    printf("items:      %llu%s\n", (unsigned long long)in.n_items,
           in.n_items == in.n_docs ? " (one per document)" : "");
    printf("tokens:     %llu\n", (unsigned long long)in.n_tokens);
    printf("files:      .bin %llu bytes, .idx %llu bytes\n", (unsigned long long)in.bin_bytes,
           (unsigned long long)in.idx_bytes);
    if (in.n_items == 0) {
        nx_indexed_free(ds);
        return 0;
    }
    /* Exact quantiles: sort a copy of the sizes (4 bytes per item). */
    int32_t *sz = malloc(in.n_items * sizeof *sz);
    if (!sz) {
        nx_indexed_free(ds);
        fprintf(stderr, "neox data: out of memory for %llu sizes\n", (unsigned long long)in.n_items);
        return 1;
    }
    uint64_t hist[33] = {0};
    for (uint64_t i = 0; i < in.n_items; i++) {
        sz[i] = nx_indexed_item_size(ds, i);
        int b = 0;
        while (b < 32 && ((int64_t)1 << b) <= sz[i]) b++;
        hist[b]++;   /* bucket b holds sizes in [2^(b-1), 2^b); bucket 0 holds 0 */
    }
    qsort(sz, in.n_items, sizeof *sz, cmp_i32);
#define Q(p) sz[(uint64_t)((double)(in.n_items - 1) * (p) + 0.5)]
    printf("item size:  min %d  p10 %d  median %d  mean %.1f  p90 %d  p99 %d  max %d\n", sz[0], Q(0.10), Q(0.5),
           (double)in.n_tokens / (double)in.n_items, Q(0.90), Q(0.99), sz[in.n_items - 1]);
#undef Q
    printf("histogram (tokens per item):\n");
    for (int b = 0; b < 33; b++) {
        if (!hist[b]) continue;
        long long lo = b ? (1LL << (b - 1)) : 0, hi = b ? (1LL << b) - 1 : 0;
        int bar = (int)(50.0 * (double)hist[b] / (double)in.n_items + 0.5);
        printf("  %10lld - %-10lld %12llu  %5.1f%%  ", lo, hi, (unsigned long long)hist[b],
               100.0 * (double)hist[b] / (double)in.n_items);
        for (int k = 0; k < bar; k++) putchar('#');
        putchar('\n');
    }
    free(sz);
    nx_indexed_free(ds);
    return 0;
}

static int do_dump(int argc, char **argv) {
    const char *prefix = NULL, *tok_path = NULL;
    long doc = -1, item = -1;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--doc") == 0) {
            if (!(v = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 0, LONG_MAX, &doc)) return cli_usage_error(k_cmd, "--doc: bad number '%s'", v);
        } else if (strcmp(argv[i], "--item") == 0) {
            if (!(v = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 0, LONG_MAX, &item)) return cli_usage_error(k_cmd, "--item: bad number '%s'", v);
        } else if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--tokenizer") == 0) {
            if (!(tok_path = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
        } else if (argv[i][0] == '-') {
            return cli_usage_error(k_cmd, "unknown option '%s'", argv[i]);
        } else if (!prefix) {
            prefix = argv[i];
        } else {
            return cli_usage_error(k_cmd, "dump takes one PREFIX");
        }
    }
    if (!prefix) return cli_usage_error(k_cmd, "dump needs a PREFIX");
    if ((doc < 0) == (item < 0)) return cli_usage_error(k_cmd, "dump needs exactly one of --doc N or --item N");
    nx_indexed *ds = NULL;
    nx_status st = nx_indexed_open(prefix, &ds);
    if (st != NX_OK) return cli_fail(k_cmd, st, "cannot open dataset");
    uint64_t first, end;
    if (doc >= 0) {
        st = nx_indexed_doc_items(ds, (uint64_t)doc, &first, &end);
        if (st != NX_OK) { nx_indexed_free(ds); return cli_fail(k_cmd, st, "--doc"); }
    } else {
        if ((uint64_t)item >= nx_indexed_n_items(ds)) {
            fprintf(stderr, "neox data: --item %ld out of range (%llu items)\n", item,
                    (unsigned long long)nx_indexed_n_items(ds));
            nx_indexed_free(ds);
            return 1;
        }
        first = (uint64_t)item;
        end = first + 1;
    }
#ifdef NEOX_TOKENIZER_H
    nx_tokenizer *tok = NULL;
    nx_text text = {0};
    if (tok_path) {
        st = nx_tokenizer_load(tok_path, &tok);
        if (st != NX_OK) { nx_indexed_free(ds); return cli_fail(k_cmd, st, "cannot load tokenizer"); }
    }
#else
    if (tok_path) {
        nx_indexed_free(ds);
        fprintf(stderr, "neox data: -t needs the tokenizer module, which this build does not have\n");
        return 1;
    }
#endif
    int rc = 0;
    for (uint64_t it = first; it < end && rc == 0; it++) {
        int32_t n = nx_indexed_item_size(ds, it);
        int32_t *buf = malloc(((size_t)n + 1) * sizeof *buf);
        if (!buf) { fprintf(stderr, "neox data: out of memory\n"); rc = 1; break; }
        st = nx_indexed_read(ds, it, 0, (uint64_t)n, buf);
        if (st != NX_OK) rc = cli_fail(k_cmd, st, "read");
#ifdef NEOX_TOKENIZER_H
        else if (tok) {
            /* Byte-exact decode: the text as it was tokenized, EOD tokens included. */
            st = nx_tokenizer_decode(tok, buf, (size_t)n, 0, &text);
            if (st != NX_OK) rc = cli_fail(k_cmd, st, "decode");
            else { fwrite(text.data, 1, text.len, stdout); putchar('\n'); }
        }
#endif
        else {
            for (int32_t k = 0; k < n; k++) printf(k ? " %d" : "%d", buf[k]);
            putchar('\n');
        }
        free(buf);
    }
#ifdef NEOX_TOKENIZER_H
    nx_text_free(&text);
    nx_tokenizer_free(tok);
#endif
    nx_indexed_free(ds);
    return rc;
}

/* ---- tokenize ------------------------------------------------------------------------- */

#ifdef NEOX_TOKENIZER_H
/* The tokenizer as the pipeline's encoder; nx_token_buf and nx_ids share their layout. */
static nx_status encode_adapter(void *ctx, const char *text, size_t len, nx_token_buf *out) {
    nx_ids ids = {out->data, out->len, out->cap};
    nx_status st = nx_tokenizer_encode((const nx_tokenizer *)ctx, text, len, 0, &ids);
    out->data = ids.data;
    out->len = ids.len;
    out->cap = ids.cap;
    return st;
}
#endif

typedef struct {
    bool tty, quiet;
    int shown;
    double last;
} tok_ui;

static void on_issue(const nx_data_issue *is, void *user) {
    tok_ui *ui = user;
    if (ui->quiet) return;
    if (ui->shown < 20) fprintf(stderr, "%s%s:%llu: %s (skipped)\n", ui->tty ? "\r\033[K" : "", is->file,
                                (unsigned long long)is->line, is->message);
    else if (ui->shown == 20) fprintf(stderr, "%s... further issues are counted in the summary only\n",
                                      ui->tty ? "\r\033[K" : "");
    ui->shown++;
}

static bool on_progress(const nx_tokenize_stats *s, void *user) {
    tok_ui *ui = user;
    if (!ui->tty || ui->quiet || s->seconds - ui->last < 0.5) return true;
    ui->last = s->seconds;
    double mbs = (double)s->input_bytes / 1e6 / (s->seconds > 0 ? s->seconds : 1);
    double left = s->input_total > s->input_bytes ? (double)(s->input_total - s->input_bytes) / 1e6 / (mbs > 0 ? mbs : 1) : 0;
    fprintf(stderr, "\r\033[K%llu docs  %.0f docs/s  %.2f MB/s  %.1f%%  ETA %.0fs", (unsigned long long)s->docs_read,
            (double)s->docs_read / (s->seconds > 0 ? s->seconds : 1), mbs,
            s->input_total ? 100.0 * (double)s->input_bytes / (double)s->input_total : 100.0, left);
    return true;
}

static int do_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *out = NULL, *key = "text";
    long threads = 0;
    bool eod = true, strict = false, quiet = false;
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    size_t n_in = 0;
    if (!inputs) return 1;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int bad = 0;
        if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--tokenizer") == 0) {
            if (!(tok_path = cli_next_arg(k_cmd, argc, argv, &i))) bad = 1;
        } else if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) {
            if (!(out = cli_next_arg(k_cmd, argc, argv, &i))) bad = 1;
        } else if (strcmp(argv[i], "--text-key") == 0) {
            if (!(key = cli_next_arg(k_cmd, argc, argv, &i))) bad = 1;
        } else if (strcmp(argv[i], "--threads") == 0) {
            if (!(v = cli_next_arg(k_cmd, argc, argv, &i))) bad = 1;
            else if (!cli_parse_long(v, 1, 1024, &threads)) bad = cli_usage_error(k_cmd, "--threads: bad number '%s'", v);
        } else if (strcmp(argv[i], "--no-eod") == 0) {
            eod = false;
        } else if (strcmp(argv[i], "--strict") == 0) {
            strict = true;
        } else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            quiet = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            bad = cli_usage_error(k_cmd, "unknown option '%s'", argv[i]);
        } else {
            inputs[n_in++] = argv[i];
        }
        if (bad) { free(inputs); return 2; }
    }
    if (!tok_path || !out || n_in == 0) {
        free(inputs);
        return cli_usage_error(k_cmd, "tokenize needs -t TOKENIZER, -o PREFIX and at least one INPUT");
    }
#ifndef NEOX_TOKENIZER_H
    free(inputs);
    fprintf(stderr, "neox data: tokenize needs the tokenizer module, which this build does not have\n");
    return 1;
#else
    nx_tokenizer *tok = NULL;
    nx_status st = nx_tokenizer_load(tok_path, &tok);
    if (st != NX_OK) { free(inputs); return cli_fail(k_cmd, st, "cannot load tokenizer"); }
    int32_t eod_id = nx_tokenizer_eos_id(tok);
    if (eod && eod_id < 0) {
        nx_tokenizer_free(tok);
        free(inputs);
        fprintf(stderr, "neox data: %s has no end-of-text token; pass --no-eod\n", tok_path);
        return 1;
    }
    tok_ui ui = {.tty = isatty(2) != 0, .quiet = quiet};
    nx_tokenize_opts o = {.text_key = key, .n_threads = (int)threads, .append_eod = eod, .eod_id = eod_id,
                          .strict = strict, .vocab_size = nx_tokenizer_vocab_size(tok), .encode = encode_adapter,
                          .encode_ctx = tok, .on_issue = on_issue, .progress = on_progress, .user = &ui};
    nx_tokenize_stats s;
    st = nx_data_tokenize(inputs, n_in, out, &o, &s);
    if (ui.tty && !quiet) fprintf(stderr, "\r\033[K");
    nx_tokenizer_free(tok);
    free(inputs);
    if (st != NX_OK) return cli_fail(k_cmd, st, "tokenize failed");
    double secs = s.seconds > 0 ? s.seconds : 1e-9;
    printf("wrote %s.bin/.idx: %llu documents, %llu tokens (%s, EOD %s)\n", out, (unsigned long long)s.docs_written,
           (unsigned long long)s.tokens, nx_indexed_dtype_for_vocab(o.vocab_size) == NX_IDX_U16 ? "uint16" : "int32",
           eod ? "appended" : "not appended");
    printf("read %zu files, %llu records = %llu written + %llu empty + %llu bad JSON + %llu no text key + "
           "%llu invalid UTF-8 + %llu encode errors\n", s.files, (unsigned long long)s.docs_read,
           (unsigned long long)s.docs_written, (unsigned long long)s.docs_empty, (unsigned long long)s.bad_json,
           (unsigned long long)s.no_key, (unsigned long long)s.bad_utf8, (unsigned long long)s.encode_failed);
    printf("%.2f s: %.2f MB/s of input files, %.2f MB/s of text, %.0f docs/s, %.0f tokens/s\n", s.seconds,
           (double)s.input_bytes / 1e6 / secs, (double)s.text_bytes / 1e6 / secs, (double)s.docs_read / secs,
           (double)s.tokens / secs);
    return 0;
#endif
}

static void build_log(const char *msg, void *user) {
    if (!*(bool *)user) fprintf(stderr, "neox data build: %s\n", msg);
}

static int do_build(int argc, char **argv) {
    const char *recipe = NULL, *out = NULL, *tok_path = NULL;
    long threads = 0;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) {
            if (!(out = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--tokenizer") == 0) {
            if (!(tok_path = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "--threads") == 0) {
            if (!(v = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 1, 1024, &threads)) return cli_usage_error(k_cmd, "--threads: bad number '%s'", v);
        } else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            quiet = true;
        } else if (argv[i][0] == '-') {
            return cli_usage_error(k_cmd, "unknown option '%s'", argv[i]);
        } else if (!recipe) {
            recipe = argv[i];
        } else {
            return cli_usage_error(k_cmd, "build takes one RECIPE");
        }
    }
    if (!recipe || !out) return cli_usage_error(k_cmd, "build needs a RECIPE and -o DIR");
#ifndef NEOX_TOKENIZER_H
    fprintf(stderr, "neox data: build needs the tokenizer module, which this build does not have\n");
    return 1;
#else
    char named[4096], path[8192];
    nx_status st = nx_data_recipe_tokenizer(recipe, named, sizeof named);
    if (st != NX_OK) return cli_fail(k_cmd, st, "bad recipe");
    if (!tok_path) {
        if (named[0] && strcmp(named, "gpt-neox-20b") != 0) {
            /* A path in the recipe is relative to the recipe's directory. */
            const char *slash = strrchr(recipe, '/');
            if (named[0] == '/' || !slash) snprintf(path, sizeof path, "%s", named);
            else snprintf(path, sizeof path, "%.*s/%s", (int)(slash - recipe), recipe, named);
        } else {
            const char *assets = getenv("NEOX_ASSETS");
            if (!assets || !*assets) {
                fprintf(stderr, "neox data: no tokenizer: pass -t TOKENIZER or set NEOX_ASSETS (the GPT-NeoX-20B "
                                "tokenizer is read from $NEOX_ASSETS/tokenizers/gpt-neox-20b/tokenizer.json)\n");
                return 1;
            }
            snprintf(path, sizeof path, "%s/tokenizers/gpt-neox-20b/tokenizer.json", assets);
        }
        tok_path = path;
    }
    nx_tokenizer *tok = NULL;
    st = nx_tokenizer_load(tok_path, &tok);
    if (st != NX_OK) return cli_fail(k_cmd, st, "cannot load tokenizer");
    nx_build_opts o = {.n_threads = (int)threads, .encode = encode_adapter, .encode_ctx = tok,
                       .eod_id = nx_tokenizer_eos_id(tok), .vocab_size = nx_tokenizer_vocab_size(tok),
                       .tokenizer_name = tok_path, .log = build_log, .user = &quiet};
    if (o.eod_id < 0) {
        nx_tokenizer_free(tok);
        fprintf(stderr, "neox data: %s has no end-of-text token\n", tok_path);
        return 1;
    }
    st = nx_data_build(recipe, out, &o);
    nx_tokenizer_free(tok);
    if (st != NX_OK) return cli_fail(k_cmd, st, "build failed");
    printf("wrote %s/train.bin/.idx, %s/validation.bin/.idx, %s/DATASHEET.md, %s/datasheet.json\n", out, out, out, out);
    return 0;
#endif
}

static int do_verify(int argc, char **argv) {
    const char *prefix = NULL;
    long vocab = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--vocab") == 0) {
            if (!(v = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 1, INT32_MAX, &vocab)) return cli_usage_error(k_cmd, "--vocab: bad number '%s'", v);
        } else if (argv[i][0] == '-') {
            return cli_usage_error(k_cmd, "unknown option '%s'", argv[i]);
        } else if (!prefix) {
            prefix = argv[i];
        } else {
            return cli_usage_error(k_cmd, "verify takes one PREFIX");
        }
    }
    if (!prefix) return cli_usage_error(k_cmd, "verify needs a PREFIX");
    nx_indexed *ds = NULL;
    nx_status st = nx_indexed_open(prefix, &ds);
    if (st != NX_OK) return cli_fail(k_cmd, st, "invalid dataset");
    st = nx_indexed_verify(ds, vocab, NULL);
    if (st != NX_OK) { nx_indexed_free(ds); return cli_fail(k_cmd, st, "invalid dataset"); }
    nx_indexed_info in;
    nx_indexed_get_info(ds, &in);
    printf("ok: %s: %llu documents, %llu items, %llu tokens (%s)%s\n", prefix, (unsigned long long)in.n_docs,
           (unsigned long long)in.n_items, (unsigned long long)in.n_tokens, dtype_label(in.dtype_code),
           vocab ? ", all ids below --vocab" : "");
    nx_indexed_free(ds);
    return 0;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2 || cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *a = argv[1];
    if (strcmp(a, "info") == 0) return do_info(argc - 1, argv + 1);
    if (strcmp(a, "dump") == 0) return do_dump(argc - 1, argv + 1);
    if (strcmp(a, "verify") == 0) return do_verify(argc - 1, argv + 1);
    if (strcmp(a, "tokenize") == 0) return do_tokenize(argc - 1, argv + 1);
    if (strcmp(a, "build") == 0) return do_build(argc - 1, argv + 1);
    return cli_usage_error(k_cmd, "unknown action '%s'", a);
}
