/* bench_prefill.c - end-to-end prompt processing of a random released shape on ONE thread, in
 * tokens per thread-CPU-second: nx_session_forward of P tokens (all layers, attention, head
 * row), median of R runs. CPU time rather than wall time, so a shared machine's load does not
 * enter; compare two builds by running both in the same session.
 *
 *   bench_prefill SHAPE DTYPE [P=512] [R=5]      e.g. bench_prefill pythia-160m q8
 */
#include "neox.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s SHAPE f32|bf16|f16|q8|q4 [P=512] [R=5]\n", argv[0]);
        return 2;
    }
    nx_dtype dt = nx_run_dtype_from_name(argv[2]);
    int P = argc > 3 ? atoi(argv[3]) : 512, reps = argc > 4 ? atoi(argv[4]) : 5;
    if (dt == NX_DTYPE_INVALID || P < 1 || reps < 1 || reps > 99) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    nx_model_config cfg;
    nx_model *m = NULL;
    nx_session *s = NULL;
    if (nx_model_config_preset(argv[1], &cfg) != NX_OK || nx_model_create_random(&cfg, 1234, 0.02f, &m) != NX_OK ||
        nx_model_convert(m, dt) != NX_OK) {
        fprintf(stderr, "%s\n", nx_last_error());
        return 1;
    }
    nx_session_opts so = {0};
    so.n_threads = 1;
    so.n_ctx = P;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)P);
    if (!ids || nx_session_create(m, &so, &s) != NX_OK) {
        fprintf(stderr, "%s\n", ids ? nx_last_error() : "out of memory");
        return 1;
    }
    uint64_t x = 88172645463325252ull;   /* the token stream of neox bench */
    for (int i = 0; i < P; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)cfg.vocab_size);
    }
    double t[99];
    for (int r = 0; r < reps; r++) {
        nx_session_reset(s);
        double a = cpu_s();
        if (nx_session_forward(s, ids, P, NULL) != NX_OK) {
            fprintf(stderr, "%s\n", nx_last_error());
            return 1;
        }
        t[r] = cpu_s() - a;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp);
    printf("%s %s: prefill of %d tokens on 1 thread: %.0f tokens per CPU-second (median of %d)\n", argv[1], argv[2], P,
           P / t[reps / 2], reps);
    free(ids);
    nx_session_free(s);
    nx_model_free(m);
    return 0;
}
