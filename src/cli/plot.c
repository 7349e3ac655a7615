/*
 * plot.c - line charts for the CLI, as SVG or PNG.
 *
 * Layout: a title, then the panels stacked with a shared x axis (tick labels on the bottom
 * panel only), each with its own y axis, grid, and a legend in the corner that hides the
 * fewest points. Ticks use the 1-2-5 rule; a log axis puts ticks at powers of ten, or at 1-2-5
 * values when it spans less than ~1.5 decades. Colours are the Okabe-Ito palette, which stays
 * distinct for colour-blind readers.
 *
 * One drawing routine targets a small canvas interface with two back ends: SVG elements, or a
 * raster (RGB, antialiased by pixel coverage: lines by distance to the segment, text from the
 * glyph atlas in plot_font.h) written as PNG with stored (uncompressed) deflate blocks, so no
 * zlib is needed. A polyline is rasterised into a coverage mask first and composited once,
 * so joints of a half-transparent line do not darken.
 */
#include "plot.h"
#include "plot_font.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const unsigned k_colors[] = {0x0072B2, 0xD55E00, 0x009E73, 0xCC79A7, 0xE69F00, 0x56B4E9, 0x000000};
#define N_COLORS (sizeof k_colors / sizeof k_colors[0])

enum { FIG_W = 880, MARGIN_L = 86, MARGIN_R = 24, TITLE_H = 44, PANEL_H = 300, PANEL_GAP = 26, XAXIS_H = 58 };

/* ---- string buffer ------------------------------------------------------------------------ */
typedef struct {
    char *data;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->data && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *d = realloc(b->data, nc);
        if (!d) {
            b->oom = true;
            return;
        }
        b->data = d;
        b->cap = nc;
    }
}

static void sb_bytes(sbuf *b, const void *p, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n + 1) nc *= 2;
        char *d = realloc(b->data, nc);
        if (!d) {
            b->oom = true;
            return;
        }
        b->data = d;
        b->cap = nc;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Escapes &, <, > and quotes for SVG text and attributes. */
static void sb_text(sbuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': sb_printf(b, "&amp;"); break;
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        default: sb_printf(b, "%c", *s);
        }
    }
}

int cli_write_atomic(const char *path, const void *data, size_t n) {
    if (strcmp(path, "-") == 0) return fwrite(data, 1, n, stdout) == n && fflush(stdout) == 0 ? 0 : -1;
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp) return -1;
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(data, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) remove(tmp);
    free(tmp);
    return ok ? 0 : -1;
}

/* ---- canvas ------------------------------------------------------------------------------ */
typedef struct {
    bool png;
    int W, H;
    sbuf svg;
    uint8_t *rgb;    /* W * H * 3 */
    float *mask;     /* W * H coverage of the polyline being drawn */
    bool oom;
} canvas;

enum { ANCHOR_START, ANCHOR_MIDDLE, ANCHOR_END };

static void blend(canvas *c, int x, int y, unsigned rgb, double a) {
    if (x < 0 || y < 0 || x >= c->W || y >= c->H || a <= 0) return;
    if (a > 1) a = 1;
    uint8_t *p = c->rgb + ((size_t)y * (size_t)c->W + (size_t)x) * 3;
    unsigned col[3] = {(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255};
    for (int k = 0; k < 3; k++) p[k] = (uint8_t)lround(p[k] * (1 - a) + col[k] * a);
}

/* Coverage of a width-w stroke along segment (x0,y0)-(x1,y1), max-accumulated into the mask. */
static void mask_segment(canvas *c, double x0, double y0, double x1, double y1, double w) {
    double r = w / 2 + 1;
    int xa = (int)floor(fmin(x0, x1) - r), xb = (int)ceil(fmax(x0, x1) + r);
    int ya = (int)floor(fmin(y0, y1) - r), yb = (int)ceil(fmax(y0, y1) + r);
    if (xa < 0) xa = 0;
    if (ya < 0) ya = 0;
    if (xb >= c->W) xb = c->W - 1;
    if (yb >= c->H) yb = c->H - 1;
    double dx = x1 - x0, dy = y1 - y0, l2 = dx * dx + dy * dy;
    for (int y = ya; y <= yb; y++)
        for (int x = xa; x <= xb; x++) {
            double px = x + 0.5, py = y + 0.5;
            double t = l2 > 0 ? ((px - x0) * dx + (py - y0) * dy) / l2 : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double ex = px - (x0 + t * dx), ey = py - (y0 + t * dy);
            double cov = w / 2 + 0.5 - sqrt(ex * ex + ey * ey);
            if (cov > 1) cov = 1;
            float *m = &c->mask[(size_t)y * (size_t)c->W + (size_t)x];
            if (cov > *m) *m = (float)cov;
        }
}

static void mask_flush(canvas *c, unsigned rgb, double opacity) {
    size_t n = (size_t)c->W * (size_t)c->H;
    for (size_t i = 0; i < n; i++)
        if (c->mask[i] > 0) {
            blend(c, (int)(i % (size_t)c->W), (int)(i / (size_t)c->W), rgb, c->mask[i] * opacity);
            c->mask[i] = 0;
        }
}

static void cv_polyline(canvas *c, const double *xy, size_t n, unsigned rgb, double w, double opacity) {
    if (n == 0) return;
    if (!c->png) {
        sb_printf(&c->svg, "<polyline fill=\"none\" stroke=\"#%06X\" stroke-width=\"%.1f\"", rgb, w);
        if (opacity < 1) sb_printf(&c->svg, " stroke-opacity=\"%.2f\"", opacity);
        sb_printf(&c->svg, " stroke-linejoin=\"round\" points=\"");
        for (size_t i = 0; i < n; i++) sb_printf(&c->svg, "%.2f,%.2f ", xy[2 * i], xy[2 * i + 1]);
        sb_printf(&c->svg, "\"/>\n");
        return;
    }
    if (n == 1) mask_segment(c, xy[0], xy[1], xy[0], xy[1], w);
    for (size_t i = 0; i + 1 < n; i++) mask_segment(c, xy[2 * i], xy[2 * i + 1], xy[2 * i + 2], xy[2 * i + 3], w);
    mask_flush(c, rgb, opacity);
}

static void cv_line(canvas *c, double x0, double y0, double x1, double y1, unsigned rgb, double w) {
    double xy[4] = {x0, y0, x1, y1};
    if (!c->png) {
        sb_printf(&c->svg, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#%06X\" stroke-width=\"%.1f\"/>\n",
                  x0, y0, x1, y1, rgb, w);
        return;
    }
    cv_polyline(c, xy, 2, rgb, w, 1.0);
}

static void cv_circle(canvas *c, double cx, double cy, double r, unsigned rgb) {
    if (!c->png) {
        sb_printf(&c->svg, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%.1f\" fill=\"#%06X\"/>\n", cx, cy, r, rgb);
        return;
    }
    for (int y = (int)floor(cy - r - 1); y <= (int)ceil(cy + r + 1); y++)
        for (int x = (int)floor(cx - r - 1); x <= (int)ceil(cx + r + 1); x++) {
            double d = hypot(x + 0.5 - cx, y + 0.5 - cy);
            blend(c, x, y, rgb, r + 0.5 - d);
        }
}

/* fill < 0: none; stroke < 0: none. */
static void cv_rect(canvas *c, double x, double y, double w, double h, int fill, double fill_opacity, int stroke) {
    if (!c->png) {
        sb_printf(&c->svg, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"", x, y, w, h);
        if (fill >= 0) sb_printf(&c->svg, " fill=\"#%06X\"", (unsigned)fill);
        else sb_printf(&c->svg, " fill=\"none\"");
        if (fill >= 0 && fill_opacity < 1) sb_printf(&c->svg, " fill-opacity=\"%.2f\"", fill_opacity);
        if (stroke >= 0) sb_printf(&c->svg, " stroke=\"#%06X\"", (unsigned)stroke);
        sb_printf(&c->svg, "/>\n");
        return;
    }
    if (fill >= 0)
        for (int yy = (int)lround(y); yy < (int)lround(y + h); yy++)
            for (int xx = (int)lround(x); xx < (int)lround(x + w); xx++) blend(c, xx, yy, (unsigned)fill, fill_opacity);
    if (stroke >= 0) {
        /* pixel-aligned 1 px frame (SVG strokes are centred on the edge) */
        int x0 = (int)floor(x), y0 = (int)floor(y), x1 = (int)floor(x + w), y1 = (int)floor(y + h);
        for (int xx = x0; xx <= x1; xx++) {
            blend(c, xx, y0, (unsigned)stroke, 1);
            blend(c, xx, y1, (unsigned)stroke, 1);
        }
        for (int yy = y0; yy <= y1; yy++) {
            blend(c, x0, yy, (unsigned)stroke, 1);
            blend(c, x1, yy, (unsigned)stroke, 1);
        }
    }
}

/* Text with its baseline at y; vertical = rotated -90 degrees about (x, y). */
static void cv_text(canvas *c, double x, double y, const char *s, int size, int anchor, bool bold, bool vertical,
                    unsigned rgb) {
    if (!c->png) {
        static const char *const an[] = {"start", "middle", "end"};
        sb_printf(&c->svg, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"%s\"", x, y, size, an[anchor]);
        if (bold) sb_printf(&c->svg, " font-weight=\"bold\"");
        if (rgb) sb_printf(&c->svg, " fill=\"#%06X\"", rgb);
        if (vertical) sb_printf(&c->svg, " transform=\"rotate(-90 %.1f %.1f)\"", x, y);
        sb_printf(&c->svg, ">");
        sb_text(&c->svg, s);
        sb_printf(&c->svg, "</text>\n");
        return;
    }
    /* One raster size: the atlas is 12 px; bold is drawn twice, one pixel apart. */
    double width = (double)strlen(s) * FONT_W;
    double off = anchor == ANCHOR_START ? 0 : anchor == ANCHOR_MIDDLE ? -width / 2 : -width;
    int ox = (int)lround(x), oy = (int)lround(y), o = (int)lround(off);
    for (int pass = 0; pass < (bold ? 2 : 1); pass++)
        for (size_t i = 0; s[i]; i++) {
            int ch = (unsigned char)s[i];
            if (ch < FONT_FIRST || ch > FONT_LAST) ch = '?';
            const unsigned char(*g)[FONT_W] = k_font[ch - FONT_FIRST];
            for (int gy = 0; gy < FONT_H; gy++)
                for (int gx = 0; gx < FONT_W; gx++) {
                    if (!g[gy][gx]) continue;
                    int dx = o + (int)i * FONT_W + gx + pass, dy = gy - FONT_BASE;
                    /* rotate(-90): (dx, dy) -> (dy, -dx) */
                    int px = vertical ? ox + dy : ox + dx, py = vertical ? oy - dx : oy + dy;
                    blend(c, px, py, rgb, g[gy][gx] / 255.0);
                }
        }
    (void)size;
}

/* ---- PNG ----------------------------------------------------------------------------------- */
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 255] ^ (crc >> 8);
    return crc;
}

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void png_chunk(sbuf *b, const char *type, const uint8_t *data, size_t n) {
    uint8_t hdr[8];
    be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    sb_bytes(b, hdr, 8);
    if (n) sb_bytes(b, data, n);
    uint32_t crc = crc32_update(0xFFFFFFFFu, (const uint8_t *)type, 4);
    crc = crc32_update(crc, data, n) ^ 0xFFFFFFFFu;
    uint8_t t[4];
    be32(t, crc);
    sb_bytes(b, t, 4);
}

/* RGB8 image -> PNG: filter 0 rows in a zlib stream of stored deflate blocks. */
static int png_encode(const canvas *c, sbuf *out) {
    crc_init();
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    sb_bytes(out, sig, 8);
    uint8_t ihdr[13];
    be32(ihdr, (uint32_t)c->W);
    be32(ihdr + 4, (uint32_t)c->H);
    ihdr[8] = 8;   /* bit depth */
    ihdr[9] = 2;   /* truecolour */
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    png_chunk(out, "IHDR", ihdr, 13);
    size_t row = (size_t)c->W * 3 + 1, raw_n = row * (size_t)c->H;
    uint8_t *raw = malloc(raw_n);
    size_t nblocks = (raw_n + 65534) / 65535;
    uint8_t *z = malloc(2 + raw_n + 5 * nblocks + 4);
    if (!raw || !z) {
        free(raw);
        free(z);
        return -1;
    }
    for (int y = 0; y < c->H; y++) {
        raw[(size_t)y * row] = 0;
        memcpy(raw + (size_t)y * row + 1, c->rgb + (size_t)y * (size_t)c->W * 3, (size_t)c->W * 3);
    }
    size_t zn = 0;
    z[zn++] = 0x78;   /* CMF: deflate, 32K window */
    z[zn++] = 0x01;   /* FLG: no dictionary, check bits make CMF*256+FLG a multiple of 31 */
    uint32_t a = 1, bsum = 0;
    for (size_t off = 0; off < raw_n; off += 65535) {
        size_t len = raw_n - off < 65535 ? raw_n - off : 65535;
        z[zn++] = off + len == raw_n ? 1 : 0;   /* BFINAL, BTYPE 00 (stored) */
        z[zn++] = (uint8_t)(len & 255);
        z[zn++] = (uint8_t)(len >> 8);
        z[zn++] = (uint8_t)(~len & 255);
        z[zn++] = (uint8_t)((~len >> 8) & 255);
        memcpy(z + zn, raw + off, len);
        zn += len;
        for (size_t i = 0; i < len; i++) {
            a = (a + raw[off + i]) % 65521;
            bsum = (bsum + a) % 65521;
        }
    }
    be32(z + zn, (bsum << 16) | a);
    zn += 4;
    png_chunk(out, "IDAT", z, zn);
    png_chunk(out, "IEND", NULL, 0);
    free(raw);
    free(z);
    return out->oom ? -1 : 0;
}

/* ---- axes ------------------------------------------------------------------------------ */
#define MAX_TICKS 32
typedef struct {
    double lo, hi;               /* range shown, in axis units (log10 on a log axis) */
    double ticks[MAX_TICKS];     /* axis units */
    char labels[MAX_TICKS][24];
    int n_ticks;
} axis;

static double nice_step(double range, int target) {
    double raw = range / target;
    double p = pow(10.0, floor(log10(raw)));
    double f = raw / p;
    double nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    return nf * p;
}

/* Formats a tick value compactly: 15000 -> "15k", 0.0003 -> "0.0003", 2.50 -> "2.5". */
static void fmt_tick(char *out, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;
    double a = fabs(v);
    if (a != 0 && (a >= 1e6 || a < 1e-4)) {
        snprintf(out, n, "%.3g", v);
    } else if (a >= 1e4 && step >= 100) {
        snprintf(out, n, "%gk", v / 1000.0);
    } else {
        int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        if (dec > 6) dec = 6;
        snprintf(out, n, "%.*f", dec, v);
    }
}

static void linear_ticks(axis *a, double lo, double hi, int target, bool log_map) {
    double st = nice_step(hi - lo, target);
    a->n_ticks = 0;
    for (double v = ceil(lo / st - 1e-9) * st; v <= hi + st * 1e-9 && a->n_ticks < MAX_TICKS; v += st) {
        if (log_map && v <= 0) continue;
        a->ticks[a->n_ticks] = log_map ? log10(v) : v;
        fmt_tick(a->labels[a->n_ticks], sizeof a->labels[0], v, st);
        a->n_ticks++;
    }
}

static void axis_fit(axis *a, double lo, double hi, bool log_axis, int target) {
    if (!(hi > lo)) {
        double d = log_axis ? 0.2 : (fabs(lo) > 0 ? fabs(lo) * 0.1 : 1.0);
        lo -= d;
        hi += d;
    }
    double m = (hi - lo) * 0.05;   /* keep lines and markers off the frame */
    a->lo = lo - m;
    a->hi = hi + m;
    if (!log_axis) {
        linear_ticks(a, a->lo, a->hi, target, false);
        return;
    }
    if (a->hi - a->lo >= 1.5) {
        a->n_ticks = 0;
        for (double e = ceil(a->lo - 1e-9); e <= a->hi + 1e-9 && a->n_ticks < MAX_TICKS; e += 1) {
            a->ticks[a->n_ticks] = e;
            snprintf(a->labels[a->n_ticks], sizeof a->labels[0], "%g", pow(10.0, e));
            a->n_ticks++;
        }
    } else {
        linear_ticks(a, pow(10.0, a->lo), pow(10.0, a->hi), target, true);
    }
}

static double map(double v, double lo, double hi, double p0, double p1) { return p0 + (v - lo) / (hi - lo) * (p1 - p0); }

static bool usable(const plot_panel *pn, const plot_series *se, size_t i, double *y) {
    double v = se->y[i];
    if (!isfinite(v) || !isfinite(se->x[i]) || (pn->log_y && v <= 0)) return false;
    *y = pn->log_y ? log10(v) : v;
    return true;
}

/* ---- figure ---------------------------------------------------------------------------------- */
static void render(canvas *c, const plot_figure *fig) {
    double px0 = MARGIN_L, px1 = FIG_W - MARGIN_R;
    double xlo = INFINITY, xhi = -INFINITY;
    size_t max_n = 0;
    for (int p = 0; p < fig->n_panels; p++)
        for (int s = 0; s < fig->panels[p].n_series; s++) {
            const plot_series *se = &fig->panels[p].series[s];
            if (se->n > max_n) max_n = se->n;
            for (size_t i = 0; i < se->n; i++)
                if (isfinite(se->x[i]) && isfinite(se->y[i])) {
                    xlo = fmin(xlo, se->x[i]);
                    xhi = fmax(xhi, se->x[i]);
                }
        }
    if (!isfinite(xlo)) {
        xlo = 0;
        xhi = 1;
    }
    axis ax;
    axis_fit(&ax, xlo, xhi, false, 8);
    double *xy = malloc((max_n ? max_n : 1) * 2 * sizeof *xy);
    if (!xy) {
        c->oom = true;
        return;
    }
    cv_rect(c, 0, 0, c->W, c->H, 0xFFFFFF, 1, -1);
    cv_text(c, FIG_W / 2.0, 28, fig->title ? fig->title : "", 18, ANCHOR_MIDDLE, true, false, 0);
    int color_i = 0;
    for (int p = 0; p < fig->n_panels; p++) {
        const plot_panel *pn = &fig->panels[p];
        double py0 = TITLE_H + p * (PANEL_H + PANEL_GAP), py1 = py0 + PANEL_H;
        double ylo = INFINITY, yhi = -INFINITY, y;
        for (int s = 0; s < pn->n_series; s++)
            for (size_t i = 0; i < pn->series[s].n; i++)
                if (usable(pn, &pn->series[s], i, &y)) {
                    ylo = fmin(ylo, y);
                    yhi = fmax(yhi, y);
                }
        if (!isfinite(ylo)) {
            ylo = 0;
            yhi = 1;
        }
        axis ay;
        axis_fit(&ay, ylo, yhi, pn->log_y, 6);
        for (int t = 0; t < ay.n_ticks; t++) {
            if (ay.ticks[t] < ay.lo || ay.ticks[t] > ay.hi) continue;
            double yy = map(ay.ticks[t], ay.lo, ay.hi, py1, py0);
            cv_line(c, px0, yy, px1, yy, 0xE3E3E3, 1);
            cv_text(c, px0 - 6, yy + 4, ay.labels[t], 12, ANCHOR_END, false, false, 0x333333);
        }
        for (int t = 0; t < ax.n_ticks; t++) {
            if (ax.ticks[t] < ax.lo || ax.ticks[t] > ax.hi) continue;
            double xx = map(ax.ticks[t], ax.lo, ax.hi, px0, px1);
            cv_line(c, xx, py0, xx, py1, 0xE3E3E3, 1);
            if (p == fig->n_panels - 1) cv_text(c, xx, py1 + 18, ax.labels[t], 12, ANCHOR_MIDDLE, false, false, 0x333333);
        }
        cv_rect(c, px0, py0, px1 - px0, py1 - py0, -1, 1, 0x444444);
        cv_text(c, 22, (py0 + py1) / 2, pn->ylabel ? pn->ylabel : "", 14, ANCHOR_MIDDLE, false, true, 0);
        for (int s = 0; s < pn->n_series; s++) {
            const plot_series *se = &pn->series[s];
            unsigned col = k_colors[(size_t)(color_i + s) % N_COLORS];
            size_t k = 0;
            /* non-finite values break the line into runs */
            for (size_t i = 0; i <= se->n; i++) {
                if (i < se->n && usable(pn, se, i, &y)) {
                    xy[2 * k] = map(se->x[i], ax.lo, ax.hi, px0, px1);
                    xy[2 * k + 1] = map(y, ay.lo, ay.hi, py1, py0);
                    k++;
                    continue;
                }
                if (k) cv_polyline(c, xy, k, col, se->faint ? 1.2 : 1.8, se->faint ? 0.45 : 1.0);
                k = 0;
            }
            if (se->markers)
                for (size_t i = 0; i < se->n; i++)
                    if (usable(pn, se, i, &y))
                        cv_circle(c, map(se->x[i], ax.lo, ax.hi, px0, px1), map(y, ay.lo, ay.hi, py1, py0), 3.5, col);
        }
        if (pn->n_series > 0) {
            double lw = 0;
            for (int s = 0; s < pn->n_series; s++)
                lw = fmax(lw, (double)FONT_W * (double)strlen(pn->series[s].name ? pn->series[s].name : ""));
            /* the corner whose box covers the fewest data points (top right on ties) */
            double bw = lw + 38, bh = 8 + 18 * pn->n_series;
            double cx[4] = {px1 - bw - 8, px0 + 8, px1 - bw - 8, px0 + 8};
            double cy[4] = {py0 + 8, py0 + 8, py1 - bh - 8, py1 - bh - 8};
            int best = 0;
            long best_hits = -1;
            for (int cn = 0; cn < 4; cn++) {
                long hits = 0;
                for (int s2 = 0; s2 < pn->n_series; s2++)
                    for (size_t i = 0; i < pn->series[s2].n; i++) {
                        if (!usable(pn, &pn->series[s2], i, &y)) continue;
                        double X = map(pn->series[s2].x[i], ax.lo, ax.hi, px0, px1), Y = map(y, ay.lo, ay.hi, py1, py0);
                        hits += X >= cx[cn] - 6 && X <= cx[cn] + bw + 6 && Y >= cy[cn] - 6 && Y <= cy[cn] + bh + 6;
                    }
                if (best_hits < 0 || hits < best_hits) {
                    best_hits = hits;
                    best = cn;
                }
            }
            double bx = cx[best], by = cy[best];
            cv_rect(c, bx, by, bw, bh, 0xFFFFFF, 0.85, 0xBBBBBB);
            for (int s = 0; s < pn->n_series; s++) {
                unsigned col = k_colors[(size_t)(color_i + s) % N_COLORS];
                double ly = by + 16 + 18 * s;
                cv_line(c, bx + 6, ly - 4, bx + 26, ly - 4, col, 2.5);
                cv_text(c, bx + 32, ly, pn->series[s].name ? pn->series[s].name : "", 12, ANCHOR_START, false, false, 0);
            }
        }
        color_i += pn->n_series;
    }
    cv_text(c, (px0 + px1) / 2, c->H - 14, fig->xlabel ? fig->xlabel : "", 14, ANCHOR_MIDDLE, false, false, 0);
    free(xy);
}

int plot_write(const char *path, const plot_figure *fig, char *err, size_t errlen) {
    size_t pl = strlen(path);
    canvas c;
    memset(&c, 0, sizeof c);
    c.png = pl >= 4 && strcmp(path + pl - 4, ".png") == 0;
    c.W = FIG_W;
    c.H = TITLE_H + fig->n_panels * PANEL_H + (fig->n_panels - 1) * PANEL_GAP + XAXIS_H;
    sbuf out = {0};
    int rc = -1;
    if (c.png) {
        c.rgb = malloc((size_t)c.W * (size_t)c.H * 3);
        c.mask = calloc((size_t)c.W * (size_t)c.H, sizeof *c.mask);
        if (!c.rgb || !c.mask) goto oom;
        memset(c.rgb, 255, (size_t)c.W * (size_t)c.H * 3);
        render(&c, fig);
        if (c.oom || png_encode(&c, &out) != 0) goto oom;
    } else {
        sb_printf(&c.svg,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                  "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
                  c.W, c.H, c.W, c.H);
        render(&c, fig);
        sb_printf(&c.svg, "</svg>\n");
        if (c.oom || c.svg.oom) goto oom;
        out = c.svg;
        c.svg = (sbuf){0};
    }
    rc = cli_write_atomic(path, out.data, out.len);
    if (rc != 0) snprintf(err, errlen, "cannot write %s", path);
    goto done;
oom:
    snprintf(err, errlen, "out of memory rendering %s", path);
done:
    free(out.data);
    free(c.svg.data);
    free(c.rgb);
    free(c.mask);
    return rc;
}
