/*
 * gemm.h - private pieces of the prefill matrix multiply (gemm.c): one variant per ISA, each a
 * register-tile kernel with its tile shape and the two packing routines that feed it. The
 * scalar variant (gemm.c) is the oracle; gemm_x86.c adds AVX2+FMA and AVX-512. Tests and
 * benchmarks pick a variant by name; the library uses the best one (NX_KERNELS applies too).
 * Depends on kernels.h.
 */
#ifndef NX_KERNELS_GEMM_H
#define NX_KERNELS_GEMM_H

#include "kernels/kernels.h"

/* The K block unit: a multiple of 32, so block-quantized rows are cut on block boundaries.
 * Every variant's K block (vt->kc) is a multiple of it, and the driver falls back to it when
 * its working buffer cannot be allocated (its stack buffers are sized for it). Per 32 inputs,
 * a tile's packed A never exceeds 32 x mr floats and a strip's packed B 32 x nr floats. */
#define NX_GEMM_KC 192
/* Largest tile among the variants (stack buffers are sized for it). */
#define NX_GEMM_MR_MAX 8
#define NX_GEMM_NR_MAX 48

/* Cache lines a tile prefetches for the driver (the source of the next weight micro-panel):
 * a tile spreads them over its K loop, since a burst of tens of misses to memory fills the
 * core's line-fill buffers and stalls it until they return. */
#define NX_GEMM_PF_MAX 64
typedef struct nx_gemm_pf {
    int n;
    const void *addr[NX_GEMM_PF_MAX];
} nx_gemm_pf;

/* Issues every prefetch of pf at once (variants that do not spread them). */
static inline void nx__gemm_pf_all(const nx_gemm_pf *pf) {
    for (int i = 0; pf && i < pf->n; i++) __builtin_prefetch(pf->addr[i]);
}

typedef struct nx_gemm_vt {
    const char *name;   /* "ref", "avx2", "avx512" */
    int mr, nr;         /* register tile: mr tokens x nr outputs */
    int kc;             /* K block, a multiple of NX_GEMM_KC */
    /* Floats one tile's packed A takes per 32 K values: 32·mr for the fp32 tiles; the integer
     * tiles pack 32 codes and a scale per row in less (it sizes the driver's passes over K). */
    int a_blk;
    /* One tile: for i < m, j < n: acc = Ci ? Ci[i][j] : 0; acc = fma(Ap[k][i], Bp[k][j], acc)
     * for k = 0..kc-1 in order; Co[i][j] = bias ? acc + bias[j] : acc. Ap is [kc][mr], Bp is
     * [kc][nr] (both packed, zero-padded); Ci and Co (row strides ldi, ldo; they may be the same
     * matrix) are read and written only in their m x n valid corner. pf (or NULL): lines to
     * prefetch while it runs. */
    void (*tile)(const float *Ap, const float *Bp, int kc, const float *Ci, long ldi, float *Co, long ldo, int m,
                 int n, const float *bias, const nx_gemm_pf *pf);
    /* Ap[k][i] = A[i·sam + (k0 + k)·sak] for k < kc <= vt->kc, i < mr; rows i >= m are
     * zero. Ap and Bp (below) are 64-byte aligned. */
    void (*pack_a)(float *Ap, const float *A, long sam, long sak, int m, int k0, int kc);
    /* Bp[k][r] = W[r][k0 + k] as fp32 for k < kc <= vt->kc, r < nr, W row-major of type t (row stride rb
     * bytes; block types: k0 and kc are multiples of 32 unless kc ends the row); rows r >= n
     * are zero. */
    void (*pack_b)(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc);
    /* pack_b for W in the interleaved layout (kernels.h nx__x8_block; W at a group's first row,
     * n a multiple of 8); NULL where the variant cannot read it. */
    void (*pack_b_x8)(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc);
} nx_gemm_vt;

/* The portable packers (any mr / nr), shared by the variants without their own. */
void nx__gemm_pack_a_generic(float *Ap, int mr, const float *A, long sam, long sak, int m, int k0, int kc);
void nx__gemm_pack_b_generic(float *Bp, int nr, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc);

/* Integer variants for Q8_0/Q4_0 weights (activations quantized to Q8_0 per 32-block, as in
 * decode; K blocks are whole 32-blocks): the scalar oracle and AVX-512 VNNI, bit-identical. */
extern const nx_gemm_vt nx__gemm_q8ref_vt;
extern const nx_gemm_vt nx__gemm_vnni_vt;
int nx__cpu_has_avx512vnni(void);
/* Helpers shared by the integer variants: mr rows of A (m valid, the rest zero) from column k0
 * quantized to kc/32 blocks, scales d[b][mr] and codes q[b][mr][32]; and block b of a weight
 * row as a scale and 32 signed codes. */
void nx__gemm_quantize_tile(float *d, int8_t *q, const float *A, long sam, int mr, int m, int k0, int kc);
void nx__gemm_weight_block(nx_dtype t, const uint8_t *row, int b, float *d, int8_t q[NX_QBLOCK]);

extern const nx_gemm_vt nx__gemm_ref_vt;
extern const nx_gemm_vt nx__gemm_avx2_vt;
extern const nx_gemm_vt nx__gemm_avx512_vt;

/* The variant nx__gemm_w uses (the one matching nx__kernels()), or a named one (NULL when
 * unknown or not supported by this CPU). */
const nx_gemm_vt *nx__gemm_best(void);
const nx_gemm_vt *nx__gemm_variant(const char *name);
/* C[M][N] = A·B (+ bias): the general product behind nx__gemm_w and the training matmul.
 * Each C element is one fma chain over k = 0..K-1 ascending, started at 0 (or at C's value
 * when accumulate), with bias[j] added last; bit-identical for any thread count/variant. */
typedef struct nx_gemm_args {
    int M, N, K;
    const float *A;   /* A(i,k) = A[i·sam + k·sak] */
    long sam, sak;
    /* B(k,j): row-major weights W[j][k] of type wtype when W != NULL (IN = K a multiple of 32
     * for block types), else fp32 B[k·ldb + j]. */
    const void *W;
    nx_dtype wtype;
    bool x8;   /* W in the interleaved layout */
    const float *B;
    long ldb;
    float *C;
    long ldc;
    int accumulate;
    const float *bias;   /* N values or NULL */
} nx_gemm_args;
void nx__gemm(const nx_gemm_vt *vt, nx_pool *pool, const nx_gemm_args *a);
/* The variant for weights of type t under kernel variant kvt: block types run the integer
 * scheme where it is fast (AVX-512 VNNI) and under the scalar reference (its oracle), and
 * widen to fp32 on AVX2 / AVX-512 without VNNI; other types use kvt's fp32 variant. */
const nx_gemm_vt *nx__gemm_for(const nx_kernel_vt *kvt, nx_dtype t);
/* nx__gemm_w with a given variant. */
void nx__gemm_w_vt(const nx_gemm_vt *vt, nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b,
                   int T, int IN, int OUT);

#endif
