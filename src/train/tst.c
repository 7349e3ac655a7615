/*
 * tst.c - the safetensors files of training checkpoints: a writer (HF-loadable: 8-byte
 * little-endian header length, JSON header padded with spaces to 8 bytes, then the data)
 * and a strict reader used on resume and by the tests. Every header field is validated
 * (dtype, shape, offsets in bounds, contiguous, non-overlapping) before data is touched.
 *
 * The io layer owns the general-purpose safetensors code (nx_safetensors_write,
 * nx_tensorset_open); this file keeps training self-contained until those land, and
 * limits itself to F32/F64/I32/I64/U8 tensors.
 */
#include "train/tst.h"

#include <jansson.h>

static const struct { const char *name; nx_dtype dt; size_t size; } k_dtypes[] = {
    {"F32", NX_F32, 4}, {"F64", NX_F64, 8}, {"I32", NX_I32, 4}, {"I64", NX_I64, 8}, {"U8", NX_U8, 1},
};

static bool dtype_lookup(const char *s, nx_dtype *dt, size_t *size) {
    for (size_t i = 0; i < NX_ARRAY_LEN(k_dtypes); i++)
        if (!strcmp(s, k_dtypes[i].name)) { *dt = k_dtypes[i].dt; *size = k_dtypes[i].size; return true; }
    return false;
}
static const char *dtype_str(nx_dtype dt) {
    for (size_t i = 0; i < NX_ARRAY_LEN(k_dtypes); i++)
        if (k_dtypes[i].dt == dt) return k_dtypes[i].name;
    return NULL;
}

void nx__tst_close(nx_tst_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) nx__free(f->t[i].name);
    nx__free(f->t);
    nx__free(f->format);
    nx__file_unmap(&f->mf);
    memset(f, 0, sizeof *f);
}

typedef struct { size_t b, e; } span;
static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->b < y->b ? -1 : x->b > y->b;
}

nx_status nx__tst_open(const char *path, nx_tst_file *f) {
    memset(f, 0, sizeof *f);
    NX_TRY(nx__file_map(path, &f->mf));
    const uint8_t *d = f->mf.data;
    size_t size = f->mf.size;
    nx_status st = NX_ERR_FORMAT;
    json_t *root = NULL;
    span *spans = NULL;
    if (size < 8) { st = nx__error(NX_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors header", path, size); goto fail; }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | d[i];
    if (hlen == 0 || hlen > size - 8 || hlen > (100u << 20)) {
        st = nx__error(NX_ERR_FORMAT, "%s: header length %llu does not fit the %zu-byte file", path,
                       (unsigned long long)hlen, size);
        goto fail;
    }
    json_error_t je;
    root = json_loadb((const char *)d + 8, (size_t)hlen, 0, &je);
    if (!root || !json_is_object(root)) {
        st = nx__error(NX_ERR_FORMAT, "%s: header is not a JSON object (%s)", path, root ? "not an object" : je.text);
        goto fail;
    }
    size_t data_size = size - 8 - (size_t)hlen, nt = json_object_size(root);
    const uint8_t *base = d + 8 + hlen;
    f->t = nx__calloc(nt ? nt : 1, sizeof *f->t);
    spans = nx__calloc(nt ? nt : 1, sizeof *spans);
    if (!f->t || !spans) { st = nx__error(NX_ERR_NOMEM, "%s: header", path); goto fail; }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            json_t *fm = json_is_object(val) ? json_object_get(val, "format") : NULL;
            if (fm && json_is_string(fm)) f->format = nx__strdup(json_string_value(fm));
            continue;
        }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"),
               *jo = json_object_get(val, "data_offsets");
        if (!json_is_object(val) || !json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) ||
            json_array_size(jo) != 2 || json_array_size(js) > NX_MAX_DIMS) {
            st = nx__error(NX_ERR_FORMAT, "%s: tensor '%s': needs dtype, shape (<= %d dims) and 2 data_offsets", path,
                           key, NX_MAX_DIMS);
            goto fail;
        }
        nx_tst_tensor *t = &f->t[f->n];
        size_t esize;
        if (!dtype_lookup(json_string_value(jd), &t->dtype, &esize)) {
            st = nx__error(NX_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s (expected F32, F64, I32, I64 or U8)", path, key,
                           json_string_value(jd));
            goto fail;
        }
        size_t numel = 1;
        t->ndim = (int)json_array_size(js);
        for (int i = 0; i < t->ndim; i++) {
            json_t *e = json_array_get(js, (size_t)i);
            if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                !nx__mul_ok(numel, (size_t)json_integer_value(e), &numel)) {
                st = nx__error(NX_ERR_FORMAT, "%s: tensor '%s': bad shape entry %d", path, key, i);
                goto fail;
            }
            t->shape[i] = json_integer_value(e);
        }
        json_t *o0 = json_array_get(jo, 0), *o1 = json_array_get(jo, 1);
        if (!json_is_integer(o0) || !json_is_integer(o1) || json_integer_value(o0) < 0 ||
            json_integer_value(o1) < json_integer_value(o0) || (uint64_t)json_integer_value(o1) > data_size) {
            st = nx__error(NX_ERR_FORMAT, "%s: tensor '%s': data_offsets outside the %zu data bytes", path, key, data_size);
            goto fail;
        }
        size_t b = (size_t)json_integer_value(o0), e = (size_t)json_integer_value(o1), nbytes;
        if (!nx__mul_ok(numel, esize, &nbytes) || nbytes != e - b) {
            st = nx__error(NX_ERR_FORMAT, "%s: tensor '%s': data_offsets [%zu, %zu] do not match its shape x %s", path, key,
                           b, e, json_string_value(jd));
            goto fail;
        }
        t->name = nx__strdup(key);
        if (!t->name) { st = nx__error(NX_ERR_NOMEM, "%s", path); goto fail; }
        t->data = base + b;
        t->nbytes = nbytes;
        spans[f->n] = (span){b, e};
        f->n++;
    }
    qsort(spans, f->n, sizeof *spans, span_cmp);
    for (size_t i = 1; i < f->n; i++)
        if (spans[i].b < spans[i - 1].e) { st = nx__error(NX_ERR_FORMAT, "%s: tensors overlap", path); goto fail; }
    nx__free(spans);
    json_decref(root);
    return NX_OK;
fail:
    nx__free(spans);
    if (root) json_decref(root);
    nx__tst_close(f);
    return st;
}

const nx_tst_tensor *nx__tst_find(const nx_tst_file *f, const char *name) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

nx_status nx__tst_get_f32(const nx_tst_file *f, const char *name, float *dst, size_t numel) {
    const nx_tst_tensor *t = nx__tst_find(f, name);
    if (!t) return nx__error(NX_ERR_NOT_FOUND, "%s: tensor '%s' is missing", f->mf.path, name);
    if (t->dtype != NX_F32 || t->nbytes != numel * 4)
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': expected F32 with %zu elements, found %s with %zu bytes",
                         f->mf.path, name, numel, dtype_str(t->dtype), t->nbytes);
    memcpy(dst, t->data, t->nbytes);
    return NX_OK;
}

nx_status nx__tst_write(const char *path, const nx_tensor_write *ts, size_t n, const char *const *meta_kv,
                        size_t n_meta) {
    json_t *root = json_object(), *meta = json_object();
    if (!root || !meta) { json_decref(root); json_decref(meta); return nx__error(NX_ERR_NOMEM, "%s", path); }
    for (size_t i = 0; i < n_meta; i++) json_object_set_new(meta, meta_kv[2 * i], json_string(meta_kv[2 * i + 1]));
    json_object_set_new(root, "__metadata__", meta);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const char *dn = dtype_str(ts[i].dtype);
        NX_ASSERT(dn != NULL);
        size_t numel = 1, esize = nx_dtype_size(ts[i].dtype);
        json_t *shape = json_array();
        for (int k = 0; k < ts[i].ndim; k++) {
            numel *= (size_t)ts[i].shape[k];
            json_array_append_new(shape, json_integer(ts[i].shape[k]));
        }
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(dn));
        json_object_set_new(e, "shape", shape);
        json_t *offs = json_array();
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + numel * esize)));
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(root, ts[i].name, e);
        off += numel * esize;
    }
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!hdr) return nx__error(NX_ERR_NOMEM, "%s: header", path);
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    nx_atomic_file af;
    nx_status st = nx__atomic_open(&af, path);
    if (st == NX_OK) st = nx__atomic_write(&af, len8, 8);
    if (st == NX_OK) st = nx__atomic_write(&af, hdr, hl);
    if (st == NX_OK && padded > hl) st = nx__atomic_write(&af, "        ", padded - hl);
    for (size_t i = 0; st == NX_OK && i < n; i++) {
        size_t numel = 1;
        for (int k = 0; k < ts[i].ndim; k++) numel *= (size_t)ts[i].shape[k];
        st = nx__atomic_write(&af, ts[i].data, numel * nx_dtype_size(ts[i].dtype));
    }
    free(hdr);
    if (st == NX_OK) return nx__atomic_commit(&af);
    nx__atomic_abort(&af);
    return st;
}
