/* cmd_tokenize.c - `neox tokenize`: text -> token ids.
 *
 *   neox tokenize -t TOKENIZER [--jsonl] [--no-parse-special] [--no-post-process] [--lossy] [FILE]
 *
 * Without --jsonl the whole input (FILE or stdin) is one text and its ids are printed as one
 * space-separated line. With --jsonl every input line is a JSON object with a "text" string
 * and every output line is {"ids": [...]}, in order (with -j N the lines are encoded on N
 * threads). Errors name the input line. */
#include "cli.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox tokenize -t TOKENIZER [options] [FILE]\n"
            "  -t, --tokenizer PATH   tokenizer.json, a directory with one (or vocab.json + merges.txt),\n"
            "                         or a model directory\n"
            "  --jsonl                input lines are {\"text\": ...}; output lines are {\"ids\": [...]}\n"
            "  --no-parse-special     treat special tokens written in the text (\"<|endoftext|>\") as text\n"
            "  --no-post-process      do not add the post-processor's tokens (HF add_special_tokens=False)\n"
            "  --lossy                replace invalid UTF-8 by U+FFFD instead of failing\n"
            "  -j, --threads N        with --jsonl: encode lines on N threads (output order is kept)\n"
            "Reads FILE or standard input.\n");
}

/* Reads a whole stream into a malloc'd buffer. */
static char *slurp(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        char *nb = realloc(b, cap * 2);
        if (!nb) { free(b); return NULL; }
        b = nb;
        cap *= 2;
    }
    if (b && ferror(f)) { free(b); return NULL; }
    *len = n;
    return b;
}

/* --jsonl: lines are encoded in batches on a thread pool (each thread takes every nth line of
 * the batch), then printed in input order; the first bad line stops the run after the lines
 * before it are printed, as a sequential run would. */
#define BATCH 8192

typedef struct {
    const nx_tokenizer *tok;
    unsigned flags;
    const char *text;
    size_t begin[BATCH], end[BATCH];
    size_t n;
    nx_ids ids[BATCH];
    char *err[BATCH];   /* message for a failed line (malloc'd) */
} batch;

static void encode_batch(int ith, int nth, void *arg) {
    batch *b = arg;
    for (size_t i = (size_t)ith; i < b->n; i += (size_t)nth) {
        json_error_t jerr;
        char msg[512];
        json_t *obj = json_loadb(b->text + b->begin[i], b->end[i] - b->begin[i], JSON_ALLOW_NUL, &jerr);
        json_t *t = json_is_object(obj) ? json_object_get(obj, "text") : NULL;
        msg[0] = 0;
        if (!obj) snprintf(msg, sizeof msg, "invalid JSON: %s", jerr.text);
        else if (!json_is_string(t)) snprintf(msg, sizeof msg, "expected an object with a \"text\" string");
        else if (nx_tokenizer_encode(b->tok, json_string_value(t), json_string_length(t), b->flags, &b->ids[i]) != NX_OK)
            snprintf(msg, sizeof msg, "%s", nx_last_error());
        b->err[i] = msg[0] ? strdup(msg) : NULL;
        json_decref(obj);
    }
}

static int run_jsonl(const nx_tokenizer *tok, const char *text, size_t len, unsigned flags, int threads,
                     const char *name) {
    batch *b = calloc(1, sizeof *b);
    nx_pool *pool = threads > 1 ? nx_pool_create(threads) : NULL;
    if (!b) { fprintf(stderr, "neox tokenize: out of memory\n"); nx_pool_free(pool); return 1; }
    b->tok = tok;
    b->flags = flags;
    b->text = text;
    size_t p = 0, line = 0;
    int rc = 0;
    char num[16];
    while (p < len && rc == 0) {
        b->n = 0;
        while (p < len && b->n < BATCH) {
            const char *nl = memchr(text + p, '\n', len - p);
            size_t e = nl ? (size_t)(nl - text) : len;
            b->begin[b->n] = p;
            b->end[b->n++] = e;
            p = e + 1;
        }
        nx_pool_run(pool, encode_batch, b);
        for (size_t i = 0; i < b->n; i++) {
            line++;
            if (rc == 0 && b->err[i]) {
                fprintf(stderr, "neox tokenize: %s: line %zu: %s\n", name, line, b->err[i]);
                rc = 1;
            }
            if (rc == 0) {
                fputs("{\"ids\": [", stdout);
                for (size_t k = 0; k < b->ids[i].len; k++) {
                    int l = snprintf(num, sizeof num, k ? ", %d" : "%d", b->ids[i].data[k]);
                    fwrite(num, 1, (size_t)l, stdout);
                }
                fputs("]}\n", stdout);
            }
            free(b->err[i]);
            b->err[i] = NULL;
        }
    }
    for (size_t i = 0; i < BATCH; i++) nx_ids_free(&b->ids[i]);
    free(b);
    nx_pool_free(pool);
    return rc;
}

static void print_ids(FILE *out, const nx_ids *ids) {
    for (size_t i = 0; i < ids->len; i++) fprintf(out, i ? " %d" : "%d", ids->data[i]);
}

int cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *file = NULL;
    bool jsonl = false;
    unsigned flags = 0;
    long threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { usage(stdout); return 0; }
        if (!strcmp(a, "-t") || !strcmp(a, "--tokenizer")) {
            if (!(tok_path = cli_next_arg("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--jsonl")) jsonl = true;
        else if (!strcmp(a, "--no-parse-special")) flags |= NX_TOK_NO_PARSE_SPECIAL;
        else if (!strcmp(a, "--no-post-process")) flags |= NX_TOK_NO_POST_PROCESS;
        else if (!strcmp(a, "--lossy")) flags |= NX_TOK_LOSSY_UTF8;
        else if (!strcmp(a, "-j") || !strcmp(a, "--threads")) {
            const char *v = cli_next_arg("tokenize", argc, argv, &i);
            if (!v) return 2;
            if (!cli_parse_long(v, 1, 1024, &threads)) return cli_usage_error("tokenize", "bad --threads %s", v);
        }
        else if (a[0] == '-' && a[1]) return cli_usage_error("tokenize", "unknown option %s", a);
        else if (file) return cli_usage_error("tokenize", "more than one input file");
        else file = a;
    }
    if (!tok_path) return cli_usage_error("tokenize", "no tokenizer given (-t PATH)");
    nx_tokenizer *tok = NULL;
    nx_status st = nx_tokenizer_load(tok_path, &tok);
    if (st) return cli_fail("tokenize", st, "loading the tokenizer");
    FILE *in = file ? fopen(file, "rb") : stdin;
    if (!in) {
        nx_tokenizer_free(tok);
        fprintf(stderr, "neox tokenize: cannot open %s\n", file);
        return 1;
    }
    size_t len = 0;
    char *text = slurp(in, &len);
    if (file) fclose(in);
    if (!text) {
        nx_tokenizer_free(tok);
        fprintf(stderr, "neox tokenize: cannot read %s\n", file ? file : "standard input");
        return 1;
    }
    const char *name = file ? file : "<stdin>";
    int rc = 0;
    nx_ids ids = {0};
    if (!jsonl) {
        st = nx_tokenizer_encode(tok, text, len, flags, &ids);
        if (st) rc = cli_fail("tokenize", st, name);
        else {
            print_ids(stdout, &ids);
            fputc('\n', stdout);
        }
    } else {
        rc = run_jsonl(tok, text, len, flags, (int)threads, name);
    }
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(stderr, "neox tokenize: error writing the output\n");
        rc = 1;
    }
    nx_ids_free(&ids);
    free(text);
    nx_tokenizer_free(tok);
    return rc;
}
