/* fuzz_config.c - feeds arbitrary text to the config.json parser. An accepted config must
 * satisfy the invariants the model code relies on. */
#include "io/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nx_model_config c;
    if (nx_config_parse((const char *)data, size, "fuzz/config.json", &c) == NX_OK) {
        NX_ASSERT(c.hidden_size > 0 && c.n_head > 0 && c.n_layer > 0 && c.n_layer <= NX_MAX_LAYERS);
        NX_ASSERT(c.head_dim * c.n_head == c.hidden_size);
        NX_ASSERT(c.rotary_dim >= 0 && c.rotary_dim <= c.head_dim && c.rotary_dim % 2 == 0);
        NX_ASSERT(c.intermediate_size > 0 && c.vocab_size > 0 && c.max_position_embeddings > 0);
        NX_ASSERT(c.layer_norm_eps > 0);
        (void)nx_arch_name(c.arch);
        (void)nx_act_name(c.act);
    } else {
        NX_ASSERT(nx_last_error()[0] != 0);
    }
    return 0;
}
