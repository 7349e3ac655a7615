/*
 * torchbin.h - private interface of the PyTorch .bin (torch.save zip format) reader.
 * nx__torchbin_read_into (declared in io.h) maps a file and calls nx__torchbin_parse;
 * the fuzzer calls nx__torchbin_parse on memory. Depends on core and io.h.
 */
#ifndef NX_IO_TORCHBIN_H
#define NX_IO_TORCHBIN_H

#include "io.h"

/* Parses a torch.save archive held in data[0..size) and appends its tensors to ts.
 * Tensors that are contiguous, aligned and little-endian point into `data` (which must
 * outlive ts); others are copied into buffers owned by ts. `path` names the file in
 * messages and in each tensor's `file`. On failure ts may hold some of the file's tensors;
 * callers free it. */
nx_status nx__torchbin_parse(nx_tensorset *ts, const uint8_t *data, size_t size, const char *path);

#endif
