/* test_serve_fuzz.c - thousands of hostile request bodies against a live server (seeded, so
 * a failure reproduces): random bytes, random JSON, valid requests with one field replaced by
 * a random value of any type, huge and tiny numbers, deep nesting, invalid UTF-8, truncated
 * bodies. Every request must get an answer: 200 with well-formed JSON (or an SSE stream that
 * ends with [DONE]), or an error status with an OpenAI error object. The server must still
 * answer correctly afterwards. Run under ASan/UBSan by `make test`. */
#define _GNU_SOURCE 1   /* strcasestr, in http_client.h */
#include "neox.h"
#include "serve/http_client.h"
#include "test.h"

#include <jansson.h>
#include <stdint.h>

static uint64_t rng_state = 0x5eed5eed12345ull;
static uint32_t rnd(void) {   /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}
static uint32_t rndn(uint32_t n) { return n ? rnd() % n : 0; }

typedef struct sbuf {
    char *d;
    size_t n, cap;
} sbuf;
static void sput(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 256;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, s, n);
    b->n += n;
    b->d[b->n] = 0;
}
static void sputs(sbuf *b, const char *s) { sput(b, s, strlen(s)); }

static const char *const nasty_numbers[] = {
    "0", "-0", "1", "-1", "2", "16", "255", "256", "257", "511", "512", "65536", "2147483647", "2147483648",
    "-2147483649", "9223372036854775807", "-9223372036854775808", "18446744073709551616",
    "123456789012345678901234567890", "1e999", "-1e999", "1e-400", "0.5", "1.5", "-0.0", "3.4e38", "1e308",
    "0.0000001", "2.0", "NaN", "Infinity", "1.0e+2"};
static const char *const nasty_strings[] = {
    "\"\"", "\"a\"", "\"<|endoftext|>\"", "\"\\u0000\"", "\"\\ud800\"", "\"\\udfff\\ud800\"", "\"\xff\xfe\"",
    "\"\xc0\xaf\"", "\"\xe2\x82\"", "\"\xf4\x90\x80\x80\"", "\"caf\xc3\xa9\"", "\"\\n\\nUser:\"",
    "\"\\\"\"", "\"\xf0\x9f\x98\x80 emoji\"", "\"x\\u1234y\"", "\"user\"", "\"system\"", "\"text\""};

static void rand_json(sbuf *b, int depth) {
    switch (rndn(depth > 5 ? 4 : 7)) {
    case 0: sputs(b, nasty_numbers[rndn(sizeof nasty_numbers / sizeof *nasty_numbers)]); break;
    case 1: sputs(b, nasty_strings[rndn(sizeof nasty_strings / sizeof *nasty_strings)]); break;
    case 2: sputs(b, rndn(3) == 0 ? "null" : rndn(2) ? "true" : "false"); break;
    case 3: {
        char t[16];
        snprintf(t, sizeof t, "%u", rndn(600));
        sputs(b, t);
        break;
    }
    case 4: case 5: {
        sputs(b, "[");
        int n = (int)rndn(5);
        for (int i = 0; i < n; i++) {
            if (i) sputs(b, ",");
            rand_json(b, depth + 1);
        }
        sputs(b, "]");
        break;
    }
    default: {
        static const char *const keys[] = {"prompt", "messages", "role", "content", "type", "text", "max_tokens",
                                           "n", "stop", "tokens", "x", ""};
        sputs(b, "{");
        int n = (int)rndn(4);
        for (int i = 0; i < n; i++) {
            if (i) sputs(b, ",");
            sputs(b, "\"");
            sputs(b, keys[rndn(sizeof keys / sizeof *keys)]);
            sputs(b, "\":");
            rand_json(b, depth + 1);
        }
        sputs(b, "}");
    }
    }
}

static const char *const fields[] = {"prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
                                     "stop", "n", "echo", "logprobs", "stream", "stream_options", "messages",
                                     "ignore_eos", "repetition_penalty", "top_logprobs", "model", "best_of",
                                     "logit_bias", "max_completion_tokens", "add_special_tokens", "tokens"};

/* A valid request for the endpoint with one field replaced by random JSON. */
static void mutated_request(sbuf *b, int ep) {
    const char *base_c[] = {"\"prompt\":\"The quick brown fox\"", "\"prompt\":[359,222,442]",
                            "\"prompt\":[\"a\",\"b c\"]", "\"prompt\":[[5,6],[7]]"};
    const char *fld = fields[rndn(sizeof fields / sizeof *fields)];
    sputs(b, "{");
    if (ep == 0) sputs(b, base_c[rndn(4)]);
    else if (ep == 1) sputs(b, "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]");
    else if (ep == 2) sputs(b, "\"prompt\":\"hello world\"");
    else sputs(b, "\"tokens\":[1,2,3]");
    sputs(b, ",\"max_tokens\":");
    sputs(b, rndn(2) ? "3" : "0");
    if (rndn(2)) sputs(b, ",\"stream\":true");
    if (rndn(3) == 0) sputs(b, ",\"logprobs\":2,\"echo\":true");
    sputs(b, ",\"");
    sputs(b, fld);
    sputs(b, "\":");
    rand_json(b, 0);
    sputs(b, "}");
}

static void one_body(sbuf *b, int ep) {
    b->n = 0;
    sputs(b, "");
    switch (rndn(8)) {
    case 0: {   /* random bytes */
        int n = (int)rndn(200);
        for (int i = 0; i < n; i++) {
            char c = (char)rndn(256);
            sput(b, &c, 1);
        }
        break;
    }
    case 1: rand_json(b, 0); break;
    case 2: {   /* deep nesting */
        int d = 10 + (int)rndn(5000);
        sputs(b, rndn(2) ? "{\"prompt\":" : "");
        for (int i = 0; i < d; i++) sputs(b, rndn(2) ? "[" : "[");
        for (int i = 0; i < d; i++) sputs(b, "]");
        if (b->d[0] == '{') sputs(b, "}");
        break;
    }
    case 3: {   /* truncated valid request */
        mutated_request(b, ep);
        b->n = rndn((uint32_t)b->n + 1);
        b->d[b->n] = 0;
        break;
    }
    default: mutated_request(b, ep); break;
    }
}

static int g_port;

static bool check_response(const http_resp *r, const char *body) {
    if (r->status == 200) {
        if (strcasestr(r->head, "text/event-stream")) {
            const char *last = strstr(r->body, "data: [DONE]\n\n");
            return last && last[14] == 0;
        }
        json_t *j = json_loadb(r->body, r->body_len, JSON_ALLOW_NUL, NULL);
        bool ok = j && json_is_object(j);
        json_decref(j);
        return ok;
    }
    if (r->status != 400 && r->status != 413 && r->status != 503) return false;
    json_t *j = json_loadb(r->body, r->body_len, JSON_ALLOW_NUL, NULL);
    json_t *e = json_object_get(j, "error");
    bool ok = json_is_string(json_object_get(e, "message")) && json_is_string(json_object_get(e, "type"));
    json_decref(j);
    return ok;
}

static void test_hostile_bodies(void) {
    static const char *const eps[] = {"/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"};
    int n = getenv("NX_SANITIZED") ? 1500 : 3000;
    sbuf b = {0};
    int by_status[6] = {0};
    for (int i = 0; i < n; i++) {
        int ep = (int)rndn(4);
        one_body(&b, ep);
        http_resp r;
        int rc = http_request(g_port, "POST", eps[ep], NULL, b.d, b.n, &r);
        CHECK_MSG(rc == 0, "request %d: no response (server down?) body: %.200s", i, b.d);
        bool ok = check_response(&r, b.d);
        if (!ok) fprintf(stderr, "request %d to %s: status %d body %.300s\nrequest: %.300s\n", i, eps[ep], r.status, r.body, b.d);
        by_status[r.status == 200 ? 0 : r.status == 400 ? 1 : r.status == 413 ? 2 : r.status == 503 ? 3 : 4]++;
        http_resp_free(&r);
        CHECK(ok);
    }
    free(b.d);
    printf("hostile bodies: %d requests: %d x 200, %d x 400, %d x 413, %d x 503\n", n, by_status[0], by_status[1],
           by_status[2], by_status[3]);
    CHECK(by_status[0] > n / 20);   /* the mutations must also exercise the generation path */
    CHECK(by_status[1] > n / 4);
}

/* Malformed HTTP on the wire: libmicrohttpd answers or closes; the server survives. */
static void test_hostile_http(void) {
    static const char *const raw[] = {
        "GARBAGE\r\n\r\n", "POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        "POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", "POST /tokenize HTTP/9.9\r\n\r\n",
        "\x00\x01\x02\r\n\r\n"};
    for (size_t i = 0; i < sizeof raw / sizeof *raw; i++) {
        int fd = http_connect(g_port, 10);
        CHECK(fd >= 0);
        size_t len = i == 6 ? 7 : strlen(raw[i]);
        (void)http_send_all(fd, raw[i], len);
        char buf[4096];
        (void)!recv(fd, buf, sizeof buf, 0);
        close(fd);
    }
    char *hdr = malloc(200000);   /* headers far past the connection memory limit */
    strcpy(hdr, "GET /health HTTP/1.1\r\nX-Big: ");
    size_t l = strlen(hdr);
    memset(hdr + l, 'a', 150000);
    strcpy(hdr + l + 150000, "\r\n\r\n");
    int fd = http_connect(g_port, 10);
    (void)http_send_all(fd, hdr, strlen(hdr));
    char buf[512];
    (void)!recv(fd, buf, sizeof buf, 0);
    close(fd);
    free(hdr);
    http_resp r;
    CHECK(http_request(g_port, "GET", "/health", NULL, NULL, 0, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    http_resp_free(&r);
}

static void test_still_correct(void) {
    http_resp r;
    const char *body = "{\"prompt\":\"The quick brown fox\",\"max_tokens\":16,\"temperature\":0,\"ignore_eos\":true}";
    CHECK(http_post(g_port, "/v1/completions", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    /* HF greedy continuation (tests/fixtures/serve/reference.json, first prompt) */
    CHECK_STR_CONTAINS(r.body, "\"text\":\"he&us\xef\xbf\xbd what were\xef\xbf\xbd f Wes<o he vomees\"");
    http_resp_free(&r);
}

int main(void) {
    nx_server_opts o = nx_server_defaults();
    o.model_dir = fixture_path("serve/tiny");
    o.n_threads = 1;
    o.n_parallel = 2;
    o.max_body = 64 * 1024;
    nx_server *srv = NULL;
    if (nx_server_start(&o, &srv) != NX_OK) {
        fprintf(stderr, "cannot start the server: %s\n", nx_last_error());
        return 1;
    }
    g_port = nx_server_port(srv);
    TEST_RUN(test_hostile_bodies);
    TEST_RUN(test_hostile_http);
    TEST_RUN(test_still_correct);
    nx_server_free(srv);
    TEST_END();
}
