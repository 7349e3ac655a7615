/* bench_gemm.c - prefill matrix multiply (T = 512 tokens) on the Pythia-160M and -410M linear
 * shapes: nx__gemm_w per weight type and, when built with OpenBLAS (NX_HAVE_CBLAS),
 * cblas_sgemm on the same row-major weights, each thread computing a static half of the
 * outputs as our pool does. Variants are interleaved within
 * each repetition so load changes hit all of them alike; medians are reported, with GFLOP/s,
 * the fraction of the given (nominal) peak, the fraction of the peak measured in the same run,
 * and the matmul-only tokens/s of each model.
 *
 * The measured peak is what the cores sustain now: every thread runs 16 independent chains of
 * 512-bit FMAs (or VNNI dot products for the int8 types) at once. Wide vector code runs at a
 * lower clock than the nominal peak assumes, so this is the ceiling a kernel can reach.
 *
 *   bench_gemm [THREADS=2] [REPS=5] [T=512] [PEAK_GFLOPS=434]
 */
#include "kernels/gemm.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#ifdef NX_HAVE_CBLAS
#include <cblas.h>
#endif

/* ---- the measured peak ---------------------------------------------------------------------- */

#define PEAK_ITERS 20000000L
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* 16 independent chains (named, so they stay in registers): latency 4-5 cycles on two ports
 * needs 10. */
#define CHAINS16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
__attribute__((target("avx512f,fma"))) static void peak_fma_worker(int ith, int nth, void *arg) {
    (void)ith, (void)nth;
    __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-4f);
#define DECL(i) __m512 c##i = _mm512_set1_ps((float)i);
#define STEP(i) c##i = _mm512_fmadd_ps(a, c##i, b);
#define SUM(i) sum = _mm512_add_ps(sum, c##i);
    CHAINS16(DECL)
    for (long k = 0; k < PEAK_ITERS; k++) {
        CHAINS16(STEP)
    }
    __m512 sum = _mm512_setzero_ps();
    CHAINS16(SUM)
    *(volatile float *)arg = _mm512_reduce_add_ps(sum);   /* keeps the chains alive */
#undef DECL
#undef STEP
#undef SUM
}

__attribute__((target("avx512f,avx512vnni"))) static void peak_vnni_worker(int ith, int nth, void *arg) {
    (void)ith, (void)nth;
    __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(-1);
#define DECL(i) __m512i c##i = _mm512_set1_epi32(i);
#define STEP(i) c##i = _mm512_dpbusd_epi32(c##i, a, b);
#define SUM(i) sum = _mm512_add_epi32(sum, c##i);
    CHAINS16(DECL)
    for (long k = 0; k < PEAK_ITERS; k++) {
        CHAINS16(STEP)
    }
    __m512i sum = _mm512_setzero_si512();
    CHAINS16(SUM)
    *(volatile float *)arg = (float)_mm512_reduce_add_epi32(sum);
#undef DECL
#undef STEP
#undef SUM
}

/* GFLOP/s (fp32 FMA, 2 flops per lane) or GOP/s (VNNI, 8 ops per lane) of all threads at once;
 * 0 when the CPU lacks the instructions. */
static double measure_peak(nx_pool *pool, int threads, int vnni) {
    if (vnni ? !nx__cpu_has_avx512vnni() : !nx__cpu_has_avx512()) return 0.0;
    volatile float sink = 0.0f;
    /* One thread runs on the caller: its CPU time, as for the GEMMs. */
    double t = threads == 1 ? cpu_s() : nx_time_s();
    nx_pool_run(pool, vnni ? peak_vnni_worker : peak_fma_worker, (void *)&sink);
    t = (threads == 1 ? cpu_s() : nx_time_s()) - t;
    return (double)threads * 16.0 * 16.0 * (vnni ? 8.0 : 2.0) * (double)PEAK_ITERS / t / 1e9;
}
#else
static double measure_peak(nx_pool *pool, int threads, int vnni) {
    (void)pool, (void)threads, (void)vnni;
    return 0.0;
}
#endif

enum { V_F32, V_BF16, V_F16, V_Q8, V_Q4, V_BLAS, NV };
static const char *k_vname[NV] = {"gemm-f32", "gemm-bf16", "gemm-f16", "gemm-q8_0", "gemm-q4_0", "openblas"};

#ifdef NX_HAVE_CBLAS
typedef struct { float *y; const float *x, *W; int T, IN, OUT; } blas_job;
static void blas_worker(int ith, int nth, void *arg) {
    const blas_job *j = arg;
    int o0 = (int)((long)j->OUT * ith / nth), o1 = (int)((long)j->OUT * (ith + 1) / nth);
    if (o1 > o0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->T, o1 - o0, j->IN, 1.0f, j->x, j->IN,
                    j->W + (size_t)o0 * j->IN, j->IN, 0.0f, j->y + o0, j->OUT);
}
#endif

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 5;
    int T = argc > 3 ? atoi(argv[3]) : 512;
    double peak = argc > 4 ? atof(argv[4]) : 434.0;
    if (threads < 1 || reps < 1 || reps > 99 || T < 1) return 2;
    nx_pool *pool = nx_pool_create(threads);
    /* {IN, OUT, uses per layer}: qkv, attention out, MLP up, MLP down. */
    const struct { const char *model; int L, H; } models[] = {{"pythia-160m", 12, 768}, {"pythia-410m", 24, 1024}};
    if (threads == 1) peak /= 2.0;   /* the default peak is for the machine's two cores */
    double fma_peak = measure_peak(pool, threads, 0), vnni_peak = measure_peak(pool, threads, 1);
    printf("bench_gemm: T=%d threads=%d reps=%d (%s), variant %s, peak %.0f GFLOP/s%s\n", T, threads, reps,
           threads == 1 ? "medians of thread CPU time" : "medians of wall time",
           nx__gemm_best()->name, peak,
#ifdef NX_HAVE_CBLAS
           ", OpenBLAS linked"
#else
           ", no OpenBLAS"
#endif
    );
    printf("measured peak: fp32 FMA %.0f GFLOP/s, int8 VNNI %.0f GOP/s (0: not supported)\n", fma_peak, vnni_peak);
    for (size_t mi = 0; mi < NX_ARRAY_LEN(models); mi++) {
        int H = models[mi].H;
        const int shapes[4][2] = {{H, 3 * H}, {H, H}, {H, 4 * H}, {4 * H, H}};
        double layer_s[NV] = {0};
        for (int s = 0; s < 4; s++) {
            int IN = shapes[s][0], OUT = shapes[s][1];
            size_t nw = (size_t)OUT * IN;
            float *x = nx__malloc_aligned(sizeof(float) * (size_t)T * IN), *W = nx__malloc_aligned(sizeof(float) * nw);
            float *y = nx__malloc_aligned(sizeof(float) * (size_t)T * OUT), *b = nx__malloc(sizeof(float) * OUT);
            uint16_t *Wb = nx__malloc(2 * nw), *Wh = nx__malloc(2 * nw);
            void *Wq8 = nx__malloc((size_t)OUT * nx__row_bytes(NX_Q8_0, IN));
            void *Wq4 = nx__malloc((size_t)OUT * nx__row_bytes(NX_Q4_0, IN));
            unsigned r = 7;
            for (size_t i = 0; i < (size_t)T * IN; i++) x[i] = (float)((r = r * 1103515245u + 12345u) >> 9) / 8388608.0f - 1.0f;
            for (size_t i = 0; i < nw; i++) W[i] = ((float)((r = r * 1103515245u + 12345u) >> 9) / 8388608.0f - 1.0f) * 0.05f;
            for (int o = 0; o < OUT; o++) b[o] = 0.01f * (float)(o % 13);
            for (size_t i = 0; i < nw; i++) Wb[i] = nx_f32_to_bf16(W[i]), Wh[i] = nx_f32_to_f16(W[i]);
            for (int o = 0; o < OUT; o++) {
                nx__quantize_row_q8_0((nx_block_q8_0 *)((uint8_t *)Wq8 + (size_t)o * nx__row_bytes(NX_Q8_0, IN)), W + (size_t)o * IN, IN);
                nx__quantize_row_q4_0((nx_block_q4_0 *)((uint8_t *)Wq4 + (size_t)o * nx__row_bytes(NX_Q4_0, IN)), W + (size_t)o * IN, IN);
            }
            nx_wmat wm[NV] = {{NX_F32, W, false}, {NX_BF16, Wb, false}, {NX_F16, Wh, false}, {NX_Q8_0, Wq8, false}, {NX_Q4_0, Wq4, false}, {NX_F32, W, false}};
            double t[NV][99], c[NV][99];
            for (int rep = -1; rep < reps; rep++) {
                for (int v = 0; v < NV; v++) {
#ifndef NX_HAVE_CBLAS
                    if (v == V_BLAS) continue;
#endif
                    double a = nx_time_s(), ca = cpu_s();
#ifdef NX_HAVE_CBLAS
                    if (v == V_BLAS) {
                        blas_job bj = {y, x, W, T, IN, OUT};
                        nx_pool_run(pool, blas_worker, &bj);
                    } else
#endif
                        nx__gemm_w(pool, y, x, &wm[v], b, T, IN, OUT);
                    if (rep >= 0) t[v][rep] = nx_time_s() - a, c[v][rep] = cpu_s() - ca;
                }
            }
            for (int v = 0; v < NV; v++) {
#ifndef NX_HAVE_CBLAS
                if (v == V_BLAS) continue;
#endif
                qsort(t[v], (size_t)reps, sizeof(double), cmp);
                qsort(c[v], (size_t)reps, sizeof(double), cmp);
                /* One thread: CPU time (robust to load); the peak is then per core. */
                double med = threads == 1 ? c[v][reps / 2] : t[v][reps / 2], gf = 2.0 * T * IN * OUT / med / 1e9;
                layer_s[v] += med;
                /* Block types run on VNNI where the library picks it, against that peak. */
                bool on_vnni = (v == V_Q8 || v == V_Q4) && nx__gemm_for(nx__kernels(), NX_Q8_0) == &nx__gemm_vnni_vt;
                double mpeak = on_vnni ? vnni_peak : fma_peak;
                printf("%-12s %-10s IN=%5d OUT=%5d  %7.2f ms  %6.1f GFLOP/s  %5.1f%% of peak  %5.1f%% of measured %s\n",
                       models[mi].model, k_vname[v], IN, OUT, med * 1e3, gf, 100.0 * gf / peak,
                       mpeak > 0 ? 100.0 * gf / mpeak : 0.0, on_vnni ? "VNNI" : "FMA");
            }
            nx__free_aligned(x); nx__free_aligned(W); nx__free_aligned(y);
            nx__free(b); nx__free(Wb); nx__free(Wh); nx__free(Wq8); nx__free(Wq4);
        }
        for (int v = 0; v < NV; v++) {
            if (layer_s[v] <= 0) continue;
            printf("%-12s %-10s linear layers only: %.0f tokens/s (%d layers, no attention/head)\n", models[mi].model,
                   k_vname[v], T / (layer_s[v] * models[mi].L), models[mi].L);
        }
    }
    printf("measured peak after: fp32 FMA %.0f GFLOP/s, int8 VNNI %.0f GOP/s\n", measure_peak(pool, threads, 0),
           measure_peak(pool, threads, 1));
    nx_pool_free(pool);
    return 0;
}
