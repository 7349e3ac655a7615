/*
 * kernels.h - the compute kernels of the forward pass, fp32.
 *
 * Every op has a readable scalar reference (`_ref`, ref.c) that is the oracle for the fast paths.
 * The hot ops (the matrix products used by every linear layer, and attention over the fp32 or
 * 16-bit KV cache) also have AVX2+FMA and AVX-512 variants (x86.c, gemm_x86.c, attn_x86.c),
 * compiled with __attribute__((target)) so one portable binary picks the best one at run time from CPUID
 * (dispatch.c). Setting NX_KERNELS=ref|avx2|avx512 in the environment forces a variant.
 *
 * Weights (nx_wmat) are row-major W[OUT][IN] in their run type, exactly as nn.Linear stores them
 * in a checkpoint and as `neox quantize` writes them, so a model can run on the bytes of a
 * mapped file. Two kinds of kernel use them:
 *  - decode (T <= NX_MV_MAX_T tokens): multi-row dot products that stream each weight row once
 *    for all T tokens (memory-bound); block types take activations quantized to Q8_0;
 *  - prefill (more tokens): the packed, cache-blocked GEMM of gemm.c, which widens (or, for
 *    block types with VNNI, keeps as int8) micro-panels of weights as it goes (compute-bound;
 *    the packing is amortized over the T tokens).
 *
 * Invariant: no output element is ever summed by two threads, and its arithmetic depends only
 * on its row and token (and, in the GEMM, the fixed blocking of gemm.c), never on which thread
 * computes it, so results do not depend on scheduling: equal inputs and thread counts give
 * equal bits, and so does any thread count for one kernel path. (Decode hands out 64-row
 * chunks dynamically, which is safe for that reason.) The decode and prefill paths sum in
 * different orders, so a row decoded token by token matches its prefill row within fp32
 * rounding (and, for block types, within the activation quantization bound), not bit for bit.
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
/* Attention of a group of G query rows of one head over one session's cache (the decode step is
 * G = 1; prefill passes groups of consecutive rows so each cached K/V row is read once per group).
 * Row g: out_g[e] = Σ_k softmax_k(scale · q_g·K[k]) · V[k][e] over keys k in [k0[g], k1[g]).
 * V holds cache rows in kv_type (F32, F16, BF16, or Q8_0 when d is a multiple of 32): row k is d
 * elements at byte k·row_bytes. K holds the keys in the layout nx__kv_store_key writes: Q8_0 keys
 * are rows like V's; F32/F16/BF16 keys are tiles of NX_KT positions (below). Every variant widens
 * each cached element exactly to fp32 (a Q8_0 element as d·q, the product nx__dequantize_row
 * computes) and computes each row with the same arithmetic whatever G and the other rows are, so
 * a row's bits never depend on its group. The SIMD variants compute a score q·K[k] over a tiled
 * cache as one fma chain over the elements in order (q[0]·K[k][0] first). */
#define NX_ATTN_MAX_G 8
typedef struct nx_attn_args {
    int G, d;               /* rows (1 .. NX_ATTN_MAX_G), head size */
    const float *q;         /* row g at q + g·ldq */
    float *out;             /* row g at out + g·ldo */
    size_t ldq, ldo;
    const void *K, *V;      /* the head's cache rows */
    nx_dtype kv_type;
    size_t row_bytes;       /* bytes between cache rows */
    int k0[NX_ATTN_MAX_G], k1[NX_ATTN_MAX_G];   /* 0 <= k0 < k1 */
    float scale;
    float *scores;          /* scratch: row g's score of key k at scores[g·lds + k] */
    size_t lds;             /* >= every k1 */
} nx_attn_args;
void nx__attention_ref(const nx_attn_args *a);
/* Keys of an F32/F16/BF16 cache: positions in tiles of NX_KT, each tile [d][NX_KT], i.e. element e
 * of position p at element ((p/NX_KT)·d + e)·NX_KT + p%NX_KT of the head's keys. The score pass
 * then reads element e of 16 keys as one vector and needs no horizontal sums (a row-major key
 * costs a 16-lane reduction per score). Q8_0 keys (blocks along d) stay rows. */
#define NX_KT 16
/* Bytes of one head's keys, or values, for n_ctx positions (rounded up to NX_KT). */
size_t nx__kv_head_bytes(nx_dtype t, int d, int n_ctx);
/* Stores key p (d fp32 values) into a head's keys K, rounded as nx__kv_store. */
void nx__kv_store_key(void *K, nx_dtype t, int d, int p, const float *src);
/* Zeroes the tile of positions p..p+NX_KT-1 (p a multiple of NX_KT) of a tiled head's keys, so
 * the lanes of positions not written yet hold finite values (Q8_0: nothing to do). */
void nx__kv_open_tile(void *K, nx_dtype t, int d, int p);
/* n cached values of type t to fp32 (exact); Q8_0: n a multiple of 32, src at a block. */
void nx__kv_widen(float *dst, const void *src, nx_dtype t, int n);
/* n fp32 values to cache type t (round to nearest even for F16/BF16; Q8_0 as
 * nx__quantize_row_q8_0, n a multiple of 32). */
void nx__kv_store(void *dst, nx_dtype t, const float *src, int n);
float nx__dot_ref(const float *a, const float *b, int n);
float nx__exp_sum_ref(float *x, int n, float mx);
void nx__axpy_ref(float *y, float a, const float *x, int n);   /* y += a·x */

/* ---- 16-bit and block-quantized weights (quant.c; formats in docs/QUANT.md) ------------------ */
/* The weight blocks are llama.cpp's (ggml's) q8_0 and q4_0, byte for byte: an IEEE half scale
 * first, then the codes. Rows of them need only 2-byte alignment.
 * Q8_0: 32 weights w = d·q, q int8 in [-127, 127], d = max|w|/127. 34 bytes. */
typedef struct nx_block_q8_0 {
    uint16_t d;   /* fp16 */
    int8_t q[32];
} nx_block_q8_0;
/* Q4_0: 32 weights w = d·(q - 8), q in [0, 15]; byte j holds element j in its low nibble and
 * element j+16 in its high nibble; d = m/-8 where m is the value of largest magnitude. 18 bytes. */
typedef struct nx_block_q4_0 {
    uint16_t d;   /* fp16 */
    uint8_t qs[16];
} nx_block_q4_0;
/* Activations quantized for the integer dot products: Q8_0 codes with an fp32 scale. They are
 * made per token and never stored, so they keep the scale exact (36 bytes). */
typedef struct nx_xq8 {
    float d;
    int8_t q[32];
} nx_xq8;
#define NX_QBLOCK 32
_Static_assert(sizeof(nx_block_q8_0) == 34 && sizeof(nx_block_q4_0) == 18 && sizeof(nx_xq8) == 36, "block layout");

/* The fp32 scale of the Q8_0/Q4_0 block at p (any alignment). */
static inline float nx__qblock_d(const void *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return nx_f16_to_f32(h);
}

/* fp32 of every fp16 bit pattern (256 KiB, filled on first use; thread-safe). The decode kernels
 * look block scales up here: a table load costs a load port, which those loops have spare, while
 * vcvtph2ps costs two ALU uops on the ports they are bound by (Q4_0 on 160M matrices in L3: half
 * the speed with vcvtph2ps per block). Only a few KiB of it are hot for any one model. */
const float *nx__f16_table(void);
/* The table itself, for kernels that read it after calling nx__f16_table() once per call. */
extern float nx__f16_tab[1 << 16];

/* Bytes of one row of n weights (n a multiple of 32 for the block types). */
size_t nx__row_bytes(nx_dtype t, int n);
/* Weights to ggml's Q8_0 / Q4_0 blocks, bit for bit; the _scalar versions are the plain
 * statement of the arithmetic that the others (SIMD where the ISA allows) reproduce. */
void nx__quantize_row_q8_0(nx_block_q8_0 *dst, const float *x, int n);
void nx__quantize_row_q4_0(nx_block_q4_0 *dst, const float *x, int n);
void nx__quantize_row_q8_0_scalar(nx_block_q8_0 *dst, const float *x, int n);
void nx__quantize_row_q4_0_scalar(nx_block_q4_0 *dst, const float *x, int n);
/* Activations: d = max|x|/127 (fp32), q = round to nearest even of x·(1/d). */
void nx__quantize_row_xq8(nx_xq8 *dst, const float *x, int n);
/* Row of any weight type (F32, F16, BF16, Q8_0, Q4_0; plain row-major source) to fp32. */
void nx__dequantize_row(nx_dtype t, const void *src, float *dst, int n);
/* Scalar reference of one quantized dot: Σ_blocks (Σ q_w·q_x)·d_w·d_x in block order. */
float nx__qdot_ref(const nx_xq8 *xq, const void *wrow, nx_dtype wt, int IN);

typedef struct nx_kernel_vt nx_kernel_vt;
/* A weight matrix W[OUT][IN] in its run type, row-major: row o is nx__row_bytes(type, IN) bytes at
 * data + o·nx__row_bytes(type, IN), holding IN values (F32, F16, BF16) or IN/32 blocks (Q8_0,
 * Q4_0; IN a multiple of 32). data may point into a mapped checkpoint: it is never written, and
 * needs only the alignment of its element (4 bytes for F32 and the block types, 2 for 16-bit). */
typedef struct nx_wmat {
    nx_dtype type;
    const void *data;
    /* Q8_0/Q4_0 only: the rows are interleaved in groups of 8 (nx__x8_block), for the decode
     * kernels that read a group as one stream. Only where it helps and the kernels in use read
     * it (nx__x8_eligible: Q4_0 on AVX-512 VNNI): matrices converted at load, and Q4_0 files
     * written in that layout (nx__x8_layout), which are then used in place. */
    bool x8;
} nx_wmat;
/* The interleaved layout of a Q8_0/Q4_0 matrix: OUT a multiple of 8, IN/32 blocks an even
 * number. Rows 8g..8g+7 take the same bytes as in row order (8 row sizes from 8g·rb on), laid
 * out pair by pair: for blocks 2p and 2p+1 (a "pair") of the 8 rows, 32 bytes of fp16 scales
 * (block 2p of rows 0..7, then block 2p+1 of rows 0..7), then row 0's codes of block 2p and of
 * block 2p+1, row 1's, ... (16 bytes a block for Q4_0, 32 for Q8_0): 288 or 544 bytes a pair.
 * Block b of row o: its scale at *d, its codes at *q. */
static inline void nx__x8_block(const uint8_t *W, nx_dtype t, size_t rb, int o, int b, const uint8_t **d,
                                const uint8_t **q) {
    size_t qb = t == NX_Q8_0 ? 32 : 16;
    const uint8_t *pair = W + (size_t)(o / 8) * 8 * rb + (size_t)(b / 2) * (32 + 16 * qb);
    *d = pair + (size_t)(b % 2) * 16 + (size_t)(o % 8) * 2;
    *q = pair + 32 + (size_t)(o % 8) * 2 * qb + (size_t)(b % 2) * qb;
}
/* Rewrites a row-order Q8_0/Q4_0 matrix [OUT][IN] in the interleaved layout, in place (tmp:
 * 8 rows' bytes of scratch). */
void nx__x8_interleave(uint8_t *W, nx_dtype t, int OUT, int IN, uint8_t *tmp);
/* Row o of an interleaved matrix in row order: nx__row_bytes(t, IN) bytes at dst. */
void nx__x8_gather_row(const uint8_t *W, nx_dtype t, int IN, int o, uint8_t *dst);
/* Whether an [OUT][IN] matrix of type t takes the interleaved layout where the kernels read it
 * (Q4_0, OUT a multiple of 8, an even number of blocks a row): the shapes that files written
 * by nx_model_quantize store interleaved, whatever CPU writes or reads them. */
bool nx__x8_layout(nx_dtype t, int OUT, int IN);
/* Bytes of an [OUT][IN] matrix in type t. */
size_t nx__wmat_bytes(nx_dtype t, int OUT, int IN);
/* Row o of W as fp32 (embedding lookups). */
void nx__wmat_row(const nx_wmat *W, int IN, int o, float *dst);
/* y = x·Wᵀ + b for any weight type, threaded over 64-row chunks of OUT. Up to
 * NX_MV_MAX_T tokens: the decode kernels (block types with activations quantized to Q8_0); more:
 * the packed prefill GEMM (nx__gemm_w below) on the same row-major weights. */
#define NX_MV_MAX_T 8
void nx__matmul_w(nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b, int T, int IN, int OUT);
void nx__matmul_w_vt(const nx_kernel_vt *vt, nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b,
                     int T, int IN, int OUT);
/* The arguments of one nx__matmul_w. */
typedef struct nx_matmul_args {
    float *y;
    const float *x;
    const nx_wmat *W;
    const float *b;
    int T, IN, OUT;
} nx_matmul_args;
/* Two independent products (neither reads the other's output) in one hand-off to the pool:
 * each thread runs its share of both, so a decode step waits for the threads once instead of
 * twice. Same results as two nx__matmul_w calls, bit for bit. */
void nx__matmul_w2(nx_pool *pool, const nx_matmul_args *a, const nx_matmul_args *b);

/* One decode product (T <= NX_MV_MAX_T rows) set up once, then computed in row ranges by any
 * threads in any order, so a caller can hand several products' rows, and work on their output
 * rows, to the pool at once (models/forward.c: a head's qkv rows and its attention). Each row's
 * bits are the ones nx__matmul_w gives it. nx__mv_init quantizes a->x to Q8_0 for block weight
 * types, into stack_xq (NX_MV_STACK_XQ blocks) when it fits, else into a heap buffer
 * (NX_ERR_NOMEM without one); nx__mv_done releases it. */
enum { NX_MV_STACK_XQ = 512 };
typedef struct nx_mv {
    const nx_kernel_vt *vt;
    nx_matmul_args a;
    nx_xq8 *xq;        /* quantized activations (Q8_0/Q4_0 weights), else NULL */
    nx_xq8 *heap_xq;   /* xq when it is not the caller's buffer */
} nx_mv;
nx_status nx__mv_init(nx_mv *mv, const nx_kernel_vt *vt, const nx_matmul_args *a, nx_xq8 *stack_xq);
/* Rows per chunk when threads share a decode product: whole 64-row groups (a multiple of every
 * decode tile) of at least 64 KiB of weights. Smaller chunks streamed worse: dealt round-robin,
 * Q4_0 rows of 768 values in 64-row chunks (30 KiB) ran 10% slower than in 128-row ones, Q8_0
 * 6%, while 16-bit rows (96 KiB per 64) gained nothing from larger chunks; shared through
 * nx_split, 16-row groups were still 2.5% slower for Q4_0. */
int nx__mv_chunk_rows(nx_dtype t, int IN);
void nx__mv_rows(const nx_mv *mv, int r0, int r1);
void nx__mv_done(nx_mv *mv);

/* ---- prefill matrix multiply (gemm.c) ------------------------------------------------------ */
/* y[T][OUT] = x[T][IN]·Wᵀ + b (b may be NULL) with W ROW-MAJOR [OUT][IN] in its run type (F32,
 * F16, BF16 rows as shipped; Q8_0/Q4_0 rows of IN/32 blocks, IN a multiple of 32): a blocked,
 * packed, threaded GEMM for many tokens. F32/F16/BF16: each y element is fma(x, w, acc) over
 * k ascending from 0, then + b, on the widened weights (the scalar variant is its oracle).
 * Q8_0/Q4_0 with AVX-512 VNNI: activations quantized to Q8_0 as in decode, integer block dots
 * (docs/QUANT.md). Bit-identical for any thread count. Weights are read in place. */
void nx__gemm_w(nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b, int T, int IN, int OUT);

/* ---- variants and dispatch (dispatch.c) ------------------------------------------------ */
typedef struct nx_kernel_vt {
    const char *name;   /* "ref", "avx2", "avx512" */
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n);
    /* In-place activation (elementwise, so any split gives the same values). */
    void (*act)(float *x, size_t n, nx_kact act);
    /* x[i] = exp(x[i] - mx) for i < n; returns their sum (softmax numerators). */
    float (*exp_sum)(float *x, int n, float mx);
    /* Attention of 1 .. NX_ATTN_MAX_G query rows over a 16-bit or fp32 cache, as
     * nx__attention_ref (attn_x86.c for the SIMD variants). */
    void (*attention)(const nx_attn_args *a);
    /* Decode: rows r0..r1-1 of every token of y = x·Wᵀ + b, T <= NX_MV_MAX_T, W row-major F32, F16
     * or BF16 (wt). Each weight is widened to fp32 exactly; each row is read once for all T
     * tokens. Sums are fp32 in any order (the reference: index order). */
    void (*mv_rows)(float *y, const float *x, const void *W, nx_dtype wt, const float *b, int T, int IN, int OUT,
                    int r0, int r1);
    /* Decode on block weights: rows r0..r1-1 of every token of y = x·Wᵀ + b for a row-major
     * Q8_0/Q4_0 matrix W (wt), the T <= NX_MV_MAX_T activation rows already quantized to Q8_0
     * (xq, T rows of IN/32 blocks): integer dot products per block, scaled by d_w·d_x and summed
     * in fp32 (llama.cpp's scheme). */
    void (*qdot_rows)(float *y, const nx_xq8 *xq, const void *W, nx_dtype wt, const float *b, int T, int IN,
                      int OUT, int r0, int r1);
    /* qdot_rows on a matrix in the interleaved layout (nx_wmat.x8), the same bits; NULL where
     * the variant has no such kernel. */
    void (*qdot_rows_x8)(float *y, const nx_xq8 *xq, const void *W, nx_dtype wt, const float *b, int T, int IN,
                         int OUT, int r0, int r1);
    /* nx__quantize_row_xq8, bit for bit (the activations of a block decode are quantized on the
     * calling thread while the others wait: it is worth vectorizing). */
    void (*quantize_q8)(nx_xq8 *dst, const float *x, int n);
    /* nx__layernorm_ref, bit for bit. */
    void (*layernorm)(float *y, const float *x, const float *w, const float *b, int T, int C, float eps);
} nx_kernel_vt;

/* The variant in use: NX_KERNELS if set and supported, else the best the CPU supports. */
const nx_kernel_vt *nx__kernels(void);
/* A named variant, or NULL when unknown or not supported by this CPU (tests). */
const nx_kernel_vt *nx__kernels_variant(const char *name);

/* Whether an [OUT][IN] matrix of type t gets the interleaved layout under kernel variant vt:
 * Q4_0 of the layout's shape, and decode and prefill kernels for it (AVX-512 VNNI). */
bool nx__x8_eligible(const nx_kernel_vt *vt, nx_dtype t, int OUT, int IN);

/* Threaded LayerNorm of the variant in use (static split of the rows; the reference's bits). */
void nx__layernorm(nx_pool *pool, float *y, const float *x, const float *w, const float *b, int T, int C, float eps);

/* Threaded in-place activation (static split of the n values). */
void nx__act(nx_pool *pool, float *x, size_t n, nx_kact act);

/* x86 variants (x86.c); NULL-equivalent fallbacks elsewhere. */
extern const nx_kernel_vt nx__kernels_ref_vt;
extern const nx_kernel_vt nx__kernels_avx2_vt;
extern const nx_kernel_vt nx__kernels_avx512_vt;
/* The attention of the x86 variants (attn_x86.c). */
void nx__attention_avx2(const nx_attn_args *a);
void nx__attention_avx512(const nx_attn_args *a);
/* The AVX-512 LayerNorm (norm_x86.c). */
void nx__layernorm_avx512(float *y, const float *x, const float *w, const float *b, int T, int C, float eps);
int nx__cpu_has_avx2(void);
int nx__cpu_has_avx512(void);

#endif
