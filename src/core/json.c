/* json.c - jansson's allocations through the hooks, and telling OOM from bad input (json.h). */
#include "json.h"

static _Thread_local bool g_parse_oom;

static void *json_malloc(size_t n) {
    void *p = nx__malloc(n);
    if (!p) g_parse_oom = true;
    return p;
}
static void json_free(void *p) { nx__free(p); }

void nx__json_route_alloc(bool on) {
    if (on)
        json_set_alloc_funcs(json_malloc, json_free);
    else
        json_set_alloc_funcs(malloc, free);
}

json_t *nx__json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error) {
    g_parse_oom = false;
    return json_loadb(buf, len, flags, error);
}

nx_status nx__json_oom(const char *name) {
    if (!g_parse_oom) return NX_OK;
    return nx__error(NX_ERR_NOMEM, "%s: out of memory parsing JSON", name);
}
