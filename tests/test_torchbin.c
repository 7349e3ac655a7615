/* test_torchbin.c - PyTorch .bin reader (zip + safe unpickler + tensor views) against the
 * reference bytes torch wrote (tools/fixtures/make_torch_bins.py), hostile files, every
 * truncation and byte flip of a real checkpoint, and allocation failures. */
#include "test.h"

#include "io/io.h"
#include "io/pickle.h"
#include "io/torchbin.h"
#include "io/zip.h"

#include <jansson.h>

static nx_status load(const char *rel, nx_tensorset **out) {
    *out = nx__tensorset_new();
    if (!*out) return NX_ERR_NOMEM;
    return nx__torchbin_read_into(*out, fixture_path(rel));
}

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

/* Compares every tensor of ts with ref_rel (name -> dtype, shape, hex bytes); the set must
 * hold exactly the reference's tensors. Returns a message on mismatch, NULL when equal. */
static const char *compare_ref(const nx_tensorset *ts, const char *ref_rel) {
    static char msg[512];
    json_error_t jerr;
    json_t *ref = json_load_file(fixture_path(ref_rel), 0, &jerr);
    if (!ref) { snprintf(msg, sizeof msg, "cannot read %s: %s", ref_rel, jerr.text); return msg; }
    const char *key;
    json_t *v;
    const char *bad = NULL;
    if (json_object_size(ref) != nx_tensorset_count(ts)) {
        snprintf(msg, sizeof msg, "%s: %zu reference tensors, %zu loaded", ref_rel, json_object_size(ref),
                 nx_tensorset_count(ts));
        bad = msg;
    }
    json_object_foreach(ref, key, v) {
        if (bad) break;
        const nx_tensor_info *t = nx_tensorset_find(ts, key);
        if (!t) { snprintf(msg, sizeof msg, "tensor '%s' missing", key); bad = msg; break; }
        if (strcmp(nx_dtype_name(t->dtype), json_string_value(json_object_get(v, "dtype"))) != 0) {
            snprintf(msg, sizeof msg, "tensor '%s': dtype %s, expected %s", key, nx_dtype_name(t->dtype),
                     json_string_value(json_object_get(v, "dtype")));
            bad = msg;
            break;
        }
        json_t *shape = json_object_get(v, "shape");
        if ((int)json_array_size(shape) != t->ndim) { snprintf(msg, sizeof msg, "tensor '%s': ndim %d", key, t->ndim); bad = msg; break; }
        for (int d = 0; d < t->ndim; d++)
            if (json_integer_value(json_array_get(shape, (size_t)d)) != t->shape[d]) {
                snprintf(msg, sizeof msg, "tensor '%s': dim %d is %lld", key, d, (long long)t->shape[d]);
                bad = msg;
            }
        if (bad) break;
        const char *hex = json_string_value(json_object_get(v, "hex"));
        size_t n = strlen(hex) / 2;
        if (n != t->nbytes) { snprintf(msg, sizeof msg, "tensor '%s': %zu bytes, expected %zu", key, t->nbytes, n); bad = msg; break; }
        const uint8_t *p = t->data;
        for (size_t i = 0; i < n; i++)
            if (p[i] != (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]))) {
                snprintf(msg, sizeof msg, "tensor '%s': byte %zu differs", key, i);
                bad = msg;
                break;
            }
        if (bad) break;
    }
    json_decref(ref);
    return bad;
}

static void check_file(const char *bin, const char *ref) {
    nx_tensorset *ts;
    nx_status st = load(bin, &ts);
    if (st != NX_OK) { nx_tensorset_free(ts); CHECK_MSG(st == NX_OK, "%s: %s", bin, nx_last_error()); }
    const char *bad = compare_ref(ts, ref);
    nx_tensorset_free(ts);
    CHECK_MSG(bad == NULL, "%s: %s", bin, bad);
}

static void test_basic_matches_torch(void) { check_file("torch/basic.bin", "torch/basic.ref.json"); }
static void test_protocol4_matches_torch(void) { check_file("torch/basic_proto4.bin", "torch/basic_proto4.ref.json"); }
static void test_params_and_v3(void) { check_file("torch/params_v3.bin", "torch/params_v3.ref.json"); }
static void test_module_state_dict(void) { check_file("torch/module.bin", "torch/module.ref.json"); }
static void test_nested_dict_flattened(void) { check_file("torch/nested.bin", "torch/nested.ref.json"); }
static void test_big_endian(void) { check_file("torch/bigendian.bin", "torch/bigendian.ref.json"); }
static void test_zip64(void) { check_file("torch/zip64.bin", "torch/zip64.ref.json"); }

/* Tied weights share one storage and stay zero-copy; views are pointers into it. */
static void test_zero_copy_and_views(void) {
    nx_tensorset *ts;
    nx_status st = load("torch/basic.bin", &ts);
    CHECK_MSG(st == NX_OK, "%s", nx_last_error());
    const nx_tensor_info *wte = nx_tensorset_find(ts, "transformer.wte.weight");
    const nx_tensor_info *head = nx_tensorset_find(ts, "lm_head.weight");
    const nx_tensor_info *f32 = nx_tensorset_find(ts, "f32");
    const nx_tensor_info *off = nx_tensorset_find(ts, "offset_view");
    const nx_tensor_info *tr = nx_tensorset_find(ts, "transposed");
    const nx_tensor_info *empty = nx_tensorset_find(ts, "empty");
    const nx_tensor_info *scalar = nx_tensorset_find(ts, "scalar");
    int ok = wte && head && f32 && off && tr && empty && scalar;
    int shared = ok && wte->data == head->data;
    int offset_view = ok && (const uint8_t *)off->data == (const uint8_t *)f32->data + 5 * 4;
    int copied = ok && tr->data != f32->data;
    /* transposed[i][j] == f32[j][i] */
    int tr_ok = ok && tr->shape[0] == 6 && tr->shape[1] == 4;
    for (int i = 0; tr_ok && i < 6; i++)
        for (int j = 0; j < 4; j++)
            if (memcmp((const float *)tr->data + i * 4 + j, (const float *)f32->data + j * 6 + i, 4)) tr_ok = 0;
    int sc = ok && scalar->ndim == 0 && scalar->nbytes == 4 && *(const float *)scalar->data == 3.5f;
    int em = ok && empty->ndim == 2 && empty->shape[0] == 0 && empty->nbytes == 0;
    nx_tensorset_free(ts);
    CHECK(ok);
    CHECK(shared);
    CHECK(offset_view);
    CHECK(copied);
    CHECK(tr_ok);
    CHECK(sc);
    CHECK(em);
}

/* Every hostile file fails with its specific message; the code-execution ones as a
 * security error. */
static void test_hostile_files(void) {
    json_error_t jerr;
    json_t *h = json_load_file(fixture_path("torch/hostile.json"), 0, &jerr);
    CHECK_MSG(h != NULL, "%s", jerr.text);
    const char *file;
    json_t *v;
    int failures = 0, n = 0;
    json_object_foreach(h, file, v) {
        char rel[256];
        snprintf(rel, sizeof rel, "torch/%s", file);
        nx_tensorset *ts;
        nx_status st = load(rel, &ts);
        nx_tensorset_free(ts);
        const char *want = json_string_value(v);
        n++;
        if (st == NX_OK || !strstr(nx_last_error(), want)) {
            fprintf(stderr, "  %s: status %d, message \"%s\", expected \"%s\"\n", file, st, nx_last_error(), want);
            failures++;
        } else if (strstr(file, "evil") && st != NX_ERR_SECURITY) {
            fprintf(stderr, "  %s: status %d, expected NX_ERR_SECURITY\n", file, st);
            failures++;
        }
    }
    json_decref(h);
    CHECK_EQ_INT(failures, 0);
    CHECK(n >= 12);
}

static void test_exact_security_message(void) {
    nx_tensorset *ts;
    nx_status st = load("torch/evil_os_system.bin", &ts);
    nx_tensorset_free(ts);
    CHECK_EQ_INT(st, NX_ERR_SECURITY);
    CHECK_STR_CONTAINS(nx_last_error(), "evil_os_system.bin: data.pkl refers to global 'os.system'; only tensors "
                                        "and containers are allowed");
}

/* All shards of a sharded checkpoint, read one after the other into one set. */
static void test_sharded_shards(void) {
    nx_tensorset *ts = nx__tensorset_new();
    nx_status st = nx__torchbin_read_into(ts, fixture_path("torch/sharded/pytorch_model-00001-of-00002.bin"));
    if (st == NX_OK) st = nx__torchbin_read_into(ts, fixture_path("torch/sharded/pytorch_model-00002-of-00002.bin"));
    if (st != NX_OK) { nx_tensorset_free(ts); CHECK_MSG(0, "%s", nx_last_error()); }
    const char *bad = compare_ref(ts, "torch/sharded.ref.json");
    nx_tensorset_free(ts);
    CHECK_MSG(bad == NULL, "%s", bad);
}

/* The same checkpoint through the public entry point: a directory holding
 * pytorch_model.bin.index.json, and the index itself, dispatched to this reader per shard. */
static void test_sharded_via_tensorset_open(void) {
    const char *inputs[] = {"torch/sharded", "torch/sharded/pytorch_model.bin.index.json"};
    for (size_t i = 0; i < 2; i++) {
        nx_tensorset *ts = NULL;
        nx_status st = nx_tensorset_open(fixture_path(inputs[i]), &ts);
        CHECK_MSG(st == NX_OK, "%s: %s", inputs[i], nx_last_error());
        const char *bad = compare_ref(ts, "torch/sharded.ref.json");
        nx_tensorset_free(ts);
        CHECK_MSG(bad == NULL, "%s: %s", inputs[i], bad);
    }
    nx_tensorset *ts = NULL;
    nx_status st = nx_tensorset_open(fixture_path("torch/evil_eval.bin"), &ts);
    CHECK_EQ_INT(st, NX_ERR_SECURITY);
    CHECK(ts == NULL);
}

static uint8_t *read_fixture(const char *rel, size_t *n) {
    FILE *f = fopen(fixture_path(rel), "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

/* Every prefix of a real checkpoint is rejected cleanly (never crashes under ASan). */
static void test_every_truncation_fails(void) {
    size_t n;
    uint8_t *full = read_fixture("torch/basic.bin", &n);
    CHECK(full != NULL);
    int accepted = 0;
    for (size_t len = 0; len < n; len++) {
        uint8_t *b = malloc(len ? len : 1);   /* exact-size copy so ASan sees overreads */
        memcpy(b, full, len);
        nx_tensorset *ts = nx__tensorset_new();
        if (nx__torchbin_parse(ts, b, len, "trunc.bin") == NX_OK) accepted++;
        nx_tensorset_free(ts);
        free(b);
    }
    free(full);
    CHECK_EQ_INT(accepted, 0);
}

/* Single-byte corruptions anywhere (header, directory, pickle) must not crash; the file
 * may still load when the byte is in weights or padding. Every byte is inverted; the
 * pickle (the first member) also gets zeroed bytes, which hit lengths and opcodes. */
static void test_byte_flips_do_not_crash(void) {
    size_t n;
    uint8_t *full = read_fixture("torch/basic.bin", &n);
    CHECK(full != NULL);
    uint8_t *b = malloc(n);
    int loaded = 0;
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 2; k++) {
            if (k == 1 && (i > 1500 || full[i] == 0)) continue;
            memcpy(b, full, n);
            b[i] = k == 0 ? (uint8_t)~full[i] : 0;
            nx_tensorset *ts = nx__tensorset_new();
            if (nx__torchbin_parse(ts, b, n, "flip.bin") == NX_OK) {
                loaded++;
                /* whatever loaded must be readable in full */
                volatile uint8_t sink = 0;
                for (size_t t = 0; t < nx_tensorset_count(ts); t++) {
                    const nx_tensor_info *ti = nx_tensorset_at(ts, t);
                    for (size_t j = 0; j < ti->nbytes; j++) sink ^= ((const uint8_t *)ti->data)[j];
                }
                (void)sink;
            }
            nx_tensorset_free(ts);
        }
    }
    free(b);
    free(full);
    CHECK(loaded > 0);   /* flips in weight bytes keep the file valid */
}

/* Allocation failure at every point returns NX_ERR_NOMEM and leaks nothing. */
static int g_fail_at, g_allocs;
static void *fail_malloc(size_t n, void *u) { (void)u; return g_allocs++ == g_fail_at ? NULL : malloc(n); }
static void *fail_realloc(void *p, size_t n, void *u) { (void)u; return g_allocs++ == g_fail_at ? NULL : realloc(p, n); }
static void plain_free(void *p, void *u) { (void)u; free(p); }

static void test_allocation_failures(void) {
    size_t n;
    uint8_t *full = read_fixture("torch/basic.bin", &n);
    CHECK(full != NULL);
    nx_alloc_hooks hooks = {fail_malloc, fail_realloc, plain_free, NULL};
    int ok_runs = 0, bad_status = 0, k;
    for (k = 0; k < 5000; k++) {
        nx_alloc_set_hooks(&hooks);
        g_fail_at = k;
        g_allocs = 0;
        nx_tensorset *ts = nx__tensorset_new();
        nx_status st = ts ? nx__torchbin_parse(ts, full, n, "oom.bin") : NX_ERR_NOMEM;
        nx_tensorset_free(ts);
        int total = g_allocs;
        nx_alloc_set_hooks(NULL);
        if (st == NX_OK) { ok_runs++; if (k >= total) break; }
        else if (st != NX_ERR_NOMEM) { fprintf(stderr, "  alloc %d: %s\n", k, nx_last_error()); bad_status++; }
    }
    free(full);
    CHECK_EQ_INT(bad_status, 0);
    CHECK(k < 5000);   /* reached a run with no failure */
}

/* ---- unpickler unit checks on hand-written streams --------------------------------- */
static nx_status unpickle(const char *bytes, size_t n, nx_pickle **pk, nx_pk **root) {
    return nx__pickle_load((const uint8_t *)bytes, n, "t.pkl", pk, root);
}

static void test_pickle_ints_and_memo(void) {
    /* [LONG1 -2**40, LONG1 2**63-1, BININT -5, BININT2 65535, BINFLOAT 1.5, memo get] */
    static const char s[] = "\x80\x02]q\x00(\x8a\x06\x00\x00\x00\x00\x00\xff"
                            "\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f"
                            "J\xfb\xff\xff\xffM\xff\xff" "G\x3f\xf8\x00\x00\x00\x00\x00\x00" "h\x00" "e.";
    nx_pickle *pk;
    nx_pk *r;
    nx_status st = unpickle(s, sizeof s - 1, &pk, &r);
    CHECK_MSG(st == NX_OK, "%s", nx_last_error());
    int ok = r->kind == NX_PK_LIST && r->n == 6 && r->items[0]->i == -(1ll << 40) && r->items[1]->i == INT64_MAX &&
             r->items[2]->i == -5 && r->items[3]->i == 65535 && r->items[4]->f == 1.5 && r->items[5] == r;
    nx__pickle_free(pk);
    CHECK(ok);
}

static void test_pickle_rejects(void) {
    static const struct { const char *s; size_t n; const char *want; } cases[] = {
        {"\x80\x02q\x00.", 5, "underflow"},
        {"\x80\x02Nr\xff\xff\xff\x00.", 9, "memo index"},
        {"\x80\x02h\x05.", 5, "undefined"},
        {"\x80\x02\x8a\x09\x01\x01\x01\x01\x01\x01\x01\x01\x01.", 14, "64 bits"},
        {"\x80\x02X\xff\xff\xff\x7f" "ab.", 10, "past the end"},
        {"\x80\x02X\x02\x00\x00\x00\xc3\x28.", 11, "UTF-8"},
        {"\x80\x02I42\n.", 7, "opcode 'I'"},
        {"\x80\x02" "cos\x1b[2J\nsystem\n.", 17, "global 'os?[2J.system'"},
        {"\x80\x02" "ctorch\nHalfStorage\n)R.", 23, "never calls"},
        {"\x80\x02N", 3, "without STOP"},
        {"\x80\x06N.", 4, "protocol"},
        {"\x80\x02(t(u.", 7, "expected a dict"},
        {"\x80\x02}(K\x01u.", 8, "odd number"},
    };
    for (size_t i = 0; i < NX_ARRAY_LEN(cases); i++) {
        nx_pickle *pk;
        nx_pk *r;
        nx_status st = unpickle(cases[i].s, cases[i].n, &pk, &r);
        if (st == NX_OK) nx__pickle_free(pk);
        CHECK_MSG(st != NX_OK, "case %zu accepted", i);
        CHECK_MSG(strstr(nx_last_error(), cases[i].want) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, nx_last_error(),
                  cases[i].want);
    }
}

static void test_zip_rejects_garbage(void) {
    nx_zip z;
    static const uint8_t junk[64] = {'P', 'K', 5, 6};
    CHECK(nx__zip_open(&z, junk, 0, "empty") != NX_OK);
    CHECK(nx__zip_open(&z, junk, sizeof junk, "junk") != NX_OK);
    /* an EOCD claiming 1000 entries in a 0-byte directory */
    uint8_t e[22] = {'P', 'K', 5, 6, 0, 0, 0, 0, 0xe8, 0x03, 0xe8, 0x03};
    CHECK(nx__zip_open(&z, e, sizeof e, "e") != NX_OK);
    CHECK_STR_CONTAINS(nx_last_error(), "members");
}

int main(void) {
    TEST_RUN(test_basic_matches_torch);
    TEST_RUN(test_protocol4_matches_torch);
    TEST_RUN(test_params_and_v3);
    TEST_RUN(test_module_state_dict);
    TEST_RUN(test_nested_dict_flattened);
    TEST_RUN(test_big_endian);
    TEST_RUN(test_zip64);
    TEST_RUN(test_zero_copy_and_views);
    TEST_RUN(test_hostile_files);
    TEST_RUN(test_exact_security_message);
    TEST_RUN(test_sharded_shards);
    TEST_RUN(test_sharded_via_tensorset_open);
    TEST_RUN(test_every_truncation_fails);
    TEST_RUN(test_byte_flips_do_not_crash);
    TEST_RUN(test_allocation_failures);
    TEST_RUN(test_pickle_ints_and_memo);
    TEST_RUN(test_pickle_rejects);
    TEST_RUN(test_zip_rejects_garbage);
    TEST_END();
}
