/*
 * minhash.c - exact and near-duplicate detection for corpus building.
 *
 * Exact: a 64-bit hash of the document bytes, confirmed by comparing bytes.
 * Near: MinHash over word shingles with LSH banding (the method the Pile/Pythia dedup used,
 * at Jaccard 0.87). Words are maximal runs of letters/digits (ASCII folded to lower case;
 * every byte >= 0x80 counts as a letter so any script forms words); a shingle is n
 * consecutive words. Signature slot i is the minimum over shingles of mix(h ^ seed_i).
 * Candidates that share any band are verified with the EXACT Jaccard of their shingle
 * sets, so a document is only ever dropped when its true similarity reaches the threshold
 * (no false positives); recall depends on the banding (16 bands x 8 rows: P(candidate) at
 * J = 0.87 is 1 - (1 - 0.87^8)^16 = 0.998).
 */
#include "data/data.h"

uint64_t nx__hash64(const void *data, size_t n, uint64_t seed) {
    /* FNV-1a over 8-byte words plus a final avalanche (splitmix64): fast, well mixed. */
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    h ^= (uint64_t)n;
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27; h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static inline bool word_byte(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

/* Word hashes of text into *words (grown as needed); returns the count or -1 on OOM. */
static long word_hashes(const char *text, size_t len, uint64_t **words, size_t *cap) {
    const uint8_t *s = (const uint8_t *)text;
    size_t n = 0, i = 0;
    while (i < len) {
        while (i < len && !word_byte(s[i])) i++;
        if (i >= len) break;
        uint64_t h = 0x9e3779b97f4a7c15ull;
        while (i < len && word_byte(s[i])) {
            uint8_t c = s[i++];
            if (c >= 'A' && c <= 'Z') c = (uint8_t)(c + 32);
            h = (h ^ c) * 0x100000001b3ull;
        }
        if (n == *cap) {
            size_t nc = *cap ? *cap * 2 : 1024;
            uint64_t *nw = nx__realloc(*words, nc * sizeof *nw);
            if (!nw) return -1;
            *words = nw;
            *cap = nc;
        }
        (*words)[n++] = mix64(h);
    }
    return (long)n;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Sorted, unique shingle hashes of a document. Fewer words than the shingle size give one
 * shingle of all words (so short documents can still match); no words give none. */
long nx__shingles(const char *text, size_t len, int shingle, uint64_t **out, size_t *cap) {
    uint64_t *words = NULL;
    size_t wcap = 0;
    long nw = word_hashes(text, len, &words, &wcap);
    if (nw < 0) return -1;
    long ns = nw == 0 ? 0 : nw < shingle ? 1 : nw - shingle + 1;
    if ((size_t)ns > *cap) {
        uint64_t *no = nx__realloc(*out, (size_t)ns * sizeof *no);
        if (!no) { nx__free(words); return -1; }
        *out = no;
        *cap = (size_t)ns;
    }
    for (long i = 0; i < ns; i++) {
        uint64_t h = 0x84222325cbf29ce4ull;
        long end = NX_MIN(i + shingle, nw);
        for (long k = i; k < end; k++) h = mix64(h ^ words[k]);
        (*out)[i] = h;
    }
    nx__free(words);
    qsort(*out, (size_t)ns, sizeof **out, cmp_u64);
    long u = 0;
    for (long i = 0; i < ns; i++)
        if (u == 0 || (*out)[i] != (*out)[u - 1]) (*out)[u++] = (*out)[i];
    return u;
}

double nx__jaccard_sorted(const uint64_t *a, size_t na, const uint64_t *b, size_t nb) {
    if (na == 0 && nb == 0) return 1.0;
    size_t i = 0, j = 0, inter = 0;
    while (i < na && j < nb) {
        if (a[i] == b[j]) { inter++; i++; j++; }
        else if (a[i] < b[j]) i++;
        else j++;
    }
    return (double)inter / (double)(na + nb - inter);
}

void nx__minhash_signature(const uint64_t *sh, size_t n, int perms, uint64_t *sig) {
    for (int p = 0; p < perms; p++) sig[p] = UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        for (int p = 0; p < perms; p++) {
            uint64_t v = mix64(sh[i] ^ (0x9e3779b97f4a7c15ull * (uint64_t)(p + 1)));
            if (v < sig[p]) sig[p] = v;
        }
    }
}

/* ---- LSH index: one open-addressing table per band, bucket -> chain of doc ids --------- */

struct nx_lsh {
    int bands, rows;
    size_t cap;               /* slots per band (power of two) */
    uint64_t *keys;           /* bands * cap, 0 = empty */
    int64_t *head;            /* bands * cap: first doc in the bucket's chain */
    int64_t *next;            /* per (doc, band): next doc in the same bucket, -1 ends */
    size_t n_docs, docs_cap;
    size_t used;
};

nx_lsh *nx__lsh_create(int bands, int rows, size_t expected_docs) {
    nx_lsh *l = nx__calloc(1, sizeof *l);
    if (!l) return NULL;
    l->bands = bands;
    l->rows = rows;
    l->cap = 1024;
    while (l->cap < expected_docs * 2) l->cap *= 2;
    l->keys = nx__calloc((size_t)bands * l->cap, sizeof *l->keys);
    l->head = nx__malloc((size_t)bands * l->cap * sizeof *l->head);
    if (!l->keys || !l->head) { nx__lsh_free(l); return NULL; }
    for (size_t i = 0; i < (size_t)bands * l->cap; i++) l->head[i] = -1;
    return l;
}

void nx__lsh_free(nx_lsh *l) {
    if (!l) return;
    nx__free(l->keys);
    nx__free(l->head);
    nx__free(l->next);
    nx__free(l);
}

static uint64_t band_key(const nx_lsh *l, const uint64_t *sig, int b) {
    uint64_t k = nx__hash64(sig + (size_t)b * (size_t)l->rows, (size_t)l->rows * 8, (uint64_t)b);
    return k ? k : 1;
}

static size_t slot_of(const nx_lsh *l, int b, uint64_t key, bool *found) {
    size_t mask = l->cap - 1, i = (size_t)key & mask;
    const uint64_t *keys = l->keys + (size_t)b * l->cap;
    for (;;) {
        if (keys[i] == key) { *found = true; return i; }
        if (keys[i] == 0) { *found = false; return i; }
        i = (i + 1) & mask;
    }
}

static nx_status grow(nx_lsh *l) {
    size_t nc = l->cap * 2;
    uint64_t *keys = nx__calloc((size_t)l->bands * nc, sizeof *keys);
    int64_t *head = nx__malloc((size_t)l->bands * nc * sizeof *head);
    if (!keys || !head) { nx__free(keys); nx__free(head); return nx__error(NX_ERR_NOMEM, "LSH: out of memory"); }
    for (int b = 0; b < l->bands; b++) {
        for (size_t i = 0; i < l->cap; i++) {
            uint64_t k = l->keys[(size_t)b * l->cap + i];
            if (!k) continue;
            size_t j = (size_t)k & (nc - 1);
            while (keys[(size_t)b * nc + j]) j = (j + 1) & (nc - 1);
            keys[(size_t)b * nc + j] = k;
            head[(size_t)b * nc + j] = l->head[(size_t)b * l->cap + i];
        }
    }
    nx__free(l->keys);
    nx__free(l->head);
    l->keys = keys;
    l->head = head;
    l->cap = nc;
    return NX_OK;
}

/* Calls fn(doc, user) for every indexed doc sharing a band with sig (a doc may be reported
 * once per shared band; callers dedupe if they care). Stops early when fn returns true. */
bool nx__lsh_query(const nx_lsh *l, const uint64_t *sig, bool (*fn)(int64_t doc, void *user), void *user) {
    for (int b = 0; b < l->bands; b++) {
        bool found;
        size_t i = slot_of(l, b, band_key(l, sig, b), &found);
        if (!found) continue;
        for (int64_t d = l->head[(size_t)b * l->cap + i]; d >= 0; d = l->next[(size_t)d * (size_t)l->bands + (size_t)b])
            if (fn(d, user)) return true;
    }
    return false;
}

/* Adds doc id (consecutive ids from 0) with signature sig. */
nx_status nx__lsh_insert(nx_lsh *l, int64_t doc, const uint64_t *sig) {
    if ((size_t)doc >= l->docs_cap) {
        size_t nc = l->docs_cap ? l->docs_cap * 2 : 1024;
        while (nc <= (size_t)doc) nc *= 2;
        int64_t *nn = nx__realloc(l->next, nc * (size_t)l->bands * sizeof *nn);
        if (!nn) return nx__error(NX_ERR_NOMEM, "LSH: out of memory");
        l->next = nn;
        l->docs_cap = nc;
    }
    if ((l->used + 1) * 2 > l->cap) NX_TRY(grow(l));
    l->used++;
    for (int b = 0; b < l->bands; b++) {
        uint64_t k = band_key(l, sig, b);
        bool found;
        size_t i = slot_of(l, b, k, &found);
        size_t at = (size_t)b * l->cap + i;
        if (!found) { l->keys[at] = k; l->head[at] = -1; }
        l->next[(size_t)doc * (size_t)l->bands + (size_t)b] = l->head[at];
        l->head[at] = doc;
    }
    return NX_OK;
}
