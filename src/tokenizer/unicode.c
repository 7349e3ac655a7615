/*
 * unicode.c - the Unicode pieces of the tokenizer: UTF-8 decoding and validation, the
 * character classes of the GPT-2 split regex, the GPT-2 split scanner itself, the ByteLevel
 * byte<->char map, and the normalizers (NFC/NFD/NFKC/NFKD through libutf8proc, Lowercase
 * through a probed table).
 *
 * Why tables probed from the reference (unicode_tables.c) instead of one Unicode database:
 * HF tokenizers 0.23.3 classifies characters for its ByteLevel regex with Oniguruma's
 * Unicode 16 properties, but normalizes with tables older than Unicode 12.1 and lowercases
 * with Rust's char::to_lowercase. utf8proc 2.8 (Debian 12) is Unicode 15.0 and disagrees with
 * the reference on 9 000+ code points for \p{L}/\p{N} and on 135 code points for NFKC.
 * We use utf8proc for the normalization algorithms (decomposition, canonical ordering,
 * composition) and treat the code points that the reference does not know yet as opaque
 * "barriers": the text is normalized piecewise between them. Such a character is a starter
 * that composes with nothing in the reference, so piecewise normalization is exact.
 */
#include "tokenizer/tokenizer_int.h"

#include <utf8proc.h>

/* ---- classes ------------------------------------------------------------------------------ */

int nx__uni_class(uint32_t cp) {
    /* binary search for the last run starting at or before cp */
    size_t lo = 0, hi = nx__uni_class_nruns;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (nx__uni_class_runs[mid][0] <= cp) lo = mid; else hi = mid;
    }
    return (int)nx__uni_class_runs[lo][1];
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */

size_t nx__utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    if (c < 0xC2) return 0;
    if (c < 0xE0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        *cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;          /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0;         /* surrogate */
        *cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;          /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0;         /* > U+10FFFF */
        *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
              (s[3] & 0x3F);
        return 4;
    }
    return 0;
}

void nx__utf8_put(nx_buf *b, uint32_t cp) {
    char t[4];
    size_t n;
    if (cp < 0x80) { t[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { t[0] = (char)(0xC0 | (cp >> 6)); t[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12)); t[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18)); t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    nx__buf_append(b, t, n);
}

size_t nx__utf8_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) { i++; continue; }
        uint32_t cp;
        size_t l = nx__utf8_decode(s + i, n - i, &cp);
        if (!l) return i;
        i += l;
    }
    return n;
}

/* Length of the maximal subpart of an ill-formed sequence at s (Unicode 3.9, D93b; what
 * CPython replaces by one U+FFFD): the longest prefix that could start a valid character. */
static size_t maximal_subpart(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c < 0xE0) need = 2;
    else if (c >= 0xE0 && c < 0xF0) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c < 0xF5) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 1;
    size_t k = 1;
    if (k < n && s[k] >= lo && s[k] <= hi) {
        k++;
        while (k < need && k < n && (s[k] & 0xC0) == 0x80) k++;
    }
    return k;
}

void nx__utf8_lossy(const uint8_t *s, size_t n, nx_buf *out) {
    out->len = 0;
    size_t i = 0;
    while (i < n) {
        size_t v = nx__utf8_valid_prefix(s + i, n - i);
        nx__buf_append(out, s + i, v);
        i += v;
        if (i >= n) break;
        nx__buf_append(out, "\xEF\xBF\xBD", 3);
        i += maximal_subpart(s + i, n - i);
    }
    nx__buf_append(out, "", 0);   /* ensures data != NULL */
}

/* ---- ByteLevel map -------------------------------------------------------------------------- */
/* GPT-2's bytes_to_unicode(): printable bytes map to themselves, the other 68 bytes (in
 * increasing order) to U+0100, U+0101, ... */
static bool byte_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* The 68 non-printable bytes, in order, are 0x00-0x20 (33), 0x7F-0xA0 (34) and 0xAD. */
uint32_t nx__byte_to_cp(uint8_t b) {
    if (byte_printable(b)) return b;
    if (b <= 0x20) return 0x100u + b;
    if (b >= 0x7F && b <= 0xA0) return 0x100u + 33 + (uint32_t)(b - 0x7F);
    return 0x100u + 67;   /* 0xAD */
}

int nx__cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return byte_printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    unsigned k = cp - 0x100;
    if (k <= 32) return (int)k;
    if (k <= 66) return (int)(0x7F + (k - 33));
    return 0xAD;
}

/* ---- GPT-2 split scanner -------------------------------------------------------------------- */
/* ASCII is classified inline; the rest of the BMP through a 64 KiB table built once from the
 * runs (so CJK, Indic, Thai... skip the binary search); other planes search the runs. */
static uint8_t g_cls_lo[0x10000];
static atomic_int g_cls_ready;

static void cls_init(void) {
    /* Idempotent and racy-but-identical writes are avoided by building into a local table and
     * publishing with a release store; late threads see either "not ready" (and use the
     * binary search) or the finished table. */
    static atomic_flag building = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&building)) return;
    for (uint32_t c = 0; c < 0x10000; c++) g_cls_lo[c] = (uint8_t)nx__uni_class(c);
    atomic_store_explicit(&g_cls_ready, 1, memory_order_release);
}

static inline int cls_of(uint32_t cp) {
    if (cp < 0x10000 && atomic_load_explicit(&g_cls_ready, memory_order_acquire)) return g_cls_lo[cp];
    return nx__uni_class(cp);
}

/* class of the character at s[i]; *len receives its byte length */
static inline int cls_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
    uint8_t c = s[i];
    if (c < 0x80) {
        *len = 1;
        /* \s in ASCII: \t \n \v \f \r and space */
        if (c == ' ' || (c >= 9 && c <= 13)) return NX_UC_S;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return NX_UC_L;
        if (c >= '0' && c <= '9') return NX_UC_N;
        return NX_UC_P;
    }
    uint32_t cp;
    size_t l = nx__utf8_decode(s + i, n - i, &cp);
    if (NX_UNLIKELY(l == 0)) { *len = 1; return NX_UC_P; }   /* callers pass valid UTF-8 */
    *len = l;
    return cls_of(cp);
}

static size_t run_of(const uint8_t *s, size_t n, size_t i, int cls) {
    size_t l;
    while (i < n && cls_at(s, n, i, &l) == cls) i += l;
    return i;
}

size_t nx__gpt2_split_next(const uint8_t *s, size_t n, size_t i) {
    if (NX_UNLIKELY(!atomic_load_explicit(&g_cls_ready, memory_order_relaxed))) cls_init();
    /* 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, ASCII) */
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t a = s[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            uint8_t b = s[i + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    size_t l0;
    int c0 = cls_at(s, n, i, &l0);
    if (s[i] == ' ' && i + 1 < n) {
        /* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' with the optional space taken */
        size_t l1;
        int c1 = cls_at(s, n, i + 1, &l1);
        if (c1 != NX_UC_S) return run_of(s, n, i + 1 + l1, c1);
    }
    if (c0 != NX_UC_S) return run_of(s, n, i + l0, c0);
    /* whitespace: '\s+(?!\S)' keeps the last whitespace character of a run for the next
     * token when a non-space follows; a single whitespace character then matches '\s+' */
    size_t j = i + l0, last = i, l;
    while (j < n && cls_at(s, n, j, &l) == NX_UC_S) { last = j; j += l; }
    if (j >= n) return n;
    return last > i ? last : j;
}

/* ---- normalizers ---------------------------------------------------------------------------- */

static bool in_sorted(const uint32_t *a, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a[mid] == cp) return true;
        if (a[mid] < cp) lo = mid + 1; else hi = mid;
    }
    return false;
}

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

/* utf8proc on one barrier-free piece, appended to out */
static nx_status nf_piece(const uint8_t *s, size_t n, utf8proc_option_t opts, nx_buf *out) {
    if (n == 0) return NX_OK;
    utf8proc_ssize_t need = utf8proc_decompose(s, (utf8proc_ssize_t)n, NULL, 0, opts);
    if (need < 0) return nx__error(NX_ERR_INTERNAL, "normalizer: %s", utf8proc_errmsg(need));
    utf8proc_int32_t *buf = nx__malloc(((size_t)need + 1) * sizeof *buf);
    if (!buf) return nx__error(NX_ERR_NOMEM, "normalizer: out of memory");
    utf8proc_ssize_t got = utf8proc_decompose(s, (utf8proc_ssize_t)n, buf, need, opts);
    if (got >= 0 && (opts & UTF8PROC_COMPOSE)) got = utf8proc_normalize_utf32(buf, got, opts);
    if (got < 0) { nx__free(buf); return nx__error(NX_ERR_INTERNAL, "normalizer: %s", utf8proc_errmsg(got)); }
    for (utf8proc_ssize_t k = 0; k < got; k++) nx__utf8_put(out, (uint32_t)buf[k]);
    nx__free(buf);
    return NX_OK;
}

/* Normalizes s[0..n) with utf8proc piecewise between barrier code points. */
static nx_status nf_barriers(const uint8_t *s, size_t n, utf8proc_option_t opts, const uint32_t *bar, size_t nbar,
                             nx_buf *out) {
    size_t start = 0, i = 0;
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; }
        uint32_t cp;
        size_t l = nx__utf8_decode(s + i, n - i, &cp);
        if (!l) return nx__error(NX_ERR_INTERNAL, "normalizer: invalid UTF-8");
        if (nbar && in_sorted(bar, nbar, cp)) {
            NX_TRY(nf_piece(s + start, i - start, opts, out));
            nx__buf_append(out, s + i, l);
            start = i + l;
        }
        i += l;
    }
    return nf_piece(s + start, n - start, opts, out);
}

/*
 * One normal form. Quick check first: a "safe" character (unchanged by the form on its own,
 * combining class 0, and - for the composing forms - never the second half of a canonical
 * composition) is a stable boundary: normalization never moves anything across the position
 * before it. So only the segments from the last safe character before an unsafe one up to
 * the next safe character go through utf8proc; everything else is copied. Most text in most
 * scripts is all safe.
 */
static nx_status nf(const uint8_t *s, size_t n, nx__norm_op op, nx_buf *out) {
    utf8proc_option_t opts = UTF8PROC_STABLE;
    const uint32_t *bar;
    size_t nbar;
    const uint32_t (*uns)[2];
    size_t nuns;
    switch (op) {
    case NX_NORM_NFC:
        opts |= UTF8PROC_COMPOSE; bar = nx__uni_barrier_nfc; nbar = nx__uni_nbarrier_nfc;
        uns = nx__uni_unsafe_nfc; nuns = nx__uni_nunsafe_nfc;
        break;
    case NX_NORM_NFD:
        opts |= UTF8PROC_DECOMPOSE; bar = nx__uni_barrier_nfd; nbar = nx__uni_nbarrier_nfd;
        uns = nx__uni_unsafe_nfd; nuns = nx__uni_nunsafe_nfd;
        break;
    case NX_NORM_NFKC:
        opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; bar = nx__uni_barrier_nfkc; nbar = nx__uni_nbarrier_nfkc;
        uns = nx__uni_unsafe_nfkc; nuns = nx__uni_nunsafe_nfkc;
        break;
    default:
        opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; bar = nx__uni_barrier_nfkd; nbar = nx__uni_nbarrier_nfkd;
        uns = nx__uni_unsafe_nfkd; nuns = nx__uni_nunsafe_nfkd;
        break;
    }
    size_t copied = 0, last_safe = 0, i = 0;
    while (i < n) {
        if (s[i] < 0x80) { last_safe = i++; continue; }
        uint32_t cp;
        size_t l = nx__utf8_decode(s + i, n - i, &cp);
        if (!l) return nx__error(NX_ERR_INTERNAL, "normalizer: invalid UTF-8");
        if (!in_ranges(uns, nuns, cp)) { last_safe = i; i += l; continue; }
        size_t p = NX_MAX(last_safe, copied), q = i + l;
        while (q < n) {
            if (s[q] < 0x80) break;
            size_t l2 = nx__utf8_decode(s + q, n - q, &cp);
            if (!l2) return nx__error(NX_ERR_INTERNAL, "normalizer: invalid UTF-8");
            if (!in_ranges(uns, nuns, cp)) break;
            q += l2;
        }
        nx__buf_append(out, s + copied, p - copied);
        NX_TRY(nf_barriers(s + p, q - p, opts, bar, nbar, out));
        copied = last_safe = i = q;
    }
    nx__buf_append(out, s + copied, n - copied);
    return NX_OK;
}

static void lowercase(const uint8_t *s, size_t n, nx_buf *out) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            char c = (char)s[i];
            if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
            nx__buf_append(out, &c, 1);
            i++;
            continue;
        }
        uint32_t cp;
        size_t l = nx__utf8_decode(s + i, n - i, &cp);
        if (!l) l = 1;
        size_t lo = 0, hi = nx__uni_nlower;
        const uint32_t *hit = NULL;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (nx__uni_lower[mid][0] == cp) { hit = nx__uni_lower[mid]; break; }
            if (nx__uni_lower[mid][0] < cp) lo = mid + 1; else hi = mid;
        }
        if (hit) for (uint32_t k = 0; k < hit[1]; k++) nx__utf8_put(out, hit[2 + k]);
        else nx__buf_append(out, s + i, l);
        i += l;
    }
}

nx_status nx__normalize(const uint8_t *ops, int nops, const char *s, size_t n, nx_buf *out) {
    nx_buf tmp = {0};
    bool ascii = true;
    for (size_t k = 0; k < n; k++) if ((uint8_t)s[k] >= 0x80) { ascii = false; break; }
    out->len = 0;
    nx__buf_append(out, s, n);
    for (int k = 0; k < nops; k++) {
        if (ops[k] != NX_NORM_LOWER && ascii) continue;   /* NF* leave ASCII unchanged */
        tmp.len = 0;
        if (ops[k] == NX_NORM_LOWER) lowercase((const uint8_t *)out->data, out->len, &tmp);
        else {
            nx_status st = nf((const uint8_t *)out->data, out->len, (nx__norm_op)ops[k], &tmp);
            if (st) { nx__buf_free(&tmp); return st; }
        }
        nx_buf sw = *out; *out = tmp; tmp = sw;
    }
    nx__buf_free(&tmp);
    nx__buf_append(out, "", 0);
    if (out->oom) return nx__error(NX_ERR_NOMEM, "normalizer: out of memory");
    return NX_OK;
}
