/*
 * dispatch.c - run-time choice of the kernel variant (CPUID, or NX_KERNELS=ref|avx2|avx512)
 * and the threaded elementwise activation built on a variant, split by elements. The split
 * depends only on (ith, nth), never on timing.
 */
#include "kernels/kernels.h"

#include <stdatomic.h>

static const nx_kernel_vt *variant_if_supported(const char *name) {
    if (strcmp(name, "ref") == 0) return &nx__kernels_ref_vt;
    if (strcmp(name, "avx2") == 0) return nx__cpu_has_avx2() ? &nx__kernels_avx2_vt : NULL;
    if (strcmp(name, "avx512") == 0) return nx__cpu_has_avx512() ? &nx__kernels_avx512_vt : NULL;
    return NULL;
}

const nx_kernel_vt *nx__kernels_variant(const char *name) { return name ? variant_if_supported(name) : NULL; }

const nx_kernel_vt *nx__kernels(void) {
    static _Atomic(const nx_kernel_vt *) chosen;
    const nx_kernel_vt *vt = atomic_load_explicit(&chosen, memory_order_acquire);
    if (vt) return vt;
    const char *env = getenv("NX_KERNELS");
    if (env && *env) {
        vt = variant_if_supported(env);
        if (!vt) nx__log(NX_LOG_WARN, "NX_KERNELS=%s is unknown or unsupported on this CPU; using the default", env);
    }
    if (!vt) vt = nx__cpu_has_avx512() ? &nx__kernels_avx512_vt
                  : nx__cpu_has_avx2() ? &nx__kernels_avx2_vt
                                       : &nx__kernels_ref_vt;
    atomic_store_explicit(&chosen, vt, memory_order_release);
    return vt;
}

typedef struct {
    const nx_kernel_vt *vt;
    float *x;
    size_t n;
    nx_kact act;
} act_job;

static void act_worker(int ith, int nth, void *arg) {
    const act_job *j = arg;
    size_t per = (j->n + (size_t)nth - 1) / (size_t)nth;
    size_t a = (size_t)ith * per, e = a + per < j->n ? a + per : j->n;
    if (a < e) j->vt->act(j->x + a, e - a, j->act);
}

void nx__act(nx_pool *pool, float *x, size_t n, nx_kact act) {
    act_job j = {nx__kernels(), x, n, act};
    if (n < 4096 || nx_pool_size(pool) == 1)
        j.vt->act(x, n, act);
    else
        nx_pool_run(pool, act_worker, &j);
}

typedef struct {
    const nx_kernel_vt *vt;
    float *y;
    const float *x, *w, *b;
    int T, C;
    float eps;
} ln_job;

static void ln_worker(int ith, int nth, void *arg) {
    const ln_job *j = arg;
    int per = (j->T + nth - 1) / nth, t0 = ith * per, t1 = t0 + per < j->T ? t0 + per : j->T;
    if (t0 < t1)
        j->vt->layernorm(j->y + (size_t)t0 * j->C, j->x + (size_t)t0 * j->C, j->w, j->b, t1 - t0, j->C, j->eps);
}

/* Rows are independent, so splitting them over the threads gives the reference's bits; a
 * prompt's LayerNorms were ~2% of a one-thread prefill and ran on one thread of two. */
void nx__layernorm(nx_pool *pool, float *y, const float *x, const float *w, const float *b, int T, int C, float eps) {
    ln_job j = {nx__kernels(), y, x, w, b, T, C, eps};
    if (T < 16 || nx_pool_size(pool) == 1)
        ln_worker(0, 1, &j);
    else
        nx_pool_run(pool, ln_worker, &j);
}
