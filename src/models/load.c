/*
 * load.c - building an nx_model: config validation, the weights (matrices in their run type,
 * used in place from the mapped checkpoint where possible; small tensors in one fp32 block),
 * reading each family's tensor names from a checkpoint, the rotary tables, random models of a
 * given shape, and presets of released shapes.
 *
 * Layout decisions made once here so the forward pass is one code path:
 *  - every matrix is row-major [OUT][IN] in the run type (kernels.h nx_wmat), as nn.Linear and
 *    `neox quantize` store it. A tensor whose file type is the run type (and that is aligned for
 *    it) is used in place: zero copy, and its pages are only resident once read. Anything else
 *    (another type, .bin storages that are not, J/Neo's separate q/k/v, interleaved blocks
 *    the kernels in use do not read) is converted a row at a time into one arena, so no fp32
 *    copy of a whole matrix ever exists;
 *  - q, k and v form one [3H][H] matrix in NeoX's head-interleaved row order [NH][q|k|v][HS],
 *    so a NeoX query_key_value is used as stored and a single matmul yields q|k|v per token;
 *  - the input embedding is used in place (F32/F16/BF16) or copied to fp32 once; a tied model
 *    looks its rows up in the head; a missing lm_head falls back to wte only when the config
 *    says the embeddings are tied (GPT-Neo checkpoints omit the duplicate).
 */
#include "io/io.h"
#include "models/models.h"

#include <math.h>
#include <stdarg.h>
#include <strings.h>

static nx_kact map_act(nx_act a) {
    switch (a) {
    case NX_ACT_GELU: return NX_KACT_GELU;
    case NX_ACT_GELU_TANH: return NX_KACT_GELU_TANH;
    case NX_ACT_GELU_FAST: return NX_KACT_GELU_FAST;
    case NX_ACT_RELU: return NX_KACT_RELU;
    case NX_ACT_SILU: return NX_KACT_SILU;
    case NX_ACT_QUICK_GELU: return NX_KACT_QUICK_GELU;
    }
    return NX_KACT_GELU;
}

nx_status nx__model_init_shape(nx_model *m, const nx_model_config *cfg) {
    m->cfg = *cfg;
    const char *mt = cfg->model_type[0] ? cfg->model_type : nx_arch_name(cfg->arch);
    if (cfg->arch != NX_ARCH_GPT_NEOX && cfg->arch != NX_ARCH_GPTJ && cfg->arch != NX_ARCH_GPT_NEO)
        return nx__error(NX_ERR_UNSUPPORTED, "config: unknown architecture %d", (int)cfg->arch);
    if (cfg->hidden_size <= 0 || cfg->n_head <= 0 || cfg->hidden_size % cfg->n_head != 0)
        return nx__error(NX_ERR_FORMAT, "%s config: hidden_size %d must be a positive multiple of n_head %d", mt,
                         cfg->hidden_size, cfg->n_head);
    if (cfg->n_layer <= 0 || cfg->n_layer > NX_MAX_LAYERS)
        return nx__error(NX_ERR_FORMAT, "%s config: n_layer %d outside [1, %d]", mt, cfg->n_layer, NX_MAX_LAYERS);
    if (cfg->vocab_size <= 0 || cfg->intermediate_size <= 0 || cfg->max_position_embeddings <= 0)
        return nx__error(NX_ERR_FORMAT, "%s config: vocab_size %d, intermediate_size %d, max_position_embeddings %d must be > 0",
                         mt, cfg->vocab_size, cfg->intermediate_size, cfg->max_position_embeddings);
    /* Keep every index product well inside int/size_t arithmetic. */
    if (cfg->hidden_size > (1 << 16) || cfg->intermediate_size > (1 << 18) || cfg->vocab_size > (1 << 22) ||
        cfg->max_position_embeddings > (1 << 20))
        return nx__error(NX_ERR_RANGE, "%s config: dimensions too large (hidden %d, inner %d, vocab %d, positions %d)",
                         mt, cfg->hidden_size, cfg->intermediate_size, cfg->vocab_size, cfg->max_position_embeddings);
    m->H = cfg->hidden_size;
    m->NH = cfg->n_head;
    m->HS = m->H / m->NH;
    m->I = cfg->intermediate_size;
    m->V = cfg->vocab_size;
    m->L = cfg->n_layer;
    m->maxpos = cfg->max_position_embeddings;
    m->act = map_act(cfg->act);
    m->window = 0;
    switch (cfg->arch) {
    case NX_ARCH_GPT_NEOX:
        m->rot = cfg->rotary_dim > 0 ? cfg->rotary_dim : (int)((double)m->HS * (double)cfg->rotary_pct);
        m->rot_interleaved = false;
        m->parallel = cfg->parallel_residual;
        m->shared_ln = false;
        m->attn_scale = (float)(1.0 / sqrt((double)m->HS));
        break;
    case NX_ARCH_GPTJ:
        m->rot = cfg->rotary_dim > 0 ? cfg->rotary_dim : m->HS;
        m->rot_interleaved = true;
        m->parallel = true;
        m->shared_ln = true;
        m->attn_scale = (float)(1.0 / sqrt((double)m->HS));
        break;
    case NX_ARCH_GPT_NEO:
        m->rot = 0;
        m->parallel = false;
        m->shared_ln = false;
        m->attn_scale = 1.0f;   /* GPT-Neo does not scale its scores */
        m->window = cfg->window_size;
        for (int l = 0; l < m->L; l++)
            if (cfg->layer_is_local[l] && cfg->window_size <= 0)
                return nx__error(NX_ERR_FORMAT, "%s config: layer %d is local but window_size is %d", mt, l,
                                 cfg->window_size);
        break;
    }
    if (m->rot < 0 || m->rot > m->HS || m->rot % 2 != 0)
        return nx__error(NX_ERR_FORMAT, "%s config: rotary dims %d must be even and <= head size %d", mt, m->rot, m->HS);
    if ((size_t)m->maxpos * (size_t)m->rot > ((size_t)1 << 27))
        return nx__error(NX_ERR_RANGE, "%s config: max_position_embeddings %d x rotary dims %d is too large", mt,
                         m->maxpos, m->rot);
    if (m->rot > 0 && !(cfg->rope_theta > 0.0f))
        return nx__error(NX_ERR_FORMAT, "%s config: rope_theta %g must be > 0", mt, (double)cfg->rope_theta);
    return NX_OK;
}

/* Computes the angles as HF does, in fp32: inv_freq[j] = 1 / base^(float(2j)/rot) (linear
 * scaling divides it by the factor), theta = float(p) * inv_freq[j]; cos/sin of the fp32
 * theta are then evaluated in double and rounded, i.e. correctly rounded tables. Dynamic NTK
 * scaling only changes anything past max_position_embeddings, which we never reach. */
static void fill_rope(nx_model *m) {
    int half = m->rot / 2;
    float base = m->cfg.arch == NX_ARCH_GPTJ ? 10000.0f : m->cfg.rope_theta;
    float scale = (m->cfg.rope_scaling_type == 1 && m->cfg.rope_scaling_factor > 0.0f) ? m->cfg.rope_scaling_factor
                                                                                       : 1.0f;
    for (int j = 0; j < half; j++) {
        float e = (float)(2 * j) / (float)m->rot;
        float inv = 1.0f / powf(base, e);
        inv = inv / scale;
        for (int p = 0; p < m->maxpos; p++) {
            float th = (float)p * inv;
            m->rope_cos[(size_t)p * half + j] = (float)cos((double)th);
            m->rope_sin[(size_t)p * half + j] = (float)sin((double)th);
        }
    }
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static nx_status check_run_type(const nx_model *m, nx_dtype t) {
    if (t != NX_F32 && t != NX_BF16 && t != NX_F16 && t != NX_Q8_0 && t != NX_Q4_0)
        return nx__error(NX_ERR_UNSUPPORTED, "run dtype %s is not supported (F32, BF16, F16, Q8_0, Q4_0)",
                         nx_dtype_name(t));
    if ((t == NX_Q8_0 || t == NX_Q4_0) && (m->H % NX_QBLOCK || m->I % NX_QBLOCK))
        return nx__error(NX_ERR_UNSUPPORTED, "%s needs hidden_size (%d) and intermediate_size (%d) to be multiples of 32",
                         nx_dtype_name(t), m->H, m->I);
    return NX_OK;
}

/* Bytes of all matrices in run type t, each starting 64-byte aligned. */
static size_t wblock_bytes(const nx_model *m, nx_dtype t) {
    int H = m->H, I = m->I;
    size_t per = align64(nx__wmat_bytes(t, 3 * H, H)) + align64(nx__wmat_bytes(t, H, H)) +
                 align64(nx__wmat_bytes(t, I, H)) + align64(nx__wmat_bytes(t, H, I));
    return align64(nx__wmat_bytes(t, m->V, H)) + per * (size_t)m->L;
}

/* Number of weight floats the config implies (the rotary tables excluded). */
static size_t param_floats(const nx_model *m, bool head_tied) {
    const nx_model_config *c = &m->cfg;
    size_t H = (size_t)m->H, I = (size_t)m->I, V = (size_t)m->V;
    bool neox = c->arch == NX_ARCH_GPT_NEOX, j = c->arch == NX_ARCH_GPTJ, neo = c->arch == NX_ARCH_GPT_NEO;
    bool qkv_bias = neox && c->attention_bias;
    bool o_bias = (neox && c->attention_bias) || neo;
    size_t per_layer = 2 * H + (j ? 0 : 2 * H) + 3 * H * H + (qkv_bias ? 3 * H : 0) + H * H + (o_bias ? H : 0) +
                       I * H + I + H * I + H;
    return V * H + (neo ? (size_t)m->maxpos * H : 0) + 2 * H + (head_tied ? 0 : V * H) + (j ? V : 0) +
           per_layer * (size_t)m->L;
}

nx_status nx__model_alloc(nx_model *m, nx_dtype wt) {
    const nx_model_config *c = &m->cfg;
    size_t H = (size_t)m->H, I = (size_t)m->I, V = (size_t)m->V;
    bool neox = c->arch == NX_ARCH_GPT_NEOX, j = c->arch == NX_ARCH_GPTJ, neo = c->arch == NX_ARCH_GPT_NEO;
    bool qkv_bias = neox && c->attention_bias;
    bool o_bias = (neox && c->attention_bias) || neo;
    NX_TRY(check_run_type(m, wt));
    size_t per_layer = 2 * H + (j ? 0 : 2 * H) + (qkv_bias ? 3 * H : 0) + (o_bias ? H : 0) + I + H;
    size_t rope = (size_t)m->maxpos * (size_t)(m->rot / 2) * 2;
    size_t total = (neo ? (size_t)m->maxpos * H : 0) + 2 * H + (j ? V : 0) + per_layer * (size_t)m->L + rope;
    size_t bytes;
    if (!nx__mul_ok(total, sizeof(float), &bytes)) return nx__error(NX_ERR_RANGE, "model too large");
    m->block = nx__malloc_huge(bytes);
    m->layers = nx__calloc((size_t)m->L, sizeof(nx_layer));
    m->wblock_bytes = wblock_bytes(m, wt);
    /* Reserved for every matrix; only what the loader converts is ever written (and resident). */
    m->wblock = nx__malloc_huge(m->wblock_bytes);
    if (!m->block || !m->layers || !m->wblock)
        return nx__error(NX_ERR_NOMEM, "out of memory allocating %.1f MiB of weights",
                         (double)(bytes + m->wblock_bytes) / 1048576.0);
    m->block_floats = total;
    float *p = m->block;
#define TAKE(n) (p += (n), p - (n))
    m->wpe = neo ? TAKE((size_t)m->maxpos * H) : NULL;
    m->lnf_w = TAKE(H);
    m->lnf_b = TAKE(H);
    m->head_b = j ? TAKE(V) : NULL;
    for (int l = 0; l < m->L; l++) {
        nx_layer *ly = &m->layers[l];
        ly->ln1_w = TAKE(H);
        ly->ln1_b = TAKE(H);
        ly->ln2_w = j ? NULL : TAKE(H);
        ly->ln2_b = j ? NULL : TAKE(H);
        ly->bqkv = qkv_bias ? TAKE(3 * H) : NULL;
        ly->bo = o_bias ? TAKE(H) : NULL;
        ly->b1 = TAKE(I);
        ly->b2 = TAKE(H);
        ly->local = neo && c->layer_is_local[l];
    }
    m->rope_cos = TAKE((size_t)m->maxpos * (size_t)(m->rot / 2));
    m->rope_sin = TAKE((size_t)m->maxpos * (size_t)(m->rot / 2));
#undef TAKE
    NX_ASSERT((size_t)(p - m->block) == total);
    m->wtype = wt;
    if (m->rot) fill_rope(m);
    return NX_OK;
}

uint8_t *nx__model_take_mat(nx_model *m, int OUT, int IN) {
    size_t n = align64(nx__wmat_bytes(m->wtype, OUT, IN));
    NX_ASSERT(m->wblock_used + n <= m->wblock_bytes);
    m->wblock_used += n;
    return m->wblock + m->wblock_used - n;
}

void nx_model_free(nx_model *m) {
    if (!m) return;
    nx__free_aligned(m->block);
    nx__free_aligned(m->wblock);
    nx__free_aligned(m->wte_copy);
    nx_tensorset_free(m->ts);
    nx__free(m->layers);
    nx__free(m);
}

/* ---- run types ----------------------------------------------------------------------------------- */

/* Row o of src converted to the model's run type at dst (one row of nx__row_bytes bytes). */
static void store_row(nx_dtype t, uint8_t *dst, const float *row, int IN) {
    switch (t) {
    case NX_F32: memcpy(dst, row, (size_t)IN * sizeof(float)); break;
    case NX_BF16:   /* the inline conversion: this loop runs over every weight of the model */
        for (int k = 0; k < IN; k++) ((uint16_t *)dst)[k] = nx__f32_to_bf16(row[k]);
        break;
    case NX_F16:
        for (int k = 0; k < IN; k++) ((uint16_t *)dst)[k] = nx_f32_to_f16(row[k]);
        break;
    case NX_Q8_0: nx__quantize_row_q8_0((nx_block_q8_0 *)dst, row, IN); break;
    default: nx__quantize_row_q4_0((nx_block_q4_0 *)dst, row, IN); break;
    }
}

static void convert_mat(nx_model *m, nx_wmat *W, int OUT, int IN, float *row) {
    uint8_t *dst = nx__model_take_mat(m, OUT, IN);
    size_t rb = nx__row_bytes(m->wtype, IN);
    for (int o = 0; o < OUT; o++) {
        nx__wmat_row(W, IN, o, row);
        store_row(m->wtype, dst + (size_t)o * rb, row, IN);
    }
    *W = (nx_wmat){m->wtype, dst, false};
}

/* Block matrices converted at load into the interleaved layout (kernels.h nx__x8_block) when
 * the kernels in use read it: decode then streams each group of 8 rows as one run. Matrices
 * used in place keep the file's layout, and a head tied to the embedding stays in row order (its
 * rows are looked up one at a time). Without memory for the 8-row scratch the rows stay as
 * they are: only speed depends on it. */
static void interleave_mat(const nx_model *m, const nx_kernel_vt *vt, nx_wmat *W, int OUT, int IN, uint8_t *tmp) {
    uint8_t *d = (uint8_t *)W->data;
    bool converted = d >= m->wblock && d < m->wblock + m->wblock_used;
    if (!converted || W->x8 || !nx__x8_eligible(vt, W->type, OUT, IN)) return;
    nx__x8_interleave(d, W->type, OUT, IN, tmp);
    W->x8 = true;
}

static void interleave_blocks(nx_model *m) {
    const nx_kernel_vt *vt = nx__kernels();
    if ((m->wtype != NX_Q8_0 && m->wtype != NX_Q4_0) || !m->wblock) return;
    uint8_t *tmp = nx__malloc(8 * nx__row_bytes(m->wtype, NX_MAX(m->H, m->I)));
    if (!tmp) return;
    if (m->Whead.data != m->Wte.data) interleave_mat(m, vt, &m->Whead, m->V, m->H, tmp);
    for (int l = 0; l < m->L; l++) {
        nx_layer *ly = &m->layers[l];
        interleave_mat(m, vt, &ly->Wqkv, 3 * m->H, m->H, tmp);
        interleave_mat(m, vt, &ly->Wo, m->H, m->H, tmp);
        interleave_mat(m, vt, &ly->W1, m->I, m->H, tmp);
        interleave_mat(m, vt, &ly->W2, m->H, m->I, tmp);
    }
    nx__free(tmp);
}

nx_status nx__model_convert(nx_model *m, nx_dtype t) {
    if (t == NX_DTYPE_INVALID || t == NX_F32) return NX_OK;
    NX_TRY(check_run_type(m, t));
    if (m->wtype != NX_F32)
        return nx__error(NX_ERR_INVALID_ARG, "model weights are already %s; only an F32 model can be converted",
                         nx_dtype_name(m->wtype));
    int H = m->H, I = m->I;
    size_t bytes = wblock_bytes(m, t);
    uint8_t *old = m->wblock;
    float *row = nx__malloc((size_t)NX_MAX(H, I) * sizeof(float));
    m->wblock = nx__malloc_huge(bytes);
    if (!m->wblock || !row) {
        nx__free_aligned(m->wblock);
        nx__free(row);
        m->wblock = old;
        return nx__error(NX_ERR_NOMEM, "out of memory converting the weights to %s (%.1f MiB)", nx_dtype_name(t),
                         (double)bytes / 1048576.0);
    }
    m->wblock_bytes = bytes;
    m->wblock_used = 0;
    m->wtype = t;
    /* A tied model looks its embedding rows up in the head; an untied one keeps its own. */
    bool tied = m->Wte.data == m->Whead.data;
    convert_mat(m, &m->Whead, m->V, H, row);
    if (tied) m->Wte = m->Whead;
    for (int l = 0; l < m->L; l++) {
        nx_layer *ly = &m->layers[l];
        convert_mat(m, &ly->Wqkv, 3 * H, H, row);
        convert_mat(m, &ly->Wo, H, H, row);
        convert_mat(m, &ly->W1, I, H, row);
        convert_mat(m, &ly->W2, H, I, row);
    }
    nx__free(row);
    nx__free_aligned(old);
    interleave_blocks(m);
    return NX_OK;
}

nx_status nx_model_convert(nx_model *m, nx_dtype dtype) {
    if (!m) return nx__error(NX_ERR_INVALID_ARG, "nx_model_convert: NULL model");
    return nx__model_convert(m, dtype);
}

nx_dtype nx_model_weight_dtype(const nx_model *m) { return m->wtype; }

nx_dtype nx_run_dtype_from_name(const char *name) {
    static const struct {
        const char *name;
        nx_dtype t;
    } k[] = {{"f32", NX_F32},   {"fp32", NX_F32},   {"bf16", NX_BF16}, {"f16", NX_F16},
             {"fp16", NX_F16},  {"q8", NX_Q8_0},    {"q8_0", NX_Q8_0}, {"q4", NX_Q4_0},
             {"q4_0", NX_Q4_0}};
    if (!name) return NX_DTYPE_INVALID;
    for (size_t i = 0; i < NX_ARRAY_LEN(k); i++)
        if (!strcasecmp(name, k[i].name)) return k[i].t;
    return NX_DTYPE_INVALID;
}

/* Bytes of the input embedding when it is a tensor of its own (0 when tied to the head). */
static size_t wte_bytes(const nx_model *m) {
    return m->Wte.data == m->Whead.data ? 0 : nx__wmat_bytes(m->Wte.type, m->V, m->H);
}

size_t nx_model_decode_bytes(const nx_model *m) {
    /* a token reads one row of the input embedding and of the position table */
    size_t skip = wte_bytes(m) + (m->wpe ? (size_t)m->maxpos * (size_t)m->H * sizeof(float) : 0);
    return nx_model_weight_bytes(m) - skip;
}

const char *nx_kernels_name(void) { return nx__kernels()->name; }

const nx_model_config *nx_model_get_config(const nx_model *m) { return &m->cfg; }

size_t nx_model_weight_bytes(const nx_model *m) {
    size_t rope = (size_t)m->maxpos * (size_t)(m->rot / 2) * 2;
    size_t per = nx__wmat_bytes(m->wtype, 3 * m->H, m->H) + nx__wmat_bytes(m->wtype, m->H, m->H) +
                 nx__wmat_bytes(m->wtype, m->I, m->H) + nx__wmat_bytes(m->wtype, m->H, m->I);
    return (m->block_floats - rope) * sizeof(float) + nx__wmat_bytes(m->wtype, m->V, m->H) + per * (size_t)m->L +
           wte_bytes(m);
}

size_t nx_model_mapped_bytes(const nx_model *m) { return m->mapped_bytes; }

size_t nx_model_interleaved_bytes(const nx_model *m) {
    size_t n = m->Whead.x8 ? nx__wmat_bytes(m->wtype, m->V, m->H) : 0;
    for (int l = 0; l < m->L; l++) {
        const nx_layer *ly = &m->layers[l];
        n += ly->Wqkv.x8 ? nx__wmat_bytes(m->wtype, 3 * m->H, m->H) : 0;
        n += ly->Wo.x8 ? nx__wmat_bytes(m->wtype, m->H, m->H) : 0;
        n += ly->W1.x8 ? nx__wmat_bytes(m->wtype, m->I, m->H) : 0;
        n += ly->W2.x8 ? nx__wmat_bytes(m->wtype, m->H, m->I) : 0;
    }
    return n;
}

/* ---- reading a checkpoint --------------------------------------------------------------------- */

typedef struct {
    const nx_tensorset *ts;
    const char *dir;
    const nx_tensor_info **used;   /* tensors read so far (to find unexpected ones) */
    size_t n_used, cap_used;
} reader;

static const nx_tensor_info *find(const reader *r, const char *name) { return nx_tensorset_find(r->ts, name); }
static const char *head_name(const reader *r, nx_arch a);

static const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

/* The block type of a U8 tensor written by nx_model_quantize: "__metadata__" key
 * "neox.quant.<name>" = "Q8_0" or "Q4_0", row-major blocks, or NX__Q8_0_X8_TAG or
 * NX__Q4_0_X8_TAG, the interleaved layout (*x8 set; docs/QUANT.md); NX_DTYPE_INVALID otherwise. */
static nx_dtype tensor_qtype(const nx_tensorset *ts, const nx_tensor_info *t, bool *x8) {
    if (x8) *x8 = false;
    if (t->dtype != NX_U8) return NX_DTYPE_INVALID;
    char key[320];
    snprintf(key, sizeof key, "neox.quant.%s", t->name);
    const char *v = nx_tensorset_metadata(ts, key);
    if (!v) return NX_DTYPE_INVALID;
    if (!strcmp(v, NX__Q4_0_X8_TAG) || !strcmp(v, NX__Q8_0_X8_TAG)) {
        if (x8) *x8 = true;
        return !strcmp(v, NX__Q8_0_X8_TAG) ? NX_Q8_0 : NX_Q4_0;
    }
    nx_dtype q = nx_dtype_from_name(v);
    return q == NX_Q8_0 || q == NX_Q4_0 ? q : NX_DTYPE_INVALID;
}

/* Finds name, checks its shape against (d0[, d1]) and its dtype, and marks it used. */
static nx_status checked(reader *r, const char *name, int ndim, int64_t d0, int64_t d1, const nx_tensor_info **out) {
    const nx_tensor_info *t = find(r, name);
    if (!t) return nx__error(NX_ERR_NOT_FOUND, "%s: tensor '%s' is missing", r->dir, name);
    if (r->n_used == r->cap_used) {
        size_t nc = r->cap_used ? 2 * r->cap_used : 64;
        const nx_tensor_info **u = nx__realloc(r->used, nc * sizeof *u);
        if (!u) return nx__error(NX_ERR_NOMEM, "out of memory");
        r->used = u;
        r->cap_used = nc;
    }
    r->used[r->n_used++] = t;
    int64_t want[2] = {d0, d1};
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char a[96], b[96];
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s' has shape %s, the config implies %s", t->file ? t->file : r->dir,
                         name, shape_str(t->shape, t->ndim, a, sizeof a), shape_str(want, ndim, b, sizeof b));
    }
    if (t->dtype != NX_F32 && t->dtype != NX_F16 && t->dtype != NX_BF16 && t->dtype != NX_F64 &&
        (ndim != 2 || tensor_qtype(r->ts, t, NULL) == NX_DTYPE_INVALID))
        return nx__error(NX_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, expected a float type (F32, F16, BF16, F64)",
                         t->file ? t->file : r->dir, name, nx_dtype_name(t->dtype));
    *out = t;
    return NX_OK;
}

/* Elements a tensor stands for (a quantized blob: its [OUT][IN] weights). */
static size_t logical_numel(const nx_tensorset *ts, const nx_tensor_info *t) {
    nx_dtype q = tensor_qtype(ts, t, NULL);
    if (q == NX_DTYPE_INVALID || t->ndim != 2) return nx_tensor_numel(t);
    return (size_t)t->shape[0] * ((size_t)t->shape[1] / nx_dtype_size(q)) * NX_QBLOCK;
}

/* A matrix [d0][d1]: float, or a quantized blob [d0][d1/32·block bytes] (its type in *qt, and
 * whether its blocks are interleaved in *x8). */
static nx_status checked_mat(reader *r, const char *name, int64_t d0, int64_t d1, const nx_tensor_info **out,
                             nx_dtype *qt, bool *x8) {
    const nx_tensor_info *t = find(r, name);
    *qt = t ? tensor_qtype(r->ts, t, x8) : NX_DTYPE_INVALID;
    if (*qt == NX_DTYPE_INVALID) return checked(r, name, 2, d0, d1, out);
    if (d1 % NX_QBLOCK != 0)
        return nx__error(NX_ERR_FORMAT, "%s: tensor '%s' is %s but its %lld columns are not a multiple of 32",
                         t->file ? t->file : r->dir, name, nx_dtype_name(*qt), (long long)d1);
    if (*x8 && !nx__x8_layout(*qt, (int)d0, (int)d1))
        return nx__error(NX_ERR_FORMAT,
                         "%s: tensor '%s' is tagged %s, but its shape [%lld, %lld] has no interleaved layout "
                         "(rows a multiple of 8, columns of 64)",
                         t->file ? t->file : r->dir, name, nx__x8_tag(*qt), (long long)d0, (long long)d1);
    /* Files from before the blocks took ggml's fp16 scales hold 36-/20-byte blocks: say so
     * rather than report a bare shape mismatch. */
    if (t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1 / NX_QBLOCK * (*qt == NX_Q8_0 ? 36 : 20))
        return nx__error(NX_ERR_FORMAT,
                         "%s: tensor '%s' holds %s blocks with fp32 scales (%d bytes per 32 weights), an older "
                         "neox format; blocks now carry an fp16 scale (%zu bytes): run neox quantize on the "
                         "original checkpoint again",
                         t->file ? t->file : r->dir, name, nx_dtype_name(*qt), *qt == NX_Q8_0 ? 36 : 20,
                         nx_dtype_size(*qt));
    /* the blob is [d0][d1/32 blocks of bytes]; checked() compares that shape */
    NX_TRY(checked(r, name, 2, d0, (int64_t)nx__row_bytes(*qt, (int)d1), out));
    if (t->nbytes != (size_t)d0 * nx__row_bytes(*qt, (int)d1))
        return nx__error(NX_ERR_FORMAT, "%s: quantized tensor '%s' holds %zu bytes, expected %zu",
                         t->file ? t->file : r->dir, name, t->nbytes, (size_t)d0 * nx__row_bytes(*qt, (int)d1));
    *out = t;
    return NX_OK;
}

/* Checks name's shape and converts it to fp32 into dst (plain layout). */
static nx_status load2(reader *r, const char *name, int ndim, int64_t d0, int64_t d1, float *dst) {
    const nx_tensor_info *t;
    NX_TRY(checked(r, name, ndim, d0, d1, &t));
    return nx_tensor_to_f32(t, dst);
}

/* Where output row o of a matrix comes from. */
typedef enum { ROWS_PLAIN, ROWS_STACKED_QKV } rows_kind;
typedef struct {
    const nx_tensorset *ts;   /* the set the tensors belong to */
    const nx_tensor_info *t[3];
    rows_kind kind;
    int HS;
    nx_dtype qt[3];   /* block type of t[i], or NX_DTYPE_INVALID for float tensors */
    bool x8[3];       /* t[i]'s blocks are interleaved (nx__x8_block) */
} row_source;

/* Converts one row of a float 2-D tensor through a one-row view of it. */
static nx_status convert_row(const nx_tensor_info *t, int64_t row, int IN, float *dst) {
    nx_tensor_info one = *t;
    size_t es = nx_dtype_size(t->dtype);
    one.ndim = 2;
    one.shape[0] = 1;
    one.shape[1] = IN;
    one.data = (const uint8_t *)t->data + (size_t)row * (size_t)IN * es;
    one.nbytes = (size_t)IN * es;
    return nx_tensor_to_f32(&one, dst);
}

/* Whether a tensor's bytes can be used in place as rows of type t: same type, and aligned for
 * its element (a safetensors data region is only 8-byte aligned, tensors follow each other). */
static bool usable_in_place(const nx_tensor_info *t, nx_dtype file_type, nx_dtype run_type) {
    size_t align = run_type == NX_F32 ? 4 : 2;   /* the block types' fp16 scales: 2 */
    return file_type == run_type && (uintptr_t)t->data % align == 0;
}

/* Fills W with an [OUT][IN] matrix in the model's run type: the checkpoint's own bytes when they
 * already are its rows, else rows converted one at a time into m->wblock (rows stored in the run
 * type are copied as bytes, so nothing is re-rounded). J/Neo's q, k, v ([H][H] each) are
 * interleaved by head into NeoX's [NH][q|k|v][HS] order: row o = h·3·HS + s·HS + e. */
static nx_status load_rows(nx_model *m, const row_source *rs, int OUT, int IN, nx_wmat *W, float *scratch) {
    nx_dtype wt = m->wtype;
    const nx_tensor_info *t0 = rs->t[0];
    /* Interleaved blocks are used in place only by kernels that read them; elsewhere their rows
     * are gathered back into row order below. */
    if (rs->kind == ROWS_PLAIN && usable_in_place(t0, rs->qt[0] != NX_DTYPE_INVALID ? rs->qt[0] : t0->dtype, wt) &&
        (!rs->x8[0] || nx__x8_eligible(nx__kernels(), wt, OUT, IN))) {
        *W = (nx_wmat){wt, t0->data, rs->x8[0]};
        m->mapped_bytes += nx__wmat_bytes(wt, OUT, IN);
        /* Each token streams the whole matrix: huge pages where the file's pages are read in from
         * here on (a 410M q4 file mapped in 4 KiB pages generated 12% slower). */
        nx__tensorset_stream(rs->ts, t0->data, nx__wmat_bytes(wt, OUT, IN));
        return NX_OK;
    }
    uint8_t *dst = nx__model_take_mat(m, OUT, IN);
    size_t rb = nx__row_bytes(wt, IN);
    uint8_t *gathered = NULL;   /* one row of an interleaved source, in row order */
    if ((rs->x8[0] || rs->x8[1] || rs->x8[2]) && !(gathered = nx__malloc(nx__row_bytes(NX_Q8_0, IN))))
        return nx__error(NX_ERR_NOMEM, "out of memory");
    nx_status st = NX_OK;
    for (int o = 0; o < OUT && st == NX_OK; o++) {
        int s = 0;
        int64_t row = o;
        if (rs->kind == ROWS_STACKED_QKV) {
            s = (o / rs->HS) % 3;
            row = (int64_t)(o / (3 * rs->HS)) * rs->HS + o % rs->HS;
        }
        const nx_tensor_info *t = rs->t[s];
        nx_dtype qt = rs->qt[s], ft = qt != NX_DTYPE_INVALID ? qt : t->dtype;
        const uint8_t *src = (const uint8_t *)t->data + (size_t)row * nx__row_bytes(ft, IN);
        if (rs->x8[s]) {
            nx__x8_gather_row(t->data, qt, IN, (int)row, gathered);
            src = gathered;
        }
        if (ft == wt) {
            memcpy(dst + (size_t)o * rb, src, rb);
        } else {
            if (qt != NX_DTYPE_INVALID)
                nx__dequantize_row(qt, src, scratch, IN);
            else
                st = convert_row(t, row, IN, scratch);
            store_row(wt, dst + (size_t)o * rb, scratch, IN);
        }
    }
    nx__free(gathered);
    NX_TRY(st);
    /* The converted source is not read again: a model kept mapped for its in-place tensors (say
     * the embedding) would otherwise stay resident for the whole checkpoint (a 410M q4 model
     * converted from fp32 kept 1.6 GB). A tied head's source is the embedding, used in place:
     * its rows fault back in as tokens need them. */
    for (int i = 0; i < 3 && rs->t[i]; i++) nx__tensorset_release(rs->ts, rs->t[i]->data, rs->t[i]->nbytes);
    *W = (nx_wmat){wt, dst, false};
    return NX_OK;
}

/* A plain nn.Linear weight [OUT][IN]. */
static nx_status load_mat(reader *r, nx_model *m, const char *name, int OUT, int IN, nx_wmat *dst, float *scratch) {
    row_source rs = {r->ts,
                     {NULL, NULL, NULL},
                     ROWS_PLAIN,
                     0,
                     {NX_DTYPE_INVALID, NX_DTYPE_INVALID, NX_DTYPE_INVALID},
                     {false, false, false}};
    NX_TRY(checked_mat(r, name, OUT, IN, &rs.t[0], &rs.qt[0], &rs.x8[0]));
    return load_rows(m, &rs, OUT, IN, dst, scratch);
}

static nx_status load_mat_fmt(reader *r, nx_model *m, int OUT, int IN, nx_wmat *dst, float *scratch, const char *fmt,
                              ...) NX_PRINTF(7, 8);
static nx_status load_mat_fmt(reader *r, nx_model *m, int OUT, int IN, nx_wmat *dst, float *scratch, const char *fmt,
                              ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return load_mat(r, m, name, OUT, IN, dst, scratch);
}

/* J/Neo "<prefix>q_proj.weight", k_proj, v_proj into one [3H][H] (NeoX's row order). */
static nx_status load_qkv_stacked(reader *r, nx_model *m, const char *prefix, nx_wmat *dst, float *scratch) {
    row_source rs = {r->ts,
                     {NULL, NULL, NULL},
                     ROWS_STACKED_QKV,
                     m->HS,
                     {NX_DTYPE_INVALID, NX_DTYPE_INVALID, NX_DTYPE_INVALID},
                     {false, false, false}};
    for (int i = 0; i < 3; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s%c_proj.weight", prefix, "qkv"[i]);
        NX_TRY(checked_mat(r, name, m->H, m->H, &rs.t[i], &rs.qt[i], &rs.x8[i]));
    }
    return load_rows(m, &rs, 3 * m->H, m->H, dst, scratch);
}

/* The input embedding: its own rows (used in place when the file's F32/F16/BF16 bytes allow, else
 * an fp32 copy), or (tied) the head's rows. */
static nx_status load_embedding(reader *r, nx_model *m, bool tied, const char *name, const char *head_name,
                                float *scratch) {
    if (tied) {
        NX_TRY(load_mat(r, m, name, m->V, m->H, &m->Whead, scratch));
        m->Wte = m->Whead;
        return NX_OK;
    }
    const nx_tensor_info *t;
    NX_TRY(checked(r, name, 2, m->V, m->H, &t));
    if ((t->dtype == NX_F32 || t->dtype == NX_F16 || t->dtype == NX_BF16) && usable_in_place(t, t->dtype, t->dtype)) {
        m->Wte = (nx_wmat){t->dtype, t->data, false};
        m->mapped_bytes += t->nbytes;
    } else {
        m->wte_copy = nx__malloc_aligned((size_t)m->V * (size_t)m->H * sizeof(float));
        if (!m->wte_copy) return nx__error(NX_ERR_NOMEM, "out of memory for the input embedding");
        NX_TRY(nx_tensor_to_f32(t, m->wte_copy));
        m->Wte = (nx_wmat){NX_F32, m->wte_copy, false};
    }
    return load_mat(r, m, head_name, m->V, m->H, &m->Whead, scratch);
}

static nx_status load_fmt(reader *r, int ndim, int64_t d0, int64_t d1, float *dst, const char *fmt, ...)
    NX_PRINTF(6, 7);
static nx_status load_fmt(reader *r, int ndim, int64_t d0, int64_t d1, float *dst, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return load2(r, name, ndim, d0, d1, dst);
}

static nx_status load_neox(nx_model *m, reader *r, bool tied, float *scratch) {
    int64_t H = m->H, I = m->I;
    int Hi = m->H, Ii = m->I;
    NX_TRY(load_embedding(r, m, tied, "gpt_neox.embed_in.weight", head_name(r, NX_ARCH_GPT_NEOX), scratch));
    NX_TRY(load2(r, "gpt_neox.final_layer_norm.weight", 1, H, 0, m->lnf_w));
    NX_TRY(load2(r, "gpt_neox.final_layer_norm.bias", 1, H, 0, m->lnf_b));
    for (int l = 0; l < m->L; l++) {
        nx_layer *ly = &m->layers[l];
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln1_w, "gpt_neox.layers.%d.input_layernorm.weight", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln1_b, "gpt_neox.layers.%d.input_layernorm.bias", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln2_w, "gpt_neox.layers.%d.post_attention_layernorm.weight", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln2_b, "gpt_neox.layers.%d.post_attention_layernorm.bias", l));
        /* query_key_value is [NH][q|k|v][HS] rows, the order the forward pass reads: used as is */
        NX_TRY(load_mat_fmt(r, m, 3 * Hi, Hi, &ly->Wqkv, scratch, "gpt_neox.layers.%d.attention.query_key_value.weight", l));
        if (ly->bqkv) NX_TRY(load_fmt(r, 1, 3 * H, 0, ly->bqkv, "gpt_neox.layers.%d.attention.query_key_value.bias", l));
        NX_TRY(load_mat_fmt(r, m, Hi, Hi, &ly->Wo, scratch, "gpt_neox.layers.%d.attention.dense.weight", l));
        if (ly->bo) NX_TRY(load_fmt(r, 1, H, 0, ly->bo, "gpt_neox.layers.%d.attention.dense.bias", l));
        NX_TRY(load_mat_fmt(r, m, Ii, Hi, &ly->W1, scratch, "gpt_neox.layers.%d.mlp.dense_h_to_4h.weight", l));
        NX_TRY(load_fmt(r, 1, I, 0, ly->b1, "gpt_neox.layers.%d.mlp.dense_h_to_4h.bias", l));
        NX_TRY(load_mat_fmt(r, m, Hi, Ii, &ly->W2, scratch, "gpt_neox.layers.%d.mlp.dense_4h_to_h.weight", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->b2, "gpt_neox.layers.%d.mlp.dense_4h_to_h.bias", l));
    }
    return NX_OK;
}

static nx_status load_gptj(nx_model *m, reader *r, bool tied, float *scratch) {
    int64_t H = m->H, I = m->I, V = m->V;
    int Hi = m->H, Ii = m->I;
    NX_TRY(load_embedding(r, m, tied, "transformer.wte.weight", "lm_head.weight", scratch));
    NX_TRY(load2(r, "transformer.ln_f.weight", 1, H, 0, m->lnf_w));
    NX_TRY(load2(r, "transformer.ln_f.bias", 1, H, 0, m->lnf_b));
    NX_TRY(load2(r, "lm_head.bias", 1, V, 0, m->head_b));
    for (int l = 0; l < m->L; l++) {
        nx_layer *ly = &m->layers[l];
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln1_w, "transformer.h.%d.ln_1.weight", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln1_b, "transformer.h.%d.ln_1.bias", l));
        char prefix[128];
        snprintf(prefix, sizeof prefix, "transformer.h.%d.attn.", l);
        NX_TRY(load_qkv_stacked(r, m, prefix, &ly->Wqkv, scratch));
        NX_TRY(load_mat_fmt(r, m, Hi, Hi, &ly->Wo, scratch, "transformer.h.%d.attn.out_proj.weight", l));
        NX_TRY(load_mat_fmt(r, m, Ii, Hi, &ly->W1, scratch, "transformer.h.%d.mlp.fc_in.weight", l));
        NX_TRY(load_fmt(r, 1, I, 0, ly->b1, "transformer.h.%d.mlp.fc_in.bias", l));
        NX_TRY(load_mat_fmt(r, m, Hi, Ii, &ly->W2, scratch, "transformer.h.%d.mlp.fc_out.weight", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->b2, "transformer.h.%d.mlp.fc_out.bias", l));
    }
    return NX_OK;
}

static nx_status load_neo(nx_model *m, reader *r, bool tied, float *scratch) {
    int64_t H = m->H, I = m->I;
    int Hi = m->H, Ii = m->I;
    NX_TRY(load_embedding(r, m, tied, "transformer.wte.weight", "lm_head.weight", scratch));
    NX_TRY(load2(r, "transformer.wpe.weight", 2, m->maxpos, H, m->wpe));
    NX_TRY(load2(r, "transformer.ln_f.weight", 1, H, 0, m->lnf_w));
    NX_TRY(load2(r, "transformer.ln_f.bias", 1, H, 0, m->lnf_b));
    for (int l = 0; l < m->L; l++) {
        nx_layer *ly = &m->layers[l];
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln1_w, "transformer.h.%d.ln_1.weight", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln1_b, "transformer.h.%d.ln_1.bias", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln2_w, "transformer.h.%d.ln_2.weight", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->ln2_b, "transformer.h.%d.ln_2.bias", l));
        char prefix[128];
        snprintf(prefix, sizeof prefix, "transformer.h.%d.attn.attention.", l);
        NX_TRY(load_qkv_stacked(r, m, prefix, &ly->Wqkv, scratch));
        NX_TRY(load_mat_fmt(r, m, Hi, Hi, &ly->Wo, scratch, "transformer.h.%d.attn.attention.out_proj.weight", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->bo, "transformer.h.%d.attn.attention.out_proj.bias", l));
        NX_TRY(load_mat_fmt(r, m, Ii, Hi, &ly->W1, scratch, "transformer.h.%d.mlp.c_fc.weight", l));
        NX_TRY(load_fmt(r, 1, I, 0, ly->b1, "transformer.h.%d.mlp.c_fc.bias", l));
        NX_TRY(load_mat_fmt(r, m, Hi, Ii, &ly->W2, scratch, "transformer.h.%d.mlp.c_proj.weight", l));
        NX_TRY(load_fmt(r, 1, H, 0, ly->b2, "transformer.h.%d.mlp.c_proj.bias", l));
    }
    return NX_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* Buffers older exports carry that are not parameters (docs/ARCHITECTURES.md §1.2, 2.2, 3.2). */
static bool is_legacy_buffer(const char *name) {
    return ends_with(name, ".attention.bias") || ends_with(name, ".attention.masked_bias") ||
           ends_with(name, ".rotary_emb.inv_freq") || ends_with(name, ".attn.bias") ||
           ends_with(name, ".attn.masked_bias");
}

/* Every tensor must have been read, be a legacy buffer, or be a tied head's duplicate: a
 * leftover means config.json and the weights disagree (e.g. attention_bias false on a file
 * with biases), which would otherwise silently give wrong logits. */
static nx_status check_all_used(const reader *r, const nx_model *m) {
    for (size_t i = 0; i < nx_tensorset_count(r->ts); i++) {
        const nx_tensor_info *t = nx_tensorset_at(r->ts, i);
        bool used = false;
        for (size_t k = 0; k < r->n_used && !used; k++) used = r->used[k] == t;
        if (used || is_legacy_buffer(t->name)) continue;
        if (m->Wte.data == m->Whead.data && (!strcmp(t->name, "lm_head.weight") || !strcmp(t->name, "embed_out.weight")))
            continue;
        return nx__error(NX_ERR_FORMAT, "%s: unexpected tensor '%s' for %s with this config.json (config and weights disagree)",
                         t->file && *t->file ? t->file : r->dir, t->name, m->cfg.model_type);
    }
    return NX_OK;
}

/* The output layer's tensor name. Published GPT-NeoX checkpoints call it embed_out; state_dicts
 * of transformers >= 5 models (torch.save(model.state_dict())) call it lm_head, as J and Neo do. */
static const char *head_name(const reader *r, nx_arch a) {
    if (a != NX_ARCH_GPT_NEOX) return "lm_head.weight";
    if (!find(r, "embed_out.weight") && find(r, "lm_head.weight")) return "lm_head.weight";
    return "embed_out.weight";
}

nx_status nx_model_load(const char *dir, const nx_model_opts *opts, nx_model **out) {
    if (!dir || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_model_load: NULL argument");
    *out = NULL;
    nx_dtype want = opts ? opts->dtype : NX_DTYPE_INVALID;
    if (want != NX_DTYPE_INVALID && want != NX_F32 && want != NX_BF16 && want != NX_F16 && want != NX_Q8_0 &&
        want != NX_Q4_0)
        return nx__error(NX_ERR_UNSUPPORTED, "nx_model_load: run dtype %s is not supported (F32, BF16, F16, Q8_0, Q4_0)",
                         nx_dtype_name(want));
    nx_model_config cfg;
    nx_status st = nx_config_load(dir, &cfg);
    if (st != NX_OK) return st;
    nx_tensorset *ts = NULL;
    st = nx_tensorset_open(dir, &ts);
    if (st != NX_OK) return st;
    nx_model *m = nx__calloc(1, sizeof *m);
    float *tmp = NULL;
    reader r = {ts, dir, NULL, 0, 0};
    if (!m) {
        st = nx__error(NX_ERR_NOMEM, "out of memory");
        goto done;
    }
    st = nx__model_init_shape(m, &cfg);
    if (st != NX_OK) goto done;
    /* HF ties when the config says so; a checkpoint without a head (HF drops the tied
     * duplicate when saving) is only valid in that case. */
    bool has_head = find(&r, head_name(&r, cfg.arch)) != NULL;
    bool tied = cfg.tie_word_embeddings;
    if (!tied && !has_head) {
        st = nx__error(NX_ERR_NOT_FOUND, "%s: tensor '%s' is missing and tie_word_embeddings is false", dir,
                       head_name(&r, cfg.arch));
        goto done;
    }
    /* Allocate only what the file can back: a hostile config (say hidden_size 65536) must
     * fail here, not in a 100 GB allocation. Every tensor is checked by name and shape later. */
    size_t have = 0, need = param_floats(m, tied);
    for (size_t i = 0; i < nx_tensorset_count(ts); i++) {
        size_t n = logical_numel(ts, nx_tensorset_at(ts, i));
        have = have + n < have ? SIZE_MAX : have + n;
    }
    if (have < need) {
        st = nx__error(NX_ERR_FORMAT, "%s: the checkpoint holds %zu values but config.json implies %zu parameters "
                                      "(check hidden_size, num_hidden_layers, vocab_size)", dir, have, need);
        goto done;
    }
    if (want == NX_DTYPE_INVALID) {
        /* A directory written by nx_model_quantize runs in the type it was quantized to. */
        const char *v = nx_tensorset_metadata(ts, "neox.dtype");
        nx_dtype fd = v ? nx_dtype_from_name(v) : NX_DTYPE_INVALID;
        want = fd == NX_BF16 || fd == NX_F16 || fd == NX_Q8_0 || fd == NX_Q4_0 ? fd : NX_F32;
    }
    /* Matrices are used in place or converted to the run type a row at a time: no fp32 copy. */
    st = nx__model_alloc(m, want);
    if (st != NX_OK) goto done;
    tmp = nx__malloc((size_t)NX_MAX(m->H, m->I) * sizeof(float));   /* one row */
    if (!tmp) {
        st = nx__error(NX_ERR_NOMEM, "out of memory");
        goto done;
    }
    switch (cfg.arch) {
    case NX_ARCH_GPT_NEOX: st = load_neox(m, &r, tied, tmp); break;
    case NX_ARCH_GPTJ: st = load_gptj(m, &r, tied, tmp); break;
    case NX_ARCH_GPT_NEO: st = load_neo(m, &r, tied, tmp); break;
    }
    if (st == NX_OK) st = check_all_used(&r, m);
    if (st == NX_OK && m->mapped_bytes) {   /* the model points into the mapping: it owns it */
        m->ts = ts;
        ts = NULL;
    }
    if (st == NX_OK) interleave_blocks(m);
    if (st == NX_OK && m->wblock_used == 0) {   /* every matrix in place: drop the unused arena */
        nx__free_aligned(m->wblock);
        m->wblock = NULL;
        m->wblock_bytes = 0;
    }
done:
    nx__free(r.used);
    nx__free(tmp);
    nx_tensorset_free(ts);
    if (st != NX_OK) {
        nx_model_free(m);
        return st;
    }
    *out = m;
    return NX_OK;
}

/* ---- random models ------------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform with the requested standard deviation: cheap enough for 400M weights. */
static void fill_uniform(float *p, size_t n, float std, float offset, uint64_t *s) {
    float a = std * 1.7320508f;
    for (size_t i = 0; i < n; i++) {
        float u = (float)(splitmix64(s) >> 40) * (1.0f / 16777216.0f);   /* [0, 1) */
        p[i] = offset + (2.0f * u - 1.0f) * a;
    }
}

nx_status nx_model_create_random(const nx_model_config *cfg, uint64_t seed, float std, nx_model **out) {
    if (!cfg || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_model_create_random: NULL argument");
    *out = NULL;
    nx_model *m = nx__calloc(1, sizeof *m);
    if (!m) return nx__error(NX_ERR_NOMEM, "out of memory");
    nx_status st = nx__model_init_shape(m, cfg);
    if (st == NX_OK) st = nx__model_alloc(m, NX_F32);
    size_t VH = (size_t)m->V * (size_t)m->H;
    if (st == NX_OK && !cfg->tie_word_embeddings && !(m->wte_copy = nx__malloc_aligned(VH * sizeof(float))))
        st = nx__error(NX_ERR_NOMEM, "out of memory for the input embedding");
    if (st != NX_OK) {
        nx_model_free(m);
        return st;
    }
    uint64_t s = seed;
    size_t H = (size_t)m->H;
    int I = m->I, Hi = m->H;
    /* fp32 matrices, carved in the loader's order */
    m->Whead = (nx_wmat){NX_F32, nx__model_take_mat(m, m->V, Hi), false};
    for (int l = 0; l < m->L; l++) {
        nx_layer *ly = &m->layers[l];
        ly->Wqkv = (nx_wmat){NX_F32, nx__model_take_mat(m, 3 * Hi, Hi), false};
        ly->Wo = (nx_wmat){NX_F32, nx__model_take_mat(m, Hi, Hi), false};
        ly->W1 = (nx_wmat){NX_F32, nx__model_take_mat(m, I, Hi), false};
        ly->W2 = (nx_wmat){NX_F32, nx__model_take_mat(m, Hi, I), false};
    }
    m->Wte = m->wte_copy ? (nx_wmat){NX_F32, m->wte_copy, false} : m->Whead;
    fill_uniform((float *)m->wblock, m->wblock_used / sizeof(float), std, 0.0f, &s);
    if (m->wte_copy) fill_uniform(m->wte_copy, VH, std, 0.0f, &s);
    size_t rope = (size_t)m->maxpos * (size_t)(m->rot / 2) * 2;
    fill_uniform(m->block, m->block_floats - rope, std, 0.0f, &s);
    /* LayerNorm gains around 1 keep activations in a realistic range. */
    fill_uniform(m->lnf_w, H, std, 1.0f, &s);
    for (int l = 0; l < m->L; l++) {
        fill_uniform(m->layers[l].ln1_w, H, std, 1.0f, &s);
        if (m->layers[l].ln2_w) fill_uniform(m->layers[l].ln2_w, H, std, 1.0f, &s);
    }
    *out = m;
    return NX_OK;
}

/* ---- presets --------------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    nx_arch arch;
    int L, H, NH, I, V, maxpos, rot;
} preset;

static const preset k_presets[] = {
    {"pythia-14m", NX_ARCH_GPT_NEOX, 6, 128, 4, 512, 50304, 2048, 8},
    {"pythia-70m", NX_ARCH_GPT_NEOX, 6, 512, 8, 2048, 50304, 2048, 16},
    {"pythia-160m", NX_ARCH_GPT_NEOX, 12, 768, 12, 3072, 50304, 2048, 16},
    {"pythia-410m", NX_ARCH_GPT_NEOX, 24, 1024, 16, 4096, 50304, 2048, 16},
    {"pythia-1b", NX_ARCH_GPT_NEOX, 16, 2048, 8, 8192, 50304, 2048, 64},
    {"pythia-1.4b", NX_ARCH_GPT_NEOX, 24, 2048, 16, 8192, 50304, 2048, 32},
    {"pythia-2.8b", NX_ARCH_GPT_NEOX, 32, 2560, 32, 10240, 50304, 2048, 20},
    {"pythia-6.9b", NX_ARCH_GPT_NEOX, 32, 4096, 32, 16384, 50432, 2048, 32},
    {"gpt-neo-125m", NX_ARCH_GPT_NEO, 12, 768, 12, 3072, 50257, 2048, 0},
    {"gpt-neo-1.3b", NX_ARCH_GPT_NEO, 24, 2048, 16, 8192, 50257, 2048, 0},
    {"gpt-j-6b", NX_ARCH_GPTJ, 28, 4096, 16, 16384, 50400, 2048, 64},
};

nx_status nx_model_config_preset(const char *name, nx_model_config *cfg) {
    if (!name || !cfg) return nx__error(NX_ERR_INVALID_ARG, "nx_model_config_preset: NULL argument");
    for (size_t i = 0; i < NX_ARRAY_LEN(k_presets); i++) {
        const preset *p = &k_presets[i];
        if (strcmp(p->name, name) != 0) continue;
        memset(cfg, 0, sizeof *cfg);
        cfg->arch = p->arch;
        snprintf(cfg->model_type, sizeof cfg->model_type, "%s", nx_arch_name(p->arch));
        cfg->vocab_size = p->V;
        cfg->hidden_size = p->H;
        cfg->n_layer = p->L;
        cfg->n_head = p->NH;
        cfg->head_dim = p->H / p->NH;
        cfg->intermediate_size = p->I;
        cfg->max_position_embeddings = p->maxpos;
        cfg->rotary_dim = p->rot;
        cfg->rotary_pct = p->arch == NX_ARCH_GPT_NEOX ? 0.25f : 0.0f;
        cfg->rope_theta = 10000.0f;
        cfg->layer_norm_eps = 1e-5f;
        cfg->act = p->arch == NX_ARCH_GPT_NEOX ? NX_ACT_GELU : NX_ACT_GELU_TANH;
        cfg->parallel_residual = p->arch != NX_ARCH_GPT_NEO;
        cfg->tie_word_embeddings = p->arch == NX_ARCH_GPT_NEO;
        cfg->attention_bias = p->arch == NX_ARCH_GPT_NEOX;
        cfg->rotary_interleaved = p->arch == NX_ARCH_GPTJ;
        cfg->scale_attn = p->arch != NX_ARCH_GPT_NEO;
        cfg->window_size = p->arch == NX_ARCH_GPT_NEO ? 256 : 0;
        for (int l = 0; l < p->L && p->arch == NX_ARCH_GPT_NEO; l++) cfg->layer_is_local[l] = (uint8_t)(l % 2);
        cfg->bos_token_id = p->arch == NX_ARCH_GPT_NEOX ? 0 : 50256;
        cfg->eos_token_id = cfg->bos_token_id;
        cfg->torch_dtype = NX_F16;
        return NX_OK;
    }
    return nx__error(NX_ERR_NOT_FOUND, "unknown model shape '%s' (known: pythia-14m, pythia-70m, pythia-160m, "
                                       "pythia-410m, pythia-1b, pythia-1.4b, pythia-2.8b, pythia-6.9b, gpt-neo-125m, "
                                       "gpt-neo-1.3b, gpt-j-6b)", name);
}
