/*
 * zip.c - read-only ZIP reader for PyTorch checkpoints (PKWARE APPNOTE 6.3, the subset
 * torch.save writes).
 *
 * Layout we walk, from the end of the file:
 *   EOCD ("PK\5\6", 22 bytes + comment) - searched backwards within the last 64 KiB + 22
 *   [ZIP64 EOCD locator ("PK\6\7", 20 bytes) right before it, pointing at the
 *    ZIP64 EOCD record ("PK\6\6") which then supplies the entry count and directory]
 *   central directory: one "PK\1\2" header per member (46 bytes + name + extra + comment);
 *   32-bit fields equal to 0xFFFFFFFF take their value from the ZIP64 extra field (id 1)
 *   local header of each member ("PK\3\4", 30 bytes + name + extra): the data starts at
 *   local_offset + 30 + n + m, where the local extra length may differ from the central one
 *   (torch pads it so that data are 64-byte aligned).
 *
 * Invariants after nx__zip_open succeeds: every member is STORED, unencrypted, lies wholly
 * inside the buffer, and has a unique, non-empty, NUL-free name. All offset arithmetic is
 * done in uint64 with explicit overflow checks, so a hostile directory cannot point outside
 * the buffer. CRC-32s are not verified: a checkpoint is gigabytes of weights, and
 * torch's own reader does not check them either; the tensor bounds checks do not rely on them.
 */
#include "zip.h"

#define EOCD_SIZE 22u
#define ZIP64_LOCATOR_SIZE 20u
#define ZIP64_EOCD_SIZE 56u
#define CDIR_SIZE 46u
#define LOCAL_SIZE 30u

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* True when [off, off+len) lies inside [0, size). */
static bool span_ok(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

static int cmp_names(const void *a, const void *b) {
    return strcmp((*(const nx_zip_entry *const *)a)->name, (*(const nx_zip_entry *const *)b)->name);
}

/* Finds the end-of-central-directory record: the last signature, scanning backwards,
 * whose fixed part and comment fit in the file. Returns false when there is none. */
static bool find_eocd(const uint8_t *data, size_t size, size_t *pos) {
    if (size < EOCD_SIZE) return false;
    size_t start = size - EOCD_SIZE;
    size_t stop = start > 65535u ? start - 65535u : 0;
    for (size_t p = start + 1; p-- > stop;) {
        if (data[p] == 'P' && data[p + 1] == 'K' && data[p + 2] == 5 && data[p + 3] == 6) {
            uint16_t clen = rd16(data + p + 20);
            if ((uint64_t)p + EOCD_SIZE + clen <= size) {
                *pos = p;
                return true;
            }
        }
    }
    return false;
}

/* Reads the ZIP64 extended-information extra field of one central header: each 64-bit
 * value is present only when its 32-bit field is saturated, in this fixed order. */
static nx_status read_zip64_extra(const uint8_t *extra, size_t m, uint64_t *usize, uint64_t *csize,
                                  uint64_t *lho, bool need_u, bool need_c, bool need_o, const char *path,
                                  const char *member) {
    size_t i = 0;
    while (i + 4 <= m) {
        uint16_t id = rd16(extra + i), len = rd16(extra + i + 2);
        if (len > m - i - 4)
            return nx__error(NX_ERR_FORMAT, "%s: member '%s': extra field runs past its header", path, member);
        if (id == 1) {
            const uint8_t *f = extra + i + 4;
            size_t left = len;
            uint64_t *want[3] = {need_u ? usize : NULL, need_c ? csize : NULL, need_o ? lho : NULL};
            for (int k = 0; k < 3; k++) {
                if (!want[k]) continue;
                if (left < 8)
                    return nx__error(NX_ERR_FORMAT, "%s: member '%s': ZIP64 extra field is too short", path, member);
                *want[k] = rd64(f);
                f += 8;
                left -= 8;
            }
            return NX_OK;
        }
        i += 4u + len;
    }
    return nx__error(NX_ERR_FORMAT, "%s: member '%s': sizes need a ZIP64 extra field, which is missing", path,
                     member);
}

nx_status nx__zip_open(nx_zip *z, const uint8_t *data, size_t size, const char *path) {
    memset(z, 0, sizeof *z);
    size_t eocd;
    if (!find_eocd(data, size, &eocd))
        return nx__error(NX_ERR_FORMAT,
                         "%s: not a zip archive (no end-of-central-directory record; truncated or not a "
                         "torch.save file)", path);
    const uint8_t *e = data + eocd;
    uint64_t n_total = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    uint64_t cd_end_limit = eocd;   /* the directory must end before the record describing it */
    bool zip64 = eocd >= ZIP64_LOCATOR_SIZE && memcmp(data + eocd - ZIP64_LOCATOR_SIZE, "PK\x06\x07", 4) == 0;
    /* With ZIP64 some writers saturate these 16-bit fields (0xFFFF); the record decides. */
    if (!zip64 && (rd16(e + 4) != 0 || rd16(e + 6) != 0 || rd16(e + 8) != rd16(e + 10)))
        return nx__error(NX_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", path);

    if (zip64) {
        const uint8_t *loc = data + eocd - ZIP64_LOCATOR_SIZE;
        uint64_t rec = rd64(loc + 8);
        if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
            return nx__error(NX_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", path);
        if (!span_ok(rec, ZIP64_EOCD_SIZE, eocd - ZIP64_LOCATOR_SIZE) || memcmp(data + rec, "PK\x06\x06", 4) != 0)
            return nx__error(NX_ERR_FORMAT, "%s: ZIP64 end-of-central-directory record at offset %llu is "
                             "missing or outside the file", path, (unsigned long long)rec);
        const uint8_t *r = data + rec;
        if (rd32(r + 16) != 0 || rd32(r + 20) != 0 || rd64(r + 24) != rd64(r + 32))
            return nx__error(NX_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported", path);
        n_total = rd64(r + 32);
        cd_size = rd64(r + 40);
        cd_off = rd64(r + 48);
        cd_end_limit = rec;
    }
    if (!span_ok(cd_off, cd_size, cd_end_limit))
        return nx__error(NX_ERR_FORMAT, "%s: central directory (offset %llu, %llu bytes) lies outside the file",
                         path, (unsigned long long)cd_off, (unsigned long long)cd_size);
    if (n_total == 0)
        return nx__error(NX_ERR_FORMAT, "%s: zip archive has no members", path);
    if (n_total > cd_size / CDIR_SIZE)
        return nx__error(NX_ERR_FORMAT, "%s: central directory claims %llu members in %llu bytes", path,
                         (unsigned long long)n_total, (unsigned long long)cd_size);

    z->entries = nx__calloc((size_t)n_total, sizeof *z->entries);
    z->sorted = nx__calloc((size_t)n_total, sizeof *z->sorted);
    if (!z->entries || !z->sorted) {
        nx__zip_free(z);
        return nx__error(NX_ERR_NOMEM, "%s: out of memory for %llu zip entries", path, (unsigned long long)n_total);
    }
    nx_status st = NX_OK;
    const uint8_t *p = data + cd_off, *cd_end = data + cd_off + cd_size;
    for (uint64_t i = 0; i < n_total; i++) {
        if ((size_t)(cd_end - p) < CDIR_SIZE || memcmp(p, "PK\x01\x02", 4) != 0) {
            st = nx__error(NX_ERR_FORMAT, "%s: central directory entry %llu is truncated or corrupt", path,
                           (unsigned long long)i);
            goto fail;
        }
        uint16_t flags = rd16(p + 8), method = rd16(p + 10);
        uint64_t csize = rd32(p + 20), usize = rd32(p + 24);
        uint16_t n = rd16(p + 28), m = rd16(p + 30), k = rd16(p + 32);
        uint64_t lho = rd32(p + 42);
        if ((size_t)(cd_end - p) - CDIR_SIZE < (size_t)n + m + k) {
            st = nx__error(NX_ERR_FORMAT, "%s: central directory entry %llu runs past the directory", path,
                           (unsigned long long)i);
            goto fail;
        }
        const uint8_t *name = p + CDIR_SIZE;
        if (n == 0 || memchr(name, 0, n)) {
            st = nx__error(NX_ERR_FORMAT, "%s: central directory entry %llu has an empty or invalid name", path,
                           (unsigned long long)i);
            goto fail;
        }
        nx_zip_entry *ent = &z->entries[i];
        ent->name = nx__strndup((const char *)name, n);
        z->n = (size_t)i + 1;
        if (!ent->name) {
            st = nx__error(NX_ERR_NOMEM, "out of memory");
            goto fail;
        }
        bool need_u = usize == 0xFFFFFFFFu, need_c = csize == 0xFFFFFFFFu, need_o = lho == 0xFFFFFFFFu;
        if (need_u || need_c || need_o) {
            st = read_zip64_extra(name + n, m, &usize, &csize, &lho, need_u, need_c, need_o, path, ent->name);
            if (st) goto fail;
        }
        if (flags & 1u) {
            st = nx__error(NX_ERR_UNSUPPORTED, "%s: member '%s' is encrypted", path, ent->name);
            goto fail;
        }
        if (method != 0) {
            st = nx__error(NX_ERR_UNSUPPORTED, "%s: member '%s' is compressed (method %u); torch checkpoints "
                           "store members uncompressed - re-save it with torch.save", path, ent->name, method);
            goto fail;
        }
        if (csize != usize) {
            st = nx__error(NX_ERR_FORMAT, "%s: stored member '%s' has compressed size %llu != size %llu", path,
                           ent->name, (unsigned long long)csize, (unsigned long long)usize);
            goto fail;
        }
        if (!span_ok(lho, LOCAL_SIZE, size) || memcmp(data + lho, "PK\x03\x04", 4) != 0) {
            st = nx__error(NX_ERR_FORMAT, "%s: member '%s': local header at offset %llu is outside the file or "
                           "corrupt", path, ent->name, (unsigned long long)lho);
            goto fail;
        }
        uint16_t ln = rd16(data + lho + 26), lm = rd16(data + lho + 28);
        uint64_t doff = lho + LOCAL_SIZE + ln + lm;
        if (!span_ok(lho + LOCAL_SIZE, ln, size) || ln != n || memcmp(data + lho + LOCAL_SIZE, name, n) != 0) {
            st = nx__error(NX_ERR_FORMAT, "%s: member '%s': local header name does not match the central "
                           "directory", path, ent->name);
            goto fail;
        }
        if (!span_ok(doff, usize, size)) {
            st = nx__error(NX_ERR_FORMAT, "%s: member '%s' (%llu bytes at offset %llu) lies outside the file "
                           "(%zu bytes); the file is truncated or corrupt", path, ent->name,
                           (unsigned long long)usize, (unsigned long long)doff, size);
            goto fail;
        }
        ent->data = data + doff;
        ent->size = usize;
        z->sorted[i] = ent;
        p += CDIR_SIZE + n + m + k;
    }
    qsort(z->sorted, z->n, sizeof *z->sorted, cmp_names);
    for (size_t i = 1; i < z->n; i++) {
        if (strcmp(z->sorted[i - 1]->name, z->sorted[i]->name) == 0) {
            st = nx__error(NX_ERR_FORMAT, "%s: member '%s' appears twice", path, z->sorted[i]->name);
            goto fail;
        }
    }
    return NX_OK;
fail:
    nx__zip_free(z);
    return st;
}

void nx__zip_free(nx_zip *z) {
    if (!z) return;
    for (size_t i = 0; i < z->n; i++) nx__free(z->entries[i].name);
    nx__free(z->entries);
    nx__free(z->sorted);
    memset(z, 0, sizeof *z);
}

const nx_zip_entry *nx__zip_find(const nx_zip *z, const char *name) {
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const nx_zip_entry *e = z->sorted[mid];
        int c = strcmp(name, e->name);
        if (c == 0) return e;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}
