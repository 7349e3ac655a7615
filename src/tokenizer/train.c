/*
 * train.c - byte-level BPE training, the algorithm of HF tokenizers' BpeTrainer
 * (tokenizers/src/models/bpe/trainer.rs) with a ByteLevel pre-tokenizer, so that both
 * libraries produce the same merges from the same files.
 *
 * What HF does, and so what we do:
 *   1. Input: every line of every file, newline included (HF reads files with read_line),
 *      is one sequence; no normalizer; ByteLevel pre-tokenization without a prefix space:
 *      the GPT-2 split, each piece mapped to byte stand-in characters. Words are counted.
 *   2. Vocabulary: the special tokens first (ids 0..), then the alphabet: the 256 byte
 *      stand-ins (ByteLevel.alphabet() as initial_alphabet) sorted by code point.
 *   3. Pair counts: for every word, every adjacent symbol pair counts the word's frequency;
 *      every pair remembers the words it occurs in.
 *   4. A max-heap of (count, pair, words). Repeatedly pop the top; if its count is stale
 *      (pair counts changed since it was pushed) push it back with the current count; stop
 *      when the count is below 1 or below min_frequency, or the vocabulary is full. Ties in
 *      count go to the smaller pair, comparing (left id, right id). The new token is the
 *      concatenation (reusing an existing id if the string is already a token). In each word
 *      of the entry the pair is merged left to right without overlap (Word::merge), which
 *      reports -1 for every pair destroyed and +1 for every pair created next to the new
 *      symbol; counts are updated by change x word frequency, and every created pair gets a
 *      fresh heap entry holding the words where it was created. The merged pair's own count
 *      is left as it is, exactly as HF leaves it.
 * Counting (step 1) runs on an nx_pool with line-aligned chunks per thread and per-thread
 * word maps that are added together afterwards, so the result does not depend on threads.
 */
#include "tokenizer/tokenizer_int.h"

#include <jansson.h>

/* ---- word counting ------------------------------------------------------------------------- */

typedef struct wmap {
    struct { uint64_t hash; uint32_t off, len; uint64_t count; } *slots;   /* len 0 + off 0 = empty */
    size_t mask, n;
    nx_buf keys;
    bool oom;
} wmap;

static bool wmap_init(wmap *m, size_t cap) {
    m->slots = nx__calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    m->n = 0;
    return m->slots != NULL;
}

static void wmap_free(wmap *m) {
    nx__free(m->slots);
    nx__buf_free(&m->keys);
    memset(m, 0, sizeof *m);
}

static void wmap_add(wmap *m, const uint8_t *w, size_t n, uint64_t h, uint64_t count);

static bool wmap_grow(wmap *m) {
    wmap big = {0};
    if (!wmap_init(&big, (m->mask + 1) * 2)) return false;
    big.keys = m->keys;
    for (size_t i = 0; i <= m->mask; i++) {
        if (!m->slots[i].count) continue;
        size_t j = m->slots[i].hash & big.mask;
        while (big.slots[j].count) j = (j + 1) & big.mask;
        big.slots[j] = m->slots[i];
        big.n++;
    }
    nx__free(m->slots);
    m->slots = big.slots;
    m->mask = big.mask;
    return true;
}

static void wmap_add(wmap *m, const uint8_t *w, size_t n, uint64_t h, uint64_t count) {
    size_t i = h & m->mask;
    while (m->slots[i].count) {
        if (m->slots[i].hash == h && m->slots[i].len == n && !memcmp(m->keys.data + m->slots[i].off, w, n)) {
            m->slots[i].count += count;
            return;
        }
        i = (i + 1) & m->mask;
    }
    if ((m->n + 1) * 2 > m->mask + 1) {
        if (!wmap_grow(m)) { m->oom = true; return; }
        wmap_add(m, w, n, h, count);
        return;
    }
    size_t off = m->keys.len;
    nx__buf_append(&m->keys, w, n);
    if (m->keys.oom || off > UINT32_MAX) { m->oom = true; return; }
    m->slots[i].hash = h;
    m->slots[i].off = (uint32_t)off;
    m->slots[i].len = (uint32_t)n;
    m->slots[i].count = count;
    m->n++;
}

typedef struct count_job {
    const uint8_t *data;
    size_t begin, end;     /* line-aligned byte range */
    size_t file;           /* index of the file */
} count_job;

typedef struct count_ctx {
    count_job *jobs;
    size_t njobs;
    wmap *maps;            /* one per thread */
    atomic_size_t done;    /* bytes counted */
    size_t total;
    size_t bad_job, bad_off;   /* first invalid UTF-8 */
    atomic_int bad;
    atomic_int cancel;
    nx_bpe_progress_fn progress;
    void *user;
} count_ctx;

static void count_range(count_ctx *c, wmap *m, const count_job *j, size_t ji) {
    const uint8_t *d = j->data;
    size_t p = j->begin;
    while (p < j->end) {
        if (atomic_load_explicit(&c->cancel, memory_order_relaxed) || atomic_load(&c->bad)) return;
        const uint8_t *nl = memchr(d + p, '\n', j->end - p);
        size_t e = nl ? (size_t)(nl - d) + 1 : j->end;
        size_t v = nx__utf8_valid_prefix(d + p, e - p);
        if (v != e - p) {
            if (atomic_exchange(&c->bad, 1) == 0) { c->bad_job = ji; c->bad_off = p + v; }
            return;
        }
        for (size_t i = p; i < e;) {
            size_t k = nx__gpt2_split_next(d, e, i);
            wmap_add(m, d + i, k - i, nx__hash_bytes(d + i, k - i), 1);
            i = k;
        }
        atomic_fetch_add_explicit(&c->done, e - p, memory_order_relaxed);
        p = e;
    }
}

static void count_fn(int ith, int nth, void *arg) {
    count_ctx *c = arg;
    for (size_t j = (size_t)ith; j < c->njobs; j += (size_t)nth) {
        count_range(c, &c->maps[ith], &c->jobs[j], j);
        if (ith == 0 && c->progress && !c->progress("count", atomic_load(&c->done), c->total, c->user))
            atomic_store(&c->cancel, 1);
    }
}

/* ---- merging ----------------------------------------------------------------------------------- */

typedef struct { int32_t *s; int32_t n; uint64_t count; } word;

/* pair -> int64 map (open addressing, grows) */
typedef struct { uint64_t *keys; int64_t *vals; size_t mask, n; } pmap;

static bool pmap_init(pmap *m, size_t cap) {
    m->keys = nx__malloc(cap * sizeof *m->keys);
    m->vals = nx__calloc(cap, sizeof *m->vals);
    if (!m->keys || !m->vals) return false;
    memset(m->keys, 0xFF, cap * sizeof *m->keys);
    m->mask = cap - 1;
    m->n = 0;
    return true;
}
static void pmap_free(pmap *m) { nx__free(m->keys); nx__free(m->vals); memset(m, 0, sizeof *m); }

static int64_t *pmap_slot(pmap *m, uint64_t key) {
    size_t i = nx__hash_u64(key) & m->mask;
    while (m->keys[i] != ~0ull) {
        if (m->keys[i] == key) return &m->vals[i];
        i = (i + 1) & m->mask;
    }
    if ((m->n + 1) * 2 > m->mask + 1) {
        pmap big;
        if (!pmap_init(&big, (m->mask + 1) * 2)) return NULL;
        for (size_t k = 0; k <= m->mask; k++) {
            if (m->keys[k] == ~0ull) continue;
            size_t j = nx__hash_u64(m->keys[k]) & big.mask;
            while (big.keys[j] != ~0ull) j = (j + 1) & big.mask;
            big.keys[j] = m->keys[k];
            big.vals[j] = m->vals[k];
            big.n++;
        }
        pmap_free(m);
        *m = big;
        return pmap_slot(m, key);
    }
    m->keys[i] = key;
    m->vals[i] = 0;
    m->n++;
    return &m->vals[i];
}

/* words where a pair occurs; deduplicated because a word's changes arrive together */
typedef struct { uint64_t pair; int32_t *pos; size_t n, cap; } posvec;

typedef struct {
    posvec *v;
    size_t n, cap;
    pmap index;   /* pair -> index into v + 1 */
} where_map;

static bool where_add(where_map *w, uint64_t pair, int32_t word_idx) {
    int64_t *slot = pmap_slot(&w->index, pair);
    if (!slot) return false;
    if (!*slot) {
        if (w->n == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 1024;
            posvec *p = nx__realloc(w->v, cap * sizeof *p);
            if (!p) return false;
            w->v = p;
            w->cap = cap;
        }
        w->v[w->n] = (posvec){pair, NULL, 0, 0};
        *slot = (int64_t)++w->n;
    }
    posvec *pv = &w->v[*slot - 1];
    if (pv->n && pv->pos[pv->n - 1] == word_idx) return true;
    if (pv->n == pv->cap) {
        size_t cap = pv->cap ? pv->cap * 2 : 4;
        int32_t *p = nx__realloc(pv->pos, cap * sizeof *p);
        if (!p) return false;
        pv->pos = p;
        pv->cap = cap;
    }
    pv->pos[pv->n++] = word_idx;
    return true;
}

static void where_reset(where_map *w) {
    /* the posvec arrays were handed to heap entries or freed by the caller */
    w->n = 0;
    memset(w->index.keys, 0xFF, (w->index.mask + 1) * sizeof *w->index.keys);
    w->index.n = 0;
}

typedef struct { uint64_t pair; uint64_t count; int32_t *pos; size_t npos; } qent;

static inline bool q_before(const qent *a, const qent *b) {
    return a->count != b->count ? a->count > b->count : a->pair < b->pair;
}

typedef struct { qent *h; size_t n, cap; } queue;

static bool q_push(queue *q, qent e) {
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 4096;
        qent *p = nx__realloc(q->h, cap * sizeof *p);
        if (!p) return false;
        q->h = p;
        q->cap = cap;
    }
    size_t i = q->n++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!q_before(&e, &q->h[par])) break;
        q->h[i] = q->h[par];
        i = par;
    }
    q->h[i] = e;
    return true;
}

static qent q_pop(queue *q) {
    qent top = q->h[0], last = q->h[--q->n];
    size_t i = 0, m = q->n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= m) break;
        size_t r = l + 1, c = (r < m && q_before(&q->h[r], &q->h[l])) ? r : l;
        if (!q_before(&q->h[c], &last)) break;
        q->h[i] = q->h[c];
        i = c;
    }
    if (m) q->h[i] = last;
    return top;
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

typedef struct { uint64_t pair; int32_t change; } change;
typedef struct { change *c; size_t n, cap; bool oom; } changes;

static void ch_push(changes *cs, int32_t a, int32_t b, int32_t d) {
    if (cs->n == cs->cap) {
        size_t cap = cs->cap ? cs->cap * 2 : 64;
        change *p = nx__realloc(cs->c, cap * sizeof *p);
        if (!p) { cs->oom = true; return; }
        cs->c = p;
        cs->cap = cap;
    }
    cs->c[cs->n++] = (change){pair_key(a, b), d};
}

/* HF Word::merge: merges every non-overlapping (c1, c2) left to right. */
static void word_merge(word *w, int32_t c1, int32_t c2, int32_t rep, changes *cs) {
    int32_t i = 0;
    while (i < w->n) {
        if (w->s[i] == c1 && i + 1 < w->n && w->s[i + 1] == c2) {
            if (i > 0) {
                ch_push(cs, w->s[i - 1], c1, -1);
                ch_push(cs, w->s[i - 1], rep, 1);
            }
            w->s[i] = rep;
            memmove(w->s + i + 1, w->s + i + 2, (size_t)(w->n - i - 2) * sizeof *w->s);
            w->n--;
            if (i < w->n - 1) {
                ch_push(cs, c2, w->s[i + 1], -1);
                ch_push(cs, rep, w->s[i + 1], 1);
            }
        }
        i++;
    }
}

/* token strings (byte-level form) */
typedef struct { char **s; size_t n, cap; nx__strmap map; } vocab_t;

static int32_t vocab_add(vocab_t *v, char *s) {
    int32_t id = nx__strmap_get(&v->map, s, strlen(s));
    if (id >= 0) { nx__free(s); return id; }
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1024;
        char **p = nx__realloc(v->s, cap * sizeof *p);
        if (!p) { nx__free(s); return -1; }
        v->s = p;
        v->cap = cap;
    }
    v->s[v->n] = s;
    if ((v->map.count + 1) * 2 > v->map.mask + 1) {
        /* rebuild larger */
        nx__strmap big;
        if (nx__strmap_init(&big, v->map.count * 2 + 16) != NX_OK) return -1;
        for (size_t i = 0; i < v->n; i++) nx__strmap_put(&big, v->s[i], strlen(v->s[i]), (int32_t)i);
        nx__strmap_free(&v->map);
        v->map = big;
    }
    nx__strmap_put(&v->map, s, strlen(s), (int32_t)v->n);
    return (int32_t)v->n++;
}

static char *bytes_to_bl(const uint8_t *b, size_t n) {
    char *s = nx__malloc(2 * n + 1), *p = s;
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = nx__byte_to_cp(b[i]);
        if (cp < 0x80) *p++ = (char)cp;
        else { *p++ = (char)(0xC0 | (cp >> 6)); *p++ = (char)(0x80 | (cp & 0x3F)); }
    }
    *p = 0;
    return s;
}

static char *concat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = nx__malloc(la + lb + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

/* ---- output ------------------------------------------------------------------------------------- */

static nx_status write_json(const vocab_t *v, const uint64_t *merges, size_t nmerges, const nx_bpe_train_opts *o,
                            const char *out_path) {
    json_t *root = json_object();
    json_t *added = json_array(), *vocab = json_object(), *mer = json_array(), *model = json_object();
    if (!root || !added || !vocab || !mer || !model) goto oom;
    for (size_t i = 0; i < o->n_special; i++) {
        int32_t id = nx__strmap_get(&v->map, o->special[i], strlen(o->special[i]));
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", id, "content", o->special[i],
                                               "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                                               "special", 1));
    }
    for (size_t i = 0; i < v->n; i++) json_object_set_new(vocab, v->s[i], json_integer((json_int_t)i));
    for (size_t i = 0; i < nmerges; i++)
        json_array_append_new(mer, json_pack("[s,s]", v->s[merges[i] >> 32], v->s[merges[i] & 0xFFFFFFFFu]));
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "normalizer", json_null());
    json_object_set_new(root, "pre_tokenizer", json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                                         "trim_offsets", 1, "use_regex", 1));
    json_object_set_new(root, "post_processor", json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel",
                                                          "add_prefix_space", 1, "trim_offsets", 0, "use_regex", 1));
    json_object_set_new(root, "decoder", json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                                                   "trim_offsets", 1, "use_regex", 1));
    json_object_set_new(model, "type", json_string("BPE"));
    json_object_set_new(model, "dropout", json_null());
    json_object_set_new(model, "unk_token", json_null());
    json_object_set_new(model, "continuing_subword_prefix", json_null());
    json_object_set_new(model, "end_of_word_suffix", json_null());
    json_object_set_new(model, "fuse_unk", json_false());
    json_object_set_new(model, "byte_fallback", json_false());
    json_object_set_new(model, "ignore_merges", json_false());
    json_object_set_new(model, "vocab", vocab);
    json_object_set_new(model, "merges", mer);
    json_object_set_new(root, "model", model);
    char *text = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    if (!text) return nx__error(NX_ERR_NOMEM, "%s: out of memory serializing the tokenizer", out_path);
    nx_atomic_file af = {0};
    nx_status st = nx__atomic_open(&af, out_path);
    if (st == NX_OK) st = nx__atomic_write(&af, text, strlen(text));
    if (st == NX_OK) st = nx__atomic_write(&af, "\n", 1);
    if (st == NX_OK) st = nx__atomic_commit(&af);
    else nx__atomic_abort(&af);
    free(text);   /* jansson allocates with malloc */
    return st;
oom:
    json_decref(root); json_decref(added); json_decref(vocab); json_decref(mer); json_decref(model);
    return nx__error(NX_ERR_NOMEM, "%s: out of memory", out_path);
}

/* ---- driver ------------------------------------------------------------------------------------- */

NX_API nx_status nx_bpe_train_files(const char *const *files, size_t n_files, const nx_bpe_train_opts *o,
                                    const char *out_path) {
    if (!files || !o || !out_path || o->vocab_size <= 0 || (o->n_special && !o->special))
        return nx__error(NX_ERR_INVALID_ARG, "nx_bpe_train_files: bad argument");
    if ((size_t)o->vocab_size < 256 + o->n_special)
        return nx__error(NX_ERR_INVALID_ARG, "train: vocab size %d is smaller than 256 bytes + %zu special tokens",
                         o->vocab_size, o->n_special);
    nx_status st = NX_OK;
    nx_mapped_file *mf = nx__calloc(n_files + 1, sizeof *mf);
    count_ctx c = {0};
    nx_pool *pool = NULL;
    int nth = 1;
    word *words = NULL;
    size_t nwords = 0;
    int32_t *syms = NULL;
    vocab_t voc = {0};
    pmap counts = {0};
    where_map where = {0};
    queue q = {0};
    changes cs = {0};
    uint64_t *merges = NULL;
    size_t nmerges = 0;
    if (!mf) return nx__error(NX_ERR_NOMEM, "train: out of memory");
    for (size_t i = 0; i < n_files && st == NX_OK; i++) {
        st = nx__file_map(files[i], &mf[i]);
        c.total += mf[i].size;
    }
    if (st) goto done;

    /* 1. count words: line-aligned chunks of ~1 MiB, interleaved over the threads */
    pool = nx_pool_create(o->n_threads);
    nth = nx_pool_size(pool);
    for (size_t f = 0; f < n_files; f++) c.njobs += mf[f].size / (1 << 20) + 1;
    c.jobs = nx__calloc(c.njobs + 1, sizeof *c.jobs);
    c.maps = nx__calloc((size_t)nth, sizeof *c.maps);
    if (!c.jobs || !c.maps) { st = nx__error(NX_ERR_NOMEM, "train: out of memory"); goto done; }
    c.njobs = 0;
    for (size_t f = 0; f < n_files; f++) {
        size_t p = 0, n = mf[f].size;
        while (p < n) {
            size_t e = NX_MIN(n, p + (1 << 20));
            while (e < n && mf[f].data[e - 1] != '\n') e++;
            c.jobs[c.njobs++] = (count_job){mf[f].data, p, e, f};
            p = e;
        }
    }
    for (int t = 0; t < nth; t++)
        if (!wmap_init(&c.maps[t], 1 << 14)) { st = nx__error(NX_ERR_NOMEM, "train: out of memory"); goto done; }
    c.progress = o->progress;
    c.user = o->user;
    nx_pool_run(pool, count_fn, &c);
    if (atomic_load(&c.cancel)) { st = nx__error(NX_ERR_CANCELLED, "train: cancelled"); goto done; }
    if (atomic_load(&c.bad)) {
        const count_job *j = &c.jobs[c.bad_job];
        size_t line = 1;
        for (size_t k = 0; k < c.bad_off; k++) line += j->data[k] == '\n';
        st = nx__error(NX_ERR_FORMAT, "%s: line %zu: invalid UTF-8", files[j->file], line);
        goto done;
    }
    for (int t = 1; t < nth; t++) {
        wmap *m = &c.maps[t];
        for (size_t i = 0; i <= m->mask; i++)
            if (m->slots[i].count)
                wmap_add(&c.maps[0], (const uint8_t *)m->keys.data + m->slots[i].off, m->slots[i].len, m->slots[i].hash,
                         m->slots[i].count);
        if (m->oom) c.maps[0].oom = true;
        wmap_free(m);
    }
    if (c.maps[0].oom) { st = nx__error(NX_ERR_NOMEM, "train: out of memory counting words"); goto done; }
    if (o->progress && !o->progress("count", c.total, c.total, o->user)) {
        st = nx__error(NX_ERR_CANCELLED, "train: cancelled");
        goto done;
    }

    /* 2. vocabulary: special tokens, then the 256 byte stand-ins by code point (= byte order
     *    of the stand-ins: printable bytes keep their value, the rest come after U+00FF) */
    if (nx__strmap_init(&voc.map, 1024) != NX_OK) { st = NX_ERR_NOMEM; goto done; }
    for (size_t i = 0; i < o->n_special; i++) {
        char *s = nx__strdup(o->special[i]);
        if (!s || vocab_add(&voc, s) < 0) { st = nx__error(NX_ERR_NOMEM, "train: out of memory"); goto done; }
    }
    int32_t byte_id[256];
    {
        uint32_t order[256];
        for (int b = 0; b < 256; b++) order[b] = (nx__byte_to_cp((uint8_t)b) << 8) | (uint32_t)b;
        /* insertion sort: 256 entries */
        for (int i = 1; i < 256; i++) {
            uint32_t x = order[i];
            int k = i - 1;
            while (k >= 0 && order[k] > x) { order[k + 1] = order[k]; k--; }
            order[k + 1] = x;
        }
        for (int i = 0; i < 256; i++) {
            uint8_t b = (uint8_t)(order[i] & 0xFF);
            char *s = bytes_to_bl(&b, 1);
            if (!s || (byte_id[b] = vocab_add(&voc, s)) < 0) { st = nx__error(NX_ERR_NOMEM, "train: out of memory"); goto done; }
        }
    }

    /* 3. words and pair counts */
    {
        wmap *m = &c.maps[0];
        size_t total_syms = m->keys.len;
        words = nx__calloc(m->n + 1, sizeof *words);
        syms = nx__malloc((total_syms + 1) * sizeof *syms);
        if (!words || !syms || !pmap_init(&counts, 1 << 16) || !pmap_init(&where.index, 1 << 12)) {
            st = nx__error(NX_ERR_NOMEM, "train: out of memory");
            goto done;
        }
        size_t off = 0;
        for (size_t i = 0; i <= m->mask; i++) {
            if (!m->slots[i].count) continue;
            word *w = &words[nwords++];
            w->s = syms + off;
            w->n = (int32_t)m->slots[i].len;
            w->count = m->slots[i].count;
            const uint8_t *k = (const uint8_t *)m->keys.data + m->slots[i].off;
            for (int32_t j = 0; j < w->n; j++) w->s[j] = byte_id[k[j]];
            off += m->slots[i].len;
        }
        wmap_free(m);
    }
    for (size_t i = 0; i < nwords; i++) {
        for (int32_t j = 0; j + 1 < words[i].n; j++) {
            uint64_t pk = pair_key(words[i].s[j], words[i].s[j + 1]);
            int64_t *slot = pmap_slot(&counts, pk);
            if (!slot || !where_add(&where, pk, (int32_t)i)) { st = nx__error(NX_ERR_NOMEM, "train: out of memory"); goto done; }
            *slot += (int64_t)words[i].count;
        }
    }
    for (size_t i = 0; i < where.n; i++) {
        int64_t cnt = *pmap_slot(&counts, where.v[i].pair);
        if (cnt > 0) {
            if (!q_push(&q, (qent){where.v[i].pair, (uint64_t)cnt, where.v[i].pos, where.v[i].n})) {
                st = nx__error(NX_ERR_NOMEM, "train: out of memory");
                goto done;
            }
        } else
            nx__free(where.v[i].pos);
    }
    where_reset(&where);

    /* 4. merge */
    size_t want = (size_t)o->vocab_size - voc.n;
    merges = nx__malloc((want + 1) * sizeof *merges);
    if (!merges) { st = nx__error(NX_ERR_NOMEM, "train: out of memory"); goto done; }
    while (voc.n < (size_t)o->vocab_size && q.n) {
        qent top = q_pop(&q);
        int64_t cur = *pmap_slot(&counts, top.pair);
        if ((uint64_t)cur != top.count) {
            top.count = (uint64_t)cur;
            if (!q_push(&q, top)) { nx__free(top.pos); st = nx__error(NX_ERR_NOMEM, "train: out of memory"); goto done; }
            continue;
        }
        if (top.count < 1 || o->min_frequency > top.count) { nx__free(top.pos); break; }
        int32_t a = (int32_t)(top.pair >> 32), b = (int32_t)(top.pair & 0xFFFFFFFFu);
        char *ns = concat(voc.s[a], voc.s[b]);
        int32_t nid = ns ? vocab_add(&voc, ns) : -1;
        if (nid < 0) { nx__free(top.pos); st = nx__error(NX_ERR_NOMEM, "train: out of memory"); goto done; }
        merges[nmerges++] = top.pair;
        for (size_t k = 0; k < top.npos; k++) {
            int32_t wi = top.pos[k];
            cs.n = 0;
            word_merge(&words[wi], a, b, nid, &cs);
            for (size_t x = 0; x < cs.n; x++) {
                int64_t *slot = pmap_slot(&counts, cs.c[x].pair);
                if (!slot) { cs.oom = true; break; }
                *slot += (int64_t)cs.c[x].change * (int64_t)words[wi].count;
                if (cs.c[x].change > 0 && !where_add(&where, cs.c[x].pair, wi)) cs.oom = true;
            }
        }
        nx__free(top.pos);
        if (cs.oom) { st = nx__error(NX_ERR_NOMEM, "train: out of memory"); goto done; }
        for (size_t i = 0; i < where.n; i++) {
            int64_t cnt = *pmap_slot(&counts, where.v[i].pair);
            if (cnt > 0 && q_push(&q, (qent){where.v[i].pair, (uint64_t)cnt, where.v[i].pos, where.v[i].n})) continue;
            nx__free(where.v[i].pos);
        }
        where_reset(&where);
        if (o->progress && nmerges % 256 == 0 && !o->progress("merge", nmerges, want, o->user)) {
            st = nx__error(NX_ERR_CANCELLED, "train: cancelled");
            goto done;
        }
    }
    if (o->progress && !o->progress("merge", nmerges, want, o->user)) {
        st = nx__error(NX_ERR_CANCELLED, "train: cancelled");
        goto done;
    }
    st = write_json(&voc, merges, nmerges, o, out_path);

done:
    for (size_t i = 0; i < q.n; i++) nx__free(q.h[i].pos);
    nx__free(q.h);
    for (size_t i = 0; i < where.n; i++) nx__free(where.v[i].pos);
    nx__free(where.v);
    pmap_free(&where.index);
    pmap_free(&counts);
    nx__free(cs.c);
    nx__free(merges);
    for (size_t i = 0; i < voc.n; i++) nx__free(voc.s[i]);
    nx__free(voc.s);
    nx__strmap_free(&voc.map);
    nx__free(words);
    nx__free(syms);
    if (c.maps) for (int t = 0; t < nth; t++) wmap_free(&c.maps[t]);
    nx__free(c.maps);
    nx__free(c.jobs);
    nx_pool_free(pool);
    for (size_t i = 0; i < n_files; i++) nx__file_unmap(&mf[i]);
    nx__free(mf);
    return st;
}
