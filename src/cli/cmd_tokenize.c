/* cmd_tokenize.c - `neox tokenize`: text -> token ids.
 *
 *   neox tokenize -t TOKENIZER [--jsonl] [--no-parse-special] [--no-post-process] [--lossy] [FILE]
 *
 * Without --jsonl the whole input (FILE or stdin) is one text and its ids are printed as one
 * space-separated line. With --jsonl every input line is a JSON object with a "text" string
 * and every output line is {"ids": [...]}, in order. Errors name the input line. */
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

static void print_ids(FILE *out, const nx_ids *ids) {
    for (size_t i = 0; i < ids->len; i++) fprintf(out, i ? " %d" : "%d", ids->data[i]);
}

int cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *file = NULL;
    bool jsonl = false;
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { usage(stdout); return 0; }
        if (!strcmp(a, "-t") || !strcmp(a, "--tokenizer")) {
            if (!(tok_path = cli_next_arg("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--jsonl")) jsonl = true;
        else if (!strcmp(a, "--no-parse-special")) flags |= NX_TOK_NO_PARSE_SPECIAL;
        else if (!strcmp(a, "--no-post-process")) flags |= NX_TOK_NO_POST_PROCESS;
        else if (!strcmp(a, "--lossy")) flags |= NX_TOK_LOSSY_UTF8;
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
        size_t p = 0, line = 0;
        while (p < len && rc == 0) {
            const char *nl = memchr(text + p, '\n', len - p);
            size_t e = nl ? (size_t)(nl - text) : len;
            line++;
            json_error_t err;
            json_t *obj = json_loadb(text + p, e - p, JSON_ALLOW_NUL, &err);
            json_t *t = json_is_object(obj) ? json_object_get(obj, "text") : NULL;
            if (!obj) {
                fprintf(stderr, "neox tokenize: %s: line %zu: invalid JSON: %s\n", name, line, err.text);
                rc = 1;
            } else if (!json_is_string(t)) {
                fprintf(stderr, "neox tokenize: %s: line %zu: expected an object with a \"text\" string\n", name, line);
                rc = 1;
            } else if ((st = nx_tokenizer_encode(tok, json_string_value(t), json_string_length(t), flags, &ids))) {
                fprintf(stderr, "neox tokenize: %s: line %zu: %s\n", name, line, nx_last_error());
                rc = 1;
            } else {
                fputs("{\"ids\": [", stdout);
                for (size_t i = 0; i < ids.len; i++) fprintf(stdout, i ? ", %d" : "%d", ids.data[i]);
                fputs("]}\n", stdout);
            }
            json_decref(obj);
            p = e + 1;
        }
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
