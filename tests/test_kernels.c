/* test_kernels.c - every kernel variant against the scalar reference, and the references
 * against independent double-precision formulas. */
#include "kernels/kernels.h"
#include "test.h"

#include <math.h>

static uint64_t rng_state = 12345;
static float frand(void) {   /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static void fill(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = frand();
}

static const char *k_variants[] = {"ref", "avx2", "avx512"};

/* The matmul driver on F32 weights, per variant: decode (mv_rows, T <= NX_MV_MAX_T) and prefill
 * (the GEMM) against the scalar reference, with and without bias, on shapes off every tile and
 * vector width (IN 1, 7, 19; OUT 3, 65, 129). Decode rows are bit-identical whatever T and row
 * range computes them, and a range writes only its rows. (test_quant covers 16-bit weights
 * with bias, test_gemm the GEMM on every type.) */
static void test_matmul_variants(void) {
    const int shapes[][3] = {{1, 64, 48}, {1, 768, 130}, {5, 33, 17}, {4, 16, 4}, {9, 100, 37},
                             {70, 48, 21}, {1, 7, 3}, {130, 64, 70}, {3, 1, 5}, {49, 40, 64}, {11, 24, 80},
                             {7, 19, 65}, {53, 8, 129}, {8, 40, 129}};
    int tested = 0;
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_kernel_vt *vt = nx__kernels_variant(k_variants[v]);
        if (!vt) {
            printf("     variant %s not supported by this CPU: not tested\n", k_variants[v]);
            continue;
        }
        tested++;
        for (size_t s = 0; s < NX_ARRAY_LEN(shapes); s++)
            for (int with_b = 0; with_b < 2; with_b++) {
                int T = shapes[s][0], IN = shapes[s][1], OUT = shapes[s][2];
                float *x = malloc(sizeof(float) * T * IN), *W = malloc(sizeof(float) * OUT * IN);
                float *b = malloc(sizeof(float) * OUT), *y = malloc(sizeof(float) * T * OUT);
                float *yr = malloc(sizeof(float) * T * OUT), *y1 = malloc(sizeof(float) * OUT);
                fill(x, (size_t)T * IN);
                fill(W, (size_t)OUT * IN);
                fill(b, OUT);
                const float *bias = with_b ? b : NULL;
                nx_wmat Wm = {NX_F32, W, false};
                nx__matmul_ref(yr, x, W, bias, T, IN, OUT);
                nx__matmul_w_vt(vt, NULL, y, x, &Wm, bias, T, IN, OUT);
                double maxd = 0;
                for (int i = 0; i < T * OUT; i++) maxd = fmax(maxd, fabs(y[i] - yr[i]));
                CHECK_MSG(maxd <= 1e-5 * sqrt((double)IN) + 1e-6, "%s T=%d IN=%d OUT=%d bias=%d max diff %g", vt->name, T,
                          IN, OUT, with_b, maxd);
                if (T <= NX_MV_MAX_T) {
                    for (int t = 0; t < T; t++) {
                        vt->mv_rows(y1, x + (size_t)t * IN, W, NX_F32, bias, 1, IN, OUT, 0, OUT);
                        CHECK_MSG(memcmp(y1, y + (size_t)t * OUT, sizeof(float) * OUT) == 0, "%s row %d differs from T=1",
                                  vt->name, t);
                    }
                    /* Two ranges split mid-tile give the same bits, and neither writes outside. */
                    int mid = OUT / 3 + 1;
                    for (int i = 0; i < T * OUT; i++) yr[i] = -7.0f;
                    vt->mv_rows(yr, x, W, NX_F32, bias, T, IN, OUT, 0, mid);
                    for (int t = 0; t < T; t++)
                        for (int o = mid; o < OUT; o++) CHECK(yr[(size_t)t * OUT + o] == -7.0f);
                    vt->mv_rows(yr, x, W, NX_F32, bias, T, IN, OUT, mid, OUT);
                    CHECK_MSG(memcmp(yr, y, sizeof(float) * T * OUT) == 0, "%s T=%d IN=%d OUT=%d: split differs", vt->name,
                              T, IN, OUT);
                }
                free(x); free(W); free(b); free(y); free(yr); free(y1);
            }
    }
    CHECK(tested >= 1);
}

/* 1 and 3 threads give the same bits for the float weight types, in decode and in prefill
 * (test_quant does the block types); so does a threaded activation. */
static void test_matmul_threads(void) {
    const nx_dtype types[] = {NX_F32, NX_F16, NX_BF16};
    const int Ts[] = {6, 70};
    int IN = 256, OUT = 1000;
    nx_pool *p1 = nx_pool_create(1), *p3 = nx_pool_create(3);
    CHECK(p1 && p3);
    float *x = malloc(sizeof(float) * 70 * IN), *W = malloc(sizeof(float) * OUT * IN), *b = malloc(sizeof(float) * OUT);
    float *y1 = malloc(sizeof(float) * 70 * OUT), *y2 = malloc(sizeof(float) * 70 * OUT);
    uint16_t *Wh = malloc(sizeof(uint16_t) * OUT * IN);
    fill(x, (size_t)70 * IN);
    fill(W, (size_t)OUT * IN);
    fill(b, OUT);
    for (size_t ti = 0; ti < NX_ARRAY_LEN(types); ti++) {
        nx_dtype t = types[ti];
        for (int i = 0; i < OUT * IN; i++) Wh[i] = t == NX_BF16 ? nx_f32_to_bf16(W[i]) : nx_f32_to_f16(W[i]);
        nx_wmat Wm = {t, t == NX_F32 ? (const void *)W : (const void *)Wh, false};
        for (size_t si = 0; si < NX_ARRAY_LEN(Ts); si++) {
            int T = Ts[si];
            nx__matmul_w(p1, y1, x, &Wm, b, T, IN, OUT);
            nx__matmul_w(p3, y2, x, &Wm, b, T, IN, OUT);
            CHECK_MSG(memcmp(y1, y2, sizeof(float) * T * OUT) == 0, "%s T=%d: 1 and 3 threads differ", nx_dtype_name(t), T);
        }
    }
    float *h1 = malloc(sizeof(float) * 10000), *h2 = malloc(sizeof(float) * 10000);
    fill(h1, 10000);
    memcpy(h2, h1, sizeof(float) * 10000);
    nx__act(p3, h1, 10000, NX_KACT_GELU);
    nx__kernels()->act(h2, 10000, NX_KACT_GELU);   /* the threaded split changes nothing */
    CHECK(memcmp(h1, h2, sizeof(float) * 10000) == 0);
    nx_pool_free(p1);
    nx_pool_free(p3);
    free(x); free(W); free(b); free(y1); free(y2); free(Wh); free(h1); free(h2);
}

static void test_dot_axpy_variants(void) {
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_kernel_vt *vt = nx__kernels_variant(k_variants[v]);
        if (!vt) continue;
        for (int n = 1; n <= 300; n += (n < 40 ? 1 : 37)) {
            float a[300], bb[300], y[300], yr[300];
            fill(a, n);
            fill(bb, n);
            fill(y, n);
            memcpy(yr, y, sizeof(float) * n);
            double ref = 0;
            for (int i = 0; i < n; i++) ref += (double)a[i] * bb[i];
            CHECK_NEAR(vt->dot(a, bb, n), ref, 1e-5 * sqrt((double)n) + 1e-6);
            vt->axpy(y, 0.37f, a, n);
            for (int i = 0; i < n; i++) CHECK_NEAR(y[i], yr[i] + 0.37 * a[i], 1e-6);
        }
    }
}

static void test_layernorm_ref(void) {
    float x[3 * 40], w[40], b[40], y[3 * 40];
    fill(x, 120);
    fill(w, 40);
    fill(b, 40);
    for (int i = 0; i < 40; i++) x[i] += 1000.0f;   /* a large mean must not hurt */
    nx__layernorm_ref(y, x, w, b, 3, 40, 1e-5f);
    for (int t = 0; t < 3; t++) {
        double m = 0, v = 0;
        for (int i = 0; i < 40; i++) m += x[t * 40 + i];
        m /= 40;
        for (int i = 0; i < 40; i++) v += (x[t * 40 + i] - m) * (x[t * 40 + i] - m);
        v /= 40;
        for (int i = 0; i < 40; i++)
            CHECK_NEAR(y[t * 40 + i], (x[t * 40 + i] - m) / sqrt(v + 1e-5) * w[i] + b[i], 2e-4);
    }
}

/* Every variant's LayerNorm gives the reference's bits: widths off the 8- and 16-lane steps,
 * rows with a large mean, and a constant row (variance 0). */
static void test_layernorm_variants(void) {
    const int widths[] = {1, 7, 8, 17, 40, 768, 1027};
    int tested = 0;
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_kernel_vt *vt = nx__kernels_variant(k_variants[v]);
        if (!vt) continue;
        tested++;
        for (size_t c = 0; c < NX_ARRAY_LEN(widths); c++) {
            int T = 4, C = widths[c];
            float *x = malloc(sizeof(float) * T * C), *w = malloc(sizeof(float) * C), *b = malloc(sizeof(float) * C);
            float *y = malloc(sizeof(float) * T * C), *yr = malloc(sizeof(float) * T * C);
            fill(x, (size_t)T * C);
            fill(w, C);
            fill(b, C);
            for (int i = 0; i < C; i++) {
                x[C + i] = x[C + i] * 3.0f + 500.0f;   /* row 1: large mean */
                x[3 * C + i] = 0.25f;                  /* row 3: constant */
            }
            nx__layernorm_ref(yr, x, w, b, T, C, 1e-5f);
            vt->layernorm(y, x, w, b, T, C, 1e-5f);
            CHECK_MSG(memcmp(y, yr, sizeof(float) * T * C) == 0, "%s layernorm C=%d differs from the reference",
                      vt->name, C);
            free(x), free(w), free(b), free(y), free(yr);
        }
    }
    CHECK(tested >= 1);
}

static void test_act_ref(void) {
    for (int a = NX_KACT_GELU; a <= NX_KACT_QUICK_GELU; a++) {
        for (double v = -6.0; v <= 6.0; v += 0.173) {
            float x = (float)v;
            nx__act_ref(&x, 1, (nx_kact)a);
            double r;
            switch (a) {
            case NX_KACT_GELU: r = 0.5 * v * (1 + erf(v / sqrt(2.0))); break;
            case NX_KACT_GELU_TANH: r = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))); break;
            case NX_KACT_GELU_FAST: r = 0.5 * v * (1 + tanh(0.7978845608 * v * (1 + 0.044715 * v * v))); break;
            case NX_KACT_RELU: r = v > 0 ? v : 0; break;
            case NX_KACT_SILU: r = v / (1 + exp(-v)); break;
            default: r = v / (1 + exp(-1.702 * v)); break;
            }
            CHECK_MSG(fabs(x - r) <= 2e-6 * (1 + fabs(r)), "act %d at %g: %g vs %g", a, v, (double)x, r);
        }
    }
}

static double act_double(int a, double v) {
    switch (a) {
    case NX_KACT_GELU: return 0.5 * v * (1 + erf(v / sqrt(2.0)));
    case NX_KACT_GELU_TANH: return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    case NX_KACT_GELU_FAST: return 0.5 * v * (1 + tanh(0.7978845608 * v * (1 + 0.044715 * v * v)));
    case NX_KACT_RELU: return v > 0 ? v : 0;
    case NX_KACT_SILU: return v / (1 + exp(-v));
    default: return v / (1 + exp(-1.702 * v));
    }
}

/* Every variant's activation and softmax exponentials against double precision, including
 * far tails (|x| up to 30, where the tanh/erf forms saturate) and odd lengths. */
static void test_act_exp_variants(void) {
    enum { N = 6001 };
    static float x[N], y[N];
    for (int i = 0; i < N; i++) x[i] = -30.0f + 60.0f * (float)i / (N - 1);
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_kernel_vt *vt = nx__kernels_variant(k_variants[v]);
        if (!vt) continue;
        for (int a = NX_KACT_GELU; a <= NX_KACT_QUICK_GELU; a++) {
            memcpy(y, x, sizeof x);
            vt->act(y, N, (nx_kact)a);
            double worst = 0;
            for (int i = 0; i < N; i++) {
                double r = act_double(a, x[i]);
                double err = fabs(y[i] - r) / (1 + fabs(r));
                if (!(err <= worst)) worst = err;
            }
            CHECK_MSG(worst <= 1e-6, "%s act %d: worst relative error %g", vt->name, a, worst);
        }
        /* The far ends stay defined: GELU(x) = x for huge x (and inf), 0 for huge negative x. */
        float big[4] = {3e38f, -3e38f, INFINITY, 1e20f};
        vt->act(big, 4, NX_KACT_GELU);
        CHECK_MSG(big[0] == 3e38f && big[1] == 0.0f && big[2] == INFINITY && big[3] == 1e20f,
                  "%s GELU at the far ends: %g %g %g %g", vt->name, big[0], big[1], big[2], big[3]);
        for (int n = 1; n <= 300; n += 37) {
            float s[300];
            double ref = 0;
            for (int i = 0; i < n; i++) s[i] = x[(i * 97) % N] * 3.0f;
            float mx = -INFINITY;
            for (int i = 0; i < n; i++) mx = s[i] > mx ? s[i] : mx;
            float orig[300];
            memcpy(orig, s, sizeof(float) * n);
            float sum = vt->exp_sum(s, n, mx);
            for (int i = 0; i < n; i++) {
                double e = exp((double)(orig[i] - mx));   /* the float difference is the input */
                ref += e;
                CHECK_MSG(fabs(s[i] - e) <= 3e-7 * e + 1e-37, "%s exp(%g) = %g, expected %g", vt->name, orig[i] - mx,
                          (double)s[i], e);
            }
            CHECK_NEAR(sum, ref, 1e-6 * ref);
        }
    }
}

static void test_softmax_rotary_attention(void) {
    float s[5] = {1, 2, 3, -1000, 0.5f};
    nx__softmax_ref(s, 5);
    double z = exp(1) + exp(2) + exp(3) + exp(0.5);
    CHECK_NEAR(s[2], exp(3) / z, 1e-6);
    CHECK_NEAR(s[3], 0.0, 1e-30);
    /* rotate_half: pairs (j, j + rot/2); rotate_every_two: pairs (2j, 2j+1) */
    float c[2] = {cosf(0.3f), cosf(0.7f)}, sn[2] = {sinf(0.3f), sinf(0.7f)};
    float h[6] = {1, 2, 3, 4, 5, 6};
    nx__rotary_ref(h, 4, c, sn, 0);
    CHECK_NEAR(h[0], 1 * c[0] - 3 * sn[0], 1e-6);
    CHECK_NEAR(h[2], 3 * c[0] + 1 * sn[0], 1e-6);
    CHECK_NEAR(h[1], 2 * c[1] - 4 * sn[1], 1e-6);
    CHECK_NEAR(h[4], 5, 0);
    float g[6] = {1, 2, 3, 4, 5, 6};
    nx__rotary_ref(g, 4, c, sn, 1);
    CHECK_NEAR(g[0], 1 * c[0] - 2 * sn[0], 1e-6);
    CHECK_NEAR(g[1], 2 * c[0] + 1 * sn[0], 1e-6);
    CHECK_NEAR(g[3], 4 * c[1] + 3 * sn[1], 1e-6);
    /* attention over keys 1..3 of 4 */
    float q[3] = {0.1f, -0.4f, 0.9f}, K[12], V[12], out[3], sc[4];
    fill(K, 12);
    fill(V, 12);
    float Kt[NX_KT * 3];   /* the keys in their cache layout: one tile [3][NX_KT] */
    nx__kv_open_tile(Kt, NX_F32, 3, 0);
    for (int k = 0; k < 4; k++) nx__kv_store_key(Kt, NX_F32, 3, k, K + 3 * k);
    CHECK(Kt[NX_KT + 2] == K[2 * 3 + 1] && Kt[3] == K[3 * 3] && Kt[5] == 0.0f);
    nx_attn_args at = {.G = 1, .d = 3, .q = q, .out = out, .K = Kt, .V = V, .kv_type = NX_F32, .row_bytes = 12,
                       .k0 = {1}, .k1 = {4}, .scale = 0.5f, .scores = sc, .lds = 4};
    nx__attention_ref(&at);
    double w[3], tot = 0;
    for (int k = 1; k < 4; k++) {
        w[k - 1] = exp(0.5 * (q[0] * K[k * 3] + q[1] * K[k * 3 + 1] + q[2] * K[k * 3 + 2]));
        tot += w[k - 1];
    }
    for (int e = 0; e < 3; e++) {
        double r = 0;
        for (int k = 1; k < 4; k++) r += w[k - 1] / tot * V[k * 3 + e];
        CHECK_NEAR(out[e], r, 1e-6);
    }
}

/* A cache of n rows of ld elements in type t, from values in [-1, 1) (16-bit: rounded). */
/* rows cache rows of ld values each, in type t. */
static void *make_cache(nx_dtype t, int rows, int ld) {
    size_t n = (size_t)rows * ld, rb = nx__row_bytes(t, ld);
    float *f = malloc(n * sizeof(float));
    uint8_t *c = malloc((size_t)rows * rb);
    fill(f, n);
    for (int r = 0; r < rows; r++) nx__kv_store(c + (size_t)r * rb, t, f + (size_t)r * ld, ld);
    free(f);
    return c;
}

/* The keys of rows cache positions in the session layout (nx__kv_store_key) for a head of d
 * values; Q8_0 keys are rows of ld values, as the values. The lanes of positions past the last
 * row hold NaNs: the kernels compute them with the tile and must never let them through. */
static void *make_keys(nx_dtype t, int rows, int ld, int d) {
    if (t == NX_Q8_0) return make_cache(t, rows, ld);
    float *f = malloc(sizeof(float) * (size_t)rows * d);
    void *c = malloc(nx__kv_head_bytes(t, d, rows));
    fill(f, (size_t)rows * d);
    memset(c, 0xFF, nx__kv_head_bytes(t, d, rows));   /* all-ones: a NaN in F32, F16 and BF16 */
    for (int r = 0; r < rows; r++) nx__kv_store_key(c, t, d, r, f + (size_t)r * d);
    free(f);
    return c;
}

/* Every variant's attention against the reference (which widens each cached element and runs
 * the fp32 math) for fp32, f16, bf16 and Q8_0 caches (Q8_0: the head sizes that are multiples
 * of 32, a stride of d + 32): head sizes on and off the vector widths (3, 8,
 * 20, 80 are not multiples of 16; 272 is past the register tile), key counts around the 8- and
 * 16-key blocks, a window that starts past key 0, a row stride wider than the head, and groups
 * of G causal rows (row g sees one more key than row g-1), also with GPT-Neo-style local windows
 * (each row's k0 moves with it). Each row of a group must equal, bit for bit, the same row
 * computed alone: grouping never changes results. */
static void test_attention_variants(void) {
    const int ds[] = {3, 8, 16, 20, 64, 80, 128, 256, 272};
    const int ns[] = {1, 7, 15, 16, 17, 100};
    const int gs[] = {1, 3, NX_ATTN_MAX_G};
    const nx_dtype types[] = {NX_F32, NX_F16, NX_BF16, NX_Q8_0};
    int tested = 0;
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_kernel_vt *vt = nx__kernels_variant(k_variants[v]);
        if (!vt) continue;
        tested++;
        for (size_t ti = 0; ti < NX_ARRAY_LEN(types); ti++)
            for (size_t di = 0; di < NX_ARRAY_LEN(ds); di++)
                for (size_t ni = 0; ni < NX_ARRAY_LEN(ns); ni++)
                    for (size_t gi = 0; gi < NX_ARRAY_LEN(gs); gi++)
                        for (int local = 0; local < 2; local++) {
                            nx_dtype t = types[ti];
                            int d = ds[di], G = gs[gi], n = ns[ni], rows = 3 + n + G;
                            if (t == NX_Q8_0 && d % NX_QBLOCK != 0) continue;
                            int ld = t == NX_Q8_0 ? d + NX_QBLOCK : d + 5;
                            void *K = make_keys(t, rows, ld, d), *V = make_cache(t, rows, ld);
                            float *q = malloc(sizeof(float) * G * ld), *o = malloc(sizeof(float) * G * d);
                            float *r = malloc(sizeof(float) * G * d), *one = malloc(sizeof(float) * d);
                            float *sc = malloc(sizeof(float) * NX_ATTN_MAX_G * rows);
                            fill(q, (size_t)G * ld);
                            nx_attn_args a = {.G = G, .d = d, .q = q, .ldq = (size_t)ld, .out = r, .ldo = (size_t)d,
                                              .K = K, .V = V, .kv_type = t, .row_bytes = nx__row_bytes(t, ld), .scale = 0.7f, .scores = sc,
                                              .lds = (size_t)rows};
                            for (int g = 0; g < G; g++) {   /* row g at position 3 + n - 1 + g */
                                a.k1[g] = 3 + n + g;
                                a.k0[g] = local ? 3 + g : 3;
                            }
                            nx__attention_ref(&a);
                            a.out = o;
                            vt->attention(&a);
                            double mx = 0;
                            for (int e = 0; e < G * d; e++) mx = fmax(mx, fabs(o[e] - r[e]));
                            /* the scores' rounding grows with the length of the dot products */
                            double tol = 3e-6 * fmax(1.0, sqrt(d / 64.0));
                            CHECK_MSG(mx <= tol, "%s %s d=%d n=%d G=%d local=%d: max diff %g", vt->name,
                                      nx_dtype_name(t), d, n, G, local, mx);
                            int same = 1;
                            for (int g = 0; g < G; g++) {
                                nx_attn_args a1 = a;
                                a1.G = 1;
                                a1.q = q + (size_t)g * ld;
                                a1.out = one;
                                a1.k0[0] = a.k0[g];
                                a1.k1[0] = a.k1[g];
                                vt->attention(&a1);
                                same &= memcmp(one, o + (size_t)g * d, sizeof(float) * d) == 0;
                            }
                            CHECK_MSG(same, "%s %s d=%d n=%d G=%d local=%d: a grouped row differs from the row alone",
                                      vt->name, nx_dtype_name(t), d, n, G, local);
                            free(K); free(V); free(q); free(o); free(r); free(one); free(sc);
                        }
    }
    CHECK(tested >= 1);
}

/* The cache conversions: f16/bf16 round to nearest even and widen exactly (fp32 is a copy). */
static void test_kv_store(void) {
    const float x[4] = {1.0f, 1.0f + 1.0f / 256.0f + 1.0f / 4096.0f, -3.14159265f, 65504.0f};
    uint16_t h[4];
    float back[4];
    for (int ti = 0; ti < 2; ti++) {
        nx_dtype t = ti ? NX_BF16 : NX_F16;
        nx__kv_store(h, t, x, 4);
        nx__kv_widen(back, h, t, 4);
        for (int i = 0; i < 4; i++) {
            float e = t == NX_BF16 ? nx_bf16_to_f32(nx_f32_to_bf16(x[i])) : nx_f16_to_f32(nx_f32_to_f16(x[i]));
            CHECK(back[i] == e);
        }
    }
    CHECK(nx_bf16_to_f32(h[1]) == 1.0f + 1.0f / 128.0f);   /* 1 + 2^-8 + 2^-12 rounds up to 8 mantissa bits */
}

int main(void) {
    printf("kernel variant in use: %s\n", nx__kernels()->name);
    TEST_RUN(test_matmul_variants);
    TEST_RUN(test_matmul_threads);
    TEST_RUN(test_dot_axpy_variants);
    TEST_RUN(test_layernorm_ref);
    TEST_RUN(test_layernorm_variants);
    TEST_RUN(test_act_ref);
    TEST_RUN(test_act_exp_variants);
    TEST_RUN(test_softmax_rotary_attention);
    TEST_RUN(test_attention_variants);
    TEST_RUN(test_kv_store);
    TEST_END();
}
