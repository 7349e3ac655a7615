#!/usr/bin/env python3
"""tokenizer_train_hf.py - trains the same byte-level BPE with HF BpeTrainer and with
`neox tokenizer train`, then reports time and how many merges agree.

    python3 bench/tokenizer_train_hf.py NEOX_BIN [VOCAB] [MB]

The training text (default ~4 MB) is LAMBADA from the shared assets followed by Python
standard-library sources, written to a temporary directory."""
import glob
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "2")
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def merges(path):
    m = json.load(open(path, encoding="utf-8"))["model"]
    return [tuple(x) if isinstance(x, list) else tuple(x.split(" ")) for x in m["merges"]], m["vocab"]


def main():
    neox = sys.argv[1]
    vocab = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    limit = float(sys.argv[3]) * 1e6 if len(sys.argv) > 3 else 4e6
    assets = os.environ.get("NEOX_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
    with tempfile.TemporaryDirectory() as d:
        txt = os.path.join(d, "train.txt")
        n = 0
        with open(txt, "w", encoding="utf-8") as out:
            for line in open(os.path.join(assets, "eval/lambada/lambada_test.jsonl"), encoding="utf-8"):
                t = json.loads(line)["text"] + "\n"
                out.write(t)
                n += len(t.encode())
            for p in sorted(glob.glob(sysconfig.get_paths()["stdlib"] + "/*.py")):
                if n > limit:
                    break
                s = open(p, encoding="utf-8", errors="replace").read()
                out.write(s)
                n += len(s.encode())
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        t = time.perf_counter()
        tok.train([txt], tr)
        hf_s = time.perf_counter() - t
        tok.save(os.path.join(d, "hf.json"))
        t = time.perf_counter()
        subprocess.run([neox, "tokenizer", "train", "--vocab-size", str(vocab), "--special", "<|endoftext|>", "-q",
                        "-o", os.path.join(d, "nx.json"), txt], check=True)
        nx_s = time.perf_counter() - t
        ma, va = merges(os.path.join(d, "hf.json"))
        mb, vb = merges(os.path.join(d, "nx.json"))
        first = sum(x == y for x, y in zip(ma[:1000], mb[:1000]))
        allm = sum(x == y for x, y in zip(ma, mb))
        # HF loads our file and encodes like its own
        ours = Tokenizer.from_file(os.path.join(d, "nx.json"))
        text = open(txt, encoding="utf-8").read()[:500000]
        same = ours.encode(text).ids == tok.encode(text).ids
        print(f"text {n / 1e6:.2f} MB, vocab {vocab}: HF {hf_s:.2f} s (RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}),"
              f" neox {nx_s:.2f} s; merges HF {len(ma)} neox {len(mb)}; first 1000 agree {first}; all agree {allm};"
              f" vocab identical {va == vb}; HF encodes 500 kB identically with our file: {same}")


if __name__ == "__main__":
    main()
