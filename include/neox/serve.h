/*
 * neox/serve.h - an OpenAI-compatible HTTP server for one model.
 *
 * Routes (see docs/SERVER.md): GET /v1/models, POST /v1/completions, POST /v1/chat/completions,
 * POST /tokenize, POST /detokenize, GET /tokenizer_info, GET /health.
 *
 * Structure: libmicrohttpd accepts connections (one thread per connection, so a slow client
 * only ever blocks its own thread); request handlers parse and validate JSON, tokenize, and
 * hand sequences to one compute thread. The compute thread owns --parallel slots (one
 * nx_session each, all on one shared model and one thread pool) and interleaves their prefill
 * chunks and decode steps round-robin, so several streams progress together.
 *
 * The library never prints: the caller (neox serve) reports the bound address and errors.
 */
#ifndef NEOX_SERVE_H
#define NEOX_SERVE_H

#include "neox/core.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nx_server nx_server;

typedef struct nx_server_opts {
    const char *model_dir;    /* HF model directory with tokenizer.json (required) */
    const char *model_name;   /* id reported by /v1/models; NULL = the directory's base name */
    const char *host;         /* numeric IPv4/IPv6 address to bind; NULL = "127.0.0.1" */
    int port;                 /* 0 = any free port (read it back with nx_server_port) */
    int n_threads;            /* compute threads; 0 = number of CPUs */
    int n_parallel;           /* slots: sequences computed concurrently; 0 = 4 */
    int n_ctx;                /* context per slot; 0 = the model's max_position_embeddings */
    nx_dtype kv_type;         /* KV cache type of the slots (nx_session_opts.kv_type); 0 = auto */
    const char *api_key;      /* when set, every route but /health needs "Authorization: Bearer KEY" */
    size_t max_body;          /* largest request body in bytes; 0 = 16 MiB */
    int max_queue;            /* sequences waiting for a slot before 503; 0 = 256 */
    int max_connections;      /* simultaneous HTTP connections; 0 = 512 */
} nx_server_opts;

/* Defaults as documented above (all zero / NULL). */
NX_API nx_server_opts nx_server_defaults(void);

/* Loads the model and tokenizer, binds the socket and starts serving. On success *out is owned
 * by the caller (nx_server_free). Errors (bad model, address in use...) via nx_last_error(). */
NX_API nx_status nx_server_start(const nx_server_opts *opts, nx_server **out);
/* The TCP port actually bound. */
NX_API int nx_server_port(const nx_server *srv);
/* Stops accepting, cancels running requests (their clients get an error or a cut stream),
 * joins every thread and frees everything. NULL is fine. */
NX_API void nx_server_free(nx_server *srv);

#ifdef __cplusplus
}
#endif
#endif /* NEOX_SERVE_H */
