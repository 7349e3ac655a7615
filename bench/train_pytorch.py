#!/usr/bin/env python3
"""The training step bench/bench_train.c times, in PyTorch: GPTNeoXForCausalLM (fp32, eager
attention) built from a neox.c training config's "model" object, random tokens, forward,
cross-entropy, backward, global-norm clipping and AdamW with the no-decay group.

  python3 bench/train_pytorch.py configs/pythia-14m.json --batch 8 --seq 256 --steps 5 --threads 2

Prints the median wall time per step and tokens/s, plus the process CPU time per step
(on a shared machine, wall time alone mostly measures the neighbours).

Compare against a well-configured PyTorch: with the stock glibc allocator small steps spend
much of their time freeing and re-faulting memory, so preload an allocator that keeps freed
memory (Debian libtcmalloc-minimal4):

  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python3 bench/train_pytorch.py ...
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(a.config) as f:
        cfg = json.load(f)
    m = {k: v for k, v in cfg["model"].items() if k != "model_type"}
    model = GPTNeoXForCausalLM._from_config(GPTNeoXConfig(**m), attn_implementation="eager").float()
    model.train()
    V = m["vocab_size"]
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params.values() if p.ndim == 2], "weight_decay": 0.1},
                             {"params": [p for p in params.values() if p.ndim != 2], "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (a.batch, a.seq), generator=g)
    y = torch.randint(0, V, (a.batch, a.seq), generator=g)
    walls, cpus = [], []
    for it in range(a.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=False)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if it > 0:   # step 0 warms up
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    w, c = statistics.median(walls), statistics.median(cpus)
    tok = a.batch * a.seq
    print(f"pytorch {torch.__version__} {a.config}: B={a.batch} T={a.seq} threads={a.threads}: "
          f"median step {w:.3f} s wall, {tok / w:.0f} tokens/s; CPU {c:.3f} s/step, "
          f"{tok * a.threads / c:.0f} tokens per {a.threads} CPU-seconds")


if __name__ == "__main__":
    main()
