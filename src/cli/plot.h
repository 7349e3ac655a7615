/*
 * plot.h - a small line-chart writer for the CLI (neox plot, neox eval sweep): one or more
 * stacked panels of x/y series, written as SVG, or as PNG through a built-in rasterizer and
 * a minimal PNG encoder (stored deflate blocks, so no zlib). Also the CLI's atomic file
 * writer. CLI-internal; uses libc only.
 */
#ifndef NX_CLI_PLOT_H
#define NX_CLI_PLOT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct plot_series {
    const char *name;   /* legend entry */
    const double *x, *y;   /* n points; non-finite y values break the line */
    size_t n;
    bool markers;       /* draw a dot at each point (few points, e.g. checkpoints) */
    bool faint;         /* half-transparent (a noisy raw series under its smoothed one) */
} plot_series;

typedef struct plot_panel {
    const char *ylabel;
    const plot_series *series;
    int n_series;
    bool log_y;         /* log10 y axis (all plotted y must be > 0; others are skipped) */
} plot_panel;

typedef struct plot_figure {
    const char *title;
    const char *xlabel;
    const plot_panel *panels;
    int n_panels;       /* stacked vertically, sharing the x axis */
} plot_figure;

/* Renders fig to path: PNG when path ends in ".png", SVG otherwise. Writes atomically
 * (temporary file, fsync, rename). Returns 0, or -1 with a message in err[errlen]. */
int plot_write(const char *path, const plot_figure *fig, char *err, size_t errlen);

/* Writes data to path via a temporary file renamed into place ("-" = stdout). 0 or -1. */
int cli_write_atomic(const char *path, const void *data, size_t n);

#endif
