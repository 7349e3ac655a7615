/* bench_eval.c - memorization throughput on a random model of a released shape (32-token
 * prompt + 32 greedy tokens per sequence), unbatched (--batch 1: one sequence decoded at a
 * time per thread) against batched decoding (nx_mem_opts.batch), in the same process: each
 * repetition runs both back to back, so a load change on a shared machine hits both alike.
 *
 *   bench_eval [shape=pythia-160m] [threads=2] [sequences=64] [reps=3] [batch=16] [dtype=f32]
 * Prints one JSON line: medians of sequences/s for each, the median of the per-repetition
 * ratios, and the load average. The per-sequence scores of the two runs must be identical
 * (checked; a mismatch is an error). The dataset is random uint16 tokens in a temporary file. */
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
    int nseq = argc > 3 ? atoi(argv[3]) : 64;
    int reps = argc > 4 ? atoi(argv[4]) : 3;
    int batch = argc > 5 ? atoi(argv[5]) : 16;
    nx_dtype dt = argc > 6 ? nx_run_dtype_from_name(argv[6]) : NX_F32;
    if (threads < 1 || nseq < 1 || reps < 1 || reps > 64 || batch < 1 || dt == NX_DTYPE_INVALID) {
        fprintf(stderr, "usage: bench_eval [shape] [threads] [sequences] [reps] [batch] [f32|bf16|f16|q8|q4]\n");
        return 2;
    }
    nx_model_config cfg;
    if (nx_model_config_preset(shape, &cfg) != NX_OK) {
        fprintf(stderr, "bench_eval: %s\n", nx_last_error());
        return 1;
    }
    nx_model *m = NULL;
    if (nx_model_create_random(&cfg, 1, 0.02f, &m) != NX_OK || nx_model_convert(m, dt) != NX_OK) {
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
    double rate[2][64], ratio[64];
    float *sc[2] = {calloc((size_t)nseq, sizeof(float)), calloc((size_t)nseq, sizeof(float))};
    if (!sc[0] || !sc[1]) st = NX_ERR_NOMEM;
    for (int r = 0; r < reps && st == NX_OK; r++) {
        for (int k = 0; k < 2 && st == NX_OK; k++) {
            nx_mem_opts mo = {0, 0, false, k ? batch : 1};
            nx_mem_result res;
            double t0 = nx_time_s();
            st = nx_eval_memorization(m, ds, 0, (uint64_t)nseq, &mo, &o, sc[k], &res);
            rate[k][r] = (double)nseq / (nx_time_s() - t0);
        }
        ratio[r] = rate[1][r] / rate[0][r];
        if (st == NX_OK && memcmp(sc[0], sc[1], (size_t)nseq * sizeof(float)) != 0) {
            fprintf(stderr, "bench_eval: batched scores differ from unbatched ones\n");
            st = NX_ERR_INTERNAL;
        }
    }
    if (st != NX_OK && st != NX_ERR_INTERNAL) fprintf(stderr, "bench_eval: %s\n", nx_last_error());
    qsort(rate[0], (size_t)reps, sizeof(double), cmp_double);
    qsort(rate[1], (size_t)reps, sizeof(double), cmp_double);
    qsort(ratio, (size_t)reps, sizeof(double), cmp_double);
    double load[3] = {0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = load[1] = load[2] = -1;
        fclose(la);
    }
    printf("{\"bench\":\"memorization\",\"shape\":\"%s\",\"dtype\":\"%s\",\"kernels\":\"%s\",\"threads\":%d,"
           "\"sequences\":%d,\"reps\":%d,\"batch\":%d,\"unbatched_seq_s_median\":%.3f,\"batched_seq_s_median\":%.3f,"
           "\"speedup_median\":%.2f,\"scores_equal\":%s,\"loadavg\":\"%.2f %.2f %.2f\"}\n",
           shape, nx_dtype_name(nx_model_weight_dtype(m)), nx_kernels_name(), threads, nseq, reps, batch, rate[0][reps / 2],
           rate[1][reps / 2], ratio[reps / 2], st == NX_OK ? "true" : "false", load[0], load[1], load[2]);
    free(sc[0]);
    free(sc[1]);
    nx_indexed_free(ds);
    char path[300];
    snprintf(path, sizeof path, "%s.bin", prefix);
    remove(path);
    snprintf(path, sizeof path, "%s.idx", prefix);
    remove(path);
    nx_model_free(m);
    return st == NX_OK ? 0 : 1;
}
