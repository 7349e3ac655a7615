/*
 * neox/core.h - version, status codes, error messages, logging, allocation hooks,
 * dtypes and the thread pool. Depends on libc only.
 */
#ifndef NEOX_CORE_H
#define NEOX_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(NX_BUILD_SHARED)
#define NX_API __attribute__((visibility("default")))
#else
#define NX_API
#endif

#define NX_VERSION_MAJOR 0
#define NX_VERSION_MINOR 1
#define NX_VERSION_PATCH 0
#define NX_VERSION_STRING "0.1.0"

/* Returns the library version string ("MAJOR.MINOR.PATCH"); static storage. */
NX_API const char *nx_version(void);

/* ---- status codes ------------------------------------------------------ */
/* 0 is success, every error is negative. */
typedef enum nx_status {
    NX_OK = 0,
    NX_ERR_INVALID_ARG = -1,   /* a caller passed a bad value */
    NX_ERR_NOMEM = -2,         /* allocation failed */
    NX_ERR_IO = -3,            /* open/read/write/mmap failed */
    NX_ERR_FORMAT = -4,        /* a file is malformed or corrupt */
    NX_ERR_UNSUPPORTED = -5,   /* valid input we do not handle */
    NX_ERR_NOT_FOUND = -6,     /* a named item (tensor, file, key) is missing */
    NX_ERR_RANGE = -7,         /* a value is out of the allowed range */
    NX_ERR_SECURITY = -8,      /* input tried something we refuse (pickle globals...) */
    NX_ERR_STATE = -9,         /* call not valid in the object's current state */
    NX_ERR_INTERNAL = -10,     /* our own bug */
    NX_ERR_CANCELLED = -11     /* stopped by the caller */
} nx_status;

/* Short constant name of a status ("invalid argument", ...); static storage. */
NX_API const char *nx_status_str(nx_status st);

/* Detail message of the last error raised on the calling thread, e.g.
 * "model.safetensors: tensor 'x': data_offsets [0, 12] do not match shape [2, 2] x F32 (16 bytes)".
 * Borrowed; valid until the next failing library call on this thread. Never NULL. */
NX_API const char *nx_last_error(void);

/* ---- logging ------------------------------------------------------------ */
/* The library never prints. Messages go to the callback set here (none by default). */
typedef enum nx_log_level { NX_LOG_DEBUG = 0, NX_LOG_INFO = 1, NX_LOG_WARN = 2, NX_LOG_ERROR = 3 } nx_log_level;
typedef void (*nx_log_fn)(nx_log_level level, const char *msg, void *user);
NX_API void nx_log_set(nx_log_fn fn, void *user, nx_log_level min_level);

/* ---- allocation hooks ---------------------------------------------------- */
/* Every library allocation goes through these (JSON parsing included). Setting hooks is not thread-safe:
 * do it before any other call. Passing NULLs restores malloc/realloc/free. */
typedef struct nx_alloc_hooks {
    void *(*malloc_fn)(size_t size, void *user);
    void *(*realloc_fn)(void *ptr, size_t size, void *user);
    void (*free_fn)(void *ptr, void *user);
    void *user;
} nx_alloc_hooks;
NX_API void nx_alloc_set_hooks(const nx_alloc_hooks *hooks);

/* ---- dtypes -------------------------------------------------------------- */
typedef enum nx_dtype {
    NX_DTYPE_INVALID = 0,
    NX_F64, NX_F32, NX_F16, NX_BF16,
    NX_I64, NX_I32, NX_I16, NX_I8,
    NX_U64, NX_U32, NX_U16, NX_U8,
    NX_BOOL,
    NX_F8_E5M2, NX_F8_E4M3,
    NX_Q8_0, NX_Q4_0,         /* block-quantized types (see docs/QUANT.md) */
    NX_DTYPE_COUNT
} nx_dtype;

/* safetensors-style name ("F32", "BF16", ...); "?" for invalid. Static storage. */
NX_API const char *nx_dtype_name(nx_dtype dt);
/* Parses a safetensors dtype string; returns NX_DTYPE_INVALID when unknown. */
NX_API nx_dtype nx_dtype_from_name(const char *name);
/* Size in bytes of one element (for block types: of one block); 0 for invalid. */
NX_API size_t nx_dtype_size(nx_dtype dt);
/* Elements per block (1 for plain types, 32 for Q8_0/Q4_0). */
NX_API size_t nx_dtype_block(nx_dtype dt);

NX_API float nx_f16_to_f32(uint16_t h);
NX_API uint16_t nx_f32_to_f16(float f);   /* round to nearest even */
NX_API float nx_bf16_to_f32(uint16_t h);
NX_API uint16_t nx_f32_to_bf16(float f);  /* round to nearest even, NaN kept NaN */

/* ---- threads -------------------------------------------------------------- */
/* A persistent pool of worker threads. nx_pool_run calls fn(ith, nth, arg) once on
 * every thread (the caller is thread 0) and returns when all are done. Work split by
 * ith/nth is static, so results never depend on scheduling. */
typedef struct nx_pool nx_pool;
typedef void (*nx_pool_fn)(int ith, int nth, void *arg);
/* n_threads <= 0 picks the number of online CPUs. Returns NULL on failure. */
NX_API nx_pool *nx_pool_create(int n_threads);
NX_API void nx_pool_free(nx_pool *pool);           /* NULL is fine */
NX_API int nx_pool_size(const nx_pool *pool);      /* 1 for NULL */
/* Runs fn on all threads; pool may be NULL (runs fn(0, 1, arg) inline). */
NX_API void nx_pool_run(nx_pool *pool, nx_pool_fn fn, void *arg);

/* ---- time ----------------------------------------------------------------- */
NX_API double nx_time_s(void);    /* monotonic seconds */

#ifdef __cplusplus
}
#endif
#endif /* NEOX_CORE_H */
