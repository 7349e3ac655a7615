/*
 * trainer.c - a whole training run from an nx_train_config: data loading, the step loop
 * (gradient accumulation, schedule, clipping), validation, metrics.jsonl, and
 * checkpoints with exact resume.
 *
 * Checkpoint = OUT/step{N}/ (N optimizer steps done), an HF model directory:
 *   config.json        GPTNeoXForCausalLM config (fp32)
 *   model.safetensors  fp32 weights, HF names, {"format":"pt"} metadata
 *   train_state.bin    AdamW moments, step, data position, the run's shape/data identity,
 *                      a hash of the weights, and a trailing hash of the file itself
 *   tokenizer files    copied from the config's tokenizer directory, when set
 * It is built in OUT/.step{N}.partial and renamed into place; OUT/latest (written
 * atomically after the rename) names the newest complete checkpoint. A crash at any
 * moment leaves either the previous state or the new one, never a half checkpoint.
 *
 * Resume reads OUT/latest, verifies both hashes and that model shape, batch, sequence
 * length, seed and data list match the config, and only then changes anything on disk
 * (metrics.jsonl is cut back to the checkpoint's step). Because every step is a pure
 * function of (weights, moments, step, data position) and the loader's order depends
 * only on the seed and the position, a resumed run is bit-identical to an uninterrupted
 * one.
 *
 * Data comes in two formats. "indexed": GPT-NeoX/Megatron .bin/.idx datasets read through
 * the data layer's nx_data_stream, which reproduces GPT-NeoX's sample order (GPT2Dataset
 * index mappings, BlendableDataset); global sample i of the run is stream sample i.
 * "raw": files of little-endian token ids (uint16 or uint32); sample j of a file is
 * tokens [j*T, j*T + T] (T+1 tokens: inputs and shifted targets), each epoch of a file a
 * seeded Fisher-Yates permutation, files blended by weight with Megatron's greedy rule.
 * Either way the data position is one counter (samples consumed), saved in checkpoints.
 */
#include "train/train_internal.h"
#include "train/dist.h"
#include "neox/data.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>

#define STATE_MAGIC "NXTRAIN\0"
#define STATE_VERSION 1u

static const char *const k_tok_files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                          "vocab.json", "merges.txt"};
static const char *const k_ckpt_files[] = {"config.json", "model.safetensors", "train_state.bin"};

typedef struct dataset {
    nx_mapped_file mf;
    uint64_t ntok, nsamp;
    uint32_t *perm;       /* permutation of the current epoch (train sets only) */
    uint64_t perm_epoch;  /* epoch held in perm, UINT64_MAX = none */
} dataset;

struct nx_trainer {
    nx_train_config cfg;
    nx_pool *pool;
    nx_tmodel *model;
    dataset train[NX_TRAIN_MAX_DATA], valid[NX_TRAIN_MAX_DATA];
    double wtrain[NX_TRAIN_MAX_DATA], wvalid[NX_TRAIN_MAX_DATA];
    uint64_t counts[NX_TRAIN_MAX_DATA];   /* samples taken from each train set */
    uint64_t consumed;                    /* train samples taken in total */
    long iter;
    double elapsed_prev;                  /* seconds spent in earlier processes (from the checkpoint) */
    double t_start;
    int32_t *tok, *tgt;
    nx_data_stream *tstream, *vstream;   /* indexed format */
    int32_t *sample;                      /* one sample of T+1 tokens */
    FILE *metrics;
    /* Data parallelism (dist.h). Every micro batch's gradient goes to its own buffer and
     * the step's gradient is a fixed tree over the micro batches (acc), with one process
     * too, so that the bits do not depend on the number of processes. */
    nx_dist *dist;           /* borrowed; NULL = one process */
    int rank, nranks;
    nx_grad_acc *acc;
    float *own_grads;        /* the model's own gradient buffer, given back at free */
    float *mloss;            /* this rank's micro-batch losses, then all A of them */
    double comm_s;           /* communication time of the last step */
    nx_zero *zero;           /* ZeRO stage 1: this rank's AdamW state; NULL = the model's own */
};

/* ---- data ------------------------------------------------------------------------------ */
static nx_status open_dataset(const nx_train_config *c, const nx_train_data *d, dataset *ds, bool shuffle) {
    memset(ds, 0, sizeof *ds);
    ds->perm_epoch = UINT64_MAX;
    NX_TRY(nx__file_map(d->path, &ds->mf));
    if (ds->mf.size % (size_t)c->token_bytes)
        return nx__error(NX_ERR_FORMAT, "%s: %zu bytes is not a whole number of %d-byte tokens", d->path, ds->mf.size,
                         c->token_bytes);
    ds->ntok = ds->mf.size / (size_t)c->token_bytes;
    if (ds->ntok < (uint64_t)c->seq_length + 1)
        return nx__error(NX_ERR_FORMAT, "%s: %llu tokens, fewer than one sample of seq_length + 1 = %d", d->path,
                         (unsigned long long)ds->ntok, c->seq_length + 1);
    ds->nsamp = (ds->ntok - 1) / (uint64_t)c->seq_length;
    if (ds->nsamp > UINT32_MAX) return nx__error(NX_ERR_RANGE, "%s: too many samples", d->path);
    if (shuffle) {
        ds->perm = nx__malloc(ds->nsamp * sizeof(uint32_t));
        if (!ds->perm) return nx__error(NX_ERR_NOMEM, "%s: sample permutation", d->path);
    }
    return NX_OK;
}
static void close_dataset(dataset *ds) {
    nx__file_unmap(&ds->mf);
    nx__free(ds->perm);
    memset(ds, 0, sizeof *ds);
}

static uint64_t sample_index(const nx_trainer *t, dataset *ds, int d, uint64_t c) {
    uint64_t epoch = c / ds->nsamp, i = c % ds->nsamp;
    if (!ds->perm) return i;
    if (ds->perm_epoch != epoch) {
        nx_rng r;
        nx__rng_seed(&r, t->cfg.seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(d + 1)) ^ (epoch * 0xd1b54a32d192ed03ull));
        for (uint64_t k = 0; k < ds->nsamp; k++) ds->perm[k] = (uint32_t)k;
        for (uint64_t k = ds->nsamp - 1; k > 0; k--) {
            uint64_t j = nx__rng_next(&r) % (k + 1);
            uint32_t tmp = ds->perm[k];
            ds->perm[k] = ds->perm[j];
            ds->perm[j] = tmp;
        }
        ds->perm_epoch = epoch;
    }
    return ds->perm[i];
}

/* Megatron's blending: the next sample comes from the set whose weight * (s+1) - count is
 * largest (first on ties). */
static int blend_pick(const double *w, const uint64_t *counts, int n, uint64_t s) {
    int best = 0;
    double be = -INFINITY;
    for (int d = 0; d < n; d++) {
        double e = w[d] * (double)(s + 1) - (double)counts[d];
        if (e > be) { be = e; best = d; }
    }
    return best;
}

static nx_status read_sample(const nx_trainer *t, const dataset *ds, uint64_t j, int32_t *tok, int32_t *tgt) {
    int T = t->cfg.seq_length, tb = t->cfg.token_bytes;
    const uint8_t *p = ds->mf.data + j * (uint64_t)T * (uint64_t)tb;
    int V = t->cfg.model.vocab_size;
    for (int k = 0; k <= T; k++) {
        uint32_t v = tb == 2 ? (uint32_t)(p[2 * k] | (p[2 * k + 1] << 8))
                             : (uint32_t)p[4 * k] | ((uint32_t)p[4 * k + 1] << 8) | ((uint32_t)p[4 * k + 2] << 16) |
                                   ((uint32_t)p[4 * k + 3] << 24);
        if (v >= (uint32_t)V)
            return nx__error(NX_ERR_RANGE, "%s: token %u at index %llu is outside the model vocabulary [0, %d)",
                             ds->mf.path, v, (unsigned long long)(j * (uint64_t)T + (uint64_t)k), V);
        if (k < T) tok[k] = (int32_t)v;
        if (k > 0) tgt[k - 1] = (int32_t)v;
    }
    return NX_OK;
}

/* Splits T+1 stream tokens into inputs and targets, checking them against the vocabulary. */
static nx_status split_sample(const nx_trainer *t, uint64_t i, const char *what, int32_t *tok, int32_t *tgt) {
    int T = t->cfg.seq_length, V = t->cfg.model.vocab_size;
    for (int k = 0; k <= T; k++) {
        int32_t v = t->sample[k];
        if (v < 0 || v >= V)
            return nx__error(NX_ERR_RANGE, "%s sample %llu: token %d at position %d is outside the model vocabulary [0, %d)",
                             what, (unsigned long long)i, v, k, V);
        if (k < T) tok[k] = v;
        if (k > 0) tgt[k - 1] = v;
    }
    return NX_OK;
}

static nx_status stream_sample(nx_trainer *t, nx_data_stream *s, uint64_t i, const char *what, int32_t *tok,
                               int32_t *tgt) {
    if (i >= nx_data_stream_count(s))
        return nx__error(NX_ERR_RANGE, "%s data: sample %llu requested but the stream holds %llu", what,
                         (unsigned long long)i, (unsigned long long)nx_data_stream_count(s));
    NX_TRY(nx_data_stream_sample(s, i, t->sample));
    return split_sample(t, i, what, tok, tgt);
}

/* Fills the B rows of the micro batch with the next train samples. */
static nx_status next_train_batch(nx_trainer *t) {
    int B = t->cfg.micro_batch, T = t->cfg.seq_length;
    if (t->tstream) {
        for (int b = 0; b < B; b++, t->consumed++)
            NX_TRY(stream_sample(t, t->tstream, t->consumed, "train", t->tok + (long)b * T, t->tgt + (long)b * T));
        return NX_OK;
    }
    for (int b = 0; b < B; b++) {
        int d = blend_pick(t->wtrain, t->counts, t->cfg.n_train, t->consumed);
        uint64_t j = sample_index(t, &t->train[d], d, t->counts[d]);
        NX_TRY(read_sample(t, &t->train[d], j, t->tok + (long)b * T, t->tgt + (long)b * T));
        t->counts[d]++;
        t->consumed++;
    }
    return NX_OK;
}

/* Advances the data position past one micro batch that another rank trains on, without
 * reading it (the blend counters move exactly as next_train_batch moves them). */
static void skip_train_batch(nx_trainer *t) {
    int B = t->cfg.micro_batch;
    if (t->tstream) { t->consumed += (uint64_t)B; return; }
    for (int b = 0; b < B; b++) {
        int d = blend_pick(t->wtrain, t->counts, t->cfg.n_train, t->consumed);
        t->counts[d]++;
        t->consumed++;
    }
}

/* Validation: the first eval_iters micro batches of the blended validation sets, in file
 * order, the same every time so that values are comparable across steps. */
static nx_status evaluate(nx_trainer *t, float *out) {
    int B = t->cfg.micro_batch, T = t->cfg.seq_length;
    uint64_t counts[NX_TRAIN_MAX_DATA] = {0}, s = 0;
    double sum = 0.0;
    for (long it = 0; it < t->cfg.eval_iters; it++) {
        for (int b = 0; b < B && t->vstream; b++, s++)
            NX_TRY(stream_sample(t, t->vstream, s, "valid", t->tok + (long)b * T, t->tgt + (long)b * T));
        for (int b = 0; b < B && !t->vstream; b++, s++) {
            int d = blend_pick(t->wvalid, counts, t->cfg.n_valid, s);
            uint64_t j = counts[d] % t->valid[d].nsamp;
            NX_TRY(read_sample(t, &t->valid[d], j, t->tok + (long)b * T, t->tgt + (long)b * T));
            counts[d]++;
        }
        float l;
        NX_TRY(nx_tmodel_forward(t->model, t->pool, t->tok, t->tgt, &l));
        sum += l;
    }
    *out = (float)(sum / (double)t->cfg.eval_iters);
    return NX_OK;
}

/* ---- checkpoint files -------------------------------------------------------------------- */
static uint64_t cfg_data_hash(const nx_train_config *c) {
    uint64_t h = NX_FNV_INIT;
    for (int i = 0; i < c->n_train; i++) {
        h = nx__fnv1a(h, c->train[i].path, strlen(c->train[i].path));
        h = nx__fnv1a(h, &c->train[i].weight, sizeof(double));
    }
    int32_t fmt[3] = {(int32_t)c->data_format, c->preshuffled, c->token_bytes};
    h = nx__fnv1a(h, fmt, sizeof fmt);
    /* GPT-NeoX's order depends on the number of samples the run needs (epochs rule). */
    if (c->data_format == NX_DATA_INDEXED) h = nx__fnv1a(h, &c->train_iters, sizeof c->train_iters);
    return h;
}

/* Identity of a run: what must match for a checkpoint to be resumed under a config. */
typedef struct run_identity {
    int64_t vocab, hidden, layers, heads, inter, rotary, parallel, tied, bias, act;
    int64_t micro_batch, seq_length, grad_accum;
    uint64_t seed, data_hash;
} run_identity;

static run_identity identity_of(const nx_train_config *c) {
    const nx_model_config *m = &c->model;
    return (run_identity){m->vocab_size, m->hidden_size, m->n_layer, m->n_head, m->intermediate_size, m->rotary_dim,
                          m->parallel_residual, m->tie_word_embeddings, m->attention_bias, m->act, c->micro_batch,
                          c->seq_length, c->grad_accum, c->seed, cfg_data_hash(c)};
}

typedef struct state_header {
    char magic[8];
    uint32_t version, header_bytes;
    int64_t iter;
    uint64_t consumed;
    uint64_t counts[NX_TRAIN_MAX_DATA];
    uint64_t nparams;           /* floats per moment buffer (sum of tensor sizes) */
    uint64_t params_hash;       /* over the weights as stored in model.safetensors */
    run_identity id;
} state_header;

static uint64_t hash_params(nx_tmodel *m) {
    uint64_t h = NX_FNV_INIT;
    for (size_t i = 0; i < nx_tmodel_num_tensors(m); i++)
        h = nx__fnv1a(h, nx_tmodel_param_data(m, i), nx_tmodel_tensor(m, i)->numel * sizeof(float));
    return h;
}

/* Buffered atomic writer that hashes what it writes. */
typedef struct { nx_atomic_file af; uint64_t h; nx_status st; } hwriter;
static void hw_write(hwriter *w, const void *p, size_t n) {
    if (w->st != NX_OK) return;
    w->h = nx__fnv1a(w->h, p, n);
    w->st = nx__atomic_write(&w->af, p, n);
}

/* Writes the moments of flat elements [lo, hi) (v[i - lo]) in the file's layout: each
 * tensor's numel floats in tensor order, padding left out. Called with increasing ranges,
 * so the bytes come in file order; a tensor cut by a range boundary is written in two
 * pieces, which hash the same (the cut is a multiple of 16 floats from the tensor start
 * and nx__fnv1a works in 8-byte words). */
typedef struct { nx_tmodel *m; hwriter *w; } moment_writer;
static nx_status write_moment_range(void *ctx, size_t lo, size_t hi, const float *v) {
    moment_writer *mw = ctx;
    for (size_t i = 0; i < nx_tmodel_num_tensors(mw->m); i++) {
        size_t off = nx__tmodel_offset(mw->m, i), a = NX_MAX(off, lo);
        size_t b = NX_MIN(off + nx_tmodel_tensor(mw->m, i)->numel, hi);
        if (a < b) hw_write(mw->w, v + (a - lo), (b - a) * sizeof(float));
    }
    return mw->w->st;
}

/* A rank other than 0 when rank 0 saves a checkpoint: sends its optimizer shard (ZeRO). */
static nx_status help_save(nx_trainer *t) {
    double comm = 0;
    for (int which = 0; which < 2 && t->zero && t->nranks > 1; which++)
        NX_TRY(nx__zero_save_moment(t->zero, which, NULL, NULL, &comm));
    return NX_OK;
}

static nx_status write_state(nx_trainer *t, const char *path) {
    nx_tmodel *m = t->model;
    state_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, STATE_MAGIC, 8);
    h.version = STATE_VERSION;
    h.header_bytes = sizeof h;
    h.iter = t->iter;
    h.consumed = t->consumed;
    memcpy(h.counts, t->counts, sizeof h.counts);
    h.nparams = nx_tmodel_num_params(m);
    h.params_hash = hash_params(m);
    h.id = identity_of(&t->cfg);
    hwriter w = {.h = NX_FNV_INIT};
    w.st = nx__atomic_open(&w.af, path);
    if (w.st != NX_OK) return w.st;
    hw_write(&w, &h, sizeof h);
    /* With ZeRO the moments come from every rank's shard (a collective: the other ranks
     * take part through help_save). */
    moment_writer mw = {m, &w};
    for (int which = 0; which < 2; which++) {
        double comm = 0;
        float *buf = t->zero ? NULL : which ? nx__tmodel_adam_v(m) : nx__tmodel_adam_m(m);
        nx_status st = t->zero ? nx__zero_save_moment(t->zero, which, write_moment_range, &mw, &comm)
                     : buf ? write_moment_range(&mw, 0, nx__tmodel_flat_size(m), buf) : NX_ERR_NOMEM;
        if (st != NX_OK && w.st == NX_OK) w.st = st;
    }
    uint64_t tail = w.h;
    hw_write(&w, &tail, sizeof tail);
    if (w.st != NX_OK) { nx__atomic_abort(&w.af); return w.st; }
    return nx__atomic_commit(&w.af);
}

static nx_status write_hf_config(const nx_train_config *c, const char *path) {
    const nx_model_config *m = &c->model;
    json_t *o = json_object();
    json_t *arch = json_array();
    json_array_append_new(arch, json_string("GPTNeoXForCausalLM"));
    json_object_set_new(o, "architectures", arch);
    json_object_set_new(o, "model_type", json_string("gpt_neox"));
    json_object_set_new(o, "vocab_size", json_integer(m->vocab_size));
    json_object_set_new(o, "hidden_size", json_integer(m->hidden_size));
    json_object_set_new(o, "num_hidden_layers", json_integer(m->n_layer));
    json_object_set_new(o, "num_attention_heads", json_integer(m->n_head));
    json_object_set_new(o, "intermediate_size", json_integer(m->intermediate_size));
    json_object_set_new(o, "hidden_act",
                        json_string(m->act == NX_ACT_GELU ? "gelu" : m->act == NX_ACT_GELU_FAST ? "gelu_fast" : "gelu_new"));
    json_object_set_new(o, "rotary_pct", json_real(m->rotary_pct));
    json_object_set_new(o, "rotary_emb_base", json_real(m->rope_theta));
    json_object_set_new(o, "max_position_embeddings", json_integer(m->max_position_embeddings));
    json_object_set_new(o, "layer_norm_eps", json_real(m->layer_norm_eps));
    json_object_set_new(o, "use_parallel_residual", json_boolean(m->parallel_residual));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(m->tie_word_embeddings));
    json_object_set_new(o, "attention_bias", json_boolean(m->attention_bias));
    json_object_set_new(o, "attention_dropout", json_real(0.0));
    json_object_set_new(o, "hidden_dropout", json_real(0.0));
    json_object_set_new(o, "initializer_range", json_real(c->init_std));
    json_object_set_new(o, "bos_token_id", m->bos_token_id >= 0 ? json_integer(m->bos_token_id) : json_null());
    json_object_set_new(o, "eos_token_id", m->eos_token_id >= 0 ? json_integer(m->eos_token_id) : json_null());
    json_object_set_new(o, "use_cache", json_true());
    json_object_set_new(o, "torch_dtype", json_string("float32"));
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!s) return nx__error(NX_ERR_NOMEM, "%s", path);
    nx_atomic_file af;
    nx_status st = nx__atomic_open(&af, path);
    if (st == NX_OK) st = nx__atomic_write(&af, s, strlen(s));
    if (st == NX_OK) st = nx__atomic_write(&af, "\n", 1);
    free(s);
    if (st == NX_OK) return nx__atomic_commit(&af);
    nx__atomic_abort(&af);
    return st;
}

static nx_status copy_file(const char *src, const char *dst) {
    char *buf = NULL;
    size_t len = 0;
    NX_TRY(nx__file_read_all(src, &buf, &len));
    nx_atomic_file af;
    nx_status st = nx__atomic_open(&af, dst);
    if (st == NX_OK) st = nx__atomic_write(&af, buf, len);
    nx__free(buf);
    if (st == NX_OK) return nx__atomic_commit(&af);
    nx__atomic_abort(&af);
    return st;
}

/* Removes a checkpoint-shaped directory by its known file names (we never list or
 * delete anything we did not write). Missing files are fine. */
static void remove_ckpt_dir(const char *dir) {
    for (size_t i = 0; i < NX_ARRAY_LEN(k_ckpt_files) + NX_ARRAY_LEN(k_tok_files); i++) {
        const char *f = i < NX_ARRAY_LEN(k_ckpt_files) ? k_ckpt_files[i] : k_tok_files[i - NX_ARRAY_LEN(k_ckpt_files)];
        char *p = nx__path_join(dir, f);
        if (p) { remove(p); nx__free(p); }
    }
    remove(dir);
}

static nx_status save_checkpoint(nx_trainer *t) {
    char name[64], tmpname[80];
    snprintf(name, sizeof name, "step%ld", t->iter);
    snprintf(tmpname, sizeof tmpname, ".step%ld.partial", t->iter);
    char *tmp = nx__path_join(t->cfg.out_dir, tmpname), *fin = nx__path_join(t->cfg.out_dir, name);
    char *latest = nx__path_join(t->cfg.out_dir, "latest");
    nx_status st = NX_OK;
    nx_tensor_write *tw = NULL;
    if (!tmp || !fin || !latest) { st = nx__error(NX_ERR_NOMEM, "checkpoint path"); goto done; }
    if (nx__dir_exists(tmp)) remove_ckpt_dir(tmp);   /* left by a killed run */
    if ((st = nx__mkdir_p(tmp)) != NX_OK) goto done;
    char *p = nx__path_join(tmp, "config.json");
    st = p ? write_hf_config(&t->cfg, p) : NX_ERR_NOMEM;
    nx__free(p);
    if (st != NX_OK) goto done;
    size_t n = nx_tmodel_num_tensors(t->model);
    tw = nx__calloc(n, sizeof *tw);
    if (!tw) { st = nx__error(NX_ERR_NOMEM, "checkpoint"); goto done; }
    for (size_t i = 0; i < n; i++) {
        const nx_tparam_info *ti = nx_tmodel_tensor(t->model, i);
        tw[i] = (nx_tensor_write){.name = ti->name, .dtype = NX_F32, .ndim = ti->ndim,
                                  .data = nx_tmodel_param_data(t->model, i)};
        tw[i].shape[0] = ti->shape[0];
        tw[i].shape[1] = ti->shape[1];
    }
    static const char *const meta[] = {"format", "pt"};
    p = nx__path_join(tmp, "model.safetensors");
    st = p ? nx_safetensors_write(p, tw, n, meta, 1) : NX_ERR_NOMEM;
    nx__free(p);
    if (st != NX_OK) goto done;
    p = nx__path_join(tmp, "train_state.bin");
    st = p ? write_state(t, p) : NX_ERR_NOMEM;
    nx__free(p);
    if (st != NX_OK) goto done;
    if (t->cfg.tokenizer_dir[0]) {
        for (size_t i = 0; i < NX_ARRAY_LEN(k_tok_files) && st == NX_OK; i++) {
            char *src = nx__path_join(t->cfg.tokenizer_dir, k_tok_files[i]), *dst = nx__path_join(tmp, k_tok_files[i]);
            if (src && dst && nx__file_exists(src)) st = copy_file(src, dst);
            nx__free(src);
            nx__free(dst);
        }
        if (st != NX_OK) goto done;
    }
    /* A directory of this name can only be a complete checkpoint from a run that was
     * killed after its rename but before `latest` moved; this run recreates it. */
    if (nx__dir_exists(fin)) remove_ckpt_dir(fin);
    if (rename(tmp, fin) != 0) { st = nx__error(NX_ERR_IO, "%s: cannot rename to %s", tmp, fin); goto done; }
    nx_atomic_file af;
    if ((st = nx__atomic_open(&af, latest)) == NX_OK) {
        st = nx__atomic_write(&af, name, strlen(name));
        if (st == NX_OK) st = nx__atomic_write(&af, "\n", 1);
        if (st == NX_OK) st = nx__atomic_commit(&af);
        else nx__atomic_abort(&af);
    }
done:
    nx__free(tw);
    nx__free(tmp);
    nx__free(fin);
    nx__free(latest);
    return st;
}

bool nx_train_checkpoint_due(const nx_train_config *c, long step) {
    if (step == c->train_iters) return true;
    if (c->checkpoint_log_steps && step <= 512 && (step == 0 || (step & (step - 1)) == 0)) return true;
    return c->checkpoint_every > 0 && step > 0 && step % c->checkpoint_every == 0;
}

#define CHECK_ID(field, what)                                                                                    \
    if (ck->id.field != cur.field)                                                                               \
        return nx__error(NX_ERR_FORMAT, "%s: checkpoint has %s %lld but the config has %lld; refusing to resume", \
                         path, what, (long long)ck->id.field, (long long)cur.field)

static nx_status check_identity(const char *path, const state_header *ck, const nx_train_config *c) {
    run_identity cur = identity_of(c);
    CHECK_ID(vocab, "vocab_size");
    CHECK_ID(hidden, "hidden_size");
    CHECK_ID(layers, "num_hidden_layers");
    CHECK_ID(heads, "num_attention_heads");
    CHECK_ID(inter, "intermediate_size");
    CHECK_ID(rotary, "rotary dims");
    CHECK_ID(parallel, "use_parallel_residual");
    CHECK_ID(tied, "tie_word_embeddings");
    CHECK_ID(bias, "attention_bias");
    CHECK_ID(act, "hidden_act");
    CHECK_ID(micro_batch, "micro batch");
    CHECK_ID(seq_length, "seq_length");
    CHECK_ID(grad_accum, "gradient_accumulation_steps");
    CHECK_ID(seed, "seed");
    if (ck->id.data_hash != cur.data_hash)
        return nx__error(NX_ERR_FORMAT, "%s: checkpoint was trained on a different data list (paths, weights or "
                                        "token_bytes); refusing to resume", path);
    return NX_OK;
}

static nx_status load_checkpoint(nx_trainer *t) {
    char *latest = nx__path_join(t->cfg.out_dir, "latest"), *txt = NULL, *dir = NULL, *sp = NULL, *mp = NULL;
    size_t len = 0;
    nx_status st;
    nx_mapped_file mf = {0};
    nx_tensorset *ts = NULL;
    if (!latest) return nx__error(NX_ERR_NOMEM, "resume");
    if (!nx__file_exists(latest)) {
        st = nx__error(NX_ERR_NOT_FOUND, "%s: no checkpoint to resume from (%s is missing)", t->cfg.out_dir, latest);
        goto done;
    }
    if ((st = nx__file_read_all(latest, &txt, &len)) != NX_OK) goto done;
    while (len && (txt[len - 1] == '\n' || txt[len - 1] == '\r')) txt[--len] = 0;
    long step = -1;
    if (sscanf(txt, "step%ld", &step) != 1 || step < 0 || strchr(txt, '/')) {
        st = nx__error(NX_ERR_FORMAT, "%s: expected \"step<N>\", found \"%.40s\"", latest, txt);
        goto done;
    }
    dir = nx__path_join(t->cfg.out_dir, txt);
    sp = dir ? nx__path_join(dir, "train_state.bin") : NULL;
    mp = dir ? nx__path_join(dir, "model.safetensors") : NULL;
    if (!sp || !mp) { st = nx__error(NX_ERR_NOMEM, "resume"); goto done; }
    if ((st = nx__file_map(sp, &mf)) != NX_OK) goto done;
    nx_tmodel *m = t->model;
    uint64_t np = nx_tmodel_num_params(m);
    size_t want = sizeof(state_header) + 2 * np * sizeof(float) + sizeof(uint64_t);
    state_header h;
    if (mf.size < sizeof h) { st = nx__error(NX_ERR_FORMAT, "%s: truncated (%zu bytes)", sp, mf.size); goto done; }
    memcpy(&h, mf.data, sizeof h);
    if (memcmp(h.magic, STATE_MAGIC, 8) || h.version != STATE_VERSION || h.header_bytes != sizeof h) {
        st = nx__error(NX_ERR_FORMAT, "%s: not a neox train state (version %u of this build)", sp, STATE_VERSION);
        goto done;
    }
    if ((st = check_identity(sp, &h, &t->cfg)) != NX_OK) goto done;
    if (h.nparams != np || mf.size != want) {
        st = nx__error(NX_ERR_FORMAT, "%s: %zu bytes, expected %zu for %llu parameters (truncated or mismatched)", sp,
                       mf.size, want, (unsigned long long)np);
        goto done;
    }
    /* Hash in the same pieces the writer used (header, then each tensor's moments). */
    uint64_t tail, hh = nx__fnv1a(NX_FNV_INIT, mf.data, sizeof h);
    const uint8_t *q = mf.data + sizeof h;
    for (int which = 0; which < 2; which++)
        for (size_t i = 0; i < nx_tmodel_num_tensors(m); i++) {
            size_t nb = nx_tmodel_tensor(m, i)->numel * sizeof(float);
            hh = nx__fnv1a(hh, q, nb);
            q += nb;
        }
    memcpy(&tail, mf.data + want - sizeof tail, sizeof tail);
    if (hh != tail) {
        st = nx__error(NX_ERR_FORMAT, "%s: checksum mismatch (the file is corrupt)", sp);
        goto done;
    }
    if (h.iter != step || h.iter > t->cfg.train_iters) {
        st = nx__error(NX_ERR_FORMAT, "%s: state is for step %lld, expected %ld (<= train_iters %ld)", sp,
                       (long long)h.iter, step, t->cfg.train_iters);
        goto done;
    }
    if ((st = nx_tensorset_open(mp, &ts)) != NX_OK) goto done;
    for (size_t i = 0; i < nx_tmodel_num_tensors(m); i++) {
        const nx_tparam_info *pi = nx_tmodel_tensor(m, i);
        const nx_tensor_info *ti = nx_tensorset_find(ts, pi->name);
        if (!ti) { st = nx__error(NX_ERR_NOT_FOUND, "%s: tensor '%s' is missing", mp, pi->name); goto done; }
        bool shape_ok = ti->ndim == pi->ndim && ti->shape[0] == pi->shape[0] && (pi->ndim < 2 || ti->shape[1] == pi->shape[1]);
        if (ti->dtype != NX_F32 || !shape_ok || ti->nbytes != pi->numel * sizeof(float)) {
            st = nx__error(NX_ERR_FORMAT, "%s: tensor '%s': expected F32 of %zu elements, found %s of %zu bytes", mp,
                           pi->name, pi->numel, nx_dtype_name(ti->dtype), ti->nbytes);
            goto done;
        }
        memcpy(nx_tmodel_param_data(m, i), ti->data, ti->nbytes);
    }
    if (hash_params(m) != h.params_hash) {
        st = nx__error(NX_ERR_FORMAT, "%s: weights do not match the hash recorded in %s (corrupt checkpoint)", mp, sp);
        goto done;
    }
    /* The moments of flat elements [lo, hi) go to buf[i - lo]: everything, or with ZeRO
     * this rank's shard (any N reads any checkpoint). */
    const uint8_t *p = mf.data + sizeof h;
    for (int which = 0; which < 2; which++) {
        size_t lo = 0, hi = nx__tmodel_flat_size(m);
        float *buf = t->zero ? nx__zero_moment(t->zero, which) : which ? nx__tmodel_adam_v(m) : nx__tmodel_adam_m(m);
        if (!buf) { st = NX_ERR_NOMEM; goto done; }
        if (t->zero) nx__zero_range(t->zero, &lo, &hi);
        for (size_t i = 0; i < nx_tmodel_num_tensors(m); i++) {
            size_t off = nx__tmodel_offset(m, i), ne = nx_tmodel_tensor(m, i)->numel;
            size_t a = NX_MAX(off, lo), b = NX_MIN(off + ne, hi);
            if (a < b) memcpy(buf + (a - lo), p + (a - off) * sizeof(float), (b - a) * sizeof(float));
            p += ne * sizeof(float);
        }
    }
    nx__tmodel_set_step_count(m, (long)h.iter);
    nx__tmodel_weights_changed(m);
    t->iter = (long)h.iter;
    t->consumed = h.consumed;
    memcpy(t->counts, h.counts, sizeof t->counts);
done:
    nx_tensorset_free(ts);
    nx__file_unmap(&mf);
    nx__free(latest); nx__free(txt); nx__free(dir); nx__free(sp); nx__free(mp);
    return st;
}

/* Keeps the metrics lines of steps <= step (a resumed run rewrites what follows). */
/* Wall time is kept out of the checkpoint so that checkpoints are bit-identical between
 * runs; a resumed run continues the clock from the last kept metrics line instead. */
static nx_status trim_metrics(const char *path, long step, double *elapsed) {
    if (!nx__file_exists(path)) return NX_OK;
    char *txt = NULL;
    size_t len = 0;
    NX_TRY(nx__file_read_all(path, &txt, &len));
    nx_buf out = {0};
    for (char *line = txt; line < txt + len;) {
        char *nl = memchr(line, '\n', (size_t)(txt + len - line));
        if (!nl) break;   /* a torn last line from a kill: dropped */
        long s = -1;
        if (sscanf(line, "{\"step\":%ld", &s) == 1 && s <= step) {
            nx__buf_append(&out, line, (size_t)(nl - line + 1));
            const char *e = strstr(line, "\"elapsed_s\":");
            if (e && e < nl) *elapsed = strtod(e + 12, NULL);
        }
        line = nl + 1;
    }
    nx__free(txt);
    if (out.oom) { nx__buf_free(&out); return nx__error(NX_ERR_NOMEM, "%s", path); }
    nx_atomic_file af;
    nx_status st = nx__atomic_open(&af, path);
    if (st == NX_OK && out.len) st = nx__atomic_write(&af, out.data, out.len);
    nx__buf_free(&out);
    if (st == NX_OK) return nx__atomic_commit(&af);
    nx__atomic_abort(&af);
    return st;
}

/* An indexed-data stream over `n` paths with `iters` x `batch` samples in GPT-NeoX order. */
static nx_status open_stream(const nx_train_config *c, const nx_train_data *d, int n, long batch, long iters,
                             nx_data_stream **out) {
    nx_data_config dc;
    memset(&dc, 0, sizeof dc);
    if (n > NX_DATA_MAX_PATHS) return nx__error(NX_ERR_RANGE, "too many data paths (%d)", n);
    dc.n_paths = n;
    for (int i = 0; i < n; i++) {
        dc.paths[i] = (char *)d[i].path;   /* borrowed for the call; never cleared */
        dc.weights[i] = d[i].weight;
    }
    dc.use_split = false;
    dc.seq_length = c->seq_length;
    dc.global_batch = batch;
    dc.train_iters = iters;
    dc.seed = (uint32_t)c->seed;
    dc.preshuffled = c->preshuffled;
    NX_TRY(nx_data_stream_open(&dc, out));
    if (nx_data_stream_sample_len(*out) != c->seq_length + 1)
        return nx__error(NX_ERR_FORMAT, "%s: samples of %lld tokens, expected seq_length + 1 = %d", d[0].path,
                         (long long)nx_data_stream_sample_len(*out), c->seq_length + 1);
    return NX_OK;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */
void nx_trainer_free(nx_trainer *t) {
    if (!t) return;
    if (t->own_grads) nx__tmodel_swap_grads(t->model, t->own_grads);
    nx__grad_acc_free(t->acc);
    nx__zero_free(t->zero);
    nx__free(t->mloss);
    for (int i = 0; i < NX_TRAIN_MAX_DATA; i++) { close_dataset(&t->train[i]); close_dataset(&t->valid[i]); }
    nx_tmodel_free(t->model);
    nx_pool_free(t->pool);
    nx_data_stream_free(t->tstream);
    nx_data_stream_free(t->vstream);
    nx__free(t->sample);
    nx__free(t->tok);
    nx__free(t->tgt);
    if (t->metrics) fclose(t->metrics);
    nx__free(t);
}

nx_status nx_trainer_create(const nx_train_config *cfg, bool resume, nx_trainer **out) {
    return nx_trainer_create_dist(cfg, resume, NULL, out);
}

/* The model's backward pass finished the gradients of [lo, end): the tree additions and the
 * exchange of those slices can start (overlap_comm). */
static void on_grad_ready(void *ctx, size_t lo) {
    nx_trainer *t = ctx;
    nx__grad_acc_ready(t->acc, t->pool, lo);
}

/* With a group, every rank runs this; the ranks agree on the outcome (after the checks
 * that every rank makes, before rank 0 writes anything; before the first checkpoint, which
 * with ZeRO is a collective; and at the end), so that one failing rank never leaves the
 * others waiting, and no rank sees rank 0's first checkpoint as "existing checkpoints". */
nx_status nx_trainer_create_dist(const nx_train_config *cfg, bool resume, nx_dist *dist, nx_trainer **out) {
    *out = NULL;
    int agreed = 0;
    nx_trainer *t = nx__calloc(1, sizeof *t);
    if (!t) {
        nx_status e = nx__error(NX_ERR_NOMEM, "trainer");
        for (int i = 0; i < 3; i++) nx__dist_agree(dist, e);
        return e;
    }
    t->cfg = *cfg;
    t->dist = dist;
    t->rank = nx_dist_rank(dist);
    t->nranks = nx_dist_size(dist);
    t->t_start = nx_time_s();
    nx_status st = NX_OK;
    bool writer = t->rank == 0;
#define FAIL(x) do { st = (x); goto fail; } while (0)
    if (cfg->n_train <= 0) FAIL(nx__error(NX_ERR_INVALID_ARG, "train config: no training data"));
    if (cfg->grad_accum % t->nranks)
        FAIL(nx__error(NX_ERR_INVALID_ARG, "gradient_accumulation_steps %d (the global batch in micro batches) is not a "
                                           "multiple of the %d processes", cfg->grad_accum, t->nranks));
    if (cfg->tokenizer_dir[0]) {
        char *p = nx__path_join(cfg->tokenizer_dir, "tokenizer.json");
        bool ok = p && nx__file_exists(p);
        nx__free(p);
        if (!ok) FAIL(nx__error(NX_ERR_NOT_FOUND, "%s: tokenizer.json not found", cfg->tokenizer_dir));
    }
    double ws = 0, wv = 0;
    t->sample = nx__malloc(((size_t)cfg->seq_length + 1) * sizeof(int32_t));
    if (!t->sample) FAIL(nx__error(NX_ERR_NOMEM, "trainer"));
    if (cfg->data_format == NX_DATA_INDEXED) {
        if ((st = open_stream(cfg, cfg->train, cfg->n_train, cfg->global_batch, cfg->train_iters, &t->tstream)) != NX_OK)
            goto fail;
        if (cfg->n_valid &&
            (st = open_stream(cfg, cfg->valid, cfg->n_valid, cfg->micro_batch, cfg->eval_iters, &t->vstream)) != NX_OK)
            goto fail;
    }
    for (int i = 0; i < cfg->n_train && !t->tstream; i++) {
        if ((st = open_dataset(cfg, &cfg->train[i], &t->train[i], true)) != NX_OK) goto fail;
        ws += cfg->train[i].weight;
    }
    for (int i = 0; i < cfg->n_valid && !t->vstream; i++) {
        if ((st = open_dataset(cfg, &cfg->valid[i], &t->valid[i], false)) != NX_OK) goto fail;
        wv += cfg->valid[i].weight;
    }
    for (int i = 0; i < cfg->n_train && ws > 0; i++) t->wtrain[i] = cfg->train[i].weight / ws;
    for (int i = 0; i < cfg->n_valid && wv > 0; i++) t->wvalid[i] = cfg->valid[i].weight / wv;
    if ((st = nx_tmodel_create(&cfg->model, cfg->micro_batch, cfg->seq_length, &t->model)) != NX_OK) goto fail;
    if ((st = nx_tmodel_set_bf16(t->model, cfg->bf16)) != NX_OK) goto fail;
    t->pool = nx_pool_create(cfg->threads);
    size_t bt = (size_t)cfg->micro_batch * (size_t)cfg->seq_length;
    t->tok = nx__malloc(bt * sizeof(int32_t));
    t->tgt = nx__malloc(bt * sizeof(int32_t));
    if (!t->pool || !t->tok || !t->tgt) FAIL(nx__error(NX_ERR_NOMEM, "trainer"));
    t->mloss = nx__calloc((size_t)cfg->grad_accum, sizeof(float));
    if (!t->mloss) FAIL(nx__error(NX_ERR_NOMEM, "trainer"));
    t->own_grads = nx__tmodel_swap_grads(t->model, NULL);
    nx__tmodel_swap_grads(t->model, t->own_grads);
    if ((st = nx__grad_acc_create(dist, cfg->grad_accum, nx__tmodel_flat_size(t->model), t->own_grads, &t->acc)) != NX_OK)
        goto fail;
    if (cfg->zero_stage < 0 || cfg->zero_stage > 1)
        FAIL(nx__error(NX_ERR_UNSUPPORTED, "ZeRO stage %d: only 0 and 1 are implemented", cfg->zero_stage));
    if (cfg->zero_stage == 1) {
        if ((st = nx__zero_create(dist, nx__tmodel_flat_size(t->model), &t->zero)) != NX_OK) goto fail;
        nx__grad_acc_shard_only(t->acc, true);
    }
    if (cfg->overlap_comm && t->nranks > 1) nx__tmodel_set_grad_hook(t->model, on_grad_ready, t);
    char *latest = nx__path_join(cfg->out_dir, "latest");
    char *mpath = nx__path_join(cfg->out_dir, "metrics.jsonl");
    if (!latest || !mpath) { nx__free(latest); nx__free(mpath); FAIL(nx__error(NX_ERR_NOMEM, "trainer")); }
    bool has_ckpt = nx__file_exists(latest);
    nx__free(latest);
    if (resume) {
        st = load_checkpoint(t);
        if (st == NX_OK && writer) st = trim_metrics(mpath, t->iter, &t->elapsed_prev);
    } else if (has_ckpt) {
        st = nx__error(NX_ERR_STATE, "%s already holds checkpoints: pass --resume to continue, or choose another "
                                     "\"save\" directory", cfg->out_dir);
    } else {
        st = writer ? nx__mkdir_p(cfg->out_dir) : NX_OK;
        if (st == NX_OK) {
            nx_tmodel_init(t->model, cfg->init, cfg->output_init, cfg->init_std, cfg->seed);
            if (writer) st = trim_metrics(mpath, -1, &t->elapsed_prev);
        }
    }
    agreed = 1;
    st = nx__dist_agree(dist, st);
    if (st == NX_OK && writer) {
        t->metrics = fopen(mpath, "ab");
        if (!t->metrics) st = nx__error(NX_ERR_IO, "%s: cannot open for appending", mpath);
    }
    nx__free(mpath);
    /* Saving may be a collective (ZeRO): all ranks go into it, or none. */
    agreed = 2;
    st = nx__dist_agree(dist, st);
    if (st == NX_OK && !resume && nx_train_checkpoint_due(cfg, 0)) st = writer ? save_checkpoint(t) : help_save(t);
    agreed = 3;
    if ((st = nx__dist_agree(dist, st)) != NX_OK) goto fail;
    *out = t;
    return NX_OK;
fail:
    /* Every rank takes part in all three agreements, whichever path it failed on. */
    for (; agreed < 3; agreed++) nx__dist_agree(dist, st);
    nx_trainer_free(t);
    return st;
#undef FAIL
}

double nx_trainer_comm_seconds(const nx_trainer *t) { return t->comm_s; }

long nx_trainer_iter(const nx_trainer *t) { return t->iter; }
nx_tmodel *nx_trainer_model(nx_trainer *t) { return t->model; }

nx_status nx_trainer_step(nx_trainer *t, nx_train_metrics *out) {
    memset(out, 0, sizeof *out);
    if (t->iter >= t->cfg.train_iters) return nx__error(NX_ERR_STATE, "training is complete (%ld iterations)", t->iter);
    double t0 = nx_time_s();
    long it = t->iter + 1;
    double lr = nx_lr_at(&t->cfg.lr, it);
    double tot = 0.0;
    int A = t->cfg.grad_accum, N = t->nranks;
    float inv = 1.0f / (float)A;
    t->comm_s = 0.0;
    /* The step's samples in order are micro batches k = 0..A-1; rank r trains the contiguous
     * block r*c .. r*c + c - 1 (c = A/N), each into its own zeroed gradient buffer, and
     * moves the data position past the others without reading them. */
    int c = A / N;
    for (int k = 0; k < A; k++) {
        if (k / c != t->rank) { skip_train_batch(t); continue; }
        NX_TRY(next_train_batch(t));
        float *buf = nx__grad_acc_next(t->acc);
        if (!buf) return NX_ERR_NOMEM;   /* message recorded by nx__grad_acc_next */
        nx__tmodel_swap_grads(t->model, buf);
        nx_tmodel_zero_grad(t->model);
        /* With overlap_comm the model's hook (on_grad_ready) runs the additions and sends
         * during the backward pass; the last call completes whatever is left. */
        NX_TRY(nx__grad_acc_begin(t->acc, buf));
        NX_TRY(nx_tmodel_forward_backward(t->model, t->pool, t->tok, t->tgt, inv, &t->mloss[k - t->rank * c]));
        nx__grad_acc_ready(t->acc, t->pool, 0);
    }
    float *gsum = NULL;
    NX_TRY(nx__grad_acc_finish(t->acc, t->pool, &gsum, &t->comm_s));
    nx__tmodel_swap_grads(t->model, gsum);
    float *all = t->mloss;
    NX_TRY(nx__dist_gather_losses(t->dist, t->mloss, A, all, &t->comm_s));
    for (int k = 0; k < A; k++) tot += all[k];
    float gn = 0.0f;
    if (t->zero) NX_TRY(nx__zero_step(t->zero, t->model, t->pool, &t->cfg.adamw, lr, &gn, &t->comm_s));
    else NX_TRY(nx_tmodel_adamw_step(t->model, t->pool, &t->cfg.adamw, lr, &gn));
    t->iter = it;
    double dt = nx_time_s() - t0;
    out->step = it;
    out->loss = (float)(tot / t->cfg.grad_accum);
    out->lr = (float)lr;
    out->grad_norm = gn;
    out->tokens_per_s = (double)t->cfg.global_batch * t->cfg.seq_length / (dt > 0 ? dt : 1e-9);
    /* Only rank 0 reports and writes; the others go on to the next step (after sending
     * their optimizer shard for a checkpoint, with ZeRO). */
    if (t->rank != 0) return nx_train_checkpoint_due(&t->cfg, it) ? help_save(t) : NX_OK;
    if (t->cfg.eval_interval > 0 && (it % t->cfg.eval_interval == 0 || it == t->cfg.train_iters)) {
        NX_TRY(evaluate(t, &out->val_loss));
        out->has_val = true;
    }
    out->elapsed_s = t->elapsed_prev + (nx_time_s() - t->t_start);
    /* One JSON object per line; floats with 9 significant digits round-trip exactly. */
    fprintf(t->metrics, "{\"step\":%ld,\"loss\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g", it, (double)out->loss, lr,
            (double)gn);
    if (out->has_val) fprintf(t->metrics, ",\"val_loss\":%.9g", (double)out->val_loss);
    if (N > 1) fprintf(t->metrics, ",\"ranks\":%d,\"comm_s\":%.4f", N, t->comm_s);
    fprintf(t->metrics, ",\"tokens_per_s\":%.1f,\"elapsed_s\":%.3f}\n", out->tokens_per_s, out->elapsed_s);
    if (fflush(t->metrics) != 0 || ferror(t->metrics)) return nx__error(NX_ERR_IO, "%s/metrics.jsonl: write failed", t->cfg.out_dir);
    if (nx_train_checkpoint_due(&t->cfg, it)) {
        NX_TRY(save_checkpoint(t));
        out->saved = true;
    }
    return NX_OK;
}
