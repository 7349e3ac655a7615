#!/usr/bin/env python3
"""check_gguf_blocks.py - are a `neox quantize` directory's Q8_0/Q4_0 blocks llama.cpp's?

neox's block formats and quantizers are ggml's (docs/QUANT.md). Given a GPT-NeoX/Pythia model
quantized both ways, by `neox quantize DIR OUT --type q8|q4` and by llama.cpp
(`convert_hf_to_gguf.py DIR --outtype q8_0`, or `llama-quantize --pure F32.gguf OUT.gguf q4_0`),
this compares every matrix byte for byte (matrices that neox stores interleaved are put back
in row order first). llama.cpp stores the fused qkv matrix as [q|k|v]
row blocks where NeoX interleaves them by head ([NH][q|k|v][HS]); the rows are reordered
before comparing. Exit status 0 when every matrix matches.

usage: python3 tools/check_gguf_blocks.py NEOX_QUANT_DIR MODEL.gguf
Needs: numpy, safetensors, gguf (versions in tools/fixtures/requirements.txt).
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from safetensors import safe_open
from safetensors.numpy import load_file


def rows_from_x8(blob, bs):
    """A Q4_0 (bs = 18 bytes a block) or Q8_0 (bs = 34) matrix in neox's interleaved layout
    (docs/QUANT.md, tags "Q4_0_x8", "Q8_0_x8") in row-major blocks: per group of 8 rows, per
    pair of blocks, 16 fp16 scales (the pair's first block for rows 0..7, then its second), then
    each row's code bytes of both blocks."""
    OUT, rb = blob.shape
    nb, q = rb // bs, bs - 2
    pairs = blob.reshape(OUT // 8, nb // 2, 16 * bs)
    scales = pairs[:, :, :32].reshape(OUT // 8, nb // 2, 2, 8, 2)   # group, pair, block, row, bytes
    codes = pairs[:, :, 32:].reshape(OUT // 8, nb // 2, 8, 2, q)    # group, pair, row, block, bytes
    rows = np.empty((OUT // 8, 8, nb // 2, 2, bs), np.uint8)       # group, row, pair, block, bytes
    rows[..., :2] = scales.transpose(0, 3, 1, 2, 4)
    rows[..., 2:] = codes.transpose(0, 2, 1, 3, 4)
    return rows.reshape(OUT, rb)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: python3 tools/check_gguf_blocks.py NEOX_QUANT_DIR MODEL.gguf")
    qdir, gguf_path = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(qdir, "config.json")))
    L, H, NH = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]
    HS = H // NH
    path = os.path.join(qdir, "model.safetensors")
    st = load_file(path)
    with safe_open(path, framework="np") as f:
        meta = f.metadata() or {}
    for name in st:
        tag = meta.get("neox.quant." + name)
        if tag in ("Q4_0_x8", "Q8_0_x8"):
            st[name] = rows_from_x8(st[name], 18 if tag == "Q4_0_x8" else 34)
    gt = {t.name: t for t in GGUFReader(gguf_path).tensors}
    pairs = [("output.weight", "embed_out.weight", False)]
    for i in range(L):
        p = f"gpt_neox.layers.{i}."
        pairs += [(f"blk.{i}.attn_qkv.weight", p + "attention.query_key_value.weight", True),
                  (f"blk.{i}.attn_output.weight", p + "attention.dense.weight", False),
                  (f"blk.{i}.ffn_up.weight", p + "mlp.dense_h_to_4h.weight", False),
                  (f"blk.{i}.ffn_down.weight", p + "mlp.dense_4h_to_h.weight", False)]
    same = 0
    for gname, nname, qkv in pairs:
        ours = st[nname]
        if qkv:
            ours = ours.reshape(NH, 3, HS, -1).transpose(1, 0, 2, 3).reshape(3 * NH * HS, -1)
        theirs = np.asarray(gt[gname].data)
        if theirs.tobytes() == ours.tobytes():
            same += 1
        else:
            print(f"{nname}: differs from {gname} ({gt[gname].tensor_type.name})")
    print(f"{same}/{len(pairs)} matrices byte-identical")
    sys.exit(0 if same == len(pairs) else 1)


if __name__ == "__main__":
    main()
