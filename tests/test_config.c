/*
 * test_config.c - config.json parsing for gpt_neox, gptj and gpt_neo.
 * tests/fixtures/io/configs/ holds real config shapes (Pythia in the 4.24, 4.45 and v5
 * spellings, GPT-J-6B, GPT-Neo-1.3B, bare class defaults); configs/expected.json holds what
 * the transformers config classes resolve for each (tools/fixtures/make_safetensors.py), so
 * defaults and aliases are checked against HF itself. Then the error cases, each checked
 * for the field it names.
 */
#include "test.h"
#include "neox.h"

#include <jansson.h>

static void check_against_hf(const char *fname, const json_t *e) {
    char rel[256];
    snprintf(rel, sizeof rel, "io/configs/%s", fname);
    nx_model_config c;
    nx_status st = nx_config_load(fixture_path(rel), &c);
    CHECK_MSG(st == NX_OK, "%s: %s", fname, nx_last_error());
#define EQ(field, key) CHECK_MSG((long long)(field) == json_integer_value(json_object_get(e, key)), "%s: %s = %lld", fname, key, (long long)(field))
    EQ(c.vocab_size, "vocab_size");
    EQ(c.hidden_size, "hidden_size");
    EQ(c.n_layer, "n_layer");
    EQ(c.n_head, "n_head");
    EQ(c.head_dim, "head_dim");
    EQ(c.intermediate_size, "intermediate_size");
    EQ(c.max_position_embeddings, "max_position_embeddings");
    EQ(c.bos_token_id, "bos_token_id");
    EQ(c.eos_token_id, "eos_token_id");
    CHECK_MSG(c.tie_word_embeddings == json_is_true(json_object_get(e, "tie_word_embeddings")), "%s: tie", fname);
    CHECK_NEAR(c.layer_norm_eps, json_number_value(json_object_get(e, "eps")), 1e-12);
    CHECK_MSG(strcmp(nx_act_name(c.act), json_string_value(json_object_get(e, "act"))) == 0, "%s: act %s", fname,
              nx_act_name(c.act));
    if (c.arch == NX_ARCH_GPT_NEOX) {
        EQ(c.rotary_dim, "rotary_dim");
        CHECK_NEAR(c.rotary_pct, json_number_value(json_object_get(e, "rotary_pct")), 1e-7);
        CHECK_NEAR(c.rope_theta, json_number_value(json_object_get(e, "rope_theta")), 1e-3);
        CHECK(c.parallel_residual == json_is_true(json_object_get(e, "parallel_residual")));
        CHECK(c.attention_bias == json_is_true(json_object_get(e, "attention_bias")));
        CHECK(!c.rotary_interleaved && c.scale_attn);
    } else if (c.arch == NX_ARCH_GPTJ) {
        EQ(c.rotary_dim, "rotary_dim");
        CHECK(c.rotary_interleaved && c.parallel_residual && c.scale_attn && !c.attention_bias);
        CHECK_NEAR(c.rope_theta, 10000.0, 0);
    } else {
        EQ(c.window_size, "window_size");
        const json_t *loc = json_object_get(e, "local_layers");
        int expect[NX_MAX_LAYERS] = {0};
        for (size_t i = 0; i < json_array_size(loc); i++) expect[json_integer_value(json_array_get(loc, i))] = 1;
        for (int l = 0; l < c.n_layer; l++) CHECK_MSG(c.layer_is_local[l] == expect[l], "%s: layer %d", fname, l);
        CHECK(c.rotary_dim == 0 && !c.scale_attn && !c.parallel_residual);
    }
#undef EQ
}

static void test_against_transformers(void) {
    json_error_t je;
    json_t *exp = json_load_file(fixture_path("io/configs/expected.json"), 0, &je);
    CHECK(exp != NULL);
    int compared = 0;
    const char *fname;
    json_t *e;
    json_object_foreach(exp, fname, e) {
        if (json_object_get(e, "hf_error")) continue;   /* checked by hand below */
        int before = t_failed_checks;
        check_against_hf(fname, e);
        if (t_failed_checks != before) { t_current_failed = 1; break; }
        compared++;
    }
    json_decref(exp);
    CHECK(compared >= 9);
}

static void test_specific_values(void) {
    nx_model_config c;
    CHECK_EQ_INT(nx_config_load(fixture_path("io/configs/pythia-70m.json"), &c), NX_OK);
    CHECK(c.arch == NX_ARCH_GPT_NEOX && strcmp(c.model_type, "gpt_neox") == 0);
    CHECK(c.torch_dtype == NX_F16 && c.act == NX_ACT_GELU && c.rope_scaling_type == 0);
    /* v5: "dtype" and rope_parameters */
    CHECK_EQ_INT(nx_config_load(fixture_path("io/configs/pythia-12b-v5.json"), &c), NX_OK);
    CHECK(c.torch_dtype == NX_F16 && c.rotary_dim == 32);
    /* the config transformers itself wrote for the tiny model, loaded through its directory */
    CHECK_EQ_INT(nx_config_load(fixture_path("io/tiny-neox"), &c), NX_OK);
    CHECK(c.hidden_size == 32 && c.n_layer == 2 && c.rotary_dim == 2 && c.torch_dtype == NX_F32 && c.vocab_size == 128);
    CHECK_EQ_INT(nx_config_load(fixture_path("io/configs/gpt-j-6b.json"), &c), NX_OK);
    CHECK(c.arch == NX_ARCH_GPTJ && c.torch_dtype == NX_F32 && c.act == NX_ACT_GELU_TANH);
    CHECK_NEAR(c.rotary_pct, 0.25, 0);
    /* rotary_dim null rotates the whole head (older transformers; v5 rejects null) */
    CHECK_EQ_INT(nx_config_load(fixture_path("io/configs/gptj-rotary-null.json"), &c), NX_OK);
    CHECK(c.rotary_dim == 64 && c.head_dim == 64 && c.intermediate_size == 512 && c.act == NX_ACT_GELU_TANH);
    CHECK_EQ_INT(nx_config_load(fixture_path("io/configs/gpt-neo-1.3b.json"), &c), NX_OK);
    CHECK(c.arch == NX_ARCH_GPT_NEO && c.torch_dtype == NX_DTYPE_INVALID && c.window_size == 256);
    CHECK(c.layer_is_local[0] == 0 && c.layer_is_local[1] == 1 && c.layer_is_local[23] == 1);
    /* model_type missing: the architecture class decides */
    const char *j = "{\"architectures\": [\"GPTJForCausalLM\"], \"n_embd\": 64, \"n_head\": 4, \"n_layer\": 1, \"rotary_dim\": 8}";
    CHECK_EQ_INT(nx_config_parse(j, strlen(j), "x.json", &c), NX_OK);
    CHECK(c.arch == NX_ARCH_GPTJ && c.rotary_dim == 8 && c.intermediate_size == 256);
    /* rope scaling, both spellings */
    j = "{\"model_type\": \"gpt_neox\", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}";
    CHECK_EQ_INT(nx_config_parse(j, strlen(j), "x.json", &c), NX_OK);
    CHECK(c.rope_scaling_type == 1);
    CHECK_NEAR(c.rope_scaling_factor, 2.0, 0);
    j = "{\"model_type\": \"gpt_neox\", \"rope_parameters\": {\"rope_type\": \"dynamic\", \"factor\": 4, \"rope_theta\": 500.0}}";
    CHECK_EQ_INT(nx_config_parse(j, strlen(j), "x.json", &c), NX_OK);
    CHECK(c.rope_scaling_type == 2);
    CHECK_NEAR(c.rope_theta, 500.0, 0);
    /* both spellings present and equal (re-saved Pythia), token ids null */
    j = "{\"model_type\": \"gpt_neox\", \"rotary_pct\": 0.5, \"partial_rotary_factor\": 0.5, \"bos_token_id\": null}";
    CHECK_EQ_INT(nx_config_parse(j, strlen(j), "x.json", &c), NX_OK);
    CHECK(c.rotary_dim == 48 && c.bos_token_id == -1 && c.eos_token_id == 2);
    /* HF computes int(head_size * rotary_pct) in double: int(40 * 0.35) = 14, where the
     * float32 value 0.35f would give 13 */
    j = "{\"model_type\": \"gpt_neox\", \"hidden_size\": 80, \"num_attention_heads\": 2, \"rotary_pct\": 0.35}";
    CHECK_EQ_INT(nx_config_parse(j, strlen(j), "x.json", &c), NX_OK);
    CHECK_EQ_INT(c.rotary_dim, 14);
    /* not NUL-terminated input: only len bytes are read */
    char buf[64];
    memcpy(buf, "{\"model_type\": \"gptj\"}XXXX", 26);
    CHECK_EQ_INT(nx_config_parse(buf, 22, "x.json", &c), NX_OK);
}

typedef struct { const char *json; nx_status st; const char *needle; } err_case;

static void test_errors(void) {
    static const err_case k_cases[] = {
        {"{\"model_type\": \"llama\"}", NX_ERR_UNSUPPORTED, "field 'model_type' = \"llama\" is not supported"},
        {"{\"hidden_size\": 64}", NX_ERR_FORMAT, "field 'model_type' is missing"},
        {"{\"model_type\": 3}", NX_ERR_FORMAT, "field 'model_type' is an integer, expected a string"},
        {"{\"model_type\": \"gpt_neox\", \"hidden_size\": 100, \"num_attention_heads\": 8}", NX_ERR_FORMAT,
         "field 'hidden_size' = 100 is not divisible by num_attention_heads = 8"},
        {"{\"model_type\": \"gptj\", \"rotary_dim\": 63}", NX_ERR_FORMAT, "field 'rotary_dim' = 63, expected an even number"},
        {"{\"model_type\": \"gptj\", \"n_embd\": 256, \"n_head\": 4, \"rotary_dim\": 128}", NX_ERR_FORMAT,
         "field 'rotary_dim' = 128, expected an even number in [2, head_dim = 64]"},
        {"{\"model_type\": \"gptj\", \"rotary_dim\": 0}", NX_ERR_FORMAT, "field 'rotary_dim' = 0"},
        {"{\"model_type\": \"gpt_neox\", \"hidden_size\": 96, \"num_attention_heads\": 8}", NX_ERR_FORMAT,
         "gives 3 rotary dims of 12, which is odd"},
        {"{\"model_type\": \"gpt_neox\", \"rotary_pct\": 1.5}", NX_ERR_FORMAT, "field 'rotary_pct' = 1.5"},
        {"{\"model_type\": \"gpt_neox\", \"vocab_size\": 0}", NX_ERR_FORMAT, "field 'vocab_size' = 0, expected > 0"},
        {"{\"model_type\": \"gpt_neox\", \"num_hidden_layers\": -1}", NX_ERR_FORMAT, "field 'num_hidden_layers' = -1"},
        {"{\"model_type\": \"gpt_neox\", \"num_hidden_layers\": 513}", NX_ERR_UNSUPPORTED, "exceeds the supported 512"},
        {"{\"model_type\": \"gpt_neox\", \"num_attention_heads\": 0}", NX_ERR_FORMAT, "field 'num_attention_heads' = 0"},
        {"{\"model_type\": \"gpt_neox\", \"intermediate_size\": -4}", NX_ERR_FORMAT, "field 'intermediate_size' = -4"},
        {"{\"model_type\": \"gpt_neox\", \"layer_norm_eps\": 0}", NX_ERR_FORMAT, "field 'layer_norm_eps' = 0"},
        {"{\"model_type\": \"gpt_neox\", \"max_position_embeddings\": 0}", NX_ERR_FORMAT, "field 'max_position_embeddings' = 0"},
        {"{\"model_type\": \"gpt_neo\", \"num_layers\": 4, \"attention_types\": [[[\"global\", \"local\"], 1]]}",
         NX_ERR_FORMAT, "field 'attention_types' expands to 2 layers but num_layers is 4"},
        {"{\"model_type\": \"gpt_neo\", \"num_layers\": 2, \"attention_types\": [[[\"global\", \"sliding\"], 1]]}",
         NX_ERR_FORMAT, "field 'attention_types[0]' has an entry that is not \"global\" or \"local\""},
        {"{\"model_type\": \"gpt_neo\", \"attention_types\": [[\"global\", 24]]}", NX_ERR_FORMAT,
         "field 'attention_types[0]' is not [[kinds...], count]"},
        {"{\"model_type\": \"gpt_neo\", \"attention_types\": \"global\"}", NX_ERR_FORMAT, "field 'attention_types' is a string"},
        {"{\"model_type\": \"gpt_neo\", \"num_layers\": 12}", NX_ERR_FORMAT, "expands to 24 layers but num_layers is 12"},
        {"{\"model_type\": \"gpt_neo\", \"window_size\": 0}", NX_ERR_FORMAT, "field 'window_size' = 0"},
        {"{\"model_type\": \"gpt_neox\", \"hidden_size\": \"512\"}", NX_ERR_FORMAT,
         "field 'hidden_size' is a string, expected an integer"},
        {"{\"model_type\": \"gpt_neox\", \"hidden_size\": 512.0}", NX_ERR_FORMAT,
         "field 'hidden_size' is a real number, expected an integer"},
        {"{\"model_type\": \"gpt_neox\", \"hidden_size\": null}", NX_ERR_FORMAT, "field 'hidden_size' is null"},
        {"{\"model_type\": \"gpt_neox\", \"use_parallel_residual\": \"true\"}", NX_ERR_FORMAT,
         "field 'use_parallel_residual' is a string, expected a boolean"},
        {"{\"model_type\": \"gpt_neox\", \"rotary_pct\": \"0.25\"}", NX_ERR_FORMAT, "field 'rotary_pct' is a string, expected a number"},
        {"{\"model_type\": \"gpt_neox\", \"vocab_size\": 10000000000}", NX_ERR_FORMAT, "does not fit a 32-bit integer"},
        {"{\"model_type\": \"gpt_neox\", \"rotary_pct\": 0.25, \"partial_rotary_factor\": 0.5}", NX_ERR_FORMAT,
         "fields 'rotary_pct' and 'partial_rotary_factor' are aliases but disagree"},
        {"{\"model_type\": \"gpt_neox\", \"rotary_emb_base\": 10000, \"rope_parameters\": {\"rope_theta\": 500}}",
         NX_ERR_FORMAT, "fields 'rotary_emb_base' and 'rope_parameters.rope_theta' are aliases but disagree"},
        {"{\"model_type\": \"gptj\", \"n_embd\": 4096, \"hidden_size\": 2048}", NX_ERR_FORMAT,
         "fields 'n_embd' and 'hidden_size' are aliases but disagree"},
        {"{\"model_type\": \"gpt_neox\", \"rope_parameters\": [1]}", NX_ERR_FORMAT, "field 'rope_parameters' is an array"},
        {"{\"model_type\": \"gpt_neox\", \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 2}}", NX_ERR_UNSUPPORTED,
         "field 'rope_scaling.type' = \"yarn\" is not supported"},
        {"{\"model_type\": \"gpt_neox\", \"rope_scaling\": {\"type\": \"linear\"}}", NX_ERR_FORMAT, "rope_scaling.factor"},
        {"{\"model_type\": \"gpt_neox\", \"hidden_act\": \"gelu_foo\"}", NX_ERR_UNSUPPORTED,
         "field 'hidden_act' = \"gelu_foo\" is not a supported activation"},
        {"{\"model_type\": \"gpt_neox\", \"torch_dtype\": \"int4\"}", NX_ERR_FORMAT, "field 'torch_dtype' = \"int4\""},
        {"{\"model_type\": \"gpt_neox\", \"bos_token_id\": \"0\"}", NX_ERR_FORMAT, "field 'bos_token_id' is a string"},
        {"{\"model_type\": \"gpt_neox\", \"model_type\": \"gptj\"}", NX_ERR_FORMAT, "duplicate object key"},
        {"{\"model_type\": \"gpt_neox\",", NX_ERR_FORMAT, "not valid JSON"},
        {"[\"gpt_neox\"]", NX_ERR_FORMAT, "config is an array, expected a JSON object"},
        {"", NX_ERR_FORMAT, "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
        nx_model_config c;
        memset(&c, 0x5a, sizeof c);
        nx_status st = nx_config_parse(k_cases[i].json, strlen(k_cases[i].json), "bad/config.json", &c);
        CHECK_MSG(st == k_cases[i].st, "case %zu (%s): status %d, message %s", i, k_cases[i].json, st, nx_last_error());
        CHECK_STR_CONTAINS(nx_last_error(), k_cases[i].needle);
        CHECK_STR_CONTAINS(nx_last_error(), "bad/config.json");
    }
    nx_model_config c;
    CHECK_EQ_INT(nx_config_load("/nonexistent/dir/config.json", &c), NX_ERR_IO);
    CHECK_STR_CONTAINS(nx_last_error(), "/nonexistent/dir/config.json");
}

int main(void) {
    TEST_RUN(test_against_transformers);
    TEST_RUN(test_specific_values);
    TEST_RUN(test_errors);
    TEST_END();
}
