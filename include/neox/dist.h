/*
 * neox/dist.h - data-parallel training over MPI (docs/DISTRIBUTED.md).
 *
 * `mpirun -np N neox train CONFIG` runs N processes ("ranks"). The config's batch is the
 * global batch: each optimizer step takes gradient_accumulation_steps micro batches of
 * micro_batch samples in GPT-NeoX's sample order, and with N ranks rank r trains the
 * contiguous block of micro batches r*A/N .. (r+1)*A/N - 1. Gradients are summed by a fixed
 * tree keyed by the global micro batch index, never by rank, so 1, 2 or 4 ranks produce
 * bit-identical weights, metrics and checkpoints, also with ZeRO stage 1 (the config's
 * zero_optimization.stage: AdamW state sharded across ranks) and with the exchange
 * overlapped with the backward pass (overlap_comm). Rank 0 writes metrics and
 * checkpoints; any N resumes any other N's checkpoint, with or without ZeRO.
 *
 * A build without MPI (CMake NX_MPI=OFF) still has this API: nx_dist_init gives a
 * one-rank group, and refuses to run when it finds itself started by an MPI launcher.
 * Depends on neox/core.h and neox/train.h.
 */
#ifndef NEOX_DIST_H
#define NEOX_DIST_H

#include "neox/core.h"
#include "neox/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nx_dist nx_dist;

/* True when this build can run multi-process (built with MPI). */
NX_API bool nx_dist_available(void);

/* Joins the process group when started by an MPI launcher (mpirun/mpiexec/srun with PMI or
 * PMIx), else makes a one-rank group without touching MPI. Call once, before any thread
 * is started; argc/argv may be NULL. Collectives are bounded by a watchdog: a collective
 * that waits longer than `timeout_s` seconds (<= 0: NEOX_DIST_TIMEOUT from the
 * environment, else 600) logs an error and ends the process with exit status 124, which
 * makes the launcher stop the whole job. Caller owns *out (nx_dist_finalize). */
NX_API nx_status nx_dist_init(int *argc, char ***argv, double timeout_s, nx_dist **out);
NX_API int nx_dist_rank(const nx_dist *d);   /* 0 for NULL */
NX_API int nx_dist_size(const nx_dist *d);   /* 1 for NULL */
/* Ends the whole job now (MPI_Abort with `code`); for a fatal error on one rank, so the
 * others do not wait for it. With one rank it returns and the caller exits normally. */
NX_API void nx_dist_abort(nx_dist *d, int code);
/* True on every rank when flag is true on any rank (a collective: all ranks call it the
 * same number of times). Used to stop all ranks after the same step on Ctrl-C. */
NX_API bool nx_dist_any(nx_dist *d, bool flag);
/* Leaves the group (MPI_Finalize) and frees d. NULL is fine. */
NX_API void nx_dist_finalize(nx_dist *d);

/* nx_trainer_create over a process group: every rank must call it with the same config.
 * gradient_accumulation_steps must be a multiple of the group size. Rank 0 alone writes
 * to the save directory. The ranks agree on the outcome: when one fails, all return an
 * error. d may be NULL (one process, the same as nx_trainer_create). d is borrowed and
 * must outlive the trainer. */
NX_API nx_status nx_trainer_create_dist(const nx_train_config *cfg, bool resume, nx_dist *d, nx_trainer **out);

/* Seconds the last nx_trainer_step spent in inter-process communication (waiting included). */
NX_API double nx_trainer_comm_seconds(const nx_trainer *t);

#ifdef __cplusplus
}
#endif
#endif /* NEOX_DIST_H */
