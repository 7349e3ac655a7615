/* bench_quant.c - decode (T = 1, 4, 8) and prefill (T = 512) speed of the typed matmul per weight
 * type and kernel variant on Pythia-160M shapes and one matrix larger than the caches: GB/s of
 * weights streamed (decode) and GFLOP/s (prefill), medians of 5. usage: bench_quant [THREADS=1] */
#include "kernels/kernels.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    nx_pool *pool = nx_pool_create(threads);
    const int shapes[][3] = {{1, 768, 3072}, {1, 3072, 768}, {1, 768, 50304}, {4, 768, 50304}, {8, 768, 50304}, {8, 1024, 4096}, {8, 4096, 1024}, {8, 1024, 3072}, {1, 2048, 65536}, {8, 2048, 65536}, {4, 2048, 65536},
                             {512, 768, 3072}};
    const nx_dtype types[] = {NX_F32, NX_F16, NX_BF16, NX_Q8_0, NX_Q4_0};
    const char *variants[] = {"avx2", "avx512"};
    for (size_t s = 0; s < NX_ARRAY_LEN(shapes); s++) {
        int T = shapes[s][0], IN = shapes[s][1], OUT = shapes[s][2];
        float *x = malloc(sizeof(float) * (size_t)T * IN), *W = malloc(sizeof(float) * (size_t)OUT * IN);
        float *y = malloc(sizeof(float) * (size_t)T * OUT);
        for (size_t i = 0; i < (size_t)T * IN; i++) x[i] = (float)(i % 7) * 0.1f - 0.3f;
        for (size_t i = 0; i < (size_t)OUT * IN; i++) W[i] = (float)(i % 5) * 0.01f - 0.02f;
        for (size_t ti = 0; ti < NX_ARRAY_LEN(types); ti++) {
            nx_dtype t = types[ti];
            size_t bytes = nx__wmat_bytes(t, OUT, IN);
            void *Wt = nx__malloc_huge(bytes);   /* as the model's weights */
            for (int o = 0; o < OUT; o++) {
                uint8_t *dst = (uint8_t *)Wt + (size_t)o * nx__row_bytes(t, IN);
                const float *src = W + (size_t)o * IN;
                switch (t) {
                case NX_Q8_0: nx__quantize_row_q8_0((nx_block_q8_0 *)dst, src, IN); break;
                case NX_Q4_0: nx__quantize_row_q4_0((nx_block_q4_0 *)dst, src, IN); break;
                case NX_F32: memcpy(dst, src, (size_t)IN * 4); break;
                default:
                    for (int k = 0; k < IN; k++)
                        ((uint16_t *)dst)[k] = t == NX_BF16 ? nx_f32_to_bf16(src[k]) : nx_f32_to_f16(src[k]);
                }
            }
            nx_wmat M = {t, Wt, false};
            /* avx2, avx512, then avx512 on the interleaved layout where it applies (in place) */
            for (size_t v = 0; v < 3; v++) {
                const nx_kernel_vt *vt = nx__kernels_variant(variants[v < 2 ? v : 1]);
                if (!vt) continue;
                if (v == 2) {   /* (Q8_0 too, though models keep it in row order: kernels.h) */
                    if (!nx__x8_eligible(vt, NX_Q4_0, OUT, IN) || (t != NX_Q8_0 && t != NX_Q4_0)) continue;
                    uint8_t *tmp = malloc(8 * nx__row_bytes(t, IN));
                    nx__x8_interleave(Wt, t, OUT, IN, tmp);
                    free(tmp);
                    M.x8 = true;
                }
                int reps = T <= NX_MV_MAX_T ? (int)(2e8 / (double)bytes) + 1 : 1;
                double ts[5], cs[5];
                for (int k = 0; k < 5; k++) {
                    double a = now_s(), c = cpu_s();
                    for (int r = 0; r < reps; r++) nx__matmul_w_vt(vt, pool, y, x, &M, NULL, T, IN, OUT);
                    ts[k] = (now_s() - a) / reps;
                    cs[k] = (cpu_s() - c) / reps;
                }
                qsort(ts, 5, sizeof *ts, cmp);
                qsort(cs, 5, sizeof *cs, cmp);
                double t_med = ts[2];
                /* with 1 thread the CPU time is the kernel's own cost even on a busy machine */
                printf("T=%3d IN=%5d OUT=%5d %-5s %-9s %8.3f ms  %7.1f GB/s  %7.1f GFLOP/s  cpu %8.3f ms (%6.1f GB/cpu-s)\n",
                       T, IN, OUT, nx_dtype_name(t), v == 2 ? "avx512-x8" : vt->name, t_med * 1e3, (double)bytes / t_med / 1e9,
                       2.0 * T * IN * (double)OUT / t_med / 1e9, cs[2] * 1e3, (double)bytes / cs[2] / 1e9);
            }
            nx__free_aligned(Wt);
        }
        free(x); free(W); free(y);
    }
    nx_pool_free(pool);
    return 0;
}
