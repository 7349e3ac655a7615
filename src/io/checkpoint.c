/*
 * checkpoint.c - opens a checkpoint in any of the layouts the Hub serves:
 *   DIR                           -> the first present of model.safetensors,
 *                                    model.safetensors.index.json, pytorch_model.bin,
 *                                    pytorch_model.bin.index.json (HF from_pretrained order)
 *   *.index.json                  -> {"metadata": {...}, "weight_map": {tensor: shard}}
 *   *.safetensors                 -> safetensors reader
 *   anything else                 -> sniffed: a zip (PyTorch >= 1.6 .bin) goes to the
 *                                    torch reader, otherwise safetensors
 * Index files are handled generically: every shard is opened with the reader its name or
 * content calls for, shards are resolved relative to the index's directory and may not
 * escape it (no absolute paths, no ".." components), and every tensor the weight_map
 * lists must be present in exactly the shard it names.
 */
#include "io.h"
#include "core/json.h"

#include <jansson.h>

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* Reads one checkpoint file (not an index) into ts. */
static nx_status read_weights_file(nx_tensorset *ts, const char *path) {
    if (ends_with(path, ".safetensors")) return nx__safetensors_read_into(ts, path);
    if (ends_with(path, ".bin") || ends_with(path, ".pt") || ends_with(path, ".pth"))
        return nx__torchbin_read_into(ts, path);
    /* Unknown extension: a zip local-file header means a PyTorch checkpoint. */
    FILE *f = fopen(path, "rb");
    if (!f) return nx__error(NX_ERR_IO, "%s: cannot open", path);
    uint8_t magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4)
        return nx__torchbin_read_into(ts, path);
    return nx__safetensors_read_into(ts, path);
}

/* A shard name from an index must stay inside the index's directory. */
static bool shard_name_safe(const char *name) {
    if (!*name || name[0] == '/' || strchr(name, '\\')) return false;
    const char *p = name;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return false;
        if (!slash) break;
        p = slash + 1;
    }
    return true;
}

/* Directory part of a path ("." when none), new string. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return nx__strdup(".");
    if (slash == path) return nx__strdup("/");
    return nx__strndup(path, (size_t)(slash - path));
}

typedef struct { const char *name; size_t first, last; } shard_range;   /* tensors [first, last) */

static int cmp_shard(const void *a, const void *b) {
    return strcmp(((const shard_range *)a)->name, ((const shard_range *)b)->name);
}

static nx_status read_index(nx_tensorset *ts, const char *path) {
    char *text = NULL;
    size_t len = 0;
    NX_TRY(nx__file_read_all(path, &text, &len));
    json_error_t jerr;
    json_t *root = nx__json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    nx__free(text);
    if (!root) {
        NX_TRY(nx__json_oom(path));
        return nx__error(NX_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", path, jerr.text, jerr.line,
                         jerr.column);
    }
    nx_status st = NX_OK;
    char *dir = NULL;
    shard_range *shards = NULL;
    size_t nshards = 0;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(root)) {
        st = nx__error(NX_ERR_FORMAT, "%s: the index is not a JSON object", path);
        goto done;
    }
    if (!wm) { st = nx__error(NX_ERR_FORMAT, "%s: no \"weight_map\" in the index", path); goto done; }
    if (!json_is_object(wm)) {
        st = nx__error(NX_ERR_FORMAT, "%s: \"weight_map\" is not an object of tensor -> shard file", path);
        goto done;
    }
    json_t *meta = json_object_get(root, "metadata");
    if (meta && !json_is_object(meta) && !json_is_null(meta)) {
        st = nx__error(NX_ERR_FORMAT, "%s: \"metadata\" is not an object", path);
        goto done;
    }
    if (json_object_size(wm) == 0) { st = nx__error(NX_ERR_FORMAT, "%s: \"weight_map\" is empty", path); goto done; }
    shards = nx__calloc(json_object_size(wm), sizeof *shards);
    dir = dir_of(path);
    if (!shards || !dir) { st = nx__error(NX_ERR_NOMEM, "%s: out of memory", path); goto done; }
    const char *tname;
    json_t *sv;
    json_object_foreach(wm, tname, sv) {
        if (!json_is_string(sv)) {
            st = nx__error(NX_ERR_FORMAT, "%s: weight_map['%s'] is not a string (shard file name)", path, tname);
            goto done;
        }
        const char *sname = json_string_value(sv);
        if (!shard_name_safe(sname)) {
            st = nx__error(NX_ERR_SECURITY, "%s: weight_map['%s'] = \"%s\" leaves the checkpoint directory", path,
                           tname, sname);
            goto done;
        }
        shards[nshards++].name = sname;
    }
    /* Distinct shards in sorted order, as HF does (sorted(set(weight_map.values()))); sorting
     * keeps a hostile index with many entries O(n log n). Each shard then occupies a
     * contiguous range of the set. */
    qsort(shards, nshards, sizeof *shards, cmp_shard);
    size_t uniq = 0;
    for (size_t i = 0; i < nshards; i++)
        if (uniq == 0 || strcmp(shards[uniq - 1].name, shards[i].name) != 0) shards[uniq++] = shards[i];
    nshards = uniq;
    for (size_t i = 0; i < nshards; i++) {
        char *sp = nx__path_join(dir, shards[i].name);
        if (!sp) { st = nx__error(NX_ERR_NOMEM, "%s: out of memory", path); goto done; }
        if (!nx__file_exists(sp)) {
            st = nx__error(NX_ERR_NOT_FOUND, "%s: shard \"%s\" named in weight_map does not exist (%s)", path,
                           shards[i].name, sp);
            nx__free(sp);
            goto done;
        }
        shards[i].first = nx_tensorset_count(ts);
        st = read_weights_file(ts, sp);
        nx__free(sp);
        if (st != NX_OK) { nx__error_wrap(st, "%s", path); goto done; }
        shards[i].last = nx_tensorset_count(ts);
    }
    /* Every listed tensor must come from the shard the map names. */
    const nx_tensor_info *base = nx_tensorset_at(ts, 0);
    json_object_foreach(wm, tname, sv) {
        const char *sname = json_string_value(sv);
        const nx_tensor_info *t = nx_tensorset_find(ts, tname);
        size_t idx = t ? (size_t)(t - base) : 0;
        shard_range key = {sname, 0, 0};
        const shard_range *sr = bsearch(&key, shards, nshards, sizeof *shards, cmp_shard);
        NX_ASSERT(sr != NULL);   /* every value of the map was collected above */
        if (!t || idx < sr->first || idx >= sr->last) {
            st = nx__error(NX_ERR_NOT_FOUND, "%s: tensor '%s' is mapped to shard \"%s\" but that shard %s", path,
                           tname, sname, t ? "does not contain it (another shard does)" : "does not contain it");
            goto done;
        }
    }
done:
    nx__free(shards);
    nx__free(dir);
    json_decref(root);
    return st;
}

static nx_status open_file(nx_tensorset *ts, const char *path) {
    if (ends_with(path, ".index.json")) return read_index(ts, path);
    return read_weights_file(ts, path);
}

nx_status nx_tensorset_open(const char *path, nx_tensorset **out) {
    if (!out) return nx__error(NX_ERR_INVALID_ARG, "nx_tensorset_open: out is NULL");
    *out = NULL;
    if (!path) return nx__error(NX_ERR_INVALID_ARG, "nx_tensorset_open: path is NULL");
    nx_tensorset *ts = nx__tensorset_new();
    if (!ts) return nx__error(NX_ERR_NOMEM, "%s: out of memory", path);
    nx_status st;
    if (nx__dir_exists(path)) {
        static const char *const k_names[] = {"model.safetensors", "model.safetensors.index.json",
                                              "pytorch_model.bin", "pytorch_model.bin.index.json"};
        st = NX_ERR_NOT_FOUND;
        bool found = false;
        for (size_t i = 0; i < NX_ARRAY_LEN(k_names) && !found; i++) {
            char *p = nx__path_join(path, k_names[i]);
            if (!p) { st = nx__error(NX_ERR_NOMEM, "%s: out of memory", path); break; }
            if (nx__file_exists(p)) {
                found = true;
                st = open_file(ts, p);
            }
            nx__free(p);
        }
        if (!found && st == NX_ERR_NOT_FOUND)
            st = nx__error(NX_ERR_NOT_FOUND,
                           "%s: no checkpoint in this directory (looked for model.safetensors, "
                           "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)",
                           path);
    } else if (nx__file_exists(path)) {
        st = open_file(ts, path);
    } else {
        st = nx__error(NX_ERR_NOT_FOUND, "%s: no such file or directory", path);
    }
    if (st != NX_OK) {
        nx_tensorset_free(ts);
        return st;
    }
    *out = ts;
    return NX_OK;
}
