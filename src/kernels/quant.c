/*
 * quant.c - 16-bit and block-quantized weights: the scalar row formats (quantize, dequantize,
 * dot), the typed-matrix helpers and the threaded driver that picks a kernel per weight type.
 *
 * Decode (T <= NX_MV_MAX_T) is bandwidth-bound: float rows are dotted with the fp32 activations
 * as they stream by; for Q8_0/Q4_0 the activation rows are quantized to Q8_0 once, then each
 * weight row is an integer dot product per block (VNNI where present). Prefill is compute-bound:
 * longer inputs go to the packed GEMM (gemm.c), which reads the same row-major weights in place
 * (widened exactly, or VNNI integer tiles for the block types). Every output row is computed
 * by one thread in an order fixed by the row alone (decode hands rows out by timing, the GEMM
 * splits statically), so results depend on T only through the chosen path, never on timing or
 * the thread count: equal inputs give equal bits.
 */
#include "kernels/gemm.h"

#include <math.h>
#include <pthread.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

float nx__f16_tab[1 << 16];
static pthread_once_t f16_table_once = PTHREAD_ONCE_INIT;
static void f16_table_fill(void) {
    for (uint32_t h = 0; h < (1u << 16); h++) nx__f16_tab[h] = nx_f16_to_f32((uint16_t)h);
}
const float *nx__f16_table(void) {
    pthread_once(&f16_table_once, f16_table_fill);
    return nx__f16_tab;
}

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

/* The weight quantizers are ggml's reference ones (quantize_row_q8_0_ref, quantize_row_q4_0_ref)
 * to the bit: the codes come from the fp32 scale, then the scale is stored rounded to fp16.
 * tests/test_quant.c checks them against blocks made by the gguf Python package. The scalar
 * versions state the arithmetic; on x86-64 the entry points run it four lanes at a time with
 * SSE2 (part of the base ISA), with the same bits (tested against the scalar ones). */

/* roundf(y) clamped to [-127, 127], NaN to 0, without a library call: t = trunc(y) and y - t
 * are exact for |y| <= 127, and a fraction of at least one half rounds away from zero, as
 * roundf does. Clamping first gives the same codes, since roundf(y) >= 127 iff y >= 126.5. */
static inline int8_t q8_code(float y) {
    y = y == y ? y : 0.0f;
    y = y >= 127.0f ? 127.0f : y;
    y = y <= -127.0f ? -127.0f : y;
    int t = (int)y;
    float f = y - (float)t;
    return (int8_t)(t + (f >= 0.5f) - (f <= -0.5f));
}

void nx__quantize_row_q8_0_scalar(nx_block_q8_0 *dst, const float *x, int n) {
    for (int b = 0; b < n / NX_QBLOCK; b++) {
        const float *v = x + (size_t)b * NX_QBLOCK;
        float amax = 0.0f;
        for (int i = 0; i < NX_QBLOCK; i++) {
            float a = fabsf(v[i]);
            amax = a > amax ? a : amax;   /* as fmaxf: a NaN is skipped */
        }
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = nx_f32_to_f16(d);
        /* |v·id| <= 127 for finite rows; the clamps only keep a NaN or inf weight defined. */
        for (int i = 0; i < NX_QBLOCK; i++) dst[b].q[i] = q8_code(v[i] * id);
    }
}

void nx__quantize_row_q4_0_scalar(nx_block_q4_0 *dst, const float *x, int n) {
    for (int b = 0; b < n / NX_QBLOCK; b++) {
        const float *v = x + (size_t)b * NX_QBLOCK;
        /* The value of largest magnitude maps to -8 (the asymmetric end of the range), so the
         * extreme weight of each block is represented up to the rounding of d to fp16. */
        float amax = 0.0f, mx = 0.0f;
        for (int i = 0; i < NX_QBLOCK; i++)
            if (fabsf(v[i]) > amax) amax = fabsf(v[i]), mx = v[i];
        float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = nx_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            float a = v[j] * id + 8.5f, c = v[j + 16] * id + 8.5f;
            int qa = a >= 15.0f ? 15 : a > 0.0f ? (int)a : 0;   /* NaN: 0 */
            int qc = c >= 15.0f ? 15 : c > 0.0f ? (int)c : 0;
            dst[b].qs[j] = (uint8_t)(qa | (qc << 4));
        }
    }
}

#if defined(__SSE2__)
/* The largest |v[i]| of a block, NaNs skipped: maxps returns its second operand when either is
 * a NaN, and the maximum of non-negative values does not depend on the order. */
static inline float block_amax(const float *v) {
    __m128 sign = _mm_set1_ps(-0.0f), m = _mm_setzero_ps();
    for (int i = 0; i < NX_QBLOCK; i += 4) m = _mm_max_ps(_mm_andnot_ps(sign, _mm_loadu_ps(v + i)), m);
    float m4[4], amax = 0.0f;
    _mm_storeu_ps(m4, m);
    for (int i = 0; i < 4; i++) amax = m4[i] > amax ? m4[i] : amax;
    return amax;
}

/* Truncation of y, clamped to [0, 15], NaN to 0 (a Q4_0 code from x·(1/d) + 8.5). */
static inline __m128i q4_codes(__m128 y) {
    y = _mm_and_ps(y, _mm_cmpord_ps(y, y));
    return _mm_cvttps_epi32(_mm_max_ps(_mm_min_ps(y, _mm_set1_ps(15.0f)), _mm_setzero_ps()));
}

void nx__quantize_row_q8_0(nx_block_q8_0 *dst, const float *x, int n) {
    const __m128 hi = _mm_set1_ps(127.0f), lo = _mm_set1_ps(-127.0f), half = _mm_set1_ps(0.5f),
                 mhalf = _mm_set1_ps(-0.5f);
    for (int b = 0; b < n / NX_QBLOCK; b++) {
        const float *v = x + (size_t)b * NX_QBLOCK;
        float d = block_amax(v) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = nx_f32_to_f16(d);
        const __m128 vid = _mm_set1_ps(id);
        __m128i q[NX_QBLOCK / 4];
        for (int i = 0; i < NX_QBLOCK / 4; i++) {   /* q8_code, four lanes */
            __m128 y = _mm_mul_ps(_mm_loadu_ps(v + 4 * i), vid);
            y = _mm_and_ps(y, _mm_cmpord_ps(y, y));
            y = _mm_max_ps(_mm_min_ps(y, hi), lo);
            __m128i t = _mm_cvttps_epi32(y);
            __m128 f = _mm_sub_ps(y, _mm_cvtepi32_ps(t));
            t = _mm_sub_epi32(t, _mm_castps_si128(_mm_cmpge_ps(f, half)));   /* a true mask is -1 */
            q[i] = _mm_add_epi32(t, _mm_castps_si128(_mm_cmple_ps(f, mhalf)));
        }
        for (int i = 0; i < NX_QBLOCK / 16; i++) {
            __m128i w0 = _mm_packs_epi32(q[4 * i], q[4 * i + 1]), w1 = _mm_packs_epi32(q[4 * i + 2], q[4 * i + 3]);
            _mm_storeu_si128((__m128i *)(dst[b].q + 16 * i), _mm_packs_epi16(w0, w1));
        }
    }
}

void nx__quantize_row_q4_0(nx_block_q4_0 *dst, const float *x, int n) {
    const __m128 eight_half = _mm_set1_ps(8.5f);
    for (int b = 0; b < n / NX_QBLOCK; b++) {
        const float *v = x + (size_t)b * NX_QBLOCK;
        /* mx: the first value whose magnitude is the largest (0 when that is 0, as the scalar
         * loop leaves it: a -0.0 would flip the sign of d = 0). */
        float amax = block_amax(v), mx = 0.0f;
        for (int i = 0; i < NX_QBLOCK && amax != 0.0f; i++)
            if (fabsf(v[i]) == amax) {
                mx = v[i];
                break;
            }
        float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = nx_f32_to_f16(d);
        const __m128 vid = _mm_set1_ps(id);
        __m128i q[NX_QBLOCK / 4];
        for (int i = 0; i < NX_QBLOCK / 4; i++)
            q[i] = q4_codes(_mm_add_ps(_mm_mul_ps(_mm_loadu_ps(v + 4 * i), vid), eight_half));
        /* byte j = code j | code j+16 << 4 */
        __m128i c0 = _mm_packs_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3]));
        __m128i c1 = _mm_packs_epi16(_mm_packs_epi32(q[4], q[5]), _mm_packs_epi32(q[6], q[7]));
        _mm_storeu_si128((__m128i *)dst[b].qs, _mm_or_si128(c0, _mm_slli_epi16(c1, 4)));
    }
}
#else
void nx__quantize_row_q8_0(nx_block_q8_0 *dst, const float *x, int n) { nx__quantize_row_q8_0_scalar(dst, x, n); }
void nx__quantize_row_q4_0(nx_block_q4_0 *dst, const float *x, int n) { nx__quantize_row_q4_0_scalar(dst, x, n); }
#endif

void nx__quantize_row_xq8(nx_xq8 *dst, const float *x, int n) {
    for (int b = 0; b < n / NX_QBLOCK; b++) {
        const float *v = x + (size_t)b * NX_QBLOCK;
        float amax = 0.0f;
        for (int i = 0; i < NX_QBLOCK; i++) amax = fmaxf(amax, fabsf(v[i]));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = d;
        for (int i = 0; i < NX_QBLOCK; i++) dst[b].q[i] = (int8_t)lrintf(v[i] * id);
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
    /* Byte-wise reads: a U8 tensor inside a safetensors file need not be 2-byte aligned. */
    case NX_Q8_0: {
        const uint8_t *p = src;
        for (int b = 0; b < n / NX_QBLOCK; b++, p += sizeof(nx_block_q8_0)) {
            float d = nx__qblock_d(p);
            for (int i = 0; i < NX_QBLOCK; i++) dst[b * NX_QBLOCK + i] = d * (float)(int8_t)p[2 + i];
        }
        break;
    }
    case NX_Q4_0: {
        const uint8_t *p = src;
        for (int b = 0; b < n / NX_QBLOCK; b++, p += sizeof(nx_block_q4_0)) {
            float d = nx__qblock_d(p);
            for (int j = 0; j < 16; j++) {
                dst[b * NX_QBLOCK + j] = d * (float)((p[2 + j] & 15) - 8);
                dst[b * NX_QBLOCK + j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
        }
        break;
    }
    default: NX_ASSERT(0 && "nx__dequantize_row: not a weight type");
    }
}

float nx__qdot_ref(const nx_xq8 *xq, const void *wrow, nx_dtype wt, int IN) {
    float s = 0.0f;
    for (int b = 0; b < IN / NX_QBLOCK; b++) {
        int32_t acc = 0;
        float dw;
        if (wt == NX_Q8_0) {
            const nx_block_q8_0 *w = (const nx_block_q8_0 *)wrow + b;
            for (int i = 0; i < NX_QBLOCK; i++) acc += (int32_t)w->q[i] * xq[b].q[i];
            dw = nx__qblock_d(w);
        } else {
            const nx_block_q4_0 *w = (const nx_block_q4_0 *)wrow + b;
            for (int j = 0; j < 16; j++) {
                acc += ((w->qs[j] & 15) - 8) * (int32_t)xq[b].q[j];
                acc += ((w->qs[j] >> 4) - 8) * (int32_t)xq[b].q[j + 16];
            }
            dw = nx__qblock_d(w);
        }
        s += (float)acc * (dw * xq[b].d);
    }
    return s;
}

size_t nx__wmat_bytes(nx_dtype t, int OUT, int IN) { return (size_t)OUT * nx__row_bytes(t, IN); }

/* Block b of row o of an interleaved matrix, in its row-order bytes. */
static void x8_copy_block(const uint8_t *W, nx_dtype t, size_t rb, int o, int b, uint8_t *dst) {
    const uint8_t *d, *q;
    nx__x8_block(W, t, rb, o, b, &d, &q);
    memcpy(dst, d, 2);
    memcpy(dst + 2, q, nx__row_bytes(t, NX_QBLOCK) - 2);
}

void nx__wmat_row(const nx_wmat *W, int IN, int o, float *dst) {
    size_t rb = nx__row_bytes(W->type, IN);
    if (!W->x8) {
        nx__dequantize_row(W->type, (const uint8_t *)W->data + (size_t)o * rb, dst, IN);
        return;
    }
    /* one block at a time through a row-order copy of it */
    uint8_t blk[sizeof(nx_block_q8_0)];
    for (int b = 0; b < IN / NX_QBLOCK; b++) {
        x8_copy_block(W->data, W->type, rb, o, b, blk);
        nx__dequantize_row(W->type, blk, dst + (size_t)b * NX_QBLOCK, NX_QBLOCK);
    }
}

void nx__x8_interleave(uint8_t *W, nx_dtype t, int OUT, int IN, uint8_t *tmp) {
    NX_ASSERT((t == NX_Q8_0 || t == NX_Q4_0) && OUT % 8 == 0 && (IN / NX_QBLOCK) % 2 == 0);
    size_t rb = nx__row_bytes(t, IN), bs = nx__row_bytes(t, NX_QBLOCK);
    for (int g = 0; g < OUT / 8; g++) {
        uint8_t *grp = W + (size_t)g * 8 * rb;
        memcpy(tmp, grp, 8 * rb);
        for (int r = 0; r < 8; r++)
            for (int b = 0; b < IN / NX_QBLOCK; b++) {
                const uint8_t *src = tmp + (size_t)r * rb + (size_t)b * bs, *d, *q;
                /* the destination of (row r, block b) relative to the group (row 8g + r) */
                nx__x8_block(grp, t, rb, r, b, &d, &q);
                memcpy((uint8_t *)d, src, 2);
                memcpy((uint8_t *)q, src + 2, bs - 2);
            }
    }
}

void nx__x8_gather_row(const uint8_t *W, nx_dtype t, int IN, int o, uint8_t *dst) {
    size_t rb = nx__row_bytes(t, IN), bs = nx__row_bytes(t, NX_QBLOCK);
    for (int b = 0; b < IN / NX_QBLOCK; b++) x8_copy_block(W, t, rb, o, b, dst + (size_t)b * bs);
}

/* Q8_0 and Q4_0. Q8_0 was kept in row order while the interleaved kernel prefetched its one
 * stream 16 rows ahead only, and all of a group's lines in the first of several passes: then it
 * decoded no faster at one token (a 2048x65536 matrix, 2 threads: 28.6 against 28.3 GB/s) and
 * slower at 4 and 8 (0.83x, 0.91x). With the near L1 stream and the prefetches spread over the
 * passes (qtile512_x8): 32.4 against 30.9 GB/s at one token, 24.6 against 24.5 at 4, 14.1
 * against 13.4 at 8 (2 threads). */
bool nx__x8_layout(nx_dtype t, int OUT, int IN) {
    return (t == NX_Q4_0 || t == NX_Q8_0) && OUT % 8 == 0 && IN % (2 * NX_QBLOCK) == 0;
}

bool nx__x8_eligible(const nx_kernel_vt *vt, nx_dtype t, int OUT, int IN) {
    return nx__x8_layout(t, OUT, IN) && vt->qdot_rows_x8 && nx__gemm_for(vt, t)->pack_b_x8;
}

/* ---- driver ---------------------------------------------------------------------------------- */

/* Activations of a block decode are quantized once, for all threads: up to NX_MV_STACK_XQ
 * blocks (T·IN <= 16384 values) in the caller's buffer, else on the heap. */
nx_status nx__mv_init(nx_mv *mv, const nx_kernel_vt *vt, const nx_matmul_args *a, nx_xq8 *stack_xq) {
    *mv = (nx_mv){vt, *a, NULL, NULL};
    if (a->W->type != NX_Q8_0 && a->W->type != NX_Q4_0) return NX_OK;
    NX_ASSERT(!a->W->x8 || vt->qdot_rows_x8);
    size_t nb = (size_t)a->IN / NX_QBLOCK, need = (size_t)a->T * nb;
    mv->xq = need <= NX_MV_STACK_XQ ? stack_xq : nx__malloc(need * sizeof *mv->xq);
    if (!mv->xq) return NX_ERR_NOMEM;
    if (mv->xq != stack_xq) mv->heap_xq = mv->xq;
    for (int t = 0; t < a->T; t++) vt->quantize_q8(mv->xq + (size_t)t * nb, a->x + (size_t)t * a->IN, a->IN);
    return NX_OK;
}

void nx__mv_rows(const nx_mv *mv, int r0, int r1) {
    if (r0 >= r1) return;
    const nx_matmul_args *a = &mv->a;
    if (mv->xq)
        (a->W->x8 ? mv->vt->qdot_rows_x8 : mv->vt->qdot_rows)(a->y, mv->xq, a->W->data, a->W->type, a->b, a->T, a->IN,
                                                             a->OUT, r0, r1);
    else
        mv->vt->mv_rows(a->y, a->x, a->W->data, a->W->type, a->b, a->T, a->IN, a->OUT, r0, r1);
}

void nx__mv_done(nx_mv *mv) {
    nx__free(mv->heap_xq);
    mv->heap_xq = mv->xq = NULL;
}

typedef struct {
    nx_mv mv;
    bool gemm;   /* T > NX_MV_MAX_T, or no memory for the quantized activations: nx__gemm_w */
    int unit;
} wjob;

/* Up to two independent products handed to the pool at once. Decoding is memory-bound and
 * the two threads of a step rarely stream at the same rate (one of them also runs the serial
 * parts between steps and wakes the other), so a static half each left the faster one
 * spinning for ~10% of a step. Instead the jobs' chunks (nx__mv_chunk_rows; job 0's, then job
 * 1's, as one sequence) are shared with nx_split: each thread streams its own contiguous share
 * and then helps with the others'. Every row's arithmetic is the same whichever thread
 * computes it and no output is written twice, so the bits do not depend on scheduling. */
typedef struct {
    wjob *j;
    int chunks0;   /* chunks of job 0 */
    nx_split split;
} wjobs;

static void wjobs_worker(int ith, int nth, void *arg) {
    (void)nth;
    wjobs *js = arg;
    for (int c; (c = nx__split_next(&js->split, ith)) >= 0;) {
        const wjob *j = &js->j[0];
        if (c >= js->chunks0) {
            c -= js->chunks0;
            j = &js->j[1];
        }
        int r0 = c * j->unit, r1 = r0 + j->unit < j->mv.a.OUT ? r0 + j->unit : j->mv.a.OUT;
        nx__mv_rows(&j->mv, r0, r1);
    }
}

int nx__mv_chunk_rows(nx_dtype t, int IN) {
    size_t group = 64 * nx__row_bytes(t, IN);
    return 64 * (int)((65536 + group - 1) / group);
}

static void job_init(wjob *j, const nx_kernel_vt *vt, const nx_matmul_args *a, nx_xq8 *stack_xq) {
    j->unit = nx__mv_chunk_rows(a->W->type, a->IN);
    j->gemm = a->T > NX_MV_MAX_T;
    if (j->gemm) j->mv = (nx_mv){vt, *a, NULL, NULL};
    else j->gemm = nx__mv_init(&j->mv, vt, a, stack_xq) != NX_OK;   /* no memory: the GEMM needs none */
}

static void run_gemm(nx_pool *pool, const wjob *j) {
    const nx_matmul_args *a = &j->mv.a;
    nx__gemm_w_vt(nx__gemm_for(j->mv.vt, a->W->type), pool, a->y, a->x, a->W, a->b, a->T, a->IN, a->OUT);
}

static void run_jobs(nx_pool *pool, wjob *j, int n) {
    size_t work = 0;
    for (int i = 0; i < n; i++) work += (size_t)j[i].mv.a.T * (size_t)j[i].mv.a.IN * (size_t)j[i].mv.a.OUT;
    /* Below ~256K FMAs (tens of microseconds) a hand-off to the workers costs more than it
     * saves, and on a busy machine each hand-off can wait a whole scheduler slice. */
    if (work < 262144 || nx_pool_size(pool) == 1) {
        for (int i = 0; i < n; i++) nx__mv_rows(&j[i].mv, 0, j[i].mv.a.OUT);
    } else {
        wjobs js = {.j = j};
        int total = 0;
        for (int i = 0; i < n; i++) {
            int c = (j[i].mv.a.OUT + j[i].unit - 1) / j[i].unit;
            if (i == 0) js.chunks0 = c;
            total += c;
        }
        nx__split_init(&js.split, total, nx_pool_size(pool));
        nx_pool_run(pool, wjobs_worker, &js);
    }
}

void nx__matmul_w_vt(const nx_kernel_vt *vt, nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b,
                     int T, int IN, int OUT) {
    nx_xq8 stack_xq[NX_MV_STACK_XQ];
    nx_matmul_args a = {y, x, W, b, T, IN, OUT};
    wjob j;
    job_init(&j, vt, &a, stack_xq);
    if (j.gemm)
        run_gemm(pool, &j);
    else
        run_jobs(pool, &j, 1);
    nx__mv_done(&j.mv);
}

void nx__matmul_w2(nx_pool *pool, const nx_matmul_args *a, const nx_matmul_args *b) {
    const nx_kernel_vt *vt = nx__kernels();
    nx_xq8 stack_xq[2][NX_MV_STACK_XQ];
    wjob j[2];
    job_init(&j[0], vt, a, stack_xq[0]);
    job_init(&j[1], vt, b, stack_xq[1]);
    /* The GEMM splits its own work over the pool; only two decode jobs share one hand-off. */
    if (j[0].gemm || j[1].gemm) {
        for (int i = 0; i < 2; i++) j[i].gemm ? run_gemm(pool, &j[i]) : run_jobs(pool, &j[i], 1);
    } else {
        run_jobs(pool, j, 2);
    }
    for (int i = 0; i < 2; i++) nx__mv_done(&j[i].mv);
}

void nx__matmul_w(nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b, int T, int IN, int OUT) {
    nx__matmul_w_vt(nx__kernels(), pool, y, x, W, b, T, IN, OUT);
}
