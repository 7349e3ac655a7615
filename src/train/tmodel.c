/*
 * tmodel.c - GPT-NeoX for training, fp32, llm.c style: one parameter block (HF tensor order
 * and names), gradients and AdamW moments of the same layout, one activation arena sized
 * from (B, T, config) at creation, hand-written backward per op in reverse order.
 *
 * Layout facts kept from HF so checkpoints load there unchanged:
 *   - query_key_value is head-interleaved: output row h*3*HS + {0..HS-1 = q, HS.. = k,
 *     2HS.. = v} for head h (docs/ARCHITECTURES.md 1.2). The activation qkv[BT, 3C] keeps
 *     that order, and attention reads q/k/v with stride 3C.
 *   - rotary is NeoX rotate_half on the first R = int(HS * rotary_pct) dims (1.3).
 *   - parallel residual: x + attn(ln1(x)) + mlp(ln2(x)); sequential: h = x + attn(ln1(x)),
 *     x' = h + mlp(ln2(h)) (1.4).
 *
 * bf16 compute (nx_tmodel_set_bf16): every matmul, forward and backward, reads operands
 * rounded to bfloat16 (round to nearest even, as torch's .bfloat16()) and accumulates in
 * fp32. A bf16 x bf16 product is exact in fp32, so the fp32 FMA kernels on rounded values
 * compute exactly "bf16 inputs, fp32 accumulation" without any kernel of their own. The
 * rounding happens outside the kernels, once per operand:
 *   - weights: the transposed copy `wt` and a second copy `wr` (for dinp = dout · W) are
 *     rounded when they are refreshed, once per optimizer step; `params` stay fp32 masters.
 *   - activations that feed only matmuls (ln1, ln2, lnf, qkv after rotary, atty, fcg) are
 *     rounded in place when produced: LayerNorm and GELU backward read their fp32 inputs
 *     (x, fch), never these outputs. The softmax probabilities stay fp32 for the softmax
 *     backward; P V and Pᵀ dY read a rounded copy in the dscr scratch.
 *   - output gradients: rounded in place when nothing else needs them in fp32 (dfch, dqkv,
 *     datty, dS; dlogits by the cross-entropy loop while its row is in cache), into tmp_a
 *     for the residual gradient dres. Bias gradients sum the fp32 gradient first (a bias
 *     add is not a matmul).
 * Everything else (LayerNorm, softmax, GELU, loss, gradient accumulation, AdamW) is fp32.
 *
 * Determinism: every op splits work statically over rows, columns or (batch, head) units
 * such that each output element is produced by exactly one thread with a fixed order of
 * operations; sums over rows (bias, LayerNorm and embedding gradients) are split by
 * column, never by row. Scalar results (loss, gradient norm) are summed serially or over
 * fixed-size chunks. Hence bit-identical results for any thread count.
 */
#include "train/train_internal.h"

#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define NORM_CHUNK NX_NORM_CHUNK /* elements per partial sum of the gradient norm */
#define LOGIT_ROWS 256   /* rows of the LM head processed at once (bounds the logits buffer) */

enum { W_LN1W, W_LN1B, W_LN2W, W_LN2B, W_QKVW, W_QKVB, W_DW, W_DB, W_FC1W, W_FC1B, W_FC2W, W_FC2B, W_NLAYER };

typedef struct layer_acts {
    float *x;           /* [BT, C] residual stream entering the layer */
    float *ln1, *mean1, *rstd1;
    float *qkv;         /* [BT, 3C] after rotary */
    float *att;         /* [B, NH, T, T] softmax probabilities */
    float *atty;        /* [BT, C] merged head outputs */
    float *h;           /* [BT, C] sequential residual only: x + attn */
    float *ln2, *mean2, *rstd2;
    float *fch, *fcg;   /* [BT, I] pre- and post-GELU */
} layer_acts;

struct nx_tmodel {
    nx_model_config cfg;
    int B, T, C, NH, HS, I, V, L, R;
    size_t ntensors, nparams;
    nx_tparam_info *info;
    size_t *offset;
    char *names;
    long (*lay)[W_NLAYER];   /* tensor index per layer weight, -1 when absent */
    long t_emb, t_lnfw, t_lnfb, t_out;
    float *params, *grads, *adam_m, *adam_v, *wt;
    float *wr;               /* bf16 only: params rounded to bf16 (refreshed with wt) */
    double *partials;        /* per-chunk gradient sums of squares */
    nx_grad_ready_fn grad_ready; /* optional: told as backward finishes parameter ranges */
    void *grad_ready_ctx;
    bool wt_valid, use_ref, bf16;
    long step;
    /* activations */
    float *arena;
    layer_acts *acts;
    float *xfinal, *lnf, *meanf, *rstdf;
    float *logits, *losses;
    float *cosb, *sinb;      /* [T, R/2] */
    /* backward scratch */
    float *dres, *dln_a, *dln_b, *dqkv, *datty, *dfch, *dscr, *tmp_a, *tmp_b;
    float *kT, *vT;          /* per (batch, head) transposed keys / values [HS, T] */
};

/* ---- small helpers ---------------------------------------------------------------- */
/* FNV-1a over 8-byte words (then the tail bytes): a checksum for multi-GB checkpoint
 * buffers at memory speed rather than a byte per multiply. */
uint64_t nx__fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
    return h;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
void nx__rng_seed(nx_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}
static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
uint64_t nx__rng_next(nx_rng *r) {
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return res;
}
double nx__rng_uniform(nx_rng *r) { return (double)(nx__rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }
double nx__rng_normal(nx_rng *r) {
    double u1 = nx__rng_uniform(r), u2 = nx__rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---- construction --------------------------------------------------------------------- */
static void add_tensor(nx_tmodel *m, size_t *n, size_t *off, char **np, const char *name, int64_t d0, int64_t d1,
                       bool decay) {
    nx_tparam_info *t = &m->info[*n];
    size_t len = strlen(name) + 1;
    memcpy(*np, name, len);
    t->name = *np;
    *np += len;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->numel = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    t->decay = decay;
    m->offset[*n] = *off;
    /* 16-float alignment keeps every tensor on a 64-byte boundary for the SIMD kernels. */
    *off += (t->numel + 15) & ~(size_t)15;
    (*n)++;
}

static size_t arena_take(float **p, float **cursor, size_t n) {
    *p = *cursor;
    *cursor += (n + 15) & ~(size_t)15;
    return (n + 15) & ~(size_t)15;
}

nx_status nx_tmodel_create(const nx_model_config *cfg, int B, int T, nx_tmodel **out) {
    *out = NULL;
    if (cfg->arch != NX_ARCH_GPT_NEOX)
        return nx__error(NX_ERR_UNSUPPORTED, "training supports model_type gpt_neox only (got %s)", cfg->model_type);
    int C = cfg->hidden_size, NH = cfg->n_head, L = cfg->n_layer, I = cfg->intermediate_size, V = cfg->vocab_size;
    if (C <= 0 || NH <= 0 || L <= 0 || I <= 0 || V <= 0 || C % NH)
        return nx__error(NX_ERR_INVALID_ARG,
                         "model config: need positive hidden_size divisible by num_attention_heads, layers, "
                         "intermediate_size, vocab_size (got H=%d heads=%d L=%d I=%d V=%d)", C, NH, L, I, V);
    if (L > NX_MAX_LAYERS) return nx__error(NX_ERR_RANGE, "model config: %d layers > %d", L, NX_MAX_LAYERS);
    if (B <= 0 || T <= 0 || (long)B * T > (1L << 24))
        return nx__error(NX_ERR_INVALID_ARG, "micro batch %d x seq_length %d is out of range", B, T);
    int HS = C / NH;
    int R = cfg->rotary_dim;
    if (R < 0 || R > HS || (R & 1))
        return nx__error(NX_ERR_INVALID_ARG, "model config: rotary dims %d must be even and <= head size %d", R, HS);
    if (cfg->act != NX_ACT_GELU && cfg->act != NX_ACT_GELU_TANH && cfg->act != NX_ACT_GELU_FAST)
        return nx__error(NX_ERR_UNSUPPORTED, "model config: activation #%d is not supported for training (gelu, gelu_new, gelu_fast)",
                         (int)cfg->act);
    if (!(cfg->layer_norm_eps > 0.0f)) return nx__error(NX_ERR_INVALID_ARG, "model config: layer_norm_eps must be > 0");

    nx_tmodel *m = nx__calloc(1, sizeof *m);
    if (!m) return nx__error(NX_ERR_NOMEM, "training model");
    m->cfg = *cfg;
    m->B = B; m->T = T; m->C = C; m->NH = NH; m->HS = HS; m->I = I; m->V = V; m->L = L; m->R = R;
    size_t maxt = (size_t)L * W_NLAYER + 4;
    m->info = nx__calloc(maxt, sizeof *m->info);
    m->offset = nx__calloc(maxt, sizeof *m->offset);
    m->names = nx__malloc(maxt * 64);
    m->lay = nx__calloc((size_t)L, sizeof *m->lay);
    if (!m->info || !m->offset || !m->names || !m->lay) { nx_tmodel_free(m); return nx__error(NX_ERR_NOMEM, "training model"); }

    size_t n = 0, off = 0;
    char *np = m->names, nm[64];
    m->t_emb = (long)n;
    add_tensor(m, &n, &off, &np, "gpt_neox.embed_in.weight", V, C, true);
    for (int l = 0; l < L; l++) {
        static const char *const suffix[W_NLAYER] = {
            "input_layernorm.weight", "input_layernorm.bias", "post_attention_layernorm.weight",
            "post_attention_layernorm.bias", "attention.query_key_value.weight", "attention.query_key_value.bias",
            "attention.dense.weight", "attention.dense.bias", "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias",
            "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias"};
        const int64_t d0[W_NLAYER] = {C, C, C, C, 3 * C, 3 * C, C, C, I, I, C, C};
        const int64_t d1[W_NLAYER] = {0, 0, 0, 0, C, 0, C, 0, C, 0, I, 0};
        for (int w = 0; w < W_NLAYER; w++) {
            if (!cfg->attention_bias && (w == W_QKVB || w == W_DB)) { m->lay[l][w] = -1; continue; }
            snprintf(nm, sizeof nm, "gpt_neox.layers.%d.%s", l, suffix[w]);
            m->lay[l][w] = (long)n;
            add_tensor(m, &n, &off, &np, nm, d0[w], d1[w], d1[w] != 0);
        }
    }
    m->t_lnfw = (long)n;
    add_tensor(m, &n, &off, &np, "gpt_neox.final_layer_norm.weight", C, 0, false);
    m->t_lnfb = (long)n;
    add_tensor(m, &n, &off, &np, "gpt_neox.final_layer_norm.bias", C, 0, false);
    if (cfg->tie_word_embeddings) m->t_out = m->t_emb;
    else { m->t_out = (long)n; add_tensor(m, &n, &off, &np, "embed_out.weight", V, C, true); }
    m->ntensors = n;
    m->nparams = off;

    size_t bytes = off * sizeof(float);
    m->params = nx__malloc_aligned(bytes);
    m->grads = nx__malloc_aligned(bytes);
    m->wt = nx__malloc_aligned(bytes);
    m->acts = nx__calloc((size_t)L, sizeof *m->acts);
    m->partials = nx__calloc((off + NORM_CHUNK - 1) / NORM_CHUNK, sizeof(double));
    if (!m->partials || !m->params || !m->grads || !m->wt || !m->acts) {
        nx_tmodel_free(m);
        return nx__error(NX_ERR_NOMEM, "training model: %zu parameters", off);
    }
    memset(m->params, 0, bytes); memset(m->grads, 0, bytes);
    memset(m->wt, 0, bytes);

    /* Activation arena: sized in a first pass with a NULL cursor, carved in a second. */
    size_t BT = (size_t)B * T, att = (size_t)B * NH * T * T, rows = NX_MIN(BT, (size_t)LOGIT_ROWS);
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        float *base = pass ? m->arena : NULL, *cur = base, *dummy;
        size_t sz = 0;
        for (int l = 0; l < L; l++) {
            layer_acts *a = pass ? &m->acts[l] : &(layer_acts){0};
            sz += arena_take(&a->x, &cur, BT * C);
            sz += arena_take(&a->ln1, &cur, BT * C);
            sz += arena_take(&a->mean1, &cur, BT);
            sz += arena_take(&a->rstd1, &cur, BT);
            sz += arena_take(&a->qkv, &cur, BT * 3 * C);
            sz += arena_take(&a->att, &cur, att);
            sz += arena_take(&a->atty, &cur, BT * C);
            if (!cfg->parallel_residual) sz += arena_take(&a->h, &cur, BT * C);
            sz += arena_take(&a->ln2, &cur, BT * C);
            sz += arena_take(&a->mean2, &cur, BT);
            sz += arena_take(&a->rstd2, &cur, BT);
            sz += arena_take(&a->fch, &cur, BT * I);
            sz += arena_take(&a->fcg, &cur, BT * I);
        }
        float **slots[] = {&m->xfinal, &m->lnf, &m->meanf, &m->rstdf, &m->logits, &m->losses, &m->cosb, &m->sinb,
                           &m->dres, &m->dln_a, &m->dln_b, &m->dqkv, &m->datty, &m->dfch, &m->dscr,
                           &m->tmp_a, &m->tmp_b, &m->kT, &m->vT};
        size_t sizes[] = {BT * C, BT * C, BT, BT, rows * (size_t)V, BT, (size_t)T * (R / 2 + 1), (size_t)T * (R / 2 + 1),
                          BT * C, BT * C, BT * C, BT * 3 * C, BT * C, BT * I, att, BT * C, BT * C, BT * C, BT * C};
        for (size_t i = 0; i < NX_ARRAY_LEN(slots); i++) sz += arena_take(pass ? slots[i] : &dummy, &cur, sizes[i]);
        if (!pass) {
            total = sz;
            m->arena = nx__malloc_aligned(total * sizeof(float));
            if (!m->arena) {
                nx_tmodel_free(m);
                return nx__error(NX_ERR_NOMEM, "training activations: %zu MiB for B=%d T=%d", total * 4 >> 20, B, T);
            }
            memset(m->arena, 0, total * sizeof(float));
        }
    }
    /* Rotary tables in fp32 as HF computes them: inv_freq = 1 / base^(2j/R), theta = p * inv_freq. */
    int half = R / 2;
    for (int p = 0; p < T; p++)
        for (int j = 0; j < half; j++) {
            float inv = 1.0f / powf(cfg->rope_theta, (float)(2 * j) / (float)R);
            float th = (float)p * inv;
            m->cosb[p * half + j] = cosf(th);
            m->sinb[p * half + j] = sinf(th);
        }
    *out = m;
    return NX_OK;
}

void nx_tmodel_free(nx_tmodel *m) {
    if (!m) return;
    nx__free_aligned(m->params); nx__free_aligned(m->grads);
    nx__free_aligned(m->adam_m); nx__free_aligned(m->adam_v); nx__free_aligned(m->wt); nx__free_aligned(m->wr);
    nx__free_aligned(m->arena);
    nx__free(m->acts); nx__free(m->partials); nx__free(m->info); nx__free(m->offset); nx__free(m->names); nx__free(m->lay);
    nx__free(m);
}

size_t nx_tmodel_num_tensors(const nx_tmodel *m) { return m->ntensors; }
const nx_tparam_info *nx_tmodel_tensor(const nx_tmodel *m, size_t i) { return i < m->ntensors ? &m->info[i] : NULL; }
long nx_tmodel_find(const nx_tmodel *m, const char *name) {
    for (size_t i = 0; i < m->ntensors; i++)
        if (!strcmp(m->info[i].name, name)) return (long)i;
    return -1;
}
float *nx_tmodel_param_data(nx_tmodel *m, size_t i) { m->wt_valid = false; return m->params + m->offset[i]; }
const float *nx_tmodel_grad_data(const nx_tmodel *m, size_t i) { return m->grads + m->offset[i]; }
size_t nx_tmodel_num_params(const nx_tmodel *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->ntensors; i++) n += m->info[i].numel;
    return n;
}
const nx_model_config *nx_tmodel_config(const nx_tmodel *m) { return &m->cfg; }
void nx_tmodel_use_reference(nx_tmodel *m, bool on) { m->use_ref = on; }
nx_status nx_tmodel_set_bf16(nx_tmodel *m, bool on) {
    if (on && !m->wr) {
        m->wr = nx__malloc_aligned(m->nparams * sizeof(float));
        if (!m->wr) return nx__error(NX_ERR_NOMEM, "bf16 weight copy: %zu floats", m->nparams);
        memset(m->wr, 0, m->nparams * sizeof(float));
    }
    m->bf16 = on;
    m->wt_valid = false;
    return NX_OK;
}
bool nx_tmodel_bf16(const nx_tmodel *m) { return m->bf16; }
long nx_tmodel_step_count(const nx_tmodel *m) { return m->step; }
float *nx__tmodel_params(nx_tmodel *m) { m->wt_valid = false; return m->params; }
/* The moments are created on first use: a run whose optimizer state is sharded across
 * processes (ZeRO stage 1, dist.h) keeps its shard outside the model and never needs them. */
static bool ensure_moments(nx_tmodel *m) {
    if (m->adam_m && m->adam_v) return true;
    size_t bytes = m->nparams * sizeof(float);
    if (!m->adam_m && (m->adam_m = nx__malloc_aligned(bytes)) != NULL) memset(m->adam_m, 0, bytes);
    if (!m->adam_v && (m->adam_v = nx__malloc_aligned(bytes)) != NULL) memset(m->adam_v, 0, bytes);
    if (m->adam_m && m->adam_v) return true;
    nx__error(NX_ERR_NOMEM, "AdamW moments: 2 x %zu floats", m->nparams);
    return false;
}
float *nx__tmodel_adam_m(nx_tmodel *m) { return ensure_moments(m) ? m->adam_m : NULL; }
float *nx__tmodel_adam_v(nx_tmodel *m) { return ensure_moments(m) ? m->adam_v : NULL; }
void nx__tmodel_set_grad_hook(nx_tmodel *m, nx_grad_ready_fn fn, void *ctx) { m->grad_ready = fn; m->grad_ready_ctx = ctx; }
static void grad_ready(nx_tmodel *m, size_t lo) { if (m->grad_ready) m->grad_ready(m->grad_ready_ctx, lo); }
void nx__tmodel_set_step_count(nx_tmodel *m, long t) { m->step = t; }
void nx__tmodel_weights_changed(nx_tmodel *m) { m->wt_valid = false; }
float *nx__tmodel_swap_grads(nx_tmodel *m, float *g) { float *old = m->grads; m->grads = g; return old; }
size_t nx__tmodel_flat_size(const nx_tmodel *m) { return m->nparams; }
size_t nx__tmodel_offset(const nx_tmodel *m, size_t i) { return m->offset[i]; }

void nx_tmodel_zero_grad(nx_tmodel *m) { memset(m->grads, 0, m->nparams * sizeof(float)); }

void nx_tmodel_init(nx_tmodel *m, nx_init_method init, nx_init_method output_init, float std, uint64_t seed) {
    double H = m->C, L = m->L;
    double sd[3] = {std, sqrt(2.0 / (5.0 * H)), 2.0 / (L * sqrt(H))};
    nx_rng rng;
    nx__rng_seed(&rng, seed);
    for (size_t i = 0; i < m->ntensors; i++) {
        const nx_tparam_info *t = &m->info[i];
        float *p = m->params + m->offset[i];
        const char *nm = t->name;
        size_t len = strlen(nm);
        bool is_ln = strstr(nm, "layernorm") || strstr(nm, "layer_norm");
        bool is_bias = len > 5 && !strcmp(nm + len - 5, ".bias");
        if (is_ln && !is_bias) { for (size_t k = 0; k < t->numel; k++) p[k] = 1.0f; continue; }
        if (is_bias) { memset(p, 0, t->numel * sizeof(float)); continue; }
        bool is_out = strstr(nm, "attention.dense.weight") || strstr(nm, "dense_4h_to_h.weight");
        double s = sd[is_out ? output_init : init];
        for (size_t k = 0; k < t->numel; k++) p[k] = (float)(s * nx__rng_normal(&rng));
    }
    m->wt_valid = false;
}

/* ---- ops --------------------------------------------------------------------------------- */
#define W(m, idx) ((m)->params + (m)->offset[idx])
#define G(m, idx) ((m)->grads + (m)->offset[idx])
#define WT(m, idx) ((m)->wt + (m)->offset[idx])
/* The weight as the input-gradient product reads it: the bf16 copy in bf16 mode. */
#define WB(m, idx) (((m)->bf16 ? (m)->wr : (m)->params) + (m)->offset[idx])

static void split(long n, int ith, int nth, long *a, long *b) {
    *a = n * ith / nth;
    *b = n * (ith + 1) / nth;
}

/* Runs fn on the pool, or inline when the op is too small to repay a pool wake-up (the
 * split never changes results, so this is only a speed choice). work ~ scalar operations. */
#define SMALL_WORK (1L << 15)
static void prun(nx_pool *pool, nx_pool_fn fn, void *arg, long work) {
    if (work < SMALL_WORK) fn(0, 1, arg);
    else nx_pool_run(pool, fn, arg);
}

typedef struct { float *dst; const float *src; long n; } round_job;
static void round_worker(int ith, int nth, void *arg) {
    round_job *j = arg;
    long a, b;
    split(j->n, ith, nth, &a, &b);
    for (long i = a; i < b; i++) j->dst[i] = nx__bf16_round(j->src[i]);
}
/* A matmul operand as bf16 mode reads it: src rounded into dst (dst == src rounds in
 * place) and dst returned; src itself when the model computes in fp32. */
static const float *mm_operand(nx_tmodel *m, nx_pool *pool, float *dst, const float *src, long n) {
    if (!m->bf16) return src;
    round_job j = {dst, src, n};
    prun(pool, round_worker, &j, n * 2);
    return dst;
}

static void linear(nx_tmodel *m, nx_pool *pool, float *out, const float *inp, long w, long b, int N, int IC, int OC) {
    nx_tgemm_args a = {.M = N, .N = OC, .K = IC, .A = inp, .sam = IC, .sak = 1, .B = WT(m, w), .ldb = OC,
                       .C = out, .ldc = OC, .accumulate = 0, .bias = b >= 0 ? W(m, b) : NULL};
    nx__tgemm(pool, &a, m->use_ref);
}
static void bias_bwd(nx_pool *pool, float *db, const float *dout, int N, int C);
/* db += column sums of dout (fp32, when b >= 0); dinp = dout · W (overwrite); dW += doutᵀ · inp.
 * In bf16 mode dout is rounded into `rounded` first, which may be dout itself when the
 * caller has no further use for the fp32 values; rounded == NULL: dout is rounded already. */
static void linear_bwd(nx_tmodel *m, nx_pool *pool, float *dinp, float *dout, const float *inp, long w, long b,
                       float *rounded, int N, int IC, int OC) {
    if (b >= 0) bias_bwd(pool, G(m, b), dout, N, OC);
    const float *d = rounded ? mm_operand(m, pool, rounded, dout, (long)N * OC) : dout;
    if (dinp) {
        nx_tgemm_args a = {.M = N, .N = IC, .K = OC, .A = d, .sam = OC, .sak = 1, .B = WB(m, w), .ldb = IC,
                           .C = dinp, .ldc = IC, .accumulate = 0, .bias = NULL};
        nx__tgemm(pool, &a, m->use_ref);
    }
    nx_tgemm_args g = {.M = OC, .N = IC, .K = N, .A = d, .sam = 1, .sak = OC, .B = inp, .ldb = IC,
                       .C = G(m, w), .ldc = IC, .accumulate = 1, .bias = NULL};
    nx__tgemm(pool, &g, m->use_ref);
}

typedef struct {
    float *out, *mean, *rstd, *dinp, *dw, *db;
    const float *inp, *w, *b, *dout;
    int N, C;
    float eps;
} ln_job;

static void ln_fwd_worker(int ith, int nth, void *arg) {
    ln_job *j = arg;
    long r0, r1;
    split(j->N, ith, nth, &r0, &r1);
    int C = j->C;
    for (long r = r0; r < r1; r++) {
        const float *x = j->inp + r * C;
        float s = 0.0f;
        for (int c = 0; c < C; c++) s += x[c];
        float mu = s / (float)C, v = 0.0f;
        for (int c = 0; c < C; c++) { float d = x[c] - mu; v += d * d; }
        float rs = 1.0f / sqrtf(v / (float)C + j->eps);
        float *o = j->out + r * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - mu) * rs * j->w[c] + j->b[c];
        j->mean[r] = mu;
        j->rstd[r] = rs;
    }
}

static void layernorm_fwd(nx_pool *pool, float *out, float *mean, float *rstd, const float *inp, const float *w,
                          const float *b, int N, int C, float eps) {
    ln_job j = {.out = out, .mean = mean, .rstd = rstd, .inp = inp, .w = w, .b = b, .N = N, .C = C, .eps = eps};
    prun(pool, ln_fwd_worker, &j, (long)N * C * 4);
}

/* Pass 1 (rows): dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)). */
static void ln_bwd_rows(int ith, int nth, void *arg) {
    ln_job *j = arg;
    long r0, r1;
    split(j->N, ith, nth, &r0, &r1);
    int C = j->C;
    for (long r = r0; r < r1; r++) {
        const float *x = j->inp + r * C, *dy = j->dout + r * C;
        float mu = j->mean[r], rs = j->rstd[r], a = 0.0f, bsum = 0.0f;
        for (int c = 0; c < C; c++) {
            float dn = dy[c] * j->w[c];
            a += dn;
            bsum += dn * (x[c] - mu) * rs;
        }
        a /= (float)C;
        bsum /= (float)C;
        float *dx = j->dinp + r * C;
        for (int c = 0; c < C; c++) {
            float nrm = (x[c] - mu) * rs;
            dx[c] += (dy[c] * j->w[c] - a - nrm * bsum) * rs;
        }
    }
}
/* Pass 2 (columns): dw[c] += sum_r dout * norm, db[c] += sum_r dout, rows in order. */
static void ln_bwd_cols(int ith, int nth, void *arg) {
    ln_job *j = arg;
    long c0, c1;
    split(j->C, ith, nth, &c0, &c1);
    int C = j->C;
    for (long r = 0; r < j->N; r++) {
        const float *x = j->inp + r * C, *dy = j->dout + r * C;
        float mu = j->mean[r], rs = j->rstd[r];
        for (long c = c0; c < c1; c++) {
            j->dw[c] += dy[c] * ((x[c] - mu) * rs);
            j->db[c] += dy[c];
        }
    }
}
static void layernorm_bwd(nx_pool *pool, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                          const float *mean, const float *rstd, const float *w, int N, int C) {
    ln_job j = {.dinp = dinp, .dw = dw, .db = db, .dout = dout, .inp = inp, .mean = (float *)mean,
                .rstd = (float *)rstd, .w = w, .N = N, .C = C};
    prun(pool, ln_bwd_rows, &j, (long)N * C * 6);
    prun(pool, ln_bwd_cols, &j, (long)N * C * 3);
}

typedef struct { float *db; const float *dout; int N, C; } colsum_job;
static void colsum_worker(int ith, int nth, void *arg) {
    colsum_job *j = arg;
    long c0, c1;
    split(j->C, ith, nth, &c0, &c1);
    for (long r = 0; r < j->N; r++) {
        const float *d = j->dout + r * j->C;
        for (long c = c0; c < c1; c++) j->db[c] += d[c];
    }
}
static void bias_bwd(nx_pool *pool, float *db, const float *dout, int N, int C) {
    colsum_job j = {db, dout, N, C};
    prun(pool, colsum_worker, &j, (long)N * C);
}

/* GELU variants and their derivatives. */
#define SQRT_2_OVER_PI 0.7978845608028654f
static inline float gelu_f(nx_act act, float x) {
    if (act == NX_ACT_GELU) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    float u = SQRT_2_OVER_PI * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}
static inline float gelu_grad(nx_act act, float x) {
    if (act == NX_ACT_GELU) {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
        return cdf + x * pdf;
    }
    float x2 = x * x, u = SQRT_2_OVER_PI * (x + 0.044715f * x2 * x), th = tanhf(u);
    float sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + 0.5f * x * sech2 * SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * x2);
}

typedef struct { float *out; const float *inp; float *d; long n; nx_act act; } gelu_job;
static void gelu_fwd_worker(int ith, int nth, void *arg) {
    gelu_job *j = arg;
    long a, b;
    split(j->n, ith, nth, &a, &b);
    for (long i = a; i < b; i++) j->out[i] = gelu_f(j->act, j->inp[i]);
}
static void gelu_bwd_worker(int ith, int nth, void *arg) {
    gelu_job *j = arg;
    long a, b;
    split(j->n, ith, nth, &a, &b);
    for (long i = a; i < b; i++) j->d[i] *= gelu_grad(j->act, j->inp[i]);
}

/* Rotary on the q and k parts of qkv [N=BT, 3C]; inverse = the transposed rotation. */
typedef struct { float *qkv; const float *cosb, *sinb; int N, T, NH, HS, R; int inverse; } rope_job;
static void rope_worker(int ith, int nth, void *arg) {
    rope_job *j = arg;
    long r0, r1;
    split(j->N, ith, nth, &r0, &r1);
    int half = j->R / 2;
    for (long r = r0; r < r1; r++) {
        int p = (int)(r % j->T);
        const float *cs = j->cosb + (long)p * half, *sn = j->sinb + (long)p * half;
        for (int h = 0; h < j->NH; h++) {
            for (int part = 0; part < 2; part++) {
                float *v = j->qkv + r * 3 * j->NH * j->HS + (long)h * 3 * j->HS + part * j->HS;
                for (int i = 0; i < half; i++) {
                    float x1 = v[i], x2 = v[i + half], c = cs[i], s = j->inverse ? -sn[i] : sn[i];
                    v[i] = x1 * c - x2 * s;
                    v[i + half] = x2 * c + x1 * s;
                }
            }
        }
    }
}

typedef struct {
    const float *qkv; float *att, *atty;
    const float *datty; float *dqkv, *dscr;
    float *kT, *vT;
    int B, T, NH, HS;
    bool bf16;   /* round P and dS where they enter a matmul (q, k, v, dY come rounded) */
} attn_job;

/* The probabilities of one (batch, head) as the P V and Pᵀ dY products read them: P itself,
 * or its bf16 rounding in scratch (the softmax backward needs P in fp32). */
static const float *probs_operand(const attn_job *j, const float *P, float *scratch) {
    if (!j->bf16) return P;
    long n = (long)j->T * j->T;
    for (long i = 0; i < n; i++) scratch[i] = nx__bf16_round(P[i]);
    return scratch;
}

/* dst[e*T + t] = src[t*ld + e]: one head's keys or values as a row-major [HS, T] matrix. */
static void head_transpose(const float *src, long ld, float *dst, int T, int HS) {
    for (int t = 0; t < T; t++)
        for (int e = 0; e < HS; e++) dst[(long)e * T + t] = src[(long)t * ld + e];
}

static void mm(int M, int N, int K, const float *A, long sam, long sak, const float *B, long ldb, float *C, long ldc) {
    nx_tgemm_args a = {.M = M, .N = N, .K = K, .A = A, .sam = sam, .sak = sak, .B = B, .ldb = ldb, .C = C, .ldc = ldc,
                       .accumulate = 0, .bias = NULL};
    nx__tgemm(NULL, &a, false);
}

/* Attention of one (batch, head) with the matmul kernel: S = Q Kᵀ, causal softmax in place,
 * Y = P V. The full T x T product is computed and the upper triangle masked, which wastes
 * half of S but runs at matmul speed; the masked probabilities are exact zeros, so P V
 * adds nothing for them. */
static void attn_fwd_fast(int ith, int nth, void *arg) {
    attn_job *j = arg;
    int T = j->T, NH = j->NH, HS = j->HS, C3 = 3 * NH * HS, C = NH * HS;
    float scale = 1.0f / sqrtf((float)HS);
    long u0, u1;
    split((long)j->B * NH, ith, nth, &u0, &u1);
    for (long u = u0; u < u1; u++) {
        int b = (int)(u / NH), h = (int)(u % NH);
        const float *q = j->qkv + (long)b * T * C3 + (long)h * 3 * HS, *k = q + HS, *v = q + 2 * HS;
        float *kT = j->kT + u * HS * T, *S = j->att + u * T * T;
        head_transpose(k, C3, kT, T, HS);
        mm(T, T, HS, q, C3, 1, kT, T, S, T);
        for (int t = 0; t < T; t++) {
            float *p = S + (long)t * T, mx = -INFINITY;
            for (int t2 = 0; t2 <= t; t2++) { p[t2] *= scale; mx = p[t2] > mx ? p[t2] : mx; }
            float sum = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) { p[t2] = expf(p[t2] - mx); sum += p[t2]; }
            float inv = 1.0f / sum;
            for (int t2 = 0; t2 <= t; t2++) p[t2] *= inv;
            for (int t2 = t + 1; t2 < T; t2++) p[t2] = 0.0f;
        }
        mm(T, HS, T, probs_operand(j, S, j->dscr + u * T * T), T, 1, v, C3, j->atty + (long)b * T * C + (long)h * HS, C);
    }
}

/* Backward of attn_fwd_fast: dP = dY Vᵀ, dS = P (dP - rowsum(P dP)) * scale,
 * dQ = dS K, dK = dSᵀ Q, dV = Pᵀ dY, written straight into dqkv. */
static void attn_bwd_fast(int ith, int nth, void *arg) {
    attn_job *j = arg;
    int T = j->T, NH = j->NH, HS = j->HS, C3 = 3 * NH * HS, C = NH * HS;
    float scale = 1.0f / sqrtf((float)HS);
    long u0, u1;
    split((long)j->B * NH, ith, nth, &u0, &u1);
    for (long u = u0; u < u1; u++) {
        int b = (int)(u / NH), h = (int)(u % NH);
        const float *q = j->qkv + (long)b * T * C3 + (long)h * 3 * HS, *k = q + HS, *v = q + 2 * HS;
        const float *P = j->att + u * T * T, *dY = j->datty + (long)b * T * C + (long)h * HS;
        float *dq = j->dqkv + (long)b * T * C3 + (long)h * 3 * HS, *dk = dq + HS, *dv = dq + 2 * HS;
        float *vT = j->vT + u * HS * T, *dS = j->dscr + u * T * T;
        head_transpose(v, C3, vT, T, HS);
        mm(T, T, HS, dY, C, 1, vT, T, dS, T);
        for (int t = 0; t < T; t++) {
            const float *p = P + (long)t * T;
            float *d = dS + (long)t * T, dot = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) dot += p[t2] * d[t2];
            for (int t2 = 0; t2 <= t; t2++) {
                float ds = p[t2] * (d[t2] - dot) * scale;
                d[t2] = j->bf16 ? nx__bf16_round(ds) : ds;
            }
            for (int t2 = t + 1; t2 < T; t2++) d[t2] = 0.0f;
        }
        mm(T, HS, T, dS, T, 1, k, C3, dq, C3);
        mm(T, HS, T, dS, 1, T, q, C3, dk, C3);
        /* dS is consumed: its scratch takes the rounded P. */
        mm(T, HS, T, probs_operand(j, P, dS), 1, T, dY, C, dv, C3);
    }
}

static void attn_fwd_worker(int ith, int nth, void *arg) {
    attn_job *j = arg;
    int T = j->T, NH = j->NH, HS = j->HS, C3 = 3 * NH * HS, C = NH * HS;
    float scale = 1.0f / sqrtf((float)HS);
    long u0, u1;
    split((long)j->B * NH, ith, nth, &u0, &u1);
    for (long u = u0; u < u1; u++) {
        int b = (int)(u / NH), h = (int)(u % NH);
        const float *base = j->qkv + (long)b * T * C3 + (long)h * 3 * HS;
        for (int t = 0; t < T; t++) {
            const float *q = base + (long)t * C3;
            float *p = j->att + (((long)b * NH + h) * T + t) * T;
            float mx = -INFINITY;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *k = base + (long)t2 * C3 + HS;
                float s = 0.0f;
                for (int e = 0; e < HS; e++) s += q[e] * k[e];
                s *= scale;
                p[t2] = s;
                if (s > mx) mx = s;
            }
            float sum = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) { p[t2] = expf(p[t2] - mx); sum += p[t2]; }
            float inv = 1.0f / sum;
            for (int t2 = 0; t2 <= t; t2++) p[t2] *= inv;
            for (int t2 = t + 1; t2 < T; t2++) p[t2] = 0.0f;
            float *o = j->atty + ((long)b * T + t) * C + (long)h * HS;
            for (int e = 0; e < HS; e++) o[e] = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *v = base + (long)t2 * C3 + 2 * HS;
                float pv = j->bf16 ? nx__bf16_round(p[t2]) : p[t2];
                for (int e = 0; e < HS; e++) o[e] += pv * v[e];
            }
        }
    }
}

static void attn_bwd_worker(int ith, int nth, void *arg) {
    attn_job *j = arg;
    int T = j->T, NH = j->NH, HS = j->HS, C3 = 3 * NH * HS, C = NH * HS;
    float scale = 1.0f / sqrtf((float)HS);
    long u0, u1;
    split((long)j->B * NH, ith, nth, &u0, &u1);
    for (long u = u0; u < u1; u++) {
        int b = (int)(u / NH), h = (int)(u % NH);
        const float *base = j->qkv + (long)b * T * C3 + (long)h * 3 * HS;
        float *dbase = j->dqkv + (long)b * T * C3 + (long)h * 3 * HS;
        for (int t = 0; t < T; t++) {
            float *d = dbase + (long)t * C3;
            for (int e = 0; e < 3 * HS; e++) d[e] = 0.0f;
        }
        for (int t = 0; t < T; t++) {
            const float *p = j->att + (((long)b * NH + h) * T + t) * T;
            float *dp = j->dscr + (((long)b * NH + h) * T + t) * T;
            const float *dy = j->datty + ((long)b * T + t) * C + (long)h * HS;
            float dot = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *v = base + (long)t2 * C3 + 2 * HS;
                float *dv = dbase + (long)t2 * C3 + 2 * HS;
                float s = 0.0f, pv = p[t2], pr = j->bf16 ? nx__bf16_round(pv) : pv;
                for (int e = 0; e < HS; e++) { s += dy[e] * v[e]; dv[e] += pr * dy[e]; }
                dp[t2] = s;
                dot += pv * s;
            }
            const float *q = base + (long)t * C3;
            float *dq = dbase + (long)t * C3;
            for (int t2 = 0; t2 <= t; t2++) {
                float ds = p[t2] * (dp[t2] - dot) * scale;
                if (j->bf16) ds = nx__bf16_round(ds);
                const float *k = base + (long)t2 * C3 + HS;
                float *dk = dbase + (long)t2 * C3 + HS;
                for (int e = 0; e < HS; e++) { dq[e] += ds * k[e]; dk[e] += ds * q[e]; }
            }
        }
    }
}

typedef struct {
    float *x; const float *a, *b, *c; long n;
} add_job;
/* x = a + b (+ c): HF adds mlp_output + attn_output + hidden_states in this order. */
static void add_worker(int ith, int nth, void *arg) {
    add_job *j = arg;
    long s, e;
    split(j->n, ith, nth, &s, &e);
    for (long i = s; i < e; i++) j->x[i] = j->c ? (j->a[i] + j->b[i]) + j->c[i] : j->a[i] + j->b[i];
}

typedef struct { nx_tmodel *m; const int32_t *tok; const float *dx; } emb_job;
static void emb_fwd_worker(int ith, int nth, void *arg) {
    emb_job *j = arg;
    nx_tmodel *m = j->m;
    long r0, r1;
    split((long)m->B * m->T, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++)
        memcpy(m->acts[0].x + r * m->C, W(m, m->t_emb) + (long)j->tok[r] * m->C, (size_t)m->C * sizeof(float));
}
static void emb_bwd_worker(int ith, int nth, void *arg) {
    emb_job *j = arg;
    nx_tmodel *m = j->m;
    long c0, c1;
    split(m->C, ith, nth, &c0, &c1);
    float *g = G(m, m->t_emb);
    for (long r = 0; r < (long)m->B * m->T; r++) {
        float *gr = g + (long)j->tok[r] * m->C;
        const float *d = j->dx + r * m->C;
        for (long c = c0; c < c1; c++) gr[c] += d[c];
    }
}

typedef struct {
    float *logits, *losses; const int32_t *targets; int rows, V; float dscale; int backward; bool use_ref;
    bool bf16;   /* round dlogits for the head's matmuls while the row is in cache */
} ce_job;

/* Softmax cross-entropy of one row (scalar oracle); with backward the row becomes
 * dlogits = (softmax - onehot) * dscale. Returns the row's loss (0 for an ignored target). */
static float ce_row_ref(float *lg, int V, int tg, float dscale, int backward) {
    float mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
    float sum = 0.0f;
    for (int v = 0; v < V; v++) sum += expf(lg[v] - mx);
    float loss = tg >= 0 ? mx + logf(sum) - lg[tg] : 0.0f;
    if (!backward) return loss;
    if (tg < 0) { memset(lg, 0, (size_t)V * sizeof(float)); return loss; }
    float inv = 1.0f / sum;
    for (int v = 0; v < V; v++) lg[v] = expf(lg[v] - mx) * inv * dscale;
    lg[tg] -= dscale;
    return loss;
}

#if defined(__x86_64__)
/* exp for x <= 0 (Cephes expf polynomial, ~1 ulp), 16 lanes; underflows to 0. */
__attribute__((target("avx512f"))) static inline __m512 exp_neg_avx512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.5f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

/* The same row in two passes over memory instead of three, exp vectorised: this is the
 * largest non-matmul cost of small models with a 50k vocabulary. */
__attribute__((target("avx512f"))) static float ce_row_avx512(float *lg, int V, int tg, float dscale, int backward) {
    __m512 vmx = _mm512_set1_ps(-INFINITY);
    int v = 0;
    for (; v + 16 <= V; v += 16) vmx = _mm512_max_ps(vmx, _mm512_loadu_ps(lg + v));
    float mx = _mm512_reduce_max_ps(vmx);
    for (; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
    float lt = tg >= 0 ? lg[tg] : 0.0f;
    __m512 vm = _mm512_set1_ps(mx), vs = _mm512_setzero_ps();
    for (v = 0; v + 16 <= V; v += 16) {
        __m512 e = exp_neg_avx512(_mm512_sub_ps(_mm512_loadu_ps(lg + v), vm));
        vs = _mm512_add_ps(vs, e);
        if (backward) _mm512_storeu_ps(lg + v, e);
    }
    if (v < V) {
        __mmask16 k = (__mmask16)((1u << (V - v)) - 1u);
        __m512 e = exp_neg_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, lg + v), vm));
        e = _mm512_maskz_mov_ps(k, e);
        vs = _mm512_add_ps(vs, e);
        if (backward) _mm512_mask_storeu_ps(lg + v, k, e);
    }
    float sum = _mm512_reduce_add_ps(vs);
    float loss = tg >= 0 ? mx + logf(sum) - lt : 0.0f;
    if (!backward) return loss;
    if (tg < 0) { memset(lg, 0, (size_t)V * sizeof(float)); return loss; }
    __m512 sc = _mm512_set1_ps((1.0f / sum) * dscale);
    for (v = 0; v + 16 <= V; v += 16) _mm512_storeu_ps(lg + v, _mm512_mul_ps(_mm512_loadu_ps(lg + v), sc));
    for (; v < V; v++) lg[v] *= (1.0f / sum) * dscale;
    lg[tg] -= dscale;
    return loss;
}
#endif

static bool has_avx512(void) {
#if defined(__x86_64__)
    static int cached = -1;
    if (cached < 0) { __builtin_cpu_init(); cached = __builtin_cpu_supports("avx512f") ? 1 : 0; }
    return cached == 1;
#else
    return false;
#endif
}

static float ce_row(const ce_job *j, float *lg, int tg, bool fast) {
#if defined(__x86_64__)
    if (fast) return ce_row_avx512(lg, j->V, tg, j->dscale, j->backward);
#endif
    (void)fast;
    return ce_row_ref(lg, j->V, tg, j->dscale, j->backward);
}

static void ce_worker(int ith, int nth, void *arg) {
    ce_job *j = arg;
    long r0, r1;
    split(j->rows, ith, nth, &r0, &r1);
    bool fast = !j->use_ref && has_avx512();
    for (long r = r0; r < r1; r++) {
        float *lg = j->logits + r * j->V;
        j->losses[r] = ce_row(j, lg, j->targets[r], fast);
        if (j->backward && j->bf16)
            for (int v = 0; v < j->V; v++) lg[v] = nx__bf16_round(lg[v]);
    }
}

static void ensure_wt(nx_tmodel *m, nx_pool *pool) {
    if (m->wt_valid) return;
    for (size_t i = 0; i < m->ntensors; i++) {
        const nx_tparam_info *t = &m->info[i];
        if (t->ndim != 2) continue;
        if ((long)i == m->t_emb && !m->cfg.tie_word_embeddings) continue;   /* lookup only */
        nx__transpose(pool, m->params + m->offset[i], m->wt + m->offset[i], (int)t->shape[0], (int)t->shape[1]);
        if (m->bf16) {
            float *wt = m->wt + m->offset[i];
            mm_operand(m, pool, wt, wt, (long)t->numel);
            mm_operand(m, pool, m->wr + m->offset[i], m->params + m->offset[i], (long)t->numel);
        }
    }
    m->wt_valid = true;
}

static nx_status check_ids(const nx_tmodel *m, const int32_t *tokens, const int32_t *targets, long *count) {
    long n = (long)m->B * m->T, cnt = 0;
    for (long i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->V)
            return nx__error(NX_ERR_RANGE, "token id %d at position %ld is outside the vocabulary [0, %d)", tokens[i], i,
                             m->V);
        if (targets[i] >= m->V)
            return nx__error(NX_ERR_RANGE, "target id %d at position %ld is outside the vocabulary [0, %d)", targets[i],
                             i, m->V);
        cnt += targets[i] >= 0;
    }
    *count = cnt;
    return NX_OK;
}

/* The transformer body: embeddings through the final LayerNorm. */
static void body_forward(nx_tmodel *m, nx_pool *pool, const int32_t *tokens) {
    int BT = m->B * m->T, C = m->C, I = m->I;
    float eps = m->cfg.layer_norm_eps;
    emb_job ej = {m, tokens, NULL};
    prun(pool, emb_fwd_worker, &ej, (long)m->B * m->T * m->C);
    for (int l = 0; l < m->L; l++) {
        layer_acts *a = &m->acts[l];
        long *w = m->lay[l];
        float *xnext = l + 1 < m->L ? m->acts[l + 1].x : m->xfinal;
        layernorm_fwd(pool, a->ln1, a->mean1, a->rstd1, a->x, W(m, w[W_LN1W]), W(m, w[W_LN1B]), BT, C, eps);
        mm_operand(m, pool, a->ln1, a->ln1, (long)BT * C);
        linear(m, pool, a->qkv, a->ln1, w[W_QKVW], w[W_QKVB], BT, C, 3 * C);
        if (m->R > 0) {
            rope_job rj = {a->qkv, m->cosb, m->sinb, BT, m->T, m->NH, m->HS, m->R, 0};
            prun(pool, rope_worker, &rj, (long)rj.N * rj.NH * rj.R * 6);
        }
        mm_operand(m, pool, a->qkv, a->qkv, (long)BT * 3 * C);
        attn_job aj = {.qkv = a->qkv, .att = a->att, .atty = a->atty, .dscr = m->dscr, .kT = m->kT, .B = m->B,
                       .T = m->T, .NH = m->NH, .HS = m->HS, .bf16 = m->bf16};
        prun(pool, m->use_ref ? attn_fwd_worker : attn_fwd_fast, &aj, (long)aj.B * aj.NH * aj.T * aj.T * aj.HS * 2);
        mm_operand(m, pool, a->atty, a->atty, (long)BT * C);
        linear(m, pool, m->tmp_a, a->atty, w[W_DW], w[W_DB], BT, C, C);   /* attn output */
        const float *mlp_in_x = a->x;
        if (!m->cfg.parallel_residual) {
            add_job hj = {a->h, m->tmp_a, a->x, NULL, (long)BT * C};
            prun(pool, add_worker, &hj, hj.n * 2);
            mlp_in_x = a->h;
        }
        layernorm_fwd(pool, a->ln2, a->mean2, a->rstd2, mlp_in_x, W(m, w[W_LN2W]), W(m, w[W_LN2B]), BT, C, eps);
        mm_operand(m, pool, a->ln2, a->ln2, (long)BT * C);
        linear(m, pool, a->fch, a->ln2, w[W_FC1W], w[W_FC1B], BT, C, I);
        gelu_job gj = {a->fcg, a->fch, NULL, (long)BT * I, m->cfg.act};
        prun(pool, gelu_fwd_worker, &gj, gj.n * 20);
        mm_operand(m, pool, a->fcg, a->fcg, (long)BT * I);
        linear(m, pool, m->tmp_b, a->fcg, w[W_FC2W], w[W_FC2B], BT, I, C);   /* mlp output */
        add_job xj = m->cfg.parallel_residual ? (add_job){xnext, m->tmp_b, m->tmp_a, a->x, (long)BT * C}
                                              : (add_job){xnext, m->tmp_b, a->h, NULL, (long)BT * C};
        prun(pool, add_worker, &xj, xj.n * 2);
    }
    layernorm_fwd(pool, m->lnf, m->meanf, m->rstdf, m->xfinal, W(m, m->t_lnfw), W(m, m->t_lnfb), BT, C, eps);
    mm_operand(m, pool, m->lnf, m->lnf, (long)BT * C);
}

/* LM head + cross-entropy in chunks of LOGIT_ROWS rows; with backward, also dWout and
 * d(lnf) into m->dln_a. Returns the summed loss (rows in order, double). */
static double head(nx_tmodel *m, nx_pool *pool, const int32_t *targets, float dscale, int backward) {
    int BT = m->B * m->T, C = m->C, V = m->V;
    for (int r0 = 0; r0 < BT; r0 += LOGIT_ROWS) {
        int rows = NX_MIN(LOGIT_ROWS, BT - r0);
        const float *x = m->lnf + (long)r0 * C;
        nx_tgemm_args a = {.M = rows, .N = V, .K = C, .A = x, .sam = C, .sak = 1, .B = WT(m, m->t_out), .ldb = V,
                           .C = m->logits, .ldc = V, .accumulate = 0, .bias = NULL};
        nx__tgemm(pool, &a, m->use_ref);
        ce_job cj = {m->logits, m->losses + r0, targets + r0, rows, V, dscale, backward, m->use_ref, m->bf16};
        prun(pool, ce_worker, &cj, (long)rows * V * 20);
        if (backward) linear_bwd(m, pool, m->dln_a + (long)r0 * C, m->logits, x, m->t_out, -1, NULL, rows, C, V);
    }
    double s = 0.0;
    for (int r = 0; r < BT; r++) s += m->losses[r];
    return s;
}

nx_status nx_tmodel_forward(nx_tmodel *m, nx_pool *pool, const int32_t *tokens, const int32_t *targets, float *loss) {
    long cnt = 0;
    NX_TRY(check_ids(m, tokens, targets, &cnt));
    ensure_wt(m, pool);
    body_forward(m, pool, tokens);
    double s = head(m, pool, targets, 0.0f, 0);
    *loss = cnt ? (float)(s / (double)cnt) : 0.0f;
    return NX_OK;
}

nx_status nx_tmodel_forward_backward(nx_tmodel *m, nx_pool *pool, const int32_t *tokens, const int32_t *targets,
                                     float grad_scale, float *loss) {
    long cnt = 0;
    NX_TRY(check_ids(m, tokens, targets, &cnt));
    ensure_wt(m, pool);
    body_forward(m, pool, tokens);
    int BT = m->B * m->T, C = m->C, I = m->I;
    float dscale = cnt ? grad_scale / (float)cnt : 0.0f;
    double s = head(m, pool, targets, dscale, 1);
    *loss = cnt ? (float)(s / (double)cnt) : 0.0f;

    /* final LayerNorm: dres = LNf_back(dlnf) */
    memset(m->dres, 0, (size_t)BT * C * sizeof(float));
    layernorm_bwd(pool, m->dres, G(m, m->t_lnfw), G(m, m->t_lnfb), m->dln_a, m->xfinal, m->meanf, m->rstdf,
                  W(m, m->t_lnfw), BT, C);
    /* The flat layout is embed_in, layers 0..L-1, final LN, embed_out: backward completes it
     * from the end, so "everything from offset lo on is final" describes its progress. */
    grad_ready(m, m->offset[m->t_lnfw]);
    for (int l = m->L - 1; l >= 0; l--) {
        layer_acts *a = &m->acts[l];
        long *w = m->lay[l];
        const float *mlp_in_x = m->cfg.parallel_residual ? a->x : a->h;
        /* MLP branch: d(mlp output) = dres */
        linear_bwd(m, pool, m->dfch, m->dres, a->fcg, w[W_FC2W], w[W_FC2B], m->tmp_a, BT, I, C);
        gelu_job gj = {NULL, a->fch, m->dfch, (long)BT * I, m->cfg.act};
        prun(pool, gelu_bwd_worker, &gj, gj.n * 20);
        linear_bwd(m, pool, m->dln_b, m->dfch, a->ln2, w[W_FC1W], w[W_FC1B], m->dfch, BT, C, I);
        if (!m->cfg.parallel_residual) {
            /* dh = dres + LN2_back: the attention branch then sees dh. */
            layernorm_bwd(pool, m->dres, G(m, w[W_LN2W]), G(m, w[W_LN2B]), m->dln_b, mlp_in_x, a->mean2, a->rstd2,
                          W(m, w[W_LN2W]), BT, C);
        }
        /* attention branch: d(attn output) = dres */
        linear_bwd(m, pool, m->datty, m->dres, a->atty, w[W_DW], w[W_DB], m->tmp_a, BT, C, C);
        mm_operand(m, pool, m->datty, m->datty, (long)BT * C);
        attn_job aj = {.qkv = a->qkv, .att = a->att, .datty = m->datty, .dqkv = m->dqkv, .dscr = m->dscr,
                       .vT = m->vT, .B = m->B, .T = m->T, .NH = m->NH, .HS = m->HS, .bf16 = m->bf16};
        prun(pool, m->use_ref ? attn_bwd_worker : attn_bwd_fast, &aj, (long)aj.B * aj.NH * aj.T * aj.T * aj.HS * 4);
        if (m->R > 0) {
            rope_job rj = {m->dqkv, m->cosb, m->sinb, BT, m->T, m->NH, m->HS, m->R, 1};
            prun(pool, rope_worker, &rj, (long)rj.N * rj.NH * rj.R * 6);
        }
        linear_bwd(m, pool, m->dln_a, m->dqkv, a->ln1, w[W_QKVW], w[W_QKVB], m->dqkv, BT, C, 3 * C);
        if (m->cfg.parallel_residual)
            layernorm_bwd(pool, m->dres, G(m, w[W_LN2W]), G(m, w[W_LN2B]), m->dln_b, a->x, a->mean2, a->rstd2,
                          W(m, w[W_LN2W]), BT, C);
        layernorm_bwd(pool, m->dres, G(m, w[W_LN1W]), G(m, w[W_LN1B]), m->dln_a, a->x, a->mean1, a->rstd1,
                      W(m, w[W_LN1W]), BT, C);
        grad_ready(m, m->offset[w[W_LN1W]]);
    }
    emb_job ej = {m, tokens, m->dres};
    prun(pool, emb_bwd_worker, &ej, (long)m->B * m->T * m->C);
    grad_ready(m, 0);
    return NX_OK;
}

/* ---- optimizer -------------------------------------------------------------------------- */
typedef struct {
    nx_tmodel *m; double *partials; long c0, c1;
    const nx_adamw_config *opt; double lr; float clip_coef; double bc1, bc2_sqrt;
    size_t lo, hi; float *am, *av;   /* the updated range; moments of element i at am[i - lo] */
} opt_job;

/* Sum of squares over fixed chunks of the flat gradient (chunking independent of threads). */
static void sumsq_worker(int ith, int nth, void *arg) {
    opt_job *j = arg;
    long c0, c1;
    split(j->c1 - j->c0, ith, nth, &c0, &c1);
    for (long c = j->c0 + c0; c < j->c0 + c1; c++) {
        size_t s = (size_t)c * NORM_CHUNK, e = NX_MIN(s + NORM_CHUNK, j->m->nparams);
        double acc = 0.0;
        for (size_t i = s; i < e; i++) acc += (double)j->m->grads[i] * j->m->grads[i];
        j->partials[c] = acc;
    }
}

static void adamw_worker(int ith, int nth, void *arg) {
    opt_job *j = arg;
    nx_tmodel *m = j->m;
    const nx_adamw_config *o = j->opt;
    long s0, s1;
    split((long)(j->hi - j->lo), ith, nth, &s0, &s1);
    s0 += (long)j->lo;
    s1 += (long)j->lo;
    float *am = j->am, *av = j->av;   /* element i's moments at [i - lo] */
    long lo = (long)j->lo;
    /* Scalars are formed in double and rounded once, as torch does with Python floats. */
    float one_m_b1 = (float)(1.0 - o->beta1), b2 = (float)o->beta2, one_m_b2 = (float)(1.0 - o->beta2);
    float step_size = (float)(j->lr / j->bc1), bc2s = (float)j->bc2_sqrt, eps = (float)o->eps;
    for (size_t ti = 0; ti < m->ntensors; ti++) {
        long a = (long)m->offset[ti], b = a + (long)m->info[ti].numel;
        if (b <= s0 || a >= s1) continue;
        a = NX_MAX(a, s0);
        b = NX_MIN(b, s1);
        double wd = m->info[ti].decay ? o->weight_decay : 0.0;
        float decay_mul = (float)(1.0 - j->lr * wd);
        for (long i = a; i < b; i++) {
            float g = m->grads[i] * j->clip_coef;
            float p = m->params[i] * decay_mul;
            /* torch: exp_avg.lerp_(grad, 1 - beta1) = m + (1 - beta1) * (g - m) */
            float mm = am[i - lo] + one_m_b1 * (g - am[i - lo]);
            float vv = av[i - lo] * b2 + one_m_b2 * g * g;
            float denom = sqrtf(vv) / bc2s + eps;
            am[i - lo] = mm;
            av[i - lo] = vv;
            m->params[i] = p - step_size * (mm / denom);
        }
    }
}

void nx__tmodel_grad_sumsq(nx_tmodel *m, nx_pool *pool, long c0, long c1, double *partials) {
    opt_job j = {.m = m, .partials = partials, .c0 = c0, .c1 = c1};
    prun(pool, sumsq_worker, &j, (long)NX_MIN((size_t)(c1 - c0) * NORM_CHUNK, m->nparams) * 2);
}

float nx__adamw_clip_coef(const nx_adamw_config *opt, float norm) {
    if (opt->clip_grad > 0.0f) {
        float coef = (float)(opt->clip_grad / ((double)norm + 1e-6));
        if (coef < 1.0f) return coef;
    }
    return 1.0f;
}

void nx__tmodel_adamw_update(nx_tmodel *m, nx_pool *pool, const nx_adamw_config *opt, double lr, float clip_coef,
                             size_t lo, size_t hi, float *am, float *av) {
    m->step++;
    opt_job j = {.m = m, .opt = opt, .lr = lr, .clip_coef = clip_coef, .lo = lo, .hi = hi, .am = am, .av = av};
    j.bc1 = 1.0 - pow((double)opt->beta1, (double)m->step);
    j.bc2_sqrt = sqrt(1.0 - pow((double)opt->beta2, (double)m->step));
    prun(pool, adamw_worker, &j, (long)(hi - lo) * 15);
    m->wt_valid = false;
}

nx_status nx_tmodel_adamw_step(nx_tmodel *m, nx_pool *pool, const nx_adamw_config *opt, double lr, float *grad_norm) {
    if (!ensure_moments(m)) return NX_ERR_NOMEM;
    long nchunks = (long)((m->nparams + NORM_CHUNK - 1) / NORM_CHUNK);
    nx__tmodel_grad_sumsq(m, pool, 0, nchunks, m->partials);
    double ss = 0.0;
    for (long c = 0; c < nchunks; c++) ss += m->partials[c];
    float norm = (float)sqrt(ss);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm)) return nx__error(NX_ERR_RANGE, "gradient norm is %g at step %ld: update skipped", norm, m->step + 1);
    nx__tmodel_adamw_update(m, pool, opt, lr, nx__adamw_clip_coef(opt, norm), 0, m->nparams, m->adam_m, m->adam_v);
    return NX_OK;
}

/* ---- LR schedule ------------------------------------------------------------------------- */
double nx_lr_at(const nx_lr_schedule *s, long it) {
    if (s->warmup_iters > 0 && it <= s->warmup_iters) return s->lr * (double)it / (double)s->warmup_iters;
    if (s->decay == NX_LR_CONSTANT) return s->lr;
    if (it >= s->train_iters) return s->min_lr;
    double frac = (double)(it - s->warmup_iters) / (double)(s->train_iters - s->warmup_iters);
    double lr = s->lr, mn = s->min_lr;
    if (s->decay == NX_LR_LINEAR) return lr - (lr - mn) * frac;
    return mn + (lr - mn) / 2.0 * (1.0 + cos(3.14159265358979323846 * frac));
}
