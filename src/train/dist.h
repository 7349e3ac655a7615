/*
 * dist.h - private interface of the data-parallel layer (dist.c) used by the trainer:
 * the deterministic gradient reduction (optionally overlapped with the backward pass),
 * the ZeRO stage 1 optimizer shard, loss gathering and agreement on a status.
 * Depends on core, the public neox/dist.h, and the train layer's model internals.
 */
#ifndef NX_TRAIN_DIST_H
#define NX_TRAIN_DIST_H

#include "core/core.h"
#include "neox/dist.h"

/* The step's gradient is the sum of its A micro-batch gradients by a fixed tree over the
 * micro-batch index k = 0..A-1, the same whatever the number of ranks N:
 *   while the node count n is even: node i = node 2i + node 2i+1 (adjacent pairs), n /= 2;
 *   when n is odd (> 1): node 0 += node 1, += node 2, ... in order.
 * Rank r trains the contiguous block k = r*c .. r*c + c - 1 (c = A/N), so the levels at
 * which c is still even pair leaves of one rank and run locally (streaming, as each micro
 * batch finishes); the rest run on each rank's 1/N slice of the parameter vector after an
 * exchange (every rank sends slice s of its remaining nodes to rank s), and the slices are
 * then all-gathered (or, with ZeRO, the updated weights are). Every element sees the same additions
 * in the same order for any N. */

/* All of one rank's c leaves at once (tests, benchmarks): v[a] holds leaf r*c + a; on
 * return v[0] holds the full sum on every rank; v[] is reordered and the buffers clobbered.
 * *comm_s is increased by the time spent in MPI calls. */
nx_status nx__dist_reduce_grads(nx_dist *d, nx_pool *pool, float **v, int A, size_t n, double *comm_s);

/* Streaming accumulator (the trainer): with one rank at most log2(c) + 2 buffers of n
 * floats instead of c (the final fold streams too); with N ranks log2 of c's power-of-two
 * part + 1 + c's odd factor (those nodes all go into the exchange). Per step: for each of
 * this rank's micro batches in order, b = nx__grad_acc_next (a buffer to compute into; not
 * zeroed), then nx__grad_acc_push(b) once b holds the gradient; then nx__grad_acc_finish
 * gives the full sum (valid until the next step's first nx__grad_acc_next). `first` (the
 * model's own gradient buffer) is used as one of the buffers and is not freed by
 * nx__grad_acc_free.
 *
 * Overlap: instead of push, call nx__grad_acc_begin(b) before the backward pass and
 * nx__grad_acc_ready(lo) each time the elements [lo, n) of b are final (lo decreasing, the
 * last call with lo = 0; nx__tmodel_set_grad_hook). The tree additions then run range by
 * range, and during the rank's last micro batch each slice of the exchange is sent as soon
 * as it is final, so the transfer overlaps the rest of the backward pass. Every element sees
 * the same additions in the same order either way. */
typedef struct nx_grad_acc nx_grad_acc;
nx_status nx__grad_acc_create(nx_dist *d, int A, size_t n, float *first, nx_grad_acc **out);
void nx__grad_acc_free(nx_grad_acc *g);
/* ZeRO: finish leaves the reduced sum in this rank's slice (nx__dist_slice) of the result
 * only, and skips the all-gather of the gradient (the updated weights are gathered instead). */
void nx__grad_acc_shard_only(nx_grad_acc *g, bool on);
float *nx__grad_acc_next(nx_grad_acc *g);   /* NULL with the error recorded on OOM */
nx_status nx__grad_acc_push(nx_grad_acc *g, nx_pool *pool, float *b);
nx_status nx__grad_acc_begin(nx_grad_acc *g, float *b);
void nx__grad_acc_ready(nx_grad_acc *g, nx_pool *pool, size_t lo);
/* *comm_s is increased by the step's time in MPI calls (the sends during backward included). */
nx_status nx__grad_acc_finish(nx_grad_acc *g, nx_pool *pool, float **result, double *comm_s);
int nx__grad_acc_buffers(const nx_grad_acc *g);   /* buffers allocated so far, `first` included */

/* This rank's slice [lo, hi) of an n-float vector: the part of the step's gradient it
 * reduces, and with ZeRO the parameters whose optimizer state it holds. Boundaries are
 * multiples of NX_NORM_CHUNK (train_internal.h), the last ends at n. */
void nx__dist_slice(const nx_dist *d, size_t n, size_t *lo, size_t *hi);
/* Every rank's slice of v (n floats) to every rank, in place. */
nx_status nx__dist_allgather_slices(nx_dist *d, float *v, size_t n, double *comm_s);

/* ZeRO stage 1 (optimizer state sharding): each rank holds the AdamW moments of its slice
 * only, updates the weights of its slice from the reduced gradient slice (the norm from
 * every rank's per-chunk partial sums, summed in chunk order: the same bits as
 * nx_tmodel_adamw_step), and the updated weights are all-gathered. With one rank the shard
 * is everything. */
typedef struct nx_zero nx_zero;
nx_status nx__zero_create(nx_dist *d, size_t n, nx_zero **out);   /* moments zeroed */
void nx__zero_free(nx_zero *z);
void nx__zero_range(const nx_zero *z, size_t *lo, size_t *hi);
float *nx__zero_moment(nx_zero *z, int which);   /* 0: m, 1: v; element i at [i - lo] */
/* The optimizer step on the model whose gradient buffer holds the reduced slice. */
nx_status nx__zero_step(nx_zero *z, nx_tmodel *m, nx_pool *pool, const nx_adamw_config *opt, double lr,
                        float *grad_norm, double *comm_s);
/* Saving a checkpoint: every rank calls it for which = 0 (m) then 1 (v). Rank 0 gets the
 * moment in increasing ranges, fn(ctx, lo, hi, values of [lo, hi)): its own slice, then
 * each other rank's in 4 MiB pieces, so it never holds the whole state; fn's error stops
 * it (the other ranks are then ended by the caller's abort).
 * fn and ctx are ignored on the other ranks, which send their slice. */
typedef nx_status (*nx_slice_fn)(void *ctx, size_t lo, size_t hi, const float *v);
nx_status nx__zero_save_moment(nx_zero *z, int which, nx_slice_fn fn, void *ctx, double *comm_s);

/* Gathers this rank's A/N per-micro-batch values (local index a = micro batch r*c + a) into
 * all[0..A-1] in micro-batch order, on every rank. local and all may be the same array. */
nx_status nx__dist_gather_losses(nx_dist *d, const float *local, int A, float *all, double *comm_s);
/* All ranks call it with their own status; returns st when it is an error, NX_OK when
 * every rank is OK, else NX_ERR_CANCELLED with a message naming the first failing rank. */
nx_status nx__dist_agree(nx_dist *d, nx_status st);

#endif
