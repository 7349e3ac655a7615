/*
 * ref.c - scalar reference kernels: the oracle every fast path is tested against.
 * Written for clarity: plain loops in index order, fp32 arithmetic except where a
 * wider accumulator is noted.
 */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

void nx__matmul_ref(float *y, const float *x, const float *W, const float *b, int T, int IN, int OUT) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * IN;
        for (int o = 0; o < OUT; o++) {
            const float *w = W + (size_t)o * IN;
            float s = 0.0f;
            for (int i = 0; i < IN; i++) s += xt[i] * w[i];
            y[(size_t)t * OUT + o] = s + (b ? b[o] : 0.0f);
        }
    }
}

/* Σ of n values in double over 8 interleaved lanes (lane l takes i ≡ l mod 8, in order), then
 * a fixed tree: the same bits whatever vector width the compiler gives the loop, and 8 chains
 * instead of one (the sequential double sum was 3% of a prefill). dev: Σ (x - mu)² instead. */
static double sum8(const float *x, int n, bool dev, double mu) {
    double s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) {
            double v = dev ? (double)x[i + l] - mu : (double)x[i + l];
            s[l] += dev ? v * v : v;
        }
    for (; i < n; i++) {
        double v = dev ? (double)x[i] - mu : (double)x[i];
        s[i % 8] += dev ? v * v : v;
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* Two passes with double sums: the mean/variance stay exact to fp32 even when |mean| is large
 * compared with the spread (torch also uses a numerically careful reduction here). */
void nx__layernorm_ref(float *y, const float *x, const float *w, const float *b, int T, int C, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * C;
        float *yt = y + (size_t)t * C;
        double mean = sum8(xt, C, false, 0.0) / C;
        double var = sum8(xt, C, true, mean) / C;
        float rstd = (float)(1.0 / sqrt(var + (double)eps));
        float m = (float)mean;
        for (int i = 0; i < C; i++) yt[i] = (xt[i] - m) * rstd * w[i] + b[i];
    }
}

static float act1(float v, nx_kact act) {
    switch (act) {
    case NX_KACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case NX_KACT_GELU_TANH:
        return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case NX_KACT_GELU_FAST: return 0.5f * v * (1.0f + tanhf(0.7978845608f * v * (1.0f + 0.044715f * v * v)));
    case NX_KACT_RELU: return v > 0.0f ? v : 0.0f;
    case NX_KACT_SILU: return v / (1.0f + expf(-v));
    case NX_KACT_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
    }
    return v;
}

void nx__act_ref(float *x, size_t n, nx_kact act) {
    for (size_t i = 0; i < n; i++) x[i] = act1(x[i], act);
}

void nx__softmax_ref(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void nx__rotary_ref(float *x, int rot, const float *cos, const float *sin, int interleaved) {
    int half = rot / 2;
    if (interleaved) {
        for (int j = 0; j < half; j++) {
            float a = x[2 * j], b = x[2 * j + 1];
            x[2 * j] = a * cos[j] - b * sin[j];
            x[2 * j + 1] = b * cos[j] + a * sin[j];
        }
    } else {
        for (int j = 0; j < half; j++) {
            float a = x[j], b = x[j + half];
            x[j] = a * cos[j] - b * sin[j];
            x[j + half] = b * cos[j] + a * sin[j];
        }
    }
}

float nx__dot_ref(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

float nx__exp_sum_ref(float *x, int n, float mx) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    return sum;
}

void nx__axpy_ref(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void nx__kv_widen(float *dst, const void *src, nx_dtype t, int n) {
    const uint16_t *h = src;
    if (t == NX_Q8_0)
        nx__dequantize_row(t, src, dst, n);
    else if (t == NX_F32)
        memcpy(dst, src, (size_t)n * sizeof(float));
    else if (t == NX_BF16)
        for (int i = 0; i < n; i++) dst[i] = nx_bf16_to_f32(h[i]);
    else
        for (int i = 0; i < n; i++) dst[i] = nx_f16_to_f32(h[i]);
}

void nx__kv_store(void *dst, nx_dtype t, const float *src, int n) {
    uint16_t *h = dst;
    if (t == NX_Q8_0)
        nx__quantize_row_q8_0(dst, src, n);
    else if (t == NX_F32)
        memcpy(dst, src, (size_t)n * sizeof(float));
    else if (t == NX_BF16)
        for (int i = 0; i < n; i++) h[i] = nx__f32_to_bf16(src[i]);
    else
        for (int i = 0; i < n; i++) h[i] = nx_f32_to_f16(src[i]);
}

size_t nx__kv_head_bytes(nx_dtype t, int d, int n_ctx) {
    return (size_t)((n_ctx + NX_KT - 1) / NX_KT * NX_KT) * nx__row_bytes(t, d);
}

void nx__kv_store_key(void *K, nx_dtype t, int d, int p, const float *src) {
    if (t == NX_Q8_0) {
        nx__kv_store((uint8_t *)K + (size_t)p * nx__row_bytes(t, d), t, src, d);
        return;
    }
    size_t at = (size_t)(p / NX_KT) * (size_t)d * NX_KT + (size_t)(p % NX_KT);
    /* Rounded a chunk at a time (the row loops vectorize), then scattered NX_KT elements apart. */
    enum { CHUNK = 256 };
    uint16_t h[CHUNK];
    for (int e0 = 0; e0 < d; e0 += CHUNK) {
        int m = d - e0 < CHUNK ? d - e0 : CHUNK;
        if (t == NX_F32) {
            float *dst = (float *)K + at + (size_t)e0 * NX_KT;
            for (int e = 0; e < m; e++) dst[(size_t)e * NX_KT] = src[e0 + e];
            continue;
        }
        nx__kv_store(h, t, src + e0, m);
        uint16_t *dst = (uint16_t *)K + at + (size_t)e0 * NX_KT;
        for (int e = 0; e < m; e++) dst[(size_t)e * NX_KT] = h[e];
    }
}

void nx__kv_open_tile(void *K, nx_dtype t, int d, int p) {
    if (t == NX_Q8_0) return;
    size_t es = nx_dtype_size(t);
    memset((uint8_t *)K + (size_t)(p / NX_KT) * (size_t)d * NX_KT * es, 0, (size_t)d * NX_KT * es);
}

/* Element e of key p, widened exactly. */
static float key_at(const nx_attn_args *a, int p, int e) {
    nx_dtype t = a->kv_type;
    if (t == NX_Q8_0) {
        const uint8_t *blk = (const uint8_t *)a->K + (size_t)p * a->row_bytes + (size_t)(e / NX_QBLOCK) * sizeof(nx_block_q8_0);
        return nx__qblock_d(blk) * (float)((const nx_block_q8_0 *)(const void *)blk)->q[e % NX_QBLOCK];
    }
    float v;
    size_t es = nx_dtype_size(t), at = ((size_t)(p / NX_KT) * (size_t)a->d + (size_t)e) * NX_KT + (size_t)(p % NX_KT);
    nx__kv_widen(&v, (const uint8_t *)a->K + at * es, t, 1);
    return v;
}

/* Each row on its own: widen every key and value exactly, then the fp32 math in index order
 * (scores, max-subtracted softmax, weighted sum of values). A head has at most a few hundred
 * dims, so the widened rows fit a stack buffer; larger heads are widened in pieces. */
void nx__attention_ref(const nx_attn_args *a) {
    enum { CHUNK = 256 };
    float kr[CHUNK];
    for (int g = 0; g < a->G; g++) {
        const float *q = a->q + (size_t)g * a->ldq;
        float *out = a->out + (size_t)g * a->ldo, *sc = a->scores + (size_t)g * a->lds + a->k0[g];
        int n = a->k1[g] - a->k0[g];
        for (int k = 0; k < n; k++) {
            float s = 0.0f;
            for (int e = 0; e < a->d; e++) s += q[e] * key_at(a, a->k0[g] + k, e);
            sc[k] = s * a->scale;
        }
        nx__softmax_ref(sc, n);
        for (int e = 0; e < a->d; e++) out[e] = 0.0f;
        for (int k = 0; k < n; k++) {
            const uint8_t *row = (const uint8_t *)a->V + (size_t)(a->k0[g] + k) * a->row_bytes;
            for (int e0 = 0; e0 < a->d; e0 += CHUNK) {
                int m = a->d - e0 < CHUNK ? a->d - e0 : CHUNK;
                nx__kv_widen(kr, row + nx__row_bytes(a->kv_type, e0), a->kv_type, m);
                nx__axpy_ref(out + e0, sc[k], kr, m);
            }
        }
    }
}

/* Weight k of a row-major F32/F16/BF16 row, widened exactly. */
static float wget(const void *row, nx_dtype wt, int k) {
    if (wt == NX_F32) return ((const float *)row)[k];
    uint16_t h = ((const uint16_t *)row)[k];
    return wt == NX_BF16 ? nx_bf16_to_f32(h) : nx_f16_to_f32(h);
}

static void mv_rows_ref(float *y, const float *x, const void *W, nx_dtype wt, const float *b, int T, int IN, int OUT,
                        int r0, int r1) {
    size_t rb = nx__row_bytes(wt, IN);
    for (int o = r0; o < r1; o++) {
        const void *row = (const uint8_t *)W + (size_t)o * rb;
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * IN;
            float s = 0.0f;
            for (int i = 0; i < IN; i++) s += xt[i] * wget(row, wt, i);
            y[(size_t)t * OUT + o] = s + (b ? b[o] : 0.0f);
        }
    }
}

static void qdot_rows_ref(float *y, const nx_xq8 *xq, const void *W, nx_dtype wt, const float *b, int T, int IN,
                          int OUT, int r0, int r1) {
    size_t rb = nx__row_bytes(wt, IN), nb = (size_t)IN / NX_QBLOCK;
    for (int o = r0; o < r1; o++)
        for (int t = 0; t < T; t++)
            y[(size_t)t * OUT + o] =
                nx__qdot_ref(xq + (size_t)t * nb, (const uint8_t *)W + (size_t)o * rb, wt, IN) + (b ? b[o] : 0.0f);
}

const nx_kernel_vt nx__kernels_ref_vt = {"ref",       nx__dot_ref,   nx__axpy_ref,  nx__act_ref,          nx__exp_sum_ref,
                                         nx__attention_ref, mv_rows_ref, qdot_rows_ref, NULL, nx__quantize_row_xq8,
                                         nx__layernorm_ref};
