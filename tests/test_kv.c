/*
 * test_kv.c - the 16-bit KV caches (nx_session_opts.kv_type = F16, BF16) against the fp32 cache.
 *
 * The fp32 cache is the oracle: test_model.c checks it against Hugging Face, and a 16-bit
 * cache only rounds each cached key and value once (keys after the rotary embedding). So:
 *  - logits with an f16 / bf16 cache stay within a measured tolerance of the fp32 cache's on
 *    the fixture models of all three families (head sizes 8, 16, 20) and the trained eval/lm,
 *    in one prefill and token by token, and really differ (the cache is really rounded);
 *  - for every cache type, results are bit-identical for 1, 2 and 3 threads and for any split
 *    of the input into calls (n_batch chunks cut the attention groups elsewhere), and a prompt
 *    decoded token by token matches its prefill to fp32 rounding (attention is identical; only
 *    the matmul paths differ), on a model big enough that attention is handed to the pool;
 *  - auto picks f32 for fp32 weights and bf16 otherwise, the cache takes half the memory, and
 *    other types are refused with a clear error.
 * All of it runs again under every other kernel variant the CPU has (child processes).
 * test_batch.c covers batches of sessions with mixed cache types, test_kernels.c the kernels.
 */
#include "kernels/kernels.h"
#include "neox.h"
#include "test.h"
#include "test_variants.h"

#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#define NLEN(a) (sizeof(a) / sizeof((a)[0]))

enum { T = 40 };

/* Logits of T fixed tokens, in one prefill (full) and token by token (inc). */
static int run_logits(const nx_model *m, nx_dtype kv, int threads, int n_batch, float *full, float *inc) {
    int V = nx_model_get_config(m)->vocab_size;
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 37 + 11) % V);
    nx_session_opts so = {.n_ctx = 64, .n_threads = threads, .n_batch = n_batch, .kv_type = kv};
    nx_session *s = NULL;
    if (nx_session_create(m, &so, &s) != NX_OK) return 0;
    int ok = nx_session_forward(s, ids, T, full) == NX_OK;
    nx_session_reset(s);
    for (int t = 0; t < T && ok; t++) ok = nx_session_forward(s, &ids[t], 1, inc + (size_t)t * V) == NX_OK;
    nx_session_free(s);
    return ok;
}

/* Largest |a - b| relative to the largest |b| (the logits' scale). */
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    return d / (mx > 0 ? mx : 1);
}

/* Measured (max |Δlogit| / max |logit|, prefill and decode alike): the trained eval/lm f16 1.9e-5,
 * bf16 1.0e-4; the random-weight NeoX and GPT-J fixtures up to f16 6.1e-4, bf16 4.4e-3; GPT-Neo's
 * unscaled attention on random weights amplifies to f16 3.0e-3, bf16 3.4e-2. The tolerances are
 * about 3-5x that; an error of 0 would mean the cache was not rounded. */
static void test_kv_vs_f32(void) {
    const char *models[] = {"eval/lm", "models/neox_a", "models/neox_c", "models/neox_d", "models/gptj_a", "models/neo_a"};
    const double tols[][2] = {{1e-4, 5e-4}, {2e-3, 1.5e-2}, {2e-3, 1.5e-2}, {2e-3, 1.5e-2}, {2e-3, 1.5e-2}, {1e-2, 0.1}};
    const nx_dtype kvs[] = {NX_F16, NX_BF16};
    for (size_t mi = 0; mi < NLEN(models); mi++) {
        nx_model *m = NULL;
        CHECK_MSG(nx_model_load(fixture_path(models[mi]), NULL, &m) == NX_OK, "%s: %s", models[mi], nx_last_error());
        CHECK(nx_model_weight_dtype(m) == NX_F32);
        size_t n = (size_t)T * (size_t)nx_model_get_config(m)->vocab_size;
        float *rf = malloc(n * sizeof(float)), *ri = malloc(n * sizeof(float));
        float *full = malloc(n * sizeof(float)), *inc = malloc(n * sizeof(float));
        CHECK(rf && ri && full && inc);
        CHECK(run_logits(m, NX_DTYPE_INVALID, 1, 0, rf, ri));   /* auto on fp32 weights: the fp32 cache */
        for (size_t k = 0; k < NLEN(kvs); k++) {
            CHECK(run_logits(m, kvs[k], 1, 0, full, inc));
            double df = rel_diff(full, rf, n), di = rel_diff(inc, ri, n);
            printf("     %-14s KV %-4s prefill %.2e decode %.2e (tolerance %g)\n", models[mi], nx_dtype_name(kvs[k]), df,
                   di, tols[mi][k]);
            CHECK_MSG(df <= tols[mi][k] && di <= tols[mi][k], "%s KV %s off by %g / %g", models[mi], nx_dtype_name(kvs[k]), df, di);
            CHECK_MSG(df > 0 && di > 0, "%s KV %s: identical to the fp32 cache", models[mi], nx_dtype_name(kvs[k]));
        }
        free(rf); free(ri); free(full); free(inc);
        nx_model_free(m);
        if (t_current_failed) return;
    }
}

/* A random model whose attention is big enough to go to the pool (2 heads of 64, 3 layers). */
static nx_model *random_model(const char *preset, nx_dtype wt) {
    nx_model_config c;
    nx_model *m = NULL;
    if (nx_model_config_preset(preset, &c) != NX_OK) return NULL;
    c.n_layer = 3;
    c.hidden_size = 128;
    c.n_head = 2;
    c.head_dim = 64;
    c.intermediate_size = 256;
    c.vocab_size = 300;
    c.max_position_embeddings = 64;
    if (c.rotary_dim) c.rotary_dim = 16;
    if (c.window_size) c.window_size = 9;   /* GPT-Neo: local layers cut keys off mid-prompt */
    if (nx_model_create_random(&c, 7, 0.05f, &m) != NX_OK) return NULL;
    if (nx_model_convert(m, wt) != NX_OK) {
        nx_model_free(m);
        return NULL;
    }
    return m;
}

/* Decode vs prefill, per cache type, on 16-bit weights: the two matmul paths differ by fp32
 * rounding, which can move a key or value across a 16-bit rounding boundary (one f16/bf16 ulp).
 * Measured worst (GPT-Neo's unscaled attention amplifies most): f32 1.5e-6, f16 8.0e-5, bf16
 * 9.2e-4, Q8_0 6.4e-5. */
static const double k_dec_tol[] = {1e-5, 3e-4, 3e-3, 3e-4};

static void test_kv_determinism(void) {
    const char *presets[] = {"pythia-14m", "gpt-neo-125m", "gpt-j-6b"};
    const nx_dtype kvs[] = {NX_F32, NX_F16, NX_BF16, NX_Q8_0}, wts[] = {NX_BF16, NX_Q8_0};
    for (size_t pi = 0; pi < NLEN(presets); pi++)
        for (size_t wi = 0; wi < NLEN(wts); wi++) {
            nx_model *m = random_model(presets[pi], wts[wi]);
            CHECK(m);
            size_t n = (size_t)T * (size_t)nx_model_get_config(m)->vocab_size;
            float *f1 = malloc(n * sizeof(float)), *i1 = malloc(n * sizeof(float));
            float *f2 = malloc(n * sizeof(float)), *i2 = malloc(n * sizeof(float));
            CHECK(f1 && i1 && f2 && i2);
            for (size_t k = 0; k < NLEN(kvs); k++) {
                const char *kn = nx_dtype_name(kvs[k]), *wn = nx_dtype_name(wts[wi]);
                CHECK(run_logits(m, kvs[k], 1, 0, f1, i1));
                for (int th = 2; th <= 3; th++) {
                    CHECK(run_logits(m, kvs[k], th, 0, f2, i2));
                    CHECK_MSG(memcmp(f1, f2, n * sizeof(float)) == 0 && memcmp(i1, i2, n * sizeof(float)) == 0,
                              "%s %s KV %s: 1 and %d threads differ", presets[pi], wn, kn, th);
                }
                /* chunks of 10 rows (all on the GEMM path, > NX_MV_MAX_T): groups of 8 cut at other rows */
                CHECK(run_logits(m, kvs[k], 2, 10, f2, i2));
                CHECK_MSG(memcmp(f1, f2, n * sizeof(float)) == 0, "%s %s KV %s: n_batch 10 differs from one prefill",
                          presets[pi], wn, kn);
                if (wts[wi] == NX_BF16) {   /* block weights also quantize activations differently per path */
                    double d = rel_diff(i1, f1, n);
                    printf("     %-14s KV %-4s decode vs prefill %.2e (tolerance %g)\n", presets[pi], kn, d, k_dec_tol[k]);
                    CHECK_MSG(d <= k_dec_tol[k], "%s KV %s: decode vs prefill %g", presets[pi], kn, d);
                }
            }
            free(f1); free(i1); free(f2); free(i2);
            nx_model_free(m);
            if (t_current_failed) return;
        }
}

static void test_kv_auto_and_errors(void) {
    nx_model *m32 = random_model("pythia-14m", NX_F32), *mq = random_model("pythia-14m", NX_Q4_0);
    CHECK(m32 && mq);
    nx_session *s = NULL, *h = NULL;
    nx_session_opts so = {.n_ctx = 32, .n_threads = 1};
    CHECK(nx_session_create(m32, &so, &s) == NX_OK);
    CHECK(nx_session_kv_type(s) == NX_F32);
    size_t b32 = nx_session_kv_bytes(s);
    CHECK(b32 == 2u * 3 * 2 * 32 * 64 * 4);   /* K and V, 3 layers x 2 heads x 32 positions x 64 dims */
    CHECK(nx_session_kv_read_bytes(s, 10) == 2u * 3 * 2 * 10 * 64 * 4);
    nx_session_free(s);
    CHECK(nx_session_create(mq, &so, &s) == NX_OK);
    CHECK(nx_session_kv_type(s) == NX_BF16);
    CHECK(nx_session_kv_bytes(s) * 2 == b32);
    nx_session_free(s);
    so.kv_type = NX_F16;
    CHECK(nx_session_create(mq, &so, &h) == NX_OK);
    CHECK(nx_session_kv_type(h) == NX_F16);
    nx_session_free(h);
    const nx_dtype bad[] = {NX_Q4_0, NX_F64, NX_I8, NX_DTYPE_COUNT};
    for (size_t i = 0; i < NLEN(bad); i++) {
        so.kv_type = bad[i];
        s = (nx_session *)&so;   /* must be reset to NULL on error */
        CHECK_EQ_INT(nx_session_create(m32, &so, &s), NX_ERR_INVALID_ARG);
        CHECK(s == NULL);
        CHECK_STR_CONTAINS(nx_last_error(), "kv_type");
        CHECK_STR_CONTAINS(nx_last_error(), "is not F32, F16, BF16 or Q8_0");
    }
    CHECK(nx_kv_type_from_name("BF16") == NX_BF16 && nx_kv_type_from_name("f16") == NX_F16 &&
          nx_kv_type_from_name("fp32") == NX_F32);
    CHECK(nx_kv_type_from_name("q8") == NX_Q8_0);
    CHECK(nx_kv_type_from_name("q4") == NX_DTYPE_INVALID && nx_kv_type_from_name("") == NX_DTYPE_INVALID &&
          nx_kv_type_from_name(NULL) == NX_DTYPE_INVALID);
    nx_model_free(m32);
    nx_model_free(mq);
}

/* The Q8_0 cache against the fp32 cache on fp32 weights with 64-dim heads (Q8_0 blocks run
 * along a head vector, so the head size must be a multiple of 32: the 16-dim fixtures are
 * refused). Measured (max |Δlogit| / max |logit|, prefill and decode alike): Pythia 4.3e-3,
 * GPT-J 4.7e-3, GPT-Neo (unscaled attention) 1.5e-2, about what the bf16 cache gives on the
 * same kind of random models; the tolerances are about 3x that. */
static void test_kv_q8(void) {
    const char *presets[] = {"pythia-14m", "gpt-j-6b", "gpt-neo-125m"};
    const double tols[] = {1.5e-2, 1.5e-2, 5e-2};
    for (size_t pi = 0; pi < NLEN(presets); pi++) {
        nx_model *m = random_model(presets[pi], NX_F32);
        CHECK(m);
        size_t n = (size_t)T * (size_t)nx_model_get_config(m)->vocab_size;
        float *rf = malloc(n * sizeof(float)), *ri = malloc(n * sizeof(float));
        float *full = malloc(n * sizeof(float)), *inc = malloc(n * sizeof(float));
        CHECK(rf && ri && full && inc);
        CHECK(run_logits(m, NX_F32, 1, 0, rf, ri));
        CHECK(run_logits(m, NX_Q8_0, 1, 0, full, inc));
        double df = rel_diff(full, rf, n), di = rel_diff(inc, ri, n);
        printf("     %-14s KV Q8_0 prefill %.2e decode %.2e (tolerance %g)\n", presets[pi], df, di, tols[pi]);
        CHECK_MSG(df <= tols[pi] && di <= tols[pi], "%s KV Q8_0 off by %g / %g", presets[pi], df, di);
        CHECK_MSG(df > 0 && di > 0, "%s KV Q8_0: identical to the fp32 cache", presets[pi]);
        free(rf); free(ri); free(full); free(inc);
        nx_model_free(m);
    }
    nx_model *small = NULL;
    CHECK(nx_model_load(fixture_path("models/neox_a"), NULL, &small) == NX_OK);
    nx_session_opts so = {.n_ctx = 16, .n_threads = 1, .kv_type = NX_Q8_0};
    nx_session *s = (nx_session *)&so;
    CHECK_EQ_INT(nx_session_create(small, &so, &s), NX_ERR_UNSUPPORTED);
    CHECK(s == NULL);
    CHECK_STR_CONTAINS(nx_last_error(), "multiple of 32");
    nx_model_free(small);
}

/* GPT-Neo's local layers read at most their window of the cache. */
static void test_kv_read_bytes_local(void) {
    nx_model *m = random_model("gpt-neo-125m", NX_F32);
    CHECK(m);
    nx_session *s = NULL;
    nx_session_opts so = {.n_ctx = 32, .n_threads = 1, .kv_type = NX_BF16};
    CHECK(nx_session_create(m, &so, &s) == NX_OK);
    /* layers global, local, global (the preset alternates): 20 + 9 + 20 positions at 20 keys */
    CHECK(nx_session_kv_read_bytes(s, 20) == 2u * (20 + 9 + 20) * 2 * 64 * 2);
    CHECK(nx_session_kv_read_bytes(s, 5) == 2u * 3 * 5 * 2 * 64 * 2);
    nx_session_free(s);
    nx_model_free(m);
}

/* Everything again under the other kernel variants (test_variants.h). */
static const char *g_self;
static void test_other_kernel_variants(void) {
    int ran = 0;
    test_rerun_other_variants(g_self, "--one-variant", &ran);
    printf("     re-run under %d other kernel variant(s)\n", ran);
}

int main(int argc, char **argv) {
    g_self = argv[0];
    printf("kernel variant: %s\n", nx__kernels()->name);
    TEST_RUN(test_kv_vs_f32);
    TEST_RUN(test_kv_determinism);
    TEST_RUN(test_kv_auto_and_errors);
    TEST_RUN(test_kv_q8);
    TEST_RUN(test_kv_read_bytes_local);
    if (argc == 1) TEST_RUN(test_other_kernel_variants);
    TEST_END();
}
