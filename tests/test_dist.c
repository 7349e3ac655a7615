/*
 * test_dist.c - the gradient reduction tree of src/train/dist.c in one process: for
 * A = 1..12 micro batches, nx__dist_reduce_grads and the streaming accumulator give
 * exactly the documented tree (adjacent pairs while the node count is even, then a left
 * fold), written out here independently; threads do not change the bits; the accumulator
 * keeps few buffers (e.g. 2 for any odd A); fed range by range (the overlap path) it gives
 * the same bits; the model's gradient-ready hook only reports ranges that are final; the
 * ZeRO optimizer step equals nx_tmodel_adamw_step. The multi-process half (1, 2, 3, 4
 * ranks against one process, ZeRO, overlap on and off) is tests/cli_mpi.sh.
 */
#include "test.h"
#include "train/dist.h"
#include "train/train_internal.h"

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


/* The overlap path: begin, then ready() at decreasing watermarks, gives the bits of push. */
static void test_ranges_same_bits(void) {
    nx_pool *pool = nx_pool_create(2);
    for (int A = 1; A <= 8; A++) {
        float *res[2] = {NULL, NULL};
        float *first[2];
        nx_grad_acc *g[2] = {NULL, NULL};
        for (int way = 0; way < 2; way++) {
            first[way] = nx__malloc_aligned(LEN * sizeof(float));
            CHECK(nx__grad_acc_create(NULL, A, LEN, first[way], &g[way]) == NX_OK);
            double comm = 0;
            for (int a = 0; a < A; a++) {
                float *b = nx__grad_acc_next(g[way]);
                CHECK(b != NULL);
                for (int i = 0; i < LEN; i++) b[i] = leaf(a, i);
                if (way == 0) {
                    CHECK(nx__grad_acc_push(g[way], pool, b) == NX_OK);
                    continue;
                }
                CHECK(nx__grad_acc_begin(g[way], b) == NX_OK);
                CHECK(nx__grad_acc_next(g[way]) == NULL);   /* no buffer while a micro batch is open */
                size_t cuts[] = {LEN - 1, 50000, 50000, 12345, 64, 1};
                for (size_t c = 0; c < NX_ARRAY_LEN(cuts); c++) nx__grad_acc_ready(g[way], pool, cuts[c]);
                nx__grad_acc_ready(g[way], pool, 0);
            }
            CHECK(nx__grad_acc_finish(g[way], pool, &res[way], &comm) == NX_OK);
        }
        CHECK_MSG(memcmp(res[0], res[1], LEN * sizeof(float)) == 0, "A=%d: range-wise additions differ from push", A);
        for (int way = 0; way < 2; way++) { nx__grad_acc_free(g[way]); nx__free_aligned(first[way]); }
    }
    nx_pool_free(pool);
}

typedef struct { nx_tmodel *m; size_t prev; int calls, bad_order; float *snap; } hook_rec;
static void record_ready(void *ctx, size_t lo) {
    hook_rec *h = ctx;
    if (lo >= h->prev) h->bad_order++;
    else memcpy(h->snap + lo, nx_tmodel_grad_data(h->m, 0) + lo, (h->prev - lo) * sizeof(float));
    h->prev = lo;
    h->calls++;
}

/* Every range the hook reports holds, at that moment, the gradient's final values. */
static void test_grad_hook_ranges_final(void) {
    for (int tied = 0; tied < 2; tied++) {
        char j[512];
        snprintf(j, sizeof j, "{\"model_type\":\"gpt_neox\",\"vocab_size\":300,\"hidden_size\":64,\"num_hidden_layers\":3,"
                              "\"num_attention_heads\":4,\"intermediate_size\":256,\"tie_word_embeddings\":%s}",
                 tied ? "true" : "false");
        nx_model_config c;
        CHECK(nx__train_parse_model(j, strlen(j), "inline", &c) == NX_OK);
        nx_tmodel *m = NULL;
        int B = 2, T = 16;
        CHECK(nx_tmodel_create(&c, B, T, &m) == NX_OK);
        nx_tmodel_init(m, NX_INIT_SMALL, NX_INIT_WANG, 0.02f, 3);
        int32_t tok[32], tgt[32];
        for (int i = 0; i < B * T; i++) { tok[i] = (i * 37 + 5) % 300; tgt[i] = (i * 53 + 11) % 300; }
        size_t n = nx__tmodel_flat_size(m);
        hook_rec h = {m, n, 0, 0, calloc(n, sizeof(float))};
        nx__tmodel_set_grad_hook(m, record_ready, &h);
        nx_tmodel_zero_grad(m);
        float loss;
        CHECK(nx_tmodel_forward_backward(m, NULL, tok, tgt, 1.0f, &loss) == NX_OK);
        CHECK_EQ_INT(h.bad_order, 0);
        CHECK_EQ_INT(h.calls, 3 + 2);   /* final LayerNorm (+ head), 3 layers, embedding */
        CHECK(h.prev == 0);
        CHECK_MSG(memcmp(h.snap, nx_tmodel_grad_data(m, 0), n * sizeof(float)) == 0,
                  "tied=%d: a range changed after the hook called it final", tied);
        nx__tmodel_set_grad_hook(m, NULL, NULL);
        free(h.snap);
        nx_tmodel_free(m);
    }
}

static nx_status copy_range(void *ctx, size_t lo, size_t hi, const float *v) {
    memcpy((float *)ctx + lo, v, (hi - lo) * sizeof(float));
    return NX_OK;
}

/* One rank: the ZeRO step (norm from chunk partials, update of the shard = everything)
 * equals nx_tmodel_adamw_step bit for bit, with the clip active. */
static void test_zero_step_one_rank(void) {
    const char *j = "{\"model_type\":\"gpt_neox\",\"vocab_size\":500,\"hidden_size\":64,\"num_hidden_layers\":2,"
                    "\"num_attention_heads\":4,\"intermediate_size\":256}";
    nx_model_config c;
    CHECK(nx__train_parse_model(j, strlen(j), "inline", &c) == NX_OK);
    nx_adamw_config opt = {0.9, 0.95, 1e-8, 0.1, 0.05};
    nx_tmodel *m[2] = {NULL, NULL};
    nx_pool *pool = nx_pool_create(2);
    int32_t tok[64], tgt[64];
    float gn[2][3], loss;
    nx_zero *z = NULL;
    for (int w = 0; w < 2; w++) {
        CHECK(nx_tmodel_create(&c, 2, 32, &m[w]) == NX_OK);
        nx_tmodel_init(m[w], NX_INIT_SMALL, NX_INIT_WANG, 0.02f, 9);
        if (w) CHECK(nx__zero_create(NULL, nx__tmodel_flat_size(m[w]), &z) == NX_OK);
        for (int s = 0; s < 3; s++) {
            for (int i = 0; i < 64; i++) { tok[i] = (i * 31 + s * 7) % 500; tgt[i] = (i * 17 + s) % 500; }
            nx_tmodel_zero_grad(m[w]);
            CHECK(nx_tmodel_forward_backward(m[w], pool, tok, tgt, 1.0f, &loss) == NX_OK);
            double comm = 0;
            if (w) CHECK(nx__zero_step(z, m[w], pool, &opt, 1e-3, &gn[w][s], &comm) == NX_OK);
            else CHECK(nx_tmodel_adamw_step(m[w], pool, &opt, 1e-3, &gn[w][s]) == NX_OK);
        }
    }
    size_t n = nx__tmodel_flat_size(m[0]), lo, hi;
    nx__zero_range(z, &lo, &hi);
    CHECK(lo == 0 && hi == n);
    CHECK(gn[0][0] > 0.05f);   /* the clip was active */
    CHECK(memcmp(gn[0], gn[1], sizeof gn[0]) == 0);
    CHECK(memcmp(nx__tmodel_params(m[0]), nx__tmodel_params(m[1]), n * sizeof(float)) == 0);
    CHECK(memcmp(nx__tmodel_adam_m(m[0]), nx__zero_moment(z, 0), n * sizeof(float)) == 0);
    CHECK(memcmp(nx__tmodel_adam_v(m[0]), nx__zero_moment(z, 1), n * sizeof(float)) == 0);
    float *full = calloc(n, sizeof(float));
    double comm = 0;
    CHECK(nx__zero_save_moment(z, 1, copy_range, full, &comm) == NX_OK);
    CHECK(memcmp(full, nx__tmodel_adam_v(m[0]), n * sizeof(float)) == 0);
    free(full);
    nx__zero_free(z);
    for (int w = 0; w < 2; w++) nx_tmodel_free(m[w]);
    nx_pool_free(pool);
}

int main(void) {
    TEST_RUN(test_tree_matches_definition);
    TEST_RUN(test_tree_is_not_left_fold);
    TEST_RUN(test_losses_and_bad_split);
    TEST_RUN(test_ranges_same_bits);
    TEST_RUN(test_grad_hook_ranges_final);
    TEST_RUN(test_zero_step_one_rank);
    TEST_END();
}
