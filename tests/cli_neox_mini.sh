#!/usr/bin/env bash
# cli_neox_mini.sh NEOX SRC BUILD - the committed default model (models/neox-mini, what `make run`
# samples from) loads, and greedy generation reproduces HF transformers' greedy tokens exactly
# (golden: tools/fixtures/make_neox_mini_golden.py -> tests/fixtures/models/neox_mini_greedy.json),
# with the tokenizer giving HF's prompt ids.
set -euo pipefail
NEOX=$1 SRC=$2
M=$SRC/models/neox-mini G=$SRC/tests/fixtures/models/neox_mini_greedy.json
for f in "$M/config.json" "$M/model.safetensors" "$M/tokenizer.json" "$G"; do
  [ -f "$f" ] || { echo "missing $f"; exit 1; }
done
n=$(jq '.cases | length' "$G") N=$(jq '.n' "$G")
[ "$n" -ge 3 ] || { echo "golden has $n cases"; exit 1; }
for ((i = 0; i < n; i++)); do
  prompt=$(jq -r ".cases[$i].prompt" "$G")
  want_p=$(jq -r ".cases[$i].prompt_ids | join(\" \")" "$G")
  want=$(jq -r ".cases[$i].greedy_ids | join(\" \")" "$G")
  got_p=$(jq -j ".cases[$i].prompt" "$G" | "$NEOX" tokenize -t "$M" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
  [ "$got_p" = "$want_p" ] || { echo "case $i: prompt ids $got_p, HF $want_p"; exit 1; }
  got=$("$NEOX" generate -m "$M" --ids "$want_p" -n "$N" --ignore-eos --print-ids -t 2 | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
  if [ "$got" != "$want" ]; then
    echo "case $i ($prompt): neox greedy ids differ from HF"; echo " neox: $got"; echo " hf:   $want"; exit 1
  fi
done
echo "ok: $n prompts x $N greedy tokens equal HF transformers"
