/*
 * neox/tokenizer.h - byte-level BPE tokenizers (GPT-NeoX-20B/Pythia, GPT-2/GPT-J/GPT-Neo),
 * bit-exact with Hugging Face `tokenizers`, and a byte-level BPE trainer.
 *
 * A loaded nx_tokenizer is immutable: every function taking a `const nx_tokenizer *` may be
 * called from many threads at once (the internal pre-token cache is sharded and lock-free for
 * readers that lose a race: they just skip the cache). See docs/TOKENIZER.md.
 *
 * Ids are int32_t. Text is UTF-8 bytes with an explicit length (embedded NULs are fine).
 */
#ifndef NEOX_TOKENIZER_H
#define NEOX_TOKENIZER_H

#include "neox/core.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nx_tokenizer nx_tokenizer;

/* A growable id array. Zero-initialise it ({0}); encode calls reuse its storage, so a loop
 * that encodes many documents allocates only when a document is longer than any before.
 * Free with nx_ids_free. */
typedef struct nx_ids {
    int32_t *data;
    size_t len, cap;
} nx_ids;
NX_API void nx_ids_free(nx_ids *ids);   /* frees data and zeroes *ids; fine on a zeroed struct */

/* A growable byte string, always NUL-terminated when data != NULL (len excludes the NUL).
 * Same reuse rules as nx_ids. */
typedef struct nx_text {
    char *data;
    size_t len, cap;
} nx_text;
NX_API void nx_text_free(nx_text *t);

/* Loads a tokenizer. path may be:
 *   - a tokenizer.json file (HF `tokenizers` format, model type BPE or no "type");
 *   - a directory holding tokenizer.json, or else vocab.json + merges.txt, or else
 *     encoder.json + vocab.bpe (GPT-2 files; loaded as GPT2TokenizerFast would: ByteLevel
 *     pre-tokenizer and decoder, "<|endoftext|>" special);
 *   - a vocab.json (or encoder.json) file whose directory holds merges.txt (or vocab.bpe).
 * In a directory, special_tokens_map.json / tokenizer_config.json (when present) name the
 * bos/eos/pad tokens. On success *out is owned by the caller (nx_tokenizer_free). Errors name
 * the file and the field (nx_last_error()). */
NX_API nx_status nx_tokenizer_load(const char *path, nx_tokenizer **out);
/* Same, from a tokenizer.json held in memory; `name` is used in error messages only.
 * The buffer is not retained. */
NX_API nx_status nx_tokenizer_load_json(const char *json, size_t len, const char *name, nx_tokenizer **out);
NX_API void nx_tokenizer_free(nx_tokenizer *tok);   /* NULL is fine */

/* ---- encode -------------------------------------------------------------------------- */
enum {
    /* Do not recognise *special* added tokens in the text: "<|endoftext|>" is encoded as the
     * plain text it is (HF `encode_special_tokens=True`). Non-special added tokens (the 20B
     * space runs) are still matched. Default (flag clear): parsed, as HF encode does. */
    NX_TOK_NO_PARSE_SPECIAL = 1u << 0,
    /* Do not run the post-processor (HF `add_special_tokens=False`). Default: run it, as HF
     * encode does. For the GPT-NeoX-20B and GPT-2 files the post-processor adds nothing. */
    NX_TOK_NO_POST_PROCESS = 1u << 1,
    /* Replace each maximal invalid UTF-8 subsequence by U+FFFD (Python's
     * bytes.decode("utf-8", "replace")) instead of failing with NX_ERR_INVALID_ARG. */
    NX_TOK_LOSSY_UTF8 = 1u << 2,
};

/* Encodes `len` bytes of UTF-8 text into ids, replacing out's contents (out->len is set).
 * Returns NX_ERR_INVALID_ARG (naming the byte offset) for invalid UTF-8 unless
 * NX_TOK_LOSSY_UTF8 is set. Thread-safe. */
NX_API nx_status nx_tokenizer_encode(const nx_tokenizer *tok, const char *text, size_t len, unsigned flags,
                                     nx_ids *out);

/* ---- decode -------------------------------------------------------------------------- */
enum {
    NX_TOK_SKIP_SPECIAL = 1u << 0,   /* drop special added tokens (HF skip_special_tokens) */
};

/* Decodes ids into bytes, replacing out's contents. Byte-exact: the ByteLevel decoder's bytes
 * are returned as they are, without HF's lossy UTF-8 replacement, so decode(encode(x)) == x
 * (== NFC(x) for a tokenizer with an NFC normalizer). An id outside [0, vocab_size) that is
 * not a token is NX_ERR_RANGE. Thread-safe. */
NX_API nx_status nx_tokenizer_decode(const nx_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                                     nx_text *out);

/* Incremental decoder for streaming generation: push ids one at a time and get back the text
 * that is complete so far. It never returns half a UTF-8 character: the bytes of an incomplete
 * character are held until the next id completes it (bytes that can never become valid UTF-8
 * are passed through, so the concatenation of all outputs equals nx_tokenizer_decode). */
typedef struct nx_tok_stream nx_tok_stream;
/* flags: NX_TOK_SKIP_SPECIAL or 0. tok is borrowed and must outlive the stream. */
NX_API nx_status nx_tok_stream_create(const nx_tokenizer *tok, unsigned flags, nx_tok_stream **out);
/* Adds one id. text and len receive the newly completed bytes (possibly 0 of them); they are
 * borrowed from the stream until its next call. */
NX_API nx_status nx_tok_stream_push(nx_tok_stream *s, int32_t id, const char **text, size_t *len);
/* Returns whatever is held back (an incomplete character at the end of the stream) and resets. */
NX_API void nx_tok_stream_flush(nx_tok_stream *s, const char **text, size_t *len);
NX_API void nx_tok_stream_free(nx_tok_stream *s);   /* NULL is fine */

/* ---- vocabulary ---------------------------------------------------------------------- */
/* Number of ids including added tokens (max id + 1): 50277 for GPT-NeoX-20B, 50257 for GPT-2. */
NX_API int32_t nx_tokenizer_vocab_size(const nx_tokenizer *tok);
/* The token string of an id as stored in the vocabulary (byte-level form, e.g. "Ġworld"), or
 * NULL for an unused id. Borrowed; valid until nx_tokenizer_free. */
NX_API const char *nx_tokenizer_id_to_token(const nx_tokenizer *tok, int32_t id);
/* The id of a token string (vocabulary or added token), or -1. */
NX_API int32_t nx_tokenizer_token_to_id(const nx_tokenizer *tok, const char *token);
/* True when id is a special added token (e.g. "<|endoftext|>"). */
NX_API bool nx_tokenizer_is_special(const nx_tokenizer *tok, int32_t id);
/* bos/eos/pad ids, or -1 when the tokenizer has none. Taken from special_tokens_map.json or
 * tokenizer_config.json when loaded from a directory that has one; otherwise from the special
 * added tokens by name: eos "<|endoftext|>", "</s>", "<eos>"; bos "<|endoftext|>" (GPT-2 and
 * NeoX use it for both), "<s>", "<bos>"; pad "<|padding|>", "<pad>". */
NX_API int32_t nx_tokenizer_eos_id(const nx_tokenizer *tok);
NX_API int32_t nx_tokenizer_bos_id(const nx_tokenizer *tok);
NX_API int32_t nx_tokenizer_pad_id(const nx_tokenizer *tok);

/* ---- training -------------------------------------------------------------------------- */
/* Progress report: stage is "count" (reading and counting words; done/total in bytes) or
 * "merge" (done/total in merges). Called from the training thread. Return false to cancel
 * (training then fails with NX_ERR_CANCELLED). */
typedef bool (*nx_bpe_progress_fn)(const char *stage, uint64_t done, uint64_t total, void *user);

typedef struct nx_bpe_train_opts {
    int32_t vocab_size;           /* final size including special tokens and the 256 bytes */
    uint64_t min_frequency;       /* stop when the best pair is rarer than this (HF default 0) */
    const char *const *special;   /* special tokens, given ids 0.. in this order */
    size_t n_special;
    int n_threads;                /* word counting threads; <= 0: all CPUs */
    nx_bpe_progress_fn progress;  /* may be NULL */
    void *user;
} nx_bpe_train_opts;

/* Trains a byte-level BPE tokenizer on text files the way HF BpeTrainer does with a ByteLevel
 * pre-tokenizer and the 256-byte initial alphabet (each input line, newline included, is one
 * sequence) and writes it atomically as an HF tokenizer.json to out_path. */
NX_API nx_status nx_bpe_train_files(const char *const *files, size_t n_files, const nx_bpe_train_opts *opts,
                                    const char *out_path);

#ifdef __cplusplus
}
#endif
#endif /* NEOX_TOKENIZER_H */
