/*
 * quantize.c - nx_model_quantize: a checkpoint directory -> a safetensors directory whose
 * linear-layer matrices are stored in a run type (docs/QUANT.md), loadable by nx_model_load.
 *
 * Tensors keep their Hugging Face names and row order (NeoX's interleaved query_key_value
 * stays interleaved: rows are quantized independently, so the loader's row permutation applies
 * to quantized rows unchanged). Q8_0/Q4_0 matrices [OUT][IN] become U8 tensors
 * [OUT][IN/32 · block bytes] of blocks, tagged in "__metadata__" with "neox.quant.<name>" =
 * "Q8_0" | "Q4_0" (row-major blocks) | "Q8_0_x8" | "Q4_0_x8" (the interleaved layout, kernels.h
 * nx__x8_block, which every matrix of a fitting shape gets: the AVX-512 decode reads it in
 * place, faster than row order; other CPUs reorder it at load); "neox.dtype" names the
 * run type the directory loads in. Everything else (embeddings, LayerNorms, biases) is copied
 * unchanged.
 */
#include "io/io.h"
#include "models/models.h"

/* Names of the matrices that run in the quantized type, for the three families. */
static bool is_linear_matrix(const char *name) {
    static const char *const suffixes[] = {
        "query_key_value.weight", "attention.dense.weight", "dense_h_to_4h.weight", "dense_4h_to_h.weight",
        "q_proj.weight",          "k_proj.weight",          "v_proj.weight",        "out_proj.weight",
        "fc_in.weight",           "fc_out.weight",          "c_fc.weight",          "c_proj.weight"};
    if (!strcmp(name, "embed_out.weight") || !strcmp(name, "lm_head.weight")) return true;
    size_t n = strlen(name);
    for (size_t i = 0; i < NX_ARRAY_LEN(suffixes); i++) {
        size_t k = strlen(suffixes[i]);
        if (n >= k && !strcmp(name + n - k, suffixes[i]) && (n == k || name[n - k - 1] == '.')) return true;
    }
    return false;
}

static bool is_float(nx_dtype t) { return t == NX_F32 || t == NX_F16 || t == NX_BF16 || t == NX_F64; }

static nx_status copy_file(const char *in_dir, const char *out_dir, const char *name) {
    char *src = nx__path_join(in_dir, name), *dst = nx__path_join(out_dir, name);
    char *data = NULL;
    size_t len = 0;
    nx_status st = NX_OK;
    if (!src || !dst) {
        st = nx__error(NX_ERR_NOMEM, "out of memory");
    } else if (nx__file_exists(src)) {
        st = nx__file_read_all(src, &data, &len);
        nx_atomic_file af = {0};
        if (st == NX_OK) st = nx__atomic_open(&af, dst);
        if (st == NX_OK) st = nx__atomic_write(&af, data, len);
        if (st == NX_OK) st = nx__atomic_commit(&af);
        nx__atomic_abort(&af);
    }
    nx__free(data);
    nx__free(src);
    nx__free(dst);
    return st;
}

nx_status nx_model_quantize(const char *in_dir, const char *out_dir, nx_dtype dtype) {
    if (!in_dir || !out_dir) return nx__error(NX_ERR_INVALID_ARG, "nx_model_quantize: NULL argument");
    if (dtype != NX_Q8_0 && dtype != NX_Q4_0 && dtype != NX_BF16 && dtype != NX_F16)
        return nx__error(NX_ERR_UNSUPPORTED, "nx_model_quantize: type %s is not one of Q8_0, Q4_0, BF16, F16",
                         nx_dtype_name(dtype));
    nx_model_config cfg;
    NX_TRY(nx_config_load(in_dir, &cfg));
    nx_tensorset *ts = NULL;
    NX_TRY(nx_tensorset_open(in_dir, &ts));
    size_t n = nx_tensorset_count(ts);
    nx_tensor_write *tw = nx__calloc(n ? n : 1, sizeof *tw);
    void **owned = nx__calloc(n ? n : 1, sizeof *owned);
    /* metadata: format, neox.dtype, then one neox.quant.<name> pair per quantized tensor */
    const char **meta = nx__calloc(2 * n + 4, sizeof *meta);
    char **keys = nx__calloc(n ? n : 1, sizeof *keys);
    size_t n_meta = 0;
    float *row = NULL;
    nx_status st = NX_OK;
    if (!tw || !owned || !meta || !keys) {
        st = nx__error(NX_ERR_NOMEM, "out of memory");
        goto done;
    }
    meta[n_meta++] = "format";
    meta[n_meta++] = "pt";
    meta[n_meta++] = "neox.dtype";
    meta[n_meta++] = nx_dtype_name(dtype);
    for (size_t i = 0; i < n && st == NX_OK; i++) {
        const nx_tensor_info *t = nx_tensorset_at(ts, i);
        tw[i].name = t->name;
        tw[i].dtype = t->dtype;
        tw[i].ndim = t->ndim;
        memcpy(tw[i].shape, t->shape, sizeof t->shape);
        tw[i].data = t->data;
        if (!(t->ndim == 2 && is_float(t->dtype) && is_linear_matrix(t->name))) continue;
        int64_t OUT = t->shape[0], IN = t->shape[1];
        bool blocks = dtype == NX_Q8_0 || dtype == NX_Q4_0;
        if (blocks && IN % NX_QBLOCK != 0) {
            st = nx__error(NX_ERR_UNSUPPORTED, "%s: tensor '%s' has %lld columns, not a multiple of 32 as %s needs",
                           t->file ? t->file : in_dir, t->name, (long long)IN, nx_dtype_name(dtype));
            break;
        }
        if (IN > (1 << 20) || OUT > (1 << 24)) {
            st = nx__error(NX_ERR_RANGE, "%s: tensor '%s' is too large", in_dir, t->name);
            break;
        }
        float *f = nx__malloc((size_t)OUT * (size_t)IN * sizeof(float));
        size_t out_bytes = blocks ? (size_t)OUT * nx__row_bytes(dtype, (int)IN) : (size_t)OUT * (size_t)IN * 2;
        owned[i] = nx__malloc(out_bytes ? out_bytes : 1);
        if (!f || !owned[i]) {
            nx__free(f);
            st = nx__error(NX_ERR_NOMEM, "out of memory quantizing '%s'", t->name);
            break;
        }
        st = nx_tensor_to_f32(t, f);
        /* the source is not read again: its file pages need not stay resident */
        nx__tensorset_release(ts, t->data, t->nbytes);
        if (st == NX_OK) {
            uint8_t *o8 = owned[i];
            size_t rb = nx__row_bytes(dtype, (int)IN);
            for (int64_t r = 0; r < OUT; r++) {
                const float *src = f + (size_t)r * (size_t)IN;
                if (dtype == NX_Q8_0)
                    nx__quantize_row_q8_0((nx_block_q8_0 *)(o8 + (size_t)r * rb), src, (int)IN);
                else if (dtype == NX_Q4_0)
                    nx__quantize_row_q4_0((nx_block_q4_0 *)(o8 + (size_t)r * rb), src, (int)IN);
                else if (dtype == NX_BF16)
                    for (int64_t k = 0; k < IN; k++)
                        ((uint16_t *)o8)[(size_t)r * (size_t)IN + (size_t)k] = nx__f32_to_bf16(src[k]);
                else
                    for (int64_t k = 0; k < IN; k++)
                        ((uint16_t *)o8)[(size_t)r * (size_t)IN + (size_t)k] = nx_f32_to_f16(src[k]);
            }
            bool x8 = nx__x8_layout(dtype, (int)OUT, (int)IN);
            if (x8) {
                uint8_t *tmp = nx__malloc(8 * rb);
                if (tmp)
                    nx__x8_interleave(o8, dtype, (int)OUT, (int)IN, tmp);
                else
                    st = nx__error(NX_ERR_NOMEM, "out of memory interleaving '%s'", t->name);
                nx__free(tmp);
            }
            tw[i].data = o8;
            if (blocks) {
                tw[i].dtype = NX_U8;
                tw[i].shape[1] = (int64_t)rb;
                size_t kl = strlen(t->name) + 16;
                keys[i] = nx__malloc(kl);
                if (!keys[i]) {
                    st = nx__error(NX_ERR_NOMEM, "out of memory");
                } else {
                    snprintf(keys[i], kl, "neox.quant.%s", t->name);
                    meta[n_meta++] = keys[i];
                    meta[n_meta++] = x8 ? nx__x8_tag(dtype) : nx_dtype_name(dtype);
                }
            } else {
                tw[i].dtype = dtype;
            }
        }
        nx__free(f);
    }
    if (st == NX_OK) st = nx__mkdir_p(out_dir);
    if (st == NX_OK) {
        char *path = nx__path_join(out_dir, "model.safetensors");
        st = path ? nx_safetensors_write(path, tw, n, meta, n_meta / 2) : nx__error(NX_ERR_NOMEM, "out of memory");
        /* The written pages would stay cached as they are, in small units, and the file is used in
         * place: read back instead, it maps in huge pages (nx__advise_huge; 410M q4 generation
         * 1.10x). Costs the first load a read of the file. */
        if (st == NX_OK) nx__file_drop_cache(path);
        nx__free(path);
    }
    static const char *const files[] = {"config.json",          "generation_config.json", "tokenizer.json",
                                        "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                                        "merges.txt",            "added_tokens.json"};
    for (size_t i = 0; st == NX_OK && i < NX_ARRAY_LEN(files); i++) st = copy_file(in_dir, out_dir, files[i]);
done:
    for (size_t i = 0; i < n && owned && keys; i++) {
        nx__free(owned[i]);
        nx__free(keys[i]);
    }
    nx__free(row);
    nx__free(owned);
    nx__free(keys);
    nx__free(meta);
    nx__free(tw);
    nx_tensorset_free(ts);
    return st;
}
