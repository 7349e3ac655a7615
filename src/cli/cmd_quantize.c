/* cmd_quantize.c - `neox quantize IN OUT --type q8|q4|bf16|f16`: writes a safetensors model
 * directory whose linear-layer matrices are stored in the given type (docs/QUANT.md), with
 * config and tokenizer files copied; `neox generate/bench/logits -m OUT` run it directly. */
#include "cli.h"

#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox quantize IN_DIR OUT_DIR --type q8|q4|bf16|f16\n"
            "  IN_DIR        a model directory (safetensors or pytorch_model.bin, sharded or not)\n"
            "  OUT_DIR       created if missing; receives model.safetensors, config.json, tokenizer files\n"
            "  --type T      q8 (Q8_0: 32 int8 + fp16 scale per block), q4 (Q4_0: 32 4-bit + fp16 scale),\n"
            "                both ggml's blocks, byte for byte; or bf16, f16. Embeddings, LayerNorms and\n"
            "                biases are kept as stored\n");
}

int cmd_quantize(int argc, char **argv) {
    const char *cmd = "quantize", *in = NULL, *out = NULL, *type = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--type") || !strcmp(a, "-t")) {
            if (!(type = cli_next_arg(cmd, argc, argv, &i))) return 2;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error(cmd, "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            return cli_usage_error(cmd, "unexpected argument '%s'", a);
        }
    }
    if (!in || !out) return cli_usage_error(cmd, "give an input and an output directory");
    if (!type) return cli_usage_error(cmd, "--type is required (q8, q4, bf16 or f16)");
    nx_dtype t = nx_run_dtype_from_name(type);
    if (t == NX_DTYPE_INVALID || t == NX_F32)
        return cli_usage_error(cmd, "--type: '%s' is not one of q8, q4, bf16, f16", type);
    double t0 = nx_time_s();
    nx_status st = nx_model_quantize(in, out, t);
    if (st != NX_OK) return cli_fail(cmd, st, in);
    fprintf(stderr, "neox quantize: wrote %s (%s) in %.1f s\n", out, nx_dtype_name(t), nx_time_s() - t0);
    return 0;
}
