/*
 * data/data.h - private header of the data layer (indexed datasets, sample order, corpus
 * tools). Implements include/neox/data.h. May include core, io and tokenizer headers.
 */
#ifndef NX_DATA_INTERNAL_H
#define NX_DATA_INTERNAL_H

#include "core/core.h"
#include "neox/data.h"

/* Bytes per token of a Megatron dtype code; 0 for an unknown code. */
size_t nx__idx_itemsize(int code);
/* PREFIX + ext (".idx"/".bin"), replacing a trailing .idx/.bin; caller frees (nx__free). */
char *nx__idx_path(const char *prefix, const char *ext);
/* Widens count tokens of a dtype code from unaligned bytes to int32. */
nx_status nx__idx_convert(int code, const uint8_t *src, uint64_t count, int32_t *dst);
int nx__indexed_code(const nx_indexed *ds);
/* Validates and wraps an in-memory .idx/.bin pair (borrowed; must outlive *out). For fuzzing. */
nx_status nx__indexed_open_mem(const void *idx, size_t idx_len, const void *bin, size_t bin_len, nx_indexed **out);


/* ---- document sources (reader.c) ---------------------------------------------------- */
typedef struct nx_doc_reader nx_doc_reader;
typedef struct nx_raw_record {
    const char *data;   /* borrowed until the next call */
    size_t len;
    const char *file;   /* borrowed until nx__doc_reader_free */
    uint64_t line;      /* 1-based line (JSONL) or 1 (a .txt file) */
    bool is_json;
} nx_raw_record;
/* Lists inputs (files and directories, recursively, sorted). Unknown file types named
 * explicitly are an error; inside directories they are skipped. */
nx_status nx__doc_reader_open(const char *const *inputs, size_t n, nx_doc_reader **out);
nx_status nx__doc_reader_next(nx_doc_reader *r, nx_raw_record *rec, bool *eof);
void nx__doc_reader_free(nx_doc_reader *r);
size_t nx__doc_reader_n_files(const nx_doc_reader *r);
uint64_t nx__doc_reader_total_bytes(const nx_doc_reader *r);
uint64_t nx__doc_reader_done_bytes(const nx_doc_reader *r);

/* Byte offset of the first invalid UTF-8 sequence, or (size_t)-1 when valid. */
size_t nx__utf8_invalid_at(const char *text, size_t len);
/* Appends text to out with invalid sequences replaced by U+FFFD (Python's "replace");
 * returns the number of replacements. */
size_t nx__utf8_repair(const char *text, size_t len, nx_buf *out);

/* ---- dedup (minhash.c) ------------------------------------------------------------------- */
uint64_t nx__hash64(const void *data, size_t n, uint64_t seed);
/* Sorted unique word-shingle hashes of text into *out (grown; *cap its capacity). Returns
 * the count, or -1 when out of memory. */
long nx__shingles(const char *text, size_t len, int shingle, uint64_t **out, size_t *cap);
/* Exact Jaccard similarity of two sorted unique hash sets. */
double nx__jaccard_sorted(const uint64_t *a, size_t na, const uint64_t *b, size_t nb);
void nx__minhash_signature(const uint64_t *sh, size_t n, int perms, uint64_t *sig);
typedef struct nx_lsh nx_lsh;
nx_lsh *nx__lsh_create(int bands, int rows, size_t expected_docs);
void nx__lsh_free(nx_lsh *l);
bool nx__lsh_query(const nx_lsh *l, const uint64_t *sig, bool (*fn)(int64_t doc, void *user), void *user);
nx_status nx__lsh_insert(nx_lsh *l, int64_t doc, const uint64_t *sig);

/* ---- generated mathematics (mathgen.c) ------------------------------------------------ */
/* Appends one document of n_problems DM-Mathematics-style question/answer pairs. */
void nx__mathgen_doc(nx_mt19937 *mt, int n_problems, nx_buf *out);

#endif
