/*
 * tensorset.c - a checkpoint's named tensors, gathered from one or more files.
 * Tensors are looked up by name through an open-addressing hash table; mappings and
 * buffers the tensors point into are owned here and released together.
 */
#include "io.h"

#include <math.h>

typedef struct { char *key, *value; } meta_kv;

struct nx_tensorset {
    nx_tensor_info *tensors;
    size_t n, cap;
    uint32_t *slots;          /* index+1 into tensors, 0 = empty */
    size_t nslots;
    nx_mapped_file *maps;
    size_t nmaps, capmaps;
    void **bufs;
    size_t nbufs, capbufs;
    meta_kv *meta;
    size_t nmeta, capmeta;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    while (*s) { h ^= (uint8_t)*s++; h *= 1099511628211ull; }
    return h;
}

nx_tensorset *nx__tensorset_new(void) { return nx__calloc(1, sizeof(nx_tensorset)); }

static bool grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    size_t bytes;
    if (!nx__mul_ok(nc, elem, &bytes)) return false;
    void *p = nx__realloc(*arr, bytes);
    if (!p) return false;
    *arr = p;
    *cap = nc;
    return true;
}

static bool rehash(nx_tensorset *ts, size_t nslots) {
    uint32_t *slots = nx__calloc(nslots, sizeof *slots);
    if (!slots) return false;
    for (size_t i = 0; i < ts->n; i++) {
        size_t h = (size_t)hash_str(ts->tensors[i].name) & (nslots - 1);
        while (slots[h]) h = (h + 1) & (nslots - 1);
        slots[h] = (uint32_t)(i + 1);
    }
    nx__free(ts->slots);
    ts->slots = slots;
    ts->nslots = nslots;
    return true;
}

nx_status nx__tensorset_adopt_mapping(nx_tensorset *ts, nx_mapped_file *mf, const nx_mapped_file **stored) {
    if (!grow((void **)&ts->maps, &ts->capmaps, ts->nmaps + 1, sizeof *ts->maps)) {
        nx__file_unmap(mf);
        return nx__error(NX_ERR_NOMEM, "out of memory");
    }
    /* maps may move on growth, so callers must not keep `stored` across adopts */
    ts->maps[ts->nmaps] = *mf;
    memset(mf, 0, sizeof *mf);
    if (stored) *stored = &ts->maps[ts->nmaps];
    ts->nmaps++;
    return NX_OK;
}

void nx__tensorset_release(const nx_tensorset *ts, const void *p, size_t n) {
    const uint8_t *a = p;
    for (size_t i = 0; ts && a && i < ts->nmaps; i++) {
        const nx_mapped_file *mf = &ts->maps[i];
        if (mf->data && a >= mf->data && n <= mf->size && (size_t)(a - mf->data) <= mf->size - n) {
            nx__map_release(a, n);
            return;
        }
    }
}

void nx__tensorset_stream(const nx_tensorset *ts, const void *p, size_t n) {
    const uint8_t *a = p;
    for (size_t i = 0; ts && a && i < ts->nmaps; i++) {
        const nx_mapped_file *mf = &ts->maps[i];
        if (mf->data && a >= mf->data && n <= mf->size && (size_t)(a - mf->data) <= mf->size - n) {
            /* No read-ahead request on top: it reads pages in 4 KiB units, which then stay so
             * (a 410M q4 file read back so kept 16 of 200 MB in huge pages, without it 192). The
             * first token's faults read 2 MiB at a time instead: cold-cache time to first token
             * for 410M bf16 0.43-0.46 s either way. */
            nx__map_advise_huge(a, n, mf->data, mf->size);
            return;
        }
    }
}

nx_status nx__tensorset_adopt_buffer(nx_tensorset *ts, void *buf) {
    if (!grow((void **)&ts->bufs, &ts->capbufs, ts->nbufs + 1, sizeof *ts->bufs)) {
        nx__free(buf);
        return nx__error(NX_ERR_NOMEM, "out of memory");
    }
    ts->bufs[ts->nbufs++] = buf;
    return NX_OK;
}

nx_status nx__tensorset_add(nx_tensorset *ts, const nx_tensor_info *t) {
    if (nx_tensorset_find(ts, t->name))
        return nx__error(NX_ERR_FORMAT, "%s: duplicate tensor '%s'", t->file ? t->file : "?", t->name);
    if (ts->n >= UINT32_MAX - 1) return nx__error(NX_ERR_RANGE, "too many tensors");
    if (!grow((void **)&ts->tensors, &ts->cap, ts->n + 1, sizeof *ts->tensors))
        return nx__error(NX_ERR_NOMEM, "out of memory");
    nx_tensor_info c = *t;
    c.name = nx__strdup(t->name);
    c.file = nx__strdup(t->file ? t->file : "");
    if (!c.name || !c.file) {
        nx__free((void *)c.name);
        nx__free((void *)c.file);
        return nx__error(NX_ERR_NOMEM, "out of memory");
    }
    ts->tensors[ts->n++] = c;
    if (ts->n * 2 > ts->nslots) {
        if (!rehash(ts, ts->nslots ? ts->nslots * 2 : 64)) {
            ts->n--;
            nx__free((void *)c.name);
            nx__free((void *)c.file);
            return nx__error(NX_ERR_NOMEM, "out of memory");
        }
    } else {
        size_t h = (size_t)hash_str(c.name) & (ts->nslots - 1);
        while (ts->slots[h]) h = (h + 1) & (ts->nslots - 1);
        ts->slots[h] = (uint32_t)ts->n;
    }
    return NX_OK;
}

nx_status nx__tensorset_add_metadata(nx_tensorset *ts, const char *key, const char *value) {
    if (!grow((void **)&ts->meta, &ts->capmeta, ts->nmeta + 1, sizeof *ts->meta))
        return nx__error(NX_ERR_NOMEM, "out of memory");
    meta_kv kv = {nx__strdup(key), nx__strdup(value)};
    if (!kv.key || !kv.value) {
        nx__free(kv.key);
        nx__free(kv.value);
        return nx__error(NX_ERR_NOMEM, "out of memory");
    }
    ts->meta[ts->nmeta++] = kv;
    return NX_OK;
}

void nx_tensorset_free(nx_tensorset *ts) {
    if (!ts) return;
    for (size_t i = 0; i < ts->n; i++) {
        nx__free((void *)ts->tensors[i].name);
        nx__free((void *)ts->tensors[i].file);
    }
    for (size_t i = 0; i < ts->nmaps; i++) nx__file_unmap(&ts->maps[i]);
    for (size_t i = 0; i < ts->nbufs; i++) nx__free(ts->bufs[i]);
    for (size_t i = 0; i < ts->nmeta; i++) {
        nx__free(ts->meta[i].key);
        nx__free(ts->meta[i].value);
    }
    nx__free(ts->tensors);
    nx__free(ts->slots);
    nx__free(ts->maps);
    nx__free(ts->bufs);
    nx__free(ts->meta);
    nx__free(ts);
}

size_t nx_tensorset_count(const nx_tensorset *ts) { return ts ? ts->n : 0; }

const nx_tensor_info *nx_tensorset_at(const nx_tensorset *ts, size_t i) {
    return (ts && i < ts->n) ? &ts->tensors[i] : NULL;
}

const nx_tensor_info *nx_tensorset_find(const nx_tensorset *ts, const char *name) {
    if (!ts || !ts->nslots || !name) return NULL;
    size_t h = (size_t)hash_str(name) & (ts->nslots - 1);
    while (ts->slots[h]) {
        const nx_tensor_info *t = &ts->tensors[ts->slots[h] - 1];
        if (strcmp(t->name, name) == 0) return t;
        h = (h + 1) & (ts->nslots - 1);
    }
    return NULL;
}

const char *nx_tensorset_metadata(const nx_tensorset *ts, const char *key) {
    if (!ts || !key) return NULL;
    for (size_t i = 0; i < ts->nmeta; i++)
        if (strcmp(ts->meta[i].key, key) == 0) return ts->meta[i].value;
    return NULL;
}

size_t nx_tensor_numel(const nx_tensor_info *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

/* F8_E5M2 is the top byte of an IEEE f16 (same exponent bias 15, infinities and NaNs). */
static float f8e5m2_to_f32(uint8_t b) { return nx_f16_to_f32((uint16_t)(b << 8)); }

/* F8_E4M3 is the "fn" variant (torch.float8_e4m3fn): bias 7, no infinities, only
 * S.1111.111 is NaN; max 448. */
static float f8e4m3_to_f32(uint8_t b) {
    int e = (b >> 3) & 0xf, m = b & 7;
    float v;
    if (e == 0xf && m == 7) v = NAN;
    else if (e == 0) v = ldexpf((float)m, -9);              /* subnormal: m/8 x 2^-6 */
    else v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return (b & 0x80) ? -v : v;
}

nx_status nx_tensor_to_f32(const nx_tensor_info *t, float *dst) {
    size_t n = nx_tensor_numel(t);
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case NX_F32: memcpy(dst, p, n * 4); return NX_OK;
    case NX_F16:
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); dst[i] = nx_f16_to_f32(h); }
        return NX_OK;
    case NX_BF16:
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); dst[i] = nx_bf16_to_f32(h); }
        return NX_OK;
    case NX_F64:
        for (size_t i = 0; i < n; i++) { double d; memcpy(&d, p + 8 * i, 8); dst[i] = (float)d; }
        return NX_OK;
    case NX_F8_E5M2:
        for (size_t i = 0; i < n; i++) dst[i] = f8e5m2_to_f32(p[i]);
        return NX_OK;
    case NX_F8_E4M3:
        for (size_t i = 0; i < n; i++) dst[i] = f8e4m3_to_f32(p[i]);
        return NX_OK;
    default:
        return nx__error(NX_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, expected a float type",
                         t->file, t->name, nx_dtype_name(t->dtype));
    }
}
