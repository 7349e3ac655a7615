/*
 * tgemm.c - the matmul behind training: C[M,N] (+)= A(M,K) · B[K,N] with a strided A
 * (see nx_tgemm_args in train_internal.h), in three variants chosen once by CPUID:
 * AVX-512 (6x32 register tile), AVX2+FMA (6x16) and a portable scalar kernel, plus the
 * plain triple loop used as the oracle.
 *
 * Design (GotoBLAS-style, simplified): K is cut into blocks of KC, M into blocks of MC.
 * The kernel broadcasts A elements straight from memory through its strides (no packing:
 * with the small N of most training products a packed copy cost more than it saved), six
 * rows at a time; B is read in place: a KC x NR panel is 32 KiB at most and stays in L1/L2
 * while the kernel sweeps the M block.
 *
 * Products with at least GEMM_MIN_NK outputs and inputs (all those of the 160M-and-up shapes)
 * go to the packed GEMM of the kernels layer instead (kernels/gemm.c: A packed into row
 * tiles, B copied into L1-sized micro-panels, an 8x48 AVX-512 tile). It is 1.4-1.7x faster
 * than this kernel there, but slower on the narrow or shallow products of small models
 * (N = 128 or K = 128 on the 14M shape: 48-wide strips waste a third of a 32-wide tail, and
 * packing does not pay off), which keep the kernel below.
 *
 * Determinism: here every C element is computed by the same sequence - for each K block in
 * ascending order, acc = 0; acc = fma(a_k, b_k, acc) for k ascending; C = acc (+ bias) on
 * the first block when not accumulating, C += acc otherwise; on the GEMM path, one fma chain
 * over all k (started at C when accumulating), bias last. Which path runs depends only on
 * the shape. Work is split among threads by whole units (M block or row-tile group, N
 * panel), so neither the split nor the tile an element falls in changes its value: 1 and N
 * threads give bit-identical results. The scalar kernels use fmaf in the same order, so all
 * kernels of a path give the same bits.
 */
#include "train/train_internal.h"

#include "kernels/gemm.h"

#include <math.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NX_X86 1
#endif

#define KC 256
#define MC 96   /* multiple of MR */
#define MR 6
#define NR_MAX 32

typedef void (*tile_fn)(const float *a, long sam, long sak, const float *B, long ldb, int kc, float *C, long ldc,
                        int mr, int nr, int mode, const float *bias);
/* mode: 0 = C = acc, 1 = C = acc + bias, 2 = C += acc */

/* ---- scalar kernel (portable; exact same FMA sequence as the SIMD kernels) ----------- */
static void tile_scalar(const float *a0, long sam, long sak, const float *B, long ldb, int kc, float *C, long ldc,
                        int mr, int nr, int mode, const float *bias) {
    float acc[MR][NR_MAX];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < nr; j++) acc[i][j] = 0.0f;
    for (int k = 0; k < kc; k++) {
        const float *b = B + (long)k * ldb;
        for (int i = 0; i < mr; i++) {
            float av = a0[(long)i * sam + (long)k * sak];
            for (int j = 0; j < nr; j++) acc[i][j] = fmaf(av, b[j], acc[i][j]);
        }
    }
    for (int i = 0; i < mr; i++) {
        float *c = C + (long)i * ldc;
        for (int j = 0; j < nr; j++) {
            if (mode == 0) c[j] = acc[i][j];
            else if (mode == 1) c[j] = acc[i][j] + bias[j];
            else c[j] += acc[i][j];
        }
    }
}

#ifdef NX_X86
/* ---- AVX-512: 6 rows x 32 columns, 12 zmm accumulators ---------------------------------- */
__attribute__((target("avx512f")))
static void tile_avx512(const float *a, long sam, long sak, const float *B, long ldb, int kc, float *C, long ldc,
                        int mr, int nr, int mode, const float *bias) {
    /* Row pointers of A; rows past mr repeat row 0 (computed, never stored). */
    const float *r0 = a, *r1 = mr > 1 ? a + sam : a, *r2 = mr > 2 ? a + 2 * sam : a, *r3 = mr > 3 ? a + 3 * sam : a,
                *r4 = mr > 4 ? a + 4 * sam : a, *r5 = mr > 5 ? a + 5 * sam : a;
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(),
           c11 = _mm512_setzero_ps(), c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(),
           c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps(), c40 = _mm512_setzero_ps(),
           c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr <= 16 ? (__mmask16)0 : (__mmask16)((1u << (nr - 16)) - 1u);
    if (nr == 32) {
        for (int k = 0; k < kc; k++) {
            const float *b = B + (long)k * ldb;
            __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
            long ko = (long)k * sak;
            __m512 a0 = _mm512_set1_ps(r0[ko]);
            c00 = _mm512_fmadd_ps(a0, b0, c00); c01 = _mm512_fmadd_ps(a0, b1, c01);
            __m512 a1 = _mm512_set1_ps(r1[ko]);
            c10 = _mm512_fmadd_ps(a1, b0, c10); c11 = _mm512_fmadd_ps(a1, b1, c11);
            __m512 a2 = _mm512_set1_ps(r2[ko]);
            c20 = _mm512_fmadd_ps(a2, b0, c20); c21 = _mm512_fmadd_ps(a2, b1, c21);
            __m512 a3 = _mm512_set1_ps(r3[ko]);
            c30 = _mm512_fmadd_ps(a3, b0, c30); c31 = _mm512_fmadd_ps(a3, b1, c31);
            __m512 a4 = _mm512_set1_ps(r4[ko]);
            c40 = _mm512_fmadd_ps(a4, b0, c40); c41 = _mm512_fmadd_ps(a4, b1, c41);
            __m512 a5 = _mm512_set1_ps(r5[ko]);
            c50 = _mm512_fmadd_ps(a5, b0, c50); c51 = _mm512_fmadd_ps(a5, b1, c51);
        }
    } else {
        for (int k = 0; k < kc; k++) {
            const float *b = B + (long)k * ldb;
            __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
            long ko = (long)k * sak;
            __m512 a0 = _mm512_set1_ps(r0[ko]);
            c00 = _mm512_fmadd_ps(a0, b0, c00); c01 = _mm512_fmadd_ps(a0, b1, c01);
            __m512 a1 = _mm512_set1_ps(r1[ko]);
            c10 = _mm512_fmadd_ps(a1, b0, c10); c11 = _mm512_fmadd_ps(a1, b1, c11);
            __m512 a2 = _mm512_set1_ps(r2[ko]);
            c20 = _mm512_fmadd_ps(a2, b0, c20); c21 = _mm512_fmadd_ps(a2, b1, c21);
            __m512 a3 = _mm512_set1_ps(r3[ko]);
            c30 = _mm512_fmadd_ps(a3, b0, c30); c31 = _mm512_fmadd_ps(a3, b1, c31);
            __m512 a4 = _mm512_set1_ps(r4[ko]);
            c40 = _mm512_fmadd_ps(a4, b0, c40); c41 = _mm512_fmadd_ps(a4, b1, c41);
            __m512 a5 = _mm512_set1_ps(r5[ko]);
            c50 = _mm512_fmadd_ps(a5, b0, c50); c51 = _mm512_fmadd_ps(a5, b1, c51);
        }
    }
    __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    __m512 bb0 = _mm512_setzero_ps(), bb1 = _mm512_setzero_ps();
    if (mode == 1) { bb0 = _mm512_maskz_loadu_ps(m0, bias); bb1 = _mm512_maskz_loadu_ps(m1, bias + 16); }
    for (int i = 0; i < mr; i++) {
        float *c = C + (long)i * ldc;
        __m512 v0 = acc[i][0], v1 = acc[i][1];
        if (mode == 1) { v0 = _mm512_add_ps(v0, bb0); v1 = _mm512_add_ps(v1, bb1); }
        else if (mode == 2) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), v1);
        }
        _mm512_mask_storeu_ps(c, m0, v0);
        _mm512_mask_storeu_ps(c + 16, m1, v1);
    }
}

/* ---- AVX2 + FMA: 6 rows x 16 columns, 12 ymm accumulators ------------------------------ */
__attribute__((target("avx2,fma")))
static void tile_avx2(const float *a, long sam, long sak, const float *B, long ldb, int kc, float *C, long ldc,
                      int mr, int nr, int mode, const float *bias) {
    const float *rows[MR];
    for (int i = 0; i < MR; i++) rows[i] = i < mr ? a + (long)i * sam : a;
    __m256 acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    int32_t mi[16];
    for (int j = 0; j < 16; j++) mi[j] = j < nr ? -1 : 0;
    __m256i mk0 = _mm256_loadu_si256((const __m256i *)mi), mk1 = _mm256_loadu_si256((const __m256i *)(mi + 8));
    for (int k = 0; k < kc; k++) {
        const float *b = B + (long)k * ldb;
        __m256 b0, b1;
        if (nr == 16) { b0 = _mm256_loadu_ps(b); b1 = _mm256_loadu_ps(b + 8); }
        else { b0 = _mm256_maskload_ps(b, mk0); b1 = _mm256_maskload_ps(b + 8, mk1); }
        long ko = (long)k * sak;
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(rows[i] + ko);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    __m256 bb0 = _mm256_setzero_ps(), bb1 = _mm256_setzero_ps();
    if (mode == 1) { bb0 = _mm256_maskload_ps(bias, mk0); bb1 = _mm256_maskload_ps(bias + 8, mk1); }
    for (int i = 0; i < mr; i++) {
        float *c = C + (long)i * ldc;
        __m256 r0 = acc[i][0], r1 = acc[i][1];
        if (mode == 1) { r0 = _mm256_add_ps(r0, bb0); r1 = _mm256_add_ps(r1, bb1); }
        else if (mode == 2) {
            r0 = _mm256_add_ps(_mm256_maskload_ps(c, mk0), r0);
            r1 = _mm256_add_ps(_mm256_maskload_ps(c + 8, mk1), r1);
        }
        _mm256_maskstore_ps(c, mk0, r0);
        _mm256_maskstore_ps(c + 8, mk1, r1);
    }
}
#endif

static tile_fn g_tile;
static int g_nr;
static const char *g_isa;

static void pick_kernel(void) {
    if (g_tile) return;
#ifdef NX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) { g_nr = 32; g_isa = "avx512"; g_tile = tile_avx512; return; }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        g_nr = 16; g_isa = "avx2"; g_tile = tile_avx2; return;
    }
#endif
    g_nr = 16; g_isa = "scalar"; g_tile = tile_scalar;
}

const char *nx__tgemm_isa(void) {
    pick_kernel();
    return g_isa;
}

typedef struct { const nx_tgemm_args *a; } gemm_job;

static void gemm_worker(int ith, int nth, void *arg) {
    const nx_tgemm_args *a = ((gemm_job *)arg)->a;
    int nr = g_nr;
    int nmb = (a->M + MC - 1) / MC, npan = (a->N + nr - 1) / nr;
    long units = (long)nmb * npan;
    long u0 = units * ith / nth, u1 = units * (ith + 1) / nth;
    if (u0 >= u1) return;
    for (int k0 = 0; k0 < a->K; k0 += KC) {
        int kc = NX_MIN(KC, a->K - k0);
        int mode = (k0 == 0 && !a->accumulate) ? (a->bias ? 1 : 0) : 2;
        for (long u = u0; u < u1; u++) {
            int mb = (int)(u / npan), jp = (int)(u % npan);
            int i0 = mb * MC, mc = NX_MIN(MC, a->M - i0);
            int j0 = jp * nr, ncols = NX_MIN(nr, a->N - j0);
            for (int ip = 0; ip < mc; ip += MR) {
                g_tile(a->A + (long)(i0 + ip) * a->sam + (long)k0 * a->sak, a->sam, a->sak,
                       a->B + (long)k0 * a->ldb + j0, a->ldb, kc, a->C + (long)(i0 + ip) * a->ldc + j0, a->ldc,
                       NX_MIN(MR, mc - ip), ncols, mode, a->bias ? a->bias + j0 : NULL);
            }
        }
    }
}

/* The oracle: one thread-split over rows, plain loops, k ascending. */
static void gemm_ref_worker(int ith, int nth, void *arg) {
    const nx_tgemm_args *a = ((gemm_job *)arg)->a;
    int i0 = (int)((long)a->M * ith / nth), i1 = (int)((long)a->M * (ith + 1) / nth);
    for (int i = i0; i < i1; i++) {
        for (int j = 0; j < a->N; j++) {
            float s = 0.0f;
            for (int k = 0; k < a->K; k++) s += a->A[(long)i * a->sam + (long)k * a->sak] * a->B[(long)k * a->ldb + j];
            float *c = &a->C[(long)i * a->ldc + j];
            if (a->accumulate) *c += s;
            else *c = a->bias ? s + a->bias[j] : s;
        }
    }
}

#define GEMM_MIN_NK 256

void nx__tgemm(nx_pool *pool, const nx_tgemm_args *a, bool reference) {
    if (a->M <= 0 || a->N <= 0) return;
    pick_kernel();
    NX_ASSERT(a->K > 0);
    if (!reference && a->N >= GEMM_MIN_NK && a->K >= GEMM_MIN_NK) {
        nx_gemm_args g = {.M = a->M, .N = a->N, .K = a->K, .A = a->A, .sam = a->sam, .sak = a->sak, .B = a->B,
                          .ldb = a->ldb, .C = a->C, .ldc = a->ldc, .accumulate = a->accumulate, .bias = a->bias};
        nx__gemm(nx__gemm_best(), pool, &g);
        return;
    }
    gemm_job job = {a};
    nx_pool_fn fn = reference ? gemm_ref_worker : gemm_worker;
    /* Small products run inline: a pool wake-up costs more than they do, and the split
     * never changes results. */
    if ((double)a->M * a->N * a->K < 65536.0) fn(0, 1, &job);
    else nx_pool_run(pool, fn, &job);
}

typedef struct { const float *src; float *dst; int rows, cols; } tr_job;

static void transpose_worker(int ith, int nth, void *arg) {
    tr_job *j = arg;
    /* Split the destination rows (= source columns); 32x32 blocks keep both sides cached. */
    int c0 = (int)((long)j->cols * ith / nth), c1 = (int)((long)j->cols * (ith + 1) / nth);
    for (int cb = c0; cb < c1; cb += 32) {
        int ce = NX_MIN(cb + 32, c1);
        for (int rb = 0; rb < j->rows; rb += 32) {
            int re = NX_MIN(rb + 32, j->rows);
            for (int c = cb; c < ce; c++)
                for (int r = rb; r < re; r++) j->dst[(long)c * j->rows + r] = j->src[(long)r * j->cols + c];
        }
    }
}

void nx__transpose(nx_pool *pool, const float *src, float *dst, int rows, int cols) {
    tr_job j = {src, dst, rows, cols};
    if ((long)rows * cols < 32768) transpose_worker(0, 1, &j);
    else nx_pool_run(pool, transpose_worker, &j);
}
