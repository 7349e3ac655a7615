/*
 * quant.c - 16-bit and block-quantized weights: the scalar row formats (quantize, dequantize,
 * dot), the typed-matrix helpers and the threaded driver that picks a kernel per weight type.
 *
 * Decode (T <= NX_MV_MAX_T) is bandwidth-bound: float rows are dotted with the fp32 activations
 * as they stream by; for Q8_0/Q4_0 the activation rows are quantized to Q8_0 once, then each
 * weight row is an integer dot product per block (VNNI where present). Prefill is compute-bound:
 * longer inputs go to the packed GEMM (gemm.c), which reads the same row-major weights in place
 * (widened exactly, or VNNI integer tiles for the block types). Splits are static, so results
 * depend on T and the thread count only through the chosen path, never on timing: equal inputs
 * give equal
 * bits.
 */
#include "kernels/gemm.h"

#include <math.h>
#include <stdatomic.h>

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

size_t nx__wmat_bytes(nx_dtype t, int OUT, int IN) { return (size_t)OUT * nx__row_bytes(t, IN); }

void nx__wmat_row(const nx_wmat *W, int IN, int o, float *dst) {
    nx__dequantize_row(W->type, (const uint8_t *)W->data + (size_t)o * nx__row_bytes(W->type, IN), dst, IN);
}

/* ---- driver ---------------------------------------------------------------------------------- */

typedef struct {
    const nx_kernel_vt *vt;
    float *y;
    const float *x, *b;
    const nx_wmat *W;
    nx_block_q8_0 *xq;   /* quantized activations (block decode) or NULL */
    bool gemm;           /* T > NX_MV_MAX_T, or no memory for xq: the job goes to nx__gemm_w */
    int T, IN, OUT, unit;
} wjob;

static void run_range(const wjob *j, int r0, int r1) {
    if (r0 >= r1) return;
    if (j->xq)
        j->vt->qdot_rows(j->y, j->xq, j->W->data, j->W->type, j->b, j->T, j->IN, j->OUT, r0, r1);
    else
        j->vt->mv_rows(j->y, j->x, j->W->data, j->W->type, j->b, j->T, j->IN, j->OUT, r0, r1);
}

/* Up to two independent products handed to the pool at once. Decoding is memory-bound and
 * the two threads of a step rarely stream at the same rate (one of them also runs the serial
 * parts between steps and wakes the other), so a static half each left the faster one
 * spinning for ~10% of a step. Instead the threads take 64-row chunks (the jobs' chunks in
 * one sequence) from a shared counter until none is left. Every row's arithmetic is the same
 * whichever thread computes it and no output is written twice, so the bits still do not
 * depend on scheduling. */
typedef struct {
    wjob *j;
    int n;
    int chunks[2];   /* 64-row chunks of each job */
    atomic_int next;
} wjobs;

static void wjobs_worker(int ith, int nth, void *arg) {
    (void)ith, (void)nth;
    wjobs *js = arg;
    int total = js->chunks[0] + (js->n > 1 ? js->chunks[1] : 0);
    for (;;) {
        int c = atomic_fetch_add_explicit(&js->next, 1, memory_order_relaxed);
        if (c >= total) break;
        const wjob *j = &js->j[0];
        if (c >= js->chunks[0]) {
            c -= js->chunks[0];
            j = &js->j[1];
        }
        int r0 = c * j->unit, r1 = r0 + j->unit < j->OUT ? r0 + j->unit : j->OUT;
        run_range(j, r0, r1);
    }
}

/* Activations of a block decode are quantized once, for all threads: up to 512 blocks
 * (T·IN <= 16384 values) in the caller's stack buffer, else on the heap; without memory for
 * them the job goes to the GEMM, which needs none. */
enum { STACK_XQ = 512 };
static void job_init(wjob *j, const nx_kernel_vt *vt, const nx_matmul_args *a, nx_block_q8_0 *stack_xq) {
    /* Whole 64-row groups: a multiple of every decode tile. */
    *j = (wjob){vt, a->y, a->x, a->b, a->W, NULL, a->T > NX_MV_MAX_T, a->T, a->IN, a->OUT, 64};
    if (j->gemm || (a->W->type != NX_Q8_0 && a->W->type != NX_Q4_0)) return;
    size_t nb = (size_t)a->IN / NX_QBLOCK, need = (size_t)a->T * nb;
    j->xq = need <= STACK_XQ ? stack_xq : nx__malloc(need * sizeof *j->xq);
    if (!j->xq) {
        j->gemm = true;
        return;
    }
    for (int t = 0; t < a->T; t++) vt->quantize_q8(j->xq + (size_t)t * nb, a->x + (size_t)t * a->IN, a->IN);
}

static void job_done(wjob *j, const nx_block_q8_0 *stack_xq) {
    if (j->xq != stack_xq) nx__free(j->xq);
}

static void run_gemm(nx_pool *pool, const wjob *j) {
    nx__gemm_w_vt(nx__gemm_for(j->vt, j->W->type), pool, j->y, j->x, j->W, j->b, j->T, j->IN, j->OUT);
}

static void run_jobs(nx_pool *pool, wjob *j, int n) {
    size_t work = 0;
    for (int i = 0; i < n; i++) work += (size_t)j[i].T * (size_t)j[i].IN * (size_t)j[i].OUT;
    /* Below ~256K FMAs (tens of microseconds) a hand-off to the workers costs more than it
     * saves, and on a busy machine each hand-off can wait a whole scheduler slice. */
    if (work < 262144 || nx_pool_size(pool) == 1) {
        for (int i = 0; i < n; i++) run_range(&j[i], 0, j[i].OUT);
    } else {
        wjobs js = {j, n, {0, 0}, 0};
        for (int i = 0; i < n; i++) js.chunks[i] = (j[i].OUT + j[i].unit - 1) / j[i].unit;
        atomic_init(&js.next, 0);
        nx_pool_run(pool, wjobs_worker, &js);
    }
}

void nx__matmul_w_vt(const nx_kernel_vt *vt, nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b,
                     int T, int IN, int OUT) {
    nx_block_q8_0 stack_xq[STACK_XQ];
    nx_matmul_args a = {y, x, W, b, T, IN, OUT};
    wjob j;
    job_init(&j, vt, &a, stack_xq);
    if (j.gemm)
        run_gemm(pool, &j);
    else
        run_jobs(pool, &j, 1);
    job_done(&j, stack_xq);
}

void nx__matmul_w2(nx_pool *pool, const nx_matmul_args *a, const nx_matmul_args *b) {
    const nx_kernel_vt *vt = nx__kernels();
    nx_block_q8_0 stack_xq[2][STACK_XQ];
    wjob j[2];
    job_init(&j[0], vt, a, stack_xq[0]);
    job_init(&j[1], vt, b, stack_xq[1]);
    /* The GEMM splits its own work over the pool; only two decode jobs share one hand-off. */
    if (j[0].gemm || j[1].gemm) {
        for (int i = 0; i < 2; i++) j[i].gemm ? run_gemm(pool, &j[i]) : run_jobs(pool, &j[i], 1);
    } else {
        run_jobs(pool, j, 2);
    }
    for (int i = 0; i < 2; i++) job_done(&j[i], stack_xq[i]);
}

void nx__matmul_w(nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b, int T, int IN, int OUT) {
    nx__matmul_w_vt(nx__kernels(), pool, y, x, W, b, T, IN, OUT);
}
