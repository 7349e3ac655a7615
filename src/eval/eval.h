/*
 * eval.h - private interface of the eval module: the worker pool that spreads items over
 * threads (one nx_session each), and the scoring primitive shared by perplexity, LAMBADA
 * and memorization. Includes core, models (public), tokenizer (public), data (public).
 *
 * Invariant: an item is always computed start to finish by one single-threaded session, in a
 * fixed order of operations, so per-item results are identical for any n_threads; aggregates
 * are summed afterwards in item order for the same reason.
 */
#ifndef NX_EVAL_INTERNAL_H
#define NX_EVAL_INTERNAL_H

#include "core/core.h"
#include "neox/eval.h"

/* Rows of logits computed per forward call while scoring: bounds the scratch to
 * NX_EVAL_CHUNK * V floats per worker (13 MB for Pythia's 50304-row head). */
#define NX_EVAL_CHUNK 64

typedef struct nx__eval_worker {
    int ith;
    nx_session *session;
    float *logits;   /* NX_EVAL_CHUNK * V */
    int V;
} nx__eval_worker;

/* Computes item i on worker w. Errors are reported with nx__error as usual. */
typedef nx_status (*nx__eval_item_fn)(nx__eval_worker *w, uint64_t i, void *arg);

/* Runs fn for every i in [0, n_items) on opts->n_threads workers, each owning one session
 * with a cache of n_ctx tokens. Items are handed out in increasing order from an atomic
 * counter. The first error stops the run; its message is re-raised on the calling thread. */
nx_status nx__eval_run(const nx_model *m, int n_ctx, uint64_t n_items, const nx_eval_opts *opts,
                       nx__eval_item_fn fn, void *arg);

/* Number of workers nx__eval_run starts for n_items items (worker ith is 0 .. this - 1), for
 * tasks that keep per-worker state of their own. */
int nx__eval_n_workers(uint64_t n_items, const nx_eval_opts *opts);

/* Resets the worker's session, feeds seq[0, n_input) and scores the last n_score rows: row r
 * predicts seq[r + 1], so the targets are seq[n_input - n_score + 1 .. n_input]. seq thus
 * holds n_input + 1 tokens. *ll = sum of log-softmax at the targets (double), *greedy =
 * argmax (lowest id on ties, as torch) equals the target at every scored row. */
nx_status nx__eval_score(nx__eval_worker *w, const int32_t *seq, int n_input, int n_score, double *ll,
                         bool *greedy);

/* log_softmax(row)[target] in double, and whether target is the row's argmax. */
double nx__eval_logprob(const float *row, int V, int32_t target, bool *is_argmax);

/* The context length to use: opts->max_length or the model's max_position_embeddings. */
int nx__eval_max_length(const nx_model *m, const nx_eval_opts *opts);
/* The prefix token: opts->prefix_token, else tokenizer bos, else eos, else 0. tok may be NULL. */
int32_t nx__eval_prefix_token(const nx_tokenizer *tok, const nx_eval_opts *opts);

#endif
