/*
 * samples.c - GPT-NeoX's training-sample order, bit-exact.
 *
 * GPT-NeoX (megatron/data/gpt2_dataset.py, _build_index_mappings) turns an indexed dataset
 * into fixed-length samples in three arrays, all driven by one numpy RandomState(seed):
 *   doc_idx     E copies of the document list, shuffled as ONE permutation (E epochs);
 *   sample_idx  S+1 (doc_idx position, token offset) boundaries, each sample taking
 *               seq_length + 1 tokens, consecutive samples sharing one boundary token
 *               (helpers.cpp build_sample_idx);
 *   shuffle_idx arange(S) shuffled with the same generator, after doc_idx.
 * Sample i is the token span from boundary shuffle_idx[i] to boundary shuffle_idx[i]+1,
 * inclusive of the end token. E is the smallest count with (E*tokens - 1) // seq >= num.
 *
 * The generator is numpy's legacy MT19937 (init_genrand seeding, standard tempering) and
 * the shuffle is numpy's _shuffle_raw: Fisher-Yates from the end with random_interval,
 * i.e. masked rejection sampling on 32-bit draws (64-bit draws only above 2^32-1). Any
 * deviation here silently changes which tokens a model trains on, so tests compare the
 * arrays against numpy itself (tools/fixtures/make_data_fixtures.py) and the spec's
 * golden values.
 */
#include "data/data.h"

#include <math.h>

/* ---- MT19937 as numpy's legacy RandomState ------------------------------------------- */

enum { MT_N = 624, MT_M = 397 };

void nx_mt19937_seed(nx_mt19937 *mt, uint32_t seed) {
    for (int i = 0; i < MT_N; i++) {
        mt->key[i] = seed;
        seed = 1812433253u * (seed ^ (seed >> 30)) + (uint32_t)i + 1u;
    }
    mt->pos = MT_N;
}

static void mt_gen(nx_mt19937 *mt) {
    const uint32_t A = 0x9908b0dfu, UP = 0x80000000u, LO = 0x7fffffffu;
    uint32_t *k = mt->key, y;
    int i;
    for (i = 0; i < MT_N - MT_M; i++) {
        y = (k[i] & UP) | (k[i + 1] & LO);
        k[i] = k[i + MT_M] ^ (y >> 1) ^ (-(y & 1u) & A);
    }
    for (; i < MT_N - 1; i++) {
        y = (k[i] & UP) | (k[i + 1] & LO);
        k[i] = k[i + (MT_M - MT_N)] ^ (y >> 1) ^ (-(y & 1u) & A);
    }
    y = (k[MT_N - 1] & UP) | (k[0] & LO);
    k[MT_N - 1] = k[MT_M - 1] ^ (y >> 1) ^ (-(y & 1u) & A);
    mt->pos = 0;
}

uint32_t nx_mt19937_next32(nx_mt19937 *mt) {
    if (mt->pos >= MT_N) mt_gen(mt);
    uint32_t y = mt->key[mt->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

uint64_t nx_mt19937_interval(nx_mt19937 *mt, uint64_t max) {
    if (max == 0) return 0;
    uint64_t mask = max, v;
    mask |= mask >> 1; mask |= mask >> 2; mask |= mask >> 4;
    mask |= mask >> 8; mask |= mask >> 16; mask |= mask >> 32;
    if (max <= 0xffffffffu) {
        while ((v = (nx_mt19937_next32(mt) & mask)) > max) {}
    } else {
        /* numpy's mt19937_next64: high word drawn first (never reached below 2^32 items). */
        for (;;) {
            uint64_t hi = nx_mt19937_next32(mt);
            uint64_t lo = nx_mt19937_next32(mt);
            v = ((hi << 32) | lo) & mask;
            if (v <= max) break;
        }
    }
    return v;
}

void nx_mt19937_shuffle(nx_mt19937 *mt, void *data, uint64_t n, size_t width) {
    NX_ASSERT(width == 4 || width == 8);
    if (n < 2) return;
    if (width == 4) {
        uint32_t *a = data;
        for (uint64_t i = n - 1; i >= 1; i--) {
            uint64_t j = nx_mt19937_interval(mt, i);
            uint32_t t = a[i]; a[i] = a[j]; a[j] = t;
        }
    } else {
        uint64_t *a = data;
        for (uint64_t i = n - 1; i >= 1; i--) {
            uint64_t j = nx_mt19937_interval(mt, i);
            uint64_t t = a[i]; a[i] = a[j]; a[j] = t;
        }
    }
}

/* ---- index mappings -------------------------------------------------------------------- */

struct nx_sample_index {
    const nx_indexed *ds;
    int64_t seq_length;
    int epochs;
    uint64_t tokens_per_epoch;
    int32_t *doc_idx;
    uint64_t n_doc_idx;
    int64_t *sample_idx;   /* 2 * (S + 1) */
    uint32_t *shuf32;      /* shuffle_idx when S < 2^32-1 (numpy uses uint32 then) */
    int64_t *shuf64;       /* otherwise int64 */
    uint64_t S;
};

/* Hard ceiling on doc_idx entries: GPT-NeoX stores them as int32. */
#define DOC_IDX_MAX ((uint64_t)INT32_MAX)

nx_status nx_sample_index_build(const nx_indexed *ds, const nx_sample_opts *o, nx_sample_index **out) {
    *out = NULL;
    uint64_t n_items = nx_indexed_n_items(ds);
    uint64_t b = o->doc_begin, e = o->doc_end ? o->doc_end : n_items;
    if (b > e || e > n_items)
        return nx__error(NX_ERR_RANGE, "sample index: documents [%llu, %llu) outside the %llu items",
                         (unsigned long long)b, (unsigned long long)e, (unsigned long long)n_items);
    if (o->seq_length <= 0 || o->seq_length > INT32_MAX - 1)
        return nx__error(NX_ERR_INVALID_ARG, "sample index: seq_length %lld (expected 1..2^31-2)",
                         (long long)o->seq_length);
    uint64_t tokens = 0;
    for (uint64_t d = b; d < e; d++) tokens += (uint64_t)nx_indexed_item_size(ds, d);
    if (tokens == 0)
        return nx__error(NX_ERR_RANGE, "sample index: documents [%llu, %llu) hold no tokens", (unsigned long long)b,
                         (unsigned long long)e);
    /* _num_epochs: smallest E with (E*tokens - 1) // seq_length >= num_samples. */
    uint64_t seq = (uint64_t)o->seq_length, total = 0;
    int epochs = 0;
    do {
        epochs++;
        total += tokens;
        if ((uint64_t)epochs * (e - b) > DOC_IDX_MAX)
            return nx__error(NX_ERR_RANGE, "sample index: %llu samples of %llu tokens need more than %d epochs of "
                             "%llu documents (doc_idx would exceed int32)", (unsigned long long)o->num_samples,
                             (unsigned long long)seq, epochs, (unsigned long long)(e - b));
    } while ((total - 1) / seq < o->num_samples);

    nx_sample_index *si = nx__calloc(1, sizeof *si);
    if (!si) return nx__error(NX_ERR_NOMEM, "sample index: out of memory");
    si->ds = ds;
    si->seq_length = o->seq_length;
    si->epochs = epochs;
    si->tokens_per_epoch = tokens;
    si->n_doc_idx = (uint64_t)epochs * (e - b);
    si->S = (total - 1) / seq;
    si->doc_idx = nx__calloc(si->n_doc_idx ? si->n_doc_idx : 1, sizeof *si->doc_idx);
    si->sample_idx = nx__calloc(2 * (si->S + 1), sizeof *si->sample_idx);
    bool wide = si->S >= 0xffffffffu - 1;
    if (wide) si->shuf64 = nx__calloc(si->S, sizeof *si->shuf64);
    else si->shuf32 = nx__calloc(si->S ? si->S : 1, sizeof *si->shuf32);
    if (!si->doc_idx || !si->sample_idx || (!si->shuf32 && !si->shuf64)) {
        nx_sample_index_free(si);
        return nx__error(NX_ERR_NOMEM, "sample index: out of memory for %llu samples", (unsigned long long)o->num_samples);
    }
    nx_mt19937 mt;
    nx_mt19937_seed(&mt, o->seed);

    /* _build_doc_idx: np.mgrid[0:E, 0:len(documents)][1] = documents, flattened, int32. */
    for (int ep = 0; ep < epochs; ep++)
        for (uint64_t d = b; d < e; d++) si->doc_idx[(uint64_t)ep * (e - b) + (d - b)] = (int32_t)d;
    nx_mt19937_shuffle(&mt, si->doc_idx, si->n_doc_idx, 4);

    /* build_sample_idx (helpers.cpp), same arithmetic in 64 bits. */
    int64_t *sx = si->sample_idx;
    uint64_t pos = 0;
    int64_t off = 0;
    sx[0] = 0;
    sx[1] = 0;
    for (uint64_t s = 1; s <= si->S; s++) {
        int64_t remaining = o->seq_length + 1;
        while (remaining != 0) {
            NX_ASSERT(pos < si->n_doc_idx);
            int64_t doc_len = (int64_t)nx_indexed_item_size(ds, (uint64_t)si->doc_idx[pos]) - off;
            remaining -= doc_len;
            if (remaining <= 0) {
                off += remaining + doc_len - 1;
                remaining = 0;
            } else {
                pos++;
                off = 0;
            }
        }
        sx[2 * s] = (int64_t)pos;
        sx[2 * s + 1] = off;
    }

    /* _build_shuffle_idx: arange(S) as uint32 (int64 from 2^32-1 up), then shuffled. */
    if (!wide) {
        for (uint64_t i = 0; i < si->S; i++) si->shuf32[i] = (uint32_t)i;
        nx_mt19937_shuffle(&mt, si->shuf32, si->S, 4);
    } else {
        for (uint64_t i = 0; i < si->S; i++) si->shuf64[i] = (int64_t)i;
        nx_mt19937_shuffle(&mt, si->shuf64, si->S, 8);
    }
    *out = si;
    return NX_OK;
}

void nx_sample_index_free(nx_sample_index *si) {
    if (!si) return;
    nx__free(si->doc_idx);
    nx__free(si->sample_idx);
    nx__free(si->shuf32);
    nx__free(si->shuf64);
    nx__free(si);
}

uint64_t nx_sample_index_count(const nx_sample_index *si) { return si->S; }
int nx_sample_index_epochs(const nx_sample_index *si) { return si->epochs; }
uint64_t nx_sample_index_tokens_per_epoch(const nx_sample_index *si) { return si->tokens_per_epoch; }
const int32_t *nx_sample_index_doc_idx(const nx_sample_index *si, uint64_t *n) { *n = si->n_doc_idx; return si->doc_idx; }
const int64_t *nx_sample_index_sample_idx(const nx_sample_index *si, uint64_t *n) { *n = si->S + 1; return si->sample_idx; }
uint64_t nx_sample_index_shuffle_at(const nx_sample_index *si, uint64_t i) {
    NX_ASSERT(i < si->S);
    return si->shuf32 ? si->shuf32[i] : (uint64_t)si->shuf64[i];
}

/* GPT2Dataset.__getitem__: the first document from its offset, whole documents between,
 * the last one up to and including its offset. */
nx_status nx_sample_index_get(const nx_sample_index *si, uint64_t i, int32_t *dst) {
    if (i >= si->S)
        return nx__error(NX_ERR_RANGE, "sample %llu out of range (%llu samples)", (unsigned long long)i,
                         (unsigned long long)si->S);
    uint64_t j = nx_sample_index_shuffle_at(si, i);
    uint64_t pf = (uint64_t)si->sample_idx[2 * j], pl = (uint64_t)si->sample_idx[2 * j + 2];
    uint64_t of = (uint64_t)si->sample_idx[2 * j + 1], ol = (uint64_t)si->sample_idx[2 * j + 3];
    uint64_t w = 0;
    if (pf == pl) {
        NX_TRY(nx_indexed_read(si->ds, (uint64_t)si->doc_idx[pf], of, ol - of + 1, dst));
        w = ol - of + 1;
    } else {
        uint64_t item = (uint64_t)si->doc_idx[pf];
        uint64_t len = (uint64_t)nx_indexed_item_size(si->ds, item);
        NX_TRY(nx_indexed_read(si->ds, item, of, len - of, dst));
        w = len - of;
        for (uint64_t p = pf + 1; p < pl; p++) {
            item = (uint64_t)si->doc_idx[p];
            len = (uint64_t)nx_indexed_item_size(si->ds, item);
            NX_TRY(nx_indexed_read(si->ds, item, 0, len, dst + w));
            w += len;
        }
        NX_TRY(nx_indexed_read(si->ds, (uint64_t)si->doc_idx[pl], 0, ol + 1, dst + w));
        w += ol + 1;
    }
    NX_ASSERT(w == (uint64_t)si->seq_length + 1);
    return NX_OK;
}
