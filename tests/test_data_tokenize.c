/* test_data_tokenize.c - the corpus -> indexed dataset pipeline with a byte-level encoder:
 * every input kind, issue accounting (file:line), strict mode, UTF-8 repair, and output
 * identical for every thread count and batch size. (The GPT-NeoX-20B tokenizer path is
 * compared with HF tokenizers + megatron-core in tests/cli_data_tokenize.sh.) */
#include "neox.h"
#include "data/data.h"
#include "test.h"

#include <sys/stat.h>
#include <zstd.h>

static char g_tmp[512];
static const char *tmp(const char *name) {
    static char buf[8][700];
    static int slot;
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_tmp, name);
    return buf[slot];
}

static void put(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

/* id = byte + 2, so 0 stays the EOD and 1 is never produced. */
static nx_status byte_encode(void *ctx, const char *text, size_t len, nx_token_buf *out) {
    (void)ctx;
    NX_TRY(nx_token_buf_reserve(out, len));
    for (size_t i = 0; i < len; i++) out->data[i] = (unsigned char)text[i] + 2;
    out->len = len;
    return NX_OK;
}

typedef struct { int n; char last[512]; } issues;
static void on_issue(const nx_data_issue *is, void *user) {
    issues *s = user;
    s->n++;
    snprintf(s->last, sizeof s->last, "%s:%llu: %s", is->file, (unsigned long long)is->line, is->message);
}

static const char k_jsonl[] =
    "{\"text\": \"hello\"}\n"
    "\n"                                          /* blank: skipped, not a document */
    "{\"text\": \"caf\\u00e9 \\ud83d\\ude00\", \"meta\": {\"pile_set_name\": \"X\"}}\n"
    "{\"text\": \"\"}\n"                          /* empty: dropped */
    "{\"text\": broken}\n"                        /* line 5: bad JSON */
    "[1, 2]\n"                                    /* not an object */
    "{\"body\": \"no text key\"}\n"
    "{\"text\": \"bad \xff byte\"}\n"             /* line 8: invalid UTF-8 */
    "{\"text\": \"last line without newline\"}";

static void make_inputs(void) {
    mkdir(tmp("in"), 0755);
    mkdir(tmp("in/sub"), 0755);
    put(tmp("in/a.jsonl"), k_jsonl, sizeof k_jsonl - 1);
    put(tmp("in/sub/b.txt"), "a whole\nbook\n", 13);
    put(tmp("in/sub/ignored.csv"), "x,y\n", 4);
    const char z[] = "{\"text\": \"zstd one\"}\n{\"text\": \"zstd two\"}\n";
    char comp[256];
    size_t cn = ZSTD_compress(comp, sizeof comp, z, sizeof z - 1, 3);
    put(tmp("in/c.jsonl.zst"), comp, cn);
}

static nx_status run(int threads, size_t batch_bytes, bool strict, const char *out, nx_tokenize_stats *stats,
                     issues *is) {
    const char *inputs[1] = {tmp("in")};
    nx_tokenize_opts o = {.n_threads = threads, .append_eod = true, .eod_id = 0, .strict = strict,
                          .vocab_size = 258, .batch_bytes = batch_bytes, .encode = byte_encode,
                          .on_issue = on_issue, .user = is};
    memset(is, 0, sizeof *is);
    return nx_data_tokenize(inputs, 1, out, &o, stats);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}
static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    int eq = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return eq;
}

static void test_tokenize_contents(void) {
    nx_tokenize_stats s;
    issues is;
    const char *out = tmp("out1");
    CHECK_MSG(run(1, 0, false, out, &s, &is) == NX_OK, "%s", nx_last_error());
    /* a.jsonl: hello, café 😀, last line; c.jsonl.zst: two; sub/b.txt: one. Sorted order:
     * a.jsonl, c.jsonl.zst, sub/b.txt. */
    CHECK_EQ_INT(s.files, 3);
    CHECK_EQ_INT(s.docs_written, 6);
    CHECK_EQ_INT(s.docs_empty, 1);
    CHECK_EQ_INT(s.bad_json, 1);
    CHECK_EQ_INT(s.no_key, 2);
    CHECK_EQ_INT(s.bad_utf8, 1);
    CHECK_EQ_INT(s.docs_read, s.docs_written + s.docs_empty + s.bad_json + s.no_key + s.bad_utf8 + s.encode_failed);
    CHECK_EQ_INT(is.n, 4);
    CHECK_STR_CONTAINS(is.last, "a.jsonl:8: invalid UTF-8");
    nx_indexed *ds = NULL;
    CHECK(nx_indexed_open(out, &ds) == NX_OK);
    CHECK_EQ_INT(nx_indexed_n_docs(ds), 6);
    int32_t buf[64];
    const char *want[6] = {"hello", "caf\xc3\xa9 \xf0\x9f\x98\x80", "last line without newline", "zstd one", "zstd two",
                           "a whole\nbook\n"};
    uint64_t tokens = 0;
    for (int d = 0; d < 6; d++) {
        size_t n = strlen(want[d]);
        CHECK_EQ_INT(nx_indexed_item_size(ds, (uint64_t)d), n + 1);
        CHECK(nx_indexed_read(ds, (uint64_t)d, 0, n + 1, buf) == NX_OK);
        for (size_t k = 0; k < n; k++) CHECK_EQ_INT(buf[k], (unsigned char)want[d][k] + 2);
        CHECK_EQ_INT(buf[n], 0);
        tokens += n + 1;
    }
    CHECK_EQ_INT(s.tokens, tokens);
    nx_indexed_info info;
    nx_indexed_get_info(ds, &info);
    CHECK_EQ_INT(info.dtype_code, NX_IDX_U16);
    nx_indexed_free(ds);
}

static void test_tokenize_thread_invariance(void) {
    nx_tokenize_stats s;
    issues is;
    CHECK(run(1, 0, false, tmp("ref"), &s, &is) == NX_OK);
    const int threads[3] = {2, 3, 4};
    const size_t batches[3] = {0, 7, 64};
    for (int t = 0; t < 3; t++) {
        for (int b = 0; b < 3; b++) {
            CHECK_MSG(run(threads[t], batches[b], false, tmp("cmp"), &s, &is) == NX_OK, "%s", nx_last_error());
            CHECK_EQ_INT(s.docs_written, 6);
            CHECK_MSG(same_file(tmp("ref.bin"), tmp("cmp.bin")) && same_file(tmp("ref.idx"), tmp("cmp.idx")),
                      "threads %d batch %zu differ", threads[t], batches[b]);
        }
    }
}

static void test_tokenize_strict_and_errors(void) {
    nx_tokenize_stats s;
    issues is;
    const char *out = tmp("strict");
    nx_status st = run(2, 0, true, out, &s, &is);
    CHECK(st == NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "a.jsonl:5: invalid JSON");
    nx_indexed *ds = NULL;
    CHECK(nx_indexed_open(out, &ds) != NX_OK);   /* nothing published */
    /* A corrupt .zst is a clean error, not a crash. */
    put(tmp("bad.jsonl.zst"), "\x28\xb5\x2f\xfd garbage", 12);
    const char *inputs[1] = {tmp("bad.jsonl.zst")};
    nx_tokenize_opts o = {.n_threads = 1, .encode = byte_encode, .vocab_size = 258};
    CHECK(nx_data_tokenize(inputs, 1, tmp("bad"), &o, &s) == NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "zstd");
    /* Truncated zstd stream. */
    const char z[] = "{\"text\": \"a fairly long line so the frame has some body to cut off\"}\n";
    char comp[256];
    size_t cn = ZSTD_compress(comp, sizeof comp, z, sizeof z - 1, 3);
    put(tmp("trunc.jsonl.zst"), comp, cn - 4);
    inputs[0] = tmp("trunc.jsonl.zst");
    CHECK(nx_data_tokenize(inputs, 1, tmp("bad"), &o, &s) == NX_ERR_FORMAT);
    inputs[0] = tmp("in/sub/ignored.csv");
    CHECK(nx_data_tokenize(inputs, 1, tmp("bad"), &o, &s) == NX_ERR_UNSUPPORTED);
    inputs[0] = tmp("nope.jsonl");
    CHECK(nx_data_tokenize(inputs, 1, tmp("bad"), &o, &s) == NX_ERR_IO);
}

static void test_utf8_rules(void) {
    /* Python: b"a\xffb\xe2\x82c\xed\xa0\x80d\xf0\x9f\x98".decode("utf-8", "replace")
     *   == 'a\ufffdb\ufffdc\ufffd\ufffd\ufffdd\ufffd' */
    const char in[] = "a\xff" "b\xe2\x82" "c\xed\xa0\x80" "d\xf0\x9f\x98";
    nx_buf out = {0};
    size_t fixes = nx__utf8_repair(in, sizeof in - 1, &out);
    const char want[] = "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "d\xef\xbf\xbd";
    CHECK_EQ_INT(fixes, 6);
    CHECK_EQ_INT(out.len, sizeof want - 1);
    CHECK(memcmp(out.data, want, out.len) == 0);
    nx__buf_free(&out);
    CHECK_EQ_INT(nx__utf8_invalid_at("ok \xc3\xa9", 5), (size_t)-1);
    CHECK_EQ_INT(nx__utf8_invalid_at("ok \xc0\xaf", 5), 3);         /* overlong */
    CHECK_EQ_INT(nx__utf8_invalid_at("\xf4\x90\x80\x80", 4), 0);    /* > U+10FFFF */
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/test_data_tokenize.tmp", NX_BINARY_DIR);
    mkdir(g_tmp, 0755);
    make_inputs();
    TEST_RUN(test_tokenize_contents);
    TEST_RUN(test_tokenize_thread_invariance);
    TEST_RUN(test_tokenize_strict_and_errors);
    TEST_RUN(test_utf8_rules);
    TEST_END();
}
