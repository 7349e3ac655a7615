/* test_samples.c - GPT-NeoX sample order against numpy's RandomState and megatron-core's
 * helpers (tools/fixtures/make_data_fixtures.py), the spec's golden values, GPT-NeoX's
 * sample-count and split rules, and the blended stream of a train-data-paths config. */
#include "neox.h"
#include "test.h"

#include <stdint.h>

/* Spec golden values (docs TRAINING_AND_DATA.md section 1): RandomState(1234), doc_idx of
 * 2 epochs x 1000 documents shuffled, then shuffle_idx = arange(777) shuffled. */
static void test_golden_numpy_shuffle(void) {
    nx_mt19937 mt;
    nx_mt19937_seed(&mt, 1234);
    static int32_t doc[2000];
    for (int i = 0; i < 2000; i++) doc[i] = i % 1000;
    nx_mt19937_shuffle(&mt, doc, 2000, 4);
    const int32_t want_doc[8] = {748, 934, 33, 243, 928, 598, 837, 709};
    for (int i = 0; i < 8; i++) CHECK_EQ_INT(doc[i], want_doc[i]);
    static uint32_t sh[777];
    for (int i = 0; i < 777; i++) sh[i] = (uint32_t)i;
    nx_mt19937_shuffle(&mt, sh, 777, 4);
    const uint32_t want_sh[8] = {285, 374, 377, 55, 631, 519, 224, 347};
    for (int i = 0; i < 8; i++) CHECK_EQ_INT(sh[i], want_sh[i]);
    /* The same permutation with 64-bit elements (numpy's int64 shuffle_idx case). */
    nx_mt19937_seed(&mt, 1234);
    static uint64_t d64[2000];
    for (int i = 0; i < 2000; i++) d64[i] = (uint64_t)(i % 1000);
    nx_mt19937_shuffle(&mt, d64, 2000, 8);
    for (int i = 0; i < 8; i++) CHECK_EQ_INT(d64[i], want_doc[i]);
    /* MT19937 reference output: init_genrand(5489) first output is 3499211612. */
    nx_mt19937_seed(&mt, 5489);
    CHECK_EQ_INT(nx_mt19937_next32(&mt), 3499211612u);
}

static int read_i64s(FILE *f, const char *tag, int64_t *dst, uint64_t n) {
    char word[64];
    if (fscanf(f, " %63s", word) != 1 || strcmp(word, tag) != 0) return 0;
    for (uint64_t i = 0; i < n; i++) {
        long long v;
        if (fscanf(f, "%lld", &v) != 1) return 0;
        dst[i] = v;
    }
    return 1;
}

/* Every case of sample_cases.txt: the three arrays in full, and sample tokens. */
static void test_index_mappings_vs_numpy(void) {
    FILE *f = fopen(fixture_path("data/sample_cases.txt"), "r");
    CHECK(f);
    int cases = 0;
    for (;;) {
        char word[64], name[64], prefix[64];
        unsigned long long b, e, num, S, ndi;
        long long seq;
        unsigned seed;
        int epochs;
        CHECK(fscanf(f, " %63s", word) == 1);
        if (strcmp(word, "end") == 0) break;
        CHECK(strcmp(word, "case") == 0);
        CHECK(fscanf(f, "%63s %63s %llu %llu %lld %llu %u %d %llu %llu", name, prefix, &b, &e, &seq, &num, &seed,
                     &epochs, &S, &ndi) == 10);
        char rel[128];
        snprintf(rel, sizeof rel, "data/%s", prefix);
        nx_indexed *ds = NULL;
        CHECK_MSG(nx_indexed_open(fixture_path(rel), &ds) == NX_OK, "%s", nx_last_error());
        nx_sample_opts o = {.seq_length = seq, .num_samples = num, .seed = seed, .doc_begin = b, .doc_end = e};
        nx_sample_index *si = NULL;
        CHECK_MSG(nx_sample_index_build(ds, &o, &si) == NX_OK, "%s", nx_last_error());
        CHECK_EQ_INT(nx_sample_index_epochs(si), epochs);
        CHECK_EQ_INT(nx_sample_index_count(si), S);
        int64_t *want = calloc(2 * (S + 1) + ndi + 1, sizeof *want);
        uint64_t n;
        const int32_t *di = nx_sample_index_doc_idx(si, &n);
        CHECK_EQ_INT(n, ndi);
        CHECK(read_i64s(f, "doc_idx", want, ndi));
        for (uint64_t i = 0; i < ndi; i++) CHECK_MSG(di[i] == want[i], "%s doc_idx[%llu]", name, (unsigned long long)i);
        const int64_t *sx = nx_sample_index_sample_idx(si, &n);
        CHECK_EQ_INT(n, S + 1);
        CHECK(read_i64s(f, "sample_idx", want, 2 * (S + 1)));
        for (uint64_t i = 0; i < 2 * (S + 1); i++)
            CHECK_MSG(sx[i] == want[i], "%s sample_idx flat[%llu]", name, (unsigned long long)i);
        CHECK(read_i64s(f, "shuffle_idx", want, S));
        for (uint64_t i = 0; i < S; i++)
            CHECK_MSG(nx_sample_index_shuffle_at(si, i) == (uint64_t)want[i], "%s shuffle_idx[%llu]", name,
                      (unsigned long long)i);
        int k;
        CHECK(fscanf(f, " samples %d", &k) == 1);
        int32_t *got = calloc((size_t)seq + 1, sizeof *got);
        for (int s = 0; s < k; s++) {
            unsigned long long idx;
            CHECK(fscanf(f, "%llu", &idx) == 1);
            CHECK(nx_sample_index_get(si, idx, got) == NX_OK);
            for (long long t = 0; t <= seq; t++) {
                int v;
                CHECK(fscanf(f, "%d", &v) == 1);
                CHECK_MSG(got[t] == v, "%s sample %llu token %lld: %d vs %d", name, idx, t, got[t], v);
            }
        }
        CHECK(nx_sample_index_get(si, S, got) == NX_ERR_RANGE);
        free(got);
        free(want);
        nx_sample_index_free(si);
        nx_indexed_free(ds);
        cases++;
    }
    fclose(f);
    CHECK(cases >= 4);
}

static void test_neox_counting_rules(void) {
    /* Pythia: 143000 steps x 1024 with train-data-paths -> 147,164,160 (the index-map file name). */
    double w1[1] = {1.0}, norm[3];
    uint64_t per[3];
    CHECK(nx_data_weighted_num_samples(143000ull * 1024, w1, 1, norm, per) == NX_OK);
    CHECK_EQ_INT(per[0], 147164160);
    double w3[3] = {2.0, 1.0, 1.0};
    CHECK(nx_data_weighted_num_samples(1000, w3, 3, norm, per) == NX_OK);
    CHECK_EQ_INT(per[0], 503);   /* ceil(1000 * 0.5 * 1.005) = ceil(502.5) */
    CHECK_EQ_INT(per[1], 252);   /* ceil(251.25) */
    double w0[1] = {0.0};
    CHECK(nx_data_weighted_num_samples(10, w0, 1, norm, per) == NX_ERR_INVALID_ARG);
    /* get_train_valid_test_split_ (values from Python, round-half-even). */
    struct { double w[3]; uint64_t n, b, e; } sp[] = {
        {{969, 30, 1}, 50, 0, 48}, {{8, 1, 1}, 50, 0, 40}, {{1, 1, 1}, 5, 0, 1},
        {{969, 30, 1}, 2000, 0, 1938}, {{1, 1, 0}, 5, 0, 3}, {{1, 1, 0}, 7, 0, 3}, {{969, 30, 1}, 100, 0, 97},
    };
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
        uint64_t b, e;
        nx_data_train_split(sp[i].w, sp[i].n, &b, &e);
        CHECK_MSG(b == sp[i].b && e == sp[i].e, "split case %zu: [%llu, %llu)", i, (unsigned long long)b,
                  (unsigned long long)e);
    }
}

/* A blended train-data-paths config: step tokens against GPT-NeoX's BlendableDataset. */
static void test_blended_stream(void) {
    nx_data_config cfg;
    CHECK_MSG(nx_data_config_load(fixture_path("data/blend_config.json"), &cfg) == NX_OK, "%s", nx_last_error());
    CHECK_EQ_INT(cfg.n_paths, 2);
    CHECK_EQ_INT(cfg.seq_length, 8);
    CHECK_EQ_INT(cfg.global_batch, 4);
    CHECK_EQ_INT(cfg.train_iters, 6);
    nx_data_stream *s = NULL;
    CHECK_MSG(nx_data_stream_open(&cfg, &s) == NX_OK, "%s", nx_last_error());
    FILE *f = fopen(fixture_path("data/blend_expected.txt"), "r");
    CHECK(f);
    unsigned long long size;
    CHECK(fscanf(f, " size %llu", &size) == 1);
    CHECK_EQ_INT(nx_data_stream_count(s), size);
    int32_t batch[4 * 9];
    for (int step = 0; step < 6; step++) {
        CHECK(nx_data_stream_step(s, (uint64_t)step, batch) == NX_OK);
        for (int k = 0; k < 4; k++) {
            int st, dsi;
            unsigned long long smp;
            CHECK(fscanf(f, "%d %d %llu", &st, &dsi, &smp) == 3);
            CHECK_EQ_INT(st, step);
            int got_ds;
            uint64_t got_smp;
            CHECK(nx_data_stream_locate(s, (uint64_t)(step * 4 + k), &got_ds, &got_smp) == NX_OK);
            CHECK_EQ_INT(got_ds, dsi);
            CHECK_EQ_INT(got_smp, smp);
            for (int t = 0; t < 9; t++) {
                int v;
                CHECK(fscanf(f, "%d", &v) == 1);
                CHECK_MSG(batch[k * 9 + t] == v, "step %d row %d token %d: %d vs %d", step, k, t, batch[k * 9 + t], v);
            }
        }
    }
    fclose(f);
    nx_data_stream_free(s);
    nx_data_config_clear(&cfg);
}

/* data-path mode: the train split's documents, no 1.005 factor. */
static void test_data_path_split(void) {
    char json[700];
    snprintf(json, sizeof json, "{\"data-path\": \"%s\", \"split\": \"8,1,1\", \"seq-length\": 12, "
             "\"train-batch-size\": 5, \"train-iters\": 40, \"seed\": 42}", fixture_path("data/samples"));
    nx_data_config cfg;
    CHECK_MSG(nx_data_config_parse(json, strlen(json), "cfg", &cfg) == NX_OK, "%s", nx_last_error());
    nx_data_stream *s = NULL;
    CHECK_MSG(nx_data_stream_open(&cfg, &s) == NX_OK, "%s", nx_last_error());
    nx_indexed *ds = NULL;
    CHECK(nx_indexed_open(fixture_path("data/samples"), &ds) == NX_OK);
    nx_sample_opts o = {.seq_length = 12, .num_samples = 200, .seed = 42, .doc_begin = 0, .doc_end = 40};
    nx_sample_index *si = NULL;
    CHECK(nx_sample_index_build(ds, &o, &si) == NX_OK);
    CHECK_EQ_INT(nx_data_stream_count(s), nx_sample_index_count(si));
    int32_t a[13], b[13];
    for (uint64_t i = 0; i < 200; i += 7) {
        CHECK(nx_data_stream_sample(s, i, a) == NX_OK);
        CHECK(nx_sample_index_get(si, i, b) == NX_OK);
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
    nx_sample_index_free(si);
    nx_indexed_free(ds);
    nx_data_stream_free(s);
    nx_data_config_clear(&cfg);
}

static void test_bad_configs(void) {
    struct { const char *json, *needle; } bad[] = {
        {"[1,2]", "object"},
        {"{\"seq-length\": 8, \"train-batch-size\": 2}", "data-path"},
        {"{\"data-path\": \"x\", \"train-batch-size\": 2}", "seq-length"},
        {"{\"data-path\": \"x\", \"seq-length\": 8}", "train-batch-size"},
        {"{\"data-path\": \"x\", \"seq-length\": \"8\", \"train-batch-size\": 2}", "integer"},
        {"{\"data-path\": \"x\", \"seq-length\": -8, \"train-batch-size\": 2}", ">= 1"},
        {"{\"data-path\": \"x\", \"seq-length\": 8, \"train-batch-size\": 2, \"split\": \"a,b\"}", "split"},
        {"{\"train-data-paths\": [\"a\", \"b\"], \"train-data-weights\": [1], \"seq-length\": 8, \"train-batch-size\": 2}", "one number"},
        {"{\"data-path\": \"x\", \"seq-length\": 8, \"train-batch-size\": 2, \"seed\": 5000000000}", "2^32"},
        {"{\"data-path\": \"x\", \"seq-length\": 8, ", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nx_data_config cfg;
        nx_status st = nx_data_config_parse(bad[i].json, strlen(bad[i].json), "c.json", &cfg);
        CHECK_MSG(st != NX_OK, "config %zu accepted", i);
        CHECK_MSG(strstr(nx_last_error(), bad[i].needle), "config %zu: \"%s\" lacks \"%s\"", i, nx_last_error(), bad[i].needle);
    }
    /* A dataset with no tokens cannot make samples; a zero-size item inside is fine. */
    nx_indexed *ds = NULL;
    CHECK(nx_indexed_open(fixture_path("data/i32_multi"), &ds) == NX_OK);
    nx_sample_opts o = {.seq_length = 4, .num_samples = 10, .seed = 1, .doc_begin = 2, .doc_end = 2};
    nx_sample_index *si = NULL;
    CHECK(nx_sample_index_build(ds, &o, &si) == NX_ERR_RANGE);
    o.doc_begin = 0; o.doc_end = 0;
    CHECK(nx_sample_index_build(ds, &o, &si) == NX_OK);
    nx_sample_index_free(si);
    o.doc_end = 1000;
    CHECK(nx_sample_index_build(ds, &o, &si) == NX_ERR_RANGE);
    nx_indexed_free(ds);
}

int main(void) {
    TEST_RUN(test_golden_numpy_shuffle);
    TEST_RUN(test_index_mappings_vs_numpy);
    TEST_RUN(test_neox_counting_rules);
    TEST_RUN(test_blended_stream);
    TEST_RUN(test_data_path_split);
    TEST_RUN(test_bad_configs);
    TEST_END();
}
