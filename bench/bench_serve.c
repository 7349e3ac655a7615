/* bench_serve.c - generation throughput of the server with 1..N concurrent streams.
 *
 * usage: bench_serve MODEL_DIR [--streams 1,8] [--tokens 64] [--threads N] [--parallel P] [--reps 3]
 *
 * Starts the server in-process on a free loopback port, then for each stream count S runs S
 * client threads at once, each streaming a greedy completion of --tokens tokens (ignore_eos)
 * of a short distinct prompt. Reports, per S, the median over reps of: aggregate generated
 * tokens/s (all streams' tokens / wall time) and mean per-stream tokens/s, as JSON lines. */
#define _GNU_SOURCE 1
#include "neox.h"
#include "../tests/serve/http_client.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_port, g_tokens;

typedef struct job {
    int idx;
    double secs;
    int ok;
} job;

static void *worker(void *arg) {
    job *j = arg;
    char body[256];
    snprintf(body, sizeof body,
             "{\"prompt\": \"Stream number %d says\", \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true, "
             "\"stream\": true}", j->idx, g_tokens);
    double t0 = nx_time_s();
    http_resp r;
    j->ok = http_post(g_port, "/v1/completions", body, &r) == 0 && r.status == 200 && strstr(r.body, "[DONE]");
    j->secs = nx_time_s() - t0;
    http_resp_free(&r);
    return NULL;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_serve MODEL_DIR [--streams 1,8] [--tokens 64] [--threads N] [--parallel P] [--reps 3]\n");
        return 2;
    }
    const char *streams = "1,8";
    int threads = 0, parallel = 8, reps = 3;
    g_tokens = 64;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--streams")) streams = argv[i + 1];
        else if (!strcmp(argv[i], "--tokens")) g_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--parallel")) parallel = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    nx_server_opts o = nx_server_defaults();
    o.model_dir = argv[1];
    o.n_threads = threads;
    o.n_parallel = parallel;
    nx_server *srv;
    if (nx_server_start(&o, &srv) != NX_OK) {
        fprintf(stderr, "bench_serve: %s\n", nx_last_error());
        return 1;
    }
    g_port = nx_server_port(srv);
    char list[256];
    snprintf(list, sizeof list, "%s", streams);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int S = atoi(tok);
        if (S < 1 || S > 256) continue;
        double agg[16], per[16];
        int R = reps < 16 ? reps : 16;
        for (int rep = 0; rep < R; rep++) {
            job *jobs = calloc((size_t)S, sizeof *jobs);
            pthread_t *th = calloc((size_t)S, sizeof *th);
            double t0 = nx_time_s();
            for (int i = 0; i < S; i++) {
                jobs[i].idx = i;
                pthread_create(&th[i], NULL, worker, &jobs[i]);
            }
            double sum_rate = 0;
            int ok = 0;
            for (int i = 0; i < S; i++) {
                pthread_join(th[i], NULL);
                ok += jobs[i].ok;
                sum_rate += g_tokens / jobs[i].secs;
            }
            double wall = nx_time_s() - t0;
            agg[rep] = ok == S ? (double)S * g_tokens / wall : 0;
            per[rep] = sum_rate / S;
            free(jobs);
            free(th);
        }
        qsort(agg, (size_t)R, sizeof *agg, cmp_d);
        qsort(per, (size_t)R, sizeof *per, cmp_d);
        printf("{\"streams\": %d, \"tokens_per_stream\": %d, \"threads\": %d, \"slots\": %d, \"kernels\": \"%s\", "
               "\"aggregate_tok_s\": %.1f, \"per_stream_tok_s\": %.1f, \"reps\": %d}\n",
               S, g_tokens, threads, parallel, nx_kernels_name(), agg[R / 2], per[R / 2], R);
        fflush(stdout);
    }
    nx_server_free(srv);
    return 0;
}
