/*
 * config.c - HF config.json -> nx_model_config for gpt_neox, gptj and gpt_neo.
 *
 * Defaults are the HF config classes' (docs/ARCHITECTURES.md 1.1, 2.1, 3.1), not those of
 * any checkpoint, because a config.json only lists what differs from the class (and old
 * files lack keys added later, e.g. attention_bias). Aliases across transformers versions
 * are accepted; when two spellings of one field are both present they must agree (re-saved
 * Pythia configs carry both), otherwise the file is inconsistent and rejected.
 *
 * Every value is type-checked: a field of the wrong JSON type, a non-positive size, a head
 * count that does not divide the hidden size, an odd or oversized rotary_dim or an
 * attention_types list that does not match the layer count is NX_ERR_FORMAT with a message
 * naming the file and the field. JSON null means "use the class behaviour" only where HF
 * gives null a meaning (rotary_dim, n_inner, intermediate_size, rope_scaling, token ids,
 * dtype); elsewhere null is a type error.
 */
#include "io.h"
#include "core/json.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>

typedef struct {
    const json_t *root;
    const char *file;
    bool inner_4h;   /* intermediate size absent/null: 4 x hidden (resolved after validation) */
    double rotary_pct;      /* as parsed (double): HF truncates head_size * rotary_pct in double precision */
} cfg_ctx;

static const char *jtype(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

/* Looks up "key" or "parent.key" (one level of nesting, for rope_parameters.*). A parent
 * that is absent or null means absent; a parent of another type is an error. */
static nx_status lookup(const cfg_ctx *c, const char *key, const json_t **out) {
    *out = NULL;
    const char *dot = strchr(key, '.');
    if (!dot) {
        *out = json_object_get(c->root, key);
        return NX_OK;
    }
    char parent[64];
    size_t pl = (size_t)(dot - key);
    if (pl >= sizeof parent) return nx__error(NX_ERR_INTERNAL, "config key too long");
    memcpy(parent, key, pl);
    parent[pl] = 0;
    const json_t *p = json_object_get(c->root, parent);
    if (!p || json_is_null(p)) return NX_OK;
    if (!json_is_object(p))
        return nx__error(NX_ERR_FORMAT, "%s: field '%s' is %s, expected an object", c->file, parent, jtype(p));
    *out = json_object_get(p, dot + 1);
    return NX_OK;
}

typedef enum { K_INT, K_NUM, K_BOOL, K_STR } kind;

static bool kind_ok(const json_t *v, kind k) {
    switch (k) {
    case K_INT: return json_is_integer(v);
    case K_NUM: return json_is_number(v);
    case K_BOOL: return json_is_boolean(v);
    case K_STR: return json_is_string(v);
    }
    return false;
}

static const char *kind_name(kind k) {
    switch (k) {
    case K_INT: return "an integer";
    case K_NUM: return "a number";
    case K_BOOL: return "a boolean";
    case K_STR: return "a string";
    }
    return "?";
}

static bool same_value(const json_t *a, const json_t *b) {
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        return x == y || fabs(x - y) <= 1e-9 * fmax(fabs(x), fabs(y));
    }
    return json_equal((json_t *)a, (json_t *)b);
}

/* Finds the value of a field spelled by any of `keys` (NULL-terminated list). Absent
 * everywhere -> *out = NULL. Present under several spellings -> they must agree. null is
 * returned as a JSON null when `nullable`, an error otherwise. */
static nx_status field(const cfg_ctx *c, const char *const *keys, kind k, bool nullable, const json_t **out,
                       const char **which) {
    *out = NULL;
    const char *first_key = NULL;
    for (size_t i = 0; keys[i]; i++) {
        const json_t *v;
        NX_TRY(lookup(c, keys[i], &v));
        if (!v) continue;
        if (json_is_null(v)) {
            if (!nullable)
                return nx__error(NX_ERR_FORMAT, "%s: field '%s' is null, expected %s", c->file, keys[i], kind_name(k));
        } else if (!kind_ok(v, k)) {
            return nx__error(NX_ERR_FORMAT, "%s: field '%s' is %s, expected %s", c->file, keys[i], jtype(v),
                             kind_name(k));
        }
        if (*out && !same_value(*out, v))
            return nx__error(NX_ERR_FORMAT, "%s: fields '%s' and '%s' are aliases but disagree", c->file, first_key,
                             keys[i]);
        if (!*out) { *out = v; first_key = keys[i]; }
    }
    if (which) *which = first_key ? first_key : keys[0];
    return NX_OK;
}

/* Integer field with a class default; *was_null (if given) reports an explicit null. */
static nx_status get_int(const cfg_ctx *c, const char *const *keys, int def, bool nullable, int *out,
                         bool *was_null) {
    const json_t *v;
    const char *which;
    NX_TRY(field(c, keys, K_INT, nullable, &v, &which));
    if (was_null) *was_null = v && json_is_null(v);
    if (!v || json_is_null(v)) { *out = def; return NX_OK; }
    json_int_t i = json_integer_value(v);
    if (i < INT_MIN || i > INT_MAX)
        return nx__error(NX_ERR_FORMAT, "%s: field '%s' = %lld does not fit a 32-bit integer", c->file, which,
                         (long long)i);
    *out = (int)i;
    return NX_OK;
}

/* Token ids: null means "none" (-1), absent means the class default. */
static nx_status get_token_id(const cfg_ctx *c, const char *key, int def, int *out) {
    bool was_null;
    NX_TRY(get_int(c, (const char *const[]){key, NULL}, def, true, out, &was_null));
    if (was_null) *out = -1;
    return NX_OK;
}

static nx_status get_num(const cfg_ctx *c, const char *const *keys, double def, double *out) {
    const json_t *v;
    const char *which;
    NX_TRY(field(c, keys, K_NUM, false, &v, &which));
    *out = v ? json_number_value(v) : def;
    if (!isfinite(*out)) return nx__error(NX_ERR_FORMAT, "%s: field '%s' is not finite", c->file, which);
    return NX_OK;
}

static nx_status get_bool(const cfg_ctx *c, const char *const *keys, bool def, bool *out) {
    const json_t *v;
    NX_TRY(field(c, keys, K_BOOL, false, &v, NULL));
    *out = v ? json_is_true(v) : def;
    return NX_OK;
}

/* String field; NULL when absent (or null, if nullable). Borrowed from the JSON tree. */
static nx_status get_str(const cfg_ctx *c, const char *const *keys, bool nullable, const char **out) {
    const json_t *v;
    NX_TRY(field(c, keys, K_STR, nullable, &v, NULL));
    *out = (v && json_is_string(v)) ? json_string_value(v) : NULL;
    return NX_OK;
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

static nx_status parse_act(const cfg_ctx *c, const char *key, const char *name, nx_act *out) {
    static const struct { const char *name; nx_act act; } k_acts[] = {
        {"gelu", NX_ACT_GELU},           {"gelu_new", NX_ACT_GELU_TANH},   {"gelu_pytorch_tanh", NX_ACT_GELU_TANH},
        {"gelu_fast", NX_ACT_GELU_FAST}, {"relu", NX_ACT_RELU},            {"silu", NX_ACT_SILU},
        {"swish", NX_ACT_SILU},          {"quick_gelu", NX_ACT_QUICK_GELU},
    };
    for (size_t i = 0; i < NX_ARRAY_LEN(k_acts); i++)
        if (strcmp(name, k_acts[i].name) == 0) { *out = k_acts[i].act; return NX_OK; }
    return nx__error(NX_ERR_UNSUPPORTED,
                     "%s: field '%s' = \"%s\" is not a supported activation (gelu, gelu_new, gelu_pytorch_tanh, "
                     "gelu_fast, relu, silu, swish, quick_gelu)",
                     c->file, key, name);
}

static nx_status parse_dtype(const cfg_ctx *c, nx_dtype *out) {
    const char *s, *d;
    NX_TRY(get_str(c, KEYS("dtype"), true, &d));
    NX_TRY(get_str(c, KEYS("torch_dtype"), true, &s));
    const char *key = d ? "dtype" : "torch_dtype";
    if (d) s = d;   /* transformers v5 writes "dtype"; it supersedes torch_dtype */
    *out = NX_DTYPE_INVALID;
    if (!s) return NX_OK;
    if (strncmp(s, "torch.", 6) == 0) s += 6;
    static const struct { const char *name; nx_dtype dt; } k_map[] = {
        {"float32", NX_F32}, {"float", NX_F32},   {"float16", NX_F16},  {"half", NX_F16},
        {"bfloat16", NX_BF16}, {"float64", NX_F64}, {"double", NX_F64},
    };
    for (size_t i = 0; i < NX_ARRAY_LEN(k_map); i++)
        if (strcmp(s, k_map[i].name) == 0) { *out = k_map[i].dt; return NX_OK; }
    if (strcmp(s, "auto") == 0) return NX_OK;
    return nx__error(NX_ERR_FORMAT, "%s: field '%s' = \"%s\" is not a known torch dtype", c->file, key, s);
}

/* rope_scaling {"type"|"rope_type": "linear"|"dynamic", "factor": f} or the same inside
 * rope_parameters (transformers v5). "default" means no scaling. */
static nx_status parse_rope_scaling(const cfg_ctx *c, nx_model_config *m) {
    m->rope_scaling_type = 0;
    m->rope_scaling_factor = 1.0f;
    const char *src = "rope_scaling";
    const json_t *rs = json_object_get(c->root, "rope_scaling");
    if (!rs || json_is_null(rs)) {
        src = "rope_parameters";
        rs = json_object_get(c->root, "rope_parameters");
        if (!rs || json_is_null(rs)) return NX_OK;
    }
    if (!json_is_object(rs))
        return nx__error(NX_ERR_FORMAT, "%s: field '%s' is %s, expected an object", c->file, src, jtype(rs));
    const json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (!t || json_is_null(t)) {
        if (strcmp(src, "rope_parameters") == 0) return NX_OK;   /* only theta / partial factor */
        return nx__error(NX_ERR_FORMAT, "%s: field 'rope_scaling' has no \"type\"", c->file);
    }
    if (!json_is_string(t))
        return nx__error(NX_ERR_FORMAT, "%s: field '%s.type' is %s, expected a string", c->file, src, jtype(t));
    const char *ty = json_string_value(t);
    if (strcmp(ty, "default") == 0) return NX_OK;
    if (strcmp(ty, "linear") == 0) m->rope_scaling_type = 1;
    else if (strcmp(ty, "dynamic") == 0) m->rope_scaling_type = 2;
    else
        return nx__error(NX_ERR_UNSUPPORTED, "%s: field '%s.type' = \"%s\" is not supported (linear, dynamic)", c->file,
                         src, ty);
    const json_t *f = json_object_get(rs, "factor");
    if (!f || !json_is_number(f))
        return nx__error(NX_ERR_FORMAT, "%s: field '%s.factor' is %s, expected a number", c->file, src,
                         f ? jtype(f) : "missing");
    double fv = json_number_value(f);
    if (!(fv >= 1.0) || !isfinite(fv))
        return nx__error(NX_ERR_FORMAT, "%s: field '%s.factor' = %g, expected >= 1", c->file, src, fv);
    m->rope_scaling_factor = (float)fv;
    return NX_OK;
}

static nx_status parse_neox(cfg_ctx *c, nx_model_config *m) {
    bool inner_null;
    NX_TRY(get_int(c, KEYS("vocab_size"), 50432, false, &m->vocab_size, NULL));
    NX_TRY(get_int(c, KEYS("hidden_size"), 6144, false, &m->hidden_size, NULL));
    NX_TRY(get_int(c, KEYS("num_hidden_layers"), 44, false, &m->n_layer, NULL));
    NX_TRY(get_int(c, KEYS("num_attention_heads"), 64, false, &m->n_head, NULL));
    NX_TRY(get_int(c, KEYS("intermediate_size"), 24576, true, &m->intermediate_size, &inner_null));
    c->inner_4h = inner_null;   /* null -> 4H; absent -> the class default 24576 */
    NX_TRY(get_int(c, KEYS("max_position_embeddings"), 2048, false, &m->max_position_embeddings, NULL));
    const char *act;
    NX_TRY(get_str(c, KEYS("hidden_act"), false, &act));
    NX_TRY(parse_act(c, "hidden_act", act ? act : "gelu", &m->act));
    double pct, theta, eps;
    NX_TRY(get_num(c, KEYS("rotary_pct", "partial_rotary_factor", "rope_parameters.partial_rotary_factor"), 0.25, &pct));
    NX_TRY(get_num(c, KEYS("rotary_emb_base", "rope_theta", "rope_parameters.rope_theta"), 10000.0, &theta));
    NX_TRY(get_num(c, KEYS("layer_norm_eps"), 1e-5, &eps));
    if (!(pct >= 0.0 && pct <= 1.0))
        return nx__error(NX_ERR_FORMAT, "%s: field 'rotary_pct' = %g, expected a fraction in [0, 1]", c->file, pct);
    if (!(theta > 0.0)) return nx__error(NX_ERR_FORMAT, "%s: field 'rotary_emb_base' = %g, expected > 0", c->file, theta);
    m->rotary_pct = (float)pct;
    c->rotary_pct = pct;
    m->rope_theta = (float)theta;
    m->layer_norm_eps = (float)eps;
    NX_TRY(get_bool(c, KEYS("use_parallel_residual"), true, &m->parallel_residual));
    NX_TRY(get_bool(c, KEYS("tie_word_embeddings"), false, &m->tie_word_embeddings));
    NX_TRY(get_bool(c, KEYS("attention_bias"), true, &m->attention_bias));
    NX_TRY(get_token_id(c, "bos_token_id", 0, &m->bos_token_id));
    NX_TRY(get_token_id(c, "eos_token_id", 2, &m->eos_token_id));
    NX_TRY(parse_rope_scaling(c, m));
    m->rotary_interleaved = false;
    m->scale_attn = true;
    m->window_size = 0;
    return NX_OK;
}

static nx_status parse_gptj(cfg_ctx *c, nx_model_config *m, bool *rotary_null) {
    bool inner_null;
    NX_TRY(get_int(c, KEYS("vocab_size"), 50400, false, &m->vocab_size, NULL));
    NX_TRY(get_int(c, KEYS("n_positions", "max_position_embeddings"), 2048, false, &m->max_position_embeddings, NULL));
    NX_TRY(get_int(c, KEYS("n_embd", "hidden_size"), 4096, false, &m->hidden_size, NULL));
    NX_TRY(get_int(c, KEYS("n_layer", "num_hidden_layers"), 28, false, &m->n_layer, NULL));
    NX_TRY(get_int(c, KEYS("n_head", "num_attention_heads"), 16, false, &m->n_head, NULL));
    NX_TRY(get_int(c, KEYS("rotary_dim"), 64, true, &m->rotary_dim, rotary_null));
    NX_TRY(get_int(c, KEYS("n_inner"), 0, true, &m->intermediate_size, &inner_null));
    c->inner_4h = !json_object_get(c->root, "n_inner") || inner_null;   /* null -> 4H */
    const char *act;
    NX_TRY(get_str(c, KEYS("activation_function"), false, &act));
    NX_TRY(parse_act(c, "activation_function", act ? act : "gelu_new", &m->act));
    double eps;
    NX_TRY(get_num(c, KEYS("layer_norm_epsilon"), 1e-5, &eps));
    m->layer_norm_eps = (float)eps;
    NX_TRY(get_bool(c, KEYS("tie_word_embeddings"), false, &m->tie_word_embeddings));
    NX_TRY(get_token_id(c, "bos_token_id", 50256, &m->bos_token_id));
    NX_TRY(get_token_id(c, "eos_token_id", 50256, &m->eos_token_id));
    m->rope_theta = 10000.0f;   /* hard-coded in HF create_sinusoidal_positions; no config key */
    m->parallel_residual = true;
    m->attention_bias = false;
    m->rotary_interleaved = true;
    m->scale_attn = true;
    m->window_size = 0;
    return NX_OK;
}

/* attention_types [[["global","local"], 12], ...] -> per-layer flags, as HF
 * GPTNeoConfig.expand_attention_types_params: each inner list repeated N times. */
static nx_status expand_attention_types(const cfg_ctx *c, nx_model_config *m) {
    const json_t *at = json_object_get(c->root, "attention_types");
    size_t nl = 0;
    if (!at) {
        /* class default [[["global","local"], 12]] */
        for (int i = 0; i < 24 && i < NX_MAX_LAYERS; i++) m->layer_is_local[i] = (uint8_t)(i % 2);
        nl = 24;
    } else {
        if (!json_is_array(at))
            return nx__error(NX_ERR_FORMAT, "%s: field 'attention_types' is %s, expected [[[\"global\", \"local\"], N], ...]",
                             c->file, jtype(at));
        for (size_t g = 0; g < json_array_size(at); g++) {
            const json_t *grp = json_array_get(at, g);
            const json_t *kinds = json_array_get(grp, 0), *rep = json_array_get(grp, 1);
            if (!json_is_array(grp) || json_array_size(grp) != 2 || !json_is_array(kinds) || !json_is_integer(rep))
                return nx__error(NX_ERR_FORMAT, "%s: field 'attention_types[%zu]' is not [[kinds...], count]", c->file, g);
            json_int_t r = json_integer_value(rep);
            if (r < 0 || r > NX_MAX_LAYERS)
                return nx__error(NX_ERR_FORMAT, "%s: field 'attention_types[%zu]' repeat count %lld is out of range",
                                 c->file, g, (long long)r);
            for (json_int_t k = 0; k < r; k++) {
                for (size_t j = 0; j < json_array_size(kinds); j++) {
                    const json_t *s = json_array_get(kinds, j);
                    int local;
                    if (json_is_string(s) && strcmp(json_string_value(s), "global") == 0) local = 0;
                    else if (json_is_string(s) && strcmp(json_string_value(s), "local") == 0) local = 1;
                    else
                        return nx__error(NX_ERR_FORMAT,
                                         "%s: field 'attention_types[%zu]' has an entry that is not \"global\" or \"local\"",
                                         c->file, g);
                    if (nl >= NX_MAX_LAYERS)
                        return nx__error(NX_ERR_FORMAT, "%s: field 'attention_types' expands to more than %d layers",
                                         c->file, NX_MAX_LAYERS);
                    m->layer_is_local[nl++] = (uint8_t)local;
                }
            }
        }
    }
    if (nl != (size_t)m->n_layer)
        return nx__error(NX_ERR_FORMAT, "%s: field 'attention_types' expands to %zu layers but num_layers is %d",
                         c->file, nl, m->n_layer);
    return NX_OK;
}

static nx_status parse_gptneo(cfg_ctx *c, nx_model_config *m) {
    bool inner_null;
    NX_TRY(get_int(c, KEYS("vocab_size"), 50257, false, &m->vocab_size, NULL));
    NX_TRY(get_int(c, KEYS("max_position_embeddings"), 2048, false, &m->max_position_embeddings, NULL));
    NX_TRY(get_int(c, KEYS("hidden_size"), 2048, false, &m->hidden_size, NULL));
    NX_TRY(get_int(c, KEYS("num_layers", "num_hidden_layers"), 24, false, &m->n_layer, NULL));
    NX_TRY(get_int(c, KEYS("num_heads", "num_attention_heads"), 16, false, &m->n_head, NULL));
    NX_TRY(get_int(c, KEYS("intermediate_size"), 0, true, &m->intermediate_size, &inner_null));
    c->inner_4h = !json_object_get(c->root, "intermediate_size") || inner_null;
    NX_TRY(get_int(c, KEYS("window_size"), 256, false, &m->window_size, NULL));
    const char *act;
    NX_TRY(get_str(c, KEYS("activation_function"), false, &act));
    NX_TRY(parse_act(c, "activation_function", act ? act : "gelu_new", &m->act));
    double eps;
    NX_TRY(get_num(c, KEYS("layer_norm_epsilon"), 1e-5, &eps));
    m->layer_norm_eps = (float)eps;
    NX_TRY(get_bool(c, KEYS("tie_word_embeddings"), true, &m->tie_word_embeddings));
    NX_TRY(get_token_id(c, "bos_token_id", 50256, &m->bos_token_id));
    NX_TRY(get_token_id(c, "eos_token_id", 50256, &m->eos_token_id));
    if (m->window_size <= 0)
        return nx__error(NX_ERR_FORMAT, "%s: field 'window_size' = %d, expected > 0", c->file, m->window_size);
    m->rotary_dim = 0;
    m->rotary_pct = 0.0f;
    m->rope_theta = 0.0f;
    m->parallel_residual = false;
    m->attention_bias = false;
    m->rotary_interleaved = false;
    m->scale_attn = false;   /* GPT-Neo does not scale scores by 1/sqrt(HS) */
    return NX_OK;
}

static nx_status positive(const cfg_ctx *c, const char *key, long v) {
    if (v <= 0) return nx__error(NX_ERR_FORMAT, "%s: field '%s' = %ld, expected > 0", c->file, key, v);
    return NX_OK;
}

static nx_status parse_root(cfg_ctx *c, nx_model_config *m) {
    if (!json_is_object(c->root))
        return nx__error(NX_ERR_FORMAT, "%s: config is %s, expected a JSON object", c->file, jtype(c->root));
    const char *mt;
    NX_TRY(get_str(c, KEYS("model_type"), false, &mt));
    if (!mt) {
        /* Very old files lack model_type; the architecture class names the type. */
        const json_t *arch = json_object_get(c->root, "architectures");
        const json_t *a0 = json_is_array(arch) ? json_array_get(arch, 0) : NULL;
        const char *an = json_is_string(a0) ? json_string_value(a0) : "";
        if (strcmp(an, "GPTNeoXForCausalLM") == 0) mt = "gpt_neox";
        else if (strcmp(an, "GPTJForCausalLM") == 0) mt = "gptj";
        else if (strcmp(an, "GPTNeoForCausalLM") == 0) mt = "gpt_neo";
        else return nx__error(NX_ERR_FORMAT, "%s: field 'model_type' is missing (and no known 'architectures')", c->file);
    }
    nx_status st;
    bool rotary_null = false;
    if (strcmp(mt, "gpt_neox") == 0) { m->arch = NX_ARCH_GPT_NEOX; st = parse_neox(c, m); }
    else if (strcmp(mt, "gptj") == 0) { m->arch = NX_ARCH_GPTJ; st = parse_gptj(c, m, &rotary_null); }
    else if (strcmp(mt, "gpt_neo") == 0) { m->arch = NX_ARCH_GPT_NEO; st = parse_gptneo(c, m); }
    else
        return nx__error(NX_ERR_UNSUPPORTED, "%s: field 'model_type' = \"%s\" is not supported (gpt_neox, gptj, gpt_neo)",
                         c->file, mt);
    if (st != NX_OK) return st;
    snprintf(m->model_type, sizeof m->model_type, "%s", mt);
    NX_TRY(parse_dtype(c, &m->torch_dtype));

    NX_TRY(positive(c, "vocab_size", m->vocab_size));
    NX_TRY(positive(c, "hidden_size", m->hidden_size));
    NX_TRY(positive(c, "num_attention_heads", m->n_head));
    NX_TRY(positive(c, "num_hidden_layers", m->n_layer));
    NX_TRY(positive(c, "max_position_embeddings", m->max_position_embeddings));
    if (m->n_layer > NX_MAX_LAYERS)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: field 'num_hidden_layers' = %d exceeds the supported %d", c->file,
                         m->n_layer, NX_MAX_LAYERS);
    if (m->hidden_size % m->n_head != 0)
        return nx__error(NX_ERR_FORMAT, "%s: field 'hidden_size' = %d is not divisible by num_attention_heads = %d",
                         c->file, m->hidden_size, m->n_head);
    m->head_dim = m->hidden_size / m->n_head;
    if (c->inner_4h) {
        if (m->hidden_size > INT_MAX / 4)
            return nx__error(NX_ERR_FORMAT, "%s: field 'hidden_size' = %d is too large", c->file, m->hidden_size);
        m->intermediate_size = 4 * m->hidden_size;
    }
    NX_TRY(positive(c, m->arch == NX_ARCH_GPTJ ? "n_inner" : "intermediate_size", m->intermediate_size));
    if (!(m->layer_norm_eps > 0.0f))
        return nx__error(NX_ERR_FORMAT, "%s: field '%s' = %g, expected > 0", c->file,
                         m->arch == NX_ARCH_GPT_NEOX ? "layer_norm_eps" : "layer_norm_epsilon", (double)m->layer_norm_eps);

    if (m->arch == NX_ARCH_GPT_NEOX) {
        /* HF: rotary_ndims = int(head_size * rotary_pct), truncating */
        m->rotary_dim = (int)((double)m->head_dim * c->rotary_pct);
        if (m->rotary_dim % 2 != 0)
            return nx__error(NX_ERR_FORMAT, "%s: field 'rotary_pct' = %g gives %d rotary dims of %d, which is odd",
                             c->file, (double)m->rotary_pct, m->rotary_dim, m->head_dim);
    } else if (m->arch == NX_ARCH_GPTJ) {
        if (rotary_null) m->rotary_dim = m->head_dim;   /* null rotates the whole head */
        if (m->rotary_dim <= 0 || m->rotary_dim > m->head_dim || m->rotary_dim % 2 != 0)
            return nx__error(NX_ERR_FORMAT, "%s: field 'rotary_dim' = %d, expected an even number in [2, head_dim = %d]",
                             c->file, m->rotary_dim, m->head_dim);
        m->rotary_pct = (float)m->rotary_dim / (float)m->head_dim;
    } else {
        NX_TRY(expand_attention_types(c, m));
    }
    return NX_OK;
}

nx_status nx_config_parse(const char *json, size_t len, const char *name, nx_model_config *out) {
    if (!name) name = "config.json";
    if (!json || !out) return nx__error(NX_ERR_INVALID_ARG, "%s: nx_config_parse: NULL argument", name);
    json_error_t jerr;
    json_t *root = nx__json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        NX_TRY(nx__json_oom(name));
        return nx__error(NX_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", name, jerr.text, jerr.line,
                         jerr.column);
    }
    nx_model_config m;
    memset(&m, 0, sizeof m);
    m.rope_scaling_factor = 1.0f;
    m.bos_token_id = m.eos_token_id = -1;
    cfg_ctx c = {root, name, false, 0.25};
    nx_status st = parse_root(&c, &m);
    json_decref(root);
    if (st == NX_OK) *out = m;
    return st;
}

nx_status nx_config_load(const char *path, nx_model_config *out) {
    if (!path) return nx__error(NX_ERR_INVALID_ARG, "nx_config_load: path is NULL");
    char *file = nx__dir_exists(path) ? nx__path_join(path, "config.json") : nx__strdup(path);
    if (!file) return nx__error(NX_ERR_NOMEM, "out of memory");
    char *text = NULL;
    size_t len = 0;
    nx_status st = nx__file_read_all(file, &text, &len);
    if (st == NX_OK) st = nx_config_parse(text, len, file, out);
    nx__free(text);
    nx__free(file);
    return st;
}

const char *nx_arch_name(nx_arch arch) {
    switch (arch) {
    case NX_ARCH_GPT_NEOX: return "gpt_neox";
    case NX_ARCH_GPTJ: return "gptj";
    case NX_ARCH_GPT_NEO: return "gpt_neo";
    }
    return "?";
}

const char *nx_act_name(nx_act act) {
    switch (act) {
    case NX_ACT_GELU: return "gelu";
    case NX_ACT_GELU_TANH: return "gelu_new";
    case NX_ACT_GELU_FAST: return "gelu_fast";
    case NX_ACT_RELU: return "relu";
    case NX_ACT_SILU: return "silu";
    case NX_ACT_QUICK_GELU: return "quick_gelu";
    }
    return "?";
}
