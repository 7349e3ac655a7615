/*
 * forward.c - sessions (KV cache + scratch, allocated once) and the forward pass.
 *
 * One forward step over T new tokens at positions P..P+T-1 (T <= n_batch; longer inputs are
 * processed in n_batch chunks, which is exact because every token only sees the cache):
 *
 *   x = wte[ids] (+ wpe[P+t])     (embedding rows widened from their stored type)
 *   per layer:  u = LN1(x); qkv = u·Wqkvᵀ (+b), per head [q|k|v]; rotate q, k; append k, v to the cache
 *               a = Attn(q, cache)·Woᵀ (+b)
 *               parallel:   m = MLP(shared_ln ? u : LN2(x)); x = (a + m) + x
 *                           (qkv with the MLP's first product, Wo with its second: one
 *                           hand-off to the threads each, nx__matmul_w2)
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

/* ---- attention ---------------------------------------------------------------------------- */

typedef struct {
    nx_session *s;
    const nx_layer *ly;
    int l, T, P;
} attn_job;

/* Work items are (head, token) pairs split statically across threads. */
static void attn_worker(int ith, int nth, void *arg) {
    const attn_job *j = arg;
    nx_session *s = j->s;
    const nx_model *m = s->m;
    const nx_kernel_vt *vt = s->vt;
    int HS = m->HS, NH = m->NH, H = m->H;
    int total = NH * j->T;
    int per = (total + nth - 1) / nth;
    int i0 = ith * per, i1 = i0 + per < total ? i0 + per : total;
    float *scores = s->scores + (size_t)ith * (size_t)s->n_ctx;
    for (int i = i0; i < i1; i++) {
        int h = i / j->T, t = i % j->T;
        int p = j->P + t;
        int k0 = j->ly->local ? (p - m->window + 1 > 0 ? p - m->window + 1 : 0) : 0;
        const float *q = s->qkv + (size_t)t * 3 * (size_t)H + (size_t)h * 3 * HS;
        size_t base = ((size_t)j->l * NH + (size_t)h) * (size_t)s->n_ctx * HS;
        vt->attention(s->att + (size_t)t * H + (size_t)h * HS, q, s->kc + base, s->vc + base, HS, HS, k0, p + 1,
                      m->attn_scale, scores);
    }
}

/* ---- one chunk ------------------------------------------------------------------------------- */

static void add_rows(float *x, const float *a, const float *b, size_t n) {
    if (b)
        for (size_t i = 0; i < n; i++) x[i] = (a[i] + b[i]) + x[i];
    else
        for (size_t i = 0; i < n; i++) x[i] = a[i] + x[i];
}

static void forward_chunk(nx_session *s, const int32_t *ids, int T, float *logits) {
    const nx_model *m = s->m;
    const nx_model_config *c = &m->cfg;
    int H = m->H, HS = m->HS, NH = m->NH, I = m->I, P = s->n_past;
    size_t TH = (size_t)T * H;
    float eps = c->layer_norm_eps;

    for (int t = 0; t < T; t++) {
        nx__wmat_row(&m->Wte, H, ids[t], s->x + (size_t)t * H);
        if (m->wpe) {
            const float *pe = m->wpe + (size_t)(P + t) * H;
            float *xt = s->x + (size_t)t * H;
            for (int i = 0; i < H; i++) xt[i] += pe[i];
        }
        s->tokens[P + t] = ids[t];
    }

    for (int l = 0; l < m->L; l++) {
        const nx_layer *ly = &m->layers[l];
        nx__layernorm_ref(s->u, s->x, ly->ln1_w, ly->ln1_b, T, H, eps);
        if (m->parallel) {
            /* The MLP reads the block input too, so its first product shares the qkv hand-off to
             * the threads (s->a is free until the attention output projection). */
            const float *mlp_in = s->u;
            if (!m->shared_ln) {
                nx__layernorm_ref(s->a, s->x, ly->ln2_w, ly->ln2_b, T, H, eps);
                mlp_in = s->a;
            }
            nx_matmul_args qkv = {s->qkv, s->u, &ly->Wqkv, ly->bqkv, T, H, 3 * H}, up = {s->h, mlp_in, &ly->W1, ly->b1, T, H, I};
            nx__matmul_w2(s->pool, &qkv, &up);
            nx__act(s->pool, s->h, (size_t)T * I, m->act);
        } else {
            nx__matmul_w(s->pool, s->qkv, s->u, &ly->Wqkv, ly->bqkv, T, H, 3 * H);
        }
        size_t base = (size_t)l * NH * (size_t)s->n_ctx;
        for (int t = 0; t < T; t++) {
            int p = P + t;
            for (int h = 0; h < NH; h++) {
                float *q = s->qkv + (size_t)t * 3 * H + (size_t)h * 3 * HS, *k = q + HS, *v = q + 2 * HS;
                if (m->rot) {
                    const float *cs = m->rope_cos + (size_t)p * (m->rot / 2), *sn = m->rope_sin + (size_t)p * (m->rot / 2);
                    nx__rotary_ref(q, m->rot, cs, sn, m->rot_interleaved);
                    nx__rotary_ref(k, m->rot, cs, sn, m->rot_interleaved);
                }
                size_t dst = ((base + (size_t)h * s->n_ctx) + (size_t)p) * HS;
                memcpy(s->kc + dst, k, (size_t)HS * sizeof(float));
                memcpy(s->vc + dst, v, (size_t)HS * sizeof(float));
            }
        }
        attn_job aj = {s, ly, l, T, P};
        /* Same reasoning as the matmul threshold: only hand off real work. */
        if (NH * T >= 2 && s->n_threads > 1 && (size_t)NH * T * (size_t)(P + T) * HS >= 65536)
            nx_pool_run(s->pool, attn_worker, &aj);
        else
            attn_worker(0, 1, &aj);
        float *mlp_out = s->qkv;   /* q|k|v are dead once attention is done */
        if (m->parallel) {
            /* attention output and MLP down projection: independent, one hand-off */
            nx_matmul_args o = {s->a, s->att, &ly->Wo, ly->bo, T, H, H}, down = {mlp_out, s->h, &ly->W2, ly->b2, T, I, H};
            nx__matmul_w2(s->pool, &o, &down);
            add_rows(s->x, s->a, mlp_out, TH);
        } else {
            nx__matmul_w(s->pool, s->a, s->att, &ly->Wo, ly->bo, T, H, H);
            add_rows(s->x, s->a, NULL, TH);
            nx__layernorm_ref(s->u, s->x, ly->ln2_w, ly->ln2_b, T, H, eps);
            nx__matmul_w(s->pool, s->h, s->u, &ly->W1, ly->b1, T, H, I);
            nx__act(s->pool, s->h, (size_t)T * I, m->act);
            nx__matmul_w(s->pool, mlp_out, s->h, &ly->W2, ly->b2, T, I, H);
            add_rows(s->x, mlp_out, NULL, TH);
        }
    }

    /* Only the rows somebody reads go through the (large) head. */
    if (logits) {
        nx__layernorm_ref(s->u, s->x, m->lnf_w, m->lnf_b, T, H, eps);
        nx__matmul_w(s->pool, logits, s->u, &m->Whead, m->head_b, T, H, m->V);
        memcpy(s->logits, logits + (size_t)(T - 1) * m->V, (size_t)m->V * sizeof(float));
    } else {
        nx__layernorm_ref(s->u, s->x + (size_t)(T - 1) * H, m->lnf_w, m->lnf_b, 1, H, eps);
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
