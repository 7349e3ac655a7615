/*
 * pickle.c - a safe, data-only unpickler for torch.save checkpoints.
 *
 * DESIGN. Python's unpickler is a small stack machine whose GLOBAL and REDUCE opcodes import
 * and call arbitrary functions; that is why torch.load without weights_only can run code.
 * This interpreter keeps the stack machine but replaces "import" with a lookup in a fixed
 * table of globals (the ones a state_dict needs) and "call" with our own evaluation of each
 * of them. A global outside the table is an error at the opcode that names it, so nothing
 * downstream ever sees it. Values live in nodes allocated from an arena (one list freed at
 * the end), so memo references (BINGET), shared storages and even self-referencing
 * containers need no reference counting, and no routine here recurses over the object graph.
 *
 * Limits: every length is checked against the bytes left before it is used; memo indices
 * must be below the current stream offset (Python assigns them 0, 1, 2...) and below
 * NX_PK_MAX_MEMO, so a hostile LONG_BINPUT cannot make us allocate gigabytes; the stack,
 * the mark stack and containers are bounded by NX_PK_MAX_STACK; integers must fit in int64;
 * at most NX_PK_MAX_NODES objects. Each opcode creates at most one node, so memory is
 * linear in the stream length and capped in absolute terms.
 */
#include "pickle.h"

#include <stdarg.h>

#define NX_PK_MAX_STACK (1u << 22)
#define NX_PK_MAX_MEMO (1u << 22)
#define NX_PK_MAX_GLOBAL_NAME 256
/* ~10 objects per tensor in a state_dict: room for ~200k tensors, and at most ~250 MB of
 * nodes for a hostile stream of one-byte opcodes */
#define NX_PK_MAX_NODES (1u << 21)

struct nx_pickle {
    nx_pk *nodes;          /* arena chain */
    size_t n_nodes;
    bool too_many;         /* node() refused: NX_PK_MAX_NODES reached */
    nx_pk **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t nmarks, marks_cap;
    nx_pk **memo;
    size_t memo_cap, memo_len;   /* memo_len: slots set (MEMOIZE's next index) */
    const char *what;
};

typedef struct {
    const char *module, *name;
    nx_pk_global g;
    nx_dtype dtype;
} global_def;

/* The whitelist: everything a torch.save state_dict (torch 1.6 - 2.x) refers to. */
static const global_def k_globals[] = {
    {"collections", "OrderedDict", NX_PKG_ORDERED_DICT, NX_DTYPE_INVALID},
    {"torch._utils", "_rebuild_tensor_v2", NX_PKG_REBUILD_V2, NX_DTYPE_INVALID},
    {"torch._utils", "_rebuild_tensor_v3", NX_PKG_REBUILD_V3, NX_DTYPE_INVALID},
    {"torch._utils", "_rebuild_parameter", NX_PKG_REBUILD_PARAM, NX_DTYPE_INVALID},
    {"torch._utils", "_rebuild_parameter_with_state", NX_PKG_REBUILD_PARAM_STATE, NX_DTYPE_INVALID},
    /* protocol 2 pickles Python 3 bytes as _codecs.encode(str, 'latin1') */
    {"_codecs", "encode", NX_PKG_CODECS_ENCODE, NX_DTYPE_INVALID},
    {"torch", "FloatStorage", NX_PKG_STORAGE_CLASS, NX_F32},
    {"torch", "HalfStorage", NX_PKG_STORAGE_CLASS, NX_F16},
    {"torch", "BFloat16Storage", NX_PKG_STORAGE_CLASS, NX_BF16},
    {"torch", "DoubleStorage", NX_PKG_STORAGE_CLASS, NX_F64},
    {"torch", "LongStorage", NX_PKG_STORAGE_CLASS, NX_I64},
    {"torch", "IntStorage", NX_PKG_STORAGE_CLASS, NX_I32},
    {"torch", "ShortStorage", NX_PKG_STORAGE_CLASS, NX_I16},
    {"torch", "CharStorage", NX_PKG_STORAGE_CLASS, NX_I8},
    {"torch", "ByteStorage", NX_PKG_STORAGE_CLASS, NX_U8},
    {"torch", "BoolStorage", NX_PKG_STORAGE_CLASS, NX_BOOL},
    {"torch", "UntypedStorage", NX_PKG_STORAGE_CLASS, NX_U8},
    {"torch.storage", "UntypedStorage", NX_PKG_STORAGE_CLASS, NX_U8},
    {"torch", "float32", NX_PKG_DTYPE, NX_F32},
    {"torch", "float", NX_PKG_DTYPE, NX_F32},
    {"torch", "float16", NX_PKG_DTYPE, NX_F16},
    {"torch", "half", NX_PKG_DTYPE, NX_F16},
    {"torch", "bfloat16", NX_PKG_DTYPE, NX_BF16},
    {"torch", "float64", NX_PKG_DTYPE, NX_F64},
    {"torch", "double", NX_PKG_DTYPE, NX_F64},
    {"torch", "int64", NX_PKG_DTYPE, NX_I64},
    {"torch", "long", NX_PKG_DTYPE, NX_I64},
    {"torch", "int32", NX_PKG_DTYPE, NX_I32},
    {"torch", "int", NX_PKG_DTYPE, NX_I32},
    {"torch", "int16", NX_PKG_DTYPE, NX_I16},
    {"torch", "short", NX_PKG_DTYPE, NX_I16},
    {"torch", "int8", NX_PKG_DTYPE, NX_I8},
    {"torch", "uint8", NX_PKG_DTYPE, NX_U8},
    {"torch", "bool", NX_PKG_DTYPE, NX_BOOL},
    {"torch", "uint16", NX_PKG_DTYPE, NX_U16},
    {"torch", "uint32", NX_PKG_DTYPE, NX_U32},
    {"torch", "uint64", NX_PKG_DTYPE, NX_U64},
    {"torch", "float8_e4m3fn", NX_PKG_DTYPE, NX_F8_E4M3},
    {"torch", "float8_e5m2", NX_PKG_DTYPE, NX_F8_E5M2},
};

/* Copies s[0..n) into out for a message, replacing anything non-printable so a hostile
 * name cannot inject terminal escapes or line breaks into the one-line error. */
static const char *printable(const char *s, size_t n, char *out, size_t cap) {
    size_t j = 0;
    for (size_t i = 0; i < n && j + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        out[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (n > 0 && j + 4 >= cap) { out[j++] = '.'; out[j++] = '.'; out[j++] = '.'; }
    out[j] = 0;
    return out;
}

static nx_pk *node(nx_pickle *pk, nx_pk_kind kind) {
    if (pk->n_nodes >= NX_PK_MAX_NODES) {
        pk->too_many = true;
        return NULL;
    }
    nx_pk *v = nx__calloc(1, sizeof *v);
    if (!v) return NULL;
    pk->n_nodes++;
    v->kind = kind;
    v->next_alloc = pk->nodes;
    pk->nodes = v;
    return v;
}

void nx__pickle_free(nx_pickle *pk) {
    if (!pk) return;
    for (nx_pk *v = pk->nodes, *next; v; v = next) {
        next = v->next_alloc;
        nx__free(v->items);
        nx__free(v->owned);
        nx__free(v);
    }
    nx__free(pk->stack);
    nx__free(pk->marks);
    nx__free(pk->memo);
    nx__free(pk);
}

/* Grows a table to hold `need` elements: NX_OK, NX_ERR_RANGE past `limit`, NX_ERR_NOMEM. */
static nx_status grow_array(void **arr, size_t *cap, size_t need, size_t elem, size_t limit) {
    if (need <= *cap) return NX_OK;
    if (need > limit) return NX_ERR_RANGE;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    if (nc > limit) nc = limit;
    void *p = nx__realloc(*arr, nc * elem);
    if (!p) return NX_ERR_NOMEM;
    *arr = p;
    *cap = nc;
    return NX_OK;
}

static nx_status item_push(nx_pk *c, nx_pk *v) {
    nx_status st = grow_array((void **)&c->items, &c->cap, c->n + 1, sizeof *c->items, NX_PK_MAX_STACK);
    if (st == NX_OK) c->items[c->n++] = v;
    return st;
}

static const char *kind_name(nx_pk_kind k) {
    static const char *const names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list",
                                        "dict", "global", "storage", "tensor"};
    return names[k];
}

/* Checks a UTF-8 byte string structurally (Python decodes BINUNICODE with 'surrogatepass',
 * so encoded surrogates are accepted; overlong forms and bytes > 0xF4 are not). */
static bool utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1Fu; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0Fu; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07u; }
        else return false;
        if (n - i - 1 < k) return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + j] & 0x3Fu);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF))) return false;
        i += k + 1;
    }
    return true;
}

/* ---- the machine ------------------------------------------------------------ */

typedef struct {
    nx_pickle *pk;
    const uint8_t *data;
    size_t size, pos, op_pos;
    uint8_t op;
} machine;

static nx_status fail(machine *m, nx_status st, const char *fmt, ...) NX_PRINTF(3, 4);
static nx_status fail(machine *m, nx_status st, const char *fmt, ...) {
    char buf[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return nx__error(st, "%s: %s (opcode 0x%02x at offset %zu)", m->pk->what, buf, m->op, m->op_pos);
}

static nx_status need(machine *m, size_t n) {
    if (m->size - m->pos < n) return fail(m, NX_ERR_FORMAT, "pickle stream is truncated");
    return NX_OK;
}

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static nx_status push(machine *m, nx_pk *v) {
    nx_pickle *pk = m->pk;
    if (!v && pk->too_many)
        return fail(m, NX_ERR_RANGE, "pickle holds more than %u objects, far beyond any state_dict", NX_PK_MAX_NODES);
    if (!v) return nx__error(NX_ERR_NOMEM, "%s: out of memory", pk->what);
    nx_status st = grow_array((void **)&pk->stack, &pk->stack_cap, pk->sp + 1, sizeof *pk->stack, NX_PK_MAX_STACK);
    if (st == NX_ERR_NOMEM) return nx__error(st, "%s: out of memory", pk->what);
    if (st) return fail(m, st, "pickle stack exceeds its limit");
    pk->stack[pk->sp++] = v;
    return NX_OK;
}

/* Bottom of the current frame: values above the last MARK may be popped. */
static size_t frame_base(const nx_pickle *pk) { return pk->nmarks ? pk->marks[pk->nmarks - 1] : 0; }

static nx_status pop(machine *m, nx_pk **out) {
    nx_pickle *pk = m->pk;
    if (pk->sp <= frame_base(pk)) return fail(m, NX_ERR_FORMAT, "pickle stack underflow");
    *out = pk->stack[--pk->sp];
    return NX_OK;
}

static nx_status top(machine *m, nx_pk **out) {
    nx_pickle *pk = m->pk;
    if (pk->sp <= frame_base(pk)) return fail(m, NX_ERR_FORMAT, "pickle stack underflow");
    *out = pk->stack[pk->sp - 1];
    return NX_OK;
}

/* Pops everything above the last MARK (and the mark) into *first / *count. */
static nx_status pop_mark(machine *m, nx_pk ***first, size_t *count) {
    nx_pickle *pk = m->pk;
    if (!pk->nmarks) return fail(m, NX_ERR_FORMAT, "pickle uses a MARK that was never set");
    size_t base = pk->marks[--pk->nmarks];
    *count = pk->sp - base;
    /* an empty mark before anything was pushed: the stack is not allocated yet, and NULL + 0
     * is undefined behaviour in C */
    *first = *count ? pk->stack + base : NULL;
    pk->sp = base;
    return NX_OK;
}

static nx_status container_error(machine *m, nx_status st) {
    if (st == NX_ERR_NOMEM) return nx__error(st, "%s: out of memory", m->pk->what);
    return fail(m, st, "container exceeds its size limit");
}

static nx_status make_seq(machine *m, nx_pk_kind kind, nx_pk **items, size_t n) {
    nx_pk *t = node(m->pk, kind);
    if (!t) return push(m, NULL);
    if (n) {
        t->items = nx__malloc(n * sizeof *t->items);
        if (!t->items) return push(m, NULL);
        memcpy(t->items, items, n * sizeof *t->items);
        t->n = t->cap = n;
    }
    return push(m, t);
}

static nx_status lookup_global(machine *m, const char *mod, size_t modlen, const char *name, size_t namelen) {
    for (size_t i = 0; i < NX_ARRAY_LEN(k_globals); i++) {
        const global_def *g = &k_globals[i];
        if (strlen(g->module) == modlen && strlen(g->name) == namelen && memcmp(g->module, mod, modlen) == 0 &&
            memcmp(g->name, name, namelen) == 0) {
            nx_pk *v = node(m->pk, NX_PK_GLOBAL);
            if (v) {
                v->global = g->g;
                v->dtype = g->dtype;
                v->s = g->name;
                v->len = namelen;
            }
            return push(m, v);
        }
    }
    char a[128], b[128];
    return nx__error(NX_ERR_SECURITY, "%s refers to global '%s.%s'; only tensors and containers are allowed",
                     m->pk->what, printable(mod, modlen, a, sizeof a), printable(name, namelen, b, sizeof b));
}

static bool is_int(const nx_pk *v) { return v->kind == NX_PK_INT || v->kind == NX_PK_BOOL; }

/* Reads a tuple of non-negative ints (a tensor's size or stride). */
static nx_status int_tuple(machine *m, const nx_pk *t, const char *what, int64_t *out, int *n) {
    if (t->kind != NX_PK_TUPLE && t->kind != NX_PK_LIST)
        return fail(m, NX_ERR_FORMAT, "tensor %s is not a tuple", what);
    if (t->n > NX_MAX_DIMS) return fail(m, NX_ERR_UNSUPPORTED, "tensor %s has more than 8 dimensions", what);
    for (size_t i = 0; i < t->n; i++) {
        if (!is_int(t->items[i]) || t->items[i]->i < 0)
            return fail(m, NX_ERR_FORMAT, "tensor %s holds a non-integer or negative value", what);
        out[i] = t->items[i]->i;
    }
    *n = (int)t->n;
    return NX_OK;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
 * _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata]) */
static nx_status rebuild_tensor(machine *m, const nx_pk *args, bool v3) {
    size_t lo = v3 ? 7 : 6, hi = lo + 1;
    if (args->n < lo || args->n > hi)
        return fail(m, NX_ERR_FORMAT, "%s called with the wrong number of arguments",
                    v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2");
    nx_pk *st = args->items[0];
    if (st->kind != NX_PK_STORAGE) return fail(m, NX_ERR_FORMAT, "tensor storage is a %s, expected a storage", kind_name(st->kind));
    if (args->items[1]->kind != NX_PK_INT || args->items[1]->i < 0)
        return fail(m, NX_ERR_FORMAT, "tensor storage offset is not a non-negative int");
    nx_pk *t = node(m->pk, NX_PK_TENSOR);
    if (!t) return push(m, NULL);
    nx_pk_view *v = t->owned = t->view = nx__calloc(1, sizeof *v);
    if (!v) return nx__error(NX_ERR_NOMEM, "%s: out of memory", m->pk->what);
    int nst = 0;
    NX_TRY(int_tuple(m, args->items[2], "size", v->size, &v->ndim));
    NX_TRY(int_tuple(m, args->items[3], "stride", v->stride, &nst));
    if (nst != v->ndim) return fail(m, NX_ERR_FORMAT, "tensor size and stride have different lengths");
    v->storage = st;
    v->offset = args->items[1]->i;
    t->dtype = st->dtype;
    if (v3) {
        const nx_pk *dt = args->items[6];
        if (dt->kind != NX_PK_GLOBAL || dt->global != NX_PKG_DTYPE)
            return fail(m, NX_ERR_FORMAT, "_rebuild_tensor_v3 dtype argument is not a torch dtype");
        t->dtype = dt->dtype;
    }
    return push(m, t);
}

/* _codecs.encode(str, 'latin1'): the protocol-2 spelling of a bytes object. */
static nx_status codecs_encode(machine *m, const nx_pk *args) {
    if (args->n != 2 || args->items[0]->kind != NX_PK_STR || args->items[1]->kind != NX_PK_STR)
        return fail(m, NX_ERR_FORMAT, "_codecs.encode expects (str, encoding)");
    const nx_pk *enc = args->items[1];
    if (!(enc->len == 6 && memcmp(enc->s, "latin1", 6) == 0) && !(enc->len == 7 && memcmp(enc->s, "latin-1", 7) == 0))
        return fail(m, NX_ERR_UNSUPPORTED, "_codecs.encode with an encoding other than latin1");
    const uint8_t *s = (const uint8_t *)args->items[0]->s;
    size_t n = args->items[0]->len, j = 0;
    uint8_t *out = nx__malloc(n ? n : 1);
    nx_pk *v = node(m->pk, NX_PK_BYTES);
    if (!out || !v) { nx__free(out); return push(m, NULL); }
    v->owned = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) out[j++] = s[i];
        else if ((s[i] == 0xC2 || s[i] == 0xC3) && i + 1 < n) { out[j++] = (uint8_t)(((s[i] & 3u) << 6) | (s[i + 1] & 0x3Fu)); i++; }
        else return fail(m, NX_ERR_FORMAT, "_codecs.encode: string is not latin1");
    }
    v->s = (const char *)out;
    v->len = j;
    return push(m, v);
}

/* REDUCE / NEWOBJ: "calls" a whitelisted global with an argument tuple. */
static nx_status call(machine *m, nx_pk *fn, nx_pk *args) {
    if (fn->kind != NX_PK_GLOBAL) return fail(m, NX_ERR_FORMAT, "pickle calls a %s, which is not callable", kind_name(fn->kind));
    if (args->kind != NX_PK_TUPLE) return fail(m, NX_ERR_FORMAT, "pickle call arguments are a %s, expected a tuple", kind_name(args->kind));
    switch (fn->global) {
    case NX_PKG_ORDERED_DICT: {
        if (args->n > 1) return fail(m, NX_ERR_FORMAT, "OrderedDict called with %s", "more than one argument");
        nx_pk *d = node(m->pk, NX_PK_DICT);
        if (!d) return push(m, NULL);
        if (args->n == 1) {   /* OrderedDict([(k, v), ...]) */
            const nx_pk *l = args->items[0];
            if (l->kind != NX_PK_LIST && l->kind != NX_PK_TUPLE) return fail(m, NX_ERR_FORMAT, "OrderedDict argument is not a %s", "list");
            for (size_t i = 0; i < l->n; i++) {
                const nx_pk *kv = l->items[i];
                if ((kv->kind != NX_PK_TUPLE && kv->kind != NX_PK_LIST) || kv->n != 2)
                    return fail(m, NX_ERR_FORMAT, "OrderedDict item is not a %s", "pair");
                nx_status st = item_push(d, kv->items[0]);
                if (!st) st = item_push(d, kv->items[1]);
                if (st) return container_error(m, st);
            }
        }
        return push(m, d);
    }
    case NX_PKG_REBUILD_V2: return rebuild_tensor(m, args, false);
    case NX_PKG_REBUILD_V3: return rebuild_tensor(m, args, true);
    case NX_PKG_REBUILD_PARAM:
    case NX_PKG_REBUILD_PARAM_STATE: {
        size_t want = fn->global == NX_PKG_REBUILD_PARAM ? 3 : 4;
        if (args->n != want || args->items[0]->kind != NX_PK_TENSOR)
            return fail(m, NX_ERR_FORMAT, "%s expects (tensor, requires_grad, hooks[, state])", fn->s);
        return push(m, args->items[0]);
    }
    case NX_PKG_CODECS_ENCODE: return codecs_encode(m, args);
    case NX_PKG_STORAGE_CLASS:
    case NX_PKG_DTYPE: break;
    }
    return fail(m, NX_ERR_FORMAT, "pickle calls torch.%s, which a checkpoint never calls", fn->s);
}

/* BINPERSID: ('storage', storage_class, key, location, numel) -> storage reference. */
static nx_status persistent_load(machine *m, nx_pk *pid) {
    if (pid->kind != NX_PK_TUPLE || pid->n != 5 || pid->items[0]->kind != NX_PK_STR ||
        pid->items[0]->len != 7 || memcmp(pid->items[0]->s, "storage", 7) != 0)
        return fail(m, NX_ERR_FORMAT, "persistent id is not a ('storage', class, key, location, numel) %s", "tuple");
    const nx_pk *cls = pid->items[1], *key = pid->items[2], *numel = pid->items[4];
    if (cls->kind != NX_PK_GLOBAL || cls->global != NX_PKG_STORAGE_CLASS)
        return fail(m, NX_ERR_FORMAT, "persistent id names a %s instead of a storage class",
                    cls->kind == NX_PK_GLOBAL ? "non-storage global" : kind_name(cls->kind));
    if (key->kind != NX_PK_STR || key->len == 0 || key->len > 64 || memchr(key->s, 0, key->len))
        return fail(m, NX_ERR_FORMAT, "storage key is not a short string");
    if (numel->kind != NX_PK_INT || numel->i < 0) return fail(m, NX_ERR_FORMAT, "storage size is not a non-negative int");
    nx_pk *s = node(m->pk, NX_PK_STORAGE);
    if (!s) return push(m, NULL);
    s->s = key->s;
    s->len = key->len;
    s->dtype = cls->dtype;
    s->numel = (uint64_t)numel->i;
    return push(m, s);
}

static nx_status memo_put(machine *m, uint64_t idx) {
    nx_pickle *pk = m->pk;
    nx_pk *v = NULL;
    NX_TRY(top(m, &v));
    /* Python numbers memo entries 0, 1, 2...; an index beyond the bytes read so far cannot
     * come from a real pickler and would only serve to make us allocate a huge table. */
    if (idx >= m->pos || idx >= NX_PK_MAX_MEMO) return fail(m, NX_ERR_RANGE, "memo index is out of range");
    size_t old = pk->memo_cap;
    if (grow_array((void **)&pk->memo, &pk->memo_cap, (size_t)idx + 1, sizeof *pk->memo, NX_PK_MAX_MEMO))
        return nx__error(NX_ERR_NOMEM, "%s: out of memory", pk->what);
    if (pk->memo_cap > old) memset(pk->memo + old, 0, (pk->memo_cap - old) * sizeof *pk->memo);
    if (!pk->memo[idx]) pk->memo_len++;
    pk->memo[idx] = v;
    return NX_OK;
}

static nx_status memo_get(machine *m, uint64_t idx) {
    nx_pickle *pk = m->pk;
    if (idx >= pk->memo_cap || !pk->memo[idx]) return fail(m, NX_ERR_FORMAT, "memo entry is undefined");
    return push(m, pk->memo[idx]);
}

static nx_status str_op(machine *m, nx_pk_kind kind, size_t lenbytes) {
    NX_TRY(need(m, lenbytes));
    uint64_t n = rd_le(m->data + m->pos, (int)lenbytes);
    if (lenbytes == 4 && (m->op == 'T') && (n & 0x80000000u)) return fail(m, NX_ERR_FORMAT, "negative string length");
    m->pos += lenbytes;
    if (n > m->size - m->pos) return fail(m, NX_ERR_FORMAT, "string runs past the end of the pickle");
    const uint8_t *s = m->data + m->pos;
    m->pos += (size_t)n;
    if (kind == NX_PK_STR && !utf8_ok(s, (size_t)n)) return fail(m, NX_ERR_FORMAT, "string is not valid UTF-8");
    nx_pk *v = node(m->pk, kind);
    if (v) { v->s = (const char *)s; v->len = (size_t)n; }
    return push(m, v);
}

static nx_status int_op(machine *m, int64_t value) {
    nx_pk *v = node(m->pk, NX_PK_INT);
    if (v) v->i = value;
    return push(m, v);
}

/* Appends key/value pairs to a dict. Keys are not deduplicated (torch.save writes a dict,
 * whose keys are unique); a repeated tensor name is reported by the caller. */
static nx_status dict_insert(machine *m, nx_pk *d, nx_pk **kv, size_t n) {
    if (n % 2) return fail(m, NX_ERR_FORMAT, "SETITEMS with an odd number of values");
    for (size_t i = 0; i < n; i += 2) {
        nx_status st = item_push(d, kv[i]);
        if (!st) st = item_push(d, kv[i + 1]);
        if (st) return container_error(m, st);
    }
    return NX_OK;
}

/* SETITEM(S): kv are n values popped from above the dict, which is the new stack top. */
static nx_status setitems(machine *m, nx_pk **kv, size_t n) {
    nx_pk *d = NULL;
    NX_TRY(top(m, &d));
    if (d->kind != NX_PK_DICT) return fail(m, NX_ERR_FORMAT, "SETITEM(S) on a %s, expected a dict", kind_name(d->kind));
    return dict_insert(m, d, kv, n);
}

nx_status nx__pickle_load(const uint8_t *data, size_t size, const char *what, nx_pickle **out, nx_pk **root) {
    *out = NULL;
    *root = NULL;
    nx_pickle *pk = nx__calloc(1, sizeof *pk);
    if (!pk) return nx__error(NX_ERR_NOMEM, "%s: out of memory", what);
    pk->what = what;
    machine mm = {pk, data, size, 0, 0, 0}, *m = &mm;
    nx_status st = NX_OK;
    nx_pk *a = NULL, *b = NULL;
    for (;;) {
        if (m->pos >= m->size) { st = nx__error(NX_ERR_FORMAT, "%s: pickle ends without STOP (truncated)", what); break; }
        m->op_pos = m->pos;
        m->op = data[m->pos++];
        switch (m->op) {
        case 0x80: /* PROTO */
            if ((st = need(m, 1))) break;
            if (data[m->pos] > 5) { st = fail(m, NX_ERR_UNSUPPORTED, "pickle protocol above 5"); break; }
            m->pos++;
            break;
        case 0x95: /* FRAME: a length hint for buffered readers; everything is in memory */
            if ((st = need(m, 8))) break;
            if (rd_le(data + m->pos, 8) > m->size - m->pos - 8) { st = fail(m, NX_ERR_FORMAT, "FRAME runs past the end of the pickle"); break; }
            m->pos += 8;
            break;
        case '.': /* STOP */
            if ((st = pop(m, &a))) break;
            *out = pk;
            *root = a;
            return NX_OK;
        case '(': /* MARK */
            if ((st = grow_array((void **)&pk->marks, &pk->marks_cap, pk->nmarks + 1, sizeof *pk->marks, NX_PK_MAX_STACK))) {
                st = st == NX_ERR_NOMEM ? nx__error(st, "%s: out of memory", what) : fail(m, st, "too many MARKs");
                break;
            }
            pk->marks[pk->nmarks++] = pk->sp;
            break;
        case '0': /* POP */
            if (pk->sp > frame_base(pk)) pk->sp--;
            else if (pk->nmarks && pk->sp == frame_base(pk)) pk->nmarks--;  /* Python pops the mark */
            else st = fail(m, NX_ERR_FORMAT, "pickle stack underflow");
            break;
        case '1': { /* POP_MARK */
            nx_pk **items = NULL; size_t n = 0;
            st = pop_mark(m, &items, &n);
            break;
        }
        case '2': /* DUP */
            if (!(st = top(m, &a))) st = push(m, a);
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const char *mod = (const char *)data + m->pos;
            const char *nl1 = memchr(mod, '\n', NX_MIN(m->size - m->pos, (size_t)NX_PK_MAX_GLOBAL_NAME));
            if (!nl1) { st = fail(m, NX_ERR_FORMAT, "GLOBAL module name is unterminated or too long"); break; }
            const char *name = nl1 + 1;
            size_t left = m->size - (size_t)((const uint8_t *)name - data);
            const char *nl2 = memchr(name, '\n', NX_MIN(left, (size_t)NX_PK_MAX_GLOBAL_NAME));
            if (!nl2) { st = fail(m, NX_ERR_FORMAT, "GLOBAL name is unterminated or too long"); break; }
            m->pos = (size_t)((const uint8_t *)nl2 + 1 - data);
            st = lookup_global(m, mod, (size_t)(nl1 - mod), name, (size_t)(nl2 - name));
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if ((st = pop(m, &b)) || (st = pop(m, &a))) break;
            if (a->kind != NX_PK_STR || b->kind != NX_PK_STR) { st = fail(m, NX_ERR_FORMAT, "STACK_GLOBAL needs two strings"); break; }
            st = lookup_global(m, a->s, a->len, b->s, b->len);
            break;
        case '}': st = push(m, node(pk, NX_PK_DICT)); break;   /* EMPTY_DICT */
        case ']': st = push(m, node(pk, NX_PK_LIST)); break;   /* EMPTY_LIST */
        case ')': st = push(m, node(pk, NX_PK_TUPLE)); break;  /* EMPTY_TUPLE */
        case 't': case 'l': { /* TUPLE, LIST (from MARK) */
            nx_pk **items = NULL; size_t n = 0;
            if ((st = pop_mark(m, &items, &n))) break;
            st = make_seq(m, m->op == 't' ? NX_PK_TUPLE : NX_PK_LIST, items, n);
            break;
        }
        case 'd': { /* DICT (from MARK) */
            nx_pk **items = NULL; size_t n = 0;
            if ((st = pop_mark(m, &items, &n))) break;
            nx_pk *d = node(pk, NX_PK_DICT);
            if (!d) { st = push(m, NULL); break; }
            /* fill before pushing: the push overwrites the first popped slot */
            if ((st = dict_insert(m, d, items, n))) break;
            st = push(m, d);
            break;
        }
        case 0x85: case 0x86: case 0x87: { /* TUPLE1/2/3 */
            size_t n = (size_t)(m->op - 0x84);
            if (pk->sp - frame_base(pk) < n) { st = fail(m, NX_ERR_FORMAT, "pickle stack underflow"); break; }
            pk->sp -= n;
            st = make_seq(m, NX_PK_TUPLE, pk->stack + pk->sp, n);
            break;
        }
        case 'X': st = str_op(m, NX_PK_STR, 4); break;     /* BINUNICODE */
        case 0x8c: st = str_op(m, NX_PK_STR, 1); break;    /* SHORT_BINUNICODE */
        case 0x8d: st = str_op(m, NX_PK_STR, 8); break;    /* BINUNICODE8 */
        case 'T': st = str_op(m, NX_PK_BYTES, 4); break;   /* BINSTRING */
        case 'U': st = str_op(m, NX_PK_BYTES, 1); break;   /* SHORT_BINSTRING */
        case 'B': st = str_op(m, NX_PK_BYTES, 4); break;   /* BINBYTES */
        case 'C': st = str_op(m, NX_PK_BYTES, 1); break;   /* SHORT_BINBYTES */
        case 0x8e: st = str_op(m, NX_PK_BYTES, 8); break;  /* BINBYTES8 */
        case 0x96: st = str_op(m, NX_PK_BYTES, 8); break;  /* BYTEARRAY8 */
        case 'K': if (!(st = need(m, 1))) { st = int_op(m, data[m->pos]); m->pos += 1; } break;
        case 'M': if (!(st = need(m, 2))) { st = int_op(m, (int64_t)rd_le(data + m->pos, 2)); m->pos += 2; } break;
        case 'J': if (!(st = need(m, 4))) { st = int_op(m, (int32_t)(uint32_t)rd_le(data + m->pos, 4)); m->pos += 4; } break;
        case 0x8a: case 0x8b: { /* LONG1, LONG4: little-endian two's complement */
            size_t lb = m->op == 0x8a ? 1 : 4;
            if ((st = need(m, lb))) break;
            uint64_t n = rd_le(data + m->pos, (int)lb);
            m->pos += lb;
            if (n > 8) { st = fail(m, NX_ERR_RANGE, "integer does not fit in 64 bits"); break; }
            if ((st = need(m, (size_t)n))) break;
            uint64_t u = rd_le(data + m->pos, (int)n);
            if (n > 0 && n < 8 && (data[m->pos + n - 1] & 0x80)) u |= ~0ull << (8 * n);  /* sign-extend */
            m->pos += (size_t)n;
            st = int_op(m, (int64_t)u);
            break;
        }
        case 'G': { /* BINFLOAT: big-endian IEEE double */
            if ((st = need(m, 8))) break;
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | data[m->pos + (size_t)i];
            m->pos += 8;
            nx_pk *v = node(pk, NX_PK_FLOAT);
            if (v) memcpy(&v->f, &u, 8);
            st = push(m, v);
            break;
        }
        case 'N': st = push(m, node(pk, NX_PK_NONE)); break;
        case 0x88: case 0x89: {
            nx_pk *v = node(pk, NX_PK_BOOL);
            if (v) v->i = m->op == 0x88;
            st = push(m, v);
            break;
        }
        case 'q': if (!(st = need(m, 1))) { m->pos += 1; st = memo_put(m, data[m->pos - 1]); } break;
        case 'r': if (!(st = need(m, 4))) { m->pos += 4; st = memo_put(m, rd_le(data + m->pos - 4, 4)); } break;
        case 0x94: /* MEMOIZE: index = number of memo entries, as in Python */
            st = memo_put(m, pk->memo_len);
            break;
        case 'h': if (!(st = need(m, 1))) { m->pos += 1; st = memo_get(m, data[m->pos - 1]); } break;
        case 'j': if (!(st = need(m, 4))) { m->pos += 4; st = memo_get(m, rd_le(data + m->pos - 4, 4)); } break;
        case 'R': /* REDUCE */
            if ((st = pop(m, &b)) || (st = pop(m, &a))) break;
            st = call(m, a, b);
            break;
        case 0x81: /* NEWOBJ: cls.__new__(cls, *args); only OrderedDict can appear */
            if ((st = pop(m, &b)) || (st = pop(m, &a))) break;
            if (a->kind != NX_PK_GLOBAL || a->global != NX_PKG_ORDERED_DICT) { st = fail(m, NX_ERR_FORMAT, "NEWOBJ on something other than %s", "OrderedDict"); break; }
            st = call(m, a, b);
            break;
        case 'Q': /* BINPERSID */
            if ((st = pop(m, &a))) break;
            st = persistent_load(m, a);
            break;
        case 's': /* SETITEM */
            if (pk->sp - frame_base(pk) < 3) { st = fail(m, NX_ERR_FORMAT, "pickle stack underflow"); break; }
            pk->sp -= 2;
            st = setitems(m, pk->stack + pk->sp, 2);
            break;
        case 'u': { /* SETITEMS */
            nx_pk **items = NULL; size_t n = 0;
            if ((st = pop_mark(m, &items, &n))) break;
            /* items stay valid: the stack array is not reallocated before setitems reads them */
            st = setitems(m, items, n);
            break;
        }
        case 'a': case 'e': { /* APPEND, APPENDS */
            nx_pk **items = NULL; size_t n = 0;
            if (m->op == 'a') {
                if ((st = pop(m, &b))) break;
                items = &b; n = 1;
            } else if ((st = pop_mark(m, &items, &n))) {
                break;
            }
            if ((st = top(m, &a))) break;
            if (a->kind != NX_PK_LIST) { st = fail(m, NX_ERR_FORMAT, "APPEND on a %s, expected a list", kind_name(a->kind)); break; }
            for (size_t i = 0; i < n && !st; i++)
                if ((st = item_push(a, items[i]))) st = container_error(m, st);
            break;
        }
        case 'b': /* BUILD: object state (the state_dict's _metadata); data only, dropped */
            if ((st = pop(m, &b)) || (st = top(m, &a))) break;
            break;
        default:
            if (m->op >= 0x20 && m->op < 0x7f)
                st = fail(m, NX_ERR_UNSUPPORTED, "pickle opcode '%c' is not allowed in a checkpoint", m->op);
            else
                st = fail(m, NX_ERR_UNSUPPORTED, "pickle opcode is not allowed in a checkpoint");
            break;
        }
        if (st) break;
    }
    nx__pickle_free(pk);
    return st;
}
