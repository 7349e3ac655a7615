/*
 * zip.h - private interface of the read-only ZIP reader used for PyTorch checkpoints.
 * Only what torch.save writes is accepted: a single-disk archive whose members are STORED
 * (uncompressed), with or without ZIP64 structures. Member data are zero-copy pointers into
 * the caller's buffer (normally a file mapping). Depends on core.
 */
#ifndef NX_IO_ZIP_H
#define NX_IO_ZIP_H

#include "core/core.h"

typedef struct nx_zip_entry {
    char *name;              /* NUL-terminated copy (owned by the nx_zip) */
    const uint8_t *data;     /* points into the archive buffer */
    uint64_t size;           /* uncompressed == stored size */
} nx_zip_entry;

typedef struct nx_zip {
    nx_zip_entry *entries;   /* in central-directory order */
    size_t n;
    const nx_zip_entry **sorted;   /* entries sorted by name, for lookup */
} nx_zip;

/* Parses the central directory of the archive in data[0..size). `path` names the file in
 * messages. Every member is checked to lie inside the buffer, to be STORED and unencrypted,
 * and names must be non-empty, NUL-free and unique. On failure *z is left empty.
 * The buffer must outlive *z. */
nx_status nx__zip_open(nx_zip *z, const uint8_t *data, size_t size, const char *path);
/* Releases the entry table; fine on a zeroed struct. */
void nx__zip_free(nx_zip *z);
/* The member with exactly this name, or NULL. Borrowed from *z. */
const nx_zip_entry *nx__zip_find(const nx_zip *z, const char *name);

#endif
