/* log.c - leveled log callback; the library never prints on its own. */
#include "core.h"

#include <stdarg.h>

static nx_log_fn g_log_fn;
static void *g_log_user;
static nx_log_level g_log_min = NX_LOG_INFO;

void nx_log_set(nx_log_fn fn, void *user, nx_log_level min_level) {
    g_log_fn = fn;
    g_log_user = user;
    g_log_min = min_level;
}

void nx__log(nx_log_level level, const char *fmt, ...) {
    if (!g_log_fn || level < g_log_min) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g_log_fn(level, msg, g_log_user);
}
