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
 * Cache layout: K and V are [L][NH][head], one head's positions contiguous; V's head is rows
 * [n_ctx][HS], K's the tiles of NX_KT positions that kernels.h describes (Q8_0: rows as V), so a
 * score needs no reduction across lanes. Keys are stored after rotation, as HF does, in the
 * session's cache type (fp32, f16, bf16 or q8): a row's k and v are rounded when appended and every attention reads
 * the rounded values, its own row's included, so a token sees the same cache whether it was
 * prefilled or decoded. Attention runs per head over groups of up to NX_ATTN_MAX_G consecutive
 * rows of one session (kernels.h nx_attn_args: each K/V row is read once per group); a row's
 * result does not depend on its group, so neither the grouping nor the thread split changes bits.
 *
 * A batch (nx_batch_forward) runs the new tokens of many sessions through the same pass, one
 * row per token, each row with its own session's cache and position.
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
    if (o.kv_type == NX_DTYPE_INVALID) o.kv_type = m->wtype == NX_F32 ? NX_F32 : NX_BF16;
    if (o.kv_type != NX_F32 && o.kv_type != NX_F16 && o.kv_type != NX_BF16 && o.kv_type != NX_Q8_0)
        return nx__error(NX_ERR_INVALID_ARG, "nx_session_create: kv_type %s is not F32, F16, BF16 or Q8_0",
                         nx_dtype_name(o.kv_type));
    if (o.kv_type == NX_Q8_0 && m->HS % NX_QBLOCK != 0)
        return nx__error(NX_ERR_UNSUPPORTED,
                         "nx_session_create: kv_type Q8_0 needs a head size that is a multiple of %d (this model's: %d)",
                         NX_QBLOCK, m->HS);
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
    s->kv_type = o.kv_type;
    s->kv_rb = nx__row_bytes(o.kv_type, m->HS);
    s->kv_hb = nx__kv_head_bytes(o.kv_type, m->HS, s->n_ctx);
    size_t kv = (size_t)m->L * (size_t)m->NH * s->kv_hb;   /* bytes of K, and of V */
    size_t B = (size_t)s->n_batch, H = (size_t)m->H;
    s->kc = nx__malloc_aligned(kv);
    s->vc = nx__malloc_aligned(kv);
    s->tokens = nx__calloc((size_t)s->n_ctx, sizeof(int32_t));
    s->x = nx__malloc_aligned(B * H * sizeof(float));
    s->u = nx__malloc_aligned(B * H * sizeof(float));
    s->qkv = nx__malloc_aligned(B * 3 * H * sizeof(float));
    s->att = nx__malloc_aligned(B * H * sizeof(float));
    s->a = nx__malloc_aligned(B * H * sizeof(float));
    s->h = nx__malloc_aligned(B * (size_t)m->I * sizeof(float));
    s->scores = nx__malloc_aligned((size_t)s->n_threads * NX_ATTN_MAX_G * (size_t)s->n_ctx * sizeof(float));
    s->logits = nx__malloc_aligned((size_t)m->V * sizeof(float));
    if (!s->kc || !s->vc || !s->tokens || !s->x || !s->u || !s->qkv || !s->att || !s->a || !s->h || !s->scores ||
        !s->logits) {
        double mib = 2.0 * (double)kv / 1048576.0;
        nx_session_free(s);
        return nx__error(NX_ERR_NOMEM, "out of memory allocating a session (%s KV cache %.1f MiB for %d tokens)",
                         nx_dtype_name(o.kv_type), mib, o.n_ctx ? o.n_ctx : m->maxpos);
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

nx_dtype nx_kv_type_from_name(const char *name) {
    nx_dtype t = nx_run_dtype_from_name(name);
    return t == NX_F32 || t == NX_F16 || t == NX_BF16 || t == NX_Q8_0 ? t : NX_DTYPE_INVALID;
}

nx_dtype nx_session_kv_type(const nx_session *s) { return s->kv_type; }

size_t nx_session_kv_bytes(const nx_session *s) {
    const nx_model *m = s->m;
    return 2 * (size_t)m->L * (size_t)m->NH * s->kv_hb;
}

size_t nx_session_kv_read_bytes(const nx_session *s, int n_keys) {
    const nx_model *m = s->m;
    size_t keys = 0;
    for (int l = 0; l < m->L; l++) keys += (size_t)(m->layers[l].local && m->window < n_keys ? m->window : n_keys);
    return 2 * keys * (size_t)m->NH * s->kv_rb;
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

/* The rows of one pass: T consecutive tokens of one session (`one`: prefill or decode), or the
 * rows of a batch (row r belongs to session row_s[r] at position row_p[r]). Every per-row
 * operation (LayerNorm, rotary, attention over the row's own cache, activation) is the same code
 * in both cases and never mixes rows. The matmuls do not mix rows either, but their bits depend
 * on which path a row takes (decode kernels up to NX_MV_MAX_T rows, the GEMM beyond), so a batch
 * keeps the rows of sessions whose own call is that short apart from the others; see linear(). */
typedef struct {
    const nx_model *m;
    const nx_kernel_vt *vt;
    nx_pool *pool;
    int n_threads;
    int T;
    nx_session *one;                    /* single-session pass, else NULL */
    nx_session *const *row_s;           /* batched pass: [T] session of each row */
    const int *row_p;                   /* [T] its position */
    int n_short;                        /* rows [0, n_short) belong to calls of <= NX_MV_MAX_T tokens (0 for one session) */
    float *x, *u, *qkv, *att, *a, *h;   /* scratch, T rows each */
} fw_pass;

static inline nx_session *row_session(const fw_pass *f, int r) { return f->one ? f->one : f->row_s[r]; }
static inline int row_pos(const fw_pass *f, int r) { return f->one ? f->one->n_past + r : f->row_p[r]; }

/* ---- attention ---------------------------------------------------------------------------- */

typedef struct {
    const fw_pass *f;
    const nx_layer *ly;
    int l;
} attn_job;

/* Rows [r, r+n) of one session at consecutive positions, head h. Scores go to the session's
 * scratch of thread ith (all sessions of a pass share one pool, so every one has a slot for
 * each ith). */
static void attend(const attn_job *j, int h, int r, int n, int ith) {
    const fw_pass *f = j->f;
    const nx_model *m = f->m;
    const nx_session *s = row_session(f, r);
    int HS = m->HS, H = m->H;
    size_t base = ((size_t)j->l * m->NH + (size_t)h) * s->kv_hb;
    nx_attn_args a = {.G = n, .d = HS,
                      .q = f->qkv + (size_t)r * 3 * H + (size_t)h * 3 * HS, .ldq = 3 * (size_t)H,
                      .out = f->att + (size_t)r * H + (size_t)h * HS, .ldo = (size_t)H,
                      .K = (const uint8_t *)s->kc + base, .V = (const uint8_t *)s->vc + base,
                      .kv_type = s->kv_type, .row_bytes = s->kv_rb, .scale = m->attn_scale,
                      .scores = s->scores + (size_t)ith * NX_ATTN_MAX_G * s->n_ctx, .lds = (size_t)s->n_ctx};
    for (int g = 0; g < n; g++) {
        int p = row_pos(f, r + g);
        a.k0[g] = j->ly->local && p - m->window + 1 > 0 ? p - m->window + 1 : 0;
        a.k1[g] = p + 1;
    }
    f->vt->attention(&a);
}

/* Work items are (head, block of NX_ATTN_MAX_G rows) pairs split statically across threads;
 * a block is cut where the session (or position run) changes, so each kernel call sees the
 * consecutive rows of one session. */
static void attn_worker(int ith, int nth, void *arg) {
    const attn_job *j = arg;
    const fw_pass *f = j->f;
    int nb = (f->T + NX_ATTN_MAX_G - 1) / NX_ATTN_MAX_G;
    int total = f->m->NH * nb;
    int per = (total + nth - 1) / nth;
    int i0 = ith * per, i1 = i0 + per < total ? i0 + per : total;
    for (int i = i0; i < i1; i++) {
        int h = i / nb, b = i % nb;
        int r1 = (b + 1) * NX_ATTN_MAX_G < f->T ? (b + 1) * NX_ATTN_MAX_G : f->T;
        for (int r = b * NX_ATTN_MAX_G; r < r1;) {
            int n = 1;
            while (r + n < r1 && row_session(f, r + n) == row_session(f, r) && row_pos(f, r + n) == row_pos(f, r) + n)
                n++;
            attend(j, h, r, n, ith);
            r += n;
        }
    }
}

/* ---- linear layers ------------------------------------------------------------------------ */

/* Rows [r0, r1) of a product. */
static nx_matmul_args rows_of(const nx_matmul_args *a, int r0, int r1) {
    nx_matmul_args r = *a;
    r.y += (size_t)r0 * a->OUT;
    r.x += (size_t)r0 * a->IN;
    r.T = r1 - r0;
    return r;
}

/* Rows [r0, r1) of one product (and of a second, independent one, when b is not NULL, in the
 * same hand-off to the threads). */
static void matmul_rows(nx_pool *pool, const nx_matmul_args *a, const nx_matmul_args *b, int r0, int r1) {
    nx_matmul_args ra = rows_of(a, r0, r1);
    if (b) {
        nx_matmul_args rb = rows_of(b, r0, r1);
        nx__matmul_w2(pool, &ra, &rb);
    } else {
        nx__matmul_w(pool, ra.y, ra.x, ra.W, ra.b, ra.T, ra.IN, ra.OUT);
    }
}

/* y = x·Wᵀ + b over a->T rows (b: a second product over the same rows, or NULL). A row's bits
 * depend only on the path that computes it: the decode kernels (at most NX_MV_MAX_T rows per
 * call) or the GEMM (more), never on the other rows of the call. Rows [0, n_short) stand for
 * sessions' calls of at most NX_MV_MAX_T tokens, so they go to the decode kernels in groups of
 * NX_MV_MAX_T (the weights stream once per group, not once per session); the rest belong to
 * longer calls (each more than NX_MV_MAX_T rows, so their union is too) and go to the GEMM
 * together, as each session's own call would. */
static void linear(nx_pool *pool, int n_short, const nx_matmul_args *a, const nx_matmul_args *b) {
    for (int r = 0; r < n_short; r += NX_MV_MAX_T)
        matmul_rows(pool, a, b, r, r + NX_MV_MAX_T < n_short ? r + NX_MV_MAX_T : n_short);
    if (a->T > n_short) matmul_rows(pool, a, b, n_short, a->T);
}

/* Row t's q and k of head h rotated, and its k and v appended to its session's cache of layer l. */
static void rotate_append(const fw_pass *f, int l, int t, int h) {
    const nx_model *m = f->m;
    int HS = m->HS;
    nx_session *s = row_session(f, t);
    int p = row_pos(f, t);
    float *q = f->qkv + (size_t)t * 3 * m->H + (size_t)h * 3 * HS, *k = q + HS, *v = q + 2 * HS;
    if (m->rot) {
        const float *cs = m->rope_cos + (size_t)p * (m->rot / 2), *sn = m->rope_sin + (size_t)p * (m->rot / 2);
        nx__rotary_ref(q, m->rot, cs, sn, m->rot_interleaved);
        nx__rotary_ref(k, m->rot, cs, sn, m->rot_interleaved);
    }
    size_t base = ((size_t)l * m->NH + (size_t)h) * s->kv_hb;
    nx__kv_store_key((uint8_t *)s->kc + base, s->kv_type, HS, p, k);
    nx__kv_store((uint8_t *)s->vc + base + (size_t)p * s->kv_rb, s->kv_type, v, HS);
}

/* Head h of every row: rotary and the cache appends, then the attention, in groups of up to
 * NX_ATTN_MAX_G consecutive rows of one session. */
static void rotate_attend_head(const attn_job *aj, int h, int ith) {
    const fw_pass *f = aj->f;
    const nx_model *m = f->m;
    int T = f->T;
    /* A head's q|k|v of consecutive rows lie 3·H floats apart (9-12 KiB): a stride the
     * hardware prefetchers do not follow, and the product that wrote them has been evicted
     * from L2 by the time a long prompt reaches them. Unprefetched, the cache appends of a
     * 512-token prompt (a load of each row's segment from L3) took 3.5% of a Q8_0 prefill;
     * 8 rows ahead: 1% (160M, +2.6% prompt tokens/s). */
    size_t seg = (size_t)3 * (size_t)m->HS * sizeof(float);
    for (int t = 0; t < T; t++) {
        if (t + 8 < T) {
            const char *ahead = (const char *)(f->qkv + (size_t)(t + 8) * 3 * m->H + (size_t)h * 3 * m->HS);
            for (size_t o = 0; o < seg; o += 64) __builtin_prefetch(ahead + o, 1, 3);
        }
        rotate_append(f, aj->l, t, h);
    }
    for (int r = 0; r < T;) {
        int n = 1;
        while (r + n < T && n < NX_ATTN_MAX_G && row_session(f, r + n) == row_session(f, r) &&
               row_pos(f, r + n) == row_pos(f, r) + n)
            n++;
        attend(aj, h, r, n, ith);
        r += n;
    }
}

/* ---- decode: the attention block in one hand-off ------------------------------------------- */

/* When every row belongs to a short call (rows <= NX_MV_MAX_T: the decode kernels), a layer's
 * attention block is one hand-off of items the threads share (nx_split):
 *   head h:     the head's 3·HS rows of the qkv product, then, per row, rotary and the cache
 *               append, then the attention of the head's rows;
 *   MLP chunk:  (parallel blocks) rows of the MLP's first product (nx__mv_chunk_rows),
 *               activated at once.
 * Token generation is bandwidth-bound. Staged (the products, then rotary and the cache stores,
 * the attention and the activation while the other thread waits, or a hand-off of its own), a
 * token left memory idle for ~10% of its time. Every item does the staged path's arithmetic on
 * the same rows, so the bits do not change. */
typedef struct {
    const fw_pass *f;
    const nx_layer *ly;
    int l;
    nx_mv qkv, up;   /* up.a.OUT == 0: no MLP chunks in this hand-off */
    int up_chunk;    /* rows per MLP chunk */
    int n_items;
    nx_split split;
} block_job;

static void head_item(const block_job *j, int h, int ith) {
    int HS = j->f->m->HS;
    nx__mv_rows(&j->qkv, h * 3 * HS, (h + 1) * 3 * HS);
    attn_job aj = {j->f, j->ly, j->l};
    rotate_attend_head(&aj, h, ith);
}

static void block_worker(int ith, int nth, void *arg) {
    (void)nth;
    block_job *j = arg;
    const fw_pass *f = j->f;
    int NH = f->m->NH, I = j->up.a.OUT;
    for (int i; (i = nx__split_next(&j->split, ith)) >= 0;) {
        if (i < NH) {
            head_item(j, i, ith);
        } else {
            int r0 = (i - NH) * j->up_chunk, r1 = r0 + j->up_chunk < I ? r0 + j->up_chunk : I;
            nx__mv_rows(&j->up, r0, r1);
            for (int t = 0; t < f->T; t++) f->vt->act(f->h + (size_t)t * I + r0, (size_t)(r1 - r0), f->m->act);
        }
    }
}

/* The attention block of layer l (and, when up is not NULL, the MLP's first product and its
 * activation) over short rows; false when the quantized activations found no memory (the caller
 * then takes the staged path, which does not need it). */
static bool decode_block(const fw_pass *f, const nx_layer *ly, int l, const nx_matmul_args *qkv,
                         const nx_matmul_args *up) {
    nx_xq8 xq[2][NX_MV_STACK_XQ];
    block_job j = {.f = f, .ly = ly, .l = l};
    if (nx__mv_init(&j.qkv, f->vt, qkv, xq[0]) != NX_OK) return false;
    if (up && nx__mv_init(&j.up, f->vt, up, xq[1]) != NX_OK) {
        nx__mv_done(&j.qkv);
        return false;
    }
    j.up_chunk = up ? nx__mv_chunk_rows(up->W->type, up->IN) : 64;
    int n_up = up ? (up->OUT + j.up_chunk - 1) / j.up_chunk : 0;
    j.n_items = f->m->NH + n_up;
    nx__split_init(&j.split, j.n_items, f->n_threads);
    size_t work = (size_t)f->T * (size_t)qkv->IN * (size_t)(qkv->OUT + (up ? up->OUT : 0));
    /* As for a lone product: below ~256K FMAs a hand-off costs more than it saves. */
    if (f->n_threads > 1 && work >= 262144)
        nx_pool_run(f->pool, block_worker, &j);
    else
        block_worker(0, 1, &j);
    nx__mv_done(&j.qkv);
    if (up) nx__mv_done(&j.up);
    return true;
}

/* ---- the layers ---------------------------------------------------------------------------- */

static void add_rows(float *x, const float *a, const float *b, size_t n) {
    if (b)
        for (size_t i = 0; i < n; i++) x[i] = (a[i] + b[i]) + x[i];
    else
        for (size_t i = 0; i < n; i++) x[i] = a[i] + x[i];
}

/* Prefill's hand-off after the products: one item per head (rotary, the cache appends and the
 * attention of all rows: a head's later rows read the keys its earlier rows append), and the
 * activation of the MLP's first product in chunks. Shared out with nx_split, so the thread
 * that finishes early takes the rest; no row's arithmetic depends on who computes it. */
typedef struct {
    attn_job aj;
    float *act_x;   /* the MLP's first product, act_n values, or NULL */
    size_t act_n, act_chunk;
    nx_split split;
} prefill_job;

static void prefill_worker(int ith, int nth, void *arg) {
    (void)nth;
    prefill_job *j = arg;
    const fw_pass *f = j->aj.f;
    int NH = f->m->NH;
    for (int i; (i = nx__split_next(&j->split, ith)) >= 0;) {
        if (i < NH) {
            rotate_attend_head(&j->aj, i, ith);
        } else {
            size_t a = (size_t)(i - NH) * j->act_chunk, e = a + j->act_chunk < j->act_n ? a + j->act_chunk : j->act_n;
            f->vt->act(j->act_x + a, e - a, f->m->act);
        }
    }
}

/* The attention block of layer l (and the parallel MLP's first product, up) in stages: the
 * products over all rows, then the heads and the activation (prefill_job), or, when there are
 * too few heads to keep the threads busy, the activation, rotary and the cache appends, then
 * the attention in (head, block of rows) items. */
static void staged_block(const fw_pass *f, const nx_layer *ly, int l, const nx_matmul_args *qkv,
                         const nx_matmul_args *up, size_t att_work) {
    const nx_model *m = f->m;
    int HS = m->HS, NH = m->NH, T = f->T;
    linear(f->pool, f->n_short, qkv, up);
    attn_job aj = {f, ly, l};
    size_t act_n = up ? (size_t)T * (size_t)up->OUT : 0;
    /* Same reasoning as the matmul threshold (and nx__act's): only hand off real work. */
    bool par = f->n_threads > 1 && ((NH * T >= 2 && (size_t)NH * att_work * HS >= 65536) || act_n >= 4096);
    if (!par || NH >= 2 * f->n_threads) {
        prefill_job j = {.aj = aj, .act_x = up ? up->y : NULL, .act_n = act_n, .act_chunk = 16384};
        nx__split_init(&j.split, NH + (int)((act_n + j.act_chunk - 1) / j.act_chunk), par ? f->n_threads : 1);
        if (par)
            nx_pool_run(f->pool, prefill_worker, &j);
        else
            prefill_worker(0, 1, &j);
        return;
    }
    if (up) nx__act(f->pool, up->y, (size_t)T * (size_t)up->OUT, m->act);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < NH; h++) rotate_append(f, l, t, h);
    nx_pool_run(f->pool, attn_worker, &aj);
}

/* Embeds ids[0..T-1] (row r at its session's next position), runs every layer, appends each
 * row's k, v and token to its session, and leaves the final hidden rows in f->x. n_past is not
 * advanced here (the callers do it after the head). */
static void forward_rows(const fw_pass *f, const int32_t *ids) {
    const nx_model *m = f->m;
    const nx_model_config *c = &m->cfg;
    int H = m->H, I = m->I, T = f->T;
    size_t TH = (size_t)T * H;
    float eps = c->layer_norm_eps;

    size_t att_work = 0;   /* Σ keys over rows: decides whether attention is worth a hand-off */
    for (int t = 0; t < T; t++) {
        nx_session *s = row_session(f, t);
        int p = row_pos(f, t);
        float *xt = f->x + (size_t)t * H;
        nx__wmat_row(&m->Wte, H, ids[t], xt);
        if (m->wpe) {
            const float *pe = m->wpe + (size_t)p * H;
            for (int i = 0; i < H; i++) xt[i] += pe[i];
        }
        s->tokens[p] = ids[t];
        att_work += (size_t)p + 1;
    }

    for (int l = 0; l < m->L; l++) {
        const nx_layer *ly = &m->layers[l];
        nx__layernorm(f->pool, f->u, f->x, ly->ln1_w, ly->ln1_b, T, H, eps);
        /* The parallel block's MLP reads the block input too, so its first product shares the
         * qkv hand-off to the threads (f->a is free until the attention output projection). */
        const float *mlp_in = f->u;
        if (m->parallel && !m->shared_ln) {
            nx__layernorm(f->pool, f->a, f->x, ly->ln2_w, ly->ln2_b, T, H, eps);
            mlp_in = f->a;
        }
        nx_matmul_args qkv = {f->qkv, f->u, &ly->Wqkv, ly->bqkv, T, H, 3 * H};
        nx_matmul_args up = {f->h, mlp_in, &ly->W1, ly->b1, T, H, I};
        const nx_matmul_args *up1 = m->parallel ? &up : NULL;
        if (!(f->n_short == T && T <= NX_MV_MAX_T && decode_block(f, ly, l, &qkv, up1)))
            staged_block(f, ly, l, &qkv, up1, att_work);
        float *mlp_out = f->qkv;   /* q|k|v are dead once attention is done */
        nx_matmul_args o = {f->a, f->att, &ly->Wo, ly->bo, T, H, H};
        if (m->parallel) {
            /* attention output and MLP down projection: independent, one hand-off */
            nx_matmul_args down = {mlp_out, f->h, &ly->W2, ly->b2, T, I, H};
            linear(f->pool, f->n_short, &o, &down);
            add_rows(f->x, f->a, mlp_out, TH);
        } else {
            linear(f->pool, f->n_short, &o, NULL);
            add_rows(f->x, f->a, NULL, TH);
            nx__layernorm(f->pool, f->u, f->x, ly->ln2_w, ly->ln2_b, T, H, eps);
            up.x = f->u;
            linear(f->pool, f->n_short, &up, NULL);
            nx__act(f->pool, f->h, (size_t)T * I, m->act);
            nx_matmul_args down = {mlp_out, f->h, &ly->W2, ly->b2, T, I, H};
            linear(f->pool, f->n_short, &down, NULL);
            add_rows(f->x, mlp_out, NULL, TH);
        }
    }
}

/* Before positions p0..p1-1 of s are appended: zeroes the key tiles they open (those whose first
 * position is among them), so that no lane of a tile the score pass reads is uninitialized. On
 * the calling thread, before any append: the appends of one tile may run on different threads. */
static void kv_open_tiles(nx_session *s, int p0, int p1) {
    const nx_model *m = s->m;
    for (int p = (p0 + NX_KT - 1) / NX_KT * NX_KT; p < p1; p += NX_KT)
        for (size_t hd = 0; hd < (size_t)m->L * (size_t)m->NH; hd++)
            nx__kv_open_tile((uint8_t *)s->kc + hd * s->kv_hb, s->kv_type, m->HS, p);
}

/* One chunk of T <= n_batch tokens of session s. */
static void forward_chunk(nx_session *s, const int32_t *ids, int T, float *logits) {
    const nx_model *m = s->m;
    int H = m->H;
    float eps = m->cfg.layer_norm_eps;
    fw_pass f = {m, s->vt, s->pool, s->n_threads, T, s, NULL, NULL, 0, s->x, s->u, s->qkv, s->att, s->a, s->h};
    kv_open_tiles(s, s->n_past, s->n_past + T);
    forward_rows(&f, ids);
    /* Only the rows somebody reads go through the (large) head. */
    if (logits) {
        nx__layernorm(s->pool, s->u, s->x, m->lnf_w, m->lnf_b, T, H, eps);
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

/* ---- batched forward ---------------------------------------------------------------------- */

struct nx_batch {
    const nx_model *m;
    int max_seqs, max_tokens;
    float *x, *u, *qkv, *att, *a, *h;   /* max_tokens rows each */
    float *logits;                      /* [max_seqs][V] when the caller passes none */
    int32_t *ids;                       /* [max_tokens] the tokens in row order */
    nx_session **row_s;                 /* [max_tokens] */
    int *row_p;                         /* [max_tokens] */
    int *last;                          /* [max_seqs] row of each session's last token */
};

nx_status nx_batch_create(const nx_model *m, int max_seqs, int max_tokens, nx_batch **out) {
    if (!m || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_batch_create: NULL argument");
    *out = NULL;
    if (max_seqs < 1) return nx__error(NX_ERR_INVALID_ARG, "nx_batch_create: max_seqs %d < 1", max_seqs);
    if (max_tokens == 0) max_tokens = max_seqs;
    if (max_tokens < max_seqs)
        return nx__error(NX_ERR_INVALID_ARG, "nx_batch_create: max_tokens %d < max_seqs %d", max_tokens, max_seqs);
    nx_batch *b = nx__calloc(1, sizeof *b);
    if (!b) return nx__error(NX_ERR_NOMEM, "out of memory");
    b->m = m;
    b->max_seqs = max_seqs;
    b->max_tokens = max_tokens;
    size_t R = (size_t)max_tokens, H = (size_t)m->H, I = (size_t)m->I;
    b->x = nx__malloc_aligned(R * H * sizeof(float));
    b->u = nx__malloc_aligned(R * H * sizeof(float));
    b->qkv = nx__malloc_aligned(R * 3 * H * sizeof(float));
    b->att = nx__malloc_aligned(R * H * sizeof(float));
    b->a = nx__malloc_aligned(R * H * sizeof(float));
    b->h = nx__malloc_aligned(R * I * sizeof(float));
    b->logits = nx__malloc_aligned((size_t)max_seqs * (size_t)m->V * sizeof(float));
    b->ids = nx__malloc(R * sizeof *b->ids);
    b->row_s = nx__malloc(R * sizeof *b->row_s);
    b->row_p = nx__malloc(R * sizeof *b->row_p);
    b->last = nx__malloc((size_t)max_seqs * sizeof *b->last);
    if (!b->x || !b->u || !b->qkv || !b->att || !b->a || !b->h || !b->logits || !b->ids || !b->row_s ||
        !b->row_p || !b->last) {
        nx_batch_free(b);
        return nx__error(NX_ERR_NOMEM, "out of memory allocating a batch of %d sequences, %d tokens", max_seqs,
                         max_tokens);
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
    nx__free(b->ids);
    nx__free(b->row_s);
    nx__free(b->row_p);
    nx__free(b->last);
    nx__free(b);
}

int nx_batch_max_seqs(const nx_batch *b) { return b->max_seqs; }
int nx_batch_max_tokens(const nx_batch *b) { return b->max_tokens; }

/* Everything that would make the call wrong is checked before anything is written, so on
 * error every session is unchanged. n_tokens NULL: one token per session. */
static nx_status batch_check(const nx_batch *b, nx_session *const *s, const int32_t *ids, const int *n_tokens, int n,
                             const char *fn) {
    if (!b || !s || !ids) return nx__error(NX_ERR_INVALID_ARG, "%s: NULL argument", fn);
    if (n < 1 || n > b->max_seqs)
        return nx__error(NX_ERR_INVALID_ARG, "%s: %d sessions (need 1 .. max_seqs = %d)", fn, n, b->max_seqs);
    const nx_model *m = b->m;
    long total = 0;
    for (int i = 0; i < n; i++) {
        int k = n_tokens ? n_tokens[i] : 1;
        if (!s[i]) return nx__error(NX_ERR_INVALID_ARG, "%s: session %d is NULL", fn, i);
        if (s[i]->m != m) return nx__error(NX_ERR_INVALID_ARG, "%s: session %d runs a different model than the batch", fn, i);
        if (s[i]->pool != s[0]->pool)
            return nx__error(NX_ERR_INVALID_ARG,
                             "%s: session %d uses a different thread pool than session 0 "
                             "(create the sessions with one shared nx_session_opts.pool)",
                             fn, i);
        for (int j = 0; j < i; j++)
            if (s[j] == s[i]) return nx__error(NX_ERR_INVALID_ARG, "%s: sessions %d and %d are the same session", fn, j, i);
        if (k < 1 || k > s[i]->n_batch)
            return nx__error(NX_ERR_INVALID_ARG, "%s: session %d: %d tokens (need 1 .. the session's n_batch = %d)", fn, i,
                             k, s[i]->n_batch);
        if (k > s[i]->n_ctx - s[i]->n_past)
            return nx__error(NX_ERR_RANGE, "%s: session %d: context full (%d cached + %d new tokens exceed %d positions)", fn,
                             i, s[i]->n_past, k, s[i]->n_ctx);
        for (int t = 0; t < k; t++)
            if (ids[total + t] < 0 || ids[total + t] >= m->V)
                return nx__error(NX_ERR_RANGE, "%s: token %d (session %d, index %d) outside the vocabulary [0, %d)", fn,
                                 (int)ids[total + t], i, t, m->V);
        total += k;
    }
    if (total > b->max_tokens)
        return nx__error(NX_ERR_INVALID_ARG, "%s: %ld tokens in all exceed the batch's max_tokens %d", fn, total,
                         b->max_tokens);
    return NX_OK;
}

static nx_status batch_run(nx_batch *b, nx_session *const *s, const int32_t *ids, const int *n_tokens, int n,
                           float *logits, const char *fn) {
    NX_TRY(batch_check(b, s, ids, n_tokens, n, fn));
    const nx_model *m = b->m;
    int H = m->H, V = m->V;
    /* Rows in two runs: sessions with decode-sized calls first, then the longer ones (see
     * linear()); within each run in the caller's order. */
    int T = 0, n_short = 0;
    for (int pass = 0; pass < 2; pass++) {
        long off = 0;
        for (int i = 0; i < n; i++) {
            int k = n_tokens ? n_tokens[i] : 1;
            if ((k <= NX_MV_MAX_T) == (pass == 0)) {
                memcpy(b->ids + T, ids + off, (size_t)k * sizeof *ids);
                for (int t = 0; t < k; t++) {
                    b->row_s[T + t] = s[i];
                    b->row_p[T + t] = s[i]->n_past + t;
                }
                T += k;
                b->last[i] = T - 1;
            }
            off += k;
        }
        if (pass == 0) n_short = T;
    }
    fw_pass f = {m, s[0]->vt, s[0]->pool, s[0]->n_threads, T, NULL, b->row_s, b->row_p, n_short,
                 b->x, b->u, b->qkv, b->att, b->a, b->h};
    for (int i = 0; i < n; i++) kv_open_tiles(s[i], s[i]->n_past, s[i]->n_past + (n_tokens ? n_tokens[i] : 1));
    forward_rows(&f, b->ids);
    /* The head sees each session's last row only, as nx_session_forward(..., NULL) does: n rows
     * of one token each. */
    for (int i = 0; i < n; i++)
        nx__layernorm_ref(b->u + (size_t)i * H, b->x + (size_t)b->last[i] * H, m->lnf_w, m->lnf_b, 1, H,
                          m->cfg.layer_norm_eps);
    float *out = logits ? logits : b->logits;
    nx_matmul_args head = {out, b->u, &m->Whead, m->head_b, n, H, V};
    linear(f.pool, n, &head, NULL);
    for (int i = 0; i < n; i++) {
        memcpy(s[i]->logits, out + (size_t)i * V, (size_t)V * sizeof(float));
        s[i]->has_logits = true;
        s[i]->n_past += n_tokens ? n_tokens[i] : 1;
    }
    return NX_OK;
}

nx_status nx_batch_forward(nx_batch *b, nx_session *const *s, const int32_t *ids, const int *n_tokens, int n,
                           float *logits) {
    if (!n_tokens) return nx__error(NX_ERR_INVALID_ARG, "nx_batch_forward: NULL argument");
    return batch_run(b, s, ids, n_tokens, n, logits, "nx_batch_forward");
}

nx_status nx_batch_decode(nx_batch *b, nx_session *const *s, const int32_t *ids, int n, float *logits) {
    return batch_run(b, s, ids, NULL, n, logits, "nx_batch_decode");
}
