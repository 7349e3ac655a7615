/*
 * attn_x86.c - AVX-512 and AVX2 attention over an fp32, f16, bf16 or Q8_0 KV cache (kernels.h
 * nx_attn_args): G <= NX_ATTN_MAX_G query rows of one head per call, in three steps.
 *
 *  1. Scores. F32/F16/BF16 caches hold keys in tiles of 16 positions, [d][16] (kernels.h
 *     NX_KT): element e of 16 keys is one vector, so a score is one lane of an fma chain over
 *     e = 0..d-1 (q[0]·k[0] first), with no reduction across lanes; the chains of several
 *     tiles and rows run side by side to cover the fma latency. Q8_0 keys are rows of blocks:
 *     there each (row, key) dot product is one vector accumulator, fma over the head in 16- or
 *     8-lane chunks, then summed across lanes by a transpose-add that treats every key of the
 *     block alike. Either way a score depends only on the query and that key, never on which
 *     block or group it falls in.
 *  2. Softmax numerators per row with the variant's exp_sum.
 *  3. Values: each V row is widened once and added, in ascending key order, into the
 *     accumulators of every row of a register group that sees that key.
 *
 * Every row therefore gets the bits it would get alone (G = 1): grouping rows, and splitting
 * the groups over threads, never changes a result. Elements are widened exactly: bf16 is the
 * top half of an fp32, f16 goes through vcvtph2ps, a Q8_0 element is d·q in fp32 (Q8_0 caches
 * need head sizes that are multiples of 32, so every 16- or 8-element chunk lies in one block).
 * Heads of more than 256 dims (no released checkpoint has one) take the scalar reference.
 */
#include "kernels/kernels.h"

#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "kernels/simd_x86.h"

#define AI __attribute__((always_inline))
#define T512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define T256 __attribute__((target("avx2,fma,f16c")))

enum { MAXD = 256 };   /* largest head kept in vector registers / key tiles */
enum { PF_ROWS = 32 }; /* decode prefetch distance in cache rows (bench_attn: 16, 32 and 64 within 10%) */

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* The union of the rows' key ranges. */
static void key_span(const nx_attn_args *a, int g0, int g1, int *lo, int *hi) {
    *lo = a->k0[g0];
    *hi = a->k1[g0];
    for (int g = g0 + 1; g < g1; g++) {
        *lo = imin(*lo, a->k0[g]);
        *hi = imax(*hi, a->k1[g]);
    }
}

/* ---- AVX-512 ------------------------------------------------------------------------------ */

/* 16 elements of a cache row from element e, widened exactly; n < 16 reads only the first n
 * (the head's last chunk) and zeroes the other lanes. */
static inline T512 AI __m512 kv512(const void *row, int e, int n, const nx_dtype t) {
    if (t == NX_Q8_0) {   /* d a multiple of 32: whole 16-element halves of a block */
        const nx_block_q8_0 *b = (const nx_block_q8_0 *)row + e / NX_QBLOCK;
        float d = nx__f16_tab[b->d];   /* a load, not two vector uops (see nx__f16_table) */
        __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->q + e % NX_QBLOCK)));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(d));
    }
    if (t == NX_F32) {
        const float *p = (const float *)row + e;
        return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
    }
    __m256i h;
    if (n >= 16) {
        h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + e));
    } else {   /* 16-bit masked loads need AVX512BW: copy the tail instead */
        uint16_t tmp[16] = {0};
        memcpy(tmp, (const uint16_t *)row + e, (size_t)n * sizeof(uint16_t));
        h = _mm256_loadu_si256((const __m256i *)tmp);
    }
    if (t == NX_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* 32 bf16 values from p, widened exactly as two vectors: the even elements (0, 2, .., 30: each
 * dword's low half shifted up) and the odd ones (each dword's high half, the low half cleared). */
static inline T512 AI void bf16_pairs(const uint8_t *p, __m512 *even, __m512 *odd) {
    __m512i w = _mm512_loadu_si512((const void *)p);
    *even = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    *odd = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xFFFF0000u)));
}

/* Element e of the 16 keys of a tile, widened exactly. */
static inline T512 AI __m512 kt512(const uint8_t *tile, int e, const nx_dtype t) {
    if (t == NX_F32) return _mm512_loadu_ps((const float *)(const void *)tile + (size_t)e * NX_KT);
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)((const uint16_t *)(const void *)tile + (size_t)e * NX_KT));
    if (t == NX_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Scores of G rows for the NB tiles from key kb: G·NB independent fma chains (8 or more cover
 * the latency of two fma ports), all indices compile-time so the accumulators stay in registers.
 * Each score is scale·(q[0]·k[0] + ...) in element order whatever G and NB are. Stores row g's
 * scores of the keys in [k0[g], k1[g]) and updates its maximum. */
static inline T512 AI void tiles512(const nx_attn_args *a, const nx_dtype t, const int G, const int NB, int kb,
                                    float *mx) {
    const int d = a->d;
    const size_t tb = (size_t)d * NX_KT * (t == NX_F32 ? 4 : 2);   /* bytes per tile */
    const uint8_t *tile = (const uint8_t *)a->K + (size_t)(kb / NX_KT) * tb;
    /* A decode step streams the head's keys once: the next NB tiles are prefetched over the loop. */
    const char *pf = (const char *)tile + NB * tb;
    const size_t pf_step = NB * tb / (size_t)d;
    __m512 acc[8][8];
    for (int b = 0; b < NB; b++) {
        __m512 k = kt512(tile + b * tb, 0, t);
        for (int g = 0; g < G; g++) acc[b][g] = _mm512_mul_ps(_mm512_set1_ps(a->q[(size_t)g * a->ldq]), k);
    }
    for (int e = 1; e < d; e++) {
        if (G == 1)
            for (size_t o = 0; o < pf_step; o += 64) _mm_prefetch(pf + (size_t)e * pf_step + o, _MM_HINT_T0);
        __m512 k[8];
        for (int b = 0; b < NB; b++) k[b] = kt512(tile + b * tb, e, t);
        for (int g = 0; g < G; g++) {
            __m512 qe = _mm512_set1_ps(a->q[(size_t)g * a->ldq + e]);
            for (int b = 0; b < NB; b++) acc[b][g] = _mm512_fmadd_ps(qe, k[b], acc[b][g]);
        }
    }
    const __m512 sv = _mm512_set1_ps(a->scale);
    for (int b = 0; b < NB; b++) {
        int k0 = kb + b * NX_KT;
        for (int g = 0; g < G; g++) {
            int lo = imax(k0, a->k0[g]), hi = imin(k0 + NX_KT, a->k1[g]);
            if (lo >= hi) continue;
            __m512 sc = _mm512_mul_ps(acc[b][g], sv);
            __mmask16 m = (__mmask16)(((1u << (hi - lo)) - 1u) << (lo - k0));
            _mm512_mask_storeu_ps(a->scores + (size_t)g * a->lds + k0, m, sc);
            float bm = _mm512_mask_reduce_max_ps(m, sc);
            mx[g] = bm > mx[g] ? bm : mx[g];
        }
    }
}

/* The tiles of every key any of the G rows sees, NB at a time, then one at a time. */
static inline T512 AI void scores512_tiled(const nx_attn_args *a, const nx_dtype t, const int G, const int NB,
                                           float *mx) {
    int kmin, kmax;
    key_span(a, 0, G, &kmin, &kmax);
    int kb = kmin / NX_KT * NX_KT;
    for (; kb + (NB - 1) * NX_KT < kmax; kb += NB * NX_KT) tiles512(a, t, G, NB, kb, mx);
    for (; kb < kmax; kb += NX_KT) tiles512(a, t, G, 1, kb, mx);
}

static inline T512 AI void scores512_tiled_g(const nx_attn_args *a, const nx_dtype t, float *mx) {
    /* Copies for 8, 4, 2 and 1 rows; other counts run as a sum of those (a score's chain does
     * not depend on the rows beside it). Eight copies took the file's compile time to minutes. */
    nx_attn_args sub = *a;
    for (int g0 = 0; g0 < a->G;) {
        int n = a->G - g0 >= 8 ? 8 : a->G - g0 >= 4 ? 4 : a->G - g0 >= 2 ? 2 : 1;
        sub.G = n;
        sub.q = a->q + (size_t)g0 * a->ldq;
        sub.scores = a->scores + (size_t)g0 * a->lds;
        for (int g = 0; g < n; g++) sub.k0[g] = a->k0[g0 + g], sub.k1[g] = a->k1[g0 + g];
        switch (n) {
        /* one row: 8 tiles in flight (4 of f32's 4 KiB ones: 8 were 2.5% slower at depth 512) */
        case 1: t == NX_F32 ? scores512_tiled(&sub, t, 1, 4, mx + g0) : scores512_tiled(&sub, t, 1, 8, mx + g0); break;
        case 2: scores512_tiled(&sub, t, 2, 4, mx + g0); break;
        case 4: scores512_tiled(&sub, t, 4, 2, mx + g0); break;
        default: scores512_tiled(&sub, t, 8, 2, mx + g0); break;
        }
        g0 += n;
    }
}

/* One out-of-line copy per cache type: the score pass does not depend on the head's chunking, and
 * inlined into every (type, chunks) variant of attn512 it multiplied the file's compile time by
 * seven (over six minutes under ASan). */
static T512 __attribute__((noinline)) void scores512_f32(const nx_attn_args *a, float *mx) {
    scores512_tiled_g(a, NX_F32, mx);
}
static T512 __attribute__((noinline)) void scores512_f16(const nx_attn_args *a, float *mx) {
    scores512_tiled_g(a, NX_F16, mx);
}
static T512 __attribute__((noinline)) void scores512_bf16(const nx_attn_args *a, float *mx) {
    scores512_tiled_g(a, NX_BF16, mx);
}

/* The kernel for cache type t and NV = ceil(d / 16) chunks (compile-time constants in the
 * common cases, so the query, the key accumulators and the output rows live in registers). */
static inline T512 AI void attn512(const nx_attn_args *a, const nx_dtype t, const int NV, const int FULL) {
    /* lanes of the last chunk: a constant when the head fills its chunks (FULL), so the partial-
     * chunk paths vanish and the value pass keeps its operands in registers */
    const int G = a->G, dl = FULL ? 16 : a->d - 16 * (NV - 1);
    const __mmask16 mlast = (__mmask16)(dl >= 16 ? 0xFFFFu : (1u << dl) - 1u);
    const size_t rowb = a->row_bytes;
    const uint8_t *K = a->K, *V = a->V;
    const bool tiled = G > 1;   /* Q8_0 keys widened once per block into an fp32 tile */
    /* A decode step (G = 1) streams the head's cache from memory once: prefetch PF_ROWS ahead.
     * Prefill groups find it in L1/L2 (the earlier groups of the head read it), where the hint
     * only costs issue slots. */
    /* Register groups for the value pass: NV accumulators per row plus NV value vectors. */
    const int RG = NV <= 2 ? 8 : NV <= 4 ? 4 : NV <= 8 ? 2 : 1;
    const __m512 sv = _mm512_set1_ps(a->scale);
    float mx[NX_ATTN_MAX_G];
    _Alignas(64) float tile[16 * MAXD];
    int kmin, kmax;
    key_span(a, 0, G, &kmin, &kmax);
    for (int g = 0; g < G; g++) mx[g] = -INFINITY;

    if (t == NX_F32) scores512_f32(a, mx);
    else if (t == NX_F16) scores512_f16(a, mx);
    else if (t == NX_BF16) scores512_bf16(a, mx);
    for (int kb = kmin; t == NX_Q8_0 && kb < kmax; kb += 16) {
        int nk = imin(16, kmax - kb);
        if (tiled)
            for (int j = 0; j < nk; j++)
                for (int v = 0; v < NV; v++)
                    _mm512_store_ps(tile + (j * NV + v) * 16, kv512(K + (size_t)(kb + j) * rowb, 16 * v, v == NV - 1 ? dl : 16, t));
        for (int g = 0; g < G; g++) {
            int lo = imax(kb, a->k0[g]), hi = imin(kb + nk, a->k1[g]);
            if (lo >= hi) continue;
            const float *q = a->q + (size_t)g * a->ldq;
            __m512 qv[16], acc[16];
            for (int v = 0; v < NV; v++) qv[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? mlast : (__mmask16)0xFFFF, q + 16 * v);
            for (int j = 0; j < 16; j++) {
                int k = kb + j;
                if (k < lo || k >= hi) {
                    acc[j] = _mm512_setzero_ps();
                } else if (tiled) {
                    const float *kr = tile + j * NV * 16;
                    acc[j] = _mm512_mul_ps(qv[0], _mm512_load_ps(kr));
                    for (int v = 1; v < NV; v++) acc[j] = _mm512_fmadd_ps(qv[v], _mm512_load_ps(kr + 16 * v), acc[j]);
                } else {
                    const uint8_t *kr = K + (size_t)k * rowb;
                    if (G == 1) _mm_prefetch((const char *)(kr + PF_ROWS * rowb), _MM_HINT_T0);
                    acc[j] = _mm512_mul_ps(qv[0], kv512(kr, 0, NV == 1 ? dl : 16, t));
                    for (int v = 1; v < NV; v++)
                        acc[j] = _mm512_fmadd_ps(qv[v], kv512(kr, 16 * v, v == NV - 1 ? dl : 16, t), acc[j]);
                }
            }
            __m512 sc = _mm512_mul_ps(hsum16x16(acc), sv);
            __mmask16 m = (__mmask16)(((1u << (hi - lo)) - 1u) << (lo - kb));
            _mm512_mask_storeu_ps(a->scores + (size_t)g * a->lds + kb, m, sc);
            float bm = _mm512_mask_reduce_max_ps(m, sc);
            mx[g] = bm > mx[g] ? bm : mx[g];
        }
    }

    /* The weights p = e·(1/Σe), in place: the same fp32 products the value pass used to form
     * one by one, so the value pass only broadcasts them from memory. */
    for (int g = 0; g < G; g++) {
        float *p = a->scores + (size_t)g * a->lds;
        int k0 = a->k0[g], k1 = a->k1[g];
        const __m512 iv = _mm512_set1_ps(1.0f / nx__kernels_avx512_vt.exp_sum(p + k0, k1 - k0, mx[g]));
        for (int k = k0; k < k1; k += 16) {
            __mmask16 m = k1 - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k1 - k)) - 1u);
            _mm512_mask_storeu_ps(p + k, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + k), iv));
        }
    }

    if (G == 1 && t == NX_BF16 && FULL && NV % 2 == 0) {
        /* Decode over a bf16 cache: one row, every key of [k0, k1), each V row widened 32
         * elements per load as even and odd elements (bf16_pairs: one operation per 16 values,
         * where kv512 needs two), so the accumulators hold even and odd elements apart until
         * the store. The same products in the same order as below: the same bits. */
        __m512 o[16];
        #pragma GCC unroll 16
        for (int v = 0; v < NV; v++) o[v] = _mm512_setzero_ps();
        const float *p = a->scores;
        for (int k = a->k0[0]; k < a->k1[0]; k++) {
            const uint8_t *vr = V + (size_t)k * rowb;
            _mm_prefetch((const char *)(vr + PF_ROWS * rowb), _MM_HINT_T0);
            const __m512 w = _mm512_set1_ps(p[k]);
            #pragma GCC unroll 8
            for (int v = 0; v < NV; v += 2) {
                __m512 ev, od;
                bf16_pairs(vr + 32 * v, &ev, &od);
                o[v] = _mm512_fmadd_ps(w, ev, o[v]);
                o[v + 1] = _mm512_fmadd_ps(w, od, o[v + 1]);
            }
        }
        const __m512i lo16 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        const __m512i hi16 = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        #pragma GCC unroll 8
        for (int v = 0; v < NV; v += 2) {
            _mm512_storeu_ps(a->out + 16 * v, _mm512_permutex2var_ps(o[v], lo16, o[v + 1]));
            _mm512_storeu_ps(a->out + 16 * v + 16, _mm512_permutex2var_ps(o[v], hi16, o[v + 1]));
        }
        return;
    }
    for (int g0 = 0; g0 < G; g0 += RG) {
        int nr = imin(RG, G - g0), lo, hi;
        key_span(a, g0, g0 + nr, &lo, &hi);
        /* Keys every row of the group attends to: no per-row range checks there (a full group
         * only; a row's sums run over its keys in the same order either way). */
        int clo = hi, chi = hi;
        if (nr == RG) {
            clo = a->k0[g0], chi = a->k1[g0];
            for (int r = 1; r < RG; r++) clo = imax(clo, a->k0[g0 + r]), chi = imin(chi, a->k1[g0 + r]);
            if (clo > chi) clo = chi = hi;
        }
        /* RG·NV <= 16 accumulators, flat: GCC keeps a 16-vector array in registers, but left an
         * [8][16] one (sized for every RG and NV) on the stack, a load and a store per fma. */
        __m512 o[16], vv[16];
        #pragma GCC unroll 16
        for (int v = 0; v < 16; v++) vv[v] = _mm512_setzero_ps();   /* (only quiets -Wmaybe-uninitialized) */
        #pragma GCC unroll 16
        for (int r = 0; r < RG; r++)
            #pragma GCC unroll 16
            for (int v = 0; v < NV; v++) o[r * NV + v] = _mm512_setzero_ps();
        for (int k = lo; k < hi; k++) {
            const uint8_t *vr = V + (size_t)k * rowb;
            if (G == 1) _mm_prefetch((const char *)(vr + PF_ROWS * rowb), _MM_HINT_T0);
            #pragma GCC unroll 16
            for (int v = 0; v < NV; v++) vv[v] = kv512(vr, 16 * v, v == NV - 1 ? dl : 16, t);
            if (k >= clo && k < chi) {
                #pragma GCC unroll 16
                for (int r = 0; r < RG; r++) {
                    __m512 w = _mm512_set1_ps(a->scores[(size_t)(g0 + r) * a->lds + k]);
                    #pragma GCC unroll 16
                    for (int v = 0; v < NV; v++) o[r * NV + v] = _mm512_fmadd_ps(w, vv[v], o[r * NV + v]);
                }
                continue;
            }
            #pragma GCC unroll 16
            for (int r = 0; r < RG; r++) {
                int g = g0 + r;
                if (r >= nr || k < a->k0[g] || k >= a->k1[g]) continue;
                __m512 w = _mm512_set1_ps(a->scores[(size_t)g * a->lds + k]);
                #pragma GCC unroll 16
                for (int v = 0; v < NV; v++) o[r * NV + v] = _mm512_fmadd_ps(w, vv[v], o[r * NV + v]);
            }
        }
        #pragma GCC unroll 16
        for (int r = 0; r < RG; r++) {   /* r < RG, not nr: constant indices keep o in registers */
            if (r >= nr) break;
            float *out = a->out + (size_t)(g0 + r) * a->ldo;
            #pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                _mm512_mask_storeu_ps(out + 16 * v, v == NV - 1 ? mlast : (__mmask16)0xFFFF, o[r * NV + v]);
        }
    }
}

static inline T512 AI void attn512_nv(const nx_attn_args *a, const nx_dtype t) {
    switch (a->d) {
    /* The released head sizes get their own copies; the rest share one with run-time chunks. */
    case 64: attn512(a, t, 4, 1); break;    /* Pythia up to 410M, GPT-Neo */
    case 128: attn512(a, t, 8, 1); break;   /* Pythia 1.4B+ */
    case 256: attn512(a, t, 16, 1); break;  /* Pythia 1B, GPT-J */
    default: attn512(a, t, (a->d + 15) / 16, 0); break;
    }
}

T512 void nx__attention_avx512(const nx_attn_args *a) {
    if (a->kv_type == NX_Q8_0) (void)nx__f16_table();   /* kv512 reads nx__f16_tab */
    if (a->d > MAXD) {
        nx__attention_ref(a);
        return;
    }
    switch (a->kv_type) {
    case NX_F32: attn512_nv(a, NX_F32); break;
    case NX_BF16: attn512_nv(a, NX_BF16); break;
    case NX_Q8_0: attn512_nv(a, NX_Q8_0); break;
    default: attn512_nv(a, NX_F16); break;
    }
}

/* ---- AVX2 + FMA ---------------------------------------------------------------------------- */

/* 8 elements of a cache row from element e, widened exactly; n < 8: the first n, others 0. */
static inline T256 AI __m256 kv256(const void *row, int e, int n, const nx_dtype t) {
    if (t == NX_Q8_0) {   /* d a multiple of 32: whole 8-element quarters of a block */
        const nx_block_q8_0 *b = (const nx_block_q8_0 *)row + e / NX_QBLOCK;
        float d = nx__f16_tab[b->d];
        __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->q + e % NX_QBLOCK)));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(d));
    }
    if (t == NX_F32) {
        if (n >= 8) return _mm256_loadu_ps((const float *)row + e);
        float tmp[8] = {0};
        memcpy(tmp, (const float *)row + e, (size_t)n * sizeof(float));
        return _mm256_loadu_ps(tmp);
    }
    __m128i h;
    if (n >= 8) {
        h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + e));
    } else {
        uint16_t tmp[8] = {0};
        memcpy(tmp, (const uint16_t *)row + e, (size_t)n * sizeof(uint16_t));
        h = _mm_loadu_si128((const __m128i *)tmp);
    }
    if (t == NX_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

/* Σ of each of 8 vectors as the 8 lanes of one (hsum16x16's scheme on 256 bits). */
static inline T256 AI __m256 hsum8x8(const __m256 *a) {
    __m256 b[4], c[2];
    for (int i = 0; i < 4; i++)
        b[i] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 2; i++) {
        __m256d u = _mm256_castps_pd(b[2 * i]), v = _mm256_castps_pd(b[2 * i + 1]);
        c[i] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(u, v)), _mm256_castpd_ps(_mm256_unpackhi_pd(u, v)));
    }
    /* c[i]'s half L holds half-L partial sums of vectors 4i..4i+3 */
    return _mm256_add_ps(_mm256_permute2f128_ps(c[0], c[1], 0x20), _mm256_permute2f128_ps(c[0], c[1], 0x31));
}

/* Elements e of keys 8·half .. 8·half+7 of a tile, widened exactly. */
static inline T256 AI __m256 kt256(const uint8_t *tile, int e, int half, const nx_dtype t) {
    size_t i = (size_t)e * NX_KT + 8 * (size_t)half;
    if (t == NX_F32) return _mm256_loadu_ps((const float *)(const void *)tile + i);
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)(const void *)tile + i));
    if (t == NX_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

/* scores512_tiled on 8 lanes, one row at a time over its own keys, 4 tiles (8 chains) per step:
 * the same chain per score, so the same bits. */
static inline T256 AI void scores256_tiled(const nx_attn_args *a, const nx_dtype t, float *mx) {
    enum { NB = 4 };
    const int d = a->d;
    const size_t tb = (size_t)d * NX_KT * (t == NX_F32 ? 4 : 2);
    const __m256 sv = _mm256_set1_ps(a->scale);
    for (int g = 0; g < a->G; g++) {
        const float *q = a->q + (size_t)g * a->ldq;
        float *dst = a->scores + (size_t)g * a->lds;
        int lo = a->k0[g], hi = a->k1[g];
        for (int kb = lo / NX_KT * NX_KT; kb < hi; kb += NB * NX_KT) {
            const int nb = imin(NB, (hi - kb + NX_KT - 1) / NX_KT);
            const uint8_t *tile = (const uint8_t *)a->K + (size_t)(kb / NX_KT) * tb;
            __m256 acc[NB][2];
            for (int b = 0; b < NB; b++) acc[b][0] = acc[b][1] = _mm256_setzero_ps();
            for (int b = 0; b < nb; b++) {
                __m256 qe = _mm256_set1_ps(q[0]);
                for (int h = 0; h < 2; h++) acc[b][h] = _mm256_mul_ps(qe, kt256(tile + b * tb, 0, h, t));
            }
            for (int e = 1; e < d; e++) {
                __m256 qe = _mm256_set1_ps(q[e]);
                for (int b = 0; b < NB; b++) {
                    if (b >= nb) break;
                    for (int h = 0; h < 2; h++) acc[b][h] = _mm256_fmadd_ps(qe, kt256(tile + b * tb, e, h, t), acc[b][h]);
                }
            }
            for (int b = 0; b < nb; b++) {
                _Alignas(32) float sc[NX_KT];
                for (int h = 0; h < 2; h++) _mm256_store_ps(sc + 8 * h, _mm256_mul_ps(acc[b][h], sv));
                int k0 = kb + b * NX_KT;
                for (int k = imax(k0, lo); k < imin(k0 + NX_KT, hi); k++) {
                    dst[k] = sc[k - k0];
                    mx[g] = dst[k] > mx[g] ? dst[k] : mx[g];
                }
            }
        }
    }
}

/* As attn512 with 8 lanes; the output rows accumulate in memory (16 registers do not hold a
 * group of them), with the same per-row operation order. */
static inline T256 AI void attn256(const nx_attn_args *a, const nx_dtype t, const int NV) {
    const int G = a->G, dl = a->d - 8 * (NV - 1);
    const size_t rowb = a->row_bytes;
    const uint8_t *K = a->K, *V = a->V;
    const bool tiled = G > 1;   /* Q8_0 keys widened once per block into an fp32 tile */
    const __m256 sv = _mm256_set1_ps(a->scale);
    float mx[NX_ATTN_MAX_G], inv[NX_ATTN_MAX_G];
    _Alignas(32) float tile[8 * MAXD], sc[8];
    int kmin, kmax;
    key_span(a, 0, G, &kmin, &kmax);
    for (int g = 0; g < G; g++) mx[g] = -INFINITY;

    if (t != NX_Q8_0) scores256_tiled(a, t, mx);
    for (int kb = kmin; t == NX_Q8_0 && kb < kmax; kb += 8) {
        int nk = imin(8, kmax - kb);
        if (tiled)
            for (int j = 0; j < nk; j++)
                for (int v = 0; v < NV; v++)
                    _mm256_store_ps(tile + (j * NV + v) * 8, kv256(K + (size_t)(kb + j) * rowb, 8 * v, v == NV - 1 ? dl : 8, t));
        for (int g = 0; g < G; g++) {
            int lo = imax(kb, a->k0[g]), hi = imin(kb + nk, a->k1[g]);
            if (lo >= hi) continue;
            const float *q = a->q + (size_t)g * a->ldq;
            __m256 qv[32], acc[8];
            for (int v = 0; v < NV; v++) qv[v] = kv256(q, 8 * v, v == NV - 1 ? dl : 8, NX_F32);
            for (int j = 0; j < 8; j++) {
                int k = kb + j;
                if (k < lo || k >= hi) {
                    acc[j] = _mm256_setzero_ps();
                } else if (tiled) {
                    const float *kr = tile + j * NV * 8;
                    acc[j] = _mm256_mul_ps(qv[0], _mm256_load_ps(kr));
                    for (int v = 1; v < NV; v++) acc[j] = _mm256_fmadd_ps(qv[v], _mm256_load_ps(kr + 8 * v), acc[j]);
                } else {
                    const uint8_t *kr = K + (size_t)k * rowb;
                    acc[j] = _mm256_mul_ps(qv[0], kv256(kr, 0, NV == 1 ? dl : 8, t));
                    for (int v = 1; v < NV; v++)
                        acc[j] = _mm256_fmadd_ps(qv[v], kv256(kr, 8 * v, v == NV - 1 ? dl : 8, t), acc[j]);
                }
            }
            _mm256_store_ps(sc, _mm256_mul_ps(hsum8x8(acc), sv));
            float *dst = a->scores + (size_t)g * a->lds;
            for (int k = lo; k < hi; k++) {
                dst[k] = sc[k - kb];
                mx[g] = dst[k] > mx[g] ? dst[k] : mx[g];
            }
        }
    }

    for (int g = 0; g < G; g++) {
        inv[g] = 1.0f / nx__exp_sum_ref(a->scores + (size_t)g * a->lds + a->k0[g], a->k1[g] - a->k0[g], mx[g]);
        memset(a->out + (size_t)g * a->ldo, 0, (size_t)a->d * sizeof(float));
    }

    __m256 vv[32];
    for (int k = kmin; k < kmax; k++) {
        const uint8_t *vr = V + (size_t)k * rowb;
        for (int v = 0; v < NV; v++) vv[v] = kv256(vr, 8 * v, v == NV - 1 ? dl : 8, t);
        for (int g = 0; g < G; g++) {
            if (k < a->k0[g] || k >= a->k1[g]) continue;
            __m256 w = _mm256_set1_ps(a->scores[(size_t)g * a->lds + k] * inv[g]);
            float *out = a->out + (size_t)g * a->ldo;
            for (int v = 0; v < NV - 1; v++)
                _mm256_storeu_ps(out + 8 * v, _mm256_fmadd_ps(w, vv[v], _mm256_loadu_ps(out + 8 * v)));
            float last[8];   /* the last chunk may be partial */
            _mm256_storeu_ps(last, _mm256_fmadd_ps(w, vv[NV - 1], kv256(out, 8 * (NV - 1), dl, NX_F32)));
            memcpy(out + 8 * (NV - 1), last, (size_t)dl * sizeof(float));
        }
    }
}

T256 void nx__attention_avx2(const nx_attn_args *a) {
    if (a->kv_type == NX_Q8_0) (void)nx__f16_table();   /* kv256 reads nx__f16_tab */
    if (a->d > MAXD) {
        nx__attention_ref(a);
        return;
    }
    int nv = (a->d + 7) / 8;
    switch (a->kv_type) {
    case NX_F32: nv == 8 ? attn256(a, NX_F32, 8) : attn256(a, NX_F32, nv); break;
    case NX_BF16: nv == 8 ? attn256(a, NX_BF16, 8) : attn256(a, NX_BF16, nv); break;
    case NX_Q8_0: nv == 8 ? attn256(a, NX_Q8_0, 8) : attn256(a, NX_Q8_0, nv); break;
    default: nv == 8 ? attn256(a, NX_F16, 8) : attn256(a, NX_F16, nv); break;
    }
}

#endif
