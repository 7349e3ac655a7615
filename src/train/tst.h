/*
 * tst.h - safetensors read/write for training checkpoints and test fixtures (tst.c).
 * Depends on core and neox/io.h (nx_tensor_write).
 */
#ifndef NX_TRAIN_TST_H
#define NX_TRAIN_TST_H

#include "core/core.h"
#include "neox/io.h"

typedef struct nx_tst_tensor {
    char *name;
    nx_dtype dtype;
    int ndim;
    int64_t shape[NX_MAX_DIMS];
    const void *data;    /* into the mapping, valid until nx__tst_close */
    size_t nbytes;
} nx_tst_tensor;

typedef struct nx_tst_file {
    nx_mapped_file mf;
    size_t n;
    nx_tst_tensor *t;
    char *format;        /* __metadata__.format or NULL */
} nx_tst_file;

/* Maps and validates a .safetensors file; *f is zeroed on failure. Close with nx__tst_close. */
nx_status nx__tst_open(const char *path, nx_tst_file *f);
void nx__tst_close(nx_tst_file *f);   /* fine on a zeroed struct */
const nx_tst_tensor *nx__tst_find(const nx_tst_file *f, const char *name);
/* Copies an F32 tensor of exactly numel elements into dst. */
nx_status nx__tst_get_f32(const nx_tst_file *f, const char *name, float *dst, size_t numel);
/* Writes tensors (F32/F64/I32/I64/U8) atomically; meta_kv: n_meta key/value pairs. */
nx_status nx__tst_write(const char *path, const nx_tensor_write *ts, size_t n, const char *const *meta_kv,
                        size_t n_meta);

#endif
