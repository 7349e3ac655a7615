/*
 * tgemm.c - the matmul behind training: C[M,N] (+)= A(M,K) · B[K,N] with a strided A (see
 * nx_tgemm_args in train_internal.h), plus the plain triple loop used as the oracle.
 *
 * The fast path is the packed GEMM of the kernels layer (kernels/gemm.c: A packed into row
 * tiles, B copied into L1-sized micro-panels, an 8x48 AVX-512 / 6x16 AVX2 / scalar register
 * tile, chosen once by CPUID or NX_KERNELS). The products of training are all large enough
 * for packing to pay off: forward and input-gradient products have M = B·T rows; weight
 * gradients read A transposed (A(i,k) = dout[k·OC + i]), which the packer gathers once.
 *
 * Determinism: every C element is one fused multiply-add chain over k ascending, started at
 * 0 (or at C's value when accumulating), with the bias added last. Work is split among
 * threads by whole (output strip, row-tile group) units, so neither the split nor the tile an
 * element falls in changes its value: 1 and N threads give bit-identical results, and every
 * kernel variant gives the same bits as the scalar one.
 */
#include "train/train_internal.h"

#include "kernels/gemm.h"

const char *nx__tgemm_isa(void) { return nx__gemm_best()->name; }

typedef struct { const nx_tgemm_args *a; } gemm_job;

/* The oracle: one thread-split over rows, plain loops, k ascending. */
static void gemm_ref_worker(int ith, int nth, void *arg) {
    const nx_tgemm_args *a = ((gemm_job *)arg)->a;
    int i0 = (int)((long)a->M * ith / nth), i1 = (int)((long)a->M * (ith + 1) / nth);
    for (int i = i0; i < i1; i++) {
        for (int j = 0; j < a->N; j++) {
            float s = 0.0f;
            for (int k = 0; k < a->K; k++) s += a->A[(long)i * a->sam + (long)k * a->sak] * a->B[(long)k * a->ldb + j];
            float *c = &a->C[(long)i * a->ldc + j];
            if (a->accumulate) *c += s;
            else *c = a->bias ? s + a->bias[j] : s;
        }
    }
}

void nx__tgemm(nx_pool *pool, const nx_tgemm_args *a, bool reference) {
    if (a->M <= 0 || a->N <= 0) return;
    NX_ASSERT(a->K > 0);
    if (!reference) {
        nx_gemm_args g = {.M = a->M, .N = a->N, .K = a->K, .A = a->A, .sam = a->sam, .sak = a->sak, .B = a->B,
                          .ldb = a->ldb, .C = a->C, .ldc = a->ldc, .accumulate = a->accumulate, .bias = a->bias};
        nx__gemm(nx__gemm_best(), pool, &g);
        return;
    }
    gemm_job job = {a};
    /* Small products run inline: a pool wake-up costs more than they do, and the split
     * never changes results. */
    if ((double)a->M * a->N * a->K < 65536.0) gemm_ref_worker(0, 1, &job);
    else nx_pool_run(pool, gemm_ref_worker, &job);
}

typedef struct { const float *src; float *dst; int rows, cols; } tr_job;

static void transpose_worker(int ith, int nth, void *arg) {
    tr_job *j = arg;
    /* Split the destination rows (= source columns); 32x32 blocks keep both sides cached. */
    int c0 = (int)((long)j->cols * ith / nth), c1 = (int)((long)j->cols * (ith + 1) / nth);
    for (int cb = c0; cb < c1; cb += 32) {
        int ce = NX_MIN(cb + 32, c1);
        for (int rb = 0; rb < j->rows; rb += 32) {
            int re = NX_MIN(rb + 32, j->rows);
            for (int c = cb; c < ce; c++)
                for (int r = rb; r < re; r++) j->dst[(long)c * j->rows + r] = j->src[(long)r * j->cols + c];
        }
    }
}

void nx__transpose(nx_pool *pool, const float *src, float *dst, int rows, int cols) {
    tr_job j = {src, dst, rows, cols};
    if ((long)rows * cols < 32768) transpose_worker(0, 1, &j);
    else nx_pool_run(pool, transpose_worker, &j);
}
