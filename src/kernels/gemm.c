/*
 * gemm.c - the prefill matrix multiply y[T][OUT] = x[T][IN]·Wᵀ + b for row-major weights of
 * any run type (F32, F16, BF16, Q8_0, Q4_0), and the general C (+)= A·B behind it that the
 * training matmul also uses; compute-bound from a few dozen tokens up.
 *
 * Design (GotoBLAS-style). A (x) is packed into row tiles of mr tokens, [K][mr] each, shared by
 * all threads (the packing itself is split over the threads), in passes of rows x K range
 * whose packed copy stays under 1.5 MiB, i.e. in L2. The threads then take nr-wide output
 * strips one at a time from a shared counter. For each K block (vt->kc inputs) of its
 * strip, a thread converts the strip's weights (fp32 as is, 16-bit widened exactly, block
 * types dequantized; or, for the integer variants, repacked as int8 quads) into a micro-panel
 * of its own - in L1 or L2, per variant - and sweeps the pass's row tiles past it with the
 * register-tile kernel. Each weight is read and converted once per pass, and each packed x
 * element is reused nr times per load.
 *
 * Order of the sums (the invariant the tests check). fp32 variants: every y element is one
 * fused multiply-add chain over k = 0..IN-1 ascending, started at 0 (or at C when
 * accumulating), with the bias added last; between K blocks the running sum is parked (in a
 * per-thread panel within a pass, in y between passes) and reloaded, which is exact. Integer
 * variants (Q8_0/Q4_0 weights, Q8_0 activations): an exact integer dot per 32-block, then one
 * fma chain over the blocks. So the blocking, the tile an element falls in, the thread that
 * takes it and the ISA (scalar fmaf, AVX2, AVX-512, VNNI) never change a bit: 1 and N threads
 * agree, and each fast variant agrees with its scalar oracle.
 *
 * Memory: the packed A and each thread's B micro-panel and running sums live in a buffer kept
 * between calls (a few cached spares, taken and returned atomically, so concurrent callers
 * never share one). If the buffer cannot be allocated, each thread packs tiles and
 * NX_GEMM_KC-wide micro-panels on its stack as it goes and parks its sums in y (same bits).
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

static void tile_ref(const float *Ap, const float *Bp, int kc, const float *Ci, long ldi, float *Co, long ldo, int m,
                     int n, const float *bias, const nx_gemm_pf *pf) {
    nx__gemm_pf_all(pf);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float acc = Ci ? Ci[(long)i * ldi + j] : 0.0f;
            for (int k = 0; k < kc; k++) acc = fmaf(Ap[(size_t)k * REF_MR + i], Bp[(size_t)k * REF_NR + j], acc);
            Co[(long)i * ldo + j] = bias ? acc + bias[j] : acc;
        }
}

static void pack_a_ref(float *Ap, const float *A, long sam, long sak, int m, int k0, int kc) {
    nx__gemm_pack_a_generic(Ap, REF_MR, A, sam, sak, m, k0, kc);
}

static void pack_b_ref(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    nx__gemm_pack_b_generic(Bp, REF_NR, t, W, rb, n, k0, kc);
}

const nx_gemm_vt nx__gemm_ref_vt = {"ref", REF_MR, REF_NR, NX_GEMM_KC, 32 * REF_MR, tile_ref, pack_a_ref, pack_b_ref, NULL};

/* ---- Q8_0 activations x Q8_0/Q4_0 weights (integer dot per block) -------------------------- */
/* The oracle of the integer variants (gemm_x86.c): activations quantized to Q8_0 blocks with
 * nx__quantize_row_xq8 (as decode does), per block an exact integer Σ q_x·q_w, then
 * acc = fma((float)Σ, d_w·d_x, acc) over the blocks in order. Per 32-block, packed A holds
 * d_x[mr] then q_x[mr][32]; packed B holds d_w[nr] then q_w[nr][32] (int8, Q4_0 recentred). */
#define Q8REF_MR 4
#define Q8REF_NR 16

void nx__gemm_quantize_tile(float *d, int8_t *q, const float *A, long sam, int mr, int m, int k0, int kc) {
    nx_xq8 blk[NX_GEMM_KC / NX_QBLOCK];
    int nb = kc / NX_QBLOCK;
    for (int i = 0; i < mr; i++) {
        if (i < m) nx__quantize_row_xq8(blk, A + (long)i * sam + k0, kc);
        for (int b = 0; b < nb; b++) {
            d[(size_t)b * mr + i] = i < m ? blk[b].d : 0.0f;
            for (int e = 0; e < NX_QBLOCK; e++) q[((size_t)b * mr + i) * NX_QBLOCK + e] = i < m ? blk[b].q[e] : 0;
        }
    }
}

void nx__gemm_weight_block(nx_dtype t, const uint8_t *row, int b, float *d, int8_t q[NX_QBLOCK]) {
    if (t == NX_Q8_0) {
        const uint8_t *p = row + (size_t)b * sizeof(nx_block_q8_0);
        *d = nx__qblock_d(p);
        memcpy(q, p + 2, NX_QBLOCK);
    } else {
        const uint8_t *p = row + (size_t)b * sizeof(nx_block_q4_0);
        *d = nx__qblock_d(p);
        for (int e = 0; e < 16; e++) {
            q[e] = (int8_t)((p[2 + e] & 15) - 8);
            q[e + 16] = (int8_t)((p[2 + e] >> 4) - 8);
        }
    }
}

static void tile_q8ref(const float *Ap, const float *Bp, int kc, const float *Ci, long ldi, float *Co, long ldo,
                       int m, int n, const float *bias, const nx_gemm_pf *pf) {
    nx__gemm_pf_all(pf);
    int nb = kc / NX_QBLOCK;
    size_t ablk = Q8REF_MR * (4 + NX_QBLOCK), bblk = Q8REF_NR * (4 + NX_QBLOCK);   /* bytes per block */
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float acc = Ci ? Ci[(long)i * ldi + j] : 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *a = (const uint8_t *)Ap + b * ablk, *w = (const uint8_t *)Bp + b * bblk;
                const int8_t *qa = (const int8_t *)(a + Q8REF_MR * 4) + i * NX_QBLOCK;
                const int8_t *qw = (const int8_t *)(w + Q8REF_NR * 4) + j * NX_QBLOCK;
                int32_t isum = 0;
                for (int e = 0; e < NX_QBLOCK; e++) isum += (int32_t)qa[e] * qw[e];
                acc = fmaf((float)isum, ((const float *)w)[j] * ((const float *)a)[i], acc);
            }
            Co[(long)i * ldo + j] = bias ? acc + bias[j] : acc;
        }
}

static void pack_a_q8ref(float *Ap, const float *A, long sam, long sak, int m, int k0, int kc) {
    NX_ASSERT(sak == 1 && k0 % NX_QBLOCK == 0 && kc % NX_QBLOCK == 0);
    float d[NX_GEMM_KC / NX_QBLOCK * Q8REF_MR];
    int8_t q[NX_GEMM_KC * Q8REF_MR];
    nx__gemm_quantize_tile(d, q, A, sam, Q8REF_MR, m, k0, kc);
    uint8_t *p = (uint8_t *)Ap;
    for (int b = 0; b < kc / NX_QBLOCK; b++, p += Q8REF_MR * (4 + NX_QBLOCK)) {
        memcpy(p, d + b * Q8REF_MR, Q8REF_MR * 4);
        memcpy(p + Q8REF_MR * 4, q + (size_t)b * Q8REF_MR * NX_QBLOCK, Q8REF_MR * NX_QBLOCK);
    }
}

static void pack_b_q8ref(float *Bp, nx_dtype t, const void *W, size_t rb, int n, int k0, int kc) {
    uint8_t *p = (uint8_t *)Bp;
    for (int b = 0; b < kc / NX_QBLOCK; b++, p += Q8REF_NR * (4 + NX_QBLOCK))
        for (int r = 0; r < Q8REF_NR; r++) {
            float d = 0.0f;
            int8_t q[NX_QBLOCK] = {0};
            if (r < n) nx__gemm_weight_block(t, (const uint8_t *)W + (size_t)r * rb, k0 / NX_QBLOCK + b, &d, q);
            memcpy(p + r * 4, &d, 4);
            memcpy(p + Q8REF_NR * 4 + r * NX_QBLOCK, q, NX_QBLOCK);
        }
}

const nx_gemm_vt nx__gemm_q8ref_vt = {"ref-q8", Q8REF_MR, Q8REF_NR, NX_GEMM_KC, 32 * Q8REF_MR, tile_q8ref, pack_a_q8ref, pack_b_q8ref, NULL};

/* ---- variant choice --------------------------------------------------------------------- */

const nx_gemm_vt *nx__gemm_variant(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "ref") == 0) return &nx__gemm_ref_vt;
    if (strcmp(name, "avx2") == 0) return nx__cpu_has_avx2() ? &nx__gemm_avx2_vt : NULL;
    if (strcmp(name, "avx512") == 0) return nx__cpu_has_avx512() ? &nx__gemm_avx512_vt : NULL;
    if (strcmp(name, "ref-q8") == 0) return &nx__gemm_q8ref_vt;
    if (strcmp(name, "avx512-vnni") == 0) return nx__cpu_has_avx512vnni() ? &nx__gemm_vnni_vt : NULL;
    return NULL;
}

const nx_gemm_vt *nx__gemm_best(void) {
    const nx_gemm_vt *vt = nx__gemm_variant(nx__kernels()->name);
    return vt ? vt : &nx__gemm_ref_vt;
}

/* ---- the cached packed-x buffer ----------------------------------------------------------- */

/* A few spare buffers (one per concurrent caller, e.g. attention heads multiplying on
 * several threads at once); a buffer's capacity in floats sits in its first 64 bytes, which
 * keeps the data aligned. */
#define SPARES 8
static _Atomic(void *) g_spare[SPARES];

static void *scratch_take(size_t floats) {
    void *p = NULL;
    for (int i = 0; i < SPARES && !p; i++) p = atomic_exchange_explicit(&g_spare[i], NULL, memory_order_acquire);
    if (p && *(size_t *)p >= floats) return p;
    nx__free_aligned(p);
    size_t bytes;
    if (!nx__mul_ok(floats, sizeof(float), &bytes) || !nx__add_ok(bytes, 64, &bytes)) return NULL;
    p = nx__malloc_aligned(bytes);
    if (p) *(size_t *)p = floats;
    return p;
}

static void scratch_give(void *p) {
    for (int i = 0; i < SPARES; i++) {
        void *expected = NULL;
        if (atomic_compare_exchange_strong_explicit(&g_spare[i], &expected, p, memory_order_acq_rel,
                                                    memory_order_relaxed))
            return;
    }
    nx__free_aligned(p);   /* more concurrent callers than slots */
}

/* Largest packed block of A, in floats (1.5 MiB of a core's 2 MiB L2): a 512-token prompt's
 * 768-wide activations in one pass, so C is written once; larger K in few passes. */
#define NX_GEMM_PACK_MAX ((size_t)384 << 10)

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

/* Row tiles per pass over the K blocks: enough for TILE_ROWS rows of A (a 512-token prompt,
 * the default batch, in one block), whose slice of C (TILE_ROWS x nr running sums, 96 KiB)
 * stays in L2 while its K blocks are summed, however tall A is. Each block packs every weight
 * micro-panel once: at 256 rows (64 tiles of the VNNI tile's 4) the panels of a 512-token
 * prompt were packed twice, and 512 made its prompts 4.5% (410M q4), 4.0% (160M q8) and
 * 1.2% (410M q8) faster (7/7/5 alternating rounds). */
#define TILE_ROWS 512
static int tile_block(const nx_gemm_vt *vt) { return (TILE_ROWS + vt->mr - 1) / vt->mr; }

typedef struct {
    const nx_gemm_vt *vt;
    const nx_gemm_args *a;
    float *Ap;   /* packed A[kb0, kb1): tile i at Ap + i·a_tile, its K block from k0 at
                  * + (k0 - kb0)/32·a_blk; NULL = pack on the fly */
    size_t a_tile;   /* a_floats(vt, kb1 - kb0) */
    /* per thread, work_floats floats at work + ith·work_floats: the B micro-panel (kc·nr),
     * then tile_block·mr·nr running sums; NULL: a NX_GEMM_KC panel on the stack, sums in C */
    float *work;
    size_t work_floats;
    int kc;   /* K block: vt->kc, or NX_GEMM_KC without the work buffer */
    int strips, tiles, groups;
    int kb0, kb1;        /* the K range of this pass */
    atomic_long claimed; /* units handed out so far */
} gemm_job;

/* Units are (strip, tile group) pairs in strip-major order, handed out one at a time: on a
 * shared machine a thread that loses its core for a while leaves its share to the others
 * instead of holding up the barrier. Which thread computes a unit never changes its bits. */
static long claim_unit(gemm_job *j) { return atomic_fetch_add_explicit(&j->claimed, 1, memory_order_relaxed); }

static void pack_a_worker(int ith, int nth, void *arg) {
    const gemm_job *j = arg;
    const nx_gemm_args *a = j->a;
    int mr = j->vt->mr;
    for (int ti = j->tiles * ith / nth; ti < j->tiles * (ith + 1) / nth; ti++) {
        int i0 = ti * mr, m = NX_MIN(mr, a->M - i0);
        float *dst = j->Ap + (size_t)ti * j->a_tile;
        for (int k0 = j->kb0; k0 < j->kb1; k0 += j->kc)
            j->vt->pack_a(dst + (size_t)(k0 - j->kb0) / 32 * (size_t)j->vt->a_blk, a->A + (long)i0 * a->sam, a->sam, a->sak, m, k0,
                          NX_MIN(j->kc, j->kb1 - k0));
    }
}

/* Where the source of micro-panel (strip s, K block k0) lies: `rows` runs of `lines` cache
 * lines, `stride` bytes apart (weight rows for typed W, k rows for a k-major B). */
static const uint8_t *panel_source(const gemm_job *j, int s, int k0, size_t *stride, size_t *rows, size_t *lines) {
    const nx_gemm_args *a = j->a;
    int nr = j->vt->nr, n = NX_MIN(nr, a->N - s * nr), kc = NX_MIN(j->kc, a->K - k0);
    if (a->W && a->x8) {
        /* interleaved: each group of 8 rows holds the K block's pairs in one run */
        size_t rb = nx__row_bytes(a->wtype, a->K), pair = 8 * nx__row_bytes(a->wtype, 2 * NX_QBLOCK);
        int p0 = k0 / (2 * NX_QBLOCK), p1 = (k0 + kc + 2 * NX_QBLOCK - 1) / (2 * NX_QBLOCK);
        *stride = 8 * rb;
        *rows = (size_t)n / 8;
        *lines = ((size_t)(p1 - p0) * pair + 63) / 64;
        return (const uint8_t *)a->W + (size_t)s * nr * rb + (size_t)p0 * pair;
    }
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
    (void)nth;
    gemm_job *j = arg;
    const nx_gemm_args *a = j->a;
    const nx_gemm_vt *vt = j->vt;
    int mr = vt->mr, nr = vt->nr, K = a->K;
    _Alignas(64) float Bs[NX_GEMM_KC * NX_GEMM_NR_MAX];
    _Alignas(64) float Al[NX_GEMM_KC * NX_GEMM_MR_MAX];
    float *Bp = j->work ? j->work + (size_t)ith * j->work_floats : Bs;
    float *Cs = j->work ? Bp + (size_t)j->kc * nr : NULL;
    long units = (long)j->strips * j->groups;
    for (long u = claim_unit(j), un; u < units; u = un) {
        int s = (int)(u / j->groups), g = (int)(u % j->groups);
        un = -1;   /* the next unit, claimed during this one's last K block */
        int t0 = j->tiles * g / j->groups, t1 = j->tiles * (g + 1) / j->groups;
        int j0 = s * nr, n = NX_MIN(nr, a->N - j0);
        for (int tb = t0; tb < t1; tb += tile_block(vt)) {
            int te = NX_MIN(tb + tile_block(vt), t1);
            for (int k0 = j->kb0; k0 < j->kb1; k0 += j->kc) {
                int kc = NX_MIN(j->kc, j->kb1 - k0), first = k0 == 0 && !a->accumulate, last = k0 + kc == K;
                /* Between the pass's first and last K block the running sums live in Cs, a
                 * contiguous panel: C's rows are often a multiple of 4 KiB apart, and a tile's
                 * 8 rows would then all fall in one L1 set. */
                bool from_c = k0 == j->kb0 || !Cs, to_c = k0 + kc == j->kb1 || !Cs;
                if (a->W)
                    (a->x8 ? vt->pack_b_x8 : vt->pack_b)(Bp, a->wtype,
                                                         (const uint8_t *)a->W + (size_t)j0 * nx__row_bytes(a->wtype, K),
                                                         nx__row_bytes(a->wtype, K), n, k0, kc);
                else
                    pack_b_kmajor(Bp, nr, a->B + j0, a->ldb, n, k0, kc);
                const float *bias = last && a->bias ? a->bias + j0 : NULL;
                /* The next micro-panel's source (this strip's next K block, or the next
                 * strip's first) is prefetched a few lines per tile, spread over the tile's K
                 * loop: packing reads tens of short runs at once, which the hardware
                 * prefetcher does not cover. */
                size_t stride = 0, rows = 0, lines = 1, per = 0, row = 0, line = 0;
                const uint8_t *next = NULL;
                if (k0 + kc < j->kb1) {
                    next = panel_source(j, s, k0 + kc, &stride, &rows, &lines);
                } else if (te == t1) {
                    un = claim_unit(j);
                    if (un < units && (int)(un / j->groups) != s)
                        next = panel_source(j, (int)(un / j->groups), j->kb0, &stride, &rows, &lines);
                }
                if (next) per = (rows * lines + (size_t)(te - tb) - 1) / (size_t)(te - tb);
                nx_gemm_pf pf;
                for (int ti = tb; ti < te; ti++) {
                    int i0 = ti * mr, m = NX_MIN(mr, a->M - i0);
                    pf.n = 0;
                    for (size_t l = 0; l < per && row < rows; l++) {
                        const uint8_t *p = next + row * stride + line * 64;
                        if (pf.n < NX_GEMM_PF_MAX) pf.addr[pf.n++] = p;
                        else __builtin_prefetch(p);
                        if (++line == lines) line = 0, row++;
                    }
                    const float *Ap =
                        j->Ap ? j->Ap + (size_t)ti * j->a_tile + (size_t)(k0 - j->kb0) / 32 * (size_t)vt->a_blk : Al;
                    if (!j->Ap) vt->pack_a(Al, a->A + (long)i0 * a->sam, a->sam, a->sak, m, k0, kc);
                    float *Ct = a->C + (long)i0 * a->ldc + j0, *St = Cs ? Cs + (size_t)(ti - tb) * mr * nr : NULL;
                    const float *Ci = first ? NULL : from_c ? Ct : St;
                    vt->tile(Ap, Bp, kc, Ci, from_c ? a->ldc : nr, to_c ? Ct : St, to_c ? a->ldc : nr, m, n, bias,
                             &pf);
                }
            }
        }
        NX_DASSERT(un >= 0);   /* every unit has a last K block of a last tile block */
    }
}

/* Floats of one tile's packed A over k values (a multiple of 16: tiles stay 64-byte aligned). */
static size_t a_floats(const nx_gemm_vt *vt, int k) {
    return ((size_t)(k + 31) / 32 * (size_t)vt->a_blk + 15) & ~(size_t)15;
}

/* One pass: rows of a (all of its M) times the K range [kb0, kb1), into C. */
static void gemm_pass(const nx_gemm_vt *vt, nx_pool *pool, const nx_gemm_args *a, float *Ap, float *work,
                      size_t work_floats, int kb0, int kb1, bool inline_run) {
    int nth = inline_run ? 1 : nx_pool_size(pool);
    gemm_job j = {vt,  a, Ap, a_floats(vt, kb1 - kb0), work, work_floats, work ? vt->kc : NX_GEMM_KC,
                  (a->N + vt->nr - 1) / vt->nr, (a->M + vt->mr - 1) / vt->mr, 1, kb0, kb1, 0};
    /* Too few strips to share out evenly: split the row tiles too. */
    if (j.strips < 4 * nth) j.groups = NX_MIN(nth, j.tiles);
    if (inline_run) {
        if (Ap) pack_a_worker(0, 1, &j);
        gemm_worker(0, 1, &j);
    } else {
        if (Ap) nx_pool_run(pool, pack_a_worker, &j);
        nx_pool_run(pool, gemm_worker, &j);
    }
}

void nx__gemm(const nx_gemm_vt *vt, nx_pool *pool, const nx_gemm_args *a) {
    NX_ASSERT(vt->mr <= NX_GEMM_MR_MAX && vt->nr <= NX_GEMM_NR_MAX && vt->kc % NX_GEMM_KC == 0);
    NX_ASSERT(!a->W || !(a->wtype == NX_Q8_0 || a->wtype == NX_Q4_0) || a->K % NX_QBLOCK == 0);
    NX_ASSERT(!a->x8 || (a->W && vt->pack_b_x8 && vt->nr % 8 == 0 && a->N % 8 == 0));
    if (a->M <= 0 || a->N <= 0) return;
    NX_ASSERT(a->K > 0);
    /* Same hand-off threshold as the other matmul drivers (dispatch.c). */
    bool inline_run = (double)a->M * a->N * a->K < 262144.0 || nx_pool_size(pool) == 1;
    /* A is packed and multiplied in passes of (rows, K range) whose packed copy stays under
     * NX_GEMM_PACK_MAX, so every strip re-reads it from L2 rather than from memory. A pass
     * holds all of a 512-token prompt, and as much of K as fits in whole K blocks (fp32: 768;
     * the integer tiles' packed A is a quarter the size: 2688), in passes of even length. Each
     * pass beyond the first reads and writes all of C again and hands off twice more: sized
     * by the integer packing instead of fp32's (Pythia-410M, K 1024 and 4096: 5 passes per
     * layer instead of 12), 512-token q4 and q8 prompts ran 1.09x as fast (160M: 1.015x). */
    int mr = vt->mr, kc = vt->kc, tiles = (a->M + mr - 1) / mr;
    size_t kc_f = a_floats(vt, kc);
    int block = (int)NX_MAX((size_t)1, NX_MIN((size_t)tiles, NX_GEMM_PACK_MAX / kc_f));
    int kmax = (int)NX_MAX((size_t)1, NX_GEMM_PACK_MAX / (size_t)block / kc_f) * kc;
    int passes = (a->K + kmax - 1) / kmax;
    int kb = ((a->K + passes - 1) / passes + kc - 1) / kc * kc;
    /* The buffer holds the packed A, then each thread's B micro-panel and running sums (each
     * a multiple of 16 floats, so every region stays 64-byte aligned). */
    size_t apn = (size_t)block * a_floats(vt, kb);
    size_t wn = ((size_t)kc + (size_t)tile_block(vt) * (size_t)mr) * (size_t)vt->nr;
    void *buf = scratch_take(apn + wn * (size_t)(inline_run ? 1 : nx_pool_size(pool)));
    float *Ap = buf ? (float *)((char *)buf + 64) : NULL;
    for (int t0 = 0; t0 < tiles; t0 += block) {
        nx_gemm_args sub = *a;
        sub.M = NX_MIN(block * mr, a->M - t0 * mr);
        sub.A = a->A + (long)t0 * mr * a->sam;
        sub.C = a->C + (long)t0 * mr * a->ldc;
        for (int kb0 = 0; kb0 < a->K; kb0 += kb)
            gemm_pass(vt, pool, &sub, Ap, Ap ? Ap + apn : NULL, wn, kb0, NX_MIN(kb0 + kb, a->K), inline_run);
    }
    if (buf) scratch_give(buf);
}

void nx__gemm_w_vt(const nx_gemm_vt *vt, nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b,
                   int T, int IN, int OUT) {
    nx_gemm_args a = {.M = T, .N = OUT, .K = IN, .A = x, .sam = IN, .sak = 1, .W = W->data, .wtype = W->type,
                      .x8 = W->x8, .C = y, .ldc = OUT, .bias = b};
    nx__gemm(vt, pool, &a);
}

const nx_gemm_vt *nx__gemm_for(const nx_kernel_vt *kvt, nx_dtype t) {
    const nx_gemm_vt *vt = nx__gemm_variant(kvt->name);
    if (!vt) vt = &nx__gemm_ref_vt;
    if (t != NX_Q8_0 && t != NX_Q4_0) return vt;
    if (vt == &nx__gemm_ref_vt) return &nx__gemm_q8ref_vt;
    if (vt == &nx__gemm_avx512_vt && nx__cpu_has_avx512vnni()) return &nx__gemm_vnni_vt;
    return vt;
}

void nx__gemm_w(nx_pool *pool, float *y, const float *x, const nx_wmat *W, const float *b, int T, int IN, int OUT) {
    nx__gemm_w_vt(nx__gemm_for(nx__kernels(), W->type), pool, y, x, W, b, T, IN, OUT);
}
