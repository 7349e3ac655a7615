/*
 * docs.c - reading evaluation documents: JSON lines ({"text": ...} per line, as LAMBADA and
 * lm-eval's local json datasets) or one plain-text file.
 */
#include "eval/eval.h"

#include <jansson.h>
#include <string.h>

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && memcmp(s + a - b, suf, b) == 0;
}

static nx_status push(nx_eval_docs *d, size_t *cap, const char *text, size_t len) {
    if (d->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        char **t = nx__realloc(d->texts, nc * sizeof *t);
        if (!t) return nx__error(NX_ERR_NOMEM, "documents: %zu entries", nc);
        d->texts = t;
        size_t *l = nx__realloc(d->lens, nc * sizeof *l);
        if (!l) return nx__error(NX_ERR_NOMEM, "documents: %zu entries", nc);
        d->lens = l;
        *cap = nc;
    }
    char *c = nx__malloc(len + 1);
    if (!c) return nx__error(NX_ERR_NOMEM, "documents: %zu bytes", len);
    memcpy(c, text, len);
    c[len] = 0;
    d->texts[d->n] = c;
    d->lens[d->n] = len;
    d->n++;
    return NX_OK;
}

nx_status nx_eval_docs_parse(const char *data, size_t len, bool jsonl, const char *name, const char *key,
                             nx_eval_docs *out) {
    memset(out, 0, sizeof *out);
    if (!data && len) return nx__error(NX_ERR_INVALID_ARG, "nx_eval_docs_parse: NULL data");
    if (!name) name = "documents";
    if (!key) key = "text";
    nx_status st = NX_OK;
    size_t cap = 0;
    if (!jsonl) {
        st = push(out, &cap, data ? data : "", len);
        goto done;
    }
    size_t line = 0;
    for (size_t p = 0; p < len;) {
        size_t e = p;
        while (e < len && data[e] != '\n') e++;
        line++;
        size_t q = p;
        while (q < e && (data[q] == ' ' || data[q] == '\t' || data[q] == '\r')) q++;
        if (q < e) {
            json_error_t jerr;
            json_t *obj = json_loadb(data + p, e - p, JSON_ALLOW_NUL, &jerr);
            if (!obj) {
                st = nx__error(NX_ERR_FORMAT, "%s:%zu: invalid JSON: %s", name, line, jerr.text);
                goto done;
            }
            json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
            if (!json_is_string(v)) {
                json_decref(obj);
                st = nx__error(NX_ERR_FORMAT, "%s:%zu: expected a JSON object with a string field \"%s\"", name, line, key);
                goto done;
            }
            st = push(out, &cap, json_string_value(v), json_string_length(v));
            json_decref(obj);
            if (st != NX_OK) goto done;
        }
        p = e + 1;
    }
    if (out->n == 0) st = nx__error(NX_ERR_FORMAT, "%s: no documents", name);
done:
    if (st != NX_OK) nx_eval_docs_free(out);
    return st;
}

nx_status nx_eval_docs_load(const char *path, const char *key, nx_eval_docs *out) {
    memset(out, 0, sizeof *out);
    if (!path) return nx__error(NX_ERR_INVALID_ARG, "nx_eval_docs_load: NULL path");
    char *data = NULL;
    size_t len = 0;
    NX_TRY(nx__file_read_all(path, &data, &len));
    /* .json too: lm-eval's "json" datasets are JSON lines, and scoring JSON syntax as prose
     * would give a plausible-looking but meaningless perplexity. */
    bool jsonl = ends_with(path, ".jsonl") || ends_with(path, ".jsonlines") || ends_with(path, ".json");
    nx_status st = nx_eval_docs_parse(data, len, jsonl, path, key, out);
    nx__free(data);
    return st;
}

void nx_eval_docs_free(nx_eval_docs *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) nx__free(d->texts[i]);
    nx__free(d->texts);
    nx__free(d->lens);
    memset(d, 0, sizeof *d);
}
