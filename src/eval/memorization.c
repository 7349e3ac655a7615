/*
 * memorization.c - Pythia's k-extractable memorization score
 * (predictable-memorization/eval_memorization.py): for each training sequence, the first
 * prompt_len tokens are the prompt, the model decodes continuation_len tokens greedily (with
 * eos masked, which is what generate(min_length = prompt + continuation) does), and the score
 * is the fraction of positions equal to the sequence's own next tokens. A score of 1.0 means
 * the sequence is extractable ("memorized").
 *
 * Sequences are spread over the workers; each decodes with its own KV cache (prefill of the
 * prompt, then one token per step), so the arithmetic of one sequence never depends on the
 * thread count.
 */
#include "eval/eval.h"

#include <string.h>

typedef struct {
    const nx_indexed *ds;
    uint64_t begin;
    int P, K;
    int32_t banned;   /* eos id masked out of the argmax, or -1 */
    float *scores;
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

static nx_status mem_item(nx__eval_worker *w, uint64_t i, void *arg) {
    mem_job *job = arg;
    uint64_t item = job->begin + i;
    int P = job->P, K = job->K;
    int32_t seq[2 * 1024];   /* P + K <= 2048 is checked by the caller */
    int32_t size = nx_indexed_item_size(job->ds, item);
    if (size < P + K)
        return nx__error(NX_ERR_RANGE, "memorization: sequence %llu has %d tokens, fewer than prompt %d + continuation %d",
                         (unsigned long long)item, (int)size, P, K);
    NX_TRY(nx_indexed_read(job->ds, item, 0, (uint64_t)(P + K), seq));
    for (int t = 0; t < P + K; t++)
        if (seq[t] < 0 || seq[t] >= w->V)
            return nx__error(NX_ERR_RANGE, "memorization: sequence %llu: token %d at position %d is outside the vocabulary [0, %d)",
                             (unsigned long long)item, (int)seq[t], t, w->V);
    nx_session_reset(w->session);
    NX_TRY(nx_session_forward(w->session, seq, P, NULL));
    int hits = 0;
    for (int k = 0; k < K; k++) {
        const float *row = nx_session_logits(w->session);
        int32_t tok = greedy_pick(row, w->V, job->banned);
        hits += tok == seq[P + k];
        /* The model continues from its own choice, not the truth (free-running generation). */
        if (k + 1 < K) NX_TRY(nx_session_forward(w->session, &tok, 1, NULL));
    }
    job->scores[i] = (float)hits / (float)K;
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
    mem_job job = {ds, begin, P, K, (mopts && mopts->allow_eos) ? -1 : cfg->eos_token_id, sc};
    nx_status st = nx__eval_run(m, P + K, n, opts, mem_item, &job);
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
