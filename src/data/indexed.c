/*
 * indexed.c - Megatron/GPT-NeoX MMapIndexedDataset: a validating zero-copy reader and a
 * streaming, atomic writer whose bytes match megatron-core's IndexedDatasetBuilder.
 *
 * Layout (little-endian, no padding; docs/DATA.md):
 *   0  "MMIDIDX\0\0"   9  u64 version = 1   17  u8 dtype code   18  u64 N   26  u64 D
 *   34 int32 sizes[N]   34+4N int64 pointers[N]   34+12N int64 doc_idx[D]
 *   [34+12N+8D int8 modes[N], multimodal files only]
 * The arrays start at byte 34, so every read goes through memcpy (unaligned-safe).
 *
 * Invariants after nx_indexed_open: every size >= 0; pointers[i] is the running byte
 * offset (items are contiguous, in order, and end inside the .bin); doc_idx is
 * non-decreasing from 0 to N. Later reads can therefore index without further checks.
 */
#include "data/data.h"

#include <errno.h>

static const uint8_t k_magic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
enum { HEADER_BYTES = 34 };

struct nx_indexed {
    nx_mapped_file idx, bin;
    int code;
    size_t itemsize;
    uint64_t n, d;            /* items, doc_idx entries */
    const uint8_t *sizes, *pointers, *doc_idx;   /* inside idx.data, unaligned */
    uint64_t n_tokens;
    int32_t min_size, max_size;
    bool multimodal;
    bool borrowed;            /* idx/bin point at caller memory (nx__indexed_open_mem) */
};

static inline uint64_t rd_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline int64_t rd_i64(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return v; }
static inline int32_t rd_i32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

size_t nx__idx_itemsize(int code) {
    switch (code) {
    case NX_IDX_U8: case NX_IDX_I8: return 1;
    case NX_IDX_I16: case NX_IDX_U16: return 2;
    case NX_IDX_I32: case NX_IDX_F32: return 4;
    case NX_IDX_I64: case NX_IDX_F64: return 8;
    default: return 0;
    }
}

static nx_dtype code_dtype(int code) {
    switch (code) {
    case NX_IDX_U8: return NX_U8;
    case NX_IDX_I8: return NX_I8;
    case NX_IDX_I16: return NX_I16;
    case NX_IDX_I32: return NX_I32;
    case NX_IDX_I64: return NX_I64;
    case NX_IDX_F32: return NX_F32;
    case NX_IDX_F64: return NX_F64;
    case NX_IDX_U16: return NX_U16;
    default: return NX_DTYPE_INVALID;
    }
}

int nx_indexed_dtype_for_vocab(int64_t vocab_size) {
    return vocab_size >= 0 && vocab_size < 65500 ? NX_IDX_U16 : NX_IDX_I32;
}

/* "x" -> "x.idx"/"x.bin"; a path already ending in .idx or .bin has its suffix swapped. */
char *nx__idx_path(const char *prefix, const char *ext) {
    size_t n = strlen(prefix);
    if (n >= 4 && (strcmp(prefix + n - 4, ".idx") == 0 || strcmp(prefix + n - 4, ".bin") == 0)) n -= 4;
    char *s = nx__malloc(n + 5);
    if (!s) return NULL;
    memcpy(s, prefix, n);
    memcpy(s + n, ext, 5);
    return s;
}

/* Structural validation of the mapped .idx against itself and the .bin size. */
static nx_status validate(nx_indexed *ds) {
    const char *ip = ds->idx.path;
    const uint8_t *p = ds->idx.data;
    size_t sz = ds->idx.size;
    if (sz < HEADER_BYTES) {
        if (sz >= 8 && memcmp(p, "TNTIDX\0\0", 8) == 0)
            return nx__error(NX_ERR_UNSUPPORTED, "%s: legacy 'cached' IndexedDataset (TNTIDX) is not supported; "
                             "re-run preprocessing with --dataset-impl mmap", ip);
        return nx__error(NX_ERR_FORMAT, "%s: %zu bytes, shorter than the 34-byte MMIDIDX header", ip, sz);
    }
    if (memcmp(p, k_magic, 9) != 0) {
        if (memcmp(p, "TNTIDX\0\0", 8) == 0)
            return nx__error(NX_ERR_UNSUPPORTED, "%s: legacy 'cached' IndexedDataset (TNTIDX) is not supported; "
                             "re-run preprocessing with --dataset-impl mmap", ip);
        return nx__error(NX_ERR_FORMAT, "%s: bad magic (expected \"MMIDIDX\\0\\0\"): not a Megatron .idx file", ip);
    }
    uint64_t version = rd_u64(p + 9);
    if (version != 1)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: version %llu (expected 1)", ip, (unsigned long long)version);
    ds->code = p[17];
    ds->itemsize = nx__idx_itemsize(ds->code);
    if (!ds->itemsize)
        return nx__error(NX_ERR_FORMAT, "%s: dtype code %d (expected 1..8)", ip, ds->code);
    ds->n = rd_u64(p + 18);
    ds->d = rd_u64(p + 26);
    /* Bound the counts by the file size before any multiplication can overflow. */
    uint64_t room = sz - HEADER_BYTES;
    if (ds->n > room / 12 || ds->d > room / 8)
        return nx__error(NX_ERR_FORMAT, "%s: header claims %llu items and %llu doc_idx entries, more than a "
                         "%zu-byte file holds", ip, (unsigned long long)ds->n, (unsigned long long)ds->d, sz);
    uint64_t need = HEADER_BYTES + 12 * ds->n;
    if (ds->d > (room - 12 * ds->n) / 8)
        return nx__error(NX_ERR_FORMAT, "%s: header claims %llu items and %llu doc_idx entries, more than a "
                         "%zu-byte file holds", ip, (unsigned long long)ds->n, (unsigned long long)ds->d, sz);
    need += 8 * ds->d;
    if (sz == need) ds->multimodal = false;
    else if (sz - need == ds->n && ds->n > 0) ds->multimodal = true;   /* trailing int8 modes[N] */
    else
        return nx__error(NX_ERR_FORMAT, "%s: file is %zu bytes but N=%llu, D=%llu need %llu", ip, sz,
                         (unsigned long long)ds->n, (unsigned long long)ds->d, (unsigned long long)need);
    if (ds->d == 0)
        return nx__error(NX_ERR_FORMAT, "%s: doc_idx is empty (expected at least the leading 0)", ip);
    ds->sizes = p + HEADER_BYTES;
    ds->pointers = ds->sizes + 4 * ds->n;
    ds->doc_idx = ds->pointers + 8 * ds->n;

    uint64_t off = 0;   /* running byte offset; bounded by the .bin size below */
    uint64_t tokens = 0;
    int32_t mn = INT32_MAX, mx = 0;
    for (uint64_t i = 0; i < ds->n; i++) {
        int32_t s = rd_i32(ds->sizes + 4 * i);
        int64_t ptr = rd_i64(ds->pointers + 8 * i);
        if (s < 0)
            return nx__error(NX_ERR_FORMAT, "%s: sizes[%llu] = %d is negative", ip, (unsigned long long)i, s);
        if (ptr < 0 || (uint64_t)ptr != off)
            return nx__error(NX_ERR_FORMAT, "%s: pointers[%llu] = %lld, expected %llu (the sum of the previous "
                             "sizes x %zu bytes)", ip, (unsigned long long)i, (long long)ptr,
                             (unsigned long long)off, ds->itemsize);
        uint64_t bytes = (uint64_t)s * ds->itemsize;
        if (off + bytes > ds->bin.size)
            return nx__error(NX_ERR_FORMAT, "%s: item %llu ends at byte %llu, past the end of %s (%zu bytes)", ip,
                             (unsigned long long)i, (unsigned long long)(off + bytes), ds->bin.path, ds->bin.size);
        off += bytes;
        tokens += (uint64_t)s;
        if (s < mn) mn = s;
        if (s > mx) mx = s;
    }
    ds->n_tokens = tokens;
    ds->min_size = ds->n ? mn : 0;
    ds->max_size = ds->n ? mx : 0;
    if (off != ds->bin.size)
        return nx__error(NX_ERR_FORMAT, "%s: holds %zu bytes but the index describes %llu (%llu tokens x %zu): "
                         "the .bin and .idx do not belong together", ds->bin.path, ds->bin.size,
                         (unsigned long long)off, (unsigned long long)tokens, ds->itemsize);
    int64_t prev = 0;
    for (uint64_t k = 0; k < ds->d; k++) {
        int64_t v = rd_i64(ds->doc_idx + 8 * k);
        if (k == 0 && v != 0)
            return nx__error(NX_ERR_FORMAT, "%s: doc_idx[0] = %lld (expected 0)", ip, (long long)v);
        if (v < prev || (uint64_t)v > ds->n)
            return nx__error(NX_ERR_FORMAT, "%s: doc_idx[%llu] = %lld is not in [%lld, N=%llu] (doc_idx must be "
                             "non-decreasing)", ip, (unsigned long long)k, (long long)v, (long long)prev,
                             (unsigned long long)ds->n);
        prev = v;
    }
    if ((uint64_t)prev != ds->n)
        return nx__error(NX_ERR_FORMAT, "%s: doc_idx ends at %lld, expected N=%llu (files appended with the old "
                         "merge_file_ lack doc_idx entries)", ip, (long long)prev, (unsigned long long)ds->n);
    return NX_OK;
}

nx_status nx_indexed_open(const char *prefix, nx_indexed **out) {
    *out = NULL;
    if (!prefix) return nx__error(NX_ERR_INVALID_ARG, "nx_indexed_open: NULL prefix");
    nx_indexed *ds = nx__calloc(1, sizeof *ds);
    char *ip = nx__idx_path(prefix, ".idx"), *bp = nx__idx_path(prefix, ".bin");
    nx_status st = NX_OK;
    if (!ds || !ip || !bp) st = nx__error(NX_ERR_NOMEM, "%s: out of memory", prefix);
    if (st == NX_OK) st = nx__file_map(ip, &ds->idx);
    if (st == NX_OK) st = nx__file_map(bp, &ds->bin);
    if (st == NX_OK) st = validate(ds);
    nx__free(ip);
    nx__free(bp);
    if (st != NX_OK) {
        nx_indexed_free(ds);
        return st;
    }
    *out = ds;
    return NX_OK;
}

void nx_indexed_free(nx_indexed *ds) {
    if (!ds) return;
    if (ds->borrowed) {
        nx__free(ds->idx.path);
        nx__free(ds->bin.path);
    } else {
        nx__file_unmap(&ds->idx);
        nx__file_unmap(&ds->bin);
    }
    nx__free(ds);
}

nx_status nx__indexed_open_mem(const void *idx, size_t idx_len, const void *bin, size_t bin_len, nx_indexed **out) {
    *out = NULL;
    nx_indexed *ds = nx__calloc(1, sizeof *ds);
    if (!ds) return nx__error(NX_ERR_NOMEM, "out of memory");
    ds->borrowed = true;
    ds->idx.data = idx;
    ds->idx.size = idx_len;
    ds->idx.path = nx__strdup("<memory>.idx");
    ds->bin.data = bin_len ? bin : NULL;
    ds->bin.size = bin_len;
    ds->bin.path = nx__strdup("<memory>.bin");
    nx_status st = (ds->idx.path && ds->bin.path) ? validate(ds) : nx__error(NX_ERR_NOMEM, "out of memory");
    if (st != NX_OK) {
        nx_indexed_free(ds);
        return st;
    }
    *out = ds;
    return NX_OK;
}

void nx_indexed_get_info(const nx_indexed *ds, nx_indexed_info *o) {
    memset(o, 0, sizeof *o);
    o->dtype_code = ds->code;
    o->dtype = code_dtype(ds->code);
    o->itemsize = ds->itemsize;
    o->n_items = ds->n;
    o->n_docs = ds->d - 1;
    o->n_tokens = ds->n_tokens;
    o->bin_bytes = ds->bin.size;
    o->idx_bytes = ds->idx.size;
    o->min_size = ds->min_size;
    o->max_size = ds->max_size;
}

uint64_t nx_indexed_n_items(const nx_indexed *ds) { return ds->n; }
uint64_t nx_indexed_n_docs(const nx_indexed *ds) { return ds->d - 1; }

int32_t nx_indexed_item_size(const nx_indexed *ds, uint64_t i) {
    NX_ASSERT(i < ds->n);
    return rd_i32(ds->sizes + 4 * i);
}

int nx__indexed_code(const nx_indexed *ds) { return ds->code; }

nx_status nx_indexed_doc_items(const nx_indexed *ds, uint64_t d, uint64_t *first, uint64_t *end) {
    if (d + 1 >= ds->d)
        return nx__error(NX_ERR_RANGE, "%s: document %llu out of range (%llu documents)", ds->idx.path,
                         (unsigned long long)d, (unsigned long long)(ds->d - 1));
    *first = (uint64_t)rd_i64(ds->doc_idx + 8 * d);
    *end = (uint64_t)rd_i64(ds->doc_idx + 8 * (d + 1));
    return NX_OK;
}

const void *nx_indexed_item_data(const nx_indexed *ds, uint64_t i) {
    NX_ASSERT(i < ds->n);
    if (!ds->bin.data) return NULL;
    return ds->bin.data + rd_i64(ds->pointers + 8 * i);
}

/* Widens count tokens of dtype code from unaligned src into dst. Float and out-of-range
 * int64 values are refused: token ids are integers that fit in int32. */
nx_status nx__idx_convert(int code, const uint8_t *src, uint64_t count, int32_t *dst) {
    switch (code) {
    case NX_IDX_U16:
        for (uint64_t k = 0; k < count; k++) { uint16_t v; memcpy(&v, src + 2 * k, 2); dst[k] = v; }
        return NX_OK;
    case NX_IDX_I32:
        memcpy(dst, src, count * 4);
        return NX_OK;
    case NX_IDX_I16:
        for (uint64_t k = 0; k < count; k++) { int16_t v; memcpy(&v, src + 2 * k, 2); dst[k] = v; }
        return NX_OK;
    case NX_IDX_U8:
        for (uint64_t k = 0; k < count; k++) dst[k] = src[k];
        return NX_OK;
    case NX_IDX_I8:
        for (uint64_t k = 0; k < count; k++) dst[k] = (int8_t)src[k];
        return NX_OK;
    case NX_IDX_I64:
        for (uint64_t k = 0; k < count; k++) {
            int64_t v;
            memcpy(&v, src + 8 * k, 8);
            if (v < INT32_MIN || v > INT32_MAX)
                return nx__error(NX_ERR_RANGE, "int64 token %lld does not fit in int32", (long long)v);
            dst[k] = (int32_t)v;
        }
        return NX_OK;
    default:
        return nx__error(NX_ERR_UNSUPPORTED, "dtype code %d holds floats, not token ids", code);
    }
}

nx_status nx_indexed_read(const nx_indexed *ds, uint64_t item, uint64_t offset, uint64_t count, int32_t *dst) {
    if (item >= ds->n)
        return nx__error(NX_ERR_RANGE, "%s: item %llu out of range (%llu items)", ds->idx.path,
                         (unsigned long long)item, (unsigned long long)ds->n);
    uint64_t len = (uint64_t)rd_i32(ds->sizes + 4 * item);
    if (offset > len || count > len - offset)
        return nx__error(NX_ERR_RANGE, "%s: tokens [%llu, %llu) of item %llu, which has %llu", ds->idx.path,
                         (unsigned long long)offset, (unsigned long long)(offset + count),
                         (unsigned long long)item, (unsigned long long)len);
    if (count == 0) return NX_OK;
    const uint8_t *src = ds->bin.data + rd_i64(ds->pointers + 8 * item) + offset * ds->itemsize;
    nx_status st = nx__idx_convert(ds->code, src, count, dst);
    if (st != NX_OK) return nx__error_wrap(st, "%s: item %llu", ds->bin.path, (unsigned long long)item);
    return NX_OK;
}

nx_status nx_indexed_verify(const nx_indexed *ds, int64_t vocab_size, uint64_t *bad_item) {
    if (bad_item) *bad_item = 0;
    if (ds->code == NX_IDX_F32 || ds->code == NX_IDX_F64)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: dtype code %d holds floats, not token ids", ds->idx.path, ds->code);
    enum { CHUNK = 4096 };
    int32_t buf[CHUNK];
    for (uint64_t i = 0; i < ds->n; i++) {
        uint64_t len = (uint64_t)rd_i32(ds->sizes + 4 * i);
        for (uint64_t off = 0; off < len; off += CHUNK) {
            uint64_t c = NX_MIN((uint64_t)CHUNK, len - off);
            nx_status st = nx_indexed_read(ds, i, off, c, buf);
            if (st != NX_OK) { if (bad_item) *bad_item = i; return st; }
            for (uint64_t k = 0; k < c; k++) {
                if (buf[k] < 0 || (vocab_size > 0 && buf[k] >= vocab_size)) {
                    if (bad_item) *bad_item = i;
                    return nx__error(NX_ERR_RANGE, "%s: item %llu token %llu = %d is outside [0, %lld)",
                                     ds->bin.path, (unsigned long long)i, (unsigned long long)(off + k), buf[k],
                                     (long long)(vocab_size > 0 ? vocab_size : (int64_t)INT32_MAX + 1));
                }
            }
        }
    }
    return NX_OK;
}

/* ---- writer ------------------------------------------------------------------------ */

struct nx_indexed_writer {
    char *idx_path;
    int code;
    size_t itemsize;
    nx_atomic_file bin;
    int32_t *sizes;
    size_t n, cap;
    int64_t *docs;
    size_t nd, dcap;
    uint64_t tokens;
    bool finished, failed;
    uint8_t buf[1 << 16];   /* conversion buffer */
};

nx_status nx_indexed_writer_create(const char *prefix, int code, nx_indexed_writer **out) {
    *out = NULL;
    if (code != NX_IDX_U16 && code != NX_IDX_I32 && code != NX_IDX_U8 && code != NX_IDX_I8 &&
        code != NX_IDX_I16 && code != NX_IDX_I64)
        return nx__error(NX_ERR_INVALID_ARG, "%s: writer dtype code %d (expected an integer dtype)", prefix, code);
    nx_indexed_writer *w = nx__calloc(1, sizeof *w);
    if (!w) return nx__error(NX_ERR_NOMEM, "%s: out of memory", prefix);
    w->code = code;
    w->itemsize = nx__idx_itemsize(code);
    w->idx_path = nx__idx_path(prefix, ".idx");
    char *bp = nx__idx_path(prefix, ".bin");
    w->dcap = 1024;
    w->docs = nx__malloc(w->dcap * sizeof *w->docs);
    if (!w->idx_path || !bp || !w->docs) {
        nx__free(bp);
        nx_indexed_writer_free(w);
        return nx__error(NX_ERR_NOMEM, "%s: out of memory", prefix);
    }
    w->docs[w->nd++] = 0;
    nx_status st = nx__atomic_open(&w->bin, bp);
    nx__free(bp);
    if (st != NX_OK) {
        nx_indexed_writer_free(w);
        return st;
    }
    *out = w;
    return NX_OK;
}

static bool fits(int code, int32_t v) {
    switch (code) {
    case NX_IDX_U16: return v >= 0 && v <= 65535;
    case NX_IDX_I16: return v >= -32768 && v <= 32767;
    case NX_IDX_U8: return v >= 0 && v <= 255;
    case NX_IDX_I8: return v >= -128 && v <= 127;
    default: return true;
    }
}

nx_status nx_indexed_writer_add_item(nx_indexed_writer *w, const int32_t *tokens, size_t n) {
    if (w->finished || w->failed) return nx__error(NX_ERR_STATE, "%s: writer is finished or failed", w->idx_path);
    if (n > INT32_MAX)
        return nx__error(NX_ERR_RANGE, "%s: item of %zu tokens exceeds the int32 size field", w->idx_path, n);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 4096;
        int32_t *ns = nx__realloc(w->sizes, nc * sizeof *ns);
        if (!ns) { w->failed = true; return nx__error(NX_ERR_NOMEM, "%s: out of memory", w->idx_path); }
        w->sizes = ns;
        w->cap = nc;
    }
    size_t per = sizeof w->buf / w->itemsize;
    for (size_t off = 0; off < n; off += per) {
        size_t c = NX_MIN(per, n - off);
        for (size_t k = 0; k < c; k++) {
            int32_t v = tokens[off + k];
            if (!fits(w->code, v)) {
                w->failed = true;
                return nx__error(NX_ERR_RANGE, "%s: token %d of item %zu does not fit dtype code %d", w->idx_path,
                                 v, w->n, w->code);
            }
            switch (w->itemsize) {
            case 1: { uint8_t b = (uint8_t)v; w->buf[k] = b; break; }
            case 2: { uint16_t h = (uint16_t)v; memcpy(w->buf + 2 * k, &h, 2); break; }
            case 4: memcpy(w->buf + 4 * k, &v, 4); break;
            default: { int64_t q = v; memcpy(w->buf + 8 * k, &q, 8); break; }
            }
        }
        nx_status st = nx__atomic_write(&w->bin, w->buf, c * w->itemsize);
        if (st != NX_OK) { w->failed = true; return st; }
    }
    w->sizes[w->n++] = (int32_t)n;
    w->tokens += n;
    return NX_OK;
}

nx_status nx_indexed_writer_end_document(nx_indexed_writer *w) {
    if (w->finished || w->failed) return nx__error(NX_ERR_STATE, "%s: writer is finished or failed", w->idx_path);
    if (w->nd == w->dcap) {
        size_t nc = w->dcap * 2;
        int64_t *nd = nx__realloc(w->docs, nc * sizeof *nd);
        if (!nd) { w->failed = true; return nx__error(NX_ERR_NOMEM, "%s: out of memory", w->idx_path); }
        w->docs = nd;
        w->dcap = nc;
    }
    w->docs[w->nd++] = (int64_t)w->n;
    return NX_OK;
}

nx_status nx_indexed_writer_add_document(nx_indexed_writer *w, const int32_t *tokens, size_t n) {
    NX_TRY(nx_indexed_writer_add_item(w, tokens, n));
    return nx_indexed_writer_end_document(w);
}

uint64_t nx_indexed_writer_n_items(const nx_indexed_writer *w) { return w->n; }
uint64_t nx_indexed_writer_n_tokens(const nx_indexed_writer *w) { return w->tokens; }

static nx_status write_u64(nx_atomic_file *af, uint64_t v) { return nx__atomic_write(af, &v, 8); }

nx_status nx_indexed_writer_finish(nx_indexed_writer *w) {
    if (w->finished || w->failed) return nx__error(NX_ERR_STATE, "%s: writer is finished or failed", w->idx_path);
    nx_atomic_file idx;
    NX_TRY(nx__atomic_open(&idx, w->idx_path));
    uint8_t code = (uint8_t)w->code;
    nx_status st = nx__atomic_write(&idx, k_magic, 9);
    if (st == NX_OK) st = write_u64(&idx, 1);
    if (st == NX_OK) st = nx__atomic_write(&idx, &code, 1);
    if (st == NX_OK) st = write_u64(&idx, w->n);
    if (st == NX_OK) st = write_u64(&idx, w->nd);
    if (st == NX_OK) st = nx__atomic_write(&idx, w->sizes, w->n * 4);
    /* pointers: running byte offsets, written in chunks through the conversion buffer */
    uint64_t off = 0;
    size_t per = sizeof w->buf / 8;
    for (size_t i = 0; st == NX_OK && i < w->n; i += per) {
        size_t c = NX_MIN(per, w->n - i);
        for (size_t k = 0; k < c; k++) {
            memcpy(w->buf + 8 * k, &off, 8);
            off += (uint64_t)w->sizes[i + k] * w->itemsize;
        }
        st = nx__atomic_write(&idx, w->buf, c * 8);
    }
    if (st == NX_OK) st = nx__atomic_write(&idx, w->docs, w->nd * 8);
    if (st != NX_OK) {
        nx__atomic_abort(&idx);
        w->failed = true;
        return st;
    }
    /* Publish: drop any old index first, so a crash between the two renames leaves a new
     * .bin without an .idx (unusable) rather than a mismatched pair. */
    if (remove(w->idx_path) != 0 && errno != ENOENT) {
        st = nx__error(NX_ERR_IO, "%s: cannot replace: %s", w->idx_path, strerror(errno));
        nx__atomic_abort(&idx);
        w->failed = true;
        return st;
    }
    st = nx__atomic_commit(&w->bin);
    if (st == NX_OK) st = nx__atomic_commit(&idx);
    else nx__atomic_abort(&idx);
    if (st != NX_OK) { w->failed = true; return st; }
    w->finished = true;
    return NX_OK;
}

void nx_indexed_writer_free(nx_indexed_writer *w) {
    if (!w) return;
    if (!w->finished) nx__atomic_abort(&w->bin);
    nx__free(w->idx_path);
    nx__free(w->sizes);
    nx__free(w->docs);
    nx__free(w);
}
