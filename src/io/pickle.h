/*
 * pickle.h - private interface of the safe unpickler for PyTorch checkpoints (data.pkl).
 *
 * The unpickler is a data-only interpreter: it understands the opcodes a torch.save
 * state_dict uses (protocols 2-5) and "calls" only a fixed whitelist of globals, each of
 * which it evaluates itself (OrderedDict() makes an empty dict, _rebuild_tensor_v2(...)
 * makes a tensor descriptor, ...). Any other global is refused when it is named, before
 * anything could use it, so loading never executes code. Depends on core.
 */
#ifndef NX_IO_PICKLE_H
#define NX_IO_PICKLE_H

#include "core/core.h"
#include "neox/io.h"

typedef enum nx_pk_kind {
    NX_PK_NONE, NX_PK_BOOL, NX_PK_INT, NX_PK_FLOAT, NX_PK_STR, NX_PK_BYTES,
    NX_PK_TUPLE, NX_PK_LIST, NX_PK_DICT,
    NX_PK_GLOBAL,     /* a whitelisted global (callable, storage class or dtype) */
    NX_PK_STORAGE,    /* a persistent-id storage reference */
    NX_PK_TENSOR      /* result of _rebuild_tensor_v2/_v3 (or _rebuild_parameter) */
} nx_pk_kind;

typedef enum nx_pk_global {
    NX_PKG_ORDERED_DICT, NX_PKG_REBUILD_V2, NX_PKG_REBUILD_V3, NX_PKG_REBUILD_PARAM,
    NX_PKG_REBUILD_PARAM_STATE, NX_PKG_CODECS_ENCODE,
    NX_PKG_STORAGE_CLASS,   /* torch.FloatStorage, ..., torch.UntypedStorage (dtype U8) */
    NX_PKG_DTYPE            /* torch.float16, ... */
} nx_pk_global;

typedef struct nx_pk nx_pk;

/* A tensor: a view of a storage. Offset, sizes and strides are in elements of dtype;
 * bounds against the storage are checked by the caller, which knows the storage's bytes. */
typedef struct nx_pk_view {
    nx_pk *storage;
    int64_t offset;
    int ndim;
    int64_t size[NX_MAX_DIMS], stride[NX_MAX_DIMS];
} nx_pk_view;

struct nx_pk {
    nx_pk_kind kind;
    nx_pk_global global;       /* GLOBAL */
    nx_dtype dtype;            /* GLOBAL storage class/dtype, STORAGE, TENSOR */
    int64_t i;                 /* INT, BOOL */
    double f;                  /* FLOAT */
    const char *s;             /* STR (UTF-8), BYTES, STORAGE key; not NUL-terminated */
    size_t len;
    nx_pk **items;             /* TUPLE, LIST; DICT as key,value,key,value... */
    size_t n, cap;             /* items in use (DICT: 2 x pairs) */
    /* STORAGE: element count of the storage dtype (numel x dtype size = bytes) */
    uint64_t numel;
    const uint8_t *data;       /* STORAGE: resolved by the caller (torchbin.c) */
    nx_pk_view *view;          /* TENSOR (kept out of line: most nodes are not tensors) */
    nx_pk *next_alloc;         /* arena chain */
    void *owned;               /* heap bytes owned by this node (decoded strings, view) */
};

typedef struct nx_pickle nx_pickle;

/* Interprets a pickle stream. `what` names it in messages ("model.bin: data.pkl").
 * On success *out owns every node (free with nx__pickle_free) and *root is the unpickled
 * object; string nodes point into `data`, which must outlive *out. */
nx_status nx__pickle_load(const uint8_t *data, size_t size, const char *what, nx_pickle **out, nx_pk **root);
void nx__pickle_free(nx_pickle *pk);   /* NULL is fine */

#endif
