/*
 * pool.c - persistent thread pool with static work split.
 *
 * Design: nx_pool_run publishes (fn, arg) and bumps a generation counter; workers spin
 * briefly on the counter (token generation issues thousands of short jobs per second,
 * and a futex wake-up costs more than the job), then sleep on a condition variable.
 * The caller runs share 0 itself and spins until every worker has checked in.
 * Splits are by (ith, nth) only, so results never depend on timing. nx_split (below) hands
 * items out by timing instead; its callers make each item's result independent of the thread.
 */
#include "core.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define SPIN_ITERS 200000

struct nx_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;        /* bumped once per run */
    atomic_int pending;     /* workers still running this generation */
    atomic_bool quit;
    nx_pool_fn fn;
    void *arg;
};

typedef struct { nx_pool *pool; int ith; } worker_arg;

static void *worker_main(void *p) {
    worker_arg wa = *(worker_arg *)p;
    nx__free(p);
    nx_pool *pool = wa.pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&pool->quit, memory_order_acquire)) {
            if (++spins < SPIN_ITERS) {
                /* On an oversubscribed machine the thread we wait for may need our core:
                 * give it up now and then instead of burning the whole time slice. */
                if ((spins & 255) == 0) sched_yield();
                else CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&pool->mu);
            while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->quit))
                pthread_cond_wait(&pool->cv, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->quit)) break;
        seen = g;
        pool->fn(wa.ith, pool->n, pool->arg);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

nx_pool *nx_pool_create(int n_threads) {
    if (n_threads <= 0) n_threads = nx__cpu_count();
    if (n_threads > 512) n_threads = 512;
    nx_pool *pool = nx__calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->n = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->quit, false);
    if (n_threads > 1) {
        pool->threads = nx__calloc((size_t)n_threads, sizeof(pthread_t));
        if (!pool->threads) { nx_pool_free(pool); return NULL; }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *wa = nx__malloc(sizeof *wa);
            if (!wa) { pool->n = i; nx_pool_free(pool); return NULL; }
            wa->pool = pool;
            wa->ith = i;
            if (pthread_create(&pool->threads[i], NULL, worker_main, wa) != 0) {
                nx__free(wa);
                pool->n = i;
                nx_pool_free(pool);
                return NULL;
            }
        }
    }
    return pool;
}

void nx_pool_free(nx_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->quit, true);
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 1; i < pool->n; i++)
        if (pool->threads) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    nx__free(pool->threads);
    nx__free(pool);
}

int nx_pool_size(const nx_pool *pool) { return pool ? pool->n : 1; }

void nx_pool_run(nx_pool *pool, nx_pool_fn fn, void *arg) {
    if (!pool || pool->n <= 1) {
        fn(0, 1, arg);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, pool->n - 1, memory_order_release);
    pthread_mutex_lock(&pool->mu);
    atomic_fetch_add_explicit(&pool->gen, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    fn(0, pool->n, arg);
    int spins = 0;
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) > 0) {
        if (++spins < SPIN_ITERS && (spins & 255) != 0) CPU_RELAX();
        else sched_yield();
    }
}

/* ---- nx_split ---------------------------------------------------------------------------- */

static uint64_t split_pack(uint32_t next, uint32_t end) { return (uint64_t)end << 32 | next; }

void nx__split_init(nx_split *s, int n, int nth) {
    int k = nth < 1 ? 1 : nth > NX_SPLIT_MAX ? NX_SPLIT_MAX : nth;
    s->n_shares = k;
    for (int i = 0; i < k; i++) {
        uint32_t a = (uint32_t)((int64_t)n * i / k), e = (uint32_t)((int64_t)n * (i + 1) / k);
        atomic_init(&s->share[i].range, split_pack(a, e));
    }
}

int nx__split_next(nx_split *s, int ith) {
    int k = s->n_shares, own = ith % k;
    /* own share: from the front */
    uint64_t r = atomic_load_explicit(&s->share[own].range, memory_order_relaxed);
    while ((uint32_t)r < (uint32_t)(r >> 32))
        if (atomic_compare_exchange_weak_explicit(&s->share[own].range, &r, r + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int)(uint32_t)r;
    /* the others': from the back, the next share after ours first */
    for (int d = 1; d < k; d++) {
        int v = (own + d) % k;
        r = atomic_load_explicit(&s->share[v].range, memory_order_relaxed);
        while ((uint32_t)r < (uint32_t)(r >> 32)) {
            uint32_t e = (uint32_t)(r >> 32) - 1;
            if (atomic_compare_exchange_weak_explicit(&s->share[v].range, &r, split_pack((uint32_t)r, e),
                                                      memory_order_relaxed, memory_order_relaxed))
                return (int)e;
        }
    }
    return -1;
}
