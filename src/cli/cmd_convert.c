/*
 * cmd_convert.c - `neox convert IN OUT [--dtype f32|f16|bf16]`: any checkpoint the library
 * reads (model directory, .bin or .safetensors, single file or sharded with an index) to a
 * safetensors model directory that transformers' from_pretrained loads.
 *
 * What goes into OUT/model.safetensors mirrors transformers' save_pretrained: legacy
 * non-persistent buffers that old checkpoints carry (causal-mask attention.bias,
 * masked_bias, rotary inv_freq) are dropped, and with tie_word_embeddings the output
 * embedding (lm_head / embed_out) is left out because transformers re-ties it on load.
 * Metadata is {"format": "pt"}, which from_pretrained requires. config.json,
 * generation_config.json and the tokenizer files are copied from IN's directory; with --dtype
 * the config's dtype field is updated so dtype="auto" loads the converted precision.
 * Every output file is written atomically (temporary file, fsync, rename).
 */
#include "cli.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char k_usage[] =
    "usage: neox convert IN OUT [--dtype f32|f16|bf16]\n"
    "\n"
    "Converts a checkpoint to a safetensors model directory that transformers loads.\n"
    "IN is a model directory (model.safetensors, pytorch_model.bin, or a sharded set with its\n"
    ".index.json) or one such file or index. PyTorch .bin files are read without running\n"
    "their pickle code: anything but tensors and containers is refused.\n"
    "OUT receives model.safetensors plus config.json, generation_config.json and the tokenizer\n"
    "files found next to IN. Legacy buffers (attention masks, masked_bias, rotary inv_freq) are\n"
    "dropped and a tied lm_head is left out, as transformers' save_pretrained does.\n"
    "\n"
    "  --dtype T   cast floating-point tensors to f32, f16 or bf16 (round to nearest even)\n"
    "              and record it in config.json; default: keep every tensor's dtype\n";

/* Files copied next to the weights when IN's directory has them. */
static const char *const k_copy_files[] = {
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "added_tokens.json",
};

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    s[a] = '/';
    memcpy(s + a + 1, name, b + 1);
    return s;
}

/* Buffers transformers never saves (non-persistent in today's modules), which checkpoints
 * from older transformers versions still contain. The bias names are only dropped for
 * boolean/uint8 masks and masked_bias, so that a real weight named *.bias is never lost. */
static bool is_legacy_buffer(const nx_tensor_info *t) {
    const char *n = t->name;
    if (ends_with(n, ".masked_bias") || ends_with(n, "rotary_emb.inv_freq")) return true;
    if ((ends_with(n, ".attention.bias") || ends_with(n, ".attn.bias")) && (t->dtype == NX_BOOL || t->dtype == NX_U8))
        return true;
    return false;
}

/* Writes data to path atomically: a temporary file in the same directory, fsync, rename. */
static int write_atomic(const char *path, const void *data, size_t n) {
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp) return -1;
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int rc = -1;
    if (f) {
        bool ok = fwrite(data, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
        ok = (fclose(f) == 0) && ok;
        if (ok && rename(tmp, path) == 0) rc = 0;
    }
    if (rc != 0) {
        fprintf(stderr, "neox convert: cannot write %s: %s\n", path, strerror(errno));
        remove(tmp);
    }
    free(tmp);
    return rc;
}

static int read_file(const char *path, char **out, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap + 1);
            if (!nb) { free(buf); fclose(f); return -1; }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) { free(buf); return -1; }
    buf[len] = 0;
    *out = buf;
    *n = len;
    return 0;
}

static int copy_file(const char *src, const char *dst) {
    char *data;
    size_t n;
    if (read_file(src, &data, &n) != 0) {
        fprintf(stderr, "neox convert: cannot read %s: %s\n", src, strerror(errno));
        return -1;
    }
    int rc = write_atomic(dst, data, n);
    free(data);
    return rc;
}

/* Replaces the value of the first "key": "..." (or null) in JSON text with "value".
 * Returns a new string or NULL when the key is not found in that form. */
static char *replace_string_value(const char *text, const char *key, const char *value) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    for (const char *p = strstr(text, pat); p; p = strstr(p + 1, pat)) {
        const char *q = p + strlen(pat);
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
        if (*q != ':') continue;
        q++;
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
        const char *vend;
        if (strncmp(q, "null", 4) == 0) {
            vend = q + 4;
        } else if (*q == '"') {
            vend = q + 1;
            while (*vend && *vend != '"') vend += (*vend == '\\' && vend[1]) ? 2 : 1;
            if (*vend != '"') return NULL;
            vend++;
        } else {
            continue;
        }
        size_t a = (size_t)(q - text), vl = strlen(value), rest = strlen(vend);
        char *out = malloc(a + vl + 2 + rest + 1);
        if (!out) return NULL;
        memcpy(out, text, a);
        out[a] = '"';
        memcpy(out + a + 1, value, vl);
        out[a + 1 + vl] = '"';
        memcpy(out + a + 2 + vl, vend, rest + 1);
        return out;
    }
    return NULL;
}

/* True when text parses to an object whose top-level `key` is the string `value`
 * (or key is absent and value is NULL). */
static bool config_has(const char *text, const char *key, const char *value) {
    json_t *j = json_loads(text, 0, NULL);
    json_t *v = j ? json_object_get(j, key) : NULL;
    bool ok = j && json_is_object(j) && (value ? (json_is_string(v) && strcmp(json_string_value(v), value) == 0) : !v);
    json_decref(j);
    return ok;
}

/* Copies config.json; with a dtype change, sets its dtype fields ("torch_dtype" and/or the
 * newer "dtype"; "torch_dtype" when it has neither, which all transformers versions read).
 * The edit is made in the text, so every other byte (number formatting, key order) stays as
 * transformers wrote it; the result is re-parsed to check it, and if the text edit did not
 * take (unusual layouts), the object is re-serialized instead. */
static int write_config(const char *src, const char *dst, const char *dtype_name) {
    if (!dtype_name) return copy_file(src, dst);
    char *text;
    size_t n;
    if (read_file(src, &text, &n) != 0) {
        fprintf(stderr, "neox convert: cannot read %s: %s\n", src, strerror(errno));
        return -1;
    }
    json_error_t jerr;
    json_t *cfg = json_loadb(text, n, 0, &jerr);
    if (!cfg || !json_is_object(cfg)) {
        fprintf(stderr, "neox convert: %s: not a JSON object%s%s\n", src, cfg ? "" : ": ", cfg ? "" : jerr.text);
        json_decref(cfg);
        free(text);
        return -1;
    }
    bool has_new = json_object_get(cfg, "dtype") != NULL, has_old = json_object_get(cfg, "torch_dtype") != NULL;
    char *edited = strdup(text);
    if (edited && has_new) { char *e = replace_string_value(edited, "dtype", dtype_name); free(edited); edited = e; }
    if (edited && has_old) { char *e = replace_string_value(edited, "torch_dtype", dtype_name); free(edited); edited = e; }
    if (edited && !has_new && !has_old) {
        const char *brace = strchr(edited, '{');
        static const char ins_fmt[] = "\n  \"torch_dtype\": \"%s\",";
        size_t a = (size_t)(brace - edited) + 1, il = strlen(ins_fmt) + strlen(dtype_name), rest = strlen(edited + a);
        char *e = malloc(a + il + rest + 1);
        if (e) {
            memcpy(e, edited, a);
            int w = snprintf(e + a, il + 1, ins_fmt, dtype_name);
            memcpy(e + a + (size_t)w, edited + a, rest + 1);
        }
        free(edited);
        edited = e;
    }
    bool ok = edited != NULL;
    if (ok && has_new) ok = config_has(edited, "dtype", dtype_name);
    if (ok && (has_old || !has_new)) ok = config_has(edited, "torch_dtype", dtype_name);
    if (!ok) {   /* fall back to re-serializing the parsed object */
        free(edited);
        if (has_new) json_object_set_new(cfg, "dtype", json_string(dtype_name));
        if (has_old || !has_new) json_object_set_new(cfg, "torch_dtype", json_string(dtype_name));
        char *dump = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        size_t dl = dump ? strlen(dump) : 0;
        edited = dump ? malloc(dl + 2) : NULL;
        if (edited) { memcpy(edited, dump, dl); edited[dl] = '\n'; edited[dl + 1] = 0; }
        free(dump);
    }
    json_decref(cfg);
    free(text);
    int rc = edited ? write_atomic(dst, edited, strlen(edited)) : -1;
    free(edited);
    return rc;
}

static int mkdir_p(const char *path) {
    char *p = strdup(path);
    if (!p) return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) { free(p); return -1; }
        *s = '/';
    }
    int rc = (mkdir(p, 0755) == 0 || errno == EEXIST) && is_dir(p) ? 0 : -1;
    free(p);
    return rc;
}

/* Casts one float tensor to `to` into a new malloc'd buffer (NULL on failure). */
static void *cast_tensor(const nx_tensor_info *t, nx_dtype to) {
    size_t n = nx_tensor_numel(t);
    float *f = malloc(n ? n * sizeof(float) : 1);
    if (!f) return NULL;
    if (nx_tensor_to_f32(t, f) != NX_OK) { free(f); return NULL; }
    if (to == NX_F32) return f;
    uint16_t *h = malloc(n ? n * 2 : 1);
    if (h) {
        for (size_t i = 0; i < n; i++) h[i] = to == NX_F16 ? nx_f32_to_f16(f[i]) : nx_f32_to_bf16(f[i]);
    }
    free(f);
    return h;
}

static bool is_float(nx_dtype d) { return d == NX_F32 || d == NX_F16 || d == NX_BF16 || d == NX_F64; }

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *dtype_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { fputs(k_usage, stdout); return 0; }
        if (strcmp(argv[i], "--dtype") == 0) {
            if (!(dtype_arg = cli_next_arg("convert", argc, argv, &i))) return 2;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error("convert", "unknown option %s", argv[i]);
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            return cli_usage_error("convert", "unexpected argument %s", argv[i]);
        }
    }
    if (!in || !out) return cli_usage_error("convert", "needs IN and OUT");
    nx_dtype to = NX_DTYPE_INVALID;
    const char *torch_name = NULL;
    if (dtype_arg) {
        if (strcmp(dtype_arg, "f32") == 0 || strcmp(dtype_arg, "float32") == 0) { to = NX_F32; torch_name = "float32"; }
        else if (strcmp(dtype_arg, "f16") == 0 || strcmp(dtype_arg, "float16") == 0) { to = NX_F16; torch_name = "float16"; }
        else if (strcmp(dtype_arg, "bf16") == 0 || strcmp(dtype_arg, "bfloat16") == 0) { to = NX_BF16; torch_name = "bfloat16"; }
        else return cli_usage_error("convert", "--dtype must be f32, f16 or bf16, not '%s'", dtype_arg);
    }

    /* The directory holding config.json and tokenizer files. */
    char *in_dir = NULL;
    if (is_dir(in)) {
        in_dir = strdup(in);
    } else {
        const char *slash = strrchr(in, '/');
        in_dir = slash ? strndup(in, (size_t)(slash - in) + (slash == in)) : strdup(".");
    }
    if (!in_dir) return cli_fail("convert", NX_ERR_NOMEM, "out of memory");

    int rc = 1;
    nx_tensorset *ts = NULL;
    nx_tensor_write *tw = NULL;
    void **owned = NULL;
    size_t n_owned = 0;
    char *out_model = NULL, *cfg_path = NULL;
    char rin[PATH_MAX], rout[PATH_MAX];

    if (realpath(in_dir, rin) && realpath(out, rout) && strcmp(rin, rout) == 0) {
        fprintf(stderr, "neox convert: OUT (%s) is the input's directory; choose another directory\n", out);
        rc = 2;
        goto done;
    }
    /* read and validate the whole input (and config) before creating anything */
    nx_status st = nx_tensorset_open(in, &ts);
    if (st != NX_OK) { rc = cli_fail("convert", st, "cannot read the checkpoint"); goto done; }

    /* A `neox quantize` directory holds its matrices as U8 blobs of blocks, described only by
     * its "neox.quant.<name>" metadata: copied as they are, they would be a checkpoint nothing
     * loads. */
    for (size_t i = 0; i < nx_tensorset_count(ts); i++) {
        const nx_tensor_info *t = nx_tensorset_at(ts, i);
        char key[320];
        snprintf(key, sizeof key, "neox.quant.%s", t->name);
        const char *q = nx_tensorset_metadata(ts, key);
        if (q) {
            fprintf(stderr,
                    "neox convert: %s: tensor '%s' holds %s blocks (a neox quantize directory), which "
                    "transformers cannot load; convert the checkpoint it was quantized from\n",
                    t->file ? t->file : in, t->name, q);
            rc = 1;
            goto done;
        }
    }

    nx_model_config cfg;
    cfg_path = join(in_dir, "config.json");
    bool have_cfg = cfg_path && is_file(cfg_path);
    if (have_cfg && (st = nx_config_load(cfg_path, &cfg)) != NX_OK) {
        rc = cli_fail("convert", st, "cannot read config.json");
        goto done;
    }
    if (!have_cfg)
        fprintf(stderr, "neox convert: warning: no config.json next to %s; OUT will hold weights only, and a "
                        "tied lm_head (if any) is kept\n", in);

    /* The output embedding transformers re-ties on load, per architecture. */
    const char *head = NULL, *embed = NULL;
    if (have_cfg && cfg.tie_word_embeddings) {
        head = cfg.arch == NX_ARCH_GPT_NEOX ? "embed_out.weight" : "lm_head.weight";
        embed = cfg.arch == NX_ARCH_GPT_NEOX ? "gpt_neox.embed_in.weight" : "transformer.wte.weight";
    }

    size_t n = nx_tensorset_count(ts), nw = 0, dropped = 0, tied = 0;
    uint64_t total = 0;
    tw = calloc(n ? n : 1, sizeof *tw);
    owned = calloc(n ? n : 1, sizeof *owned);
    if (!tw || !owned) { fprintf(stderr, "neox convert: out of memory\n"); goto done; }
    for (size_t i = 0; i < n; i++) {
        const nx_tensor_info *t = nx_tensorset_at(ts, i);
        if (is_legacy_buffer(t)) { dropped++; continue; }
        if (head && strcmp(t->name, head) == 0) {
            const nx_tensor_info *e = nx_tensorset_find(ts, embed);
            if (e && (e->nbytes != t->nbytes || e->dtype != t->dtype || memcmp(e->data, t->data, t->nbytes) != 0))
                fprintf(stderr, "neox convert: warning: config ties %s to %s but their values differ; transformers "
                                "uses %s for both, so %s is not written\n", head, embed, embed, head);
            tied++;
            continue;
        }
        nx_tensor_write *w = &tw[nw++];
        w->name = t->name;
        w->dtype = t->dtype;
        w->ndim = t->ndim;
        memcpy(w->shape, t->shape, sizeof w->shape);
        w->data = t->data;
        if (to != NX_DTYPE_INVALID && is_float(t->dtype) && t->dtype != to) {
            void *buf = cast_tensor(t, to);
            if (!buf) { fprintf(stderr, "neox convert: out of memory casting '%s'\n", t->name); goto done; }
            owned[n_owned++] = buf;
            w->dtype = to;
            w->data = buf;
        }
        total += (uint64_t)nx_tensor_numel(t) * nx_dtype_size(w->dtype);
    }

    if (mkdir_p(out) != 0) {
        fprintf(stderr, "neox convert: cannot create directory %s: %s\n", out, strerror(errno));
        goto done;
    }
    out_model = join(out, "model.safetensors");
    if (!out_model) goto done;
    static const char *const meta[] = {"format", "pt"};
    if ((st = nx_safetensors_write(out_model, tw, nw, meta, 1)) != NX_OK) {
        rc = cli_fail("convert", st, "cannot write model.safetensors");
        goto done;
    }
    int copied = 0;
    if (have_cfg) {
        char *dst = join(out, "config.json");
        int r = dst ? write_config(cfg_path, dst, torch_name) : -1;
        free(dst);
        if (r != 0) goto done;
        copied++;
    }
    for (size_t i = 0; i < sizeof k_copy_files / sizeof *k_copy_files; i++) {
        char *src = join(in_dir, k_copy_files[i]), *dst = join(out, k_copy_files[i]);
        int r = 0;
        if (src && dst && is_file(src)) {
            r = copy_file(src, dst);
            copied++;
        }
        free(src);
        free(dst);
        if (r != 0) goto done;
    }
    printf("wrote %s: %zu tensors, %.2f MB%s%s\n", out_model, nw, (double)total / 1e6, dtype_arg ? ", cast to " : "",
           dtype_arg ? torch_name : "");
    printf("dropped %zu legacy buffer%s; %s; copied %d config/tokenizer file%s\n", dropped, dropped == 1 ? "" : "s",
           tied ? "left out the tied output embedding" : "no tied output embedding", copied, copied == 1 ? "" : "s");
    rc = 0;
done:
    for (size_t i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    free(tw);
    free(out_model);
    free(cfg_path);
    free(in_dir);
    nx_tensorset_free(ts);
    return rc;
}
