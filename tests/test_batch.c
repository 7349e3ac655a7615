/*
 * test_batch.c - batched forwards (nx_batch_decode, nx_batch_forward) against each session's
 * own nx_session_forward.
 *
 * The oracle is nx_session_forward on a separate session with its own single-thread pool,
 * which test_model.c checks against Hugging Face. A batched call must give every session
 * bit-identical logits (and leave a cache that keeps giving them on later steps) for all three
 * families, every run type, B = 1..8 and 11, prompts of different lengths (one session starts
 * empty), sessions joining and leaving between calls, prefill chunks of 1..12 tokens mixed with
 * decode steps, and 1 or 2 threads. The shapes are big enough that the 2-thread runs hand
 * matmuls and attention to the pool. Decode kernels and GEMM give different bits, and the batch
 * must keep every row on its own session's path: B = 11 decode rows span two groups of
 * NX_MV_MAX_T, and the mixed calls put chunks of 8 and 9 tokens (both sides of NX_MV_MAX_T)
 * next to decode steps. Sessions of one batch hold different KV cache types (session i: auto,
 * f16, bf16, f32 by i % 4), so every run type meets every cache type and batches mix them.
 */
#include "neox.h"
#include "test.h"

#include <stdint.h>

#define MAX_B 11
#define STEPS 5

/* n_head 2 or 4 (head size 128 / n_head): with 2 threads a prefill shares 4 heads out as items
 * of one hand-off, 2 heads the staged way (forward.c, staged_block). */
static void small_config(const char *preset, int n_head, nx_model_config *cfg) {
    nx_model_config c;
    if (nx_model_config_preset(preset, &c) != NX_OK) abort();
    c.n_layer = 2;
    c.hidden_size = 128;
    c.n_head = n_head;
    c.head_dim = 128 / n_head;
    c.intermediate_size = 512;
    c.vocab_size = 1000;
    c.max_position_embeddings = 160;
    if (c.rotary_dim) c.rotary_dim = 16;
    if (c.window_size) c.window_size = 8;   /* GPT-Neo: the local layer really cuts keys off */
    *cfg = c;
}

/* Prompt length of session i in a batch of B: 0 for session 2 (a fresh cache), else 50..86. */
static int prompt_len(int i, int B) { return i == 2 ? 0 : 50 + (7 * i + 3 * B) % 37; }
static int32_t token_at(int i, int t, int V) { return (int32_t)((t * 131 + i * 17 + 5) % V); }
/* KV cache type of session i (0: the model's default). */
static nx_dtype kv_of(int i) {
    static const nx_dtype k[] = {NX_DTYPE_INVALID, NX_F16, NX_BF16, NX_F32};
    return k[i % 4];
}

/* One family, one run type, one thread count: B = 1..8 and 11 with joins and leaves. */
static void check_batch(const nx_model *m, int n_threads, const char *what) {
    int V = nx_model_get_config(m)->vocab_size;
    nx_pool *pool = nx_pool_create(n_threads);
    nx_batch *b = NULL;
    CHECK(pool && nx_batch_create(m, MAX_B, 0, &b) == NX_OK);
    float *out = malloc(sizeof(float) * MAX_B * (size_t)V);
    CHECK(out);
    for (int B = 1; B <= MAX_B; B = B == 8 ? MAX_B : B + 1) {
        nx_session *ref[MAX_B] = {0}, *bat[MAX_B] = {0};
        int32_t prompt[128];
        for (int i = 0; i < B; i++) {
            nx_session_opts ro = {.n_ctx = 160, .n_threads = 1, .kv_type = kv_of(i)},
                            bo = {.n_ctx = 160, .pool = pool, .kv_type = kv_of(i)};
            CHECK(nx_session_create(m, &ro, &ref[i]) == NX_OK);
            CHECK(nx_session_create(m, &bo, &bat[i]) == NX_OK);
            int n = prompt_len(i, B);
            for (int t = 0; t < n; t++) prompt[t] = token_at(i, t, V);
            if (n) {
                CHECK(nx_session_forward(ref[i], prompt, n, NULL) == NX_OK);
                CHECK(nx_session_forward(bat[i], prompt, n, NULL) == NX_OK);
            }
        }
        for (int step = 0; step < STEPS; step++) {
            /* Session i sits out the steps where (i + step) % 4 == 3: the batch changes shape. */
            nx_session *act[MAX_B];
            int32_t ids[MAX_B];
            int idx[MAX_B], n = 0;
            for (int i = 0; i < B; i++) {
                if (B > 1 && (i + step) % 4 == 3) continue;
                act[n] = bat[i];
                idx[n] = i;
                ids[n] = token_at(i, 1000 + step, V);
                n++;
            }
            CHECK(nx_batch_decode(b, act, ids, n, step % 2 ? out : NULL) == NX_OK);
            for (int k = 0; k < n; k++) {
                int i = idx[k];
                CHECK(nx_session_forward(ref[i], &ids[k], 1, NULL) == NX_OK);
                const float *want = nx_session_logits(ref[i]), *got = nx_session_logits(bat[i]);
                CHECK(got && want);
                CHECK_EQ_INT(nx_session_n_past(bat[i]), nx_session_n_past(ref[i]));
                CHECK_MSG(memcmp(got, want, sizeof(float) * (size_t)V) == 0, "%s, %d threads, B %d, step %d, session %d",
                          what, n_threads, B, step, i);
                if (step % 2) CHECK(memcmp(out + (size_t)k * V, want, sizeof(float) * (size_t)V) == 0);
                CHECK(memcmp(nx_session_tokens(bat[i]), nx_session_tokens(ref[i]),
                             sizeof(int32_t) * (size_t)nx_session_n_past(ref[i])) == 0);
            }
            double mx = 0;   /* the comparison is about real numbers, not zeros */
            for (int v = 0; v < V; v++) mx = fmax(mx, fabs(nx_session_logits(act[0])[v]));
            CHECK(mx > 1e-3 && isfinite(mx));
        }
        for (int i = 0; i < B; i++) {
            nx_session_free(ref[i]);
            nx_session_free(bat[i]);
        }
    }
    free(out);
    nx_batch_free(b);
    nx_pool_free(pool);
}

/* nx_batch_forward with prefill chunks and decode steps mixed in one call: k_i tokens for
 * session i, from 1 to 12 (both sides of NX_MV_MAX_T, where the matmul changes path), against
 * nx_session_forward(ref_i, those tokens, k_i, NULL). */
static void check_mixed(const nx_model *m, int n_threads, const char *what) {
    enum { NS = 6, ROUNDS = 6 };
    static const int k_tab[] = {1, 5, 2, 12, 4, 3, 7, 8, 9};
    int V = nx_model_get_config(m)->vocab_size;
    nx_pool *pool = nx_pool_create(n_threads);
    nx_batch *b = NULL;
    CHECK(pool && nx_batch_create(m, NS, NS * 12, &b) == NX_OK);
    CHECK_EQ_INT(nx_batch_max_tokens(b), NS * 12);
    nx_session *ref[NS] = {0}, *bat[NS] = {0};
    for (int i = 0; i < NS; i++) {
        nx_session_opts ro = {.n_ctx = 160, .n_threads = 1, .kv_type = kv_of(i)},
                        bo = {.n_ctx = 160, .pool = pool, .kv_type = kv_of(i)};
        CHECK(nx_session_create(m, &ro, &ref[i]) == NX_OK);
        CHECK(nx_session_create(m, &bo, &bat[i]) == NX_OK);
    }
    float *out = malloc(sizeof(float) * NS * (size_t)V);
    CHECK(out);
    for (int r = 0; r < ROUNDS; r++) {
        nx_session *act[NS];
        int32_t ids[NS * 12];
        int nt[NS], idx[NS], n = 0, total = 0;
        for (int i = 0; i < NS; i++) {
            if ((i + r) % 5 == 4) continue;   /* sits this round out */
            act[n] = bat[i];
            idx[n] = i;
            nt[n] = k_tab[(i * 3 + r) % 9];
            for (int t = 0; t < nt[n]; t++) ids[total + t] = token_at(i, 100 * r + t, V);
            total += nt[n];
            n++;
        }
        CHECK(nx_batch_forward(b, act, ids, nt, n, r % 2 ? out : NULL) == NX_OK);
        for (int k = 0, off = 0; k < n; off += nt[k], k++) {
            int i = idx[k];
            CHECK(nx_session_forward(ref[i], ids + off, nt[k], NULL) == NX_OK);
            const float *want = nx_session_logits(ref[i]);
            CHECK_EQ_INT(nx_session_n_past(bat[i]), nx_session_n_past(ref[i]));
            CHECK_MSG(memcmp(nx_session_logits(bat[i]), want, sizeof(float) * (size_t)V) == 0,
                      "%s, %d threads, round %d, session %d (%d tokens)", what, n_threads, r, i, nt[k]);
            if (r % 2) CHECK(memcmp(out + (size_t)k * V, want, sizeof(float) * (size_t)V) == 0);
            CHECK(memcmp(nx_session_tokens(bat[i]), nx_session_tokens(ref[i]),
                         sizeof(int32_t) * (size_t)nx_session_n_past(ref[i])) == 0);
        }
    }
    for (int i = 0; i < NS; i++) {
        nx_session_free(ref[i]);
        nx_session_free(bat[i]);
    }
    free(out);
    nx_batch_free(b);
    nx_pool_free(pool);
}

static void check_family(const char *preset, int n_head) {
    static const nx_dtype types[] = {NX_F32, NX_BF16, NX_F16, NX_Q8_0, NX_Q4_0};
    nx_model_config cfg;
    small_config(preset, n_head, &cfg);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        nx_model *m = NULL;
        CHECK(nx_model_create_random(&cfg, 11, 0.05f, &m) == NX_OK);
        CHECK(nx_model_convert(m, types[t]) == NX_OK);
        char what[64];
        snprintf(what, sizeof what, "%s %s", preset, nx_dtype_name(types[t]));
        for (int th = 1; th <= 2 && !t_current_failed; th++) {
            check_batch(m, th, what);
            if (!t_current_failed) check_mixed(m, th, what);
        }
        nx_model_free(m);
        if (t_current_failed) return;
    }
}

static void test_neox(void) {
    check_family("pythia-14m", 2);
    if (!t_current_failed) check_family("pythia-14m", 4);
}
static void test_gptj(void) { check_family("gpt-j-6b", 2); }
static void test_neo(void) { check_family("gpt-neo-125m", 2); }

/* Bad input is an error naming the problem, and no session moves. */
static void test_errors(void) {
    nx_model_config cfg;
    small_config("pythia-14m", 2, &cfg);
    cfg.max_position_embeddings = 8;
    nx_model *m = NULL, *m2 = NULL;
    CHECK(nx_model_create_random(&cfg, 1, 0.05f, &m) == NX_OK);
    CHECK(nx_model_create_random(&cfg, 2, 0.05f, &m2) == NX_OK);
    nx_pool *pool = nx_pool_create(1);
    nx_session *s[4] = {0}, *other_model = NULL, *other_pool = NULL;
    nx_session_opts so = {.pool = pool};
    for (int i = 0; i < 4; i++) CHECK(nx_session_create(m, &so, &s[i]) == NX_OK);
    CHECK(nx_session_create(m2, &so, &other_model) == NX_OK);
    nx_session_opts own = {.n_threads = 1};
    CHECK(nx_session_create(m, &own, &other_pool) == NX_OK);
    nx_batch *b = NULL, *b2 = NULL;
    CHECK_EQ_INT(nx_batch_create(m, 0, 0, &b), NX_ERR_INVALID_ARG);
    CHECK_EQ_INT(nx_batch_create(NULL, 2, 0, &b), NX_ERR_INVALID_ARG);
    CHECK(nx_batch_create(m, 3, 0, &b) == NX_OK);
    CHECK_EQ_INT(nx_batch_max_seqs(b), 3);
    int32_t ids[4] = {1, 2, 3, 4};

    CHECK_EQ_INT(nx_batch_decode(b, s, ids, 0, NULL), NX_ERR_INVALID_ARG);
    CHECK_STR_CONTAINS(nx_last_error(), "0 sessions");
    CHECK_EQ_INT(nx_batch_decode(b, s, ids, 4, NULL), NX_ERR_INVALID_ARG);
    CHECK_STR_CONTAINS(nx_last_error(), "max_seqs = 3");
    CHECK_EQ_INT(nx_batch_decode(b, NULL, ids, 1, NULL), NX_ERR_INVALID_ARG);
    CHECK_EQ_INT(nx_batch_decode(b, s, NULL, 1, NULL), NX_ERR_INVALID_ARG);

    nx_session *mixed[2] = {s[0], other_model};
    CHECK_EQ_INT(nx_batch_decode(b, mixed, ids, 2, NULL), NX_ERR_INVALID_ARG);
    CHECK_STR_CONTAINS(nx_last_error(), "different model");
    nx_session *pools[2] = {s[0], other_pool};
    CHECK_EQ_INT(nx_batch_decode(b, pools, ids, 2, NULL), NX_ERR_INVALID_ARG);
    CHECK_STR_CONTAINS(nx_last_error(), "different thread pool");
    nx_session *dup[3] = {s[0], s[1], s[0]};
    CHECK_EQ_INT(nx_batch_decode(b, dup, ids, 3, NULL), NX_ERR_INVALID_ARG);
    CHECK_STR_CONTAINS(nx_last_error(), "sessions 0 and 2 are the same");
    nx_session *withnull[2] = {s[0], NULL};
    CHECK_EQ_INT(nx_batch_decode(b, withnull, ids, 2, NULL), NX_ERR_INVALID_ARG);

    int32_t bad[2] = {1, 1000};
    CHECK_EQ_INT(nx_batch_decode(b, s, bad, 2, NULL), NX_ERR_RANGE);
    CHECK_STR_CONTAINS(nx_last_error(), "token 1000 (session 1, index 0)");

    nx_session_opts small = {.n_batch = 2, .pool = pool};
    nx_session *s2 = NULL;
    CHECK(nx_session_create(m, &small, &s2) == NX_OK);
    nx_session *pair[2] = {s[0], s2};
    int nt[2] = {2, 3};
    CHECK_EQ_INT(nx_batch_forward(b, pair, ids, nt, 2, NULL), NX_ERR_INVALID_ARG);   /* 3 > s2's n_batch */
    CHECK_STR_CONTAINS(nx_last_error(), "session 1: 3 tokens (need 1 .. the session's n_batch = 2)");
    nx_session_free(s2);
    int nt4[2] = {2, 2};
    CHECK_EQ_INT(nx_batch_forward(b, s, ids, nt4, 2, NULL), NX_ERR_INVALID_ARG);   /* 4 tokens > max_tokens 3 */
    CHECK_STR_CONTAINS(nx_last_error(), "4 tokens in all exceed the batch's max_tokens 3");
    int nt0[2] = {1, 0};
    CHECK_EQ_INT(nx_batch_forward(b, s, ids, nt0, 2, NULL), NX_ERR_INVALID_ARG);
    CHECK_EQ_INT(nx_batch_forward(b, s, ids, NULL, 2, NULL), NX_ERR_INVALID_ARG);
    CHECK_EQ_INT(nx_batch_create(m, 4, 3, &b2), NX_ERR_INVALID_ARG);   /* max_tokens < max_seqs */

    int32_t fill[8] = {0};
    CHECK(nx_session_forward(s[1], fill, 8, NULL) == NX_OK);   /* s[1] is at its context limit */
    CHECK(nx_session_forward(s[0], fill, 3, NULL) == NX_OK);
    CHECK_EQ_INT(nx_batch_decode(b, s, ids, 2, NULL), NX_ERR_RANGE);
    CHECK_STR_CONTAINS(nx_last_error(), "session 1: context full");
    /* Nothing moved: s[0] still holds its 3 tokens and decodes normally. */
    CHECK_EQ_INT(nx_session_n_past(s[0]), 3);
    CHECK_EQ_INT(nx_session_n_past(s[2]), 0);
    nx_session *ok[2] = {s[0], s[2]};
    CHECK(nx_batch_decode(b, ok, ids, 2, NULL) == NX_OK);
    CHECK_EQ_INT(nx_session_n_past(s[0]), 4);
    CHECK_EQ_INT(nx_session_n_past(s[2]), 1);

    nx_batch_free(b);
    nx_batch_free(NULL);
    for (int i = 0; i < 4; i++) nx_session_free(s[i]);
    nx_session_free(other_model);
    nx_session_free(other_pool);
    nx_pool_free(pool);
    nx_model_free(m);
    nx_model_free(m2);
}

int main(void) {
    TEST_RUN(test_errors);
    TEST_RUN(test_neox);
    TEST_RUN(test_gptj);
    TEST_RUN(test_neo);
    TEST_END();
}
