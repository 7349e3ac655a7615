#!/bin/bash
# data_tokenize_bench.sh NEOX [MB...] - `neox data tokenize` vs GPT-NeoX preprocess_data.py logic
# (bench/data_preprocess_ref.py, HF tokenizers) with 2 workers on the GPT-NeoX-20B tokenizer,
# from .jsonl.zst corpora of MB megabytes (default 10 100): throughput (median of 3 runs for
# neox) and peak RSS (/usr/bin/time -v), and whether both outputs are byte-identical.
set -eu
NEOX=$1; shift
SIZES=${*:-10 100}
DIR=$(dirname "$0")
ASSETS=${NEOX_ASSETS:-$DIR/../../shared/assets}
TOK=$ASSETS/tokenizers/gpt-neox-20b/tokenizer.json
W=${TMPDIR:-/tmp}/neox_data_bench
mkdir -p "$W"
for mb in $SIZES; do
  [ -f "$W/c$mb.jsonl.zst" ] || python3 "$DIR/data_make_corpus.py" "$W/c$mb.jsonl.zst" "$mb"
  for r in 1 2 3; do
    /usr/bin/time -v "$NEOX" data tokenize -q --threads 2 -t "$TOK" -o "$W/neox$mb" "$W/c$mb.jsonl.zst" \
      >"$W/out$r" 2>"$W/time$r"
    echo "neox $mb MB run $r: $(grep -o '[0-9.]* MB/s of text' "$W/out$r"), peak RSS $(grep 'Maximum resident' "$W/time$r" | awk '{print $NF}') KB"
  done
  /usr/bin/time -v python3 "$DIR/data_preprocess_ref.py" "$TOK" "$W/ref$mb" 2 "$W/c$mb.jsonl.zst" 2>"$W/timeref" | tail -1
  echo "reference $mb MB peak RSS (parent): $(grep 'Maximum resident' "$W/timeref" | awk '{print $NF}') KB"
  if cmp -s "$W/neox$mb.bin" "$W/ref$mb.bin" && cmp -s "$W/neox$mb.idx" "$W/ref$mb.idx"; then
    echo "outputs byte-identical"; else echo "OUTPUTS DIFFER"; fi
done
