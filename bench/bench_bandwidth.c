/* bench_bandwidth.c - the memory-read bandwidth of this machine, which bounds fp32 decoding:
 * every generated token streams all weights once, so tokens/s <= bandwidth / weight bytes.
 *
 * usage: bench_bandwidth [THREADS=2] [MIB=1024] [REPS=7] [MODEL_MB...]
 * Reads a MIB buffer (much larger than the caches) with THREADS threads (static split, the
 * library's pool), REPS times, and prints the median GB/s and, for each MODEL_MB given
 * (e.g. 649.3 for Pythia-160M fp32, as `neox bench` reports weights_mb), the decode bound. */
#include "kernels/kernels.h"

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
    double sums[1024];
} job;

static void worker(int ith, int nth, void *arg) {
    job *j = arg;
    size_t per = j->n / (size_t)nth / 64 * 64;
    const float *p = j->buf + (size_t)ith * per;
#if defined(__x86_64__)
    j->sums[ith] = nx__cpu_has_avx512() ? sum512(p, per) : sum_plain(p, per);
#else
    j->sums[ith] = sum_plain(p, per);
#endif
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
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
    float *buf = malloc(n * sizeof(float));
    if (!buf) return 1;
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023) * 1e-3f;   /* touch every page */
    nx_pool *pool = nx_pool_create(threads);
    job j = {buf, n, {0}};
    double gbs[100], check = 0;
    nx_pool_run(pool, worker, &j);   /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = nx_time_s();
        nx_pool_run(pool, worker, &j);
        double t1 = nx_time_s();
        gbs[r] = (double)(n / (size_t)threads / 64 * 64 * (size_t)threads) * sizeof(float) / (t1 - t0) / 1e9;
        check += j.sums[0];
    }
    qsort(gbs, (size_t)reps, sizeof *gbs, cmp);
    double med = gbs[reps / 2];
    printf("{\"threads\": %d, \"buffer_mib\": %zu, \"reps\": %d, \"read_gb_s_median\": %.2f, \"min\": %.2f, "
           "\"max\": %.2f, \"checksum\": %.3g", threads, mib, reps, med, gbs[0], gbs[reps - 1], check);
    for (int i = 4; i < argc; i++) {
        double mb = atof(argv[i]);
        if (mb > 0) printf(", \"bound_tok_s_%s_mb\": %.2f", argv[i], med * 1e3 / mb);
    }
    printf("}\n");
    nx_pool_free(pool);
    free(buf);
    return 0;
}
