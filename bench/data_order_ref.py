#!/usr/bin/env python3
"""data_order_ref.py N_DOCS MEAN_TOKENS SEQ_LEN NUM_SAMPLES [SEED] - GPT-NeoX's
_build_index_mappings (numpy RandomState + megatron-core's compiled build_sample_idx) on the
same synthetic sizes as bench_data_order.c, for timing and for the first values."""
import sys
import time

import numpy as np
from megatron.core.datasets import helpers_cpp

n, mean, seq, num = (int(a) for a in sys.argv[1:5])
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 1234
sizes = np.empty(n, dtype=np.int32)
x = 88172645463325252
M = (1 << 64) - 1
# Same xorshift as the C bench (vectorising it is not worth it for a one-off reference).
for i in range(n):
    x ^= (x << 13) & M; x ^= x >> 7; x ^= (x << 17) & M
    sizes[i] = 1 + x % (2 * mean - 1)
t0 = time.time()
tokens = int(sizes.sum(dtype=np.int64))
epochs, total = 0, 0
while True:
    epochs += 1
    total += tokens
    if (total - 1) // seq >= num:
        break
rng = np.random.RandomState(seed)
doc_idx = np.mgrid[0:epochs, 0:n][1].reshape(-1).astype(np.int32)
rng.shuffle(doc_idx)
sample_idx = helpers_cpp.build_sample_idx_int32(sizes, doc_idx, seq, epochs, tokens, True, 1)
S = sample_idx.shape[0] - 1
shuffle_idx = np.arange(S, dtype=np.uint32 if S < 2**32 - 2 else np.int64)
rng.shuffle(shuffle_idx)
dt = time.time() - t0
print(f"epochs {epochs}, samples {S}; doc_idx[:4] {doc_idx[:4].tolist()} shuffle_idx[:4] {shuffle_idx[:4].tolist()}")
print(f"reference build order {dt:.2f} s")
