/*
 * json_fast.c - a fast path for the two big fields of a tokenizer.json: model.vocab (50 000+
 * "token": id pairs) and model.merges (50 000 strings or pairs). A general JSON DOM spends
 * most of the load building and freeing a hash table and 100 000 small strings that we copy
 * anyway; here we find the two spans with a structural scan and decode them directly.
 *
 * Contract: nx__fast_model_parse either returns true with exactly what the general (jansson)
 * path would have read, or returns false, and the caller then uses the general path for the
 * whole file, which also produces the error messages. So anything unusual - invalid JSON
 * anywhere on the way, a lone surrogate escape, a non-integer id, an id out
 * of range, invalid UTF-8 - simply returns false.
 */
#include "tokenizer/tokenizer_int.h"

#define MAX_DEPTH 64

static void ws(const char *s, size_t n, size_t *i) {
    while (*i < n && (s[*i] == ' ' || s[*i] == '\n' || s[*i] == '\r' || s[*i] == '\t')) (*i)++;
}

static int hex4(const char *s) {
    int v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

/* Scans the string at s[*i] == '"'. With out != NULL appends the decoded bytes. */
static bool str(const char *s, size_t n, size_t *i, nx_buf *out) {
    size_t p = *i + 1;
    for (;;) {
        size_t q = p;
        while (q < n && s[q] != '"' && s[q] != '\\' && (unsigned char)s[q] >= 0x20) q++;
        if (q >= n || (unsigned char)s[q] < 0x20) return false;
        if (nx__utf8_valid_prefix((const uint8_t *)s + p, q - p) != q - p) return false;
        if (out) nx__buf_append(out, s + p, q - p);
        if (s[q] == '"') { *i = q + 1; return true; }
        /* escape */
        if (q + 1 >= n) return false;
        char e = s[q + 1], c;
        p = q + 2;
        switch (e) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            if (q + 6 > n) return false;
            int u = hex4(s + q + 2);
            if (u < 0) return false;
            p = q + 6;
            uint32_t cp = (uint32_t)u;
            if (u >= 0xD800 && u < 0xDC00) {
                if (p + 6 > n || s[p] != '\\' || s[p + 1] != 'u') return false;
                int lo = hex4(s + p + 2);
                if (lo < 0xDC00 || lo >= 0xE000) return false;
                cp = 0x10000 + (((uint32_t)u - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
                p += 6;
            } else if (u >= 0xDC00 && u < 0xE000)
                return false;
            if (out) nx__utf8_put(out, cp);
            continue;
        }
        default: return false;
        }
        if (out) nx__buf_append(out, &c, 1);
    }
}

static bool value(const char *s, size_t n, size_t *i, int depth);

static bool number(const char *s, size_t n, size_t *i) {
    size_t p = *i;
    if (p < n && s[p] == '-') p++;
    size_t d = p;
    while (p < n && s[p] >= '0' && s[p] <= '9') p++;
    if (p == d) return false;
    if (p < n && s[p] == '.') { p++; d = p; while (p < n && s[p] >= '0' && s[p] <= '9') p++; if (p == d) return false; }
    if (p < n && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < n && (s[p] == '+' || s[p] == '-')) p++;
        d = p;
        while (p < n && s[p] >= '0' && s[p] <= '9') p++;
        if (p == d) return false;
    }
    *i = p;
    return true;
}

static bool value(const char *s, size_t n, size_t *i, int depth) {
    if (depth > MAX_DEPTH || *i >= n) return false;
    char c = s[*i];
    if (c == '"') return str(s, n, i, NULL);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        (*i)++;
        ws(s, n, i);
        if (*i < n && s[*i] == close) { (*i)++; return true; }
        for (;;) {
            if (c == '{') {
                if (*i >= n || s[*i] != '"' || !str(s, n, i, NULL)) return false;
                ws(s, n, i);
                if (*i >= n || s[*i] != ':') return false;
                (*i)++;
                ws(s, n, i);
            }
            if (!value(s, n, i, depth + 1)) return false;
            ws(s, n, i);
            if (*i >= n) return false;
            if (s[*i] == close) { (*i)++; return true; }
            if (s[*i] != ',') return false;
            (*i)++;
            ws(s, n, i);
        }
    }
    static const char *lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(lits[k]);
        if (*i + l <= n && !memcmp(s + *i, lits[k], l)) { *i += l; return true; }
    }
    return number(s, n, i);
}

/* Walks an object at s[*i] == '{', calling on_key for each key; on_key must consume the value. */
typedef bool (*key_fn)(const char *s, size_t n, size_t *i, const char *key, size_t klen, void *ctx, int depth);

static bool object(const char *s, size_t n, size_t *i, key_fn fn, void *ctx, int depth) {
    if (*i >= n || s[*i] != '{') return false;
    (*i)++;
    ws(s, n, i);
    if (*i < n && s[*i] == '}') { (*i)++; return true; }
    nx_buf key = {0};
    bool ok = false;
    for (;;) {
        key.len = 0;
        if (*i >= n || s[*i] != '"' || !str(s, n, i, &key) || key.oom) break;
        ws(s, n, i);
        if (*i >= n || s[*i] != ':') break;
        (*i)++;
        ws(s, n, i);
        if (!fn(s, n, i, key.data ? key.data : "", key.len, ctx, depth + 1)) break;
        ws(s, n, i);
        if (*i >= n) break;
        if (s[*i] == '}') { (*i)++; ok = true; break; }
        if (s[*i] != ',') break;
        (*i)++;
        ws(s, n, i);
    }
    nx__buf_free(&key);
    return ok;
}

typedef struct {
    nx__fast_model *fm;
    int seen_model, seen_vocab, seen_merges;
} walk_ctx;

static bool model_key(const char *s, size_t n, size_t *i, const char *key, size_t klen, void *p, int depth) {
    walk_ctx *w = p;
    bool is_vocab = klen == 5 && !memcmp(key, "vocab", 5), is_merges = klen == 6 && !memcmp(key, "merges", 6);
    size_t b = *i;
    if (!value(s, n, i, depth)) return false;
    if (is_vocab) { w->seen_vocab++; w->fm->vocab_begin = b; w->fm->vocab_end = *i; }
    if (is_merges) { w->seen_merges++; w->fm->merges_begin = b; w->fm->merges_end = *i; }
    return true;
}

static bool top_key(const char *s, size_t n, size_t *i, const char *key, size_t klen, void *p, int depth) {
    walk_ctx *w = p;
    if (klen == 5 && !memcmp(key, "model", 5)) {
        w->seen_model++;
        return object(s, n, i, model_key, w, depth);
    }
    return value(s, n, i, depth);
}

/* id: a plain non-negative integer below NX_TOK_MAX_ID */
static bool int_id(const char *s, size_t n, size_t *i, int32_t *out) {
    size_t p = *i;
    int64_t v = 0;
    if (p >= n || s[p] < '0' || s[p] > '9') return false;
    if (s[p] == '0' && p + 1 < n && s[p + 1] >= '0' && s[p + 1] <= '9') return false;   /* invalid JSON */
    while (p < n && s[p] >= '0' && s[p] <= '9') {
        v = v * 10 + (s[p] - '0');
        if (v >= (1 << 24)) return false;
        p++;
    }
    if (p < n && (s[p] == '.' || s[p] == 'e' || s[p] == 'E')) return false;
    *out = (int32_t)v;
    *i = p;
    return true;
}

static bool parse_vocab(const char *s, size_t n, nx__fast_model *fm) {
    size_t i = fm->vocab_begin, cap = 0;
    nx_buf key = {0};
    bool ok = false;
    if (s[i] != '{') return false;
    i++;
    ws(s, n, &i);
    if (i < n && s[i] == '}') ok = true;
    while (!ok) {
        key.len = 0;
        if (i >= n || s[i] != '"' || !str(s, n, &i, &key) || key.oom) break;
        ws(s, n, &i);
        if (i >= n || s[i] != ':') break;
        i++;
        ws(s, n, &i);
        int32_t id;
        if (!int_id(s, n, &i, &id)) break;
        if (fm->n_vocab == cap) {
            cap = cap ? cap * 2 : 1024;
            nx__vocab_entry *v = nx__realloc(fm->vocab, cap * sizeof *v);
            if (!v) break;
            fm->vocab = v;
        }
        char *k = nx__malloc(key.len + 1);
        if (!k) break;
        if (key.len) memcpy(k, key.data, key.len);
        k[key.len] = 0;
        /* a repeated key is reported by set_vocab (jansson rejects them too, JSON_REJECT_DUPLICATES) */
        fm->vocab[fm->n_vocab++] = (nx__vocab_entry){k, key.len, id};
        ws(s, n, &i);
        if (i >= n) break;
        if (s[i] == '}') { ok = true; break; }
        if (s[i] != ',') break;
        i++;
        ws(s, n, &i);
    }
    nx__buf_free(&key);
    return ok;
}

static bool merge_push(nx__fast_model *fm, size_t *cap, uint32_t a, uint32_t la, uint32_t b, uint32_t lb, bool pair) {
    if (fm->n_merges == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        void *p = nx__realloc(fm->merges, *cap * sizeof *fm->merges);
        if (!p) return false;
        fm->merges = p;
    }
    fm->merges[fm->n_merges].a = a;
    fm->merges[fm->n_merges].la = la;
    fm->merges[fm->n_merges].b = b;
    fm->merges[fm->n_merges].lb = lb;
    fm->merges[fm->n_merges].pair = pair;
    fm->n_merges++;
    return true;
}

static bool parse_merges(const char *s, size_t n, nx__fast_model *fm) {
    size_t i = fm->merges_begin, cap = 0;
    if (s[i] != '[') return false;
    i++;
    ws(s, n, &i);
    if (i < n && s[i] == ']') return true;
    nx_buf *A = &fm->arena;
    for (;;) {
        if (i >= n) return false;
        if (s[i] == '"') {
            size_t a = A->len;
            if (!str(s, n, &i, A) || A->oom) return false;
            if (!merge_push(fm, &cap, (uint32_t)a, (uint32_t)(A->len - a), 0, 0, false)) return false;
        } else if (s[i] == '[') {
            i++;
            ws(s, n, &i);
            size_t a = A->len;
            if (i >= n || s[i] != '"' || !str(s, n, &i, A)) return false;
            size_t b = A->len;
            ws(s, n, &i);
            if (i >= n || s[i] != ',') return false;
            i++;
            ws(s, n, &i);
            if (i >= n || s[i] != '"' || !str(s, n, &i, A) || A->oom) return false;
            ws(s, n, &i);
            if (i >= n || s[i] != ']') return false;
            i++;
            if (!merge_push(fm, &cap, (uint32_t)a, (uint32_t)(b - a), (uint32_t)b, (uint32_t)(A->len - b), true))
                return false;
        } else
            return false;
        ws(s, n, &i);
        if (i >= n) return false;
        if (s[i] == ']') return A->len <= UINT32_MAX;
        if (s[i] != ',') return false;
        i++;
        ws(s, n, &i);
    }
}

void nx__fast_model_free(nx__fast_model *fm) {
    for (size_t i = 0; i < fm->n_vocab; i++) nx__free(fm->vocab[i].s);
    nx__free(fm->vocab);
    nx__free(fm->merges);
    nx__buf_free(&fm->arena);
    memset(fm, 0, sizeof *fm);
}

bool nx__fast_model_parse(const char *s, size_t n, nx__fast_model *fm) {
    memset(fm, 0, sizeof *fm);
    walk_ctx w = {fm, 0, 0, 0};
    size_t i = 0;
    ws(s, n, &i);
    if (!object(s, n, &i, top_key, &w, 0)) return false;
    ws(s, n, &i);
    if (i != n || w.seen_model != 1 || w.seen_vocab != 1 || w.seen_merges > 1) return false;
    if (!parse_vocab(s, n, fm)) { nx__fast_model_free(fm); return false; }
    if (w.seen_merges && !parse_merges(s, n, fm)) { nx__fast_model_free(fm); return false; }
    fm->has_merges = w.seen_merges == 1;
    return true;
}
