/*
 * kernels.h - the compute kernels of the forward pass, fp32.
 *
 * Every op has a readable scalar reference (`_ref`, ref.c) that is the oracle for the fast paths.
 * The hot ops (the matrix product used by every linear layer, and the dot/axpy pair used by
 * attention) also have AVX2+FMA and AVX-512 variants (x86.c), compiled with
 * __attribute__((target)) so one portable binary picks the best one at run time from CPUID
 * (dispatch.c). Setting NX_KERNELS=ref|avx2|avx512 in the environment forces a variant.
 *
 * Weight layout of the fast matmul ("packed"): nn.Linear's W[OUT][IN] is stored as panels of
 * NX_PANEL = 16 output rows, Wp[OUT/16][IN][16] (the last panel zero-padded), so one vector
 * load gives 16 outputs' weights for one input k and the product is a sum of outer products:
 * no horizontal reductions, and a register tile of tokens x panels reuses each loaded weight
 * vector for every token of the tile (prefill) or streams each weight exactly once (decode).
 *
 * Invariant: each output element is accumulated over k = 0..IN-1 in order by one accumulator
 * lane, whatever tile it falls in, the token count and the thread count, so prefill and
 * token-by-token decoding produce bit-identical rows, and 1 and N threads agree exactly.
 *
 * Shapes: T tokens, IN/OUT features; y[T][OUT] = x[T][IN]·Wᵀ + b.
 * Depends on core only.
 */
#ifndef NX_KERNELS_H
#define NX_KERNELS_H

#include "core/core.h"

/* Activations (same values as nx_act in neox/io.h; the models layer maps them). */
typedef enum nx_kact {
    NX_KACT_GELU = 0,      /* 0.5·x·(1 + erf(x/√2)) */
    NX_KACT_GELU_TANH,     /* 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) */
    NX_KACT_GELU_FAST,     /* 0.5·x·(1 + tanh(0.7978845608·x·(1 + 0.044715·x²))) */
    NX_KACT_RELU,
    NX_KACT_SILU,          /* x·sigmoid(x) */
    NX_KACT_QUICK_GELU     /* x·sigmoid(1.702·x) */
} nx_kact;

/* ---- scalar references (ref.c) ------------------------------------------------------- */
/* y[T][OUT] = x[T][IN] · W[OUT][IN]ᵀ + b[OUT] (b may be NULL). fp32 accumulation in index order. */
void nx__matmul_ref(float *y, const float *x, const float *W, const float *b, int T, int IN, int OUT);
/* y[T][C] = LayerNorm(x) · w + b over C, biased variance (torch nn.LayerNorm). y may alias x. */
void nx__layernorm_ref(float *y, const float *x, const float *w, const float *b, int T, int C, float eps);
/* In-place activation of n values. */
void nx__act_ref(float *x, size_t n, nx_kact act);
/* In-place softmax of n values (max-subtracted). */
void nx__softmax_ref(float *x, int n);
/* Rotates the first `rot` dims of one head vector at the angles whose cos/sin are given
 * (rot/2 values each). interleaved: GPT-J pairs (2j, 2j+1); otherwise NeoX pairs (j, j+rot/2). */
void nx__rotary_ref(float *x, int rot, const float *cos, const float *sin, int interleaved);
/* One query against keys k0..k1-1 (inclusive range [k0, k1)) of one head:
 * out[d] = Σ softmax(scale · q·K[k])_k · V[k]; K, V are [*][d] rows with stride ld.
 * `scores` is caller scratch of at least k1 floats. */
void nx__attention_ref(float *out, const float *q, const float *K, const float *V, int ld, int d, int k0, int k1,
                       float scale, float *scores);
float nx__dot_ref(const float *a, const float *b, int n);
float nx__exp_sum_ref(float *x, int n, float mx);
void nx__axpy_ref(float *y, float a, const float *x, int n);   /* y += a·x */

/* ---- packed weights (ref.c) ------------------------------------------------------------- */
#define NX_PANEL 16
/* Floats of the packed form of an [OUT][IN] matrix (OUT rounded up to a whole panel). */
size_t nx__packed_floats(int OUT, int IN);
/* Packs W[OUT][IN] into dst (nx__packed_floats(OUT, IN) floats); padding rows are zero. */
void nx__pack(float *dst, const float *W, int OUT, int IN);
/* Packs 16 (or fewer, zero-padded) rows into panel p of dst: rows[r][IN] holds output row
 * p*16 + r. For loaders that produce a panel at a time. */
void nx__pack_panel(float *dst, const float *rows, int nrows, int p, int IN);
/* Element (row o, column k) of a packed matrix. */
static inline float nx__packed_at(const float *Wp, int IN, int o, int k) {
    return Wp[((size_t)(o / NX_PANEL) * (size_t)IN + (size_t)k) * NX_PANEL + (size_t)(o % NX_PANEL)];
}

/* ---- variants and dispatch (dispatch.c) ------------------------------------------------ */
typedef struct nx_kernel_vt {
    const char *name;   /* "ref", "avx2", "avx512" */
    /* Output rows r0..r1-1 of every token of y = x·Wᵀ + b with W packed (nx__pack); r0 is a
     * multiple of NX_PANEL and r1 too unless r1 == OUT. The unit of a static thread split. */
    void (*matmul_rows)(float *y, const float *x, const float *Wp, const float *b, int T, int IN, int OUT, int r0,
                        int r1);
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n);
    /* In-place activation (elementwise, so any split gives the same values). */
    void (*act)(float *x, size_t n, nx_kact act);
    /* x[i] = exp(x[i] - mx) for i < n; returns their sum (softmax numerators). */
    float (*exp_sum)(float *x, int n, float mx);
} nx_kernel_vt;

/* The variant in use: NX_KERNELS if set and supported, else the best the CPU supports. */
const nx_kernel_vt *nx__kernels(void);
/* A named variant, or NULL when unknown or not supported by this CPU (tests). */
const nx_kernel_vt *nx__kernels_variant(const char *name);

/* Threaded matmul with the selected (or given) variant on packed weights: OUT is split
 * statically into whole panels across the pool's threads. pool may be NULL. */
void nx__matmul(nx_pool *pool, float *y, const float *x, const float *Wp, const float *b, int T, int IN, int OUT);
void nx__matmul_vt(const nx_kernel_vt *vt, nx_pool *pool, float *y, const float *x, const float *Wp, const float *b,
                   int T, int IN, int OUT);
/* Threaded in-place activation (static split of the n values). */
void nx__act(nx_pool *pool, float *x, size_t n, nx_kact act);

/* x86 variants (x86.c); NULL-equivalent fallbacks elsewhere. */
extern const nx_kernel_vt nx__kernels_ref_vt;
extern const nx_kernel_vt nx__kernels_avx2_vt;
extern const nx_kernel_vt nx__kernels_avx512_vt;
int nx__cpu_has_avx2(void);
int nx__cpu_has_avx512(void);

#endif
