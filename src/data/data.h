/*
 * data/data.h - private header of the data layer (indexed datasets, sample order, corpus
 * tools). Implements include/neox/data.h. May include core, io and tokenizer headers.
 */
#ifndef NX_DATA_INTERNAL_H
#define NX_DATA_INTERNAL_H

#include "core/core.h"
#include "neox/data.h"

/* Bytes per token of a Megatron dtype code; 0 for an unknown code. */
size_t nx__idx_itemsize(int code);
/* PREFIX + ext (".idx"/".bin"), replacing a trailing .idx/.bin; caller frees (nx__free). */
char *nx__idx_path(const char *prefix, const char *ext);
/* Widens count tokens of a dtype code from unaligned bytes to int32. */
nx_status nx__idx_convert(int code, const uint8_t *src, uint64_t count, int32_t *dst);
int nx__indexed_code(const nx_indexed *ds);
/* Validates and wraps an in-memory .idx/.bin pair (borrowed; must outlive *out). For fuzzing. */
nx_status nx__indexed_open_mem(const void *idx, size_t idx_len, const void *bin, size_t bin_len, nx_indexed **out);

#endif
