#!/usr/bin/env python3
"""tokenizer_hf.py - the HF `tokenizers` side of bench/bench_tokenizer.c: load time and
single-thread encode throughput over the same corpus file.

    RAYON_NUM_THREADS=1 python3 bench/tokenizer_hf.py TOKENIZER.json [CORPUS.bin.zst] [REPS]

Process CPU time is reported next to wall time (the machine is shared). Reports two
single-thread numbers: per-document Tokenizer.encode (the unit the C bench uses)
and encode_batch over all documents with RAYON_NUM_THREADS=1. Medians; the first pass (cold
cache) is reported separately."""
import os
import statistics
import struct
import subprocess
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402


def main():
    path = sys.argv[1]
    corpus = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/tokenizer/corpus.bin.zst"
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    raw = subprocess.run(["zstd", "-dc", corpus], check=True, capture_output=True).stdout
    n = struct.unpack("<I", raw[8:12])[0]
    off, docs = 12, []
    for _ in range(n):
        ln = struct.unpack("<I", raw[off:off + 4])[0]
        docs.append(raw[off + 4:off + 4 + ln].decode("utf-8"))
        off += 4 + ln
    nbytes = sum(len(d.encode()) for d in docs)
    lt, lc = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        tok = Tokenizer.from_file(path)
        lt.append(time.perf_counter() - t)
        lc.append(time.process_time() - c)
    print(f"tokenizer: {path}\nload: median {1e3 * statistics.median(lt):.1f} ms wall, "
          f"{1e3 * statistics.median(lc):.1f} ms CPU over {reps} runs")
    for mode in ("encode", "encode_batch"):
        tok = Tokenizer.from_file(path)
        ts, cs = [], []
        for r in range(reps + 1):
            t, c = time.perf_counter(), time.process_time()
            if mode == "encode":
                nids = sum(len(tok.encode(d).ids) for d in docs)
            else:
                nids = sum(len(e.ids) for e in tok.encode_batch(docs))
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
        print(f"{mode}: cold {nbytes / 1e6 / cs[0]:.2f} MB/s CPU; median wall {nbytes / 1e6 / statistics.median(ts[1:]):.2f}"
              f" MB/s; median CPU {nbytes / 1e6 / statistics.median(cs[1:]):.2f} MB/s, {nids} ids"
              f" (RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']})")


if __name__ == "__main__":
    main()
