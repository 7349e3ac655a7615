/* cmd_plot.c - `neox plot RUN_DIR -o loss.svg`: training curves from RUN_DIR/metrics.jsonl
 * (one JSON object per step, as `neox train` writes: "step", "loss", "lr", and "val_loss" on
 * evaluation steps). Top panel: train loss (raw and, with --smooth, an EMA) and validation
 * loss; bottom panel: learning rate. A RUN_DIR may also be the metrics file itself. */
#include "cli.h"
#include "plot.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const CMD = "plot";

static void usage(FILE *f) {
    fprintf(f,
            "usage: neox plot RUN_DIR [-o FILE.svg] [--smooth A] [--log] [--title T]\n"
            "  RUN_DIR           training output directory holding metrics.jsonl (or the .jsonl file itself)\n"
            "  -o, --output F    output image (default RUN_DIR/loss.svg)\n"
            "  --smooth A        also draw an exponential moving average of the loss, weight A in (0, 1)\n"
            "  --log             logarithmic loss axis\n"
            "  --title T         figure title (default: the run directory)\n");
}

typedef struct {
    double *v;
    size_t n, cap;
} dvec;

static bool dv_push(dvec *d, double x) {
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 256;
        double *nv = realloc(d->v, nc * sizeof *nv);
        if (!nv) return false;
        d->v = nv;
        d->cap = nc;
    }
    d->v[d->n++] = x;
    return true;
}

static double num(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

int cmd_plot(int argc, char **argv) {
    const char *run = NULL, *out = NULL, *title = NULL;
    double smooth = 0;
    bool logy = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = cli_next_arg(CMD, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--title")) {
            if (!(title = cli_next_arg(CMD, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--smooth")) {
            const char *v = cli_next_arg(CMD, argc, argv, &i);
            if (!v) return 2;
            if (!cli_parse_double(v, &smooth) || smooth <= 0 || smooth >= 1)
                return cli_usage_error(CMD, "--smooth: '%s' is not in (0, 1)", v);
        } else if (!strcmp(a, "--log")) {
            logy = true;
        } else if (a[0] != '-' && !run) {
            run = a;
        } else {
            return cli_usage_error(CMD, "unknown option '%s'", a);
        }
    }
    if (!run) return cli_usage_error(CMD, "missing RUN_DIR");
    struct stat sb;
    if (stat(run, &sb) != 0) {
        fprintf(stderr, "neox plot: %s does not exist\n", run);
        return 1;
    }
    char path[4096], outbuf[4096];
    if (S_ISDIR(sb.st_mode)) snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    else snprintf(path, sizeof path, "%s", run);
    if (!out) {
        if (S_ISDIR(sb.st_mode)) snprintf(outbuf, sizeof outbuf, "%s/loss.svg", run);
        else snprintf(outbuf, sizeof outbuf, "%s.svg", run);
        out = outbuf;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "neox plot: cannot open %s\n", path);
        return 1;
    }
    dvec step = {0}, loss = {0}, vstep = {0}, vloss = {0}, lr = {0}, ema = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    double e = NAN;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t k = 0;
        while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\n' || line[k] == '\r')) k++;
        if (k == (size_t)len) continue;
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)len, 0, &jerr);
        if (!o || !json_is_object(o)) {
            /* a run still writing may end in a partial line: tolerate only the last one */
            json_decref(o);
            int c = fgetc(f);
            if (c == EOF) break;
            fprintf(stderr, "neox plot: %s:%ld: not a JSON object (%s)\n", path, lineno, o ? "expected {...}" : jerr.text);
            rc = 1;
            break;
        }
        double s = num(o, "step");
        if (!isfinite(s)) {
            fprintf(stderr, "neox plot: %s:%ld: missing numeric \"step\"\n", path, lineno);
            json_decref(o);
            rc = 1;
            break;
        }
        double l = num(o, "loss"), r = num(o, "lr"), v = num(o, "val_loss");
        if (isfinite(l)) e = isfinite(e) ? smooth * e + (1 - smooth) * l : l;
        bool ok = dv_push(&step, s) && dv_push(&loss, l) && dv_push(&lr, r) && dv_push(&ema, isfinite(l) ? e : NAN);
        if (ok && isfinite(v)) ok = dv_push(&vstep, s) && dv_push(&vloss, v);
        json_decref(o);
        if (!ok) {
            fprintf(stderr, "neox plot: out of memory\n");
            rc = 1;
            break;
        }
    }
    free(line);
    fclose(f);
    if (rc == 0 && step.n == 0) {
        fprintf(stderr, "neox plot: %s holds no steps\n", path);
        rc = 1;
    }
    if (rc == 0) {
        plot_series top[3];
        int nt = 0;
        top[nt++] = (plot_series){"train loss", step.v, loss.v, step.n, step.n <= 40, smooth > 0};
        if (smooth > 0) top[nt++] = (plot_series){"train loss (EMA)", step.v, ema.v, step.n, false, false};
        if (vstep.n) top[nt++] = (plot_series){"val loss", vstep.v, vloss.v, vstep.n, true, false};
        plot_series bot = {"learning rate", step.v, lr.v, step.n, false, false};
        bool have_lr = false;
        for (size_t i = 0; i < lr.n; i++) have_lr = have_lr || isfinite(lr.v[i]);
        plot_panel panels[2] = {{"loss", top, nt, logy}, {"learning rate", &bot, 1, false}};
        plot_figure fig = {title ? title : run, "step", panels, have_lr ? 2 : 1};
        char err[512];
        if (plot_write(out, &fig, err, sizeof err) != 0) {
            fprintf(stderr, "neox plot: %s\n", err);
            rc = 1;
        } else {
            printf("%s\n", out);
        }
    }
    free(step.v);
    free(loss.v);
    free(vstep.v);
    free(vloss.v);
    free(lr.v);
    free(ema.v);
    return rc;
}
