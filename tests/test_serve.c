/* test_serve.c - the HTTP server end to end, in-process on a free loopback port, against the
 * tiny fixture model (tests/fixtures/serve/tiny) and the reference values Hugging Face
 * transformers/tokenizers produced for it (reference.json, tools/fixtures/make_serve_fixture.py):
 * tokenization, greedy text, prompt log-probabilities (echo) and their top alternatives.
 * Also: streaming equals non-streaming, chat, stop strings, n/seed, concurrency across slots,
 * disconnects, every error status, and the API key. */
#define _GNU_SOURCE 1   /* strcasestr, in http_client.h */
#include "neox.h"
#include "serve/http_client.h"
#include "test.h"

#include <jansson.h>
#include <pthread.h>
#include <time.h>

static nx_server *g_srv;
static int g_port;
static json_t *g_ref;

static const char *model_dir(void) { return fixture_path("serve/tiny"); }

static json_t *post_json(const char *path, const char *body, int *status) {
    http_resp r;
    if (http_post(g_port, path, body, &r) != 0) {
        *status = 0;
        return NULL;
    }
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, JSON_ALLOW_NUL, NULL);
    http_resp_free(&r);
    return j;
}

static json_t *get_json(const char *path, int *status) {
    http_resp r;
    if (http_request(g_port, "GET", path, NULL, NULL, 0, &r) != 0) {
        *status = 0;
        return NULL;
    }
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, JSON_ALLOW_NUL, NULL);
    http_resp_free(&r);
    return j;
}

/* Body for a completion request: prompt is JSON text (a string literal or a list). */
static char *completion_body(const char *prompt_json, const char *extra) {
    char *b = malloc(strlen(prompt_json) + strlen(extra) + 64);
    sprintf(b, "{\"prompt\": %s%s%s}", prompt_json, *extra ? ", " : "", extra);
    return b;
}

static char *json_str(const char *s) {
    json_t *j = json_string(s);
    char *d = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    return d;
}

static const char *choice_text(json_t *resp, size_t i) {
    return json_string_value(json_object_get(json_array_get(json_object_get(resp, "choices"), i), "text"));
}

/* ---- tests ------------------------------------------------------------------------------- */
static void test_info_routes(void) {
    int st;
    json_t *j = get_json("/health", &st);
    CHECK_EQ_INT(st, 200);
    json_decref(j);
    j = get_json("/v1/models", &st);
    CHECK_EQ_INT(st, 200);
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    CHECK(m && !strcmp(json_string_value(json_object_get(m, "id")), "tiny"));
    CHECK(!strcmp(json_string_value(json_object_get(j, "object")), "list"));
    json_decref(j);
    j = get_json("/v1/models/tiny", &st);
    CHECK_EQ_INT(st, 200);
    json_decref(j);
    j = get_json("/v1/models/other", &st);
    CHECK_EQ_INT(st, 404);
    json_decref(j);
    j = get_json("/tokenizer_info", &st);
    CHECK_EQ_INT(st, 200);
    CHECK(!strcmp(json_string_value(json_object_get(j, "eos_token")), "<|endoftext|>"));
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "eos_token_id")), 0);
    CHECK(json_is_string(json_object_get(j, "chat_template")));
    json_decref(j);
}

static void test_tokenize_matches_hf(void) {
    json_t *ps = json_object_get(g_ref, "prompts");
    for (size_t i = 0; i < json_array_size(ps); i++) {
        json_t *p = json_array_get(ps, i);
        char *s = json_str(json_string_value(json_object_get(p, "text")));
        char body[1024];
        snprintf(body, sizeof body, "{\"prompt\": %s, \"add_special_tokens\": false}", s);
        free(s);
        int st;
        json_t *j = post_json("/tokenize", body, &st);
        CHECK_EQ_INT(st, 200);
        CHECK(json_equal(json_object_get(j, "tokens"), json_object_get(p, "ids")));
        /* and back */
        char *ids = json_dumps(json_object_get(p, "ids"), 0);
        snprintf(body, sizeof body, "{\"tokens\": %s}", ids);
        free(ids);
        json_t *d = post_json("/detokenize", body, &st);
        CHECK_EQ_INT(st, 200);
        CHECK(!strcmp(json_string_value(json_object_get(d, "prompt")), json_string_value(json_object_get(p, "text"))));
        json_decref(d);
        json_decref(j);
    }
}

/* Greedy text equals HF generate's (decoded the way HF decodes, U+FFFD for broken UTF-8),
 * for text prompts and token-id prompts alike. */
static void test_greedy_matches_hf(void) {
    json_t *ps = json_object_get(g_ref, "prompts");
    for (size_t i = 0; i < json_array_size(ps); i++) {
        json_t *p = json_array_get(ps, i);
        const char *want = json_string_value(json_object_get(p, "greedy16_text"));
        char *s = json_str(json_string_value(json_object_get(p, "text")));
        char *body = completion_body(s, "\"max_tokens\": 16, \"temperature\": 0, \"ignore_eos\": true");
        int st;
        json_t *j = post_json("/v1/completions", body, &st);
        free(body);
        free(s);
        CHECK_EQ_INT(st, 200);
        CHECK_MSG(!strcmp(choice_text(j, 0), want), "prompt %zu: got '%s' want '%s'", i, choice_text(j, 0), want);
        json_t *u = json_object_get(j, "usage");
        CHECK_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")), json_array_size(json_object_get(p, "ids")));
        CHECK_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")), 16);
        CHECK(!strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "finish_reason")), "length"));
        json_decref(j);
        char *ids = json_dumps(json_object_get(p, "ids"), 0);
        body = completion_body(ids, "\"max_tokens\": 16, \"temperature\": 0, \"ignore_eos\": true");
        free(ids);
        j = post_json("/v1/completions", body, &st);
        free(body);
        CHECK_EQ_INT(st, 200);
        CHECK(!strcmp(choice_text(j, 0), want));
        json_decref(j);
    }
}

/* lm-evaluation-harness's loglikelihood request: ids, echo, max_tokens 1, logprobs 1. */
static void test_echo_logprobs_match_hf(void) {
    json_t *ps = json_object_get(g_ref, "prompts");
    for (size_t i = 0; i < json_array_size(ps); i++) {
        json_t *p = json_array_get(ps, i);
        json_t *ids = json_object_get(p, "ids");
        char *ids_s = json_dumps(ids, 0);
        char body[4096];
        snprintf(body, sizeof body,
                 "{\"model\": \"tiny\", \"prompt\": [%s], \"temperature\": 0, \"max_tokens\": 1, \"logprobs\": 1, "
                 "\"seed\": 1234, \"echo\": true}", ids_s);
        free(ids_s);
        int st;
        json_t *j = post_json("/v1/completions", body, &st);
        CHECK_EQ_INT(st, 200);
        json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
        CHECK_EQ_INT(json_integer_value(json_object_get(ch, "index")), 0);
        json_t *lp = json_object_get(ch, "logprobs");
        json_t *tl = json_object_get(lp, "token_logprobs"), *top = json_object_get(lp, "top_logprobs");
        json_t *toks = json_object_get(lp, "tokens");
        size_t n = json_array_size(ids);
        CHECK_EQ_INT(json_array_size(tl), n + 1);   /* every prompt token, then the generated one */
        CHECK_EQ_INT(json_array_size(top), n + 1);
        CHECK_EQ_INT(json_array_size(toks), n + 1);
        CHECK(json_is_null(json_array_get(tl, 0)));
        CHECK(json_is_null(json_array_get(top, 0)));
        json_t *ref_lp = json_object_get(p, "token_logprobs"), *ref_top = json_object_get(p, "top1");
        for (size_t k = 1; k < n; k++) {
            CHECK_NEAR(json_real_value(json_array_get(tl, k)), json_real_value(json_array_get(ref_lp, k)), 1e-4);
            json_t *d = json_array_get(top, k);
            CHECK_EQ_INT(json_object_size(d), 1);
            double tv = json_real_value(json_object_iter_value(json_object_iter(d)));
            CHECK_NEAR(tv, json_real_value(json_array_get(json_array_get(ref_top, k), 1)), 1e-4);
            /* lm-eval's is_greedy: token == max(top) exactly when the prompt token is the argmax */
            bool ref_greedy = json_integer_value(json_array_get(json_array_get(ref_top, k), 0)) ==
                              json_integer_value(json_array_get(ids, k));
            CHECK_EQ_INT(json_real_value(json_array_get(tl, k)) == tv, ref_greedy);
        }
        /* the generated token is greedy: its logprob is exactly the top value */
        json_t *last = json_array_get(top, n);
        CHECK(json_real_value(json_array_get(tl, n)) == json_real_value(json_object_iter_value(json_object_iter(last))));
        json_decref(j);
        /* max_tokens 0: the prompt's logprobs only, text = the prompt */
        ids_s = json_dumps(ids, 0);
        snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 0, \"logprobs\": 0, \"echo\": true}", ids_s);
        free(ids_s);
        j = post_json("/v1/completions", body, &st);
        CHECK_EQ_INT(st, 200);
        ch = json_array_get(json_object_get(j, "choices"), 0);
        tl = json_object_get(json_object_get(ch, "logprobs"), "token_logprobs");
        CHECK_EQ_INT(json_array_size(tl), n);
        CHECK_NEAR(json_real_value(json_array_get(tl, n - 1)), json_real_value(json_array_get(ref_lp, n - 1)), 1e-4);
        CHECK(!strcmp(json_string_value(json_object_get(ch, "text")), json_string_value(json_object_get(p, "text"))));
        CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")), 0);
        json_decref(j);
    }
}

/* Several prompts, n > 1, seeds: indexes are prompt * n + j; the same seed reproduces. */
static void test_batch_prompts_and_seed(void) {
    int st;
    json_t *j = post_json("/v1/completions",
                          "{\"prompt\": [\"The quick brown fox\", \"She looked at him and said\"], \"max_tokens\": 8, "
                          "\"temperature\": 0.9, \"top_k\": 40, \"top_p\": 0.95, \"min_p\": 0.01, \"n\": 2, \"seed\": 7, "
                          "\"ignore_eos\": true}", &st);
    CHECK_EQ_INT(st, 200);
    json_t *chs = json_object_get(j, "choices");
    CHECK_EQ_INT(json_array_size(chs), 4);
    for (size_t i = 0; i < 4; i++) CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(chs, i), "index")), i);
    json_t *j2 = post_json("/v1/completions",
                           "{\"prompt\": [\"The quick brown fox\", \"She looked at him and said\"], \"max_tokens\": 8, "
                           "\"temperature\": 0.9, \"top_k\": 40, \"top_p\": 0.95, \"min_p\": 0.01, \"n\": 2, \"seed\": 7, "
                           "\"ignore_eos\": true}", &st);
    CHECK_EQ_INT(st, 200);
    for (size_t i = 0; i < 4; i++) CHECK(!strcmp(choice_text(j, i), choice_text(j2, i)));
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")), 32);
    json_decref(j);
    json_decref(j2);
    /* a list of id lists */
    j = post_json("/v1/completions", "{\"prompt\": [[359, 222, 442], [52, 259]], \"max_tokens\": 2, \"temperature\": 0}", &st);
    CHECK_EQ_INT(st, 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "choices")), 2);
    json_decref(j);
}

/* Parses an SSE body: concatenates choices[0].text (or delta.content), checks [DONE] last. */
static int sse_collect(const char *body, bool chat, char *text, size_t cap, json_t **usage, int *n_events,
                       const char **finish) {
    text[0] = 0;
    *n_events = 0;
    bool done = false;
    static __thread char fin[32];   /* per client thread */
    fin[0] = 0;
    for (const char *p = body; (p = strstr(p, "data: ")); ) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e) return -1;
        if (done) return -2;   /* nothing may follow [DONE] */
        if (!strncmp(p, "[DONE]", 6)) {
            done = true;
            p = e;
            continue;
        }
        json_t *j = json_loadb(p, (size_t)(e - p), JSON_ALLOW_NUL, NULL);
        if (!j) return -3;
        (*n_events)++;
        json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
        if (json_object_get(j, "usage") && usage) *usage = json_incref(json_object_get(j, "usage"));
        if (ch) {
            json_t *t = chat ? json_object_get(json_object_get(ch, "delta"), "content") : json_object_get(ch, "text");
            if (json_is_string(t)) strncat(text, json_string_value(t), cap - strlen(text) - 1);
            if (json_is_string(json_object_get(ch, "finish_reason")))
                snprintf(fin, sizeof fin, "%s", json_string_value(json_object_get(ch, "finish_reason")));
        }
        json_decref(j);
        p = e;
    }
    *finish = fin;
    return done ? 0 : -4;
}

static void test_streaming_equals_plain(void) {
    int st;
    const char *req = "\"prompt\": \"Hello, world! How are you today?\", \"max_tokens\": 24, \"temperature\": 0, \"ignore_eos\": true";
    char body[512];
    snprintf(body, sizeof body, "{%s}", req);
    json_t *j = post_json("/v1/completions", body, &st);
    CHECK_EQ_INT(st, 200);
    snprintf(body, sizeof body, "{%s, \"stream\": true, \"stream_options\": {\"include_usage\": true}}", req);
    http_resp r;
    CHECK(http_post(g_port, "/v1/completions", body, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR_CONTAINS(r.head, "text/event-stream");
    char text[4096];
    json_t *usage = NULL;
    int n_ev;
    const char *fin;
    int rc = sse_collect(r.body, false, text, sizeof text, &usage, &n_ev, &fin);
    http_resp_free(&r);
    CHECK_EQ_INT(rc, 0);
    CHECK_MSG(!strcmp(text, choice_text(j, 0)), "stream '%s' vs '%s'", text, choice_text(j, 0));
    CHECK(n_ev >= 3);   /* streamed token by token, not in one piece */
    CHECK(!strcmp(fin, "length"));
    CHECK(usage && json_integer_value(json_object_get(usage, "completion_tokens")) == 24);
    json_decref(usage);
    json_decref(j);
}

static void test_chat(void) {
    int st;
    const char *msgs = "\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
                       "[{\"type\": \"text\", \"text\": \"Hi there\"}]}], \"max_tokens\": 12, \"temperature\": 0";
    char body[1024];
    snprintf(body, sizeof body, "{%s}", msgs);
    json_t *j = post_json("/v1/chat/completions", body, &st);
    CHECK_EQ_INT(st, 200);
    CHECK(!strcmp(json_string_value(json_object_get(j, "object")), "chat.completion"));
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    CHECK(!strcmp(json_string_value(json_object_get(msg, "role")), "assistant"));
    const char *content = json_string_value(json_object_get(msg, "content"));
    CHECK(content);
    /* the plain template: prompt_tokens equals the tokenization of the rendered text */
    json_t *tk = post_json("/tokenize", "{\"prompt\": \"System: Be brief.\\nUser: Hi there\\nAssistant:\"}", &st);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")),
                 json_array_size(json_object_get(tk, "tokens")));
    json_decref(tk);
    /* and the same continuation as a completion of that text (the chat stop "\nUser:" aside) */
    json_t *c = post_json("/v1/completions",
                          "{\"prompt\": \"System: Be brief.\\nUser: Hi there\\nAssistant:\", \"max_tokens\": 12, "
                          "\"temperature\": 0, \"stop\": \"\\nUser:\"}", &st);
    CHECK(!strcmp(choice_text(c, 0), content));
    json_decref(c);
    snprintf(body, sizeof body, "{%s, \"stream\": true}", msgs);
    http_resp r;
    CHECK(http_post(g_port, "/v1/chat/completions", body, &r) == 0);
    char text[4096];
    int n_ev;
    const char *fin;
    CHECK_EQ_INT(sse_collect(r.body, true, text, sizeof text, NULL, &n_ev, &fin), 0);
    CHECK_STR_CONTAINS(r.body, "\"role\":\"assistant\"");
    CHECK_STR_CONTAINS(r.body, "chat.completion.chunk");
    http_resp_free(&r);
    CHECK(!strcmp(text, content));
    /* chat logprobs */
    snprintf(body, sizeof body, "{%s, \"logprobs\": true, \"top_logprobs\": 3}", msgs);
    json_t *l = post_json("/v1/chat/completions", body, &st);
    CHECK_EQ_INT(st, 200);
    json_t *lc = json_object_get(json_object_get(json_array_get(json_object_get(l, "choices"), 0), "logprobs"), "content");
    CHECK(json_array_size(lc) >= 1);
    CHECK_EQ_INT(json_array_size(json_object_get(json_array_get(lc, 0), "top_logprobs")), 3);
    CHECK(json_is_array(json_object_get(json_array_get(lc, 0), "bytes")));
    json_decref(l);
    json_decref(j);
}

static void test_stop_strings(void) {
    int st;
    json_t *j = post_json("/v1/completions",
                          "{\"prompt\": \"The quick brown fox\", \"max_tokens\": 16, \"temperature\": 0, \"ignore_eos\": true}", &st);
    const char *full = choice_text(j, 0);   /* "he&us\xef\xbf\xbd what were..." */
    const char *cut = strstr(full, " what");
    CHECK(cut);
    size_t keep = (size_t)(cut - full);
    for (int stream = 0; stream < 2; stream++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"prompt\": \"The quick brown fox\", \"max_tokens\": 16, \"temperature\": 0, \"stop\": [\"zzz\", \" what\"]%s}",
                 stream ? ", \"stream\": true" : "");
        http_resp r;
        CHECK(http_post(g_port, "/v1/completions", body, &r) == 0);
        char text[1024];
        const char *fin = "";
        if (stream) {
            int n_ev;
            CHECK_EQ_INT(sse_collect(r.body, false, text, sizeof text, NULL, &n_ev, &fin), 0);
        } else {
            json_t *k = json_loadb(r.body, r.body_len, JSON_ALLOW_NUL, NULL);
            snprintf(text, sizeof text, "%s", choice_text(k, 0));
            fin = json_string_value(json_object_get(json_array_get(json_object_get(k, "choices"), 0), "finish_reason"));
            fin = !strcmp(fin, "stop") ? "stop" : "other";
            json_decref(k);
        }
        http_resp_free(&r);
        CHECK_EQ_INT(strlen(text), keep);
        CHECK(!strncmp(text, full, keep));
        CHECK(!strcmp(fin, "stop"));
    }
    json_decref(j);
}

static void expect_error(const char *method, const char *path, const char *body, int want_status, const char *want_param) {
    http_resp r;
    int rc = http_request(g_port, method, path, NULL, body, body ? strlen(body) : 0, &r);
    if (rc != 0) {
        fprintf(stderr, "no response for %s %s\n", method, path);
        t_failed_checks++;
        t_current_failed = 1;
        return;
    }
    json_t *j = json_loadb(r.body, r.body_len, JSON_ALLOW_NUL, NULL);
    json_t *e = json_object_get(j, "error");
    bool ok = r.status == want_status && json_is_string(json_object_get(e, "message")) &&
              json_is_string(json_object_get(e, "type")) && json_object_get(e, "param") && json_object_get(e, "code");
    if (ok && want_param) ok = json_is_string(json_object_get(e, "param")) && !strcmp(json_string_value(json_object_get(e, "param")), want_param);
    if (!ok) {
        fprintf(stderr, "%s %s %s: got %d %s, want %d param %s\n", method, path, body ? body : "", r.status, r.body,
                want_status, want_param ? want_param : "-");
        t_failed_checks++;
        t_current_failed = 1;
    }
    json_decref(j);
    http_resp_free(&r);
}

static void test_errors(void) {
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", ", 400, NULL);
    expect_error("POST", "/v1/completions", "", 400, NULL);
    expect_error("POST", "/v1/completions", "[1, 2]", 400, NULL);
    expect_error("POST", "/v1/completions", "{\"max_tokens\": 3}", 400, "prompt");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": \"5\"}", 400, "max_tokens");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": -1}", 400, "max_tokens");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"temperature\": \"hot\"}", 400, "temperature");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"top_p\": 0}", 400, "top_p");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"n\": 0}", 400, "n");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"stop\": 5}", 400, "stop");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"logprobs\": 21}", 400, "logprobs");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"echo\": 1}", 400, "echo");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"stream\": \"yes\"}", 400, "stream");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"seed\": 1.5}", 400, "seed");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"logit_bias\": {\"5\": 100}}", 400, "logit_bias");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 99999999999999999999999}", 400, NULL);
    expect_error("POST", "/v1/completions", "{\"prompt\": [[1, 2], [999999]]}", 400, "prompt");
    expect_error("POST", "/v1/completions", "{\"prompt\": [-1]}", 400, "prompt");
    expect_error("POST", "/v1/completions", "{\"prompt\": [\"a\", 5]}", 400, "prompt");
    expect_error("POST", "/v1/completions", "{\"prompt\": []}", 400, "prompt");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"\"}", 400, "prompt");
    expect_error("POST", "/v1/completions", "{\"prompt\": {}}", 400, "prompt");
    expect_error("POST", "/v1/completions", "{\"prompt\": \"\xff\xfe\"}", 400, NULL);    /* invalid UTF-8 */
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 300}", 400, "prompt");   /* > n_ctx 256 */
    expect_error("POST", "/v1/chat/completions", "{\"messages\": []}", 400, "messages");
    expect_error("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": 1, \"content\": \"x\"}]}", 400, "messages");
    expect_error("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", 400, "messages");
    expect_error("POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": 3}", 400, "logprobs");
    expect_error("POST", "/tokenize", "{\"prompt\": 5}", 400, "prompt");
    expect_error("POST", "/detokenize", "{\"tokens\": [1, \"a\"]}", 400, "tokens");
    expect_error("POST", "/detokenize", "{\"tokens\": [100000]}", 400, "tokens");
    expect_error("GET", "/v1/nothing", NULL, 404, NULL);
    expect_error("GET", "/v1/completions", NULL, 405, NULL);
    expect_error("POST", "/v1/models", "{}", 405, NULL);
    expect_error("POST", "/v1/completions", "{\"prompt\": \"x\", \"stop\": \"a\\u0000\"}", 400, "stop");
    /* NUL is a character like any other in a prompt */
    int st;
    json_t *nul = post_json("/tokenize", "{\"prompt\": \"x\\u0000y\"}", &st);
    CHECK_EQ_INT(st, 200);
    CHECK_EQ_INT(json_array_size(json_object_get(nul, "tokens")), 3);
    json_decref(nul);
    /* context: prompt tokens + max_tokens beyond 256, with the OpenAI code */
    http_resp r;
    char big[4096];
    strcpy(big, "{\"prompt\": [");
    for (int i = 0; i < 250; i++) strcat(big, i ? ",5" : "5");
    strcat(big, "], \"max_tokens\": 10}");
    CHECK(http_post(g_port, "/v1/completions", big, &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK_STR_CONTAINS(r.body, "context_length_exceeded");
    http_resp_free(&r);
    /* 405 names the allowed method */
    CHECK(http_request(g_port, "GET", "/v1/completions", NULL, NULL, 0, &r) == 0);
    CHECK_STR_CONTAINS(r.head, "Allow: POST");
    http_resp_free(&r);
    /* deep nesting is an ordinary 400 */
    char *deep = malloc(200005);
    memset(deep, '[', 100000);
    memset(deep + 100000, ']', 100000);
    deep[200000] = 0;
    expect_error("POST", "/v1/completions", deep, 400, NULL);
    free(deep);
}

typedef struct par_job {
    int idx;
    char text[2048];
    int status;
} par_job;

static void *par_worker(void *arg) {
    par_job *pj = arg;
    json_t *ps = json_object_get(g_ref, "prompts");
    json_t *p = json_array_get(ps, (size_t)pj->idx % json_array_size(ps));
    char *s = json_str(json_string_value(json_object_get(p, "text")));
    char *body = completion_body(s, "\"max_tokens\": 16, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true");
    http_resp r;
    pj->status = http_post(g_port, "/v1/completions", body, &r) == 0 ? r.status : 0;
    int n_ev;
    const char *fin;
    if (pj->status == 200 && sse_collect(r.body, false, pj->text, sizeof pj->text, NULL, &n_ev, &fin) != 0) pj->status = -1;
    http_resp_free(&r);
    free(body);
    free(s);
    return NULL;
}

/* More concurrent streams than slots: all finish, each with the greedy text of its prompt
 * (slots are independent: no cross-talk between KV caches, prefix reuse is exact). */
static void test_concurrent_streams(void) {
    enum { N = 8 };
    pthread_t th[N];
    par_job jobs[N];
    for (int i = 0; i < N; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].idx = i;
        pthread_create(&th[i], NULL, par_worker, &jobs[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    json_t *ps = json_object_get(g_ref, "prompts");
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(jobs[i].status, 200);
        const char *want = json_string_value(json_object_get(json_array_get(ps, (size_t)i % json_array_size(ps)), "greedy16_text"));
        CHECK_MSG(!strcmp(jobs[i].text, want), "job %d: '%s' vs '%s'", i, jobs[i].text, want);
    }
}

/* Prompts longer than a prefill chunk (64) arriving together: their chunks and the decode
 * steps of the others share batched rounds. Each result must equal the same request run
 * while the server is otherwise idle (one whole-prompt prefill, then decode alone). */
typedef struct long_job {
    int idx;
    char body[2048];
    char text[2048];
    int status;
} long_job;

static void *long_worker(void *arg) {
    long_job *lj = arg;
    int st;
    json_t *j = post_json("/v1/completions", lj->body, &st);
    lj->status = st;
    const char *t = j ? choice_text(j, 0) : NULL;
    snprintf(lj->text, sizeof lj->text, "%s", t ? t : "");
    json_decref(j);
    return NULL;
}

static void test_concurrent_long_prompts(void) {
    enum { NP = 3, N = 7 };
    long_job jobs[N];
    char want[NP][2048];
    for (int i = 0; i < N; i++) {
        int len = 70 + 40 * (i % NP), n = 0;   /* 70, 110, 150 tokens */
        memset(&jobs[i], 0, sizeof jobs[i]);
        n += snprintf(jobs[i].body + n, sizeof jobs[i].body - (size_t)n, "{\"prompt\": [");
        for (int t = 0; t < len; t++)
            n += snprintf(jobs[i].body + n, sizeof jobs[i].body - (size_t)n, "%s%d", t ? "," : "", 40 + (t * 7 + i % NP * 13) % 200);
        snprintf(jobs[i].body + n, sizeof jobs[i].body - (size_t)n,
                 "], \"max_tokens\": 12, \"temperature\": 0, \"ignore_eos\": true}");
    }
    for (int i = 0; i < NP; i++) {   /* alone */
        long_worker(&jobs[i]);
        CHECK_EQ_INT(jobs[i].status, 200);
        CHECK(jobs[i].text[0]);
        snprintf(want[i], sizeof want[i], "%s", jobs[i].text);
    }
    pthread_t th[N];
    for (int i = 0; i < N; i++) pthread_create(&th[i], NULL, long_worker, &jobs[i]);
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(jobs[i].status, 200);
        CHECK_MSG(!strcmp(jobs[i].text, want[i % NP]), "job %d: '%s' vs alone '%s'", i, jobs[i].text, want[i % NP]);
    }
}

/* A client that leaves mid-stream or mid-request must not hurt the server. */
static void test_disconnects(void) {
    for (int k = 0; k < 6; k++) {
        int fd = http_connect(g_port, 10);
        CHECK(fd >= 0);
        const char *body = k % 2 ? "{\"prompt\": \"The quick\", \"max_tokens\": 200, \"ignore_eos\": true, \"stream\": true}"
                                 : "{\"prompt\": \"The quick\", \"max_tokens\": 200, \"ignore_eos\": true}";
        CHECK(http_send_request(fd, "POST", "/v1/completions", NULL, body, strlen(body)) == 0);
        if (k >= 4) {   /* read a little of the stream first */
            char buf[64];
            (void)!recv(fd, buf, sizeof buf, 0);
        }
        close(fd);
    }
    /* half a request, then gone */
    int fd = http_connect(g_port, 10);
    CHECK(fd >= 0);
    const char *part = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"";
    CHECK(http_send_all(fd, part, strlen(part)) == 0);
    close(fd);
    int st;
    json_t *j = post_json("/v1/completions", "{\"prompt\": \"The quick brown fox\", \"max_tokens\": 16, \"temperature\": 0, \"ignore_eos\": true}", &st);
    CHECK_EQ_INT(st, 200);
    CHECK(!strcmp(choice_text(j, 0), json_string_value(json_object_get(json_array_get(json_object_get(g_ref, "prompts"), 0), "greedy16_text"))));
    json_decref(j);
}

/* A client that never reads its stream (its socket buffers fill up) must not hold up anyone
 * else: the compute side buffers its output and moves on. */
static void test_slow_client(void) {
    int fd = http_connect(g_port, 10);
    CHECK(fd >= 0);
    const char *big = "{\"prompt\": \"The quick\", \"max_tokens\": 200, \"ignore_eos\": true, \"n\": 8, \"echo\": true, "
                      "\"logprobs\": 20, \"stream\": true}";
    CHECK(http_send_request(fd, "POST", "/v1/completions", NULL, big, strlen(big)) == 0);
    for (int k = 0; k < 3; k++) {
        int st;
        json_t *j = post_json("/v1/completions",
                              "{\"prompt\": \"The quick brown fox\", \"max_tokens\": 16, \"temperature\": 0, \"ignore_eos\": true}", &st);
        CHECK_EQ_INT(st, 200);
        CHECK(!strcmp(choice_text(j, 0), json_string_value(json_object_get(json_array_get(json_object_get(g_ref, "prompts"), 0), "greedy16_text"))));
        json_decref(j);
    }
    close(fd);
}

static void test_api_key_and_limits(void) {
    nx_server_opts o = nx_server_defaults();
    o.model_dir = model_dir();
    o.n_threads = 1;
    o.n_parallel = 1;
    o.api_key = "s3cret";
    o.max_body = 1024;
    o.max_queue = 1;
    nx_server *s2 = NULL;
    CHECK(nx_server_start(&o, &s2) == NX_OK);
    int port = nx_server_port(s2);
    http_resp r;
    const char *body = "{\"prompt\": \"hi\", \"max_tokens\": 1}";
    CHECK(http_request(port, "POST", "/v1/completions", NULL, body, strlen(body), &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    CHECK_STR_CONTAINS(r.body, "\"error\"");
    http_resp_free(&r);
    CHECK(http_request(port, "POST", "/v1/completions", "Authorization: Bearer wrong\r\n", body, strlen(body), &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    http_resp_free(&r);
    CHECK(http_request(port, "GET", "/v1/models", NULL, NULL, 0, &r) == 0);
    CHECK_EQ_INT(r.status, 401);
    http_resp_free(&r);
    CHECK(http_request(port, "POST", "/v1/completions", "Authorization: Bearer s3cret\r\n", body, strlen(body), &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    http_resp_free(&r);
    CHECK(http_request(port, "GET", "/health", NULL, NULL, 0, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    http_resp_free(&r);
    /* 413: declared too long, and a chunked body that grows past the limit */
    char *big = malloc(4096);
    memset(big, ' ', 4095);
    big[0] = '{';
    big[4094] = '}';
    big[4095] = 0;
    CHECK(http_request(port, "POST", "/v1/completions", "Authorization: Bearer s3cret\r\n", big, 4095, &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    http_resp_free(&r);
    int fd = http_connect(port, 10);
    char head[256];
    snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer s3cret\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n");
    CHECK(http_send_all(fd, head, strlen(head)) == 0);
    for (int i = 0; i < 4; i++) {
        char chunk[600];
        snprintf(chunk, sizeof chunk, "200\r\n%.*s\r\n", 512, big);
        CHECK(http_send_all(fd, chunk, strlen(chunk)) == 0);
    }
    CHECK(http_send_all(fd, "0\r\n\r\n", 5) == 0);
    CHECK(http_read_response(fd, &r) == 0);
    close(fd);
    CHECK_EQ_INT(r.status, 413);
    http_resp_free(&r);
    free(big);
    /* queue of 1: a request with n = 2 can never be queued -> 400 naming n (not a retryable 503) */
    const char *two = "{\"prompt\": \"hi\", \"max_tokens\": 1, \"n\": 2}";
    CHECK(http_request(port, "POST", "/v1/completions", "Authorization: Bearer s3cret\r\n", two, strlen(two), &r) == 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK_STR_CONTAINS(r.body, "\"param\":\"n\"");
    http_resp_free(&r);
    nx_server_free(s2);
}

typedef struct shut_job {
    int port;
    bool stream;
    int status;
} shut_job;

static void *shut_worker(void *arg) {
    shut_job *j = arg;
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\": \"The quick\", \"max_tokens\": 240, \"ignore_eos\": true, \"n\": 4%s}",
             j->stream ? ", \"stream\": true" : "");
    http_resp r;
    j->status = http_request(j->port, "POST", "/v1/completions", NULL, body, strlen(body), &r) == 0 ? r.status : -1;
    http_resp_free(&r);
    return NULL;
}

/* Freeing the server while requests run and wait: every client gets an answer or a closed
 * connection, every thread is joined, nothing leaks (ASan). */
static void test_shutdown_with_active_requests(void) {
    nx_server_opts o = nx_server_defaults();
    o.model_dir = model_dir();
    o.n_threads = 1;
    o.n_parallel = 1;
    nx_server *s3 = NULL;
    CHECK(nx_server_start(&o, &s3) == NX_OK);
    enum { N = 6 };
    pthread_t th[N];
    shut_job jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (shut_job){nx_server_port(s3), i % 2 == 1, 0};
        pthread_create(&th[i], NULL, shut_worker, &jobs[i]);
    }
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    double t0 = nx_time_s();
    nx_server_free(s3);
    double dt = nx_time_s() - t0;
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    CHECK_MSG(dt < 5.0, "shutdown took %.2f s", dt);
    for (int i = 0; i < N; i++)   /* done, refused (503), cut (stream), or never connected */
        CHECK_MSG(jobs[i].status == 200 || jobs[i].status == 503 || jobs[i].status == -1, "job %d: %d", i, jobs[i].status);
}

static void test_start_errors(void) {
    nx_server_opts o = nx_server_defaults();
    nx_server *s = NULL;
    CHECK(nx_server_start(&o, &s) != NX_OK && !s);
    o.model_dir = fixture_path("serve/does-not-exist");
    CHECK(nx_server_start(&o, &s) != NX_OK && !s);
    o.model_dir = model_dir();
    o.host = "localhost-by-name";
    CHECK(nx_server_start(&o, &s) != NX_OK && !s);
    CHECK_STR_CONTAINS(nx_last_error(), "numeric");
    o.host = NULL;
    o.port = g_port;   /* in use */
    CHECK(nx_server_start(&o, &s) != NX_OK && !s);
    CHECK_STR_CONTAINS(nx_last_error(), "cannot listen");
    o.port = 0;
    o.n_ctx = 100000;
    CHECK(nx_server_start(&o, &s) != NX_OK && !s);
}

int main(void) {
    g_ref = json_load_file(fixture_path("serve/reference.json"), 0, NULL);
    if (!g_ref) {
        fprintf(stderr, "cannot read %s\n", fixture_path("serve/reference.json"));
        return 1;
    }
    nx_server_opts o = nx_server_defaults();
    o.model_dir = model_dir();
    o.n_threads = 1;   /* the tiny model gains nothing from more, and CI machines are shared */
    o.n_parallel = 3;
    if (nx_server_start(&o, &g_srv) != NX_OK) {
        fprintf(stderr, "cannot start the server: %s\n", nx_last_error());
        return 1;
    }
    g_port = nx_server_port(g_srv);
    TEST_RUN(test_info_routes);
    TEST_RUN(test_tokenize_matches_hf);
    TEST_RUN(test_greedy_matches_hf);
    TEST_RUN(test_echo_logprobs_match_hf);
    TEST_RUN(test_batch_prompts_and_seed);
    TEST_RUN(test_streaming_equals_plain);
    TEST_RUN(test_chat);
    TEST_RUN(test_stop_strings);
    TEST_RUN(test_errors);
    TEST_RUN(test_concurrent_streams);
    TEST_RUN(test_concurrent_long_prompts);
    TEST_RUN(test_disconnects);
    TEST_RUN(test_slow_client);
    TEST_RUN(test_api_key_and_limits);
    TEST_RUN(test_shutdown_with_active_requests);
    TEST_RUN(test_start_errors);
    nx_server_free(g_srv);
    json_decref(g_ref);
    TEST_END();
}
