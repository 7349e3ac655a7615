/*
 * cmd_train.c - `neox train CONFIG.json [--resume] [--threads N] [--quiet]`: runs a
 * training config (docs/TRAINING.md), writing checkpoints and metrics.jsonl under the
 * config's "save" directory. A progress line goes to stderr when it is a terminal; a
 * summary line per checkpoint and at the end goes to stdout.
 */
#include "cli.h"
#include "neox/dist.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

/* Library log lines (the collective watchdog's) go to stderr, prefixed by the rank. */
static void log_stderr(nx_log_level level, const char *msg, void *user) {
    (void)level;
    fprintf(stderr, "neox train [rank %d]: %s\n", *(const int *)user, msg);
    fflush(stderr);
}

static void help(FILE *f) {
    fprintf(f,
            "usage: neox train CONFIG.json [--resume] [--threads N] [--bf16|--fp32] [--zero-stage S] [--overlap|--no-overlap]\n"
            "                  [--quiet]\n\n"
            "Trains a GPT-NeoX model as the JSON config describes (model, data, batch, optimizer,\n"
            "schedule, checkpoints: see docs/TRAINING.md). Checkpoints are HF model directories\n"
            "SAVE/step<N>/ written on Pythia's schedule (0, 1, 2, 4, ..., 512, then every\n"
            "checkpoint_factor steps, and the last step); SAVE/metrics.jsonl has one line per step.\n\n"
            "  --resume      continue from the newest checkpoint in SAVE (bit-identical to an\n"
            "                uninterrupted run); refuses a corrupt or mismatched checkpoint\n"
            "  --threads N   worker threads (default: the config's \"threads\", else all CPUs);\n"
            "                results do not depend on it\n"
            "  --bf16        matmul operands rounded to bfloat16, fp32 accumulation; master weights,\n"
            "                LayerNorm, softmax, loss and AdamW stay fp32 (the config's \"precision\" or\n"
            "                \"bf16\": {\"enabled\": true}); --fp32: all fp32 whatever the config says\n"
            "  --zero-stage S  0, or 1: shard the AdamW state across the MPI processes (overrides\n"
            "                the config's zero_optimization.stage; same results either way)\n"
            "  --overlap     send gradient slices during the backward pass (the config's\n"
            "                zero_optimization.overlap_comm; --no-overlap: after it); same results\n"
            "  --quiet       no progress line\n\n"
            "Ctrl-C stops after the current step without writing a checkpoint; resume from the last one.\n\n"
            "Data parallel: `mpirun -np N neox train CONFIG.json` splits every global batch over N\n"
            "processes (gradient_accumulation_steps must be a multiple of N) and gives the same bits as\n"
            "one process; rank 0 writes. See docs/DISTRIBUTED.md.%s\n",
            nx_dist_available() ? "" : " (this build has no MPI)");
}

int cmd_train(int argc, char **argv) {
    const char *cfg_path = NULL;
    bool resume = false, quiet = false;
    long threads = -1, zero = -1;
    int overlap = -1, bf16 = -1;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { help(stdout); return 0; }
        if (!strcmp(argv[i], "--resume")) resume = true;
        else if (!strcmp(argv[i], "--quiet")) quiet = true;
        else if (!strcmp(argv[i], "--overlap")) overlap = 1;
        else if (!strcmp(argv[i], "--no-overlap")) overlap = 0;
        else if (!strcmp(argv[i], "--bf16")) bf16 = 1;
        else if (!strcmp(argv[i], "--fp32")) bf16 = 0;
        else if (!strcmp(argv[i], "--zero-stage")) {
            const char *v = cli_next_arg("train", argc, argv, &i);
            if (!v) return 2;
            if (!cli_parse_long(v, 0, 1, &zero)) return cli_usage_error("train", "--zero-stage: expected 0 or 1, got '%s'", v);
        }
        else if (!strcmp(argv[i], "--threads")) {
            const char *v = cli_next_arg("train", argc, argv, &i);
            if (!v) return 2;
            if (!cli_parse_long(v, 1, 1024, &threads)) return cli_usage_error("train", "--threads: bad value '%s'", v);
        } else if (argv[i][0] == '-') return cli_usage_error("train", "unknown option %s", argv[i]);
        else if (!cfg_path) cfg_path = argv[i];
        else return cli_usage_error("train", "unexpected argument '%s'", argv[i]);
    }
    if (!cfg_path) return cli_usage_error("train", "missing CONFIG.json");
    nx_dist *dist = NULL;
    nx_status st = nx_dist_init(NULL, NULL, 0, &dist);
    if (st != NX_OK) return cli_fail("train", st, "process group");
    static int rank;
    rank = nx_dist_rank(dist);
    int nranks = nx_dist_size(dist);
    if (nranks > 1) nx_log_set(log_stderr, &rank, NX_LOG_WARN);
    nx_train_config cfg;
    st = nx_train_config_load(cfg_path, &cfg);
    if (st != NX_OK) {
        /* Every rank reads the same file: one message is enough. */
        int rc = rank == 0 ? cli_fail("train", st, "config") : 1;
        nx_dist_finalize(dist);
        return rc;
    }
    if (threads > 0) cfg.threads = (int)threads;
    if (zero >= 0) cfg.zero_stage = (int)zero;
    if (overlap >= 0) cfg.overlap_comm = overlap != 0;
    if (bf16 >= 0) cfg.bf16 = bf16 != 0;
    nx_trainer *tr = NULL;
    st = nx_trainer_create_dist(&cfg, resume, dist, &tr);
    if (st != NX_OK) {
        /* A rank whose own start was fine reports only through the failing rank. */
        int rc = (rank == 0 || st != NX_ERR_CANCELLED) ? cli_fail("train", st, resume ? "resume" : "start") : 1;
        nx_dist_finalize(dist);
        return rc;
    }
    if (rank != 0) quiet = true;
    bool tty = !quiet && isatty(2);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    long start = nx_trainer_iter(tr);
    if (start >= cfg.train_iters) {
        if (rank == 0) printf("training already complete at step %ld (%s)\n", start, cfg.out_dir);
        nx_trainer_free(tr);
        nx_dist_finalize(dist);
        return 0;
    }
    if (resume && rank == 0) printf("resumed from step %ld\n", start);
    if (nranks > 1 && rank == 0) printf("data parallel over %d processes\n", nranks);
    nx_train_metrics m;
    int rc = 0;
    while (nx_trainer_iter(tr) < cfg.train_iters) {
        st = nx_trainer_step(tr, &m);
        if (st != NX_OK) {
            rc = cli_fail("train", st, "step");
            /* The other ranks may be waiting in a collective for this one: end the job. */
            fflush(NULL);
            nx_dist_abort(dist, rc);
            break;
        }
        if (tty && (m.step % cfg.log_interval == 0 || m.step == cfg.train_iters)) {
            fprintf(stderr, "\rstep %ld/%ld  loss %.4f  lr %.3e  grad norm %.3f  %.0f tok/s  %.0fs%s", m.step,
                    cfg.train_iters, (double)m.loss, (double)m.lr, (double)m.grad_norm, m.tokens_per_s, m.elapsed_s,
                    m.has_val ? "" : "   ");
            if (m.has_val) fprintf(stderr, "  val %.4f", (double)m.val_loss);
            fflush(stderr);
        }
        if (rank == 0 && (m.saved || m.has_val)) {
            if (tty) fputc('\n', stderr);
            printf("step %ld: loss %.4f", m.step, (double)m.loss);
            if (m.has_val) printf(", val loss %.4f", (double)m.val_loss);
            if (m.saved) printf(", checkpoint %s/step%ld", cfg.out_dir, m.step);
            printf("\n");
            fflush(stdout);
        }
        /* All ranks must stop after the same step, or one would wait for the others. */
        if (nranks > 1 ? nx_dist_any(dist, g_stop != 0) : g_stop != 0) {
            if (tty) fputc('\n', stderr);
            if (rank == 0) fprintf(stderr, "neox train: interrupted after step %ld; continue with --resume\n", m.step);
            rc = 130;
            break;
        }
    }
    if (rc == 0 && rank == 0) {
        if (tty) fputc('\n', stderr);
        printf("done: %ld steps, final loss %.4f, %s/step%ld\n", nx_trainer_iter(tr), (double)m.loss, cfg.out_dir,
               nx_trainer_iter(tr));
    }
    nx_trainer_free(tr);
    nx_dist_finalize(dist);
    return rc;
}
