/*
 * plot.c - SVG line charts for the CLI. Layout: a title, then the panels stacked with a
 * shared x axis (tick labels on the bottom panel only), each with its own y axis, grid,
 * and legend in the top-right corner. Ticks use the 1-2-5 rule; a log axis puts ticks at
 * powers of ten (and 2x, 5x when the range is short). Colours are the Okabe-Ito palette,
 * which stays distinct for colour-blind readers.
 */
#include "plot.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const k_colors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"};
#define N_COLORS (sizeof k_colors / sizeof k_colors[0])

enum { FIG_W = 880, MARGIN_L = 86, MARGIN_R = 24, TITLE_H = 44, PANEL_H = 300, PANEL_GAP = 26, XAXIS_H = 58 };

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

/* ---- axes ------------------------------------------------------------------------------ */
typedef struct {
    double lo, hi;     /* data range shown (log10 units on a log axis) */
    double tick0, step;
    int n_ticks;
    bool log;
} axis;

static double nice_step(double range, int target) {
    double raw = range / target;
    double p = pow(10.0, floor(log10(raw)));
    double f = raw / p;
    double nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    return nf * p;
}

static void axis_fit(axis *a, double lo, double hi, bool log_axis, int target, bool pad) {
    a->log = log_axis;
    if (!(hi > lo)) {
        double c = lo, d = fabs(c) > 0 ? fabs(c) * 0.1 : 1.0;
        if (log_axis) d = 0.5;
        lo = c - d;
        hi = c + d;
    }
    if (pad && !log_axis) {
        double m = (hi - lo) * 0.04;
        lo -= m;
        hi += m;
    }
    if (log_axis) {
        a->step = 1.0;
        a->lo = lo;
        a->hi = hi;
        a->tick0 = ceil(lo - 1e-9);
        a->n_ticks = (int)floor(hi + 1e-9) - (int)a->tick0 + 1;
        return;
    }
    double st = nice_step(hi - lo, target);
    a->step = st;
    a->lo = lo;
    a->hi = hi;
    a->tick0 = ceil(lo / st - 1e-9) * st;
    a->n_ticks = (int)floor((hi - a->tick0) / st + 1e-9) + 1;
}

/* Formats a tick value compactly: 1500 -> "1.5k", 0.0003 -> "3e-4", 2.50 -> "2.5". */
static void fmt_tick(char *out, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;
    double a = fabs(v);
    if (a != 0 && (a >= 1e6 || a < 1e-3)) {
        snprintf(out, n, "%.3g", v);
    } else if (a >= 1e4 && step >= 100) {
        snprintf(out, n, "%gk", v / 1000.0);
    } else {
        int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        if (dec > 6) dec = 6;
        snprintf(out, n, "%.*f", dec, v);
    }
}

static double map(double v, double lo, double hi, double p0, double p1) { return p0 + (v - lo) / (hi - lo) * (p1 - p0); }

/* ---- SVG ---------------------------------------------------------------------------------- */
static int render_svg(sbuf *b, const plot_figure *fig) {
    int H = TITLE_H + fig->n_panels * PANEL_H + (fig->n_panels - 1) * PANEL_GAP + XAXIS_H;
    double px0 = MARGIN_L, px1 = FIG_W - MARGIN_R;
    /* shared x range over all series */
    double xlo = INFINITY, xhi = -INFINITY;
    for (int p = 0; p < fig->n_panels; p++)
        for (int s = 0; s < fig->panels[p].n_series; s++) {
            const plot_series *se = &fig->panels[p].series[s];
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
    axis_fit(&ax, xlo, xhi, false, 8, true);
    sb_printf(b,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
              "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
              FIG_W, H, FIG_W, H);
    sb_printf(b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    sb_printf(b, "<text x=\"%d\" y=\"28\" font-size=\"18\" text-anchor=\"middle\" font-weight=\"bold\">", FIG_W / 2);
    sb_text(b, fig->title);
    sb_printf(b, "</text>\n");
    int color_i = 0;
    for (int p = 0; p < fig->n_panels; p++) {
        const plot_panel *pn = &fig->panels[p];
        double py0 = TITLE_H + p * (PANEL_H + PANEL_GAP), py1 = py0 + PANEL_H;
        double ylo = INFINITY, yhi = -INFINITY;
        for (int s = 0; s < pn->n_series; s++)
            for (size_t i = 0; i < pn->series[s].n; i++) {
                double y = pn->series[s].y[i];
                if (!isfinite(y) || !isfinite(pn->series[s].x[i]) || (pn->log_y && y <= 0)) continue;
                if (pn->log_y) y = log10(y);
                ylo = fmin(ylo, y);
                yhi = fmax(yhi, y);
            }
        if (!isfinite(ylo)) {
            ylo = 0;
            yhi = 1;
        }
        axis ay;
        axis_fit(&ay, ylo, yhi, pn->log_y, 6, true);
        if (pn->log_y) {
            /* pad a log axis by a few percent of a decade so lines don't sit on the frame */
            double m = fmax((ay.hi - ay.lo) * 0.05, 0.02);
            ay.lo -= m;
            ay.hi += m;
        }
        /* frame, grid and ticks */
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#444\"/>\n", px0,
                  py0, px1 - px0, py1 - py0);
        for (int t = 0; t < ay.n_ticks; t++) {
            double v = ay.tick0 + t * ay.step;
            if (v < ay.lo || v > ay.hi) continue;
            double y = map(v, ay.lo, ay.hi, py1, py0);
            char lab[32];
            if (pn->log_y) {
                double real = pow(10.0, v);
                snprintf(lab, sizeof lab, "%g", real);
            } else {
                fmt_tick(lab, sizeof lab, v, ay.step);
            }
            sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n", px0, y, px1, y);
            sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\" fill=\"#333\">%s</text>\n",
                      px0 - 6, y + 4, lab);
        }
        for (int t = 0; t < ax.n_ticks; t++) {
            double v = ax.tick0 + t * ax.step;
            if (v < ax.lo || v > ax.hi) continue;
            double x = map(v, ax.lo, ax.hi, px0, px1);
            sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n", x, py0, x, py1);
            if (p == fig->n_panels - 1) {
                char lab[32];
                fmt_tick(lab, sizeof lab, v, ax.step);
                sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" fill=\"#333\">%s</text>\n",
                          x, py1 + 18, lab);
            }
        }
        sb_printf(b,
                  "<text x=\"18\" y=\"%.1f\" font-size=\"14\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">",
                  (py0 + py1) / 2, (py0 + py1) / 2);
        sb_text(b, pn->ylabel);
        sb_printf(b, "</text>\n");
        /* series */
        for (int s = 0; s < pn->n_series; s++) {
            const plot_series *se = &pn->series[s];
            const char *col = k_colors[(color_i + s) % N_COLORS];
            bool open = false;
            for (size_t i = 0; i < se->n; i++) {
                double y = se->y[i];
                bool ok = isfinite(y) && isfinite(se->x[i]) && !(pn->log_y && y <= 0);
                if (!ok) {
                    if (open) sb_printf(b, "\"/>\n");
                    open = false;
                    continue;
                }
                if (pn->log_y) y = log10(y);
                double X = map(se->x[i], ax.lo, ax.hi, px0, px1), Y = map(y, ay.lo, ay.hi, py1, py0);
                if (!open) {
                    sb_printf(b,
                              "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s stroke-linejoin=\"round\" "
                              "points=\"",
                              col, se->faint ? "1.2" : "1.8", se->faint ? " stroke-opacity=\"0.45\"" : "");
                    open = true;
                }
                sb_printf(b, "%.2f,%.2f ", X, Y);
            }
            if (open) sb_printf(b, "\"/>\n");
            if (se->markers)
                for (size_t i = 0; i < se->n; i++) {
                    double y = se->y[i];
                    if (!isfinite(y) || !isfinite(se->x[i]) || (pn->log_y && y <= 0)) continue;
                    if (pn->log_y) y = log10(y);
                    sb_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"%s\"/>\n",
                              map(se->x[i], ax.lo, ax.hi, px0, px1), map(y, ay.lo, ay.hi, py1, py0), col);
                }
        }
        /* legend, top right, on a white box so it stays readable over the lines */
        if (pn->n_series > 0) {
            double lw = 0;
            for (int s = 0; s < pn->n_series; s++) lw = fmax(lw, 7.2 * (double)strlen(pn->series[s].name ? pn->series[s].name : ""));
            /* the corner whose box covers the fewest data points (top right on ties) */
            double bw = lw + 38, bh = 8 + 18 * pn->n_series;
            double cx[4] = {px1 - bw - 8, px0 + 8, px1 - bw - 8, px0 + 8};
            double cy[4] = {py0 + 8, py0 + 8, py1 - bh - 8, py1 - bh - 8};
            int best = 0;
            long best_hits = -1;
            for (int c = 0; c < 4; c++) {
                long hits = 0;
                for (int s2 = 0; s2 < pn->n_series; s2++)
                    for (size_t i = 0; i < pn->series[s2].n; i++) {
                        double y = pn->series[s2].y[i];
                        if (!isfinite(y) || !isfinite(pn->series[s2].x[i]) || (pn->log_y && y <= 0)) continue;
                        if (pn->log_y) y = log10(y);
                        double X = map(pn->series[s2].x[i], ax.lo, ax.hi, px0, px1), Y = map(y, ay.lo, ay.hi, py1, py0);
                        hits += X >= cx[c] - 6 && X <= cx[c] + bw + 6 && Y >= cy[c] - 6 && Y <= cy[c] + bh + 6;
                    }
                if (best_hits < 0 || hits < best_hits) {
                    best_hits = hits;
                    best = c;
                }
            }
            double bx = cx[best], by = cy[best];
            sb_printf(b,
                      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"white\" fill-opacity=\"0.85\" "
                      "stroke=\"#bbb\"/>\n",
                      bx, by, bw, (int)bh);
            for (int s = 0; s < pn->n_series; s++) {
                const char *col = k_colors[(color_i + s) % N_COLORS];
                double ly = by + 16 + 18 * s;
                sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2.5\"/>\n",
                          bx + 6, ly - 4, bx + 26, ly - 4, col);
                sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">", bx + 32, ly);
                sb_text(b, pn->series[s].name);
                sb_printf(b, "</text>\n");
            }
        }
        color_i += pn->n_series;
    }
    sb_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"14\" text-anchor=\"middle\">", (px0 + px1) / 2, H - 14);
    sb_text(b, fig->xlabel);
    sb_printf(b, "</text>\n</svg>\n");
    return b->oom ? -1 : 0;
}

int plot_write(const char *path, const plot_figure *fig, char *err, size_t errlen) {
    size_t pl = strlen(path);
    if (pl >= 4 && strcmp(path + pl - 4, ".png") == 0) {
        snprintf(err, errlen, "%s: PNG output is not available; write .svg (render with rsvg-convert)", path);
        return -1;
    }
    sbuf b = {0};
    if (render_svg(&b, fig) != 0) {
        free(b.data);
        snprintf(err, errlen, "out of memory rendering %s", path);
        return -1;
    }
    int rc = cli_write_atomic(path, b.data, b.len);
    free(b.data);
    if (rc != 0) snprintf(err, errlen, "cannot write %s", path);
    return rc;
}
