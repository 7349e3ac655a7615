/*
 * test_tokenizer.c - the tokenizer against HF `tokenizers` 0.23.3: ids of every document of a
 * 1.7 MB multilingual corpus for the GPT-NeoX-20B and GPT-2 files and two small variant
 * tokenizers (goldens made by tools/fixtures/make_tokenizer_goldens.py), round trips, the
 * documented anchors, vocab.json + merges.txt loading, the streaming decoder, linear time on
 * 1 MB words, threads, and the load errors.
 */
#include "neox.h"
#include "test.h"

#include <stdbool.h>
#include <time.h>
#include <zstd.h>

/* ---- fixture files ---------------------------------------------------------------------- */

typedef struct { unsigned char *data; size_t len; } blob;

static blob read_zst(const char *path) {
    blob b = {0};
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); return b; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *z = malloc((size_t)n);
    if (fread(z, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(z); return b; }
    fclose(f);
    unsigned long long sz = ZSTD_getFrameContentSize(z, (size_t)n);
    if (sz == ZSTD_CONTENTSIZE_ERROR || sz == ZSTD_CONTENTSIZE_UNKNOWN) { free(z); return b; }
    b.data = malloc(sz + 1);
    size_t got = ZSTD_decompress(b.data, sz, z, (size_t)n);
    free(z);
    if (ZSTD_isError(got) || got != sz) { free(b.data); b.data = NULL; return b; }
    b.len = got;
    return b;
}

static uint32_t rd32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

typedef struct { const char *text; size_t len; } doc;
typedef struct { uint64_t hash; uint32_t n; const unsigned char *ids; } gold;   /* ids: u16 LE */

static size_t parse_corpus(blob b, doc **out) {
    if (b.len < 12 || memcmp(b.data, "NXTC", 4) != 0) return 0;
    size_t n = rd32(b.data + 8), off = 12;
    *out = calloc(n + 1, sizeof **out);
    for (size_t i = 0; i < n; i++) {
        size_t l = rd32(b.data + off);
        (*out)[i].text = (const char *)b.data + off + 4;
        (*out)[i].len = l;
        off += 4 + l;
    }
    return off == b.len ? n : 0;
}

static size_t parse_gold(blob b, gold **out) {
    if (b.len < 12 || memcmp(b.data, "NXTG", 4) != 0) return 0;
    size_t n = rd32(b.data + 8), off = 12;
    *out = calloc(n + 1, sizeof **out);
    for (size_t i = 0; i < n; i++) {
        (*out)[i].hash = rd64(b.data + off);
        (*out)[i].n = rd32(b.data + off + 8);
        (*out)[i].ids = b.data + off + 12;
        off += 12 + 2 * (size_t)(*out)[i].n;
    }
    return off == b.len ? n : 0;
}

static int gold_id(const gold *g, size_t k) { return g->ids[2 * k] | (g->ids[2 * k + 1] << 8); }

static uint64_t fnv1a64(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001B3ull;
    return h;
}

static const char *asset(const char *rel) {
    static char buf[4][1024];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", assets_dir(), rel);
    return buf[slot];
}

/* Loads an asset tokenizer; NULL (and a note) when the assets are absent outside CI. */
static nx_tokenizer *load_asset(const char *rel, int *missing) {
    nx_tokenizer *t = NULL;
    if (nx_tokenizer_load(asset(rel), &t) != NX_OK) {
        fprintf(stderr, "cannot load %s: %s\n", asset(rel), nx_last_error());
        *missing = 1;
        return NULL;
    }
    *missing = 0;
    return t;
}

#define NEED_ASSET(tok, rel)                                                                   \
    nx_tokenizer *tok = load_asset(rel, &(int){0});                                            \
    if (!tok) {                                                                                \
        CHECK_MSG(!running_in_ci(), "asset %s missing under CI", rel);                         \
        printf("SKIPPED (no assets): %s\n", __func__);                                         \
        return;                                                                                \
    }

static doc *g_docs;
static size_t g_ndocs;
static blob g_corpus;

/* Compares the encoding of every document with the golden file; returns mismatching docs. */
static int compare_all(nx_tokenizer *tok, const char *golden, const doc *docs, size_t ndocs, unsigned flags,
                       bool roundtrip, size_t *nids_total) {
    blob gb = read_zst(fixture_path(golden));
    gold *g = NULL;
    size_t ng = parse_gold(gb, &g);
    if (ng != ndocs) {
        fprintf(stderr, "%s: %zu documents, corpus has %zu\n", golden, ng, ndocs);
        free(gb.data); free(g);
        return -1;
    }
    nx_ids ids = {0};
    nx_text txt = {0};
    int bad = 0;
    size_t total = 0;
    for (size_t i = 0; i < ndocs; i++) {
        nx_status st = nx_tokenizer_encode(tok, docs[i].text, docs[i].len, flags, &ids);
        if (st != NX_OK) {
            if (bad++ < 5) fprintf(stderr, "%s doc %zu: encode failed: %s\n", golden, i, nx_last_error());
            continue;
        }
        total += ids.len;
        size_t k = 0;
        while (k < ids.len && k < g[i].n && ids.data[k] == gold_id(&g[i], k)) k++;
        if (k != ids.len || k != g[i].n) {
            if (bad++ < 5) {
                fprintf(stderr, "%s doc %zu (%zu bytes): %zu ids, HF %u; first difference at %zu: ours", golden, i,
                        docs[i].len, ids.len, g[i].n, k);
                for (size_t j = k; j < k + 6 && j < ids.len; j++) fprintf(stderr, " %d", ids.data[j]);
                fprintf(stderr, " / HF");
                for (size_t j = k; j < k + 6 && j < g[i].n; j++) fprintf(stderr, " %d", gold_id(&g[i], j));
                fprintf(stderr, "\n");
            }
            continue;
        }
        if (roundtrip && g[i].hash) {
            st = nx_tokenizer_decode(tok, ids.data, ids.len, 0, &txt);
            if (st != NX_OK || fnv1a64(txt.data, txt.len) != g[i].hash) {
                if (bad++ < 5) fprintf(stderr, "%s doc %zu: decode(encode(x)) != normalized x\n", golden, i);
            }
        }
    }
    if (nids_total) *nids_total = total;
    nx_ids_free(&ids);
    nx_text_free(&txt);
    free(gb.data);
    free(g);
    return bad;
}

static void load_corpus(void) {
    if (g_docs) return;
    g_corpus = read_zst(fixture_path("tokenizer/corpus.bin.zst"));
    g_ndocs = parse_corpus(g_corpus, &g_docs);
}

static void test_corpus_neox20b(void) {
    load_corpus();
    CHECK(g_ndocs > 500 && g_corpus.len > 1000000);
    NEED_ASSET(tok, "tokenizers/gpt-neox-20b/tokenizer.json");
    size_t n = 0;
    int bad = compare_all(tok, "tokenizer/golden_neox20b.bin.zst", g_docs, g_ndocs, 0, true, &n);
    printf("  neox20b: %zu documents, %zu ids, %d mismatches\n", g_ndocs, n, bad);
    nx_tokenizer_free(tok);
    CHECK_EQ_INT(bad, 0);
}

static void test_corpus_gpt2(void) {
    load_corpus();
    NEED_ASSET(tok, "tokenizers/gpt2/tokenizer.json");
    size_t n = 0;
    int bad = compare_all(tok, "tokenizer/golden_gpt2.bin.zst", g_docs, g_ndocs, 0, true, &n);
    printf("  gpt2: %zu documents, %zu ids, %d mismatches\n", g_ndocs, n, bad);
    nx_tokenizer_free(tok);
    CHECK_EQ_INT(bad, 0);
}

/* vocab.json + merges.txt (here OpenAI's encoder.json + vocab.bpe) must match tokenizer.json */
static void test_gpt2_vocab_merges(void) {
    load_corpus();
    NEED_ASSET(tok, "tokenizers/gpt2/encoder.json");
    CHECK_EQ_INT(nx_tokenizer_vocab_size(tok), 50257);
    CHECK_EQ_INT(nx_tokenizer_eos_id(tok), 50256);
    int bad = compare_all(tok, "tokenizer/golden_gpt2.bin.zst", g_docs, g_ndocs, 0, true, NULL);
    nx_tokenizer_free(tok);
    CHECK_EQ_INT(bad, 0);
}

static void test_special_off(void) {
    load_corpus();
    /* the documents with "<|" in them, in corpus order, as the generator selected them */
    doc *sd = calloc(g_ndocs + 1, sizeof *sd);
    size_t ns = 0;
    for (size_t i = 0; i < g_ndocs; i++) {
        for (size_t k = 0; k + 1 < g_docs[i].len; k++)
            if (g_docs[i].text[k] == '<' && g_docs[i].text[k + 1] == '|') { sd[ns++] = g_docs[i]; break; }
    }
    int bad = 0;
    {
        NEED_ASSET(tok, "tokenizers/gpt-neox-20b/tokenizer.json");
        bad += compare_all(tok, "tokenizer/special_neox20b.bin.zst", sd, ns, NX_TOK_NO_PARSE_SPECIAL, false, NULL);
        nx_tokenizer_free(tok);
    }
    {
        NEED_ASSET(tok2, "tokenizers/gpt2/tokenizer.json");
        bad += compare_all(tok2, "tokenizer/special_gpt2.bin.zst", sd, ns, NX_TOK_NO_PARSE_SPECIAL, false, NULL);
        nx_tokenizer_free(tok2);
    }
    free(sd);
    CHECK(ns >= 3);
    CHECK_EQ_INT(bad, 0);
}

static void test_variants(void) {
    blob vb = read_zst(fixture_path("tokenizer/variant_corpus.bin.zst"));
    doc *vd = NULL;
    size_t nv = parse_corpus(vb, &vd);
    CHECK(nv > 100);
    int bad = 0;
    const char *names[] = {"variant1", "variant2"};
    for (int v = 0; v < 2; v++) {
        char jp[64], gp[64];
        snprintf(jp, sizeof jp, "tokenizer/%s.json", names[v]);
        snprintf(gp, sizeof gp, "tokenizer/golden_%s.bin.zst", names[v]);
        nx_tokenizer *tok = NULL;
        if (nx_tokenizer_load(fixture_path(jp), &tok) != NX_OK) {
            fprintf(stderr, "%s: %s\n", jp, nx_last_error());
            bad++;
            continue;
        }
        int b = compare_all(tok, gp, vd, nv, 0, false, NULL);
        printf("  %s: %zu documents, %d mismatches\n", names[v], nv, b);
        bad += b;
        nx_tokenizer_free(tok);
    }
    free(vd);
    free(vb.data);
    CHECK_EQ_INT(bad, 0);
}

static int encode_eq(nx_tokenizer *tok, const char *s, const int *want, size_t n) {
    nx_ids ids = {0};
    int ok = nx_tokenizer_encode(tok, s, strlen(s), 0, &ids) == NX_OK && ids.len == n;
    for (size_t i = 0; ok && i < n; i++) ok = ids.data[i] == want[i];
    if (!ok) {
        fprintf(stderr, "encode(\"%s\") =", s);
        for (size_t i = 0; i < ids.len; i++) fprintf(stderr, " %d", ids.data[i]);
        fprintf(stderr, "\n");
    }
    nx_ids_free(&ids);
    return ok;
}

/* The anchors of docs/ARCHITECTURES.md 1.6 and 3.5 and of the asset provenance. */
static void test_anchors(void) {
    NEED_ASSET(neox, "tokenizers/gpt-neox-20b/tokenizer.json");
    CHECK(encode_eq(neox, "Hello world", (int[]){12092, 1533}, 2));
    CHECK(encode_eq(neox, "I believe the meaning of life is", (int[]){42, 2868, 253, 4495, 273, 1495, 310}, 7));
    CHECK(encode_eq(neox, "丁", (int[]){3218, 212}, 2));
    CHECK(encode_eq(neox, "七", (int[]){3218, 214}, 2));
    CHECK_EQ_INT(nx_tokenizer_vocab_size(neox), 50277);
    CHECK_EQ_INT(nx_tokenizer_eos_id(neox), 0);
    CHECK_EQ_INT(nx_tokenizer_bos_id(neox), 0);
    CHECK_EQ_INT(nx_tokenizer_pad_id(neox), 1);
    CHECK(nx_tokenizer_is_special(neox, 0));
    CHECK(!nx_tokenizer_is_special(neox, 50254));
    CHECK(strcmp(nx_tokenizer_id_to_token(neox, 1533), "\xC4\xA0world") == 0);
    CHECK_EQ_INT(nx_tokenizer_token_to_id(neox, "<|padding|>"), 1);
    CHECK_EQ_INT(nx_tokenizer_token_to_id(neox, "no such token"), -1);
    CHECK(nx_tokenizer_id_to_token(neox, 50277) == NULL);
    nx_tokenizer_free(neox);
    NEED_ASSET(gpt2, "tokenizers/gpt2/tokenizer.json");
    CHECK(encode_eq(gpt2, "Hello world", (int[]){15496, 995}, 2));
    CHECK(encode_eq(gpt2, " Hello world", (int[]){18435, 995}, 2));
    CHECK(encode_eq(gpt2, "<|endoftext|>", (int[]){50256}, 1));
    CHECK_EQ_INT(nx_tokenizer_vocab_size(gpt2), 50257);
    CHECK_EQ_INT(nx_tokenizer_pad_id(gpt2), -1);
    nx_tokenizer_free(gpt2);
}

static void test_decode(void) {
    NEED_ASSET(tok, "tokenizers/gpt-neox-20b/tokenizer.json");
    nx_text t = {0};
    int32_t ids[] = {0, 12092, 1533, 50254, 1};
    CHECK_EQ_INT(nx_tokenizer_decode(tok, ids, 5, 0, &t), NX_OK);
    CHECK(strcmp(t.data, "<|endoftext|>Hello world                        <|padding|>") == 0);
    CHECK_EQ_INT(nx_tokenizer_decode(tok, ids, 5, NX_TOK_SKIP_SPECIAL, &t), NX_OK);
    CHECK(strcmp(t.data, "Hello world                        ") == 0);
    int32_t bad[] = {12092, 50277};
    CHECK_EQ_INT(nx_tokenizer_decode(tok, bad, 2, 0, &t), NX_ERR_RANGE);
    CHECK_STR_CONTAINS(nx_last_error(), "50277");
    bad[1] = -3;
    CHECK_EQ_INT(nx_tokenizer_decode(tok, bad, 2, 0, &t), NX_ERR_RANGE);
    CHECK_EQ_INT(nx_tokenizer_decode(tok, NULL, 0, 0, &t), NX_OK);
    CHECK_EQ_INT(t.len, 0);
    nx_text_free(&t);
    nx_tokenizer_free(tok);
}

/* Streaming: chunks never split a UTF-8 character and concatenate to decode(). */
static void test_stream(void) {
    load_corpus();
    NEED_ASSET(tok, "tokenizers/gpt-neox-20b/tokenizer.json");
    nx_ids ids = {0};
    nx_text full = {0};
    nx_tok_stream *s = NULL;
    CHECK_EQ_INT(nx_tok_stream_create(tok, 0, &s), NX_OK);
    int bad = 0;
    for (size_t d = 0; d < g_ndocs; d += 7) {
        if (nx_tokenizer_encode(tok, g_docs[d].text, g_docs[d].len, 0, &ids) != NX_OK) { bad++; continue; }
        nx_tokenizer_decode(tok, ids.data, ids.len, 0, &full);
        char *acc = malloc(full.len + 1);
        size_t al = 0;
        for (size_t i = 0; i < ids.len; i++) {
            const char *p;
            size_t n;
            if (nx_tok_stream_push(s, ids.data[i], &p, &n) != NX_OK) { bad++; break; }
            /* every chunk is whole characters: valid UTF-8 by itself (documents are valid) */
            nx_ids tmp = {0};
            if (n && nx_tokenizer_encode(tok, p, n, NX_TOK_NO_PARSE_SPECIAL, &tmp) != NX_OK) bad++;
            nx_ids_free(&tmp);
            memcpy(acc + al, p, n);
            al += n;
        }
        const char *p;
        size_t n;
        nx_tok_stream_flush(s, &p, &n);
        memcpy(acc + al, p, n);
        al += n;
        if (al != full.len || memcmp(acc, full.data, al) != 0) bad++;
        free(acc);
    }
    /* a 4-byte character split over bytes: "🙂" is 4 byte tokens in GPT-NeoX-20B */
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(nx_tokenizer_encode(tok, "\xF0\x9F\x99\x82", 4, 0, &ids), NX_OK);
    CHECK(ids.len >= 2);
    size_t outlen = 0;
    for (size_t i = 0; i < ids.len; i++) {
        const char *p;
        size_t n;
        CHECK_EQ_INT(nx_tok_stream_push(s, ids.data[i], &p, &n), NX_OK);
        if (i + 1 < ids.len) CHECK_EQ_INT(n, 0);
        outlen += n;
    }
    CHECK_EQ_INT(outlen, 4);
    CHECK_EQ_INT(nx_tok_stream_push(s, 99999, &(const char *){0}, &(size_t){0}), NX_ERR_RANGE);
    nx_tok_stream_free(s);
    nx_ids_free(&ids);
    nx_text_free(&full);
    nx_tokenizer_free(tok);
}

/* A 1 MiB word of one letter and a 1 MiB run of spaces: O(n^2) would take hours. The bound
 * is on CPU time, so a loaded machine does not fail it; under the sanitizers (5-10x slower)
 * the input is 256 KiB, which still takes minutes when quadratic. */
static void test_linear_time(void) {
    bool san = getenv("NX_SANITIZED") != NULL;
    size_t n = san ? (size_t)1 << 18 : (size_t)1 << 20;
    char *big = malloc(n + 1);
    double limit = san ? 20.0 : 5.0;
    const char *files[] = {"tokenizers/gpt-neox-20b/tokenizer.json", "tokenizers/gpt2/tokenizer.json"};
    const char fills[] = {'a', ' '};
    for (int f = 0; f < 2; f++) {
        NEED_ASSET(tok, files[f]);
        nx_ids ids = {0};
        nx_text txt = {0};
        for (int k = 0; k < 2; k++) {
            memset(big, fills[k], n);
            clock_t c0 = clock();
            CHECK_EQ_INT(nx_tokenizer_encode(tok, big, n, 0, &ids), NX_OK);
            double dt = (double)(clock() - c0) / CLOCKS_PER_SEC;
            printf("  %s: %zu KiB of 0x%02x -> %zu ids in %.3f s CPU\n", files[f], n >> 10, fills[k], ids.len, dt);
            CHECK(dt < limit);
            CHECK(ids.len > 0 && ids.len <= n);
            CHECK_EQ_INT(nx_tokenizer_decode(tok, ids.data, ids.len, 0, &txt), NX_OK);
            CHECK(txt.len == n && memcmp(txt.data, big, n) == 0);
        }
        nx_ids_free(&ids);
        nx_text_free(&txt);
        nx_tokenizer_free(tok);
    }
    free(big);
}

typedef struct { nx_tokenizer *tok; const doc *docs; size_t n; const gold *g; int bad[8]; } mt_arg;

static void mt_fn(int ith, int nth, void *p) {
    mt_arg *a = p;
    nx_ids ids = {0};
    for (int rep = 0; rep < 1; rep++)
        for (size_t i = (size_t)ith; i < a->n; i += (size_t)nth) {
            if (nx_tokenizer_encode(a->tok, a->docs[i].text, a->docs[i].len, 0, &ids) != NX_OK || ids.len != a->g[i].n) {
                a->bad[ith]++;
                continue;
            }
            for (size_t k = 0; k < ids.len; k++)
                if (ids.data[k] != gold_id(&a->g[i], k)) { a->bad[ith]++; break; }
        }
    nx_ids_free(&ids);
}

/* Concurrent encodes share the cache: results must not change. */
static void test_threads(void) {
    load_corpus();
    NEED_ASSET(tok, "tokenizers/gpt2/tokenizer.json");
    blob gb = read_zst(fixture_path("tokenizer/golden_gpt2.bin.zst"));
    gold *g = NULL;
    CHECK_EQ_INT(parse_gold(gb, &g), g_ndocs);
    nx_pool *pool = nx_pool_create(4);
    mt_arg a = {tok, g_docs, g_ndocs, g, {0}};
    nx_pool_run(pool, mt_fn, &a);
    nx_pool_free(pool);
    int bad = 0;
    for (int i = 0; i < 8; i++) bad += a.bad[i];
    free(g);
    free(gb.data);
    nx_tokenizer_free(tok);
    CHECK_EQ_INT(bad, 0);
}

static void test_invalid_utf8(void) {
    NEED_ASSET(tok, "tokenizers/gpt2/tokenizer.json");
    nx_ids ids = {0};
    const char bad[] = "ok \xC3\x28 \xED\xA0\x80 \xF4\x90\x80\x80 \xE2\x82";
    CHECK_EQ_INT(nx_tokenizer_encode(tok, bad, sizeof bad - 1, 0, &ids), NX_ERR_INVALID_ARG);
    CHECK_STR_CONTAINS(nx_last_error(), "byte offset 3");
    /* lossy: each maximal ill-formed subsequence becomes one U+FFFD (as CPython decodes it) */
    CHECK_EQ_INT(nx_tokenizer_encode(tok, bad, sizeof bad - 1, NX_TOK_LOSSY_UTF8, &ids), NX_OK);
    nx_text t = {0};
    CHECK_EQ_INT(nx_tokenizer_decode(tok, ids.data, ids.len, 0, &t), NX_OK);
    const char want[] = "ok \xEF\xBF\xBD( \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                        "\xEF\xBF\xBD \xEF\xBF\xBD";
    CHECK_MSG(t.len == sizeof want - 1 && memcmp(t.data, want, t.len) == 0, "got \"%s\"", t.data);
    /* embedded NUL is text like any other */
    CHECK_EQ_INT(nx_tokenizer_encode(tok, "a\0b", 3, 0, &ids), NX_OK);
    CHECK_EQ_INT(nx_tokenizer_decode(tok, ids.data, ids.len, 0, &t), NX_OK);
    CHECK(t.len == 3 && memcmp(t.data, "a\0b", 3) == 0);
    nx_text_free(&t);
    nx_ids_free(&ids);
    nx_tokenizer_free(tok);
}

static nx_status load_str(const char *json, nx_tokenizer **t) {
    return nx_tokenizer_load_json(json, strlen(json), "test.json", t);
}

static void test_load_errors(void) {
    nx_tokenizer *t = NULL;
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": 0", &t), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "test.json: invalid JSON at line 1");
    CHECK_EQ_INT(load_str("[1, 2]", &t), NX_ERR_FORMAT);
    CHECK_EQ_INT(load_str("{\"version\": \"1.0\"}", &t), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "no \"model\"");
    CHECK_EQ_INT(load_str("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", &t), NX_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(nx_last_error(), "model.type \"WordPiece\"");
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}}", &t), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "model.merges[0]: token \"c\" is not in the vocabulary");
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", &t), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "merged token \"ab\"");
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b c\"]}}", &t), NX_ERR_FORMAT);
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", &t), NX_ERR_FORMAT);
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": -1}}}", &t), NX_ERR_RANGE);
    CHECK_STR_CONTAINS(nx_last_error(), "model.vocab[\"a\"]");
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": 99999999999}}}", &t), NX_ERR_RANGE);
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": \"x\"}}}", &t), NX_ERR_RANGE);
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": 0, \"b\": 0}}}", &t), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "id 0 is used by both");
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {\"a\": 0, \"a\": 1}}}", &t), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "duplicate");
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {}}, \"added_tokens\": [{\"id\": -5, \"content\": \"x\"}]}", &t),
                 NX_ERR_RANGE);
    CHECK_STR_CONTAINS(nx_last_error(), "added_tokens[0].id");
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {}}, \"normalizer\": {\"type\": \"BertNormalizer\"}}", &t),
                 NX_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(nx_last_error(), "normalizer type \"BertNormalizer\"");
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}", &t),
                 NX_ERR_UNSUPPORTED);
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {}, \"dropout\": 0.1}}", &t), NX_ERR_UNSUPPORTED);
    CHECK_EQ_INT(load_str("{\"model\": {\"vocab\": {}, \"unk_token\": \"<unk>\"}}", &t), NX_ERR_FORMAT);
    CHECK(t == NULL);
    CHECK_EQ_INT(nx_tokenizer_load("/nonexistent/tokenizer.json", &t), NX_ERR_NOT_FOUND);
    CHECK_EQ_INT(nx_tokenizer_load(NX_FIXTURES, &t), NX_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(nx_last_error(), "no tokenizer.json");
    /* every truncation of a small valid file fails cleanly or loads */
    const char *ok = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [[\"a\", \"b\"]]},"
                     " \"added_tokens\": [{\"id\": 3, \"content\": \"<x>\", \"special\": true}]}";
    for (size_t n = 0; n < strlen(ok); n++) {
        nx_status st = nx_tokenizer_load_json(ok, n, "trunc.json", &t);
        CHECK(st == NX_ERR_FORMAT);
    }
    /* bytes without a vocabulary entry and no unk_token are dropped (HF): a word can give no
     * ids at all, also when it comes back from the cache */
    const char *sparse = "{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    CHECK_EQ_INT(nx_tokenizer_load_json(sparse, strlen(sparse), "sparse.json", &t), NX_OK);
    nx_ids none = {0};
    for (int rep = 0; rep < 2; rep++) {
        CHECK_EQ_INT(nx_tokenizer_encode(t, "bb", 2, 0, &none), NX_OK);
        CHECK_EQ_INT(none.len, 0);
    }
    CHECK_EQ_INT(nx_tokenizer_encode(t, "bab", 3, 0, &none), NX_OK);
    CHECK(none.len == 1 && none.data[0] == 0);
    nx_ids_free(&none);
    nx_tokenizer_free(t);
    CHECK_EQ_INT(nx_tokenizer_load_json(ok, strlen(ok), "ok.json", &t), NX_OK);
    nx_ids ids = {0};
    CHECK_EQ_INT(nx_tokenizer_encode(t, "ab<x>a", 6, 0, &ids), NX_OK);
    CHECK(ids.len == 3 && ids.data[0] == 2 && ids.data[1] == 3 && ids.data[2] == 0);
    nx_ids_free(&ids);
    nx_tokenizer_free(t);
}

/* A model directory: tokenizer.json plus special_tokens_map.json naming the specials. */
static void test_model_dir(void) {
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/tok_model_dir", NX_BINARY_DIR);
    snprintf(path, sizeof path, "mkdir -p '%s'", dir);
    CHECK(system(path) == 0);
    FILE *in = fopen(fixture_path("tokenizer/variant1.json"), "rb");
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *out = fopen(path, "wb");
    CHECK(in && out);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    snprintf(path, sizeof path, "%s/special_tokens_map.json", dir);
    out = fopen(path, "wb");
    fputs("{\"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\", \"lstrip\": false}, \"pad_token\": \"<pad>\"}", out);
    fclose(out);
    nx_tokenizer *t = NULL;
    CHECK_MSG(nx_tokenizer_load(dir, &t) == NX_OK, "%s", nx_last_error());
    CHECK_EQ_INT(nx_tokenizer_bos_id(t), nx_tokenizer_token_to_id(t, "<s>"));
    CHECK_EQ_INT(nx_tokenizer_eos_id(t), nx_tokenizer_token_to_id(t, "</s>"));
    CHECK_EQ_INT(nx_tokenizer_pad_id(t), nx_tokenizer_token_to_id(t, "<pad>"));
    CHECK(nx_tokenizer_eos_id(t) >= 0 && nx_tokenizer_eos_id(t) != nx_tokenizer_bos_id(t));
    /* the TemplateProcessing post-processor adds <s> ... </s> unless told not to */
    nx_ids ids = {0};
    CHECK_EQ_INT(nx_tokenizer_encode(t, "hi", 2, 0, &ids), NX_OK);
    CHECK(ids.len >= 3 && ids.data[0] == nx_tokenizer_bos_id(t) && ids.data[ids.len - 1] == nx_tokenizer_eos_id(t));
    size_t with = ids.len;
    CHECK_EQ_INT(nx_tokenizer_encode(t, "hi", 2, NX_TOK_NO_POST_PROCESS, &ids), NX_OK);
    CHECK_EQ_INT(ids.len, with - 2);
    nx_ids_free(&ids);
    nx_tokenizer_free(t);
}

int main(void) {
    TEST_RUN(test_anchors);
    TEST_RUN(test_corpus_neox20b);
    TEST_RUN(test_corpus_gpt2);
    TEST_RUN(test_gpt2_vocab_merges);
    TEST_RUN(test_special_off);
    TEST_RUN(test_variants);
    TEST_RUN(test_decode);
    TEST_RUN(test_stream);
    TEST_RUN(test_invalid_utf8);
    TEST_RUN(test_linear_time);
    TEST_RUN(test_threads);
    TEST_RUN(test_load_errors);
    TEST_RUN(test_model_dir);
    free(g_docs);
    free(g_corpus.data);
    TEST_END();
}
