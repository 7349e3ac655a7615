/*
 * neox/data.h - training data: Megatron/GPT-NeoX indexed datasets (.bin/.idx), GPT-NeoX's
 * exact sample order (doc_idx / sample_idx / shuffle_idx, bit-exact with numpy's legacy
 * RandomState), blended datasets and the "which tokens does step s see" question.
 * File formats and the order algorithm are described in docs/DATA.md.
 */
#ifndef NEOX_DATA_H
#define NEOX_DATA_H

#include "neox/core.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- indexed dataset (MMapIndexedDataset) --------------------------------------------- */

/* Megatron dtype codes stored in byte 17 of the .idx. */
enum {
    NX_IDX_U8 = 1, NX_IDX_I8 = 2, NX_IDX_I16 = 3, NX_IDX_I32 = 4, NX_IDX_I64 = 5,
    NX_IDX_F32 = 6, NX_IDX_F64 = 7, NX_IDX_U16 = 8
};

typedef struct nx_indexed nx_indexed;   /* opaque, read-only, thread-safe for reads */

typedef struct nx_indexed_info {
    int dtype_code;          /* Megatron code (NX_IDX_*) */
    nx_dtype dtype;          /* the same as an nx_dtype */
    size_t itemsize;         /* bytes per token */
    uint64_t n_items;        /* N: sequences ("items") */
    uint64_t n_docs;         /* D - 1: documents (doc_idx has D entries) */
    uint64_t n_tokens;       /* sum of sizes */
    uint64_t bin_bytes, idx_bytes;
    int32_t min_size, max_size;   /* item length range (0, 0 when empty) */
} nx_indexed_info;

/* Opens PREFIX.idx and PREFIX.bin (a path ending in .idx or .bin is accepted too), mapping
 * both read-only (zero-copy). The .idx is validated in full: magic, version, dtype code,
 * counts against the file size (overflow-safe), every size >= 0, every pointer equal to the
 * running byte offset (so items are contiguous and inside the .bin), the .bin size equal
 * to the total, doc_idx non-decreasing from 0 to N. On success *out is owned by the caller
 * (nx_indexed_free). Errors name the file and the field. */
NX_API nx_status nx_indexed_open(const char *prefix, nx_indexed **out);
NX_API void nx_indexed_free(nx_indexed *ds);   /* NULL is fine */
NX_API void nx_indexed_get_info(const nx_indexed *ds, nx_indexed_info *out);
NX_API uint64_t nx_indexed_n_items(const nx_indexed *ds);
NX_API uint64_t nx_indexed_n_docs(const nx_indexed *ds);
/* Token count of item i (i < n_items; checked by NX_ASSERT). */
NX_API int32_t nx_indexed_item_size(const nx_indexed *ds, uint64_t i);
/* Items [*first, *end) of document d. NX_ERR_RANGE when d >= n_docs. */
NX_API nx_status nx_indexed_doc_items(const nx_indexed *ds, uint64_t d, uint64_t *first, uint64_t *end);
/* Raw, possibly unaligned bytes of item i inside the .bin mapping (borrowed until
 * nx_indexed_free). */
NX_API const void *nx_indexed_item_data(const nx_indexed *ds, uint64_t i);
/* Copies tokens [offset, offset+count) of item i to dst as int32 (uint16/int16/uint8/int8
 * widened; int32 copied; int64 narrowed with a range check; float dtypes refused).
 * NX_ERR_RANGE when the span leaves the item. */
NX_API nx_status nx_indexed_read(const nx_indexed *ds, uint64_t item, uint64_t offset, uint64_t count,
                                 int32_t *dst);
/* Deep check beyond what open does: reads every token and fails when one is negative or,
 * if vocab_size > 0, >= vocab_size. *bad_item receives the first offending item (may be NULL). */
NX_API nx_status nx_indexed_verify(const nx_indexed *ds, int64_t vocab_size, uint64_t *bad_item);

/* The dtype the GPT-NeoX/Megatron builder picks: uint16 when vocab_size < 65500, else int32. */
NX_API int nx_indexed_dtype_for_vocab(int64_t vocab_size);

/* Streaming writer. Tokens go to a temporary .bin as they arrive; sizes and doc_idx are
 * kept in memory (12 bytes per item + 8 per document, as the reference builder does).
 * nx_indexed_writer_finish writes the .idx temporary, removes any old PREFIX.idx, then
 * renames the .bin and the .idx into place, so an interrupted run never leaves a pair that
 * looks valid. The bytes are identical to megatron-core's IndexedDatasetBuilder. */
typedef struct nx_indexed_writer nx_indexed_writer;
NX_API nx_status nx_indexed_writer_create(const char *prefix, int dtype_code, nx_indexed_writer **out);
/* Appends one item (a sequence of n tokens). Values must fit the dtype (NX_ERR_RANGE). */
NX_API nx_status nx_indexed_writer_add_item(nx_indexed_writer *w, const int32_t *tokens, size_t n);
/* Closes the current document (the items added since the last call). */
NX_API nx_status nx_indexed_writer_end_document(nx_indexed_writer *w);
/* add_item + end_document: the usual one-item-per-document case. */
NX_API nx_status nx_indexed_writer_add_document(nx_indexed_writer *w, const int32_t *tokens, size_t n);
NX_API uint64_t nx_indexed_writer_n_items(const nx_indexed_writer *w);
NX_API uint64_t nx_indexed_writer_n_tokens(const nx_indexed_writer *w);
/* Writes the index and publishes both files. The writer must still be freed. */
NX_API nx_status nx_indexed_writer_finish(nx_indexed_writer *w);
/* Frees the writer; an unfinished one removes its temporaries. NULL is fine. */
NX_API void nx_indexed_writer_free(nx_indexed_writer *w);

/* ---- numpy legacy RandomState (MT19937) ------------------------------------------------ */

/* State of numpy.random.RandomState(seed): exposed so tests and tools can reproduce any
 * numpy-legacy shuffle. Plain struct, caller-owned. */
typedef struct nx_mt19937 {
    uint32_t key[624];
    int pos;
} nx_mt19937;
/* numpy's _legacy_seeding for an integer seed (init_genrand). */
NX_API void nx_mt19937_seed(nx_mt19937 *mt, uint32_t seed);
NX_API uint32_t nx_mt19937_next32(nx_mt19937 *mt);
/* numpy random_interval(max): uniform in [0, max] by masked rejection. */
NX_API uint64_t nx_mt19937_interval(nx_mt19937 *mt, uint64_t max);
/* RandomState.shuffle of a 1-D array of n elements of `width` bytes (4 or 8). */
NX_API void nx_mt19937_shuffle(nx_mt19937 *mt, void *data, uint64_t n, size_t width);

/* ---- GPT-NeoX sample order (GPT2Dataset._build_index_mappings) ---------------------------- */

typedef struct nx_sample_index nx_sample_index;   /* opaque, immutable after build */

typedef struct nx_sample_opts {
    int64_t seq_length;      /* tokens per sample minus one (2048 for Pythia) */
    uint64_t num_samples;    /* samples required (the epochs rule uses it) */
    uint32_t seed;           /* NeoX "seed" (1234) */
    uint64_t doc_begin;      /* the "documents" range (item indices) of this split; */
    uint64_t doc_end;        /* doc_end == 0 means all items */
} nx_sample_opts;

/* Builds doc_idx, sample_idx and shuffle_idx exactly as GPT-NeoX does for ds (borrowed: it
 * must outlive the index). *out is owned by the caller (nx_sample_index_free). */
NX_API nx_status nx_sample_index_build(const nx_indexed *ds, const nx_sample_opts *opts, nx_sample_index **out);
NX_API void nx_sample_index_free(nx_sample_index *si);   /* NULL is fine */
/* S: samples available over all epochs (len(GPT2Dataset)). */
NX_API uint64_t nx_sample_index_count(const nx_sample_index *si);
NX_API int nx_sample_index_epochs(const nx_sample_index *si);
NX_API uint64_t nx_sample_index_tokens_per_epoch(const nx_sample_index *si);
/* The raw arrays (borrowed until nx_sample_index_free): doc_idx[n] as int32 and
 * sample_idx[2*(S+1)] as int64 pairs (doc_idx position, token offset); shuffle_idx[i]. */
NX_API const int32_t *nx_sample_index_doc_idx(const nx_sample_index *si, uint64_t *n);
NX_API const int64_t *nx_sample_index_sample_idx(const nx_sample_index *si, uint64_t *n_rows);
NX_API uint64_t nx_sample_index_shuffle_at(const nx_sample_index *si, uint64_t i);
/* Tokens of sample i (i < S): seq_length + 1 int32 values into dst. */
NX_API nx_status nx_sample_index_get(const nx_sample_index *si, uint64_t i, int32_t *dst);

/* ---- training stream: config -> "tokens of global sample i" / "samples of step s" -------- */

#define NX_DATA_MAX_PATHS 64

/* A GPT-NeoX-style data config (docs/DATA.md). Keys accept '-' or '_'. */
typedef struct nx_data_config {
    int n_paths;
    char *paths[NX_DATA_MAX_PATHS];     /* "train-data-paths" (or the one "data-path") */
    double weights[NX_DATA_MAX_PATHS];  /* "train-data-weights" (default 1.0 each) */
    bool use_split;                     /* true for "data-path" (split applies) */
    double split[3];                    /* "split", default 969,30,1 */
    int64_t seq_length;                 /* "seq-length" */
    int64_t global_batch;               /* "train-batch-size" (or micro x grad-accum x dp) */
    int64_t train_iters;                /* "train-iters" */
    uint32_t seed;                      /* "seed", default 1234 */
    bool preshuffled;                   /* "data-order": "preshuffled" (Pythia's hub files) */
} nx_data_config;

/* Parses the config JSON text; `name` is used in messages. Owned strings are released by
 * nx_data_config_clear. */
NX_API nx_status nx_data_config_parse(const char *json, size_t len, const char *name, nx_data_config *out);
NX_API nx_status nx_data_config_load(const char *path, nx_data_config *out);
NX_API void nx_data_config_clear(nx_data_config *cfg);

/* GPT-NeoX's per-dataset sample counts for train-data-paths: weights normalised, then
 * ceil(num_samples * w * 1.005) each (data_utils.get_normalized_weights_and_num_samples).
 * Pythia: 143000 x 1024 with one weight gives 147,164,160. */
NX_API nx_status nx_data_weighted_num_samples(uint64_t num_samples, const double *weights, int n,
                                              double *norm_weights, uint64_t *out);
/* The train split [*begin, *end) of n_items under a "969,30,1"-style split (weights w[3]),
 * exactly as data_utils.get_train_valid_test_split_. */
NX_API void nx_data_train_split(const double w[3], uint64_t n_items, uint64_t *begin, uint64_t *end);

typedef struct nx_data_stream nx_data_stream;   /* opaque */

/* Opens the datasets of cfg and builds the training order (BlendableDataset over one
 * GPT2Dataset per path, or the preshuffled identity order). *out is owned by the caller. */
NX_API nx_status nx_data_stream_open(const nx_data_config *cfg, nx_data_stream **out);
NX_API void nx_data_stream_free(nx_data_stream *s);   /* NULL is fine */
/* Samples in the stream (len(BlendableDataset)), and the sample length (seq_length + 1). */
NX_API uint64_t nx_data_stream_count(const nx_data_stream *s);
NX_API int64_t nx_data_stream_sample_len(const nx_data_stream *s);
NX_API int64_t nx_data_stream_global_batch(const nx_data_stream *s);
/* Tokens of global sample i: sample_len int32 values into dst. */
NX_API nx_status nx_data_stream_sample(const nx_data_stream *s, uint64_t i, int32_t *dst);
/* Which dataset and which of its samples global sample i is (for reports). */
NX_API nx_status nx_data_stream_locate(const nx_data_stream *s, uint64_t i, int *dataset, uint64_t *sample);
/* Step s of the loader: global samples [s*B, (s+1)*B). dst holds B * sample_len values. */
NX_API nx_status nx_data_stream_step(const nx_data_stream *s, uint64_t step, int32_t *dst);

/* ---- tokenizing corpora into indexed datasets ------------------------------------------ */

/* A growable token array (same layout as nx_ids of neox/tokenizer.h). */
typedef struct nx_token_buf {
    int32_t *data;
    size_t len, cap;
} nx_token_buf;

/* Encodes len bytes of valid UTF-8 into out (replacing its contents; grow it with
 * nx_token_buf_reserve). Called concurrently from worker threads: it must be thread-safe.
 * Keeps the tokenizer out of this interface, so any tokenizer can be plugged in. */
typedef nx_status (*nx_encode_fn)(void *ctx, const char *text, size_t len, nx_token_buf *out);
/* Ensures room for n tokens; NX_ERR_NOMEM on failure. */
NX_API nx_status nx_token_buf_reserve(nx_token_buf *b, size_t n);
NX_API void nx_token_buf_free(nx_token_buf *b);

typedef enum nx_issue_kind {
    NX_ISSUE_BAD_JSON = 1,     /* a line that is not a JSON object */
    NX_ISSUE_NO_KEY,           /* the text key is missing or not a string */
    NX_ISSUE_BAD_UTF8,         /* invalid UTF-8 in the line or text */
    NX_ISSUE_ENCODE            /* the encoder failed */
} nx_issue_kind;

typedef struct nx_data_issue {
    nx_issue_kind kind;
    const char *file;          /* borrowed for the duration of the callback */
    uint64_t line;
    const char *message;
} nx_data_issue;

typedef struct nx_tokenize_stats {
    uint64_t docs_read;        /* records seen = written + empty + every issue kind */
    uint64_t docs_written, docs_empty, bad_json, no_key, bad_utf8, encode_failed;
    uint64_t text_bytes;       /* UTF-8 bytes of text tokenized */
    uint64_t input_bytes, input_total;   /* on-disk bytes consumed / of all inputs */
    uint64_t tokens;           /* tokens written, EOD included */
    size_t files;
    double seconds;
} nx_tokenize_stats;

typedef struct nx_tokenize_opts {
    const char *text_key;      /* JSON key of the text; NULL = "text" */
    int n_threads;             /* <= 0: all CPUs. The output never depends on it. */
    bool append_eod;           /* append eod_id to every document (GPT-NeoX --append-eod) */
    int32_t eod_id;
    bool strict;               /* any issue is fatal (default: counted, reported, skipped) */
    int dtype_code;            /* 0: nx_indexed_dtype_for_vocab(vocab_size) */
    int64_t vocab_size;
    size_t batch_bytes;        /* text per parallel batch; 0 = 8 MiB (bounds memory) */
    nx_encode_fn encode;
    void *encode_ctx;
    void (*on_issue)(const nx_data_issue *issue, void *user);        /* may be NULL */
    bool (*progress)(const nx_tokenize_stats *stats, void *user);    /* per batch; false cancels */
    void *user;
} nx_tokenize_opts;

/* Tokenizes every document of the inputs (.jsonl, .jsonl.zst, .json.zst, .zst, .txt,
 * .txt.zst, directories) in input order into the indexed dataset PREFIX.{bin,idx}, one
 * item per document (GPT-NeoX preprocess_data.py semantics: empty texts dropped). Streams
 * with memory bounded by batch_bytes and the longest record. Output is atomic. */
NX_API nx_status nx_data_tokenize(const char *const *inputs, size_t n_inputs, const char *out_prefix,
                                  const nx_tokenize_opts *opts, nx_tokenize_stats *stats);

/* ---- corpus building (neox data build; docs/DATA.md for the recipe format) ---------------- */

typedef struct nx_build_opts {
    int n_threads;             /* <= 0: all CPUs; the output never depends on it */
    nx_encode_fn encode;       /* thread-safe encoder (see nx_tokenize_opts) */
    void *encode_ctx;
    int32_t eod_id;            /* appended to every document */
    int64_t vocab_size;        /* picks the dtype (uint16 below 65500) */
    int dtype_code;            /* 0: by vocab_size */
    const char *tokenizer_name;   /* recorded in the datasheet */
    void (*log)(const char *msg, void *user);   /* progress lines; may be NULL */
    void *user;
} nx_build_opts;

/* Builds OUT_DIR/train.{bin,idx}, OUT_DIR/validation.{bin,idx}, OUT_DIR/datasheet.json and
 * OUT_DIR/DATASHEET.md from a recipe. Every output is written atomically. */
NX_API nx_status nx_data_build(const char *recipe_path, const char *out_dir, const nx_build_opts *opts);
/* The recipe's "tokenizer" value into out ("" when absent). */
NX_API nx_status nx_data_recipe_tokenizer(const char *recipe_path, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* NEOX_DATA_H */
