/* test_core.c - status messages, dtype conversions, allocation hooks, atomic files, pool. */
#include "core/core.h"
#include "test.h"

#include <unistd.h>

static void test_status_and_error(void) {
    CHECK(strcmp(nx_status_str(NX_OK), "ok") == 0);
    nx_status st = nx__error(NX_ERR_FORMAT, "file %s: field %s", "a.json", "x");
    CHECK_EQ_INT(st, NX_ERR_FORMAT);
    CHECK(strcmp(nx_last_error(), "file a.json: field x") == 0);
    nx__error_wrap(st, "loading");
    CHECK(strcmp(nx_last_error(), "loading: file a.json: field x") == 0);
    CHECK(strcmp(nx_version(), NX_VERSION_STRING) == 0);
}

static void test_dtypes(void) {
    CHECK_EQ_INT(nx_dtype_from_name("BF16"), NX_BF16);
    CHECK_EQ_INT(nx_dtype_from_name("nope"), NX_DTYPE_INVALID);
    CHECK_EQ_INT(nx_dtype_size(NX_F64), 8);
    CHECK(strcmp(nx_dtype_name(NX_BOOL), "BOOL") == 0);
    /* f16: exhaustive round trip of every finite half through f32 and back. */
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t hh = (uint16_t)h;
        float f = nx_f16_to_f32(hh);
        if (isnan(f)) continue;
        CHECK_EQ_INT(nx_f32_to_f16(f), hh);
    }
    CHECK_NEAR(nx_f16_to_f32(0x3c00), 1.0, 0);
    CHECK_NEAR(nx_f16_to_f32(0x0001), 5.960464477539063e-08, 0);
    CHECK_EQ_INT(nx_f32_to_f16(65520.0f), 0x7c00);     /* rounds to inf */
    CHECK_EQ_INT(nx_f32_to_f16(65519.0f), 0x7bff);
    CHECK_EQ_INT(nx_f32_to_f16(1.0f + 1.0f / 2048.0f), 0x3c00); /* tie -> even */
    /* bf16 */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = nx_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        CHECK_EQ_INT(nx_f32_to_bf16(f), h);
    }
    CHECK_EQ_INT(nx_f32_to_bf16(1.00390625f), 0x3f80);  /* tie -> even (down) */
    CHECK_EQ_INT(nx_f32_to_bf16(1.01171875f), 0x3f82);  /* tie -> even (up) */
    CHECK(isnan(nx_bf16_to_f32(nx_f32_to_bf16(NAN))));
}

static int g_fail_after = -1;
static void *failing_malloc(size_t n, void *u) {
    (void)u;
    if (g_fail_after == 0) return NULL;
    if (g_fail_after > 0) g_fail_after--;
    return malloc(n);
}
static void *plain_realloc(void *p, size_t n, void *u) { (void)u; return realloc(p, n); }
static void plain_free(void *p, void *u) { (void)u; free(p); }

static void test_alloc_hooks(void) {
    nx_alloc_hooks h = {failing_malloc, plain_realloc, plain_free, NULL};
    nx_alloc_set_hooks(&h);
    g_fail_after = 0;
    CHECK(nx__malloc(16) == NULL);
    g_fail_after = -1;
    void *p = nx__malloc_aligned(100);
    CHECK(p != NULL && ((uintptr_t)p % 64) == 0);
    nx__free_aligned(p);
    nx_alloc_set_hooks(NULL);
    CHECK(nx__calloc(SIZE_MAX / 2, 4) == NULL);   /* overflow refused */
}

static void test_atomic_file(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/atomic_test_%d.txt", NX_BINARY_DIR, (int)getpid());
    nx_atomic_file af;
    CHECK(nx__atomic_open(&af, path) == NX_OK);
    CHECK(nx__atomic_write(&af, "hello", 5) == NX_OK);
    CHECK(!nx__file_exists(path));            /* not visible before commit */
    CHECK(nx__atomic_commit(&af) == NX_OK);
    char *data; size_t len;
    CHECK(nx__file_read_all(path, &data, &len) == NX_OK);
    CHECK(len == 5 && memcmp(data, "hello", 5) == 0);
    nx__free(data);
    /* abort keeps the old content */
    CHECK(nx__atomic_open(&af, path) == NX_OK);
    CHECK(nx__atomic_write(&af, "XX", 2) == NX_OK);
    nx__atomic_abort(&af);
    CHECK(nx__file_read_all(path, &data, &len) == NX_OK);
    CHECK(len == 5);
    nx__free(data);
    unlink(path);
    nx_mapped_file mf;
    CHECK(nx__file_map("/nonexistent/x", &mf) == NX_ERR_IO);
    CHECK_STR_CONTAINS(nx_last_error(), "/nonexistent/x");
}

typedef struct { long *out; int n; } sum_job;
static void sum_fn(int ith, int nth, void *arg) {
    sum_job *j = arg;
    for (int i = ith; i < j->n; i += nth) j->out[i] = (long)i * i;
}

static void test_pool(void) {
    for (int threads = 1; threads <= 4; threads++) {
        nx_pool *pool = nx_pool_create(threads);
        CHECK(pool != NULL);
        CHECK_EQ_INT(nx_pool_size(pool), threads);
        long out[1000];
        for (int rep = 0; rep < 200; rep++) {
            memset(out, 0, sizeof out);
            sum_job j = {out, 1000};
            nx_pool_run(pool, sum_fn, &j);
            for (int i = 0; i < 1000; i++) CHECK_EQ_INT(out[i], (long)i * i);
        }
        nx_pool_free(pool);
    }
    nx_pool_free(NULL);
}

int main(void) {
    TEST_RUN(test_status_and_error);
    TEST_RUN(test_dtypes);
    TEST_RUN(test_alloc_hooks);
    TEST_RUN(test_atomic_file);
    TEST_RUN(test_pool);
    TEST_END();
}
