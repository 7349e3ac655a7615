/*
 * gemm_x86.c - AVX2+FMA and AVX-512 variants of the prefill GEMM's pieces (gemm.h).
 *
 * AVX-512: 8 tokens x 48 outputs per tile (24 zmm accumulators, 3 weight vectors; each x
 * element is an embedded broadcast), so one k step is 3 loads + 8 broadcasts per 24 FMAs. The
 * B micro-panel (192 x 48 floats, 36 KiB) stays in L1. 48 divides every Pythia width but
 * 1024-based ones; 8 divides the usual prompt lengths, so padding is rare. Both packers are
 * register transposes (16x16 for weights, converting 16-bit and block types on the way;
 * 8x8 for activations), so packing stays a few percent of the multiply.
 * AVX2: 6 x 16 tiles (12 ymm accumulators) on the portable packers.
 *
 * Every variant computes exactly the scalar variant's fmaf chain (gemm.c), so they agree bit
 * for bit; compiled with per-function target attributes, called only after CPUID agrees.
 */
#include "kernels/gemm.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* ---- AVX2 + FMA: 6 x 16 ------------------------------------------------------------------- */
#define T256 __attribute__((target("avx2,fma")))
#define MR2 6
#define NR2 16

static const int32_t k_lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static T256 void tile_avx2(const float *Ap, const float *Bp, int kc, float *C, long ldc, int m, int n, int first,
                           const float *bias) {
    __m256i m0 = _mm256_loadu_si256((const __m256i *)(k_lanes + 8 - NX_MIN(n, 8)));
    __m256i m1 = _mm256_loadu_si256((const __m256i *)(k_lanes + 8 - (n > 8 ? n - 8 : 0)));
    __m256 c[MR2][2];
    for (int i = 0; i < MR2; i++) {
        c[i][0] = c[i][1] = _mm256_setzero_ps();
        if (!first && i < m) {
            c[i][0] = _mm256_maskload_ps(C + (long)i * ldc, m0);
            c[i][1] = _mm256_maskload_ps(C + (long)i * ldc + 8, m1);
        }
    }
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(Bp + (size_t)k * NR2), b1 = _mm256_load_ps(Bp + (size_t)k * NR2 + 8);
        for (int i = 0; i < MR2; i++) {
            __m256 a = _mm256_broadcast_ss(Ap + (size_t)k * MR2 + i);
            c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
        }
    }
    __m256 bb0 = bias ? _mm256_maskload_ps(bias, m0) : _mm256_setzero_ps();
    __m256 bb1 = bias ? _mm256_maskload_ps(bias + 8, m1) : _mm256_setzero_ps();
    for (int i = 0; i < MR2; i++) {
        if (i >= m) break;
        __m256 v0 = bias ? _mm256_add_ps(c[i][0], bb0) : c[i][0], v1 = bias ? _mm256_add_ps(c[i][1], bb1) : c[i][1];
        _mm256_maskstore_ps(C + (long)i * ldc, m0, v0);
        _mm256_maskstore_ps(C + (long)i * ldc + 8, m1, v1);
    }
}

static void pack_a_avx2(float *Ap, const float *A, long sam, long sak, int m, int k0, int kc) {
    nx__gemm_pack_a_generic(Ap, MR2, A, sam, sak, m, k0, kc);
}

static void pack_b_avx2(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    nx__gemm_pack_b_generic(Bp, NR2, t, W, rb, n, k0, kc);
}

const nx_gemm_vt nx__gemm_avx2_vt = {"avx2", MR2, NR2, tile_avx2, pack_a_avx2, pack_b_avx2};

/* ---- AVX-512: 8 x 48 ------------------------------------------------------------------------ */
#define T512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define AI __attribute__((always_inline))
#define MR5 8
#define NR5 48

static inline T512 AI __mmask16 lanes16(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

static T512 void tile_avx512(const float *Ap, const float *Bp, int kc, float *C, long ldc, int m, int n, int first,
                             const float *bias) {
    const __mmask16 mk[3] = {lanes16(n), lanes16(n - 16), lanes16(n - 32)};
    __m512 c[MR5][3];
    for (int i = 0; i < MR5; i++)
        for (int j = 0; j < 3; j++)
            c[i][j] = !first && i < m ? _mm512_maskz_loadu_ps(mk[j], C + (long)i * ldc + 16 * j) : _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int k = 0; k < kc; k++) {
        const float *b = Bp + (size_t)k * NR5;
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32);
        for (int i = 0; i < MR5; i++) {
            __m512 a = _mm512_set1_ps(Ap[(size_t)k * MR5 + i]);
            c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
            c[i][2] = _mm512_fmadd_ps(a, b2, c[i][2]);
        }
    }
    for (int j = 0; j < 3; j++) {
        __m512 bj = bias ? _mm512_maskz_loadu_ps(mk[j], bias + 16 * j) : _mm512_setzero_ps();
        for (int i = 0; i < MR5; i++) {
            if (i >= m) break;
            _mm512_mask_storeu_ps(C + (long)i * ldc + 16 * j, mk[j], bias ? _mm512_add_ps(c[i][j], bj) : c[i][j]);
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
        const uint8_t *blk = row + (size_t)(k / NX_QBLOCK) * sizeof(nx_block_q8_0);
        float d;
        memcpy(&d, blk, sizeof d);
        __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 4 + k % NX_QBLOCK)));
        return _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(q));
    }
    case NX_Q4_0: {
        const uint8_t *blk = row + (size_t)(k / NX_QBLOCK) * sizeof(nx_block_q4_0);
        float d;
        memcpy(&d, blk, sizeof d);
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + 4)));
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

const nx_gemm_vt nx__gemm_avx512_vt = {"avx512", MR5, NR5, tile_avx512, pack_a_avx512, pack_b_avx512};

#else /* not x86-64: the tables alias the scalar variant so callers need no #ifdef. */

const nx_gemm_vt nx__gemm_avx2_vt = {"avx2-unavailable", 4, 16, NULL, NULL, NULL};
const nx_gemm_vt nx__gemm_avx512_vt = {"avx512-unavailable", 4, 16, NULL, NULL, NULL};

#endif
