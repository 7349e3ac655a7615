/* cmd_eval.c - `neox eval`: perplexity, LAMBADA, Pythia memorization and checkpoint sweeps.
 *
 *   neox eval ppl -m DIR (--text FILE | --data PREFIX) [--ctx N] [--stride S]
 *   neox eval lambada -m DIR [--data FILE] [--limit N]
 *   neox eval memorization -m DIR --data PREFIX [--samples N | --range A:B] [--prompt 32 --continuation 32] [--batch 16]
 *   neox eval sweep RUN_DIR_OR_LIST --task lambada|ppl|memorization [task options] [-o TABLE] [--plot FILE]
 *
 * Every evaluation prints one JSON line on stdout: {"neox_version", "task", "model", "step",
 * "settings": {...}, "results": {...}, "seconds"}. Progress goes to stderr when it is a terminal. */
#include "cli.h"
#include "plot.h"

#include <ctype.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const CMD = "eval";

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox eval <task> [options]\n"
            "tasks:\n"
            "  ppl           rolling-window perplexity (lm-eval loglikelihood_rolling): token and word perplexity,\n"
            "                byte perplexity, bits per byte\n"
            "  lambada       lambada_openai zero-shot: accuracy and per-word perplexity\n"
            "  memorization  Pythia's k-extractable memorization of training sequences\n"
            "  sweep         run one task over every checkpoint of a run (or a list of model dirs): table + plot\n"
            "common options:\n"
            "  -m, --model DIR       model directory (config.json + weights; tokenizer.json for text tasks)\n"
            "  --tokenizer PATH      tokenizer (default: the model directory)\n"
            "  -t, --threads N       worker threads, one session each (default: all CPUs)\n"
            "  --ctx N               context length (lm-eval max_length; default max_position_embeddings)\n"
            "  --dtype T             run dtype of the matrices: f32, bf16, f16, q8, q4 (default: as stored)\n"
            "  --kv-type T           KV cache type: f32, f16, bf16, q8 (default: f32 for fp32 weights, else bf16)\n"
            "  -o, --output FILE     also write the JSON result line to FILE (sweep: the table, .csv or .jsonl)\n"
            "  -q, --quiet           no progress bar\n"
            "ppl:           --text FILE (.jsonl/.json: one {\"text\": ...} per line; else the whole file) | --data PREFIX\n"
            "               (indexed dataset, one document per dataset document), --stride S (tokens predicted per\n"
            "               window after the first; default ctx, as lm-eval), --key K, --limit N documents,\n"
            "               --per-doc FILE (CSV: doc,tokens,loglikelihood)\n"
            "lambada:       --data FILE (default $NEOX_ASSETS/eval/lambada/lambada_test.jsonl), --limit N,\n"
            "               --per-example FILE (CSV: index,loglikelihood,is_greedy,context_tokens,target_tokens)\n"
            "memorization:  --data PREFIX (one item per training sequence), --samples N (first N) | --range A:B |\n"
            "               --seen-by STEP (the STEP x --global-batch (1024) sequences trained on by STEP),\n"
            "               --prompt N (32), --continuation N (32), --scores FILE (CSV: index,score), --allow-eos,\n"
            "               --batch N (16: sequences each thread decodes together; scores do not depend on it)\n"
            "sweep:         RUN_DIR (subdirectories step<N>, global_step<N>, iter_<N>, checkpoint-<N>) or a file\n"
            "               listing model directories; --task T plus that task's options; -o TABLE (.csv or\n"
            "               .jsonl; default RUN_DIR/eval_<task>.csv), --plot FILE.svg, --metric NAME (plotted),\n"
            "               --seen-by-checkpoint (memorization: each checkpoint on the sequences it has seen)\n");
}

/* ---- options ---------------------------------------------------------------------------- */
typedef struct {
    const char *task, *model, *tokenizer, *output, *text, *data, *key, *per_doc, *per_example, *scores;
    const char *sweep_src, *plot, *metric;
    long threads, ctx, stride, limit, prompt, cont, batch;
    nx_dtype dtype;   /* --dtype: run dtype of the matrices (0 = as stored) */
    nx_dtype kv_type; /* --kv-type (0 = auto) */
    long seen_by, global_batch;
    bool has_range, has_samples, allow_eos, quiet, seen_by_ckpt;
    unsigned long long range_a, range_b, samples;
} eval_args;

typedef struct {
    char names[12][32];
    double vals[12];
    bool is_int[12];   /* counts print as JSON integers */
    int n;
} metrics;

static void put(metrics *m, const char *name, double v) {
    if (m->n >= 12) return;
    snprintf(m->names[m->n], sizeof m->names[m->n], "%s", name);
    m->is_int[m->n] = false;
    m->vals[m->n++] = v;
}

static void put_int(metrics *m, const char *name, double v) {
    put(m, name, v);
    if (m->n > 0 && strcmp(m->names[m->n - 1], name) == 0) m->is_int[m->n - 1] = true;
}

static bool parse_range(const char *s, unsigned long long *a, unsigned long long *b) {
    char *end;
    if (!isdigit((unsigned char)*s)) return false;
    *a = strtoull(s, &end, 10);
    if (*end != ':' || !isdigit((unsigned char)end[1])) return false;
    *b = strtoull(end + 1, &end, 10);
    return *end == 0 && *b > *a;
}

/* Parses argv[first..] into a. Returns 0, or the exit code of a usage error / help. */
static int parse_args(int argc, char **argv, int first, eval_args *a, bool sweep) {
    for (int i = first; i < argc; i++) {
        const char *o = argv[i];
        const char *v;
#define VAL() do { if (!(v = cli_next_arg(CMD, argc, argv, &i))) return 2; } while (0)
#define NUM(dst, lo, hi) do { VAL(); if (!cli_parse_long(v, lo, hi, &(dst))) return cli_usage_error(CMD, "%s: '%s' is not an integer in [%ld, %ld]", o, v, (long)(lo), (long)(hi)); } while (0)
        if (cli_is_help(o)) {
            usage(stdout);
            return -1;
        } else if (!strcmp(o, "-m") || !strcmp(o, "--model")) {
            VAL();
            a->model = v;
        } else if (!strcmp(o, "--tokenizer")) {
            VAL();
            a->tokenizer = v;
        } else if (!strcmp(o, "-t") || !strcmp(o, "--threads")) {
            NUM(a->threads, 1, 1024);
        } else if (!strcmp(o, "--ctx")) {
            NUM(a->ctx, 1, 1 << 20);
        } else if (!strcmp(o, "--dtype")) {
            VAL();
            if ((a->dtype = nx_run_dtype_from_name(v)) == NX_DTYPE_INVALID)
                return cli_usage_error(CMD, "--dtype: '%s' is not one of f32, bf16, f16, q8, q4", v);
        } else if (!strcmp(o, "--kv-type")) {
            VAL();
            if (!cli_parse_kv_type(CMD, v, &a->kv_type)) return 2;
        } else if (!strcmp(o, "--stride")) {
            NUM(a->stride, 1, 1 << 20);
        } else if (!strcmp(o, "--limit")) {
            NUM(a->limit, 1, 2000000000L);
        } else if (!strcmp(o, "--prompt")) {
            NUM(a->prompt, 1, 2048);
        } else if (!strcmp(o, "--continuation")) {
            NUM(a->cont, 1, 2048);
        } else if (!strcmp(o, "--batch")) {
            NUM(a->batch, 1, 1024);
        } else if (!strcmp(o, "-o") || !strcmp(o, "--output")) {
            VAL();
            a->output = v;
        } else if (!strcmp(o, "--text")) {
            VAL();
            a->text = v;
        } else if (!strcmp(o, "--data")) {
            VAL();
            a->data = v;
        } else if (!strcmp(o, "--key")) {
            VAL();
            a->key = v;
        } else if (!strcmp(o, "--per-doc")) {
            VAL();
            a->per_doc = v;
        } else if (!strcmp(o, "--per-example")) {
            VAL();
            a->per_example = v;
        } else if (!strcmp(o, "--scores")) {
            VAL();
            a->scores = v;
        } else if (!strcmp(o, "--samples")) {
            long n;
            NUM(n, 1, 2000000000L);
            a->samples = (unsigned long long)n;
            a->has_samples = true;
        } else if (!strcmp(o, "--range")) {
            VAL();
            if (!parse_range(v, &a->range_a, &a->range_b)) return cli_usage_error(CMD, "--range: expected A:B with A < B, got '%s'", v);
            a->has_range = true;
        } else if (!strcmp(o, "--seen-by")) {
            NUM(a->seen_by, 1, 2000000000L);
        } else if (!strcmp(o, "--global-batch")) {
            NUM(a->global_batch, 1, 1 << 24);
        } else if (!strcmp(o, "--allow-eos")) {
            a->allow_eos = true;
        } else if (!strcmp(o, "-q") || !strcmp(o, "--quiet")) {
            a->quiet = true;
        } else if (sweep && !strcmp(o, "--task")) {
            VAL();
            a->task = v;
        } else if (sweep && !strcmp(o, "--seen-by-checkpoint")) {
            a->seen_by_ckpt = true;
        } else if (sweep && !strcmp(o, "--plot")) {
            VAL();
            a->plot = v;
        } else if (sweep && !strcmp(o, "--metric")) {
            VAL();
            a->metric = v;
        } else if (sweep && o[0] != '-' && !a->sweep_src) {
            a->sweep_src = o;
        } else {
            return cli_usage_error(CMD, "unknown option '%s'", o);
        }
#undef NUM
#undef VAL
    }
    return 0;
}

/* ---- progress ----------------------------------------------------------------------------- */
typedef struct {
    const char *label;
    double t0;
} progress_state;

static void progress(uint64_t done, uint64_t total, void *user) {
    progress_state *ps = user;
    double el = nx_time_s() - ps->t0;
    double rate = el > 0 ? (double)done / el : 0;
    int width = 30, fill = total ? (int)((double)width * (double)done / (double)total) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    fprintf(stderr, "\r%s [%s] %llu/%llu  %.1f/s  eta %.0fs ", ps->label, bar, (unsigned long long)done,
            (unsigned long long)total, rate, eta);
    if (done == total) fprintf(stderr, "\n");
    fflush(stderr);
}

/* ---- helpers -------------------------------------------------------------------------------- */
/* Checkpoint step from a path: the digits after the last "step" / "iter_" / "checkpoint-"
 * in its final component; -1 when there are none. */
static long path_step(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    static const char *const keys[] = {"global_step", "step", "iter_", "checkpoint-", "iter"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        size_t kl = strlen(keys[k]);
        for (size_t i = b; i + kl < n; i++) {
            if (strncmp(path + i, keys[k], kl) != 0 || !isdigit((unsigned char)path[i + kl])) continue;
            char *end;
            long v = strtol(path + i + kl, &end, 10);
            if ((size_t)(end - path) == n) return v;
        }
    }
    return -1;
}

static int write_text(const char *path, const char *data, size_t n) {
    if (cli_write_atomic(path, data, n) != 0) {
        fprintf(stderr, "neox eval: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

typedef struct {
    char *data;
    size_t len, cap;
} tbuf;

static bool tb_printf(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool tb_printf(tbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return false;
        if (b->data && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return true;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *d = realloc(b->data, nc);
        if (!d) return false;
        b->data = d;
        b->cap = nc;
    }
}

static const char *default_lambada(char *buf, size_t n) {
    const char *assets = getenv("NEOX_ASSETS");
    if (!assets || !*assets) return NULL;
    snprintf(buf, n, "%s/eval/lambada/lambada_test.jsonl", assets);
    return buf;
}

/* ---- one evaluation ------------------------------------------------------------------------- */
/* Runs a->task on model_dir; fills res and settings (a JSON object, caller decref). Returns 0
 * or an exit code (1 runtime failure, 2 usage). */
static int run_task(const eval_args *a, const char *model_dir, metrics *res, json_t *settings, double *seconds) {
    const char *task = a->task;
    nx_model *m = NULL;
    nx_tokenizer *tok = NULL;
    nx_indexed *ds = NULL;
    nx_eval_docs docs = {0};
    int rc = 1;
    nx_status st;
    progress_state ps = {task, nx_time_s()};
    nx_eval_opts eo = nx_eval_defaults();
    eo.n_threads = (int)a->threads;
    eo.max_length = (int)a->ctx;
    eo.kv_type = a->kv_type;
    if (!a->quiet && isatty(2)) {
        eo.progress = progress;
        eo.user = &ps;
    }
    bool is_ppl = !strcmp(task, "ppl"), is_lam = !strcmp(task, "lambada"), is_mem = !strcmp(task, "memorization");
    if (!is_ppl && !is_lam && !is_mem) return cli_usage_error(CMD, "unknown task '%s' (ppl, lambada, memorization)", task);
    if (is_ppl && !!a->text == !!a->data) return cli_usage_error(CMD, "ppl needs exactly one of --text FILE or --data PREFIX");
    if (is_mem && !a->data) return cli_usage_error(CMD, "memorization needs --data PREFIX");
    if (is_mem && (a->has_range + a->has_samples + (a->seen_by > 0)) > 1)
        return cli_usage_error(CMD, "give one of --samples, --range, --seen-by");
    char lbuf[4096];
    const char *lam_path = is_lam ? (a->data ? a->data : default_lambada(lbuf, sizeof lbuf)) : NULL;
    if (is_lam && !lam_path) return cli_usage_error(CMD, "lambada needs --data FILE (or NEOX_ASSETS set)");

    nx_model_opts mopts = {a->dtype};
    if ((st = nx_model_load(model_dir, &mopts, &m)) != NX_OK) return cli_fail(CMD, st, "loading the model");
    const nx_model_config *cfg = nx_model_get_config(m);
    int L = a->ctx ? (int)a->ctx : cfg->max_position_embeddings;
    bool need_tok = is_lam || (is_ppl && a->text);
    const char *tok_path = a->tokenizer ? a->tokenizer : model_dir;
    if (need_tok || (is_ppl && a->data)) {
        st = nx_tokenizer_load(tok_path, &tok);
        if (st != NX_OK && need_tok) {
            rc = cli_fail(CMD, st, "loading the tokenizer");
            goto done;
        }
        if (st != NX_OK) tok = NULL;   /* --data ppl: bytes/words need it, token ppl does not */
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    json_object_set_new(settings, "threads", json_integer(a->threads ? a->threads : (ncpu > 0 ? ncpu : 1)));
    json_object_set_new(settings, "ctx", json_integer(L));
    double t0 = nx_time_s();
    if (is_lam) {
        if ((st = nx_eval_docs_load(lam_path, a->key, &docs)) != NX_OK) {
            rc = cli_fail(CMD, st, lam_path);
            goto done;
        }
        size_t n = docs.n;
        if (a->limit && (size_t)a->limit < n) n = (size_t)a->limit;
        nx_ll_result *items = calloc(n, sizeof *items);
        nx_lambada_result lr;
        if (!items) goto done;
        st = nx_eval_lambada(m, tok, (const char *const *)docs.texts, docs.lens, n, &eo, items, &lr);
        if (st != NX_OK) {
            free(items);
            rc = cli_fail(CMD, st, "lambada");
            goto done;
        }
        json_object_set_new(settings, "data", json_string(lam_path));
        json_object_set_new(settings, "limit", a->limit ? json_integer(a->limit) : json_null());
        put(res, "acc", lr.acc);
        put(res, "acc_stderr", lr.acc_stderr);
        put(res, "perplexity", lr.perplexity);
        put_int(res, "n", (double)lr.n);
        if (a->per_example) {
            tbuf b = {0};
            bool ok = tb_printf(&b, "index,loglikelihood,is_greedy,context_tokens,target_tokens\n");
            for (size_t i = 0; i < n && ok; i++)
                ok = tb_printf(&b, "%zu,%.10g,%d,%d,%d\n", i, items[i].loglikelihood, items[i].is_greedy ? 1 : 0,
                               (int)items[i].n_context, (int)items[i].n_continuation);
            int w = ok ? write_text(a->per_example, b.data, b.len) : 1;
            free(b.data);
            if (w) {
                free(items);
                goto done;
            }
        }
        free(items);
    } else if (is_ppl) {
        nx_ppl_result pr;
        double *doc_ll = NULL;
        size_t n = 0;
        size_t *ntok = NULL;
        if (a->text) {
            if ((st = nx_eval_docs_load(a->text, a->key, &docs)) != NX_OK) {
                rc = cli_fail(CMD, st, a->text);
                goto done;
            }
            n = docs.n;
            if (a->limit && (size_t)a->limit < n) n = (size_t)a->limit;
            doc_ll = calloc(n, sizeof *doc_ll);
            if (!doc_ll) goto done;
            st = nx_eval_ppl_texts(m, tok, (const char *const *)docs.texts, docs.lens, n, (int)a->stride, &eo, doc_ll, &pr);
            json_object_set_new(settings, "text", json_string(a->text));
        } else {
            if ((st = nx_indexed_open(a->data, &ds)) != NX_OK) {
                rc = cli_fail(CMD, st, a->data);
                goto done;
            }
            n = nx_indexed_n_docs(ds);
            if (a->limit && (size_t)a->limit < n) n = (size_t)a->limit;
            int32_t **dt = calloc(n ? n : 1, sizeof *dt);
            ntok = calloc(n ? n : 1, sizeof *ntok);
            doc_ll = calloc(n ? n : 1, sizeof *doc_ll);
            if (!dt || !ntok || !doc_ll) {
                free(dt);
                free(ntok);
                free(doc_ll);
                goto done;
            }
            st = NX_OK;
            for (size_t d = 0; d < n && st == NX_OK; d++) {
                uint64_t f, e;
                st = nx_indexed_doc_items(ds, d, &f, &e);
                size_t tot = 0;
                for (uint64_t it = f; st == NX_OK && it < e; it++) tot += (size_t)nx_indexed_item_size(ds, it);
                dt[d] = malloc((tot ? tot : 1) * sizeof(int32_t));
                if (!dt[d]) break;
                size_t off = 0;
                for (uint64_t it = f; st == NX_OK && it < e; it++) {
                    int32_t sz = nx_indexed_item_size(ds, it);
                    st = nx_indexed_read(ds, it, 0, (uint64_t)sz, dt[d] + off);
                    off += (size_t)sz;
                }
                ntok[d] = tot;
            }
            if (st == NX_OK) {
                eo.prefix_token = tok ? (nx_tokenizer_bos_id(tok) >= 0 ? nx_tokenizer_bos_id(tok) : nx_tokenizer_eos_id(tok))
                                      : (cfg->bos_token_id >= 0 ? cfg->bos_token_id : cfg->eos_token_id);
                if (eo.prefix_token < 0) eo.prefix_token = 0;
                st = nx_eval_ppl_tokens(m, (const int32_t *const *)dt, ntok, n, (int)a->stride, &eo, doc_ll, &pr);
            }
            /* words and bytes of the decoded documents, when the tokenizer is there */
            if (st == NX_OK && tok) {
                nx_text txt = {0};
                int64_t words = 0, bytes = 0;
                for (size_t d = 0; d < n && st == NX_OK; d++) {
                    st = nx_tokenizer_decode(tok, dt[d], ntok[d], 0, &txt);
                    if (st == NX_OK) {
                        words += nx_eval_count_words(txt.data ? txt.data : "", txt.len);
                        bytes += (int64_t)txt.len;
                    }
                }
                nx_text_free(&txt);
                pr.n_words = words;
                pr.n_bytes = bytes;
                pr.word_perplexity = words ? exp(-pr.loglikelihood / (double)words) : NAN;
                pr.byte_perplexity = bytes ? exp(-pr.loglikelihood / (double)bytes) : NAN;
                pr.bits_per_byte = bytes ? -pr.loglikelihood / (double)bytes / log(2.0) : NAN;
            }
            for (size_t d = 0; d < n; d++) free(dt[d]);
            free(dt);
            json_object_set_new(settings, "data", json_string(a->data));
        }
        if (st != NX_OK) {
            free(doc_ll);
            free(ntok);
            rc = cli_fail(CMD, st, "ppl");
            goto done;
        }
        json_object_set_new(settings, "stride", json_integer(a->stride ? a->stride : L));
        json_object_set_new(settings, "limit", a->limit ? json_integer(a->limit) : json_null());
        put(res, "token_perplexity", pr.token_perplexity);
        if (pr.n_bytes) {
            put(res, "word_perplexity", pr.word_perplexity);
            put(res, "byte_perplexity", pr.byte_perplexity);
            put(res, "bits_per_byte", pr.bits_per_byte);
        }
        put(res, "loglikelihood", pr.loglikelihood);
        put_int(res, "tokens", (double)pr.n_tokens);
        if (pr.n_bytes) {
            put_int(res, "words", (double)pr.n_words);
            put_int(res, "bytes", (double)pr.n_bytes);
        }
        put_int(res, "documents", (double)pr.n_docs);
        put_int(res, "windows", (double)pr.n_windows);
        if (a->per_doc) {
            tbuf b = {0};
            bool ok = tb_printf(&b, "doc,loglikelihood\n");
            for (size_t d = 0; d < n && ok; d++) ok = tb_printf(&b, "%zu,%.10g\n", d, doc_ll[d]);
            int w = ok ? write_text(a->per_doc, b.data, b.len) : 1;
            free(b.data);
            if (w) {
                free(doc_ll);
                free(ntok);
                goto done;
            }
        }
        free(doc_ll);
        free(ntok);
    } else {
        if ((st = nx_indexed_open(a->data, &ds)) != NX_OK) {
            rc = cli_fail(CMD, st, a->data);
            goto done;
        }
        uint64_t N = nx_indexed_n_items(ds), b0 = 0, b1 = N;
        if (a->has_range) {
            b0 = a->range_a;
            b1 = a->range_b;
        } else if (a->has_samples) {
            b1 = a->samples < N ? a->samples : N;
        } else if (a->seen_by > 0) {
            /* Pythia: the sequences seen by step S are [0, S x 1024) of the preshuffled order. */
            b1 = (uint64_t)a->seen_by * (uint64_t)(a->global_batch ? a->global_batch : 1024);
        }
        if (b1 > N || b0 >= b1) {
            fprintf(stderr, "neox eval: sequences %llu:%llu are outside %s's %llu sequences\n", (unsigned long long)b0,
                    (unsigned long long)b1, a->data, (unsigned long long)N);
            goto done;
        }
        nx_mem_opts mo = {(int)a->prompt, (int)a->cont, a->allow_eos, (int)a->batch};
        float *scores = calloc(b1 - b0, sizeof *scores);
        nx_mem_result mr;
        if (!scores) goto done;
        st = nx_eval_memorization(m, ds, b0, b1, &mo, &eo, scores, &mr);
        if (st != NX_OK) {
            free(scores);
            rc = cli_fail(CMD, st, "memorization");
            goto done;
        }
        json_object_set_new(settings, "data", json_string(a->data));
        json_object_set_new(settings, "range", json_pack("[II]", (json_int_t)b0, (json_int_t)b1));
        json_object_set_new(settings, "prompt", json_integer(a->prompt ? a->prompt : 32));
        json_object_set_new(settings, "continuation", json_integer(a->cont ? a->cont : 32));
        json_object_set_new(settings, "allow_eos", json_boolean(a->allow_eos));
        json_object_set_new(settings, "batch", json_integer(a->batch ? a->batch : 16));
        put(res, "mean_score", mr.mean_score);
        put_int(res, "memorized", (double)mr.n_memorized);
        put(res, "memorized_fraction", (double)mr.n_memorized / (double)mr.n);
        put_int(res, "sequences", (double)mr.n);
        double el = nx_time_s() - t0;
        put(res, "sequences_per_s", el > 0 ? (double)mr.n / el : 0);
        if (a->scores) {
            tbuf b = {0};
            bool ok = tb_printf(&b, "index,score\n");
            for (uint64_t i = 0; i < b1 - b0 && ok; i++) ok = tb_printf(&b, "%llu,%.6g\n", (unsigned long long)(b0 + i), scores[i]);
            int w = ok ? write_text(a->scores, b.data, b.len) : 1;
            free(b.data);
            if (w) {
                free(scores);
                goto done;
            }
        }
        free(scores);
    }
    *seconds = nx_time_s() - t0;
    rc = 0;
done:
    nx_eval_docs_free(&docs);
    nx_indexed_free(ds);
    nx_tokenizer_free(tok);
    nx_model_free(m);
    return rc;
}

/* One JSON result line (no newline); caller frees. */
static char *result_line(const char *task, const char *model_dir, long step, json_t *settings, const metrics *res,
                         double seconds) {
    json_t *r = json_object();
    for (int i = 0; i < res->n; i++)
        json_object_set_new(r, res->names[i],
                            !isfinite(res->vals[i]) ? json_null()
                            : res->is_int[i]        ? json_integer((json_int_t)res->vals[i])
                                                    : json_real(res->vals[i]));
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:O, s:o, s:f}", "neox_version", nx_version(), "task", task, "model",
                          model_dir, "step", step >= 0 ? json_integer(step) : json_null(), "settings", settings,
                          "results", r, "seconds", seconds);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(o);
    return s;
}

static int eval_one(const char *task, int argc, char **argv) {
    eval_args a = {0};
    a.task = task;
    int prc = parse_args(argc, argv, 2, &a, false);
    if (prc) return prc < 0 ? 0 : prc;
    if (!a.model) return cli_usage_error(CMD, "missing -m DIR");
    metrics res = {0};
    json_t *settings = json_object();
    double secs = 0;
    int rc = run_task(&a, a.model, &res, settings, &secs);
    if (rc) {
        json_decref(settings);
        return rc;
    }
    char *line = result_line(task, a.model, path_step(a.model), settings, &res, secs);
    json_decref(settings);
    if (!line) return 1;
    printf("%s\n", line);
    fflush(stdout);
    if (a.output) {
        size_t n = strlen(line);
        char *withnl = malloc(n + 2);
        if (!withnl) {
            free(line);
            return 1;
        }
        memcpy(withnl, line, n);
        withnl[n] = '\n';
        rc = write_text(a.output, withnl, n + 1);
        free(withnl);
    }
    free(line);
    return rc;
}

/* ---- sweep ------------------------------------------------------------------------------------ */
typedef struct {
    char *dir;
    long step;
} ckpt;

static int ckpt_cmp(const void *x, const void *y) {
    const ckpt *a = x, *b = y;
    if (a->step != b->step) return a->step < b->step ? -1 : 1;
    return strcmp(a->dir, b->dir);
}

static bool is_model_dir(const char *dir) {
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s/config.json", dir);
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Collects checkpoints: the step directories of a run, or the lines of a list file. */
static int collect(const char *src, ckpt **out, size_t *n_out) {
    struct stat sb;
    if (stat(src, &sb) != 0) {
        fprintf(stderr, "neox eval: sweep: %s does not exist\n", src);
        return 1;
    }
    ckpt *v = NULL;
    size_t n = 0, cap = 0;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(src);
        if (!d) {
            fprintf(stderr, "neox eval: sweep: cannot read %s\n", src);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            long step = path_step(e->d_name);
            if (step < 0) continue;
            size_t l = strlen(src) + strlen(e->d_name) + 2;
            char *p = malloc(l);
            if (!p) break;
            snprintf(p, l, "%s/%s", src, e->d_name);
            if (!is_model_dir(p)) {
                free(p);
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                ckpt *nv = realloc(v, cap * sizeof *nv);
                if (!nv) {
                    free(p);
                    break;
                }
                v = nv;
            }
            v[n++] = (ckpt){p, step};
        }
        closedir(d);
        qsort(v, n, sizeof *v, ckpt_cmp);
    } else {
        FILE *f = fopen(src, "r");
        if (!f) {
            fprintf(stderr, "neox eval: sweep: cannot open %s\n", src);
            return 1;
        }
        /* relative entries are relative to the list file's directory */
        char base[4096];
        snprintf(base, sizeof base, "%s", src);
        char *slash = strrchr(base, '/');
        if (slash) slash[1] = 0;
        else base[0] = 0;
        char line[4096];
        long idx = 0;
        while (fgets(line, sizeof line, f)) {
            size_t l = strlen(line);
            while (l && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' ')) line[--l] = 0;
            if (!l || line[0] == '#') continue;
            size_t pl = strlen(base) + l + 1;
            char *p = malloc(pl);
            if (!p) break;
            snprintf(p, pl, "%s%s", line[0] == '/' ? "" : base, line);
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                ckpt *nv = realloc(v, cap * sizeof *nv);
                if (!nv) {
                    free(p);
                    break;
                }
                v = nv;
            }
            long st = path_step(p);
            v[n++] = (ckpt){p, st >= 0 ? st : idx};
            idx++;
        }
        fclose(f);
    }
    if (n == 0) {
        fprintf(stderr, "neox eval: sweep: no checkpoints in %s (step directories with a config.json, or a list file)\n", src);
        free(v);
        return 1;
    }
    *out = v;
    *n_out = n;
    return 0;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int eval_sweep(int argc, char **argv) {
    eval_args a = {0};
    int prc = parse_args(argc, argv, 2, &a, true);
    if (prc) return prc < 0 ? 0 : prc;
    if (!a.sweep_src) return cli_usage_error(CMD, "sweep needs RUN_DIR or a list file");
    if (!a.task) return cli_usage_error(CMD, "sweep needs --task lambada|ppl|memorization");
    if (strcmp(a.task, "ppl") && strcmp(a.task, "lambada") && strcmp(a.task, "memorization"))
        return cli_usage_error(CMD, "unknown task '%s' (ppl, lambada, memorization)", a.task);
    const char *metric = a.metric ? a.metric
                         : !strcmp(a.task, "lambada") ? "acc"
                         : !strcmp(a.task, "memorization") ? "mean_score"
                                                           : "token_perplexity";
    ckpt *cks = NULL;
    size_t n = 0;
    if (collect(a.sweep_src, &cks, &n)) return 1;
    char defout[4096];
    const char *table = a.output;
    struct stat sb;
    if (!table) {
        bool isdir = stat(a.sweep_src, &sb) == 0 && S_ISDIR(sb.st_mode);
        snprintf(defout, sizeof defout, "%s%seval_%s.csv", isdir ? a.sweep_src : "", isdir ? "/" : "", a.task);
        table = defout;
    }
    bool jsonl = ends_with(table, ".jsonl") || ends_with(table, ".json");
    tbuf out = {0};
    metrics *all = calloc(n, sizeof *all);
    double *xs = calloc(n, sizeof *xs), *ys = calloc(n, sizeof *ys);
    int rc = 0;
    if (!all || !xs || !ys) {
        rc = 1;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *settings = json_object();
        double secs = 0;
        if (!a.quiet) fprintf(stderr, "neox eval sweep: [%zu/%zu] step %ld: %s\n", i + 1, n, cks[i].step, cks[i].dir);
        eval_args ai = a;
        if (a.seen_by_ckpt) {
            if (cks[i].step < 1) {
                fprintf(stderr, "neox eval: sweep: --seen-by-checkpoint needs steps >= 1 (%s)\n", cks[i].dir);
                json_decref(settings);
                rc = 1;
                goto done;
            }
            ai.seen_by = cks[i].step;
        }
        rc = run_task(&ai, cks[i].dir, &all[i], settings, &secs);
        if (rc) {
            json_decref(settings);
            goto done;
        }
        char *line = result_line(a.task, cks[i].dir, cks[i].step, settings, &all[i], secs);
        json_decref(settings);
        if (!line) {
            rc = 1;
            goto done;
        }
        printf("%s\n", line);
        fflush(stdout);
        if (jsonl) {
            tb_printf(&out, "%s\n", line);
        } else {
            if (i == 0) {
                tb_printf(&out, "step,model");
                for (int k = 0; k < all[i].n; k++) tb_printf(&out, ",%s", all[i].names[k]);
                tb_printf(&out, "\n");
            }
            tb_printf(&out, "%ld,%s", cks[i].step, cks[i].dir);
            for (int k = 0; k < all[i].n; k++) tb_printf(&out, all[i].is_int[k] ? ",%.0f" : ",%.10g", all[i].vals[k]);
            tb_printf(&out, "\n");
        }
        free(line);
        xs[i] = (double)cks[i].step;
        ys[i] = NAN;
        for (int k = 0; k < all[i].n; k++)
            if (!strcmp(all[i].names[k], metric)) ys[i] = all[i].vals[k];
    }
    if ((rc = write_text(table, out.data, out.len))) goto done;
    if (!a.quiet) fprintf(stderr, "neox eval sweep: table written to %s\n", table);
    if (a.plot) {
        bool found = false;
        for (size_t i = 0; i < n; i++) found = found || isfinite(ys[i]);
        if (!found) {
            fprintf(stderr, "neox eval: sweep: metric '%s' is not in the %s results\n", metric, a.task);
            rc = 2;
            goto done;
        }
        bool logy = strstr(metric, "perplexity") != NULL;
        plot_series se = {metric, xs, ys, n, true, false};
        plot_panel pn = {metric, &se, 1, logy};
        char title[256];
        snprintf(title, sizeof title, "%s: %s vs step", a.task, metric);
        plot_figure fig = {title, "step", &pn, 1};
        char err[512];
        if (plot_write(a.plot, &fig, err, sizeof err) != 0) {
            fprintf(stderr, "neox eval: %s\n", err);
            rc = 1;
            goto done;
        }
    }
done:
    for (size_t i = 0; i < n; i++) free(cks[i].dir);
    free(cks);
    free(all);
    free(xs);
    free(ys);
    free(out.data);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    if (argc < 2 || cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *task = argv[1];
    if (!strcmp(task, "sweep")) return eval_sweep(argc, argv);
    if (!strcmp(task, "ppl") || !strcmp(task, "lambada") || !strcmp(task, "memorization")) return eval_one(task, argc, argv);
    return cli_usage_error(CMD, "unknown task '%s' (ppl, lambada, memorization, sweep)", task);
}
