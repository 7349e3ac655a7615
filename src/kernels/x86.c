/*
 * x86.c - AVX2+FMA and AVX-512 variants of the hot kernels.
 *
 * Compiled with per-function __attribute__((target)) so the rest of the binary stays
 * baseline x86-64; dispatch.c only calls a variant after CPUID says the CPU has it.
 *
 * Prefill (more than NX_MV_MAX_T tokens) is the GEMM of gemm.c / gemm_x86.c.
 *
 * Decode: mv_rows and qdot_rows stream row-major weight rows once for all T <= NX_MV_MAX_T
 * tokens, several rows at a time (independent load streams, shared activation loads), with one
 * vector accumulator per (row, token) reduced at the end. Every output's arithmetic depends only
 * on its row and token, never on the tile it falls in or the thread split.
 */
#include "kernels/kernels.h"

#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "kernels/simd_x86.h"

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

#define AI __attribute__((always_inline))

/* 16 weights at element idx of a row: fp32, or 16-bit widened exactly (bf16 is the top half of
 * an fp32; IEEE half via vcvtph2ps). wt is a compile-time constant in every caller. */
static inline T512 AI __m512 wload512(const void *W, size_t idx, const nx_dtype wt) {
    if (wt == NX_F32) return _mm512_loadu_ps((const float *)W + idx);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)W + idx));
    if (wt == NX_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* s[i] = Σ a[i] for n <= 16 vectors, by hsum16x16 with the rest padded with zeros. Each vector
 * goes through the same fixed tree wherever it sits, so a decode output's bits never depend on
 * which tile it shared the reduction with; one call costs about what three separate
 * _mm512_reduce_add_ps do. */
static inline T512 AI void hsum_n(const __m512 *a, const int n, float *s) {
    __m512 v[16];
    float all[16];
    for (int i = 0; i < 16; i++) v[i] = i < n ? a[i] : _mm512_setzero_ps();
    _mm512_storeu_ps(all, hsum16x16(v));
    memcpy(s, all, (size_t)n * sizeof(float));
}

/* sums[r·NT + t] = the lanes of acc[r][t] summed, for a tile of NR rows x NT tokens. */
static inline T512 AI void hsum_tile(const __m512 acc[][8], const int NR, const int NT, float *sums) {
    __m512 flat[16];
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) flat[r * NT + t] = acc[r][t];
    hsum_n(flat, NR * NT, sums);
}

/* Decode on row-major float rows: NR rows x NT tokens of 16-lane accumulators (NR·NT <= 16),
 * one pass over the NR rows' weights for all tokens; x rows come from L1. The IN % 16 tail is
 * scalar. Each (row, token) sum depends only on that row and token, never on the grouping. */
static inline T512 AI void mv512_tile(float *y, const float *x, const uint8_t *W, size_t rb, const float *b, int IN,
                                      int OUT, int o, const int NR, const int NT, const nx_dtype wt) {
    __m512 acc[4][8];
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    const uint8_t *row = W + (size_t)o * rb;
    const size_t es = wt == NX_F32 ? 4 : 2, ahead = 4 * rb;   /* the next tile's rows: see qtile512 */
    int k = 0;
    for (; k + 16 <= IN; k += 16) {
        __m512 w[4];
        for (int r = 0; r < NR; r++) {
            _mm_prefetch((const char *)row + (size_t)r * rb + ahead + (size_t)k * es, _MM_HINT_T1);
            /* 16-bit rows have a conversion per load and stream short of the probe on the T1
             * stream alone (as the interleaved Q4_0 kernel, qtile512_x8): a second one, 128
             * values ahead into L1, gave generation 410M bf16 +4%, 160M bf16 +2.5%, f16 +4.5%
             * (5 alternating rounds). fp32 rows gained nothing (160M -0.8%, 410M -1.4%). */
            if (wt != NX_F32) _mm_prefetch((const char *)row + (size_t)r * rb + (size_t)(k + 128) * es, _MM_HINT_T0);
            w[r] = wload512(row + (size_t)r * rb, (size_t)k, wt);
        }
        for (int t = 0; t < NT; t++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)t * IN + k);
            for (int r = 0; r < NR; r++) acc[r][t] = _mm512_fmadd_ps(w[r], xv, acc[r][t]);
        }
    }
    float sums[16];
    hsum_tile(acc, NR, NT, sums);
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) {
            float s = sums[r * NT + t];
            const uint8_t *wr = row + (size_t)r * rb;
            for (int i = k; i < IN; i++) {
                float wv = wt == NX_F32    ? ((const float *)wr)[i]
                           : wt == NX_BF16 ? nx_bf16_to_f32(((const uint16_t *)wr)[i])
                                           : nx_f16_to_f32(((const uint16_t *)wr)[i]);
                s += x[(size_t)t * IN + i] * wv;
            }
            y[(size_t)t * OUT + o + r] = s + (b ? b[o + r] : 0.0f);
        }
}

static inline T512 AI void mv512(float *y, const float *x, const void *W, const float *b, int T, int IN, int OUT, int r0,
                                 int r1, const nx_dtype wt) {
    size_t rb = nx__row_bytes(wt, IN);
    const uint8_t *w = W;
    /* 4 rows for up to 4 tokens, 2 rows for 5..8: at most 16 accumulators of the 32 registers. */
#define MV512_T(NR, NT)                                                                                               \
    do {                                                                                                               \
        int o = r0;                                                                                                    \
        for (; o + NR <= r1; o += NR) mv512_tile(y, x, w, rb, b, IN, OUT, o, NR, NT, wt);                             \
        for (; o < r1; o++) mv512_tile(y, x, w, rb, b, IN, OUT, o, 1, NT, wt);                                        \
    } while (0)
    switch (T) {
    case 1: MV512_T(4, 1); break;
    case 2: MV512_T(4, 2); break;
    case 3: MV512_T(4, 3); break;
    case 4: MV512_T(4, 4); break;
    case 5: MV512_T(2, 5); break;
    case 6: MV512_T(2, 6); break;
    case 7: MV512_T(2, 7); break;
    default: MV512_T(2, 8); break;
    }
#undef MV512_T
}

static T512 void mv_rows_avx512(float *y, const float *x, const void *W, nx_dtype wt, const float *b, int T, int IN,
                                int OUT, int r0, int r1) {
    switch (wt) {
    case NX_F32: mv512(y, x, W, b, T, IN, OUT, r0, r1, NX_F32); break;
    case NX_BF16: mv512(y, x, W, b, T, IN, OUT, r0, r1, NX_BF16); break;
    default: mv512(y, x, W, b, T, IN, OUT, r0, r1, NX_F16); break;
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

/* expf for 16 lanes (Cephes-style): n = round(x·log2 e), r = x - n·ln 2 in two parts, a degree-6
 * polynomial for e^r, then ·2^n with scalef (exact, handles the denormal/zero range). About
 * 1-2 ulp; inputs are clamped to [-104, 88.7] (below: 0; above: no inf). */
static inline T512 __attribute__((always_inline)) __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* Φ(x) = P(N(0,1) <= x) from erfc(|x|/√2) = t·exp(-z² + poly(t)), t = 1/(1 + z/2)
 * (Numerical Recipes' erfcc, fractional error < 1.2e-7 everywhere). */
static inline T512 __attribute__((always_inline)) __m512 phi512(__m512 x) {
    __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.70710678118654752f));
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    __m512 erfc = _mm512_mul_ps(t, exp512(_mm512_fnmadd_ps(z, z, p)));
    __m512 half = _mm512_mul_ps(erfc, _mm512_set1_ps(0.5f));
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_sub_ps(half, pos, _mm512_set1_ps(1.0f), half);
}

/* x / (1 + e^(-a x)) */
static inline T512 __attribute__((always_inline)) __m512 sigmul512(__m512 x, float a) {
    __m512 e = exp512(_mm512_mul_ps(x, _mm512_set1_ps(-a)));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* 0.5·x·(1 + tanh(y)) with tanh(y) = 1 - 2/(e^(2y) + 1) */
static inline T512 __attribute__((always_inline)) __m512 tanhgelu512(__m512 x, __m512 y) {
    __m512 e = exp512(_mm512_add_ps(y, y));
    __m512 th = _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), th));
}

static T512 void act_avx512(float *x, size_t n, nx_kact act) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i), r;
        switch (act) {
        case NX_KACT_GELU: r = _mm512_mul_ps(v, phi512(v)); break;
        case NX_KACT_GELU_TANH: {
            __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
            __m512 y = _mm512_mul_ps(_mm512_set1_ps(0.79788456080286536f),
                                     _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), v3, v));
            r = tanhgelu512(v, y);
            break;
        }
        case NX_KACT_GELU_FAST: {
            __m512 inner = _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), _mm512_mul_ps(v, v), _mm512_set1_ps(1.0f));
            r = tanhgelu512(v, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.7978845608f), v), inner));
            break;
        }
        case NX_KACT_RELU: r = _mm512_max_ps(v, _mm512_setzero_ps()); break;
        case NX_KACT_SILU: r = sigmul512(v, 1.0f); break;
        case NX_KACT_QUICK_GELU: r = sigmul512(v, 1.702f); break;
        default: r = v; break;
        }
        _mm512_mask_storeu_ps(x + i, m, r);
    }
}

static T512 float exp_sum_avx512(float *x, int n, float mx) {
    __m512 acc = _mm512_setzero_ps(), mv = _mm512_set1_ps(mx);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv));
        _mm512_mask_storeu_ps(x + i, m, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
    }
    return _mm512_reduce_add_ps(acc);
}

/* ---- AVX2 + FMA ---------------------------------------------------------------------------- */
#define T256 __attribute__((target("avx2,fma,f16c")))

static const int32_t k_mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline T256 __attribute__((always_inline)) float hsum256(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(lo);
    __m128 s = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

/* 8 weights at element idx of a row, widened exactly (as wload512). */
static inline T256 AI __m256 wload256(const void *W, size_t idx, const nx_dtype wt) {
    if (wt == NX_F32) return _mm256_loadu_ps((const float *)W + idx);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)W + idx));
    if (wt == NX_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

/* Decode on row-major float rows, one row at a time for all T tokens (the row stays in L1
 * after the first token), 8 lanes x 2 accumulators per token; scalar IN % 16 tail. */
static inline T256 AI void mv256(float *y, const float *x, const void *W, const float *b, int T, int IN, int OUT, int r0,
                                 int r1, const nx_dtype wt) {
    size_t rb = nx__row_bytes(wt, IN);
    for (int o = r0; o < r1; o++) {
        const uint8_t *row = (const uint8_t *)W + (size_t)o * rb;
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * IN;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            int k = 0;
            for (; k + 16 <= IN; k += 16) {
                a0 = _mm256_fmadd_ps(wload256(row, (size_t)k, wt), _mm256_loadu_ps(xt + k), a0);
                a1 = _mm256_fmadd_ps(wload256(row, (size_t)k + 8, wt), _mm256_loadu_ps(xt + k + 8), a1);
            }
            float s = hsum256(_mm256_add_ps(a0, a1));
            for (; k < IN; k++) {
                float wv = wt == NX_F32    ? ((const float *)row)[k]
                           : wt == NX_BF16 ? nx_bf16_to_f32(((const uint16_t *)row)[k])
                                           : nx_f16_to_f32(((const uint16_t *)row)[k]);
                s += xt[k] * wv;
            }
            y[(size_t)t * OUT + o] = s + (b ? b[o] : 0.0f);
        }
    }
}

static T256 void mv_rows_avx2(float *y, const float *x, const void *W, nx_dtype wt, const float *b, int T, int IN,
                              int OUT, int r0, int r1) {
    switch (wt) {
    case NX_F32: mv256(y, x, W, b, T, IN, OUT, r0, r1, NX_F32); break;
    case NX_BF16: mv256(y, x, W, b, T, IN, OUT, r0, r1, NX_BF16); break;
    default: mv256(y, x, W, b, T, IN, OUT, r0, r1, NX_F16); break;
    }
}

/* 32 signed weights of block b of a Q8_0 / Q4_0 row (Q4_0 nibbles unpacked and recentred). */
static inline T256 __attribute__((always_inline)) __m256i qload256(const void *row, int bidx, nx_dtype wt, float *d,
                                                                  const float *h2f) {
    if (wt == NX_Q8_0) {
        const nx_block_q8_0 *w = (const nx_block_q8_0 *)row + bidx;
        *d = h2f[w->d];
        return _mm256_loadu_si256((const __m256i *)w->q);
    }
    const nx_block_q4_0 *w = (const nx_block_q4_0 *)row + bidx;
    *d = h2f[w->d];
    __m128i qs = _mm_loadu_si128((const __m128i *)w->qs), m4 = _mm_set1_epi8(15);
    __m128i lo = _mm_and_si128(qs, m4), hi = _mm_and_si128(_mm_srli_epi16(qs, 4), m4);
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

/* Σ w·x of 32 int8 pairs as 8 int32 lanes: |w| (unsigned) times x·sign(w) (signed) with
 * maddubs (pair sums stay inside int16: 2·128·127 < 32768), then pairs of int16 to int32. */
static inline T256 __attribute__((always_inline)) __m256i idot256(__m256i w, __m256i x) {
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* One row for all T tokens (the row stays in L1 after the first). */
static T256 void qdot_rows_avx2(float *y, const nx_xq8 *xq, const void *W, nx_dtype wt, const float *b, int T,
                                int IN, int OUT, int r0, int r1) {
    size_t rb = nx__row_bytes(wt, IN);
    int nb = IN / NX_QBLOCK;
    const float *h2f = nx__f16_table();
    for (int o = r0; o < r1; o++) {
        const void *row = (const uint8_t *)W + (size_t)o * rb;
        for (int t = 0; t < T; t++) {
            const nx_xq8 *xt = xq + (size_t)t * nb;
            __m256 acc = _mm256_setzero_ps();
            for (int k = 0; k < nb; k++) {
                float dw;
                __m256i w = qload256(row, k, wt, &dw, h2f);
                __m256i s = idot256(w, _mm256_loadu_si256((const __m256i *)xt[k].q));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * xt[k].d), acc);
            }
            y[(size_t)t * OUT + o] = hsum256(acc) + (b ? b[o] : 0.0f);
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

/* AVX2 keeps the scalar activation and exp (libm): correct everywhere, only slower. */
const nx_kernel_vt nx__kernels_avx2_vt = {"avx2",         dot_avx2,       axpy_avx2,    nx__act_ref,    nx__exp_sum_ref,
                                          nx__attention_avx2, mv_rows_avx2, qdot_rows_avx2, NULL, nx__quantize_row_xq8,
                                          nx__layernorm_ref};

/* ---- AVX-512 VNNI (after the AVX2 kernels it falls back to) ---------------------------- */
#define TVNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

static int cpu_has_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}

static inline TVNNI AI const float *ldh(const void *p, const float *h2f) {   /* a block's scale */
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return h2f + h;
}

/* Decode on Q8_0/Q4_0 rows, two 32-blocks (a "pair", 64 weights) per step. vpdpbusd multiplies
 * unsigned by signed bytes and sums groups of 4 into 16 int32 lanes, so each side of a pair is
 * laid out to make the weight side cheap: it is loaded once per row for all tokens, while the
 * activation side is built once per token for all rows of a tile. Per row and pair the weights
 * cost one broadcast load, one masked broadcast load and one logic op, then per (row, token)
 * one vpdpbusd, one scale multiply, one convert and one fma - about half the work of
 * unpacking the weights into element order.
 *
 * Lane layouts (int32 lane L sums bytes 4L..4L+3; "a" = block 2p, "c" = block 2p+1):
 *  Q8_0: bytes [a.q 0..31 | c.q 0..31]. Weights become unsigned as w+128 (xor 0x80), and the
 *        lane sums start at -128·Σx over the lane's four activations: Σ(w+128)x - 128Σx = Σwx.
 *  Q4_0: bytes [a.qs | c.qs | a.qs | c.qs] & [0x0F x32 | 0xF0 x32]: the low 32 bytes hold the
 *        codes of elements 0..15 of each block, the high 32 bytes 16 times the codes of elements
 *        16..31. The activations are [a.q 0..15 | c.q 0..15 | a.q 16..31 | c.q 16..31], the
 *        lane sums start at -8·Σx (low half) or -128·Σx (high half), and the high half's
 *        activation scale is divided by 16. Scaling by 16 and 1/16 is exact in fp32 (the int32
 *        sums stay far below 2^24 and the scales are normal numbers), so every lane's float
 *        product equals the one of the plain layout: Σ(c-8)x = Σcx - 8Σx.
 * Each (row, token) accumulates its pairs in order into one 16-lane fp32 vector, reduced at the
 * end, so the bits depend only on the row and the token, not on the tile or the thread split. */
typedef struct {
    __m512i x;     /* signed activation bytes, in the weight side's order */
    __m512i off;   /* each int32 lane's starting value (the offset correction) */
    __m512 d;      /* the activation scale of each lane's block */
} qx512;

/* The activation side of pair p of one token's Q8_0 row; full == 0: block 2p only (the last of
 * an odd count), the other half's bytes, offsets and scales being zero. */
static inline TVNNI AI qx512 qx_pair(const nx_xq8 *xq, int p, int full, const nx_dtype wt) {
    const nx_xq8 *a = xq + 2 * p, *c = a + 1;
    __m256i lo = _mm256_loadu_si256((const __m256i *)a->q);
    __m256i hi = full ? _mm256_loadu_si256((const __m256i *)c->q) : _mm256_setzero_si256();
    __m512 da = _mm512_set1_ps(a->d), dc = full ? _mm512_set1_ps(c->d) : _mm512_setzero_ps();
    qx512 r;
    if (wt == NX_Q8_0) {
        r.x = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        r.d = _mm512_mask_blend_ps(0xFF00, da, dc);
        r.off = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), r.x);
    } else {
        r.x = _mm512_permutex2var_epi64(_mm512_castsi256_si512(lo), _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0),
                                        _mm512_castsi256_si512(hi));
        r.d = _mm512_mul_ps(_mm512_mask_blend_ps(0xF0F0, da, dc),
                            _mm512_set_ps(0.0625f, 0.0625f, 0.0625f, 0.0625f, 0.0625f, 0.0625f, 0.0625f, 0.0625f, 1, 1, 1,
                                          1, 1, 1, 1, 1));
        __m512i k = _mm512_inserti64x4(_mm512_set1_epi8(8), _mm256_set1_epi8((char)0x80), 1);
        r.off = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k, r.x);
    }
    r.off = _mm512_sub_epi32(_mm512_setzero_si512(), r.off);
    return r;
}

/* The weight side of pair p of a row: unsigned bytes in the lane layout above, and the weight
 * scale of each lane's block. */
static inline TVNNI AI __m512i qw_pair(const uint8_t *row, int p, int full, const nx_dtype wt, __m512 *d,
                                       const float *h2f) {
    const size_t bs = wt == NX_Q8_0 ? sizeof(nx_block_q8_0) : sizeof(nx_block_q4_0);
    const uint8_t *a = row + (size_t)2 * p * bs, *c = a + bs;
    __m512 da = _mm512_set1_ps(*ldh(a, h2f));
    if (wt == NX_Q8_0) {
        __m512i w = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a + 2)));
        if (full) {
            w = _mm512_mask_broadcast_i64x4(w, 0xF0, _mm256_loadu_si256((const __m256i *)(c + 2)));
            da = _mm512_mask_broadcastss_ps(da, 0xFF00, _mm_load_ss(ldh(c, h2f)));
        }
        *d = da;
        return _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
    }
    __m512i w = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(a + 2)));
    if (full) {
        w = _mm512_mask_broadcast_i32x4(w, 0xF0F0, _mm_loadu_si128((const __m128i *)(c + 2)));
        da = _mm512_mask_broadcastss_ps(da, 0xF0F0, _mm_load_ss(ldh(c, h2f)));
    }
    *d = da;
    return _mm512_and_si512(w, _mm512_inserti64x4(_mm512_set1_epi8(0x0F), _mm256_set1_epi8((char)0xF0), 1));
}

/* One pair of every (row, token) of a tile: the weight sides w, dw of its NR rows against the
 * activation side of each of its NT tokens, built here. */
static inline TVNNI AI void qtile_pair(__m512 acc[8][8], const __m512i *w, const __m512 *dw, const nx_xq8 *xq, int nb,
                                       int p, int full, const int NR, const int NT, const nx_dtype wt) {
    for (int t = 0; t < NT; t++) {
        qx512 xv = qx_pair(xq + (size_t)t * nb, p, full, wt);
        for (int r = 0; r < NR; r++) {
            __m512i s = _mm512_dpbusd_epi32(xv.off, w[r], xv.x);
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw[r], xv.d), acc[r][t]);
        }
    }
}

/* A tile's sums, reduced together, plus the bias, into rows o.. of every token. */
static inline TVNNI AI void qtile_store(float *y, __m512 acc[8][8], const float *b, int OUT, int o, const int NR,
                                        const int NT) {
    float sums[16];
    hsum_tile((const __m512(*)[8])acc, NR, NT, sums);
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) y[(size_t)t * OUT + o + r] = sums[r * NT + t] + (b ? b[o + r] : 0.0f);
}

/* NR rows x NT tokens of y = x·Wᵀ + b over block pairs. */
static inline TVNNI AI void qtile512(float *y, const nx_xq8 *xq, const uint8_t *W, size_t rb, const float *b,
                                     int IN, int OUT, int o, const int NR, const int NT, const nx_dtype wt,
                                     const float *h2f) {
    int nb = IN / NX_QBLOCK, np = (nb + 1) / 2;
    __m512 acc[8][8];
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    const uint8_t *row = W + (size_t)o * rb;
    /* Rows are short streams (a few hundred bytes) that the hardware prefetcher barely trains
     * on, so the rows 16 ahead are prefetched explicitly, spread over the pair loop. Into L2
     * (T1), as in mv512_tile: with the weights streamed from memory by two threads, T1 gave
     * 3-7% more than T0 for every weight type, T2 the same as T1 and NTA half; half the
     * distance lost 12%, twice the distance nothing (bench_decode, paired runs). */
    const size_t ps = 2 * (wt == NX_Q8_0 ? sizeof(nx_block_q8_0) : sizeof(nx_block_q4_0)), ahead = 16 * rb;
    for (int p = 0; p < np; p++) {
        int full = 2 * p + 1 < nb;
        __m512i w[8];
        __m512 dw[8];
        for (int r = 0; r < NR; r++) {
            _mm_prefetch((const char *)row + (size_t)r * rb + ahead + (size_t)p * ps, _MM_HINT_T1);
            /* A Q8_0 pair is 68 bytes: one prefetch per pair would skip every seventeenth line. */
            if (ps > 64) _mm_prefetch((const char *)row + (size_t)r * rb + ahead + (size_t)p * ps + 64, _MM_HINT_T1);
            /* Q8_0: and 8 pairs ahead into L1, as qtile512_x8 (410M q8 generation 1.015x, 9
             * paired rounds, quartiles 1.00-1.035). */
            if (wt == NX_Q8_0) {
                const char *nr = (const char *)row + (size_t)r * rb + (size_t)(p + 8) * ps;
                _mm_prefetch(nr, _MM_HINT_T0);
                _mm_prefetch(nr + 64, _MM_HINT_T0);
            }
            w[r] = qw_pair(row + (size_t)r * rb, p, full, wt, &dw[r], h2f);
        }
        qtile_pair(acc, w, dw, xq, nb, p, full, NR, NT, wt);
    }
    qtile_store(y, acc, b, OUT, o, NR, NT);
}

/* One token, NR rows, the activation side of every pair built beforehand (xp[p], for all tiles
 * of the call): the same operations on the same values as qtile512 with NT = 1, so the same
 * bits; the tile loop keeps only the weight side. For Q4_0 (the most arithmetic per byte) this
 * took one core from 81 to 91-97 GFLOP/s on 160M-shaped matrices in L3 (`bench_quant 1`); Q8_0
 * gained nothing there and decoded 2.5% slower in the model, so it keeps qtile512. */
static inline TVNNI AI void qtile512_x1(float *y, const qx512 *xp, const uint8_t *W, size_t rb, const float *b,
                                        int IN, int o, const int NR, const nx_dtype wt, const float *h2f) {
    int nb = IN / NX_QBLOCK, np = (nb + 1) / 2;
    __m512 acc[8];
    for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_ps();
    const uint8_t *row = W + (size_t)o * rb;
    const size_t ps = 2 * (wt == NX_Q8_0 ? sizeof(nx_block_q8_0) : sizeof(nx_block_q4_0)), ahead = 16 * rb;
    for (int p = 0; p < np; p++) {
        int full = 2 * p + 1 < nb;
        const qx512 xv = xp[p];
        for (int r = 0; r < NR; r++) {
            const uint8_t *rr = row + (size_t)r * rb;
            _mm_prefetch((const char *)rr + ahead + (size_t)p * ps, _MM_HINT_T1);
            if (ps > 64) _mm_prefetch((const char *)rr + ahead + (size_t)p * ps + 64, _MM_HINT_T1);
            __m512 dw;
            __m512i w = qw_pair(rr, p, full, wt, &dw, h2f);
            __m512i s = _mm512_dpbusd_epi32(xv.off, w, xv.x);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, xv.d), acc[r]);
        }
    }
    float sums[16];
    hsum_n(acc, NR, sums);
    for (int r = 0; r < NR; r++) y[o + r] = sums[r] + (b ? b[o + r] : 0.0f);
}

/* IN <= 8192: the prebuilt activation pairs (24 KiB) on the stack; 8 rows per tile (4 decoded
 * 4% slower) */
enum { Q1_MAX_PAIRS = 128, Q1_NR = 8 };

static inline TVNNI AI void q512(float *y, const nx_xq8 *xq, const void *W, const float *b, int T, int IN,
                                 int OUT, int r0, int r1, const nx_dtype wt) {
    size_t rb = nx__row_bytes(wt, IN);
    const uint8_t *w = W;
    const float *h2f = nx__f16_table();
    /* 8 rows for one token (the activation side is built once per 8 rows), 4 for up to 4
     * tokens, 2 for more: at most 16 accumulators plus the operands. */
#define Q512_T(NR, NT)                                                                                                 \
    do {                                                                                                               \
        int o = r0;                                                                                                    \
        for (; o + NR <= r1; o += NR) qtile512(y, xq, w, rb, b, IN, OUT, o, NR, NT, wt, h2f);                              \
        for (; o < r1; o++) qtile512(y, xq, w, rb, b, IN, OUT, o, 1, NT, wt, h2f);                                         \
    } while (0)
    if (wt == NX_Q4_0 && T == 1 && (IN / NX_QBLOCK + 1) / 2 <= Q1_MAX_PAIRS) {
        _Alignas(64) qx512 xp[Q1_MAX_PAIRS];
        int nb = IN / NX_QBLOCK, np = (nb + 1) / 2;
        for (int p = 0; p < np; p++) xp[p] = qx_pair(xq, p, 2 * p + 1 < nb, wt);
        int o = r0;
        for (; o + Q1_NR <= r1; o += Q1_NR) qtile512_x1(y, xp, w, rb, b, IN, o, Q1_NR, wt, h2f);
        for (; o < r1; o++) qtile512_x1(y, xp, w, rb, b, IN, o, 1, wt, h2f);
        return;
    }
    switch (T) {
    case 1: Q512_T(8, 1); break;
    case 2: Q512_T(4, 2); break;
    case 3: Q512_T(4, 3); break;
    case 4: Q512_T(4, 4); break;
    case 5: Q512_T(2, 5); break;
    case 6: Q512_T(2, 6); break;
    case 7: Q512_T(2, 7); break;
    default: Q512_T(2, 8); break;
    }
#undef Q512_T
}

/* The same operations as the scalar nx__quantize_row_xq8 on 16 lanes: the block maximum is
 * exact in any order, d and 1/d are the same scalar expressions, and vcvtps2dq rounds to nearest
 * even as lrintf does in the default rounding mode, so the blocks are bit-identical. */
static T512 void quantize_q8_avx512(nx_xq8 *dst, const float *x, int n) {
    for (int b = 0; b < n / NX_QBLOCK; b++) {
        __m512 v0 = _mm512_loadu_ps(x + (size_t)b * NX_QBLOCK), v1 = _mm512_loadu_ps(x + (size_t)b * NX_QBLOCK + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        __m512 iv = _mm512_set1_ps(id);
        dst[b].d = d;
        _mm_storeu_si128((__m128i *)dst[b].q, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, iv))));
        _mm_storeu_si128((__m128i *)(dst[b].q + 16), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, iv))));
    }
}

static TVNNI void qdot_rows_avx512(float *y, const nx_xq8 *xq, const void *W, nx_dtype wt, const float *b,
                                   int T, int IN, int OUT, int r0, int r1) {
    if (!cpu_has_vnni()) {   /* a few loads per call: no shared state between threads */
        qdot_rows_avx2(y, xq, W, wt, b, T, IN, OUT, r0, r1);
        return;
    }
    if (wt == NX_Q8_0)
        q512(y, xq, W, b, T, IN, OUT, r0, r1, NX_Q8_0);
    else
        q512(y, xq, W, b, T, IN, OUT, r0, r1, NX_Q4_0);
}

/* ---- block weights in the interleaved layout (kernels.h nx__x8_block) -----------------------
 * A tile of a group's rows reads one forward stream (each pair's scales, then its rows' codes)
 * instead of one stream per row, and converts the pair's 16 scales with one vcvtph2ps instead
 * of a table load per block. The operations on the values are qtile512's, so every row gets
 * the bits it gets in row order. 410M Q4_0 generation: see docs/QUANT.md. */

/* Row r's weight side of the pair at pg: the bytes qw_pair gives for the row-order layout. */
static inline TVNNI AI __m512i qw_pair_x8(const uint8_t *pg, int r, const nx_dtype wt) {
    if (wt == NX_Q8_0)
        return _mm512_xor_si512(_mm512_loadu_si512(pg + 32 + 64 * r), _mm512_set1_epi8((char)0x80));
    __m512i w = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(pg + 32 + 32 * r)));
    return _mm512_and_si512(w, _mm512_inserti64x4(_mm512_set1_epi8(0x0F), _mm256_set1_epi8((char)0xF0), 1));
}

/* Row r's lane scales (qw_pair's *d) from the pair's scales D = [block 2p of rows 0..7 | block
 * 2p+1 of rows 0..7] as fp32 (vcvtph2ps is exact, as the table is). */
static inline TVNNI AI __m512 qd_pair_x8(__m512 D, int r, const nx_dtype wt) {
    const __m512i a = _mm512_set1_epi32(r), c = _mm512_set1_epi32(8 + r);
    return _mm512_permutexvar_ps(_mm512_mask_blend_epi32(wt == NX_Q8_0 ? 0xFF00 : 0xF0F0, a, c), D);
}

/* One token's activation scales of pair p in the pair's scale order: xs[0] = [d_x of block 2p
 * x8 | of block 2p+1 x8], and for Q4_0 xs[1] = xs[0]·(1/16), the high half's (qx_pair's d).
 * D·xs[0] (and D·xs[1]) then hold the products d_w·d_x of all 8 rows at once, and a row's lane
 * scales are one permute of them: the same fp32 products qtile512 forms one row at a time. */
static inline TVNNI AI void qs_pair_x8(__m512 *xs, const nx_xq8 *xq, int p) {
    xs[0] = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(xq[2 * p].d), _mm512_set1_ps(xq[2 * p + 1].d));
    xs[1] = _mm512_mul_ps(xs[0], _mm512_set1_ps(0.0625f));
}

/* Rows R0..R0+NR-1 of the group at grp (output rows o..), NT tokens; PRE: one token, the
 * activation side of every pair prebuilt in xp and its scales in xs (qs_pair_x8). The tile
 * prefetches eighths PF0..PF1-1 of every pair of the stream (0, 0: none), twice: 16 rows ahead
 * into L2 (T1), and 8 pairs ahead into L1 (T0). A group read in several passes (2 to 8 tokens)
 * spreads its pairs' lines over the passes: prefetched all in the first pass, they came in
 * bursts, and a 2048x65536 matrix ran at 4 tokens 19% slower (Q8_0) and 8% slower (Q4_0) than in
 * row order; spread, at 1.00x and 1.07x of row order. The one T1 stream left the kernel at 87% of the read
 * probe's rate from memory (one core, 1 GiB matrix), where the probe has no arithmetic
 * between its loads; the near T0 stream took it to 93% and 410M q4 generation from 125 to
 * 131 tok/s (7 rounds), with 160M q4 (partly cache-resident) unchanged (495 and 505 tok/s).
 * A third, far stream (T2, 32 rows ahead) gained 1% more at 410M but cost 4% at 160M. */
static inline TVNNI AI void qtile512_x8(float *y, const nx_xq8 *xq, const qx512 *xp, const __m512 *xs,
                                        const uint8_t *grp, size_t rb, const float *b, int IN, int OUT, int o,
                                        const int R0, const int NR, const int NT, const int PRE, const int PF0,
                                        const int PF1,
                                        const nx_dtype wt) {
    int nb = IN / NX_QBLOCK, np = nb / 2;
    const size_t pb = 16 * (wt == NX_Q8_0 ? sizeof(nx_block_q8_0) : sizeof(nx_block_q4_0)), ahead = 16 * rb,
                 near = 8 * pb;
    __m512 acc[8][8];
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    const uint8_t *pg = grp;
    for (int p = 0; p < np; p++, pg += pb) {
        for (size_t l = (size_t)PF0 * pb / 8 & ~(size_t)63; l < (size_t)PF1 * pb / 8; l += 64) {
            _mm_prefetch((const char *)pg + near + l, _MM_HINT_T0);
            _mm_prefetch((const char *)pg + ahead + l, _MM_HINT_T1);
        }
        __m512 D = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)pg));
        if (PRE) {
            const qx512 xv = xp[p];
            const __m512 P = _mm512_mul_ps(D, xs[2 * p]), P16 = _mm512_mul_ps(D, xs[2 * p + 1]);
            for (int r = 0; r < NR; r++) {
                const int k = R0 + r;
                __m512 dwx = wt == NX_Q8_0
                                 ? _mm512_permutexvar_ps(_mm512_set_epi32(8 + k, 8 + k, 8 + k, 8 + k, 8 + k, 8 + k, 8 + k,
                                                                          8 + k, k, k, k, k, k, k, k, k),
                                                         P)
                                 : _mm512_permutex2var_ps(P,
                                                          _mm512_set_epi32(24 + k, 24 + k, 24 + k, 24 + k, 16 + k, 16 + k,
                                                                           16 + k, 16 + k, 8 + k, 8 + k, 8 + k, 8 + k, k, k,
                                                                           k, k),
                                                          P16);
                __m512i s = _mm512_dpbusd_epi32(xv.off, qw_pair_x8(pg, k, wt), xv.x);
                acc[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dwx, acc[r][0]);
            }
            continue;
        }
        __m512i w[8];
        __m512 dw[8];
        for (int r = 0; r < NR; r++) {
            w[r] = qw_pair_x8(pg, R0 + r, wt);
            dw[r] = qd_pair_x8(D, R0 + r, wt);
        }
        qtile_pair(acc, w, dw, xq, nb, p, 1, NR, NT, wt);
    }
    qtile_store(y, acc, b, OUT, o, NR, NT);
}

/* One row o (any position in its group), every token: the ends of a range that does not
 * cover whole groups. */
static TVNNI void qrow512_x8(float *y, const nx_xq8 *xq, const uint8_t *W, size_t rb, const float *b, int T, int IN,
                             int OUT, int o, const nx_dtype wt) {
    int nb = IN / NX_QBLOCK, np = nb / 2, r = o % 8;
    const size_t pb = 16 * (wt == NX_Q8_0 ? sizeof(nx_block_q8_0) : sizeof(nx_block_q4_0));
    for (int t = 0; t < T; t++) {
        __m512 acc = _mm512_setzero_ps();
        const uint8_t *pg = W + (size_t)(o / 8) * 8 * rb;
        for (int p = 0; p < np; p++, pg += pb) {
            __m512 dw = qd_pair_x8(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)pg)), r, wt);
            const qx512 xv = qx_pair(xq + (size_t)t * nb, p, 1, wt);
            __m512i s = _mm512_dpbusd_epi32(xv.off, qw_pair_x8(pg, r, wt), xv.x);
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, xv.d), acc);
        }
        float sum;
        hsum_n(&acc, 1, &sum);
        y[(size_t)t * OUT + o] = sum + (b ? b[o] : 0.0f);
    }
}

static inline TVNNI AI void q512_x8(float *y, const nx_xq8 *xq, const void *W, const float *b, int T, int IN, int OUT,
                                    int r0, int r1, const nx_dtype wt) {
    size_t rb = nx__row_bytes(wt, IN);
    const uint8_t *w = W;
    int o = r0;
    for (; o < r1 && o % 8; o++) qrow512_x8(y, xq, w, rb, b, T, IN, OUT, o, wt);
    int oe = o + (r1 - o) / 8 * 8, np = IN / (2 * NX_QBLOCK);
#define GROUPS(...)                                                                                                    \
    for (; o < oe; o += 8) {                                                                                           \
        const uint8_t *grp = w + (size_t)o * rb;                                                                       \
        __VA_ARGS__                                                                                                    \
    }
    /* Up to 4 tokens: a group's halves (4 rows x NT tokens). More: all 8 rows for 2 tokens at a
     * time (the group is in L1 after the first pass); 4 quarters of 2 rows x 8 tokens built
     * every token's activation side once per 2 rows and ran 9% slower (Q8_0, one core). */
#define XT(R0, NR, NT) qtile512_x8(y, xq, NULL, NULL, grp, rb, b, IN, OUT, o + (R0), R0, NR, NT, 0, R0, (R0) + (NR), wt);
#define H2(NT) XT(0, 4, NT) XT(4, 4, NT)
#define TP(T0, NT, PF0, PF1)                                                                                           \
    qtile512_x8(y + (size_t)(T0) * OUT, xq + (size_t)(T0) * (IN / NX_QBLOCK), NULL, NULL, grp, rb, b, IN, OUT, o, 0, 8,  \
                NT, 0, PF0, PF1, wt);
    if (T == 1 && np <= Q1_MAX_PAIRS) {
        _Alignas(64) qx512 xp[Q1_MAX_PAIRS];
        _Alignas(64) __m512 xs[2 * Q1_MAX_PAIRS];
        for (int p = 0; p < np; p++) {
            xp[p] = qx_pair(xq, p, 1, wt);
            qs_pair_x8(xs + 2 * p, xq, p);
        }
        GROUPS(qtile512_x8(y, xq, xp, xs, grp, rb, b, IN, OUT, o, 0, 8, 1, 1, 0, 8, wt);)
    } else if (T == 1) {
        GROUPS(qtile512_x8(y, xq, NULL, NULL, grp, rb, b, IN, OUT, o, 0, 8, 1, 0, 0, 8, wt);)
    } else if (T <= 4) {
        /* 4 rows x up to 4 tokens: the two halves of a group */
        switch (T) {
        case 2: GROUPS(H2(2)) break;
        case 3: GROUPS(H2(3)) break;
        default: GROUPS(H2(4)) break;
        }
    } else {
        switch (T) {   /* passes of 2 tokens, each prefetching its share of the pairs */
        case 5: GROUPS(TP(0, 2, 0, 2) TP(2, 2, 2, 5) TP(4, 1, 5, 8)) break;
        case 6: GROUPS(TP(0, 2, 0, 2) TP(2, 2, 2, 5) TP(4, 2, 5, 8)) break;
        case 7: GROUPS(TP(0, 2, 0, 2) TP(2, 2, 2, 4) TP(4, 2, 4, 6) TP(6, 1, 6, 8)) break;
        default: GROUPS(TP(0, 2, 0, 2) TP(2, 2, 2, 4) TP(4, 2, 4, 6) TP(6, 2, 6, 8)) break;
        }
    }
#undef GROUPS
#undef XT
#undef TP
#undef H2
    for (; o < r1; o++) qrow512_x8(y, xq, w, rb, b, T, IN, OUT, o, wt);
}

static TVNNI void qdot_rows_x8_avx512(float *y, const nx_xq8 *xq, const void *W, nx_dtype wt, const float *b, int T,
                                     int IN, int OUT, int r0, int r1) {
    NX_ASSERT(cpu_has_vnni() && IN % (2 * NX_QBLOCK) == 0);
    if (wt == NX_Q8_0)
        q512_x8(y, xq, W, b, T, IN, OUT, r0, r1, NX_Q8_0);
    else
        q512_x8(y, xq, W, b, T, IN, OUT, r0, r1, NX_Q4_0);
}

const nx_kernel_vt nx__kernels_avx512_vt = {"avx512",         dot_avx512,       axpy_avx512,      act_avx512,
                                            exp_sum_avx512,   nx__attention_avx512, mv_rows_avx512,   qdot_rows_avx512,
                                            qdot_rows_x8_avx512, quantize_q8_avx512, nx__layernorm_avx512};

#else /* not x86-64: only the reference exists; the tables alias it so callers need no #ifdef. */

int nx__cpu_has_avx2(void) { return 0; }
int nx__cpu_has_avx512(void) { return 0; }
const nx_kernel_vt nx__kernels_avx512_vt = {"avx512-unavailable", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
const nx_kernel_vt nx__kernels_avx2_vt = {"avx2-unavailable", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};

#endif
