/*
 * score.c - the machinery every eval task shares: the worker pool (one session per thread on
 * the shared model), the chunked scoring of a token sequence, lm-eval's rolling windows and
 * the Python-string helpers the tasks' metrics depend on.
 *
 * Why sessions per thread rather than one multi-threaded session: eval items are many and
 * short (a LAMBADA passage is ~100 tokens), and a single-threaded session per item keeps
 * every item's arithmetic independent of the thread count, so results are reproducible
 * whatever -t says. Throughput then scales with items, not with matmul splits.
 */
#include "eval/eval.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

nx_eval_opts nx_eval_defaults(void) {
    nx_eval_opts o;
    memset(&o, 0, sizeof o);
    o.prefix_token = -1;
    return o;
}

int nx__eval_max_length(const nx_model *m, const nx_eval_opts *opts) {
    const nx_model_config *cfg = nx_model_get_config(m);
    int L = opts && opts->max_length > 0 ? opts->max_length : cfg->max_position_embeddings;
    return L;
}

int32_t nx__eval_prefix_token(const nx_tokenizer *tok, const nx_eval_opts *opts) {
    if (opts && opts->prefix_token >= 0) return opts->prefix_token;
    if (tok) {
        /* lm-eval HFLM.prefix_token_id: bos if the tokenizer has one, else eos. */
        int32_t b = nx_tokenizer_bos_id(tok);
        if (b >= 0) return b;
        int32_t e = nx_tokenizer_eos_id(tok);
        if (e >= 0) return e;
    }
    return 0;
}

/* ---- worker pool ------------------------------------------------------------------------ */
typedef struct {
    nx__eval_worker *workers;
    uint64_t n_items;
    _Atomic uint64_t next, done;
    _Atomic int failed;        /* 0, or 1 once the first error was recorded */
    _Atomic int reporting;     /* progress callback in flight */
    nx_status err;
    char err_msg[512];
    nx__eval_item_fn fn;
    void *arg;
    const nx_eval_opts *opts;
} run_state;

static void run_thread(int ith, int nth, void *p) {
    (void)nth;
    run_state *rs = p;
    nx__eval_worker *w = &rs->workers[ith];
    for (;;) {
        if (atomic_load(&rs->failed)) return;
        uint64_t i = atomic_fetch_add(&rs->next, 1);
        if (i >= rs->n_items) return;
        nx_status st = rs->fn(w, i, rs->arg);
        if (st != NX_OK) {
            int expected = 0;
            /* nx_last_error is per thread: copy the message so the caller can re-raise it. */
            if (atomic_compare_exchange_strong(&rs->failed, &expected, 1)) {
                rs->err = st;
                snprintf(rs->err_msg, sizeof rs->err_msg, "%s", nx_last_error());
            }
            return;
        }
        uint64_t d = atomic_fetch_add(&rs->done, 1) + 1;
        if (rs->opts && rs->opts->progress) {
            int expected = 0;
            if (atomic_compare_exchange_strong(&rs->reporting, &expected, 1)) {
                rs->opts->progress(d, rs->n_items, rs->opts->user);
                atomic_store(&rs->reporting, 0);
            }
        }
    }
}

int nx__eval_n_workers(uint64_t n_items, const nx_eval_opts *opts) {
    int nt = opts && opts->n_threads > 0 ? opts->n_threads : nx__cpu_count();
    if (nt < 1) nt = 1;
    if ((uint64_t)nt > n_items) nt = n_items ? (int)n_items : 1;
    return nt;
}

nx_status nx__eval_run(const nx_model *m, int n_ctx, uint64_t n_items, const nx_eval_opts *opts,
                       nx__eval_item_fn fn, void *arg) {
    int nt = nx__eval_n_workers(n_items, opts);
    int V = nx_model_get_config(m)->vocab_size;
    nx_status st = NX_OK;
    nx_pool *pool = NULL;
    nx__eval_worker *workers = nx__calloc((size_t)nt, sizeof *workers);
    if (!workers) return nx__error(NX_ERR_NOMEM, "eval: %d workers", nt);
    for (int t = 0; t < nt; t++) {
        workers[t].ith = t;
        workers[t].V = V;
        nx_session_opts so = {.n_ctx = n_ctx, .n_batch = NX_MIN(n_ctx, 256), .n_threads = 1,
                              .kv_type = opts ? opts->kv_type : NX_DTYPE_INVALID};
        st = nx_session_create(m, &so, &workers[t].session);
        if (st != NX_OK) goto done;
        workers[t].logits = nx__malloc((size_t)NX_EVAL_CHUNK * (size_t)V * sizeof(float));
        if (!workers[t].logits) {
            st = nx__error(NX_ERR_NOMEM, "eval: logits scratch of %d x %d floats", NX_EVAL_CHUNK, V);
            goto done;
        }
    }
    if (nt > 1) {
        pool = nx_pool_create(nt);
        if (!pool) {
            st = nx__error(NX_ERR_NOMEM, "eval: thread pool of %d", nt);
            goto done;
        }
    }
    run_state rs;
    memset(&rs, 0, sizeof rs);
    rs.workers = workers;
    rs.n_items = n_items;
    rs.fn = fn;
    rs.arg = arg;
    rs.opts = opts;
    atomic_init(&rs.next, 0);
    atomic_init(&rs.done, 0);
    atomic_init(&rs.failed, 0);
    atomic_init(&rs.reporting, 0);
    nx_pool_run(pool, run_thread, &rs);
    if (atomic_load(&rs.failed)) {
        st = nx__error(rs.err, "%s", rs.err_msg);
    } else if (opts && opts->progress) {
        opts->progress(n_items, n_items, opts->user);
    }
done:
    nx_pool_free(pool);
    for (int t = 0; t < nt; t++) {
        nx_session_free(workers[t].session);
        nx__free(workers[t].logits);
    }
    nx__free(workers);
    return st;
}

/* ---- scoring ---------------------------------------------------------------------------- */
double nx__eval_logprob(const float *row, int V, int32_t target, bool *is_argmax) {
    /* argmax with the lowest id on ties (torch.argmax returns the first maximum). */
    int best = 0;
    float mx = row[0];
    for (int v = 1; v < V; v++)
        if (row[v] > mx) {
            mx = row[v];
            best = v;
        }
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp((double)row[v] - (double)mx);
    if (is_argmax) *is_argmax = best == target;
    return (double)row[target] - (double)mx - log(s);
}

nx_status nx__eval_score(nx__eval_worker *w, const int32_t *seq, int n_input, int n_score, double *ll,
                         bool *greedy) {
    if (n_score < 1 || n_score > n_input)
        return nx__error(NX_ERR_RANGE, "eval: %d tokens to score with %d input tokens", n_score, n_input);
    for (int i = 0; i <= n_input; i++)
        if (seq[i] < 0 || seq[i] >= w->V)
            return nx__error(NX_ERR_RANGE, "eval: token id %d at position %d is outside the model's vocabulary [0, %d)",
                             (int)seq[i], i, w->V);
    nx_session_reset(w->session);
    int n_plain = n_input - n_score;
    /* Rows before the scored ones only fill the cache; chunked prefill is exact because each
     * token attends only to the cache. */
    if (n_plain > 0) NX_TRY(nx_session_forward(w->session, seq, n_plain, NULL));
    double sum = 0.0;
    bool all = true;
    for (int c = n_plain; c < n_input; c += NX_EVAL_CHUNK) {
        int T = NX_MIN(NX_EVAL_CHUNK, n_input - c);
        NX_TRY(nx_session_forward(w->session, seq + c, T, w->logits));
        for (int r = 0; r < T; r++) {
            bool am;
            sum += nx__eval_logprob(w->logits + (size_t)r * (size_t)w->V, w->V, seq[c + r + 1], &am);
            all = all && am;
        }
    }
    *ll = sum;
    if (greedy) *greedy = all;
    return NX_OK;
}

/* ---- rolling windows ---------------------------------------------------------------------- */
nx_status nx_eval_rolling_windows(int64_t n_tokens, int max_len, int stride, nx_eval_window **out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    if (max_len < 1) return nx__error(NX_ERR_INVALID_ARG, "rolling windows: max_len %d < 1", max_len);
    if (stride == 0) stride = max_len;
    if (stride < 1 || stride > max_len)
        return nx__error(NX_ERR_INVALID_ARG, "rolling windows: stride %d is not in [1, %d]", stride, max_len);
    if (n_tokens < 0) return nx__error(NX_ERR_INVALID_ARG, "rolling windows: %lld tokens", (long long)n_tokens);
    if (n_tokens == 0) return NX_OK;
    int64_t first = NX_MIN((int64_t)max_len, n_tokens);
    uint64_t count = 1 + (uint64_t)((n_tokens - first + stride - 1) / stride);
    nx_eval_window *w = nx__calloc(count, sizeof *w);
    if (!w) return nx__error(NX_ERR_NOMEM, "rolling windows: %llu windows", (unsigned long long)count);
    /* In S = [prefix] + tokens, token j is S[j + 1]. First window: input [prefix] + tokens[:first-1]
     * = S[0, first), all rows scored. */
    w[0].start = 0;
    w[0].n_input = (int32_t)first;
    w[0].n_pred = (int32_t)first;
    int64_t predicted = first;
    size_t k = 1;
    while (predicted < n_tokens) {
        int64_t p = NX_MIN(n_tokens - predicted, (int64_t)stride);
        int64_t end = predicted + p;   /* window_end */
        /* get_rolling_token_windows: (tokens[end-L-1 : end-1], tokens[end-p : end]); disjoint +
         * [-(L+1):][:-1] leaves input tokens[end-L-1 : end-1] = S[end-L, end), last p rows scored.
         * end - L - 1 >= 0 because predicted >= first = L here. */
        w[k].start = end - max_len;
        w[k].n_input = max_len;
        w[k].n_pred = (int32_t)p;
        predicted = end;
        k++;
    }
    NX_ASSERT(k == count);
    *out = w;
    *n_out = count;
    return NX_OK;
}

void nx_eval_windows_free(nx_eval_window *w) { nx__free(w); }

/* ---- Python string semantics -------------------------------------------------------------- */
/* Decodes one UTF-8 character at s[0..n); returns its length (>= 1) and the code point, or
 * cp = -1 for an invalid byte (length 1). */
static size_t utf8_next(const unsigned char *s, size_t n, int32_t *cp) {
    unsigned c = s[0];
    size_t len;
    int32_t v;
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
    } else {
        *cp = -1;
        return 1;
    }
    if (len > n) {
        *cp = -1;
        return 1;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = -1;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

/* Python str.isspace(): bidi class WS/B/S or category Zs (what re's \s matches in str patterns). */
static bool py_isspace(int32_t c) {
    if (c >= 0x09 && c <= 0x0D) return true;
    if (c >= 0x1C && c <= 0x20) return true;
    switch (c) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return true;
    default:
        return c >= 0x2000 && c <= 0x200A;
    }
}

int64_t nx_eval_count_words(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    int64_t pieces = 1;
    bool in_space = false;
    for (size_t i = 0; i < len;) {
        int32_t cp;
        size_t l = utf8_next(s + i, len - i, &cp);
        bool sp = cp >= 0 && py_isspace(cp);
        if (sp && !in_space) pieces++;   /* each maximal whitespace run is one split point */
        in_space = sp;
        i += l;
    }
    return pieces;
}

size_t nx_eval_rstrip_len(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    size_t keep = 0;
    for (size_t i = 0; i < len;) {
        int32_t cp;
        size_t l = utf8_next(s + i, len - i, &cp);
        i += l;
        if (!(cp >= 0 && py_isspace(cp))) keep = i;
    }
    return keep;
}

void nx_eval_lambada_split(const char *text, size_t len, size_t *ctx_len, bool *needs_space) {
    /* text.split(' ') splits on the ASCII space only; the context is everything before the
     * last one and the target " " + the last piece is exactly text[last_space:]. */
    size_t i = len;
    while (i > 0 && text[i - 1] != ' ') i--;
    if (i == 0) {
        *ctx_len = 0;
        *needs_space = true;
    } else {
        *ctx_len = i - 1;
        *needs_space = false;
    }
}
