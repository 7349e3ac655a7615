#!/usr/bin/env python3
"""data_preprocess_ref.py TOKENIZER.json OUT_PREFIX WORKERS INPUT.jsonl.zst - the logic of
GPT-NeoX tools/datasets/preprocess_data.py (reference for `neox data tokenize` throughput):
lm_dataformat-style streaming of a .jsonl.zst (zstandard + json per line), a
multiprocessing Pool of WORKERS running HFTokenizer.tokenize (tokenizers.Tokenizer.encode
().ids) with imap(chunksize=25), --append-eod, and megatron-core's IndexedDatasetBuilder.
Prints MB/s of input text and seconds."""
import io
import json
import multiprocessing
import sys
import time

import numpy as np
import torch
import zstandard
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
from tokenizers import Tokenizer

TOK = None


def init(path):
    global TOK
    TOK = Tokenizer.from_file(path)


def encode(text):
    ids = TOK.encode(text).ids
    if ids:
        ids.append(0)
    return ids, len(text.encode())


def docs(path):
    with open(path, "rb") as fh:
        for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8"):
            yield json.loads(line)["text"]


if __name__ == "__main__":
    tok, prefix, workers, inp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    t0 = time.time()
    pool = multiprocessing.Pool(workers, initializer=init, initargs=(tok,))
    b = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    nbytes = 0
    for ids, n in pool.imap(encode, docs(inp), 25):
        nbytes += n
        if ids:
            b.add_item(torch.tensor(ids, dtype=torch.int64))
            b.end_document()
    b.finalize(prefix + ".idx")
    dt = time.time() - t0
    print(f"reference: {nbytes / 1e6:.1f} MB text in {dt:.2f} s = {nbytes / 1e6 / dt:.2f} MB/s")
