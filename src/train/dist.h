/*
 * dist.h - private interface of the data-parallel layer (dist.c) used by the trainer:
 * the deterministic gradient reduction, loss gathering and agreement on a status.
 * Depends on core and the public neox/dist.h.
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
 * all-to-all, and the slices are then all-gathered. Every element sees the same additions
 * in the same order for any N. */

/* All of one rank's c leaves at once (tests, benchmarks): v[a] holds leaf r*c + a; on
 * return v[0] holds the full sum on every rank; v[] is reordered and the buffers clobbered.
 * *comm_s is increased by the time spent in MPI calls. */
nx_status nx__dist_reduce_grads(nx_dist *d, nx_pool *pool, float **v, int A, size_t n, double *comm_s);

/* Streaming accumulator (the trainer): with one rank at most log2(c) + 2 buffers of n
 * floats instead of c (the final fold streams too); with N ranks log2 of c's power-of-two
 * part + 1 + c's odd factor (those nodes all go into the exchange). Per step: for each of this rank's micro batches in order,
 * b = nx__grad_acc_next (a buffer to compute into; not zeroed), then nx__grad_acc_push(b);
 * then nx__grad_acc_finish gives the full sum (valid until the next step's first
 * nx__grad_acc_next). `first` (the model's own gradient buffer) is used as one of the
 * buffers and is not freed by nx__grad_acc_free. */
typedef struct nx_grad_acc nx_grad_acc;
nx_status nx__grad_acc_create(nx_dist *d, int A, size_t n, float *first, nx_grad_acc **out);
void nx__grad_acc_free(nx_grad_acc *g);
float *nx__grad_acc_next(nx_grad_acc *g);   /* NULL with the error recorded on OOM */
void nx__grad_acc_push(nx_grad_acc *g, nx_pool *pool, float *b);
nx_status nx__grad_acc_finish(nx_grad_acc *g, nx_pool *pool, float **result, double *comm_s);
int nx__grad_acc_buffers(const nx_grad_acc *g);   /* buffers allocated so far, `first` included */

/* Gathers this rank's A/N per-micro-batch values (local index a = micro batch r*c + a) into
 * all[0..A-1] in micro-batch order, on every rank. local and all may be the same array. */
nx_status nx__dist_gather_losses(nx_dist *d, const float *local, int A, float *all, double *comm_s);
/* All ranks call it with their own status; returns st when it is an error, NX_OK when
 * every rank is OK, else NX_ERR_CANCELLED with a message naming the first failing rank. */
nx_status nx__dist_agree(nx_dist *d, nx_status st);

#endif
