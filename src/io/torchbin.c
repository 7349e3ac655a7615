/*
 * torchbin.c - reads PyTorch checkpoints written by torch.save (>= 1.6, the zip format),
 * e.g. pytorch_model.bin, without Python and without executing anything.
 *
 * A checkpoint is a STORED zip (zip.c) holding <root>/data.pkl, a pickled state_dict that we
 * interpret with the data-only unpickler (pickle.c), and <root>/data/<key>, the raw bytes of
 * each storage. A tensor is a view (offset, size, stride, in elements) of one storage.
 * Every view is checked to lie inside its storage and every storage inside its member
 * before a single byte is read. Contiguous, aligned, little-endian views are returned as
 * pointers into the file mapping (zero-copy); transposes, strided slices and big-endian
 * files are gathered into owned, contiguous, little-endian buffers.
 * Nested dicts ({"model": state_dict, ...}) are flattened with '.'; non-tensor values
 * (step counters, strings) are skipped because a tensor set holds only tensors.
 */
#include "torchbin.h"

#include "pickle.h"
#include "zip.h"

#define NX_TB_MAX_DEPTH 8
#define NX_TB_MAX_NAME 4096
#define NX_TB_MAX_VISITS (1u << 22)

typedef struct {
    nx_tensorset *ts;
    const nx_zip *zip;
    const char *root;     /* archive folder, with trailing '/' */
    const char *path;
    bool big_endian;
} reader;

static char *join3(const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = nx__malloc(la + lb + lc + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

/* Finds storage <root>data/<key> and checks it holds numel elements of its dtype. */
static nx_status resolve_storage(reader *r, nx_pk *st, uint64_t *nbytes) {
    char key[72];
    memcpy(key, st->s, st->len);   /* len <= 64 and NUL-free (pickle.c) */
    key[st->len] = 0;
    size_t esz = nx_dtype_size(st->dtype);
    uint64_t need;
    if (__builtin_mul_overflow(st->numel, (uint64_t)esz, &need))
        return nx__error(NX_ERR_FORMAT, "%s: storage '%s' claims %llu elements, which overflows", r->path, key,
                         (unsigned long long)st->numel);
    *nbytes = need;
    if (st->data) return NX_OK;
    char *member = join3(r->root, "data/", key);
    if (!member) return nx__error(NX_ERR_NOMEM, "out of memory");
    const nx_zip_entry *e = nx__zip_find(r->zip, member);
    nx_status s = NX_OK;
    if (!e)
        s = nx__error(NX_ERR_FORMAT, "%s: storage '%s' has no data member '%s'", r->path, key, member);
    else if (need > e->size)
        s = nx__error(NX_ERR_FORMAT, "%s: storage '%s' needs %llu bytes (%llu x %s) but member '%s' holds %llu",
                      r->path, key, (unsigned long long)need, (unsigned long long)st->numel,
                      nx_dtype_name(st->dtype), member, (unsigned long long)e->size);
    else
        st->data = e->data;
    nx__free(member);
    return s;
}

static void swap_bytes(uint8_t *p, size_t esz) {
    for (size_t i = 0; i < esz / 2; i++) {
        uint8_t t = p[i];
        p[i] = p[esz - 1 - i];
        p[esz - 1 - i] = t;
    }
}

/* Gathers a strided view into a contiguous buffer (C order), swapping byte order if asked.
 * The caller has bounds-checked every element. Runs of the innermost dimension are copied
 * with memcpy when that dimension has stride 1. */
static void gather(uint8_t *dst, const uint8_t *base, const nx_pk_view *t, size_t esz, bool swap, uint64_t numel) {
    int nd = t->ndim;
    int64_t idx[NX_MAX_DIMS] = {0};
    int64_t inner = nd ? t->size[nd - 1] : 1, istride = nd ? t->stride[nd - 1] : 1;
    uint64_t outer = inner ? numel / (uint64_t)inner : 0;
    for (uint64_t o = 0; o < outer; o++) {
        int64_t off = t->offset;
        for (int d = 0; d < nd - 1; d++) off += idx[d] * t->stride[d];
        if (istride == 1) {
            memcpy(dst, base + (size_t)off * esz, (size_t)inner * esz);
        } else {
            for (int64_t i = 0; i < inner; i++)
                memcpy(dst + (size_t)i * esz, base + (size_t)(off + i * istride) * esz, esz);
        }
        if (swap)
            for (int64_t i = 0; i < inner; i++) swap_bytes(dst + (size_t)i * esz, esz);
        dst += (size_t)inner * esz;
        for (int d = nd - 2; d >= 0; d--) {   /* odometer over the outer dimensions */
            if (++idx[d] < t->size[d]) break;
            idx[d] = 0;
        }
    }
}

static void dims_str(char *buf, size_t cap, const int64_t *v, int n) {
    size_t j = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && j < cap; i++) j += (size_t)snprintf(buf + j, cap - j, "%s%lld", i ? ", " : "", (long long)v[i]);
    if (j < cap) snprintf(buf + j, cap - j, "]");
}

static nx_status add_tensor(reader *r, const char *name, const nx_pk *tensor) {
    nx_dtype dt = tensor->dtype;
    const nx_pk_view *t = tensor->view;
    size_t esz = nx_dtype_size(dt);
    if (esz == 0 || nx_dtype_block(dt) != 1)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: tensor '%s' has an unsupported dtype", r->path, name);
    uint64_t snbytes = 0;
    NX_TRY(resolve_storage(r, t->storage, &snbytes));
    /* numel and the highest element index the view touches, with overflow checks */
    uint64_t numel = 1, last = (uint64_t)t->offset;
    bool ovf = false;
    for (int d = 0; d < t->ndim; d++) {
        ovf |= __builtin_mul_overflow(numel, (uint64_t)t->size[d], &numel);
        if (t->size[d] > 0) {
            uint64_t span;
            ovf |= __builtin_mul_overflow((uint64_t)(t->size[d] - 1), (uint64_t)t->stride[d], &span);
            ovf |= __builtin_add_overflow(last, span, &last);
        }
    }
    uint64_t end = 0, nbytes = 0;
    if (!ovf && numel > 0) {
        ovf |= __builtin_add_overflow(last, 1, &end);
        ovf |= __builtin_mul_overflow(end, (uint64_t)esz, &end);
    }
    ovf |= __builtin_mul_overflow(numel, (uint64_t)esz, &nbytes);
    if (ovf || end > snbytes || nbytes > SIZE_MAX / 2) {
        char sz[160], sd[160];
        dims_str(sz, sizeof sz, t->size, t->ndim);
        dims_str(sd, sizeof sd, t->stride, t->ndim);
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s' (offset %lld, size %s, stride %s, %s) lies outside its "
                         "storage '%.*s' (%llu bytes)", r->path, name, (long long)t->offset, sz, sd,
                         nx_dtype_name(dt), (int)t->storage->len, t->storage->s, (unsigned long long)snbytes);
    }
    nx_tensor_info info = {0};
    info.name = name;
    info.dtype = dt;
    info.ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) info.shape[d] = t->size[d];
    info.nbytes = (size_t)nbytes;
    info.file = r->path;

    /* C-contiguous: strides equal the running product of sizes (size-1 dims are free) */
    bool contiguous = true;
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && t->stride[d] != expect) contiguous = false;
        expect *= t->size[d];
    }
    bool swap = r->big_endian && esz > 1;
    /* only form the view's address once the bounds check covers it (numel > 0) */
    const uint8_t *src = numel ? t->storage->data + (size_t)t->offset * esz : t->storage->data;
    bool aligned = ((uintptr_t)src % esz) == 0;
    if (numel == 0) {
        info.data = t->storage->data;
    } else if (contiguous && !swap && aligned) {
        info.data = src;
    } else {
        uint8_t *buf = nx__malloc((size_t)nbytes);
        if (!buf) return nx__error(NX_ERR_NOMEM, "%s: out of memory copying tensor '%s' (%llu bytes)", r->path, name,
                                   (unsigned long long)nbytes);
        gather(buf, t->storage->data, t, esz, swap, numel);
        NX_TRY(nx__tensorset_adopt_buffer(r->ts, buf));
        info.data = buf;
    }
    return nx__tensorset_add(r->ts, &info);
}

/* Walks the (possibly nested) dict, depth-first with an explicit stack; names are joined
 * with '.'. A visit budget guards against dicts shared many times over (memo references). */
static nx_status walk(reader *r, nx_pk *top) {
    struct { const nx_pk *d; size_t i, prefix_len; } stack[NX_TB_MAX_DEPTH];
    char name[NX_TB_MAX_NAME + 1];
    int depth = 0;
    size_t visits = 0;
    stack[0].d = top;
    stack[0].i = 0;
    stack[0].prefix_len = 0;
    while (depth >= 0) {
        if (stack[depth].i >= stack[depth].d->n) { depth--; continue; }
        const nx_pk *d = stack[depth].d;
        nx_pk *k = d->items[stack[depth].i], *v = d->items[stack[depth].i + 1];
        stack[depth].i += 2;
        if (++visits > NX_TB_MAX_VISITS)
            return nx__error(NX_ERR_RANGE, "%s: data.pkl has too many nested entries", r->path);
        if (k->kind != NX_PK_STR || (v->kind != NX_PK_TENSOR && v->kind != NX_PK_DICT)) continue;
        size_t pl = stack[depth].prefix_len;
        if (memchr(k->s, 0, k->len) || pl + k->len + 1 > NX_TB_MAX_NAME)
            return nx__error(NX_ERR_FORMAT, "%s: data.pkl has a key that is too long or contains NUL", r->path);
        memcpy(name + pl, k->s, k->len);
        name[pl + k->len] = 0;
        if (v->kind == NX_PK_TENSOR) {
            NX_TRY(add_tensor(r, name, v));
            continue;
        }
        if (depth + 1 >= NX_TB_MAX_DEPTH)
            return nx__error(NX_ERR_UNSUPPORTED, "%s: data.pkl nests dicts deeper than %d levels", r->path,
                             NX_TB_MAX_DEPTH);
        for (int j = 0; j <= depth; j++)
            if (stack[j].d == v) return nx__error(NX_ERR_FORMAT, "%s: data.pkl has a dict that contains itself", r->path);
        name[pl + k->len] = '.';
        depth++;
        stack[depth].d = v;
        stack[depth].i = 0;
        stack[depth].prefix_len = pl + k->len + 1;
    }
    return NX_OK;
}

/* The pre-1.6 format starts with a pickled LONG1 magic number 0x1950a86a20f9469cfc6c. */
static bool is_legacy(const uint8_t *data, size_t size) {
    static const uint8_t magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    return size >= sizeof magic && memcmp(data, magic, sizeof magic) == 0;
}

nx_status nx__torchbin_parse(nx_tensorset *ts, const uint8_t *data, size_t size, const char *path) {
    if (is_legacy(data, size))
        return nx__error(NX_ERR_UNSUPPORTED, "%s: legacy (PyTorch < 1.6) checkpoint format; load it with torch and "
                         "re-save it with torch.save or safetensors", path);
    nx_zip zip;
    NX_TRY(nx__zip_open(&zip, data, size, path));
    reader r = {ts, &zip, NULL, path, false};
    nx_pickle *pk = NULL;
    nx_pk *obj = NULL;
    char *root = NULL, *what = NULL, *member = NULL;
    nx_status st = NX_OK;
    /* torch's reader takes the folder from the first entry's name */
    const char *first = zip.entries[0].name, *slash = strchr(first, '/');
    if (!slash || slash == first) {
        st = nx__error(NX_ERR_FORMAT, "%s: zip member '%s' is not inside a folder; not a torch.save checkpoint", path, first);
        goto done;
    }
    root = nx__strndup(first, (size_t)(slash - first) + 1);
    if (!root) { st = nx__error(NX_ERR_NOMEM, "out of memory"); goto done; }
    r.root = root;

    member = join3(root, "byteorder", "");
    if (!member) { st = nx__error(NX_ERR_NOMEM, "out of memory"); goto done; }
    const nx_zip_entry *bo = nx__zip_find(&zip, member);
    if (bo) {   /* absent in files older than torch 1.10: little-endian */
        if (bo->size == 3 && memcmp(bo->data, "big", 3) == 0) r.big_endian = true;
        else if (!(bo->size == 6 && memcmp(bo->data, "little", 6) == 0)) {
            st = nx__error(NX_ERR_FORMAT, "%s: '%s' is neither 'little' nor 'big'", path, member);
            goto done;
        }
    }
    nx__free(member);
    member = join3(root, "data.pkl", "");
    if (!member) { st = nx__error(NX_ERR_NOMEM, "out of memory"); goto done; }
    const nx_zip_entry *pkl = nx__zip_find(&zip, member);
    if (!pkl) {
        st = nx__error(NX_ERR_FORMAT, "%s: no '%s' member; not a torch.save checkpoint", path, member);
        goto done;
    }
    what = join3(path, ": ", "data.pkl");
    if (!what) { st = nx__error(NX_ERR_NOMEM, "out of memory"); goto done; }
    if ((st = nx__pickle_load(pkl->data, (size_t)pkl->size, what, &pk, &obj))) goto done;
    if (obj->kind != NX_PK_DICT) {
        static const char *const kinds[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list",
                                            "dict", "global", "storage", "tensor"};
        st = nx__error(NX_ERR_FORMAT, "%s: data.pkl holds a %s, expected a dict of tensors (a state_dict)", path,
                       kinds[obj->kind]);
        goto done;
    }
    st = walk(&r, obj);
done:
    nx__pickle_free(pk);
    nx__free(what);
    nx__free(member);
    nx__free(root);
    nx__zip_free(&zip);
    return st;
}

nx_status nx__torchbin_read_into(nx_tensorset *ts, const char *path) {
    nx_mapped_file mf;
    NX_TRY(nx__file_map(path, &mf));
    const nx_mapped_file *stored;
    /* the set owns the mapping from here on, so tensors may point into it */
    NX_TRY(nx__tensorset_adopt_mapping(ts, &mf, &stored));
    return nx__torchbin_parse(ts, stored->data, stored->size, path);
}
