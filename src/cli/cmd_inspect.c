/*
 * cmd_inspect.c - `neox inspect PATH`: what a checkpoint holds and what it needs to run.
 *
 * PATH is a model directory (config.json + weights in any layout nx_tensorset_open reads),
 * a .safetensors file, or a sharded index. Prints the architecture and hyperparameters
 * (when a config is present), every tensor, the parameter count as transformers'
 * model.parameters() gives it (legacy buffers such as the causal-mask `attention.bias`,
 * `masked_bias` and `rotary_emb.inv_freq` are listed but not counted, and a tied output
 * head stored next to the embedding counts once), byte totals per dtype and an estimate
 * of the memory needed to run it.
 *
 * Memory estimate (batch 1, the full max_position_embeddings context T, f32 compute):
 *   weights      parameter bytes at the stored dtype (mapped as they are)
 *   KV cache     2 (K and V) x layers x T x hidden x 4 bytes
 *   activations  4 bytes x (T x (6 x hidden + intermediate) + heads x T x T + vocab):
 *                one layer's working set for a full-context prefill (residual, LN output,
 *                q/k/v, attention output, MLP inner, all heads' scores) plus one row of
 *                logits; layers run one at a time, so this does not scale with depth.
 */
#include "cli.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *k_usage =
    "usage: neox inspect [--json] [--config FILE] [--no-tensors] PATH\n"
    "\n"
    "Shows what a checkpoint holds: architecture and hyperparameters (from config.json),\n"
    "every tensor (name, dtype, shape), the parameter count, bytes per dtype and the memory\n"
    "needed to run it (weights + f32 KV cache for the full context + activations, estimated).\n"
    "\n"
    "PATH        a model directory (config.json + model.safetensors, a sharded\n"
    "            model.safetensors.index.json, or pytorch_model.bin[.index.json]),\n"
    "            a .safetensors file or an .index.json file\n"
    "--config F  use config file F (default: PATH/config.json for a directory, else none)\n"
    "--json      print one JSON object instead of text\n"
    "--no-tensors  omit the per-tensor list\n";

/* Buffers older checkpoints store next to the weights; they are not parameters. */
static bool is_legacy_buffer(const char *name) {
    static const char *const k_suffixes[] = {".attention.bias", ".attention.masked_bias", ".attn.bias",
                                             ".attn.masked_bias", ".rotary_emb.inv_freq"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof k_suffixes / sizeof k_suffixes[0]; i++) {
        size_t m = strlen(k_suffixes[i]);
        if (n >= m && strcmp(name + n - m, k_suffixes[i]) == 0) return true;
    }
    return false;
}

typedef struct { const void *data; size_t nbytes, index; } alias_key;

static int cmp_alias(const void *a, const void *b) {
    const alias_key *x = a, *y = b;
    if (x->data != y->data) return (uintptr_t)x->data < (uintptr_t)y->data ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Marks tensors that are not separate parameters, as transformers' parameters() counts
 * them: a tensor sharing storage with an earlier one (a .bin saves a tied lm_head as a
 * view of the embedding's storage), and with tie_word_embeddings an output head stored
 * next to the input embedding. */
static void mark_tied(const nx_tensorset *ts, const nx_model_config *c, bool *tied) {
    size_t nt = nx_tensorset_count(ts);
    alias_key *k = calloc(nt ? nt : 1, sizeof *k);
    if (k) {
        for (size_t i = 0; i < nt; i++) {
            const nx_tensor_info *t = nx_tensorset_at(ts, i);
            k[i] = (alias_key){t->data, t->nbytes, i};
        }
        qsort(k, nt, sizeof *k, cmp_alias);
        for (size_t i = 1; i < nt; i++)
            if (k[i].nbytes && k[i].data == k[i - 1].data && k[i].nbytes == k[i - 1].nbytes) tied[k[i].index] = true;
        free(k);
    }
    if (c && c->tie_word_embeddings) {
        static const char *const pairs[][2] = {{"lm_head.weight", "transformer.wte.weight"},
                                               {"embed_out.weight", "gpt_neox.embed_in.weight"}};
        for (size_t p = 0; p < 2; p++) {
            const nx_tensor_info *head = nx_tensorset_find(ts, pairs[p][0]);
            if (head && nx_tensorset_find(ts, pairs[p][1]))
                tied[(size_t)(head - nx_tensorset_at(ts, 0))] = true;
        }
    }
}

static const char *human(double bytes, char *buf, size_t cap) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) { bytes /= 1024.0; u++; }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

static const char *arch_title(nx_arch a) {
    switch (a) {
    case NX_ARCH_GPT_NEOX: return "GPT-NeoX / Pythia (GPTNeoXForCausalLM)";
    case NX_ARCH_GPTJ: return "GPT-J (GPTJForCausalLM)";
    case NX_ARCH_GPT_NEO: return "GPT-Neo (GPTNeoForCausalLM)";
    }
    return "?";
}

typedef struct {
    double weights, kv, act, total;
    long long ctx;
} mem_estimate;

static mem_estimate estimate(const nx_model_config *c, unsigned long long param_bytes) {
    mem_estimate m = {0};
    m.weights = (double)param_bytes;
    if (c) {
        double T = c->max_position_embeddings, H = c->hidden_size;
        m.ctx = c->max_position_embeddings;
        m.kv = 2.0 * c->n_layer * T * H * 4.0;
        m.act = 4.0 * (T * (6.0 * H + c->intermediate_size) + (double)c->n_head * T * T + c->vocab_size);
    }
    m.total = m.weights + m.kv + m.act;
    return m;
}

static json_t *config_json(const nx_model_config *c) {
    json_t *o = json_object();
    json_object_set_new(o, "model_type", json_string(c->model_type));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(o, "num_layers", json_integer(c->n_layer));
    json_object_set_new(o, "num_heads", json_integer(c->n_head));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(o, "rotary_dim", json_integer(c->rotary_dim));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(o, "layer_norm_eps", json_real(c->layer_norm_eps));
    json_object_set_new(o, "activation", json_string(nx_act_name(c->act)));
    json_object_set_new(o, "parallel_residual", json_boolean(c->parallel_residual));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    if (c->arch == NX_ARCH_GPT_NEO) {
        json_object_set_new(o, "window_size", json_integer(c->window_size));
        json_t *loc = json_array();
        for (int l = 0; l < c->n_layer; l++)
            if (c->layer_is_local[l]) json_array_append_new(loc, json_integer(l));
        json_object_set_new(o, "local_layers", loc);
    }
    json_object_set_new(o, "torch_dtype",
                        c->torch_dtype == NX_DTYPE_INVALID ? json_null() : json_string(nx_dtype_name(c->torch_dtype)));
    return o;
}

static void print_config(const nx_model_config *c) {
    printf("architecture: %s  [model_type %s]\n", arch_title(c->arch), c->model_type);
    printf("  vocab_size %d, hidden_size %d, layers %d, heads %d (head_dim %d), intermediate_size %d\n",
           c->vocab_size, c->hidden_size, c->n_layer, c->n_head, c->head_dim, c->intermediate_size);
    printf("  max_position_embeddings %d, activation %s, layer_norm_eps %g\n", c->max_position_embeddings,
           nx_act_name(c->act), (double)c->layer_norm_eps);
    if (c->arch == NX_ARCH_GPT_NEO) {
        int nloc = 0;
        for (int l = 0; l < c->n_layer; l++) nloc += c->layer_is_local[l];
        printf("  learned positions; %d local-attention layers (window %d), %d global; no 1/sqrt(d) scaling\n", nloc,
               c->window_size, c->n_layer - nloc);
    } else {
        printf("  rotary: %d of %d dims per head (%s), base %g%s\n", c->rotary_dim, c->head_dim,
               c->rotary_interleaved ? "interleaved pairs, GPT-J" : "rotate_half, NeoX", (double)c->rope_theta,
               c->rope_scaling_type == 1 ? ", linear scaling" : c->rope_scaling_type == 2 ? ", dynamic scaling" : "");
    }
    printf("  residual %s, tie_word_embeddings %s, config dtype %s\n",
           c->parallel_residual ? "parallel" : "sequential", c->tie_word_embeddings ? "yes" : "no",
           c->torch_dtype == NX_DTYPE_INVALID ? "(none)" : nx_dtype_name(c->torch_dtype));
}

int cmd_inspect(int argc, char **argv) {
    const char *cmd = "inspect", *path = NULL, *config_path = NULL;
    bool as_json = false, tensors = true;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { fputs(k_usage, stdout); return 0; }
        if (strcmp(argv[i], "--json") == 0) as_json = true;
        else if (strcmp(argv[i], "--no-tensors") == 0) tensors = false;
        else if (strcmp(argv[i], "--config") == 0) {
            if (!(config_path = cli_next_arg(cmd, argc, argv, &i))) return 2;
        } else if (argv[i][0] == '-' && argv[i][1]) return cli_usage_error(cmd, "unknown option %s", argv[i]);
        else if (path) return cli_usage_error(cmd, "more than one PATH given");
        else path = argv[i];
    }
    if (!path) return cli_usage_error(cmd, "missing PATH");

    nx_tensorset *ts = NULL;
    nx_status st = nx_tensorset_open(path, &ts);
    if (st != NX_OK) return cli_fail(cmd, st, "cannot open checkpoint");

    nx_model_config cfg, *c = NULL;
    char *auto_cfg = NULL;
    if (!config_path) {
        /* a directory's own config.json, when there is one */
        size_t n = strlen(path) + sizeof "/config.json";
        auto_cfg = malloc(n);
        if (auto_cfg) {
            snprintf(auto_cfg, n, "%s/config.json", path);
            FILE *f = fopen(auto_cfg, "rb");
            if (f) { fclose(f); config_path = auto_cfg; }
        }
    }
    if (config_path) {
        st = nx_config_load(config_path, &cfg);
        if (st != NX_OK) {
            nx_tensorset_free(ts);
            free(auto_cfg);
            return cli_fail(cmd, st, "cannot read config");
        }
        c = &cfg;
    }

    size_t nt = nx_tensorset_count(ts);
    unsigned long long params = 0, param_bytes = 0, total_bytes = 0, by_dtype[NX_DTYPE_COUNT] = {0};
    size_t legacy = 0, tied = 0, nfiles = 0;
    const char **files = calloc(nt ? nt : 1, sizeof *files);
    bool *is_tied = calloc(nt ? nt : 1, sizeof *is_tied);
    if (is_tied) mark_tied(ts, c, is_tied);
    for (size_t i = 0; i < nt; i++) {
        const nx_tensor_info *t = nx_tensorset_at(ts, i);
        total_bytes += t->nbytes;
        by_dtype[t->dtype] += t->nbytes;
        if (is_legacy_buffer(t->name)) legacy++;
        else if (is_tied && is_tied[i]) tied++;
        else { params += nx_tensor_numel(t); param_bytes += t->nbytes; }
        bool seen = false;
        for (size_t k = 0; k < nfiles && !seen; k++) seen = strcmp(files[k], t->file) == 0;
        if (!seen && files) files[nfiles++] = t->file;
    }
    mem_estimate m = estimate(c, param_bytes);

    if (as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(path));
        json_object_set_new(o, "files", json_integer((json_int_t)nfiles));
        json_object_set_new(o, "config", c ? config_json(c) : json_null());
        json_object_set_new(o, "n_tensors", json_integer((json_int_t)nt));
        json_object_set_new(o, "legacy_buffers", json_integer((json_int_t)legacy));
        json_object_set_new(o, "tied_copies", json_integer((json_int_t)tied));
        json_object_set_new(o, "parameters", json_integer((json_int_t)params));
        json_object_set_new(o, "parameter_bytes", json_integer((json_int_t)param_bytes));
        json_object_set_new(o, "total_bytes", json_integer((json_int_t)total_bytes));
        json_t *bd = json_object();
        for (int d = 0; d < NX_DTYPE_COUNT; d++)
            if (by_dtype[d]) json_object_set_new(bd, nx_dtype_name((nx_dtype)d), json_integer((json_int_t)by_dtype[d]));
        json_object_set_new(o, "bytes_by_dtype", bd);
        json_t *mj = json_object();
        json_object_set_new(mj, "batch", json_integer(1));
        json_object_set_new(mj, "context", c ? json_integer(m.ctx) : json_null());
        json_object_set_new(mj, "weights", json_integer((json_int_t)m.weights));
        json_object_set_new(mj, "kv_cache_f32", c ? json_integer((json_int_t)m.kv) : json_null());
        json_object_set_new(mj, "activations_f32", c ? json_integer((json_int_t)m.act) : json_null());
        json_object_set_new(mj, "total", json_integer((json_int_t)m.total));
        json_object_set_new(o, "memory", mj);
        if (tensors) {
            json_t *arr = json_array();
            for (size_t i = 0; i < nt; i++) {
                const nx_tensor_info *t = nx_tensorset_at(ts, i);
                json_t *tj = json_object(), *sh = json_array();
                json_object_set_new(tj, "name", json_string(t->name));
                json_object_set_new(tj, "dtype", json_string(nx_dtype_name(t->dtype)));
                for (int d = 0; d < t->ndim; d++) json_array_append_new(sh, json_integer(t->shape[d]));
                json_object_set_new(tj, "shape", sh);
                json_object_set_new(tj, "bytes", json_integer((json_int_t)t->nbytes));
                if (is_legacy_buffer(t->name)) json_object_set_new(tj, "legacy_buffer", json_true());
                else if (is_tied && is_tied[i]) json_object_set_new(tj, "tied", json_true());
                json_array_append_new(arr, tj);
            }
            json_object_set_new(o, "tensors", arr);
        }
        char *s = json_dumps(o, JSON_INDENT(1));
        if (s) { puts(s); free(s); }
        json_decref(o);
    } else {
        char b1[32], b2[32], b3[32], b4[32];
        printf("path: %s (%zu file%s)\n", path, nfiles, nfiles == 1 ? "" : "s");
        if (c) print_config(c);
        else printf("architecture: unknown (no config.json; use --config)\n");
        const char *fmt = nx_tensorset_metadata(ts, "format");
        if (fmt) printf("metadata format: %s\n", fmt);
        if (tensors) {
            printf("\n%-60s %-8s %-22s %12s\n", "tensor", "dtype", "shape", "bytes");
            for (size_t i = 0; i < nt; i++) {
                const nx_tensor_info *t = nx_tensorset_at(ts, i);
                char shape[96];
                size_t p = 0;
                shape[p++] = '[';
                shape[p] = 0;
                for (int d = 0; d < t->ndim && p < sizeof shape - 24; d++)
                    p += (size_t)snprintf(shape + p, sizeof shape - p, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
                snprintf(shape + p, sizeof shape - p, "]");
                printf("%-60s %-8s %-22s %12zu%s\n", t->name, nx_dtype_name(t->dtype), shape, t->nbytes,
                       is_legacy_buffer(t->name)    ? "  (legacy buffer, not a parameter)"
                       : (is_tied && is_tied[i]) ? "  (tied to the input embedding, counted once)"
                                                 : "");
            }
            printf("\n");
        }
        printf("tensors: %zu (%zu legacy buffer%s not counted as parameters", nt, legacy, legacy == 1 ? "" : "s");
        if (tied) printf("; %zu tied cop%s counted once", tied, tied == 1 ? "y" : "ies");
        printf(")\n");
        printf("parameters: %llu (%.3f M)\n", params, (double)params / 1e6);
        printf("bytes: %llu total (%s):", total_bytes, human((double)total_bytes, b1, sizeof b1));
        for (int d = 0; d < NX_DTYPE_COUNT; d++)
            if (by_dtype[d]) printf(" %s %s", nx_dtype_name((nx_dtype)d), human((double)by_dtype[d], b2, sizeof b2));
        printf("\n");
        if (c) {
            printf("memory to run, estimated (batch 1, context %lld, f32 compute): %s\n", m.ctx,
                   human(m.total, b1, sizeof b1));
            printf("  weights      %12s  parameters at the stored dtype\n", human(m.weights, b2, sizeof b2));
            printf("  KV cache     %12s  2 x %d layers x %lld positions x %d hidden x 4 B\n", human(m.kv, b3, sizeof b3),
                   c->n_layer, m.ctx, c->hidden_size);
            printf("  activations  %12s  4 B x (T(6H + I) + heads T^2 + V): one layer's full-context prefill\n",
                   human(m.act, b4, sizeof b4));
        } else {
            printf("memory to run: weights %s; KV cache and activations need a config.json\n",
                   human(m.weights, b2, sizeof b2));
        }
    }
    free((void *)files);
    free(is_tied);
    free(auto_cfg);
    nx_tensorset_free(ts);
    return 0;
}
