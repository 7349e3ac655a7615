/*
 * x86.c - AVX2+FMA and AVX-512 variants of the hot kernels.
 *
 * Compiled with per-function __attribute__((target)) so the rest of the binary stays
 * baseline x86-64; dispatch.c only calls a variant after CPUID says the CPU has it.
 *
 * matmul_rows works on packed weights (kernels.h): for each input k it loads one 16-wide
 * weight vector per panel, broadcasts x[t][k] for each token of the tile and accumulates
 * outer products. AVX-512 tiles are up to 6 tokens x 4 panels (24 accumulators, 10 loads per
 * 24 FMAs); AVX2 tiles are up to 6 tokens x 1 panel (two ymm halves). Tokens are processed in
 * blocks that stay in L2 while a 4-panel group of weights is reused across the block. Each
 * output lane accumulates k = 0..IN-1 in order whatever the tile, so results do not depend on
 * T, the tiling or the thread split; the last panel's invalid lanes are never stored.
 */
#include "kernels/kernels.h"

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

/* Weight vector of 16 outputs at one k: fp32, or 16-bit widened exactly (bf16 is the top half
 * of an fp32; IEEE half via vcvtph2ps). KIND is a compile-time constant in every caller. */
enum { W_F32 = 0, W_BF16 = 1, W_F16 = 2 };
static inline T512 __attribute__((always_inline)) __m512 wload512(const void *W, size_t idx, const int KIND) {
    if (KIND == W_F32) return _mm512_loadu_ps((const float *)W + idx);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)W + idx));
    if (KIND == W_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

static inline T512 __attribute__((always_inline)) void ptile512(float *y, int ldy, const float *x, int ldx,
                                                                const void *Wp, int IN, const float *b, const int NT,
                                                                const int NP, __mmask16 mlast, const int KIND) {
    __m512 acc[6][4];
    for (int i = 0; i < NT; i++)
        for (int p = 0; p < NP; p++) acc[i][p] = _mm512_setzero_ps();
    const size_t pstride = (size_t)IN * 16;
    for (int k = 0; k < IN; k++) {
        __m512 wv[4];
        for (int p = 0; p < NP; p++) wv[p] = wload512(Wp, (size_t)p * pstride + (size_t)k * 16, KIND);
        for (int i = 0; i < NT; i++) {
            __m512 xb = _mm512_set1_ps(x[(size_t)i * ldx + k]);
            for (int p = 0; p < NP; p++) acc[i][p] = _mm512_fmadd_ps(xb, wv[p], acc[i][p]);
        }
    }
    for (int i = 0; i < NT; i++)
        for (int p = 0; p < NP; p++) {
            __mmask16 m = p == NP - 1 ? mlast : (__mmask16)0xFFFF;
            __m512 v = acc[i][p];
            if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, b + p * 16));
            _mm512_mask_storeu_ps(y + (size_t)i * ldy + p * 16, m, v);
        }
}

#define TB512 48   /* token block: 48 x IN floats of x stay in L2 while a panel group is reused */

static inline T512 __attribute__((always_inline)) void mm512(float *y, const float *x, const void *Wp, const float *b,
                                                             int T, int IN, int OUT, int r0, int r1, const int KIND) {
    (void)OUT;
    int p0 = r0 / 16, p1 = (r1 + 15) / 16;
    __mmask16 mend = (r1 % 16) ? (__mmask16)((1u << (r1 % 16)) - 1u) : (__mmask16)0xFFFF;
    for (int t0 = 0; t0 < T; t0 += TB512) {
        int t1 = t0 + TB512 < T ? t0 + TB512 : T;
        for (int p = p0; p < p1; p += 4) {
            int np = p1 - p < 4 ? p1 - p : 4;
            __mmask16 m = p + np == p1 ? mend : (__mmask16)0xFFFF;
            const size_t es = KIND == W_F32 ? 4 : 2;
            const char *w = (const char *)Wp + (size_t)p * IN * 16 * es;
            const float *bp = b ? b + p * 16 : NULL;
            float *yp = y + p * 16;
            int t = t0;
            if (np == 4) {
                for (; t + 6 <= t1; t += 6) ptile512(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 6, 4, m, KIND);
                switch (t1 - t) {
                case 5: ptile512(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 5, 4, m, KIND); break;
                case 4: ptile512(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 4, 4, m, KIND); break;
                case 3: ptile512(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 3, 4, m, KIND); break;
                case 2: ptile512(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 2, 4, m, KIND); break;
                case 1: ptile512(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 1, 4, m, KIND); break;
                default: break;
                }
            } else {
                /* the last 1-3 panels of a range */
                for (; t < t1; t++) {
                    for (int q = 0; q < np; q++)
                        ptile512(yp + (size_t)t * OUT + q * 16, OUT, x + (size_t)t * IN, IN, w + (size_t)q * IN * 16 * es, IN,
                                 bp ? bp + q * 16 : NULL, 1, 1, q == np - 1 ? m : (__mmask16)0xFFFF, KIND);
                }
            }
        }
    }
}

static T512 void matmul_rows_avx512(float *y, const float *x, const float *Wp, const float *b, int T, int IN, int OUT,
                                    int r0, int r1) {
    mm512(y, x, Wp, b, T, IN, OUT, r0, r1, W_F32);
}

static T512 void matmul_rows_h16_avx512(float *y, const float *x, const uint16_t *Wp, const float *b, int T, int IN,
                                        int OUT, int r0, int r1, int bf16) {
    if (bf16)
        mm512(y, x, Wp, b, T, IN, OUT, r0, r1, W_BF16);
    else
        mm512(y, x, Wp, b, T, IN, OUT, r0, r1, W_F16);
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

/* 16 ymm registers: up to 6 tokens x one panel (two ymm halves) = 12 accumulators + 3. */
static inline T256 __attribute__((always_inline)) __m256 wload256(const void *W, size_t idx, const int KIND) {
    if (KIND == W_F32) return _mm256_loadu_ps((const float *)W + idx);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)W + idx));
    if (KIND == W_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

static inline T256 __attribute__((always_inline)) void ptile256(float *y, int ldy, const float *x, int ldx,
                                                                const void *Wp, int IN, const float *b, const int NT,
                                                                int nvalid, const int KIND) {
    __m256 lo[6], hi[6];
    for (int i = 0; i < NT; i++) lo[i] = hi[i] = _mm256_setzero_ps();
    for (int k = 0; k < IN; k++) {
        __m256 wl = wload256(Wp, (size_t)k * 16, KIND), wh = wload256(Wp, (size_t)k * 16 + 8, KIND);
        for (int i = 0; i < NT; i++) {
            __m256 xb = _mm256_broadcast_ss(x + (size_t)i * ldx + k);
            lo[i] = _mm256_fmadd_ps(xb, wl, lo[i]);
            hi[i] = _mm256_fmadd_ps(xb, wh, hi[i]);
        }
    }
    int nl = nvalid < 8 ? nvalid : 8, nh = nvalid > 8 ? nvalid - 8 : 0;
    __m256i ml = _mm256_loadu_si256((const __m256i *)(k_mask_tab + 8 - nl));
    __m256i mh = _mm256_loadu_si256((const __m256i *)(k_mask_tab + 8 - nh));
    __m256 bl = b ? _mm256_maskload_ps(b, ml) : _mm256_setzero_ps();
    __m256 bh = b ? _mm256_maskload_ps(b + 8, mh) : _mm256_setzero_ps();
    for (int i = 0; i < NT; i++) {
        __m256 vl = b ? _mm256_add_ps(lo[i], bl) : lo[i];
        __m256 vh = b ? _mm256_add_ps(hi[i], bh) : hi[i];
        _mm256_maskstore_ps(y + (size_t)i * ldy, ml, vl);
        _mm256_maskstore_ps(y + (size_t)i * ldy + 8, mh, vh);
    }
}

#define TB256 48

static inline T256 __attribute__((always_inline)) void mm256(float *y, const float *x, const void *Wp, const float *b,
                                                             int T, int IN, int OUT, int r0, int r1, const int KIND) {
    int p0 = r0 / 16, p1 = (r1 + 15) / 16;
    for (int t0 = 0; t0 < T; t0 += TB256) {
        int t1 = t0 + TB256 < T ? t0 + TB256 : T;
        for (int p = p0; p < p1; p++) {
            int nvalid = p == p1 - 1 && (r1 % 16) ? r1 % 16 : 16;
            const char *w = (const char *)Wp + (size_t)p * IN * 16 * (KIND == W_F32 ? 4 : 2);
            const float *bp = b ? b + p * 16 : NULL;
            float *yp = y + p * 16;
            int t = t0;
            for (; t + 6 <= t1; t += 6) ptile256(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 6, nvalid, KIND);
            switch (t1 - t) {
            case 5: ptile256(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 5, nvalid, KIND); break;
            case 4: ptile256(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 4, nvalid, KIND); break;
            case 3: ptile256(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 3, nvalid, KIND); break;
            case 2: ptile256(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 2, nvalid, KIND); break;
            case 1: ptile256(yp + (size_t)t * OUT, OUT, x + (size_t)t * IN, IN, w, IN, bp, 1, nvalid, KIND); break;
            default: break;
            }
        }
    }
}

static T256 void matmul_rows_avx2(float *y, const float *x, const float *Wp, const float *b, int T, int IN, int OUT,
                                  int r0, int r1) {
    mm256(y, x, Wp, b, T, IN, OUT, r0, r1, W_F32);
}

static T256 void matmul_rows_h16_avx2(float *y, const float *x, const uint16_t *Wp, const float *b, int T, int IN,
                                      int OUT, int r0, int r1, int bf16) {
    if (bf16)
        mm256(y, x, Wp, b, T, IN, OUT, r0, r1, W_BF16);
    else
        mm256(y, x, Wp, b, T, IN, OUT, r0, r1, W_F16);
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

static T256 void qdot_rows_avx2(float *y, const nx_block_q8_0 *xq, const void *W, nx_dtype wt, const float *b, int IN,
                                int r0, int r1) {
    size_t rb = nx__row_bytes(wt, IN);
    int nb = IN / NX_QBLOCK;
    for (int o = r0; o < r1; o++) {
        const void *row = (const uint8_t *)W + (size_t)o * rb;
        __m256 acc = _mm256_setzero_ps();
        for (int k = 0; k < nb; k++) {
            float dw;
            __m256i w = qload256(row, k, wt, &dw);
            __m256i s = idot256(w, _mm256_loadu_si256((const __m256i *)xq[k].q));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * xq[k].d), acc);
        }
        y[o] = hsum256(acc) + (b ? b[o] : 0.0f);
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
const nx_kernel_vt nx__kernels_avx2_vt = {"avx2",          matmul_rows_avx2,     dot_avx2,      axpy_avx2,
                                          nx__act_ref,     nx__exp_sum_ref,      matmul_rows_h16_avx2, qdot_rows_avx2};

/* ---- AVX-512 VNNI (after the AVX2 helpers it reuses) ------------------------------------- */
#define TVNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

static int cpu_has_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw");
}

static inline TVNNI __attribute__((always_inline)) __m256 vnni_block(__m256 acc, const void *row, int k, nx_dtype wt,
                                                                     __m256i xv, float xd) {
    float dw;
    __m256i w = qload256(row, k, wt, &dw);
    __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(w), _mm256_sign_epi8(xv, w));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * xd), acc);
}

/* The same sums as qdot_rows_avx2 with one vpdpbusd per block instead of maddubs+madd. Without VNNI: the AVX2 kernel. */
static TVNNI void qdot_rows_avx512(float *y, const nx_block_q8_0 *xq, const void *W, nx_dtype wt, const float *b,
                                   int IN, int r0, int r1) {
    if (!cpu_has_vnni()) {   /* a few loads per call: no shared state between threads */
        qdot_rows_avx2(y, xq, W, wt, b, IN, r0, r1);
        return;
    }
    size_t rb = nx__row_bytes(wt, IN);
    int nb = IN / NX_QBLOCK;
    int o = r0;
    /* Four rows at a time: four independent weight streams keep more loads in flight (the
     * loop is bound by memory), and each activation block is loaded once for all four. */
    /* Rows are short streams (a few hundred bytes) that the hardware prefetcher barely trains
     * on, so the group four ahead is prefetched explicitly, spread over the block loop. */
    const size_t bs = rb / (size_t)nb, ahead = 16 * rb;
    for (; o + 4 <= r1; o += 4) {
        const uint8_t *row = (const uint8_t *)W + (size_t)o * rb;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int k = 0; k < nb; k++) {
            for (size_t off = (size_t)k * 4 * bs; off < (size_t)(k + 1) * 4 * bs; off += 64)
                _mm_prefetch((const char *)row + ahead + off, _MM_HINT_T0);
            __m256i xv = _mm256_loadu_si256((const __m256i *)xq[k].q);
            for (int r = 0; r < 4; r++) acc[r] = vnni_block(acc[r], row + (size_t)r * rb, k, wt, xv, xq[k].d);
        }
        for (int r = 0; r < 4; r++) y[o + r] = hsum256(acc[r]) + (b ? b[o + r] : 0.0f);
    }
    for (; o < r1; o++) {
        const uint8_t *row = (const uint8_t *)W + (size_t)o * rb;
        __m256 acc = _mm256_setzero_ps();
        for (int k = 0; k < nb; k++)
            acc = vnni_block(acc, row, k, wt, _mm256_loadu_si256((const __m256i *)xq[k].q), xq[k].d);
        y[o] = hsum256(acc) + (b ? b[o] : 0.0f);
    }
}

const nx_kernel_vt nx__kernels_avx512_vt = {"avx512",   matmul_rows_avx512, dot_avx512,
                                            axpy_avx512, act_avx512,         exp_sum_avx512,
                                            matmul_rows_h16_avx512, qdot_rows_avx512};

#else /* not x86-64: only the reference exists; the tables alias it so callers need no #ifdef. */

int nx__cpu_has_avx2(void) { return 0; }
int nx__cpu_has_avx512(void) { return 0; }
const nx_kernel_vt nx__kernels_avx512_vt = {"avx512-unavailable", NULL, NULL, NULL, NULL, NULL, NULL, NULL};
const nx_kernel_vt nx__kernels_avx2_vt = {"avx2-unavailable", NULL, NULL, NULL, NULL, NULL, NULL, NULL};

#endif
