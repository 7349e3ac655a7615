/* http_client.h - a deliberately small HTTP/1.1 client for the server tests and benchmark.
 *
 * One request per connection ("Connection: close"), the whole response read until EOF, then
 * split into status, headers and body (chunked transfer decoded). Test-side only: the server
 * itself uses libmicrohttpd. Header-only (static functions) so each test includes it. */
#ifndef NX_TEST_HTTP_CLIENT_H
#define NX_TEST_HTTP_CLIENT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1   /* strcasestr */
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

typedef struct http_resp {
    int status;        /* 0 when no valid status line came back */
    char *head;        /* header block (NUL-terminated) */
    char *body;        /* body, de-chunked, NUL-terminated */
    size_t body_len;
} http_resp;

static void http_resp_free(http_resp *r) {
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Connects to 127.0.0.1:port; -1 on failure. Receive timeout: timeout_s. */
static int http_connect(int port, int timeout_s) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int http_send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Sends the request head (and body when non-NULL). extra: extra header lines, each ending in
 * \r\n, or NULL. */
static int http_send_request(int fd, const char *method, const char *path, const char *extra, const char *body,
                             size_t body_len) {
    char head[2048];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s", method, path,
                     extra ? extra : "", body ? "Content-Type: application/json\r\n" : "");
    if (body) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    if (http_send_all(fd, head, (size_t)n)) return -1;
    if (body && body_len && http_send_all(fd, body, body_len)) return -1;
    return 0;
}

static void http_dechunk(char *b, size_t *len) {
    size_t r = 0, w = 0, n = *len;
    while (r < n) {
        char *end;
        unsigned long k = strtoul(b + r, &end, 16);
        char *crlf = strstr(b + r, "\r\n");
        if (!crlf || end == b + r) break;
        r = (size_t)(crlf - b) + 2;
        if (k == 0 || r + k > n) break;
        memmove(b + w, b + r, k);
        w += k;
        r += k + 2;
    }
    *len = w;
    b[w] = 0;
}

/* Reads the rest of the connection and parses it. */
static int http_read_response(int fd, http_resp *out) {
    memset(out, 0, sizeof *out);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return -1;
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return -1;
            }
            buf = nb;
        }
        ssize_t k = recv(fd, buf + n, cap - n - 1, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        n += (size_t)k;
    }
    buf[n] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || !sep) {
        free(buf);
        return -1;
    }
    out->status = atoi(buf + 9);
    size_t hl = (size_t)(sep - buf);
    out->head = malloc(hl + 1);
    memcpy(out->head, buf, hl);
    out->head[hl] = 0;
    size_t bl = n - hl - 4;
    out->body = malloc(bl + 1);
    memcpy(out->body, sep + 4, bl);
    out->body[bl] = 0;
    out->body_len = bl;
    if (strcasestr(out->head, "transfer-encoding: chunked")) http_dechunk(out->body, &out->body_len);
    free(buf);
    return 0;
}

/* One full request. Returns 0 when a response with a status line came back. */
static int http_request(int port, const char *method, const char *path, const char *extra, const char *body,
                        size_t body_len, http_resp *out) {
    memset(out, 0, sizeof *out);
    int fd = http_connect(port, 120);
    if (fd < 0) return -1;
    int rc = http_send_request(fd, method, path, extra, body, body_len);
    /* no shutdown(SHUT_WR): the server reads a half-closed socket as a client that left */
    if (rc == 0) rc = http_read_response(fd, out);
    close(fd);
    return rc;
}

static int http_post(int port, const char *path, const char *body, http_resp *out) {
    return http_request(port, "POST", path, NULL, body, strlen(body), out);
}

#endif
