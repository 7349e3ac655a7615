/*
 * tasks.c - lm-evaluation-harness request types on our models: loglikelihood (with
 * _encode_pair), lambada_openai on top of it, and loglikelihood_rolling perplexity.
 *
 * References (lm-eval 0.4.13): api/model.py TemplateLM.loglikelihood/_encode_pair,
 * models/huggingface.py HFLM._loglikelihood_tokens / loglikelihood_rolling, utils.py
 * get_rolling_token_windows / make_disjoint_window, api/metrics.py perplexity /
 * weighted_perplexity / bits_per_byte. Tokenization is HF encode with
 * add_special_tokens=False (HFLM's default for causal models), i.e. no post-processor.
 */
#include "eval/eval.h"

#include <math.h>
#include <string.h>

/* ---- loglikelihood ------------------------------------------------------------------------ */
typedef struct {
    const nx_ll_request *reqs;
    const nx_tokenizer *tok;
    nx_ll_result *results;
    int max_len;
    int32_t prefix;
} ll_job;

static nx_status encode(const nx_tokenizer *tok, const char *s, size_t n, nx_ids *out) {
    return nx_tokenizer_encode(tok, s, n, NX_TOK_NO_POST_PROCESS, out);
}

/* Builds ctx_enc + cont_enc into *seq (nx__malloc'd, *n_seq tokens) and the continuation
 * length *n_cont. */
static nx_status encode_pair(const nx_tokenizer *tok, const nx_ll_request *r, int32_t prefix, int32_t **seq,
                             size_t *n_seq, size_t *n_cont) {
    nx_ids whole = {0}, ctx = {0};
    nx_status st;
    *seq = NULL;
    if (r->context_len == 0) {
        /* Empty context: lm-eval scores the continuation after the prefix (EOT) token. */
        st = encode(tok, r->continuation, r->continuation_len, &whole);
        ctx.len = 0;
    } else {
        /* _encode_pair: trailing whitespace of the context moves to the continuation; the
         * continuation is whatever follows the context's own encoding in the whole one. */
        size_t keep = nx_eval_rstrip_len(r->context, r->context_len);
        size_t total = r->context_len + r->continuation_len;
        char *joined = nx__malloc(total + 1);
        if (!joined) return nx__error(NX_ERR_NOMEM, "eval: %zu bytes", total);
        memcpy(joined, r->context, r->context_len);
        memcpy(joined + r->context_len, r->continuation, r->continuation_len);
        st = encode(tok, joined, total, &whole);
        if (st == NX_OK) st = encode(tok, joined, keep, &ctx);
        nx__free(joined);
    }
    if (st == NX_OK) {
        size_t lead = r->context_len == 0 ? 1 : 0;
        *n_cont = r->context_len == 0 ? whole.len : (whole.len > ctx.len ? whole.len - ctx.len : 0);
        *n_seq = whole.len + lead;
        *seq = nx__malloc((*n_seq + 1) * sizeof(int32_t));
        if (!*seq) {
            st = nx__error(NX_ERR_NOMEM, "eval: %zu tokens", *n_seq);
        } else {
            if (lead) (*seq)[0] = prefix;
            if (whole.len) memcpy(*seq + lead, whole.data, whole.len * sizeof(int32_t));
        }
    }
    nx_ids_free(&whole);
    nx_ids_free(&ctx);
    return st;
}

static nx_status ll_item(nx__eval_worker *w, uint64_t i, void *arg) {
    ll_job *job = arg;
    const nx_ll_request *r = &job->reqs[i];
    int32_t *whole = NULL;
    size_t n_whole = 0, n_cont = 0;
    nx_status st = encode_pair(job->tok, r, job->prefix, &whole, &n_whole, &n_cont);
    if (st != NX_OK) {
        st = nx__error_wrap(st, "request %llu", (unsigned long long)i);
        goto done;
    }
    if (n_cont == 0) {
        st = nx__error(NX_ERR_RANGE, "request %llu: the continuation encodes to no tokens", (unsigned long long)i);
        goto done;
    }
    if (n_cont > (size_t)job->max_len || n_cont >= n_whole) {
        st = nx__error(NX_ERR_RANGE, "request %llu: continuation of %zu tokens does not fit max_length %d after a context",
                       (unsigned long long)i, n_cont, job->max_len);
        goto done;
    }
    /* HFLM: inp = (ctx + cont)[-(max_length + 1):][:-1]: left truncation keeping the last
     * max_length + 1 tokens, the last of which is only a target. */
    size_t n_seq = n_whole;
    const int32_t *seq = whole;
    if (n_seq > (size_t)job->max_len + 1) {
        seq += n_seq - ((size_t)job->max_len + 1);
        n_seq = (size_t)job->max_len + 1;
    }
    nx_ll_result *res = &job->results[i];
    st = nx__eval_score(w, seq, (int)n_seq - 1, (int)n_cont, &res->loglikelihood, &res->is_greedy);
    if (st != NX_OK) {
        st = nx__error_wrap(st, "request %llu", (unsigned long long)i);
        goto done;
    }
    res->n_continuation = (int32_t)n_cont;
    res->n_context = (int32_t)(n_seq - n_cont);
done:
    nx__free(whole);
    return st;
}

nx_status nx_eval_loglikelihood(const nx_model *m, const nx_tokenizer *tok, const nx_ll_request *reqs, size_t n,
                                const nx_eval_opts *opts, nx_ll_result *results) {
    if (!m || !tok || (n && (!reqs || !results))) return nx__error(NX_ERR_INVALID_ARG, "nx_eval_loglikelihood: NULL argument");
    int L = nx__eval_max_length(m, opts);
    int max_pos = nx_model_get_config(m)->max_position_embeddings;
    if (L < 1 || L > max_pos)
        return nx__error(NX_ERR_RANGE, "eval: max_length %d is not in [1, %d] (max_position_embeddings)", L, max_pos);
    memset(results, 0, n * sizeof *results);
    ll_job job = {reqs, tok, results, L, nx__eval_prefix_token(tok, opts)};
    return nx__eval_run(m, L, n, opts, ll_item, &job);
}

nx_status nx_eval_lambada(const nx_model *m, const nx_tokenizer *tok, const char *const *texts, const size_t *lens,
                          size_t n, const nx_eval_opts *opts, nx_ll_result *items, nx_lambada_result *out) {
    if (!texts || !lens || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_eval_lambada: NULL argument");
    if (n == 0) return nx__error(NX_ERR_INVALID_ARG, "lambada: no examples");
    nx_ll_request *reqs = nx__calloc(n, sizeof *reqs);
    nx_ll_result *res = items ? items : nx__calloc(n, sizeof *res);
    char **spaced = nx__calloc(n, sizeof *spaced);
    nx_status st = NX_OK;
    if (!reqs || !res || !spaced) {
        st = nx__error(NX_ERR_NOMEM, "lambada: %zu examples", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        size_t cl;
        bool need_space;
        nx_eval_lambada_split(texts[i], lens[i], &cl, &need_space);
        reqs[i].context = texts[i];
        reqs[i].context_len = cl;
        if (need_space) {
            /* No space in the text: context "" and target " " + text. */
            spaced[i] = nx__malloc(lens[i] + 2);
            if (!spaced[i]) {
                st = nx__error(NX_ERR_NOMEM, "lambada: example %zu", i);
                goto done;
            }
            spaced[i][0] = ' ';
            memcpy(spaced[i] + 1, texts[i], lens[i]);
            reqs[i].continuation = spaced[i];
            reqs[i].continuation_len = lens[i] + 1;
        } else {
            reqs[i].continuation = texts[i] + cl;
            reqs[i].continuation_len = lens[i] - cl;
        }
    }
    st = nx_eval_loglikelihood(m, tok, reqs, n, opts, res);
    if (st != NX_OK) goto done;
    /* acc = mean(is_greedy); perplexity = exp(-mean(ll)) (lm-eval metrics.perplexity);
     * stderr as lm-eval's mean_stderr: sample std / sqrt(n). Summed in example order. */
    double sum_ll = 0.0, hits = 0.0;
    for (size_t i = 0; i < n; i++) {
        sum_ll += res[i].loglikelihood;
        hits += res[i].is_greedy ? 1.0 : 0.0;
    }
    out->n = n;
    out->acc = hits / (double)n;
    out->perplexity = exp(-sum_ll / (double)n);
    if (n > 1) {
        double var = 0.0;
        for (size_t i = 0; i < n; i++) {
            double d = (res[i].is_greedy ? 1.0 : 0.0) - out->acc;
            var += d * d;
        }
        out->acc_stderr = sqrt(var / (double)(n - 1)) / sqrt((double)n);
    } else {
        out->acc_stderr = 0.0;
    }
done:
    if (spaced)
        for (size_t i = 0; i < n; i++) nx__free(spaced[i]);
    nx__free(spaced);
    nx__free(reqs);
    if (!items) nx__free(res);
    return st;
}

/* ---- rolling perplexity -------------------------------------------------------------------- */
typedef struct {
    const int32_t *seq;   /* [prefix] + tokens of the window's document */
    nx_eval_window win;
    size_t doc;
} ppl_window;

typedef struct {
    ppl_window *wins;
    int32_t **seqs;       /* per document: prefix + tokens */
    double *win_ll;
} ppl_job;

static nx_status ppl_item(nx__eval_worker *w, uint64_t i, void *arg) {
    ppl_job *job = arg;
    const ppl_window *pw = &job->wins[i];
    nx_status st = nx__eval_score(w, pw->seq + pw->win.start, pw->win.n_input, pw->win.n_pred, &job->win_ll[i], NULL);
    if (st != NX_OK) return nx__error_wrap(st, "document %zu, window at token %lld", pw->doc, (long long)pw->win.start);
    return NX_OK;
}

nx_status nx_eval_ppl_tokens(const nx_model *m, const int32_t *const *docs, const size_t *lens, size_t n, int stride,
                             const nx_eval_opts *opts, double *doc_ll, nx_ppl_result *out) {
    if (!m || !out || (n && (!docs || !lens))) return nx__error(NX_ERR_INVALID_ARG, "nx_eval_ppl_tokens: NULL argument");
    memset(out, 0, sizeof *out);
    int L = nx__eval_max_length(m, opts);
    int max_pos = nx_model_get_config(m)->max_position_embeddings;
    if (L < 1 || L > max_pos)
        return nx__error(NX_ERR_RANGE, "eval: max_length %d is not in [1, %d] (max_position_embeddings)", L, max_pos);
    if (stride < 0 || stride > L) return nx__error(NX_ERR_RANGE, "ppl: stride %d is not in [1, %d]", stride, L);
    int32_t prefix = nx__eval_prefix_token(NULL, opts);
    nx_status st = NX_OK;
    ppl_job job = {0};
    size_t n_win = 0, cap = 0;
    job.seqs = nx__calloc(n ? n : 1, sizeof *job.seqs);
    if (!job.seqs) return nx__error(NX_ERR_NOMEM, "ppl: %zu documents", n);
    for (size_t d = 0; d < n; d++) {
        job.seqs[d] = nx__malloc((lens[d] + 1) * sizeof(int32_t));
        if (!job.seqs[d]) {
            st = nx__error(NX_ERR_NOMEM, "ppl: document %zu", d);
            goto done;
        }
        job.seqs[d][0] = prefix;
        if (lens[d]) memcpy(job.seqs[d] + 1, docs[d], lens[d] * sizeof(int32_t));
        nx_eval_window *w = NULL;
        size_t nw = 0;
        st = nx_eval_rolling_windows((int64_t)lens[d], L, stride, &w, &nw);
        if (st != NX_OK) goto done;
        if (n_win + nw > cap) {
            size_t nc = NX_MAX(cap * 2, n_win + nw + 16);
            ppl_window *g = nx__realloc(job.wins, nc * sizeof *g);
            if (!g) {
                nx_eval_windows_free(w);
                st = nx__error(NX_ERR_NOMEM, "ppl: %zu windows", nc);
                goto done;
            }
            job.wins = g;
            cap = nc;
        }
        for (size_t k = 0; k < nw; k++) job.wins[n_win++] = (ppl_window){job.seqs[d], w[k], d};
        nx_eval_windows_free(w);
        out->n_tokens += (int64_t)lens[d];
    }
    job.win_ll = nx__calloc(n_win ? n_win : 1, sizeof *job.win_ll);
    if (!job.win_ll) {
        st = nx__error(NX_ERR_NOMEM, "ppl: %zu windows", n_win);
        goto done;
    }
    if (n_win) {
        st = nx__eval_run(m, L, n_win, opts, ppl_item, &job);
        if (st != NX_OK) goto done;
    }
    if (doc_ll)
        for (size_t d = 0; d < n; d++) doc_ll[d] = 0.0;
    /* Window order = document order, so the sums do not depend on the thread count. */
    double ll = 0.0;
    for (size_t k = 0; k < n_win; k++) {
        ll += job.win_ll[k];
        if (doc_ll) doc_ll[job.wins[k].doc] += job.win_ll[k];
    }
    out->n_docs = n;
    out->n_windows = n_win;
    out->loglikelihood = ll;
    out->token_perplexity = out->n_tokens ? exp(-ll / (double)out->n_tokens) : NAN;
done:
    for (size_t d = 0; d < n; d++) nx__free(job.seqs[d]);
    nx__free(job.seqs);
    nx__free(job.wins);
    nx__free(job.win_ll);
    return st;
}

nx_status nx_eval_ppl_texts(const nx_model *m, const nx_tokenizer *tok, const char *const *texts, const size_t *lens,
                            size_t n, int stride, const nx_eval_opts *opts, double *doc_ll, nx_ppl_result *out) {
    if (!m || !tok || !out || (n && (!texts || !lens))) return nx__error(NX_ERR_INVALID_ARG, "nx_eval_ppl_texts: NULL argument");
    nx_ids *ids = nx__calloc(n ? n : 1, sizeof *ids);
    const int32_t **docs = nx__calloc(n ? n : 1, sizeof *docs);
    size_t *dl = nx__calloc(n ? n : 1, sizeof *dl);
    nx_status st = NX_OK;
    if (!ids || !docs || !dl) {
        st = nx__error(NX_ERR_NOMEM, "ppl: %zu documents", n);
        goto done;
    }
    int64_t words = 0, bytes = 0;
    for (size_t d = 0; d < n; d++) {
        st = encode(tok, texts[d], lens[d], &ids[d]);
        if (st != NX_OK) {
            st = nx__error_wrap(st, "document %zu", d);
            goto done;
        }
        docs[d] = ids[d].data;
        dl[d] = ids[d].len;
        /* wikitext's process_results: words = len(re.split(r"\s+", text)), bytes = UTF-8 length. */
        words += nx_eval_count_words(texts[d], lens[d]);
        bytes += (int64_t)lens[d];
    }
    nx_eval_opts o = opts ? *opts : nx_eval_defaults();
    o.prefix_token = nx__eval_prefix_token(tok, opts);
    st = nx_eval_ppl_tokens(m, docs, dl, n, stride, &o, doc_ll, out);
    if (st != NX_OK) goto done;
    out->n_words = words;
    out->n_bytes = bytes;
    /* api/metrics.py: weighted_perplexity = exp(-sum ll / sum weight); bits_per_byte =
     * -sum ll / sum bytes / ln 2. */
    out->word_perplexity = words ? exp(-out->loglikelihood / (double)words) : NAN;
    out->byte_perplexity = bytes ? exp(-out->loglikelihood / (double)bytes) : NAN;
    out->bits_per_byte = bytes ? -out->loglikelihood / (double)bytes / log(2.0) : NAN;
done:
    if (ids)
        for (size_t d = 0; d < n; d++) nx_ids_free(&ids[d]);
    nx__free(ids);
    nx__free(docs);
    nx__free(dl);
    return st;
}
