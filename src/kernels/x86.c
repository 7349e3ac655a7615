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
            _mm_prefetch((const char *)row + (size_t)r * rb + ahead + (size_t)k * es, _MM_HINT_T0);
            w[r] = wload512(row + (size_t)r * rb, (size_t)k, wt);
        }
        for (int t = 0; t < NT; t++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)t * IN + k);
            for (int r = 0; r < NR; r++) acc[r][t] = _mm512_fmadd_ps(w[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) {
            float s = _mm512_reduce_add_ps(acc[r][t]);
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
static inline T256 __attribute__((always_inline)) __m256i qload256(const void *row, int bidx, nx_dtype wt, float *d) {
    if (wt == NX_Q8_0) {
        const nx_block_q8_0 *w = (const nx_block_q8_0 *)row + bidx;
        *d = w->d;
        return _mm256_loadu_si256((const __m256i *)w->q);
    }
    const nx_block_q4_0 *w = (const nx_block_q4_0 *)row + bidx;
    *d = w->d;
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
static T256 void qdot_rows_avx2(float *y, const nx_block_q8_0 *xq, const void *W, nx_dtype wt, const float *b, int T,
                                int IN, int OUT, int r0, int r1) {
    size_t rb = nx__row_bytes(wt, IN);
    int nb = IN / NX_QBLOCK;
    for (int o = r0; o < r1; o++) {
        const void *row = (const uint8_t *)W + (size_t)o * rb;
        for (int t = 0; t < T; t++) {
            const nx_block_q8_0 *xt = xq + (size_t)t * nb;
            __m256 acc = _mm256_setzero_ps();
            for (int k = 0; k < nb; k++) {
                float dw;
                __m256i w = qload256(row, k, wt, &dw);
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
                                          nx__attention_avx2, mv_rows_avx2, qdot_rows_avx2, nx__quantize_row_q8_0};

/* ---- AVX-512 VNNI (after the AVX2 kernels it falls back to) ---------------------------- */
#define TVNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

static int cpu_has_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}

static inline TVNNI AI float ldf(const void *p) {   /* a block's scale: rows need only 4-byte alignment */
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}

/* Blocks 2p and 2p+1 as one 64-byte vector in element order, with their scales as [d x8, d' x8];
 * full == 0 loads block 2p only (an odd count's last block) and zeroes the other half. */
static inline TVNNI AI __m512i qpair_x(const nx_block_q8_0 *x, int p, int full, __m512 *d) {
    __m256i lo = _mm256_loadu_si256((const __m256i *)x[2 * p].q);
    if (!full) {
        *d = _mm512_maskz_mov_ps(0x00FF, _mm512_set1_ps(x[2 * p].d));
        return _mm512_zextsi256_si512(lo);
    }
    *d = _mm512_insertf32x8(_mm512_set1_ps(x[2 * p].d), _mm256_set1_ps(x[2 * p + 1].d), 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)x[2 * p + 1].q), 1);
}

/* The weights of blocks 2p, 2p+1 of a row likewise: Q8_0 as signed bytes; Q4_0 as its unsigned
 * codes 0..15 (the -8 is applied through the activations' sums), nibbles unpacked so that byte i
 * is element i of the pair. */
static inline TVNNI AI __m512i qpair_w(const uint8_t *row, int p, int full, const nx_dtype wt, __m512 *d) {
    const size_t bs = wt == NX_Q8_0 ? sizeof(nx_block_q8_0) : sizeof(nx_block_q4_0);
    const uint8_t *b0 = row + (size_t)2 * p * bs, *b1 = b0 + bs;
    *d = full ? _mm512_insertf32x8(_mm512_set1_ps(ldf(b0)), _mm256_set1_ps(ldf(b1)), 1)
              : _mm512_maskz_mov_ps(0x00FF, _mm512_set1_ps(ldf(b0)));
    if (wt == NX_Q8_0) {
        __m512i lo = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 4)));
        return full ? _mm512_inserti64x4(lo, _mm256_loadu_si256((const __m256i *)(b1 + 4)), 1) : lo;
    }
    __m256i v = full ? _mm256_loadu2_m128i((const __m128i *)(b1 + 4), (const __m128i *)(b0 + 4))
                     : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(b0 + 4)));
    __m256i m4 = _mm256_set1_epi8(15);
    __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    /* lo = [low nibbles of 2p | of 2p+1], hi likewise: interleave the 16-byte halves */
    return _mm512_permutex2var_epi64(_mm512_castsi256_si512(lo), _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0),
                                     _mm512_castsi256_si512(hi));
}

/* NR rows x NT tokens; per block pair: one vpdpbusd per (row, token) gives 16 int32 partial sums
 * (lanes 0-7 block 2p, 8-15 block 2p+1), converted and scaled by d_w·d_x into fp32 accumulators.
 * vpdpbusd multiplies unsigned by signed bytes: Q4_0 codes c are unsigned and Σ(c-8)x comes from
 * starting the sum at -8·Σx; Q8_0 activations are offset to x+128 (unsigned) and the sum starts at
 * -128·Σw. Both are exact integer identities, so the result equals the reference's integers. */
static inline TVNNI AI void qtile512(float *y, const nx_block_q8_0 *xq, const uint8_t *W, size_t rb, const float *b,
                                     int IN, int OUT, int o, const int NR, const int NT, const nx_dtype wt) {
    int nb = IN / NX_QBLOCK, np = (nb + 1) / 2;
    __m512 acc[4][8];
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    const uint8_t *row = W + (size_t)o * rb;
    /* Rows are short streams (a few hundred bytes) that the hardware prefetcher barely trains
     * on, so the rows 16 ahead are prefetched explicitly, spread over the pair loop. */
    const size_t ps = 2 * (wt == NX_Q8_0 ? sizeof(nx_block_q8_0) : sizeof(nx_block_q4_0)), ahead = 16 * rb;
    for (int p = 0; p < np; p++) {
        int full = 2 * p + 1 < nb;
        __m512i w[4], w0[4];
        __m512 dw[4];
        for (int r = 0; r < NR; r++) {
            _mm_prefetch((const char *)row + (size_t)r * rb + ahead + (size_t)p * ps, _MM_HINT_T0);
            w[r] = qpair_w(row + (size_t)r * rb, p, full, wt, &dw[r]);
            if (wt == NX_Q8_0)
                w0[r] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                         _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), w[r]));
        }
        for (int t = 0; t < NT; t++) {
            __m512 dx;
            __m512i xv = qpair_x(xq + (size_t)t * nb, p, full, &dx), x0 = _mm512_setzero_si512();
            if (wt == NX_Q8_0)
                xv = _mm512_xor_si512(xv, _mm512_set1_epi8((char)0x80));
            else
                x0 = _mm512_sub_epi32(_mm512_setzero_si512(),
                                      _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), xv));
            for (int r = 0; r < NR; r++) {
                __m512i s = wt == NX_Q8_0 ? _mm512_dpbusd_epi32(w0[r], xv, w[r]) : _mm512_dpbusd_epi32(x0, w[r], xv);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw[r], dx), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < NT; t++)
            y[(size_t)t * OUT + o + r] = _mm512_reduce_add_ps(acc[r][t]) + (b ? b[o + r] : 0.0f);
}

static inline TVNNI AI void q512(float *y, const nx_block_q8_0 *xq, const void *W, const float *b, int T, int IN,
                                 int OUT, int r0, int r1, const nx_dtype wt) {
    size_t rb = nx__row_bytes(wt, IN);
    const uint8_t *w = W;
    /* 4 rows for one token, 2 for up to 4, 1 for more: <= 8 accumulators plus the operands. */
#define Q512_T(NR, NT)                                                                                                 \
    do {                                                                                                               \
        int o = r0;                                                                                                    \
        for (; o + NR <= r1; o += NR) qtile512(y, xq, w, rb, b, IN, OUT, o, NR, NT, wt);                              \
        for (; o < r1; o++) qtile512(y, xq, w, rb, b, IN, OUT, o, 1, NT, wt);                                         \
    } while (0)
    switch (T) {
    case 1: Q512_T(4, 1); break;
    case 2: Q512_T(2, 2); break;
    case 3: Q512_T(2, 3); break;
    case 4: Q512_T(2, 4); break;
    case 5: Q512_T(1, 5); break;
    case 6: Q512_T(1, 6); break;
    case 7: Q512_T(1, 7); break;
    default: Q512_T(1, 8); break;
    }
#undef Q512_T
}

/* The same operations as the scalar nx__quantize_row_q8_0 on 16 lanes: the block maximum is
 * exact in any order, d and 1/d are the same scalar expressions, and vcvtps2dq rounds to nearest
 * even as lrintf does in the default rounding mode, so the blocks are bit-identical. */
static T512 void quantize_q8_avx512(nx_block_q8_0 *dst, const float *x, int n) {
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

static TVNNI void qdot_rows_avx512(float *y, const nx_block_q8_0 *xq, const void *W, nx_dtype wt, const float *b,
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

const nx_kernel_vt nx__kernels_avx512_vt = {"avx512",         dot_avx512,       axpy_avx512,      act_avx512,
                                            exp_sum_avx512,   nx__attention_avx512, mv_rows_avx512,   qdot_rows_avx512,
                                            quantize_q8_avx512};

#else /* not x86-64: only the reference exists; the tables alias it so callers need no #ifdef. */

int nx__cpu_has_avx2(void) { return 0; }
int nx__cpu_has_avx512(void) { return 0; }
const nx_kernel_vt nx__kernels_avx512_vt = {"avx512-unavailable", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
const nx_kernel_vt nx__kernels_avx2_vt = {"avx2-unavailable", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};

#endif
