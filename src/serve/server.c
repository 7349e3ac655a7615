/* server.c - the nx_server object: HTTP on libmicrohttpd, routes, authentication, errors.
 *
 * Why libmicrohttpd: it is a small, long-maintained C HTTP/1.1 server library (GNU, in Debian
 * as libmicrohttpd12) that has been fuzzed and hardened for years; it parses requests,
 * handles keep-alive, chunked request bodies and chunked responses (what server-sent events
 * need), enforces per-connection memory limits and timeouts, and needs no other runtime.
 * HTTP parsing is where servers get exploited, so we do not write our own.
 *
 * Threading: MHD_USE_THREAD_PER_CONNECTION. Each connection's thread reads the body, parses
 * and tokenizes it, queues the work (engine.c) and waits on the request's condition variable;
 * a streaming response's reader waits the same way. A slow or stalled client therefore only
 * holds its own thread. While it waits, the thread polls its socket for a hang-up
 * (POLLRDHUP), so a client that disconnects has its work cancelled within ~50 ms even before
 * any byte of the response is written.
 */
#define _GNU_SOURCE 1   /* POLLRDHUP */
#include "serve/serve_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct nx_server {
    nx_server_core c;
    struct MHD_Daemon *d;
    int listen_fd;
    int port;
    char *api_key;
    size_t max_body;
    char *model_name;
    char *models_json;    /* GET /v1/models body */
    char *model_json;     /* GET /v1/models/{id} body */
    char *tokinfo_json;   /* GET /tokenizer_info body */
    bool mu_init, work_init;
};

typedef struct conn_ctx {
    nx_buf body;
    bool too_big;
    bool responded;       /* an early response (401/404/405/413) is queued */
    int route;
} conn_ctx;

nx_server_opts nx_server_defaults(void) {
    nx_server_opts o;
    memset(&o, 0, sizeof o);
    return o;
}

int nx_server_port(const nx_server *srv) { return srv ? srv->port : 0; }

/* ---- responses ---------------------------------------------------------------------------- */
static enum MHD_Result send_body(struct MHD_Connection *conn, unsigned status, const char *body, size_t len,
                                 const char *allow) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == 503) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return MHD_NO;
    enum MHD_Result r = send_body(conn, status, s, strlen(s), NULL);
    free(s);
    return r;
}

static enum MHD_Result send_err(struct MHD_Connection *conn, const srv_err *e, const char *allow) {
    char *s = srv_err_json(e);
    if (!s) return MHD_NO;
    enum MHD_Result r = send_body(conn, (unsigned)e->http, s, strlen(s), allow);
    nx__free(s);
    return r;
}

static enum MHD_Result send_simple_err(struct MHD_Connection *conn, int http, const char *type, const char *code,
                                       const char *msg, const char *allow) {
    srv_err e = {.http = http, .type = type, .code = code};
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    return send_err(conn, &e, allow);
}

/* ---- disconnect detection ----------------------------------------------------------------- */
static int conn_fd(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* True once the peer has closed or reset the connection. Data waiting to be read (a
 * pipelined next request) is not a hang-up. */
static bool client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static void deadline_in(struct timespec *ts, long ms) {
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_nsec += ms * 1000000L;
    while (ts->tv_nsec >= 1000000000L) {
        ts->tv_nsec -= 1000000000L;
        ts->tv_sec++;
    }
}

/* ---- streaming (server-sent events) ---------------------------------------------------------- */
typedef struct stream_ctx {
    nx_server *srv;
    srv_req *r;
    int fd;
} stream_ctx;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_ctx *sc = cls;
    nx_server_core *c = &sc->srv->c;
    srv_req *r = sc->r;
    ssize_t n = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (r->out.len) {
            size_t k = r->out.len < max ? r->out.len : max;
            memcpy(buf, r->out.data, k);
            memmove(r->out.data, r->out.data + k, r->out.len - k);
            r->out.len -= k;
            n = (ssize_t)k;
            break;
        }
        if (r->finished) {
            n = MHD_CONTENT_READER_END_OF_STREAM;
            break;
        }
        if (c->stopping || client_gone(sc->fd)) {
            n = MHD_CONTENT_READER_END_WITH_ERROR;
            break;
        }
        struct timespec ts;
        deadline_in(&ts, 50);
        pthread_cond_timedwait(&r->cond, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

static void stream_free(void *cls) {
    stream_ctx *sc = cls;
    srv_req_release(&sc->srv->c, sc->r);   /* cancels the work if the stream was cut short */
    nx__free(sc);
}

/* ---- routes ----------------------------------------------------------------------------------- */
static json_t *parse_body(conn_ctx *cx, srv_err *err) {
    json_error_t je;
    if (cx->body.len == 0) {
        srv_bad(err, NULL, "the request body is empty; expected a JSON object");
        return NULL;
    }
    /* NUL is a valid character in a JSON string (\u0000); prompts keep explicit lengths */
    json_t *j = json_loadb(cx->body.data, cx->body.len, JSON_ALLOW_NUL, &je);
    if (!j) srv_bad(err, NULL, "the request body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    return j;
}

static enum MHD_Result route_health(nx_server *srv, struct MHD_Connection *conn, conn_ctx *cx) {
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string("ok"));
    return send_json(conn, 200, o);
}

static enum MHD_Result route_models(nx_server *srv, struct MHD_Connection *conn, conn_ctx *cx) {
    return send_body(conn, 200, srv->models_json, strlen(srv->models_json), NULL);
}

static enum MHD_Result route_tokinfo(nx_server *srv, struct MHD_Connection *conn, conn_ctx *cx) {
    return send_body(conn, 200, srv->tokinfo_json, strlen(srv->tokinfo_json), NULL);
}

static enum MHD_Result route_tokenize(nx_server *srv, struct MHD_Connection *conn, conn_ctx *cx) {
    srv_err err = {0};
    json_t *b = parse_body(cx, &err);
    if (!b) return send_err(conn, &err, NULL);
    json_t *prompt = json_object_get(b, "prompt"), *ast = json_object_get(b, "add_special_tokens");
    if (!json_is_object(b) || !json_is_string(prompt)) {
        json_decref(b);
        srv_bad(&err, "prompt", "'prompt' must be a string");
        return send_err(conn, &err, NULL);
    }
    if (ast && !json_is_null(ast) && !json_is_boolean(ast)) {
        json_decref(b);
        srv_bad(&err, "add_special_tokens", "'add_special_tokens' must be true or false");
        return send_err(conn, &err, NULL);
    }
    unsigned flags = (ast && json_is_false(ast)) ? NX_TOK_NO_POST_PROCESS : 0;
    nx_ids ids = {0};
    nx_status st = nx_tokenizer_encode(srv->c.tok, json_string_value(prompt), json_string_length(prompt), flags, &ids);
    json_decref(b);
    if (st != NX_OK) {
        nx_ids_free(&ids);
        srv_bad(&err, "prompt", "cannot tokenize: %s", nx_last_error());
        return send_err(conn, &err, NULL);
    }
    json_t *o = json_object(), *a = json_array();
    for (size_t i = 0; i < ids.len; i++) json_array_append_new(a, json_integer(ids.data[i]));
    json_object_set_new(o, "tokens", a);
    json_object_set_new(o, "count", json_integer((json_int_t)ids.len));
    json_object_set_new(o, "max_model_len", json_integer(srv->c.n_ctx));
    nx_ids_free(&ids);
    return send_json(conn, 200, o);
}

static enum MHD_Result route_detokenize(nx_server *srv, struct MHD_Connection *conn, conn_ctx *cx) {
    srv_err err = {0};
    json_t *b = parse_body(cx, &err);
    if (!b) return send_err(conn, &err, NULL);
    json_t *toks = json_object_get(b, "tokens");
    if (!json_is_object(b) || !json_is_array(toks)) {
        json_decref(b);
        srv_bad(&err, "tokens", "'tokens' must be a list of token ids");
        return send_err(conn, &err, NULL);
    }
    size_t n = json_array_size(toks);
    int32_t *ids = nx__malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        json_decref(b);
        return send_simple_err(conn, 500, "server_error", NULL, "out of memory", NULL);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(toks, i);
        json_int_t x = json_is_integer(t) ? json_integer_value(t) : -1;
        if (x < 0 || x >= srv->c.n_vocab) {
            nx__free(ids);
            json_decref(b);
            srv_bad(&err, "tokens", "tokens[%zu] is not a token id in [0, %d)", i, (int)srv->c.n_vocab);
            return send_err(conn, &err, NULL);
        }
        ids[i] = (int32_t)x;
    }
    json_decref(b);
    nx_text t = {0};
    nx_status st = nx_tokenizer_decode(srv->c.tok, ids, n, 0, &t);
    nx__free(ids);
    if (st != NX_OK) {
        nx_text_free(&t);
        srv_bad(&err, "tokens", "cannot decode: %s", nx_last_error());
        return send_err(conn, &err, NULL);
    }
    nx_buf lb = {0};
    srv_utf8_lossy(&lb, t.data, t.len);
    nx_text_free(&t);
    json_t *o = json_object();
    json_object_set_new(o, "prompt", json_stringn(lb.data ? lb.data : "", lb.len));
    nx__buf_free(&lb);
    return send_json(conn, 200, o);
}

/* /v1/completions and /v1/chat/completions. */
static enum MHD_Result route_generate(nx_server *srv, struct MHD_Connection *conn, conn_ctx *cx, srv_kind kind) {
    nx_server_core *c = &srv->c;
    srv_err err = {0};
    json_t *b = parse_body(cx, &err);
    if (!b) return send_err(conn, &err, NULL);
    srv_parsed pr;
    bool ok = srv_parse_request(b, kind, c->n_vocab, &pr, &err);
    json_decref(b);
    if (!ok) {
        srv_parsed_free(&pr);
        return send_err(conn, &err, NULL);
    }
    /* Tokenize text prompts, check every prompt against the context. */
    for (int i = 0; i < pr.n_prompts; i++) {
        if (pr.texts[i]) {
            nx_status st = nx_tokenizer_encode(c->tok, pr.texts[i], pr.text_lens[i], 0, &pr.ids[i]);
            if (st != NX_OK) {
                srv_bad(&err, kind == SRV_CHAT ? "messages" : "prompt", "cannot tokenize prompt %d: %s", i, nx_last_error());
                goto fail;
            }
            if (pr.ids[i].len == 0) {
                srv_bad(&err, "prompt", "prompt %d has no tokens", i);
                goto fail;
            }
        }
        long n = (long)pr.ids[i].len;
        long mt = pr.p.max_tokens;
        if (mt < 0) mt = c->n_ctx - n;   /* chat without max_tokens: what the context leaves */
        if (n + (mt > 0 ? mt : 1) > c->n_ctx || mt < 0) {
            srv_bad(&err, kind == SRV_CHAT ? "messages" : "prompt",
                    "This model's maximum context length is %d tokens. However, you requested %ld tokens (%ld in the "
                    "prompt, %ld for the completion). Please reduce the prompt or max_tokens.",
                    c->n_ctx, n + (mt > 0 ? mt : 0), n, mt > 0 ? mt : 0);
            err.code = "context_length_exceeded";
            goto fail;
        }
        if (pr.p.max_tokens < 0 && pr.n_prompts == 1) pr.p.max_tokens = (int)mt;
    }
    nx_buf *echo = NULL;
    if (pr.p.echo) {
        echo = nx__calloc((size_t)pr.n_prompts, sizeof *echo);
        if (!echo) goto oom;
        for (int i = 0; i < pr.n_prompts; i++) {
            if (pr.texts[i]) {
                srv_utf8_lossy(&echo[i], pr.texts[i], pr.text_lens[i]);
            } else {
                nx_text t = {0};
                if (nx_tokenizer_decode(c->tok, pr.ids[i].data, pr.ids[i].len, 0, &t) == NX_OK)
                    srv_utf8_lossy(&echo[i], t.data, t.len);
                nx_text_free(&t);
            }
        }
    }
    nx_ids *prompts = pr.ids;
    int n_prompts = pr.n_prompts;
    bool stream = pr.p.stream;
    pr.ids = NULL;
    srv_req *r = srv_submit(c, kind, &pr.p, prompts, n_prompts, echo, &err);
    if (!r) goto fail;   /* srv_submit freed the prompts and echo text */
    for (int i = 0; i < pr.n_prompts; i++) nx__free(pr.texts[i]);
    nx__free(pr.texts);
    nx__free(pr.text_lens);
    pr.texts = NULL;
    pr.text_lens = NULL;
    pr.n_prompts = 0;
    srv_parsed_free(&pr);

    int fd = conn_fd(conn);
    if (stream) {
        stream_ctx *sc = nx__calloc(1, sizeof *sc);
        if (!sc) {
            srv_req_release(c, r);
            return send_simple_err(conn, 500, "server_error", NULL, "out of memory", NULL);
        }
        sc->srv = srv;
        sc->r = r;
        sc->fd = fd;
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, sc, stream_free);
        if (!resp) {
            stream_free(sc);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result ret = MHD_queue_response(conn, 200, resp);
        MHD_destroy_response(resp);   /* MHD holds its own reference; stream_free runs when it is done */
        return ret;
    }
    /* Not streamed: wait here (this connection's own thread), watching for a hang-up. */
    pthread_mutex_lock(&c->mu);
    bool gone = false;
    while (!r->finished && !c->stopping) {
        if (client_gone(fd)) {
            gone = true;
            break;
        }
        struct timespec ts;
        deadline_in(&ts, 50);
        pthread_cond_timedwait(&r->cond, &c->mu, &ts);
    }
    bool finished = r->finished;
    nx_buf out = r->out;
    if (finished) r->out = (nx_buf){0};
    bool failed = r->failed;
    int http = r->err.http;
    pthread_mutex_unlock(&c->mu);
    srv_req_release(c, r);
    if (gone) {
        nx__buf_free(&out);
        return MHD_NO;   /* nobody to answer: close */
    }
    if (!finished)
        return send_simple_err(conn, 503, "server_busy", NULL, "the server is shutting down", NULL);
    enum MHD_Result ret = send_body(conn, failed ? (unsigned)(http ? http : 500) : 200, out.data ? out.data : "{}",
                                    out.data ? out.len : 2, NULL);
    nx__buf_free(&out);
    return ret;

oom:
    srv_bad(&err, NULL, "out of memory");
    err.http = 500;
    err.type = "server_error";
fail:
    srv_parsed_free(&pr);
    return send_err(conn, &err, NULL);
}

static enum MHD_Result route_completions(nx_server *srv, struct MHD_Connection *conn, conn_ctx *cx) {
    return route_generate(srv, conn, cx, SRV_COMPLETION);
}

static enum MHD_Result route_chat(nx_server *srv, struct MHD_Connection *conn, conn_ctx *cx) {
    return route_generate(srv, conn, cx, SRV_CHAT);
}

typedef enum MHD_Result (*route_fn)(nx_server *, struct MHD_Connection *, conn_ctx *);
static const struct {
    const char *path, *method;
    route_fn fn;
} routes[] = {
    {"/health", "GET", route_health},
    {"/v1/models", "GET", route_models},
    {"/tokenizer_info", "GET", route_tokinfo},
    {"/tokenize", "POST", route_tokenize},
    {"/detokenize", "POST", route_detokenize},
    {"/v1/completions", "POST", route_completions},
    {"/v1/chat/completions", "POST", route_chat},
};
#define N_ROUTES ((int)(sizeof routes / sizeof *routes))
#define ROUTE_MODEL_ID 100   /* GET /v1/models/{id} */

/* Constant-time comparison of the bearer token with the key. */
static bool auth_ok(const nx_server *srv, struct MHD_Connection *conn) {
    if (!srv->api_key) return true;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    size_t hl = strlen(h), kl = strlen(srv->api_key);
    unsigned char diff = (unsigned char)(hl != kl);
    for (size_t i = 0; i < kl; i++) diff |= (unsigned char)(srv->api_key[i] ^ (i < hl ? h[i] : 0));
    return diff == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    nx_server *srv = cls;
    conn_ctx *cx = *con_cls;
    if (!cx) {   /* first call: headers only */
        cx = nx__calloc(1, sizeof *cx);
        if (!cx) return MHD_NO;
        *con_cls = cx;
        cx->route = -1;
        const char *allow = NULL;
        for (int i = 0; i < N_ROUTES; i++)
            if (!strcmp(url, routes[i].path)) {
                allow = routes[i].method;
                if (!strcmp(method, routes[i].method)) cx->route = i;
            }
        if (cx->route < 0 && !strncmp(url, "/v1/models/", 11) && url[11]) {
            allow = "GET";
            if (!strcmp(method, "GET")) cx->route = ROUTE_MODEL_ID;
        }
        cx->responded = true;
        if (cx->route < 0 && !allow) {
            char msg[300];
            snprintf(msg, sizeof msg, "no route %s %.200s", method, url);
            return send_simple_err(conn, 404, "not_found_error", "not_found", msg, NULL);
        }
        if (cx->route < 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "method %s is not allowed on %.200s (use %s)", method, url, allow);
            return send_simple_err(conn, 405, "invalid_request_error", "method_not_allowed", msg, allow);
        }
        if (cx->route != 0 && !auth_ok(srv, conn))   /* /health stays open for load balancers */
            return send_simple_err(conn, 401, "authentication_error", "invalid_api_key",
                                   "missing or wrong API key (send \"Authorization: Bearer KEY\")", NULL);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno || *end || v > srv->max_body) {
                char msg[200];
                snprintf(msg, sizeof msg, "the request body is larger than the limit of %zu bytes", srv->max_body);
                return send_simple_err(conn, 413, "invalid_request_error", "request_too_large", msg, NULL);
            }
        }
        cx->responded = false;
        return MHD_YES;
    }
    if (cx->responded) {   /* discard the body of a request already answered */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (cx->too_big || cx->body.len + *upload_data_size > srv->max_body) {
            cx->too_big = true;   /* chunked upload past the limit: drop the rest, answer 413 at the end */
        } else {
            nx__buf_append(&cx->body, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    cx->responded = true;
    if (cx->too_big) {
        char msg[200];
        snprintf(msg, sizeof msg, "the request body is larger than the limit of %zu bytes", srv->max_body);
        return send_simple_err(conn, 413, "invalid_request_error", "request_too_large", msg, NULL);
    }
    if (cx->body.oom) return send_simple_err(conn, 500, "server_error", NULL, "out of memory", NULL);
    if (cx->route == ROUTE_MODEL_ID) {
        if (strcmp(url + 11, srv->model_name) != 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "the model '%.200s' does not exist", url + 11);
            return send_simple_err(conn, 404, "invalid_request_error", "model_not_found", msg, NULL);
        }
        return send_body(conn, 200, srv->model_json, strlen(srv->model_json), NULL);
    }
    return routes[cx->route].fn(srv, conn, cx);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    conn_ctx *cx = *con_cls;
    if (!cx) return;
    nx__buf_free(&cx->body);
    nx__free(cx);
    *con_cls = NULL;
}

/* ---- setup ------------------------------------------------------------------------------------ */
static nx_status listen_on(const char *host, int port, int *fd_out, int *port_out, bool *v6) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (port < 0 || port > 65535) return nx__error(NX_ERR_INVALID_ARG, "serve: port %d is outside 0..65535", port);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        len = sizeof *a4;
        *v6 = false;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        len = sizeof *a6;
        *v6 = true;
    } else {
        return nx__error(NX_ERR_INVALID_ARG, "serve: host '%s' is not a numeric IPv4 or IPv6 address", host);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return nx__error(NX_ERR_IO, "serve: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        return nx__error(NX_ERR_IO, "serve: cannot listen on %s port %d: %s", host, port, strerror(e));
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        *port_out = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    *fd_out = fd;
    return NX_OK;
}

static const char *base_name(const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t i = n;
    while (i > 0 && dir[i - 1] != '/') i--;
    static __thread char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(n - i), dir + i);
    return name;
}

static json_t *tok_name_json(const nx_tokenizer *tok, int32_t id) {
    const char *s = id >= 0 ? nx_tokenizer_id_to_token(tok, id) : NULL;
    return s ? json_string(s) : json_null();
}

static nx_status build_static_bodies(nx_server *srv) {
    nx_server_core *c = &srv->c;
    json_t *m = json_object();
    json_object_set_new(m, "id", json_string(srv->model_name));
    json_object_set_new(m, "object", json_string("model"));
    json_object_set_new(m, "created", json_integer((json_int_t)time(NULL)));
    json_object_set_new(m, "owned_by", json_string("neox"));
    json_object_set_new(m, "max_model_len", json_integer(c->n_ctx));
    srv->model_json = json_dumps(m, JSON_COMPACT);
    json_t *l = json_object(), *data = json_array();
    json_array_append_new(data, m);
    json_object_set_new(l, "object", json_string("list"));
    json_object_set_new(l, "data", data);
    srv->models_json = json_dumps(l, JSON_COMPACT);
    json_decref(l);

    json_t *t = json_object();
    json_object_set_new(t, "eos_token", tok_name_json(c->tok, nx_tokenizer_eos_id(c->tok)));
    json_object_set_new(t, "bos_token", tok_name_json(c->tok, nx_tokenizer_bos_id(c->tok)));
    json_object_set_new(t, "pad_token", tok_name_json(c->tok, nx_tokenizer_pad_id(c->tok)));
    json_object_set_new(t, "eos_token_id", json_integer(nx_tokenizer_eos_id(c->tok)));
    json_object_set_new(t, "bos_token_id", json_integer(nx_tokenizer_bos_id(c->tok)));
    json_object_set_new(t, "pad_token_id", json_integer(nx_tokenizer_pad_id(c->tok)));
    json_object_set_new(t, "vocab_size", json_integer(c->n_vocab));
    json_object_set_new(t, "model_max_length", json_integer(c->n_ctx));
    json_object_set_new(t, "chat_template", json_string(srv_chat_template_jinja));
    json_object_set_new(t, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    srv->tokinfo_json = json_dumps(t, JSON_COMPACT);
    json_decref(t);
    if (!srv->model_json || !srv->models_json || !srv->tokinfo_json)
        return nx__error(NX_ERR_NOMEM, "serve: out of memory building static responses");
    return NX_OK;
}

/* Every id's text, once: logprob responses name tokens by text. */
static nx_status build_token_strings(nx_server_core *c) {
    c->tokstr = nx__calloc((size_t)c->n_vocab, sizeof *c->tokstr);
    c->tokraw = nx__calloc((size_t)c->n_vocab, sizeof *c->tokraw);
    if (!c->tokstr || !c->tokraw) return nx__error(NX_ERR_NOMEM, "serve: out of memory for the token table");
    for (int32_t id = 0; id < c->n_vocab; id++) {
        nx_buf b = {0};
        if (nx_tokenizer_decode(c->tok, &id, 1, 0, &c->tokraw[id]) == NX_OK)
            srv_utf8_lossy(&b, c->tokraw[id].data ? c->tokraw[id].data : "", c->tokraw[id].len);
        c->tokstr[id] = b.data ? b.data : nx__strdup("");
        if (!c->tokstr[id] || b.oom) return nx__error(NX_ERR_NOMEM, "serve: out of memory for the token table");
    }
    return NX_OK;
}

void nx_server_free(nx_server *srv) {
    if (!srv) return;
    nx_server_core *c = &srv->c;
    if (srv->mu_init) srv_engine_stop(c);   /* fails waiting requests first, so handlers return */
    if (srv->d) MHD_stop_daemon(srv->d);     /* closes connections and joins their threads */
    if (srv->listen_fd >= 0) close(srv->listen_fd);
    for (int32_t i = 0; c->tokstr && i < c->n_vocab; i++) nx__free(c->tokstr[i]);
    for (int32_t i = 0; c->tokraw && i < c->n_vocab; i++) nx_text_free(&c->tokraw[i]);
    nx__free(c->tokstr);
    nx__free(c->tokraw);
    nx_tokenizer_free(c->tok);
    nx_model_free(c->model);
    free(srv->models_json);
    free(srv->model_json);
    free(srv->tokinfo_json);
    nx__free(srv->api_key);
    nx__free(srv->model_name);
    if (srv->mu_init) pthread_mutex_destroy(&c->mu);
    if (srv->work_init) pthread_cond_destroy(&c->work);
    nx__free(srv);
}

nx_status nx_server_start(const nx_server_opts *opts, nx_server **out) {
    *out = NULL;
    if (!opts || !opts->model_dir) return nx__error(NX_ERR_INVALID_ARG, "nx_server_start: model_dir is required");
    if (opts->n_parallel < 0 || opts->n_parallel > 256)
        return nx__error(NX_ERR_INVALID_ARG, "nx_server_start: n_parallel %d is outside 1..256", opts->n_parallel);
    if (opts->n_threads < 0 || opts->n_ctx < 0 || opts->max_queue < 0 || opts->max_connections < 0)
        return nx__error(NX_ERR_INVALID_ARG, "nx_server_start: negative option");
    nx_server *srv = nx__calloc(1, sizeof *srv);
    if (!srv) return nx__error(NX_ERR_NOMEM, "nx_server_start: out of memory");
    srv->listen_fd = -1;
    nx_server_core *c = &srv->c;
    nx_status st;
#define CHECK(x) do { if ((st = (x)) != NX_OK) goto fail; } while (0)
    CHECK(nx_model_load(opts->model_dir, NULL, &c->model));
    st = nx_tokenizer_load(opts->model_dir, &c->tok);
    if (st != NX_OK) {
        nx__error_wrap(st, "serve: the model directory needs a tokenizer (tokenizer.json)");
        goto fail;
    }
    const nx_model_config *cfg = nx_model_get_config(c->model);
    c->V = (int)cfg->vocab_size;
    c->n_vocab = nx_tokenizer_vocab_size(c->tok);
    if (c->n_vocab > c->V) c->n_vocab = c->V;   /* ids past the embedding cannot be run */
    int maxpos = (int)cfg->max_position_embeddings;
    c->n_ctx = opts->n_ctx ? opts->n_ctx : maxpos;
    c->kv_type = opts->kv_type;
    if (c->n_ctx > maxpos) {
        st = nx__error(NX_ERR_INVALID_ARG, "serve: context %d exceeds the model's max_position_embeddings %d", opts->n_ctx, maxpos);
        goto fail;
    }
    c->eos_id = nx_tokenizer_eos_id(c->tok) >= 0 ? nx_tokenizer_eos_id(c->tok) : (int32_t)cfg->eos_token_id;
    c->n_slots = opts->n_parallel ? opts->n_parallel : 4;
    c->max_queue = opts->max_queue ? opts->max_queue : 256;
    srv->max_body = opts->max_body ? opts->max_body : (size_t)16 << 20;
    srv->model_name = nx__strdup(opts->model_name ? opts->model_name : base_name(opts->model_dir));
    srv->api_key = opts->api_key && opts->api_key[0] ? nx__strdup(opts->api_key) : NULL;
    c->model_name = srv->model_name;
    if (!srv->model_name) {
        st = nx__error(NX_ERR_NOMEM, "nx_server_start: out of memory");
        goto fail;
    }
    CHECK(build_token_strings(c));
    CHECK(build_static_bodies(srv));
    pthread_mutex_init(&c->mu, NULL);
    srv->mu_init = true;
    pthread_cond_init(&c->work, NULL);
    srv->work_init = true;
    CHECK(srv_engine_start(c, opts->n_threads ? opts->n_threads : nx__cpu_count()));
    bool v6 = false;
    CHECK(listen_on(opts->host ? opts->host : "127.0.0.1", opts->port, &srv->listen_fd, &srv->port, &v6));
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                     (v6 ? MHD_USE_IPv6 : 0);
    srv->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_LISTEN_SOCKET, srv->listen_fd,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)(opts->max_connections ? opts->max_connections : 512), MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)60, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_END);
    if (!srv->d) {
        st = nx__error(NX_ERR_IO, "serve: libmicrohttpd could not start on port %d", srv->port);
        goto fail;
    }
    srv->listen_fd = -1;   /* MHD owns and closes it now */
    *out = srv;
    return NX_OK;
#undef CHECK
fail:
    nx_server_free(srv);
    return st;
}
