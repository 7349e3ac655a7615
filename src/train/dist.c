/*
 * dist.c - data-parallel training over MPI: process group, watchdog, and the gradient
 * reduction whose result does not depend on the number of processes.
 *
 * Design. Floating-point addition is not associative, so "allreduce the gradients" gives
 * bits that depend on how many ranks there are and on the MPI library's algorithm. We do
 * not use MPI's arithmetic at all. Each micro batch's gradient is computed into its own
 * zeroed buffer (also with one process), and the step's gradient is a fixed tree over
 * the global micro-batch index k (nx__dist_reduce_grads in dist.h): halving levels
 * g[i] += g[i + n/2] while the count is even, then a left fold. With the GPT-NeoX
 * assignment k = a*N + rank, the halving levels whose half-width is a multiple of N pair
 * two micro batches of the same rank, so they run locally; the remaining levels run
 * after an all-to-all in which rank s receives every partial's slice s of the parameter
 * vector, and the reduced slices are all-gathered. MPI only moves bytes. When A/N is a
 * power of two each rank sends one gradient's worth of data (the all-to-all) and receives
 * one (the all-gather): the same volume as a ring allreduce.
 *
 * Without MPI (NX_HAVE_MPI undefined) the group always has one rank and the same tree
 * runs locally, so a build without MPI trains the same bits.
 *
 * Failure. MPI's default error handler aborts the job on a communication error, and
 * Open MPI's launcher stops all ranks when one exits. A rank that hangs (stopped,
 * deadlocked, a lost network) would leave the others waiting forever in a collective, so
 * a watchdog thread ends the process when one collective has waited longer than the
 * timeout; its exit makes the launcher stop the job.
 */
#include "train/dist.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include <time.h>

#ifdef NX_HAVE_MPI
#include <mpi.h>
#endif

struct nx_dist {
    int rank, size;
    bool mpi;                 /* MPI_Init was called by us */
    double timeout;
    atomic_llong deadline_ms; /* watchdog: 0 = not inside a collective */
    atomic_int stop;
    bool watchdog;
    pthread_t wd;
    float *sendbuf, *recvbuf; /* all-to-all staging, grown on demand */
    size_t send_cap, recv_cap;
};

static long long now_ms(void) { return (long long)(nx_time_s() * 1000.0); }

bool nx_dist_available(void) {
#ifdef NX_HAVE_MPI
    return true;
#else
    return false;
#endif
}

int nx_dist_rank(const nx_dist *d) { return d ? d->rank : 0; }
int nx_dist_size(const nx_dist *d) { return d ? d->size : 1; }

/* Polls every 100 ms; ends the process when a collective has outlived its deadline. The
 * exit status (124, as timeout(1)) reaches the launcher, which then stops the other ranks. */
static void *watchdog_main(void *arg) {
    nx_dist *d = arg;
    while (!atomic_load(&d->stop)) {
        long long dl = atomic_load(&d->deadline_ms);
        if (dl && now_ms() > dl) {
            nx__log(NX_LOG_ERROR, "rank %d: a collective waited more than %.0f s for the other ranks (one is dead or "
                                  "stuck); ending the job (NEOX_DIST_TIMEOUT sets the limit)", d->rank, d->timeout);
            _exit(124);
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

#ifdef NX_HAVE_MPI
static void wd_enter(nx_dist *d) { if (d->watchdog) atomic_store(&d->deadline_ms, now_ms() + (long long)(d->timeout * 1000.0)); }
static void wd_leave(nx_dist *d) { if (d->watchdog) atomic_store(&d->deadline_ms, 0); }
#endif

/* Started by a launcher? (Open MPI, PMIx, MPICH/Hydra, Intel MPI.) */
static int launcher_size(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < NX_ARRAY_LEN(vars); i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    if (getenv("PMIX_RANK") || getenv("PMI_RANK")) return 2;   /* size unknown: assume a group */
    return 0;
}

nx_status nx_dist_init(int *argc, char ***argv, double timeout_s, nx_dist **out) {
    *out = NULL;
    nx_dist *d = nx__calloc(1, sizeof *d);
    if (!d) return nx__error(NX_ERR_NOMEM, "process group");
    d->size = 1;
    if (timeout_s <= 0) {
        const char *e = getenv("NEOX_DIST_TIMEOUT");
        timeout_s = e && *e ? strtod(e, NULL) : 600.0;
        if (!(timeout_s > 0)) timeout_s = 600.0;
    }
    d->timeout = timeout_s;
    int ls = launcher_size();
#ifdef NX_HAVE_MPI
    if (ls > 0) {
        int provided = 0;
        /* Only the main thread calls MPI (the pool's workers and the watchdog never do). */
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            nx__free(d);
            return nx__error(NX_ERR_IO, "MPI_Init_thread failed");
        }
        d->mpi = true;
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    }
#else
    (void)argc; (void)argv;
    if (ls > 1) {
        nx__free(d);
        return nx__error(NX_ERR_UNSUPPORTED, "started by an MPI launcher with %d processes, but this neox was built "
                                             "without MPI (rebuild with libopenmpi-dev installed and -DNX_MPI=ON)", ls);
    }
#endif
    if (d->size > 1) {
        if (pthread_create(&d->wd, NULL, watchdog_main, d) != 0) {
            nx_dist_finalize(d);
            return nx__error(NX_ERR_IO, "cannot start the collective watchdog thread");
        }
        d->watchdog = true;
    }
    *out = d;
    return NX_OK;
}

void nx_dist_abort(nx_dist *d, int code) {
#ifdef NX_HAVE_MPI
    if (d && d->mpi && d->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)d; (void)code;
#endif
}

void nx_dist_finalize(nx_dist *d) {
    if (!d) return;
    if (d->watchdog) {
        atomic_store(&d->stop, 1);
        pthread_join(d->wd, NULL);
    }
#ifdef NX_HAVE_MPI
    if (d->mpi) MPI_Finalize();
#endif
    nx__free_aligned(d->sendbuf);
    nx__free_aligned(d->recvbuf);
    nx__free(d);
}

bool nx_dist_any(nx_dist *d, bool flag) {
#ifdef NX_HAVE_MPI
    if (d && d->size > 1) {
        int in = flag, outv = 0;
        wd_enter(d);
        MPI_Allreduce(&in, &outv, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        wd_leave(d);
        return outv != 0;
    }
#else
    (void)d;
#endif
    return flag;
}

nx_status nx__dist_agree(nx_dist *d, nx_status st) {
#ifdef NX_HAVE_MPI
    if (d && d->size > 1) {
        /* The lowest failing rank, or size when all are fine. */
        int mine = st == NX_OK ? d->size : d->rank, first_bad = 0;
        wd_enter(d);
        MPI_Allreduce(&mine, &first_bad, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        wd_leave(d);
        if (st != NX_OK) return st;
        if (first_bad < d->size) return nx__error(NX_ERR_CANCELLED, "rank %d failed (see its message)", first_bad);
    }
#else
    (void)d;
#endif
    return st;
}

/* ---- the fixed reduction tree ----------------------------------------------------------- */
/* Pair additions x[k] += y[k] over the nodes of one tree level, or a left fold. */
typedef struct {
    float *const *v;
    int n;
    bool fold;    /* v[0] += v[1], += v[2], ... ; else v[i] = v[2i] + v[2i+1] for i < n/2 */
    size_t len;
} add_job;

static void add_worker(int ith, int nth, void *arg) {
    const add_job *j = arg;
    /* Split in 64-float blocks so threads never share a cache line; any split gives the same bits. */
    size_t nb = (j->len + 63) / 64;
    size_t a = nb * (size_t)ith / (size_t)nth * 64, b = NX_MIN(nb * (size_t)(ith + 1) / (size_t)nth * 64, j->len);
    if (!j->fold) {
        for (int i = 0; i < j->n / 2; i++) {
            float *x = j->v[2 * i];
            const float *y = j->v[2 * i + 1];
            for (size_t k = a; k < b; k++) x[k] += y[k];
        }
    } else {
        float *x = j->v[0];
        for (int i = 1; i < j->n; i++) {
            const float *y = j->v[i];
            for (size_t k = a; k < b; k++) x[k] += y[k];
        }
    }
}

static void run_add(nx_pool *pool, float *const *v, int n, bool fold, size_t len) {
    add_job j = {v, n, fold, len};
    if (len * (size_t)n < (1u << 16)) add_worker(0, 1, &j);
    else nx_pool_run(pool, add_worker, &j);
}

/* Finishes the tree over nodes v[0..n-1] into v[0] (the node pointers are rearranged). */
static void tree_finish(nx_pool *pool, float **v, int n, size_t len) {
    while (n > 1) {
        if (n % 2) { run_add(pool, v, n, true, len); break; }
        run_add(pool, v, n, false, len);
        for (int i = 0; i < n / 2; i++) v[i] = v[2 * i];
        n /= 2;
    }
}

/* The cross-rank levels: v[0..c-1] are this rank's nodes (global node index rank*c + a) of
 * a level with N*c nodes. Leaves the full sum in v[0] on every rank. */
static nx_status exchange_finish(nx_dist *d, nx_pool *pool, float **v, int c, size_t n, double *comm_s) {
    int N = nx_dist_size(d);
    if (N == 1) {
        tree_finish(pool, v, c, n);
        return NX_OK;
    }
#ifdef NX_HAVE_MPI
    /* Slice s of the vector is [off(s), off(s+1)), 16-float aligned. */
    int r = d->rank;
#define OFF(s) ((s) == N ? n : (n * (size_t)(s) / (size_t)N) & ~(size_t)15)
    size_t lr = OFF(r + 1) - OFF(r);
    if ((size_t)c * n > (size_t)INT32_MAX)
        return nx__error(NX_ERR_RANGE, "gradient exchange of %zu floats exceeds MPI's int counts", (size_t)c * n);
    int *sc = nx__malloc(4 * (size_t)N * sizeof(int));
    if (!sc) return nx__error(NX_ERR_NOMEM, "gradient exchange");
    int *sd = sc + N, *rc = sc + 2 * N, *rd = sc + 3 * N;
    const float *send = v[0];
    if (c > 1) {
        /* Pack: destination s gets c consecutive pieces (node a) of slice s. */
        if (d->send_cap < (size_t)c * n) {
            nx__free_aligned(d->sendbuf);
            d->sendbuf = nx__malloc_aligned((size_t)c * n * sizeof(float));
            d->send_cap = d->sendbuf ? (size_t)c * n : 0;
            if (!d->sendbuf) { nx__free(sc); return nx__error(NX_ERR_NOMEM, "gradient exchange buffer"); }
        }
        for (int s = 0; s < N; s++) {
            size_t o = OFF(s), l = OFF(s + 1) - o;
            for (int a = 0; a < c; a++) memcpy(d->sendbuf + (size_t)c * o + (size_t)a * l, v[a] + o, l * sizeof(float));
        }
        send = d->sendbuf;
    }
    size_t need = (size_t)N * (size_t)c * lr;
    if (d->recv_cap < need) {
        nx__free_aligned(d->recvbuf);
        d->recvbuf = nx__malloc_aligned((need ? need : 1) * sizeof(float));
        d->recv_cap = d->recvbuf ? need : 0;
        if (!d->recvbuf) { nx__free(sc); return nx__error(NX_ERR_NOMEM, "gradient exchange buffer"); }
    }
    for (int s = 0; s < N; s++) {
        size_t o = OFF(s), l = OFF(s + 1) - o;
        sc[s] = (int)((size_t)c * l);
        sd[s] = (int)(c > 1 ? (size_t)c * o : o);
        rc[s] = (int)((size_t)c * lr);
        rd[s] = (int)((size_t)s * (size_t)c * lr);
    }
    double t0 = nx_time_s();
    wd_enter(d);
    int e = MPI_Alltoallv(send, sc, sd, MPI_FLOAT, d->recvbuf, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
    wd_leave(d);
    *comm_s += nx_time_s() - t0;
    if (e != MPI_SUCCESS) { nx__free(sc); return nx__error(NX_ERR_IO, "MPI_Alltoallv failed (%d)", e); }
    /* The remaining levels on this rank's slice: node q*c + a is piece a from rank q, which
     * is exactly the receive order. */
    float **w = nx__malloc((size_t)c * (size_t)N * sizeof(float *));
    if (!w) { nx__free(sc); return nx__error(NX_ERR_NOMEM, "gradient exchange"); }
    for (int i = 0; i < c * N; i++) w[i] = d->recvbuf + (size_t)i * lr;
    tree_finish(pool, w, c * N, lr);
    memcpy(v[0] + OFF(r), w[0], lr * sizeof(float));
    nx__free(w);
    for (int s = 0; s < N; s++) {
        rc[s] = (int)(OFF(s + 1) - OFF(s));
        rd[s] = (int)OFF(s);
    }
    t0 = nx_time_s();
    wd_enter(d);
    e = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, v[0], rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
    wd_leave(d);
    *comm_s += nx_time_s() - t0;
    nx__free(sc);
#undef OFF
    if (e != MPI_SUCCESS) return nx__error(NX_ERR_IO, "MPI_Allgatherv failed (%d)", e);
    return NX_OK;
#else
    (void)pool; (void)v; (void)c; (void)n; (void)comm_s;
    return nx__error(NX_ERR_INTERNAL, "a %d-rank group in a build without MPI", N);
#endif
}

/* Levels that stay inside one rank's block of c leaves: while c is even. */
static int local_levels(int c) {
    int L = 0;
    while (c % 2 == 0) { c /= 2; L++; }
    return L;
}

nx_status nx__dist_reduce_grads(nx_dist *d, nx_pool *pool, float **v, int A, size_t n, double *comm_s) {
    int N = nx_dist_size(d);
    if (A <= 0 || A % N) return nx__error(NX_ERR_INVALID_ARG, "%d micro batches do not split over %d ranks", A, N);
    int c = A / N;
    for (int L = local_levels(c); L > 0; L--) {
        run_add(pool, v, c, false, n);
        for (int i = 0; i < c / 2; i++) v[i] = v[2 * i];
        c /= 2;
    }
    return exchange_finish(d, pool, v, c, n, comm_s);
}

/* ---- streaming accumulator ------------------------------------------------------------------ */
#define ACC_MAX_BUFS 96

struct nx_grad_acc {
    nx_dist *d;
    int c, L;                  /* leaves per rank; local levels */
    bool fold_local;           /* one rank: the final left fold also streams (1 node kept) */
    size_t n;
    float *bufs[ACC_MAX_BUFS]; /* every buffer ever allocated (bufs[0] = the caller's) */
    bool busy[ACC_MAX_BUFS];
    int nbufs;
    float *stack[40];          /* binary counter: one pending node per level below L */
    int level[40], depth;
    float **done;              /* completed level-L nodes, in order (c >> L of them) */
    int ndone, pushed;
};

nx_status nx__grad_acc_create(nx_dist *d, int A, size_t n, float *first, nx_grad_acc **out) {
    *out = NULL;
    int N = nx_dist_size(d);
    if (A <= 0 || A % N) return nx__error(NX_ERR_INVALID_ARG, "%d micro batches do not split over %d ranks", A, N);
    nx_grad_acc *g = nx__calloc(1, sizeof *g);
    if (!g) return nx__error(NX_ERR_NOMEM, "gradient accumulator");
    g->d = d;
    g->c = A / N;
    g->L = local_levels(g->c);
    g->n = n;
    g->fold_local = N == 1;
    if (!g->fold_local && (g->c >> g->L) + g->L + 2 > ACC_MAX_BUFS) {
        nx__free(g);
        return nx__error(NX_ERR_RANGE, "%d micro batches per rank need %d gradient buffers (limit %d): use a "
                                       "power-of-two multiple", g->c, (g->c >> g->L) + g->L + 2, ACC_MAX_BUFS);
    }
    g->done = nx__calloc((size_t)(g->c >> g->L), sizeof(float *));
    if (!g->done) { nx__free(g); return nx__error(NX_ERR_NOMEM, "gradient accumulator"); }
    g->bufs[0] = first;
    g->nbufs = 1;
    *out = g;
    return NX_OK;
}

void nx__grad_acc_free(nx_grad_acc *g) {
    if (!g) return;
    for (int i = 1; i < g->nbufs; i++) nx__free_aligned(g->bufs[i]);
    nx__free(g->done);
    nx__free(g);
}

int nx__grad_acc_buffers(const nx_grad_acc *g) { return g->nbufs; }

static void release(nx_grad_acc *g, float *b) {
    for (int i = 0; i < g->nbufs; i++)
        if (g->bufs[i] == b) g->busy[i] = false;
}

float *nx__grad_acc_next(nx_grad_acc *g) {
    if (g->pushed == 0 && g->ndone == 0 && g->depth == 0)
        for (int i = 0; i < g->nbufs; i++) g->busy[i] = false;   /* a new step: the last result is free */
    for (int i = 0; i < g->nbufs; i++)
        if (!g->busy[i]) { g->busy[i] = true; return g->bufs[i]; }
    if (g->nbufs == ACC_MAX_BUFS) { nx__error(NX_ERR_INTERNAL, "gradient accumulator: out of buffers"); return NULL; }
    float *b = nx__malloc_aligned(g->n * sizeof(float));
    if (!b) { nx__error(NX_ERR_NOMEM, "gradient buffer of %zu floats", g->n); return NULL; }
    g->bufs[g->nbufs] = b;
    g->busy[g->nbufs++] = true;
    return b;
}

void nx__grad_acc_push(nx_grad_acc *g, nx_pool *pool, float *b) {
    int lvl = 0;
    /* Adjacent pairs combine as soon as both exist: node = left + right (IEEE addition is
     * commutative, so adding into either buffer gives the same bits). */
    while (lvl < g->L && g->depth > 0 && g->level[g->depth - 1] == lvl) {
        float *left = g->stack[--g->depth];
        float *pair[2] = {left, b};
        run_add(pool, pair, 2, false, g->n);
        release(g, b);
        b = left;
        lvl++;
    }
    if (lvl < g->L) {
        g->stack[g->depth] = b;
        g->level[g->depth++] = lvl;
    } else if (g->fold_local && g->ndone > 0) {
        /* One rank: the nodes left at level L (an odd count) are summed by the left fold
         * node 0 += node 1, += node 2, ..., which can run as each node completes. */
        float *pair[2] = {g->done[0], b};
        run_add(pool, pair, 2, false, g->n);
        release(g, b);
        g->ndone++;
    } else {
        g->done[g->ndone++] = b;
    }
    g->pushed++;
}

nx_status nx__grad_acc_finish(nx_grad_acc *g, nx_pool *pool, float **result, double *comm_s) {
    *result = NULL;
    if (g->pushed != g->c || g->depth != 0 || g->ndone != (g->c >> g->L))
        return nx__error(NX_ERR_INTERNAL, "gradient accumulator: %d of %d micro batches pushed", g->pushed, g->c);
    int nd = g->fold_local ? 1 : g->ndone;   /* folded already: one node */
    g->pushed = 0;
    g->ndone = 0;
    NX_TRY(exchange_finish(g->d, pool, g->done, nd, g->n, comm_s));
    for (int i = 1; i < nd; i++) release(g, g->done[i]);
    *result = g->done[0];
    return NX_OK;
}

nx_status nx__dist_gather_losses(nx_dist *d, const float *local, int A, float *all, double *comm_s) {
    int N = nx_dist_size(d);
    if (N == 1) {
        if (all != local) memmove(all, local, (size_t)A * sizeof(float));
        return NX_OK;
    }
#ifdef NX_HAVE_MPI
    int c = A / N;
    float *buf = nx__malloc((size_t)c * sizeof(float));
    if (!buf) return nx__error(NX_ERR_NOMEM, "loss gather");
    memcpy(buf, local, (size_t)c * sizeof(float));
    double t0 = nx_time_s();
    wd_enter(d);
    /* Rank q's values are micro batches q*c .. q*c + c - 1: rank order is k order. */
    int e = MPI_Allgather(buf, c, MPI_FLOAT, all, c, MPI_FLOAT, MPI_COMM_WORLD);
    wd_leave(d);
    *comm_s += nx_time_s() - t0;
    nx__free(buf);
    if (e != MPI_SUCCESS) return nx__error(NX_ERR_IO, "MPI_Allgather failed (%d)", e);
    return NX_OK;
#else
    (void)local; (void)all; (void)comm_s;
    return nx__error(NX_ERR_INTERNAL, "a %d-rank group in a build without MPI", N);
#endif
}
