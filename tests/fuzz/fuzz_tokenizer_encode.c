/* fuzz_tokenizer_encode.c - encode arbitrary bytes (invalid UTF-8 included) with two fixed
 * small tokenizers. The first byte picks flags. Checks, beyond not crashing: invalid UTF-8 is
 * refused unless NX_TOK_LOSSY_UTF8; without a normalizer decode(encode(x)) == x; the
 * streaming decoder's chunks add up to decode(). */
#define _GNU_SOURCE   /* memmem */
#include "neox.h"
#include "fuzz_tokenizer_common.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static nx_tokenizer *g_plain, *g_norm;

static void init(void) {
    char *a = fz_make_json("null", 0);
    char *b = fz_make_json("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"},{\"type\":\"Lowercase\"}]}", 1);
    if (nx_tokenizer_load_json(a, strlen(a), "plain", &g_plain) != NX_OK ||
        nx_tokenizer_load_json(b, strlen(b), "norm", &g_norm) != NX_OK) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s\n", nx_last_error());
        abort();
    }
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_plain) init();
    if (size < 1) return 0;
    unsigned sel = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    unsigned flags = (sel & 1 ? NX_TOK_NO_PARSE_SPECIAL : 0) | (sel & 2 ? NX_TOK_LOSSY_UTF8 : 0);
    nx_tokenizer *tok = sel & 4 ? g_norm : g_plain;
    nx_ids ids = {0};
    nx_text txt = {0};
    nx_status st = nx_tokenizer_encode(tok, text, len, flags, &ids);
    if (st == NX_OK) {
        if (nx_tokenizer_decode(tok, ids.data, ids.len, 0, &txt) != NX_OK) abort();
        /* byte-exact round trip, except where lstrip/rstrip tokens swallow whitespace */
        bool strips = memmem(text, len, "<m>", 3) || memmem(text, len, "[s]", 3);
        if (tok == g_plain && !strips && !(flags & NX_TOK_LOSSY_UTF8) && (txt.len != len || memcmp(txt.data, text, len) != 0))
            abort();
        nx_tok_stream *s = NULL;
        if (nx_tok_stream_create(tok, 0, &s) != NX_OK) abort();
        size_t total = 0;
        for (size_t i = 0; i < ids.len; i++) {
            const char *p;
            size_t n;
            if (nx_tok_stream_push(s, ids.data[i], &p, &n) != NX_OK) abort();
            if (total + n > txt.len || memcmp(txt.data + total, p, n) != 0) abort();
            total += n;
        }
        const char *p;
        size_t n;
        nx_tok_stream_flush(s, &p, &n);
        if (total + n != txt.len || memcmp(txt.data + total, p, n) != 0) abort();
        nx_tok_stream_free(s);
    } else if (st != NX_ERR_INVALID_ARG || (flags & NX_TOK_LOSSY_UTF8)) {
        abort();   /* only invalid UTF-8 may fail, and only without the lossy flag */
    }
    nx_ids_free(&ids);
    nx_text_free(&txt);
    return 0;
}
