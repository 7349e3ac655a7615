/*
 * neox/eval.h - evaluation with lm-evaluation-harness semantics, and Pythia's memorization test.
 *
 *   - loglikelihood of (context, continuation) pairs: lm-eval's _encode_pair (trailing context
 *     whitespace moves to the continuation; the continuation tokens are what follows the
 *     context's own encoding in the encoding of the whole string), left truncation to
 *     max_length, summed target log-probabilities and is_greedy (argmax equals the target at
 *     every continuation position). LAMBADA (lambada_openai) is built on it.
 *   - rolling perplexity: lm-eval's loglikelihood_rolling (get_rolling_token_windows +
 *     make_disjoint_window with the prefix token, context_len 1 by default), aggregated as
 *     its wikitext-style word_perplexity / byte_perplexity / bits_per_byte, plus token
 *     perplexity.
 *   - memorization: Pythia's k-extractable score (prompt = first 32 tokens of a training
 *     sequence, greedy continuation of 32 tokens with eos suppressed, as eval_memorization.py's
 *     min_length does; score = fraction of positions equal to the true tokens).
 *
 * Work is spread over n_threads worker threads, each with its own nx_session on the shared
 * (read-only) model; every item is computed by one single-threaded session, so results do not
 * depend on the thread count. Log-softmax is done in double from the fp32 logits.
 * Depends on neox/model.h, neox/tokenizer.h, neox/data.h.
 */
#ifndef NEOX_EVAL_H
#define NEOX_EVAL_H

#include "neox/core.h"
#include "neox/data.h"
#include "neox/model.h"
#include "neox/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Progress: done of total items (examples, windows, sequences). Called from worker threads,
 * never two calls at once; a call may be skipped while another is running. */
typedef void (*nx_eval_progress_fn)(uint64_t done, uint64_t total, void *user);

typedef struct nx_eval_opts {
    int n_threads;            /* worker threads, each with one session; 0 = number of CPUs */
    int max_length;           /* model context (lm-eval max_length); 0 = max_position_embeddings */
    int32_t prefix_token;     /* rolling-window / empty-context prefix; -1 = tokenizer bos, else eos, else 0 */
    nx_dtype kv_type;         /* KV cache type of the sessions (nx_session_opts.kv_type); 0 = auto */
    nx_eval_progress_fn progress;   /* may be NULL */
    void *user;
} nx_eval_opts;

/* Defaults: all CPUs, the model's context, the tokenizer's prefix token, no progress. */
NX_API nx_eval_opts nx_eval_defaults(void);

/* ---- rolling windows ------------------------------------------------------------------- */
/* One window over the sequence S = [prefix] + tokens: the model input is S[start, start+n_input)
 * and the last n_pred rows are scored, row r predicting S[start + r + 1]. */
typedef struct nx_eval_window {
    int64_t start;
    int32_t n_input;
    int32_t n_pred;
} nx_eval_window;

/* lm-eval's get_rolling_token_windows(tokens, prefix, max_len, context_len) followed by
 * make_disjoint_window and the model-side [-(max_len+1):][:-1] truncation, for n_tokens
 * tokens. stride = tokens predicted per window after the first (pred_len = max_len -
 * context_len + 1); stride == max_len (or 0) is lm-eval's context_len = 1. Every token is
 * predicted exactly once. *out is allocated (free with nx_eval_windows_free); *n_out = 0 and
 * *out = NULL for an empty document. */
NX_API nx_status nx_eval_rolling_windows(int64_t n_tokens, int max_len, int stride, nx_eval_window **out,
                                         size_t *n_out);
NX_API void nx_eval_windows_free(nx_eval_window *w);

/* ---- text helpers (Python str semantics on UTF-8) ----------------------------------------- */
/* len(re.split(r"\s+", text)) with Python's Unicode \s (str.isspace). Invalid UTF-8 bytes
 * count as non-space. */
NX_API int64_t nx_eval_count_words(const char *text, size_t len);
/* Length of text without trailing Unicode whitespace (Python str.rstrip()). */
NX_API size_t nx_eval_rstrip_len(const char *text, size_t len);
/* lambada_openai's split: context = text.split(' ')[:-1] joined by ' ' = text[0, *ctx_len),
 * target = ' ' + the last ' '-separated piece = text[*ctx_len, len) (which starts with ' '),
 * or, when text has no ' ', context "" and target " " + text (returned as *ctx_len = 0 and
 * *needs_space = true). */
NX_API void nx_eval_lambada_split(const char *text, size_t len, size_t *ctx_len, bool *needs_space);

/* ---- documents ------------------------------------------------------------------------- */
/* Texts read from a file: a .jsonl/.jsonlines/.json file gives one document per line (the string
 * field `key` of each JSON object; blank lines skipped), any other file is one document. */
typedef struct nx_eval_docs {
    size_t n;
    char **texts;    /* NUL-terminated; may also hold NULs (use lens) */
    size_t *lens;
} nx_eval_docs;

/* key NULL = "text". Errors name the file, the line and what was expected. *out is owned by
 * the caller (nx_eval_docs_free). */
NX_API nx_status nx_eval_docs_load(const char *path, const char *key, nx_eval_docs *out);
/* The same from memory: jsonl selects the JSON-lines form; name is used in messages. */
NX_API nx_status nx_eval_docs_parse(const char *data, size_t len, bool jsonl, const char *name, const char *key,
                                    nx_eval_docs *out);
NX_API void nx_eval_docs_free(nx_eval_docs *d);   /* fine on a zeroed struct */

/* ---- loglikelihood requests -------------------------------------------------------------- */
typedef struct nx_ll_request {
    const char *context;   /* borrowed for the call */
    size_t context_len;
    const char *continuation;
    size_t continuation_len;
} nx_ll_request;

typedef struct nx_ll_result {
    double loglikelihood;   /* sum of log p(continuation token) */
    bool is_greedy;         /* argmax == target at every continuation position */
    int32_t n_context;      /* context tokens fed (after left truncation) */
    int32_t n_continuation; /* continuation tokens scored */
} nx_ll_result;

/* lm-eval HFLM.loglikelihood for n requests (results[n], caller memory). Errors: a
 * continuation with 0 tokens, or more than max_length tokens, is NX_ERR_RANGE naming the
 * request; invalid UTF-8 is NX_ERR_INVALID_ARG. */
NX_API nx_status nx_eval_loglikelihood(const nx_model *m, const nx_tokenizer *tok, const nx_ll_request *reqs,
                                       size_t n, const nx_eval_opts *opts, nx_ll_result *results);

typedef struct nx_lambada_result {
    uint64_t n;
    double acc;          /* mean is_greedy */
    double perplexity;   /* exp(-mean summed loglikelihood): per word, as lm-eval */
    double acc_stderr;   /* sample stderr of acc (lm-eval's mean_stderr) */
} nx_lambada_result;

/* lambada_openai on n texts: split with nx_eval_lambada_split, then nx_eval_loglikelihood.
 * items: NULL or caller memory for n results. */
NX_API nx_status nx_eval_lambada(const nx_model *m, const nx_tokenizer *tok, const char *const *texts,
                                 const size_t *lens, size_t n, const nx_eval_opts *opts, nx_ll_result *items,
                                 nx_lambada_result *out);

/* ---- perplexity -------------------------------------------------------------------------- */
typedef struct nx_ppl_result {
    uint64_t n_docs, n_windows;
    int64_t n_tokens, n_words, n_bytes;   /* words/bytes are 0 when no text was given */
    double loglikelihood;                 /* summed over documents (natural log) */
    double token_perplexity;              /* exp(-ll / tokens) */
    double word_perplexity;               /* exp(-ll / words) */
    double byte_perplexity;               /* exp(-ll / bytes) */
    double bits_per_byte;                 /* -ll / bytes / ln 2 */
} nx_ppl_result;

/* Rolling-window perplexity of n token documents. doc_ll: NULL or caller memory for n
 * per-document loglikelihoods. words/bytes stay 0 (see nx_eval_ppl_texts). stride as in
 * nx_eval_rolling_windows. */
NX_API nx_status nx_eval_ppl_tokens(const nx_model *m, const int32_t *const *docs, const size_t *lens, size_t n,
                                    int stride, const nx_eval_opts *opts, double *doc_ll, nx_ppl_result *out);
/* Same for n UTF-8 texts, tokenized without post-processing (HF add_special_tokens=False),
 * with lm-eval's word (re.split(r"\s+")) and UTF-8 byte counts. */
NX_API nx_status nx_eval_ppl_texts(const nx_model *m, const nx_tokenizer *tok, const char *const *texts,
                                   const size_t *lens, size_t n, int stride, const nx_eval_opts *opts, double *doc_ll,
                                   nx_ppl_result *out);

/* ---- memorization ------------------------------------------------------------------------ */
typedef struct nx_mem_opts {
    int prompt_len;         /* tokens of the sequence fed as the prompt; 0 = 32 */
    int continuation_len;   /* greedy tokens compared with the truth; 0 = 32 */
    bool allow_eos;         /* false (default): eos can't be picked, as Pythia's min_length run */
    int batch;              /* sequences each worker decodes together (nx_batch_decode); 0 = 16.
                             * Scores do not depend on it (nor on n_threads), only speed does. */
} nx_mem_opts;

typedef struct nx_mem_result {
    uint64_t n;               /* sequences scored */
    double mean_score;
    uint64_t n_memorized;     /* score == 1.0 */
} nx_mem_result;

/* Scores items [begin, end) of an indexed dataset whose items are training sequences (Pythia's
 * preshuffled files: one item per 2049-token sequence); each must hold at least prompt_len +
 * continuation_len tokens. scores: NULL or caller memory for end - begin values. */
NX_API nx_status nx_eval_memorization(const nx_model *m, const nx_indexed *ds, uint64_t begin, uint64_t end,
                                      const nx_mem_opts *mopts, const nx_eval_opts *opts, float *scores,
                                      nx_mem_result *out);

#ifdef __cplusplus
}
#endif
#endif /* NEOX_EVAL_H */
