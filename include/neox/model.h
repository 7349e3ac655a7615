/*
 * neox/model.h - inference for GPT-NeoX/Pythia, GPT-J and GPT-Neo checkpoints.
 *
 * Objects:
 *   nx_model    immutable weights (run dtype chosen at load: fp32 by default; bf16, f16, q8_0,
 *               q4_0 matrices, see docs/QUANT.md) + config. Thread-safe to share:
 *               any number of sessions may run on one model at the same time.
 *   nx_session  one sequence: the KV cache (allocated once, at creation, for n_ctx tokens),
 *               activation scratch, the token history and a thread pool. Not thread-safe; use
 *               one session per concurrent sequence.
 *   nx_batch    scratch for running the new tokens of many sessions in one pass
 *               (nx_batch_forward, nx_batch_decode).
 *   nx_sampler  turns a logits row into a token id (greedy, temperature, top-k/p, min-p,
 *               repetition penalty), with its own seeded RNG.
 *
 * Shapes: V = config.vocab_size (embedding rows, possibly padded past the tokenizer), logits
 * rows are V floats. Token ids are int32 in [0, V).
 *
 * Context: positions run 0 .. n_ctx-1, n_ctx <= max_position_embeddings. Going past n_ctx is
 * an NX_ERR_RANGE error; nx_generate can instead drop the oldest half of the context and
 * recompute the rest at fresh positions when nx_generate_opts.context_shift is set (exact:
 * the result equals running the model on the kept window from scratch).
 */
#ifndef NEOX_MODEL_H
#define NEOX_MODEL_H

#include "neox/core.h"
#include "neox/io.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nx_model nx_model;
typedef struct nx_session nx_session;
typedef struct nx_sampler nx_sampler;
typedef struct nx_batch nx_batch;

/* ---- model ----------------------------------------------------------------------------- */
typedef struct nx_model_opts {
    /* Run dtype of the linear-layer matrices (qkv, attention out, MLP, head): NX_F32, NX_BF16,
     * NX_F16, NX_Q8_0 or NX_Q4_0. A safetensors matrix already stored in that type is used in
     * place (no copy), others are converted once at load. 0 (NX_DTYPE_INVALID) = the type a
     * `neox quantize` directory was written in, else F32. LayerNorms, biases and attention
     * math stay fp32 (the KV cache type is a session option, nx_session_opts.kv_type); the
     * input embedding keeps its stored float type. */
    nx_dtype dtype;
} nx_model_opts;

/* Loads a HF model directory (config.json + model.safetensors / sharded / pytorch_model.bin).
 * Matrices stored in the run dtype are used in place from the file mapping (docs/MODELS.md);
 * the rest is converted once. J/Neo's separate q/k/v become one matrix in NeoX's
 * head-interleaved query_key_value order.
 * opts may be NULL. On success *out is owned by the caller (nx_model_free). */
NX_API nx_status nx_model_load(const char *dir, const nx_model_opts *opts, nx_model **out);
/* Builds a model of the given config with N(0, std) weights (LayerNorm weights 1 + noise)
 * from a seeded generator: benchmarks and tests of shapes not on disk. */
NX_API nx_status nx_model_create_random(const nx_model_config *cfg, uint64_t seed, float std, nx_model **out);
NX_API void nx_model_free(nx_model *m);   /* NULL is fine; no session may still use m */
/* Borrowed; valid until nx_model_free. */
NX_API const nx_model_config *nx_model_get_config(const nx_model *m);
/* Converts an F32 model's matrices to dtype in place (as nx_model_opts.dtype does at load;
 * e.g. for nx_model_create_random). NX_F32 is a no-op; a model already converted is
 * NX_ERR_INVALID_ARG; Q8_0/Q4_0 need hidden and intermediate sizes that are multiples of 32.
 * No session may use m during the call. */
NX_API nx_status nx_model_convert(nx_model *m, nx_dtype dtype);
/* Parses a run dtype name as the CLI's --dtype takes it: f32, bf16, f16, q8 (= q8_0), q4
 * (= q4_0), case-insensitive; NX_DTYPE_INVALID when unknown. */
NX_API nx_dtype nx_run_dtype_from_name(const char *name);
/* Run dtype of the matrices (NX_F32 unless converted). */
NX_API nx_dtype nx_model_weight_dtype(const nx_model *m);
/* Writes out_dir/model.safetensors with the matrices of in_dir's checkpoint (any format
 * nx_model_load reads) stored as dtype (Q8_0/Q4_0 as U8 blobs, BF16/F16 as themselves;
 * docs/QUANT.md), every other tensor unchanged, and copies config.json and the tokenizer
 * files. out_dir is created if missing; each file is written atomically. The result loads
 * with nx_model_load and runs in dtype by default. */
NX_API nx_status nx_model_quantize(const char *in_dir, const char *out_dir, nx_dtype dtype);
/* Bytes of weights held (all run types; the rotary tables excluded). */
NX_API size_t nx_model_weight_bytes(const nx_model *m);
/* Bytes of those weights used in place from the mapped checkpoint (resident only once read). */
NX_API size_t nx_model_mapped_bytes(const nx_model *m);
/* Bytes of those weights in the interleaved Q4_0 layout that the AVX-512 VNNI decode kernels
 * stream fastest (docs/QUANT.md, "Block formats"): Q4_0 matrices converted at load; 0 for
 * files used in place, other types and other CPUs. */
NX_API size_t nx_model_interleaved_bytes(const nx_model *m);
/* Bytes of weights one decoded token streams from memory: everything except the input
 * embedding (and GPT-Neo's position table), of which a token reads one row; a tied head
 * does read the whole embedding. The decode speed bound is bandwidth / this. */
NX_API size_t nx_model_decode_bytes(const nx_model *m);
/* Fills cfg with the shape of a released checkpoint ("pythia-70m", "pythia-160m",
 * "pythia-410m", "pythia-1b", "pythia-1.4b", "gpt-j-6b", "gpt-neo-125m", ...). */
NX_API nx_status nx_model_config_preset(const char *name, nx_model_config *cfg);

/* Name of the matmul/attention kernel variant this process uses: "avx512", "avx2" or "ref"
 * (CPUID, or the NX_KERNELS environment variable). Static storage. */
NX_API const char *nx_kernels_name(void);

/* ---- session ---------------------------------------------------------------------------- */
typedef struct nx_session_opts {
    int n_ctx;          /* KV cache capacity in tokens; 0 = max_position_embeddings */
    int n_batch;        /* most tokens computed per internal step (scratch size); 0 = 512 */
    int n_threads;      /* threads of the session's own pool; 0 = number of CPUs */
    nx_pool *pool;      /* or a caller pool (borrowed; must outlive the session); overrides n_threads */
    /* Element type of the KV cache: NX_F32, NX_F16, NX_BF16, or NX_Q8_0 (32-element blocks
     * along each head vector, as the weight format; the head size must be a multiple of 32, else
     * NX_ERR_UNSUPPORTED; anything else is NX_ERR_INVALID_ARG). 0 (NX_DTYPE_INVALID) = auto:
     * NX_F32 when the model's matrices run in fp32, NX_BF16 for every other run type (a 16-bit
     * cache halves the bytes decode reads from it and the session's memory, Q8_0 takes 0.28 of
     * fp32; docs/QUANT.md). Keys are rounded after the rotary embedding; every attention, the
     * current token's own key and value included, reads the rounded values, so prefill and
     * token-by-token decode see the same cache. */
    nx_dtype kv_type;
} nx_session_opts;

/* Parses a KV cache type name as the CLI's --kv-type takes it: f32, f16, bf16, q8 (case-insensitive);
 * NX_DTYPE_INVALID when unknown. */
NX_API nx_dtype nx_kv_type_from_name(const char *name);

/* Allocates everything the session will ever need. opts may be NULL. The model is
 * borrowed and must outlive the session. *out is owned by the caller (nx_session_free). */
NX_API nx_status nx_session_create(const nx_model *m, const nx_session_opts *opts, nx_session **out);
NX_API void nx_session_free(nx_session *s);   /* NULL is fine */

/* Runs the model on n new tokens at positions n_past .. n_past+n-1, appending them to the KV
 * cache (prefill and decode are the same call). logits: NULL, or caller memory of n·V floats
 * that receives every row. The last row is always kept and readable with
 * nx_session_logits(). Errors: NX_ERR_RANGE when n_past + n > n_ctx or an id is outside
 * [0, V); the cache is unchanged on error. */
NX_API nx_status nx_session_forward(nx_session *s, const int32_t *ids, int n, float *logits);
/* Logits of the last token processed (V floats), borrowed until the next forward; NULL before any. */
NX_API const float *nx_session_logits(const nx_session *s);
NX_API int nx_session_n_past(const nx_session *s);
NX_API int nx_session_n_ctx(const nx_session *s);
/* Token ids in the cache (n_past of them), borrowed until the next call on s. */
NX_API const int32_t *nx_session_tokens(const nx_session *s);
/* Element type of the session's KV cache (auto resolved: NX_F32, NX_F16 or NX_BF16). */
NX_API nx_dtype nx_session_kv_type(const nx_session *s);
/* Bytes of the KV cache (K and V for n_ctx positions), allocated at creation. */
NX_API size_t nx_session_kv_bytes(const nx_session *s);
/* Bytes of K and V that the attention of one token reads when it sees n_keys positions (local
 * attention layers read at most their window): the cache's share of a decode step's traffic. */
NX_API size_t nx_session_kv_read_bytes(const nx_session *s, int n_keys);
/* Drops cached tokens from position n on (0 = reset). n > n_past is NX_ERR_RANGE. */
NX_API nx_status nx_session_truncate(nx_session *s, int n);
NX_API void nx_session_reset(nx_session *s);

/* ---- batched forward ------------------------------------------------------------------------ */
/* Decoding is memory-bound: one token's step streams every weight once. A batch runs the new
 * tokens of n sessions in one pass (continuous batching, as vLLM's and llama.cpp's servers
 * do): the linear layers run over all their rows together (decode steps in groups of up to
 * 8 rows, prompt chunks in one GEMM), so the weights are read once per group instead of once
 * per session, while attention runs per session over its own KV cache and positions.
 *
 *   nx_batch *b;  NX_TRY(nx_batch_create(m, 16, 0, &b));        // up to 16 sessions, 1 token each
 *   nx_session *s[3] = {s0, s1, s2};  int32_t ids[3] = {t0, t1, t2};
 *   NX_TRY(nx_batch_decode(b, s, ids, 3, NULL));                 // each s[i] advanced by ids[i]
 *   const float *row = nx_session_logits(s[1]);
 *
 * Exactness: session i ends in exactly the state nx_session_forward(s[i], its tokens,
 * n_tokens[i], NULL) would leave it in (cache, n_past, token history, last logits), bit for
 * bit, for every run type, batch composition and thread count. So a sequence's output never
 * depends on what else is in the batch; sessions join and leave between calls freely. */

/* Scratch for calls of up to max_seqs sessions and max_tokens tokens in all (0 = max_seqs:
 * decode only; otherwise >= max_seqs): about max_tokens x (10·H + I) + max_seqs x V floats. No
 * KV cache: each session has its own. m is borrowed and must outlive the batch. *out is owned
 * by the caller (nx_batch_free). Not thread-safe: one call at a time per batch. */
NX_API nx_status nx_batch_create(const nx_model *m, int max_seqs, int max_tokens, nx_batch **out);
NX_API void nx_batch_free(nx_batch *b);   /* NULL is fine */
NX_API int nx_batch_max_seqs(const nx_batch *b);
NX_API int nx_batch_max_tokens(const nx_batch *b);
/* Appends n_tokens[i] tokens to session s[i] (i < n) at positions n_past.. and computes the
 * logits after its last one, kept in the session (nx_session_logits) and, when logits is not
 * NULL, also written to caller memory of n·V floats (row i for s[i]). ids holds session 0's
 * tokens, then session 1's, and so on (Σ n_tokens ids). Prefill chunks and decode steps may be
 * mixed in one call. The sessions must be distinct, run the batch's model and share one thread
 * pool (nx_session_opts.pool; the call runs on it); each keeps its own n_ctx. Errors (no
 * session is changed): NX_ERR_INVALID_ARG for n outside [1, max_seqs], Σ n_tokens above
 * max_tokens, n_tokens[i] outside [1, the session's n_batch], a NULL or repeated session,
 * another model or another pool; NX_ERR_RANGE for tokens past a session's n_ctx or an id
 * outside [0, V). */
NX_API nx_status nx_batch_forward(nx_batch *b, nx_session *const *s, const int32_t *ids, const int *n_tokens, int n,
                                  float *logits);
/* nx_batch_forward with one token per session (ids[i] for s[i]): one decode step of each. */
NX_API nx_status nx_batch_decode(nx_batch *b, nx_session *const *s, const int32_t *ids, int n, float *logits);

/* ---- sampler ------------------------------------------------------------------------------ */
typedef struct nx_sampler_params {
    float temperature;     /* <= 0: greedy (argmax, lowest id on ties) */
    int top_k;             /* 0 = off */
    float top_p;           /* 1 = off */
    float min_p;           /* 0 = off: drop tokens with p < min_p · p_max */
    float repeat_penalty;  /* 1 = off; HF rule: logit > 0 ? logit / r : logit · r, once per distinct id */
    int repeat_last_n;     /* window of history the penalty looks at; 0 = all, -1 = n_ctx */
    uint64_t seed;
    int n_vocab;           /* ids >= n_vocab are never sampled (tokenizer size); 0 = all rows */
} nx_sampler_params;

/* Defaults: greedy, top_k 0, top_p 1, min_p 0, repeat_penalty 1, seed 0, all rows. */
NX_API nx_sampler_params nx_sampler_defaults(void);
NX_API nx_status nx_sampler_create(const nx_sampler_params *p, nx_sampler **out);
NX_API void nx_sampler_free(nx_sampler *smp);   /* NULL is fine */
/* Picks a token from logits[V] (not modified). history: the ids seen so far (for the penalty). */
NX_API nx_status nx_sampler_sample(nx_sampler *smp, const float *logits, int V, const int32_t *history, int n_history,
                                   int32_t *token);

/* ---- generation ------------------------------------------------------------------------------ */
/* Called for every generated token; return non-zero to stop after this token. */
typedef int (*nx_token_fn)(int32_t token, void *user);

typedef struct nx_generate_opts {
    int max_new_tokens;       /* required, > 0 */
    const int32_t *stop_ids;  /* generation ends after emitting one of these (e.g. eos); may be NULL */
    int n_stop_ids;
    bool context_shift;       /* when the cache is full: keep the newest n_ctx/2 tokens, recompute them */
    nx_token_fn on_token;     /* may be NULL */
    void *user;
} nx_generate_opts;

/* Feeds the prompt (appended to whatever the session already holds), then samples up to
 * max_new_tokens tokens. out: NULL or caller memory for max_new_tokens ids; *n_out (may be
 * NULL) receives the number generated, also on error. NX_ERR_RANGE when the context is
 * exhausted and context_shift is off; NX_ERR_CANCELLED is never returned (a callback stop is
 * a normal end). */
NX_API nx_status nx_generate(nx_session *s, nx_sampler *smp, const int32_t *prompt, int n_prompt,
                             const nx_generate_opts *opts, int32_t *out, int *n_out);

#ifdef __cplusplus
}
#endif
#endif /* NEOX_MODEL_H */
