/* bench_data_order.c - time to build GPT-NeoX's sample order (doc_idx, sample_idx,
 * shuffle_idx) for a dataset of N documents, and to read random samples.
 *
 * usage: bench_data_order DIR N_DOCS MEAN_TOKENS SEQ_LEN NUM_SAMPLES [SEED]
 * The dataset is synthetic: DIR/order.idx holds N sizes drawn around MEAN_TOKENS, and
 * DIR/order.bin is a sparse file of the right length (only the index is real), so
 * Pythia-scale orders fit on any disk. Pythia deduped: 134318121 1541 2048 147164160.
 * bench/data_order_ref.py builds the same order with numpy + megatron-core's helpers. */
#include "neox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s DIR N_DOCS MEAN_TOKENS SEQ_LEN NUM_SAMPLES [SEED]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    uint64_t n = strtoull(argv[2], NULL, 10), mean = strtoull(argv[3], NULL, 10);
    int64_t seq = strtoll(argv[4], NULL, 10);
    uint64_t num = strtoull(argv[5], NULL, 10);
    uint32_t seed = argc > 6 ? (uint32_t)strtoul(argv[6], NULL, 10) : 1234;
    char idx[4096], bin[4096], prefix[4096];
    snprintf(prefix, sizeof prefix, "%.4000s/order", dir);
    snprintf(idx, sizeof idx, "%.4000s.idx", prefix);
    snprintf(bin, sizeof bin, "%.4000s.bin", prefix);
    /* sizes: 1 + (xorshift % (2 * mean - 1)), mean ~= MEAN_TOKENS; written in the MMIDIDX layout */
    FILE *f = fopen(idx, "wb");
    if (!f) { perror(idx); return 1; }
    uint64_t v = 1, d = n + 1, x = 88172645463325252ull, off = 0;
    uint8_t code = 8;
    fwrite("MMIDIDX\0\0", 1, 9, f);
    fwrite(&v, 8, 1, f);
    fwrite(&code, 1, 1, f);
    fwrite(&n, 8, 1, f);
    fwrite(&d, 8, 1, f);
    int32_t *sizes = malloc(n * sizeof *sizes);
    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        sizes[i] = (int32_t)(1 + x % (2 * mean - 1));
    }
    fwrite(sizes, 4, n, f);
    for (uint64_t i = 0; i < n; i++) { fwrite(&off, 8, 1, f); off += (uint64_t)sizes[i] * 2; }
    for (uint64_t i = 0; i <= n; i++) fwrite(&i, 8, 1, f);
    fclose(f);
    free(sizes);
    if (truncate(bin, 0) != 0) { FILE *g = fopen(bin, "wb"); if (g) fclose(g); }
    if (truncate(bin, (off_t)off) != 0) { perror(bin); return 1; }

    double t0 = nx_time_s();
    nx_indexed *ds = NULL;
    if (nx_indexed_open(prefix, &ds) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
    double t1 = nx_time_s();
    nx_sample_opts o = {.seq_length = seq, .num_samples = num, .seed = seed};
    nx_sample_index *si = NULL;
    if (nx_sample_index_build(ds, &o, &si) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
    double t2 = nx_time_s();
    uint64_t dn;
    const int32_t *di = nx_sample_index_doc_idx(si, &dn);
    printf("docs %llu, tokens/epoch %llu, epochs %d, samples %llu\n", (unsigned long long)n,
           (unsigned long long)nx_sample_index_tokens_per_epoch(si), nx_sample_index_epochs(si),
           (unsigned long long)nx_sample_index_count(si));
    printf("doc_idx[:4] %d %d %d %d  shuffle_idx[:4] %llu %llu %llu %llu\n", di[0], di[1], di[2], di[3],
           (unsigned long long)nx_sample_index_shuffle_at(si, 0), (unsigned long long)nx_sample_index_shuffle_at(si, 1),
           (unsigned long long)nx_sample_index_shuffle_at(si, 2), (unsigned long long)nx_sample_index_shuffle_at(si, 3));
    printf("open+validate %.2f s, build order %.2f s\n", t1 - t0, t2 - t1);
    int32_t *buf = malloc((size_t)(seq + 1) * sizeof *buf);
    uint64_t S = nx_sample_index_count(si), k = 100000;
    double t3 = nx_time_s();
    for (uint64_t i = 0; i < k; i++) nx_sample_index_get(si, (i * 2654435761u) % S, buf);
    double t4 = nx_time_s();
    printf("random sample reads: %.0f samples/s\n", (double)k / (t4 - t3));
    free(buf);
    nx_sample_index_free(si);
    nx_indexed_free(ds);
    remove(idx);
    remove(bin);
    return 0;
}
