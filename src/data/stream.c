/*
 * stream.c - the training data stream of a GPT-NeoX config: which tokens global sample i
 * and step s contain.
 *
 * Two GPT-NeoX configurations are reproduced (megatron/data/data_utils.py):
 *  - "data-path" PREFIX with "split" (default "969,30,1"): the train split is the item
 *    range [s0, s1) of get_train_valid_test_split_, num_samples = train_iters * batch.
 *  - "train-data-paths" [P...] with "train-data-weights": weights are normalised and each
 *    dataset gets ceil(num_samples * w * 1.005) samples, then a BlendableDataset
 *    interleaves them by the greedy max-error rule of helpers.cpp build_blending_indices.
 * Step s of the loader reads global samples [s*B, (s+1)*B) (SequentialSampler + batch
 * sampler; each data-parallel rank takes a contiguous slice of those).
 * "data-order": "preshuffled" reads Pythia's hub files, where item i IS sample i.
 */
#include "data/data.h"

#include <jansson.h>
#include <math.h>

/* ---- config ---------------------------------------------------------------------------- */

/* Canonical key spelling: GPT-NeoX accepts '-' and '_' interchangeably. */
static void canon(const char *k, char *out, size_t cap) {
    size_t i = 0;
    for (; k[i] && i + 1 < cap; i++) out[i] = k[i] == '_' ? '-' : k[i];
    out[i] = 0;
}

static nx_status get_int(json_t *v, const char *name, const char *key, int64_t min, int64_t *out) {
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15) {
        *out = (int64_t)json_real_value(v);
    } else {
        return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be an integer", name, key);
    }
    if (*out < min) return nx__error(NX_ERR_RANGE, "%s: \"%s\" = %lld (expected >= %lld)", name, key,
                                     (long long)*out, (long long)min);
    return NX_OK;
}

/* "969,30,1" or "969/30/1" (data_utils.get_train_valid_test_split_). */
static nx_status parse_split(const char *s, const char *name, double out[3]) {
    out[0] = out[1] = out[2] = 0.0;
    char sep = strchr(s, ',') ? ',' : '/';
    int k = 0;
    const char *p = s;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !(v >= 0.0) || !isfinite(v))
            return nx__error(NX_ERR_FORMAT, "%s: \"split\" = \"%s\" (expected e.g. \"969,30,1\")", name, s);
        if (k < 3) out[k] = v;
        k++;
        p = end;
        if (*p == sep) p++;
        else if (*p) return nx__error(NX_ERR_FORMAT, "%s: \"split\" = \"%s\" (expected e.g. \"969,30,1\")", name, s);
    }
    if (out[0] + out[1] + out[2] <= 0.0)
        return nx__error(NX_ERR_FORMAT, "%s: \"split\" = \"%s\" sums to zero", name, s);
    return NX_OK;
}

void nx_data_config_clear(nx_data_config *cfg) {
    if (!cfg) return;
    for (int i = 0; i < cfg->n_paths; i++) nx__free(cfg->paths[i]);
    memset(cfg, 0, sizeof *cfg);
}

nx_status nx_data_config_parse(const char *text, size_t len, const char *name, nx_data_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->seed = 1234;
    cfg->split[0] = 969; cfg->split[1] = 30; cfg->split[2] = 1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root) return nx__error(NX_ERR_FORMAT, "%s:%d: invalid JSON: %s", name, jerr.line, jerr.text);
    nx_status st = NX_OK;
    if (!json_is_object(root)) { st = nx__error(NX_ERR_FORMAT, "%s: expected a JSON object", name); goto done; }
    int64_t micro = 0, accum = 1, dp = 1;
    json_t *weights = NULL;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        char k[64];
        canon(key, k, sizeof k);
        if (strcmp(k, "data-path") == 0) {
            if (!json_is_string(v)) { st = nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be a string", name, key); goto done; }
            if (cfg->n_paths) { st = nx__error(NX_ERR_FORMAT, "%s: give \"data-path\" or \"train-data-paths\", not both", name); goto done; }
            cfg->paths[cfg->n_paths++] = nx__strdup(json_string_value(v));
            cfg->use_split = true;
        } else if (strcmp(k, "train-data-paths") == 0) {
            if (cfg->n_paths) { st = nx__error(NX_ERR_FORMAT, "%s: give \"data-path\" or \"train-data-paths\", not both", name); goto done; }
            if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > NX_DATA_MAX_PATHS) {
                st = nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be a list of 1..%d path prefixes", name, key, NX_DATA_MAX_PATHS);
                goto done;
            }
            for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *p = json_array_get(v, i);
                if (!json_is_string(p)) { st = nx__error(NX_ERR_FORMAT, "%s: \"%s\"[%zu] must be a string", name, key, i); goto done; }
                cfg->paths[cfg->n_paths++] = nx__strdup(json_string_value(p));
            }
        } else if (strcmp(k, "train-data-weights") == 0) {
            weights = v;
        } else if (strcmp(k, "split") == 0) {
            if (!json_is_string(v)) { st = nx__error(NX_ERR_FORMAT, "%s: \"split\" must be a string like \"969,30,1\"", name); goto done; }
            if ((st = parse_split(json_string_value(v), name, cfg->split)) != NX_OK) goto done;
        } else if (strcmp(k, "seq-length") == 0) {
            if ((st = get_int(v, name, key, 1, &cfg->seq_length)) != NX_OK) goto done;
        } else if (strcmp(k, "train-batch-size") == 0 || strcmp(k, "global-batch-size") == 0) {
            if ((st = get_int(v, name, key, 1, &cfg->global_batch)) != NX_OK) goto done;
        } else if (strcmp(k, "train-micro-batch-size-per-gpu") == 0) {
            if ((st = get_int(v, name, key, 1, &micro)) != NX_OK) goto done;
        } else if (strcmp(k, "gradient-accumulation-steps") == 0) {
            if ((st = get_int(v, name, key, 1, &accum)) != NX_OK) goto done;
        } else if (strcmp(k, "data-parallel-size") == 0) {
            if ((st = get_int(v, name, key, 1, &dp)) != NX_OK) goto done;
        } else if (strcmp(k, "train-iters") == 0) {
            if ((st = get_int(v, name, key, 0, &cfg->train_iters)) != NX_OK) goto done;
        } else if (strcmp(k, "seed") == 0) {
            int64_t s;
            if ((st = get_int(v, name, key, 0, &s)) != NX_OK) goto done;
            if (s > 0xffffffffLL) { st = nx__error(NX_ERR_RANGE, "%s: \"seed\" must be below 2^32 (numpy's rule)", name); goto done; }
            cfg->seed = (uint32_t)s;
        } else if (strcmp(k, "data-order") == 0) {
            const char *s = json_string_value(v);
            if (s && strcmp(s, "preshuffled") == 0) cfg->preshuffled = true;
            else if (s && strcmp(s, "neox") == 0) cfg->preshuffled = false;
            else { st = nx__error(NX_ERR_FORMAT, "%s: \"data-order\" must be \"neox\" or \"preshuffled\"", name); goto done; }
        }
        /* Other keys of a full GPT-NeoX config (model, optimizer...) are not ours: ignored. */
    }
    for (int i = 0; i < cfg->n_paths; i++)
        if (!cfg->paths[i]) { st = nx__error(NX_ERR_NOMEM, "%s: out of memory", name); goto done; }
    if (cfg->n_paths == 0) { st = nx__error(NX_ERR_NOT_FOUND, "%s: no \"data-path\" or \"train-data-paths\"", name); goto done; }
    if (cfg->seq_length == 0) { st = nx__error(NX_ERR_NOT_FOUND, "%s: missing \"seq-length\"", name); goto done; }
    if (cfg->global_batch == 0) {
        if (!micro) { st = nx__error(NX_ERR_NOT_FOUND, "%s: missing \"train-batch-size\" (or \"train-micro-batch-size-per-gpu\")", name); goto done; }
        cfg->global_batch = micro * accum * dp;
    }
    for (int i = 0; i < cfg->n_paths; i++) cfg->weights[i] = 1.0;
    if (weights) {
        if (!json_is_array(weights) || (int)json_array_size(weights) != cfg->n_paths) {
            st = nx__error(NX_ERR_FORMAT, "%s: \"train-data-weights\" must list one number per train-data-path (%d)", name, cfg->n_paths);
            goto done;
        }
        for (int i = 0; i < cfg->n_paths; i++) {
            json_t *w = json_array_get(weights, (size_t)i);
            double x = json_is_number(w) ? json_number_value(w) : -1.0;
            if (!(x >= 0.0) || !isfinite(x)) { st = nx__error(NX_ERR_FORMAT, "%s: \"train-data-weights\"[%d] must be a number >= 0", name, i); goto done; }
            cfg->weights[i] = x;
        }
    }
    if (cfg->preshuffled && cfg->n_paths != 1) {
        st = nx__error(NX_ERR_UNSUPPORTED, "%s: \"data-order\": \"preshuffled\" takes exactly one data path", name);
        goto done;
    }
done:
    json_decref(root);
    if (st != NX_OK) nx_data_config_clear(cfg);
    return st;
}

nx_status nx_data_config_load(const char *path, nx_data_config *out) {
    char *text;
    size_t len;
    NX_TRY(nx__file_read_all(path, &text, &len));
    nx_status st = nx_data_config_parse(text, len, path, out);
    nx__free(text);
    if (st != NX_OK) return st;
    /* Relative prefixes resolve against the working directory, as in GPT-NeoX; when
     * nothing is there, against the config's own directory (configs shipped with data). */
    const char *slash = strrchr(path, '/');
    for (int i = 0; slash && i < out->n_paths; i++) {
        char *idx = nx__idx_path(out->paths[i], ".idx");
        bool here = idx && nx__file_exists(idx);
        nx__free(idx);
        if (here || out->paths[i][0] == '/') continue;
        char *dir = nx__strndup(path, (size_t)(slash - path));
        char *joined = dir ? nx__path_join(dir, out->paths[i]) : NULL;
        nx__free(dir);
        if (!joined) { nx_data_config_clear(out); return nx__error(NX_ERR_NOMEM, "%s: out of memory", path); }
        idx = nx__idx_path(joined, ".idx");
        if (idx && nx__file_exists(idx)) {
            nx__free(out->paths[i]);
            out->paths[i] = joined;
        } else {
            nx__free(joined);
        }
        nx__free(idx);
    }
    return NX_OK;
}

/* ---- stream ------------------------------------------------------------------------------ */

struct nx_data_stream {
    int n;
    nx_indexed *ds[NX_DATA_MAX_PATHS];
    nx_sample_index *si[NX_DATA_MAX_PATHS];
    bool preshuffled;
    int64_t sample_len, batch;
    uint64_t size;
    uint8_t *which;        /* BlendableDataset dataset_index (NULL with one dataset) */
    int64_t *which_sample; /* dataset_sample_index */
};

void nx_data_stream_free(nx_data_stream *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        nx_sample_index_free(s->si[i]);
        nx_indexed_free(s->ds[i]);
    }
    nx__free(s->which);
    nx__free(s->which_sample);
    nx__free(s);
}

/* get_train_valid_test_split_: start of the train split and its end, with Python's
 * round-half-even (nearbyint in the default rounding mode). */
void nx_data_train_split(const double w[3], uint64_t size, uint64_t *b, uint64_t *e) {
    double sum = w[0] + w[1] + w[2];
    int64_t idx[4] = {0, 0, 0, 0};
    for (int i = 0; i < 3; i++) idx[i + 1] = idx[i] + (int64_t)nearbyint(w[i] / sum * (double)size);
    int64_t diff = idx[3] - (int64_t)size;
    for (int i = 1; i < 4; i++) idx[i] -= diff;
    *b = (uint64_t)NX_MAX(idx[0], 0);
    *e = (uint64_t)NX_MAX(idx[1], 0);
}

nx_status nx_data_weighted_num_samples(uint64_t num, const double *weights, int n, double *norm, uint64_t *out) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += weights[i];   /* Python sum(): left to right */
    if (n <= 0 || !(sum > 0.0))
        return nx__error(NX_ERR_INVALID_ARG, "train-data-weights must have a positive sum");
    for (int i = 0; i < n; i++) {
        double w = weights[i] / sum;
        if (norm) norm[i] = w;
        /* Same expression order as Python: (num * w) * 1.005, then ceil. */
        out[i] = (uint64_t)ceil((double)num * w * 1.005);
    }
    return NX_OK;
}

nx_status nx_data_stream_open(const nx_data_config *cfg, nx_data_stream **out) {
    *out = NULL;
    nx_data_stream *s = nx__calloc(1, sizeof *s);
    if (!s) return nx__error(NX_ERR_NOMEM, "data stream: out of memory");
    s->preshuffled = cfg->preshuffled;
    s->sample_len = cfg->seq_length + 1;
    s->batch = cfg->global_batch;
    uint64_t num = (uint64_t)cfg->train_iters * (uint64_t)cfg->global_batch;
    double w[NX_DATA_MAX_PATHS];
    uint64_t per[NX_DATA_MAX_PATHS];
    nx_status st = nx_data_weighted_num_samples(num, cfg->weights, cfg->n_paths, w, per);
    for (int i = 0; st == NX_OK && i < cfg->n_paths; i++) {
        st = nx_indexed_open(cfg->paths[i], &s->ds[i]);
        if (st != NX_OK) break;
        s->n++;
        if (s->preshuffled) {
            s->size = nx_indexed_n_items(s->ds[i]);
            continue;
        }
        nx_sample_opts o = {.seq_length = cfg->seq_length, .seed = cfg->seed, .num_samples = num};
        if (cfg->use_split) {
            nx_data_train_split(cfg->split, nx_indexed_n_items(s->ds[i]), &o.doc_begin, &o.doc_end);
            if (o.doc_end <= o.doc_begin) {
                st = nx__error(NX_ERR_RANGE, "%s: the train split %g,%g,%g of %llu documents is empty", cfg->paths[i],
                               cfg->split[0], cfg->split[1], cfg->split[2],
                               (unsigned long long)nx_indexed_n_items(s->ds[i]));
                break;
            }
        } else {
            /* data_utils.get_normalized_weights_and_num_samples: 0.5% extra per dataset. */
            o.num_samples = per[i];
        }
        st = nx_sample_index_build(s->ds[i], &o, &s->si[i]);
        if (st != NX_OK) { nx__error_wrap(st, "%s", cfg->paths[i]); break; }
        s->size += nx_sample_index_count(s->si[i]);
    }
    if (st == NX_OK && s->n > 1) {
        /* BlendableDataset: build_blending_indices over the sum of the datasets' lengths. */
        s->which = nx__malloc(s->size ? s->size : 1);
        s->which_sample = nx__malloc((s->size ? s->size : 1) * sizeof *s->which_sample);
        int64_t cur[NX_DATA_MAX_PATHS] = {0};
        if (!s->which || !s->which_sample) st = nx__error(NX_ERR_NOMEM, "data stream: out of memory for %llu samples",
                                                          (unsigned long long)s->size);
        for (uint64_t i = 0; st == NX_OK && i < s->size; i++) {
            double x = NX_MAX((double)i, 1.0);
            int best = 0;
            double best_err = w[0] * x - (double)cur[0];
            for (int k = 1; k < s->n; k++) {
                double err = w[k] * x - (double)cur[k];
                if (err > best_err) { best_err = err; best = k; }
            }
            s->which[i] = (uint8_t)best;
            s->which_sample[i] = cur[best]++;
        }
    }
    if (st != NX_OK) {
        nx_data_stream_free(s);
        return st;
    }
    *out = s;
    return NX_OK;
}

uint64_t nx_data_stream_count(const nx_data_stream *s) { return s->size; }
int64_t nx_data_stream_sample_len(const nx_data_stream *s) { return s->sample_len; }
int64_t nx_data_stream_global_batch(const nx_data_stream *s) { return s->batch; }

nx_status nx_data_stream_locate(const nx_data_stream *s, uint64_t i, int *dataset, uint64_t *sample) {
    if (i >= s->size)
        return nx__error(NX_ERR_RANGE, "global sample %llu out of range (the stream has %llu)", (unsigned long long)i,
                         (unsigned long long)s->size);
    *dataset = s->which ? s->which[i] : 0;
    *sample = s->which ? (uint64_t)s->which_sample[i] : i;
    return NX_OK;
}

nx_status nx_data_stream_sample(const nx_data_stream *s, uint64_t i, int32_t *dst) {
    int k;
    uint64_t j;
    NX_TRY(nx_data_stream_locate(s, i, &k, &j));
    if (s->preshuffled) {
        int32_t len = nx_indexed_item_size(s->ds[0], j);
        if (len != s->sample_len)
            return nx__error(NX_ERR_FORMAT, "preshuffled item %llu has %d tokens, expected seq-length + 1 = %lld",
                             (unsigned long long)j, len, (long long)s->sample_len);
        return nx_indexed_read(s->ds[0], j, 0, (uint64_t)len, dst);
    }
    if (j >= nx_sample_index_count(s->si[k]))
        return nx__error(NX_ERR_RANGE, "dataset %d: sample %llu out of range", k, (unsigned long long)j);
    return nx_sample_index_get(s->si[k], j, dst);
}

nx_status nx_data_stream_step(const nx_data_stream *s, uint64_t step, int32_t *dst) {
    uint64_t b = (uint64_t)s->batch;
    if (step > UINT64_MAX / b - 1 || (step + 1) * b > s->size)
        return nx__error(NX_ERR_RANGE, "step %llu needs samples up to %llu but the stream has %llu (raise train-iters?)",
                         (unsigned long long)step, (unsigned long long)((step + 1) * b), (unsigned long long)s->size);
    for (uint64_t k = 0; k < b; k++)
        NX_TRY(nx_data_stream_sample(s, step * b + k, dst + k * (uint64_t)s->sample_len));
    return NX_OK;
}
