/* test_data_build.c - `neox data build` end to end with a byte-level encoder: planted exact and
 * near duplicates (recall >= 0.9 at Jaccard >= 0.87, nothing below the threshold dropped;
 * similarity computed here independently on 5-word shingle strings), epochs mixing,
 * validation split, determinism across thread counts, datasheet contents, bad recipes. */
#include "neox.h"
#include "test.h"

#include <jansson.h>
#include <sys/stat.h>

static char g_tmp[512];
static const char *tmp(const char *name) {
    static char buf[8][700];
    static int slot;
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_tmp, name);
    return buf[slot];
}

static void put(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    fputs(s, f);
    fclose(f);
}

static nx_status byte_encode(void *ctx, const char *text, size_t len, nx_token_buf *out) {
    (void)ctx;
    nx_status st = nx_token_buf_reserve(out, len);
    if (st != NX_OK) return st;
    for (size_t i = 0; i < len; i++) out->data[i] = (unsigned char)text[i] + 2;
    out->len = len;
    return NX_OK;
}

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd(uint32_t n) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng % n);
}

enum { NBASE = 60, NWORDS = 300, NNEAR = 60, NFAR = 30 };
static int g_base[NBASE][NWORDS];
static char g_docs[NBASE + NNEAR + NFAR][NWORDS * 8 + 64];
static int g_src[NNEAR + NFAR];       /* base doc of each variant */
static int g_edits[NNEAR + NFAR];

static void render(const int *w, int tag, char *out) {
    int n = sprintf(out, "doc%d", tag);
    for (int i = 0; i < NWORDS; i++) n += sprintf(out + n, " w%d", w[i]);
    out[n++] = '\n';
    out[n] = 0;
}

/* Jaccard of 5-word shingle sets, on the rendered strings (independent of the library). */
static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int shingles(const char *doc, char ***out) {
    char *copy = strdup(doc);
    char *words[NWORDS + 8];
    int nw = 0;
    for (char *t = strtok(copy, " \n"); t; t = strtok(NULL, " \n")) words[nw++] = t;
    int ns = nw >= 5 ? nw - 4 : 0;
    char **s = calloc((size_t)ns + 1, sizeof *s);
    for (int i = 0; i < ns; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s %s %s %s %s", words[i], words[i + 1], words[i + 2], words[i + 3], words[i + 4]);
        s[i] = strdup(buf);
    }
    free(copy);
    qsort(s, (size_t)ns, sizeof *s, cmp_strp);
    int u = 0;
    for (int i = 0; i < ns; i++) {
        if (u && strcmp(s[i], s[u - 1]) == 0) { free(s[i]); continue; }
        s[u++] = s[i];
    }
    *out = s;
    return u;
}
static double jaccard(const char *a, const char *b) {
    char **x, **y;
    int nx = shingles(a, &x), ny = shingles(b, &y), i = 0, j = 0, inter = 0;
    while (i < nx && j < ny) {
        int c = strcmp(x[i], y[j]);
        if (!c) { inter++; i++; j++; } else if (c < 0) i++; else j++;
    }
    for (i = 0; i < nx; i++) free(x[i]);
    for (j = 0; j < ny; j++) free(y[j]);
    free(x);
    free(y);
    return (double)inter / (double)(nx + ny - inter);
}

static void make_corpus(void) {
    mkdir(tmp("a"), 0755);
    mkdir(tmp("b"), 0755);
    char path[700];
    for (int d = 0; d < NBASE; d++) {
        for (int i = 0; i < NWORDS; i++) g_base[d][i] = (int)rnd(5000);
        render(g_base[d], d, g_docs[d]);
        snprintf(path, sizeof path, "%s/a/base%03d.txt", g_tmp, d);
        put(path, g_docs[d]);
    }
    /* Variants keep the base's tag word, so a variant of doc d differs only by its edits. */
    for (int v = 0; v < NNEAR + NFAR; v++) {
        int w[NWORDS], src = (int)rnd(NBASE);
        memcpy(w, g_base[src], sizeof w);
        int edits = v < NNEAR ? 1 + (int)rnd(3) : 12 + (int)rnd(10);
        for (int e = 0; e < edits; e++) w[rnd(NWORDS)] = 5000 + (int)rnd(5000);
        g_src[v] = src;
        g_edits[v] = edits;
        render(w, src, g_docs[NBASE + v]);
        /* Half the variants sit in the same component (within), half in another (across). */
        snprintf(path, sizeof path, "%s/%s/var%03d.txt", g_tmp, v % 2 ? "a" : "b", v);
        put(path, g_docs[NBASE + v]);
    }
    /* Exact duplicates: 5 copies of base 0 under other names. */
    for (int k = 0; k < 5; k++) {
        snprintf(path, sizeof path, "%s/b/zcopy%d.txt", g_tmp, k);
        put(path, g_docs[0]);
    }
    put(tmp("fortunes.txt"), "one fortune\n%\ntwo fortune\n%\nthree fortune\n%\nfour\n%\nfive\n");
}

static const char *recipe_json =
    "{\"name\": \"test\", \"version\": \"3\", \"seed\": 7, \"validation_fraction\": 0.1,\n"
    " \"dedup\": {\"shingle\": 5, \"permutations\": 128, \"bands\": 16, \"threshold\": 0.87},\n"
    " \"components\": [\n"
    "  {\"name\": \"A\", \"sources\": [\"a\"], \"extensions\": [\".txt\"], \"license\": \"CC0\", \"description\": \"base docs\"},\n"
    "  {\"name\": \"B\", \"sources\": [\"b/*.txt\"], \"epochs\": 2},\n"
    "  {\"name\": \"F\", \"sources\": [\"fortunes.txt\"], \"separator\": \"\\n%\\n\", \"group\": 2, \"epochs\": 2.5},\n"
    "  {\"name\": \"M\", \"generator\": {\"type\": \"math\", \"docs\": 30, \"problems_per_doc\": 5, \"seed\": 3}, \"epochs\": 1.5}\n"
    " ]}\n";

static nx_status build(const char *out, int threads) {
    nx_build_opts o = {.n_threads = threads, .encode = byte_encode, .eod_id = 0, .vocab_size = 258,
                       .tokenizer_name = "bytes"};
    return nx_data_build(tmp("recipe.json"), out, &o);
}

static char *doc_text(nx_indexed *ds, uint64_t i) {
    int32_t n = nx_indexed_item_size(ds, i);
    int32_t *t = malloc((size_t)n * sizeof *t);
    char *s = malloc((size_t)n + 1);
    nx_indexed_read(ds, i, 0, (uint64_t)n, t);
    for (int k = 0; k < n - 1; k++) s[k] = (char)(t[k] - 2);
    s[n - 1] = 0;
    free(t);
    return s;
}

static int present(char **texts, size_t n, const char *doc) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(texts[i], doc) == 0) return 1;
    return 0;
}

static void test_build_dedup_and_mixing(void) {
    put(tmp("recipe.json"), recipe_json);
    CHECK_MSG(build(tmp("out1"), 1) == NX_OK, "%s", nx_last_error());
    /* Every distinct document of train + validation. */
    char **texts = NULL;
    size_t nt = 0, train_docs = 0;
    const char *splits[2] = {"out1/train", "out1/validation"};
    for (int s = 0; s < 2; s++) {
        nx_indexed *ds = NULL;
        CHECK_MSG(nx_indexed_open(tmp(splits[s]), &ds) == NX_OK, "%s", nx_last_error());
        if (s == 0) train_docs = nx_indexed_n_docs(ds);
        texts = realloc(texts, (nt + nx_indexed_n_docs(ds)) * sizeof *texts);
        for (uint64_t i = 0; i < nx_indexed_n_docs(ds); i++) texts[nt++] = doc_text(ds, i);
        nx_indexed_free(ds);
    }
    for (int d = 0; d < NBASE; d++) CHECK_MSG(present(texts, nt, g_docs[d]), "base %d missing", d);
    int above = 0, removed_above = 0;
    for (int v = 0; v < NNEAR + NFAR; v++) {
        double j = jaccard(g_docs[NBASE + v], g_docs[g_src[v]]);
        int kept = present(texts, nt, g_docs[NBASE + v]);
        if (j >= 0.87) {
            above++;
            removed_above += !kept;
        } else {
            /* Below the threshold against its source; it could only go if it matched another
             * variant of the same source at >= 0.87, which the edits here make impossible. */
            CHECK_MSG(kept, "variant %d (J=%.3f, %d edits) dropped below the threshold", v, j, g_edits[v]);
        }
    }
    CHECK(above >= 40);
    CHECK_MSG(removed_above >= (int)(0.9 * above), "near-dup recall %d/%d", removed_above, above);

    /* Datasheet accounting. */
    json_error_t jerr;
    json_t *root = json_load_file(tmp("out1/datasheet.json"), 0, &jerr);
    CHECK(root);
    json_t *comps = json_object_get(root, "components");
    CHECK_EQ_INT(json_array_size(comps), 4);
    json_t *a = json_array_get(comps, 0), *b = json_array_get(comps, 1), *f = json_array_get(comps, 2),
           *m = json_array_get(comps, 3);
    CHECK_EQ_INT(json_integer_value(json_object_get(b, "duplicates_exact")), 5);
    long near = json_integer_value(json_object_get(a, "duplicates_near")) + json_integer_value(json_object_get(b, "duplicates_near"));
    CHECK_EQ_INT(near, removed_above);
    CHECK_EQ_INT(json_integer_value(json_object_get(f, "documents")), 3);   /* 5 fortunes, grouped by 2 */
    CHECK_EQ_INT(json_integer_value(json_object_get(m, "documents")), 30);
    /* Epochs: B twice; M 1.5 -> 27 train docs (3 validation) + round(0.5 * 27) = 14 extra. */
    long bk = json_integer_value(json_object_get(b, "documents")), bv = json_integer_value(json_object_get(b, "validation_documents"));
    CHECK_EQ_INT(json_integer_value(json_object_get(b, "train_documents")), 2 * (bk - bv));
    CHECK_EQ_INT(json_integer_value(json_object_get(m, "validation_documents")), 3);
    CHECK_EQ_INT(json_integer_value(json_object_get(m, "train_documents")), 27 + 14);
    json_t *tot = json_object_get(root, "totals");
    CHECK_EQ_INT(json_integer_value(json_object_get(tot, "train_documents")), train_docs);
    double share = 0;
    for (size_t i = 0; i < 4; i++) share += json_real_value(json_object_get(json_array_get(comps, i), "effective_share"));
    CHECK_NEAR(share, 1.0, 1e-9);
    CHECK_STR_CONTAINS(json_string_value(json_object_get(a, "license")), "CC0");
    CHECK(strlen(json_string_value(json_object_get(m, "sample"))) > 10);
    json_decref(root);
    FILE *md = fopen(tmp("out1/DATASHEET.md"), "r");
    CHECK(md);
    char line[4096];
    int rows = 0;
    while (fgets(line, sizeof line, md))
        if (line[0] == '|' && strstr(line, "| A |")) rows++;
    fclose(md);
    CHECK_EQ_INT(rows, 1);
    for (size_t i = 0; i < nt; i++) free(texts[i]);
    free(texts);
}

static int same(const char *a, const char *b) {
    FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
    int eq = x && y;
    while (eq) {
        int c = fgetc(x), d = fgetc(y);
        if (c != d) eq = 0;
        if (c == EOF || d == EOF) break;
    }
    if (x) fclose(x);
    if (y) fclose(y);
    return eq;
}

static void test_build_deterministic(void) {
    CHECK_MSG(build(tmp("out3"), 3) == NX_OK, "%s", nx_last_error());
    CHECK(same(tmp("out1/train.bin"), tmp("out3/train.bin")));
    CHECK(same(tmp("out1/train.idx"), tmp("out3/train.idx")));
    CHECK(same(tmp("out1/validation.bin"), tmp("out3/validation.bin")));
}

static void test_bad_recipes(void) {
    struct { const char *json, *needle; } bad[] = {
        {"{\"name\": \"x\"}", "components"},
        {"{\"name\": \"x\", \"components\": [{\"name\": \"c\"}]}", "neither"},
        {"{\"name\": \"x\", \"components\": [{\"name\": \"c\", \"sources\": [\"nothing-here-*\"]}]}", "match no files"},
        {"{\"name\": \"x\", \"components\": [{\"name\": \"c\", \"sources\": \"a\", \"epochs\": -1}]}", "epochs"},
        {"{\"name\": \"x\", \"dedup\": {\"permutations\": 100, \"bands\": 16}, \"components\": [{\"name\": \"c\", \"sources\": \"a\"}]}", "multiple"},
        {"{\"name\": \"x\", \"components\": [{\"name\": \"c\", \"sources\": [\"${NX_SURELY_UNSET_VAR}/x\"]}]}", "NX_SURELY_UNSET_VAR"},
        {"{\"name\": \"x\", \"components\": [{\"name\": \"c\", \"generator\": {\"type\": \"poetry\"}}]}", "math"},
        {"{\"name\": ", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put(tmp("bad.json"), bad[i].json);
        nx_build_opts o = {.n_threads = 1, .encode = byte_encode, .vocab_size = 258};
        nx_status st = nx_data_build(tmp("bad.json"), tmp("badout"), &o);
        CHECK_MSG(st != NX_OK, "recipe %zu accepted", i);
        CHECK_MSG(strstr(nx_last_error(), bad[i].needle), "recipe %zu: \"%s\" lacks \"%s\"", i, nx_last_error(), bad[i].needle);
    }
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/test_data_build.tmp", NX_BINARY_DIR);
    mkdir(g_tmp, 0755);
    make_corpus();
    TEST_RUN(test_build_dedup_and_mixing);
    TEST_RUN(test_build_deterministic);
    TEST_RUN(test_bad_recipes);
    TEST_END();
}
