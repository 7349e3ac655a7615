/*
 * io.h - private interface of the io layer: building tensor sets from the format readers
 * (safetensors.c, torchbin.c) and the checkpoint-directory dispatcher (checkpoint.c).
 * Depends on core.
 */
#ifndef NX_IO_INTERNAL_H
#define NX_IO_INTERNAL_H

#include "core/core.h"
#include "neox/io.h"

/* Creates an empty set. */
nx_tensorset *nx__tensorset_new(void);
/* Keeps a file mapping alive for the set's lifetime (the set takes ownership of *mf,
 * and zeroes it). Returns a pointer to the stored mapping. */
nx_status nx__tensorset_adopt_mapping(nx_tensorset *ts, nx_mapped_file *mf, const nx_mapped_file **stored);
/* Keeps a heap buffer (nx__free'd with the set). */
nx_status nx__tensorset_adopt_buffer(nx_tensorset *ts, void *buf);
/* Drops the set's file-mapped pages that lie wholly inside [p, p + n) from this process's
 * resident memory (a tensor converted at load is not read again; the page cache keeps the
 * file, so a later read would fault the pages back in). Ranges outside the mappings (heap
 * buffers) are left alone. */
void nx__tensorset_release(const nx_tensorset *ts, const void *p, size_t n);
/* The n mapped bytes at p will be read in full on every use (weights used in place): asks for
 * them in huge pages (nx__map_advise_huge). */
void nx__tensorset_stream(const nx_tensorset *ts, const void *p, size_t n);
/* Adds a tensor; name and file are copied. Fails with NX_ERR_FORMAT on a duplicate name. */
nx_status nx__tensorset_add(nx_tensorset *ts, const nx_tensor_info *t);
/* Records a "__metadata__" pair (copied). */
nx_status nx__tensorset_add_metadata(nx_tensorset *ts, const char *key, const char *value);

/* Format readers append to an existing set. */
nx_status nx__safetensors_read_into(nx_tensorset *ts, const char *path);
nx_status nx__torchbin_read_into(nx_tensorset *ts, const char *path);

/* Validates a safetensors header/buffer in memory (used by the reader and the fuzzer).
 * `data` is the whole file. */
nx_status nx__safetensors_parse(nx_tensorset *ts, const uint8_t *data, size_t size, const char *path);

#endif
