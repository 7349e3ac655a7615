/* api.c - validation of /v1/completions and /v1/chat/completions bodies, and the plain chat
 * template. Field names and types follow the OpenAI API: a field of the wrong JSON type, or
 * out of range, is a 400 naming the field (never a silent default). Fields we do not
 * implement but that change results when non-default (logit_bias, best_of > 1, penalties,
 * suffix, tools) are refused rather than ignored; fields that do not change the result
 * (user, model, metadata, ...) are accepted. */
#include "serve/serve_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Renders messages as "Role: content\n" lines then "Assistant:" (Jinja `capitalize` rule:
 * first letter upper, rest lower). Kept in sync with srv_render_chat below. */
const char srv_chat_template_jinja[] =
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

bool srv_bad(srv_err *err, const char *param, const char *fmt, ...) {
    err->http = 400;
    err->type = "invalid_request_error";
    err->code = NULL;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return false;
}

void srv_utf8_lossy(nx_buf *b, const char *s, size_t n) {
    static const char repl[] = "\xEF\xBF\xBD";
    if (n == 0) return;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0;   /* [run, i) is valid and not yet copied */
    while (i < n) {
        unsigned c = p[i];
        size_t len = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;   /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        /* Count how many bytes form a valid prefix (the "maximal subpart" of Unicode §3.9). */
        size_t k = 1;
        if (len) {
            for (; k < len && i + k < n; k++) {
                unsigned d = p[i + k];
                unsigned l = (k == 1) ? lo : 0x80, h = (k == 1) ? hi : 0xBF;
                if (d < l || d > h) break;
            }
        }
        if (len && k == len) {
            i += len;
            continue;
        }
        nx__buf_append(b, s + run, i - run);
        nx__buf_append(b, repl, 3);
        i += k;   /* a lone bad byte (k = 1) or a truncated sequence */
        run = i;
    }
    nx__buf_append(b, s + run, n - run);
}

void srv_params_free(srv_params *p) {
    for (int i = 0; i < p->n_stops; i++) nx__free(p->stops[i]);
    p->n_stops = 0;
}

void srv_parsed_free(srv_parsed *r) {
    if (!r) return;
    srv_params_free(&r->p);
    for (int i = 0; i < r->n_prompts; i++) {
        if (r->texts) nx__free(r->texts[i]);
        if (r->ids) nx_ids_free(&r->ids[i]);
    }
    nx__free(r->texts);
    nx__free(r->text_lens);
    nx__free(r->ids);
    memset(r, 0, sizeof *r);
}

/* ---- typed field readers: absent or null keeps the default ------------------------------ */
static bool get_int(json_t *o, const char *k, long lo, long hi, long *out, srv_err *err) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (!json_is_integer(v)) return srv_bad(err, k, "'%s' must be an integer", k);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return srv_bad(err, k, "'%s' is %lld, expected %ld..%ld", k, (long long)x, lo, hi);
    *out = (long)x;
    return true;
}

static bool get_num(json_t *o, const char *k, double lo, double hi, double *out, srv_err *err) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return srv_bad(err, k, "'%s' must be a number", k);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return srv_bad(err, k, "'%s' is %g, expected %g..%g", k, x, lo, hi);
    *out = x;
    return true;
}

static bool get_bool(json_t *o, const char *k, bool *out, srv_err *err) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return srv_bad(err, k, "'%s' must be true or false", k);
    *out = json_is_true(v);
    return true;
}

/* A field we do not implement: fine when absent, null or at its neutral value. */
static bool refuse_unless_neutral(json_t *o, const char *k, srv_err *err) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return true;
    if (json_is_number(v) && json_number_value(v) == 0) return true;
    if ((json_is_object(v) && json_object_size(v) == 0) || (json_is_array(v) && json_array_size(v) == 0)) return true;
    if (json_is_string(v) && json_string_length(v) == 0) return true;
    return srv_bad(err, k, "'%s' is not supported by this server", k);
}

static bool parse_stop(json_t *o, srv_params *p, srv_err *err) {
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v)) return true;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > SRV_MAX_STOPS) return srv_bad(err, "stop", "at most %d stop sequences", SRV_MAX_STOPS);
        items = NULL;
    } else if (!json_is_string(v)) {
        return srv_bad(err, "stop", "'stop' must be a string or a list of strings");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = items ? items[i] : json_array_get(v, i);
        if (!json_is_string(s)) return srv_bad(err, "stop", "'stop' must be a string or a list of strings");
        size_t len = json_string_length(s);
        if (len == 0) continue;   /* an empty stop string would match everywhere: OpenAI ignores it */
        if (len > SRV_MAX_STOP_LEN) return srv_bad(err, "stop", "stop sequences are limited to %d bytes", SRV_MAX_STOP_LEN);
        if (memchr(json_string_value(s), 0, len)) return srv_bad(err, "stop", "stop sequences must not contain NUL");
        p->stops[p->n_stops++] = nx__strndup(json_string_value(s), len);
    }
    return true;
}

/* The sampling/shape fields common to both endpoints. */
static bool parse_common(json_t *o, srv_kind kind, srv_params *p, srv_err *err) {
    long l;
    double d;
    p->sp = nx_sampler_defaults();
    p->sp.temperature = 1.0f;   /* OpenAI's default: sample */
    p->max_tokens = kind == SRV_COMPLETION ? 16 : -1;
    p->logprobs = -1;
    p->n = 1;
    json_t *mct = json_object_get(o, "max_completion_tokens");   /* chat's newer name wins when given */
    const char *mt = kind == SRV_CHAT && mct && !json_is_null(mct) ? "max_completion_tokens" : "max_tokens";
    l = p->max_tokens;
    if (!get_int(o, mt, 0, 1 << 24, &l, err)) return false;
    p->max_tokens = (int)l;
    d = p->sp.temperature;
    if (!get_num(o, "temperature", 0, 1e4, &d, err)) return false;
    p->sp.temperature = (float)d;
    d = 1;
    if (!get_num(o, "top_p", 0, 1, &d, err)) return false;
    if (d <= 0) return srv_bad(err, "top_p", "'top_p' must be > 0");
    p->sp.top_p = (float)d;
    l = 0;
    if (!get_int(o, "top_k", -1, 1 << 30, &l, err)) return false;
    p->sp.top_k = l < 0 ? 0 : (int)l;   /* -1 is vLLM's "off" */
    d = 0;
    if (!get_num(o, "min_p", 0, 1, &d, err)) return false;
    p->sp.min_p = (float)d;
    d = 1;
    if (!get_num(o, "repetition_penalty", 1e-3, 1e3, &d, err)) return false;
    p->sp.repeat_penalty = (float)d;
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) return srv_bad(err, "seed", "'seed' must be an integer");
        p->sp.seed = (uint64_t)json_integer_value(seed);
        p->has_seed = true;
    }
    l = 1;
    if (!get_int(o, "n", 1, SRV_MAX_N, &l, err)) return false;
    p->n = (int)l;
    if (!get_bool(o, "stream", &p->stream, err)) return false;
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return srv_bad(err, "stream_options", "'stream_options' must be an object");
        if (!get_bool(so, "include_usage", &p->include_usage, err)) return false;
    }
    if (!get_bool(o, "ignore_eos", &p->ignore_eos, err)) return false;
    if (!parse_stop(o, p, err)) return false;
    static const char *const refused[] = {"frequency_penalty", "presence_penalty", "logit_bias", "suffix",
                                          "tools", "functions", "response_format", "guided_json"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (!refuse_unless_neutral(o, refused[i], err)) return false;
    json_t *rf = json_object_get(o, "response_format");
    (void)rf;
    l = 1;
    if (!get_int(o, "best_of", 1, 1, &l, err)) return false;
    json_t *m = json_object_get(o, "model");
    if (m && !json_is_null(m) && !json_is_string(m)) return srv_bad(err, "model", "'model' must be a string");
    return true;
}

static bool parse_prompts(json_t *o, int32_t n_vocab, srv_parsed *r, srv_err *err) {
    json_t *v = json_object_get(o, "prompt");
    if (!v || json_is_null(v)) return srv_bad(err, "prompt", "'prompt' is required");
    size_t n = 1;
    bool ids_list = false;   /* a flat list of ids = one prompt */
    if (json_is_string(v)) {
        n = 1;
    } else if (json_is_array(v)) {
        n = json_array_size(v);
        if (n == 0) return srv_bad(err, "prompt", "'prompt' is an empty list");
        json_t *first = json_array_get(v, 0);
        if (json_is_integer(first)) {
            ids_list = true;
            n = 1;
        }
    } else {
        return srv_bad(err, "prompt", "'prompt' must be a string, a list of strings, a list of token ids or a list of lists of token ids");
    }
    if (n > SRV_MAX_PROMPTS) return srv_bad(err, "prompt", "at most %d prompts per request", SRV_MAX_PROMPTS);
    r->n_prompts = 0;
    r->texts = nx__calloc(n, sizeof *r->texts);
    r->text_lens = nx__calloc(n, sizeof *r->text_lens);
    r->ids = nx__calloc(n, sizeof *r->ids);
    if (!r->texts || !r->text_lens || !r->ids) {
        err->http = 500;
        return srv_bad(err, NULL, "out of memory"), err->http = 500, false;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_is_string(v) ? v : (ids_list ? v : json_array_get(v, i));
        r->n_prompts++;
        if (json_is_string(item)) {
            r->text_lens[i] = json_string_length(item);
            r->texts[i] = nx__strndup(json_string_value(item), r->text_lens[i]);
            if (!r->texts[i]) return srv_bad(err, NULL, "out of memory"), err->http = 500, false;
            if (r->text_lens[i] == 0) return srv_bad(err, "prompt", "prompt %zu is empty", i);
        } else if (json_is_array(item)) {
            size_t m = json_array_size(item);
            if (m == 0) return srv_bad(err, "prompt", "prompt %zu is an empty token list", i);
            nx_ids *ids = &r->ids[i];
            ids->data = nx__malloc(m * sizeof(int32_t));
            if (!ids->data) return srv_bad(err, NULL, "out of memory"), err->http = 500, false;
            ids->cap = m;
            for (size_t j = 0; j < m; j++) {
                json_t *t = json_array_get(item, j);
                if (!json_is_integer(t))
                    return srv_bad(err, "prompt", "prompt %zu: item %zu is not an integer token id", i, j);
                json_int_t x = json_integer_value(t);
                if (x < 0 || x >= n_vocab)
                    return srv_bad(err, "prompt", "prompt %zu: token id %lld is outside the vocabulary [0, %d)", i,
                                   (long long)x, (int)n_vocab);
                ids->data[j] = (int32_t)x;
            }
            ids->len = m;
        } else {
            return srv_bad(err, "prompt", "prompt %zu must be a string or a list of token ids", i);
        }
    }
    return true;
}

/* Appends the plain template's rendering of one message. */
static bool render_message(json_t *msg, size_t i, nx_buf *b, srv_err *err) {
    if (!json_is_object(msg)) return srv_bad(err, "messages", "messages[%zu] must be an object", i);
    json_t *role = json_object_get(msg, "role");
    if (!json_is_string(role)) return srv_bad(err, "messages", "messages[%zu].role must be a string", i);
    const char *rs = json_string_value(role);
    size_t rl = json_string_length(role);
    if (rl == 0 || rl > 64) return srv_bad(err, "messages", "messages[%zu].role must be 1 to 64 bytes", i);
    for (size_t k = 0; k < rl; k++) {   /* capitalize: first upper, rest lower (ASCII) */
        char c = rs[k];
        if (k == 0 && c >= 'a' && c <= 'z') c = (char)(c - 32);
        if (k > 0 && c >= 'A' && c <= 'Z') c = (char)(c + 32);
        nx__buf_append(b, &c, 1);
    }
    nx__buf_append(b, ": ", 2);
    json_t *content = json_object_get(msg, "content");
    if (json_is_string(content)) {
        nx__buf_append(b, json_string_value(content), json_string_length(content));
    } else if (json_is_array(content)) {
        for (size_t k = 0; k < json_array_size(content); k++) {
            json_t *part = json_array_get(content, k);
            json_t *type = json_object_get(part, "type");
            json_t *text = json_object_get(part, "text");
            if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(text))
                return srv_bad(err, "messages", "messages[%zu].content[%zu]: only {\"type\": \"text\", \"text\": ...} parts are supported", i, k);
            nx__buf_append(b, json_string_value(text), json_string_length(text));
        }
    } else if (!json_is_null(content) && content) {
        return srv_bad(err, "messages", "messages[%zu].content must be a string, a list of text parts or null", i);
    }
    nx__buf_append(b, "\n", 1);
    return true;
}

bool srv_parse_request(json_t *body, srv_kind kind, int32_t n_vocab, srv_parsed *out, srv_err *err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    if (!json_is_object(body)) return srv_bad(err, NULL, "the request body must be a JSON object");
    if (!parse_common(body, kind, &out->p, err)) return false;
    if (kind == SRV_COMPLETION) {
        long l = -1;
        if (!get_bool(body, "echo", &out->p.echo, err)) return false;
        if (!get_int(body, "logprobs", 0, SRV_MAX_LOGPROBS, &l, err)) return false;
        out->p.logprobs = (int)l;
        return parse_prompts(body, n_vocab, out, err);
    }
    /* chat */
    bool lp = false;
    long top = 0;
    if (!get_bool(body, "logprobs", &lp, err)) return false;
    if (!get_int(body, "top_logprobs", 0, SRV_MAX_LOGPROBS, &top, err)) return false;
    out->p.logprobs = lp ? (int)top : -1;
    json_t *msgs = json_object_get(body, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return srv_bad(err, "messages", "'messages' must be a non-empty list");
    nx_buf b = {0};
    for (size_t i = 0; i < json_array_size(msgs); i++)
        if (!render_message(json_array_get(msgs, i), i, &b, err)) {
            nx__buf_free(&b);
            return false;
        }
    nx__buf_append(&b, "Assistant:", 10);
    /* The template's turn marker: without it a base model happily writes the user's next turn. */
    if (out->p.n_stops < SRV_MAX_STOPS) out->p.stops[out->p.n_stops++] = nx__strdup("\nUser:");
    if (b.oom) {
        nx__buf_free(&b);
        return srv_bad(err, NULL, "out of memory"), err->http = 500, false;
    }
    out->n_prompts = 1;
    out->texts = nx__calloc(1, sizeof *out->texts);
    out->text_lens = nx__calloc(1, sizeof *out->text_lens);
    out->ids = nx__calloc(1, sizeof *out->ids);
    if (!out->texts || !out->text_lens || !out->ids) {
        nx__buf_free(&b);
        return srv_bad(err, NULL, "out of memory"), err->http = 500, false;
    }
    out->texts[0] = b.data;
    out->text_lens[0] = b.len;
    return true;
}
