/* cmd_detokenize.c - `neox detokenize`: token ids -> text.
 *
 *   neox detokenize -t TOKENIZER [--jsonl] [--skip-special] [FILE]
 *
 * Without --jsonl the input is whitespace-separated ids and the decoded bytes are written
 * as they are (byte-exact, no newline added). With --jsonl every input line is {"ids": [...]}
 * and every output line is {"text": ...}; JSON strings must be valid UTF-8, so there a
 * decoded byte sequence that is not UTF-8 is written with U+FFFD replacements (as HF decode
 * does). Errors name the input line. */
#include "cli.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox detokenize -t TOKENIZER [options] [FILE]\n"
            "  -t, --tokenizer PATH   tokenizer.json, a directory with one, or a model directory\n"
            "  --jsonl                input lines are {\"ids\": [...]}; output lines are {\"text\": ...}\n"
            "  --skip-special         drop special tokens (HF skip_special_tokens=True)\n"
            "Reads FILE or standard input.\n");
}

static char *slurp(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        char *nb = realloc(b, cap * 2 + 1);
        if (!nb) { free(b); return NULL; }
        b = nb;
        cap *= 2;
    }
    if (b && ferror(f)) { free(b); return NULL; }
    if (b) b[n] = 0;
    *len = n;
    return b;
}

/* Writes s as a JSON string, replacing invalid UTF-8 by U+FFFD. */
static void put_json_text(const char *s, size_t n) {
    /* jansson validates UTF-8; build a cleaned copy first */
    char *clean = malloc(3 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t l = c < 0x80 ? 1 : (c >= 0xC2 && c < 0xE0) ? 2 : (c >= 0xE0 && c < 0xF0) ? 3 : (c >= 0xF0 && c < 0xF5) ? 4 : 0;
        bool ok = l && i + l <= n;
        for (size_t j = 1; ok && j < l; j++) ok = ((unsigned char)s[i + j] & 0xC0) == 0x80;
        if (ok && l == 3) {
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xE0 && d < 0xA0) && !(c == 0xED && d >= 0xA0);
        }
        if (ok && l == 4) {
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xF0 && d < 0x90) && !(c == 0xF4 && d >= 0x90);
        }
        if (ok) { memcpy(clean + k, s + i, l); k += l; i += l; }
        else { memcpy(clean + k, "\xEF\xBF\xBD", 3); k += 3; i += 1; }
    }
    json_t *j = json_stringn(clean, k);
    free(clean);
    char *out = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs("{\"text\": ", stdout);
    fputs(out ? out : "\"\"", stdout);
    fputs("}\n", stdout);
    free(out);
    json_decref(j);
}

int cmd_detokenize(int argc, char **argv) {
    const char *tok_path = NULL, *file = NULL;
    bool jsonl = false;
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { usage(stdout); return 0; }
        if (!strcmp(a, "-t") || !strcmp(a, "--tokenizer")) {
            if (!(tok_path = cli_next_arg("detokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--jsonl")) jsonl = true;
        else if (!strcmp(a, "--skip-special")) flags |= NX_TOK_SKIP_SPECIAL;
        else if (a[0] == '-' && a[1]) return cli_usage_error("detokenize", "unknown option %s", a);
        else if (file) return cli_usage_error("detokenize", "more than one input file");
        else file = a;
    }
    if (!tok_path) return cli_usage_error("detokenize", "no tokenizer given (-t PATH)");
    nx_tokenizer *tok = NULL;
    nx_status st = nx_tokenizer_load(tok_path, &tok);
    if (st) return cli_fail("detokenize", st, "loading the tokenizer");
    FILE *in = file ? fopen(file, "rb") : stdin;
    if (!in) {
        nx_tokenizer_free(tok);
        fprintf(stderr, "neox detokenize: cannot open %s\n", file);
        return 1;
    }
    size_t len = 0;
    char *text = slurp(in, &len);
    if (file) fclose(in);
    const char *name = file ? file : "<stdin>";
    if (!text) {
        nx_tokenizer_free(tok);
        fprintf(stderr, "neox detokenize: cannot read %s\n", name);
        return 1;
    }
    int rc = 0;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    nx_text out = {0};
    if (!jsonl) {
        size_t line = 1, p = 0;
        while (p < len && rc == 0) {
            if (isspace((unsigned char)text[p])) { line += text[p] == '\n'; p++; continue; }
            size_t e = p;
            while (e < len && !isspace((unsigned char)text[e])) e++;
            char save = text[e];
            text[e] = 0;
            long v;
            if (!cli_parse_long(text + p, 0, INT32_MAX, &v)) {
                fprintf(stderr, "neox detokenize: %s: line %zu: \"%.40s\" is not a token id\n", name, line, text + p);
                rc = 1;
            }
            text[e] = save;
            if (rc) break;
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                int32_t *np = realloc(ids, cap * sizeof *np);
                if (!np) { fprintf(stderr, "neox detokenize: out of memory\n"); rc = 1; break; }
                ids = np;
            }
            ids[n++] = (int32_t)v;
            p = e;
        }
        if (rc == 0) {
            st = nx_tokenizer_decode(tok, ids, n, flags, &out);
            if (st) rc = cli_fail("detokenize", st, name);
            else fwrite(out.data, 1, out.len, stdout);
        }
    } else {
        size_t p = 0, line = 0;
        while (p < len && rc == 0) {
            const char *nl = memchr(text + p, '\n', len - p);
            size_t e = nl ? (size_t)(nl - text) : len;
            line++;
            json_error_t err;
            json_t *obj = json_loadb(text + p, e - p, 0, &err);
            json_t *arr = json_is_object(obj) ? json_object_get(obj, "ids") : NULL;
            if (!obj) {
                fprintf(stderr, "neox detokenize: %s: line %zu: invalid JSON: %s\n", name, line, err.text);
                rc = 1;
            } else if (!json_is_array(arr)) {
                fprintf(stderr, "neox detokenize: %s: line %zu: expected an object with an \"ids\" array\n", name, line);
                rc = 1;
            } else {
                n = 0;
                size_t k;
                json_t *x;
                json_array_foreach(arr, k, x) {
                    if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX) {
                        fprintf(stderr, "neox detokenize: %s: line %zu: ids[%zu] is not a token id\n", name, line, k);
                        rc = 1;
                        break;
                    }
                    if (n == cap) {
                        cap = cap ? cap * 2 : 1024;
                        int32_t *np = realloc(ids, cap * sizeof *np);
                        if (!np) { rc = 1; break; }
                        ids = np;
                    }
                    ids[n++] = (int32_t)json_integer_value(x);
                }
                if (rc == 0 && (st = nx_tokenizer_decode(tok, ids, n, flags, &out))) {
                    fprintf(stderr, "neox detokenize: %s: line %zu: %s\n", name, line, nx_last_error());
                    rc = 1;
                } else if (rc == 0)
                    put_json_text(out.data, out.len);
            }
            json_decref(obj);
            p = e + 1;
        }
    }
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(stderr, "neox detokenize: error writing the output\n");
        rc = 1;
    }
    free(ids);
    free(text);
    nx_text_free(&out);
    nx_tokenizer_free(tok);
    return rc;
}
