/*
 * sample.c - the sampler and the generation loop.
 *
 * Sampling order follows HF's logits processors: repetition penalty, then (greedy: argmax)
 * temperature, top-k, top-p, min-p, renormalise, draw. Rows >= n_vocab (padding rows past
 * the tokenizer) are never candidates. Nothing is sorted unless top-p needs an order, and
 * then only its head (quickselect + sort of the top m, widened as needed): a 50k-row step
 * costs one pass of expf, not a 50k sort. Every step is exact (no candidate cut-off).
 * Scratch grows on the first call for a given V and is reused after: no per-token malloc.
 */
#include "models/models.h"

#include <math.h>

struct nx_sampler {
    nx_sampler_params p;
    uint64_t rng;
    int cap;
    float *work;    /* [cap] penalised logits */
    int32_t *idx;   /* [cap] candidate ids */
};

nx_sampler_params nx_sampler_defaults(void) {
    nx_sampler_params p = {0};
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 0;
    p.seed = 0;
    p.n_vocab = 0;
    return p;
}

nx_status nx_sampler_create(const nx_sampler_params *p, nx_sampler **out) {
    if (!p || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_sampler_create: NULL argument");
    *out = NULL;
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return nx__error(NX_ERR_INVALID_ARG, "sampler: temperature %g must be >= 0", (double)p->temperature);
    if (p->top_k < 0) return nx__error(NX_ERR_INVALID_ARG, "sampler: top_k %d must be >= 0", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return nx__error(NX_ERR_INVALID_ARG, "sampler: top_p %g must be in (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return nx__error(NX_ERR_INVALID_ARG, "sampler: min_p %g must be in [0, 1]", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return nx__error(NX_ERR_INVALID_ARG, "sampler: repeat_penalty %g must be > 0", (double)p->repeat_penalty);
    if (p->n_vocab < 0) return nx__error(NX_ERR_INVALID_ARG, "sampler: n_vocab %d must be >= 0", p->n_vocab);
    nx_sampler *s = nx__calloc(1, sizeof *s);
    if (!s) return nx__error(NX_ERR_NOMEM, "out of memory");
    s->p = *p;
    s->rng = p->seed ^ 0x6A09E667F3BCC909ull;
    *out = s;
    return NX_OK;
}

void nx_sampler_free(nx_sampler *s) {
    if (!s) return;
    nx__free(s->work);
    nx__free(s->idx);
    nx__free(s);
}

static uint64_t next_u64(uint64_t *st) {   /* splitmix64 */
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Sorts idx[0..n) by key[] descending, ties by lower id first. A heap sort: qsort has no
 * context argument in C17 and a global key would make the sampler non-reentrant. */
static void sort_desc(int32_t *idx, int n, const float *key) {
#define LESS(a, b) (key[a] < key[b] || (key[a] == key[b] && (a) > (b)))
    for (int start = n / 2 - 1; start >= 0; start--) {
        int r = start;
        for (;;) {
            int c = 2 * r + 1;
            if (c >= n) break;
            if (c + 1 < n && LESS(idx[c + 1], idx[c])) c++;
            if (LESS(idx[c], idx[r])) {
                int32_t t = idx[c]; idx[c] = idx[r]; idx[r] = t;
                r = c;
            } else break;
        }
    }
    for (int end = n - 1; end > 0; end--) {
        int32_t t = idx[0]; idx[0] = idx[end]; idx[end] = t;
        int r = 0;
        for (;;) {
            int c = 2 * r + 1;
            if (c >= end) break;
            if (c + 1 < end && LESS(idx[c + 1], idx[c])) c++;
            if (LESS(idx[c], idx[r])) {
                int32_t u = idx[c]; idx[c] = idx[r]; idx[r] = u;
                r = c;
            } else break;
        }
    }
#undef LESS
}

/* Rearranges idx[0..n) so that idx[0..k) are the k largest by key (ties: lower id first), in
 * no particular order. Quickselect with a median-of-three pivot; inputs that defeat it fall
 * back to a full heap sort, so the worst case stays O(n log n). */
static void select_top(int32_t *idx, int n, int k, const float *key) {
#define BEFORE(a, b) (key[a] > key[b] || (key[a] == key[b] && (a) < (b)))
    int lo = 0, hi = n - 1, rounds = 0;
    while (lo < hi && k > lo && k <= hi) {
        if (++rounds > 64) {
            sort_desc(idx, n, key);
            return;
        }
        int mid = lo + (hi - lo) / 2;
        int32_t a = idx[lo], b = idx[mid], c = idx[hi], piv;
        if (BEFORE(a, b)) piv = BEFORE(b, c) ? b : (BEFORE(a, c) ? c : a);
        else piv = BEFORE(a, c) ? a : (BEFORE(b, c) ? c : b);
        /* three-way partition: [before pivot | pivot | after pivot] */
        int i = lo, lt = lo, gt = hi;
        while (i <= gt) {
            int32_t v = idx[i];
            if (v == piv) {
                i++;
            } else if (BEFORE(v, piv)) {
                idx[i++] = idx[lt];
                idx[lt++] = v;
            } else {
                idx[i] = idx[gt];
                idx[gt--] = v;
            }
        }
        /* idx[lo..lt) before, idx[lt..gt] == pivot (one id), idx(gt..hi] after */
        if (k <= lt) hi = lt - 1;
        else if (k > gt + 1) lo = gt + 1;
        else return;
    }
#undef BEFORE
}

/* The index `for (i) if (w[i] > w[best]) best = i` finds: the first one holding the largest
 * value (+0 and -0 alike; a NaN never wins, so a NaN w[0] stays). That loop carries a compare
 * on the previous pick and ran ~70 us over a 50k vocabulary, ~1% of a 410M q4 token. Here the
 * maximum runs as 16 independent chains (interleaved lanes), then a search for the first
 * 64-value block holding it: ~15 us. */
static int argmax_first(const float *w, int n) {
    if (n <= 1 || w[0] != w[0]) return 0;
    float lane[16], mx = w[0];
    for (int k = 0; k < 16; k++) lane[k] = mx;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) lane[k] = w[i + k] > lane[k] ? w[i + k] : lane[k];
    for (int k = 0; k < 16; k++) mx = lane[k] > mx ? lane[k] : mx;
    for (; i < n; i++) mx = w[i] > mx ? w[i] : mx;
    for (i = 0; i + 64 <= n; i += 64) {
        int hit = 0;
        for (int k = 0; k < 64; k++) hit |= w[i + k] == mx;
        if (hit) break;
    }
    for (; i < n; i++)
        if (w[i] == mx) return i;
    return 0;   /* not reached: mx is one of w[] */
}

nx_status nx_sampler_sample(nx_sampler *s, const float *logits, int V, const int32_t *history, int n_history,
                            int32_t *token) {
    if (!s || !logits || !token || V <= 0 || (n_history > 0 && !history))
        return nx__error(NX_ERR_INVALID_ARG, "nx_sampler_sample: bad argument");
    const nx_sampler_params *p = &s->p;
    int n = p->n_vocab > 0 && p->n_vocab < V ? p->n_vocab : V;
    bool penalise = p->repeat_penalty != 1.0f && n_history > 0;
    if (p->temperature <= 0.0f && !penalise) {   /* greedy on the logits as they are: no scratch */
        *token = argmax_first(logits, n);
        return NX_OK;
    }
    if (s->cap < V) {
        float *w = nx__realloc(s->work, (size_t)V * sizeof(float));
        if (w) s->work = w;
        int32_t *ix = nx__realloc(s->idx, (size_t)V * sizeof(int32_t));
        if (ix) s->idx = ix;
        if (!w || !ix) return nx__error(NX_ERR_NOMEM, "out of memory");
        s->cap = V;
    }
    float *w = s->work;
    memcpy(w, logits, (size_t)n * sizeof(float));
    if (penalise) {
        int from = p->repeat_last_n > 0 && p->repeat_last_n < n_history ? n_history - p->repeat_last_n : 0;
        /* Reads the original logit, so an id seen twice is penalised once (as HF's gather/scatter). */
        for (int i = from; i < n_history; i++) {
            int32_t id = history[i];
            if (id < 0 || id >= n) continue;
            float v = logits[id];
            w[id] = v > 0.0f ? v / p->repeat_penalty : v * p->repeat_penalty;
        }
    }
    if (p->temperature <= 0.0f) {
        *token = argmax_first(w, n);
        return NX_OK;
    }
    float inv_t = 1.0f / p->temperature;
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        w[i] *= inv_t;
        mx = w[i] > mx ? w[i] : mx;
    }
    /* w becomes the unnormalised probability exp(logit - max): the top token has exactly 1. */
    int nc = 0;
    for (int i = 0; i < n; i++) {
        w[i] = expf(w[i] - mx);
        s->idx[nc++] = i;
    }
    if (p->top_k > 0 && p->top_k < nc) {
        select_top(s->idx, nc, p->top_k, w);
        nc = p->top_k;
    }
    if (p->top_p < 1.0f) {
        /* Only the head of the sorted order is needed: sort the top m, widen m if the mass
         * in it is still short of top_p (exact; usually one small round). */
        double Z = 0.0;
        for (int i = 0; i < nc; i++) Z += w[s->idx[i]];
        double target = (double)p->top_p * Z;
        int m = nc < 64 ? nc : 64;
        for (;;) {
            select_top(s->idx, nc, m, w);
            sort_desc(s->idx, m, w);
            double cum = 0.0;
            int keep = -1;
            for (int i = 0; i < m; i++) {
                cum += w[s->idx[i]];
                if (cum >= target) {
                    keep = i + 1;
                    break;
                }
            }
            if (keep > 0) {
                nc = keep;
                break;
            }
            if (m == nc) break;   /* rounding: everything is kept */
            m = nc / 8 > m ? (m * 8 < nc ? m * 8 : nc) : nc;
        }
    }
    if (p->min_p > 0.0f) {
        /* p_i >= min_p * p_max, with p_max = 1 here; renormalising after top-k/top-p does not
         * change these ratios. The top token always stays. */
        int keep = 0;
        for (int i = 0; i < nc; i++)
            if (w[s->idx[i]] >= p->min_p) s->idx[keep++] = s->idx[i];
        nc = keep;
    }
    double tot = 0.0;
    for (int i = 0; i < nc; i++) tot += w[s->idx[i]];
    double u = (double)(next_u64(&s->rng) >> 11) * (1.0 / 9007199254740992.0) * tot;
    double c = 0.0;
    int pick = nc - 1;
    for (int i = 0; i < nc; i++) {
        c += w[s->idx[i]];
        if (u < c) {
            pick = i;
            break;
        }
    }
    *token = s->idx[pick];
    return NX_OK;
}

/* Keeps the newest half of the context (history + pending token) and recomputes it at
 * positions 0.. : exactly what a fresh run on that window computes. */
static nx_status shift_context(nx_session *s, int32_t pending) {
    int n_ctx = nx_session_n_ctx(s);
    int keep = n_ctx / 2;
    if (keep < 1) keep = 1;
    int32_t *tok = (int32_t *)nx_session_tokens(s);
    int have = nx_session_n_past(s);
    /* The window is tokens[have-keep+1 .. have-1] followed by the pending token. */
    int from = have - (keep - 1);
    memmove(tok, tok + from, (size_t)(keep - 1) * sizeof(int32_t));
    tok[keep - 1] = pending;
    nx_session_reset(s);
    return nx_session_forward(s, tok, keep, NULL);
}

nx_status nx_generate(nx_session *s, nx_sampler *smp, const int32_t *prompt, int n_prompt,
                      const nx_generate_opts *o, int32_t *out, int *n_out) {
    if (n_out) *n_out = 0;
    if (!s || !smp || !o || (n_prompt > 0 && !prompt) || n_prompt < 0)
        return nx__error(NX_ERR_INVALID_ARG, "nx_generate: bad argument");
    if (o->max_new_tokens <= 0)
        return nx__error(NX_ERR_INVALID_ARG, "nx_generate: max_new_tokens %d must be > 0", o->max_new_tokens);
    int n_ctx = nx_session_n_ctx(s);
    int past = nx_session_n_past(s);
    if (n_prompt == 0 && !nx_session_logits(s))
        return nx__error(NX_ERR_INVALID_ARG, "nx_generate: empty prompt and nothing in the session to continue from");
    /* Checked up front so a run never fails half-way. (The last generated token is sampled
     * but not fed back; we still count it, as "prompt + generation <= context".) */
    if (!o->context_shift && (long)past + n_prompt + o->max_new_tokens > (long)n_ctx)
        return nx__error(NX_ERR_RANGE,
                         "prompt (%d tokens%s) + %d new tokens exceed the context of %d positions "
                         "(max_position_embeddings %d); generate fewer tokens or enable context shift",
                         n_prompt, past ? ", after the cached ones" : "", o->max_new_tokens, n_ctx,
                         s->m->maxpos);
    if (n_prompt > 0) {
        if (past + n_prompt > n_ctx) {
            /* context_shift: keep the newest n_ctx/2 tokens of (cached history + prompt) and
             * recompute them from position 0. */
            int keep = n_ctx / 2 > 0 ? n_ctx / 2 : 1;
            nx_session_reset(s);
            if (n_prompt >= keep) {
                NX_TRY(nx_session_forward(s, prompt + n_prompt - keep, keep, NULL));
            } else {
                int from_hist = keep - n_prompt;
                int32_t *tok = (int32_t *)nx_session_tokens(s);
                memmove(tok, tok + past - from_hist, (size_t)from_hist * sizeof(int32_t));
                NX_TRY(nx_session_forward(s, tok, from_hist, NULL));
                NX_TRY(nx_session_forward(s, prompt, n_prompt, NULL));
            }
        } else {
            NX_TRY(nx_session_forward(s, prompt, n_prompt, NULL));
        }
    }
    const nx_model *m = s->m;
    for (int i = 0; i < o->max_new_tokens; i++) {
        int32_t tok;
        NX_TRY(nx_sampler_sample(smp, nx_session_logits(s), m->V, nx_session_tokens(s), nx_session_n_past(s), &tok));
        if (out) out[i] = tok;
        if (n_out) *n_out = i + 1;
        bool stop = false;
        for (int k = 0; k < o->n_stop_ids; k++)
            if (o->stop_ids[k] == tok) stop = true;
        if (o->on_token && o->on_token(tok, o->user)) stop = true;
        if (stop || i + 1 == o->max_new_tokens) break;
        if (nx_session_n_past(s) + 1 > n_ctx) {
            if (!o->context_shift)
                return nx__error(NX_ERR_RANGE, "context full at %d tokens (max_position_embeddings %d)", n_ctx,
                                 m->maxpos);
            NX_TRY(shift_context(s, tok));
        } else {
            NX_TRY(nx_session_forward(s, &tok, 1, NULL));
        }
    }
    return NX_OK;
}
