/* test_quant.c - 16-bit and block-quantized weights: the Q8_0/Q4_0 row formats, every kernel
 * variant against the scalar reference, the typed matmul driver against fp32 on the
 * dequantized weights (with the error bound activation quantization allows), each run dtype's
 * logits against fp32 on the fixture models, determinism, and the quantize -> load round trip. */
#include "neox.h"
#include "test.h"

#include <errno.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "models/models.h"

static uint64_t rng_state = 987654321;
static float frand(void) {   /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static void fill(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = frand();
}

/* Rows [OUT][IN] of W quantized to wt (Q8_0/Q4_0) into Wq, rb bytes apart. */
static void quantize_rows(nx_dtype wt, uint8_t *Wq, size_t rb, const float *W, int OUT, int IN) {
    for (int o = 0; o < OUT; o++) {
        if (wt == NX_Q8_0) nx__quantize_row_q8_0((nx_block_q8_0 *)(Wq + o * rb), W + (size_t)o * IN, IN);
        else nx__quantize_row_q4_0((nx_block_q4_0 *)(Wq + o * rb), W + (size_t)o * IN, IN);
    }
}

static const char *k_variants[] = {"ref", "avx2", "avx512"};

static void test_block_formats(void) {
    /* Known answers: values on the grid are exact; the extreme value sets the scale. */
    float x[64], y[64];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16) * 0.25f;   /* q4: -16·0.25 = -4 -> d = 0.5 */
    for (int i = 0; i < 32; i++) x[32 + i] = (float)(i % 2 ? 127 : -(i % 7)) * 0.125f;
    nx_block_q4_0 b4[2];
    nx__quantize_row_q4_0(b4, x, 64);
    CHECK(nx_f16_to_f32(b4[0].d) == 0.5f);
    CHECK_EQ_INT(b4[0].qs[0] & 15, 0);          /* -4 / 0.5 + 8 = 0 */
    CHECK_EQ_INT(b4[0].qs[0] >> 4, 8);          /* element 16 is 0 */
    nx__dequantize_row(NX_Q4_0, b4, y, 64);
    for (int i = 0; i < 32; i += 2) CHECK(y[i] == x[i]);   /* even offsets are multiples of 0.5 */
    nx_block_q8_0 b8[2];
    nx__quantize_row_q8_0(b8, x, 64);
    CHECK(nx_f16_to_f32(b8[1].d) == 0.125f);
    CHECK_EQ_INT(b8[1].q[1], 127);
    nx__dequantize_row(NX_Q8_0, b8, y, 64);
    for (int i = 32; i < 64; i++) CHECK(y[i] == x[i]);
    /* Random rows: |x - deq| <= d/2 (Q8_0), <= |d| (Q4_0: the top code 15 is one step short of +8),
     * plus |q|·|d - fp16(d)| <= |q|·|d|·2^-11 from storing d in fp16 (normal here). */
    enum { N = 4096 };
    static float r[N], d[N];
    static nx_block_q8_0 q8[N / 32];
    static nx_block_q4_0 q4[N / 32];
    fill(r, N);
    for (int i = 0; i < N; i += 97) r[i] *= 20.0f;   /* outliers */
    nx__quantize_row_q8_0(q8, r, N);
    nx__dequantize_row(NX_Q8_0, q8, d, N);
    for (int i = 0; i < N; i++) {
        float dq = nx_f16_to_f32(q8[i / 32].d);
        CHECK(fabsf(d[i] - r[i]) <= (dq * 0.5f + 127.0f * dq / 2048.0f) * 1.0001f);
    }
    nx__quantize_row_q4_0(q4, r, N);
    nx__dequantize_row(NX_Q4_0, q4, d, N);
    for (int i = 0; i < N; i++) {
        float dq = fabsf(nx_f16_to_f32(q4[i / 32].d));
        CHECK(fabsf(d[i] - r[i]) <= (dq + 8.0f * dq / 2048.0f) * 1.0001f);
    }
    float z[32] = {0};
    nx__quantize_row_q4_0(q4, z, 32);
    nx__dequantize_row(NX_Q4_0, q4, d, 32);
    for (int i = 0; i < 32; i++) CHECK(d[i] == 0.0f);
    CHECK(nx__row_bytes(NX_Q8_0, 64) == 68 && nx__row_bytes(NX_Q4_0, 64) == 36);
    CHECK(nx__row_bytes(NX_Q8_0, 32) == nx_dtype_size(NX_Q8_0) && nx__row_bytes(NX_Q4_0, 32) == nx_dtype_size(NX_Q4_0));
}

/* The quantizers the library runs (SIMD on x86-64) give the scalar versions' bytes on random
 * rows and on the awkward values: NaN, infinities, -0.0, subnormals, huge values, exact
 * halves, ties of the largest magnitude with either sign first, all-zero blocks. */
static void test_quantizers_match_scalar(void) {
    enum { N = 32 * 96 };
    static float x[N];
    static nx_block_q8_0 a8[N / 32], b8[N / 32];
    static nx_block_q4_0 a4[N / 32], b4[N / 32];
    const float special[] = {NAN, INFINITY, -INFINITY, -0.0f, 1e-40f, -1e-45f, 3e38f, -3e38f, 0.5f, -0.5f, 2.5f, -7.5f};
    for (int rep = 0; rep < 20; rep++) {
        for (int i = 0; i < N; i++) {
            int blk = i / 32;
            float r = frand();
            x[i] = blk % 6 == 0   ? r
                   : blk % 6 == 1 ? (float)(int)(r * 16.0f) * 0.5f          /* halves, ties of the max */
                   : blk % 6 == 2 ? r * 1e-39f                                /* subnormal scales */
                   : blk % 6 == 3 ? (frand() > 0.8f ? special[(i + rep) % 12] : r)
                   : blk % 6 == 4 ? (i % 32 == rep % 32 ? -r * 64.0f : r)
                                  : 0.0f * r;                                 /* zeros of either sign */
        }
        nx__quantize_row_q8_0(a8, x, N);
        nx__quantize_row_q8_0_scalar(b8, x, N);
        CHECK_MSG(memcmp(a8, b8, sizeof a8) == 0, "rep %d: Q8_0 differs from the scalar quantizer", rep);
        nx__quantize_row_q4_0(a4, x, N);
        nx__quantize_row_q4_0_scalar(b4, x, N);
        CHECK_MSG(memcmp(a4, b4, sizeof a4) == 0, "rep %d: Q4_0 differs from the scalar quantizer", rep);
    }
}

/* Reads a committed fixture of exactly n bytes. */
static bool read_fixture(const char *rel, void *dst, size_t n) {
    FILE *f = fopen(fixture_path(rel), "rb");
    if (!f) return false;
    size_t got = fread(dst, 1, n, f);
    int extra = fgetc(f);
    fclose(f);
    return got == n && extra == EOF;
}

/* The weight blocks are ggml's: the same rows quantized by the gguf package (ggml's reference
 * quantizers ported to numpy; tools/fixtures/make_quant_goldens.py) give the same bytes, and
 * dequantize to the same floats. The rows cover subnormal and zero fp16 scales, exact halves
 * (rounded away from zero), zero and constant blocks and ties of the largest magnitude. */
static void test_ggml_blocks(void) {
    enum { ROWS = 11, N = 256, NB = N / NX_QBLOCK };
    static float x[ROWS * N], want_deq[ROWS * N], deq[N];
    static uint8_t want8[ROWS * NB * 34], want4[ROWS * NB * 18];
    static nx_block_q8_0 q8[NB];
    static nx_block_q4_0 q4[NB];
    CHECK(read_fixture("quant/input_f32.bin", x, sizeof x));
    CHECK(read_fixture("quant/q8_0.bin", want8, sizeof want8));
    CHECK(read_fixture("quant/q4_0.bin", want4, sizeof want4));
    for (int r = 0; r < ROWS; r++) {
        nx__quantize_row_q8_0(q8, x + (size_t)r * N, N);
        CHECK_MSG(memcmp(q8, want8 + (size_t)r * sizeof q8, sizeof q8) == 0, "row %d: Q8_0 blocks differ from ggml's", r);
        nx__quantize_row_q4_0(q4, x + (size_t)r * N, N);
        CHECK_MSG(memcmp(q4, want4 + (size_t)r * sizeof q4, sizeof q4) == 0, "row %d: Q4_0 blocks differ from ggml's", r);
    }
    /* Every multiple of one half in (-127, 127) and random values besides, in blocks whose largest magnitude is
     * 127 (so d = 1 and the code is roundf(x), ggml's rounding: ties away from zero). */
    for (int blk = 0; blk < 64; blk++) {
        float v[NX_QBLOCK];
        v[0] = blk % 2 ? 127.0f : -127.0f;
        for (int i = 1; i < NX_QBLOCK; i++)
            v[i] = blk < 17 ? (float)((blk * 31 + i - 1) % 507 - 253) * 0.5f : frand() * 127.0f;   /* -126.5..126.5 */
        nx__quantize_row_q8_0(q8, v, NX_QBLOCK);
        CHECK(nx_f16_to_f32(q8[0].d) == 1.0f);
        for (int i = 0; i < NX_QBLOCK; i++)
            CHECK_MSG(q8[0].q[i] == (int8_t)roundf(v[i]), "Q8_0 code of %.8g: %d, roundf gives %g", v[i], q8[0].q[i],
                      roundf(v[i]));
    }
    CHECK(read_fixture("quant/q8_0_deq.bin", want_deq, sizeof want_deq));
    for (int r = 0; r < ROWS; r++) {
        nx__dequantize_row(NX_Q8_0, want8 + (size_t)r * NB * 34, deq, N);
        CHECK_MSG(memcmp(deq, want_deq + (size_t)r * N, sizeof deq) == 0, "row %d: Q8_0 dequantized differently", r);
    }
    CHECK(read_fixture("quant/q4_0_deq.bin", want_deq, sizeof want_deq));
    for (int r = 0; r < ROWS; r++) {
        nx__dequantize_row(NX_Q4_0, want4 + (size_t)r * NB * 18, deq, N);
        CHECK_MSG(memcmp(deq, want_deq + (size_t)r * N, sizeof deq) == 0, "row %d: Q4_0 dequantized differently", r);
    }
}

/* Decode kernels on row-major float weights (F32, F16, BF16) for every T up to NX_MV_MAX_T:
 * every variant equals the fp32 reference on the widened weights within fp32 rounding of a
 * length-IN sum; a token's row is bit-identical whatever T and whatever row range computes it
 * (so thread splits cannot change results); a sub-range writes only its rows. */
static void test_mv_variants(void) {
    const int shapes[][2] = {{64, 48}, {100, 37}, {33, 70}, {768, 130}, {8, 129}};
    const nx_dtype types[] = {NX_F32, NX_F16, NX_BF16};
    int tested = 0;
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_kernel_vt *vt = nx__kernels_variant(k_variants[v]);
        if (!vt) continue;
        tested++;
        for (size_t ti = 0; ti < NX_ARRAY_LEN(types); ti++)
            for (size_t s = 0; s < NX_ARRAY_LEN(shapes); s++)
                for (int T = 1; T <= NX_MV_MAX_T; T++) {
                    int IN = shapes[s][0], OUT = shapes[s][1];
                    nx_dtype wt = types[ti];
                    size_t rb = nx__row_bytes(wt, IN);
                    float *x = malloc(sizeof(float) * T * IN), *W = malloc(sizeof(float) * OUT * IN);
                    float *b = malloc(sizeof(float) * OUT), *y = malloc(sizeof(float) * T * OUT);
                    float *yr = malloc(sizeof(float) * T * OUT), *y1 = malloc(sizeof(float) * OUT);
                    uint8_t *Wt = malloc(rb * OUT);
                    fill(x, (size_t)T * IN);
                    fill(W, (size_t)OUT * IN);
                    fill(b, OUT);
                    for (int i = 0; i < OUT * IN; i++) {
                        if (wt == NX_F32) continue;
                        uint16_t h = wt == NX_BF16 ? nx_f32_to_bf16(W[i]) : nx_f32_to_f16(W[i]);
                        ((uint16_t *)Wt)[i] = h;
                        W[i] = wt == NX_BF16 ? nx_bf16_to_f32(h) : nx_f16_to_f32(h);   /* the widened weight */
                    }
                    if (wt == NX_F32) memcpy(Wt, W, rb * OUT);
                    nx__matmul_ref(yr, x, W, b, T, IN, OUT);
                    vt->mv_rows(y, x, Wt, wt, b, T, IN, OUT, 0, OUT);
                    double maxd = 0;
                    for (int i = 0; i < T * OUT; i++) maxd = fmax(maxd, fabs(y[i] - yr[i]));
                    CHECK_MSG(maxd <= 1e-5 * sqrt((double)IN) + 1e-6, "%s %s T=%d IN=%d OUT=%d max diff %g", vt->name,
                              nx_dtype_name(wt), T, IN, OUT, maxd);
                    for (int t = 0; t < T; t++) {
                        vt->mv_rows(y1, x + (size_t)t * IN, Wt, wt, b, 1, IN, OUT, 0, OUT);
                        CHECK_MSG(memcmp(y1, y + (size_t)t * OUT, sizeof(float) * OUT) == 0, "%s %s T=%d: row %d",
                                  vt->name, nx_dtype_name(wt), T, t);
                    }
                    int mid = OUT / 3 + 1;
                    for (int i = 0; i < T * OUT; i++) yr[i] = -7.0f;
                    vt->mv_rows(yr, x, Wt, wt, b, T, IN, OUT, mid, OUT);
                    for (int t = 0; t < T; t++)
                        for (int o = 0; o < OUT; o++)
                            CHECK(o < mid ? yr[(size_t)t * OUT + o] == -7.0f
                                          : yr[(size_t)t * OUT + o] == y[(size_t)t * OUT + o]);
                    free(Wt); free(x); free(W); free(b); free(y); free(yr); free(y1);
                }
    }
    CHECK(tested >= 1);
}

/* Integer dot products: every variant vs nx__qdot_ref for T = 1..NX_MV_MAX_T tokens. Both sum
 * exact int32 block products; only the fp32 order of the per-block terms differs, so the gap is
 * bounded by a few ulps of the sum of |terms|. A token's row is bit-identical whatever T and
 * row range computes it; a sub-range writes only its rows. */
static void test_qdot_variants(void) {
    const int INs[] = {32, 64, 96, 768, 3072};
    const nx_dtype types[] = {NX_Q8_0, NX_Q4_0};
    int tested = 0;
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_kernel_vt *vt = nx__kernels_variant(k_variants[v]);
        if (!vt) continue;
        tested++;
        for (size_t ti = 0; ti < 2; ti++)
            for (size_t s = 0; s < NX_ARRAY_LEN(INs); s++)
                for (int T = 1; T <= NX_MV_MAX_T; T += (T < 4 ? 1 : 2)) {
                    int IN = INs[s], OUT = 37, nb = IN / 32;
                    nx_dtype wt = types[ti];
                    size_t rb = nx__row_bytes(wt, IN);
                    float *x = malloc(sizeof(float) * T * IN), *W = malloc(sizeof(float) * OUT * IN);
                    float *b = malloc(sizeof(float) * OUT);
                    uint8_t *Wq = malloc(rb * OUT);
                    nx_xq8 *xq = malloc(sizeof(nx_xq8) * nb * T);
                    float *y = malloc(sizeof(float) * T * OUT), *y1 = malloc(sizeof(float) * OUT);
                    fill(x, (size_t)T * IN);
                    fill(W, (size_t)OUT * IN);
                    fill(b, OUT);
                    quantize_rows(wt, Wq, rb, W, OUT, IN);
                    for (int t = 0; t < T; t++) nx__quantize_row_xq8(xq + (size_t)t * nb, x + (size_t)t * IN, IN);
                    vt->qdot_rows(y, xq, Wq, wt, b, T, IN, OUT, 0, OUT);
                    for (int t = 0; t < T; t++)
                        for (int o = 0; o < OUT; o++) {
                            float r = nx__qdot_ref(xq + (size_t)t * nb, Wq + o * rb, wt, IN) + b[o];
                            float g = y[(size_t)t * OUT + o];
                            CHECK_MSG(fabsf(g - r) <= 1e-5f * (1.0f + sqrtf((float)IN)), "%s %s IN=%d T=%d row %d: %g vs %g",
                                      vt->name, nx_dtype_name(wt), IN, T, o, (double)g, (double)r);
                        }
                    for (int t = 0; t < T; t++) {
                        vt->qdot_rows(y1, xq + (size_t)t * nb, Wq, wt, b, 1, IN, OUT, 0, OUT);
                        CHECK(memcmp(y1, y + (size_t)t * OUT, sizeof(float) * OUT) == 0);
                    }
                    /* a sub-range writes only its rows, with the same bits */
                    for (int o = 0; o < OUT; o++) y1[o] = -7.0f;
                    vt->qdot_rows(y1, xq, Wq, wt, b, 1, IN, OUT, 5, 14);
                    for (int o = 0; o < OUT; o++) CHECK((o >= 5 && o < 14) ? y1[o] == y[o] : y1[o] == -7.0f);
                    free(x); free(W); free(b); free(Wq); free(xq); free(y); free(y1);
                }
    }
    CHECK(tested >= 1);
}

/* Every variant's activation quantizer equals nx__quantize_row_xq8 byte for byte: random rows
 * with outliers, an all-zero block and values exactly half-way between codes (ties to even). */
static void test_quantize_act_variants(void) {
    enum { N = 4096 };
    static float x[N];
    static nx_xq8 a[N / 32], r[N / 32];
    fill(x, N);
    for (int i = 0; i < N; i += 61) x[i] *= 50.0f;
    for (int i = 64; i < 96; i++) x[i] = 0.0f;
    for (int i = 96; i < 128; i++) x[i] = (float)(i - 112) + 0.5f;   /* amax 15.5: d = 15.5/127 */
    x[127] = 127.0f;                                                 /* block 3: d = 1, x.5 ties */
    nx__quantize_row_xq8(r, x, N);
    int tested = 0;
    for (size_t v = 0; v < NX_ARRAY_LEN(k_variants); v++) {
        const nx_kernel_vt *vt = nx__kernels_variant(k_variants[v]);
        if (!vt) continue;
        tested++;
        memset(a, 0x5a, sizeof a);
        vt->quantize_q8(a, x, N);
        CHECK_MSG(memcmp(a, r, sizeof a) == 0, "%s: quantized activations differ from the reference", vt->name);
    }
    CHECK(tested >= 1);
}

/* The driver on block weights: decode (T <= NX_MV_MAX_T, int8 activations) and prefill (the
 * GEMM: int8 activations with VNNI, fp32 on dequantized weights without) within the bound
 * activation rounding allows, Σ_k |w_k|·d_x(k)/2, of fp32 on the dequantized weights; 1 and 3
 * threads bit-identical. */
static void test_matmul_w_blocks(void) {
    const nx_dtype types[] = {NX_Q8_0, NX_Q4_0};
    const int Ts[] = {1, 3, 9, 70};
    nx_pool *p1 = nx_pool_create(1), *p3 = nx_pool_create(3);
    CHECK(p1 && p3);
    for (size_t ti = 0; ti < 2; ti++)
        for (size_t si = 0; si < NX_ARRAY_LEN(Ts); si++) {
            int T = Ts[si], IN = 256, OUT = 1100;
            nx_dtype wt = types[ti];
            size_t rb = nx__row_bytes(wt, IN);
            float *x = malloc(sizeof(float) * T * IN), *W = malloc(sizeof(float) * OUT * IN), *b = malloc(sizeof(float) * OUT);
            float *Wd = malloc(sizeof(float) * OUT * IN), *yr = malloc(sizeof(float) * T * OUT);
            float *y1 = malloc(sizeof(float) * T * OUT), *y3 = malloc(sizeof(float) * T * OUT);
            uint8_t *Wq = malloc(rb * OUT);
            fill(x, (size_t)T * IN);
            fill(W, (size_t)OUT * IN);
            fill(b, OUT);
            quantize_rows(wt, Wq, rb, W, OUT, IN);
            for (int o = 0; o < OUT; o++) nx__dequantize_row(wt, Wq + o * rb, Wd + (size_t)o * IN, IN);
            nx__matmul_ref(yr, x, Wd, b, T, IN, OUT);
            nx_wmat Wm = {wt, Wq, false};
            nx__matmul_w(p1, y1, x, &Wm, b, T, IN, OUT);
            nx__matmul_w(p3, y3, x, &Wm, b, T, IN, OUT);
            CHECK_MSG(memcmp(y1, y3, sizeof(float) * T * OUT) == 0, "%s T=%d: 1 and 3 threads differ", nx_dtype_name(wt), T);
            for (int t = 0; t < T; t++) {
                const float *xt = x + (size_t)t * IN;
                for (int o = 0; o < OUT; o++) {
                    double bound = 1e-5 * sqrt((double)IN) + 1e-6, s = 0;
                    for (int k = 0; k < IN; k += 32) {
                        float amax = 0;
                        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(xt[k + i]));
                        for (int i = 0; i < 32; i++) s += fabs(Wd[(size_t)o * IN + k + i]) * amax / 127.0 / 2.0;
                    }
                    bound += s * 1.001;
                    double dlt = fabs(y1[(size_t)t * OUT + o] - yr[(size_t)t * OUT + o]);
                    if (dlt > bound) {
                        CHECK_MSG(0, "%s T=%d row %d: |y - ref| %g > bound %g", nx_dtype_name(wt), T, o, dlt, bound);
                        t = T;
                        break;
                    }
                }
            }
            free(x); free(W); free(b); free(Wd); free(yr); free(y1); free(y3); free(Wq);
        }
    nx_pool_free(p1);
    nx_pool_free(p3);
}

/* ---- models ---------------------------------------------------------------------------------- */

typedef struct {
    float *full, *inc;   /* prefill rows, token-by-token rows */
    int T, V;
} run_t;

/* The interleaved layout (kernels.h nx__x8_block) gives every row the bits of row order: the
 * decode kernels for 1..8 tokens over the whole matrix and over ranges that start and end
 * inside a group, the GEMM (9 and 70 tokens, 1 and 3 threads), and row lookups. Shapes: IN of
 * 1 to 129 block pairs (K blocks of the GEMM end inside a pair at 48; past 128 one token takes
 * the path without prebuilt activations), OUT from one group to several GEMM strips with a
 * partial one. */
static void test_interleaved_blocks(void) {
    const nx_kernel_vt *vt = nx__kernels_variant("avx512");
    if (!vt || !nx__x8_eligible(vt, NX_Q4_0, 8, 64)) {
        printf("     interleaved layout: no kernels for it on this CPU (AVX-512 VNNI): not tested\n");
        return;
    }
    const nx_dtype types[] = {NX_Q8_0, NX_Q4_0};
    const int shapes[][2] = {{8, 64}, {24, 128}, {136, 320}, {104, 3072}, {40, 1024}, {16, 8256}};
    nx_pool *p3 = nx_pool_create(3);
    CHECK(p3);
    for (size_t ti = 0; ti < 2; ti++)
        for (size_t si = 0; si < NX_ARRAY_LEN(shapes); si++) {
            nx_dtype wt = types[ti];
            int OUT = shapes[si][0], IN = shapes[si][1], TMAX = 70;
            size_t rb = nx__row_bytes(wt, IN);
            CHECK(nx__x8_eligible(vt, NX_Q4_0, OUT, IN) && !nx__x8_eligible(vt, NX_Q4_0, OUT + 4, IN));
            float *x = malloc(sizeof(float) * TMAX * IN), *W = malloc(sizeof(float) * OUT * IN);
            float *b = malloc(sizeof(float) * OUT), *ya = malloc(sizeof(float) * TMAX * OUT);
            float *yb = malloc(sizeof(float) * TMAX * OUT), *ra = malloc(sizeof(float) * IN), *rr = malloc(sizeof(float) * IN);
            uint8_t *Wq = malloc(rb * OUT), *Wx = malloc(rb * OUT), *tmp = malloc(8 * rb);
            nx_xq8 *xq = malloc(sizeof(nx_xq8) * 8 * (IN / NX_QBLOCK));
            fill(x, (size_t)TMAX * IN);
            fill(W, (size_t)OUT * IN);
            fill(b, OUT);
            quantize_rows(wt, Wq, rb, W, OUT, IN);
            memcpy(Wx, Wq, rb * OUT);
            nx__x8_interleave(Wx, wt, OUT, IN, tmp);
            CHECK(memcmp(Wx, Wq, rb * OUT) != 0);
            nx_wmat Wr = {wt, Wq, false}, Wi = {wt, Wx, true};
            for (int o = 0; o < OUT; o += 7) {
                nx__wmat_row(&Wr, IN, o, ra);
                nx__wmat_row(&Wi, IN, o, rr);
                CHECK_MSG(memcmp(ra, rr, sizeof(float) * IN) == 0, "%s row %d lookup differs", nx_dtype_name(wt), o);
            }
            for (int T = 1; T <= 8; T++) {
                for (int t = 0; t < T; t++)
                    vt->quantize_q8(xq + (size_t)t * (IN / NX_QBLOCK), x + (size_t)t * IN, IN);
                const int ranges[][2] = {{0, OUT}, {3, OUT - 5}, {OUT - 5, OUT}, {1, 6}};
                for (size_t ri = 0; ri < NX_ARRAY_LEN(ranges); ri++) {
                    int r0 = ranges[ri][0], r1 = ranges[ri][1];
                    if (r0 >= r1) continue;
                    for (size_t i = 0; i < (size_t)T * OUT; i++) ya[i] = yb[i] = -1.0f;
                    vt->qdot_rows(ya, xq, Wq, wt, b, T, IN, OUT, r0, r1);
                    vt->qdot_rows_x8(yb, xq, Wx, wt, b, T, IN, OUT, r0, r1);
                    CHECK_MSG(memcmp(ya, yb, sizeof(float) * T * OUT) == 0, "%s %dx%d T=%d rows %d..%d differ",
                              nx_dtype_name(wt), OUT, IN, T, r0, r1);
                }
            }
            for (int T = 9; T <= TMAX; T += TMAX - 9) {
                nx__matmul_w_vt(vt, NULL, ya, x, &Wr, b, T, IN, OUT);
                nx__matmul_w_vt(vt, p3, yb, x, &Wi, b, T, IN, OUT);
                CHECK_MSG(memcmp(ya, yb, sizeof(float) * T * OUT) == 0, "%s %dx%d GEMM T=%d differs", nx_dtype_name(wt),
                          OUT, IN, T);
            }
            free(x), free(W), free(b), free(ya), free(yb), free(ra), free(rr), free(Wq), free(Wx), free(tmp), free(xq);
        }
    nx_pool_free(p3);
}

static void run_model_(const char *dir, nx_dtype dt, int threads, run_t *r) {
    nx_model *m = NULL;
    nx_model_opts mo = {dt};
    r->full = r->inc = NULL;
    nx_status st = nx_model_load(dir, &mo, &m);
    CHECK_MSG(st == NX_OK, "%s as %s: %s", dir, nx_dtype_name(dt), nx_last_error());
    if (dt != NX_DTYPE_INVALID) CHECK(nx_model_weight_dtype(m) == dt);
    int V = nx_model_get_config(m)->vocab_size, T = 40;
    int32_t ids[40];
    for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 37 + 11) % V);
    nx_session_opts so = {0};
    so.n_threads = threads;
    so.n_ctx = 64;
    so.kv_type = NX_F32;   /* the weights' error alone (the 16-bit caches: test_kv) */
    nx_session *s = NULL;
    CHECK(nx_session_create(m, &so, &s) == NX_OK);
    r->T = T;
    r->V = V;
    r->full = malloc(sizeof(float) * T * V);
    r->inc = malloc(sizeof(float) * T * V);
    CHECK(nx_session_forward(s, ids, T, r->full) == NX_OK);
    nx_session_reset(s);
    for (int t = 0; t < T; t++) CHECK(nx_session_forward(s, &ids[t], 1, r->inc + (size_t)t * V) == NX_OK);
    nx_session_free(s);
    nx_model_free(m);
}

/* 1 when the run completed without a failed check (CHECK returns early on failure). */
static int run_model(const char *dir, nx_dtype dt, int threads, run_t *r) {
    int before = t_failed_checks;
    run_model_(dir, dt, threads, r);
    if (t_failed_checks != before) {
        t_current_failed = 1;
        return 0;
    }
    return 1;
}

static void free_run(run_t *r) {
    free(r->full);
    free(r->inc);
}

/* Two runs give the same logits bit for bit (prefill and token by token); frees both. */
static void check_same_bits(run_t *a, run_t *b) {
    size_t n = sizeof(float) * (size_t)a->T * (size_t)a->V;
    CHECK(a->T == b->T && a->V == b->V);
    CHECK(memcmp(a->full, b->full, n) == 0);
    CHECK(memcmp(a->inc, b->inc, n) == 0);
    free_run(a);
    free_run(b);
}

/* Largest |a - b| relative to the largest |b| (the logits' scale). */
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    return d / (mx > 0 ? mx : 1);
}

/* Each run dtype against fp32. The metric is max |Δlogit| / max |logit| over 40 positions. The
 * trained model (eval/lm, the realistic case) gets the tight tolerances: F16 1e-3, BF16 5e-3,
 * Q8_0 2e-2, Q4_0 0.1 (measured: 0 (stored in f16), 1.2e-3, 5.5e-3, 4.4e-2). The random-weight
 * family fixtures exercise each architecture's paths with looser ones (measured worst: F16
 * 3.8e-3, BF16 2.6e-2, Q8_0 0.22, Q4_0 0.24); GPT-Neo's unscaled attention on random weights
 * amplifies 4-bit noise to ~0.9 of the logit range, so its Q4_0 row is not compared (-1).
 * The 16-bit types also agree between prefill and decode to fp32 rounding (1e-5). */
static void test_model_dtypes(void) {
    const char *models[] = {"eval/lm", "models/neox_a", "models/gptj_a", "models/neo_a"};
    const nx_dtype types[] = {NX_F16, NX_BF16, NX_Q8_0, NX_Q4_0};
    const double tols[][4] = {{1e-3, 5e-3, 2e-2, 0.1}, {1e-2, 5e-2, 0.3, 0.4}, {1e-2, 5e-2, 0.3, 0.4}, {1e-2, 5e-2, 0.3, -1}};
    for (size_t mi = 0; mi < NX_ARRAY_LEN(models); mi++) {
        const double *tol = tols[mi];
        run_t ref;
        if (!run_model(fixture_path(models[mi]), NX_F32, 1, &ref)) return;
        for (size_t ti = 0; ti < NX_ARRAY_LEN(types); ti++) {
            run_t r, r2;
            if (tol[ti] < 0) continue;
            if (!run_model(fixture_path(models[mi]), types[ti], 1, &r)) return;
            size_t n = (size_t)r.T * r.V;
            double df = rel_diff(r.full, ref.full, n), di = rel_diff(r.inc, ref.inc, n);
            printf("     %-14s %-5s prefill %.2e decode %.2e (tolerance %g)\n", models[mi], nx_dtype_name(types[ti]), df,
                   di, tol[ti]);
            fflush(stdout);
            if (df > tol[ti] || di > tol[ti]) {
                CHECK_MSG(0, "%s %s off by %g / %g", models[mi], nx_dtype_name(types[ti]), df, di);
                continue;
            }
            CHECK(df > 0 || types[ti] == NX_F16);   /* the weights really changed */
            /* 16-bit weights are widened exactly: prefill and decode differ by fp32 rounding only */
            if (types[ti] == NX_F16 || types[ti] == NX_BF16) CHECK(rel_diff(r.inc, r.full, n) <= 1e-5);
            /* same thread count: same bits; and 2 threads agree too (static splits) */
            if (!run_model(fixture_path(models[mi]), types[ti], 2, &r2)) return;
            CHECK_MSG(memcmp(r.full, r2.full, sizeof(float) * n) == 0 && memcmp(r.inc, r2.inc, sizeof(float) * n) == 0,
                      "%s %s: 1 and 2 threads differ", models[mi], nx_dtype_name(types[ti]));
            free_run(&r2);
            free_run(&r);
        }
        free_run(&ref);
    }
}

static void rm_dir(const char *dir) {
    const char *names[] = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                           "generation_config.json"};
    char p[1100];
    for (size_t i = 0; i < NX_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* quantize -> load: the directory loads in its type by default, gives the logits of the
 * load-time conversion (BF16/F16 exactly; Q8_0/Q4_0 re-quantize the dequantized rows, which
 * reproduces the codes, so to fp32 rounding of the scales), and keeps config and tokenizer. */
static void test_quantize_roundtrip(void) {
    const nx_dtype types[] = {NX_Q8_0, NX_Q4_0, NX_BF16, NX_F16};
    const char *models[] = {"eval/lm", "models/gptj_a"};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/test_quant_tmp_%d", NX_BINARY_DIR, (int)getpid());
    for (size_t mi = 0; mi < NX_ARRAY_LEN(models); mi++)
        for (size_t ti = 0; ti < NX_ARRAY_LEN(types); ti++) {
            nx_status st = nx_model_quantize(fixture_path(models[mi]), dir, types[ti]);
            CHECK_MSG(st == NX_OK, "quantize %s: %s", nx_dtype_name(types[ti]), nx_last_error());
            nx_model *m = NULL;
            CHECK(nx_model_load(dir, NULL, &m) == NX_OK);
            CHECK(nx_model_weight_dtype(m) == types[ti]);
            /* Zero copy: every matrix of the NeoX file (and the input embedding) is used in place,
             * so only the fp32 LayerNorms and biases are held, and the block matrices the file
             * stores interleaved where the kernels in use do not read that (reordered at load);
             * J's separate q, k, v are interleaved into one matrix (a copy), its other matrices
             * are in place. Q8_0 and Q4_0 are interleaved where the kernels read it: in place
             * from the file, or by the conversion at load. */
            const nx_model_config *c = nx_model_get_config(m);
            int H = c->hidden_size, I = c->intermediate_size, NL = c->n_layer;
            const int shapes[5][3] = {{3 * H, H, NL}, {H, H, NL}, {I, H, NL}, {H, I, NL}, {c->vocab_size, H, 1}};
            bool blocks = types[ti] == NX_Q8_0 || types[ti] == NX_Q4_0;
            size_t x8 = 0, reordered = 0;
            for (int k = 0; k < 5 && blocks; k++) {
                size_t bytes = nx__wmat_bytes(types[ti], shapes[k][0], shapes[k][1]) * (size_t)shapes[k][2];
                if (nx__x8_eligible(nx__kernels(), types[ti], shapes[k][0], shapes[k][1])) x8 += bytes;
                if (nx__x8_layout(types[ti], shapes[k][0], shapes[k][1])) reordered += bytes;
            }
            reordered -= x8;
            size_t small = (size_t)(2 * H + NL * (9 * H + I)) * sizeof(float);
            if (mi == 0)
                CHECK_MSG(nx_model_weight_bytes(m) - nx_model_mapped_bytes(m) == small + reordered,
                          "%s: %zu of %zu weight bytes in place", nx_dtype_name(types[ti]), nx_model_mapped_bytes(m),
                          nx_model_weight_bytes(m));
            else
                CHECK(nx_model_mapped_bytes(m) > 0 && nx_model_mapped_bytes(m) < nx_model_weight_bytes(m));
            CHECK_MSG(nx_model_interleaved_bytes(m) == x8, "%s file: %zu bytes interleaved, expected %zu", models[mi],
                      nx_model_interleaved_bytes(m), x8);
            nx_model_free(m);
            if (blocks) {
                nx_model_opts o = {.dtype = types[ti]};
                CHECK(nx_model_load(fixture_path(models[mi]), &o, &m) == NX_OK);
                CHECK_MSG(nx_model_interleaved_bytes(m) == x8, "%s at load: %zu bytes interleaved, expected %zu",
                          models[mi], nx_model_interleaved_bytes(m), x8);
                nx_model_free(m);
            }
            run_t a, b;
            if (!run_model(dir, NX_DTYPE_INVALID, 1, &a)) return;
            if (!run_model(fixture_path(models[mi]), types[ti], 1, &b)) return;
            double d = rel_diff(a.full, b.full, (size_t)a.T * a.V);
            printf("     %-14s %-5s file vs load-time conversion %.2e\n", models[mi], nx_dtype_name(types[ti]), d);
            if (types[ti] == NX_BF16 || types[ti] == NX_F16)
                CHECK(d == 0);
            else
                CHECK(d <= 1e-5);
            free_run(&a);
            free_run(&b);
            char p[1100];
            snprintf(p, sizeof p, "%s/config.json", dir);
            CHECK(access(p, F_OK) == 0);
            /* a smaller file: matrices dominate these models */
            struct stat sa, sb;
            snprintf(p, sizeof p, "%s/model.safetensors", dir);
            CHECK(stat(p, &sa) == 0);
            CHECK(stat(fixture_path(mi == 0 ? "eval/lm/model.safetensors" : "models/gptj_a/model.safetensors"), &sb) == 0);
            if (types[ti] == NX_Q4_0) CHECK(sa.st_size < sb.st_size);
            rm_dir(dir);
        }
    CHECK(nx_model_quantize(fixture_path("eval/lm"), dir, NX_I8) == NX_ERR_UNSUPPORTED);
}

/* Rewrites DIR/model.safetensors with every quantized tensor passed through edit(), which may
 * replace its bytes and shape (w; new bytes in *owned, freed here) and its "neox.quant.<name>"
 * tag. Other tensors and "neox.dtype" are kept. */
typedef void (*quant_edit)(const nx_tensor_info *t, nx_tensor_write *w, const char **tag, void **owned, void *ctx);
static void rewrite_quant_file(const char *dir, quant_edit edit, void *ctx) {
    nx_tensorset *ts = NULL;
    CHECK(nx_tensorset_open(dir, &ts) == NX_OK);
    size_t n = nx_tensorset_count(ts), nm = 0;
    nx_tensor_write *tw = calloc(n, sizeof *tw);
    const char **meta = calloc(2 * n + 2, sizeof *meta);
    char(*keys)[256] = calloc(n, sizeof *keys);
    void **owned = calloc(n, sizeof *owned);
    CHECK(tw && meta && keys && owned);
    const char *dt = nx_tensorset_metadata(ts, "neox.dtype");
    if (dt) meta[nm++] = "neox.dtype", meta[nm++] = dt;
    for (size_t i = 0; i < n; i++) {
        const nx_tensor_info *t = nx_tensorset_at(ts, i);
        tw[i] = (nx_tensor_write){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(tw[i].shape, t->shape, sizeof t->shape);
        snprintf(keys[i], sizeof keys[i], "neox.quant.%s", t->name);
        const char *tag = nx_tensorset_metadata(ts, keys[i]);
        if (!tag) continue;
        edit(t, &tw[i], &tag, &owned[i], ctx);
        meta[nm++] = keys[i];
        meta[nm++] = tag;
    }
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(nx_safetensors_write(p, tw, n, meta, nm / 2) == NX_OK);
    nx_tensorset_free(ts);
    for (size_t i = 0; i < n; i++) free(owned[i]);
    free(owned), free(keys), free(meta), free(tw);
}

/* Interleaved tensors back to row order, tagged "Q4_0" or "Q8_0": a file as neox wrote them
 * before the layout (and as llama.cpp's blocks are). */
static void edit_to_rows(const nx_tensor_info *t, nx_tensor_write *w, const char **tag, void **owned, void *ctx) {
    (void)ctx;
    bool q8 = !strcmp(*tag, "Q8_0_x8");
    if (!q8 && strcmp(*tag, "Q4_0_x8") != 0) return;
    nx_dtype qt = q8 ? NX_Q8_0 : NX_Q4_0;
    int OUT = (int)t->shape[0], IN = (int)(t->shape[1] / nx_dtype_size(qt) * NX_QBLOCK);
    size_t rb = (size_t)t->shape[1];
    uint8_t *rows = malloc(t->nbytes);
    for (int o = 0; o < OUT; o++) nx__x8_gather_row(t->data, qt, IN, o, rows + (size_t)o * rb);
    *owned = rows;
    w->data = rows;
    *tag = q8 ? "Q8_0" : "Q4_0";
}

/* Files from `neox quantize --type q4|q8` store each matrix of a fitting shape (nx__x8_layout)
 * interleaved, tagged "Q4_0_x8" or "Q8_0_x8"; its rows are the blocks of ggml's quantizer, row
 * for row. Where the kernels read the layout the matrices are used in place, interleaved; a
 * row-order file (tagged "Q4_0" or "Q8_0", as written before) still loads in place, and gives
 * the same logits bit for bit. (The reordering at load on CPUs without the kernels:
 * cli_quantize.sh, NX_KERNELS=ref.) */
static void interleaved_file(nx_dtype qt) {
    const char *x8_tag = qt == NX_Q8_0 ? "Q8_0_x8" : "Q4_0_x8";
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/test_quant_x8_%d", NX_BINARY_DIR, (int)getpid());
    CHECK(nx_model_quantize(fixture_path("eval/lm"), dir, qt) == NX_OK);
    nx_tensorset *q = NULL, *f = NULL;
    CHECK(nx_tensorset_open(dir, &q) == NX_OK);
    CHECK(nx_tensorset_open(fixture_path("eval/lm"), &f) == NX_OK);
    int n_x8 = 0, n_q = 0;
    size_t x8_bytes = 0;
    for (size_t i = 0; i < nx_tensorset_count(q); i++) {
        const nx_tensor_info *t = nx_tensorset_at(q, i), *src = nx_tensorset_find(f, t->name);
        char key[256];
        snprintf(key, sizeof key, "neox.quant.%s", t->name);
        const char *tag = nx_tensorset_metadata(q, key);
        if (!tag) continue;
        n_q++;
        CHECK(src && src->ndim == 2);
        int OUT = (int)src->shape[0], IN = (int)src->shape[1];
        bool x8 = !strcmp(tag, x8_tag);
        CHECK_MSG(x8 == nx__x8_layout(qt, OUT, IN) && (x8 || !strcmp(tag, nx_dtype_name(qt))), "%s tagged %s", t->name,
                  tag);
        n_x8 += x8;
        x8_bytes += x8 ? t->nbytes : 0;
        size_t rb = nx__row_bytes(qt, IN);
        float *w = malloc(sizeof(float) * (size_t)OUT * IN);
        uint8_t *want = malloc(rb), *got = malloc(rb);
        CHECK(nx_tensor_to_f32(src, w) == NX_OK);
        for (int o = 0; o < OUT; o++) {
            if (qt == NX_Q8_0)
                nx__quantize_row_q8_0((nx_block_q8_0 *)want, w + (size_t)o * IN, IN);
            else
                nx__quantize_row_q4_0((nx_block_q4_0 *)want, w + (size_t)o * IN, IN);
            if (x8)
                nx__x8_gather_row(t->data, qt, IN, o, got);
            else
                memcpy(got, (const uint8_t *)t->data + (size_t)o * rb, rb);
            if (memcmp(want, got, rb) != 0) {
                CHECK_MSG(0, "%s row %d is not the row's %s blocks", t->name, o, nx_dtype_name(qt));
                break;
            }
        }
        free(w), free(want), free(got);
    }
    nx_tensorset_free(q);
    nx_tensorset_free(f);
    CHECK(n_q == 9 && n_x8 == 9);   /* 2 layers x 4 matrices + the head: every shape fits */
    /* in place, in the file's layout where the kernels read it */
    bool fast = nx__x8_eligible(nx__kernels(), qt, 64, 64);
    nx_model *m = NULL;
    CHECK(nx_model_load(dir, NULL, &m) == NX_OK);
    CHECK(nx_model_interleaved_bytes(m) == (fast ? x8_bytes : 0));
    size_t mapped_x8 = nx_model_mapped_bytes(m);
    nx_model_free(m);
    run_t a, b;
    if (!run_model(dir, NX_DTYPE_INVALID, 2, &a)) return;
    rewrite_quant_file(dir, edit_to_rows, NULL);
    CHECK(nx_model_load(dir, NULL, &m) == NX_OK);
    CHECK(nx_model_interleaved_bytes(m) == 0);
    CHECK(nx_model_mapped_bytes(m) >= mapped_x8 && nx_model_mapped_bytes(m) >= x8_bytes);
    nx_model_free(m);
    if (!run_model(dir, NX_DTYPE_INVALID, 2, &b)) return;
    check_same_bits(&a, &b);
    rm_dir(dir);
}

static void test_interleaved_files(void) {
    interleaved_file(NX_Q4_0);
    interleaved_file(NX_Q8_0);
}

/* A random GPT-J checkpoint with n_embd 64 (1 layer, 2 heads, n_inner 128, vocab 40) in dir:
 * its separate q, k, v are large enough for the interleaved layout, which the fixtures' are not. */
static void write_random_gptj(const char *dir) {
    enum { H = 64, I = 128, V = 40 };
    static const char *cfg = "{\"model_type\": \"gptj\", \"architectures\": [\"GPTJForCausalLM\"], "
                             "\"activation_function\": \"gelu_new\", \"n_embd\": 64, \"n_head\": 2, \"n_inner\": 128, "
                             "\"n_layer\": 1, \"n_positions\": 64, \"rotary_dim\": 8, \"vocab_size\": 40, "
                             "\"layer_norm_epsilon\": 1e-05, \"tie_word_embeddings\": false}";
    const struct { const char *name; int d0, d1; } spec[] = {
        {"transformer.wte.weight", V, H},           {"transformer.h.0.ln_1.weight", H, 0},
        {"transformer.h.0.ln_1.bias", H, 0},        {"transformer.h.0.attn.q_proj.weight", H, H},
        {"transformer.h.0.attn.k_proj.weight", H, H}, {"transformer.h.0.attn.v_proj.weight", H, H},
        {"transformer.h.0.attn.out_proj.weight", H, H}, {"transformer.h.0.mlp.fc_in.weight", I, H},
        {"transformer.h.0.mlp.fc_in.bias", I, 0},   {"transformer.h.0.mlp.fc_out.weight", H, I},
        {"transformer.h.0.mlp.fc_out.bias", H, 0},  {"transformer.ln_f.weight", H, 0},
        {"transformer.ln_f.bias", H, 0},            {"lm_head.weight", V, H},
        {"lm_head.bias", V, 0}};
    enum { N = sizeof spec / sizeof spec[0] };
    nx_tensor_write tw[N];
    float *data[N];
    for (int i = 0; i < N; i++) {
        size_t n = (size_t)spec[i].d0 * (size_t)(spec[i].d1 ? spec[i].d1 : 1);
        data[i] = malloc(sizeof(float) * n);
        fill(data[i], n);
        if (strstr(spec[i].name, "ln_") && strstr(spec[i].name, "weight"))
            for (size_t k = 0; k < n; k++) data[i][k] = 1.0f + 0.1f * data[i][k];
        tw[i] = (nx_tensor_write){spec[i].name, NX_F32, spec[i].d1 ? 2 : 1, {spec[i].d0, spec[i].d1}, data[i]};
    }
    char p[1100];
    CHECK(mkdir(dir, 0777) == 0 || errno == EEXIST);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(nx_safetensors_write(p, tw, N, NULL, 0) == NX_OK);
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (f) fputs(cfg, f), fclose(f);
    for (int i = 0; i < N; i++) free(data[i]);
}

/* GPT-J's separate q, k, v stored interleaved in a q4 (and a q8) file: gathered back into rows, stacked
 * into NeoX's head order and (where the kernels read it) interleaved again. The file gives the
 * logits of the load-time conversion bit for bit, under whichever kernels run the test
 * (test_quant_avx2 takes the path that keeps row order). */
static void test_interleaved_stacked_qkv(void) {
    char src[1024], dir[1024];
    snprintf(src, sizeof src, "%s/test_quant_gptj_%d", NX_BINARY_DIR, (int)getpid());
    snprintf(dir, sizeof dir, "%s/test_quant_gptj_q4_%d", NX_BINARY_DIR, (int)getpid());
    write_random_gptj(src);
    const nx_dtype types[] = {NX_Q4_0, NX_Q8_0};
    for (size_t ti = 0; ti < NX_ARRAY_LEN(types); ti++) {
        CHECK(nx_model_quantize(src, dir, types[ti]) == NX_OK);
        nx_tensorset *ts = NULL;
        CHECK(nx_tensorset_open(dir, &ts) == NX_OK);
        const char *tag = nx_tensorset_metadata(ts, "neox.quant.transformer.h.0.attn.k_proj.weight");
        CHECK(tag && !strcmp(tag, types[ti] == NX_Q8_0 ? "Q8_0_x8" : "Q4_0_x8"));
        nx_tensorset_free(ts);
        run_t a, b;
        if (!run_model(dir, NX_DTYPE_INVALID, 1, &a)) return;
        if (!run_model(src, types[ti], 1, &b)) return;
        check_same_bits(&a, &b);
        rm_dir(dir);
    }
    rm_dir(src);
}

/* Whether [p, p + n) lies in mappings that carry the huge-page advice (VmFlags "hg" in
 * /proc/self/smaps); -1 when not mapped at all. */
static int range_advised(const void *p, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    uintptr_t a = (uintptr_t)p, e = a + n;
    char line[2048];
    int in = 0, seen = 0, advised = 1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {   /* a mapping's header */
            in = lo < e && hi > a;
            seen += in;
        } else if (in && !strncmp(line, "VmFlags:", 8) && !strstr(line, " hg")) {
            advised = 0;
        }
    }
    fclose(f);
    return seen ? advised : -1;
}

/* Matrices used in place are advised into huge pages (docs/QUANT.md, "Zero copy"), widened to
 * whole 2 MiB units, so even this small model's matrices get it; advice rounded inward, as for
 * heap blocks, would leave them none. */
static void test_mapped_huge_advice(void) {
    if (access("/proc/self/smaps", R_OK) != 0 || access("/sys/kernel/mm/transparent_hugepage/enabled", R_OK) != 0) {
        printf("     huge-page advice: no /proc/self/smaps or transparent huge pages here: not tested\n");
        return;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/test_quant_huge_%d", NX_BINARY_DIR, (int)getpid());
    CHECK(nx_model_quantize(fixture_path("eval/lm"), dir, NX_Q8_0) == NX_OK);
    /* Kernels that do not read the interleaved layout gather such matrices into row order (a
     * copy): give them a row-order file, which they use in place. */
    if (!nx__x8_eligible(nx__kernels(), NX_Q8_0, 64, 64)) rewrite_quant_file(dir, edit_to_rows, NULL);
    nx_model *m = NULL;
    CHECK(nx_model_load(dir, NULL, &m) == NX_OK);
    int H = m->H, I = m->I;
    for (int l = 0; l < m->L; l++) {
        const nx_layer *ly = &m->layers[l];
        const nx_wmat *W[4] = {&ly->Wqkv, &ly->Wo, &ly->W1, &ly->W2};
        const int shape[4][2] = {{3 * H, H}, {H, H}, {I, H}, {H, I}};
        for (int k = 0; k < 4; k++)
            CHECK_MSG(range_advised(W[k]->data, nx__wmat_bytes(NX_Q8_0, shape[k][0], shape[k][1])) == 1,
                      "layer %d matrix %d not advised", l, k);
    }
    CHECK(range_advised(m->Whead.data, nx__wmat_bytes(NX_Q8_0, m->V, H)) == 1);
    nx_model_free(m);
    rm_dir(dir);
}

typedef struct {
    const char *victim;
    int mode;   /* 0: one block too many a row, 1: the old 36-byte blocks, 2: tagged interleaved */
} bad_edit;

static void edit_bad(const nx_tensor_info *t, nx_tensor_write *w, const char **tag, void **owned, void *ctx) {
    const bad_edit *e = ctx;
    if (strcmp(t->name, e->victim) != 0) return;
    if (e->mode == 2) {
        *tag = "Q4_0_x8";
        return;
    }
    w->shape[1] = e->mode ? t->shape[1] / 34 * 36 : t->shape[1] + 34;
    *owned = calloc((size_t)(w->shape[0] * w->shape[1]), 1);
    w->data = *owned;
}

/* Hostile quantized files, each a one-line error naming the tensor (and, for the old layout,
 * what to do), never a crash: a blob whose rows hold one block too many, the 36-byte blocks
 * with fp32 scales that neox wrote before its blocks became ggml's, and a matrix tagged
 * interleaved whose shape has no interleaved layout. */
static void test_quant_file_errors(void) {
    const bad_edit edits[] = {{"gpt_neox.layers.0.mlp.dense_4h_to_h.weight", 0},
                              {"gpt_neox.layers.0.mlp.dense_4h_to_h.weight", 1},
                              {"gpt_neox.layers.1.attention.query_key_value.weight", 2}};
    const char *says[] = {"the config implies", "fp32 scales", "no interleaved layout"};
    for (size_t i = 0; i < NX_ARRAY_LEN(edits); i++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/test_quant_bad_%d", NX_BINARY_DIR, (int)getpid());
        CHECK(nx_model_quantize(fixture_path("models/neox_a"), dir, edits[i].mode == 2 ? NX_Q4_0 : NX_Q8_0) == NX_OK);
        rewrite_quant_file(dir, edit_bad, (void *)&edits[i]);
        nx_model *m = NULL;
        CHECK(nx_model_load(dir, NULL, &m) != NX_OK);
        CHECK(m == NULL);
        CHECK_STR_CONTAINS(nx_last_error(), edits[i].victim);
        CHECK_STR_CONTAINS(nx_last_error(), says[i]);
        rm_dir(dir);
    }
}

int main(void) {
    TEST_RUN(test_block_formats);
    TEST_RUN(test_ggml_blocks);
    TEST_RUN(test_quantizers_match_scalar);
    TEST_RUN(test_mv_variants);
    TEST_RUN(test_qdot_variants);
    TEST_RUN(test_quantize_act_variants);
    TEST_RUN(test_matmul_w_blocks);
    TEST_RUN(test_interleaved_blocks);
    TEST_RUN(test_model_dtypes);
    TEST_RUN(test_quantize_roundtrip);
    TEST_RUN(test_interleaved_files);
    TEST_RUN(test_interleaved_stacked_qkv);
    TEST_RUN(test_mapped_huge_advice);
    TEST_RUN(test_quant_file_errors);
    TEST_END();
}
