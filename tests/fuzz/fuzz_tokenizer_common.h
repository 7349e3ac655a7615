/* fuzz_tokenizer_common.h - a small byte-level BPE tokenizer.json built in memory for the
 * tokenizer fuzz targets: the 256 byte stand-ins, a few merges, added tokens with every
 * matching option, and optionally a normalizer. */
#ifndef FUZZ_TOKENIZER_COMMON_H
#define FUZZ_TOKENIZER_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned fz_byte_cp(unsigned b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        k += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF));
    return 0x100 + k;
}

/* JSON string body of the stand-in of byte b */
static void fz_tok(char *o, unsigned b) {
    unsigned cp = fz_byte_cp(b);
    if (cp == '"' || cp == '\\') sprintf(o, "\\%c", (char)cp);
    else if (cp < 0x80) sprintf(o, "%c", (char)cp);
    else sprintf(o, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
}

/* Returns a malloc'd tokenizer.json; normalizer is a JSON value ("null", "{\"type\":\"NFC\"}"...). */
static char *fz_make_json(const char *normalizer, int prefix_space) {
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    char t[8];
    n += (size_t)snprintf(s + n, cap - n, "{\"version\":\"1.0\",\"normalizer\":%s,"
                          "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":%s,\"use_regex\":true},"
                          "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
                          "\"added_tokens\":["
                          "{\"id\":266,\"content\":\"<|endoftext|>\",\"special\":true,\"normalized\":false},"
                          "{\"id\":267,\"content\":\"  \",\"special\":false,\"normalized\":true},"
                          "{\"id\":268,\"content\":\"<m>\",\"special\":true,\"lstrip\":true,\"normalized\":false},"
                          "{\"id\":269,\"content\":\"[s]\",\"special\":false,\"rstrip\":true,\"normalized\":false},"
                          "{\"id\":270,\"content\":\"hi\",\"special\":false,\"single_word\":true,\"normalized\":true}]," 
                          "\"model\":{\"type\":\"BPE\",\"vocab\":{",
                          normalizer, prefix_space ? "true" : "false");
    for (unsigned b = 0; b < 256; b++) {
        fz_tok(t, b);
        n += (size_t)snprintf(s + n, cap - n, "%s\"%s\":%u", b ? "," : "", t, b);
    }
    /* merged tokens: "Ġt" "he" "Ġthe" "in" "ing" "ÃĤ" (a UTF-8 pair) "aa" "aaaa" "ĠĠ" "11" */
    fz_tok(t, ' ');
    n += (size_t)snprintf(s + n, cap - n,
                          ",\"%st\":256,\"he\":257,\"%sthe\":258,\"in\":259,\"ing\":260,\"aa\":261,\"aaaa\":262,"
                          "\"%s%s\":263,\"11\":264,\"111\":265},\"merges\":[\"%s t\",\"h e\",\"%st he\",\"i n\","
                          "[\"in\",\"g\"],\"a a\",\"aa aa\",\"%s %s\",\"1 1\",\"11 1\"]}}",
                          t, t, t, t, t, t, t, t);
    return s;
}

#endif
