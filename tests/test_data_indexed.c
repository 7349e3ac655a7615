/* test_data_indexed.c - the indexed dataset reader and writer against files written by
 * megatron-core's IndexedDatasetBuilder (tools/fixtures/make_data_fixtures.py), plus
 * corrupt-file handling and the writer's atomicity. */
#include "neox.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    int n_items;
    int32_t *len;
    int32_t **tok;
    int n_doc;
    int64_t *doc_idx;
} expect;

static int load_expect(const char *rel, expect *e) {
    memset(e, 0, sizeof *e);
    FILE *f = fopen(fixture_path(rel), "r");
    if (!f) return 0;
    if (fscanf(f, " items %d", &e->n_items) != 1) { fclose(f); return 0; }
    e->len = calloc((size_t)e->n_items + 1, sizeof *e->len);
    e->tok = calloc((size_t)e->n_items + 1, sizeof *e->tok);
    for (int i = 0; i < e->n_items; i++) {
        if (fscanf(f, "%d", &e->len[i]) != 1) { fclose(f); return 0; }
        e->tok[i] = calloc((size_t)e->len[i] + 1, sizeof(int32_t));
        for (int k = 0; k < e->len[i]; k++)
            if (fscanf(f, "%d", &e->tok[i][k]) != 1) { fclose(f); return 0; }
    }
    if (fscanf(f, " doc_idx %d", &e->n_doc) != 1) { fclose(f); return 0; }
    e->doc_idx = calloc((size_t)e->n_doc, sizeof *e->doc_idx);
    for (int i = 0; i < e->n_doc; i++)
        if (fscanf(f, "%ld", (long *)&e->doc_idx[i]) != 1) { fclose(f); return 0; }
    fclose(f);
    return 1;
}

static void free_expect(expect *e) {
    for (int i = 0; i < e->n_items; i++) free(e->tok[i]);
    free(e->tok);
    free(e->len);
    free(e->doc_idx);
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

static int files_equal(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    int eq = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return eq;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static char g_tmp[512];
static const char *tmp_prefix(const char *name) {
    static char buf[4][600];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_tmp, name);
    return buf[slot];
}
static const char *with_ext(const char *prefix, const char *ext) {
    static char buf[4][640];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof buf[slot], "%s%s", prefix, ext);
    return buf[slot];
}

/* Reads a fixture and checks every item, doc_idx and the info against the text mirror. */
static void check_read(const char *name, int code) {
    expect e;
    char txt[128];
    snprintf(txt, sizeof txt, "data/%s.txt", name);
    CHECK(load_expect(txt, &e));
    char pre[128];
    snprintf(pre, sizeof pre, "data/%s", name);
    nx_indexed *ds = NULL;
    nx_status st = nx_indexed_open(fixture_path(pre), &ds);
    CHECK_MSG(st == NX_OK, "%s", nx_last_error());
    nx_indexed_info info;
    nx_indexed_get_info(ds, &info);
    CHECK_EQ_INT(info.dtype_code, code);
    CHECK_EQ_INT(info.n_items, e.n_items);
    CHECK_EQ_INT(info.n_docs, e.n_doc - 1);
    uint64_t tokens = 0;
    int32_t buf[256];
    for (int i = 0; i < e.n_items; i++) {
        CHECK_EQ_INT(nx_indexed_item_size(ds, (uint64_t)i), e.len[i]);
        CHECK(nx_indexed_read(ds, (uint64_t)i, 0, (uint64_t)e.len[i], buf) == NX_OK);
        for (int k = 0; k < e.len[i]; k++) CHECK_EQ_INT(buf[k], e.tok[i][k]);
        if (e.len[i] > 2) {   /* an interior span */
            CHECK(nx_indexed_read(ds, (uint64_t)i, 1, (uint64_t)e.len[i] - 2, buf) == NX_OK);
            CHECK_EQ_INT(buf[0], e.tok[i][1]);
        }
        CHECK(nx_indexed_read(ds, (uint64_t)i, (uint64_t)e.len[i], 1, buf) == NX_ERR_RANGE);
        tokens += (uint64_t)e.len[i];
    }
    CHECK_EQ_INT(info.n_tokens, tokens);
    CHECK_EQ_INT(info.bin_bytes, tokens * info.itemsize);
    for (int d = 0; d + 1 < e.n_doc; d++) {
        uint64_t a, b;
        CHECK(nx_indexed_doc_items(ds, (uint64_t)d, &a, &b) == NX_OK);
        CHECK_EQ_INT(a, e.doc_idx[d]);
        CHECK_EQ_INT(b, e.doc_idx[d + 1]);
    }
    uint64_t a, b;
    CHECK(nx_indexed_doc_items(ds, (uint64_t)e.n_doc - 1, &a, &b) == NX_ERR_RANGE);
    CHECK(nx_indexed_verify(ds, code == NX_IDX_U16 ? 50277 : 100000, NULL) == NX_OK);
    CHECK(nx_indexed_verify(ds, 10, NULL) == NX_ERR_RANGE);
    nx_indexed_free(ds);
    free_expect(&e);
}

static void test_read_u16(void) { check_read("u16_docs", NX_IDX_U16); }
static void test_read_i32_multi_item(void) { check_read("i32_multi", NX_IDX_I32); }

/* Writes the text mirror's contents with our writer and compares bytes with megatron-core's. */
static void check_write(const char *name, int code) {
    expect e;
    char txt[128], pre[128];
    snprintf(txt, sizeof txt, "data/%s.txt", name);
    snprintf(pre, sizeof pre, "data/%s", name);
    CHECK(load_expect(txt, &e));
    const char *out = tmp_prefix(name);
    nx_indexed_writer *w = NULL;
    CHECK(nx_indexed_writer_create(out, code, &w) == NX_OK);
    int item = 0;
    for (int d = 0; d + 1 < e.n_doc; d++) {
        for (; item < e.doc_idx[d + 1]; item++)
            CHECK(nx_indexed_writer_add_item(w, e.tok[item], (size_t)e.len[item]) == NX_OK);
        CHECK(nx_indexed_writer_end_document(w) == NX_OK);
    }
    CHECK(nx_indexed_writer_finish(w) == NX_OK);
    nx_indexed_writer_free(w);
    char ref[256];
    snprintf(ref, sizeof ref, "%s", fixture_path(pre));
    CHECK_MSG(files_equal(with_ext(out, ".bin"), with_ext(ref, ".bin")), "%s.bin differs from megatron-core's", name);
    CHECK_MSG(files_equal(with_ext(out, ".idx"), with_ext(ref, ".idx")), "%s.idx differs from megatron-core's", name);
    free_expect(&e);
}

static void test_write_byte_identical(void) {
    check_write("u16_docs", NX_IDX_U16);
    check_write("i32_multi", NX_IDX_I32);
    check_write("samples", NX_IDX_U16);
    CHECK_EQ_INT(nx_indexed_dtype_for_vocab(50277), NX_IDX_U16);
    CHECK_EQ_INT(nx_indexed_dtype_for_vocab(65499), NX_IDX_U16);
    CHECK_EQ_INT(nx_indexed_dtype_for_vocab(65500), NX_IDX_I32);
}

static void test_writer_atomic_and_range(void) {
    const char *out = tmp_prefix("atomic");
    nx_indexed_writer *w = NULL;
    int32_t toks[4] = {1, 2, 3, 0};
    remove(with_ext(out, ".bin"));   /* left by an earlier run */
    remove(with_ext(out, ".idx"));
    CHECK(nx_indexed_writer_create(out, NX_IDX_U16, &w) == NX_OK);
    CHECK(nx_indexed_writer_add_document(w, toks, 4) == NX_OK);
    nx_indexed_writer_free(w);   /* interrupted: nothing may be published */
    CHECK(access(with_ext(out, ".bin"), F_OK) != 0);
    CHECK(access(with_ext(out, ".idx"), F_OK) != 0);

    /* Out-of-range token for uint16: refused, and nothing published either. */
    int32_t big[2] = {5, 70000};
    CHECK(nx_indexed_writer_create(out, NX_IDX_U16, &w) == NX_OK);
    CHECK(nx_indexed_writer_add_document(w, big, 2) == NX_ERR_RANGE);
    CHECK_STR_CONTAINS(nx_last_error(), "70000");
    CHECK(nx_indexed_writer_finish(w) == NX_ERR_STATE);
    nx_indexed_writer_free(w);
    CHECK(access(with_ext(out, ".idx"), F_OK) != 0);

    /* An empty dataset is valid: N = 0, doc_idx = [0]. */
    CHECK(nx_indexed_writer_create(out, NX_IDX_I32, &w) == NX_OK);
    CHECK(nx_indexed_writer_finish(w) == NX_OK);
    nx_indexed_writer_free(w);
    nx_indexed *ds = NULL;
    CHECK_MSG(nx_indexed_open(out, &ds) == NX_OK, "%s", nx_last_error());
    CHECK_EQ_INT(nx_indexed_n_items(ds), 0);
    CHECK_EQ_INT(nx_indexed_n_docs(ds), 0);
    nx_indexed_free(ds);

    /* Overwriting an existing dataset replaces both files consistently. */
    CHECK(nx_indexed_writer_create(out, NX_IDX_U16, &w) == NX_OK);
    CHECK(nx_indexed_writer_add_document(w, toks, 4) == NX_OK);
    CHECK(nx_indexed_writer_finish(w) == NX_OK);
    nx_indexed_writer_free(w);
    CHECK(nx_indexed_open(with_ext(out, ".idx"), &ds) == NX_OK);   /* a .idx path works too */
    CHECK_EQ_INT(nx_indexed_n_items(ds), 1);
    int32_t got[4];
    CHECK(nx_indexed_read(ds, 0, 0, 4, got) == NX_OK);
    CHECK_EQ_INT(got[2], 3);
    nx_indexed_free(ds);
}

/* Copies a fixture's .idx/.bin to tmp, lets `mutate` damage the .idx bytes (and maybe the
 * .bin length), then expects open to fail with a message containing `needle`. */
static void corrupt_case(const char *what, void (*mutate)(unsigned char *idx, size_t *n, size_t *bin_n),
                         nx_status want, const char *needle) {
    size_t ni = 0, nb = 0;
    unsigned char *idx = slurp(fixture_path("data/u16_docs.idx"), &ni);
    unsigned char *bin = slurp(fixture_path("data/u16_docs.bin"), &nb);
    CHECK(idx && bin);
    unsigned char *big = calloc(ni + 64, 1);
    memcpy(big, idx, ni);
    mutate(big, &ni, &nb);
    const char *pre = tmp_prefix("corrupt");
    write_file(with_ext(pre, ".idx"), big, ni);
    write_file(with_ext(pre, ".bin"), bin, nb);
    nx_indexed *ds = NULL;
    nx_status st = nx_indexed_open(pre, &ds);
    CHECK_MSG(st == want, "%s: status %d (%s), expected %d", what, st, nx_last_error(), want);
    CHECK(ds == NULL);
    CHECK_MSG(strstr(nx_last_error(), needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what, nx_last_error(), needle);
    free(idx);
    free(bin);
    free(big);
}

static void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static void put_i64(unsigned char *p, int64_t v) { memcpy(p, &v, 8); }
static void put_i32(unsigned char *p, int32_t v) { memcpy(p, &v, 4); }
static uint64_t get_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void m_magic(unsigned char *b, size_t *n, size_t *bn) { b[3] = 'X'; }
static void m_tnt(unsigned char *b, size_t *n, size_t *bn) { memcpy(b, "TNTIDX\0\0", 8); }
static void m_version(unsigned char *b, size_t *n, size_t *bn) { put_u64(b + 9, 2); }
static void m_dtype(unsigned char *b, size_t *n, size_t *bn) { b[17] = 9; }
static void m_short(unsigned char *b, size_t *n, size_t *bn) { *n = 20; }
static void m_truncated(unsigned char *b, size_t *n, size_t *bn) { *n -= 5; }
static void m_huge_n(unsigned char *b, size_t *n, size_t *bn) { put_u64(b + 18, UINT64_MAX / 4); }
static void m_huge_d(unsigned char *b, size_t *n, size_t *bn) { put_u64(b + 26, UINT64_MAX); }
static void m_neg_size(unsigned char *b, size_t *n, size_t *bn) { put_i32(b + 34, -3); }
static void m_pointer(unsigned char *b, size_t *n, size_t *bn) {
    uint64_t N = get_u64(b + 18);
    put_i64(b + 34 + 4 * N + 8, 7);   /* pointers[1] */
}
static void m_docidx_order(unsigned char *b, size_t *n, size_t *bn) {
    uint64_t N = get_u64(b + 18);
    put_i64(b + 34 + 12 * N + 16, 0);   /* doc_idx[2] < doc_idx[1] */
}
static void m_docidx_end(unsigned char *b, size_t *n, size_t *bn) {
    uint64_t N = get_u64(b + 18), D = get_u64(b + 26);
    put_i64(b + 34 + 12 * N + 8 * (D - 1), (int64_t)N - 1);
}
static void m_docidx_start(unsigned char *b, size_t *n, size_t *bn) {
    uint64_t N = get_u64(b + 18);
    put_i64(b + 34 + 12 * N, 1);
}
static void m_bin_short(unsigned char *b, size_t *n, size_t *bn) { *bn -= 2; }
static void m_bin_long(unsigned char *b, size_t *n, size_t *bn) { *bn += 0; *n += 3; }
static void m_empty(unsigned char *b, size_t *n, size_t *bn) { *n = 0; }

static void test_corrupt_files(void) {
    corrupt_case("magic", m_magic, NX_ERR_FORMAT, "magic");
    corrupt_case("legacy", m_tnt, NX_ERR_UNSUPPORTED, "TNTIDX");
    corrupt_case("version", m_version, NX_ERR_UNSUPPORTED, "version");
    corrupt_case("dtype", m_dtype, NX_ERR_FORMAT, "dtype code 9");
    corrupt_case("short header", m_short, NX_ERR_FORMAT, "34-byte");
    corrupt_case("truncated", m_truncated, NX_ERR_FORMAT, "277-byte file");
    corrupt_case("huge N", m_huge_n, NX_ERR_FORMAT, "more than");
    corrupt_case("huge D", m_huge_d, NX_ERR_FORMAT, "more than");
    corrupt_case("negative size", m_neg_size, NX_ERR_FORMAT, "sizes[0]");
    corrupt_case("pointer", m_pointer, NX_ERR_FORMAT, "pointers[1]");
    corrupt_case("doc_idx order", m_docidx_order, NX_ERR_FORMAT, "doc_idx[2]");
    corrupt_case("doc_idx end", m_docidx_end, NX_ERR_FORMAT, "doc_idx ends");
    corrupt_case("doc_idx start", m_docidx_start, NX_ERR_FORMAT, "doc_idx[0]");
    corrupt_case("bin short", m_bin_short, NX_ERR_FORMAT, "past the end");
    corrupt_case("idx trailing", m_bin_long, NX_ERR_FORMAT, "bytes but N=");
    corrupt_case("empty idx", m_empty, NX_ERR_FORMAT, "34-byte");
    nx_indexed *ds = NULL;
    CHECK(nx_indexed_open(tmp_prefix("does_not_exist"), &ds) == NX_ERR_IO);
    CHECK_STR_CONTAINS(nx_last_error(), "does_not_exist.idx");
}

/* Pythia's preshuffled layout: every item is one (seq_length + 1)-token sample in training
 * order, so step s is items [s*B, (s+1)*B). */
static void test_preshuffled(void) {
    const char *out = tmp_prefix("presh");
    nx_indexed_writer *w = NULL;
    CHECK(nx_indexed_writer_create(out, NX_IDX_U16, &w) == NX_OK);
    for (int i = 0; i < 12; i++) {
        int32_t t[9];
        for (int k = 0; k < 9; k++) t[k] = i * 100 + k;
        CHECK(nx_indexed_writer_add_document(w, t, 9) == NX_OK);
    }
    CHECK(nx_indexed_writer_finish(w) == NX_OK);
    nx_indexed_writer_free(w);
    char json[900];
    snprintf(json, sizeof json, "{\"data_path\": \"%s\", \"data-order\": \"preshuffled\", \"seq_length\": 8, "
             "\"train_micro_batch_size_per_gpu\": 2, \"gradient_accumulation_steps\": 2, \"train-iters\": 3}", out);
    nx_data_config cfg;
    CHECK_MSG(nx_data_config_parse(json, strlen(json), "cfg", &cfg) == NX_OK, "%s", nx_last_error());
    CHECK_EQ_INT(cfg.global_batch, 4);
    nx_data_stream *s = NULL;
    CHECK_MSG(nx_data_stream_open(&cfg, &s) == NX_OK, "%s", nx_last_error());
    int32_t toks[4 * 9];
    CHECK(nx_data_stream_step(s, 2, toks) == NX_OK);
    CHECK_EQ_INT(toks[0], 800);
    CHECK_EQ_INT(toks[3 * 9 + 8], 1108);
    CHECK(nx_data_stream_step(s, 3, toks) == NX_ERR_RANGE);
    nx_data_stream_free(s);
    nx_data_config_clear(&cfg);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/test_data_indexed.tmp", NX_BINARY_DIR);
    mkdir(g_tmp, 0755);
    TEST_RUN(test_read_u16);
    TEST_RUN(test_read_i32_multi_item);
    TEST_RUN(test_write_byte_identical);
    TEST_RUN(test_writer_atomic_and_range);
    TEST_RUN(test_corrupt_files);
    TEST_RUN(test_preshuffled);
    TEST_END();
}
