/*
 * dispatch.c - run-time choice of the kernel variant (CPUID, or NX_KERNELS=ref|avx2|avx512)
 * and the threaded drivers built on a variant: matmul split by output rows, elementwise
 * activation split by elements. Splits depend only on (ith, nth), never on timing.
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
    float *y;
    const float *x, *Wp, *b;
    int T, IN, OUT;
} matmul_job;

static void matmul_worker(int ith, int nth, void *arg) {
    const matmul_job *j = arg;
    /* Row ranges in whole panels (multiples of NX_PANEL); only the last may end mid-panel. */
    int per = (j->OUT + nth - 1) / nth;
    per = (per + 15) & ~15;
    int r0 = ith * per, r1 = r0 + per;
    if (r1 > j->OUT) r1 = j->OUT;
    if (r0 >= r1) return;
    j->vt->matmul_rows(j->y, j->x, j->Wp, j->b, j->T, j->IN, j->OUT, r0, r1);
}

void nx__matmul_vt(const nx_kernel_vt *vt, nx_pool *pool, float *y, const float *x, const float *Wp, const float *b,
                   int T, int IN, int OUT) {
    matmul_job j = {vt, y, x, Wp, b, T, IN, OUT};
    /* Below ~256K FMAs (tens of microseconds) a hand-off to the workers costs more than it
     * saves, and on a busy machine each hand-off can wait a whole scheduler slice. */
    if ((size_t)T * IN * OUT < 262144 || nx_pool_size(pool) == 1)
        vt->matmul_rows(y, x, Wp, b, T, IN, OUT, 0, OUT);
    else
        nx_pool_run(pool, matmul_worker, &j);
}

void nx__matmul(nx_pool *pool, float *y, const float *x, const float *Wp, const float *b, int T, int IN, int OUT) {
    nx__matmul_vt(nx__kernels(), pool, y, x, Wp, b, T, IN, OUT);
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
