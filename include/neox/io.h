/*
 * neox/io.h - checkpoint I/O: tensor sets (a checkpoint's named tensors, from
 * safetensors or PyTorch .bin, single file or sharded) and model configs (config.json).
 */
#ifndef NEOX_IO_H
#define NEOX_IO_H

#include "neox/core.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NX_MAX_DIMS 8

/* One tensor of a checkpoint. All pointers are borrowed from the owning nx_tensorset and
 * stay valid until nx_tensorset_free. `data` points into a read-only file mapping
 * (zero-copy) or into a buffer the set owns; it is contiguous, C order, little-endian. */
typedef struct nx_tensor_info {
    const char *name;
    nx_dtype dtype;
    int ndim;
    int64_t shape[NX_MAX_DIMS];
    const void *data;
    size_t nbytes;
    const char *file;      /* the file it came from, for messages */
} nx_tensor_info;

typedef struct nx_tensorset nx_tensorset;

/* Opens a checkpoint: a .safetensors file, a model.safetensors.index.json, a
 * pytorch_model.bin (torch zip format), a pytorch_model.bin.index.json, or a model
 * directory holding one of these (safetensors preferred, as HF from_pretrained does).
 * On success *out is owned by the caller (nx_tensorset_free). */
NX_API nx_status nx_tensorset_open(const char *path, nx_tensorset **out);
NX_API void nx_tensorset_free(nx_tensorset *ts);                 /* NULL is fine */
NX_API size_t nx_tensorset_count(const nx_tensorset *ts);
NX_API const nx_tensor_info *nx_tensorset_at(const nx_tensorset *ts, size_t i);
/* NULL when absent. */
NX_API const nx_tensor_info *nx_tensorset_find(const nx_tensorset *ts, const char *name);
/* "__metadata__" value of the first file that has the key, or NULL. Borrowed. */
NX_API const char *nx_tensorset_metadata(const nx_tensorset *ts, const char *key);
/* Element count of a tensor (product of its shape). */
NX_API size_t nx_tensor_numel(const nx_tensor_info *t);
/* Converts a tensor of any float dtype (F32, F16, BF16, F64, F8_E5M2, F8_E4M3 = torch
 * float8_e4m3fn) to f32 into dst (numel floats). Other dtypes: NX_ERR_UNSUPPORTED. */
NX_API nx_status nx_tensor_to_f32(const nx_tensor_info *t, float *dst);

/* ---- safetensors writer ------------------------------------------------------ */
/* A tensor to write; data is borrowed for the duration of the call. */
typedef struct nx_tensor_write {
    const char *name;
    nx_dtype dtype;
    int ndim;
    int64_t shape[NX_MAX_DIMS];
    const void *data;
} nx_tensor_write;

/* Writes a .safetensors file that the Python safetensors package and HF transformers
 * load (header padded to 8 bytes, tensors ordered as the reference writer does: dtype
 * width descending, then name; byte-identical to safetensors.torch.save_file for a
 * one-key metadata map). Tensor data is copied from the borrowed pointers during the call.
 * meta_kv: NULL or n_meta key/value string pairs {k0, v0, k1, v1, ...} for "__metadata__",
 * written in this order. Nothing is added implicitly: HF transformers' from_pretrained
 * expects {"format", "pt"}, so pass it for checkpoints meant for transformers.
 * Fails without writing on duplicate names, the name "__metadata__", non-UTF-8 strings,
 * dtypes safetensors cannot hold (Q8_0, Q4_0) or negative dims.
 * Atomic: temporary file, fsync, rename; on failure no file is left behind. */
NX_API nx_status nx_safetensors_write(const char *path, const nx_tensor_write *tensors, size_t n,
                                      const char *const *meta_kv, size_t n_meta);

/* ---- model config (config.json) ------------------------------------------------ */
typedef enum nx_arch { NX_ARCH_GPT_NEOX = 0, NX_ARCH_GPTJ = 1, NX_ARCH_GPT_NEO = 2 } nx_arch;
typedef enum nx_act {
    NX_ACT_GELU = 0,       /* exact erf GELU ("gelu") */
    NX_ACT_GELU_TANH,      /* tanh approximation ("gelu_new", "gelu_pytorch_tanh") */
    NX_ACT_GELU_FAST,      /* "gelu_fast" */
    NX_ACT_RELU,
    NX_ACT_SILU,           /* "silu", "swish" */
    NX_ACT_QUICK_GELU      /* "quick_gelu": x * sigmoid(1.702 x) */
} nx_act;

#define NX_MAX_LAYERS 512

/* One validated hyperparameter struct for all three architectures; defaults are those of
 * the HF config classes (docs/ARCHITECTURES.md). */
typedef struct nx_model_config {
    nx_arch arch;
    char model_type[32];        /* "gpt_neox", "gptj", "gpt_neo" */
    int vocab_size;             /* embedding rows (may exceed the tokenizer) */
    int hidden_size;            /* H */
    int n_layer;
    int n_head;                 /* NH */
    int head_dim;               /* HS = H / NH */
    int intermediate_size;      /* MLP inner size */
    int max_position_embeddings;
    int rotary_dim;             /* rotated dims per head (0 = no rotary: GPT-Neo) */
    float rotary_pct;           /* NeoX: fraction of the head rotated */
    float rope_theta;           /* rotary base */
    int rope_scaling_type;      /* 0 none, 1 linear, 2 dynamic */
    float rope_scaling_factor;
    float layer_norm_eps;
    nx_act act;
    bool parallel_residual;     /* NeoX use_parallel_residual; GPT-J always parallel (shared LN) */
    bool tie_word_embeddings;
    bool attention_bias;        /* NeoX: bias on query_key_value and dense */
    bool rotary_interleaved;    /* GPT-J rotate_every_two (true) vs NeoX rotate_half (false) */
    bool scale_attn;            /* 1/sqrt(HS) on scores (false for GPT-Neo) */
    int window_size;            /* GPT-Neo local attention window */
    uint8_t layer_is_local[NX_MAX_LAYERS]; /* GPT-Neo: 1 for "local" layers */
    int bos_token_id, eos_token_id;        /* -1 when absent */
    nx_dtype torch_dtype;       /* config's torch_dtype / dtype, NX_DTYPE_INVALID if absent */
} nx_model_config;

/* Parses config.json text. `name` is used in error messages (usually the file path). */
NX_API nx_status nx_config_parse(const char *json, size_t len, const char *name, nx_model_config *out);
/* Loads DIR/config.json (or a config.json path). */
NX_API nx_status nx_config_load(const char *path, nx_model_config *out);
NX_API const char *nx_arch_name(nx_arch arch);
NX_API const char *nx_act_name(nx_act act);

#ifdef __cplusplus
}
#endif
#endif /* NEOX_IO_H */
