/*
 * memorization.c - Pythia's k-extractable memorization score
 * (predictable-memorization/eval_memorization.py): for each training sequence, the first
 * prompt_len tokens are the prompt, the model decodes continuation_len tokens greedily (with
 * eos masked, which is what generate(min_length = prompt + continuation) does), and the score
 * is the fraction of positions equal to the sequence's own next tokens. A score of 1.0 means
 * the sequence is extractable ("memorized").
 *
 * Sequences are spread over the workers in groups of `batch`. A worker owns `batch` sessions
 * (one shared single-thread pool, one KV cache each) and an nx_batch: it prefills the group's
 * prompts together (nx_batch_forward, in the chunks a session's own forward would use), then
 * decodes the group together, one nx_batch_decode per step. The weights are read once per
 * prefill call for the group and once per 8 sequences in a decode step, instead of once per
 * sequence. A batched call equals each session's own
 * forward bit for bit (tests/test_batch.c), so scores never depend on the batch size or the
 * thread count.
 */
#include "eval/eval.h"

#include <string.h>

#define MEM_DEFAULT_BATCH 16
#define MEM_MAX_ROWS 1024   /* rows per batched prefill call: bounds the batch scratch */

/* Per-worker state (worker ith of nx__eval_run). */
typedef struct {
    nx_pool *pool;            /* single-thread pool shared by the worker's sessions */
    nx_session **s;           /* [batch] */
    nx_batch *batch;
    int32_t *seq;             /* [batch][P + K] */
    int32_t *ids;             /* [max_tokens] a prefill call's tokens */
    int *nt;                  /* [batch] its tokens per session */
    int32_t *tok;             /* [batch] tokens of the current step */
    int *hits;                /* [batch] */
} mem_worker;

typedef struct {
    const nx_indexed *ds;
    uint64_t begin, n;
    int P, K, B;
    int chunk, max_rows;      /* prompt chunk (the sessions' n_batch), rows per prefill call */
    int32_t banned;   /* eos id masked out of the argmax, or -1 */
    float *scores;
    mem_worker *workers;
    const nx_eval_opts *opts;   /* the caller's, for its progress callback */
} mem_job;

/* argmax over row[0, V) skipping `banned`; lowest id on ties (torch.argmax). */
static int32_t greedy_pick(const float *row, int V, int32_t banned) {
    int32_t best = -1;
    float mx = 0.0f;
    for (int v = 0; v < V; v++) {
        if (v == banned) continue;
        if (best < 0 || row[v] > mx) {
            mx = row[v];
            best = v;
        }
    }
    return best;
}

/* Reads sequence `item` into seq (P + K tokens) and checks it. */
static nx_status mem_read(const mem_job *job, uint64_t item, int V, int32_t *seq) {
    int P = job->P, K = job->K;
    int32_t size = nx_indexed_item_size(job->ds, item);
    if (size < P + K)
        return nx__error(NX_ERR_RANGE, "memorization: sequence %llu has %d tokens, fewer than prompt %d + continuation %d",
                         (unsigned long long)item, (int)size, P, K);
    NX_TRY(nx_indexed_read(job->ds, item, 0, (uint64_t)(P + K), seq));
    for (int t = 0; t < P + K; t++)
        if (seq[t] < 0 || seq[t] >= V)
            return nx__error(NX_ERR_RANGE, "memorization: sequence %llu: token %d at position %d is outside the vocabulary [0, %d)",
                             (unsigned long long)item, (int)seq[t], t, V);
    return NX_OK;
}

/* Group g: sequences [g·B, g·B + n) of the range, decoded together. */
static nx_status mem_group(nx__eval_worker *w, uint64_t g, void *arg) {
    mem_job *job = arg;
    mem_worker *mw = &job->workers[w->ith];
    int P = job->P, K = job->K;
    uint64_t i0 = g * (uint64_t)job->B;
    int n = job->n - i0 < (uint64_t)job->B ? (int)(job->n - i0) : job->B;
    for (int i = 0; i < n; i++) {
        NX_TRY(mem_read(job, job->begin + i0 + (uint64_t)i, w->V, mw->seq + (size_t)i * (size_t)(P + K)));
        nx_session_reset(mw->s[i]);
        mw->hits[i] = 0;
    }
    /* Prompts in the chunks nx_session_forward(s, seq, P, NULL) would use, as many sessions per
     * call as max_rows allows. */
    for (int o = 0; o < P; o += job->chunk) {
        int len = P - o < job->chunk ? P - o : job->chunk, per = job->max_rows / len;
        for (int a = 0; a < n; a += per) {
            int k = n - a < per ? n - a : per;
            for (int j = 0; j < k; j++) {
                memcpy(mw->ids + (size_t)j * len, mw->seq + (size_t)(a + j) * (size_t)(P + K) + o,
                       (size_t)len * sizeof *mw->ids);
                mw->nt[j] = len;
            }
            NX_TRY(nx_batch_forward(mw->batch, mw->s + a, mw->ids, mw->nt, k, NULL));
        }
    }
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < n; i++) {
            mw->tok[i] = greedy_pick(nx_session_logits(mw->s[i]), w->V, job->banned);
            mw->hits[i] += mw->tok[i] == mw->seq[(size_t)i * (size_t)(P + K) + (size_t)(P + k)];
        }
        /* The model continues from its own choice, not the truth (free-running generation). */
        if (k + 1 < K) NX_TRY(nx_batch_decode(mw->batch, mw->s, mw->tok, n, NULL));
    }
    for (int i = 0; i < n; i++) job->scores[i0 + (uint64_t)i] = (float)mw->hits[i] / (float)K;
    return NX_OK;
}

/* nx__eval_run counts groups; the caller's progress counts sequences. Until the last group is
 * in, every finished group is a full one. */
static void mem_progress(uint64_t done, uint64_t total, void *user) {
    const mem_job *job = user;
    job->opts->progress(done == total ? job->n : done * (uint64_t)job->B, job->n, job->opts->user);
}

static void mem_workers_free(mem_worker *ws, int nt, int B) {
    for (int t = 0; ws && t < nt; t++) {
        for (int i = 0; ws[t].s && i < B; i++) nx_session_free(ws[t].s[i]);
        nx__free(ws[t].s);
        nx_batch_free(ws[t].batch);
        nx_pool_free(ws[t].pool);
        nx__free(ws[t].seq);
        nx__free(ws[t].tok);
        nx__free(ws[t].hits);
        nx__free(ws[t].ids);
        nx__free(ws[t].nt);
    }
    nx__free(ws);
}

static nx_status mem_workers_create(const nx_model *m, int nt, const mem_job *job, mem_worker **out) {
    int B = job->B, P = job->P, K = job->K;
    mem_worker *ws = nx__calloc((size_t)nt, sizeof *ws);
    *out = ws;
    if (!ws) return nx__error(NX_ERR_NOMEM, "memorization: %d workers", nt);
    for (int t = 0; t < nt; t++) {
        mem_worker *mw = &ws[t];
        mw->pool = nx_pool_create(1);
        mw->s = nx__calloc((size_t)B, sizeof *mw->s);
        mw->seq = nx__malloc((size_t)B * (size_t)(P + K) * sizeof *mw->seq);
        mw->tok = nx__malloc((size_t)B * sizeof *mw->tok);
        mw->hits = nx__malloc((size_t)B * sizeof *mw->hits);
        mw->ids = nx__malloc((size_t)job->max_rows * sizeof *mw->ids);
        mw->nt = nx__malloc((size_t)B * sizeof *mw->nt);
        if (!mw->pool || !mw->s || !mw->seq || !mw->tok || !mw->hits || !mw->ids || !mw->nt)
            return nx__error(NX_ERR_NOMEM, "memorization: worker state for a batch of %d", B);
        NX_TRY(nx_batch_create(m, B, job->max_rows, &mw->batch));
        for (int i = 0; i < B; i++) {
            nx_session_opts so = {.n_ctx = P + K, .n_batch = job->chunk, .pool = mw->pool, .kv_type = job->opts ? job->opts->kv_type : NX_DTYPE_INVALID};
            NX_TRY(nx_session_create(m, &so, &mw->s[i]));
        }
    }
    return NX_OK;
}

nx_status nx_eval_memorization(const nx_model *m, const nx_indexed *ds, uint64_t begin, uint64_t end,
                               const nx_mem_opts *mopts, const nx_eval_opts *opts, float *scores, nx_mem_result *out) {
    if (!m || !ds || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_eval_memorization: NULL argument");
    memset(out, 0, sizeof *out);
    int P = mopts && mopts->prompt_len > 0 ? mopts->prompt_len : 32;
    int K = mopts && mopts->continuation_len > 0 ? mopts->continuation_len : 32;
    const nx_model_config *cfg = nx_model_get_config(m);
    if (P + K > 2048 || P + K > cfg->max_position_embeddings)
        return nx__error(NX_ERR_RANGE, "memorization: prompt %d + continuation %d exceeds the model context %d (or 2048)", P,
                         K, cfg->max_position_embeddings);
    uint64_t n_items = nx_indexed_n_items(ds);
    if (begin > end || end > n_items)
        return nx__error(NX_ERR_RANGE, "memorization: range %llu:%llu is outside the dataset's %llu sequences",
                         (unsigned long long)begin, (unsigned long long)end, (unsigned long long)n_items);
    uint64_t n = end - begin;
    if (n == 0) return nx__error(NX_ERR_RANGE, "memorization: empty range %llu:%llu", (unsigned long long)begin,
                                 (unsigned long long)end);
    float *sc = scores ? scores : nx__calloc(n, sizeof *sc);
    if (!sc) return nx__error(NX_ERR_NOMEM, "memorization: %llu scores", (unsigned long long)n);
    /* A range too short to fill every worker's batch is split evenly instead. */
    int B = mopts && mopts->batch > 0 ? mopts->batch : MEM_DEFAULT_BATCH;
    uint64_t even = (n + (uint64_t)nx__eval_n_workers(n, opts) - 1) / (uint64_t)nx__eval_n_workers(n, opts);
    if ((uint64_t)B > even) B = (int)even;
    uint64_t n_groups = (n + (uint64_t)B - 1) / (uint64_t)B;
    int nt = nx__eval_n_workers(n_groups, opts);
    int chunk = P < 256 ? P : 256;
    int max_rows = B * chunk < MEM_MAX_ROWS ? B * chunk : MEM_MAX_ROWS;
    if (max_rows < B) max_rows = B;
    int32_t banned = (mopts && mopts->allow_eos) ? -1 : cfg->eos_token_id;
    mem_job job = {ds, begin, n, P, K, B, chunk, max_rows, banned, sc, NULL, opts};
    nx_eval_opts eo = opts ? *opts : nx_eval_defaults();
    if (eo.progress) {
        eo.progress = mem_progress;
        eo.user = &job;
    }
    nx_status st = mem_workers_create(m, nt, &job, &job.workers);
    if (st == NX_OK) st = nx__eval_run(m, P + K, n_groups, &eo, mem_group, &job);
    mem_workers_free(job.workers, nt, B);
    if (st == NX_OK) {
        double sum = 0.0;
        for (uint64_t i = 0; i < n; i++) {
            sum += sc[i];
            out->n_memorized += sc[i] == 1.0f;
        }
        out->n = n;
        out->mean_score = sum / (double)n;
    }
    if (!scores) nx__free(sc);
    return st;
}
