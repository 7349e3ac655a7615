/* bench_tokenizer.c - tokenizer speed: load time and memory, and single-thread encode
 * throughput over the golden corpus (per-document encode, the same unit as
 * bench/tokenizer_hf.py). Reports medians; asserts nothing.
 *
 *   bench_tokenizer TOKENIZER [CORPUS.bin.zst] [REPS]
 *   (CORPUS defaults to tests/fixtures/tokenizer/corpus.bin.zst) */
#include "neox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

/* Process CPU seconds: the machine this runs on is shared, so wall time is noisy; both this
 * bench and bench/tokenizer_hf.py report CPU-time throughput next to wall time. */
static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s TOKENIZER [CORPUS.bin.zst] [REPS]\n", argv[0]);
        return 2;
    }
    const char *corpus = argc > 2 ? argv[2] : "tests/fixtures/tokenizer/corpus.bin.zst";
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (reps < 1) reps = 1;
    FILE *f = fopen(corpus, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", corpus); return 1; }
    fseek(f, 0, SEEK_END);
    long zn = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *z = malloc((size_t)zn);
    if (fread(z, 1, (size_t)zn, f) != (size_t)zn) return 1;
    fclose(f);
    unsigned long long sz = ZSTD_getFrameContentSize(z, (size_t)zn);
    unsigned char *raw = malloc(sz);
    if (ZSTD_isError(ZSTD_decompress(raw, sz, z, (size_t)zn))) return 1;
    free(z);
    uint32_t ndocs;
    memcpy(&ndocs, raw + 8, 4);
    const char **text = calloc(ndocs, sizeof *text);
    size_t *len = calloc(ndocs, sizeof *len), off = 12, bytes = 0;
    for (uint32_t i = 0; i < ndocs; i++) {
        uint32_t l;
        memcpy(&l, raw + off, 4);
        text[i] = (const char *)raw + off + 4;
        len[i] = l;
        bytes += l;
        off += 4 + l;
    }

    /* load: median of reps, memory of one tokenizer */
    double lt[32], lc[32];
    nx_tokenizer *tok = NULL;
    long before = rss_kb();
    for (int r = 0; r < reps && r < 32; r++) {
        double t0 = nx_time_s(), c0 = cpu_s();
        nx_tokenizer *t = NULL;
        if (nx_tokenizer_load(argv[1], &t) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
        lt[r] = nx_time_s() - t0;
        lc[r] = cpu_s() - c0;
        if (!tok) tok = t;
        else nx_tokenizer_free(t);
    }
    long after = rss_kb();
    printf("tokenizer: %s\nload: median %.1f ms wall, %.1f ms CPU over %d runs; RSS +%.1f MB\n", argv[1],
           1e3 * median(lt, reps < 32 ? reps : 32), 1e3 * median(lc, reps < 32 ? reps : 32), reps,
           (double)(after - before) / 1024.0);

    /* encode: the first pass runs on an empty cache */
    nx_ids ids = {0};
    double et[64], ec[64];
    size_t nids = 0;
    for (int r = 0; r <= reps && r < 64; r++) {
        double t0 = nx_time_s(), c0 = cpu_s();
        nids = 0;
        for (uint32_t i = 0; i < ndocs; i++) {
            if (nx_tokenizer_encode(tok, text[i], len[i], 0, &ids) != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
            nids += ids.len;
        }
        et[r] = nx_time_s() - t0;
        ec[r] = cpu_s() - c0;
        if (r == 0) printf("encode, cold cache: %.2f MB/s CPU\n", (double)bytes / 1e6 / ec[0]);
    }
    int k = reps < 63 ? reps : 63;
    double m = median(et + 1, k), mc = median(ec + 1, k);
    printf("encode: %u documents, %.2f MB, %zu ids (1 thread); median wall %.2f MB/s; median CPU %.3f s = %.2f MB/s, "
           "%.2f M ids/s\n", ndocs, (double)bytes / 1e6, nids, (double)bytes / 1e6 / m, mc, (double)bytes / 1e6 / mc,
           (double)nids / 1e6 / mc);

    /* decode throughput of the same ids */
    nx_text txt = {0};
    double t0 = cpu_s();
    size_t out = 0;
    for (uint32_t i = 0; i < ndocs; i++) {
        nx_tokenizer_encode(tok, text[i], len[i], 0, &ids);
        nx_tokenizer_decode(tok, ids.data, ids.len, 0, &txt);
        out += txt.len;
    }
    printf("encode+decode: %.2f MB/s CPU\n", (double)out / 1e6 / (cpu_s() - t0));
    nx_text_free(&txt);
    nx_ids_free(&ids);
    nx_tokenizer_free(tok);
    free(text);
    free(len);
    free(raw);
    return 0;
}
