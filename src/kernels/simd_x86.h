/*
 * simd_x86.h - AVX-512 building blocks shared by the x86 kernel files (x86.c, attn_x86.c).
 * Include it after <immintrin.h>, inside their x86-64 GCC/Clang block. The functions carry their
 * own target attribute (a subset of every caller's), so they inline into any AVX-512 kernel.
 */
#ifndef NX_SIMD_X86_H
#define NX_SIMD_X86_H

/* Σ of each of 16 vectors, as the 16 lanes of one: pairs of vectors are added lane-interleaved,
 * then pairs of pairs, then the four 128-bit quarters (45 operations for 16 sums). Every input
 * vector goes through the same fixed tree whatever its position, so a sum's bits depend only on
 * its own vector. */
static inline __attribute__((target("avx512f"), always_inline)) __m512 hsum16x16(const __m512 *a) {
    __m512 b[8], c[4];
    for (int i = 0; i < 8; i++)
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        __m512d u = _mm512_castps_pd(b[2 * i]), v = _mm512_castps_pd(b[2 * i + 1]);
        c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(u, v)), _mm512_castpd_ps(_mm512_unpackhi_pd(u, v)));
    }
    /* c[i]'s quarter L holds quarter-L partial sums of vectors 4i..4i+3 */
    __m512 e01 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x44), _mm512_shuffle_f32x4(c[0], c[1], 0xEE));
    __m512 e23 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], 0x44), _mm512_shuffle_f32x4(c[2], c[3], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_f32x4(e01, e23, 0x88), _mm512_shuffle_f32x4(e01, e23, 0xDD));
}

#endif
