/*
 * train_internal.h - private interfaces of the train layer: the training matmul, the model
 * internals the trainer needs (flat parameter/optimizer buffers for checkpoints), and
 * small hashing/RNG helpers. Depends on core and the public neox/train.h.
 */
#ifndef NX_TRAIN_INTERNAL_H
#define NX_TRAIN_INTERNAL_H

#include "core/core.h"
#include "neox/train.h"

/* ---- matmul ------------------------------------------------------------------ */
/* C[M,N] (+)= sum_k A(i,k) * B[k*ldb + j], with A(i,k) = A[i*sam + k*sak] (any strides, so
 * the three products of a linear layer need no transposed copies of activations):
 *   forward      out  = inp · Wᵀ   : A = inp,  B = Wᵀ (a transposed weight copy)
 *   input grad   dinp = dout · W   : A = dout, B = W
 *   weight grad  dW  += doutᵀ · inp: A(i,k) = dout[k*OC + i], B = inp
 * accumulate == 0 overwrites C (adding bias[j] when bias != NULL); otherwise adds to C.
 * Each C element is summed in an order fixed by the shape (k blocks of NX_TGEMM_KC, or for
 * large products one chain; k ascending, one fused multiply-add per term) whatever the
 * thread count or tile, so results are bit-identical for 1 or N threads. With reference = true a plain triple loop (no blocking,
 * no SIMD) is used instead: the oracle that the fast path is tested against. */
typedef struct nx_tgemm_args {
    int M, N, K;
    const float *A;
    long sam, sak;
    const float *B;
    long ldb;
    float *C;
    long ldc;
    int accumulate;
    const float *bias;
} nx_tgemm_args;

void nx__tgemm(nx_pool *pool, const nx_tgemm_args *a, bool reference);
/* Which kernel nx__tgemm uses here: "avx512", "avx2" or "scalar". */
const char *nx__tgemm_isa(void);
/* Transposes src[rows, cols] into dst[cols, rows] (threaded, exact). */
void nx__transpose(nx_pool *pool, const float *src, float *dst, int rows, int cols);

/* ---- model internals for checkpoints ---------------------------------------- */
/* Flat fp32 buffers of n = nx_tmodel_num_params floats each, in tensor order. */
/* Floats in each flat buffer (tensor sizes rounded up to 16 for alignment; gaps stay 0). */
size_t nx__tmodel_flat_size(const nx_tmodel *m);
/* Offset in floats of tensor i inside the flat buffers. */
size_t nx__tmodel_offset(const nx_tmodel *m, size_t i);
float *nx__tmodel_params(nx_tmodel *m);
/* The model's full AdamW moments, created (zeroed) on first use; NULL with the error
 * recorded on OOM. A ZeRO run keeps its shard of them outside the model instead. */
float *nx__tmodel_adam_m(nx_tmodel *m);
float *nx__tmodel_adam_v(nx_tmodel *m);
void nx__tmodel_set_step_count(nx_tmodel *m, long t);
/* Must be called after weights are changed behind the model's back (load, resume). */
void nx__tmodel_weights_changed(nx_tmodel *m);

/* Makes g (nx__tmodel_flat_size floats, 64-byte aligned) the buffer that backward passes
 * accumulate into and nx_tmodel_adamw_step reads; returns the previous one. The caller
 * keeps ownership of g and must swap the model's own buffer back before nx_tmodel_free.
 * Lets the trainer give each micro batch its own gradient buffer (dist.h). */
float *nx__tmodel_swap_grads(nx_tmodel *m, float *g);

/* ---- optimizer in pieces (sharded optimizer state, dist.h) ----------------------- */
/* The gradient norm is sqrt of the serial sum, in chunk order, of double sums of squares
 * over fixed chunks of NX_NORM_CHUNK floats of the flat gradient; any split of the chunks
 * over threads or processes gives the same bits. */
#define NX_NORM_CHUNK 16384
/* partials[c] = sum of squares of gradient chunk c, for c in [c0, c1). */
void nx__tmodel_grad_sumsq(nx_tmodel *m, nx_pool *pool, long c0, long c1, double *partials);
/* The factor nx_tmodel_adamw_step scales gradients by for a given norm (1 = no clipping). */
float nx__adamw_clip_coef(const nx_adamw_config *opt, float norm);
/* One AdamW step (step count + 1) of params[lo, hi) only, from the current gradient times
 * clip_coef, with the moments of flat element i at am[i - lo], av[i - lo] (caller-owned).
 * nx_tmodel_adamw_step is the norm plus this over [0, flat size) with the model's moments. */
void nx__tmodel_adamw_update(nx_tmodel *m, nx_pool *pool, const nx_adamw_config *opt, double lr, float clip_coef,
                             size_t lo, size_t hi, float *am, float *av);

/* Called from nx_tmodel_forward_backward each time the gradients of every flat position
 * >= lo are complete for this pass (lo decreases: the final LayerNorm and output head, each
 * layer from the last, then 0 after the embedding). Lets the gradient exchange start during
 * the backward pass. fn = NULL removes the hook; ctx is borrowed. */
typedef void (*nx_grad_ready_fn)(void *ctx, size_t lo);
void nx__tmodel_set_grad_hook(nx_tmodel *m, nx_grad_ready_fn fn, void *ctx);

/* ---- bf16 compute ------------------------------------------------------------- */
/* Round to nearest even bfloat16, kept as the fp32 value it represents (torch's
 * x.bfloat16().float()): add half an ulp of the 16 dropped bits, plus one when the kept
 * part is odd, then truncate. Infinities stay; NaNs are returned unchanged (the carry could
 * turn a NaN payload into infinity). Overflow past bf16's largest value gives infinity, as
 * in torch. */
static inline float nx__bf16_round(float x) {
    uint32_t u, r;
    memcpy(&u, &x, 4);
    r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    r = (u & 0x7fffffffu) > 0x7f800000u ? u : r;   /* a select, so the loops vectorise */
    memcpy(&x, &r, 4);
    return x;
}

/* ---- config ------------------------------------------------------------------ */
/* Parses HF config.json text of a gpt_neox model (all rotary spellings accepted). */
nx_status nx__train_parse_model(const char *json, size_t len, const char *name, nx_model_config *out);

/* ---- helpers -------------------------------------------------------------------- */
/* FNV-1a 64 over bytes, continuing from h (start with NX_FNV_INIT). */
#define NX_FNV_INIT 0xcbf29ce484222325ull
uint64_t nx__fnv1a(uint64_t h, const void *data, size_t n);

/* xoshiro256** seeded by splitmix64: deterministic, serializable (4 words). */
typedef struct nx_rng { uint64_t s[4]; } nx_rng;
void nx__rng_seed(nx_rng *r, uint64_t seed);
uint64_t nx__rng_next(nx_rng *r);
double nx__rng_uniform(nx_rng *r);     /* [0, 1) with 53 bits */
double nx__rng_normal(nx_rng *r);      /* Box-Muller, no cached spare (state is only s[]) */

#endif
