/*
 * dist.c - data-parallel training over MPI: process group, watchdog, and the gradient
 * reduction whose result does not depend on the number of processes.
 *
 * Design. Floating-point addition is not associative, so "allreduce the gradients" gives
 * bits that depend on how many ranks there are and on the MPI library's algorithm. We do
 * not use MPI's arithmetic at all. Each micro batch's gradient is computed into its own
 * zeroed buffer (also with one process), and the step's gradient is a fixed tree over
 * the global micro-batch index k (dist.h): adjacent pairs while the node count is even,
 * then a left fold. Rank r trains the contiguous block of micro batches r*c .. r*c + c - 1,
 * so the levels at which c is still even run locally, streaming as each micro batch
 * finishes; the remaining levels run on slices: rank s receives slice s of every other
 * rank's remaining nodes (point-to-point, posted in a fixed pattern), adds them in the
 * tree's order, and the reduced slices are all-gathered. MPI only moves bytes. When A/N is
 * a power of two each rank sends one gradient's worth of data and receives one in the
 * all-gather: the same volume as a ring allreduce.
 *
 * Overlap. The tree's shape is known before a micro batch's values are, so its additions
 * can run range by range as the backward pass completes the flat gradient from the end
 * (nx__tmodel_set_grad_hook), and during a rank's last micro batch each slice is sent as
 * soon as it is final. Each element still sees the same additions in the same order.
 *
 * ZeRO stage 1. The slices are also the shards of the optimizer state: with it, a rank
 * keeps the AdamW moments of its slice only, skips the gradient all-gather, computes the
 * norm's per-chunk partial sums of its slice (slice boundaries are multiples of the norm
 * chunk, so every rank adds the same partials in the same order), updates its slice of the
 * weights, and the weights are all-gathered instead.
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
#include "train/train_internal.h"

#include <math.h>
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
    float *sendbuf, *recvbuf; /* exchange staging, grown on demand */
    size_t send_cap, recv_cap;
    /* The exchange in flight (xchg_*): this rank's nd nodes of an n-float vector; slices
     * s >= next_send have been sent; nreq MPI requests outstanding. */
    float **nodes;
    int nd, next_send, nreq;
    size_t n;
    nx_status xst;            /* first error of a send started from the backward hook */
    void *req;                /* MPI_Request[2N] */
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
    nx__free(d->req);
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
/* Pair additions x[k] += y[k] over the nodes of one tree level, or a left fold, for the
 * elements k in [lo, hi). */
typedef struct {
    float *const *v;
    int n;
    bool fold;    /* v[0] += v[1], += v[2], ... ; else v[i] = v[2i] + v[2i+1] for i < n/2 */
    size_t lo, hi;
} add_job;

static void add_worker(int ith, int nth, void *arg) {
    const add_job *j = arg;
    /* Split in 64-float blocks so threads never share a cache line; any split gives the same bits. */
    size_t len = j->hi - j->lo, nb = (len + 63) / 64;
    size_t a = j->lo + nb * (size_t)ith / (size_t)nth * 64;
    size_t b = j->lo + NX_MIN(nb * (size_t)(ith + 1) / (size_t)nth * 64, len);
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

static void run_add(nx_pool *pool, float *const *v, int n, bool fold, size_t lo, size_t hi) {
    add_job j = {v, n, fold, lo, hi};
    if ((hi - lo) * (size_t)n < (1u << 16)) add_worker(0, 1, &j);
    else nx_pool_run(pool, add_worker, &j);
}

/* Finishes the tree over nodes v[0..n-1] into v[0] (the node pointers are rearranged). */
static void tree_finish(nx_pool *pool, float **v, int n, size_t len) {
    while (n > 1) {
        if (n % 2) { run_add(pool, v, n, true, 0, len); break; }
        run_add(pool, v, n, false, 0, len);
        for (int i = 0; i < n / 2; i++) v[i] = v[2 * i];
        n /= 2;
    }
}

/* ---- slices and the exchange ------------------------------------------------------------- */
/* Rank s owns [slice_off(s), slice_off(s + 1)) of an n-float vector: boundaries on multiples
 * of NX_NORM_CHUNK, so that the gradient-norm chunks of a ZeRO shard are whole (a small
 * model may leave some ranks an empty slice). */
static size_t slice_off(size_t n, int s, int N) {
    if (s >= N) return n;
    return n * (size_t)s / (size_t)N / NX_NORM_CHUNK * NX_NORM_CHUNK;
}

void nx__dist_slice(const nx_dist *d, size_t n, size_t *lo, size_t *hi) {
    int N = nx_dist_size(d), r = nx_dist_rank(d);
    *lo = slice_off(n, r, N);
    *hi = slice_off(n, r + 1, N);
}

#ifdef NX_HAVE_MPI
#define XCHG_TAG 7301

static bool grow(float **buf, size_t *cap, size_t need) {
    if (*buf && *cap >= need) return true;   /* an empty slice still gets a real pointer */
    nx__free_aligned(*buf);
    *buf = nx__malloc_aligned((need ? need : 1) * sizeof(float));
    *cap = *buf ? need : 0;
    return *buf != NULL;
}

/* Per-rank counts and displacements of the slices of an n-float vector, for the v-collectives;
 * chunks = true: in gradient-norm chunks instead of floats. */
static nx_status slice_counts(const nx_dist *d, size_t n, bool chunks, int **out) {
    int N = d->size;
    if (n > (size_t)INT32_MAX) return nx__error(NX_ERR_RANGE, "%zu floats exceed MPI's int counts", n);
    int *c = nx__malloc(2 * (size_t)N * sizeof(int));
    if (!c) return nx__error(NX_ERR_NOMEM, "slice table");
    size_t nchunks = (n + NX_NORM_CHUNK - 1) / NX_NORM_CHUNK;
    for (int s = 0; s < N; s++) {
        size_t a = slice_off(n, s, N), b = slice_off(n, s + 1, N);
        if (chunks) { a /= NX_NORM_CHUNK; b = s + 1 == N ? nchunks : b / NX_NORM_CHUNK; }
        c[s] = (int)(b - a);
        c[N + s] = (int)a;
    }
    *out = c;
    return NX_OK;
}
#endif

/* The cross-rank levels, in three calls so that the sends can follow the backward pass:
 * xchg_start posts the receives of this rank's slice; xchg_ready(lo) sends every slice that
 * lies wholly in [lo, n) (final there) to its owner and lets MPI progress; xchg_finish
 * waits, runs the remaining tree levels on this rank's slice (node q*nd + a is piece a from
 * rank q, the receive order) into nodes[0], and all-gathers the slices when `gather`. The
 * nodes must not change from xchg_ready to xchg_finish. Needs d->size > 1. */
static nx_status xchg_start(nx_dist *d, float **nodes, int nd, size_t n, double *comm_s) {
#ifdef NX_HAVE_MPI
    int N = d->size, r = d->rank;
    size_t lr = slice_off(n, r + 1, N) - slice_off(n, r, N);
    if ((size_t)nd * n > (size_t)INT32_MAX)
        return nx__error(NX_ERR_RANGE, "gradient exchange of %zu floats exceeds MPI's int counts", (size_t)nd * n);
    if (!d->req && !(d->req = nx__calloc(2 * (size_t)N, sizeof(MPI_Request))))
        return nx__error(NX_ERR_NOMEM, "gradient exchange");
    if ((nd > 1 && !grow(&d->sendbuf, &d->send_cap, (size_t)nd * n)) ||
        !grow(&d->recvbuf, &d->recv_cap, (size_t)N * (size_t)nd * lr))
        return nx__error(NX_ERR_NOMEM, "gradient exchange buffer");
    d->nodes = nodes;
    d->nd = nd;
    d->n = n;
    d->next_send = N;
    d->nreq = 0;
    d->xst = NX_OK;
    MPI_Request *req = d->req;
    double t0 = nx_time_s();
    for (int q = 0; q < N; q++) {
        if (q == r) continue;
        int e = MPI_Irecv(d->recvbuf + (size_t)q * (size_t)nd * lr, (int)((size_t)nd * lr), MPI_FLOAT, q, XCHG_TAG,
                          MPI_COMM_WORLD, &req[d->nreq++]);
        if (e != MPI_SUCCESS) return nx__error(NX_ERR_IO, "MPI_Irecv failed (%d)", e);
    }
    *comm_s += nx_time_s() - t0;
    return NX_OK;
#else
    (void)nodes; (void)nd; (void)n; (void)comm_s;
    return nx__error(NX_ERR_INTERNAL, "a %d-rank group in a build without MPI", d->size);
#endif
}

static void xchg_ready(nx_dist *d, size_t lo, double *comm_s) {
#ifdef NX_HAVE_MPI
    int N = d->size, r = d->rank, nd = d->nd;
    size_t n = d->n, lr = slice_off(n, r + 1, N) - slice_off(n, r, N);
    MPI_Request *req = d->req;
    double t = 0;
    while (d->next_send > 0 && slice_off(n, d->next_send - 1, N) >= lo) {
        int s = --d->next_send;
        size_t o = slice_off(n, s, N), l = slice_off(n, s + 1, N) - o;
        if (s == r) {
            for (int a = 0; a < nd; a++)
                memcpy(d->recvbuf + ((size_t)r * (size_t)nd + (size_t)a) * lr, d->nodes[a] + o, l * sizeof(float));
            continue;
        }
        const float *src = d->nodes[0] + o;
        if (nd > 1) {   /* pack: rank s gets the nd pieces of its slice back to back */
            float *dst = d->sendbuf + (size_t)nd * o;
            for (int a = 0; a < nd; a++) memcpy(dst + (size_t)a * l, d->nodes[a] + o, l * sizeof(float));
            src = dst;
        }
        double t0 = nx_time_s();
        int e = MPI_Isend(src, (int)((size_t)nd * l), MPI_FLOAT, s, XCHG_TAG, MPI_COMM_WORLD, &req[d->nreq++]);
        t += nx_time_s() - t0;
        if (e != MPI_SUCCESS && d->xst == NX_OK) d->xst = nx__error(NX_ERR_IO, "MPI_Isend failed (%d)", e);
    }
    if (d->nreq > 0 && lo > 0) {
        /* Without a progress thread, MPI moves the data of large messages only inside MPI
         * calls: test once per finished range so the transfer advances during backward. */
        int flag = 0;
        double t0 = nx_time_s();
        MPI_Testall(d->nreq, req, &flag, MPI_STATUSES_IGNORE);
        t += nx_time_s() - t0;
    }
    *comm_s += t;
#else
    (void)d; (void)lo; (void)comm_s;
#endif
}

static nx_status xchg_finish(nx_dist *d, nx_pool *pool, bool gather, double *comm_s) {
#ifdef NX_HAVE_MPI
    int N = d->size, r = d->rank, nd = d->nd;
    size_t n = d->n, o = slice_off(n, r, N), lr = slice_off(n, r + 1, N) - o;
    if (d->next_send > 0) return nx__error(NX_ERR_INTERNAL, "gradient exchange finished before every slice was sent");
    double t0 = nx_time_s();
    wd_enter(d);
    int e = MPI_Waitall(d->nreq, d->req, MPI_STATUSES_IGNORE);
    wd_leave(d);
    *comm_s += nx_time_s() - t0;
    d->nreq = 0;
    if (d->xst != NX_OK) return d->xst;
    if (e != MPI_SUCCESS) return nx__error(NX_ERR_IO, "MPI_Waitall failed (%d)", e);
    float **w = nx__malloc((size_t)nd * (size_t)N * sizeof(float *));
    if (!w) return nx__error(NX_ERR_NOMEM, "gradient exchange");
    for (int i = 0; i < nd * N; i++) w[i] = d->recvbuf + (size_t)i * lr;
    tree_finish(pool, w, nd * N, lr);
    memcpy(d->nodes[0] + o, w[0], lr * sizeof(float));
    nx__free(w);
    return gather ? nx__dist_allgather_slices(d, d->nodes[0], n, comm_s) : NX_OK;
#else
    (void)pool; (void)gather; (void)comm_s;
    return nx__error(NX_ERR_INTERNAL, "a %d-rank group in a build without MPI", d->size);
#endif
}

nx_status nx__dist_allgather_slices(nx_dist *d, float *v, size_t n, double *comm_s) {
    if (nx_dist_size(d) == 1) return NX_OK;
#ifdef NX_HAVE_MPI
    int *c = NULL;
    NX_TRY(slice_counts(d, n, false, &c));
    double t0 = nx_time_s();
    wd_enter(d);
    int e = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, v, c, c + d->size, MPI_FLOAT, MPI_COMM_WORLD);
    wd_leave(d);
    *comm_s += nx_time_s() - t0;
    nx__free(c);
    return e == MPI_SUCCESS ? NX_OK : nx__error(NX_ERR_IO, "MPI_Allgatherv failed (%d)", e);
#else
    (void)v; (void)n; (void)comm_s;
    return nx__error(NX_ERR_INTERNAL, "a multi-rank group in a build without MPI");
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
        run_add(pool, v, c, false, 0, n);
        for (int i = 0; i < c / 2; i++) v[i] = v[2 * i];
        c /= 2;
    }
    if (N == 1) {
        tree_finish(pool, v, c, n);
        return NX_OK;
    }
    NX_TRY(xchg_start(d, v, c, n, comm_s));
    xchg_ready(d, 0, comm_s);
    return xchg_finish(d, pool, true, comm_s);
}

/* ---- streaming accumulator ------------------------------------------------------------------ */
#define ACC_MAX_BUFS 96

struct nx_grad_acc {
    nx_dist *d;
    int c, L;                  /* leaves per rank; local levels */
    bool fold_local;           /* one rank: the final left fold also streams (1 node kept) */
    bool shard_only;           /* finish reduces this rank's slice only (ZeRO) */
    size_t n;
    float *bufs[ACC_MAX_BUFS]; /* every buffer ever allocated (bufs[0] = the caller's) */
    bool busy[ACC_MAX_BUFS];
    int nbufs;
    float *stack[40];          /* binary counter: one pending node per level below L */
    int level[40], depth;
    float **done;              /* completed level-L nodes, in order (c >> L of them) */
    int ndone, pushed;
    /* The micro batch in progress (begin .. ready(0)): its additions ax[i] += ay[i] in
     * order, done for the elements [wm, n) so far; `last`: the exchange follows it. */
    float *ax[42], *ay[42];
    int nadd;
    size_t wm;
    bool active, last;
    double comm_s;             /* MPI time of sends started during the backward pass */
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

void nx__grad_acc_shard_only(nx_grad_acc *g, bool on) { g->shard_only = on; }

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
    if (g->active) { nx__error(NX_ERR_INTERNAL, "gradient accumulator: the last micro batch is not complete"); return NULL; }
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

nx_status nx__grad_acc_begin(nx_grad_acc *g, float *b) {
    if (g->active || g->pushed == g->c) return nx__error(NX_ERR_INTERNAL, "gradient accumulator: micro batch out of turn");
    /* The tree's place of this node is known before its values are: plan the additions
     * now (bookkeeping only; no buffer is handed out again before ready(0)). Adjacent pairs
     * combine as soon as both exist: node = left + right (IEEE addition is commutative, so
     * adding into either buffer gives the same bits). */
    int lvl = 0;
    g->nadd = 0;
    while (lvl < g->L && g->depth > 0 && g->level[g->depth - 1] == lvl) {
        float *left = g->stack[--g->depth];
        g->ax[g->nadd] = left;
        g->ay[g->nadd++] = b;
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
        g->ax[g->nadd] = g->done[0];
        g->ay[g->nadd++] = b;
        release(g, b);
        g->ndone++;
    } else {
        g->done[g->ndone++] = b;
    }
    g->pushed++;
    g->wm = g->n;
    g->active = true;
    g->last = g->pushed == g->c && !g->fold_local;
    return g->last ? xchg_start(g->d, g->done, g->ndone, g->n, &g->comm_s) : NX_OK;
}

void nx__grad_acc_ready(nx_grad_acc *g, nx_pool *pool, size_t lo) {
    if (!g->active || lo >= g->wm) return;
    for (int i = 0; i < g->nadd; i++) {
        float *pair[2] = {g->ax[i], g->ay[i]};
        run_add(pool, pair, 2, false, lo, g->wm);
    }
    g->wm = lo;
    if (g->last) xchg_ready(g->d, lo, &g->comm_s);
    if (lo == 0) g->active = false;
}

nx_status nx__grad_acc_push(nx_grad_acc *g, nx_pool *pool, float *b) {
    NX_TRY(nx__grad_acc_begin(g, b));
    nx__grad_acc_ready(g, pool, 0);
    return NX_OK;
}

nx_status nx__grad_acc_finish(nx_grad_acc *g, nx_pool *pool, float **result, double *comm_s) {
    *result = NULL;
    if (g->pushed != g->c || g->active || g->depth != 0 || g->ndone != (g->c >> g->L))
        return nx__error(NX_ERR_INTERNAL, "gradient accumulator: %d of %d micro batches pushed", g->pushed, g->c);
    int nd = g->fold_local ? 1 : g->ndone;   /* folded already: one node */
    g->pushed = 0;
    g->ndone = 0;
    *comm_s += g->comm_s;
    g->comm_s = 0;
    if (!g->fold_local) NX_TRY(xchg_finish(g->d, pool, !g->shard_only, comm_s));
    for (int i = 1; i < nd; i++) release(g, g->done[i]);
    *result = g->done[0];
    return NX_OK;
}

/* ---- ZeRO stage 1: the optimizer state of this rank's slice ------------------------------ */
struct nx_zero {
    nx_dist *d;
    size_t n, lo, hi;
    float *mom[2];          /* AdamW m and v of [lo, hi) */
    double *partials;       /* gradient-norm sums of squares of every chunk */
    long nchunks;
};

nx_status nx__zero_create(nx_dist *d, size_t n, nx_zero **out) {
    *out = NULL;
    nx_zero *z = nx__calloc(1, sizeof *z);
    if (!z) return nx__error(NX_ERR_NOMEM, "optimizer shard");
    z->d = d;
    z->n = n;
    nx__dist_slice(d, n, &z->lo, &z->hi);
    z->nchunks = (long)((n + NX_NORM_CHUNK - 1) / NX_NORM_CHUNK);
    size_t len = z->hi - z->lo;
    for (int w = 0; w < 2; w++) {
        z->mom[w] = nx__malloc_aligned((len ? len : 1) * sizeof(float));
        if (z->mom[w]) memset(z->mom[w], 0, len * sizeof(float));
    }
    z->partials = nx__calloc((size_t)z->nchunks + 1, sizeof(double));
    if (!z->mom[0] || !z->mom[1] || !z->partials) {
        nx__zero_free(z);
        return nx__error(NX_ERR_NOMEM, "optimizer shard of 2 x %zu floats", len);
    }
    *out = z;
    return NX_OK;
}

void nx__zero_free(nx_zero *z) {
    if (!z) return;
    nx__free_aligned(z->mom[0]);
    nx__free_aligned(z->mom[1]);
    nx__free(z->partials);
    nx__free(z);
}

void nx__zero_range(const nx_zero *z, size_t *lo, size_t *hi) { *lo = z->lo; *hi = z->hi; }
float *nx__zero_moment(nx_zero *z, int which) { return z->mom[which != 0]; }

nx_status nx__zero_step(nx_zero *z, nx_tmodel *m, nx_pool *pool, const nx_adamw_config *opt, double lr,
                        float *grad_norm, double *comm_s) {
    nx_dist *d = z->d;
    long c0 = (long)(z->lo / NX_NORM_CHUNK), c1 = z->hi == z->n ? z->nchunks : (long)(z->hi / NX_NORM_CHUNK);
    nx__tmodel_grad_sumsq(m, pool, c0, c1, z->partials);
#ifdef NX_HAVE_MPI
    if (nx_dist_size(d) > 1) {
        /* Every rank gets every chunk's partial sum, then sums them in chunk order as
         * nx_tmodel_adamw_step does: the norm (and the clipping) is the same bits everywhere. */
        int *c = NULL;
        NX_TRY(slice_counts(d, z->n, true, &c));
        double t0 = nx_time_s();
        wd_enter(d);
        int e = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DOUBLE, z->partials, c, c + d->size, MPI_DOUBLE, MPI_COMM_WORLD);
        wd_leave(d);
        *comm_s += nx_time_s() - t0;
        nx__free(c);
        if (e != MPI_SUCCESS) return nx__error(NX_ERR_IO, "MPI_Allgatherv failed (%d)", e);
    }
#endif
    double ss = 0.0;
    for (long c = 0; c < z->nchunks; c++) ss += z->partials[c];
    float norm = (float)sqrt(ss);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm))
        return nx__error(NX_ERR_RANGE, "gradient norm is %g at step %ld: update skipped", norm, nx_tmodel_step_count(m) + 1);
    nx__tmodel_adamw_update(m, pool, opt, lr, nx__adamw_clip_coef(opt, norm), z->lo, z->hi, z->mom[0], z->mom[1]);
    return nx__dist_allgather_slices(d, nx__tmodel_params(m), z->n, comm_s);
}

/* Pieces in which shards travel to rank 0 for a checkpoint: a bounded staging buffer. */
#define SAVE_PIECE (1u << 20)

nx_status nx__zero_save_moment(nx_zero *z, int which, nx_slice_fn fn, void *ctx, double *comm_s) {
    nx_dist *d = z->d;
    const float *mine = z->mom[which != 0];
    int N = nx_dist_size(d), r = nx_dist_rank(d);
    if (r == 0) NX_TRY(fn(ctx, z->lo, z->hi, mine));
    if (N == 1) return NX_OK;
#ifdef NX_HAVE_MPI
    /* Rank s sends its slice in pieces of SAVE_PIECE floats, which rank 0 receives in rank
     * order into one buffer and hands to fn: it never holds more than its own shard plus
     * 4 MiB, whatever N. */
    float *buf = NULL;
    if (r == 0 && !(buf = nx__malloc_aligned(SAVE_PIECE * sizeof(float))))
        return nx__error(NX_ERR_NOMEM, "checkpoint: optimizer state staging buffer");
    nx_status st = NX_OK;
    double t0 = nx_time_s();
    for (int s = 1; s < N && st == NX_OK; s++) {
        if (r != 0 && r != s) continue;
        size_t lo = slice_off(z->n, s, N), hi = slice_off(z->n, s + 1, N);
        for (size_t a = lo; a < hi && st == NX_OK; a += SAVE_PIECE) {
            int cnt = (int)NX_MIN((size_t)SAVE_PIECE, hi - a), e;
            wd_enter(d);
            if (r == 0) e = MPI_Recv(buf, cnt, MPI_FLOAT, s, XCHG_TAG + 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            else e = MPI_Send(mine + (a - lo), cnt, MPI_FLOAT, 0, XCHG_TAG + 1, MPI_COMM_WORLD);
            wd_leave(d);
            if (e != MPI_SUCCESS) st = nx__error(NX_ERR_IO, "%s failed (%d)", r == 0 ? "MPI_Recv" : "MPI_Send", e);
            else if (r == 0) st = fn(ctx, a, a + (size_t)cnt, buf);
        }
    }
    *comm_s += nx_time_s() - t0;
    nx__free_aligned(buf);
    return st;
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
