/*
 * gemm.c - the prefill matrix multiply y[T][OUT] = x[T][IN]·Wᵀ + b for row-major weights of
 * any run type (F32, F16, BF16, Q8_0, Q4_0), compute-bound from a few dozen tokens up.
 *
 * Design (GotoBLAS-style). x is packed once per call into row tiles of mr tokens, [IN][mr]
 * each, shared by all threads (the packing itself is split over the threads). Each thread
 * then owns a static range of nr-wide output strips. For each K block of NX_GEMM_KC inputs
 * and each of its strips, it widens the strip's weights (fp32 as is, 16-bit exactly, block
 * types dequantized) into a [KC][nr] micro-panel on its stack - small enough to stay in L1 -
 * and sweeps every row tile of x past it with the register-tile kernel. Each weight is thus
 * read and converted once per call, and each packed x element is reused nr times per load.
 *
 * Order of the sums (the invariant the tests check): every y element is one fused
 * multiply-add chain over k = 0..IN-1 ascending, started at 0, with the bias added last.
 * Between K blocks the running sum is parked in y itself and reloaded, which is exact, so the
 * blocking, the tile an element falls in, the thread split and the variant (scalar fmaf,
 * AVX2, AVX-512) never change a bit: 1 and N threads agree, and all variants agree with the
 * scalar one. This is also the order of the packed-panel kernels (x86.c).
 *
 * Memory: the packed x (T·IN floats, rounded up to whole tiles) lives in one buffer that is
 * kept between calls (a single cached spare, taken and returned atomically, so concurrent
 * callers never share it); if it cannot be allocated, each thread packs tiles on its stack
 * as it goes (slower, same bits).
 */
#include "kernels/gemm.h"

#include <math.h>
#include <stdatomic.h>

/* ---- scalar variant (the oracle) --------------------------------------------------------- */

void nx__gemm_pack_a_generic(float *Ap, int mr, const float *x, long ldx, int m, int k0, int kc) {
    for (int k = 0; k < kc; k++)
        for (int i = 0; i < mr; i++) Ap[(size_t)k * mr + i] = i < m ? x[(long)i * ldx + k0 + k] : 0.0f;
}

void nx__gemm_pack_b_generic(float *Bp, int nr, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    float row[NX_GEMM_KC];
    size_t off = nx__row_bytes(t, k0);   /* k0 is a whole number of blocks for block types */
    for (int r = 0; r < nr; r++) {
        if (r < n) nx__dequantize_row(t, (const uint8_t *)W + (size_t)r * rb + off, row, kc);
        for (int k = 0; k < kc; k++) Bp[(size_t)k * nr + r] = r < n ? row[k] : 0.0f;
    }
}

#define REF_MR 4
#define REF_NR 16

static void tile_ref(const float *Ap, const float *Bp, int kc, float *C, long ldc, int m, int n, int first,
                     const float *bias) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float acc = first ? 0.0f : C[(long)i * ldc + j];
            for (int k = 0; k < kc; k++) acc = fmaf(Ap[(size_t)k * REF_MR + i], Bp[(size_t)k * REF_NR + j], acc);
            C[(long)i * ldc + j] = bias ? acc + bias[j] : acc;
        }
}

static void pack_a_ref(float *Ap, const float *x, long ldx, int m, int k0, int kc) {
    nx__gemm_pack_a_generic(Ap, REF_MR, x, ldx, m, k0, kc);
}

static void pack_b_ref(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    nx__gemm_pack_b_generic(Bp, REF_NR, t, W, rb, n, k0, kc);
}

const nx_gemm_vt nx__gemm_ref_vt = {"ref", REF_MR, REF_NR, tile_ref, pack_a_ref, pack_b_ref};

/* ---- variant choice --------------------------------------------------------------------- */

const nx_gemm_vt *nx__gemm_variant(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "ref") == 0) return &nx__gemm_ref_vt;
    if (strcmp(name, "avx2") == 0) return nx__cpu_has_avx2() ? &nx__gemm_avx2_vt : NULL;
    if (strcmp(name, "avx512") == 0) return nx__cpu_has_avx512() ? &nx__gemm_avx512_vt : NULL;
    return NULL;
}

const nx_gemm_vt *nx__gemm_best(void) {
    const nx_gemm_vt *vt = nx__gemm_variant(nx__kernels()->name);
    return vt ? vt : &nx__gemm_ref_vt;
}

/* ---- the cached packed-x buffer ----------------------------------------------------------- */

/* One spare buffer; its capacity in floats sits in the first 64 bytes (keeps data aligned). */
static _Atomic(void *) g_spare;

static void *scratch_take(size_t floats) {
    void *p = atomic_exchange_explicit(&g_spare, NULL, memory_order_acquire);
    if (p && *(size_t *)p >= floats) return p;
    nx__free_aligned(p);
    size_t bytes;
    if (!nx__mul_ok(floats, sizeof(float), &bytes) || !nx__add_ok(bytes, 64, &bytes)) return NULL;
    p = nx__malloc_aligned(bytes);
    if (p) *(size_t *)p = floats;
    return p;
}

static void scratch_give(void *p) {
    /* Keep the larger of the returned buffer and a spare another caller may have parked. */
    void *old = atomic_exchange_explicit(&g_spare, p, memory_order_acq_rel);
    if (old && p && *(size_t *)old > *(size_t *)p) old = atomic_exchange_explicit(&g_spare, old, memory_order_acq_rel);
    nx__free_aligned(old);
}

/* ---- driver ------------------------------------------------------------------------------ */

typedef struct {
    const nx_gemm_vt *vt;
    float *y;
    const float *x, *b;
    const nx_wmat *W;
    float *Ap;   /* packed x: tile i at Ap + i·IN·mr, [IN][mr]; NULL = pack on the fly */
    int T, IN, OUT;
} gemm_job;

static void pack_x_worker(int ith, int nth, void *arg) {
    const gemm_job *j = arg;
    int mr = j->vt->mr, tiles = (j->T + mr - 1) / mr;
    for (int ti = tiles * ith / nth; ti < tiles * (ith + 1) / nth; ti++) {
        int t0 = ti * mr, m = NX_MIN(mr, j->T - t0);
        float *dst = j->Ap + (size_t)ti * j->IN * mr;
        for (int k0 = 0; k0 < j->IN; k0 += NX_GEMM_KC)
            j->vt->pack_a(dst + (size_t)k0 * mr, j->x + (size_t)t0 * j->IN, j->IN, m, k0, NX_MIN(NX_GEMM_KC, j->IN - k0));
    }
}

static void gemm_worker(int ith, int nth, void *arg) {
    const gemm_job *j = arg;
    const nx_gemm_vt *vt = j->vt;
    int mr = vt->mr, nr = vt->nr, IN = j->IN;
    int strips = (j->OUT + nr - 1) / nr, tiles = (j->T + mr - 1) / mr;
    int s0 = (int)((long)strips * ith / nth), s1 = (int)((long)strips * (ith + 1) / nth);
    size_t rb = nx__row_bytes(j->W->type, IN);
    _Alignas(64) float Bp[NX_GEMM_KC * NX_GEMM_NR_MAX];
    _Alignas(64) float Al[NX_GEMM_KC * NX_GEMM_MR_MAX];
    /* Strips outermost: the strip's T x nr slice of y stays in L2 while its K blocks are
     * summed, so reloading the running sums never waits on L3. */
    for (int s = s0; s < s1; s++) {
        int o0 = s * nr, n = NX_MIN(nr, j->OUT - o0);
        for (int k0 = 0; k0 < IN; k0 += NX_GEMM_KC) {
            int kc = NX_MIN(NX_GEMM_KC, IN - k0), first = k0 == 0, last = k0 + kc == IN;
            vt->pack_b(Bp, j->W->type, (const uint8_t *)j->W->data + (size_t)o0 * rb, rb, n, k0, kc);
            const float *bias = last && j->b ? j->b + o0 : NULL;
            /* The next micro-panel's weights (the rest of this strip's rows, or the next
             * strip's first K block) are prefetched a slice per tile: packing reads tens of
             * row segments at once, which the hardware prefetcher does not cover. */
            int nk0 = last ? 0 : k0 + kc, ns = last ? s + 1 : s;
            int nn = ns < s1 ? NX_MIN(nr, j->OUT - ns * nr) : 0;
            size_t seg = nx__row_bytes(j->W->type, NX_MIN(NX_GEMM_KC, IN - nk0)), lines = (seg + 63) / 64;
            const uint8_t *next = (const uint8_t *)j->W->data + (size_t)ns * nr * rb + nx__row_bytes(j->W->type, nk0);
            size_t total = (size_t)nn * lines;
            for (int ti = 0; ti < tiles; ti++) {
                int t0 = ti * mr, m = NX_MIN(mr, j->T - t0);
                for (size_t l = total * (size_t)ti / (size_t)tiles; l < total * (size_t)(ti + 1) / (size_t)tiles; l++)
                    __builtin_prefetch(next + (l / lines) * rb + (l % lines) * 64);
                const float *Ap = j->Ap ? j->Ap + ((size_t)ti * IN + (size_t)k0) * mr : Al;
                if (!j->Ap) vt->pack_a(Al, j->x + (size_t)t0 * IN, IN, m, k0, kc);
                vt->tile(Ap, Bp, kc, j->y + (size_t)t0 * j->OUT + o0, j->OUT, m, n, first, bias);
            }
        }
    }
}

void nx__gemm_w_vt(const nx_gemm_vt *vt, nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b,
                   int T, int IN, int OUT) {
    NX_ASSERT(vt->mr <= NX_GEMM_MR_MAX && vt->nr <= NX_GEMM_NR_MAX);
    NX_ASSERT(!(W->type == NX_Q8_0 || W->type == NX_Q4_0) || IN % NX_QBLOCK == 0);
    if (T <= 0 || OUT <= 0) return;
    gemm_job j = {vt, y, x, b, W, NULL, T, IN, OUT};
    size_t tiles = ((size_t)T + (size_t)vt->mr - 1) / (size_t)vt->mr;
    void *buf = scratch_take(tiles * (size_t)vt->mr * (size_t)IN);
    if (buf) j.Ap = (float *)((char *)buf + 64);
    /* Same hand-off threshold as the other matmul drivers (dispatch.c). */
    if ((size_t)T * IN * OUT < 262144 || nx_pool_size(pool) == 1) {
        if (j.Ap) pack_x_worker(0, 1, &j);
        gemm_worker(0, 1, &j);
    } else {
        if (j.Ap) nx_pool_run(pool, pack_x_worker, &j);
        nx_pool_run(pool, gemm_worker, &j);
    }
    if (buf) scratch_give(buf);
}

void nx__gemm_w(nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b, int T, int IN, int OUT) {
    nx__gemm_w_vt(nx__gemm_best(), pool, y, x, W, b, T, IN, OUT);
}
