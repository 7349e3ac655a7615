#!/usr/bin/env python3
"""bench_torch_load.py - builds a Pythia-160M-shaped pytorch_model.bin (random f16 weights,
GPT-NeoX names, 148 tensors, 325 MB) and times torch.load on it, for comparison with
`build/bench_torchbin DIR` (neox.c's reader) and `neox convert DIR OUT`.

  python3 tools/bench_torch_load.py /tmp/p160            # writes /tmp/p160, prints torch timings
  build/bench_torchbin /tmp/p160 11
  python3 tools/bench_torch_load.py /tmp/big --zip64     # a 4.4 GB torch.save file (ZIP64)

Medians of 5 runs (page cache warm after the first).
"""
import os
import statistics
import sys
import time

import torch


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "pytorch_model.bin")
    if "--zip64" in sys.argv:
        # zero pages from a sparse file: torch.save writes 4.4 GB without holding it in memory
        raw = os.path.join(out, "zeros.raw")
        with open(raw, "wb") as f:
            f.truncate(4_400_000_000)
        big = torch.from_file(raw, shared=False, size=4_400_000_000, dtype=torch.uint8)
        small = torch.arange(10, dtype=torch.float32)
        torch.save({"small_before": small, "big": big, "small_after": small * 2}, path)
        os.remove(raw)
    else:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
        cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, rotary_pct=0.25, max_position_embeddings=2048)
        torch.manual_seed(0)
        model = GPTNeoXForCausalLM(cfg).half()
        sd = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in model.state_dict().items()}
        torch.save(sd, path)
        cfg.save_pretrained(out)
    for mmap in (False, True):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            torch.load(path, weights_only=True, mmap=mmap)
            times.append(time.perf_counter() - t)
        print(f"torch.load(weights_only=True, mmap={mmap}): median {statistics.median(times) * 1e3:.1f} ms "
              f"({os.path.getsize(path) / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
