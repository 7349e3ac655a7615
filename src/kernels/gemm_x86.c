/*
 * gemm_x86.c - AVX2+FMA, AVX-512 and AVX-512 VNNI variants of the GEMM's pieces (gemm.h).
 *
 * AVX-512: 8 tokens x 48 outputs per tile (24 zmm accumulators, 3 weight vectors, one
 * broadcast load per token), so one k step is 3 loads + 8 broadcasts per 24 FMAs. The B
 * micro-panel (768 x 48 floats, 144 KiB) streams from L2. 48 divides every Pythia width but the
 * 1024-based ones; 8 divides the usual prompt lengths, so padding is rare. Both packers are
 * register transposes (16x16 for weights, converting 16-bit and block types on the way; 8x8
 * for activations), so packing stays a few percent of the multiply.
 * AVX2: 6 x 16 tiles (12 ymm accumulators) on the portable packers.
 * VNNI (Q8_0/Q4_0 weights): 4 x 48 integer tiles, see below.
 *
 * Every fp32 variant computes exactly the scalar variant's fmaf chain (gemm.c) and the VNNI
 * variant exactly the scalar integer one, so they agree bit for bit; compiled with
 * per-function target attributes, called only after CPUID agrees.
 */
#include "kernels/gemm.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <limits.h>

/* ---- AVX2 + FMA: 6 x 16 ------------------------------------------------------------------- */
#define T256 __attribute__((target("avx2,fma")))
#define MR2 6
#define NR2 16

/* One prefetch of pf every `step` steps of a tile's loop of `steps` (the rest after it). */
typedef struct {
    const nx_gemm_pf *pf;
    int p, step, countdown;
} pf_spread;
static inline pf_spread pf_begin(const nx_gemm_pf *pf, int steps) {
    int n = pf ? pf->n : 0;
    return (pf_spread){pf, 0, n ? NX_MAX(1, steps / n) : 0, n ? 1 : INT_MAX};
}
static inline void pf_step(pf_spread *s) {
    if (--s->countdown == 0) {
        if (s->p < s->pf->n) __builtin_prefetch(s->pf->addr[s->p++]);
        s->countdown = s->step;
    }
}
static inline void pf_end(pf_spread *s) {
    while (s->pf && s->p < s->pf->n) __builtin_prefetch(s->pf->addr[s->p++]);
}

static const int32_t k_lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static T256 void tile_avx2(const float *Ap, const float *Bp, int kc, const float *Ci, long ldi, float *Co, long ldo,
                           int m, int n, const float *bias, const nx_gemm_pf *pf) {
    pf_spread ps = pf_begin(pf, kc);
    __m256i m0 = _mm256_loadu_si256((const __m256i *)(k_lanes + 8 - NX_MIN(n, 8)));
    __m256i m1 = _mm256_loadu_si256((const __m256i *)(k_lanes + 8 - (n > 8 ? n - 8 : 0)));
    __m256 c[MR2][2];
    for (int i = 0; i < MR2; i++) {
        c[i][0] = c[i][1] = _mm256_setzero_ps();
        if (Ci && i < m) {
            c[i][0] = _mm256_maskload_ps(Ci + (long)i * ldi, m0);
            c[i][1] = _mm256_maskload_ps(Ci + (long)i * ldi + 8, m1);
        }
    }
    for (int k = 0; k < kc; k++) {
        pf_step(&ps);
        __m256 b0 = _mm256_load_ps(Bp + (size_t)k * NR2), b1 = _mm256_load_ps(Bp + (size_t)k * NR2 + 8);
        for (int i = 0; i < MR2; i++) {
            __m256 a = _mm256_broadcast_ss(Ap + (size_t)k * MR2 + i);
            c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
        }
    }
    pf_end(&ps);
    __m256 bb0 = bias ? _mm256_maskload_ps(bias, m0) : _mm256_setzero_ps();
    __m256 bb1 = bias ? _mm256_maskload_ps(bias + 8, m1) : _mm256_setzero_ps();
    for (int i = 0; i < MR2; i++) {
        if (i >= m) break;
        __m256 v0 = bias ? _mm256_add_ps(c[i][0], bb0) : c[i][0], v1 = bias ? _mm256_add_ps(c[i][1], bb1) : c[i][1];
        _mm256_maskstore_ps(Co + (long)i * ldo, m0, v0);
        _mm256_maskstore_ps(Co + (long)i * ldo + 8, m1, v1);
    }
}

static void pack_a_avx2(float *Ap, const float *A, long sam, long sak, int m, int k0, int kc) {
    nx__gemm_pack_a_generic(Ap, MR2, A, sam, sak, m, k0, kc);
}

static void pack_b_avx2(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    nx__gemm_pack_b_generic(Bp, NR2, t, W, rb, n, k0, kc);
}

const nx_gemm_vt nx__gemm_avx2_vt = {"avx2", MR2, NR2, NX_GEMM_KC, 32 * MR2, tile_avx2, pack_a_avx2, pack_b_avx2, NULL};

/* ---- AVX-512: 8 x 48 ------------------------------------------------------------------------ */
#define T512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define AI __attribute__((always_inline))
#define MR5 8
#define NR5 48

static inline T512 AI __mmask16 lanes16(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

static T512 void tile_avx512(const float *Ap, const float *Bp, int kc, const float *Ci, long ldi, float *Co, long ldo,
                             int m, int n, const float *bias, const nx_gemm_pf *pf) {
    pf_spread ps = pf_begin(pf, kc);
    const __mmask16 mk[3] = {lanes16(n), lanes16(n - 16), lanes16(n - 32)};
    __m512 c[MR5][3];
    for (int i = 0; i < MR5; i++)
        for (int j = 0; j < 3; j++)
            c[i][j] = Ci && i < m ? _mm512_maskz_loadu_ps(mk[j], Ci + (long)i * ldi + 16 * j) : _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int k = 0; k < kc; k++) {
        pf_step(&ps);
        const float *b = Bp + (size_t)k * NR5;
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32);
        for (int i = 0; i < MR5; i++) {
            __m512 a = _mm512_set1_ps(Ap[(size_t)k * MR5 + i]);
            c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
            c[i][2] = _mm512_fmadd_ps(a, b2, c[i][2]);
        }
    }
    pf_end(&ps);
    for (int j = 0; j < 3; j++) {
        __m512 bj = bias ? _mm512_maskz_loadu_ps(mk[j], bias + 16 * j) : _mm512_setzero_ps();
        for (int i = 0; i < MR5; i++) {
            if (i >= m) break;
            _mm512_mask_storeu_ps(Co + (long)i * ldo + 16 * j, mk[j], bias ? _mm512_add_ps(c[i][j], bj) : c[i][j]);
        }
    }
}

/* 8x8 transpose of ymm rows (r[i] = row i) in place. */
static inline T512 AI void transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) {
        s[4 * h + 0] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * h + 1] = _mm256_shuffle_ps(t[4 * h + 0], t[4 * h + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
        r[c + 4] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
    }
}

/* Contiguous rows (sak == 1, activations) go through 8x8 transposes, a transposed operand
 * (sam == 1, weight gradients) is a load per k, other strides take the portable loop. */
static T512 void pack_a_avx512(float *Ap, const float *x, long ldx, long sak, int m, int k0, int kc) {
    if (ldx == 1) {   /* the 8 values of one k are adjacent: one masked load each */
        __m256i lm = _mm256_loadu_si256((const __m256i *)(k_lanes + 8 - m));
        for (int k = 0; k < kc; k++) _mm256_store_ps(Ap + (size_t)k * MR5, _mm256_maskload_ps(x + (long)(k0 + k) * sak, lm));
        return;
    }
    if (sak != 1) {
        nx__gemm_pack_a_generic(Ap, MR5, x, ldx, sak, m, k0, kc);
        return;
    }
    for (int kk = 0; kk < kc; kk += 8) {
        int cnt = NX_MIN(8, kc - kk);
        __m256i lm = _mm256_loadu_si256((const __m256i *)(k_lanes + 8 - cnt));
        __m256 r[8];
        for (int i = 0; i < 8; i++)
            r[i] = i < m ? _mm256_maskload_ps(x + (long)i * ldx + k0 + kk, lm) : _mm256_setzero_ps();
        transpose8(r);
        for (int i = 0; i < cnt; i++) _mm256_store_ps(Ap + (size_t)(kk + i) * MR5, r[i]);
    }
}

/* 16x16 transpose of zmm rows in place (unpack pairs, then 4x4 blocks within and across
 * 128-bit lanes). */
static inline T512 AI void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    /* r[4i + c] now holds, in 128-bit lane L, column 4L + c of rows 4i..4i+3. */
    __m512 o[16];
    for (int c = 0; c < 4; c++) {
        __m512 ab0 = _mm512_shuffle_f32x4(r[c], r[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 ab1 = _mm512_shuffle_f32x4(r[c], r[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
        __m512 cd0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 cd1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
        o[c] = _mm512_shuffle_f32x4(ab0, cd0, _MM_SHUFFLE(2, 0, 2, 0));
        o[c + 8] = _mm512_shuffle_f32x4(ab0, cd0, _MM_SHUFFLE(3, 1, 3, 1));
        o[c + 4] = _mm512_shuffle_f32x4(ab1, cd1, _MM_SHUFFLE(2, 0, 2, 0));
        o[c + 12] = _mm512_shuffle_f32x4(ab1, cd1, _MM_SHUFFLE(3, 1, 3, 1));
    }
    for (int i = 0; i < 16; i++) r[i] = o[i];
}

/* Weights k..k+cnt-1 (cnt <= 16, the rest zero) of one row as fp32, converted exactly as
 * nx__dequantize_row does. Block types: k is a multiple of 16 and cnt == 16. */
static inline T512 AI __m512 wload16(nx_dtype t, const uint8_t *row, int k, int cnt) {
    switch (t) {
    case NX_F32: return _mm512_maskz_loadu_ps(lanes16(cnt), (const float *)row + k);
    case NX_F16:
    case NX_BF16: {
        __m256i h;
        if (cnt == 16) {
            h = _mm256_loadu_si256((const __m256i *)(row + 2 * (size_t)k));
        } else {
            uint16_t tmp[16] = {0};
            memcpy(tmp, row + 2 * (size_t)k, (size_t)cnt * 2);
            h = _mm256_loadu_si256((const __m256i *)tmp);
        }
        if (t == NX_F16) return _mm512_cvtph_ps(h);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case NX_Q8_0: {
        const nx_block_q8_0 *blk = (const nx_block_q8_0 *)(row + (size_t)(k / NX_QBLOCK) * sizeof(nx_block_q8_0));
        float d = _cvtsh_ss(blk->d);
        __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk->q + k % NX_QBLOCK)));
        return _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(q));
    }
    case NX_Q4_0: {
        const nx_block_q4_0 *blk = (const nx_block_q4_0 *)(row + (size_t)(k / NX_QBLOCK) * sizeof(nx_block_q4_0));
        float d = _cvtsh_ss(blk->d);
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)blk->qs));
        q = k % NX_QBLOCK ? _mm512_srli_epi32(q, 4) : _mm512_and_si512(q, _mm512_set1_epi32(15));
        q = _mm512_sub_epi32(q, _mm512_set1_epi32(8));
        return _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(q));
    }
    default: return _mm512_setzero_ps();
    }
}

static inline T512 AI void pack_b_typed(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    for (int g = 0; g < NR5 / 16; g++) {
        for (int kk = 0; kk < kc; kk += 16) {
            int cnt = NX_MIN(16, kc - kk);
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                int o = g * 16 + i;
                r[i] = o < n ? wload16(t, (const uint8_t *)W + (size_t)o * rb, k0 + kk, cnt) : _mm512_setzero_ps();
            }
            transpose16(r);
            for (int i = 0; i < cnt; i++) _mm512_store_ps(Bp + (size_t)(kk + i) * NR5 + g * 16, r[i]);
        }
    }
}

/* One instance per type, so the type switch of wload16 folds away inside the loops. */
static T512 void pack_b_avx512(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    switch (t) {
    case NX_F32: pack_b_typed(Bp, NX_F32, W, rb, n, k0, kc); break;
    case NX_F16: pack_b_typed(Bp, NX_F16, W, rb, n, k0, kc); break;
    case NX_BF16: pack_b_typed(Bp, NX_BF16, W, rb, n, k0, kc); break;
    case NX_Q8_0: pack_b_typed(Bp, NX_Q8_0, W, rb, n, k0, kc); break;
    case NX_Q4_0: pack_b_typed(Bp, NX_Q4_0, W, rb, n, k0, kc); break;
    default: NX_ASSERT(0 && "pack_b_avx512: not a weight type");
    }
}

/* K block 768 (a 144 KiB B panel, in L2): the tile's 3 B loads per 24 FMAs stream from L2
 * fast enough, and a 768-wide pass (all of K for the 160M projections) then needs no running
 * sums parked between K blocks - reloading them at each tile's start cost ~7% with the 192
 * block and its L1-resident panel (measured 2-5% faster on the Pythia linear layers). */
const nx_gemm_vt nx__gemm_avx512_vt = {"avx512", MR5, NR5, 4 * NX_GEMM_KC, 32 * MR5, tile_avx512, pack_a_avx512, pack_b_avx512, NULL};

/* ---- AVX-512 VNNI: 4 x 48 on Q8_0 activations and Q8_0/Q4_0 weights ------------------------- */
/* vpdpbusd multiplies unsigned by signed bytes, four per 32-bit lane: activations are stored
 * offset by +128 (unsigned), so each block's dot is Σ(x + 128)·w - 128·Σw, the second term
 * precomputed per output while packing; both are exact integers, equal to the scalar
 * variant's Σ x·w. Per 32-block, packed A holds d_x[4] then 8 quads [8][4 tokens] of u8x4;
 * packed B holds d_w[48], -128·Σw[48] (int32), then 8 quads [8][48 outputs] of i8x4. The tile
 * keeps 12 int32 and 12 fp32 accumulators. The integer sums start each block at -128·Σw (so
 * the correction costs no instruction), and after the block are scaled into the fp32 ones
 * exactly as the scalar variant does (fma with d_w·d_x): per accumulator 8 vpdpbusd and 3
 * scaling operations (convert, product of scales, fma) share the two vector ports. */
#define TVNNI5 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define MRQ 4
#define QA_BLK (MRQ * 4 + 8 * MRQ * 4)     /* bytes of packed A per 32-block */
#define QB_BLK (NR5 * 4 * 2 + 8 * NR5 * 4) /* bytes of packed B per 32-block */
/* K block: 12 blocks (a 23 KiB B panel). Twice the fp32 unit halves the tile calls, each of
 * which loads and stores its 12 fp32 accumulators: measured 5-9% faster than 192 on the
 * Pythia shapes, 576 no better. */
#define KCQ 384
_Static_assert(QA_BLK <= NX_QBLOCK * MRQ * 4 && QB_BLK <= NX_QBLOCK * NR5 * 4, "packed int8 exceeds the bounds");

int nx__cpu_has_avx512vnni(void) {
    __builtin_cpu_init();
    return nx__cpu_has_avx512() && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
}

static TVNNI5 void tile_vnni(const float *Ap, const float *Bp, int kc, const float *Ci, long ldi, float *Co, long ldo,
                             int m, int n, const float *bias, const nx_gemm_pf *pf) {
    pf_spread ps = pf_begin(pf, kc / NX_QBLOCK * 2);
    const __mmask16 mk[3] = {lanes16(n), lanes16(n - 16), lanes16(n - 32)};
    __m512 f[MRQ][3];
    for (int i = 0; i < MRQ; i++)
        for (int j = 0; j < 3; j++)
            f[i][j] = Ci && i < m ? _mm512_maskz_loadu_ps(mk[j], Ci + (long)i * ldi + 16 * j) : _mm512_setzero_ps();
    for (int b = 0; b < kc / NX_QBLOCK; b++) {
        const uint8_t *a = (const uint8_t *)Ap + (size_t)b * QA_BLK, *w = (const uint8_t *)Bp + (size_t)b * QB_BLK;
        const int32_t *aq = (const int32_t *)(a + MRQ * 4);
        const int32_t *wq = (const int32_t *)(w + NR5 * 8);
        __m512i s[MRQ][3];
        for (int j = 0; j < 3; j++) {
            __m512i corr = _mm512_load_si512((const int32_t *)(w + NR5 * 4) + 16 * j);
            for (int i = 0; i < MRQ; i++) s[i][j] = corr;
        }
        for (int q = 0; q < 8; q++) {
            if ((q & 3) == 0) pf_step(&ps);   /* twice per block */
            __m512i b0 = _mm512_load_si512(wq + q * NR5), b1 = _mm512_load_si512(wq + q * NR5 + 16),
                    b2 = _mm512_load_si512(wq + q * NR5 + 32);
            for (int i = 0; i < MRQ; i++) {
                __m512i av = _mm512_set1_epi32(aq[q * MRQ + i]);
                s[i][0] = _mm512_dpbusd_epi32(s[i][0], av, b0);
                s[i][1] = _mm512_dpbusd_epi32(s[i][1], av, b1);
                s[i][2] = _mm512_dpbusd_epi32(s[i][2], av, b2);
            }
        }
        for (int j = 0; j < 3; j++) {
            __m512 dw = _mm512_load_ps((const float *)w + 16 * j);
            for (int i = 0; i < MRQ; i++) {
                __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(((const float *)a)[i]));
                f[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][j]), sc, f[i][j]);
            }
        }
    }
    pf_end(&ps);
    for (int j = 0; j < 3; j++) {
        __m512 bj = bias ? _mm512_maskz_loadu_ps(mk[j], bias + 16 * j) : _mm512_setzero_ps();
        for (int i = 0; i < MRQ; i++) {
            if (i >= m) break;
            _mm512_mask_storeu_ps(Co + (long)i * ldo + 16 * j, mk[j], bias ? _mm512_add_ps(f[i][j], bj) : f[i][j]);
        }
    }
}

/* Q8_0 quantization of one 32-block of each of the tile's 4 rows (zero rows past m), as
 * nx__quantize_row_q8_0 computes it (d = amax/127, q = round-to-nearest-even(x/d) through the
 * same reciprocal; IEEE division, so the scales are the scalar ones bit for bit), codes offset
 * to unsigned and stored as the tile wants them: quad qd of row i at dword 4·qd + i. The four
 * rows share the divisions, and two two-register permutes replace per-row scatters. */
static inline TVNNI5 AI void quant_block4(uint8_t *p, const float *x, long sam, int m) {
    __m512 v[MRQ][2];
    float amax[MRQ];
    for (int i = 0; i < MRQ; i++) {
        v[i][0] = i < m ? _mm512_loadu_ps(x + (long)i * sam) : _mm512_setzero_ps();
        v[i][1] = i < m ? _mm512_loadu_ps(x + (long)i * sam + 16) : _mm512_setzero_ps();
        amax[i] = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[i][0]), _mm512_abs_ps(v[i][1])));
    }
    __m128 d = _mm_div_ps(_mm_loadu_ps(amax), _mm_set1_ps(127.0f));
    __m128 id = _mm_and_ps(_mm_cmpgt_ps(d, _mm_setzero_ps()), _mm_div_ps(_mm_set1_ps(1.0f), d));
    _mm_storeu_ps((float *)p, d);
    __m256i q[MRQ];
    for (int i = 0; i < MRQ; i++) {
        __m512 s = _mm512_permutexvar_ps(_mm512_set1_epi32(i), _mm512_castps128_ps512(id));
        __m128i lo = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v[i][0], s)));
        __m128i hi = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v[i][1], s)));
        q[i] = _mm256_add_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8((char)128));
    }
    /* rows 0|1 and 2|3 side by side; output dword 4·qd + i is dword qd of row i */
    __m512i r01 = _mm512_inserti64x4(_mm512_castsi256_si512(q[0]), q[1], 1);
    __m512i r23 = _mm512_inserti64x4(_mm512_castsi256_si512(q[2]), q[3], 1);
    const __m512i lo = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
    const __m512i hi = _mm512_setr_epi32(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);
    _mm512_storeu_si512(p + MRQ * 4, _mm512_permutex2var_epi32(r01, lo, r23));
    _mm512_storeu_si512(p + MRQ * 4 + 64, _mm512_permutex2var_epi32(r01, hi, r23));
}

static TVNNI5 void pack_a_vnni(float *Ap, const float *A, long sam, long sak, int m, int k0, int kc) {
    NX_ASSERT(sak == 1 && k0 % NX_QBLOCK == 0 && kc % NX_QBLOCK == 0);
    /* a zero row (past m) gets code 128 with d = 0: it contributes nothing */
    for (int b = 0; b < kc / NX_QBLOCK; b++)
        quant_block4((uint8_t *)Ap + (size_t)b * QA_BLK, A + k0 + b * NX_QBLOCK, sam, m);
}

/* 32 signed codes of the block whose fp16 scale is at dp and codes at qp (Q4_0 nibbles
 * unpacked and recentred). */
static inline TVNNI5 AI __m256i wcodes32(nx_dtype t, const uint8_t *dp, const uint8_t *qp, float *d) {
    uint16_t h;
    memcpy(&h, dp, sizeof h);
    *d = _cvtsh_ss(h);
    if (t == NX_Q8_0) return _mm256_loadu_si256((const __m256i *)qp);
    __m128i qs = _mm_loadu_si128((const __m128i *)qp), m4 = _mm_set1_epi8(15);
    __m128i lo = _mm_and_si128(qs, m4), hi = _mm_and_si128(_mm_srli_epi16(qs, 4), m4);
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

/* 16 rows at a time: their 8 code quads form a 16x8 dword block, transposed into the quad
 * rows; -128·Σw comes from vpdpbusd against ones on the transposed quads. x8: W in the
 * interleaved layout (from a group's first row), else in row order. */
static inline TVNNI5 AI void pack_b_vnni_typed(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0,
                                                int kc, const bool x8) {
    const size_t bs = t == NX_Q8_0 ? sizeof(nx_block_q8_0) : sizeof(nx_block_q4_0);
    for (int b = 0; b < kc / NX_QBLOCK; b++) {
        uint8_t *p = (uint8_t *)Bp + (size_t)b * QB_BLK;
        float *dw = (float *)p;
        int32_t *corr = (int32_t *)(p + NR5 * 4), *wq = (int32_t *)(p + NR5 * 8);
        const int blk = k0 / NX_QBLOCK + b;
        for (int g = 0; g < NR5 / 16; g++) {
            __m512 r[16];
            /* x8: the pair of blk in the two 8-row groups (nx__x8_block, with the row constant) */
            const uint8_t *pg[2] = {NULL, NULL};
            if (x8)
                for (int h = 0; h < 2; h++)
                    pg[h] = (const uint8_t *)W + (size_t)(2 * g + h) * 8 * rb + (size_t)(blk / 2) * 16 * bs +
                            (size_t)(blk % 2) * 16;
            for (int i = 0; i < 16; i++) {
                int o = g * 16 + i;
                float d = 0.0f;
                __m256i q = _mm256_setzero_si256();
                if (o < n) {
                    const uint8_t *dp, *qp;
                    if (x8) {
                        dp = pg[i / 8] + (i % 8) * 2;
                        qp = pg[i / 8] + 32 + (size_t)(i % 8) * 2 * (bs - 2) + (size_t)(blk % 2) * ((bs - 2) - 16);
                    } else {
                        dp = (const uint8_t *)W + (size_t)o * rb + (size_t)blk * bs;
                        qp = dp + 2;
                    }
                    q = wcodes32(t, dp, qp, &d);
                }
                dw[o] = d;
                r[i] = _mm512_castsi512_ps(_mm512_castsi256_si512(q));
            }
            transpose16(r);
            __m512i sum = _mm512_setzero_si512();
            for (int qd = 0; qd < 8; qd++) {
                __m512i v = _mm512_castps_si512(r[qd]);
                sum = _mm512_dpbusd_epi32(sum, _mm512_set1_epi8(1), v);
                _mm512_store_si512(wq + qd * NR5 + g * 16, v);
            }
            _mm512_store_si512(corr + g * 16, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 7)));
        }
    }
}

static TVNNI5 void pack_b_vnni(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    if (t == NX_Q8_0) pack_b_vnni_typed(Bp, NX_Q8_0, W, rb, n, k0, kc, false);
    else pack_b_vnni_typed(Bp, NX_Q4_0, W, rb, n, k0, kc, false);
}

static TVNNI5 void pack_b_vnni_x8(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    if (t == NX_Q8_0) pack_b_vnni_typed(Bp, NX_Q8_0, W, rb, n, k0, kc, true);
    else pack_b_vnni_typed(Bp, NX_Q4_0, W, rb, n, k0, kc, true);
}

const nx_gemm_vt nx__gemm_vnni_vt = {"avx512-vnni", MRQ, NR5, KCQ, QA_BLK / 4, tile_vnni, pack_a_vnni, pack_b_vnni, pack_b_vnni_x8};

#else /* not x86-64: the tables alias the scalar variant so callers need no #ifdef. */

const nx_gemm_vt nx__gemm_avx2_vt = {"avx2-unavailable", 4, 16, NX_GEMM_KC, 128, NULL, NULL, NULL, NULL};
const nx_gemm_vt nx__gemm_avx512_vt = {"avx512-unavailable", 4, 16, NX_GEMM_KC, 128, NULL, NULL, NULL, NULL};
const nx_gemm_vt nx__gemm_vnni_vt = {"avx512-vnni-unavailable", 4, 16, NX_GEMM_KC, 128, NULL, NULL, NULL, NULL};
int nx__cpu_has_avx512vnni(void) { return 0; }

#endif
