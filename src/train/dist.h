/*
 * dist.h - private interface of the data-parallel layer (dist.c) used by the trainer:
 * the deterministic gradient reduction, loss gathering and agreement on a status.
 * Depends on core and the public neox/dist.h.
 */
#ifndef NX_TRAIN_DIST_H
#define NX_TRAIN_DIST_H

#include "core/core.h"
#include "neox/dist.h"

/* Sum of one optimizer step's micro-batch gradients, bit-identical for any group size.
 *
 * The step has A micro batches (global index k = 0..A-1); this rank computed the
 * gradients of k = a*N + rank for a = 0..A/N-1 into v[a] (n floats each). The sum is the
 * fixed tree T(A) over k: while the count n is even, g[i] += g[i + n/2] for i < n/2 and
 * n /= 2; when it is odd (> 1), g[0] += g[1], += g[2], ... in order. The first levels
 * pair micro batches of the same rank (k and k + n/2 differ by a multiple of N) and run
 * locally; the rest run on each rank's 1/N slice of the parameters after an all-to-all,
 * and the slices are then all-gathered. Every element sees the same additions in the
 * same order whatever N is. On return v[0] holds the full sum on every rank; the other
 * v[a] are clobbered. *comm_s is increased by the time spent in MPI calls. */
nx_status nx__dist_reduce_grads(nx_dist *d, nx_pool *pool, float **v, int A, size_t n, double *comm_s);

/* Gathers this rank's A/N per-micro-batch values (local index a) into all[k], k = a*N + rank,
 * on every rank. */
nx_status nx__dist_gather_losses(nx_dist *d, const float *local, int A, float *all, double *comm_s);

/* All ranks call it with their own status; returns st when it is an error, NX_OK when
 * every rank is OK, else NX_ERR_CANCELLED with a message naming the first failing rank. */
nx_status nx__dist_agree(nx_dist *d, nx_status st);

#endif
