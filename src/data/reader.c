/*
 * reader.c - streaming document sources for corpus tools: .jsonl, .jsonl.zst / .json.zst /
 * .zst (JSON lines), .txt (one document per file), .txt.zst, and directories (walked
 * recursively in sorted order, so the document order never depends on the filesystem).
 *
 * The reader hands out raw records (one JSON line, or one text file) with their file and
 * line number; parsing the JSON and checking UTF-8 happen in the caller's worker threads.
 * Memory is bounded by the longest record plus one read chunk.
 */
#include "data/data.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <zstd.h>

enum { CHUNK = 1 << 20 };

typedef enum { SRC_JSONL, SRC_TXT } src_kind;

struct nx_doc_reader {
    char **files;
    size_t n_files, cap_files;
    uint64_t total_bytes;         /* on-disk size of all files (for progress/ETA) */
    uint64_t done_bytes;          /* on-disk bytes consumed by finished files + current */
    size_t cur;                   /* index of the open file, n_files when done */
    FILE *fp;
    src_kind kind;
    bool zst;
    ZSTD_DCtx *dctx;
    uint8_t *in;                  /* compressed input buffer */
    ZSTD_inBuffer zin;
    bool zin_eof;
    size_t zlast;                 /* last ZSTD_decompressStream result */
    uint8_t *buf;                 /* decoded bytes: [pos, len) not yet returned */
    size_t pos, len, cap;
    bool eof;                     /* decoded stream of the current file exhausted */
    uint64_t line;
    uint8_t *rec;                 /* TXT: the whole file */
    size_t rec_cap;
};

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* The kinds of file the reader knows; others are skipped inside directories and refused
 * when named explicitly. */
static bool known_kind(const char *p, src_kind *kind, bool *zst) {
    *zst = ends_with(p, ".zst");
    if (ends_with(p, ".jsonl") || ends_with(p, ".jsonl.zst") || ends_with(p, ".json.zst") ||
        (ends_with(p, ".zst") && !ends_with(p, ".txt.zst"))) {
        *kind = SRC_JSONL;
        return true;
    }
    if (ends_with(p, ".txt") || ends_with(p, ".txt.zst")) {
        *kind = SRC_TXT;
        return true;
    }
    return false;
}

static nx_status add_file(nx_doc_reader *r, const char *path) {
    if (r->n_files == r->cap_files) {
        size_t nc = r->cap_files ? r->cap_files * 2 : 64;
        char **nf = nx__realloc(r->files, nc * sizeof *nf);
        if (!nf) return nx__error(NX_ERR_NOMEM, "out of memory listing inputs");
        r->files = nf;
        r->cap_files = nc;
    }
    r->files[r->n_files] = nx__strdup(path);
    if (!r->files[r->n_files]) return nx__error(NX_ERR_NOMEM, "out of memory listing inputs");
    r->n_files++;
    struct stat st;
    if (stat(path, &st) == 0) r->total_bytes += (uint64_t)st.st_size;
    return NX_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static nx_status add_dir(nx_doc_reader *r, const char *dir, int depth) {
    if (depth > 64) return nx__error(NX_ERR_RANGE, "%s: directories nested too deeply", dir);
    DIR *d = opendir(dir);
    if (!d) return nx__error(NX_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    nx_status st = NX_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;   /* hidden files, "." and ".." */
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **nn = nx__realloc(names, cap * sizeof *nn);
            if (!nn) { st = nx__error(NX_ERR_NOMEM, "out of memory listing %s", dir); break; }
            names = nn;
        }
        names[n] = nx__path_join(dir, e->d_name);
        if (!names[n]) { st = nx__error(NX_ERR_NOMEM, "out of memory listing %s", dir); break; }
        n++;
    }
    closedir(d);
    if (st == NX_OK) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; st == NX_OK && i < n; i++) {
        struct stat sb;
        if (lstat(names[i], &sb) != 0 || S_ISLNK(sb.st_mode)) continue;   /* no symlink loops */
        src_kind k;
        bool z;
        if (S_ISDIR(sb.st_mode)) st = add_dir(r, names[i], depth + 1);
        else if (S_ISREG(sb.st_mode) && known_kind(names[i], &k, &z)) st = add_file(r, names[i]);
    }
    for (size_t i = 0; i < n; i++) nx__free(names[i]);
    nx__free(names);
    return st;
}

void nx__doc_reader_free(nx_doc_reader *r) {
    if (!r) return;
    if (r->fp) fclose(r->fp);
    ZSTD_freeDCtx(r->dctx);
    for (size_t i = 0; i < r->n_files; i++) nx__free(r->files[i]);
    nx__free(r->files);
    nx__free(r->in);
    nx__free(r->buf);
    nx__free(r->rec);
    nx__free(r);
}

nx_status nx__doc_reader_open(const char *const *inputs, size_t n, nx_doc_reader **out) {
    *out = NULL;
    nx_doc_reader *r = nx__calloc(1, sizeof *r);
    if (!r) return nx__error(NX_ERR_NOMEM, "out of memory");
    nx_status st = NX_OK;
    for (size_t i = 0; st == NX_OK && i < n; i++) {
        struct stat sb;
        src_kind k;
        bool z;
        if (stat(inputs[i], &sb) != 0) st = nx__error(NX_ERR_IO, "%s: %s", inputs[i], strerror(errno));
        else if (S_ISDIR(sb.st_mode)) st = add_dir(r, inputs[i], 0);
        else if (!known_kind(inputs[i], &k, &z))
            st = nx__error(NX_ERR_UNSUPPORTED, "%s: unknown input type (expected .jsonl, .jsonl.zst, .json.zst, .zst, "
                           ".txt, .txt.zst or a directory)", inputs[i]);
        else st = add_file(r, inputs[i]);
    }
    r->cap = CHUNK;
    r->buf = nx__malloc(r->cap);
    r->in = nx__malloc(ZSTD_DStreamInSize());
    if (st == NX_OK && (!r->buf || !r->in)) st = nx__error(NX_ERR_NOMEM, "out of memory");
    if (st != NX_OK) {
        nx__doc_reader_free(r);
        return st;
    }
    r->cur = (size_t)-1;
    *out = r;
    return NX_OK;
}

size_t nx__doc_reader_n_files(const nx_doc_reader *r) { return r->n_files; }
uint64_t nx__doc_reader_total_bytes(const nx_doc_reader *r) { return r->total_bytes; }
uint64_t nx__doc_reader_done_bytes(const nx_doc_reader *r) {
    uint64_t d = r->done_bytes;
    if (r->fp) {
        long p = ftell(r->fp);
        if (p > 0) d += (uint64_t)p;
    }
    return d;
}

static nx_status open_next(nx_doc_reader *r, bool *done) {
    if (r->fp) {
        long p = ftell(r->fp);
        if (p > 0) r->done_bytes += (uint64_t)p;
        fclose(r->fp);
        r->fp = NULL;
    }
    r->cur = r->cur == (size_t)-1 ? 0 : r->cur + 1;
    if (r->cur >= r->n_files) { *done = true; return NX_OK; }
    *done = false;
    const char *p = r->files[r->cur];
    known_kind(p, &r->kind, &r->zst);
    r->fp = fopen(p, "rb");
    if (!r->fp) return nx__error(NX_ERR_IO, "%s: cannot open: %s", p, strerror(errno));
    if (r->zst) {
        if (!r->dctx && !(r->dctx = ZSTD_createDCtx())) return nx__error(NX_ERR_NOMEM, "out of memory");
        ZSTD_DCtx_reset(r->dctx, ZSTD_reset_session_only);
        r->zin.src = r->in;
        r->zin.size = r->zin.pos = 0;
        r->zin_eof = false;
        r->zlast = 0;
    }
    r->pos = r->len = 0;
    r->eof = false;
    r->line = 0;
    return NX_OK;
}

/* Appends more decoded bytes of the current file to buf[len..]; sets r->eof at the end. */
static nx_status fill(nx_doc_reader *r) {
    if (r->pos > 0) {   /* compact */
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    if (r->len == r->cap) {
        size_t nc = r->cap * 2;
        uint8_t *nb = nx__realloc(r->buf, nc);
        if (!nb) return nx__error(NX_ERR_NOMEM, "%s: out of memory for a %zu-byte record", r->files[r->cur], r->cap);
        r->buf = nb;
        r->cap = nc;
    }
    const char *path = r->files[r->cur];
    if (!r->zst) {
        size_t got = fread(r->buf + r->len, 1, r->cap - r->len, r->fp);
        if (got == 0) {
            if (ferror(r->fp)) return nx__error(NX_ERR_IO, "%s: read error", path);
            r->eof = true;
        }
        r->len += got;
        return NX_OK;
    }
    /* zstd: decode until some output appears or the stream ends. zlast is the last
     * ZSTD_decompressStream result: 0 means every frame so far is complete and flushed, so
     * end of input there is a clean end; anything else at end of input is a truncation. */
    size_t before = r->len;
    while (r->len == before) {
        if (r->zin.pos == r->zin.size && !r->zin_eof) {
            size_t got = fread(r->in, 1, ZSTD_DStreamInSize(), r->fp);
            if (got == 0) {
                if (ferror(r->fp)) return nx__error(NX_ERR_IO, "%s: read error", path);
                r->zin_eof = true;
            } else {
                r->zin.size = got;
                r->zin.pos = 0;
            }
        }
        ZSTD_outBuffer zo = {r->buf + r->len, r->cap - r->len, 0};
        if (r->zin_eof && r->zin.pos == r->zin.size) {
            if (r->zlast == 0) { r->eof = true; return NX_OK; }
            ZSTD_inBuffer none = {NULL, 0, 0};
            size_t rc = ZSTD_decompressStream(r->dctx, &zo, &none);
            if (ZSTD_isError(rc)) return nx__error(NX_ERR_FORMAT, "%s: zstd: %s", path, ZSTD_getErrorName(rc));
            r->len += zo.pos;
            r->zlast = rc;
            if (zo.pos == 0) {
                if (rc != 0) return nx__error(NX_ERR_FORMAT, "%s: truncated zstd stream", path);
                r->eof = true;
                return NX_OK;
            }
            continue;
        }
        size_t rc = ZSTD_decompressStream(r->dctx, &zo, &r->zin);
        if (ZSTD_isError(rc)) return nx__error(NX_ERR_FORMAT, "%s: zstd: %s", path, ZSTD_getErrorName(rc));
        r->len += zo.pos;
        r->zlast = rc;
    }
    return NX_OK;
}

/* Next record. *eof = true at the end of all inputs. rec->data is borrowed until the next
 * call. JSONL: one line without its '\n' (a trailing '\r' is kept; JSON ignores it as
 * whitespace); blank lines are skipped. TXT: the whole file. */
nx_status nx__doc_reader_next(nx_doc_reader *r, nx_raw_record *rec, bool *eof) {
    for (;;) {
        if (!r->fp) {
            bool done;
            NX_TRY(open_next(r, &done));
            if (done) { *eof = true; return NX_OK; }
        }
        if (r->kind == SRC_TXT) {
            while (!r->eof) {
                NX_TRY(fill(r));
            }
            rec->data = (const char *)r->buf;
            rec->len = r->len;
            rec->file = r->files[r->cur];
            rec->line = 1;
            rec->is_json = false;
            r->pos = r->len;
            /* Mark the file finished; the next call opens the following one. */
            long p = ftell(r->fp);
            if (p > 0) r->done_bytes += (uint64_t)p;
            fclose(r->fp);
            r->fp = NULL;
            /* The record stays valid: buf is only reused by the next call. */
            *eof = false;
            return NX_OK;
        }
        for (;;) {
            uint8_t *nl = r->pos < r->len ? memchr(r->buf + r->pos, '\n', r->len - r->pos) : NULL;
            if (nl || (r->eof && r->pos < r->len)) {
                size_t end = nl ? (size_t)(nl - r->buf) : r->len;
                size_t start = r->pos;
                r->pos = nl ? end + 1 : end;
                r->line++;
                bool blank = true;
                for (size_t k = start; k < end && blank; k++)
                    if (r->buf[k] != ' ' && r->buf[k] != '\t' && r->buf[k] != '\r') blank = false;
                if (blank) continue;
                rec->data = (const char *)r->buf + start;
                rec->len = end - start;
                rec->file = r->files[r->cur];
                rec->line = r->line;
                rec->is_json = true;
                *eof = false;
                return NX_OK;
            }
            if (r->eof) break;
            NX_TRY(fill(r));
        }
        long p = ftell(r->fp);
        if (p > 0) r->done_bytes += (uint64_t)p;
        fclose(r->fp);
        r->fp = NULL;
    }
}

/* ---- UTF-8 ---------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid (overlongs, surrogates
 * and code points above U+10FFFF are invalid, as in Python's strict decoder). */
static size_t utf8_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;
        if (c == 0xED && s[1] >= 0xA0) return 0;
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;
        if (c == 0xF4 && s[1] >= 0x90) return 0;
        return 4;
    }
    return 0;
}

size_t nx__utf8_invalid_at(const char *text, size_t len) {
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) { i++; continue; }
        size_t k = utf8_seq(s + i, len - i);
        if (!k) return i;
        i += k;
    }
    return (size_t)-1;
}

/* Python's bytes.decode("utf-8", "replace"): each maximal invalid subsequence (the longest
 * prefix of a valid sequence, or one byte) becomes U+FFFD. Returns the replacements made. */
size_t nx__utf8_repair(const char *text, size_t len, nx_buf *out) {
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0, fixes = 0, run = 0;
    while (i < len) {
        size_t k = s[i] < 0x80 ? 1 : utf8_seq(s + i, len - i);
        if (k) { i += k; run += k; continue; }
        nx__buf_append(out, s + i - run, run);
        run = 0;
        /* Skip the maximal prefix of a would-be sequence: lead byte plus valid continuations. */
        size_t skip = 1;
        uint8_t c = s[i];
        size_t need = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 1;
        while (skip < need && i + skip < len && (s[i + skip] & 0xC0) == 0x80) {
            uint8_t b = s[i + skip];
            if (skip == 1 && ((c == 0xE0 && b < 0xA0) || (c == 0xED && b >= 0xA0) || (c == 0xF0 && b < 0x90) ||
                              (c == 0xF4 && b >= 0x90)))
                break;
            skip++;
        }
        nx__buf_append(out, "\xEF\xBF\xBD", 3);
        fixes++;
        i += skip;
    }
    nx__buf_append(out, s + i - run, run);
    return fixes;
}
