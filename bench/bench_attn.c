/* bench_attn.c - attention kernels on the Pythia-160M shape (12 layers x 12 heads of 64), per
 * variant and KV cache type, single thread, CPU time (a shared machine distorts it far less than
 * wall time):
 *  - decode: one query per head and layer over a cache of CTX positions, the whole [L][NH][CTX]
 *    cache streamed once per step as in a real decode step (47 MB at 576 positions in fp32);
 *    reported as ms per step and GB/s of cache read;
 *  - prefill: T = CTX causal query rows of one head, in groups of G rows (G = 1: one kernel call
 *    per row; G = 8: what the forward pass does), ms per head.
 * Medians of REPS. usage: bench_attn [CTX=576] [REPS=5] */
#include "kernels/kernels.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { L = 12, NH = 12, HS = 64 };

int main(int argc, char **argv) {
    int ctx = argc > 1 ? atoi(argv[1]) : 576, reps = argc > 2 ? atoi(argv[2]) : 5;
    if (ctx < 8 || reps < 1 || reps > 100) {
        fprintf(stderr, "usage: bench_attn [CTX >= 8] [REPS 1..100]\n");
        return 2;
    }
    const char *variants[] = {"ref", "avx2", "avx512"};
    const nx_dtype types[] = {NX_F32, NX_F16, NX_BF16, NX_Q8_0};
    size_t n = (size_t)L * NH * ctx * HS;
    float *src = malloc(n * sizeof(float)), *q = malloc(sizeof(float) * (size_t)ctx * HS);
    float *out = malloc(sizeof(float) * (size_t)ctx * HS), *sc = malloc(sizeof(float) * NX_ATTN_MAX_G * (size_t)ctx);
    size_t khead_max = nx__kv_head_bytes(NX_F32, HS, ctx);
    void *K = malloc((size_t)L * NH * khead_max), *V = malloc(n * 4);
    if (!src || !q || !out || !sc || !K || !V) return 1;
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        src[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
    }
    for (size_t i = 0; i < (size_t)ctx * HS; i++) q[i] = src[i * 7 % n];
    for (size_t v = 0; v < 3; v++) {
        const nx_kernel_vt *vt = nx__kernels_variant(variants[v]);
        if (!vt) continue;
        for (size_t ti = 0; ti < NX_ARRAY_LEN(types); ti++) {
            nx_dtype t = types[ti];
            size_t rb = nx__row_bytes(t, HS), head = (size_t)ctx * rb, khead = nx__kv_head_bytes(t, HS, ctx);
            for (int h = 0; h < L * NH; h++)   /* keys in the session layout (tiles of NX_KT) */
                for (int p = 0; p < ctx; p++) {
                    if (p % NX_KT == 0) nx__kv_open_tile((uint8_t *)K + (size_t)h * khead, t, HS, p);
                    nx__kv_store_key((uint8_t *)K + (size_t)h * khead, t, HS, p, src + ((size_t)h * ctx + p) * HS);
                }
            nx__kv_store(V, t, src, (int)n);
            nx_attn_args a = {.G = 1, .d = HS, .q = q, .ldq = HS, .out = out, .ldo = HS, .kv_type = t, .row_bytes = rb,
                              .scale = 0.125f, .scores = sc, .lds = (size_t)ctx};
            double dec[100], pre[2][100];
            for (int r = 0; r < reps; r++) {
                double t0 = cpu_s();
                for (int h = 0; h < L * NH; h++) {
                    a.K = (const uint8_t *)K + (size_t)h * khead;
                    a.V = (const uint8_t *)V + (size_t)h * head;
                    a.k0[0] = 0;
                    a.k1[0] = ctx;
                    vt->attention(&a);
                }
                dec[r] = cpu_s() - t0;
                if (v == 0) continue;   /* the reference's prefill takes minutes */
                a.K = K;
                a.V = V;
                for (int gi = 0; gi < 2; gi++) {
                    int G = gi ? NX_ATTN_MAX_G : 1;
                    t0 = cpu_s();
                    for (int r0 = 0; r0 < ctx; r0 += G) {
                        nx_attn_args p = a;
                        p.G = ctx - r0 < G ? ctx - r0 : G;
                        p.q = q + (size_t)r0 * HS;
                        p.out = out + (size_t)r0 * HS;
                        for (int g = 0; g < p.G; g++) {
                            p.k0[g] = 0;
                            p.k1[g] = r0 + g + 1;
                        }
                        vt->attention(&p);
                    }
                    pre[gi][r] = cpu_s() - t0;
                }
            }
            double d = median(dec, reps);
            printf("{\"variant\": \"%s\", \"kv_type\": \"%s\", \"ctx\": %d, \"decode_ms\": %.3f, \"decode_gb_s\": %.2f",
                   vt->name, nx_dtype_name(t), ctx, 1e3 * d, 2.0 * (double)head * L * NH / d / 1e9);
            if (v > 0)
                printf(", \"prefill_head_ms_g1\": %.3f, \"prefill_head_ms_g%d\": %.3f", 1e3 * median(pre[0], reps),
                       NX_ATTN_MAX_G, 1e3 * median(pre[1], reps));
            printf("}\n");
        }
    }
    free(src); free(q); free(out); free(sc); free(K); free(V);
    return 0;
}
