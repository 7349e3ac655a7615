/* test_serve_queue.c - the request queue's limits, deterministically: a server core with no
 * compute thread, so queued requests stay queued. A full queue answers 503 (retry later), a
 * request larger than the whole queue 400, a stopping server 503; releasing a queued request
 * (its client left) unlinks it and frees its place. */
#include "serve/serve_int.h"
#include "test.h"

static nx_ids *one_prompt(void) {
    nx_ids *p = nx__calloc(1, sizeof *p);
    p->data = nx__malloc(2 * sizeof(int32_t));
    p->data[0] = 5;
    p->data[1] = 6;
    p->len = p->cap = 2;
    return p;
}

static srv_params params(int n) {
    srv_params p;
    memset(&p, 0, sizeof p);
    p.sp = nx_sampler_defaults();
    p.max_tokens = 4;
    p.logprobs = -1;
    p.n = n;
    p.stops[p.n_stops++] = nx__strdup("stop");   /* owned by the request from now on */
    return p;
}

static void test_queue_limits(void) {
    nx_server_core c;
    memset(&c, 0, sizeof c);
    c.max_queue = 3;
    c.model_name = "m";
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.work, NULL);
    srv_err err = {0};
    srv_params p = params(2);
    srv_req *a = srv_submit(&c, SRV_COMPLETION, &p, one_prompt(), 1, NULL, &err);
    CHECK(a != NULL);
    CHECK_EQ_INT(c.n_waiting, 2);
    p = params(2);
    srv_req *b = srv_submit(&c, SRV_COMPLETION, &p, one_prompt(), 1, NULL, &err);   /* 2 + 2 > 3 */
    CHECK(b == NULL);
    CHECK_EQ_INT(err.http, 503);
    CHECK(!strcmp(err.type, "server_busy"));
    p = params(4);
    b = srv_submit(&c, SRV_COMPLETION, &p, one_prompt(), 1, NULL, &err);   /* never fits */
    CHECK(b == NULL);
    CHECK_EQ_INT(err.http, 400);
    CHECK(!strcmp(err.param, "n"));
    p = params(1);
    b = srv_submit(&c, SRV_CHAT, &p, one_prompt(), 1, NULL, &err);   /* fits: 3 waiting */
    CHECK(b != NULL);
    CHECK_EQ_INT(c.n_waiting, 3);
    srv_req_release(&c, a);   /* the client left: its places are free again */
    CHECK_EQ_INT(c.n_waiting, 1);
    CHECK(c.qhead == b && c.qtail == b);
    p = params(2);
    a = srv_submit(&c, SRV_COMPLETION, &p, one_prompt(), 1, NULL, &err);
    CHECK(a != NULL);
    CHECK(c.qhead == b && c.qtail == a);
    srv_req_release(&c, a);
    srv_req_release(&c, b);
    CHECK(c.qhead == NULL && c.qtail == NULL && c.n_waiting == 0);
    c.stopping = true;
    p = params(1);
    a = srv_submit(&c, SRV_COMPLETION, &p, one_prompt(), 1, NULL, &err);
    CHECK(a == NULL);
    CHECK_EQ_INT(err.http, 503);
    CHECK_STR_CONTAINS(err.msg, "shutting down");
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.work);
}

/* Python's bytes.decode("utf-8", "replace"), which HF decode uses: one U+FFFD per maximal
 * invalid subpart (values checked in CPython 3.11). */
static void test_utf8_lossy(void) {
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"abc", 3, "abc"},
        {"\xff", 1, "\xef\xbf\xbd"},
        {"\xe2\x82", 2, "\xef\xbf\xbd"},                            /* truncated 3-byte: one */
        {"\xe2\x82" "a", 3, "\xef\xbf\xbd" "a"},
        {"\xe2\x82\xac", 3, "\xe2\x82\xac"},                        /* euro sign */
        {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                /* overlong: two */
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate: three */
        {"\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf0\x9f\x98", 3, "\xef\xbf\xbd"},
        {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"},
        {"a\x80" "b", 3, "a\xef\xbf\xbd" "b"},
        {"x\0y", 3, "x\0y"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        nx_buf b = {0};
        srv_utf8_lossy(&b, cases[i].in, cases[i].n);
        size_t want = i == sizeof cases / sizeof *cases - 1 ? 3 : strlen(cases[i].out);
        CHECK_MSG(b.len == want && memcmp(b.data, cases[i].out, want) == 0, "case %zu", i);
        nx__buf_free(&b);
    }
}

int main(void) {
    TEST_RUN(test_queue_limits);
    TEST_RUN(test_utf8_lossy);
    TEST_END();
}
