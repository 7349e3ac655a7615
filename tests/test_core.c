/* test_core.c - status messages, dtype conversions, allocation hooks, atomic files, pool,
 * nx_split (items shared between the threads of a run). */
#include "core/core.h"
#include "test.h"

#include <stdatomic.h>
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

/* Every item of a split handed out exactly once, whatever the thread count (1 to 70: beyond
 * NX_SPLIT_MAX threads share the shares), item count (0, fewer than the threads, many) and
 * timing (one thread sleeps before starting, so the others must take its share from the back);
 * one thread alone gets 0..n-1 in order. */
typedef struct {
    nx_split split;
    _Atomic int taken[3000];
    int in_order[80];   /* per thread: its items came in increasing order */
    int slow;
} split_job;

static void split_fn(int ith, int nth, void *arg) {
    (void)nth;
    split_job *j = arg;
    if (ith == j->slow) usleep(2000);
    int prev = -1, in_order = 1;
    for (int i; (i = nx__split_next(&j->split, ith)) >= 0; prev = i) {
        atomic_fetch_add(&j->taken[i], 1);
        if (i < prev) in_order = 0;
    }
    j->in_order[ith] = in_order;
}

static void test_split(void) {
    static split_job j;
    nx__split_init(&j.split, 5, 1);
    for (int k = 0; k < 5; k++) CHECK_EQ_INT(nx__split_next(&j.split, 0), k);
    CHECK_EQ_INT(nx__split_next(&j.split, 0), -1);
    nx__split_init(&j.split, 0, 3);
    CHECK_EQ_INT(nx__split_next(&j.split, 2), -1);
    const int threads[] = {1, 2, 3, 8, 70}, counts[] = {0, 1, 2, 7, 100, 3000};
    for (size_t a = 0; a < sizeof threads / sizeof *threads; a++) {
        nx_pool *pool = nx_pool_create(threads[a]);
        CHECK(pool != NULL);
        for (size_t b = 0; b < sizeof counts / sizeof *counts; b++)
            for (int slow = -1; slow < 2; slow++) {
                int n = counts[b];
                for (int i = 0; i < n; i++) atomic_init(&j.taken[i], 0);
                j.slow = slow;
                nx__split_init(&j.split, n, threads[a]);
                CHECK(j.split.n_shares == (threads[a] < NX_SPLIT_MAX ? threads[a] : NX_SPLIT_MAX));
                nx_pool_run(pool, split_fn, &j);
                int once = 1;
                for (int i = 0; i < n; i++) once &= atomic_load(&j.taken[i]) == 1;
                CHECK_MSG(once, "%d threads, %d items, slow thread %d: an item not taken exactly once", threads[a], n,
                          slow);
                if (threads[a] == 1) CHECK_EQ_INT(j.in_order[0], 1);
            }
        nx_pool_free(pool);
    }
}

int main(void) {
    TEST_RUN(test_status_and_error);
    TEST_RUN(test_dtypes);
    TEST_RUN(test_alloc_hooks);
    TEST_RUN(test_atomic_file);
    TEST_RUN(test_pool);
    TEST_RUN(test_split);
    TEST_END();
}
