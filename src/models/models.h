/*
 * models.h - private interface of the models layer: the loaded model (fp32 weights in one
 * block, per-layer views) and the pieces shared by load.c, forward.c and sample.c.
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

typedef struct nx_layer {
    float *ln1_w, *ln1_b;   /* input LN (NeoX input_layernorm, J/Neo ln_1) */
    float *ln2_w, *ln2_b;   /* NeoX post_attention_layernorm, Neo ln_2; NULL for GPT-J */
    /* Matrices are packed (kernels.h: 16-row panels); shapes given as [OUT][IN]. */
    float *wqkv, *bqkv;     /* [3H][H] as q|k|v blocks (head-major inside each); bias NULL when absent */
    float *wo, *bo;         /* [H][H], [H] or NULL */
    float *w1, *b1;         /* [I][H], [I] */
    float *w2, *b2;         /* [H][I], [H] */
    int local;              /* GPT-Neo local attention layer */
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
    float *wte;             /* [V][H] plain rows for the lookup; NULL when tied (rows come from head_w) */
    float *wpe;             /* [maxpos][H] or NULL */
    float *lnf_w, *lnf_b;
    float *head_w, *head_b; /* [V][H] packed (the embedding itself when tied), [V] or NULL */
    nx_layer *layers;
    float *rope_cos, *rope_sin;   /* [maxpos][rot/2] */
    float *block;           /* the one weight allocation (aligned) */
    size_t block_floats;
};

/* A session (forward.c); visible here so sample.c can reach the model and cache. */
struct nx_session {
    const nx_model *m;
    const nx_kernel_vt *vt;
    int n_ctx, n_batch, n_past;
    nx_pool *pool;
    bool own_pool;
    int n_threads;
    float *kc, *vc;        /* [L][NH][n_ctx][HS] */
    int32_t *tokens;       /* [n_ctx] */
    float *x, *u, *qkv, *att, *a, *h;   /* scratch rows (n_batch each) */
    float *scores;         /* [n_threads][n_ctx] */
    float *logits;         /* [V], last row */
    bool has_logits;
};

/* Validates cfg and fills the derived fields of m (no allocation of weights). */
nx_status nx__model_init_shape(nx_model *m, const nx_model_config *cfg);
/* Carves m->block into the per-tensor pointers and fills the rotary tables. */
nx_status nx__model_alloc(nx_model *m, bool head_tied);

#endif
