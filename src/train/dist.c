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
typedef struct {
    float *const *v;
    int h;        /* halving: v[i] += v[i + h] for i < h; fold (h < 0): v[0] += v[1..n-1] */
    int n;
    size_t len;
} add_job;

static void add_worker(int ith, int nth, void *arg) {
    const add_job *j = arg;
    /* Split in 64-float blocks so threads never share a cache line; any split gives the same bits. */
    size_t nb = (j->len + 63) / 64;
    size_t a = nb * (size_t)ith / (size_t)nth * 64, b = NX_MIN(nb * (size_t)(ith + 1) / (size_t)nth * 64, j->len);
    if (j->h > 0) {
        for (int i = 0; i < j->h; i++) {
            float *x = j->v[i];
            const float *y = j->v[i + j->h];
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

static void run_add(nx_pool *pool, float *const *v, int h, int n, size_t len) {
    add_job j = {v, h, n, len};
    if (len * (size_t)(h > 0 ? h : n) < (1u << 15)) add_worker(0, 1, &j);
    else nx_pool_run(pool, add_worker, &j);
}

/* Finishes the tree over v[0..n-1] (global indices 0..n-1) into v[0]. */
static void tree_finish(nx_pool *pool, float **v, int n, size_t len) {
    while (n > 1) {
        if (n % 2 == 0) { run_add(pool, v, n / 2, n, len); n /= 2; }
        else { run_add(pool, v, -1, n, len); n = 1; }
    }
}

nx_status nx__dist_reduce_grads(nx_dist *d, nx_pool *pool, float **v, int A, size_t n, double *comm_s) {
    int N = nx_dist_size(d);
    if (A <= 0 || A % N) return nx__error(NX_ERR_INVALID_ARG, "%d micro batches do not split over %d ranks", A, N);
    /* Local levels: halving with a half-width that is a multiple of N. */
    int cnt = A, c = A / N;
    while (cnt % 2 == 0 && (cnt / 2) % N == 0) {
        run_add(pool, v, c / 2, c, n);
        cnt /= 2;
        c /= 2;
    }
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
        /* Pack: destination s gets c consecutive pieces (local index a) of slice s. */
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
    /* Remaining levels on this rank's slice: global index a*N + q is piece a from rank q. */
    float **w = nx__malloc((size_t)c * (size_t)N * sizeof(float *));
    if (!w) { nx__free(sc); return nx__error(NX_ERR_NOMEM, "gradient exchange"); }
    for (int q = 0; q < N; q++)
        for (int a = 0; a < c; a++) w[a * N + q] = d->recvbuf + ((size_t)q * (size_t)c + (size_t)a) * lr;
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
    (void)comm_s;
    return nx__error(NX_ERR_INTERNAL, "a %d-rank group in a build without MPI", N);
#endif
}

nx_status nx__dist_gather_losses(nx_dist *d, const float *local, int A, float *all, double *comm_s) {
    int N = nx_dist_size(d);
    if (N == 1) {
        if (all != local) memmove(all, local, (size_t)A * sizeof(float));
        return NX_OK;
    }
#ifdef NX_HAVE_MPI
    int c = A / N;
    float *buf = nx__malloc((size_t)A * sizeof(float));
    if (!buf) return nx__error(NX_ERR_NOMEM, "loss gather");
    double t0 = nx_time_s();
    wd_enter(d);
    int e = MPI_Allgather(local, c, MPI_FLOAT, buf, c, MPI_FLOAT, MPI_COMM_WORLD);
    wd_leave(d);
    *comm_s += nx_time_s() - t0;
    if (e != MPI_SUCCESS) { nx__free(buf); return nx__error(NX_ERR_IO, "MPI_Allgather failed (%d)", e); }
    for (int q = 0; q < N; q++)
        for (int a = 0; a < c; a++) all[a * N + q] = buf[q * c + a];
    nx__free(buf);
    return NX_OK;
#else
    (void)local; (void)all; (void)comm_s;
    return nx__error(NX_ERR_INTERNAL, "a %d-rank group in a build without MPI", N);
#endif
}
