/*
 * models.h - private interface of the models layer: the loaded model (matrices in their run
 * type, mapped or converted; small fp32 tensors in one block; per-layer views) and the pieces
 * shared by load.c, forward.c and sample.c.
 *
 * One arch-generic transformer covers the three families; the differences are data:
 *   NeoX: two LNs, parallel or sequential residual, fused qkv (+bias if attention_bias),
 *         rotate_half on rotary_dim dims, 1/sqrt(HS) scaling, untied or tied embed_out.
 *   GPT-J: one shared LN feeding attention and MLP in parallel, no q/k/v/out bias,
 *          rotate_every_two on rotary_dim dims, lm_head with bias.
 *   GPT-Neo: wpe, sequential residual, no scaling, out_proj bias only, local layers with a
 *            window, lm_head tied to wte when absent.
 * Depends on core, kernels and io.
 */
#ifndef NX_MODELS_INTERNAL_H
#define NX_MODELS_INTERNAL_H

#include "core/core.h"
#include "kernels/kernels.h"
#include "neox/io.h"
#include "neox/model.h"

/* The "neox.quant.<name>" values of Q4_0 and Q8_0 matrices that nx_model_quantize wrote in the
 * interleaved layout (kernels.h nx__x8_block, nx__x8_layout); row-order blocks are tagged with
 * the type's name ("Q8_0", "Q4_0"). Versions that predate a tag reject it rather than misread
 * the blocks. */
#define NX__Q4_0_X8_TAG "Q4_0_x8"
#define NX__Q8_0_X8_TAG "Q8_0_x8"
static inline const char *nx__x8_tag(nx_dtype t) { return t == NX_Q8_0 ? NX__Q8_0_X8_TAG : NX__Q4_0_X8_TAG; }

typedef struct nx_layer {
    float *ln1_w, *ln1_b;   /* input LN (NeoX input_layernorm, J/Neo ln_1) */
    float *ln2_w, *ln2_b;   /* NeoX post_attention_layernorm, Neo ln_2; NULL for GPT-J */
    float *bqkv;            /* [3H] in Wqkv's row order; NULL when absent */
    float *bo, *b1, *b2;    /* [H] or NULL, [I], [H] */
    int local;              /* GPT-Neo local attention layer */
    /* The matrices in the run type (kernels.h nx_wmat, row-major [OUT][IN]), each either the
     * checkpoint's own bytes (mapped) or a converted copy in nx_model.wblock.
     * Wqkv [3H][H] has NeoX's head-interleaved rows [NH][q|k|v][HS] for every family, so a NeoX
     * query_key_value is used as stored; Wo [H][H], W1 [I][H], W2 [H][I]. */
    nx_wmat Wqkv, Wo, W1, W2;
} nx_layer;

struct nx_model {
    nx_model_config cfg;
    int H, NH, HS, I, V, L, maxpos;
    int rot;                /* rotated dims per head (0: none) */
    bool rot_interleaved;   /* GPT-J pairs (2j, 2j+1) */
    bool parallel;          /* attention and MLP both read the block input */
    bool shared_ln;         /* GPT-J: the MLP reads ln_1's output */
    float attn_scale;
    int window;             /* GPT-Neo local window (keys q-window+1 .. q) */
    nx_kact act;
    nx_wmat Wte;            /* [V][H] input embedding (F32/F16/BF16 rows); == Whead when tied */
    float *wte_copy;        /* Wte's fp32 rows when it is not used in place (else NULL) */
    float *wpe;             /* [maxpos][H] or NULL */
    float *lnf_w, *lnf_b;
    float *head_b;          /* [V] or NULL */
    nx_layer *layers;
    float *rope_cos, *rope_sin;   /* [maxpos][rot/2] */
    float *block;           /* the one fp32 allocation of the small tensors (aligned) */
    size_t block_floats;
    nx_dtype wtype;         /* run type of the matrices: F32, BF16, F16, Q8_0, Q4_0 */
    nx_wmat Whead;          /* the head [V][H] in the run type */
    /* Converted matrices: an arena reserved for all of them in the run type, filled as needed
     * (pages of matrices used in place are never touched, so never resident). */
    uint8_t *wblock;
    size_t wblock_bytes, wblock_used;
    nx_tensorset *ts;       /* the mapped checkpoint while any tensor is used in place, else NULL */
    size_t mapped_bytes;    /* bytes of tensors used in place */
};

/* A session (forward.c); visible here so sample.c can reach the model and cache. */
struct nx_session {
    const nx_model *m;
    const nx_kernel_vt *vt;
    int n_ctx, n_batch, n_past;
    nx_pool *pool;
    bool own_pool;
    int n_threads;
    void *kc, *vc;         /* [L][NH][n_ctx][HS] in kv_type */
    nx_dtype kv_type;      /* NX_F32, NX_F16, NX_BF16 or NX_Q8_0 */
    size_t kv_rb;          /* bytes per cache row (HS elements) */
    size_t kv_hb;          /* bytes per head of K, and of V (nx__kv_head_bytes) */
    int32_t *tokens;       /* [n_ctx] */
    float *x, *u, *qkv, *att, *a, *h;   /* scratch rows (n_batch each) */
    float *scores;         /* [n_threads][NX_ATTN_MAX_G][n_ctx] attention scratch */
    float *logits;         /* [V], last row */
    bool has_logits;
};

/* Validates cfg and fills the derived fields of m (no allocation of weights). */
nx_status nx__model_init_shape(nx_model *m, const nx_model_config *cfg);
/* Carves m->block into the small fp32 tensors, reserves m->wblock for the matrices in run type
 * wt (nx__model_take_mat carves it) and fills the rotary tables. */
nx_status nx__model_alloc(nx_model *m, nx_dtype wt);
/* A 64-byte aligned [OUT][IN] matrix of the model's run type from m->wblock. */
uint8_t *nx__model_take_mat(nx_model *m, int OUT, int IN);
/* Converts the matrices of an fp32 model to run type t (BF16, F16, Q8_0, Q4_0; F32 is a
 * no-op) and releases their fp32 copies. Block types need every IN to be a multiple of 32. */
nx_status nx__model_convert(nx_model *m, nx_dtype t);

#endif
