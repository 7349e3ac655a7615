/* bench_bandwidth.c - the memory-read bandwidth of this machine, which bounds decoding: every
 * generated token streams all weights once, so tokens/s <= bandwidth / weight bytes.
 *
 * usage: bench_bandwidth [THREADS=2] [MIB=1024] [REPS=7] [MODEL_MB...]
 * Reads a MIB buffer (much larger than the caches) with THREADS threads (static split, the
 * library's pool), REPS times per access pattern, and prints the median GB/s of each pattern
 * and, for each MODEL_MB given (e.g. 494.8 for Pythia-160M fp32, as `neox bench` reports
 * decode_read_mb), the decode bound at the best pattern's rate.
 *
 * Patterns: each thread reads its half either as one sequential stream, or as 4 streams far
 * apart, visited in turn 8 KiB at a time. A core keeps more reads in flight with several
 * streams (each gets its own hardware prefetcher), and on this machine kind that reads up to
 * ~40% faster; the bound must be the best rate the memory delivers, so it is the best median.
 * The patterns are interleaved within each repetition, so noise hits all of them alike. */
#include "kernels/kernels.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static double sum512(const float *p, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
#endif

static double sum_plain(const float *p, size_t n) {
    float a[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += p[i + k];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

typedef struct {
    const float *buf;
    size_t n;
    int streams;
    double sums[1024];
} job;

enum { GRAIN = 2048 };   /* floats per visit of a stream (8 KiB) */

static void worker(int ith, int nth, void *arg) {
    job *j = arg;
    size_t per = j->n / (size_t)nth / ((size_t)GRAIN * 4) * ((size_t)GRAIN * 4);
    const float *p = j->buf + (size_t)ith * per;
    size_t part = per / (size_t)j->streams;
    double s = 0;
    for (size_t k = 0; k < part; k += GRAIN)
        for (int i = 0; i < j->streams; i++) {
            const float *q = p + (size_t)i * part + k;
#if defined(__x86_64__)
            s += nx__cpu_has_avx512() ? sum512(q, GRAIN) : sum_plain(q, GRAIN);
#else
            s += sum_plain(q, GRAIN);
#endif
        }
    j->sums[ith] = s;
}

static size_t bytes_read(size_t n, int threads) {
    return n / (size_t)threads / ((size_t)GRAIN * 4) * ((size_t)GRAIN * 4) * (size_t)threads * sizeof(float);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 1024;
    int reps = argc > 3 ? atoi(argv[3]) : 7;
    if (threads < 1 || threads > 1024 || mib < 64 || reps < 1 || reps > 100) {
        fprintf(stderr, "usage: bench_bandwidth [THREADS] [MIB>=64] [REPS] [MODEL_MB...]\n");
        return 2;
    }
    size_t n = mib * 1048576 / sizeof(float);
    /* huge pages where offered, as for the weights (nx__malloc_huge): the best rate memory delivers */
    float *buf = nx__malloc_huge(n * sizeof(float));
    if (!buf) return 1;
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023) * 1e-3f;   /* touch every page */
    nx_pool *pool = nx_pool_create(threads);
    enum { NPAT = 2 };
    const int streams[NPAT] = {1, 4};
    double gbs[NPAT][100], med[NPAT], check = 0;
    for (int p = 0; p < NPAT; p++) {   /* warm-up */
        job j = {buf, n, streams[p], {0}};
        nx_pool_run(pool, worker, &j);
    }
    for (int r = 0; r < reps; r++)
        for (int p = 0; p < NPAT; p++) {
            job j = {buf, n, streams[p], {0}};
            double t0 = nx_time_s();
            nx_pool_run(pool, worker, &j);
            double t1 = nx_time_s();
            gbs[p][r] = (double)bytes_read(n, threads) / (t1 - t0) / 1e9;
            check += j.sums[0];
        }
    int best = 0;
    for (int p = 0; p < NPAT; p++) {
        qsort(gbs[p], (size_t)reps, sizeof **gbs, cmp);
        med[p] = gbs[p][reps / 2];
        if (med[p] > med[best]) best = p;
    }
    printf("{\"threads\": %d, \"buffer_mib\": %zu, \"reps\": %d, \"read_gb_s_median\": %.2f, "
           "\"one_stream_gb_s\": %.2f, \"four_streams_gb_s\": %.2f, \"min\": %.2f, \"max\": %.2f, \"checksum\": %.3g",
           threads, mib, reps, med[best], med[0], med[1], gbs[best][0], gbs[best][reps - 1], check);
    for (int i = 4; i < argc; i++) {
        double mb = atof(argv[i]);
        if (mb > 0) printf(", \"bound_tok_s_%s_mb\": %.2f", argv[i], med[best] * 1e3 / mb);
    }
    printf("}\n");
    nx_pool_free(pool);
    nx__free_aligned(buf);
    return 0;
}
