/* fuzz_model_load.c - feeds arbitrary bytes to the model loader as the model.safetensors of a
 * fixed tiny GPT-NeoX (vocab 32, hidden 64, 1 layer, 2 heads, intermediate 64; seeds from
 * tools/fixtures/make_fuzz_model_seeds.py: f32, and q8/q4 directories from `neox quantize`, the
 * q4 one in the interleaved layout). The parser is fuzzed on its own (fuzz_safetensors); this
 * reaches what the loader decides from it: names, shapes, dtypes, quantization tags, which
 * matrices are used in place and which are converted or gathered back into row order. A model
 * the loader accepts must run: a 3-token prompt and one decoded token read every matrix, in the
 * type the file asks for and converted to fp32, so ASan flags any view outside the file. */
#include "neox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char k_config[] =
    "{\"architectures\": [\"GPTNeoXForCausalLM\"], \"model_type\": \"gpt_neox\", \"hidden_act\": \"gelu\",\n"
    " \"hidden_size\": 64, \"intermediate_size\": 64, \"num_attention_heads\": 2, \"num_hidden_layers\": 1,\n"
    " \"vocab_size\": 32, \"max_position_embeddings\": 64, \"layer_norm_eps\": 1e-05, \"rotary_pct\": 0.25,\n"
    " \"rotary_emb_base\": 10000, \"use_parallel_residual\": true, \"tie_word_embeddings\": false}\n";

static char g_dir[4096], g_model[4200], g_config[4200];

static void cleanup(void) {
    unlink(g_model);
    unlink(g_config);
    rmdir(g_dir);
}

static int setup(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/nx_fuzz_model_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) return 0;
    snprintf(g_model, sizeof g_model, "%s/model.safetensors", g_dir);
    snprintf(g_config, sizeof g_config, "%s/config.json", g_dir);
    FILE *f = fopen(g_config, "w");
    if (!f) return 0;
    fputs(k_config, f);
    fclose(f);
    atexit(cleanup);
    return 1;
}

static void run(nx_dtype dt) {
    nx_model_opts o = {dt};
    nx_model *m = NULL;
    if (nx_model_load(g_dir, &o, &m) != NX_OK) {
        if (!nx_last_error()[0]) abort();   /* a failure always says why */
        return;
    }
    nx_session_opts so = {0};
    so.n_threads = 1;
    so.n_ctx = 8;
    nx_session *s = NULL;
    if (nx_session_create(m, &so, &s) == NX_OK) {
        int32_t ids[3] = {1, 30, 7}, next = 31;
        float *logits = malloc(sizeof(float) * 3 * 32);
        if (logits && (nx_session_forward(s, ids, 3, logits) != NX_OK || nx_session_forward(s, &next, 1, NULL) != NX_OK))
            abort();   /* a loaded model runs */
        free(logits);
        nx_session_free(s);
    }
    nx_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready = -1;
    if (ready < 0) ready = setup();
    FILE *f = ready ? fopen(g_model, "wb") : NULL;
    size_t w = f && size ? fwrite(data, 1, size, f) : 0;
    if (!f || fclose(f) != 0 || w != size) {   /* no model file, no test: fail, never pass silently */
        fprintf(stderr, "fuzz_model_load: cannot write %s\n", ready ? g_model : "a temporary directory");
        abort();
    }
    run(NX_DTYPE_INVALID);   /* the file's own type: in place where it can be */
    run(NX_F32);             /* every matrix converted: dequantized, gathered */
    return 0;
}
