/*
 * tokenize.c - corpus files -> indexed dataset, GPT-NeoX preprocess_data.py semantics
 * (one item per document, EOD appended, empty texts dropped), in parallel.
 *
 * Pipeline: the calling thread reads raw records into a batch (about batch_bytes of text),
 * the pool parses/validates/encodes the batch with a static split by bytes, and the calling
 * thread appends the results in input order. Each document is encoded independently, so
 * the output is byte-identical for every thread count. Memory: one batch of raw records,
 * its tokens, and the writer's 12 bytes per document.
 */
#include "data/data.h"

#include <jansson.h>

nx_status nx_token_buf_reserve(nx_token_buf *b, size_t n) {
    if (n <= b->cap) return NX_OK;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < n) nc *= 2;
    int32_t *nd = nx__realloc(b->data, nc * sizeof *nd);
    if (!nd) return nx__error(NX_ERR_NOMEM, "out of memory for %zu tokens", n);
    b->data = nd;
    b->cap = nc;
    return NX_OK;
}

void nx_token_buf_free(nx_token_buf *b) {
    if (!b) return;
    nx__free(b->data);
    memset(b, 0, sizeof *b);
}

typedef struct {
    size_t off, len;          /* raw bytes in the batch arena */
    const char *file;
    uint64_t line;
    bool is_json;
    /* results */
    int kind;                 /* 0 ok, -1 empty, else nx_issue_kind */
    char msg[192];
    int th;                   /* worker that holds the tokens */
    size_t tok_off, tok_len;
    size_t text_len;
} doc_slot;

typedef struct {
    const nx_tokenize_opts *o;
    const char *key;
    nx_buf arena;
    doc_slot *docs;
    size_t n, cap;
    size_t *split;            /* nth + 1 boundaries into docs */
    nx_token_buf *out;        /* per worker: the tokens of its documents, concatenated */
    nx_token_buf *scratch;    /* per worker: one document's tokens */
    nx_status *st;            /* per worker: fatal error (out of memory) */
} batch;

static void process_doc(batch *b, int ith, doc_slot *d) {
    const char *raw = b->arena.data + d->off;
    const char *text = raw;
    size_t tlen = d->len;
    json_t *root = NULL;
    d->kind = 0;
    d->msg[0] = 0;
    size_t bad = nx__utf8_invalid_at(raw, d->len);
    if (bad != (size_t)-1) {
        d->kind = NX_ISSUE_BAD_UTF8;
        snprintf(d->msg, sizeof d->msg, "invalid UTF-8 at byte %zu", bad);
        return;
    }
    if (d->is_json) {
        json_error_t jerr;
        root = json_loadb(raw, d->len, JSON_ALLOW_NUL, &jerr);
        if (!root) {
            d->kind = NX_ISSUE_BAD_JSON;
            snprintf(d->msg, sizeof d->msg, "invalid JSON at column %d: %s", jerr.column, jerr.text);
            return;
        }
        json_t *v = json_is_object(root) ? json_object_get(root, b->key) : NULL;
        if (!v || !json_is_string(v)) {
            d->kind = NX_ISSUE_NO_KEY;
            snprintf(d->msg, sizeof d->msg, "%s", !json_is_object(root) ? "not a JSON object"
                                                   : !v ? "no text key" : "text key is not a string");
            json_decref(root);
            return;
        }
        text = json_string_value(v);
        tlen = json_string_length(v);
    }
    d->text_len = tlen;
    if (tlen == 0) {
        d->kind = -1;
        json_decref(root);
        return;
    }
    nx_token_buf *sc = &b->scratch[ith];
    sc->len = 0;
    nx_status st = b->o->encode(b->o->encode_ctx, text, tlen, sc);
    json_decref(root);
    if (st != NX_OK) {
        if (st == NX_ERR_NOMEM) { b->st[ith] = st; return; }
        d->kind = NX_ISSUE_ENCODE;
        snprintf(d->msg, sizeof d->msg, "encoder: %s", nx_last_error());
        return;
    }
    nx_token_buf *out = &b->out[ith];
    size_t need = out->len + sc->len + 1;
    if (nx_token_buf_reserve(out, need) != NX_OK) { b->st[ith] = NX_ERR_NOMEM; return; }
    memcpy(out->data + out->len, sc->data, sc->len * sizeof *sc->data);
    d->th = ith;
    d->tok_off = out->len;
    d->tok_len = sc->len;
    out->len += sc->len;
    if (b->o->append_eod) {
        out->data[out->len++] = b->o->eod_id;
        d->tok_len++;
    }
}

static void worker(int ith, int nth, void *arg) {
    batch *b = arg;
    b->out[ith].len = 0;
    for (size_t k = b->split[ith]; k < b->split[ith + 1] && b->st[ith] == NX_OK; k++) process_doc(b, ith, &b->docs[k]);
}

nx_status nx_data_tokenize(const char *const *inputs, size_t n_inputs, const char *out_prefix,
                           const nx_tokenize_opts *o, nx_tokenize_stats *stats) {
    memset(stats, 0, sizeof *stats);
    if (!o->encode) return nx__error(NX_ERR_INVALID_ARG, "tokenize: no encoder");
    double t0 = nx_time_s();
    nx_doc_reader *r = NULL;
    NX_TRY(nx__doc_reader_open(inputs, n_inputs, &r));
    stats->files = nx__doc_reader_n_files(r);
    stats->input_total = nx__doc_reader_total_bytes(r);
    if (stats->files == 0) {
        nx__doc_reader_free(r);
        return nx__error(NX_ERR_NOT_FOUND, "tokenize: no input files (.jsonl, .jsonl.zst, .txt ...) found");
    }
    int code = o->dtype_code ? o->dtype_code : nx_indexed_dtype_for_vocab(o->vocab_size);
    nx_pool *pool = nx_pool_create(o->n_threads);
    int nth = nx_pool_size(pool);
    batch b = {.o = o, .key = o->text_key ? o->text_key : "text"};
    b.split = nx__calloc((size_t)nth + 1, sizeof *b.split);
    b.out = nx__calloc((size_t)nth, sizeof *b.out);
    b.scratch = nx__calloc((size_t)nth, sizeof *b.scratch);
    b.st = nx__calloc((size_t)nth, sizeof *b.st);
    nx_indexed_writer *w = NULL;
    nx_status st = NX_OK;
    if (!pool || !b.split || !b.out || !b.scratch || !b.st) st = nx__error(NX_ERR_NOMEM, "tokenize: out of memory");
    if (st == NX_OK) st = nx_indexed_writer_create(out_prefix, code, &w);
    size_t limit = o->batch_bytes ? o->batch_bytes : (size_t)8 << 20;
    bool eof = false;
    while (st == NX_OK && !eof) {
        /* 1. read a batch */
        b.n = 0;
        b.arena.len = 0;
        while (b.arena.len < limit && b.n < 65536) {
            nx_raw_record rec;
            st = nx__doc_reader_next(r, &rec, &eof);
            if (st != NX_OK || eof) break;
            if (b.n == b.cap) {
                size_t nc = b.cap ? b.cap * 2 : 1024;
                doc_slot *nd = nx__realloc(b.docs, nc * sizeof *nd);
                if (!nd) { st = nx__error(NX_ERR_NOMEM, "tokenize: out of memory"); break; }
                b.docs = nd;
                b.cap = nc;
            }
            doc_slot *d = &b.docs[b.n++];
            memset(d, 0, sizeof *d);
            d->off = b.arena.len;
            d->len = rec.len;
            d->file = rec.file;
            d->line = rec.line;
            d->is_json = rec.is_json;
            nx__buf_append(&b.arena, rec.data, rec.len);
            nx__buf_append(&b.arena, "", 1);   /* NUL after each record (not part of it) */
            if (b.arena.oom) { st = nx__error(NX_ERR_NOMEM, "tokenize: out of memory for a batch"); break; }
        }
        if (st != NX_OK || b.n == 0) break;
        /* 2. static split by bytes: worker t takes the documents starting in its share */
        size_t total = b.arena.len, k = 0;
        for (int t = 0; t <= nth; t++) {
            size_t bound = (size_t)((double)total * t / nth);
            while (k < b.n && b.docs[k].off < bound) k++;
            b.split[t] = t == nth ? b.n : k;
        }
        for (int t = 0; t < nth; t++) b.st[t] = NX_OK;
        nx_pool_run(pool, worker, &b);
        for (int t = 0; t < nth && st == NX_OK; t++)
            if (b.st[t] != NX_OK) st = nx__error(b.st[t], "tokenize: out of memory while encoding");
        /* 3. write in input order */
        for (size_t i = 0; st == NX_OK && i < b.n; i++) {
            doc_slot *d = &b.docs[i];
            stats->docs_read++;
            if (d->kind == 0) {
                st = nx_indexed_writer_add_document(w, b.out[d->th].data + d->tok_off, d->tok_len);
                stats->docs_written++;
                stats->tokens += d->tok_len;
                stats->text_bytes += d->text_len;
                continue;
            }
            if (d->kind == -1) { stats->docs_empty++; continue; }
            switch (d->kind) {
            case NX_ISSUE_BAD_JSON: stats->bad_json++; break;
            case NX_ISSUE_NO_KEY: stats->no_key++; break;
            case NX_ISSUE_BAD_UTF8: stats->bad_utf8++; break;
            default: stats->encode_failed++; break;
            }
            if (o->on_issue) {
                nx_data_issue is = {(nx_issue_kind)d->kind, d->file, d->line, d->msg};
                o->on_issue(&is, o->user);
            }
            if (o->strict) st = nx__error(NX_ERR_FORMAT, "%s:%llu: %s (--strict)", d->file, (unsigned long long)d->line, d->msg);
        }
        stats->input_bytes = nx__doc_reader_done_bytes(r);
        stats->seconds = nx_time_s() - t0;
        if (st == NX_OK && o->progress && !o->progress(stats, o->user))
            st = nx__error(NX_ERR_CANCELLED, "tokenize: cancelled");
    }
    if (st == NX_OK) st = nx_indexed_writer_finish(w);
    stats->input_bytes = nx__doc_reader_done_bytes(r);
    stats->seconds = nx_time_s() - t0;
    nx_indexed_writer_free(w);   /* removes the temporaries unless finished */
    for (int t = 0; b.out && b.scratch && t < nth; t++) {
        nx_token_buf_free(&b.out[t]);
        nx_token_buf_free(&b.scratch[t]);
    }
    nx__free(b.out);
    nx__free(b.scratch);
    nx__free(b.st);
    nx__free(b.split);
    nx__free(b.docs);
    nx__buf_free(&b.arena);
    nx_pool_free(pool);
    nx__doc_reader_free(r);
    return st;
}
