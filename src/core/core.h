/*
 * core.h - internal master header of the core layer: error raising, allocation,
 * logging, platform wrappers (file mapping, atomic file writes) and small helpers.
 * Every other layer includes this. Depends on libc, pthreads and include/neox/core.h.
 */
#ifndef NX_CORE_INTERNAL_H
#define NX_CORE_INTERNAL_H

#include "neox/core.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define NX_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define NX_LIKELY(x) __builtin_expect(!!(x), 1)
#define NX_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define NX_PRINTF(a, b)
#define NX_LIKELY(x) (x)
#define NX_UNLIKELY(x) (x)
#endif

#define NX_MIN(a, b) ((a) < (b) ? (a) : (b))
#define NX_MAX(a, b) ((a) > (b) ? (a) : (b))
#define NX_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- errors --------------------------------------------------------------- */
/* Records a detail message for nx_last_error() and returns st, so callers can write
 * `return nx__error(NX_ERR_FORMAT, "%s: ...", path);`. */
nx_status nx__error(nx_status st, const char *fmt, ...) NX_PRINTF(2, 3);
/* Prefixes the current message with "prefix: " (adds context while unwinding). */
nx_status nx__error_wrap(nx_status st, const char *fmt, ...) NX_PRINTF(2, 3);

/* Propagate an error: NX_TRY(call) returns from the current function on failure. */
#define NX_TRY(expr)                        \
    do {                                    \
        nx_status nx__st_ = (expr);         \
        if (nx__st_ != NX_OK) return nx__st_; \
    } while (0)

/* Our own bugs only; always on. Bad input must return an error instead. */
void nx__assert_fail(const char *expr, const char *file, int line);
#define NX_ASSERT(x) do { if (NX_UNLIKELY(!(x))) nx__assert_fail(#x, __FILE__, __LINE__); } while (0)
#ifndef NDEBUG
#define NX_DASSERT(x) NX_ASSERT(x)
#else
#define NX_DASSERT(x) ((void)0)
#endif

/* ---- allocation (through the hooks) ------------------------------------- */
void *nx__malloc(size_t n);
void *nx__calloc(size_t count, size_t size);   /* overflow-checked, zeroed */
void *nx__realloc(void *p, size_t n);
void nx__free(void *p);
char *nx__strdup(const char *s);
char *nx__strndup(const char *s, size_t n);
/* 64-byte aligned allocation for SIMD buffers; free with nx__free_aligned. */
void *nx__malloc_aligned(size_t n);
/* The same for a model's weights, which decode streams in full for every token: huge pages
 * where offered (nx__advise_huge), so the stream does not take a TLB miss every 4 KiB. Not for
 * KV caches or per-session scratch, which would then be resident in full from the first token. */
void *nx__malloc_huge(size_t n);
void nx__free_aligned(void *p);

/* Checked size arithmetic: return false on overflow. */
/* nx_f32_to_bf16 inline (round to nearest even, NaN kept NaN), so loops that convert whole rows
 * (KV cache stores) vectorize instead of calling out per element. */
static inline uint16_t nx__f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline bool nx__mul_ok(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool nx__add_ok(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }

/* ---- logging -------------------------------------------------------------- */
void nx__log(nx_log_level level, const char *fmt, ...) NX_PRINTF(2, 3);

/* ---- platform: files ---------------------------------------------------- */
/* A read-only mapping of a whole file. Zero-length files map to data == NULL, size 0. */
typedef struct nx_mapped_file {
    const uint8_t *data;
    size_t size;
    char *path;     /* owned copy of the path, for messages */
} nx_mapped_file;
nx_status nx__file_map(const char *path, nx_mapped_file *out);
void nx__file_unmap(nx_mapped_file *mf);   /* zeroes *mf; fine on a zeroed struct */
/* Drops the whole pages of a read-only file mapping inside [p, p + n) from the resident set
 * (they are read back from the file if touched again). Never for anonymous memory. */
void nx__map_release(const void *p, size_t n);
/* Hints that the n bytes at p (a large block read in full again and again: weights) should be
 * backed by huge pages where the system offers them on request (Linux THP in "madvise" mode):
 * one TLB entry and one page fault per 2 MiB instead of 512. For a heap block, and for a file
 * mapping: there it asks that pages read in from now on come in 2 MiB units where the file
 * system supports them, which are then mapped whole. Advisory, like the above. */
void nx__advise_huge(const void *p, size_t n);
/* nx__advise_huge for a range of a file mapping [map, map + map_size): widened to whole 2 MiB
 * units (a file's pages come in aligned units, so a tensor smaller than one still gets them),
 * within the mapping. */
void nx__map_advise_huge(const void *p, size_t n, const void *map, size_t map_size);
/* Drops a (written and synced) file's pages from the page cache, so the next reader maps what it
 * reads back in the large units nx__advise_huge asks for: pages a write leaves cached are small
 * and stay so while cached. Advisory: an error changes nothing. */
void nx__file_drop_cache(const char *path);

/* Reads a whole (small) file into a NUL-terminated buffer owned by the caller (nx__free). */
nx_status nx__file_read_all(const char *path, char **out, size_t *len);
bool nx__file_exists(const char *path);
bool nx__dir_exists(const char *path);
/* Creates a directory (and parents); fine if it exists. */
nx_status nx__mkdir_p(const char *path);
/* Joins a directory and a file name into a new string (nx__free). */
char *nx__path_join(const char *dir, const char *name);

/* Atomic file writer: writes go to "<path>.tmp.<pid>", commit fsyncs, renames over
 * path and fsyncs the directory; abort (or a failed commit) removes the temporary. */
typedef struct nx_atomic_file {
    FILE *fp;
    char *path;
    char *tmp_path;
    bool failed;
} nx_atomic_file;
nx_status nx__atomic_open(nx_atomic_file *af, const char *path);
nx_status nx__atomic_write(nx_atomic_file *af, const void *data, size_t n);
nx_status nx__atomic_commit(nx_atomic_file *af);
void nx__atomic_abort(nx_atomic_file *af);   /* fine after commit or on a zeroed struct */

/* ---- string buffer ---------------------------------------------------------- */
typedef struct nx_buf {
    char *data;
    size_t len, cap;
    bool oom;   /* sticky: set once an append fails */
} nx_buf;
void nx__buf_append(nx_buf *b, const void *data, size_t n);
void nx__buf_printf(nx_buf *b, const char *fmt, ...) NX_PRINTF(2, 3);
void nx__buf_free(nx_buf *b);

/* Number of online CPUs (>= 1). */
int nx__cpu_count(void);

/* ---- sharing items between the threads of one nx_pool_run (pool.c) ----
 * Items [0, n) split into nth contiguous shares; thread ith takes its own share's items in
 * order, then takes items from the end of the other shares, so every item is handed out exactly
 * once and a thread that runs slower (or is descheduled) is helped. Contiguous shares matter to
 * streaming kernels: each thread's reads stay one forward stream that its prefetches run
 * ahead of, where items dealt round-robin restarted the stream at every item. Which thread
 * computes an item depends on timing; callers make every item's result independent of that.
 * Threads beyond NX_SPLIT_MAX share the shares (ith % NX_SPLIT_MAX). */
#define NX_SPLIT_MAX 64
typedef struct nx_split {
    struct {
        _Alignas(64) _Atomic uint64_t range;   /* next (low 32 bits), end (high 32 bits) */
    } share[NX_SPLIT_MAX];
    int n_shares;
} nx_split;
void nx__split_init(nx_split *s, int n, int nth);
int nx__split_next(nx_split *s, int ith);   /* an item, or -1 when none is left */

#endif /* NX_CORE_INTERNAL_H */
