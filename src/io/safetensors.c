/*
 * safetensors.c - reader and writer for the safetensors format (huggingface/safetensors).
 *
 * File layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the
 * data region. The JSON object maps tensor names to {"dtype", "shape", "data_offsets"}
 * (offsets relative to the data region) plus an optional "__metadata__" string map.
 *
 * Reader invariants (every one is checked; a violation is NX_ERR_FORMAT with a one-line
 * message naming the file, the tensor and the failed fact):
 *   - 8 <= file size, 0 < N <= 100,000,000 (the reference MAX_HEADER_SIZE), 8 + N <= size;
 *   - the header is valid UTF-8 JSON, an object, without duplicate keys;
 *   - every entry is an object with a known dtype string, a shape array of integers >= 0
 *     (at most NX_MAX_DIMS) and data_offsets [begin, end] of integers;
 *   - prod(shape) x dtype size does not overflow and equals end - begin, begin <= end;
 *   - every span lies inside the data region, and sorted by offset the spans tile the
 *     region exactly from 0 to its end: no overlaps, no gaps (as the reference reader).
 * Tensors are zero-copy views into the read-only mapping, which the tensor set keeps.
 * The data region starts at 8 + N, which is 8-byte aligned only when the writer padded
 * the header (ours and the reference writer do); consumers must not assume more.
 *
 * Writer: header JSON written compactly in the reference writer's exact form, padded with
 * spaces to a multiple of 8; tensors ordered by dtype rank descending (the reference's
 * Dtype enum order, which sorts wider types first) then by name, so our output is
 * byte-identical to Python safetensors for the same tensors and a one-key metadata map.
 */
#include "io.h"
#include "core/json.h"

#include <jansson.h>

#define ST_MAX_HEADER 100000000ull

/* ---- shared helpers ------------------------------------------------------------- */

/* safetensors dtypes we understand (our block-quantized types are not safetensors). */
static bool is_st_dtype(nx_dtype dt) { return dt >= NX_F64 && dt <= NX_F8_E4M3; }

/* Rank of a dtype in the reference writer's Dtype enum (BOOL < U8 < I8 < F8_E5M2 < F8_E4M3
 * < I16 < U16 < F16 < BF16 < I32 < U32 < F32 < F64 < I64 < U64); the writer sorts by it
 * descending. Types we do not have (F4, F6, F8_E8M0, C64) keep the relative order. */
static int dtype_rank(nx_dtype dt) {
    switch (dt) {
    case NX_BOOL: return 0;
    case NX_U8: return 1;
    case NX_I8: return 2;
    case NX_F8_E5M2: return 3;
    case NX_F8_E4M3: return 4;
    case NX_I16: return 5;
    case NX_U16: return 6;
    case NX_F16: return 7;
    case NX_BF16: return 8;
    case NX_I32: return 9;
    case NX_U32: return 10;
    case NX_F32: return 11;
    case NX_F64: return 12;
    case NX_I64: return 13;
    case NX_U64: return 14;
    default: return -1;
    }
}

static const char *json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "value";
}

/* Formats a shape as "[2, 3]" into buf (truncated when long). */
static const char *fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t n = 0;
    buf[0] = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* ---- reader ----------------------------------------------------------------------- */

typedef struct {
    const char *name;   /* borrowed from the JSON tree */
    nx_dtype dtype;
    int ndim;
    int64_t shape[NX_MAX_DIMS];
    uint64_t begin, end;
} st_entry;

static int cmp_span(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* __metadata__ must be a flat string -> string object (the reference rejects anything else). */
static nx_status check_metadata(const json_t *meta, const char *path) {
    if (!json_is_object(meta))
        return nx__error(NX_ERR_FORMAT, "%s: __metadata__ is a JSON %s, expected an object of strings", path,
                         json_type_name(meta));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)meta, k, v) {
        if (!json_is_string(v))
            return nx__error(NX_ERR_FORMAT, "%s: __metadata__ value of '%s' is a JSON %s, expected a string", path,
                             k, json_type_name(v));
    }
    return NX_OK;
}

/* Reads one non-negative JSON integer. */
static bool get_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return false;
    json_int_t i = json_integer_value(v);
    if (i < 0) return false;
    *out = (uint64_t)i;
    return true;
}

static nx_status parse_entry(const char *name, const json_t *e, const char *path, st_entry *out) {
    if (!json_is_object(e))
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s' is a JSON %s, expected an object", path, name,
                         json_type_name(e));
    out->name = name;
    const json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"),
                 *jo = json_object_get(e, "data_offsets");
    if (!jd) return nx__error(NX_ERR_FORMAT, "%s: tensor '%s' has no \"dtype\"", path, name);
    if (!js) return nx__error(NX_ERR_FORMAT, "%s: tensor '%s' has no \"shape\"", path, name);
    if (!jo) return nx__error(NX_ERR_FORMAT, "%s: tensor '%s' has no \"data_offsets\"", path, name);
    if (!json_is_string(jd))
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': dtype is a JSON %s, expected a string", path, name,
                         json_type_name(jd));
    out->dtype = nx_dtype_from_name(json_string_value(jd));
    if (!is_st_dtype(out->dtype))
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\"", path, name,
                         json_string_value(jd));
    if (!json_is_array(js))
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': shape is a JSON %s, expected an array of integers",
                         path, name, json_type_name(js));
    size_t ndim = json_array_size(js);
    if (ndim > NX_MAX_DIMS)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: tensor '%s': shape has %zu dims, at most %d are supported", path,
                         name, ndim, NX_MAX_DIMS);
    out->ndim = (int)ndim;
    /* prod(shape) x size, checked at each step: a hostile shape must not wrap around */
    size_t bytes = nx_dtype_size(out->dtype);
    bool overflow = false;
    for (size_t i = 0; i < ndim; i++) {
        const json_t *d = json_array_get(js, i);
        uint64_t v;
        if (!json_is_integer(d))
            return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is a JSON %s, expected an integer", path,
                             name, i, json_type_name(d));
        if (!get_u64(d, &v))
            return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': shape[%zu] = %lld is negative", path, name, i,
                             (long long)json_integer_value(d));
        out->shape[i] = (int64_t)v;
        if (!overflow && !nx__mul_ok(bytes, (size_t)v, &bytes)) overflow = true;
    }
    char sb[160];
    if (overflow)
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': shape %s x %s overflows the addressable size", path,
                         name, fmt_shape(sb, sizeof sb, out->shape, out->ndim), nx_dtype_name(out->dtype));
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': data_offsets is a JSON %s%s, expected [begin, end]",
                         path, name, json_type_name(jo),
                         json_is_array(jo) ? (json_array_size(jo) < 2 ? " too short" : " too long") : "");
    for (int i = 0; i < 2; i++) {
        const json_t *o = json_array_get(jo, (size_t)i);
        uint64_t v;
        if (!json_is_integer(o))
            return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': data_offsets[%d] is a JSON %s, expected an integer",
                             path, name, i, json_type_name(o));
        if (!get_u64(o, &v))
            return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': data_offsets[%d] = %lld is negative", path, name, i,
                             (long long)json_integer_value(o));
        if (i == 0) out->begin = v; else out->end = v;
    }
    if (out->begin > out->end)
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path,
                         name, (unsigned long long)out->begin, (unsigned long long)out->end);
    if (out->end - out->begin != (uint64_t)bytes)
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] but shape %s x %s needs %zu bytes",
                         path, name, (unsigned long long)out->begin, (unsigned long long)out->end,
                         fmt_shape(sb, sizeof sb, out->shape, out->ndim), nx_dtype_name(out->dtype), bytes);
    return NX_OK;
}

/* Validates the whole header and data region before appending anything, so a malformed
 * file leaves ts untouched. Only the append itself can fail midway (a name already in the
 * set from another shard, or out of memory); callers then free the whole set. Tensors are
 * appended in file (offset) order. */
static nx_status parse_header(nx_tensorset *ts, const json_t *root, const uint8_t *region, size_t region_len,
                              const char *path) {
    if (!json_is_object(root))
        return nx__error(NX_ERR_FORMAT, "%s: header is a JSON %s, expected an object", path, json_type_name(root));
    size_t n = json_object_size(root);
    st_entry *ents = n ? nx__calloc(n, sizeof *ents) : NULL;
    if (n && !ents) return nx__error(NX_ERR_NOMEM, "%s: out of memory", path);
    size_t ne = 0;
    const json_t *meta = NULL;
    nx_status st = NX_OK;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)root, key, val) {
        if (strcmp(key, "__metadata__") == 0) { meta = val; continue; }
        st = parse_entry(key, val, path, &ents[ne]);
        if (st != NX_OK) goto done;
        if (ents[ne].end > region_len) {
            st = nx__error(NX_ERR_FORMAT,
                           "%s: tensor '%s': data_offsets [%llu, %llu] extend beyond the data region (%zu bytes)",
                           path, key, (unsigned long long)ents[ne].begin, (unsigned long long)ents[ne].end,
                           region_len);
            goto done;
        }
        ne++;
    }
    if (meta && (st = check_metadata(meta, path)) != NX_OK) goto done;
    /* Sorted by (begin, end), the spans must tile [0, region_len) exactly. */
    if (ne > 1) qsort(ents, ne, sizeof *ents, cmp_span);
    uint64_t pos = 0;
    for (size_t i = 0; i < ne; i++) {
        if (ents[i].begin < pos) {
            st = nx__error(NX_ERR_FORMAT, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", path,
                           ents[i - 1].name, (unsigned long long)ents[i - 1].begin,
                           (unsigned long long)ents[i - 1].end, ents[i].name, (unsigned long long)ents[i].begin,
                           (unsigned long long)ents[i].end);
            goto done;
        }
        if (ents[i].begin > pos) {
            st = nx__error(NX_ERR_FORMAT, "%s: data bytes [%llu, %llu) before tensor '%s' belong to no tensor (gap)",
                           path, (unsigned long long)pos, (unsigned long long)ents[i].begin, ents[i].name);
            goto done;
        }
        pos = ents[i].end;
    }
    if (pos != region_len) {
        st = nx__error(NX_ERR_FORMAT,
                       "%s: tensors cover %llu of the %zu data bytes; the rest belongs to no tensor (trailing bytes)",
                       path, (unsigned long long)pos, region_len);
        goto done;
    }
    /* Commit: everything validated. */
    for (size_t i = 0; i < ne; i++) {
        nx_tensor_info t = {0};
        t.name = ents[i].name;
        t.dtype = ents[i].dtype;
        t.ndim = ents[i].ndim;
        memcpy(t.shape, ents[i].shape, sizeof t.shape);
        t.data = region + ents[i].begin;
        t.nbytes = (size_t)(ents[i].end - ents[i].begin);
        t.file = path;
        st = nx__tensorset_add(ts, &t);
        if (st != NX_OK) goto done;
    }
    if (meta) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)meta, k, v) {
            st = nx__tensorset_add_metadata(ts, k, json_string_value(v));
            if (st != NX_OK) goto done;
        }
    }
done:
    nx__free(ents);
    return st;
}

nx_status nx__safetensors_parse(nx_tensorset *ts, const uint8_t *data, size_t size, const char *path) {
    if (!path) path = "<memory>";
    if (size < 8)
        return nx__error(NX_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte safetensors header length",
                         path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n == 0) return nx__error(NX_ERR_FORMAT, "%s: safetensors header length is 0", path);
    if (n > ST_MAX_HEADER)
        return nx__error(NX_ERR_FORMAT, "%s: safetensors header length %llu exceeds the %llu-byte limit", path,
                         (unsigned long long)n, ST_MAX_HEADER);
    if (n > size - 8)
        return nx__error(NX_ERR_FORMAT, "%s: safetensors header length %llu exceeds the %zu bytes after it (truncated?)",
                         path, (unsigned long long)n, size - 8);
    json_error_t jerr;
    /* JSON_REJECT_DUPLICATES: a duplicate tensor name would silently shadow another. */
    json_t *root = nx__json_loadb((const char *)data + 8, (size_t)n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        NX_TRY(nx__json_oom(path));
        return nx__error(NX_ERR_FORMAT, "%s: safetensors header is not valid JSON: %s (line %d, column %d)", path,
                         jerr.text, jerr.line, jerr.column);
    }
    nx_status st = parse_header(ts, root, data + 8 + n, size - 8 - (size_t)n, path);
    json_decref(root);
    return st;
}

nx_status nx__safetensors_read_into(nx_tensorset *ts, const char *path) {
    nx_mapped_file mf;
    NX_TRY(nx__file_map(path, &mf));
    nx_status st = nx__safetensors_parse(ts, mf.data, mf.size, path);
    if (st != NX_OK) {
        nx__file_unmap(&mf);
        return st;
    }
    /* The tensors point into the mapping; the set keeps it until nx_tensorset_free. */
    return nx__tensorset_adopt_mapping(ts, &mf, NULL);
}

/* ---- writer ----------------------------------------------------------------------- */

/* Strict UTF-8 check (no overlongs, no surrogates, <= U+10FFFF): the reader rejects
 * headers that are not UTF-8, so the writer must not produce one. */
static bool utf8_valid(const char *s) {
    const uint8_t *p = (const uint8_t *)s;
    while (*p) {
        uint8_t c = *p;
        if (c < 0x80) { p++; continue; }
        int n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
        else return false;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

/* Appends a JSON string exactly as serde_json (the reference writer) escapes it:
 * '"' '\\' and \b \f \n \r \t by name, other controls as \u00xx, everything else raw. */
static void json_put_str(nx_buf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    nx__buf_append(b, "\"", 1);
    for (const uint8_t *p = (const uint8_t *)s; *p; p++) {
        uint8_t c = *p;
        switch (c) {
        case '"': nx__buf_append(b, "\\\"", 2); break;
        case '\\': nx__buf_append(b, "\\\\", 2); break;
        case '\b': nx__buf_append(b, "\\b", 2); break;
        case '\f': nx__buf_append(b, "\\f", 2); break;
        case '\n': nx__buf_append(b, "\\n", 2); break;
        case '\r': nx__buf_append(b, "\\r", 2); break;
        case '\t': nx__buf_append(b, "\\t", 2); break;
        default:
            if (c < 0x20) {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                nx__buf_append(b, e, 6);
            } else {
                nx__buf_append(b, p, 1);
            }
        }
    }
    nx__buf_append(b, "\"", 1);
}

/* Reference writer order: dtype rank descending, then name (byte order). */
static int cmp_write_order(const void *a, const void *b) {
    const nx_tensor_write *x = *(const nx_tensor_write *const *)a, *y = *(const nx_tensor_write *const *)b;
    int rx = dtype_rank(x->dtype), ry = dtype_rank(y->dtype);
    if (rx != ry) return rx > ry ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b) {
    const nx_tensor_write *x = *(const nx_tensor_write *const *)a, *y = *(const nx_tensor_write *const *)b;
    return strcmp(x->name, y->name);
}

static nx_status check_write_args(const char *path, const nx_tensor_write *tensors, size_t n,
                                  const char *const *meta_kv, size_t n_meta, size_t *sizes) {
    if (!path) return nx__error(NX_ERR_INVALID_ARG, "nx_safetensors_write: path is NULL");
    if (n && !tensors) return nx__error(NX_ERR_INVALID_ARG, "%s: tensors is NULL but n = %zu", path, n);
    if (n_meta && !meta_kv) return nx__error(NX_ERR_INVALID_ARG, "%s: meta_kv is NULL but n_meta = %zu", path, n_meta);
    for (size_t i = 0; i < n; i++) {
        const nx_tensor_write *t = &tensors[i];
        if (!t->name) return nx__error(NX_ERR_INVALID_ARG, "%s: tensor #%zu has no name", path, i);
        if (strcmp(t->name, "__metadata__") == 0)
            return nx__error(NX_ERR_INVALID_ARG, "%s: \"__metadata__\" is reserved and cannot name a tensor", path);
        if (!utf8_valid(t->name))
            return nx__error(NX_ERR_INVALID_ARG, "%s: tensor #%zu: name is not valid UTF-8", path, i);
        if (!is_st_dtype(t->dtype))
            return nx__error(NX_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s cannot be stored in safetensors", path,
                             t->name, nx_dtype_name(t->dtype));
        if (t->ndim < 0 || t->ndim > NX_MAX_DIMS)
            return nx__error(NX_ERR_INVALID_ARG, "%s: tensor '%s': ndim %d is outside [0, %d]", path, t->name,
                             t->ndim, NX_MAX_DIMS);
        size_t bytes = nx_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0)
                return nx__error(NX_ERR_INVALID_ARG, "%s: tensor '%s': shape[%d] = %lld is negative", path, t->name,
                                 d, (long long)t->shape[d]);
            if (!nx__mul_ok(bytes, (size_t)t->shape[d], &bytes))
                return nx__error(NX_ERR_RANGE, "%s: tensor '%s': size overflows", path, t->name);
        }
        if (bytes && !t->data)
            return nx__error(NX_ERR_INVALID_ARG, "%s: tensor '%s': data is NULL for %zu bytes", path, t->name, bytes);
        sizes[i] = bytes;
    }
    for (size_t i = 0; i < n_meta; i++) {
        const char *k = meta_kv[2 * i], *v = meta_kv[2 * i + 1];
        if (!k || !v) return nx__error(NX_ERR_INVALID_ARG, "%s: metadata pair #%zu has a NULL key or value", path, i);
        if (!utf8_valid(k) || !utf8_valid(v))
            return nx__error(NX_ERR_INVALID_ARG, "%s: metadata '%s' is not valid UTF-8", path, k);
        for (size_t j = 0; j < i; j++)
            if (strcmp(meta_kv[2 * j], k) == 0)
                return nx__error(NX_ERR_INVALID_ARG, "%s: duplicate metadata key '%s'", path, k);
    }
    return NX_OK;
}

nx_status nx_safetensors_write(const char *path, const nx_tensor_write *tensors, size_t n,
                               const char *const *meta_kv, size_t n_meta) {
    size_t *sizes = nx__calloc(n ? n : 1, sizeof *sizes);
    const nx_tensor_write **order = nx__calloc(n ? n : 1, sizeof *order);
    nx_buf hb = {0};
    nx_atomic_file af = {0};
    nx_status st = NX_OK;
    if (!sizes || !order) { st = nx__error(NX_ERR_NOMEM, "out of memory"); goto done; }
    st = check_write_args(path, tensors, n, meta_kv, n_meta, sizes);
    if (st != NX_OK) goto done;
    for (size_t i = 0; i < n; i++) order[i] = &tensors[i];
    if (n > 1) {
        /* duplicate names: sorted by name, duplicates are neighbours */
        qsort(order, n, sizeof *order, cmp_name);
        for (size_t i = 1; i < n; i++)
            if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
                st = nx__error(NX_ERR_INVALID_ARG, "%s: duplicate tensor name '%s'", path, order[i]->name);
                goto done;
            }
        qsort(order, n, sizeof *order, cmp_write_order);
    }

    /* Header: {"__metadata__":{...},"name":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...} */
    nx__buf_append(&hb, "{", 1);
    bool first = true;
    if (n_meta) {
        nx__buf_append(&hb, "\"__metadata__\":{", 16);
        for (size_t i = 0; i < n_meta; i++) {
            if (i) nx__buf_append(&hb, ",", 1);
            json_put_str(&hb, meta_kv[2 * i]);
            nx__buf_append(&hb, ":", 1);
            json_put_str(&hb, meta_kv[2 * i + 1]);
        }
        nx__buf_append(&hb, "}", 1);
        first = false;
    }
    size_t off = 0;
    for (size_t k = 0; k < n; k++) {
        const nx_tensor_write *t = order[k];
        size_t tsz = sizes[order[k] - tensors];
        if (!first) nx__buf_append(&hb, ",", 1);
        first = false;
        json_put_str(&hb, t->name);
        nx__buf_printf(&hb, ":{\"dtype\":\"%s\",\"shape\":[", nx_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) nx__buf_printf(&hb, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        size_t end;
        if (!nx__add_ok(off, tsz, &end)) {
            st = nx__error(NX_ERR_RANGE, "%s: total size overflows", path);
            goto done;
        }
        nx__buf_printf(&hb, "],\"data_offsets\":[%zu,%zu]}", off, end);
        off = end;
    }
    nx__buf_append(&hb, "}", 1);
    /* Pad with spaces so the data region starts 8-byte aligned, as the reference does. */
    nx__buf_append(&hb, "       ", (8 - hb.len % 8) % 8);
    if (hb.oom) { st = nx__error(NX_ERR_NOMEM, "%s: out of memory building the header", path); goto done; }
    if (hb.len > ST_MAX_HEADER) {
        st = nx__error(NX_ERR_RANGE, "%s: header of %zu bytes exceeds the %llu-byte limit readers accept", path,
                       hb.len, ST_MAX_HEADER);
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hb.len >> (8 * i));
    st = nx__atomic_open(&af, path);
    if (st != NX_OK) goto done;
    st = nx__atomic_write(&af, len8, 8);
    if (st == NX_OK) st = nx__atomic_write(&af, hb.data, hb.len);
    for (size_t k = 0; k < n && st == NX_OK; k++)
        if (sizes[order[k] - tensors]) st = nx__atomic_write(&af, order[k]->data, sizes[order[k] - tensors]);
    if (st == NX_OK) st = nx__atomic_commit(&af);
    if (st != NX_OK) nx__atomic_abort(&af);
done:
    nx__buf_free(&hb);
    nx__free(sizes);
    nx__free((void *)order);
    return st;
}
