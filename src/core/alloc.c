/* alloc.c - allocation through replaceable hooks (used for OOM injection in tests). */
#include "core.h"
#include "json.h"

static void *def_malloc(size_t n, void *u) { (void)u; return malloc(n); }
static void *def_realloc(void *p, size_t n, void *u) { (void)u; return realloc(p, n); }
static void def_free(void *p, void *u) { (void)u; free(p); }

static nx_alloc_hooks g_hooks = {def_malloc, def_realloc, def_free, NULL};

/* jansson (config.json, tokenizer.json, HTTP bodies) allocates through its own global
 * functions; they are routed to the hooks only while custom hooks are set, so an application
 * that uses jansson itself and never sets hooks is not affected (json.c). */
void nx_alloc_set_hooks(const nx_alloc_hooks *hooks) {
    if (!hooks || !hooks->malloc_fn || !hooks->realloc_fn || !hooks->free_fn) {
        g_hooks = (nx_alloc_hooks){def_malloc, def_realloc, def_free, NULL};
        nx__json_route_alloc(false);
    } else {
        g_hooks = *hooks;
        nx__json_route_alloc(true);
    }
}

void *nx__malloc(size_t n) { return g_hooks.malloc_fn(n ? n : 1, g_hooks.user); }

void *nx__calloc(size_t count, size_t size) {
    size_t n;
    if (!nx__mul_ok(count, size, &n)) return NULL;
    void *p = nx__malloc(n);
    if (p) memset(p, 0, n);
    return p;
}

void *nx__realloc(void *p, size_t n) { return g_hooks.realloc_fn(p, n ? n : 1, g_hooks.user); }

void nx__free(void *p) {
    if (p) g_hooks.free_fn(p, g_hooks.user);
}

char *nx__strndup(const char *s, size_t n) {
    char *d = nx__malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *nx__strdup(const char *s) { return nx__strndup(s, strlen(s)); }

/* Aligned blocks keep the raw pointer just before the aligned address so they can be
 * released through the same hooks. */
void *nx__malloc_aligned(size_t n) {
    size_t total;
    if (!nx__add_ok(n, 64 + sizeof(void *), &total)) return NULL;
    uint8_t *raw = nx__malloc(total);
    if (!raw) return NULL;
    uintptr_t a = ((uintptr_t)raw + sizeof(void *) + 63) & ~(uintptr_t)63;
    ((void **)a)[-1] = raw;
    return (void *)a;
}

void *nx__malloc_huge(size_t n) {
    void *p = nx__malloc_aligned(n);
    if (p) nx__advise_huge(p, n);
    return p;
}

void nx__free_aligned(void *p) {
    if (p) nx__free(((void **)p)[-1]);
}

void nx__buf_append(nx_buf *b, const void *data, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = nx__realloc(b->data, cap);
        if (!d) { b->oom = true; return; }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
}

void nx__buf_printf(nx_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) { nx__buf_append(b, tmp, (size_t)n); return; }
    char *big = nx__malloc((size_t)n + 1);
    if (!big) { b->oom = true; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    nx__buf_append(b, big, (size_t)n);
    nx__free(big);
}

void nx__buf_free(nx_buf *b) {
    nx__free(b->data);
    *b = (nx_buf){0};
}
