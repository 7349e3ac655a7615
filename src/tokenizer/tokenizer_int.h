/*
 * tokenizer_int.h - private header of the tokenizer layer: the loaded tokenizer's layout,
 * Unicode helpers (unicode.c), the GPT-2 split scanner and the BPE merge loop (bpe.c), shared
 * with the trainer (train.c). May include core and io; nothing above.
 */
#ifndef NX_TOKENIZER_INT_H
#define NX_TOKENIZER_INT_H

#include "core/core.h"
#include "neox/tokenizer.h"

#include <stdatomic.h>

/* ---- Unicode ------------------------------------------------------------------------- */
/* Character classes of the GPT-2 split regex: \p{L}, \p{N}, \s, everything else. */
enum { NX_UC_P = 0, NX_UC_L = 1, NX_UC_N = 2, NX_UC_S = 3 };

extern const uint32_t nx__uni_class_runs[][2];
extern const size_t nx__uni_class_nruns;
extern const uint32_t nx__uni_lower[][5];
extern const size_t nx__uni_nlower;
extern const uint32_t nx__uni_barrier_nfc[], nx__uni_barrier_nfd[], nx__uni_barrier_nfkc[], nx__uni_barrier_nfkd[];
extern const size_t nx__uni_nbarrier_nfc, nx__uni_nbarrier_nfd, nx__uni_nbarrier_nfkc, nx__uni_nbarrier_nfkd;
extern const uint32_t nx__uni_unsafe_nfc[][2], nx__uni_unsafe_nfd[][2], nx__uni_unsafe_nfkc[][2], nx__uni_unsafe_nfkd[][2];
extern const size_t nx__uni_nunsafe_nfc, nx__uni_nunsafe_nfd, nx__uni_nunsafe_nfkc, nx__uni_nunsafe_nfkd;

/* Class of a code point (table lookup; the BMP through a 64 KiB table built once). */
int nx__uni_class(uint32_t cp);
/* Decodes one UTF-8 character of s[0..n) (n >= 1). Returns its length (1..4) and the code point,
 * or 0 when the bytes at s are not a valid UTF-8 character (then *cp is undefined). */
size_t nx__utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
/* Appends the UTF-8 encoding of cp. */
void nx__utf8_put(nx_buf *b, uint32_t cp);
/* Length of the longest valid UTF-8 prefix of s[0..n). */
size_t nx__utf8_valid_prefix(const uint8_t *s, size_t n);
/* Copies s with each maximal invalid subsequence replaced by U+FFFD (CPython's "replace"). */
void nx__utf8_lossy(const uint8_t *s, size_t n, nx_buf *out);

/* Normalizer steps, applied in order. */
typedef enum { NX_NORM_NFC = 1, NX_NORM_NFD, NX_NORM_NFKC, NX_NORM_NFKD, NX_NORM_LOWER } nx__norm_op;
/* Applies ops[0..nops) to valid UTF-8 s[0..n), writing the result to out (replaced). */
nx_status nx__normalize(const uint8_t *ops, int nops, const char *s, size_t n, nx_buf *out);

/* ---- the byte<->char map of ByteLevel ----------------------------------------------- */
/* byte -> code point of its printable stand-in (0x20 -> U+0120 'Ġ'). */
uint32_t nx__byte_to_cp(uint8_t b);
/* inverse: code point -> byte, or -1 when cp is not one of the 256 stand-ins. */
int nx__cp_to_byte(uint32_t cp);

/* ---- GPT-2 split scanner -------------------------------------------------------------- */
/* Returns the end of the pre-token that starts at s[i] (i < n) per the regex
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ (s is valid UTF-8). */
size_t nx__gpt2_split_next(const uint8_t *s, size_t n, size_t i);

/* ---- hashing --------------------------------------------------------------------------- */
static inline uint64_t nx__hash_bytes(const void *p, size_t n) {
    /* FNV-1a over 8-byte words then a final mix: fast enough for token strings and words */
    const uint8_t *s = (const uint8_t *)p;
    uint64_t h = 0xcbf29ce484222325ull ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8; n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return h;
}
static inline uint64_t nx__hash_u64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

/* String -> id hash table (open addressing, power-of-two size). Keys are borrowed. */
typedef struct nx__strmap {
    struct { const char *key; uint32_t len; int32_t id; uint32_t hash; } *slots;   /* hash: saves most memcmps */
    size_t mask, count;
} nx__strmap;
nx_status nx__strmap_init(nx__strmap *m, size_t expected);
/* Inserts or overwrites; returns the previous id or -1. */
int32_t nx__strmap_put(nx__strmap *m, const char *key, size_t len, int32_t id);
int32_t nx__strmap_get(const nx__strmap *m, const char *key, size_t len);
void nx__strmap_free(nx__strmap *m);

/* (a, b) pair -> (rank, new id) hash table for merges. */
typedef struct nx__pairmap {
    struct { uint64_t key; int32_t rank, id; } *slots;   /* key ~0 = empty */
    size_t mask, count;
} nx__pairmap;
nx_status nx__pairmap_init(nx__pairmap *m, size_t expected);
void nx__pairmap_put(nx__pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
static inline bool nx__pairmap_get(const nx__pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = nx__hash_u64(key) & m->mask;
    for (;;) {
        if (m->slots[i].key == key) { *rank = m->slots[i].rank; *id = m->slots[i].id; return true; }
        if (m->slots[i].key == ~0ull) return false;
        i = (i + 1) & m->mask;
    }
}
void nx__pairmap_free(nx__pairmap *m);

/* ---- the tokenizer ---------------------------------------------------------------------- */
typedef struct nx__added {
    char *content;          /* as written in the file */
    size_t len;
    char *match;            /* what is matched: content, or its normalized form when normalized */
    size_t match_len;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
    bool ignored;           /* empty, or a repeat of an earlier identical entry (HF skips these) */
} nx__added;

/* Byte trie over added-token strings, for leftmost-longest matching. */
typedef struct nx__trie_node {
    int32_t child, sibling;   /* first child, next sibling; -1 = none */
    int32_t token;            /* index into added[], -1 when no token ends here */
    uint8_t byte;
} nx__trie_node;
typedef struct nx__trie {
    nx__trie_node *nodes;
    size_t n, cap;
    uint8_t first[256];       /* bytes that can start a match */
    bool empty;
} nx__trie;

typedef enum { NX_POST_NONE = 0, NX_POST_TEMPLATE } nx__post_kind;

/* One cache shard: words (pre-tokens) -> ids. A try-lock guards it; a thread that finds it
 * busy simply does not use the cache for that word, so readers never wait. */
#define NX_CACHE_SHARDS 64
#define NX_CACHE_MAX_WORD 128
typedef struct nx__cache_shard {
    atomic_flag lock;
    uint32_t *table;     /* slot -> offset+1 of an entry in arena (0 = empty) */
    size_t mask, used;
    uint8_t *arena;      /* entries: u64 hash, u32 klen, u32 nids, key bytes, ids (aligned to 4) */
    size_t arena_len, arena_cap;
} nx__cache_shard;

struct nx_tokenizer {
    char *name;                      /* path for messages */
    /* model */
    char **id_to_tok;                /* [vocab_size]; model tokens (owned); added tokens override */
    uint32_t *tok_len;
    int32_t vocab_size;              /* max id + 1 over model and added tokens */
    int32_t model_size;              /* number of model vocab entries */
    nx__strmap vocab;                /* model token -> id */
    nx__pairmap merges;
    int32_t byte_id[256];            /* model id of each byte's stand-in char, -1 if absent */
    int32_t unk_id;                  /* -1 when none */
    bool fuse_unk, ignore_merges;
    /* normalizer */
    uint8_t norm_ops[16];
    int n_norm;
    /* pre-tokenizer */
    bool has_byte_level, add_prefix_space, use_regex;
    /* added tokens */
    nx__added *added;
    size_t n_added;
    nx__strmap added_map;            /* content -> id */
    bool *is_special;                /* [vocab_size] */
    nx__trie trie_raw, trie_norm;    /* tokens with normalized = false / true */
    /* post-processor: template for a single sequence: ids before and after */
    nx__post_kind post;
    int32_t *post_pre, *post_post;
    size_t n_post_pre, n_post_post;
    /* every id's string (added content over model token; NULL = unused id), borrowed */
    const char **id_str;
    uint32_t *id_slen;
    /* decoder */
    bool dec_byte_level;             /* else tokens are joined with " " */
    uint32_t *dec_off;               /* [vocab_size + 1]: decoded bytes of id i are */
    char *dec_bytes;                 /*   dec_bytes[dec_off[i] .. dec_off[i + 1]) */
    /* special ids */
    int32_t bos, eos, pad;
    /* pre-token cache */
    nx__cache_shard cache[NX_CACHE_SHARDS];
};

/* A model vocabulary entry (string owned by whoever holds the array). */
typedef struct nx__vocab_entry { char *s; size_t len; int32_t id; } nx__vocab_entry;

/* json_fast.c: model.vocab and model.merges of a tokenizer.json decoded without a DOM. */
typedef struct nx__fast_model {
    size_t vocab_begin, vocab_end, merges_begin, merges_end;   /* byte spans of the two values */
    nx__vocab_entry *vocab;
    size_t n_vocab;
    struct { uint32_t a, la, b, lb; bool pair; } *merges;    /* offsets into arena; !pair: "a b" in a */
    size_t n_merges;
    bool has_merges;
    nx_buf arena;
} nx__fast_model;
/* True with *fm filled (free with nx__fast_model_free), or false: use the general parser. */
bool nx__fast_model_parse(const char *s, size_t n, nx__fast_model *fm);
void nx__fast_model_free(nx__fast_model *fm);

/* Applies the BPE model to one pre-token given as raw bytes, appending ids to out. */
nx_status nx__bpe_word(const nx_tokenizer *tok, const uint8_t *w, size_t n, nx_ids *out);

/* ids helper */
nx_status nx__ids_push(nx_ids *ids, int32_t id);
nx_status nx__ids_reserve(nx_ids *ids, size_t extra);

#endif /* NX_TOKENIZER_INT_H */
