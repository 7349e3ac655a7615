/* test_gemm.c - the prefill GEMM (kernels/gemm.c) for every weight type and variant: against
 * the scalar reference matmul on the widened weights (an independent triple loop), bit for bit
 * against the scalar variant (all variants run the same fma chain), and 1 vs 2 threads
 * bit-identical. Shapes are chosen off the tile sizes (8x48, 6x16, 4x16), across the K blocks
 * (192; 768 for AVX-512, IN = 2400 putting four in one pass) and, with T = 520 / IN = 1088 and
 * T = 2100, across the driver's passes over K ranges and row blocks (running sums parked in the
 * per-thread panel and in y). */
#include "kernels/gemm.h"
#include "test.h"

#include <math.h>

static uint64_t rng_state = 99;
static float frand(void) {   /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static const char *k_variants[] = {"ref", "avx2", "avx512"};
static const nx_dtype k_types[] = {NX_F32, NX_F16, NX_BF16, NX_Q8_0, NX_Q4_0};

/* W (OUT x IN, fp32) stored in type t, row-major; Wd receives the widened weights. */
static void *make_weights(nx_dtype t, const float *W, int OUT, int IN, float *Wd) {
    size_t rb = nx__row_bytes(t, IN);
    uint8_t *q = malloc(rb * (size_t)OUT);
    for (int o = 0; o < OUT; o++) {
        const float *w = W + (size_t)o * IN;
        uint8_t *row = q + (size_t)o * rb;
        switch (t) {
        case NX_F32: memcpy(row, w, rb); break;
        case NX_F16: for (int k = 0; k < IN; k++) ((uint16_t *)row)[k] = nx_f32_to_f16(w[k]); break;
        case NX_BF16: for (int k = 0; k < IN; k++) ((uint16_t *)row)[k] = nx_f32_to_bf16(w[k]); break;
        case NX_Q8_0: nx__quantize_row_q8_0((nx_block_q8_0 *)row, w, IN); break;
        default: nx__quantize_row_q4_0((nx_block_q4_0 *)row, w, IN); break;
        }
        nx__dequantize_row(t, row, Wd + (size_t)o * IN, IN);
    }
    return q;
}

static void test_gemm_types_variants(void) {
    /* {T, IN, OUT}: IN multiple of 32 (block types need it) except where marked by odd IN. */
    const int shapes[][3] = {{1, 32, 1},    {7, 64, 47},   {9, 96, 49},    {17, 160, 100}, {33, 256, 130},
                             {70, 288, 97}, {8, 128, 48},  {50, 416, 200}, {3, 37, 5},     {21, 300, 61},
                             {16, 257, 95}, {13, 1, 17},   {520, 1088, 17}, {2100, 192, 20},
                             {33, 2400, 60},
                             /* several passes over K (gemm.c nx__gemm): evened out, and with a
                              * short last one */
                             {512, 4096, 20}, {1100, 2400, 20}};
    nx_pool *p2 = nx_pool_create(2);
    CHECK(p2);
    int tested = 0;
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_gemm_vt *vt = nx__gemm_variant(k_variants[v]);
        if (!vt) {
            printf("     variant %s not supported by this CPU: not tested\n", k_variants[v]);
            continue;
        }
        tested++;
        for (size_t s = 0; s < NX_ARRAY_LEN(shapes); s++)
            for (size_t ti = 0; ti < NX_ARRAY_LEN(k_types); ti++) {
                int T = shapes[s][0], IN = shapes[s][1], OUT = shapes[s][2];
                nx_dtype t = k_types[ti];
                if ((t == NX_Q8_0 || t == NX_Q4_0) && IN % NX_QBLOCK) continue;
                size_t nx = (size_t)T * IN, ny = (size_t)T * OUT, nw = (size_t)OUT * IN;
                float *x = malloc(sizeof(float) * nx), *W = malloc(sizeof(float) * nw), *Wd = malloc(sizeof(float) * nw);
                float *b = malloc(sizeof(float) * OUT), *yr = malloc(sizeof(float) * ny);
                float *y = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny), *ys = malloc(sizeof(float) * ny);
                for (size_t i = 0; i < nx; i++) x[i] = frand();
                for (size_t i = 0; i < nw; i++) W[i] = frand();
                for (int o = 0; o < OUT; o++) b[o] = frand();
                const float *bias = s % 2 ? NULL : b;
                void *Wq = make_weights(t, W, OUT, IN, Wd);
                nx_wmat Wm = {t, Wq, false};
                nx__matmul_ref(yr, x, Wd, bias, T, IN, OUT);
                nx__gemm_w_vt(vt, NULL, y, x, &Wm, bias, T, IN, OUT);
                nx__gemm_w_vt(vt, p2, y2, x, &Wm, bias, T, IN, OUT);
                nx__gemm_w_vt(&nx__gemm_ref_vt, NULL, ys, x, &Wm, bias, T, IN, OUT);
                double maxd = 0;
                for (size_t i = 0; i < ny; i++) maxd = fmax(maxd, fabs(y[i] - yr[i]));
                CHECK_MSG(maxd <= 1e-5 * sqrt((double)IN) + 1e-6, "%s %s T=%d IN=%d OUT=%d max diff %g vs reference",
                          vt->name, nx_dtype_name(t), T, IN, OUT, maxd);
                CHECK_MSG(memcmp(y, y2, sizeof(float) * ny) == 0, "%s %s T=%d IN=%d OUT=%d: 1 and 2 threads differ",
                          vt->name, nx_dtype_name(t), T, IN, OUT);
                CHECK_MSG(memcmp(y, ys, sizeof(float) * ny) == 0, "%s %s T=%d IN=%d OUT=%d: differs from the scalar variant",
                          vt->name, nx_dtype_name(t), T, IN, OUT);
                free(x); free(W); free(Wd); free(b); free(yr); free(y); free(y2); free(ys); free(Wq);
            }
    }
    nx_pool_free(p2);
    CHECK(tested >= 1);
}

/* Packers on their own: every variant's packed panels hold exactly the widened values, zero
 * padding included (a wrong transpose lane would otherwise hide behind a symmetric test). */
static void test_gemm_packers(void) {
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_gemm_vt *vt = nx__gemm_variant(k_variants[v]);
        if (!vt) continue;
        int k0 = 32, kc = NX_GEMM_KC, IN = k0 + kc, OUT = vt->nr - 3;
        float *W = malloc(sizeof(float) * OUT * IN), *Wd = malloc(sizeof(float) * OUT * IN);
        float *Bp = nx__malloc_aligned(sizeof(float) * (size_t)kc * vt->nr), *Ap = nx__malloc_aligned(sizeof(float) * (size_t)kc * vt->mr);
        for (int i = 0; i < OUT * IN; i++) W[i] = frand();
        for (size_t ti = 0; ti < NX_ARRAY_LEN(k_types); ti++) {
            nx_dtype t = k_types[ti];
            void *Wq = make_weights(t, W, OUT, IN, Wd);
            for (int kk = kc; kk >= kc - 17; kk -= 17) {   /* whole blocks, and a ragged end for 16-bit/fp32 */
                if ((t == NX_Q8_0 || t == NX_Q4_0) && kk != kc) continue;
                vt->pack_b(Bp, t, Wq, nx__row_bytes(t, IN), OUT, k0, kk);
                for (int k = 0; k < kk; k++)
                    for (int r = 0; r < vt->nr; r++) {
                        float want = r < OUT ? Wd[(size_t)r * IN + k0 + k] : 0.0f;
                        CHECK_MSG(Bp[(size_t)k * vt->nr + r] == want, "%s %s pack_b k=%d r=%d", vt->name, nx_dtype_name(t), k, r);
                    }
            }
            free(Wq);
        }
        int m = vt->mr - 1, kk = 37;
        vt->pack_a(Ap, W, IN, 1, m, 5, kk);
        for (int k = 0; k < kk; k++)
            for (int i = 0; i < vt->mr; i++)
                CHECK_MSG(Ap[(size_t)k * vt->mr + i] == (i < m ? W[(size_t)i * IN + 5 + k] : 0.0f), "%s pack_a", vt->name);
        free(W); free(Wd); nx__free_aligned(Bp); nx__free_aligned(Ap);
    }
}

/* The general form used by training: k-major fp32 B, A read transposed (sam = 1), few output
 * strips (the row tiles are split too), accumulation onto C; against a double-precision loop,
 * 1 vs 2 threads and every variant vs the scalar one bit for bit. */
static void test_gemm_general(void) {
    const int shapes[][3] = {{200, 40, 150}, {33, 130, 64}, {97, 7, 300}, {520, 20, 1100}};
    nx_pool *p2 = nx_pool_create(2);
    CHECK(p2);
    for (size_t s = 0; s < NX_ARRAY_LEN(shapes); s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc(sizeof(float) * K * M), *B = malloc(sizeof(float) * K * (N + 3)), *C0 = malloc(sizeof(float) * M * N);
        float *C = malloc(sizeof(float) * M * N), *Cs = malloc(sizeof(float) * M * N), *C2 = malloc(sizeof(float) * M * N);
        for (int i = 0; i < K * M; i++) A[i] = frand();
        for (int i = 0; i < K * (N + 3); i++) B[i] = frand();
        for (int i = 0; i < M * N; i++) C0[i] = frand();
        /* A(i,k) = A[k·M + i]; B(k,j) = B[k·(N+3) + j]; C += A·B */
        nx_gemm_args a = {.M = M, .N = N, .K = K, .A = A, .sam = 1, .sak = M, .B = B, .ldb = N + 3, .ldc = N, .accumulate = 1};
        memcpy(Cs, C0, sizeof(float) * M * N);
        a.C = Cs;
        nx__gemm(&nx__gemm_ref_vt, NULL, &a);
        double maxd = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double r = C0[i * N + j];
                for (int k = 0; k < K; k++) r += (double)A[(size_t)k * M + i] * B[(size_t)k * (N + 3) + j];
                maxd = fmax(maxd, fabs(r - Cs[i * N + j]));
            }
        CHECK_MSG(maxd <= 1e-5 * sqrt((double)K) + 1e-6, "general M=%d N=%d K=%d: max diff %g", M, N, K, maxd);
        for (size_t v = 1; v < NX_ARRAY_LEN(k_variants); v++) {
            const nx_gemm_vt *vt = nx__gemm_variant(k_variants[v]);
            if (!vt) continue;
            memcpy(C, C0, sizeof(float) * M * N);
            memcpy(C2, C0, sizeof(float) * M * N);
            a.C = C;
            nx__gemm(vt, NULL, &a);
            a.C = C2;
            nx__gemm(vt, p2, &a);
            CHECK_MSG(memcmp(C, Cs, sizeof(float) * M * N) == 0, "%s general M=%d N=%d K=%d differs from scalar", vt->name, M, N, K);
            CHECK_MSG(memcmp(C, C2, sizeof(float) * M * N) == 0, "%s general M=%d N=%d K=%d: 1 vs 2 threads", vt->name, M, N, K);
        }
        free(A); free(B); free(C0); free(C); free(Cs); free(C2);
    }
    nx_pool_free(p2);
}

/* The integer variants on Q8_0/Q4_0 weights: the scalar one against nx__qdot_ref (the decode
 * oracle: same quantized activations and integer block sums, its own float order) and, within
 * the bound activation rounding allows, against fp32 on the dequantized weights; VNNI equal to
 * the scalar one bit for bit; 1 vs 2 threads bit-identical. */
static void test_gemm_int8(void) {
    /* IN = 416 and 1088: two and three of VNNI's 384-wide K blocks in one pass; T = 520: passes. */
    const int shapes[][3] = {{1, 32, 1},     {5, 64, 47},     {9, 224, 49},   {33, 416, 100},
                             {70, 192, 97},  {520, 1088, 17}, {33, 1088, 60}};
    const nx_dtype types[] = {NX_Q8_0, NX_Q4_0};
    const nx_gemm_vt *vnni = nx__gemm_variant("avx512-vnni");
    if (!vnni) printf("     AVX-512 VNNI not supported by this CPU: the VNNI variant is not tested\n");
    nx_pool *p2 = nx_pool_create(2);
    CHECK(p2);
    for (size_t s = 0; s < NX_ARRAY_LEN(shapes); s++)
        for (size_t ti = 0; ti < 2; ti++) {
            int T = shapes[s][0], IN = shapes[s][1], OUT = shapes[s][2];
            nx_dtype t = types[ti];
            size_t ny = (size_t)T * OUT, nb = (size_t)IN / NX_QBLOCK, rb = nx__row_bytes(t, IN);
            float *x = malloc(sizeof(float) * T * IN), *W = malloc(sizeof(float) * OUT * IN), *Wd = malloc(sizeof(float) * OUT * IN);
            float *b = malloc(sizeof(float) * OUT), *y = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
            nx_xq8 *xq = malloc(sizeof *xq * nb);
            for (int i = 0; i < T * IN; i++) x[i] = frand();
            for (int i = 0; i < OUT * IN; i++) W[i] = frand();
            for (int o = 0; o < OUT; o++) b[o] = frand();
            uint8_t *Wq = make_weights(t, W, OUT, IN, Wd);
            nx_wmat Wm = {t, Wq, false};
            nx__gemm_w_vt(&nx__gemm_q8ref_vt, NULL, y, x, &Wm, b, T, IN, OUT);
            for (int r = 0; r < T; r++) {
                const float *xr = x + (size_t)r * IN;
                nx__quantize_row_xq8(xq, xr, IN);
                for (int o = 0; o < OUT; o++) {
                    double got = y[(size_t)r * OUT + o], dq = nx__qdot_ref(xq, Wq + (size_t)o * rb, t, IN) + b[o];
                    double f = b[o], mag = 0, act = 0;
                    for (int k = 0; k < IN; k++) {
                        f += (double)xr[k] * Wd[(size_t)o * IN + k];
                        mag += fabs((double)xr[k] * Wd[(size_t)o * IN + k]);
                    }
                    for (size_t k = 0; k < nb; k++)
                        for (int e = 0; e < NX_QBLOCK; e++) act += fabs(Wd[(size_t)o * IN + k * NX_QBLOCK + e]) * xq[k].d / 2;
                    CHECK_MSG(fabs(got - dq) <= 1e-6 * (mag + 1), "%s T=%d IN=%d [%d][%d]: %g vs qdot %g", nx_dtype_name(t), T, IN, r, o, got, dq);
                    CHECK_MSG(fabs(got - f) <= act * 1.001 + 1e-5 * sqrt((double)IN) + 1e-6, "%s [%d][%d]: %g vs fp32 %g",
                              nx_dtype_name(t), r, o, got, f);
                }
            }
            nx__gemm_w_vt(&nx__gemm_q8ref_vt, p2, y2, x, &Wm, b, T, IN, OUT);
            CHECK_MSG(memcmp(y, y2, sizeof(float) * ny) == 0, "ref-q8 %s T=%d IN=%d OUT=%d: 1 vs 2 threads", nx_dtype_name(t), T, IN, OUT);
            if (vnni) {
                nx__gemm_w_vt(vnni, p2, y2, x, &Wm, b, T, IN, OUT);
                CHECK_MSG(memcmp(y, y2, sizeof(float) * ny) == 0, "vnni %s T=%d IN=%d OUT=%d differs from ref-q8", nx_dtype_name(t), T, IN, OUT);
                nx__gemm_w_vt(vnni, NULL, y2, x, &Wm, NULL, T, IN, OUT);
                nx__gemm_w_vt(&nx__gemm_q8ref_vt, NULL, y, x, &Wm, NULL, T, IN, OUT);
                CHECK_MSG(memcmp(y, y2, sizeof(float) * ny) == 0, "vnni %s T=%d IN=%d OUT=%d (no bias) differs", nx_dtype_name(t), T, IN, OUT);
            }
            free(x); free(W); free(Wd); free(b); free(y); free(y2); free(xq); free(Wq);
        }
    nx_pool_free(p2);
}

/* Without its working buffer (allocation failed) the driver packs A tile by tile on the stack,
 * uses NX_GEMM_KC-wide K blocks and parks the running sums in y: the same bits as with it.
 * Runs first, while no cached buffer exists, under hooks that refuse large allocations. */
static void *refuse_large(size_t n, void *user) { return n >= ((size_t)64 << 10) ? NULL : malloc(n); }
static void *realloc_large(void *p, size_t n, void *user) { return n >= ((size_t)64 << 10) ? NULL : realloc(p, n); }
static void free_hook(void *p, void *user) { free(p); }

static void test_gemm_no_buffer(void) {
    const char *names[] = {"ref", "avx2", "avx512", "ref-q8", "avx512-vnni"};
    const int T = 70, IN = 800, OUT = 100;
    nx_pool *p2 = nx_pool_create(2);
    CHECK(p2);
    float *x = malloc(sizeof(float) * T * IN), *W = malloc(sizeof(float) * OUT * IN), *Wd = malloc(sizeof(float) * OUT * IN);
    float *b = malloc(sizeof(float) * OUT), *y[2][NX_ARRAY_LEN(names)], *yb = malloc(sizeof(float) * T * OUT);
    for (int i = 0; i < T * IN; i++) x[i] = frand();
    for (int i = 0; i < OUT * IN; i++) W[i] = frand();
    for (int o = 0; o < OUT; o++) b[o] = frand();
    void *Wq = make_weights(NX_Q8_0, W, OUT, IN, Wd);
    nx_wmat Wf = {NX_F32, W, false}, Wm = {NX_Q8_0, Wq, false};
    nx_alloc_hooks h = {refuse_large, realloc_large, free_hook, NULL};
    nx_alloc_set_hooks(&h);
    for (size_t v = 0; v < NX_ARRAY_LEN(names); v++) {
        const nx_gemm_vt *vt = nx__gemm_variant(names[v]);
        for (int th = 0; th < 2; th++) {
            y[th][v] = malloc(sizeof(float) * T * OUT);
            if (vt) nx__gemm_w_vt(vt, th ? p2 : NULL, y[th][v], x, v < 3 ? &Wf : &Wm, b, T, IN, OUT);
        }
    }
    nx_alloc_set_hooks(NULL);
    for (size_t v = 0; v < NX_ARRAY_LEN(names); v++) {
        const nx_gemm_vt *vt = nx__gemm_variant(names[v]);
        if (vt) {
            nx__gemm_w_vt(vt, p2, yb, x, v < 3 ? &Wf : &Wm, b, T, IN, OUT);
            for (int th = 0; th < 2; th++)
                CHECK_MSG(memcmp(y[th][v], yb, sizeof(float) * T * OUT) == 0, "%s without its buffer (%d threads) differs",
                          names[v], th + 1);
        }
        free(y[0][v]); free(y[1][v]);
    }
    free(x); free(W); free(Wd); free(b); free(yb); free(Wq);
    nx_pool_free(p2);
}

/* The matmul driver sends block weights with more than NX_MV_MAX_T tokens to the GEMM. */
static void test_matmul_w_dispatch(void) {
    int T = NX_MV_MAX_T + 1, IN = 64, OUT = 33;
    float *x = malloc(sizeof(float) * T * IN), *W = malloc(sizeof(float) * OUT * IN), *Wd = malloc(sizeof(float) * OUT * IN);
    float *y = malloc(sizeof(float) * T * OUT), *yg = malloc(sizeof(float) * T * OUT);
    for (int i = 0; i < T * IN; i++) x[i] = frand();
    for (int i = 0; i < OUT * IN; i++) W[i] = frand();
    void *Wq = make_weights(NX_Q4_0, W, OUT, IN, Wd);
    nx_wmat Wm = {NX_Q4_0, Wq, false};
    nx__matmul_w(NULL, y, x, &Wm, NULL, T, IN, OUT);
    nx__gemm_w(NULL, yg, x, &Wm, NULL, T, IN, OUT);
    CHECK(memcmp(y, yg, sizeof(float) * T * OUT) == 0);
    free(x); free(W); free(Wd); free(y); free(yg); free(Wq);
}

int main(void) {
    TEST_RUN(test_gemm_no_buffer);   /* first: no cached buffer exists yet */
    TEST_RUN(test_gemm_types_variants);
    TEST_RUN(test_gemm_packers);
    TEST_RUN(test_gemm_general);
    TEST_RUN(test_gemm_int8);
    TEST_RUN(test_matmul_w_dispatch);
    TEST_END();
}
