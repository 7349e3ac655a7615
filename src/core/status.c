/* status.c - status names, the per-thread error message, assertions, version. */
#include "core.h"

#include <stdarg.h>

static _Thread_local char g_errmsg[1024];

const char *nx_version(void) { return NX_VERSION_STRING; }

const char *nx_status_str(nx_status st) {
    switch (st) {
    case NX_OK: return "ok";
    case NX_ERR_INVALID_ARG: return "invalid argument";
    case NX_ERR_NOMEM: return "out of memory";
    case NX_ERR_IO: return "i/o error";
    case NX_ERR_FORMAT: return "malformed input";
    case NX_ERR_UNSUPPORTED: return "unsupported";
    case NX_ERR_NOT_FOUND: return "not found";
    case NX_ERR_RANGE: return "out of range";
    case NX_ERR_SECURITY: return "refused for safety";
    case NX_ERR_STATE: return "invalid state";
    case NX_ERR_INTERNAL: return "internal error";
    case NX_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

const char *nx_last_error(void) { return g_errmsg; }

nx_status nx__error(nx_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_errmsg, sizeof g_errmsg, fmt, ap);
    va_end(ap);
    return st;
}

nx_status nx__error_wrap(nx_status st, const char *fmt, ...) {
    char prefix[512], old[sizeof g_errmsg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_errmsg, sizeof old);
    /* prefix + ": " + old message, truncated to the buffer */
    size_t pl = strnlen(prefix, sizeof prefix), cap = sizeof g_errmsg - 1, n = 0;
    memcpy(g_errmsg, prefix, NX_MIN(pl, cap));
    n = NX_MIN(pl, cap);
    if (n + 2 <= cap) { memcpy(g_errmsg + n, ": ", 2); n += 2; }
    size_t ol = strnlen(old, sizeof old);
    size_t take = NX_MIN(ol, cap - n);
    memmove(g_errmsg + n, old, take);
    g_errmsg[n + take] = 0;
    return st;
}

void nx__assert_fail(const char *expr, const char *file, int line) {
    /* An assertion is our own bug: report it through the log hook and stderr, then abort.
     * This is the one place the library writes to stderr, because it is about to die. */
    nx__log(NX_LOG_ERROR, "assertion failed: %s (%s:%d)", expr, file, line);
    fprintf(stderr, "neox: internal assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
