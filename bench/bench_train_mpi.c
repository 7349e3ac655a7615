/*
 * bench_train_mpi.c - data-parallel training throughput: one optimizer step of a config's
 * model shape on random tokens, split over the ranks exactly as `neox train` splits it
 * (rank r trains the step's micro batches r*c .. r*c + c - 1, c = A/N, each into its own
 * gradient buffer, summed by the fixed tree of src/train/dist.c; then AdamW on every rank).
 *
 *   mpirun -np N bench_train_mpi CONFIG.json [--batch B] [--seq T] [--accum A] [--steps S] [--threads n]
 *                                [--zero 0|1] [--overlap 0|1]
 *
 * The global batch is A micro batches of B x T tokens whatever N is. --zero 1 shards the
 * AdamW state (ZeRO stage 1); --overlap 1 sends each slice of the gradient exchange during
 * the last micro batch's backward pass (neox train's overlap_comm). Rank 0 prints
 * the median step time, global tokens/s, the median share of the step spent in MPI calls
 * (sends, receives, waits, all-gathers and the loss gather: the communication that was not
 * hidden behind compute) and from the end of the last backward pass to the reduced gradient
 * (the exchange's wait, the tree levels after it, the gradient all-gather); then
 * every rank's optimizer-state bytes and peak resident memory (VmHWM). Without mpirun it
 * runs as one process.
 */
#include "neox.h"
#include "neox/dist.h"
#include "train/dist.h"
#include "train/train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Peak resident set of this process in bytes (Linux /proc), 0 when unknown. */
static double peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtod(line + 6, NULL);
    if (f) fclose(f);
    return kb * 1024.0;
}

typedef struct { nx_grad_acc *acc; nx_pool *pool; } hook_ctx;
static void on_grad_ready(void *ctx, size_t lo) {
    hook_ctx *h = ctx;
    nx__grad_acc_ready(h->acc, h->pool, lo);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return v[n / 2];
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONFIG.json [--batch B] [--seq T] [--accum A] [--steps S] [--threads n]\n", argv[0]);
        return 2;
    }
    int B = 4, T = 256, A = 4, steps = 5, threads = 1, zero = 0, overlap = 0;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc) { fprintf(stderr, "%s needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "--batch")) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq")) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--accum")) A = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--zero")) zero = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--overlap")) overlap = atoi(argv[++i]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    nx_dist *d = NULL;
    if (nx_dist_init(&argc, &argv, 0, &d) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
    int rank = nx_dist_rank(d), N = nx_dist_size(d);
    if (B <= 0 || T <= 0 || A <= 0 || A % N || steps <= 0 || steps > 1000) {
        if (rank == 0) fprintf(stderr, "bad arguments (accum must be a multiple of the %d ranks)\n", N);
        nx_dist_finalize(d);
        return 2;
    }
    nx_train_config cfg;
    if (nx_train_config_load(argv[1], &cfg) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
    nx_tmodel *m = NULL;
    if (nx_tmodel_create(&cfg.model, B, T, &m) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
    nx_tmodel_init(m, cfg.init, cfg.output_init, cfg.init_std, 1234);
    nx_pool *pool = nx_pool_create(threads);
    int c = A / N;
    size_t nflat = nx__tmodel_flat_size(m);
    float *losses = calloc((size_t)A, sizeof(float));
    float *own = nx__tmodel_swap_grads(m, NULL);
    nx__tmodel_swap_grads(m, own);
    nx_grad_acc *acc = NULL;
    if (nx__grad_acc_create(d, A, nflat, own, &acc) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
    nx_zero *z = NULL;
    if (zero) {
        if (nx__zero_create(d, nflat, &z) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
        nx__grad_acc_shard_only(acc, true);
    }
    hook_ctx hc = {acc, pool};
    if (overlap && N > 1) nx__tmodel_set_grad_hook(m, on_grad_ready, &hc);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * T), *tgt = malloc(sizeof(int32_t) * (size_t)B * T);
    double *tstep = calloc((size_t)steps, sizeof(double)), *fcomm = calloc((size_t)steps, sizeof(double)),
           *fred = calloc((size_t)steps, sizeof(double)), *tcpu = calloc((size_t)steps, sizeof(double));
    float *cpu_all = calloc((size_t)N, sizeof(float));
    for (int it = -1; it < steps; it++) {   /* it = -1: warm-up */
        double t0 = nx_time_s(), comm = 0;
        clock_t c0 = clock();
        for (int a = 0; a < c; a++) {
            unsigned s = (unsigned)(rank * c + a + 1) * 2654435761u;   /* tokens of global micro batch k */
            for (int i = 0; i < B * T; i++) {
                s = s * 1103515245u + 12345u; tok[i] = (int32_t)((s >> 8) % (unsigned)cfg.model.vocab_size);
                s = s * 1103515245u + 12345u; tgt[i] = (int32_t)((s >> 8) % (unsigned)cfg.model.vocab_size);
            }
            float *buf = nx__grad_acc_next(acc);
            if (!buf) { fprintf(stderr, "%s\n", nx_last_error()); nx_dist_abort(d, 1); return 1; }
            nx__tmodel_swap_grads(m, buf);
            nx_tmodel_zero_grad(m);
            nx_status st = nx__grad_acc_begin(acc, buf);
            if (st == NX_OK) st = nx_tmodel_forward_backward(m, pool, tok, tgt, 1.0f / (float)A, &losses[a]);
            if (st != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); nx_dist_abort(d, 1); return 1; }
            nx__grad_acc_ready(acc, pool, 0);
        }
        double t1 = nx_time_s();
        float *gsum = NULL;
        if (nx__grad_acc_finish(acc, pool, &gsum, &comm) != NX_OK ||
            nx__dist_gather_losses(d, losses, A, losses, &comm) != NX_OK) {
            fprintf(stderr, "%s\n", nx_last_error());
            nx_dist_abort(d, 1);
            return 1;
        }
        nx__tmodel_swap_grads(m, gsum);
        double t2 = nx_time_s();
        float gn;
        nx_status ost = z ? nx__zero_step(z, m, pool, &cfg.adamw, 1e-4, &gn, &comm)
                          : nx_tmodel_adamw_step(m, pool, &cfg.adamw, 1e-4, &gn);
        if (ost != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); nx_dist_abort(d, 1); return 1; }
        double dt = nx_time_s() - t0;
        /* CPU seconds of every rank this step (one value per rank, gathered in rank order). */
        double dummy = 0;
        float mine = (float)((double)(clock() - c0) / CLOCKS_PER_SEC);
        if (nx__dist_gather_losses(d, &mine, N, cpu_all, &dummy) != NX_OK) { nx_dist_abort(d, 1); return 1; }
        if (it >= 0) {
            tcpu[it] = 0;
            for (int q = 0; q < N; q++) tcpu[it] += cpu_all[q];
            tstep[it] = dt;
            fcomm[it] = comm / dt;
            fred[it] = (t2 - t1) / dt;
        }
        if (rank == 0) fprintf(stderr, "step %d: %.3f s (MPI %.3f s), loss %.4f\n", it, dt, comm, (double)losses[0]);
    }
    if (rank == 0) {
        double med = median(tstep, steps);
        printf("%s: %d rank(s) x %d thread(s), zero %d, overlap %d, global batch %d x %d x %d tokens, params %zu: median step %.3f s, "
               "%.0f tokens/s; %.0f tokens per CPU-second (all ranks); median share of the step in MPI calls %.1f%%, "
               "from the end of the last backward pass to the reduced gradient %.1f%%\n",
               argv[1], N, threads, zero, overlap && N > 1, A, B, T, nx_tmodel_num_params(m), med, (double)A * B * T / med,
               (double)A * B * T / median(tcpu, steps), 100.0 * median(fcomm, steps), 100.0 * median(fred, steps));
    }
    /* Memory: optimizer-state floats held and peak resident set, per rank in rank order. */
    size_t lo = 0, hi = nflat;
    if (z) nx__zero_range(z, &lo, &hi);
    float mem[2] = {(float)(2.0 * (double)(hi - lo) * sizeof(float) / 1048576.0), (float)(peak_rss() / 1048576.0)};
    float *all = calloc(2 * (size_t)N, sizeof(float));
    double dummy = 0;
    for (int w = 0; w < 2; w++) {
        if (nx__dist_gather_losses(d, &mem[w], N, all + w * N, &dummy) != NX_OK) { nx_dist_abort(d, 1); return 1; }
    }
    if (rank == 0)
        for (int q = 0; q < N; q++)
            printf("  rank %d: AdamW state %.1f MiB, peak RSS %.1f MiB\n", q, (double)all[q], (double)all[N + q]);
    free(all);
    nx__zero_free(z);
    nx__tmodel_swap_grads(m, own);
    nx__grad_acc_free(acc);
    free(losses); free(tok); free(tgt); free(tstep); free(fcomm); free(fred); free(tcpu); free(cpu_all);
    nx_pool_free(pool);
    nx_tmodel_free(m);
    nx_dist_finalize(d);
    return 0;
}
