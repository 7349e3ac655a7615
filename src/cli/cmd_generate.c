/* cmd_generate.c - `neox generate`: stream a continuation of a prompt.
 *
 * Input: --ids, or text from -p / -f / stdin (text needs the tokenizer library and a
 * tokenizer.json in the model directory or --tokenizer). Output: the generated text, streamed
 * token by token, or the ids (--print-ids, or always when no tokenizer is available).
 * Defaults are greedy decoding (as the EleutherAI checkpoints' generation_config) and stop at
 * the model's eos id. Stop strings are matched on the decoded text; text that could still be
 * the start of a stop string is held back until it cannot be. */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if __has_include("neox/tokenizer.h")
#define HAVE_TOKENIZER 1
#else
#define HAVE_TOKENIZER 0
#endif

int cli_parse_ids(const char *s, int32_t **out);   /* cmd_logits.c */

#define MAX_STOPS 16

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox generate -m DIR [-p TEXT | -f FILE | --ids \"ID ...\" | stdin] [options]\n"
            "  -m, --model DIR        model directory (config.json + weights)\n"
            "  -p, --prompt TEXT      prompt text%s\n"
            "  -f, --file FILE        read the prompt text from FILE\n"
            "  --ids \"ID ...\"         prompt as token ids (spaces or commas)\n"
            "  --tokenizer PATH       tokenizer.json or directory (default: the model directory)\n"
            "  -n, --n-predict N      tokens to generate (default 128)\n"
            "  --temperature T        0 = greedy (default 0)\n"
            "  --top-k K              keep the K most likely tokens (default 0 = off)\n"
            "  --top-p P              nucleus sampling (default 1 = off)\n"
            "  --min-p P              drop tokens below P x the top probability (default 0 = off)\n"
            "  --repeat-penalty R     HF repetition penalty (default 1 = off)\n"
            "  --repeat-last-n N      tokens the penalty looks back at (default 0 = all)\n"
            "  --seed S               sampler seed (default 0)\n"
            "  --stop STR             stop when the text contains STR (repeatable, up to %d)\n"
            "  --ignore-eos           do not stop at the end-of-text token\n"
            "  --context-shift        when the context is full, keep its newest half and go on\n"
            "                         (recomputed exactly; otherwise prompt + n > context is an error)\n"
            "  -c, --ctx N            context size (default max_position_embeddings)\n"
            "  -t, --threads N        threads (default: all CPUs)\n"
            "  --dtype T              run dtype of the matrices: f32, bf16, f16, q8, q4 (default: as stored)\n"
            CLI_KV_TYPE_HELP
            "  --echo                 print the prompt before the continuation\n"
            "  --print-ids            print token ids instead of text\n"
            "  -v, --verbose          timings on stderr\n",
            HAVE_TOKENIZER ? "" : " (needs the tokenizer: not built in)", MAX_STOPS);
}

typedef struct {
    bool ids_mode;
    bool first;
    int32_t stop_id;     /* end-of-text id that ends generation (-1: none); not printed as text */
#if HAVE_TOKENIZER
    nx_tok_stream *stream;
#endif
    char *text;          /* decoded continuation so far */
    size_t len, cap, printed;
    const char *stops[MAX_STOPS];
    size_t n_stops, max_stop;
    bool stopped;
    bool failed;
} out_state;

#if HAVE_TOKENIZER
static bool text_append(out_state *o, const char *p, size_t n) {
    if (o->len + n + 1 > o->cap) {
        size_t nc = (o->cap ? o->cap * 2 : 4096);
        while (nc < o->len + n + 1) nc *= 2;
        char *t = realloc(o->text, nc);
        if (!t) return false;
        o->text = t;
        o->cap = nc;
    }
    memcpy(o->text + o->len, p, n);
    o->len += n;
    o->text[o->len] = 0;
    return true;
}

/* Prints what can no longer become part of a stop string; on a match prints up to it. */
static void text_emit(out_state *o, bool final) {
    size_t from = o->printed > o->max_stop ? o->printed - o->max_stop : 0;
    for (size_t k = 0; k < o->n_stops; k++) {
        const char *hit = NULL;
        /* memmem is GNU; a small loop keeps this portable */
        size_t sl = strlen(o->stops[k]);
        for (size_t i = from; sl && i + sl <= o->len; i++)
            if (memcmp(o->text + i, o->stops[k], sl) == 0) {
                hit = o->text + i;
                break;
            }
        if (hit) {
            size_t end = (size_t)(hit - o->text);
            if (end > o->printed) fwrite(o->text + o->printed, 1, end - o->printed, stdout);
            o->printed = o->len;
            o->stopped = true;
            fflush(stdout);
            return;
        }
    }
    size_t safe = final ? o->len : (o->len > o->max_stop ? o->len - o->max_stop : 0);
    if (o->n_stops == 0) safe = o->len;
    if (safe > o->printed) {
        fwrite(o->text + o->printed, 1, safe - o->printed, stdout);
        o->printed = safe;
        fflush(stdout);
    }
}

#endif

static int on_token(int32_t tok, void *user) {
    out_state *o = user;
    if (o->ids_mode) {
        printf("%s%d", o->first ? "" : " ", (int)tok);
        o->first = false;
        fflush(stdout);
        return 0;
    }
#if HAVE_TOKENIZER
    /* Like the server and HF's skip of the eos token: the end marker ends the text, it is
     * not part of it (--print-ids still shows it). */
    if (tok == o->stop_id) return 1;
    const char *p;
    size_t n;
    if (nx_tok_stream_push(o->stream, tok, &p, &n) != NX_OK || !text_append(o, p, n)) {
        o->failed = true;
        return 1;
    }
    text_emit(o, false);
    return o->stopped;
#else
    return 0;
#endif
}

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

int cmd_generate(int argc, char **argv) {
    const char *cmd = "generate", *dir = NULL, *prompt = NULL, *file = NULL, *ids_s = NULL, *tok_path = NULL;
    nx_model_opts mopts = {0};
    nx_dtype kv_type = NX_DTYPE_INVALID;   /* --kv-type (0: auto) */
    long n_predict = 128, top_k = 0, seed = 0, threads = 0, n_ctx = 0, repeat_last_n = 0;
    double temperature = 0.0, top_p = 1.0, min_p = 0.0, repeat_penalty = 1.0;
    bool echo = false, print_ids = false, ignore_eos = false, context_shift = false, verbose = false;
    out_state o = {0};
    o.first = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
#define VAL() do { if (!(v = cli_next_arg(cmd, argc, argv, &i))) return 2; } while (0)
#define LONG_OPT(var, lo, hi) do { VAL(); if (!cli_parse_long(v, lo, hi, &var)) \
            return cli_usage_error(cmd, "%s: '%s' is not an integer in [%ld, %ld]", a, v, (long)(lo), (long)(hi)); } while (0)
#define DBL_OPT(var, lo, hi) do { VAL(); if (!cli_parse_double(v, &var) || var < (lo) || var > (hi)) \
            return cli_usage_error(cmd, "%s: '%s' is not a number in [%g, %g]", a, v, (double)(lo), (double)(hi)); } while (0)
        if (cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            VAL(); dir = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            VAL(); prompt = v;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            VAL(); file = v;
        } else if (!strcmp(a, "--ids")) {
            VAL(); ids_s = v;
        } else if (!strcmp(a, "--tokenizer")) {
            VAL(); tok_path = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            LONG_OPT(n_predict, 1, 1 << 24);
        } else if (!strcmp(a, "--temperature") || !strcmp(a, "--temp")) {
            DBL_OPT(temperature, 0.0, 1e6);
        } else if (!strcmp(a, "--top-k")) {
            LONG_OPT(top_k, 0, 1 << 30);
        } else if (!strcmp(a, "--top-p")) {
            DBL_OPT(top_p, 1e-9, 1.0);
        } else if (!strcmp(a, "--min-p")) {
            DBL_OPT(min_p, 0.0, 1.0);
        } else if (!strcmp(a, "--repeat-penalty")) {
            DBL_OPT(repeat_penalty, 1e-6, 1e6);
        } else if (!strcmp(a, "--repeat-last-n")) {
            LONG_OPT(repeat_last_n, 0, 1 << 30);
        } else if (!strcmp(a, "--seed")) {
            LONG_OPT(seed, 0, LONG_MAX);
        } else if (!strcmp(a, "--stop")) {
            VAL();
            if (o.n_stops == MAX_STOPS) return cli_usage_error(cmd, "at most %d --stop strings", MAX_STOPS);
            if (!*v) return cli_usage_error(cmd, "--stop: empty string");
            o.stops[o.n_stops++] = v;
            if (strlen(v) > o.max_stop) o.max_stop = strlen(v);
        } else if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = true;
        } else if (!strcmp(a, "--context-shift")) {
            context_shift = true;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            LONG_OPT(n_ctx, 1, 1 << 24);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            LONG_OPT(threads, 1, 1024);
        } else if (!strcmp(a, "--dtype")) {
            VAL();
            if ((mopts.dtype = nx_run_dtype_from_name(v)) == NX_DTYPE_INVALID)
                return cli_usage_error(cmd, "--dtype: '%s' is not one of f32, bf16, f16, q8, q4", v);
        } else if (!strcmp(a, "--kv-type")) {
            VAL();
            if (!cli_parse_kv_type(cmd, v, &kv_type)) return 2;
        } else if (!strcmp(a, "--echo")) {
            echo = true;
        } else if (!strcmp(a, "--print-ids")) {
            print_ids = true;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            verbose = true;
        } else {
            return cli_usage_error(cmd, "unknown option '%s'", a);
        }
#undef VAL
#undef LONG_OPT
#undef DBL_OPT
    }
    if (!dir) return cli_usage_error(cmd, "missing -m DIR");
    if ((prompt != NULL) + (file != NULL) + (ids_s != NULL) > 1)
        return cli_usage_error(cmd, "give only one of -p, -f and --ids");
    o.max_stop = o.max_stop > 0 ? o.max_stop - 1 : 0;   /* bytes that may still start a stop string */
#if !HAVE_TOKENIZER
    if (!ids_s) return cli_usage_error(cmd, "this build has no tokenizer: give the prompt as --ids");
#endif

    int rc = 1;
    nx_model *m = NULL;
    nx_session *s = NULL;
    nx_sampler *smp = NULL;
    int32_t *ids = NULL, *gen = NULL;
    char *text = NULL;
    size_t text_len = 0;
    int n_ids = 0;
#if HAVE_TOKENIZER
    nx_tokenizer *tok = NULL;
    nx_ids enc = {0};
#endif
    bool want_text = !ids_s || !print_ids;   /* text input, or text output requested */
    if (!ids_s) {
        if (prompt) {
            text = strdup(prompt);
            text_len = strlen(prompt);
        } else {
            FILE *f = file ? fopen(file, "rb") : stdin;
            if (!f) {
                fprintf(stderr, "neox generate: cannot open '%s'\n", file);
                return 1;
            }
            if (!file && isatty(0)) fprintf(stderr, "neox generate: reading the prompt from stdin (end with Ctrl-D)\n");
            text = read_stream(f, &text_len);
            if (file) fclose(f);
            if (!text) {
                fprintf(stderr, "neox generate: cannot read the prompt from '%s'\n", file ? file : "stdin");
                return 1;
            }
        }
        if (!text) goto done;
    } else {
        n_ids = cli_parse_ids(ids_s, &ids);
        if (n_ids < 0) return cli_usage_error(cmd, "--ids: expected non-negative integers separated by spaces or commas");
        if (n_ids == 0) {
            free(ids);
            return cli_usage_error(cmd, "--ids: no ids given");
        }
    }

    double t0 = nx_time_s();
    nx_status st = nx_model_load(dir, &mopts, &m);
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, dir);
        goto done;
    }
    const nx_model_config *cfg = nx_model_get_config(m);
    double t_load = nx_time_s() - t0;
    int n_vocab = 0;
    int32_t eos = cfg->eos_token_id;

#if HAVE_TOKENIZER
    if (want_text) {
        const char *tp = tok_path ? tok_path : dir;
        st = nx_tokenizer_load(tp, &tok);
        if (st != NX_OK) {
            if (ids_s) {   /* ids in, and no tokenizer: fall back to printing ids */
                tok = NULL;
            } else {
                rc = cli_fail(cmd, st, "loading the tokenizer (text prompts need one; use --ids otherwise)");
                goto done;
            }
        }
    }
    if (tok) {
        n_vocab = nx_tokenizer_vocab_size(tok);
        if (eos < 0) eos = nx_tokenizer_eos_id(tok);
        if (!ids_s) {
            st = nx_tokenizer_encode(tok, text, text_len, 0, &enc);
            if (st != NX_OK) {
                rc = cli_fail(cmd, st, "encoding the prompt");
                goto done;
            }
            if (enc.len == 0 || enc.len > (size_t)INT32_MAX) {
                fprintf(stderr, "neox generate: the prompt encodes to no tokens\n");
                goto done;
            }
            n_ids = (int)enc.len;
            ids = malloc((size_t)n_ids * sizeof *ids);
            if (!ids) goto done;
            memcpy(ids, enc.data, (size_t)n_ids * sizeof *ids);
        }
        st = nx_tok_stream_create(tok, 0, &o.stream);
        if (st != NX_OK) {
            rc = cli_fail(cmd, st, "tokenizer stream");
            goto done;
        }
    }
    o.ids_mode = print_ids || !tok;
#else
    (void)tok_path;
    o.ids_mode = true;
    (void)want_text;
#endif
    if (o.ids_mode && o.n_stops) {
        fprintf(stderr, "neox generate: --stop needs text output (a tokenizer, without --print-ids)\n");
        rc = 2;
        goto done;
    }

    nx_session_opts so = {0};
    so.n_ctx = (int)n_ctx;
    so.n_threads = (int)threads;
    so.kv_type = kv_type;
    st = nx_session_create(m, &so, &s);
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, "creating a session");
        goto done;
    }
    nx_sampler_params sp = nx_sampler_defaults();
    sp.temperature = (float)temperature;
    sp.top_k = (int)top_k;
    sp.top_p = (float)top_p;
    sp.min_p = (float)min_p;
    sp.repeat_penalty = (float)repeat_penalty;
    sp.repeat_last_n = (int)repeat_last_n;
    sp.seed = (uint64_t)seed;
    sp.n_vocab = n_vocab;
    st = nx_sampler_create(&sp, &smp);
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, "sampler");
        goto done;
    }
    if (echo) {
        if (o.ids_mode) {
            for (int i = 0; i < n_ids; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
            o.first = n_ids == 0;
        }
#if HAVE_TOKENIZER
        else if (text) {
            fwrite(text, 1, text_len, stdout);
        } else {
            nx_text dec = {0};
            if (nx_tokenizer_decode(tok, ids, (size_t)n_ids, 0, &dec) == NX_OK) fwrite(dec.data, 1, dec.len, stdout);
            nx_text_free(&dec);
        }
#endif
        fflush(stdout);
    }
    gen = malloc((size_t)n_predict * sizeof *gen);
    if (!gen) goto done;
    nx_generate_opts go = {0};
    go.max_new_tokens = (int)n_predict;
    go.stop_ids = (!ignore_eos && eos >= 0) ? &eos : NULL;
    go.n_stop_ids = go.stop_ids ? 1 : 0;
    o.stop_id = go.stop_ids ? eos : -1;
    go.context_shift = context_shift;
    go.on_token = on_token;
    go.user = &o;
    int n_gen = 0;
    double t1 = nx_time_s();
    st = nx_generate(s, smp, ids, n_ids, &go, gen, &n_gen);
    double t2 = nx_time_s();
    if (!o.ids_mode) {
#if HAVE_TOKENIZER
        const char *p;
        size_t n;
        if (!o.stopped) {
            nx_tok_stream_flush(o.stream, &p, &n);
            text_append(&o, p, n);
            text_emit(&o, true);
        }
#endif
    }
    printf("\n");
    fflush(stdout);
    if (st != NX_OK) {
        rc = cli_fail(cmd, st, "generating");
        goto done;
    }
    if (o.failed) {
        fprintf(stderr, "neox generate: decoding the output failed: %s\n", nx_last_error());
        goto done;
    }
    if (verbose)
        fprintf(stderr, "neox generate: load %.2f s; %d prompt + %d generated tokens in %.2f s (%.1f tok/s overall)\n",
                t_load, n_ids, n_gen, t2 - t1, (t2 - t1) > 0 ? n_gen / (t2 - t1) : 0.0);
    rc = 0;
done:
#if HAVE_TOKENIZER
    nx_tok_stream_free(o.stream);
    nx_ids_free(&enc);
    nx_tokenizer_free(tok);
#endif
    free(o.text);
    free(text);
    free(ids);
    free(gen);
    nx_sampler_free(smp);
    nx_session_free(s);
    nx_model_free(m);
    return rc;
}
