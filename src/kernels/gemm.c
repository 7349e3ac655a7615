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

void nx__gemm_pack_a_generic(float *Ap, int mr, const float *A, long sam, long sak, int m, int k0, int kc) {
    for (int k = 0; k < kc; k++)
        for (int i = 0; i < mr; i++) Ap[(size_t)k * mr + i] = i < m ? A[(long)i * sam + (long)(k0 + k) * sak] : 0.0f;
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

static void pack_a_ref(float *Ap, const float *A, long sam, long sak, int m, int k0, int kc) {
    nx__gemm_pack_a_generic(Ap, REF_MR, A, sam, sak, m, k0, kc);
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

/* Bp[k][r] = B[(k0 + k)·ldb + r] for r < n, zero up to nr: the k-major fp32 source of the
 * training products (already in panel order, so packing is a copy). */
static void pack_b_kmajor(float *Bp, int nr, const float *B, long ldb, int n, int k0, int kc) {
    for (int k = 0; k < kc; k++) {
        float *d = Bp + (size_t)k * nr;
        memcpy(d, B + (long)(k0 + k) * ldb, (size_t)n * sizeof(float));
        for (int r = n; r < nr; r++) d[r] = 0.0f;
    }
}

typedef struct {
    const nx_gemm_vt *vt;
    const nx_gemm_args *a;
    float *Ap;   /* packed A: tile i at Ap + i·K·mr, [K][mr]; NULL = pack on the fly */
    int strips, tiles, groups;
} gemm_job;

static void pack_a_worker(int ith, int nth, void *arg) {
    const gemm_job *j = arg;
    const nx_gemm_args *a = j->a;
    int mr = j->vt->mr;
    for (int ti = j->tiles * ith / nth; ti < j->tiles * (ith + 1) / nth; ti++) {
        int i0 = ti * mr, m = NX_MIN(mr, a->M - i0);
        float *dst = j->Ap + (size_t)ti * a->K * mr;
        for (int k0 = 0; k0 < a->K; k0 += NX_GEMM_KC)
            j->vt->pack_a(dst + (size_t)k0 * mr, a->A + (long)i0 * a->sam, a->sam, a->sak, m, k0,
                          NX_MIN(NX_GEMM_KC, a->K - k0));
    }
}

/* Where the source of micro-panel (strip s, K block k0) lies: `rows` runs of `lines` cache
 * lines, `stride` bytes apart (weight rows for typed W, k rows for a k-major B). */
static const uint8_t *panel_source(const gemm_job *j, int s, int k0, size_t *stride, size_t *rows, size_t *lines) {
    const nx_gemm_args *a = j->a;
    int nr = j->vt->nr, n = NX_MIN(nr, a->N - s * nr), kc = NX_MIN(NX_GEMM_KC, a->K - k0);
    if (a->W) {
        *stride = nx__row_bytes(a->wtype, a->K);
        *rows = (size_t)n;
        *lines = (nx__row_bytes(a->wtype, kc) + 63) / 64;
        return (const uint8_t *)a->W + (size_t)s * nr * *stride + nx__row_bytes(a->wtype, k0);
    }
    *stride = (size_t)a->ldb * sizeof(float);
    *rows = (size_t)kc;
    *lines = ((size_t)n * sizeof(float) + 63) / 64;
    return (const uint8_t *)(a->B + (long)k0 * a->ldb + (long)s * nr);
}

static void gemm_worker(int ith, int nth, void *arg) {
    const gemm_job *j = arg;
    const nx_gemm_args *a = j->a;
    const nx_gemm_vt *vt = j->vt;
    int mr = vt->mr, nr = vt->nr, K = a->K;
    _Alignas(64) float Bp[NX_GEMM_KC * NX_GEMM_NR_MAX];
    _Alignas(64) float Al[NX_GEMM_KC * NX_GEMM_MR_MAX];
    /* Units are (strip, tile group) pairs in strip-major order, split statically. Strips are
     * outermost so a strip's slice of C stays in L2 while its K blocks are summed. */
    long units = (long)j->strips * j->groups;
    for (long u = units * ith / nth; u < units * (ith + 1) / nth; u++) {
        int s = (int)(u / j->groups), g = (int)(u % j->groups);
        int t0 = j->tiles * g / j->groups, t1 = j->tiles * (g + 1) / j->groups;
        int j0 = s * nr, n = NX_MIN(nr, a->N - j0);
        for (int k0 = 0; k0 < K; k0 += NX_GEMM_KC) {
            int kc = NX_MIN(NX_GEMM_KC, K - k0), first = k0 == 0 && !a->accumulate, last = k0 + kc == K;
            if (a->W)
                vt->pack_b(Bp, a->wtype, (const uint8_t *)a->W + (size_t)j0 * nx__row_bytes(a->wtype, K),
                           nx__row_bytes(a->wtype, K), n, k0, kc);
            else
                pack_b_kmajor(Bp, nr, a->B + j0, a->ldb, n, k0, kc);
            const float *bias = last && a->bias ? a->bias + j0 : NULL;
            /* The next micro-panel's source is prefetched a slice per tile: packing reads tens
             * of short runs at once, which the hardware prefetcher does not cover. */
            size_t stride = 0, rows = 0, lines = 1;
            const uint8_t *next = NULL;
            if (!last) next = panel_source(j, s, k0 + kc, &stride, &rows, &lines);
            else if (u + 1 < units * (ith + 1) / nth && (int)((u + 1) / j->groups) != s)
                next = panel_source(j, s + 1, 0, &stride, &rows, &lines);
            size_t total = next ? rows * lines : 0, nt = (size_t)(t1 - t0);
            for (int ti = t0; ti < t1; ti++) {
                int i0 = ti * mr, m = NX_MIN(mr, a->M - i0);
                for (size_t l = total * (size_t)(ti - t0) / nt; l < total * (size_t)(ti - t0 + 1) / nt; l++)
                    __builtin_prefetch(next + (l / lines) * stride + (l % lines) * 64);
                const float *Ap = j->Ap ? j->Ap + ((size_t)ti * K + (size_t)k0) * mr : Al;
                if (!j->Ap) vt->pack_a(Al, a->A + (long)i0 * a->sam, a->sam, a->sak, m, k0, kc);
                vt->tile(Ap, Bp, kc, a->C + (long)i0 * a->ldc + j0, a->ldc, m, n, first, bias);
            }
        }
    }
}

void nx__gemm(const nx_gemm_vt *vt, nx_pool *pool, const nx_gemm_args *a) {
    NX_ASSERT(vt->mr <= NX_GEMM_MR_MAX && vt->nr <= NX_GEMM_NR_MAX);
    NX_ASSERT(!a->W || !(a->wtype == NX_Q8_0 || a->wtype == NX_Q4_0) || a->K % NX_QBLOCK == 0);
    if (a->M <= 0 || a->N <= 0) return;
    NX_ASSERT(a->K > 0);
    int nth = nx_pool_size(pool);
    /* Same hand-off threshold as the other matmul drivers (dispatch.c). */
    bool inline_run = (double)a->M * a->N * a->K < 262144.0 || nth == 1;
    gemm_job j = {vt, a, NULL, (a->N + vt->nr - 1) / vt->nr, (a->M + vt->mr - 1) / vt->mr, 1};
    /* Too few strips to share out evenly: split the row tiles too. */
    if (!inline_run && j.strips < 4 * nth) j.groups = NX_MIN(nth, j.tiles);
    void *buf = scratch_take((size_t)j.tiles * (size_t)vt->mr * (size_t)a->K);
    if (buf) j.Ap = (float *)((char *)buf + 64);
    if (inline_run) {
        if (j.Ap) pack_a_worker(0, 1, &j);
        gemm_worker(0, 1, &j);
    } else {
        if (j.Ap) nx_pool_run(pool, pack_a_worker, &j);
        nx_pool_run(pool, gemm_worker, &j);
    }
    if (buf) scratch_give(buf);
}

void nx__gemm_w_vt(const nx_gemm_vt *vt, nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b,
                   int T, int IN, int OUT) {
    nx_gemm_args a = {.M = T, .N = OUT, .K = IN, .A = x, .sam = IN, .sak = 1, .W = W->data, .wtype = W->type,
                      .C = y, .ldc = OUT, .bias = b};
    nx__gemm(vt, pool, &a);
}

void nx__gemm_w(nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b, int T, int IN, int OUT) {
    nx__gemm_w_vt(nx__gemm_best(), pool, y, x, W, b, T, IN, OUT);
}
