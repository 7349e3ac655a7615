/*
 * bpe.c - the BPE model: hash tables for the vocabulary and the merges, the merge loop of one
 * pre-token, and the pre-token cache.
 *
 * The merge loop is HF's (tokenizers/src/models/bpe/word.rs, merge_all): symbols form a doubly
 * linked list; a binary min-heap holds candidate merges keyed by (rank, position); a popped
 * entry is stale when its left symbol was removed or the pair now at that position produces a
 * different new id, and then it is skipped. Every merge removes one symbol and pushes at most
 * two entries, so a word of n bytes costs O(n log n) whatever it contains (a 1 MB run of one
 * letter included). Ties in rank go to the leftmost position, which is why "aaa" becomes
 * "aa" + "a".
 */
#include "tokenizer/tokenizer_int.h"

/* ---- hash tables ------------------------------------------------------------------------- */

static size_t pow2_for(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2 + 1) cap <<= 1;
    return cap;
}

nx_status nx__strmap_init(nx__strmap *m, size_t expected) {
    size_t cap = pow2_for(expected);
    m->slots = nx__calloc(cap, sizeof *m->slots);
    if (!m->slots) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory");
    m->mask = cap - 1;
    m->count = 0;
    return NX_OK;
}

int32_t nx__strmap_put(nx__strmap *m, const char *key, size_t len, int32_t id) {
    uint64_t h = nx__hash_bytes(key, len);
    size_t i = h & m->mask;
    uint32_t h32 = (uint32_t)(h >> 32);
    for (;;) {
        if (!m->slots[i].key) {
            m->slots[i].key = key; m->slots[i].len = (uint32_t)len; m->slots[i].id = id; m->slots[i].hash = h32;
            m->count++;
            return -1;
        }
        if (m->slots[i].hash == h32 && m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0) {
            int32_t old = m->slots[i].id;
            m->slots[i].id = id;
            m->slots[i].key = key;
            return old;
        }
        i = (i + 1) & m->mask;
    }
}

int32_t nx__strmap_get(const nx__strmap *m, const char *key, size_t len) {
    if (!m->slots) return -1;
    uint64_t h = nx__hash_bytes(key, len);
    size_t i = h & m->mask;
    uint32_t h32 = (uint32_t)(h >> 32);
    for (;;) {
        if (!m->slots[i].key) return -1;
        if (m->slots[i].hash == h32 && m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0)
            return m->slots[i].id;
        i = (i + 1) & m->mask;
    }
}

void nx__strmap_free(nx__strmap *m) {
    nx__free(m->slots);
    memset(m, 0, sizeof *m);
}

nx_status nx__pairmap_init(nx__pairmap *m, size_t expected) {
    size_t cap = pow2_for(expected);
    m->slots = nx__malloc(cap * sizeof *m->slots);
    if (!m->slots) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < cap; i++) m->slots[i].key = ~0ull;
    m->mask = cap - 1;
    m->count = 0;
    return NX_OK;
}

void nx__pairmap_put(nx__pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = nx__hash_u64(key) & m->mask;
    for (;;) {
        if (m->slots[i].key == ~0ull) { m->slots[i].key = key; m->count++; break; }
        if (m->slots[i].key == key) break;   /* a repeated merge: the later one wins, as in HF */
        i = (i + 1) & m->mask;
    }
    m->slots[i].rank = rank;
    m->slots[i].id = id;
}

void nx__pairmap_free(nx__pairmap *m) {
    nx__free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- ids ------------------------------------------------------------------------------------ */

nx_status nx__ids_reserve(nx_ids *ids, size_t extra) {
    if (ids->len + extra <= ids->cap) return NX_OK;
    size_t cap = ids->cap ? ids->cap : 64;
    while (cap < ids->len + extra) cap *= 2;
    int32_t *p = nx__realloc(ids->data, cap * sizeof *p);
    if (!p) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory for %zu ids", cap);
    ids->data = p;
    ids->cap = cap;
    return NX_OK;
}

nx_status nx__ids_push(nx_ids *ids, int32_t id) {
    if (ids->len == ids->cap) NX_TRY(nx__ids_reserve(ids, 1));
    ids->data[ids->len++] = id;
    return NX_OK;
}

void nx_ids_free(nx_ids *ids) {
    if (!ids) return;
    nx__free(ids->data);
    memset(ids, 0, sizeof *ids);
}

/* ---- merge loop ------------------------------------------------------------------------------ */

typedef struct { int32_t id, prev, next, alive; } sym;
typedef struct { int32_t rank, pos, new_id; } cand;

static inline bool cand_less(cand a, cand b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static void heap_push(cand *h, size_t *n, cand c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(c, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, size_t *n) {
    cand top = h[0], last = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= m) break;
        size_t r = l + 1, c = (r < m && cand_less(h[r], h[l])) ? r : l;
        if (!cand_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = last;
    return top;
}

/* The merge loop proper, on symbols already looked up. */
static void merge_all(const nx_tokenizer *tok, sym *s, size_t n, cand *heap) {
    size_t nh = 0;
    int32_t rank, nid;
    for (size_t i = 0; i + 1 < n; i++)
        if (nx__pairmap_get(&tok->merges, s[i].id, s[i + 1].id, &rank, &nid))
            heap_push(heap, &nh, (cand){rank, (int32_t)i, nid});
    while (nh) {
        cand top = heap_pop(heap, &nh);
        sym *cur = &s[top.pos];
        if (!cur->alive || cur->next < 0) continue;
        sym *right = &s[cur->next];
        if (!nx__pairmap_get(&tok->merges, cur->id, right->id, &rank, &nid) || nid != top.new_id) continue;
        cur->id = top.new_id;
        right->alive = 0;
        cur->next = right->next;
        if (right->next >= 0) s[right->next].prev = top.pos;
        if (cur->prev >= 0 && nx__pairmap_get(&tok->merges, s[cur->prev].id, cur->id, &rank, &nid))
            heap_push(heap, &nh, (cand){rank, cur->prev, nid});
        if (cur->next >= 0 && nx__pairmap_get(&tok->merges, cur->id, s[cur->next].id, &rank, &nid))
            heap_push(heap, &nh, (cand){rank, top.pos, nid});
    }
}

static nx_status bpe_uncached(const nx_tokenizer *tok, const uint8_t *w, size_t n, nx_ids *out) {
    if (tok->ignore_merges && !tok->has_byte_level) {
        int32_t id = nx__strmap_get(&tok->vocab, (const char *)w, n);
        if (id >= 0) return nx__ids_push(out, id);
    } else if (tok->ignore_merges) {
        /* HF: a word that is itself in the vocabulary is taken whole */
        char stack[256] = {0}, *m = n * 2 <= sizeof stack ? stack : nx__malloc(n * 2 + 1);
        if (!m) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory");
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t cp = nx__byte_to_cp(w[i]);
            if (cp < 0x80) m[k++] = (char)cp;
            else { m[k++] = (char)(0xC0 | (cp >> 6)); m[k++] = (char)(0x80 | (cp & 0x3F)); }
        }
        int32_t id = nx__strmap_get(&tok->vocab, m, k);
        if (m != stack) nx__free(m);
        if (id >= 0) return nx__ids_push(out, id);
    }
    sym stack_s[64];
    cand stack_h[64];
    sym *s = stack_s;
    cand *heap = stack_h;
    if (n > 64) {
        /* each merge pushes at most 2 entries on top of the n-1 initial ones */
        s = nx__malloc(n * sizeof *s);
        heap = nx__malloc(3 * n * sizeof *heap);
        if (!s || !heap) {
            nx__free(s); nx__free(heap);
            return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte word", n);
        }
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id;
        if (tok->has_byte_level) id = tok->byte_id[w[i]];
        else {
            /* without ByteLevel the initial symbols are the characters themselves */
            uint32_t cp;
            size_t l = nx__utf8_decode(w + i, n - i, &cp);
            if (!l) l = 1;
            id = nx__strmap_get(&tok->vocab, (const char *)w + i, l);
            i += l - 1;
        }
        if (id < 0) {
            if (tok->unk_id < 0) continue;   /* HF drops a character with no id and no unk */
            if (tok->fuse_unk && m > 0 && s[m - 1].id == tok->unk_id) continue;
            id = tok->unk_id;
        }
        s[m] = (sym){id, (int32_t)m - 1, (int32_t)m + 1, 1};
        m++;
    }
    if (m) s[m - 1].next = -1;
    if (n <= 64 && 3 * m > 64) {
        /* the stack heap holds 64 entries; words over 21 symbols need the larger bound */
        heap = nx__malloc(3 * m * sizeof *heap);
        if (!heap) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory");
    }
    merge_all(tok, s, m, heap);
    nx_status st = nx__ids_reserve(out, m);
    if (st == NX_OK)
        for (int32_t i = m ? 0 : -1; i >= 0; i = s[i].next) out->data[out->len++] = s[i].id;
    if (s != stack_s) nx__free(s);
    if (heap != stack_h) nx__free(heap);
    return st;
}

/* ---- the cache ------------------------------------------------------------------------------ */
/* Sharded by hash. Each shard is an open-addressing table of offsets into an append-only
 * arena; when either fills up the shard is simply emptied (the working set of a corpus is
 * mostly frequent short words, which come back at once). */
#define SHARD_SLOTS 4096
#define SHARD_ARENA (256 * 1024)

static bool cache_lock(nx__cache_shard *c) { return !atomic_flag_test_and_set_explicit(&c->lock, memory_order_acquire); }
static void cache_unlock(nx__cache_shard *c) { atomic_flag_clear_explicit(&c->lock, memory_order_release); }

typedef struct { uint64_t hash; uint32_t klen, nids; } entry_hdr;

static size_t entry_size(size_t klen, size_t nids) {
    return sizeof(entry_hdr) + ((klen + 3) & ~(size_t)3) + nids * 4;
}

static bool cache_find(nx__cache_shard *c, uint64_t h, const uint8_t *w, size_t n, nx_ids *out, nx_status *st) {
    if (!c->table) return false;
    size_t i = (h >> 8) & c->mask;
    for (;;) {
        uint32_t off = c->table[i];
        if (!off) return false;
        entry_hdr e;
        memcpy(&e, c->arena + off - 1, sizeof e);
        const uint8_t *k = c->arena + off - 1 + sizeof e;
        if (e.hash == h && e.klen == n && memcmp(k, w, n) == 0) {
            *st = nx__ids_reserve(out, e.nids);
            if (*st == NX_OK && e.nids) {
                memcpy(out->data + out->len, k + ((n + 3) & ~(size_t)3), e.nids * 4);
                out->len += e.nids;
            }
            return true;
        }
        i = (i + 1) & c->mask;
    }
}

static void cache_insert(nx__cache_shard *c, uint64_t h, const uint8_t *w, size_t n, const int32_t *ids,
                         size_t nids) {
    if (!c->table) {
        c->table = nx__calloc(SHARD_SLOTS, sizeof *c->table);
        c->arena = nx__malloc(SHARD_ARENA);
        if (!c->table || !c->arena) {
            nx__free(c->table); nx__free(c->arena);
            c->table = NULL; c->arena = NULL;
            return;   /* no cache is only slower */
        }
        c->mask = SHARD_SLOTS - 1;
        c->arena_cap = SHARD_ARENA;
    }
    size_t need = entry_size(n, nids);
    if (c->used * 2 >= SHARD_SLOTS || c->arena_len + need > c->arena_cap) {
        memset(c->table, 0, SHARD_SLOTS * sizeof *c->table);
        c->used = 0;
        c->arena_len = 0;
        if (need > c->arena_cap) return;
    }
    size_t off = c->arena_len;
    entry_hdr e = {h, (uint32_t)n, (uint32_t)nids};
    memcpy(c->arena + off, &e, sizeof e);
    memcpy(c->arena + off + sizeof e, w, n);
    if (nids) memcpy(c->arena + off + sizeof e + ((n + 3) & ~(size_t)3), ids, nids * 4);   /* a word may yield no ids */
    c->arena_len += need;
    size_t i = (h >> 8) & c->mask;
    while (c->table[i]) i = (i + 1) & c->mask;
    c->table[i] = (uint32_t)off + 1;
    c->used++;
}

nx_status nx__bpe_word(const nx_tokenizer *tok, const uint8_t *w, size_t n, nx_ids *out) {
    if (n == 0) return NX_OK;
    if (n == 1 && tok->has_byte_level && tok->byte_id[w[0]] >= 0) return nx__ids_push(out, tok->byte_id[w[0]]);
    if (n > NX_CACHE_MAX_WORD) return bpe_uncached(tok, w, n, out);
    uint64_t h = nx__hash_bytes(w, n);
    /* the cache is logically const: it never changes results */
    nx__cache_shard *c = (nx__cache_shard *)&tok->cache[h & (NX_CACHE_SHARDS - 1)];
    if (cache_lock(c)) {
        nx_status st = NX_OK;
        bool hit = cache_find(c, h, w, n, out, &st);
        cache_unlock(c);
        if (hit) return st;
    }
    size_t start = out->len;
    NX_TRY(bpe_uncached(tok, w, n, out));
    if (cache_lock(c)) {
        cache_insert(c, h, w, n, out->len > start ? out->data + start : NULL, out->len - start);
        cache_unlock(c);
    }
    return NX_OK;
}
