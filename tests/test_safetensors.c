/*
 * test_safetensors.c - safetensors reader/writer and the checkpoint dispatcher, checked
 * against files written by the Python safetensors package (tools/fixtures/make_safetensors.py,
 * committed under tests/fixtures/io/):
 *   - every dtype reads back with the exact bytes and values Python recorded;
 *   - our writer, given the same tensors in any order, produces a byte-identical file
 *     (the reference writer is deterministic for a one-key __metadata__);
 *   - the 2-shard index, directory preference order, index errors (missing shard or
 *     tensor, wrong shard, path escapes);
 *   - corrupt headers, each checked for its specific one-line message.
 */
#include "io/io.h"
#include "test.h"

#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[1024];

static const char *tmp_path(const char *name) {
    static char buf[4][1200];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_tmp, name);
    return buf[slot];
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(sz > 0 ? (size_t)sz : 1);
    *n = fread(b, 1, (size_t)(sz > 0 ? sz : 0), f);
    fclose(f);
    return b;
}

/* 8-byte length + header + data, as a malloc'd buffer. */
static uint8_t *mk(const char *header, const void *data, size_t dlen, size_t *n) {
    size_t hl = strlen(header);
    *n = 8 + hl + dlen;
    uint8_t *b = malloc(*n);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    if (dlen) memcpy(b + 8 + hl, data, dlen);
    return b;
}

/* Parses a buffer; returns the status and leaves the message in nx_last_error(). A failed
 * parse must leave the set empty. */
static nx_status parse_buf(const uint8_t *b, size_t n, size_t *count) {
    nx_tensorset *ts = nx__tensorset_new();
    nx_status st = nx__safetensors_parse(ts, b, n, "m.safetensors");
    *count = nx_tensorset_count(ts);
    nx_tensorset_free(ts);
    return st;
}

static nx_status parse_hdr(const char *header, const void *data, size_t dlen) {
    size_t n, count;
    uint8_t *b = mk(header, data, dlen, &n);
    nx_status st = parse_buf(b, n, &count);
    free(b);
    if (st != NX_OK && count != 0) return NX_ERR_INTERNAL;   /* partial commit is a bug */
    return st;
}

#define EXPECT_PARSE_ERR(hdr, data, dlen, needle)                          \
    do {                                                               \
        nx_status st_ = parse_hdr(hdr, data, dlen);                    \
        CHECK_EQ_INT(st_, NX_ERR_FORMAT);                              \
        CHECK_STR_CONTAINS(nx_last_error(), needle);                   \
        CHECK_STR_CONTAINS(nx_last_error(), "m.safetensors");          \
        n_cases++;                                                     \
    } while (0)

static nx_dtype dtype_from_torch(const char *t) {
    static const struct { const char *t; nx_dtype d; } m[] = {
        {"float64", NX_F64}, {"float32", NX_F32}, {"float16", NX_F16}, {"bfloat16", NX_BF16},
        {"int64", NX_I64},   {"int32", NX_I32},   {"int16", NX_I16},   {"int8", NX_I8},
        {"uint64", NX_U64},  {"uint32", NX_U32},  {"uint16", NX_U16},  {"uint8", NX_U8},
        {"bool", NX_BOOL},   {"float8_e5m2", NX_F8_E5M2}, {"float8_e4m3fn", NX_F8_E4M3},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (strcmp(m[i].t, t) == 0) return m[i].d;
    return NX_DTYPE_INVALID;
}

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

/* Every tensor of the Python-written file: dtype, shape, raw bytes, values. */
static void test_read_python_all_dtypes(void) {
    nx_tensorset *ts = NULL;
    CHECK_EQ_INT(nx_tensorset_open(fixture_path("io/all_dtypes.safetensors"), &ts), NX_OK);
    json_error_t je;
    json_t *exp = json_load_file(fixture_path("io/all_dtypes.json"), 0, &je);
    CHECK(exp != NULL);
    CHECK_EQ_INT(nx_tensorset_count(ts), json_object_size(exp));
    CHECK(nx_tensorset_metadata(ts, "format") && strcmp(nx_tensorset_metadata(ts, "format"), "pt") == 0);
    int seen_dtypes[NX_DTYPE_COUNT] = {0};
    const char *name;
    json_t *e;
    json_object_foreach(exp, name, e) {
        const nx_tensor_info *t = nx_tensorset_find(ts, name);
        CHECK_MSG(t != NULL, "tensor '%s' missing", name);
        nx_dtype dt = dtype_from_torch(json_string_value(json_object_get(e, "torch_dtype")));
        CHECK_MSG(t->dtype == dt, "tensor '%s': dtype %s", name, nx_dtype_name(t->dtype));
        seen_dtypes[dt] = 1;
        json_t *shape = json_object_get(e, "shape");
        CHECK_EQ_INT(t->ndim, json_array_size(shape));
        for (int d = 0; d < t->ndim; d++) CHECK_EQ_INT(t->shape[d], json_integer_value(json_array_get(shape, (size_t)d)));
        const char *hex = json_string_value(json_object_get(e, "hex"));
        CHECK_EQ_INT(t->nbytes * 2, strlen(hex));
        const uint8_t *p = t->data;
        for (size_t i = 0; i < t->nbytes; i++)
            CHECK_MSG(p[i] == (uint8_t)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1])), "tensor '%s' byte %zu", name, i);
        /* reference writer order keeps every tensor aligned to its element size */
        CHECK_MSG(((uintptr_t)t->data % nx_dtype_size(t->dtype)) == 0 || t->nbytes == 0, "tensor '%s' misaligned", name);
        json_t *vals = json_object_get(e, "values");
        CHECK_EQ_INT(nx_tensor_numel(t), json_array_size(vals));
        size_t n = nx_tensor_numel(t);
        if (dt == NX_F32 || dt == NX_F64 || dt == NX_F16 || dt == NX_BF16 || dt == NX_F8_E5M2 || dt == NX_F8_E4M3) {
            float *f = malloc((n ? n : 1) * sizeof *f);
            CHECK_EQ_INT(nx_tensor_to_f32(t, f), NX_OK);
            for (size_t i = 0; i < n; i++) CHECK_NEAR(f[i], json_number_value(json_array_get(vals, i)), 0);
            free(f);
        } else if (dt == NX_I64 || dt == NX_U64) {
            for (size_t i = 0; i < n; i++) {
                int64_t v;
                memcpy(&v, p + 8 * i, 8);
                CHECK_EQ_INT(v, json_integer_value(json_array_get(vals, i)));
            }
        } else if (dt == NX_I32 || dt == NX_U32) {
            for (size_t i = 0; i < n; i++) {
                int32_t v;
                uint32_t u;
                memcpy(&v, p + 4 * i, 4);
                memcpy(&u, p + 4 * i, 4);
                CHECK_EQ_INT(dt == NX_I32 ? (long long)v : (long long)u, json_integer_value(json_array_get(vals, i)));
            }
        } else if (dt == NX_I16 || dt == NX_U16) {
            for (size_t i = 0; i < n; i++) {
                int16_t v;
                uint16_t u;
                memcpy(&v, p + 2 * i, 2);
                memcpy(&u, p + 2 * i, 2);
                CHECK_EQ_INT(dt == NX_I16 ? (long long)v : (long long)u, json_integer_value(json_array_get(vals, i)));
            }
        } else if (dt == NX_I8 || dt == NX_U8 || dt == NX_BOOL) {
            for (size_t i = 0; i < n; i++)
                CHECK_EQ_INT(dt == NX_I8 ? (long long)(int8_t)p[i] : (long long)p[i],
                             json_integer_value(json_array_get(vals, i)));
        }
        else {
            float f;
            CHECK_EQ_INT(nx_tensor_to_f32(t, &f), NX_ERR_UNSUPPORTED);   /* integers are not converted */
        }
    }
    for (int d = NX_F64; d <= NX_F8_E4M3; d++) CHECK_MSG(seen_dtypes[d], "dtype %s not covered", nx_dtype_name((nx_dtype)d));
    CHECK(nx_tensorset_find(ts, "nope") == NULL);
    json_decref(exp);
    nx_tensorset_free(ts);
}

/* Every F8 byte pattern against torch's own decoding would need torch; instead check the
 * decoders at the format's landmarks (max normal, min subnormal, NaN, signed zero). */
static void test_f8_decode(void) {
    uint8_t e4[] = {0x7e, 0x01, 0x08, 0x7f, 0x80, 0xbe, 0x38};
    uint8_t e5[] = {0x7b, 0x01, 0x7c, 0x7f, 0xc0, 0x3c};
    nx_tensor_info t = {.name = "f8", .dtype = NX_F8_E4M3, .ndim = 1, .shape = {7}, .data = e4, .nbytes = 7, .file = "x"};
    float f[7];
    CHECK_EQ_INT(nx_tensor_to_f32(&t, f), NX_OK);
    CHECK_NEAR(f[0], 448.0, 0);            /* max finite */
    CHECK_NEAR(f[1], 0.001953125, 0);      /* 2^-9, smallest subnormal */
    CHECK_NEAR(f[2], 0.015625, 0);         /* 2^-6, smallest normal */
    CHECK(isnan(f[3]));
    CHECK(f[4] == 0.0f && signbit(f[4]));
    CHECK_NEAR(f[5], -1.75, 0);
    CHECK_NEAR(f[6], 1.0, 0);
    t.dtype = NX_F8_E5M2;
    t.shape[0] = 6;
    t.data = e5;
    t.nbytes = 6;
    CHECK_EQ_INT(nx_tensor_to_f32(&t, f), NX_OK);
    CHECK_NEAR(f[0], 57344.0, 0);          /* max finite */
    CHECK_NEAR(f[1], 1.52587890625e-05, 0); /* 2^-16 */
    CHECK(isinf(f[2]) && f[2] > 0);
    CHECK(isnan(f[3]));
    CHECK_NEAR(f[4], -2.0, 0);
    CHECK_NEAR(f[5], 1.0, 0);
    /* all 256 bytes of both formats against torch's decoding */
    json_error_t je;
    json_t *tab = json_load_file(fixture_path("io/f8_table.json"), 0, &je);
    CHECK(tab != NULL);
    uint8_t all[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
    float g[256];
    for (int k = 0; k < 2; k++) {
        t.dtype = k ? NX_F8_E5M2 : NX_F8_E4M3;
        t.shape[0] = 256;
        t.data = all;
        t.nbytes = 256;
        CHECK_EQ_INT(nx_tensor_to_f32(&t, g), NX_OK);
        json_t *ref = json_object_get(tab, nx_dtype_name(t.dtype));
        CHECK_EQ_INT(json_array_size(ref), 256);
        for (int i = 0; i < 256; i++) {
            json_t *v = json_array_get(ref, (size_t)i);
            if (json_is_null(v)) CHECK_MSG(isnan(g[i]), "%s byte %d", nx_dtype_name(t.dtype), i);
            else if (json_is_string(v)) CHECK_MSG(isinf(g[i]) && (g[i] < 0) == (json_string_value(v)[0] == '-'), "byte %d", i);
            else CHECK_MSG(g[i] == (float)json_number_value(v) && !signbit(g[i]) == !signbit(json_number_value(v)),
                           "%s byte %d: %g vs %g", nx_dtype_name(t.dtype), i, (double)g[i], json_number_value(v));
        }
    }
    json_decref(tab);
}

/* Rewrites a reference file with our writer (tensors handed over in a scrambled order)
 * and compares the bytes. */
static void rewrite_and_compare(const char *rel, const char *outname) {
    nx_tensorset *ts = NULL;
    const char *ref = fixture_path(rel);
    CHECK_EQ_INT(nx_tensorset_open(ref, &ts), NX_OK);
    size_t n = nx_tensorset_count(ts);
    nx_tensor_write *w = calloc(n, sizeof *w);
    size_t step = 7;   /* coprime with n, so i -> (i * step + 3) % n is a permutation */
    for (;;) {
        size_t a = n, b = step;
        while (b) { size_t r = a % b; a = b; b = r; }
        if (a == 1 || n <= 1) break;
        step++;
    }
    for (size_t i = 0; i < n; i++) {
        const nx_tensor_info *t = nx_tensorset_at(ts, (i * step + 3) % n);
        w[i].name = t->name;
        w[i].dtype = t->dtype;
        w[i].ndim = t->ndim;
        memcpy(w[i].shape, t->shape, sizeof w[i].shape);
        w[i].data = t->data;
    }
    const char *meta[] = {"format", "pt"};
    const char *out = tmp_path(outname);
    CHECK_EQ_INT(nx_safetensors_write(out, w, n, meta, 1), NX_OK);
    size_t na, nb;
    uint8_t *a = read_file(ref, &na), *b = read_file(out, &nb);
    CHECK(a && b);
    CHECK_MSG(na == nb, "%s: %zu bytes, ours %zu", rel, na, nb);
    size_t first_diff = na;
    for (size_t i = 0; i < na; i++) if (a[i] != b[i]) { first_diff = i; break; }
    CHECK_MSG(first_diff == na, "%s: first differing byte at %zu", rel, first_diff);
    /* header length is a multiple of 8 */
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    CHECK_EQ_INT(hl % 8, 0);
    /* no temporary left behind */
    char tmpname[1300];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", out, (long)getpid());
    CHECK(access(tmpname, F_OK) != 0);
    free(a);
    free(b);
    free(w);
    nx_tensorset_free(ts);
}

/* Byte-identical to Python safetensors (every dtype, escaped names) and to the
 * model.safetensors that transformers' save_pretrained wrote for the tiny model. */
static void test_write_matches_python(void) {
    int before = t_failed_checks;
    rewrite_and_compare("io/all_dtypes.safetensors", "ours_all_dtypes.safetensors");
    rewrite_and_compare("io/tiny-neox/model.safetensors", "ours_tiny.safetensors");
    rewrite_and_compare("io/sharded/model-00002-of-00002.safetensors", "ours_shard2.safetensors");
    rewrite_and_compare("io/legacy_buffers.safetensors", "ours_legacy.safetensors");
    if (t_failed_checks != before) t_current_failed = 1;
}

static void test_write_roundtrip_and_errors(void) {
    float f[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {0x3c00, 0x4000, 0xc000};
    nx_tensor_write w[3] = {
        {.name = "b.weight", .dtype = NX_F32, .ndim = 2, .shape = {2, 3}, .data = f},
        {.name = "a.half", .dtype = NX_F16, .ndim = 1, .shape = {3}, .data = h},
        {.name = "empty", .dtype = NX_BF16, .ndim = 2, .shape = {0, 5}, .data = NULL},
    };
    const char *meta[] = {"format", "pt", "note", "line\nbreak \"quoted\""};
    const char *out = tmp_path("rt.safetensors");
    CHECK_EQ_INT(nx_safetensors_write(out, w, 3, meta, 2), NX_OK);
    nx_tensorset *ts = NULL;
    CHECK_EQ_INT(nx_tensorset_open(out, &ts), NX_OK);
    CHECK_EQ_INT(nx_tensorset_count(ts), 3);
    const nx_tensor_info *t = nx_tensorset_find(ts, "b.weight");
    CHECK(t && t->dtype == NX_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    CHECK(memcmp(t->data, f, sizeof f) == 0);
    t = nx_tensorset_find(ts, "a.half");
    float g[3];
    CHECK(t && nx_tensor_to_f32(t, g) == NX_OK);
    CHECK_NEAR(g[0], 1.0, 0); CHECK_NEAR(g[1], 2.0, 0); CHECK_NEAR(g[2], -2.0, 0);
    t = nx_tensorset_find(ts, "empty");
    CHECK(t && t->nbytes == 0 && t->shape[1] == 5);
    CHECK(strcmp(nx_tensorset_metadata(ts, "note"), "line\nbreak \"quoted\"") == 0);
    nx_tensorset_free(ts);

    /* argument errors, and a failed write leaves no file */
    const char *bad = tmp_path("bad.safetensors");
    nx_tensor_write dup[2] = {w[0], w[0]};
    CHECK_EQ_INT(nx_safetensors_write(bad, dup, 2, NULL, 0), NX_ERR_INVALID_ARG);
    CHECK_STR_CONTAINS(nx_last_error(), "duplicate tensor name 'b.weight'");
    nx_tensor_write q = w[0];
    q.dtype = NX_Q8_0;
    CHECK_EQ_INT(nx_safetensors_write(bad, &q, 1, NULL, 0), NX_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(nx_last_error(), "Q8_0 cannot be stored");
    q = w[0];
    q.name = "__metadata__";
    CHECK_EQ_INT(nx_safetensors_write(bad, &q, 1, NULL, 0), NX_ERR_INVALID_ARG);
    q = w[0];
    q.shape[0] = -2;
    CHECK_EQ_INT(nx_safetensors_write(bad, &q, 1, NULL, 0), NX_ERR_INVALID_ARG);
    CHECK_STR_CONTAINS(nx_last_error(), "shape[0] = -2 is negative");
    q = w[0];
    q.name = "bad\xff";
    CHECK_EQ_INT(nx_safetensors_write(bad, &q, 1, NULL, 0), NX_ERR_INVALID_ARG);
    CHECK_STR_CONTAINS(nx_last_error(), "UTF-8");
    const char *dupmeta[] = {"k", "1", "k", "2"};
    CHECK_EQ_INT(nx_safetensors_write(bad, w, 1, dupmeta, 2), NX_ERR_INVALID_ARG);
    CHECK(access(bad, F_OK) != 0);
    /* writing into a missing directory fails cleanly */
    CHECK_EQ_INT(nx_safetensors_write(tmp_path("no/such/dir/x.safetensors"), w, 1, NULL, 0), NX_ERR_IO);
    /* a file with no tensors and no metadata is valid: "{}" padded to 8 */
    CHECK_EQ_INT(nx_safetensors_write(tmp_path("empty.safetensors"), NULL, 0, NULL, 0), NX_OK);
    size_t en;
    uint8_t *eb = read_file(tmp_path("empty.safetensors"), &en);
    CHECK(eb && en == 16 && eb[0] == 8 && memcmp(eb + 8, "{}      ", 8) == 0);
    free(eb);
}

static void check_sharded_values(nx_tensorset *ts) {
    json_error_t je;
    json_t *exp = json_load_file(fixture_path("io/sharded/expected.json"), 0, &je);
    CHECK(exp != NULL);
    CHECK_EQ_INT(nx_tensorset_count(ts), 4);
    const char *name;
    json_t *vals;
    json_object_foreach(exp, name, vals) {
        const nx_tensor_info *t = nx_tensorset_find(ts, name);
        CHECK_MSG(t != NULL, "missing %s", name);
        size_t n = nx_tensor_numel(t);
        CHECK_EQ_INT(n, json_array_size(vals));
        float *f = malloc(n * sizeof *f);
        CHECK_EQ_INT(nx_tensor_to_f32(t, f), NX_OK);
        for (size_t i = 0; i < n; i++) CHECK_NEAR(f[i], json_number_value(json_array_get(vals, i)), 0);
        free(f);
    }
    CHECK(strstr(nx_tensorset_find(ts, "head.weight")->file, "model-00002-of-00002.safetensors") != NULL);
    CHECK(strcmp(nx_tensorset_metadata(ts, "format"), "pt") == 0);
    json_decref(exp);
}

static void test_sharded(void) {
    nx_tensorset *ts = NULL;
    CHECK_EQ_INT(nx_tensorset_open(fixture_path("io/sharded/model.safetensors.index.json"), &ts), NX_OK);
    check_sharded_values(ts);
    nx_tensorset_free(ts);
    ts = NULL;
    /* the directory has no model.safetensors, so the index is picked */
    CHECK_EQ_INT(nx_tensorset_open(fixture_path("io/sharded"), &ts), NX_OK);
    check_sharded_values(ts);
    nx_tensorset_free(ts);
}

/* Copies a fixture shard into the temp dir under a new name. */
static int copy_file(const char *src, const char *dst) {
    size_t n;
    uint8_t *b = read_file(src, &n);
    if (!b) return -1;
    int rc = write_file(dst, b, n);
    free(b);
    return rc;
}

static nx_status open_index_text(const char *dir, const char *text) {
    char p[1300];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_file(p, text, strlen(text));
    nx_tensorset *ts = NULL;
    nx_status st = nx_tensorset_open(p, &ts);
    nx_tensorset_free(ts);
    if (st == NX_OK) nx__error(NX_OK, "(opened)");
    return st;
}

static void test_index_errors(void) {
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/idx", g_tmp);
    mkdir(dir, 0777);
    char s1[1300], s2[1300];
    snprintf(s1, sizeof s1, "%s/a.safetensors", dir);
    snprintf(s2, sizeof s2, "%s/b.safetensors", dir);
    CHECK(copy_file(fixture_path("io/sharded/model-00001-of-00002.safetensors"), s1) == 0);
    CHECK(copy_file(fixture_path("io/sharded/model-00002-of-00002.safetensors"), s2) == 0);
    int n_cases = 0;
    /* the valid baseline */
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"embed.weight\":\"a.safetensors\",\"head.weight\":\"b.safetensors\"}}"),
                 NX_OK);
    /* missing shard */
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"embed.weight\":\"c.safetensors\"}}"), NX_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(nx_last_error(), "shard \"c.safetensors\" named in weight_map does not exist");
    n_cases++;
    /* tensor not in its shard */
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"ghost.weight\":\"a.safetensors\"}}"), NX_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(nx_last_error(), "tensor 'ghost.weight' is mapped to shard \"a.safetensors\" but that shard does not contain it");
    n_cases++;
    /* tensor present, but in another shard than the map says */
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"embed.weight\":\"b.safetensors\",\"x\":\"a.safetensors\"}}"),
                 NX_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(nx_last_error(), "'embed.weight' is mapped to shard \"b.safetensors\"");
    n_cases++;
    /* path escapes */
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"embed.weight\":\"../idx/a.safetensors\"}}"), NX_ERR_SECURITY);
    CHECK_STR_CONTAINS(nx_last_error(), "leaves the checkpoint directory");
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"embed.weight\":\"/etc/passwd\"}}"), NX_ERR_SECURITY);
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"embed.weight\":\"sub/../../x\"}}"), NX_ERR_SECURITY);
    n_cases++;
    /* structure */
    CHECK_EQ_INT(open_index_text(dir, "{\"metadata\":{}}"), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "no \"weight_map\"");
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":[\"a.safetensors\"]}"), NX_ERR_FORMAT);
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"embed.weight\":3}}"), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "weight_map['embed.weight'] is not a string");
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{"), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "not valid JSON");
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"a\":\"a.safetensors\",\"a\":\"b.safetensors\"}}"), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "duplicate");
    n_cases++;
    CHECK(n_cases >= 5);
}

/* Directory preference: model.safetensors over the index over pytorch_model.bin. */
static void test_directory_preference(void) {
    char dir[1200], p[1300];
    snprintf(dir, sizeof dir, "%s/pref", g_tmp);
    mkdir(dir, 0777);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);   /* left by an earlier run */
    snprintf(p, sizeof p, "%s/pytorch_model.bin", dir);
    CHECK(write_file(p, "not a zip", 9) == 0);
    nx_tensorset *ts = NULL;
    /* only a .bin: it goes to the PyTorch reader, which rejects this garbage naming the file */
    CHECK(nx_tensorset_open(dir, &ts) != NX_OK);
    CHECK_STR_CONTAINS(nx_last_error(), "pytorch_model.bin");
    /* a .bin index goes through the same weight_map logic and hands .bin shards to the
     * PyTorch reader */
    char bdir[1200];
    snprintf(bdir, sizeof bdir, "%s/binidx", g_tmp);
    mkdir(bdir, 0777);
    snprintf(p, sizeof p, "%s/pytorch_model-00001-of-00001.bin", bdir);
    CHECK(write_file(p, "PK\3\4garbage", 11) == 0);
    snprintf(p, sizeof p, "%s/pytorch_model.bin.index.json", bdir);
    const char *bidx = "{\"metadata\": {\"total_size\": 4}, \"weight_map\": {\"w\": \"pytorch_model-00001-of-00001.bin\"}}";
    CHECK(write_file(p, bidx, strlen(bidx)) == 0);
    CHECK(nx_tensorset_open(bdir, &ts) != NX_OK);
    CHECK_STR_CONTAINS(nx_last_error(), "pytorch_model.bin.index.json: ");
    CHECK_STR_CONTAINS(nx_last_error(), "pytorch_model-00001-of-00001.bin");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(copy_file(fixture_path("io/sharded/model-00002-of-00002.safetensors"), p) == 0);
    CHECK_EQ_INT(nx_tensorset_open(dir, &ts), NX_OK);
    CHECK(nx_tensorset_find(ts, "head.weight") != NULL);
    nx_tensorset_free(ts);
    ts = NULL;
    /* no checkpoint at all */
    snprintf(dir, sizeof dir, "%s/none", g_tmp);
    mkdir(dir, 0777);
    CHECK_EQ_INT(nx_tensorset_open(dir, &ts), NX_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(nx_last_error(), "no checkpoint in this directory");
    CHECK_EQ_INT(nx_tensorset_open(tmp_path("missing.safetensors"), &ts), NX_ERR_NOT_FOUND);
    CHECK(ts == NULL);
}

static void test_corrupt(void) {
    int n_cases = 0;
    uint8_t d16[16] = {0};
    size_t n, count;
    /* truncated: a valid file with its last 10 bytes cut */
    uint8_t *full = read_file(fixture_path("io/all_dtypes.safetensors"), &n);
    CHECK(full != NULL);
    CHECK_EQ_INT(parse_buf(full, n, &count), NX_OK);
    CHECK_EQ_INT(parse_buf(full, n - 10, &count), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "extend beyond the data region");
    CHECK_EQ_INT(count, 0);
    n_cases++;
    /* truncated inside the header */
    CHECK_EQ_INT(parse_buf(full, 100, &count), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "bytes after it (truncated?)");
    n_cases++;
    /* shorter than the length field */
    CHECK_EQ_INT(parse_buf(full, 5, &count), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "m.safetensors: file is 5 bytes, too short");
    n_cases++;
    free(full);
    /* header length 0 */
    uint8_t zero[8] = {0};
    CHECK_EQ_INT(parse_buf(zero, 8, &count), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "header length is 0");
    n_cases++;
    /* header length above the 100 MB limit */
    uint8_t huge[16] = {0x01, 0xe1, 0xf5, 0x05, 0, 0, 0, 0, '{', '}'};   /* 100000001 */
    CHECK_EQ_INT(parse_buf(huge, 16, &count), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "exceeds the 100000000-byte limit");
    n_cases++;
    /* length with the top bit set must not wrap around */
    uint8_t wrap[16] = {0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    CHECK_EQ_INT(parse_buf(wrap, 16, &count), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "exceeds the 100000000-byte limit");

    EXPECT_PARSE_ERR("[1, 2]", NULL, 0, "header is a JSON array, expected an object");
    EXPECT_PARSE_ERR("\"str\"", NULL, 0, "header is a JSON string, expected an object");
    EXPECT_PARSE_ERR("{\"a\": {\"dtype\": \"F32\"", NULL, 0, "header is not valid JSON");
    EXPECT_PARSE_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                     "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                     d16, 2, "duplicate object key");
    EXPECT_PARSE_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
                     d16, 12, "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
    EXPECT_PARSE_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}",
                     d16, 12, "data bytes [4, 8) before tensor 'b' belong to no tensor (gap)");
    EXPECT_PARSE_ERR("{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", d16, 8,
                     "data bytes [0, 4) before tensor 'b'");
    EXPECT_PARSE_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", d16, 6,
                     "tensors cover 4 of the 6 data bytes");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", d16, 4,
                     "tensor 'w': unknown dtype \"F33\"");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"Q8_0\",\"shape\":[1],\"data_offsets\":[0,36]}}", d16, 16,
                     "unknown dtype \"Q8_0\"");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", NULL, 0,
                     "tensor 'w': shape [4294967296, 4294967296] x F64 overflows");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", d16, 4,
                     "tensor 'w': shape[0] = -1 is negative");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", d16, 8,
                     "shape[0] is a JSON number, expected an integer");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"U8\",\"shape\":[32],\"data_offsets\":[0,32]}}", d16, 16,
                     "tensor 'w': data_offsets [0, 32] extend beyond the data region (16 bytes)");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", d16, 12,
                     "m.safetensors: tensor 'w': data_offsets [0, 12] but shape [2, 2] x F32 needs 16 bytes");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", d16, 4,
                     "data_offsets [4, 0] end before they begin");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":\"0,4\"}}", d16, 4,
                     "data_offsets is a JSON string, expected [begin, end]");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0.0,4]}}", d16, 4,
                     "data_offsets[0] is a JSON number, expected an integer");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}", d16, 4,
                     "data_offsets is a JSON array too long");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-4,0]}}", d16, 4,
                     "data_offsets[0] = -4 is negative");
    EXPECT_PARSE_ERR("{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", NULL, 0,
                     "__metadata__ value of 'n' is a JSON integer, expected a string");
    EXPECT_PARSE_ERR("{\"__metadata__\":[\"pt\"]}", NULL, 0, "__metadata__ is a JSON array");
    EXPECT_PARSE_ERR("{\"w\":{\"shape\":[4],\"data_offsets\":[0,4]}}", d16, 4, "tensor 'w' has no \"dtype\"");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,4]}}", d16, 4, "tensor 'w' has no \"shape\"");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"U8\",\"shape\":[4]}}", d16, 4, "tensor 'w' has no \"data_offsets\"");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":\"U8\",\"shape\":\"4\",\"data_offsets\":[0,4]}}", d16, 4,
                     "tensor 'w': shape is a JSON string");
    EXPECT_PARSE_ERR("{\"w\":{\"dtype\":8,\"shape\":[4],\"data_offsets\":[0,4]}}", d16, 4,
                     "tensor 'w': dtype is a JSON integer, expected a string");
    EXPECT_PARSE_ERR("{\"w\":12}", NULL, 0, "tensor 'w' is a JSON integer, expected an object");
    EXPECT_PARSE_ERR("{\"w\xff\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", d16, 4,
                     "header is not valid JSON");
    EXPECT_PARSE_ERR("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", d16, 4,
                     "header is not valid JSON");
    EXPECT_PARSE_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,99999999999999999999]}}", d16, 4,
                     "header is not valid JSON");
    /* nine dims is more than we support: NX_ERR_UNSUPPORTED, not a crash */
    CHECK_EQ_INT(parse_hdr("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", d16, 1),
                 NX_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(nx_last_error(), "at most 8");
    CHECK(n_cases >= 30);

    /* what the reference accepts, we accept: whitespace around the JSON, empty tensors at
     * a shared offset, a scalar, an empty header object */
    CHECK_EQ_INT(parse_hdr("  {\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                           "\"e\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
                           "\"z\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[0,0]}}   ",
                           d16, 4),
                 NX_OK);
    CHECK_EQ_INT(parse_hdr("{}", NULL, 0), NX_OK);
    /* an empty file through the reader */
    const char *ep = tmp_path("zero.safetensors");
    CHECK(write_file(ep, "", 0) == 0);
    nx_tensorset *ts = NULL;
    CHECK_EQ_INT(nx_tensorset_open(ep, &ts), NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "zero.safetensors: file is 0 bytes, too short");
}

/* A duplicate name across two shards is an error, not a silent shadow. */
static void test_duplicate_across_shards(void) {
    char dir[1200], s1[1300], s2[1300];
    snprintf(dir, sizeof dir, "%s/dupshard", g_tmp);
    mkdir(dir, 0777);
    snprintf(s1, sizeof s1, "%s/a.safetensors", dir);
    snprintf(s2, sizeof s2, "%s/b.safetensors", dir);
    CHECK(copy_file(fixture_path("io/sharded/model-00001-of-00002.safetensors"), s1) == 0);
    CHECK(copy_file(fixture_path("io/sharded/model-00001-of-00002.safetensors"), s2) == 0);
    CHECK_EQ_INT(open_index_text(dir, "{\"weight_map\":{\"embed.weight\":\"a.safetensors\",\"layers.0.bias\":\"b.safetensors\"}}"),
                 NX_ERR_FORMAT);
    CHECK_STR_CONTAINS(nx_last_error(), "duplicate tensor");
}

/* OOM injection: fail the k-th library allocation for every k until the open succeeds;
 * each attempt must fail cleanly with NX_ERR_NOMEM (ASan checks for leaks and bad frees). */
static long g_alloc_budget;
static void *oom_malloc(size_t n, void *u) { (void)u; return g_alloc_budget-- > 0 ? malloc(n) : NULL; }
static void *oom_realloc(void *p, size_t n, void *u) { (void)u; return g_alloc_budget-- > 0 ? realloc(p, n) : NULL; }
static void oom_free(void *p, void *u) { (void)u; free(p); }

static void test_out_of_memory(void) {
    nx_alloc_hooks h = {oom_malloc, oom_realloc, oom_free, NULL};
    int failures = 0;
    bool ok = false;
    for (long k = 0; k < 2000 && !ok; k++) {
        nx_tensorset *ts = NULL;
        g_alloc_budget = k;
        nx_alloc_set_hooks(&h);
        nx_status st = nx_tensorset_open(fixture_path("io/sharded/model.safetensors.index.json"), &ts);
        nx_alloc_set_hooks(NULL);
        CHECK_MSG(st == NX_OK || st == NX_ERR_NOMEM, "k=%ld: status %d (%s)", k, st, nx_last_error());
        if (st == NX_OK) {
            ok = true;
            CHECK_EQ_INT(nx_tensorset_count(ts), 4);
        } else {
            CHECK(ts == NULL);
            failures++;
        }
        nx_tensorset_free(ts);
    }
    CHECK(ok && failures > 5);
    /* the writer too */
    float f[4] = {1, 2, 3, 4};
    nx_tensor_write w = {.name = "x", .dtype = NX_F32, .ndim = 1, .shape = {4}, .data = f};
    const char *meta[] = {"format", "pt"};
    ok = false;
    for (long k = 0; k < 200 && !ok; k++) {
        g_alloc_budget = k;
        nx_alloc_set_hooks(&h);
        nx_status st = nx_safetensors_write(tmp_path("oom.safetensors"), &w, 1, meta, 1);
        nx_alloc_set_hooks(NULL);
        CHECK_MSG(st == NX_OK || st == NX_ERR_NOMEM, "writer k=%ld: status %d (%s)", k, st, nx_last_error());
        ok = st == NX_OK;
    }
    CHECK(ok);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/test_safetensors_tmp", NX_BINARY_DIR);
    mkdir(g_tmp, 0777);
    TEST_RUN(test_read_python_all_dtypes);
    TEST_RUN(test_f8_decode);
    TEST_RUN(test_write_matches_python);
    TEST_RUN(test_write_roundtrip_and_errors);
    TEST_RUN(test_sharded);
    TEST_RUN(test_index_errors);
    TEST_RUN(test_directory_preference);
    TEST_RUN(test_corrupt);
    TEST_RUN(test_duplicate_across_shards);
    TEST_RUN(test_out_of_memory);
    TEST_END();
}
