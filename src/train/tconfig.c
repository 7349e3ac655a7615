/*
 * tconfig.c - the training config: a GPT-NeoX-style JSON file (docs/TRAINING.md) whose
 * "model" object uses HF config.json fields, plus data, batch, optimizer, schedule, init,
 * checkpoint and evaluation settings. Keys may be written with '_' or '-' as GPT-NeoX
 * accepts both. Unknown keys are rejected so that a typo never silently falls back to a
 * default. Also parses a plain HF config.json into nx_model_config for GPT-NeoX.
 */
#include "train/train_internal.h"
#include "core/json.h"

#include <jansson.h>
#include <math.h>
#include <strings.h>

/* Looks a key up as written, then with '_' and '-' swapped. */
static json_t *jget(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (v) return v;
    char alt[128];
    size_t n = strlen(key);
    if (n >= sizeof alt) return NULL;
    for (size_t i = 0; i <= n; i++) alt[i] = key[i] == '_' ? '-' : key[i] == '-' ? '_' : key[i];
    return json_object_get(obj, alt);
}

static nx_status get_num(json_t *o, const char *key, const char *name, double *out, bool *found) {
    json_t *v = jget(o, key);
    if (found) *found = v != NULL && !json_is_null(v);
    if (!v || json_is_null(v)) return NX_OK;
    if (!json_is_number(v)) return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be a number", name, key);
    *out = json_number_value(v);
    if (!isfinite(*out)) return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be finite", name, key);
    return NX_OK;
}
static nx_status get_int(json_t *o, const char *key, const char *name, long lo, long hi, long *out) {
    json_t *v = jget(o, key);
    if (!v || json_is_null(v)) return NX_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be an integer in [%ld, %ld]", name, key, lo, hi);
    *out = (long)json_integer_value(v);
    return NX_OK;
}
static nx_status get_bool(json_t *o, const char *key, const char *name, bool *out) {
    json_t *v = jget(o, key);
    if (!v || json_is_null(v)) return NX_OK;
    if (!json_is_boolean(v)) return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be true or false", name, key);
    *out = json_is_true(v);
    return NX_OK;
}
static nx_status get_str(json_t *o, const char *key, const char *name, const char **out) {
    json_t *v = jget(o, key);
    if (!v || json_is_null(v)) return NX_OK;
    if (!json_is_string(v)) return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be a string", name, key);
    *out = json_string_value(v);
    return NX_OK;
}

static nx_status model_from_json(json_t *o, const char *name, nx_model_config *c) {
    memset(c, 0, sizeof *c);
    const char *mt = "gpt_neox";
    NX_TRY(get_str(o, "model_type", name, &mt));
    if (strcmp(mt, "gpt_neox"))
        return nx__error(NX_ERR_UNSUPPORTED, "%s: model_type \"%s\": training supports gpt_neox only", name, mt);
    c->arch = NX_ARCH_GPT_NEOX;
    snprintf(c->model_type, sizeof c->model_type, "gpt_neox");
    long V = 50432, H = 6144, L = 44, NH = 64, I = 24576, P = 2048, bos = 0, eos = 2;
    NX_TRY(get_int(o, "vocab_size", name, 1, 1L << 24, &V));
    NX_TRY(get_int(o, "hidden_size", name, 1, 1L << 16, &H));
    NX_TRY(get_int(o, "num_hidden_layers", name, 1, NX_MAX_LAYERS, &L));
    NX_TRY(get_int(o, "num_attention_heads", name, 1, 1L << 12, &NH));
    bool has_i = jget(o, "intermediate_size") != NULL;
    NX_TRY(get_int(o, "intermediate_size", name, 1, 1L << 20, &I));
    if (!has_i) I = 4 * H;   /* GPT-NeoX issue #1208: the class default 24576 is never what is meant */
    NX_TRY(get_int(o, "max_position_embeddings", name, 1, 1L << 24, &P));
    NX_TRY(get_int(o, "bos_token_id", name, -1, 1L << 24, &bos));
    NX_TRY(get_int(o, "eos_token_id", name, -1, 1L << 24, &eos));
    if (H % NH) return nx__error(NX_ERR_FORMAT, "%s: hidden_size %ld is not divisible by num_attention_heads %ld", name, H, NH);
    double pct = 0.25, base = 10000.0, eps = 1e-5;
    NX_TRY(get_num(o, "rotary_pct", name, &pct, NULL));
    NX_TRY(get_num(o, "partial_rotary_factor", name, &pct, NULL));
    NX_TRY(get_num(o, "rotary_emb_base", name, &base, NULL));
    NX_TRY(get_num(o, "rope_theta", name, &base, NULL));
    json_t *rp = jget(o, "rope_parameters");
    if (rp && json_is_object(rp)) {
        NX_TRY(get_num(rp, "partial_rotary_factor", name, &pct, NULL));
        NX_TRY(get_num(rp, "rope_theta", name, &base, NULL));
    }
    json_t *rs = jget(o, "rope_scaling");
    if (rs && !json_is_null(rs))
        return nx__error(NX_ERR_UNSUPPORTED, "%s: rope_scaling is not supported for training", name);
    NX_TRY(get_num(o, "layer_norm_eps", name, &eps, NULL));
    if (pct < 0.0 || pct > 1.0) return nx__error(NX_ERR_FORMAT, "%s: rotary_pct %g is outside [0, 1]", name, pct);
    if (!(base > 0.0)) return nx__error(NX_ERR_FORMAT, "%s: rotary_emb_base must be > 0", name);
    if (!(eps > 0.0)) return nx__error(NX_ERR_FORMAT, "%s: layer_norm_eps must be > 0", name);
    const char *act = "gelu";
    NX_TRY(get_str(o, "hidden_act", name, &act));
    if (!strcmp(act, "gelu")) c->act = NX_ACT_GELU;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) c->act = NX_ACT_GELU_TANH;
    else if (!strcmp(act, "gelu_fast")) c->act = NX_ACT_GELU_FAST;
    else return nx__error(NX_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" (expected gelu, gelu_new, gelu_fast)", name, act);
    c->parallel_residual = true;
    c->tie_word_embeddings = false;
    c->attention_bias = true;
    NX_TRY(get_bool(o, "use_parallel_residual", name, &c->parallel_residual));
    NX_TRY(get_bool(o, "tie_word_embeddings", name, &c->tie_word_embeddings));
    NX_TRY(get_bool(o, "attention_bias", name, &c->attention_bias));
    c->vocab_size = (int)V; c->hidden_size = (int)H; c->n_layer = (int)L; c->n_head = (int)NH;
    c->head_dim = (int)(H / NH); c->intermediate_size = (int)I; c->max_position_embeddings = (int)P;
    c->rotary_pct = (float)pct;
    c->rotary_dim = (int)((double)c->head_dim * pct);   /* int() truncation as HF */
    c->rope_theta = (float)base;
    c->layer_norm_eps = (float)eps;
    c->scale_attn = true;
    c->bos_token_id = (int)bos; c->eos_token_id = (int)eos;
    c->torch_dtype = NX_F32;
    if (c->rotary_dim & 1)
        return nx__error(NX_ERR_FORMAT, "%s: rotary dims int(%d * %g) = %d must be even", name, c->head_dim, pct,
                         c->rotary_dim);
    return NX_OK;
}

nx_status nx__train_parse_model(const char *json, size_t len, const char *name, nx_model_config *out) {
    json_error_t je;
    json_t *root = nx__json_loadb(json, len, 0, &je);
    if (!root) NX_TRY(nx__json_oom(name));
    if (!root || !json_is_object(root)) {
        if (root) json_decref(root);
        return nx__error(NX_ERR_FORMAT, "%s: not a JSON object (line %d: %s)", name, je.line, root ? "" : je.text);
    }
    nx_status st = model_from_json(root, name, out);
    json_decref(root);
    return st;
}

static nx_status resolve(const char *base_dir, const char *p, char *dst, size_t cap, const char *name, const char *key) {
    int n = (p[0] == '/' || !base_dir || !*base_dir) ? snprintf(dst, cap, "%s", p) : snprintf(dst, cap, "%s/%s", base_dir, p);
    if (n < 0 || (size_t)n >= cap) return nx__error(NX_ERR_RANGE, "%s: \"%s\" path is too long", name, key);
    return NX_OK;
}

static nx_status parse_data_list(json_t *arr, const char *name, const char *key, const char *base_dir,
                                 nx_train_data *dst, int *n) {
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > NX_TRAIN_MAX_DATA)
        return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be a list of 1..%d entries", name, key, NX_TRAIN_MAX_DATA);
    *n = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *e = json_array_get(arr, i);
        const char *path = NULL;
        double w = 1.0;
        if (json_is_string(e)) path = json_string_value(e);
        else if (json_is_object(e)) {
            NX_TRY(get_str(e, "path", name, &path));
            NX_TRY(get_num(e, "weight", name, &w, NULL));
        }
        if (!path) return nx__error(NX_ERR_FORMAT, "%s: \"%s\"[%zu] needs a path", name, key, i);
        if (!(w > 0.0)) return nx__error(NX_ERR_FORMAT, "%s: \"%s\"[%zu] weight must be > 0", name, key, i);
        NX_TRY(resolve(base_dir, path, dst[*n].path, sizeof dst[*n].path, name, key));
        dst[*n].weight = w;
        (*n)++;
    }
    return NX_OK;
}

static const char *const k_known[] = {
    "model", "data", "seq_length", "train_micro_batch_size_per_gpu", "micro_batch_size", "gradient_accumulation_steps",
    "train_batch_size", "global_batch_size", "train_iters", "optimizer", "lr", "min_lr", "warmup", "warmup_iters",
    "lr_decay_style", "weight_decay", "gradient_clipping", "clip_grad", "init_method", "output_layer_init_method",
    "init_method_std", "seed", "checkpoint_factor", "extra_save_iters_log", "save", "out_dir", "eval_interval",
    "eval_iters", "log_interval", "tokenizer", "threads", "zero_optimization", "precision", "bf16", "comment"};

static bool known_key(const char *k) {
    char norm[128];
    size_t n = strlen(k);
    if (n >= sizeof norm) return false;
    for (size_t i = 0; i <= n; i++) norm[i] = k[i] == '-' ? '_' : k[i];
    for (size_t i = 0; i < NX_ARRAY_LEN(k_known); i++)
        if (!strcmp(norm, k_known[i])) return true;
    return false;
}

static nx_status parse_init(json_t *o, const char *key, const char *name, nx_init_method *out) {
    const char *s = NULL;
    NX_TRY(get_str(o, key, name, &s));
    if (!s) return NX_OK;
    if (!strcmp(s, "normal")) *out = NX_INIT_NORMAL;
    else if (!strcmp(s, "small_init")) *out = NX_INIT_SMALL;
    else if (!strcmp(s, "wang_init")) *out = NX_INIT_WANG;
    else return nx__error(NX_ERR_UNSUPPORTED, "%s: \"%s\": \"%s\" (expected normal, small_init or wang_init)", name, key, s);
    return NX_OK;
}

/* DeepSpeed's "zero_optimization" block as GPT-NeoX configs write it: "stage" 0 or 1 and
 * "overlap_comm" are used; the bucket and partitioning switches only tune DeepSpeed's own
 * implementation and are accepted without effect; anything else is an error. */
static nx_status parse_zero(json_t *root, const char *name, nx_train_config *c) {
    json_t *z = jget(root, "zero_optimization");
    if (!z || json_is_null(z)) return NX_OK;
    if (!json_is_object(z)) return nx__error(NX_ERR_FORMAT, "%s: \"zero_optimization\" must be an object", name);
    static const char *const tuning[] = {"allgather_partitions", "allgather_bucket_size", "reduce_scatter",
                                         "reduce_bucket_size", "contiguous_gradients"};
    const char *key;
    json_t *val;
    json_object_foreach(z, key, val) {
        bool ok = !strcmp(key, "stage") || !strcmp(key, "overlap_comm") || !strcmp(key, "cpu_offload");
        for (size_t i = 0; i < NX_ARRAY_LEN(tuning) && !ok; i++) ok = !strcmp(key, tuning[i]);
        if (!ok) return nx__error(NX_ERR_FORMAT, "%s: unknown key \"zero_optimization.%s\" (see docs/DISTRIBUTED.md)", name, key);
    }
    char zname[1100];   /* errors of the block's fields name it: "FILE: zero_optimization: \"stage\" ..." */
    snprintf(zname, sizeof zname, "%s: zero_optimization", name);
    long stage = 0;
    NX_TRY(get_int(z, "stage", zname, 0, 3, &stage));
    if (stage > 1)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: zero_optimization.stage %ld: only stages 0 and 1 (sharded optimizer "
                                             "state) are implemented", name, stage);
    bool offload = false;
    NX_TRY(get_bool(z, "cpu_offload", zname, &offload));
    if (offload) return nx__error(NX_ERR_UNSUPPORTED, "%s: zero_optimization.cpu_offload: training runs on the CPU already", name);
    NX_TRY(get_bool(z, "overlap_comm", zname, &c->overlap_comm));
    c->zero_stage = (int)stage;
    return NX_OK;
}

/* Compute precision: GPT-NeoX's "precision" ("fp32"/"float32" or "bf16"/"bfloat16") and
 * DeepSpeed's "bf16": {"enabled": true}, as GPT-NeoX configs write them; both may appear
 * when they agree. fp16 needs loss scaling, which is not implemented. */
static nx_status parse_precision(json_t *root, const char *name, nx_train_config *c) {
    const char *prec = NULL;
    NX_TRY(get_str(root, "precision", name, &prec));
    int from_prec = -1;   /* -1: not given, else the bf16 flag it asks for */
    if (prec) {
        if (!strcmp(prec, "fp32") || !strcmp(prec, "float32")) from_prec = 0;
        else if (!strcmp(prec, "bf16") || !strcmp(prec, "bfloat16")) from_prec = 1;
        else if (!strcmp(prec, "fp16") || !strcmp(prec, "float16") || !strcmp(prec, "half"))
            return nx__error(NX_ERR_UNSUPPORTED, "%s: \"precision\": \"%s\": fp16 training is not implemented (use "
                                                 "\"bf16\" or \"fp32\")", name, prec);
        else return nx__error(NX_ERR_FORMAT, "%s: \"precision\" must be \"fp32\" or \"bf16\" (got \"%s\")", name, prec);
    }
    json_t *b = jget(root, "bf16");
    int from_block = -1;
    if (b && !json_is_null(b)) {
        if (!json_is_object(b)) return nx__error(NX_ERR_FORMAT, "%s: \"bf16\" must be an object {\"enabled\": true|false}", name);
        const char *key;
        json_t *val;
        json_object_foreach(b, key, val) {
            if (strcmp(key, "enabled"))
                return nx__error(NX_ERR_FORMAT, "%s: unknown key \"bf16.%s\" (only \"enabled\")", name, key);
        }
        bool on = false;
        char bname[1100];
        snprintf(bname, sizeof bname, "%s: bf16", name);
        NX_TRY(get_bool(b, "enabled", bname, &on));
        from_block = on;
    }
    if (from_prec >= 0 && from_block >= 0 && from_prec != from_block)
        return nx__error(NX_ERR_FORMAT, "%s: \"precision\": \"%s\" contradicts \"bf16\": {\"enabled\": %s}", name, prec,
                         from_block ? "true" : "false");
    c->bf16 = from_prec == 1 || from_block == 1;
    return NX_OK;
}

static nx_status parse_train(json_t *root, const char *name, const char *base_dir, nx_train_config *c) {
    memset(c, 0, sizeof *c);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!known_key(key)) return nx__error(NX_ERR_FORMAT, "%s: unknown key \"%s\" (see docs/TRAINING.md)", name, key);
    }
    json_t *model = jget(root, "model");
    if (!model) return nx__error(NX_ERR_FORMAT, "%s: missing \"model\" (HF config.json fields, or a path to one)", name);
    if (json_is_string(model)) {
        char p[1024], *txt = NULL;
        size_t len = 0;
        NX_TRY(resolve(base_dir, json_string_value(model), p, sizeof p, name, "model"));
        NX_TRY(nx__file_read_all(p, &txt, &len));
        nx_status st = nx__train_parse_model(txt, len, p, &c->model);
        nx__free(txt);
        NX_TRY(st);
    } else if (json_is_object(model)) {
        NX_TRY(model_from_json(model, name, &c->model));
    } else {
        return nx__error(NX_ERR_FORMAT, "%s: \"model\" must be an object or a path", name);
    }

    long T = 2048, mb = 1, ga = 1, gb = 0, iters = 0, seed = 1234, ckf = 1000, evi = 0, evn = 10, logi = 1, th = 0;
    NX_TRY(get_int(root, "seq_length", name, 1, 1L << 20, &T));
    NX_TRY(get_int(root, "micro_batch_size", name, 1, 1L << 20, &mb));
    NX_TRY(get_int(root, "train_micro_batch_size_per_gpu", name, 1, 1L << 20, &mb));
    NX_TRY(get_int(root, "gradient_accumulation_steps", name, 1, 1L << 20, &ga));
    NX_TRY(get_int(root, "train_batch_size", name, 1, 1L << 30, &gb));
    NX_TRY(get_int(root, "global_batch_size", name, 1, 1L << 30, &gb));
    if (gb && !jget(root, "gradient_accumulation_steps")) {
        if (gb % mb) return nx__error(NX_ERR_FORMAT, "%s: train_batch_size %ld is not a multiple of the micro batch %ld", name, gb, mb);
        ga = gb / mb;
    }
    if (gb && gb != mb * ga)
        return nx__error(NX_ERR_FORMAT, "%s: train_batch_size %ld != micro batch %ld x gradient_accumulation_steps %ld",
                         name, gb, mb, ga);
    NX_TRY(get_int(root, "train_iters", name, 1, 1L << 40, &iters));
    if (!jget(root, "train_iters")) return nx__error(NX_ERR_FORMAT, "%s: missing \"train_iters\"", name);
    if (T > c->model.max_position_embeddings)
        return nx__error(NX_ERR_FORMAT, "%s: seq_length %ld > max_position_embeddings %d", name, T,
                         c->model.max_position_embeddings);
    c->seq_length = (int)T; c->micro_batch = (int)mb; c->grad_accum = (int)ga; c->global_batch = (int)(mb * ga);
    c->train_iters = iters;

    double lr = 6e-4, min_lr = -1, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, clip = 1.0, warm = 0.01, istd = 0.02;
    json_t *opt = jget(root, "optimizer");
    if (opt) {
        if (!json_is_object(opt)) return nx__error(NX_ERR_FORMAT, "%s: \"optimizer\" must be an object", name);
        const char *type = "Adam";
        NX_TRY(get_str(opt, "type", name, &type));
        if (strcasecmp(type, "adam") && strcasecmp(type, "adamw"))
            return nx__error(NX_ERR_UNSUPPORTED, "%s: optimizer type \"%s\" (only Adam/AdamW, decoupled decay)", name, type);
        json_t *p = jget(opt, "params");
        if (p) {
            NX_TRY(get_num(p, "lr", name, &lr, NULL));
            NX_TRY(get_num(p, "eps", name, &eps, NULL));
            NX_TRY(get_num(p, "weight_decay", name, &wd, NULL));
            json_t *bt = jget(p, "betas");
            if (bt) {
                if (!json_is_array(bt) || json_array_size(bt) != 2 || !json_is_number(json_array_get(bt, 0)) ||
                    !json_is_number(json_array_get(bt, 1)))
                    return nx__error(NX_ERR_FORMAT, "%s: optimizer.params.betas must be [beta1, beta2]", name);
                b1 = json_number_value(json_array_get(bt, 0));
                b2 = json_number_value(json_array_get(bt, 1));
            }
        }
    }
    NX_TRY(get_num(root, "lr", name, &lr, NULL));
    NX_TRY(get_num(root, "min_lr", name, &min_lr, NULL));
    NX_TRY(get_num(root, "weight_decay", name, &wd, NULL));
    NX_TRY(get_num(root, "gradient_clipping", name, &clip, NULL));
    NX_TRY(get_num(root, "clip_grad", name, &clip, NULL));
    NX_TRY(get_num(root, "init_method_std", name, &istd, NULL));
    bool warm_frac;
    NX_TRY(get_num(root, "warmup", name, &warm, &warm_frac));
    long wi = (long)floor(warm * (double)iters);   /* GPT-NeoX: warmup is a fraction of train_iters */
    NX_TRY(get_int(root, "warmup_iters", name, 0, 1L << 40, &wi));
    if (warm_frac && (warm < 0.0 || warm > 1.0)) return nx__error(NX_ERR_FORMAT, "%s: warmup %g is not a fraction in [0, 1]", name, warm);
    if (min_lr < 0) min_lr = 0.1 * lr;   /* Pythia: min_lr = 0.1 x lr */
    if (!(lr > 0) || min_lr > lr || !(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1) || !(eps > 0) || wd < 0)
        return nx__error(NX_ERR_FORMAT, "%s: need lr > 0, 0 <= min_lr <= lr, betas in [0, 1), eps > 0, weight_decay >= 0",
                         name);
    const char *decay = "cosine";
    NX_TRY(get_str(root, "lr_decay_style", name, &decay));
    if (!strcmp(decay, "cosine")) c->lr.decay = NX_LR_COSINE;
    else if (!strcmp(decay, "linear")) c->lr.decay = NX_LR_LINEAR;
    else if (!strcmp(decay, "constant")) c->lr.decay = NX_LR_CONSTANT;
    else return nx__error(NX_ERR_UNSUPPORTED, "%s: lr_decay_style \"%s\" (cosine, linear or constant)", name, decay);
    c->lr.lr = lr; c->lr.min_lr = min_lr; c->lr.warmup_iters = wi; c->lr.train_iters = iters;
    if (wi >= iters && c->lr.decay != NX_LR_CONSTANT && wi > 0) c->lr.warmup_iters = iters;
    c->adamw = (nx_adamw_config){b1, b2, eps, wd, clip};
    c->init = NX_INIT_SMALL;
    c->output_init = NX_INIT_WANG;
    NX_TRY(parse_init(root, "init_method", name, &c->init));
    NX_TRY(parse_init(root, "output_layer_init_method", name, &c->output_init));
    c->init_std = (float)istd;
    NX_TRY(get_int(root, "seed", name, 0, 1L << 62, &seed));
    c->seed = (uint64_t)seed;
    NX_TRY(get_int(root, "checkpoint_factor", name, 0, 1L << 40, &ckf));
    c->checkpoint_every = ckf;
    c->checkpoint_log_steps = true;
    NX_TRY(get_bool(root, "extra_save_iters_log", name, &c->checkpoint_log_steps));
    NX_TRY(get_int(root, "eval_interval", name, 0, 1L << 40, &evi));
    NX_TRY(get_int(root, "eval_iters", name, 1, 1L << 30, &evn));
    NX_TRY(get_int(root, "log_interval", name, 1, 1L << 30, &logi));
    NX_TRY(get_int(root, "threads", name, 0, 1024, &th));
    c->eval_interval = evi; c->eval_iters = evn; c->log_interval = logi; c->threads = (int)th;
    NX_TRY(parse_zero(root, name, c));
    NX_TRY(parse_precision(root, name, c));

    const char *out = NULL, *tok = NULL;
    NX_TRY(get_str(root, "save", name, &out));
    NX_TRY(get_str(root, "out_dir", name, &out));
    if (!out) return nx__error(NX_ERR_FORMAT, "%s: missing \"save\" (output directory)", name);
    NX_TRY(resolve(base_dir, out, c->out_dir, sizeof c->out_dir, name, "save"));
    NX_TRY(get_str(root, "tokenizer", name, &tok));
    if (tok) NX_TRY(resolve(base_dir, tok, c->tokenizer_dir, sizeof c->tokenizer_dir, name, "tokenizer"));

    json_t *data = jget(root, "data");
    if (!data || !json_is_object(data)) return nx__error(NX_ERR_FORMAT, "%s: missing \"data\" object", name);
    const char *fmt = "raw", *order = "neox";
    NX_TRY(get_str(data, "format", name, &fmt));
    NX_TRY(get_str(data, "order", name, &order));
    if (!strcmp(fmt, "raw")) c->data_format = NX_DATA_RAW;
    else if (!strcmp(fmt, "indexed")) c->data_format = NX_DATA_INDEXED;
    else return nx__error(NX_ERR_FORMAT, "%s: data.format \"%s\" (expected raw or indexed)", name, fmt);
    if (!strcmp(order, "preshuffled")) c->preshuffled = true;
    else if (strcmp(order, "neox")) return nx__error(NX_ERR_FORMAT, "%s: data.order \"%s\" (expected neox or preshuffled)", name, order);
    if (c->preshuffled && c->data_format != NX_DATA_INDEXED)
        return nx__error(NX_ERR_FORMAT, "%s: data.order preshuffled needs data.format indexed", name);
    long tb = 2;
    NX_TRY(get_int(data, "token_bytes", name, 2, 4, &tb));
    if (tb != 2 && tb != 4) return nx__error(NX_ERR_FORMAT, "%s: data.token_bytes must be 2 or 4", name);
    c->token_bytes = (int)tb;
    json_t *tr = jget(data, "train");
    if (!tr) return nx__error(NX_ERR_FORMAT, "%s: data.train is missing", name);
    NX_TRY(parse_data_list(tr, name, "data.train", base_dir, c->train, &c->n_train));
    json_t *va = jget(data, "valid");
    if (va) NX_TRY(parse_data_list(va, name, "data.valid", base_dir, c->valid, &c->n_valid));
    if (c->eval_interval > 0 && c->n_valid == 0)
        return nx__error(NX_ERR_FORMAT, "%s: eval_interval is set but data.valid is missing", name);
    return NX_OK;
}

nx_status nx_train_config_parse(const char *json, size_t len, const char *name, const char *base_dir,
                                 nx_train_config *out) {
    json_error_t je;
    json_t *root = nx__json_loadb(json, len, 0, &je);
    if (!root) NX_TRY(nx__json_oom(name));
    if (!root || !json_is_object(root)) {
        if (root) json_decref(root);
        return nx__error(NX_ERR_FORMAT, "%s: not a JSON object (line %d: %s)", name, je.line, root ? "" : je.text);
    }
    nx_status st = parse_train(root, name, base_dir, out);
    json_decref(root);
    return st;
}

nx_status nx_train_config_load(const char *path, nx_train_config *out) {
    char *txt = NULL;
    size_t len = 0;
    NX_TRY(nx__file_read_all(path, &txt, &len));
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    nx_status st = nx_train_config_parse(txt, len, path, dir, out);
    nx__free(txt);
    return st;
}
