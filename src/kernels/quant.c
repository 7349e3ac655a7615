/*
 * quant.c - 16-bit and block-quantized weights: the scalar row formats (quantize, dequantize,
 * dot), the typed-matrix helpers and the threaded driver that picks a kernel per weight type.
 *
 * Decode (T <= NX_QDOT_MAX_T) on Q8_0/Q4_0 is bandwidth-bound: the activation row is quantized
 * to Q8_0 once, then each weight row is an integer dot product per block (VNNI where present).
 * Prefill is compute-bound: longer inputs go to the packed GEMM (gemm.c), which dequantizes
 * weight blocks into fp32 micro-panels as it goes. Splits are static, so results depend on T
 * only through the chosen path, never on the thread count or timing: equal inputs give equal
 * bits.
 */
#include "kernels/gemm.h"

#include <math.h>

size_t nx__row_bytes(nx_dtype t, int n) {
    switch (t) {
    case NX_F32: return (size_t)n * 4;
    case NX_F16:
    case NX_BF16: return (size_t)n * 2;
    case NX_Q8_0: return (size_t)(n / NX_QBLOCK) * sizeof(nx_block_q8_0);
    case NX_Q4_0: return (size_t)(n / NX_QBLOCK) * sizeof(nx_block_q4_0);
    default: return 0;
    }
}

void nx__quantize_row_q8_0(nx_block_q8_0 *dst, const float *x, int n) {
    for (int b = 0; b < n / NX_QBLOCK; b++) {
        const float *v = x + (size_t)b * NX_QBLOCK;
        float amax = 0.0f;
        for (int i = 0; i < NX_QBLOCK; i++) amax = fmaxf(amax, fabsf(v[i]));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = d;
        for (int i = 0; i < NX_QBLOCK; i++) dst[b].q[i] = (int8_t)lrintf(v[i] * id);
    }
}

void nx__quantize_row_q4_0(nx_block_q4_0 *dst, const float *x, int n) {
    for (int b = 0; b < n / NX_QBLOCK; b++) {
        const float *v = x + (size_t)b * NX_QBLOCK;
        /* The value of largest magnitude maps to -8 exactly (the asymmetric end of the range,
         * as llama.cpp's q4_0), so the extreme weight of each block is represented exactly. */
        float amax = 0.0f, mx = 0.0f;
        for (int i = 0; i < NX_QBLOCK; i++)
            if (fabsf(v[i]) > amax) amax = fabsf(v[i]), mx = v[i];
        float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = d;
        for (int j = 0; j < 16; j++) {
            float a = v[j] * id + 8.5f, c = v[j + 16] * id + 8.5f;
            int qa = a >= 15.0f ? 15 : a <= 0.0f ? 0 : (int)a;
            int qc = c >= 15.0f ? 15 : c <= 0.0f ? 0 : (int)c;
            dst[b].qs[j] = (uint8_t)(qa | (qc << 4));
        }
    }
}

void nx__dequantize_row(nx_dtype t, const void *src, float *dst, int n) {
    switch (t) {
    case NX_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case NX_F16:
        for (int i = 0; i < n; i++) dst[i] = nx_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case NX_BF16:
        for (int i = 0; i < n; i++) dst[i] = nx_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    /* Byte-wise reads: a U8 tensor inside a safetensors file need not be 4-byte aligned. */
    case NX_Q8_0: {
        const uint8_t *p = src;
        for (int b = 0; b < n / NX_QBLOCK; b++, p += sizeof(nx_block_q8_0)) {
            float d;
            memcpy(&d, p, sizeof d);
            for (int i = 0; i < NX_QBLOCK; i++) dst[b * NX_QBLOCK + i] = d * (float)(int8_t)p[4 + i];
        }
        break;
    }
    case NX_Q4_0: {
        const uint8_t *p = src;
        for (int b = 0; b < n / NX_QBLOCK; b++, p += sizeof(nx_block_q4_0)) {
            float d;
            memcpy(&d, p, sizeof d);
            for (int j = 0; j < 16; j++) {
                dst[b * NX_QBLOCK + j] = d * (float)((p[4 + j] & 15) - 8);
                dst[b * NX_QBLOCK + j + 16] = d * (float)((p[4 + j] >> 4) - 8);
            }
        }
        break;
    }
    default: NX_ASSERT(0 && "nx__dequantize_row: not a weight type");
    }
}

float nx__qdot_ref(const nx_block_q8_0 *xq, const void *wrow, nx_dtype wt, int IN) {
    float s = 0.0f;
    for (int b = 0; b < IN / NX_QBLOCK; b++) {
        int32_t acc = 0;
        float dw;
        if (wt == NX_Q8_0) {
            const nx_block_q8_0 *w = (const nx_block_q8_0 *)wrow + b;
            for (int i = 0; i < NX_QBLOCK; i++) acc += (int32_t)w->q[i] * xq[b].q[i];
            dw = w->d;
        } else {
            const nx_block_q4_0 *w = (const nx_block_q4_0 *)wrow + b;
            for (int j = 0; j < 16; j++) {
                acc += ((w->qs[j] & 15) - 8) * (int32_t)xq[b].q[j];
                acc += ((w->qs[j] >> 4) - 8) * (int32_t)xq[b].q[j + 16];
            }
            dw = w->d;
        }
        s += (float)acc * (dw * xq[b].d);
    }
    return s;
}

size_t nx__wmat_bytes(nx_dtype t, int OUT, int IN) {
    switch (t) {
    case NX_F32: return nx__packed_floats(OUT, IN) * 4;
    case NX_F16:
    case NX_BF16: return nx__packed_floats(OUT, IN) * 2;
    default: return (size_t)OUT * nx__row_bytes(t, IN);
    }
}

void nx__wmat_row(const nx_wmat *W, int IN, int o, float *dst) {
    if (W->type == NX_F32) {
        for (int k = 0; k < IN; k++) dst[k] = nx__packed_at(W->data, IN, o, k);
    } else if (W->type == NX_F16 || W->type == NX_BF16) {
        const uint16_t *p = (const uint16_t *)W->data + (size_t)(o / NX_PANEL) * (size_t)IN * NX_PANEL + (o % NX_PANEL);
        for (int k = 0; k < IN; k++) {
            uint16_t h = p[(size_t)k * NX_PANEL];
            dst[k] = W->type == NX_BF16 ? nx_bf16_to_f32(h) : nx_f16_to_f32(h);
        }
    } else {
        nx__dequantize_row(W->type, (const uint8_t *)W->data + (size_t)o * nx__row_bytes(W->type, IN), dst, IN);
    }
}

/* ---- driver ---------------------------------------------------------------------------------- */

typedef struct {
    const nx_kernel_vt *vt;
    float *y;
    const float *x, *b;
    const nx_wmat *W;
    const nx_block_q8_0 *xq;   /* quantized activations (qdot path) or NULL */
    int T, IN, OUT, unit;
} wjob;

static void job_range(const wjob *j, int ith, int nth, int *r0, int *r1) {
    int units = (j->OUT + j->unit - 1) / j->unit;
    int per = (units + nth - 1) / nth;
    *r0 = ith * per * j->unit;
    *r1 = *r0 + per * j->unit;
    if (*r1 > j->OUT) *r1 = j->OUT;
}

static void run_range(const wjob *j, int r0, int r1) {
    if (r0 >= r1) return;
    switch (j->W->type) {
    case NX_F16:
    case NX_BF16:
        j->vt->matmul_rows_h16(j->y, j->x, j->W->data, j->b, j->T, j->IN, j->OUT, r0, r1, j->W->type == NX_BF16);
        break;
    case NX_Q8_0:
    case NX_Q4_0:
        {
            size_t nb = (size_t)j->IN / NX_QBLOCK;
            for (int t = 0; t < j->T; t++)
                j->vt->qdot_rows(j->y + (size_t)t * j->OUT, j->xq + (size_t)t * nb, j->W->data, j->W->type, j->b, j->IN,
                                 r0, r1);
        }
        break;
    default: j->vt->matmul_rows(j->y, j->x, j->W->data, j->b, j->T, j->IN, j->OUT, r0, r1); break;
    }
}

static void wjob_worker(int ith, int nth, void *arg) {
    const wjob *j = arg;
    int r0, r1;
    job_range(j, ith, nth, &r0, &r1);
    run_range(j, r0, r1);
}

void nx__matmul_w_vt(const nx_kernel_vt *vt, nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b,
                     int T, int IN, int OUT) {
    if (W->type == NX_F32) {
        nx__matmul_vt(vt, pool, y, x, W->data, b, T, IN, OUT);
        return;
    }
    bool blocks = W->type == NX_Q8_0 || W->type == NX_Q4_0;
    nx_block_q8_0 *xq = NULL;
    if (blocks && T <= NX_QDOT_MAX_T) {
        size_t nb = (size_t)IN / NX_QBLOCK;
        xq = nx__malloc((size_t)T * nb * sizeof *xq);
        if (xq)
            for (int t = 0; t < T; t++) nx__quantize_row_q8_0(xq + (size_t)t * nb, x + (size_t)t * IN, IN);
    }
    /* Block weights are row-major, the layout the prefill GEMM reads in place (F32/F16/BF16
     * are still 16-row panels here). Without memory for the quantized activations the
     * GEMM, which needs none, also takes the few-token case. */
    if (blocks && !xq) {
        nx__gemm_w_vt(nx__gemm_for(vt, W->type), pool, y, x, W, b, T, IN, OUT);
        return;
    }
    wjob j = {vt, y, x, b, W, xq, T, IN, OUT, blocks ? 64 : NX_PANEL};
    if ((size_t)T * IN * OUT < 262144 || nx_pool_size(pool) == 1)
        run_range(&j, 0, OUT);
    else
        nx_pool_run(pool, wjob_worker, &j);
    nx__free(xq);
}

void nx__matmul_w(nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b, int T, int IN, int OUT) {
    nx__matmul_w_vt(nx__kernels(), pool, y, x, W, b, T, IN, OUT);
}
