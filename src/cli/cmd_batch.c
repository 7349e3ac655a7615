/* cmd_batch.c - `neox batch CONFIG --step N`: the exact tokens GPT-NeoX feeds at a step. */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char *k_cmd = "batch";

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox batch CONFIG --step N [options]\n\n"
            "Prints the tokens of training step N (0-based) in GPT-NeoX's order: one line per sample,\n"
            "seq-length + 1 token ids (inputs = [:-1], labels = [1:]).\n\n"
            "  --step N          the step (global samples N*B .. N*B+B-1)\n"
            "  --sample I        print global sample I instead of a step\n"
            "  --dp D --rank R   only data-parallel rank R's contiguous slice of the step\n"
            "  --detokenize      print text instead of ids (needs -t)\n"
            "  -t TOKENIZER      tokenizer.json (or its directory)\n"
            "  --where           prefix each line with the global sample, dataset and its sample\n\n"
            "CONFIG is JSON with GPT-NeoX keys ('-' or '_'): data-path (+ split) or train-data-paths\n"
            "(+ train-data-weights), seq-length, train-batch-size (or train-micro-batch-size-per-gpu x\n"
            "gradient-accumulation-steps), train-iters, seed; \"data-order\": \"preshuffled\" for Pythia's\n"
            "pre-shuffled files. See docs/DATA.md.\n");
}

int cmd_batch(int argc, char **argv) {
    const char *cfg_path = NULL, *tok_path = NULL;
    long step = -1, sample = -1, dp = 1, rank = 0;
    bool detok = false, where = false;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (cli_is_help(argv[i])) { usage(stdout); return 0; }
        if (strcmp(argv[i], "--step") == 0) {
            if (!(v = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 0, LONG_MAX, &step)) return cli_usage_error(k_cmd, "--step: bad number '%s'", v);
        } else if (strcmp(argv[i], "--sample") == 0) {
            if (!(v = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 0, LONG_MAX, &sample)) return cli_usage_error(k_cmd, "--sample: bad number '%s'", v);
        } else if (strcmp(argv[i], "--dp") == 0) {
            if (!(v = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 1, 1 << 20, &dp)) return cli_usage_error(k_cmd, "--dp: bad number '%s'", v);
        } else if (strcmp(argv[i], "--rank") == 0) {
            if (!(v = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
            if (!cli_parse_long(v, 0, 1 << 20, &rank)) return cli_usage_error(k_cmd, "--rank: bad number '%s'", v);
        } else if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--tokenizer") == 0) {
            if (!(tok_path = cli_next_arg(k_cmd, argc, argv, &i))) return 2;
        } else if (strcmp(argv[i], "--detokenize") == 0) {
            detok = true;
        } else if (strcmp(argv[i], "--where") == 0) {
            where = true;
        } else if (argv[i][0] == '-') {
            return cli_usage_error(k_cmd, "unknown option '%s'", argv[i]);
        } else if (!cfg_path) {
            cfg_path = argv[i];
        } else {
            return cli_usage_error(k_cmd, "takes one CONFIG");
        }
    }
    if (!cfg_path) { usage(stderr); return 2; }
    if ((step < 0) == (sample < 0)) return cli_usage_error(k_cmd, "give exactly one of --step N or --sample I");
    if (rank >= dp) return cli_usage_error(k_cmd, "--rank %ld must be below --dp %ld", rank, dp);
    if (detok && !tok_path) return cli_usage_error(k_cmd, "--detokenize needs -t TOKENIZER");
#ifndef NEOX_TOKENIZER_H
    if (detok) {
        fprintf(stderr, "neox batch: --detokenize needs the tokenizer module, which this build does not have\n");
        return 1;
    }
#endif
    nx_data_config cfg;
    nx_status st = nx_data_config_load(cfg_path, &cfg);
    if (st != NX_OK) return cli_fail(k_cmd, st, "bad config");
    nx_data_stream *s = NULL;
    st = nx_data_stream_open(&cfg, &s);
    nx_data_config_clear(&cfg);
    if (st != NX_OK) return cli_fail(k_cmd, st, "cannot build the data order");
    uint64_t B = (uint64_t)nx_data_stream_global_batch(s), first, count;
    if (sample >= 0) {
        first = (uint64_t)sample;
        count = 1;
    } else {
        if (B % (uint64_t)dp != 0) {
            nx_data_stream_free(s);
            return cli_usage_error(k_cmd, "train-batch-size %llu is not divisible by --dp %ld", (unsigned long long)B, dp);
        }
        count = B / (uint64_t)dp;
        first = (uint64_t)step * B + (uint64_t)rank * count;
    }
    if (first + count > nx_data_stream_count(s)) {
        fprintf(stderr, "neox batch: samples %llu..%llu are past the end of the stream (%llu samples; raise train-iters)\n",
                (unsigned long long)first, (unsigned long long)(first + count - 1),
                (unsigned long long)nx_data_stream_count(s));
        nx_data_stream_free(s);
        return 1;
    }
#ifdef NEOX_TOKENIZER_H
    nx_tokenizer *tok = NULL;
    nx_text text = {0};
    if (detok) {
        st = nx_tokenizer_load(tok_path, &tok);
        if (st != NX_OK) { nx_data_stream_free(s); return cli_fail(k_cmd, st, "cannot load tokenizer"); }
    }
#endif
    int64_t L = nx_data_stream_sample_len(s);
    int32_t *buf = malloc((size_t)L * sizeof *buf);
    int rc = buf ? 0 : 1;
    for (uint64_t i = first; rc == 0 && i < first + count; i++) {
        st = nx_data_stream_sample(s, i, buf);
        if (st != NX_OK) { rc = cli_fail(k_cmd, st, "read"); break; }
        if (where) {
            int d;
            uint64_t j;
            nx_data_stream_locate(s, i, &d, &j);
            printf("# sample %llu (dataset %d, sample %llu)%s", (unsigned long long)i, d, (unsigned long long)j,
                   detok ? "\n" : ": ");
        }
#ifdef NEOX_TOKENIZER_H
        if (detok) {
            st = nx_tokenizer_decode(tok, buf, (size_t)L, 0, &text);
            if (st != NX_OK) { rc = cli_fail(k_cmd, st, "decode"); break; }
            fwrite(text.data, 1, text.len, stdout);
            putchar('\n');
            continue;
        }
#endif
        for (int64_t k = 0; k < L; k++) printf(k ? " %d" : "%d", buf[k]);
        putchar('\n');
    }
#ifdef NEOX_TOKENIZER_H
    nx_text_free(&text);
    nx_tokenizer_free(tok);
#endif
    free(buf);
    nx_data_stream_free(s);
    if (fflush(stdout) != 0) return 1;
    return rc;
}
