/*
 * test_tokenizer_train.c - the BPE trainer against HF BpeTrainer: the same text, vocab size,
 * min_frequency and special tokens must give the same vocabulary and the same merges in the
 * same order (tests/fixtures/tokenizer/train_hf_1500.json, made by
 * tools/fixtures/make_tokenizer_goldens.py); the written file loads and encodes like HF's;
 * bad input, cancellation.
 */
#include "neox.h"
#include "test.h"

#include <jansson.h>
#include <zstd.h>

static char g_input[1024];

static int write_input(void) {
    const char *zp = fixture_path("tokenizer/train_input.txt.zst");
    FILE *f = fopen(zp, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *z = malloc((size_t)n);
    size_t got = fread(z, 1, (size_t)n, f);
    fclose(f);
    unsigned long long sz = ZSTD_getFrameContentSize(z, got);
    if (sz == ZSTD_CONTENTSIZE_ERROR || sz == ZSTD_CONTENTSIZE_UNKNOWN) { free(z); return 0; }
    void *raw = malloc(sz);
    size_t r = ZSTD_decompress(raw, sz, z, got);
    free(z);
    if (ZSTD_isError(r)) { free(raw); return 0; }
    snprintf(g_input, sizeof g_input, "%s/tok_train_input.txt", NX_BINARY_DIR);
    f = fopen(g_input, "wb");
    fwrite(raw, 1, r, f);
    fclose(f);
    free(raw);
    return 1;
}

/* merges as "a b" strings, whatever form the file uses */
static char **merges_of(json_t *model, size_t *n) {
    json_t *m = json_object_get(model, "merges");
    *n = json_array_size(m);
    char **out = calloc(*n + 1, sizeof *out);
    for (size_t i = 0; i < *n; i++) {
        json_t *x = json_array_get(m, i);
        if (json_is_string(x)) out[i] = strdup(json_string_value(x));
        else {
            const char *a = json_string_value(json_array_get(x, 0)), *b = json_string_value(json_array_get(x, 1));
            out[i] = malloc(strlen(a) + strlen(b) + 2);
            sprintf(out[i], "%s %s", a, b);
        }
    }
    return out;
}

static bool count_calls(const char *stage, uint64_t done, uint64_t total, void *user) {
    (void)stage; (void)done; (void)total;
    (*(int *)user)++;
    return true;
}

static void test_matches_hf(void) {
    CHECK(write_input());
    char out[1024];
    snprintf(out, sizeof out, "%s/tok_train_out.json", NX_BINARY_DIR);
    const char *files[] = {g_input};
    const char *special[] = {"<|endoftext|>", "<|pad|>"};
    int calls = 0;
    nx_bpe_train_opts o = {.vocab_size = 1500, .min_frequency = 2, .special = special, .n_special = 2,
                           .n_threads = 2, .progress = count_calls, .user = &calls};
    CHECK_MSG(nx_bpe_train_files(files, 1, &o, out) == NX_OK, "%s", nx_last_error());
    CHECK(calls >= 2);
    json_error_t err;
    json_t *ours = json_load_file(out, 0, &err), *hf = json_load_file(fixture_path("tokenizer/train_hf_1500.json"), 0, &err);
    CHECK(ours && hf);
    json_t *mo = json_object_get(ours, "model"), *mh = json_object_get(hf, "model");
    CHECK(json_equal(json_object_get(mo, "vocab"), json_object_get(mh, "vocab")));
    size_t no, nh;
    char **a = merges_of(mo, &no), **b = merges_of(mh, &nh);
    size_t first_diff = no;
    for (size_t i = 0; i < no && i < nh; i++)
        if (strcmp(a[i], b[i]) != 0) { first_diff = i; break; }
    printf("  %zu merges (HF %zu), identical prefix %zu\n", no, nh, first_diff);
    for (size_t i = 0; i < no; i++) free(a[i]);
    for (size_t i = 0; i < nh; i++) free(b[i]);
    free(a);
    free(b);
    CHECK_EQ_INT(no, nh);
    CHECK_EQ_INT(first_diff, no);
    CHECK(json_equal(json_object_get(ours, "added_tokens"), json_object_get(hf, "added_tokens")));
    json_decref(ours);
    json_decref(hf);

    /* both files load and encode the training text identically */
    nx_tokenizer *t1 = NULL, *t2 = NULL;
    CHECK_EQ_INT(nx_tokenizer_load(out, &t1), NX_OK);
    CHECK_EQ_INT(nx_tokenizer_load(fixture_path("tokenizer/train_hf_1500.json"), &t2), NX_OK);
    CHECK_EQ_INT(nx_tokenizer_vocab_size(t1), 1500);
    FILE *f = fopen(g_input, "rb");
    char *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    nx_ids i1 = {0}, i2 = {0};
    CHECK_EQ_INT(nx_tokenizer_encode(t1, buf, n, 0, &i1), NX_OK);
    CHECK_EQ_INT(nx_tokenizer_encode(t2, buf, n, 0, &i2), NX_OK);
    CHECK(i1.len == i2.len && memcmp(i1.data, i2.data, i1.len * 4) == 0);
    CHECK(i1.len < n / 2);   /* it learned something */
    nx_text back = {0};
    CHECK_EQ_INT(nx_tokenizer_decode(t1, i1.data, i1.len, 0, &back), NX_OK);
    CHECK(back.len == n && memcmp(back.data, buf, n) == 0);
    nx_text_free(&back);
    nx_ids_free(&i1);
    nx_ids_free(&i2);
    free(buf);
    nx_tokenizer_free(t1);
    nx_tokenizer_free(t2);
}

/* the thread count changes nothing */
static void test_threads_deterministic(void) {
    CHECK(g_input[0]);
    char o1[1024], o2[1024];
    snprintf(o1, sizeof o1, "%s/tok_train_t1.json", NX_BINARY_DIR);
    snprintf(o2, sizeof o2, "%s/tok_train_t3.json", NX_BINARY_DIR);
    const char *files[] = {g_input, g_input};
    nx_bpe_train_opts o = {.vocab_size = 800, .n_threads = 1};
    CHECK_EQ_INT(nx_bpe_train_files(files, 2, &o, o1), NX_OK);
    o.n_threads = 3;
    CHECK_EQ_INT(nx_bpe_train_files(files, 2, &o, o2), NX_OK);
    json_error_t err;
    json_t *a = json_load_file(o1, 0, &err), *b = json_load_file(o2, 0, &err);
    CHECK(a && b && json_equal(a, b));
    json_decref(a);
    json_decref(b);
}

static bool cancel_now(const char *stage, uint64_t done, uint64_t total, void *user) {
    (void)stage; (void)done; (void)total; (void)user;
    return false;
}

static void test_errors(void) {
    char bad[1024], out[1024];
    snprintf(bad, sizeof bad, "%s/tok_train_bad.txt", NX_BINARY_DIR);
    snprintf(out, sizeof out, "%s/tok_train_never.json", NX_BINARY_DIR);
    remove(out);
    FILE *f = fopen(bad, "wb");
    fputs("fine line\nsecond line\nthird \xC3\x28 line\n", f);
    fclose(f);
    const char *files[] = {bad};
    nx_bpe_train_opts o = {.vocab_size = 300};
    CHECK_EQ_INT(nx_bpe_train_files(files, 1, &o, out), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "line 3: invalid UTF-8");
    o.vocab_size = 100;
    CHECK_EQ_INT(nx_bpe_train_files(files, 1, &o, out), NX_ERR_INVALID_ARG);
    const char *missing[] = {"/nonexistent/file.txt"};
    o.vocab_size = 300;
    CHECK(nx_bpe_train_files(missing, 1, &o, out) != NX_OK);
    CHECK_STR_CONTAINS(nx_last_error(), "/nonexistent/file.txt");
    const char *good[] = {g_input};
    o.progress = cancel_now;
    CHECK_EQ_INT(nx_bpe_train_files(good, 1, &o, out), NX_ERR_CANCELLED);
    f = fopen(out, "rb");
    CHECK(f == NULL);   /* nothing written */
    /* an empty file trains the bare alphabet */
    snprintf(bad, sizeof bad, "%s/tok_train_empty.txt", NX_BINARY_DIR);
    fclose(fopen(bad, "wb"));
    o.progress = NULL;
    CHECK_EQ_INT(nx_bpe_train_files(files, 1, &o, out), NX_OK);
    nx_tokenizer *t = NULL;
    CHECK_EQ_INT(nx_tokenizer_load(out, &t), NX_OK);
    CHECK_EQ_INT(nx_tokenizer_vocab_size(t), 256);
    nx_tokenizer_free(t);
}

int main(void) {
    TEST_RUN(test_matches_hf);
    TEST_RUN(test_threads_deterministic);
    TEST_RUN(test_errors);
    TEST_END();
}
