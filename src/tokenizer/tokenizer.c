/*
 * tokenizer.c - loading (tokenizer.json, vocab.json + merges.txt, model directories), encode,
 * decode, the streaming decoder and the vocabulary accessors.
 *
 * Encode follows HF tokenizers' pipeline (tokenizer/mod.rs encode_single_sequence):
 *   1. added tokens whose "normalized" is false are matched on the raw text
 *      (leftmost-longest, added_vocabulary.rs find_matches, with lstrip/rstrip/single_word);
 *   2. every other piece is normalized, then added tokens with "normalized": true are
 *      matched on the normalized text (their content normalized the same way);
 *   3. every remaining piece goes through the ByteLevel pre-tokenizer (optional prefix space,
 *      GPT-2 split) and the BPE model;
 *   4. the post-processor adds its template ids.
 * Added tokens never reach the pre-tokenizer, which is how the 20B tokenizer's space-run
 * tokens split runs of spaces before BPE.
 */
#include "tokenizer/tokenizer_int.h"
#include "core/json.h"

#include <jansson.h>

/* ---- small helpers ------------------------------------------------------------------------ */

void nx_text_free(nx_text *t) {
    if (!t) return;
    nx__free(t->data);
    memset(t, 0, sizeof *t);
}

static nx_status text_reserve(nx_text *t, size_t extra) {
    if (t->len + extra + 1 <= t->cap) return NX_OK;
    size_t cap = t->cap ? t->cap : 64;
    while (cap < t->len + extra + 1) cap *= 2;
    char *p = nx__realloc(t->data, cap);
    if (!p) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory for %zu bytes", cap);
    t->data = p;
    t->cap = cap;
    return NX_OK;
}

static nx_status text_append(nx_text *t, const void *p, size_t n) {
    NX_TRY(text_reserve(t, n));
    if (n) memcpy(t->data + t->len, p, n);
    t->len += n;
    t->data[t->len] = 0;
    return NX_OK;
}

/* Rust char::is_whitespace (White_Space property), used by lstrip/rstrip. */
static bool is_white_space(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- trie of added tokens ------------------------------------------------------------------- */

static int32_t trie_new(nx__trie *t, uint8_t byte) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        nx__trie_node *p = nx__realloc(t->nodes, cap * sizeof *p);
        if (!p) return -1;
        t->nodes = p;
        t->cap = cap;
    }
    t->nodes[t->n] = (nx__trie_node){-1, -1, -1, byte};
    return (int32_t)t->n++;
}

static nx_status trie_add(nx__trie *t, const char *s, size_t n, int32_t token) {
    if (n == 0) return NX_OK;   /* an empty token can never match */
    if (!t->nodes && trie_new(t, 0) < 0) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory");
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t c = t->nodes[node].child;
        while (c >= 0 && t->nodes[c].byte != b) c = t->nodes[c].sibling;
        if (c < 0) {
            c = trie_new(t, b);
            if (c < 0) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory");
            t->nodes[c].sibling = t->nodes[node].child;
            t->nodes[node].child = c;
        }
        node = c;
    }
    /* the same string twice: the later token wins, like HF's map from content to id */
    t->nodes[node].token = token;
    t->first[(uint8_t)s[0]] = 1;
    t->empty = false;
    return NX_OK;
}

/* Longest token starting at s[i]: returns its length (0 if none) and the token index. */
static size_t trie_longest(const nx__trie *t, const uint8_t *s, size_t n, size_t i, int32_t *token) {
    int32_t node = 0;
    size_t best = 0;
    for (size_t k = i; k < n; k++) {
        int32_t c = t->nodes[node].child;
        while (c >= 0 && t->nodes[c].byte != s[k]) c = t->nodes[c].sibling;
        if (c < 0) break;
        node = c;
        if (t->nodes[c].token >= 0) { best = k + 1 - i; *token = t->nodes[c].token; }
    }
    return best;
}

/* ---- loading ----------------------------------------------------------------------------------- */

void nx_tokenizer_free(nx_tokenizer *tok) {
    if (!tok) return;
    if (tok->id_to_tok)
        for (int32_t i = 0; i < tok->vocab_size; i++) nx__free(tok->id_to_tok[i]);
    nx__free(tok->id_to_tok);
    nx__free(tok->tok_len);
    nx__strmap_free(&tok->vocab);
    nx__pairmap_free(&tok->merges);
    for (size_t i = 0; i < tok->n_added; i++) {
        if (tok->added[i].match != tok->added[i].content) nx__free(tok->added[i].match);
        nx__free(tok->added[i].content);
    }
    nx__free(tok->added);
    nx__strmap_free(&tok->added_map);
    nx__free(tok->is_special);
    nx__free(tok->trie_raw.nodes);
    nx__free(tok->trie_norm.nodes);
    nx__free(tok->post_pre);
    nx__free(tok->post_post);
    nx__free(tok->dec_off);
    nx__free(tok->id_str);
    nx__free(tok->id_slen);
    nx__free(tok->dec_bytes);
    for (int i = 0; i < NX_CACHE_SHARDS; i++) {
        nx__free(tok->cache[i].table);
        nx__free(tok->cache[i].arena);
    }
    nx__free(tok->name);
    nx__free(tok);
}

static nx_tokenizer *tok_alloc(const char *name) {
    nx_tokenizer *tok = nx__calloc(1, sizeof *tok);
    if (!tok) return NULL;
    tok->name = nx__strdup(name ? name : "tokenizer");
    if (!tok->name) { nx__free(tok); return NULL; }
    for (int i = 0; i < NX_CACHE_SHARDS; i++) atomic_flag_clear(&tok->cache[i].lock);
    tok->unk_id = tok->bos = tok->eos = tok->pad = -1;
    tok->use_regex = true;
    return tok;
}

typedef nx__vocab_entry vocab_entry;

#define NX_TOK_MAX_ID (1 << 24)   /* ids beyond 16M are refused: they would only waste memory */

/* Installs the model vocabulary (takes ownership of the strings). */
static nx_status set_vocab(nx_tokenizer *tok, vocab_entry *v, size_t n, const char *where) {
    int32_t max_id = -1;
    for (size_t i = 0; i < n; i++) if (v[i].id > max_id) max_id = v[i].id;
    tok->model_size = (int32_t)n;
    tok->vocab_size = max_id + 1;
    tok->id_to_tok = nx__calloc((size_t)tok->vocab_size + 1, sizeof *tok->id_to_tok);
    tok->tok_len = nx__calloc((size_t)tok->vocab_size + 1, sizeof *tok->tok_len);
    if (!tok->id_to_tok || !tok->tok_len || nx__strmap_init(&tok->vocab, n) != NX_OK) {
        for (size_t i = 0; i < n; i++) { nx__free(v[i].s); v[i].s = NULL; }
        return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
    }
    for (size_t i = 0; i < n; i++) {
        if (tok->id_to_tok[v[i].id]) {
            nx_status st = nx__error(NX_ERR_FORMAT, "%s: %s: id %d is used by both \"%s\" and \"%s\"", tok->name, where,
                                     v[i].id, tok->id_to_tok[v[i].id], v[i].s);
            for (size_t k = i; k < n; k++) nx__free(v[k].s);
            return st;
        }
        tok->id_to_tok[v[i].id] = v[i].s;
        tok->tok_len[v[i].id] = (uint32_t)v[i].len;
        v[i].s = NULL;
        if (nx__strmap_put(&tok->vocab, tok->id_to_tok[v[i].id], v[i].len, v[i].id) >= 0) {
            nx_status st = nx__error(NX_ERR_FORMAT, "%s: %s: duplicate key \"%.*s\"", tok->name, where,
                                     (int)NX_MIN(v[i].len, 60), tok->id_to_tok[v[i].id]);
            for (size_t k = i + 1; k < n; k++) nx__free(v[k].s);
            return st;
        }
    }
    for (int b = 0; b < 256; b++) {
        uint32_t cp = nx__byte_to_cp((uint8_t)b);
        char u[2];
        size_t ul;
        if (cp < 0x80) { u[0] = (char)cp; ul = 1; }
        else { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); ul = 2; }
        tok->byte_id[b] = nx__strmap_get(&tok->vocab, u, ul);
    }
    return NX_OK;
}

/* Adds one merge "a b" given as two strings; rank is its index. */
static nx_status add_merge(nx_tokenizer *tok, const char *a, size_t la, const char *b, size_t lb, size_t rank,
                           const char *where) {
    int32_t ia = nx__strmap_get(&tok->vocab, a, la), ib = nx__strmap_get(&tok->vocab, b, lb);
    if (ia < 0 || ib < 0)
        return nx__error(NX_ERR_FORMAT, "%s: %s[%zu]: token \"%.*s\" is not in the vocabulary", tok->name, where, rank,
                         (int)(ia < 0 ? la : lb), ia < 0 ? a : b);
    char stack[256], *ab = la + lb <= sizeof stack ? stack : nx__malloc(la + lb);
    if (!ab) return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
    memcpy(ab, a, la);
    memcpy(ab + la, b, lb);
    int32_t id = nx__strmap_get(&tok->vocab, ab, la + lb);
    if (ab != stack) nx__free(ab);
    if (id < 0)
        return nx__error(NX_ERR_FORMAT, "%s: %s[%zu]: merged token \"%.*s%.*s\" is not in the vocabulary", tok->name,
                         where, rank, (int)la, a, (int)lb, b);
    nx__pairmap_put(&tok->merges, ia, ib, (int32_t)rank, id);
    return NX_OK;
}

/* Parses a merge line "a b" (exactly one space). */
static nx_status split_merge(nx_tokenizer *tok, const char *s, size_t n, size_t rank, const char *where,
                             size_t *la, const char **b, size_t *lb) {
    const char *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
        return nx__error(NX_ERR_FORMAT, "%s: %s[%zu]: expected two tokens separated by one space, got \"%.*s\"",
                         tok->name, where, rank, (int)NX_MIN(n, 80), s);
    *la = (size_t)(sp - s);
    *b = sp + 1;
    *lb = n - *la - 1;
    return NX_OK;
}

/* Finishes the id tables once model and added tokens are known. */
/* HF ignores the "id" written for an added token and assigns one the way
 * AddedVocabulary::add_tokens does: the id of the same content already added or in the model
 * vocabulary, else the next free id after the model (model size = number of entries). A
 * differing id in the file is only worth a warning there, so it is here. */
static void assign_added_ids(nx_tokenizer *tok) {
    int32_t max_added = -1;
    for (size_t i = 0; i < tok->n_added; i++) {
        nx__added *a = &tok->added[i];
        a->ignored = a->len == 0;
        for (size_t k = 0; k < i && !a->ignored; k++) {
            const nx__added *b = &tok->added[k];
            a->ignored = !b->ignored && b->len == a->len && !memcmp(b->content, a->content, a->len) &&
                         b->special == a->special && b->lstrip == a->lstrip && b->rstrip == a->rstrip &&
                         b->single_word == a->single_word && b->normalized == a->normalized;
        }
        if (a->ignored) continue;
        int32_t id = nx__strmap_get(&tok->added_map, a->content, a->len);
        if (id < 0) id = nx__strmap_get(&tok->vocab, a->content, a->len);
        if (id < 0) {
            if (max_added < 0) id = tok->model_size;
            else id = (max_added >= tok->model_size || tok->model_size == 0) ? max_added + 1 : tok->model_size;
        }
        if (id != a->id)
            nx__log(NX_LOG_WARN, "%s: added token \"%.*s\" has id %d in the file but gets id %d (as in HF tokenizers)",
                    tok->name, (int)NX_MIN(a->len, 60), a->content, a->id, id);
        a->id = id;
        if (id > max_added) max_added = id;
        nx__strmap_put(&tok->added_map, a->content, a->len, id);
    }
}

/* Finishes the id tables once model and added tokens are known. */
static nx_status finish(nx_tokenizer *tok) {
    NX_TRY(nx__strmap_init(&tok->added_map, tok->n_added));
    assign_added_ids(tok);
    int32_t vs = tok->vocab_size;
    for (size_t i = 0; i < tok->n_added; i++)
        if (!tok->added[i].ignored && tok->added[i].id + 1 > vs) vs = tok->added[i].id + 1;
    if (vs > tok->vocab_size) {
        char **p = nx__realloc(tok->id_to_tok, (size_t)vs * sizeof *p);
        if (!p) return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
        tok->id_to_tok = p;
        uint32_t *q = nx__realloc(tok->tok_len, (size_t)vs * sizeof *q);
        if (!q) return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
        tok->tok_len = q;
        for (int32_t i = tok->vocab_size; i < vs; i++) { p[i] = NULL; q[i] = 0; }
        tok->vocab_size = vs;
    }
    tok->is_special = nx__calloc((size_t)vs + 1, sizeof *tok->is_special);
    if (!tok->is_special) return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
    for (size_t i = 0; i < tok->n_added; i++) {
        nx__added *a = &tok->added[i];
        a->match = a->content;
        a->match_len = a->len;
        if (a->ignored) continue;
        /* special is a property of the content (HF's special_tokens_set) */
        if (a->special) tok->is_special[a->id] = true;
        /* normalized tokens are matched in their normalized form */
        if (a->normalized && tok->n_norm) {
            nx_buf nb = {0};
            nx_status st = nx__normalize(tok->norm_ops, tok->n_norm, a->content, a->len, &nb);
            if (st) { nx__buf_free(&nb); return st; }
            a->match = nb.data;
            a->match_len = nb.len;
        }
        NX_TRY(trie_add(a->normalized ? &tok->trie_norm : &tok->trie_raw, a->match, a->match_len, (int32_t)i));
    }
    /* id -> string: added tokens override the model's (HF looks them up first) */
    tok->id_str = nx__calloc((size_t)vs + 1, sizeof *tok->id_str);
    tok->id_slen = nx__calloc((size_t)vs + 1, sizeof *tok->id_slen);
    tok->dec_off = nx__calloc((size_t)vs + 1, sizeof *tok->dec_off);
    if (!tok->id_str || !tok->id_slen || !tok->dec_off) return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
    for (int32_t id = 0; id < tok->vocab_size; id++) { tok->id_str[id] = tok->id_to_tok[id]; tok->id_slen[id] = tok->tok_len[id]; }
    for (size_t i = 0; i < tok->n_added; i++) {
        if (tok->added[i].ignored) continue;
        tok->id_str[tok->added[i].id] = tok->added[i].content;
        tok->id_slen[tok->added[i].id] = (uint32_t)tok->added[i].len;
    }
    /* decoded bytes of every id, computed once: decode is then a copy per id */
    nx_buf db = {0};
    for (int32_t id = 0; id < vs; id++) {
        tok->dec_off[id] = (uint32_t)db.len;
        const char *t = tok->id_str[id];
        if (!t) continue;
        size_t tl = tok->id_slen[id];
        if (!tok->dec_byte_level) { nx__buf_append(&db, t, tl); continue; }
        /* HF ByteLevel decoder: a token whose every character is a byte stand-in becomes those
         * bytes; any other token (an added "<|endoftext|>" is all stand-ins, a run of real
         * spaces is not) is kept as its UTF-8 text */
        size_t start = db.len, k = 0;
        bool all = true;
        while (k < tl) {
            uint32_t cp;
            size_t l = nx__utf8_decode((const uint8_t *)t + k, tl - k, &cp);
            int b = l ? nx__cp_to_byte(cp) : -1;
            if (b < 0) { all = false; break; }
            uint8_t bb = (uint8_t)b;
            nx__buf_append(&db, &bb, 1);
            k += l;
        }
        if (!all) { db.len = start; nx__buf_append(&db, t, tl); }
    }
    tok->dec_off[vs] = (uint32_t)db.len;
    nx__buf_append(&db, "", 0);
    if (db.oom) { nx__buf_free(&db); return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name); }
    tok->dec_bytes = db.data;
    return NX_OK;
}

/* Looks up special ids by conventional names when no config file named them. */
static void default_specials(nx_tokenizer *tok) {
    static const char *eos[] = {"<|endoftext|>", "</s>", "<eos>", "<|eos|>"};
    static const char *bos[] = {"<|endoftext|>", "<s>", "<bos>", "<|startoftext|>"};
    static const char *pad[] = {"<|padding|>", "<pad>", "[PAD]", "<|pad|>"};
    for (size_t i = 0; tok->eos < 0 && i < NX_ARRAY_LEN(eos); i++) tok->eos = nx_tokenizer_token_to_id(tok, eos[i]);
    for (size_t i = 0; tok->bos < 0 && i < NX_ARRAY_LEN(bos); i++) tok->bos = nx_tokenizer_token_to_id(tok, bos[i]);
    for (size_t i = 0; tok->pad < 0 && i < NX_ARRAY_LEN(pad); i++) tok->pad = nx_tokenizer_token_to_id(tok, pad[i]);
}

/* ---- tokenizer.json --------------------------------------------------------------------------- */

static const char *jtype(json_t *j) {
    json_t *t = json_is_object(j) ? json_object_get(j, "type") : NULL;
    return json_is_string(t) ? json_string_value(t) : NULL;
}

static bool jbool(json_t *obj, const char *key, bool def) {
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static nx_status parse_normalizer(nx_tokenizer *tok, json_t *n, int depth) {
    if (!n || json_is_null(n)) return NX_OK;
    const char *t = jtype(n);
    if (!t) return nx__error(NX_ERR_FORMAT, "%s: normalizer: expected an object with a \"type\"", tok->name);
    uint8_t op = 0;
    if (!strcmp(t, "NFC")) op = NX_NORM_NFC;
    else if (!strcmp(t, "NFD")) op = NX_NORM_NFD;
    else if (!strcmp(t, "NFKC")) op = NX_NORM_NFKC;
    else if (!strcmp(t, "NFKD")) op = NX_NORM_NFKD;
    else if (!strcmp(t, "Lowercase")) op = NX_NORM_LOWER;
    else if (!strcmp(t, "Sequence")) {
        json_t *arr = json_object_get(n, "normalizers");
        if (!json_is_array(arr)) return nx__error(NX_ERR_FORMAT, "%s: normalizer.normalizers: expected an array", tok->name);
        if (depth > 8) return nx__error(NX_ERR_FORMAT, "%s: normalizer: Sequence nested too deeply", tok->name);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) NX_TRY(parse_normalizer(tok, x, depth + 1));
        return NX_OK;
    } else
        return nx__error(NX_ERR_UNSUPPORTED,
                         "%s: normalizer type \"%s\" is not supported (NFC, NFD, NFKC, NFKD, Lowercase, Sequence)",
                         tok->name, t);
    if (tok->n_norm >= (int)sizeof tok->norm_ops)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: normalizer: more than 16 steps", tok->name);
    tok->norm_ops[tok->n_norm++] = op;
    return NX_OK;
}

static nx_status parse_pretok(nx_tokenizer *tok, json_t *p, int depth) {
    if (!p || json_is_null(p)) return NX_OK;
    const char *t = jtype(p);
    if (!t) return nx__error(NX_ERR_FORMAT, "%s: pre_tokenizer: expected an object with a \"type\"", tok->name);
    if (!strcmp(t, "ByteLevel")) {
        if (tok->has_byte_level)
            return nx__error(NX_ERR_UNSUPPORTED, "%s: pre_tokenizer: more than one ByteLevel", tok->name);
        tok->has_byte_level = true;
        tok->add_prefix_space = jbool(p, "add_prefix_space", true);
        tok->use_regex = jbool(p, "use_regex", true);
        return NX_OK;
    }
    if (!strcmp(t, "Sequence") && depth < 8) {
        json_t *arr = json_object_get(p, "pretokenizers");
        if (!json_is_array(arr))
            return nx__error(NX_ERR_FORMAT, "%s: pre_tokenizer.pretokenizers: expected an array", tok->name);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) NX_TRY(parse_pretok(tok, x, depth + 1));
        return NX_OK;
    }
    return nx__error(NX_ERR_UNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported (ByteLevel)", tok->name, t);
}

static nx_status parse_post(nx_tokenizer *tok, json_t *p, int depth) {
    if (!p || json_is_null(p)) return NX_OK;
    const char *t = jtype(p);
    if (!t) return nx__error(NX_ERR_FORMAT, "%s: post_processor: expected an object with a \"type\"", tok->name);
    if (!strcmp(t, "ByteLevel")) return NX_OK;   /* only trims offsets: no effect on ids */
    if (!strcmp(t, "Sequence") && depth < 8) {
        json_t *arr = json_object_get(p, "processors");
        if (!json_is_array(arr))
            return nx__error(NX_ERR_FORMAT, "%s: post_processor.processors: expected an array", tok->name);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) NX_TRY(parse_post(tok, x, depth + 1));
        return NX_OK;
    }
    if (strcmp(t, "TemplateProcessing") != 0)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: post_processor type \"%s\" is not supported", tok->name, t);
    if (tok->post == NX_POST_TEMPLATE)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: post_processor: more than one TemplateProcessing", tok->name);
    tok->post = NX_POST_TEMPLATE;
    json_t *single = json_object_get(p, "single"), *sp = json_object_get(p, "special_tokens");
    if (!json_is_array(single))
        return nx__error(NX_ERR_FORMAT, "%s: post_processor.single: expected an array", tok->name);
    bool seen_seq = false;
    size_t i;
    json_t *x;
    json_array_foreach(single, i, x) {
        json_t *st = json_object_get(x, "SpecialToken"), *sq = json_object_get(x, "Sequence");
        if (json_is_object(sq)) {
            if (seen_seq)
                return nx__error(NX_ERR_FORMAT, "%s: post_processor.single[%zu]: the sequence appears twice", tok->name, i);
            seen_seq = true;
            continue;
        }
        json_t *name = json_is_object(st) ? json_object_get(st, "id") : NULL;
        if (!json_is_string(name))
            return nx__error(NX_ERR_FORMAT, "%s: post_processor.single[%zu]: expected SpecialToken or Sequence",
                             tok->name, i);
        json_t *def = json_is_object(sp) ? json_object_get(sp, json_string_value(name)) : NULL;
        json_t *ids = json_is_object(def) ? json_object_get(def, "ids") : NULL;
        if (!json_is_array(ids))
            return nx__error(NX_ERR_FORMAT, "%s: post_processor.special_tokens: \"%s\" is missing or has no ids",
                             tok->name, json_string_value(name));
        size_t k;
        json_t *idv;
        json_array_foreach(ids, k, idv) {
            json_int_t v = json_is_integer(idv) ? json_integer_value(idv) : -1;
            if (v < 0 || v >= NX_TOK_MAX_ID)
                return nx__error(NX_ERR_RANGE, "%s: post_processor.special_tokens.%s.ids[%zu]: expected an id in [0, %d)",
                                 tok->name, json_string_value(name), k, NX_TOK_MAX_ID);
            int32_t **arr = seen_seq ? &tok->post_post : &tok->post_pre;
            size_t *cnt = seen_seq ? &tok->n_post_post : &tok->n_post_pre;
            int32_t *np = nx__realloc(*arr, (*cnt + 1) * sizeof *np);
            if (!np) return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
            np[(*cnt)++] = (int32_t)v;
            *arr = np;
        }
    }
    if (!seen_seq) return nx__error(NX_ERR_FORMAT, "%s: post_processor.single: no Sequence entry", tok->name);
    return NX_OK;
}

static nx_status parse_decoder(nx_tokenizer *tok, json_t *d, int depth) {
    if (!d || json_is_null(d)) return NX_OK;
    const char *t = jtype(d);
    if (!t) return nx__error(NX_ERR_FORMAT, "%s: decoder: expected an object with a \"type\"", tok->name);
    if (!strcmp(t, "ByteLevel")) { tok->dec_byte_level = true; return NX_OK; }
    if (!strcmp(t, "Sequence") && depth < 8) {
        json_t *arr = json_object_get(d, "decoders");
        if (!json_is_array(arr)) return nx__error(NX_ERR_FORMAT, "%s: decoder.decoders: expected an array", tok->name);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) NX_TRY(parse_decoder(tok, x, depth + 1));
        return NX_OK;
    }
    return nx__error(NX_ERR_UNSUPPORTED, "%s: decoder type \"%s\" is not supported (ByteLevel)", tok->name, t);
}

static nx_status parse_added(nx_tokenizer *tok, json_t *arr) {
    if (!arr || json_is_null(arr)) return NX_OK;
    if (!json_is_array(arr)) return nx__error(NX_ERR_FORMAT, "%s: added_tokens: expected an array", tok->name);
    size_t n = json_array_size(arr);
    tok->added = nx__calloc(n + 1, sizeof *tok->added);
    if (!tok->added) return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) {
        json_t *id = json_object_get(x, "id"), *content = json_object_get(x, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= NX_TOK_MAX_ID)
            return nx__error(NX_ERR_RANGE, "%s: added_tokens[%zu].id: expected an integer in [0, %d)", tok->name, i,
                             NX_TOK_MAX_ID);
        if (!json_is_string(content))
            return nx__error(NX_ERR_FORMAT, "%s: added_tokens[%zu].content: expected a string", tok->name, i);
        nx__added *a = &tok->added[tok->n_added];
        a->len = json_string_length(content);
        a->content = nx__strndup(json_string_value(content), a->len);
        if (!a->content) return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
        tok->n_added++;
        a->id = (int32_t)json_integer_value(id);
        a->special = jbool(x, "special", false);
        a->lstrip = jbool(x, "lstrip", false);
        a->rstrip = jbool(x, "rstrip", false);
        a->single_word = jbool(x, "single_word", false);
        a->normalized = jbool(x, "normalized", !a->special);
    }
    return NX_OK;
}

static nx_status parse_unk(nx_tokenizer *tok, json_t *m) {
    json_t *unk = json_object_get(m, "unk_token");
    if (json_is_string(unk)) {
        tok->unk_id = nx__strmap_get(&tok->vocab, json_string_value(unk), json_string_length(unk));
        if (tok->unk_id < 0)
            return nx__error(NX_ERR_FORMAT, "%s: model.unk_token \"%s\" is not in the vocabulary", tok->name,
                             json_string_value(unk));
    }
    return NX_OK;
}

static nx_status parse_model(nx_tokenizer *tok, json_t *m, nx__fast_model *fm) {
    if (!json_is_object(m)) return nx__error(NX_ERR_FORMAT, "%s: model: expected an object", tok->name);
    const char *t = jtype(m);
    if (t && strcmp(t, "BPE") != 0)
        return nx__error(NX_ERR_UNSUPPORTED, "%s: model.type \"%s\" is not supported (only BPE)", tok->name, t);
    json_t *dropout = json_object_get(m, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return nx__error(NX_ERR_UNSUPPORTED, "%s: model.dropout: BPE dropout is not supported", tok->name);
    static const char *strs[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t k = 0; k < 2; k++) {
        json_t *v = json_object_get(m, strs[k]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return nx__error(NX_ERR_UNSUPPORTED, "%s: model.%s is not supported by byte-level BPE", tok->name, strs[k]);
    }
    if (jbool(m, "byte_fallback", false))
        return nx__error(NX_ERR_UNSUPPORTED, "%s: model.byte_fallback is not supported", tok->name);
    tok->fuse_unk = jbool(m, "fuse_unk", false);
    tok->ignore_merges = jbool(m, "ignore_merges", false);

    if (fm) {
        /* vocab and merges were decoded by json_fast.c; the strings move to the tokenizer */
        nx_status st = set_vocab(tok, fm->vocab, fm->n_vocab, "model.vocab");
        fm->n_vocab = 0;
        NX_TRY(st);
        NX_TRY(parse_unk(tok, m));
        NX_TRY(nx__pairmap_init(&tok->merges, fm->n_merges));
        const char *A = fm->arena.data;
        for (size_t i = 0; i < fm->n_merges; i++) {
            if (fm->merges[i].pair) {
                NX_TRY(add_merge(tok, A + fm->merges[i].a, fm->merges[i].la, A + fm->merges[i].b, fm->merges[i].lb, i,
                                 "model.merges"));
            } else {
                size_t la = 0, lb = 0;
                const char *b = NULL;
                NX_TRY(split_merge(tok, A + fm->merges[i].a, fm->merges[i].la, i, "model.merges", &la, &b, &lb));
                NX_TRY(add_merge(tok, A + fm->merges[i].a, la, b, lb, i, "model.merges"));
            }
        }
        return NX_OK;
    }
    json_t *vocab = json_object_get(m, "vocab");
    if (!json_is_object(vocab)) return nx__error(NX_ERR_FORMAT, "%s: model.vocab: expected an object", tok->name);
    size_t n = json_object_size(vocab);
    vocab_entry *v = nx__calloc(n + 1, sizeof *v);
    if (!v) return nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name);
    size_t k = 0;
    const char *key;
    json_t *val;
    nx_status st = NX_OK;
    void *it = json_object_iter(vocab);
    for (; it; it = json_object_iter_next(vocab, it)) {
        key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        val = json_object_iter_value(it);
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= NX_TOK_MAX_ID) {
            st = nx__error(NX_ERR_RANGE, "%s: model.vocab[\"%.*s\"]: expected an id in [0, %d)", tok->name,
                           (int)NX_MIN(klen, 60), key, NX_TOK_MAX_ID);
            break;
        }
        v[k].s = nx__strndup(key, klen);
        if (!v[k].s) { st = nx__error(NX_ERR_NOMEM, "%s: out of memory", tok->name); break; }
        v[k].len = klen;
        v[k].id = (int32_t)json_integer_value(val);
        k++;
    }
    if (st == NX_OK) st = set_vocab(tok, v, k, "model.vocab");
    else for (size_t i = 0; i < k; i++) nx__free(v[i].s);
    nx__free(v);
    NX_TRY(st);

    NX_TRY(parse_unk(tok, m));

    json_t *merges = json_object_get(m, "merges");
    if (!merges || json_is_null(merges)) merges = NULL;
    else if (!json_is_array(merges)) return nx__error(NX_ERR_FORMAT, "%s: model.merges: expected an array", tok->name);
    NX_TRY(nx__pairmap_init(&tok->merges, merges ? json_array_size(merges) : 0));
    if (!merges) return NX_OK;
    size_t i;
    json_t *x;
    json_array_foreach(merges, i, x) {
        if (json_is_string(x)) {
            size_t la = 0, lb = 0;
            const char *b = NULL;
            NX_TRY(split_merge(tok, json_string_value(x), json_string_length(x), i, "model.merges", &la, &b, &lb));
            NX_TRY(add_merge(tok, json_string_value(x), la, b, lb, i, "model.merges"));
        } else if (json_is_array(x) && json_array_size(x) == 2 && json_is_string(json_array_get(x, 0)) &&
                   json_is_string(json_array_get(x, 1))) {
            json_t *a = json_array_get(x, 0), *b = json_array_get(x, 1);
            NX_TRY(add_merge(tok, json_string_value(a), json_string_length(a), json_string_value(b),
                             json_string_length(b), i, "model.merges"));
        } else
            return nx__error(NX_ERR_FORMAT, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", tok->name, i);
    }
    return NX_OK;
}

static nx_status load_json_obj(nx_tokenizer *tok, json_t *root, nx__fast_model *fm) {
    if (!json_is_object(root)) return nx__error(NX_ERR_FORMAT, "%s: expected a JSON object at the top", tok->name);
    json_t *model = json_object_get(root, "model");
    if (!model) return nx__error(NX_ERR_FORMAT, "%s: no \"model\" field (is this a tokenizer.json?)", tok->name);
    NX_TRY(parse_normalizer(tok, json_object_get(root, "normalizer"), 0));
    NX_TRY(parse_pretok(tok, json_object_get(root, "pre_tokenizer"), 0));
    NX_TRY(parse_post(tok, json_object_get(root, "post_processor"), 0));
    NX_TRY(parse_decoder(tok, json_object_get(root, "decoder"), 0));
    NX_TRY(parse_model(tok, model, fm));
    NX_TRY(parse_added(tok, json_object_get(root, "added_tokens")));
    return finish(tok);
}

static nx_status parse_json(const char *name, const char *data, size_t len, json_t **out) {
    json_error_t err;
    /* duplicate keys are refused: HF (serde) refuses them in every struct, and a vocabulary
     * listing a token twice is a broken file */
    *out = nx__json_loadb(data, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &err);
    if (!*out) {
        NX_TRY(nx__json_oom(name));
        return nx__error(NX_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", name, err.line, err.column, err.text);
    }
    return NX_OK;
}

NX_API nx_status nx_tokenizer_load_json(const char *json, size_t len, const char *name, nx_tokenizer **out) {
    if (!out || (!json && len)) return nx__error(NX_ERR_INVALID_ARG, "nx_tokenizer_load_json: NULL argument");
    *out = NULL;
    nx_tokenizer *tok = tok_alloc(name);
    if (!tok) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory");
    json_t *root = NULL;
    nx_status st;
    nx__fast_model fm;
    char *rest = NULL;
    /* Decode vocab and merges directly and let jansson parse the rest, with the two spans
     * blanked out to "{}" / "[]". Anything unusual falls back to jansson alone. */
    bool fast = json && nx__fast_model_parse(json, len, &fm);
    if (fast && !(rest = nx__malloc(len))) { nx__fast_model_free(&fm); fast = false; }
    if (fast) {
        memcpy(rest, json, len);
        memset(rest + fm.vocab_begin, ' ', fm.vocab_end - fm.vocab_begin);
        memcpy(rest + fm.vocab_begin, "{}", 2);
        if (fm.has_merges) {
            memset(rest + fm.merges_begin, ' ', fm.merges_end - fm.merges_begin);
            memcpy(rest + fm.merges_begin, "[]", 2);
        }
        st = parse_json(tok->name, rest, len, &root);
        if (st == NX_OK) st = load_json_obj(tok, root, &fm);
        nx__fast_model_free(&fm);
        nx__free(rest);
    } else {
        st = parse_json(tok->name, json ? json : "", len, &root);
        if (st == NX_OK) st = load_json_obj(tok, root, NULL);
    }
    json_decref(root);
    if (st) { nx_tokenizer_free(tok); return st; }
    default_specials(tok);
    *out = tok;
    return NX_OK;
}

/* ---- vocab.json + merges.txt -------------------------------------------------------------------- */

static nx_status load_gpt2_files(const char *vocab_path, const char *merges_path, nx_tokenizer **out) {
    nx_tokenizer *tok = tok_alloc(vocab_path);
    if (!tok) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory");
    nx_mapped_file vf = {0}, mf = {0};
    json_t *root = NULL;
    vocab_entry *v = NULL;
    size_t k = 0;
    nx_status st = nx__file_map(vocab_path, &vf);
    if (st == NX_OK) st = nx__file_map(merges_path, &mf);
    if (st == NX_OK) st = parse_json(vocab_path, (const char *)vf.data, vf.size, &root);
    if (st == NX_OK && !json_is_object(root))
        st = nx__error(NX_ERR_FORMAT, "%s: expected a JSON object of token -> id", vocab_path);
    if (st == NX_OK) {
        v = nx__calloc(json_object_size(root) + 1, sizeof *v);
        if (!v) st = nx__error(NX_ERR_NOMEM, "%s: out of memory", vocab_path);
    }
    for (void *it = st ? NULL : json_object_iter(root); it; it = json_object_iter_next(root, it)) {
        json_t *val = json_object_iter_value(it);
        size_t klen = json_object_iter_key_len(it);
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= NX_TOK_MAX_ID) {
            st = nx__error(NX_ERR_RANGE, "%s: token \"%.*s\": expected an id in [0, %d)", vocab_path,
                           (int)NX_MIN(klen, 60), json_object_iter_key(it), NX_TOK_MAX_ID);
            break;
        }
        v[k].s = nx__strndup(json_object_iter_key(it), klen);
        if (!v[k].s) { st = nx__error(NX_ERR_NOMEM, "%s: out of memory", vocab_path); break; }
        v[k].len = klen;
        v[k].id = (int32_t)json_integer_value(val);
        k++;
    }
    if (st == NX_OK) { st = set_vocab(tok, v, k, "vocab"); k = 0; }
    for (size_t i = 0; i < k; i++) nx__free(v[i].s);
    nx__free(v);
    json_decref(root);
    if (st == NX_OK) {
        /* merges.txt: an optional "#version" line, then "a b" per line (HF skips empty lines) */
        nx__free(tok->name);
        tok->name = nx__strdup(merges_path);
        size_t nlines = 0;
        for (size_t i = 0; i < mf.size; i++) nlines += mf.data[i] == '\n';
        st = tok->name ? nx__pairmap_init(&tok->merges, nlines + 1) : nx__error(NX_ERR_NOMEM, "out of memory");
        const char *p = (const char *)mf.data, *end = p + mf.size;
        size_t rank = 0, line = 0;
        while (st == NX_OK && p && p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *e = nl ? nl : end;
            size_t n = (size_t)(e - p);
            if (n && p[n - 1] == '\r') n--;
            line++;
            if (!(line == 1 && n >= 8 && memcmp(p, "#version", 8) == 0) && n > 0) {
                size_t la = 0, lb = 0;
                const char *b = NULL;
                st = split_merge(tok, p, n, rank, "line", &la, &b, &lb);
                if (st == NX_OK) st = add_merge(tok, p, la, b, lb, rank, "line");
                rank++;
            }
            p = nl ? nl + 1 : NULL;
        }
    }
    nx__file_unmap(&vf);
    nx__file_unmap(&mf);
    if (st == NX_OK) {
        tok->has_byte_level = true;
        tok->add_prefix_space = false;
        tok->dec_byte_level = true;
        int32_t eot = nx__strmap_get(&tok->vocab, "<|endoftext|>", 13);
        if (eot >= 0) {
            tok->added = nx__calloc(1, sizeof *tok->added);
            char *c = nx__strdup("<|endoftext|>");
            if (!tok->added || !c) { nx__free(c); st = nx__error(NX_ERR_NOMEM, "out of memory"); }
            else {
                tok->added[0] = (nx__added){.content = c, .len = 13, .id = eot, .special = true, .normalized = false};
                tok->n_added = 1;
            }
        }
    }
    if (st == NX_OK) st = finish(tok);
    if (st) { nx_tokenizer_free(tok); return st; }
    *out = tok;
    return NX_OK;
}

/* ---- special_tokens_map.json / tokenizer_config.json -------------------------------------------- */

static int32_t special_from(nx_tokenizer *tok, json_t *v) {
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return -1;
    return nx_tokenizer_token_to_id(tok, json_string_value(v));
}

static void read_special_config(nx_tokenizer *tok, const char *dir) {
    static const char *files[] = {"special_tokens_map.json", "tokenizer_config.json"};
    for (size_t f = 0; f < 2; f++) {
        char *p = nx__path_join(dir, files[f]);
        if (!p) return;
        json_error_t err;
        json_t *root = nx__file_exists(p) ? json_load_file(p, 0, &err) : NULL;
        nx__free(p);
        if (!json_is_object(root)) { json_decref(root); continue; }
        int32_t id;
        if (tok->eos < 0 && (id = special_from(tok, json_object_get(root, "eos_token"))) >= 0) tok->eos = id;
        if (tok->bos < 0 && (id = special_from(tok, json_object_get(root, "bos_token"))) >= 0) tok->bos = id;
        if (tok->pad < 0 && (id = special_from(tok, json_object_get(root, "pad_token"))) >= 0) tok->pad = id;
        json_decref(root);
    }
}

static nx_status load_file_json(const char *path, nx_tokenizer **out) {
    nx_mapped_file mf = {0};
    NX_TRY(nx__file_map(path, &mf));
    nx_status st = nx_tokenizer_load_json((const char *)mf.data, mf.size, path, out);
    nx__file_unmap(&mf);
    return st;
}

NX_API nx_status nx_tokenizer_load(const char *path, nx_tokenizer **out) {
    if (!path || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_tokenizer_load: NULL argument");
    *out = NULL;
    nx_status st;
    char *dir = NULL;
    if (nx__dir_exists(path)) {
        dir = nx__strdup(path);
        char *tj = nx__path_join(path, "tokenizer.json");
        char *vj = nx__path_join(path, "vocab.json"), *mt = nx__path_join(path, "merges.txt");
        char *ej = nx__path_join(path, "encoder.json"), *vb = nx__path_join(path, "vocab.bpe");
        if (!dir || !tj || !vj || !mt || !ej || !vb) st = nx__error(NX_ERR_NOMEM, "out of memory");
        else if (nx__file_exists(tj)) st = load_file_json(tj, out);
        else if (nx__file_exists(vj) && nx__file_exists(mt)) st = load_gpt2_files(vj, mt, out);
        else if (nx__file_exists(ej) && nx__file_exists(vb)) st = load_gpt2_files(ej, vb, out);
        else
            st = nx__error(NX_ERR_NOT_FOUND,
                           "%s: no tokenizer.json, vocab.json + merges.txt or encoder.json + vocab.bpe in this directory",
                           path);
        nx__free(tj); nx__free(vj); nx__free(mt); nx__free(ej); nx__free(vb);
    } else {
        const char *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : path;
        dir = slash ? nx__strndup(path, (size_t)(slash - path)) : nx__strdup(".");
        if (!dir) return nx__error(NX_ERR_NOMEM, "out of memory");
        if (!strcmp(base, "vocab.json") || !strcmp(base, "encoder.json")) {
            char *m = nx__path_join(dir, !strcmp(base, "vocab.json") ? "merges.txt" : "vocab.bpe");
            st = m ? load_gpt2_files(path, m, out) : nx__error(NX_ERR_NOMEM, "out of memory");
            nx__free(m);
        } else if (!nx__file_exists(path))
            st = nx__error(NX_ERR_NOT_FOUND, "%s: no such file or directory", path);
        else
            st = load_file_json(path, out);
    }
    if (st == NX_OK && dir) {
        read_special_config(*out, dir);
        default_specials(*out);
    }
    nx__free(dir);
    return st;
}

/* ---- accessors ------------------------------------------------------------------------------------- */

NX_API int32_t nx_tokenizer_vocab_size(const nx_tokenizer *tok) { return tok ? tok->vocab_size : 0; }

NX_API const char *nx_tokenizer_id_to_token(const nx_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->vocab_size) return NULL;
    return tok->id_str[id];
}

NX_API int32_t nx_tokenizer_token_to_id(const nx_tokenizer *tok, const char *token) {
    if (!tok || !token) return -1;
    size_t n = strlen(token);
    int32_t id = nx__strmap_get(&tok->added_map, token, n);
    return id >= 0 ? id : nx__strmap_get(&tok->vocab, token, n);
}

NX_API bool nx_tokenizer_is_special(const nx_tokenizer *tok, int32_t id) {
    return tok && id >= 0 && id < tok->vocab_size && tok->is_special[id];
}
NX_API int32_t nx_tokenizer_eos_id(const nx_tokenizer *tok) { return tok ? tok->eos : -1; }
NX_API int32_t nx_tokenizer_bos_id(const nx_tokenizer *tok) { return tok ? tok->bos : -1; }
NX_API int32_t nx_tokenizer_pad_id(const nx_tokenizer *tok) { return tok ? tok->pad : -1; }

/* ---- encode -------------------------------------------------------------------------------------- */

typedef struct enc_ctx {
    const nx_tokenizer *tok;
    unsigned flags;
    nx_ids *out;
    nx_buf norm;      /* normalized piece */
    nx_buf pre;       /* piece with a prefix space */
} enc_ctx;

/* ByteLevel pre-tokenizer + BPE on one piece of normalized text. */
static nx_status pretok_piece(enc_ctx *c, const char *s, size_t n) {
    const nx_tokenizer *tok = c->tok;
    if (n == 0) return NX_OK;
    if (tok->add_prefix_space && s[0] != ' ') {
        c->pre.len = 0;
        nx__buf_append(&c->pre, " ", 1);
        nx__buf_append(&c->pre, s, n);
        if (c->pre.oom) return nx__error(NX_ERR_NOMEM, "tokenizer: out of memory");
        s = c->pre.data;
        n = c->pre.len;
    }
    const uint8_t *u = (const uint8_t *)s;
    if (!tok->has_byte_level || !tok->use_regex) return nx__bpe_word(tok, u, n, c->out);
    size_t i = 0;
    while (i < n) {
        size_t j = nx__gpt2_split_next(u, n, i);
        NX_TRY(nx__bpe_word(tok, u + i, j - i, c->out));
        i = j;
    }
    return NX_OK;
}

static bool is_word_char(uint32_t cp) {
    /* approximates the regex \w (alphanumeric, marks, connector punctuation) for single_word */
    if (cp == '_') return true;
    int k = nx__uni_class(cp);
    return k == NX_UC_L || k == NX_UC_N;
}

typedef nx_status (*piece_fn)(enc_ctx *c, const char *s, size_t n);

/* HF find_matches + the callbacks: splits s by the added tokens of trie; gaps go to gap_fn,
 * matches emit their id. */
static nx_status split_added(enc_ctx *c, const nx__trie *trie, const char *s, size_t n, piece_fn gap_fn) {
    const nx_tokenizer *tok = c->tok;
    const uint8_t *u = (const uint8_t *)s;
    if (trie->empty || !trie->nodes) return gap_fn(c, s, n);
    size_t start_offset = 0, i = 0;
    while (i < n) {
        if (!trie->first[u[i]]) { i++; continue; }
        int32_t ti = -1;
        size_t len = trie_longest(trie, u, n, i, &ti);
        if (!len) { i++; continue; }
        const nx__added *a = &tok->added[ti];
        size_t start = i, stop = i + len;
        i = stop;   /* matches never overlap: the scan resumes after this one */
        if ((c->flags & NX_TOK_NO_PARSE_SPECIAL) && a->special) continue;
        if (a->single_word) {
            bool ok = true;
            if (start > 0) {
                size_t k = start - 1;
                while (k > 0 && (u[k] & 0xC0) == 0x80) k--;
                uint32_t cp;
                if (nx__utf8_decode(u + k, start - k, &cp) && is_word_char(cp)) ok = false;
            }
            if (stop < n) {
                uint32_t cp;
                if (nx__utf8_decode(u + stop, n - stop, &cp) && is_word_char(cp)) ok = false;
            }
            if (!ok) continue;
        }
        if (a->lstrip) {
            size_t k = start;
            while (k > 0) {
                size_t b = k - 1;
                while (b > 0 && (u[b] & 0xC0) == 0x80) b--;
                uint32_t cp;
                if (!nx__utf8_decode(u + b, k - b, &cp) || !is_white_space(cp)) break;
                k = b;
            }
            start = NX_MAX(k, start_offset);
        }
        if (a->rstrip) {
            uint32_t cp;
            size_t l;
            while (stop < n && (l = nx__utf8_decode(u + stop, n - stop, &cp)) && is_white_space(cp)) stop += l;
            i = NX_MAX(i, stop);
        }
        if (start_offset < start) NX_TRY(gap_fn(c, s + start_offset, start - start_offset));
        NX_TRY(nx__ids_push(c->out, a->id));
        start_offset = stop;
    }
    if (start_offset < n) NX_TRY(gap_fn(c, s + start_offset, n - start_offset));
    return NX_OK;
}

static nx_status normalized_piece(enc_ctx *c, const char *s, size_t n) {
    const nx_tokenizer *tok = c->tok;
    if (tok->n_norm) {
        NX_TRY(nx__normalize(tok->norm_ops, tok->n_norm, s, n, &c->norm));
        s = c->norm.data;
        n = c->norm.len;
    }
    return split_added(c, &tok->trie_norm, s, n, pretok_piece);
}

NX_API nx_status nx_tokenizer_encode(const nx_tokenizer *tok, const char *text, size_t len, unsigned flags,
                                     nx_ids *out) {
    if (!tok || !out || (!text && len)) return nx__error(NX_ERR_INVALID_ARG, "nx_tokenizer_encode: NULL argument");
    out->len = 0;
    enc_ctx c = {.tok = tok, .flags = flags, .out = out};
    nx_buf lossy = {0};
    size_t valid = nx__utf8_valid_prefix((const uint8_t *)text, len);
    if (valid != len) {
        if (!(flags & NX_TOK_LOSSY_UTF8))
            return nx__error(NX_ERR_INVALID_ARG, "encode: invalid UTF-8 at byte offset %zu (byte 0x%02X)", valid,
                             (unsigned)(uint8_t)text[valid]);
        nx__utf8_lossy((const uint8_t *)text, len, &lossy);
        if (lossy.oom) { nx__buf_free(&lossy); return nx__error(NX_ERR_NOMEM, "encode: out of memory"); }
        text = lossy.data;
        len = lossy.len;
    }
    nx_status st = NX_OK;
    if (!(flags & NX_TOK_NO_POST_PROCESS) && tok->n_post_pre) {
        st = nx__ids_reserve(out, tok->n_post_pre);
        if (st == NX_OK) for (size_t i = 0; i < tok->n_post_pre; i++) out->data[out->len++] = tok->post_pre[i];
    }
    if (st == NX_OK && len) st = split_added(&c, &tok->trie_raw, text, len, normalized_piece);
    if (st == NX_OK && !(flags & NX_TOK_NO_POST_PROCESS) && tok->n_post_post) {
        st = nx__ids_reserve(out, tok->n_post_post);
        if (st == NX_OK) for (size_t i = 0; i < tok->n_post_post; i++) out->data[out->len++] = tok->post_post[i];
    }
    nx__buf_free(&c.norm);
    nx__buf_free(&c.pre);
    nx__buf_free(&lossy);
    return st;
}

/* ---- decode ------------------------------------------------------------------------------------------ */

NX_API nx_status nx_tokenizer_decode(const nx_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                                     nx_text *out) {
    if (!tok || !out || (!ids && n)) return nx__error(NX_ERR_INVALID_ARG, "nx_tokenizer_decode: NULL argument");
    out->len = 0;
    NX_TRY(text_reserve(out, 0));
    out->data[0] = 0;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->vocab_size || !tok->id_str[id])
            return nx__error(NX_ERR_RANGE, "decode: id %d at position %zu is not a token (vocabulary size %d)", id, i,
                             tok->vocab_size);
        if ((flags & NX_TOK_SKIP_SPECIAL) && tok->is_special[id]) continue;
        if (!tok->dec_byte_level && !first) NX_TRY(text_append(out, " ", 1));
        NX_TRY(text_append(out, tok->dec_bytes + tok->dec_off[id], tok->dec_off[id + 1] - tok->dec_off[id]));
        first = false;
    }
    return NX_OK;
}

/* ---- streaming decode ---------------------------------------------------------------------------------- */

struct nx_tok_stream {
    const nx_tokenizer *tok;
    unsigned flags;
    bool first;
    nx_text buf;       /* bytes handed out by the last call, then the held-back tail */
    uint8_t hold[4];
    size_t nhold;
};

NX_API nx_status nx_tok_stream_create(const nx_tokenizer *tok, unsigned flags, nx_tok_stream **out) {
    if (!tok || !out) return nx__error(NX_ERR_INVALID_ARG, "nx_tok_stream_create: NULL argument");
    nx_tok_stream *s = nx__calloc(1, sizeof *s);
    if (!s) return nx__error(NX_ERR_NOMEM, "out of memory");
    s->tok = tok;
    s->flags = flags;
    s->first = true;
    *out = s;
    return NX_OK;
}

NX_API void nx_tok_stream_free(nx_tok_stream *s) {
    if (!s) return;
    nx_text_free(&s->buf);
    nx__free(s);
}

/* Length of the tail of b[0..n) that is an incomplete but still possibly valid UTF-8 char. */
static size_t incomplete_tail(const uint8_t *b, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t c = b[n - back];
        if ((c & 0xC0) == 0x80) continue;   /* continuation: look further back */
        size_t need = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 1;
        if (c >= 0xF5) need = 1;
        if (need <= back) return 0;          /* complete (or invalid) */
        /* check that what we have is a valid prefix (e.g. E0 needs A0..BF next) */
        uint32_t cp;
        uint8_t t[4] = {0};
        memcpy(t, b + n - back, back);
        /* complete it with minimal continuation bytes and see if it decodes */
        for (size_t k = back; k < need; k++) t[k] = 0x80;
        if (back >= 2 || need > 1) {
            if (c == 0xE0 && back < 2) t[1] = 0xA0;
            if (c == 0xF0 && back < 2) t[1] = 0x90;
        }
        return nx__utf8_decode(t, need, &cp) ? back : 0;
    }
    return 0;
}

NX_API nx_status nx_tok_stream_push(nx_tok_stream *s, int32_t id, const char **text, size_t *len) {
    if (!s || !text || !len) return nx__error(NX_ERR_INVALID_ARG, "nx_tok_stream_push: NULL argument");
    *text = "";
    *len = 0;
    const nx_tokenizer *tok = s->tok;
    if (id < 0 || id >= tok->vocab_size || !tok->id_str[id])
        return nx__error(NX_ERR_RANGE, "decode: id %d is not a token (vocabulary size %d)", id, tok->vocab_size);
    s->buf.len = 0;
    NX_TRY(text_append(&s->buf, s->hold, s->nhold));
    s->nhold = 0;
    if (!((s->flags & NX_TOK_SKIP_SPECIAL) && tok->is_special[id])) {
        if (!tok->dec_byte_level && !s->first) NX_TRY(text_append(&s->buf, " ", 1));
        NX_TRY(text_append(&s->buf, tok->dec_bytes + tok->dec_off[id], tok->dec_off[id + 1] - tok->dec_off[id]));
        s->first = false;
    }
    size_t tail = incomplete_tail((const uint8_t *)s->buf.data, s->buf.len);
    memcpy(s->hold, s->buf.data + s->buf.len - tail, tail);
    s->nhold = tail;
    s->buf.len -= tail;
    s->buf.data[s->buf.len] = 0;
    *text = s->buf.data;
    *len = s->buf.len;
    return NX_OK;
}

NX_API void nx_tok_stream_flush(nx_tok_stream *s, const char **text, size_t *len) {
    *text = "";
    *len = 0;
    if (!s) return;
    s->buf.len = 0;
    if (text_append(&s->buf, s->hold, s->nhold) == NX_OK) {
        *text = s->buf.data;
        *len = s->buf.len;
    }
    s->nhold = 0;
    s->first = true;
}
