/*
 * neox/train.h - training GPT-NeoX models in fp32 (optionally with bf16 matmul operands):
 * the model with its hand-written backward pass, AdamW, the GPT-NeoX LR schedule, gradient
 * clipping, and the trainer that runs a GPT-NeoX-style JSON config with checkpoints and
 * exact resume.
 *
 * Two levels:
 *   - nx_tmodel: parameters, gradients, optimizer state and one activation arena sized
 *     from (B, T, config) at creation; nothing is allocated per step. Results are
 *     bit-identical run to run and for any thread count (static splits, fixed
 *     reduction order).
 *   - nx_trainer: a whole run from a JSON config (docs/TRAINING.md): data, schedule,
 *     checkpoints (HF model directories + optimizer/RNG/data state), metrics.jsonl.
 * Depends on neox/core.h and neox/io.h.
 */
#ifndef NEOX_TRAIN_H
#define NEOX_TRAIN_H

#include "neox/core.h"
#include "neox/io.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- model ----------------------------------------------------------------- */

/* Weight init as GPT-NeoX defines it (megatron/model/init_functions.py):
 * NORMAL: N(0, std); SMALL: N(0, sqrt(2 / (5 H))); WANG: N(0, 2 / (L sqrt(H))). */
typedef enum nx_init_method { NX_INIT_NORMAL = 0, NX_INIT_SMALL = 1, NX_INIT_WANG = 2 } nx_init_method;

typedef struct nx_tmodel nx_tmodel;

/* Creates a trainable GPT-NeoX model for micro batches of B sequences of T tokens.
 * Only cfg->arch == NX_ARCH_GPT_NEOX is accepted. Allocates parameters (zeroed),
 * gradients, AdamW moments and the activation arena. Caller owns *out (nx_tmodel_free). */
NX_API nx_status nx_tmodel_create(const nx_model_config *cfg, int B, int T, nx_tmodel **out);
NX_API void nx_tmodel_free(nx_tmodel *m);   /* NULL is fine */

/* Initializes weights: input embedding, query_key_value, dense_h_to_4h and embed_out use
 * `init`; attention.dense and dense_4h_to_h use `output_init`; biases 0, LayerNorm 1/0.
 * Deterministic in seed. `std` is the NORMAL method's std (init_method_std). */
NX_API void nx_tmodel_init(nx_tmodel *m, nx_init_method init, nx_init_method output_init, float std,
                           uint64_t seed);

/* Parameters, in HF state_dict order and naming ("gpt_neox.layers.0.attention.dense.weight").
 * Pointers are borrowed from m and valid until nx_tmodel_free; writing through
 * nx_tmodel_param_data changes the master weights. */
typedef struct nx_tparam_info {
    const char *name;
    int ndim;
    int64_t shape[2];
    size_t numel;
    bool decay;          /* weight decay applies (not biases, not LayerNorm) */
} nx_tparam_info;
NX_API size_t nx_tmodel_num_tensors(const nx_tmodel *m);
NX_API const nx_tparam_info *nx_tmodel_tensor(const nx_tmodel *m, size_t i);
NX_API long nx_tmodel_find(const nx_tmodel *m, const char *name);   /* index or -1 */
NX_API float *nx_tmodel_param_data(nx_tmodel *m, size_t i);
NX_API const float *nx_tmodel_grad_data(const nx_tmodel *m, size_t i);
NX_API size_t nx_tmodel_num_params(const nx_tmodel *m);
/* The model config the trainer was created with (borrowed). */
NX_API const nx_model_config *nx_tmodel_config(const nx_tmodel *m);

/* Selects the scalar reference matmul (the oracle) instead of the SIMD one. */
NX_API void nx_tmodel_use_reference(nx_tmodel *m, bool on);

/* bf16 mixed precision with fp32 accumulation: every matmul of the forward and backward
 * pass (linear layers, LM head, both attention products) reads its operands - activations,
 * weights, output gradients - rounded to bfloat16 (nearest even) and sums in fp32; master
 * weights, gradient accumulation, LayerNorm, softmax, the loss and AdamW stay fp32.
 * Costs one extra fp32 copy of the parameters. Off by default; NX_ERR_NOMEM on failure. */
NX_API nx_status nx_tmodel_set_bf16(nx_tmodel *m, bool on);
NX_API bool nx_tmodel_bf16(const nx_tmodel *m);

NX_API void nx_tmodel_zero_grad(nx_tmodel *m);

/* Forward + backward on one micro batch. tokens, targets: B*T ids each (a target < 0 is
 * ignored). Gradients are ADDED to the accumulated ones, scaled by grad_scale
 * (1 / accumulation steps), so the gradient is that of grad_scale * mean token loss.
 * *loss receives the mean cross-entropy over the counted targets. pool may be NULL. */
NX_API nx_status nx_tmodel_forward_backward(nx_tmodel *m, nx_pool *pool, const int32_t *tokens,
                                            const int32_t *targets, float grad_scale, float *loss);
/* Forward only (validation): mean loss over the counted targets. */
NX_API nx_status nx_tmodel_forward(nx_tmodel *m, nx_pool *pool, const int32_t *tokens,
                                   const int32_t *targets, float *loss);

/* ---- optimizer ----------------------------------------------------------------- */
typedef struct nx_adamw_config {
    double beta1, beta2, eps;
    double weight_decay;     /* decoupled (AdamW); skipped for parameters with decay == false */
    double clip_grad;        /* global L2 norm clip; <= 0 disables */
} nx_adamw_config;

/* One optimizer step with learning rate lr: clips the accumulated gradients by global
 * norm (torch clip_grad_norm_: coef = clip / (norm + 1e-6), capped at 1), then AdamW
 * exactly as torch.optim.AdamW computes it. *grad_norm gets the pre-clip norm. Does not
 * zero the gradients. Returns NX_ERR_RANGE (weights untouched) on a non-finite norm. */
NX_API nx_status nx_tmodel_adamw_step(nx_tmodel *m, nx_pool *pool, const nx_adamw_config *opt, double lr,
                                      float *grad_norm);
/* Number of optimizer steps taken so far (AdamW's t). */
NX_API long nx_tmodel_step_count(const nx_tmodel *m);

/* GPT-NeoX LR schedule for optimizer step `it` (1-based): linear warmup
 * lr * it / warmup for it <= warmup, then cosine (or constant/linear) from lr to min_lr
 * over the remaining iterations, min_lr after train_iters. */
typedef enum nx_lr_decay { NX_LR_COSINE = 0, NX_LR_LINEAR = 1, NX_LR_CONSTANT = 2 } nx_lr_decay;
typedef struct nx_lr_schedule {
    double lr, min_lr;
    long warmup_iters, train_iters;
    nx_lr_decay decay;
} nx_lr_schedule;
NX_API double nx_lr_at(const nx_lr_schedule *s, long it);

/* ---- trainer ------------------------------------------------------------------ */
#define NX_TRAIN_MAX_DATA 16

typedef struct nx_train_data {
    char path[1024];    /* raw token file, or indexed dataset prefix (see docs/TRAINING.md) */
    double weight;
} nx_train_data;

typedef enum nx_data_format {
    NX_DATA_RAW = 0,       /* raw little-endian token ids; our own seeded order */
    NX_DATA_INDEXED = 1    /* GPT-NeoX/Megatron .bin/.idx, GPT-NeoX's exact sample order */
} nx_data_format;

/* Everything a run needs; filled from the JSON config (nx_train_config_load) or by hand. */
typedef struct nx_train_config {
    nx_model_config model;
    int seq_length;             /* T */
    int micro_batch;            /* B per micro step */
    int grad_accum;             /* micro steps per optimizer step */
    int global_batch;           /* micro_batch * grad_accum (single process) */
    long train_iters;
    nx_lr_schedule lr;
    nx_adamw_config adamw;
    nx_init_method init, output_init;
    float init_std;
    uint64_t seed;
    int n_train, n_valid;
    nx_train_data train[NX_TRAIN_MAX_DATA], valid[NX_TRAIN_MAX_DATA];
    nx_data_format data_format;
    bool preshuffled;           /* indexed: item i is sample i (Pythia's preshuffled files) */
    int token_bytes;            /* raw: 2 (uint16) or 4 (uint32) */
    long eval_interval, eval_iters;
    long checkpoint_every;      /* linear schedule after the log-spaced steps (Pythia: 1000) */
    bool checkpoint_log_steps;  /* also 0, 1, 2, 4, ..., 512 (default true) */
    long log_interval;
    char out_dir[1024];
    char tokenizer_dir[1024];   /* copied into each checkpoint when set */
    int threads;                /* <= 0: all CPUs */
    int zero_stage;             /* 0, or 1: AdamW state sharded across ranks (docs/DISTRIBUTED.md) */
    bool overlap_comm;          /* send gradient slices during the backward pass (default false) */
    bool bf16;                  /* bf16 matmul operands, fp32 accumulation (nx_tmodel_set_bf16) */
} nx_train_config;

/* Parses a GPT-NeoX-style training config (keys in docs/TRAINING.md). Relative data and
 * output paths are resolved against the config file's directory. */
NX_API nx_status nx_train_config_load(const char *path, nx_train_config *out);
NX_API nx_status nx_train_config_parse(const char *json, size_t len, const char *name, const char *base_dir,
                                       nx_train_config *out);

typedef struct nx_trainer nx_trainer;

/* Per-step figures (also appended to OUT/metrics.jsonl). */
typedef struct nx_train_metrics {
    long step;            /* optimizer steps done */
    float loss;           /* mean over the global batch */
    float lr;
    float grad_norm;
    double tokens_per_s;
    double elapsed_s;
    bool has_val;
    float val_loss;
    bool saved;           /* a checkpoint was written after this step */
} nx_train_metrics;

/* Creates a run. With resume, loads the latest complete checkpoint in out_dir (error if
 * none, or if it is corrupt or was made by a different model/batch/data config; nothing
 * is written then). Without resume, out_dir must not already hold checkpoints. The config
 * is copied. Caller owns *out. */
NX_API nx_status nx_trainer_create(const nx_train_config *cfg, bool resume, nx_trainer **out);
NX_API void nx_trainer_free(nx_trainer *t);
/* Runs one optimizer step (and the evaluation / checkpoint it is due). Returns
 * NX_ERR_STATE when train_iters are done. */
NX_API nx_status nx_trainer_step(nx_trainer *t, nx_train_metrics *out);
NX_API long nx_trainer_iter(const nx_trainer *t);
NX_API nx_tmodel *nx_trainer_model(nx_trainer *t);
/* True when a checkpoint is due after step `step` under this config. */
NX_API bool nx_train_checkpoint_due(const nx_train_config *cfg, long step);

#ifdef __cplusplus
}
#endif
#endif /* NEOX_TRAIN_H */
