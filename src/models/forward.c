/*
 * forward.c - sessions (KV cache + scratch, allocated once) and the forward pass.
 *
 * One forward step over T new tokens at positions P..P+T-1 (T <= n_batch; longer inputs are
 * processed in n_batch chunks, which is exact because every token only sees the cache):
 *
 *   x = wte[ids] (+ wpe[P+t])
 *   per layer:  u = LN1(x); q|k|v = u·Wqkvᵀ (+b); rotate q, k; append k, v to the cache
 *               a = Attn(q, cache)·Woᵀ (+b)
 *               parallel:   m = MLP(shared_ln ? u : LN2(x)); x = (a + m) + x
 *               sequential: x = a + x; m = MLP(LN2(x)); x = m + x
 *   logits = LNf(x)·Wheadᵀ (+b)     (all rows, or only the last)
 *
 * Cache layout: K and V are [L][NH][n_ctx][HS], so one head's keys are contiguous for the
 * decode-time dot products. Keys are stored after rotation, as HF does.
 */
#include "models/models.h"

#include <math.h>


nx_status nx_session_create(const nx_model *m, const nx_session_opts *opts, nx_session **out) {
    if (!m || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_session_create: NULL argument");
    *out = NULL;
    nx_session_opts o = {0};
    if (opts) o = *opts;
    if (o.n_ctx < 0 || o.n_ctx > m->maxpos)
        return nx__error(NX_ERR_RANGE, "nx_session_create: n_ctx %d outside [1, max_position_embeddings = %d]", o.n_ctx,
                         m->maxpos);
    if (o.n_batch < 0) return nx__error(NX_ERR_INVALID_ARG, "nx_session_create: n_batch %d < 0", o.n_batch);
    nx_session *s = nx__calloc(1, sizeof *s);
    if (!s) return nx__error(NX_ERR_NOMEM, "out of memory");
    s->m = m;
    s->vt = nx__kernels();
    s->n_ctx = o.n_ctx ? o.n_ctx : m->maxpos;
    s->n_batch = o.n_batch ? o.n_batch : 512;
    if (s->n_batch > s->n_ctx) s->n_batch = s->n_ctx;
    if (o.pool) {
        s->pool = o.pool;
    } else {
        s->pool = nx_pool_create(o.n_threads);
        s->own_pool = true;
        if (!s->pool) {
            nx_session_free(s);
            return nx__error(NX_ERR_NOMEM, "nx_session_create: cannot start %d threads", o.n_threads);
        }
    }
    s->n_threads = nx_pool_size(s->pool);
    size_t kv = (size_t)m->L * (size_t)m->NH * (size_t)s->n_ctx * (size_t)m->HS;
    size_t B = (size_t)s->n_batch, H = (size_t)m->H;
    s->kc = nx__malloc_aligned(kv * sizeof(float));
    s->vc = nx__malloc_aligned(kv * sizeof(float));
    s->tokens = nx__calloc((size_t)s->n_ctx, sizeof(int32_t));
    s->x = nx__malloc_aligned(B * H * sizeof(float));
    s->u = nx__malloc_aligned(B * H * sizeof(float));
    s->qkv = nx__malloc_aligned(B * 3 * H * sizeof(float));
    s->att = nx__malloc_aligned(B * H * sizeof(float));
    s->a = nx__malloc_aligned(B * H * sizeof(float));
    s->h = nx__malloc_aligned(B * (size_t)m->I * sizeof(float));
    s->scores = nx__malloc_aligned((size_t)s->n_threads * (size_t)s->n_ctx * sizeof(float));
    s->logits = nx__malloc_aligned((size_t)m->V * sizeof(float));
    if (!s->kc || !s->vc || !s->tokens || !s->x || !s->u || !s->qkv || !s->att || !s->a || !s->h || !s->scores ||
        !s->logits) {
        nx_session_free(s);
        return nx__error(NX_ERR_NOMEM, "out of memory allocating a session (KV cache %.1f MiB for %d tokens)",
                         2.0 * (double)kv * 4.0 / 1048576.0, o.n_ctx ? o.n_ctx : m->maxpos);
    }
    *out = s;
    return NX_OK;
}

void nx_session_free(nx_session *s) {
    if (!s) return;
    if (s->own_pool) nx_pool_free(s->pool);
    nx__free_aligned(s->kc);
    nx__free_aligned(s->vc);
    nx__free(s->tokens);
    nx__free_aligned(s->x);
    nx__free_aligned(s->u);
    nx__free_aligned(s->qkv);
    nx__free_aligned(s->att);
    nx__free_aligned(s->a);
    nx__free_aligned(s->h);
    nx__free_aligned(s->scores);
    nx__free_aligned(s->logits);
    nx__free(s);
}

const float *nx_session_logits(const nx_session *s) { return s->has_logits ? s->logits : NULL; }
int nx_session_n_past(const nx_session *s) { return s->n_past; }
int nx_session_n_ctx(const nx_session *s) { return s->n_ctx; }
const int32_t *nx_session_tokens(const nx_session *s) { return s->tokens; }

nx_status nx_session_truncate(nx_session *s, int n) {
    if (n < 0 || n > s->n_past)
        return nx__error(NX_ERR_RANGE, "nx_session_truncate: %d outside [0, n_past = %d]", n, s->n_past);
    s->n_past = n;
    s->has_logits = false;   /* the kept logits belonged to a dropped token */
    return NX_OK;
}

void nx_session_reset(nx_session *s) {
    s->n_past = 0;
    s->has_logits = false;
}

/* ---- one pass over a set of rows ---------------------------------------------------------- */

/* The rows of one pass: T consecutive tokens of one session (n_seq == 1; prefill or decode),
 * or one token of each of T sessions (n_seq == T; batched decode). Every per-row operation
 * (LayerNorm, matmul output lane, rotary, attention over the row's own cache, activation) is
 * the same code in both cases and never mixes rows, which is why a batched row equals the
 * session's own decode step bit for bit. */
typedef struct {
    const nx_model *m;
    const nx_kernel_vt *vt;
    nx_pool *pool;
    int n_threads;
    nx_session *const *seqs;
    int n_seq, T;
    float *x, *u, *qkv, *att, *a, *h;   /* scratch, T rows each */
    nx_block_q8_0 *xq;                  /* batched decode: T activation rows as Q8_0 (max(H, I)/32 blocks) */
} fw_pass;

static inline nx_session *row_session(const fw_pass *f, int r) { return f->seqs[f->n_seq == 1 ? 0 : r]; }
static inline int row_pos(const fw_pass *f, int r) {
    return f->n_seq == 1 ? f->seqs[0]->n_past + r : f->seqs[r]->n_past;
}

/* ---- attention ---------------------------------------------------------------------------- */

typedef struct {
    const fw_pass *f;
    const nx_layer *ly;
    int l;
} attn_job;

/* Work items are (head, row) pairs split statically across threads; each row attends over its
 * own session's cache with that session's per-thread score scratch (all sessions of a pass
 * share one pool, so every one has a row for each ith). */
static void attn_worker(int ith, int nth, void *arg) {
    const attn_job *j = arg;
    const fw_pass *f = j->f;
    const nx_model *m = f->m;
    const nx_kernel_vt *vt = f->vt;
    int HS = m->HS, NH = m->NH, H = m->H;
    int total = NH * f->T;
    int per = (total + nth - 1) / nth;
    int i0 = ith * per, i1 = i0 + per < total ? i0 + per : total;
    for (int i = i0; i < i1; i++) {
        int h = i / f->T, t = i % f->T;
        const nx_session *s = row_session(f, t);
        int p = row_pos(f, t);
        float *scores = s->scores + (size_t)ith * (size_t)s->n_ctx;
        int k0 = j->ly->local ? (p - m->window + 1 > 0 ? p - m->window + 1 : 0) : 0;
        int n = p + 1 - k0;
        const float *q = f->qkv + (size_t)t * 3 * (size_t)H + (size_t)h * HS;
        size_t base = ((size_t)j->l * NH + (size_t)h) * (size_t)s->n_ctx;
        const float *K = s->kc + (base + (size_t)k0) * HS;
        const float *V = s->vc + (base + (size_t)k0) * HS;
        float mx = -INFINITY;
        for (int k = 0; k < n; k++) {
            float sc = vt->dot(q, K + (size_t)k * HS, HS) * m->attn_scale;
            scores[k] = sc;
            mx = sc > mx ? sc : mx;
        }
        float inv = 1.0f / vt->exp_sum(scores, n, mx);
        float *o = f->att + (size_t)t * H + (size_t)h * HS;
        memset(o, 0, (size_t)HS * sizeof(float));
        for (int k = 0; k < n; k++) vt->axpy(o, scores[k] * inv, V + (size_t)k * HS, HS);
    }
}

/* ---- linear layers ------------------------------------------------------------------------ */

typedef struct {
    const fw_pass *f;
    float *y;
    const nx_wmat *W;
    const float *b;
    int IN, OUT;
} qdot_job;

/* Static split of OUT in 64-row groups; per group, every row of the batch. A group of weight
 * rows (55 KB of Q8_0 at IN = 768, 221 KB at IN = 3072) is read from memory once and stays
 * in L2 for the other T - 1 rows, so the weights stream once per pass, not once per sequence. */
static void qdot_worker(int ith, int nth, void *arg) {
    const qdot_job *j = arg;
    const fw_pass *f = j->f;
    int units = (j->OUT + 63) / 64, per = (units + nth - 1) / nth;
    int r0 = ith * per * 64, r1 = r0 + per * 64 < j->OUT ? r0 + per * 64 : j->OUT;
    size_t nb = (size_t)j->IN / NX_QBLOCK;
    for (int g = r0; g < r1; g += 64) {
        int g1 = g + 64 < r1 ? g + 64 : r1;
        for (int t = 0; t < f->T; t++)
            f->vt->qdot_rows(j->y + (size_t)t * j->OUT, f->xq + (size_t)t * nb, j->W->data, j->W->type, j->b, j->IN, g,
                             g1);
    }
}

/* y = x·Wᵀ + b over the pass's T rows. A session's own pass (and a batch of at most
 * NX_QDOT_MAX_T rows) goes straight to nx__matmul_w. A larger decode batch on Q8_0/Q4_0 must
 * not take nx__matmul_w's prefill path (dequantized fp32 tiles: different sums than the
 * integer dots a single decode step uses), so it quantizes each activation row exactly as
 * nx__matmul_w does for decode and runs the same qdot_rows kernel per row. */
static void linear(const fw_pass *f, float *y, const float *x, const nx_wmat *W, const float *b, int IN, int OUT) {
    bool blocks = W->type == NX_Q8_0 || W->type == NX_Q4_0;
    if (f->n_seq == 1 || !blocks || f->T <= NX_QDOT_MAX_T) {
        nx__matmul_w(f->pool, y, x, W, b, f->T, IN, OUT);
        return;
    }
    size_t nb = (size_t)IN / NX_QBLOCK;
    for (int t = 0; t < f->T; t++) nx__quantize_row_q8_0(f->xq + (size_t)t * nb, x + (size_t)t * IN, IN);
    qdot_job j = {f, y, W, b, IN, OUT};
    if ((size_t)f->T * IN * OUT < 262144 || f->n_threads == 1)
        qdot_worker(0, 1, &j);
    else
        nx_pool_run(f->pool, qdot_worker, &j);
}

/* ---- the layers ---------------------------------------------------------------------------- */

static void add_rows(float *x, const float *a, const float *b, size_t n) {
    if (b)
        for (size_t i = 0; i < n; i++) x[i] = (a[i] + b[i]) + x[i];
    else
        for (size_t i = 0; i < n; i++) x[i] = a[i] + x[i];
}

/* Embeds ids[0..T-1] (row r at its session's next position), runs every layer, appends each
 * row's k, v and token to its session, and leaves the final hidden rows in f->x. n_past is not
 * advanced here (the callers do it after the head). */
static void forward_rows(const fw_pass *f, const int32_t *ids) {
    const nx_model *m = f->m;
    const nx_model_config *c = &m->cfg;
    int H = m->H, HS = m->HS, NH = m->NH, I = m->I, T = f->T;
    size_t TH = (size_t)T * H;
    float eps = c->layer_norm_eps;

    size_t att_work = 0;   /* Σ keys over rows: decides whether attention is worth a hand-off */
    for (int t = 0; t < T; t++) {
        nx_session *s = row_session(f, t);
        int p = row_pos(f, t);
        float *xt = f->x + (size_t)t * H;
        if (m->wte) {
            memcpy(xt, m->wte + (size_t)ids[t] * H, (size_t)H * sizeof(float));
        } else {   /* tied: the row lives in the packed head */
            nx__wmat_row(&m->Whead, H, ids[t], xt);
        }
        if (m->wpe) {
            const float *pe = m->wpe + (size_t)p * H;
            for (int i = 0; i < H; i++) xt[i] += pe[i];
        }
        s->tokens[p] = ids[t];
        att_work += (size_t)p + 1;
    }

    for (int l = 0; l < m->L; l++) {
        const nx_layer *ly = &m->layers[l];
        nx__layernorm_ref(f->u, f->x, ly->ln1_w, ly->ln1_b, T, H, eps);
        linear(f, f->qkv, f->u, &ly->Wqkv, ly->bqkv, H, 3 * H);
        for (int t = 0; t < T; t++) {
            nx_session *s = row_session(f, t);
            int p = row_pos(f, t);
            size_t base = (size_t)l * NH * (size_t)s->n_ctx;
            float *q = f->qkv + (size_t)t * 3 * H, *k = q + H, *v = q + 2 * H;
            for (int h = 0; h < NH; h++) {
                if (m->rot) {
                    const float *cs = m->rope_cos + (size_t)p * (m->rot / 2), *sn = m->rope_sin + (size_t)p * (m->rot / 2);
                    nx__rotary_ref(q + (size_t)h * HS, m->rot, cs, sn, m->rot_interleaved);
                    nx__rotary_ref(k + (size_t)h * HS, m->rot, cs, sn, m->rot_interleaved);
                }
                size_t dst = ((base + (size_t)h * s->n_ctx) + (size_t)p) * HS;
                memcpy(s->kc + dst, k + (size_t)h * HS, (size_t)HS * sizeof(float));
                memcpy(s->vc + dst, v + (size_t)h * HS, (size_t)HS * sizeof(float));
            }
        }
        attn_job aj = {f, ly, l};
        /* Same reasoning as the matmul threshold: only hand off real work. */
        if (NH * T >= 2 && f->n_threads > 1 && (size_t)NH * att_work * HS >= 65536)
            nx_pool_run(f->pool, attn_worker, &aj);
        else
            attn_worker(0, 1, &aj);
        linear(f, f->a, f->att, &ly->Wo, ly->bo, H, H);

        float *mlp_out = f->qkv;   /* q|k|v are dead once attention is done */
        if (m->parallel) {
            if (!m->shared_ln) nx__layernorm_ref(f->u, f->x, ly->ln2_w, ly->ln2_b, T, H, eps);
            linear(f, f->h, f->u, &ly->W1, ly->b1, H, I);
            nx__act(f->pool, f->h, (size_t)T * I, m->act);
            linear(f, mlp_out, f->h, &ly->W2, ly->b2, I, H);
            add_rows(f->x, f->a, mlp_out, TH);
        } else {
            add_rows(f->x, f->a, NULL, TH);
            nx__layernorm_ref(f->u, f->x, ly->ln2_w, ly->ln2_b, T, H, eps);
            linear(f, f->h, f->u, &ly->W1, ly->b1, H, I);
            nx__act(f->pool, f->h, (size_t)T * I, m->act);
            linear(f, mlp_out, f->h, &ly->W2, ly->b2, I, H);
            add_rows(f->x, mlp_out, NULL, TH);
        }
    }
}

/* One chunk of T <= n_batch tokens of session s. */
static void forward_chunk(nx_session *s, const int32_t *ids, int T, float *logits) {
    const nx_model *m = s->m;
    int H = m->H;
    fw_pass f = {m, s->vt, s->pool, s->n_threads, &s, 1, T, s->x, s->u, s->qkv, s->att, s->a, s->h, NULL};
    forward_rows(&f, ids);
    /* Only the rows somebody reads go through the (large) head. */
    if (logits) {
        nx__layernorm_ref(s->u, s->x, m->lnf_w, m->lnf_b, T, H, m->cfg.layer_norm_eps);
        nx__matmul_w(s->pool, logits, s->u, &m->Whead, m->head_b, T, H, m->V);
        memcpy(s->logits, logits + (size_t)(T - 1) * m->V, (size_t)m->V * sizeof(float));
    } else {
        nx__layernorm_ref(s->u, s->x + (size_t)(T - 1) * H, m->lnf_w, m->lnf_b, 1, H, m->cfg.layer_norm_eps);
        nx__matmul_w(s->pool, s->logits, s->u, &m->Whead, m->head_b, 1, H, m->V);
    }
    s->has_logits = true;
    s->n_past += T;
}

nx_status nx_session_forward(nx_session *s, const int32_t *ids, int n, float *logits) {
    if (!s || (!ids && n > 0)) return nx__error(NX_ERR_INVALID_ARG, "nx_session_forward: NULL argument");
    if (n <= 0) return nx__error(NX_ERR_INVALID_ARG, "nx_session_forward: %d tokens (need at least 1)", n);
    const nx_model *m = s->m;
    if (n > s->n_ctx - s->n_past)
        return nx__error(NX_ERR_RANGE,
                         "context full: %d cached + %d new tokens exceed the context of %d positions "
                         "(max_position_embeddings %d)",
                         s->n_past, n, s->n_ctx, m->maxpos);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->V)
            return nx__error(NX_ERR_RANGE, "token %d (at index %d) outside the vocabulary [0, %d)", (int)ids[i], i, m->V);
    for (int i = 0; i < n; i += s->n_batch) {
        int T = n - i < s->n_batch ? n - i : s->n_batch;
        forward_chunk(s, ids + i, T, logits ? logits + (size_t)i * m->V : NULL);
    }
    return NX_OK;
}

/* ---- batched decode ----------------------------------------------------------------------- */

struct nx_batch {
    const nx_model *m;
    int max_seqs;
    float *x, *u, *qkv, *att, *a, *h;   /* max_seqs rows each */
    float *logits;                      /* [max_seqs][V] when the caller passes none */
    nx_block_q8_0 *xq;                  /* [max_seqs][max(H, I)/32] */
};

nx_status nx_batch_create(const nx_model *m, int max_seqs, nx_batch **out) {
    if (!m || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_batch_create: NULL argument");
    *out = NULL;
    if (max_seqs < 1) return nx__error(NX_ERR_INVALID_ARG, "nx_batch_create: max_seqs %d < 1", max_seqs);
    nx_batch *b = nx__calloc(1, sizeof *b);
    if (!b) return nx__error(NX_ERR_NOMEM, "out of memory");
    b->m = m;
    b->max_seqs = max_seqs;
    size_t B = (size_t)max_seqs, H = (size_t)m->H, I = (size_t)m->I;
    size_t nb = ((H > I ? H : I) + NX_QBLOCK - 1) / NX_QBLOCK;
    b->x = nx__malloc_aligned(B * H * sizeof(float));
    b->u = nx__malloc_aligned(B * H * sizeof(float));
    b->qkv = nx__malloc_aligned(B * 3 * H * sizeof(float));
    b->att = nx__malloc_aligned(B * H * sizeof(float));
    b->a = nx__malloc_aligned(B * H * sizeof(float));
    b->h = nx__malloc_aligned(B * I * sizeof(float));
    b->logits = nx__malloc_aligned(B * (size_t)m->V * sizeof(float));
    b->xq = nx__malloc(B * nb * sizeof *b->xq);
    if (!b->x || !b->u || !b->qkv || !b->att || !b->a || !b->h || !b->logits || !b->xq) {
        nx_batch_free(b);
        return nx__error(NX_ERR_NOMEM, "out of memory allocating a batch of %d sequences", max_seqs);
    }
    *out = b;
    return NX_OK;
}

void nx_batch_free(nx_batch *b) {
    if (!b) return;
    nx__free_aligned(b->x);
    nx__free_aligned(b->u);
    nx__free_aligned(b->qkv);
    nx__free_aligned(b->att);
    nx__free_aligned(b->a);
    nx__free_aligned(b->h);
    nx__free_aligned(b->logits);
    nx__free(b->xq);
    nx__free(b);
}

int nx_batch_max_seqs(const nx_batch *b) { return b->max_seqs; }

/* Everything that would make the step wrong is checked before anything is written, so on
 * error every session is unchanged. */
static nx_status batch_check(const nx_batch *b, nx_session *const *s, const int32_t *ids, int n) {
    if (!b || !s || !ids) return nx__error(NX_ERR_INVALID_ARG, "nx_batch_decode: NULL argument");
    if (n < 1 || n > b->max_seqs)
        return nx__error(NX_ERR_INVALID_ARG, "nx_batch_decode: %d sessions (need 1 .. max_seqs = %d)", n, b->max_seqs);
    const nx_model *m = b->m;
    for (int i = 0; i < n; i++) {
        if (!s[i]) return nx__error(NX_ERR_INVALID_ARG, "nx_batch_decode: session %d is NULL", i);
        if (s[i]->m != m)
            return nx__error(NX_ERR_INVALID_ARG, "nx_batch_decode: session %d runs a different model than the batch", i);
        if (s[i]->pool != s[0]->pool)
            return nx__error(NX_ERR_INVALID_ARG,
                             "nx_batch_decode: session %d uses a different thread pool than session 0 "
                             "(create the sessions with one shared nx_session_opts.pool)",
                             i);
        for (int j = 0; j < i; j++)
            if (s[j] == s[i])
                return nx__error(NX_ERR_INVALID_ARG, "nx_batch_decode: sessions %d and %d are the same session", j, i);
        if (s[i]->n_past >= s[i]->n_ctx)
            return nx__error(NX_ERR_RANGE, "nx_batch_decode: session %d: context full (%d of %d positions used)", i,
                             s[i]->n_past, s[i]->n_ctx);
        if (ids[i] < 0 || ids[i] >= m->V)
            return nx__error(NX_ERR_RANGE, "nx_batch_decode: token %d (session %d) outside the vocabulary [0, %d)",
                             (int)ids[i], i, m->V);
    }
    return NX_OK;
}

nx_status nx_batch_decode(nx_batch *b, nx_session *const *s, const int32_t *ids, int n, float *logits) {
    NX_TRY(batch_check(b, s, ids, n));
    const nx_model *m = b->m;
    int H = m->H, V = m->V;
    fw_pass f = {m, s[0]->vt, s[0]->pool, s[0]->n_threads, s, n, n, b->x, b->u, b->qkv, b->att, b->a, b->h, b->xq};
    forward_rows(&f, ids);
    float *out = logits ? logits : b->logits;
    nx__layernorm_ref(b->u, b->x, m->lnf_w, m->lnf_b, n, H, m->cfg.layer_norm_eps);
    linear(&f, out, b->u, &m->Whead, m->head_b, H, V);
    for (int i = 0; i < n; i++) {
        memcpy(s[i]->logits, out + (size_t)i * V, (size_t)V * sizeof(float));
        s[i]->has_logits = true;
        s[i]->n_past++;
    }
    return NX_OK;
}
