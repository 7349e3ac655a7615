/*
 * build.c - `neox data build`: a Pile-style corpus from a recipe (docs/DATA.md).
 *
 * Pipeline (all deterministic for a recipe and seed):
 *   1. collect: each component's sources (files, globs, directories; JSON lines or text
 *      files cut into documents by a separator) or a generator; binary files skipped;
 *      invalid UTF-8 repaired to U+FFFD; filters (length, letter ratio) applied;
 *   2. exact dedup (64-bit hash confirmed by bytes), then MinHash-LSH near dedup verified by
 *      exact shingle Jaccard >= threshold, within and across components (the first copy in
 *      recipe order wins);
 *   3. validation: a seeded fraction of each component's unique documents;
 *   4. mixing: each training document appears floor(epochs) times plus once more for a
 *      seeded fraction (epochs - floor) of documents, as the Pile up-samples components;
 *   5. a seeded shuffle (numpy-compatible MT19937) of train and of validation;
 *   6. tokenization (each unique document once, in parallel), written as DIR/train and
 *      DIR/validation indexed datasets, plus DIR/datasheet.json and DIR/DATASHEET.md.
 * The corpus is held in memory: this is for corpora of up to a few GB, not the Pile itself.
 */
#include "data/data.h"

#include <errno.h>
#include <glob.h>
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>

typedef struct {
    char *name, *description, *license;
    double epochs;
    char **sources;
    int n_sources;
    char *separator;          /* NULL: one document per file */
    int group;                /* merge this many consecutive pieces into one document */
    char **extensions;        /* only files ending in one of these (NULL: all) */
    int n_ext;
    int64_t max_files;
    int64_t min_chars, max_chars;
    double min_alpha;         /* minimum share of letters among non-space bytes */
    char *text_key;
    int gen_docs, gen_problems;   /* generator "math" when gen_docs > 0 */
    uint32_t gen_seed;
    /* stats */
    uint64_t files, files_binary, pieces, filtered, repaired, exact_dups, near_dups;
    uint64_t kept, kept_bytes, tokens, val_docs, val_tokens, train_docs, train_tokens;
    double mean_bytes, median_bytes;
    char sample[241];
} component;

typedef struct {
    char *text;
    size_t len;
    int comp;
    bool dropped, val;
    int32_t *tok;             /* tokens, EOD included */
    size_t n_tok;
} doc;

typedef struct {
    char *name, *version, *tokenizer;
    uint32_t seed;
    double val_frac;
    bool exact, near, cross;
    int shingle, perms, bands;
    double threshold;
    component *c;
    int n;
} recipe;

static void recipe_free(recipe *r) {
    for (int i = 0; i < r->n; i++) {
        component *c = &r->c[i];
        nx__free(c->name);
        nx__free(c->description);
        nx__free(c->license);
        nx__free(c->separator);
        nx__free(c->text_key);
        for (int k = 0; k < c->n_sources; k++) nx__free(c->sources[k]);
        nx__free(c->sources);
        for (int k = 0; k < c->n_ext; k++) nx__free(c->extensions[k]);
        nx__free(c->extensions);
    }
    nx__free(r->c);
    nx__free(r->name);
    nx__free(r->version);
    nx__free(r->tokenizer);
    memset(r, 0, sizeof *r);
}

/* ---- recipe parsing -------------------------------------------------------------------- */

static const char *g_rname;   /* recipe path for messages (single-threaded parse) */

static nx_status str_field(json_t *o, const char *key, bool required, const char *def, char **out) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (required) return nx__error(NX_ERR_FORMAT, "%s: missing \"%s\"", g_rname, key);
        *out = def ? nx__strdup(def) : NULL;
        return NX_OK;
    }
    if (!json_is_string(v)) return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be a string", g_rname, key);
    *out = nx__strdup(json_string_value(v));
    return *out ? NX_OK : nx__error(NX_ERR_NOMEM, "out of memory");
}

static nx_status num_field(json_t *o, const char *key, double def, double lo, double hi, double *out) {
    json_t *v = json_object_get(o, key);
    if (!v) { *out = def; return NX_OK; }
    if (!json_is_number(v)) return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be a number", g_rname, key);
    *out = json_number_value(v);
    if (!(*out >= lo && *out <= hi))
        return nx__error(NX_ERR_RANGE, "%s: \"%s\" = %g (expected %g..%g)", g_rname, key, *out, lo, hi);
    return NX_OK;
}

static nx_status str_list(json_t *o, const char *key, char ***out, int *n) {
    json_t *v = json_object_get(o, key);
    *out = NULL;
    *n = 0;
    if (!v) return NX_OK;
    if (json_is_string(v)) {
        *out = nx__calloc(1, sizeof **out);
        if (!*out || !((*out)[0] = nx__strdup(json_string_value(v)))) return nx__error(NX_ERR_NOMEM, "out of memory");
        *n = 1;
        return NX_OK;
    }
    if (!json_is_array(v)) return nx__error(NX_ERR_FORMAT, "%s: \"%s\" must be a string or a list of strings", g_rname, key);
    size_t m = json_array_size(v);
    *out = nx__calloc(m ? m : 1, sizeof **out);
    if (!*out) return nx__error(NX_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < m; i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s)) return nx__error(NX_ERR_FORMAT, "%s: \"%s\"[%zu] must be a string", g_rname, key, i);
        if (!((*out)[i] = nx__strdup(json_string_value(s)))) return nx__error(NX_ERR_NOMEM, "out of memory");
        (*n)++;
    }
    return NX_OK;
}

static nx_status parse_component(json_t *o, int idx, component *c) {
    if (!json_is_object(o)) return nx__error(NX_ERR_FORMAT, "%s: components[%d] must be an object", g_rname, idx);
    double d = 0;
    NX_TRY(str_field(o, "name", true, NULL, &c->name));
    NX_TRY(str_field(o, "description", false, "", &c->description));
    NX_TRY(str_field(o, "license", false, "unknown", &c->license));
    NX_TRY(str_field(o, "separator", false, NULL, &c->separator));
    NX_TRY(str_field(o, "text_key", false, "text", &c->text_key));
    NX_TRY(num_field(o, "epochs", 1.0, 0.0, 100.0, &c->epochs));
    NX_TRY(num_field(o, "group", 1, 1, 1e6, &d));
    c->group = (int)d;
    NX_TRY(num_field(o, "max_files", 0, 0, 1e12, &d));
    c->max_files = (int64_t)d;
    NX_TRY(str_list(o, "sources", &c->sources, &c->n_sources));
    NX_TRY(str_list(o, "extensions", &c->extensions, &c->n_ext));
    json_t *f = json_object_get(o, "filters");
    if (f && !json_is_object(f)) return nx__error(NX_ERR_FORMAT, "%s: components[%d].filters must be an object", g_rname, idx);
    json_t *empty = json_object();
    if (!f) f = empty;
    nx_status st = num_field(f, "min_chars", 1, 0, 1e12, &d);
    c->min_chars = (int64_t)d;
    if (st == NX_OK) st = num_field(f, "max_chars", 0, 0, 1e12, &d);
    c->max_chars = (int64_t)d;
    if (st == NX_OK) st = num_field(f, "min_alpha", 0, 0, 1, &c->min_alpha);
    json_decref(empty);
    NX_TRY(st);
    json_t *g = json_object_get(o, "generator");
    if (g) {
        char *type = NULL;
        if (!json_is_object(g)) return nx__error(NX_ERR_FORMAT, "%s: components[%d].generator must be an object", g_rname, idx);
        NX_TRY(str_field(g, "type", true, NULL, &type));
        bool ok = strcmp(type, "math") == 0;
        nx__free(type);
        if (!ok) return nx__error(NX_ERR_UNSUPPORTED, "%s: components[%d].generator.type must be \"math\"", g_rname, idx);
        NX_TRY(num_field(g, "docs", 1000, 1, 1e8, &d));
        c->gen_docs = (int)d;
        NX_TRY(num_field(g, "problems_per_doc", 20, 1, 1e5, &d));
        c->gen_problems = (int)d;
        NX_TRY(num_field(g, "seed", 1, 0, 4294967295.0, &d));
        c->gen_seed = (uint32_t)d;
    } else if (c->n_sources == 0) {
        return nx__error(NX_ERR_FORMAT, "%s: component \"%s\" has neither \"sources\" nor a \"generator\"", g_rname, c->name);
    }
    return NX_OK;
}

static nx_status parse_recipe(const char *path, recipe *r) {
    memset(r, 0, sizeof *r);
    g_rname = path;
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        if (!nx__file_exists(path)) return nx__error(NX_ERR_IO, "%s: cannot read recipe", path);
        return nx__error(NX_ERR_FORMAT, "%s:%d: invalid JSON: %s", path, jerr.line, jerr.text);
    }
    nx_status st = NX_OK;
    double d = 0;
    if (!json_is_object(root)) st = nx__error(NX_ERR_FORMAT, "%s: a recipe is a JSON object", path);
    if (st == NX_OK) st = str_field(root, "name", true, NULL, &r->name);
    if (st == NX_OK) st = str_field(root, "version", false, "1", &r->version);
    if (st == NX_OK) st = str_field(root, "tokenizer", false, NULL, &r->tokenizer);
    if (st == NX_OK) st = num_field(root, "seed", 1234, 0, 4294967295.0, &d);
    r->seed = (uint32_t)d;
    if (st == NX_OK) st = num_field(root, "validation_fraction", 0.01, 0, 0.5, &r->val_frac);
    json_t *dd = json_object_get(root, "dedup");
    json_t *empty = json_object();
    if (st == NX_OK && dd && !json_is_object(dd)) st = nx__error(NX_ERR_FORMAT, "%s: \"dedup\" must be an object", path);
    if (!dd || !json_is_object(dd)) dd = empty;
    if (st == NX_OK) {
        json_t *e = json_object_get(dd, "exact"), *n = json_object_get(dd, "near"), *x = json_object_get(dd, "across_components");
        r->exact = !e || json_is_true(e);
        r->near = !n || json_is_true(n);
        r->cross = !x || json_is_true(x);
        st = num_field(dd, "shingle", 5, 1, 64, &d);
        r->shingle = (int)d;
        if (st == NX_OK) st = num_field(dd, "permutations", 128, 1, 1024, &d);
        r->perms = (int)d;
        if (st == NX_OK) st = num_field(dd, "bands", 16, 1, 1024, &d);
        r->bands = (int)d;
        if (st == NX_OK) st = num_field(dd, "threshold", 0.87, 0.0, 1.0, &r->threshold);
        if (st == NX_OK && r->perms % r->bands != 0)
            st = nx__error(NX_ERR_RANGE, "%s: dedup.permutations (%d) must be a multiple of dedup.bands (%d)", path, r->perms, r->bands);
    }
    json_decref(empty);
    json_t *comps = json_object_get(root, "components");
    if (st == NX_OK && (!json_is_array(comps) || json_array_size(comps) == 0 || json_array_size(comps) > 250))
        st = nx__error(NX_ERR_FORMAT, "%s: \"components\" must be a list of 1..250 components", path);
    if (st == NX_OK) {
        r->c = nx__calloc(json_array_size(comps), sizeof *r->c);
        if (!r->c) st = nx__error(NX_ERR_NOMEM, "out of memory");
        for (size_t i = 0; st == NX_OK && i < json_array_size(comps); i++) {
            r->n++;
            st = parse_component(json_array_get(comps, i), (int)i, &r->c[i]);
        }
    }
    json_decref(root);
    if (st != NX_OK) recipe_free(r);
    return st;
}

nx_status nx_data_recipe_tokenizer(const char *recipe_path, char *out, size_t cap) {
    out[0] = 0;
    recipe r;
    NX_TRY(parse_recipe(recipe_path, &r));
    if (r.tokenizer) snprintf(out, cap, "%s", r.tokenizer);
    recipe_free(&r);
    return NX_OK;
}

/* ---- collection ------------------------------------------------------------------------- */

typedef struct {
    doc *d;
    size_t n, cap;
} doc_list;

static nx_status push_doc(doc_list *l, const char *text, size_t len, int comp, component *c) {
    c->pieces++;
    /* UTF-8 repair first, so filters and dedup see the text that is tokenized. */
    nx_buf b = {0};
    if (nx__utf8_invalid_at(text, len) != (size_t)-1) {
        nx__utf8_repair(text, len, &b);
        if (b.oom) { nx__buf_free(&b); return nx__error(NX_ERR_NOMEM, "out of memory"); }
        text = b.data;
        len = b.len;
        c->repaired++;
    }
    size_t letters = 0, nonspace = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t ch = (uint8_t)text[i];
        if (ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r') continue;
        nonspace++;
        if ((ch | 32) >= 'a' && (ch | 32) <= 'z') letters++;
        else if (ch >= 0xC0) letters++;   /* a non-ASCII character's lead byte */
    }
    if ((int64_t)len < c->min_chars || (c->max_chars && (int64_t)len > c->max_chars) || nonspace == 0 ||
        (double)letters < c->min_alpha * (double)nonspace) {
        c->filtered++;
        nx__buf_free(&b);
        return NX_OK;
    }
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4096;
        doc *nd = nx__realloc(l->d, nc * sizeof *nd);
        if (!nd) { nx__buf_free(&b); return nx__error(NX_ERR_NOMEM, "out of memory"); }
        l->d = nd;
        l->cap = nc;
    }
    doc *d = &l->d[l->n];
    memset(d, 0, sizeof *d);
    d->text = nx__malloc(len + 1);
    if (!d->text) { nx__buf_free(&b); return nx__error(NX_ERR_NOMEM, "out of memory"); }
    memcpy(d->text, text, len);
    d->text[len] = 0;
    d->len = len;
    d->comp = comp;
    l->n++;
    nx__buf_free(&b);
    return NX_OK;
}

static bool has_ext(const component *c, const char *p) {
    if (!c->n_ext) return true;
    size_t n = strlen(p);
    for (int i = 0; i < c->n_ext; i++) {
        size_t e = strlen(c->extensions[i]);
        if (n >= e && strcmp(p + n - e, c->extensions[i]) == 0) return true;
    }
    return false;
}

typedef struct {
    char **p;
    size_t n, cap;
} path_list;

static nx_status add_path(path_list *pl, const char *p) {
    if (pl->n == pl->cap) {
        size_t nc = pl->cap ? pl->cap * 2 : 256;
        char **np = nx__realloc(pl->p, nc * sizeof *np);
        if (!np) return nx__error(NX_ERR_NOMEM, "out of memory");
        pl->p = np;
        pl->cap = nc;
    }
    if (!(pl->p[pl->n] = nx__strdup(p))) return nx__error(NX_ERR_NOMEM, "out of memory");
    pl->n++;
    return NX_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static nx_status walk(path_list *pl, const char *path, const component *c, int depth) {
    struct stat sb;
    if (lstat(path, &sb) != 0 || S_ISLNK(sb.st_mode)) return NX_OK;
    if (S_ISREG(sb.st_mode)) return has_ext(c, path) ? add_path(pl, path) : NX_OK;
    if (!S_ISDIR(sb.st_mode) || depth > 32) return NX_OK;
    glob_t g;
    char *pat = nx__path_join(path, "*");
    if (!pat) return nx__error(NX_ERR_NOMEM, "out of memory");
    int rc = glob(pat, 0, NULL, &g);
    nx__free(pat);
    if (rc == GLOB_NOMATCH) return NX_OK;
    if (rc != 0) return nx__error(NX_ERR_IO, "%s: cannot list", path);
    nx_status st = NX_OK;
    for (size_t i = 0; st == NX_OK && i < g.gl_pathc; i++) st = walk(pl, g.gl_pathv[i], c, depth + 1);
    globfree(&g);
    return st;
}

/* Expands "${VAR}" from the environment (recipes point at staging directories this way). */
static nx_status expand_env(const char *in, const char *rname, char **out) {
    nx_buf b = {0};
    const char *p = in;
    while (*p) {
        if (p[0] == '$' && p[1] == '{') {
            const char *e = strchr(p, '}');
            if (!e) { nx__buf_free(&b); return nx__error(NX_ERR_FORMAT, "%s: unterminated ${ in \"%s\"", rname, in); }
            char var[128];
            size_t n = NX_MIN((size_t)(e - p - 2), sizeof var - 1);
            memcpy(var, p + 2, n);
            var[n] = 0;
            const char *v = getenv(var);
            if (!v || !*v) {
                nx__buf_free(&b);
                return nx__error(NX_ERR_NOT_FOUND, "%s: source \"%s\" needs the environment variable %s", rname, in, var);
            }
            nx__buf_append(&b, v, strlen(v));
            p = e + 1;
        } else {
            nx__buf_append(&b, p, 1);
            p++;
        }
    }
    nx__buf_append(&b, "", 1);
    if (b.oom) { nx__buf_free(&b); return nx__error(NX_ERR_NOMEM, "out of memory"); }
    *out = b.data;
    return NX_OK;
}

static nx_status collect_component(const recipe *r, const char *rdir, int ci, doc_list *l) {
    component *c = &r->c[ci];
    if (c->gen_docs > 0) {
        nx_mt19937 mt;
        nx_mt19937_seed(&mt, c->gen_seed);
        nx_buf b = {0};
        for (int i = 0; i < c->gen_docs; i++) {
            b.len = 0;
            nx__mathgen_doc(&mt, c->gen_problems, &b);
            if (b.oom) { nx__buf_free(&b); return nx__error(NX_ERR_NOMEM, "out of memory"); }
            nx_status st = push_doc(l, b.data, b.len, ci, c);
            if (st != NX_OK) { nx__buf_free(&b); return st; }
        }
        nx__buf_free(&b);
        return NX_OK;
    }
    path_list pl = {0};
    nx_status st = NX_OK;
    for (int s = 0; st == NX_OK && s < c->n_sources; s++) {
        char *src = NULL;
        st = expand_env(c->sources[s], g_rname, &src);
        if (st != NX_OK) break;
        char *full = src[0] == '/' ? nx__strdup(src) : nx__path_join(rdir, src);
        nx__free(src);
        if (!full) { st = nx__error(NX_ERR_NOMEM, "out of memory"); break; }
        glob_t g;
        int rc = glob(full, 0, NULL, &g);
        if (rc == 0) {
            for (size_t i = 0; st == NX_OK && i < g.gl_pathc; i++) st = walk(&pl, g.gl_pathv[i], c, 0);
            globfree(&g);
        } else if (rc != GLOB_NOMATCH) {
            st = nx__error(NX_ERR_IO, "%s: cannot expand source \"%s\"", g_rname, full);
        }
        nx__free(full);
    }
    if (st == NX_OK && pl.n == 0)
        st = nx__error(NX_ERR_NOT_FOUND, "%s: component \"%s\": its sources match no files (install packages.d/data.txt?)",
                       g_rname, c->name);
    if (st == NX_OK) {
        qsort(pl.p, pl.n, sizeof *pl.p, cmp_str);
        size_t u = 0;   /* overlapping sources must not double-count a file */
        for (size_t i = 0; i < pl.n; i++) {
            if (u && strcmp(pl.p[i], pl.p[u - 1]) == 0) { nx__free(pl.p[i]); continue; }
            pl.p[u++] = pl.p[i];
        }
        pl.n = u;
    }
    size_t limit = c->max_files > 0 ? NX_MIN(pl.n, (size_t)c->max_files) : pl.n;
    nx_buf grp = {0};
    int in_group = 0;
    for (size_t i = 0; st == NX_OK && i < limit; i++) {
        const char *p = pl.p[i];
        size_t n = strlen(p);
        bool jsonl = (n > 6 && strcmp(p + n - 6, ".jsonl") == 0) || (n > 10 && strcmp(p + n - 10, ".jsonl.zst") == 0);
        c->files++;
        if (jsonl) {
            nx_doc_reader *rd = NULL;
            const char *one[1] = {p};
            st = nx__doc_reader_open(one, 1, &rd);
            bool eof = false;
            while (st == NX_OK) {
                nx_raw_record rec;
                st = nx__doc_reader_next(rd, &rec, &eof);
                if (st != NX_OK || eof) break;
                json_t *o = json_loadb(rec.data, rec.len, JSON_ALLOW_NUL, NULL);
                json_t *t = o ? json_object_get(o, c->text_key) : NULL;
                if (t && json_is_string(t)) st = push_doc(l, json_string_value(t), json_string_length(t), ci, c);
                else c->filtered++;
                json_decref(o);
            }
            nx__doc_reader_free(rd);
            continue;
        }
        char *text = NULL;
        size_t len = 0;
        st = nx__file_read_all(p, &text, &len);
        if (st != NX_OK) break;
        if (memchr(text, 0, NX_MIN(len, (size_t)8192))) {   /* binary: not text */
            c->files_binary++;
            nx__free(text);
            continue;
        }
        if (!c->separator) {
            st = push_doc(l, text, len, ci, c);
        } else {
            /* Cut at the separator; `group` consecutive pieces form one document. */
            size_t sl = strlen(c->separator), pos = 0;
            while (st == NX_OK && pos <= len) {
                const char *hit = sl ? strstr(text + pos, c->separator) : NULL;   /* text is NUL-terminated */
                size_t end = hit ? (size_t)(hit - text) : len;
                size_t a = pos, z = end;
                while (a < z && (text[a] == '\n' || text[a] == ' ')) a++;
                while (z > a && (text[z - 1] == '\n' || text[z - 1] == ' ')) z--;
                if (z > a) {
                    if (in_group) nx__buf_append(&grp, "\n\n", 2);
                    nx__buf_append(&grp, text + a, z - a);
                    if (++in_group >= c->group) {
                        st = push_doc(l, grp.data, grp.len, ci, c);
                        grp.len = 0;
                        in_group = 0;
                    }
                }
                if (!hit) break;
                pos = end + sl;
            }
        }
        nx__free(text);
    }
    if (st == NX_OK && in_group) st = push_doc(l, grp.data, grp.len, ci, c);
    nx__buf_free(&grp);
    for (size_t i = 0; i < pl.n; i++) nx__free(pl.p[i]);
    nx__free(pl.p);
    return st;
}

/* ---- dedup ------------------------------------------------------------------------------ */

static nx_status exact_dedup(const recipe *r, doc_list *l) {
    size_t cap = 1024;
    while (cap < l->n * 2) cap *= 2;
    int64_t *tab = nx__malloc(cap * sizeof *tab);
    uint64_t *hs = nx__malloc(cap * sizeof *hs);
    if (!tab || !hs) { nx__free(tab); nx__free(hs); return nx__error(NX_ERR_NOMEM, "out of memory"); }
    for (size_t i = 0; i < cap; i++) tab[i] = -1;
    for (size_t i = 0; i < l->n; i++) {
        doc *d = &l->d[i];
        /* Within-component only: the component id is part of the key. */
        uint64_t h = nx__hash64(d->text, d->len, r->cross ? 0 : (uint64_t)d->comp + 1);
        size_t s = (size_t)h & (cap - 1);
        bool dup = false;
        while (tab[s] >= 0) {
            doc *o = &l->d[tab[s]];
            if (hs[s] == h && o->len == d->len && memcmp(o->text, d->text, d->len) == 0 && (r->cross || o->comp == d->comp)) {
                dup = true;
                break;
            }
            s = (s + 1) & (cap - 1);
        }
        if (dup) {
            d->dropped = true;
            r->c[d->comp].exact_dups++;
        } else {
            tab[s] = (int64_t)i;
            hs[s] = h;
        }
    }
    nx__free(tab);
    nx__free(hs);
    return NX_OK;
}

typedef struct {
    const recipe *r;
    doc_list *l;
    size_t *live;      /* indices of documents still in */
    size_t n_live;
    uint64_t *sigs;    /* n_live * perms */
    bool oom;
} sig_job;

static void sig_worker(int ith, int nth, void *arg) {
    sig_job *j = arg;
    uint64_t *sh = NULL;
    size_t cap = 0;
    for (size_t k = (size_t)ith; k < j->n_live; k += (size_t)nth) {
        doc *d = &j->l->d[j->live[k]];
        long n = nx__shingles(d->text, d->len, j->r->shingle, &sh, &cap);
        if (n < 0) { j->oom = true; break; }
        nx__minhash_signature(sh, (size_t)n, j->r->perms, j->sigs + k * (size_t)j->r->perms);
    }
    nx__free(sh);
}

typedef struct {
    const recipe *r;
    doc_list *l;
    size_t *live;
    const uint64_t *cur;    /* current document's shingles */
    size_t n_cur;
    int comp;
    uint64_t *tmp;
    size_t tmp_cap;
    bool oom;
} near_q;

static bool verify_candidate(int64_t k, void *user) {
    near_q *q = user;
    doc *o = &q->l->d[q->live[k]];
    if (!q->r->cross && o->comp != q->comp) return false;
    long n = nx__shingles(o->text, o->len, q->r->shingle, &q->tmp, &q->tmp_cap);
    if (n < 0) { q->oom = true; return true; }
    return nx__jaccard_sorted(q->cur, q->n_cur, q->tmp, (size_t)n) >= q->r->threshold;
}

static nx_status near_dedup(const recipe *r, doc_list *l, nx_pool *pool) {
    sig_job j = {.r = r, .l = l};
    j.live = nx__malloc((l->n ? l->n : 1) * sizeof *j.live);
    if (!j.live) return nx__error(NX_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < l->n; i++)
        if (!l->d[i].dropped) j.live[j.n_live++] = i;
    j.sigs = nx__malloc((j.n_live ? j.n_live : 1) * (size_t)r->perms * sizeof *j.sigs);
    nx_lsh *lsh = nx__lsh_create(r->bands, r->perms / r->bands, j.n_live);
    nx_status st = NX_OK;
    if (!j.sigs || !lsh) st = nx__error(NX_ERR_NOMEM, "out of memory");
    if (st == NX_OK) nx_pool_run(pool, sig_worker, &j);
    if (st == NX_OK && j.oom) st = nx__error(NX_ERR_NOMEM, "out of memory computing MinHash signatures");
    near_q q = {.r = r, .l = l, .live = j.live};
    uint64_t *cur = NULL;
    size_t cur_cap = 0;
    /* Sequential in document order: a document is dropped when an earlier KEPT one is at
     * least `threshold` similar (exact Jaccard). LSH ids are live indices of kept docs. */
    for (size_t k = 0; st == NX_OK && k < j.n_live; k++) {
        doc *d = &l->d[j.live[k]];
        long n = nx__shingles(d->text, d->len, r->shingle, &cur, &cur_cap);
        if (n < 0) { st = nx__error(NX_ERR_NOMEM, "out of memory"); break; }
        q.cur = cur;
        q.n_cur = (size_t)n;
        q.comp = d->comp;
        const uint64_t *sig = j.sigs + k * (size_t)r->perms;
        bool dup = nx__lsh_query(lsh, sig, verify_candidate, &q);
        if (q.oom) { st = nx__error(NX_ERR_NOMEM, "out of memory"); break; }
        if (dup) {
            d->dropped = true;
            r->c[d->comp].near_dups++;
        } else {
            st = nx__lsh_insert(lsh, (int64_t)k, sig);
        }
    }
    nx__free(cur);
    nx__free(q.tmp);
    nx__lsh_free(lsh);
    nx__free(j.sigs);
    nx__free(j.live);
    return st;
}

/* ---- tokenization of the kept documents --------------------------------------------------- */

typedef struct {
    doc_list *l;
    const nx_build_opts *o;
    size_t *idx;
    size_t n;
    size_t *split;
    nx_status *st;
} tok_job;

static void tok_worker(int ith, int nth, void *arg) {
    tok_job *j = arg;
    nx_token_buf b = {0};
    for (size_t k = j->split[ith]; k < j->split[ith + 1]; k++) {
        doc *d = &j->l->d[j->idx[k]];
        b.len = 0;
        nx_status st = j->o->encode(j->o->encode_ctx, d->text, d->len, &b);
        if (st == NX_OK) st = nx_token_buf_reserve(&b, b.len + 1);
        if (st != NX_OK) { j->st[ith] = st; break; }
        b.data[b.len++] = j->o->eod_id;
        d->tok = nx__malloc(b.len * sizeof *d->tok);
        if (!d->tok) { j->st[ith] = NX_ERR_NOMEM; break; }
        memcpy(d->tok, b.data, b.len * sizeof *d->tok);
        d->n_tok = b.len;
    }
    nx_token_buf_free(&b);
}

static nx_status write_split(const char *dir, const char *name, doc_list *l, const size_t *order, size_t n, int code) {
    char *prefix = nx__path_join(dir, name);
    if (!prefix) return nx__error(NX_ERR_NOMEM, "out of memory");
    nx_indexed_writer *w = NULL;
    nx_status st = nx_indexed_writer_create(prefix, code, &w);
    for (size_t i = 0; st == NX_OK && i < n; i++) {
        doc *d = &l->d[order[i]];
        st = nx_indexed_writer_add_document(w, d->tok, d->n_tok);
    }
    if (st == NX_OK) st = nx_indexed_writer_finish(w);
    nx_indexed_writer_free(w);
    nx__free(prefix);
    return st;
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* ---- datasheet ---------------------------------------------------------------------------- */

static void sample_of(component *c, const doc *d) {
    /* One short sample: the first 240 bytes, cut at a character boundary, on one line. */
    size_t n = NX_MIN(d->len, sizeof c->sample - 1);
    while (n > 0 && n < d->len && ((uint8_t)d->text[n] & 0xC0) == 0x80) n--;
    for (size_t i = 0; i < n; i++) {
        char ch = d->text[i];
        c->sample[i] = (ch == '\n' || ch == '\t' || ch == '\r' || ch == '|') ? ' ' : ch;
    }
    c->sample[n] = 0;
}

static nx_status write_text(const char *dir, const char *name, const char *data, size_t len) {
    char *path = nx__path_join(dir, name);
    if (!path) return nx__error(NX_ERR_NOMEM, "out of memory");
    nx_atomic_file af;
    nx_status st = nx__atomic_open(&af, path);
    if (st == NX_OK) st = nx__atomic_write(&af, data, len);
    if (st == NX_OK) st = nx__atomic_commit(&af);
    else nx__atomic_abort(&af);
    nx__free(path);
    return st;
}

static nx_status write_datasheet(const char *dir, const char *recipe_path, const recipe *r, const nx_build_opts *o,
                                 const char *recipe_text, size_t recipe_len) {
    uint64_t tot_docs = 0, tot_bytes = 0, tot_tok = 0, tot_train = 0, tot_val = 0, tot_val_tok = 0, tot_ex = 0,
             tot_near = 0, tot_train_docs = 0;
    for (int i = 0; i < r->n; i++) {
        tot_docs += r->c[i].kept;
        tot_bytes += r->c[i].kept_bytes;
        tot_tok += r->c[i].tokens;
        tot_train += r->c[i].train_tokens;
        tot_train_docs += r->c[i].train_docs;
        tot_val += r->c[i].val_docs;
        tot_val_tok += r->c[i].val_tokens;
        tot_ex += r->c[i].exact_dups;
        tot_near += r->c[i].near_dups;
    }
    json_t *root = json_object(), *comps = json_array();
    json_object_set_new(root, "name", json_string(r->name));
    json_object_set_new(root, "recipe_version", json_string(r->version));
    json_object_set_new(root, "recipe", json_string(recipe_path));
    json_object_set_new(root, "recipe_sha", json_sprintf("%016llx", (unsigned long long)nx__hash64(recipe_text, recipe_len, 0)));
    json_object_set_new(root, "builder", json_sprintf("neox %s", nx_version()));
    json_object_set_new(root, "tokenizer", json_string(o->tokenizer_name ? o->tokenizer_name : ""));
    json_object_set_new(root, "seed", json_integer(r->seed));
    json_object_set_new(root, "validation_fraction", json_real(r->val_frac));
    json_t *dd = json_object();
    json_object_set_new(dd, "exact", json_boolean(r->exact));
    json_object_set_new(dd, "near", json_boolean(r->near));
    json_object_set_new(dd, "across_components", json_boolean(r->cross));
    json_object_set_new(dd, "shingle_words", json_integer(r->shingle));
    json_object_set_new(dd, "permutations", json_integer(r->perms));
    json_object_set_new(dd, "bands", json_integer(r->bands));
    json_object_set_new(dd, "threshold", json_real(r->threshold));
    json_object_set_new(root, "dedup", dd);
    for (int i = 0; i < r->n; i++) {
        const component *c = &r->c[i];
        json_t *j = json_object();
        json_object_set_new(j, "name", json_string(c->name));
        json_object_set_new(j, "description", json_string(c->description));
        json_object_set_new(j, "license", json_string(c->license));
        json_object_set_new(j, "files", json_integer((json_int_t)c->files));
        json_object_set_new(j, "binary_files_skipped", json_integer((json_int_t)c->files_binary));
        json_object_set_new(j, "raw_documents", json_integer((json_int_t)c->pieces));
        json_object_set_new(j, "filtered", json_integer((json_int_t)c->filtered));
        json_object_set_new(j, "utf8_repaired", json_integer((json_int_t)c->repaired));
        json_object_set_new(j, "duplicates_exact", json_integer((json_int_t)c->exact_dups));
        json_object_set_new(j, "duplicates_near", json_integer((json_int_t)c->near_dups));
        json_object_set_new(j, "documents", json_integer((json_int_t)c->kept));
        json_object_set_new(j, "bytes", json_integer((json_int_t)c->kept_bytes));
        json_object_set_new(j, "tokens", json_integer((json_int_t)c->tokens));
        json_object_set_new(j, "mean_doc_bytes", json_real(c->mean_bytes));
        json_object_set_new(j, "median_doc_bytes", json_real(c->median_bytes));
        json_object_set_new(j, "epochs", json_real(c->epochs));
        json_object_set_new(j, "train_documents", json_integer((json_int_t)c->train_docs));
        json_object_set_new(j, "train_tokens", json_integer((json_int_t)c->train_tokens));
        json_object_set_new(j, "effective_share", json_real(tot_train ? (double)c->train_tokens / (double)tot_train : 0.0));
        json_object_set_new(j, "validation_documents", json_integer((json_int_t)c->val_docs));
        json_object_set_new(j, "validation_tokens", json_integer((json_int_t)c->val_tokens));
        json_object_set_new(j, "sample", json_string(c->sample));
        json_array_append_new(comps, j);
    }
    json_object_set_new(root, "components", comps);
    json_t *t = json_object();
    json_object_set_new(t, "documents", json_integer((json_int_t)tot_docs));
    json_object_set_new(t, "bytes", json_integer((json_int_t)tot_bytes));
    json_object_set_new(t, "tokens", json_integer((json_int_t)tot_tok));
    json_object_set_new(t, "duplicates_exact", json_integer((json_int_t)tot_ex));
    json_object_set_new(t, "duplicates_near", json_integer((json_int_t)tot_near));
    json_object_set_new(t, "train_documents", json_integer((json_int_t)tot_train_docs));
    json_object_set_new(t, "train_tokens", json_integer((json_int_t)tot_train));
    json_object_set_new(t, "validation_documents", json_integer((json_int_t)tot_val));
    json_object_set_new(t, "validation_tokens", json_integer((json_int_t)tot_val_tok));
    json_object_set_new(root, "totals", t);
    char *js = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!js) return nx__error(NX_ERR_NOMEM, "out of memory");
    nx_status st = write_text(dir, "datasheet.json", js, strlen(js));
    free(js);   /* jansson's allocator */
    NX_TRY(st);

    nx_buf m = {0};
    nx__buf_printf(&m, "# Datasheet: %s (recipe version %s)\n\n", r->name, r->version);
    nx__buf_printf(&m, "Built by neox %s from `%s` (recipe hash %016llx) with tokenizer `%s`, seed %u.\n\n",
                   nx_version(), recipe_path, (unsigned long long)nx__hash64(recipe_text, recipe_len, 0),
                   o->tokenizer_name ? o->tokenizer_name : "", r->seed);
    nx__buf_printf(&m, "Files: `train.bin/.idx` and `validation.bin/.idx` (Megatron/GPT-NeoX indexed datasets, one "
                   "item per document, EOD appended).\n\n");
    nx__buf_printf(&m, "Deduplication: exact %s; near %s (MinHash over %d-word shingles, %d permutations, %d bands, "
                   "verified exact Jaccard >= %.2f), %s components.\n\n", r->exact ? "on" : "off",
                   r->near ? "on" : "off", r->shingle, r->perms, r->bands, r->threshold,
                   r->cross ? "within and across" : "within");
    nx__buf_printf(&m, "| component | docs | bytes | tokens | mean doc (B) | median doc (B) | exact dups | near dups | "
                   "epochs | effective share | license |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < r->n; i++) {
        const component *c = &r->c[i];
        nx__buf_printf(&m, "| %s | %llu | %llu | %llu | %.0f | %.0f | %llu | %llu | %.2f | %.2f%% | %s |\n", c->name,
                       (unsigned long long)c->kept, (unsigned long long)c->kept_bytes, (unsigned long long)c->tokens,
                       c->mean_bytes, c->median_bytes, (unsigned long long)c->exact_dups,
                       (unsigned long long)c->near_dups, c->epochs,
                       tot_train ? 100.0 * (double)c->train_tokens / (double)tot_train : 0.0, c->license);
    }
    nx__buf_printf(&m, "| **total** | %llu | %llu | %llu | | | %llu | %llu | | 100%% | |\n\n",
                   (unsigned long long)tot_docs, (unsigned long long)tot_bytes, (unsigned long long)tot_tok,
                   (unsigned long long)tot_ex, (unsigned long long)tot_near);
    nx__buf_printf(&m, "Train: %llu documents, %llu tokens (after epochs). Validation: %llu documents, %llu tokens.\n\n",
                   (unsigned long long)tot_train_docs, (unsigned long long)tot_train, (unsigned long long)tot_val,
                   (unsigned long long)tot_val_tok);
    nx__buf_printf(&m, "## Components\n\n");
    for (int i = 0; i < r->n; i++) {
        const component *c = &r->c[i];
        nx__buf_printf(&m, "### %s\n\n%s\n\n- License: %s\n- Files read: %llu (binary skipped: %llu); raw documents: "
                       "%llu; filtered: %llu; UTF-8 repaired: %llu\n- Sample: `%s`\n\n", c->name, c->description,
                       c->license, (unsigned long long)c->files, (unsigned long long)c->files_binary,
                       (unsigned long long)c->pieces, (unsigned long long)c->filtered,
                       (unsigned long long)c->repaired, c->sample);
    }
    if (m.oom) { nx__buf_free(&m); return nx__error(NX_ERR_NOMEM, "out of memory"); }
    st = write_text(dir, "DATASHEET.md", m.data, m.len);
    nx__buf_free(&m);
    return st;
}

/* ---- the build ---------------------------------------------------------------------------- */

static void logf_(const nx_build_opts *o, const char *fmt, ...) NX_PRINTF(2, 3);
static void logf_(const nx_build_opts *o, const char *fmt, ...) {
    if (!o->log) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->log(msg, o->user);
}

nx_status nx_data_build(const char *recipe_path, const char *out_dir, const nx_build_opts *o) {
    if (!o || !o->encode) return nx__error(NX_ERR_INVALID_ARG, "build: no encoder");
    recipe r;
    NX_TRY(parse_recipe(recipe_path, &r));
    char *rtext = NULL;
    size_t rlen = 0;
    nx_status st = nx__file_read_all(recipe_path, &rtext, &rlen);
    const char *slash = strrchr(recipe_path, '/');
    char *rdir = slash ? nx__strndup(recipe_path, (size_t)(slash - recipe_path)) : nx__strdup(".");
    doc_list l = {0};
    nx_pool *pool = nx_pool_create(o->n_threads);
    int nth = nx_pool_size(pool);
    size_t *train = NULL, *val = NULL, *uniq = NULL;
    size_t n_train = 0, n_val = 0, n_uniq = 0;
    if (st == NX_OK && (!rdir || !pool)) st = nx__error(NX_ERR_NOMEM, "out of memory");
    if (st == NX_OK) st = nx__mkdir_p(out_dir);
    double t0 = nx_time_s();
    for (int i = 0; st == NX_OK && i < r.n; i++) {
        size_t before = l.n;
        st = collect_component(&r, rdir, i, &l);
        if (st == NX_OK) logf_(o, "collect %-28s %6llu files -> %7zu documents", r.c[i].name,
                               (unsigned long long)r.c[i].files, l.n - before);
    }
    if (st == NX_OK && r.exact) st = exact_dedup(&r, &l);
    if (st == NX_OK && r.near) {
        st = near_dedup(&r, &l, pool);
        logf_(o, "dedup done (%.1f s)", nx_time_s() - t0);
    }
    /* Per-component kept lists, validation choice and epochs. */
    nx_mt19937 mt;
    nx_mt19937_seed(&mt, r.seed);
    if (st == NX_OK) {
        uniq = nx__malloc((l.n ? l.n : 1) * sizeof *uniq);
        val = nx__malloc((l.n ? l.n : 1) * sizeof *val);
        size_t train_cap = 0;
        for (size_t i = 0; i < l.n; i++)
            if (!l.d[i].dropped) train_cap += (size_t)ceil(r.c[l.d[i].comp].epochs) + 1;
        train = nx__malloc((train_cap ? train_cap : 1) * sizeof *train);
        if (!uniq || !val || !train) st = nx__error(NX_ERR_NOMEM, "out of memory");
    }
    size_t *tmp = NULL;
    if (st == NX_OK && !(tmp = nx__malloc((l.n ? l.n : 1) * sizeof *tmp))) st = nx__error(NX_ERR_NOMEM, "out of memory");
    for (int ci = 0; st == NX_OK && ci < r.n; ci++) {
        component *c = &r.c[ci];
        size_t m = 0;
        for (size_t i = 0; i < l.n; i++)
            if (!l.d[i].dropped && l.d[i].comp == ci) tmp[m++] = i;
        c->kept = m;
        if (m == 0) {
            logf_(o, "warning: component \"%s\" has no documents left", c->name);
            continue;
        }
        sample_of(c, &l.d[tmp[0]]);
        size_t *lens = nx__malloc(m * sizeof *lens);
        if (!lens) { st = nx__error(NX_ERR_NOMEM, "out of memory"); break; }
        for (size_t k = 0; k < m; k++) {
            lens[k] = l.d[tmp[k]].len;
            c->kept_bytes += lens[k];
            uniq[n_uniq++] = tmp[k];
        }
        qsort(lens, m, sizeof *lens, cmp_size);
        c->mean_bytes = (double)c->kept_bytes / (double)m;
        c->median_bytes = m % 2 ? (double)lens[m / 2] : 0.5 * ((double)lens[m / 2 - 1] + (double)lens[m / 2]);
        nx__free(lens);
        /* Validation: a seeded choice of round(frac * m) unique documents (none from a
         * component of one document), never repeated. */
        size_t nv = (size_t)nearbyint(r.val_frac * (double)m);
        if (m < 2) nv = 0;
        if (nv >= m) nv = m - 1;
        nx_mt19937_shuffle(&mt, tmp, m, sizeof(size_t) == 8 ? 8 : 4);
        for (size_t k = 0; k < nv; k++) { l.d[tmp[k]].val = true; val[n_val++] = tmp[k]; }
        c->val_docs = nv;
        /* Epochs: floor(e) copies of every training document, plus one more for a seeded
         * round(frac(e) * n) of them (tmp is already in a seeded random order). */
        double whole = floor(c->epochs), frac = c->epochs - whole;
        size_t n_tr = m - nv, extra = (size_t)nearbyint(frac * (double)n_tr);
        for (size_t k = nv; k < m; k++) {
            size_t copies = (size_t)whole + (k - nv < extra ? 1 : 0);
            for (size_t e = 0; e < copies; e++) train[n_train++] = tmp[k];
            c->train_docs += copies;
        }
    }
    nx__free(tmp);
    if (st == NX_OK) {
        nx_mt19937_shuffle(&mt, train, n_train, sizeof(size_t));
        nx_mt19937_shuffle(&mt, val, n_val, sizeof(size_t));
        logf_(o, "tokenizing %zu unique documents on %d threads", n_uniq, nth);
    }
    /* Tokenize every kept document once (static split by bytes). */
    if (st == NX_OK) {
        tok_job j = {.l = &l, .o = o, .idx = uniq, .n = n_uniq};
        j.split = nx__calloc((size_t)nth + 1, sizeof *j.split);
        j.st = nx__calloc((size_t)nth, sizeof *j.st);
        if (!j.split || !j.st) st = nx__error(NX_ERR_NOMEM, "out of memory");
        if (st == NX_OK) {
            uint64_t total = 0, acc = 0;
            for (size_t k = 0; k < n_uniq; k++) total += l.d[uniq[k]].len;
            size_t k = 0;
            for (int t = 0; t <= nth; t++) {
                uint64_t bound = (uint64_t)((double)total * t / nth);
                while (k < n_uniq && acc < bound) acc += l.d[uniq[k++]].len;
                j.split[t] = t == nth ? n_uniq : k;
            }
            nx_pool_run(pool, tok_worker, &j);
            for (int t = 0; t < nth && st == NX_OK; t++)
                if (j.st[t] != NX_OK) st = nx__error(j.st[t], "build: tokenizing failed: %s", nx_last_error());
        }
        nx__free(j.split);
        nx__free(j.st);
    }
    for (size_t k = 0; st == NX_OK && k < n_uniq; k++) {
        doc *d = &l.d[uniq[k]];
        component *c = &r.c[d->comp];
        c->tokens += d->n_tok;
        if (d->val) c->val_tokens += d->n_tok;
    }
    for (size_t k = 0; st == NX_OK && k < n_train; k++) r.c[l.d[train[k]].comp].train_tokens += l.d[train[k]].n_tok;
    int code = o->dtype_code ? o->dtype_code : nx_indexed_dtype_for_vocab(o->vocab_size);
    if (st == NX_OK) st = write_split(out_dir, "train", &l, train, n_train, code);
    if (st == NX_OK) st = write_split(out_dir, "validation", &l, val, n_val, code);
    if (st == NX_OK) st = write_datasheet(out_dir, recipe_path, &r, o, rtext, rlen);
    if (st == NX_OK) logf_(o, "built %s in %.1f s", out_dir, nx_time_s() - t0);
    for (size_t i = 0; i < l.n; i++) {
        nx__free(l.d[i].text);
        nx__free(l.d[i].tok);
    }
    nx__free(l.d);
    nx__free(train);
    nx__free(val);
    nx__free(uniq);
    nx_pool_free(pool);
    nx__free(rdir);
    nx__free(rtext);
    recipe_free(&r);
    return st;
}
