/*
 * test_dist.c - the gradient reduction tree of src/train/dist.c in one process: for
 * A = 1..12 micro batches, nx__dist_reduce_grads and the streaming accumulator give
 * exactly the documented tree (adjacent pairs while the node count is even, then a left
 * fold), written out here independently; threads do not change the bits; the accumulator
 * keeps few buffers (e.g. 2 for any odd A). The multi-process half (1, 2, 3, 4
 * ranks against one process) is tests/cli_mpi.sh.
 */
#include "test.h"
#include "train/dist.h"

#include <math.h>

#define LEN 70001   /* odd, and large enough for the threaded path */

/* Reference: the tree by its definition, one element at a time. */
static float tree_ref(const float *vals, int n) {
    float v[16];
    memcpy(v, vals, (size_t)n * sizeof(float));
    while (n > 1) {
        if (n % 2 == 0) {
            for (int i = 0; i < n / 2; i++) v[i] = v[2 * i] + v[2 * i + 1];
            n /= 2;
        } else {
            for (int i = 1; i < n; i++) v[0] = v[0] + v[i];
            n = 1;
        }
    }
    return v[0];
}

static float leaf(int a, int i) { return (float)sin(0.37 * i + 1.3 * a) * powf(10.0f, (float)((i + a) % 7) - 3.0f); }

static void test_tree_matches_definition(void) {
    nx_pool *pools[2] = {NULL, nx_pool_create(2)};
    for (int A = 1; A <= 12; A++) {
        for (int p = 0; p < 4; p++) {   /* p & 1: pool; p & 2: streaming accumulator */
            float *v[12];
            for (int a = 0; a < A; a++) {
                v[a] = nx__malloc_aligned(LEN * sizeof(float));
                CHECK(v[a] != NULL);
                /* Values of mixed magnitude, so that a different order changes the bits. */
                for (int i = 0; i < LEN; i++) v[a][i] = leaf(a, i);
            }
            float expect[3];
            int probe[3] = {0, LEN / 2, LEN - 1};
            for (int q = 0; q < 3; q++) {
                float vals[12];
                for (int a = 0; a < A; a++) vals[a] = v[a][probe[q]];
                expect[q] = tree_ref(vals, A);
            }
            double comm = 0;
            float *res = NULL;
            if (p & 2) {
                /* Two steps through one accumulator: buffers are reused across steps. */
                nx_grad_acc *g = NULL;
                float *first = nx__malloc_aligned(LEN * sizeof(float));
                CHECK(nx__grad_acc_create(NULL, A, LEN, first, &g) == NX_OK);
                for (int step = 0; step < 2; step++) {
                    for (int a = 0; a < A; a++) {
                        float *b = nx__grad_acc_next(g);
                        CHECK(b != NULL);
                        memcpy(b, v[a], LEN * sizeof(float));
                        nx__grad_acc_push(g, pools[p & 1], b);
                    }
                    CHECK(nx__grad_acc_finish(g, pools[p & 1], &res, &comm) == NX_OK);
                    for (int q = 0; q < 3; q++)
                        CHECK_MSG(memcmp(&res[probe[q]], &expect[q], sizeof(float)) == 0,
                                  "A=%d streaming step %d element %d: %.9g vs %.9g", A, step, probe[q],
                                  (double)res[probe[q]], (double)expect[q]);
                }
                /* log2(A) + 1 buffers at most for a power of two, else 2 + (trailing zero bits of A), not A. */
                int tz = 0;
                while (((A >> tz) & 1) == 0) tz++;
                int bound = (A & (A - 1)) == 0 ? tz + 1 : tz + 2;
                CHECK_MSG(nx__grad_acc_buffers(g) <= bound, "A=%d: %d buffers (bound %d)", A, nx__grad_acc_buffers(g), bound);
                nx__grad_acc_free(g);
                nx__free_aligned(first);
            } else {
                float *v0[12];
                memcpy(v0, v, sizeof v0);
                CHECK(nx__dist_reduce_grads(NULL, pools[p & 1], v0, A, LEN, &comm) == NX_OK);
                res = v0[0];
                for (int q = 0; q < 3; q++)
                    CHECK_MSG(memcmp(&res[probe[q]], &expect[q], sizeof(float)) == 0, "A=%d pool %d element %d: %.9g vs %.9g",
                              A, p, probe[q], (double)res[probe[q]], (double)expect[q]);
            }
            CHECK(comm == 0);
            for (int a = 0; a < A; a++) nx__free_aligned(v[a]);
        }
    }
    nx_pool_free(pools[1]);
}

/* The order matters: a plain left fold differs from the tree somewhere for A = 4, so the
 * check above can fail. */
static void test_tree_is_not_left_fold(void) {
    int differ = 0;
    for (int i = 0; i < 1000 && !differ; i++) {
        float vals[4] = {(float)sin(i) * 1e3f, (float)cos(i) * 1e-3f, (float)sin(2 * i), (float)cos(3 * i) * 1e2f};
        float fold = ((vals[0] + vals[1]) + vals[2]) + vals[3];
        differ = fold != tree_ref(vals, 4);
    }
    CHECK(differ);
}

static void test_losses_and_bad_split(void) {
    float l[5] = {1, 2, 3, 4, 5}, all[5];
    double comm = 0;
    CHECK(nx__dist_gather_losses(NULL, l, 5, all, &comm) == NX_OK);
    CHECK(memcmp(l, all, sizeof l) == 0);
    CHECK(nx__dist_agree(NULL, NX_OK) == NX_OK);
    CHECK(nx__dist_agree(NULL, NX_ERR_IO) == NX_ERR_IO);
    CHECK(nx__dist_reduce_grads(NULL, NULL, NULL, 0, 16, &comm) == NX_ERR_INVALID_ARG);
    CHECK_EQ_INT(nx_dist_size(NULL), 1);
    CHECK_EQ_INT(nx_dist_rank(NULL), 0);
    CHECK(nx_dist_any(NULL, true) && !nx_dist_any(NULL, false));
}

int main(void) {
    TEST_RUN(test_tree_matches_definition);
    TEST_RUN(test_tree_is_not_left_fold);
    TEST_RUN(test_losses_and_bad_split);
    TEST_END();
}
