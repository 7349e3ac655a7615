/* bench_kernels.c - speed of each kernel variant's fp32 matmul (nx__matmul_w_vt on row-major F32
 * weights) on transformer shapes: prefill (T = 512, the GEMM, GFLOP/s) and decode (T = 1, the
 * decode kernel, GB/s of weights streamed). bench_quant covers the other weight types.
 * usage: bench_kernels [THREADS=1] */
#include "kernels/kernels.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    nx_pool *pool = nx_pool_create(threads);
    const int shapes[][3] = {{512, 768, 3072}, {512, 3072, 768}, {1, 768, 3072}, {1, 768, 50304}};
    const char *names[] = {"ref", "avx2", "avx512"};
    for (size_t s = 0; s < 4; s++) {
        int T = shapes[s][0], IN = shapes[s][1], OUT = shapes[s][2];
        float *x = malloc(sizeof(float) * (size_t)T * IN), *W = malloc(sizeof(float) * (size_t)OUT * IN);
        float *y = malloc(sizeof(float) * (size_t)T * OUT);
        for (size_t i = 0; i < (size_t)T * IN; i++) x[i] = (float)(i % 7) * 0.1f;
        for (size_t i = 0; i < (size_t)OUT * IN; i++) W[i] = (float)(i % 5) * 0.1f;
        nx_wmat Wm = {NX_F32, W, false};
        for (size_t v = 0; v < 3; v++) {
            const nx_kernel_vt *vt = nx__kernels_variant(names[v]);
            if (!vt) continue;
            if (v == 0 && T > 1) continue;   /* the scalar reference would take minutes */
            int reps = T > 1 ? 3 : 15;
            double t[15], c[15];
            for (int r = 0; r < reps; r++) {
                double a = nx_time_s(), ca = cpu_s();
                nx__matmul_w_vt(vt, pool, y, x, &Wm, NULL, T, IN, OUT);
                t[r] = nx_time_s() - a;
                c[r] = cpu_s() - ca;
            }
            qsort(t, (size_t)reps, sizeof *t, cmp);
            qsort(c, (size_t)reps, sizeof *c, cmp);
            double med = t[reps / 2];
            if (threads == 1 && T > 1)
                printf("        (single thread, per CPU-second: %.1f GFLOP/s)\n", 2.0 * T * IN * OUT / c[reps / 2] / 1e9);
            if (T > 1)
                printf("%-7s T=%4d IN=%5d OUT=%6d threads=%d  %.1f GFLOP/s\n", vt->name, T, IN, OUT, threads,
                       2.0 * T * IN * OUT / med / 1e9);
            else
                printf("%-7s T=%4d IN=%5d OUT=%6d threads=%d  %.2f GB/s of weights\n", vt->name, T, IN, OUT, threads,
                       (double)OUT * IN * 4 / med / 1e9);
        }
        free(x);
        free(W);
        free(y);
    }
    nx_pool_free(pool);
    return 0;
}
