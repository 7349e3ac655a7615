#!/usr/bin/env python3
"""data_make_corpus.py OUT.jsonl.zst MBYTES - a Pile-like benchmark corpus from text already on
a Debian machine (Python standard library sources, C headers, /usr/share/doc), one JSON line
per file, cycled until MBYTES of text, zstd-compressed (level 3, as the Pile shards).
Deterministic: files are taken in sorted order."""
import glob
import json
import os
import sys

import zstandard

out, mb = sys.argv[1], float(sys.argv[2])
roots = sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True)) + \
        sorted(glob.glob("/usr/include/**/*.h", recursive=True)) + \
        sorted(p for p in glob.glob("/usr/share/doc/**/*", recursive=True)
               if os.path.isfile(p) and not p.endswith((".gz", ".png", ".jpg", ".svg", ".pdf")))
docs = []
for p in roots:
    try:
        with open(p, encoding="utf-8") as f:
            t = f.read()
    except (UnicodeDecodeError, OSError):
        continue
    if t.strip():
        docs.append((p, t))
limit, size, i = int(mb * 1e6), 0, 0
cctx = zstandard.ZstdCompressor(level=3)
with open(out, "wb") as fh, cctx.stream_writer(fh) as w:
    while size < limit:
        p, t = docs[i % len(docs)]
        w.write((json.dumps({"text": t, "meta": {"pile_set_name": "bench", "path": p}}) + "\n").encode())
        size += len(t.encode())
        i += 1
print(f"{out}: {i} docs, {size / 1e6:.1f} MB of text")
