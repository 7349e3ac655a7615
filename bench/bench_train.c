/*
 * bench_train.c - training throughput of one optimizer step (forward, backward, AdamW)
 * for a config's model shape on random tokens, the same step bench/train_pytorch.py
 * times in PyTorch.
 *
 *   bench_train CONFIG.json [--batch B] [--seq T] [--steps N] [--threads N] [--reference] [--bf16]
 *
 * --bf16 (or the config's "precision"/"bf16") times bf16 compute (nx_tmodel_set_bf16).
 *
 * Prints the median step time, tokens/s, and model FLOPs utilisation against a given peak
 * (--peak GFLOP/s, default 434 = 2 cores x 3.4 GHz x 2 AVX-512 FMA x 16 lanes x 2).
 * Model FLOPs per token: 6 x (parameters except the input embedding) + 12 x L x H x T
 * (attention scores and weighted sum, forward + backward; the PaLM convention).
 */
#include "neox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONFIG.json [--batch B] [--seq T] [--steps N] [--threads N] [--peak GFLOPS] [--reference] [--bf16]\n", argv[0]);
        return 2;
    }
    int B = 8, T = 256, steps = 5, threads = 2;
    double peak = 434.0;
    int reference = 0, bf16 = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--reference")) { reference = 1; continue; }
        if (!strcmp(argv[i], "--bf16")) { bf16 = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "%s needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "--batch")) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq")) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--peak")) peak = atof(argv[++i]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (B <= 0 || T <= 0 || steps <= 0 || steps > 1000) { fprintf(stderr, "bad arguments\n"); return 2; }
    nx_train_config cfg;
    if (nx_train_config_load(argv[1], &cfg) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
    nx_tmodel *m = NULL;
    if (nx_tmodel_create(&cfg.model, B, T, &m) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
    nx_tmodel_use_reference(m, reference != 0);
    if (nx_tmodel_set_bf16(m, bf16 || cfg.bf16) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
    nx_tmodel_init(m, cfg.init, cfg.output_init, cfg.init_std, 1234);
    nx_pool *pool = nx_pool_create(threads);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * T), *tgt = malloc(sizeof(int32_t) * (size_t)B * T);
    unsigned s = 1;
    for (int i = 0; i < B * T; i++) {
        s = s * 1103515245u + 12345u; tok[i] = (int32_t)((s >> 8) % (unsigned)cfg.model.vocab_size);
        s = s * 1103515245u + 12345u; tgt[i] = (int32_t)((s >> 8) % (unsigned)cfg.model.vocab_size);
    }
    double *times = calloc((size_t)steps, sizeof(double)), *cpus = calloc((size_t)steps, sizeof(double));
    double fwdbwd_only = 0;
    for (int it = -1; it < steps; it++) {   /* it = -1: warm-up */
        double t0 = nx_time_s();
        clock_t c0 = clock();
        float loss, gn;
        nx_tmodel_zero_grad(m);
        if (nx_tmodel_forward_backward(m, pool, tok, tgt, 1.0f, &loss) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
        double t1 = nx_time_s();
        if (nx_tmodel_adamw_step(m, pool, &cfg.adamw, 1e-4, &gn) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
        if (it >= 0) {
            times[it] = nx_time_s() - t0;
            cpus[it] = (double)(clock() - c0) / CLOCKS_PER_SEC;
            fwdbwd_only += t1 - t0;
        }
        fprintf(stderr, "step %d: %.3f s, loss %.4f\n", it, nx_time_s() - t0, (double)loss);
    }
    qsort(times, (size_t)steps, sizeof(double), cmp_d);
    qsort(cpus, (size_t)steps, sizeof(double), cmp_d);
    double med = times[steps / 2], cmed = cpus[steps / 2];
    size_t n_all = nx_tmodel_num_params(m), n_emb = (size_t)cfg.model.vocab_size * cfg.model.hidden_size;
    size_t n_flop = cfg.model.tie_word_embeddings ? n_all : n_all - n_emb;
    double flops_tok = 6.0 * (double)n_flop + 12.0 * cfg.model.n_layer * cfg.model.hidden_size * (double)T;
    double tps = (double)B * T / med;
    printf("%s (%s): B=%d T=%d threads=%d params=%zu: median step %.3f s (fwd+bwd %.0f%%), %.0f tokens/s, "
           "%.1f GFLOP/s, MFU %.1f%% of %.0f GFLOP/s; CPU %.3f s/step, %.0f tokens per %d CPU-seconds "
           "(MFU %.1f%% on CPU time)\n",
           argv[1], nx_tmodel_bf16(m) ? "bf16" : "fp32", B, T, threads, n_all, med, 100.0 * fwdbwd_only / steps / (med > 0 ? med : 1), tps,
           tps * flops_tok / 1e9, 100.0 * tps * flops_tok / 1e9 / peak, peak, cmed, (double)B * T * threads / cmed,
           threads, 100.0 * ((double)B * T * threads / cmed) * flops_tok / 1e9 / peak);
    free(times); free(cpus); free(tok); free(tgt);
    nx_pool_free(pool);
    nx_tmodel_free(m);
    return 0;
}
