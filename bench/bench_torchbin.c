/* bench_torchbin.c - time to open a checkpoint (any format nx_tensorset_open reads) and to
 * touch every byte of its tensors, median of N runs.
 *   bench_torchbin PATH [N=5]
 * Opening is zero-copy for contiguous little-endian tensors, so "open" measures parsing and
 * bounds checks only; "read" adds the page-cache cost of reading the weights. */
#include "neox.h"

#include <stdio.h>
#include <stdlib.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s PATH [N]\n", argv[0]); return 2; }
    int n = argc > 2 ? atoi(argv[2]) : 5;
    if (n < 1 || n > 1000) n = 5;
    double *open_s = calloc((size_t)n, sizeof *open_s), *read_s = calloc((size_t)n, sizeof *read_s);
    if (!open_s || !read_s) return 1;
    size_t count = 0, bytes = 0;
    for (int r = 0; r < n; r++) {
        double t0 = nx_time_s();
        nx_tensorset *ts;
        nx_status st = nx_tensorset_open(argv[1], &ts);
        double t1 = nx_time_s();
        if (st != NX_OK) { fprintf(stderr, "%s\n", nx_last_error()); return 1; }
        volatile uint64_t sink = 0;
        count = nx_tensorset_count(ts);
        bytes = 0;
        for (size_t i = 0; i < count; i++) {
            const nx_tensor_info *t = nx_tensorset_at(ts, i);
            const uint8_t *p = t->data;
            for (size_t j = 0; j < t->nbytes; j += 4096) sink += p[j];
            bytes += t->nbytes;
        }
        double t2 = nx_time_s();
        (void)sink;
        nx_tensorset_free(ts);
        open_s[r] = t1 - t0;
        read_s[r] = t2 - t0;
    }
    qsort(open_s, (size_t)n, sizeof *open_s, cmp_d);
    qsort(read_s, (size_t)n, sizeof *read_s, cmp_d);
    printf("%s: %zu tensors, %.1f MB; median of %d: open %.3f ms, open+touch %.3f ms\n", argv[1], count,
           (double)bytes / 1e6, n, open_s[n / 2] * 1e3, read_s[n / 2] * 1e3);
    free(open_s);
    free(read_s);
    return 0;
}
