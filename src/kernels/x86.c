/*
 * x86.c - AVX2+FMA and AVX-512 variants of the hot kernels.
 *
 * Compiled with per-function __attribute__((target)) so the rest of the binary stays
 * baseline x86-64; dispatch.c only calls a variant after CPUID says the CPU has it.
 *
 * matmul_rows: y = x·Wᵀ + b is a set of dot products of token rows with weight rows. A
 * register tile of NT tokens x NR weight rows keeps NT·NR vector accumulators; every step
 * loads NT + NR vectors for NT·NR FMAs, so weights are read once per tile of tokens (decode
 * is bandwidth-bound and reads each weight once; prefill reuses a weight row across 4
 * tokens in registers and a 64-token block of x from L2). The K tail uses masked loads, so
 * every output element sees the identical FMA sequence and the same horizontal reduction
 * whatever tile it lands in: results do not depend on T, the tiling or the thread split.
 */
#include "kernels/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define TOKEN_BLOCK 64

int nx__cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
int nx__cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && nx__cpu_has_avx2();
}

/* ---- AVX-512 ------------------------------------------------------------------------------ */
#define T512 __attribute__((target("avx512f,avx2,fma")))

static inline T512 __attribute__((always_inline)) void tile512(float *y, int ldy, const float *x, int ldx,
                                                               const float *W, int IN, const float *b, const int NT,
                                                               const int NR) {
    __m512 acc[4][4];
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= IN; k += 16) {
        __m512 wv[4];
        for (int j = 0; j < NR; j++) wv[j] = _mm512_loadu_ps(W + (size_t)j * IN + k);
        for (int i = 0; i < NT; i++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)i * ldx + k);
            for (int j = 0; j < NR; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (k < IN) {
        __mmask16 m = (__mmask16)((1u << (IN - k)) - 1u);
        __m512 wv[4];
        for (int j = 0; j < NR; j++) wv[j] = _mm512_maskz_loadu_ps(m, W + (size_t)j * IN + k);
        for (int i = 0; i < NT; i++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)i * ldx + k);
            for (int j = 0; j < NR; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NR; j++) y[(size_t)i * ldy + j] = _mm512_reduce_add_ps(acc[i][j]) + (b ? b[j] : 0.0f);
}

static T512 void matmul_rows_avx512(float *y, const float *x, const float *W, const float *b, int T, int IN, int OUT,
                                    int r0, int r1) {
    for (int t0 = 0; t0 < T; t0 += TOKEN_BLOCK) {
        int t1 = t0 + TOKEN_BLOCK < T ? t0 + TOKEN_BLOCK : T;
        int r = r0;
        for (; r + 4 <= r1; r += 4) {
            const float *w = W + (size_t)r * IN;
            const float *br = b ? b + r : NULL;
            int t = t0;
            for (; t + 4 <= t1; t += 4) tile512(y + (size_t)t * OUT + r, OUT, x + (size_t)t * IN, IN, w, IN, br, 4, 4);
            for (; t < t1; t++) tile512(y + (size_t)t * OUT + r, OUT, x + (size_t)t * IN, IN, w, IN, br, 1, 4);
        }
        for (; r < r1; r++) {
            const float *w = W + (size_t)r * IN;
            const float *br = b ? b + r : NULL;
            int t = t0;
            for (; t + 4 <= t1; t += 4) tile512(y + (size_t)t * OUT + r, OUT, x + (size_t)t * IN, IN, w, IN, br, 4, 1);
            for (; t < t1; t++) tile512(y + (size_t)t * OUT + r, OUT, x + (size_t)t * IN, IN, w, IN, br, 1, 1);
        }
    }
}

static T512 float dot_avx512(const float *a, const float *b, int n) {
    __m512 acc = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= n; k += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), acc);
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static T512 void axpy_avx512(float *y, float a, const float *x, int n) {
    __m512 av = _mm512_set1_ps(a);
    int k = 0;
    for (; k + 16 <= n; k += 16)
        _mm512_storeu_ps(y + k, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + k), _mm512_loadu_ps(y + k)));
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
        __m512 r = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + k), _mm512_maskz_loadu_ps(m, y + k));
        _mm512_mask_storeu_ps(y + k, m, r);
    }
}

const nx_kernel_vt nx__kernels_avx512_vt = {"avx512", matmul_rows_avx512, dot_avx512, axpy_avx512};

/* ---- AVX2 + FMA ---------------------------------------------------------------------------- */
#define T256 __attribute__((target("avx2,fma")))

static const int32_t k_mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline T256 __attribute__((always_inline)) float hsum256(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(lo);
    __m128 s = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

/* 16 ymm registers: a 2 x 4 tile keeps 8 accumulators + 6 loads live. */
static inline T256 __attribute__((always_inline)) void tile256(float *y, int ldy, const float *x, int ldx,
                                                               const float *W, int IN, const float *b, const int NT,
                                                               const int NR) {
    __m256 acc[2][4];
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= IN; k += 8) {
        __m256 wv[4];
        for (int j = 0; j < NR; j++) wv[j] = _mm256_loadu_ps(W + (size_t)j * IN + k);
        for (int i = 0; i < NT; i++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)i * ldx + k);
            for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    if (k < IN) {
        __m256i m = _mm256_loadu_si256((const __m256i *)(k_mask_tab + 8 - (IN - k)));
        __m256 wv[4];
        for (int j = 0; j < NR; j++) wv[j] = _mm256_maskload_ps(W + (size_t)j * IN + k, m);
        for (int i = 0; i < NT; i++) {
            __m256 xv = _mm256_maskload_ps(x + (size_t)i * ldx + k, m);
            for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NR; j++) y[(size_t)i * ldy + j] = hsum256(acc[i][j]) + (b ? b[j] : 0.0f);
}

static T256 void matmul_rows_avx2(float *y, const float *x, const float *W, const float *b, int T, int IN, int OUT,
                                  int r0, int r1) {
    for (int t0 = 0; t0 < T; t0 += TOKEN_BLOCK) {
        int t1 = t0 + TOKEN_BLOCK < T ? t0 + TOKEN_BLOCK : T;
        int r = r0;
        for (; r + 4 <= r1; r += 4) {
            const float *w = W + (size_t)r * IN;
            const float *br = b ? b + r : NULL;
            int t = t0;
            for (; t + 2 <= t1; t += 2) tile256(y + (size_t)t * OUT + r, OUT, x + (size_t)t * IN, IN, w, IN, br, 2, 4);
            for (; t < t1; t++) tile256(y + (size_t)t * OUT + r, OUT, x + (size_t)t * IN, IN, w, IN, br, 1, 4);
        }
        for (; r < r1; r++) {
            const float *w = W + (size_t)r * IN;
            const float *br = b ? b + r : NULL;
            int t = t0;
            for (; t + 2 <= t1; t += 2) tile256(y + (size_t)t * OUT + r, OUT, x + (size_t)t * IN, IN, w, IN, br, 2, 1);
            for (; t < t1; t++) tile256(y + (size_t)t * OUT + r, OUT, x + (size_t)t * IN, IN, w, IN, br, 1, 1);
        }
    }
}

static T256 float dot_avx2(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= n; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
    if (k < n) {
        __m256i m = _mm256_loadu_si256((const __m256i *)(k_mask_tab + 8 - (n - k)));
        acc = _mm256_fmadd_ps(_mm256_maskload_ps(a + k, m), _mm256_maskload_ps(b + k, m), acc);
    }
    return hsum256(acc);
}

static T256 void axpy_avx2(float *y, float a, const float *x, int n) {
    __m256 av = _mm256_set1_ps(a);
    int k = 0;
    for (; k + 8 <= n; k += 8)
        _mm256_storeu_ps(y + k, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + k), _mm256_loadu_ps(y + k)));
    for (; k < n; k++) y[k] = __builtin_fmaf(a, x[k], y[k]);
}

const nx_kernel_vt nx__kernels_avx2_vt = {"avx2", matmul_rows_avx2, dot_avx2, axpy_avx2};

#else /* not x86-64: only the reference exists; the tables alias it so callers need no #ifdef. */

int nx__cpu_has_avx2(void) { return 0; }
int nx__cpu_has_avx512(void) { return 0; }
const nx_kernel_vt nx__kernels_avx512_vt = {"avx512-unavailable", NULL, NULL, NULL};
const nx_kernel_vt nx__kernels_avx2_vt = {"avx2-unavailable", NULL, NULL, NULL};

#endif
