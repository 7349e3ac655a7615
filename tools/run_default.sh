#!/bin/sh
# run_default.sh NEOX - what `make run` does. Until the project ships its own trained model
# (models/neox-mini, trained by `neox train`), the best real model in the tree is the small
# GPT-NeoX test model in tests/fixtures/eval/lm: a 230k-parameter model with its own 1024-token
# byte-level BPE, trained briefly on LAMBADA text. Expect text-like but mostly nonsense output.
neox=${1:-build/neox}
model=${NEOX_RUN_MODEL:-tests/fixtures/eval/lm}
set -e
"$neox" --version
echo
echo "== neox inspect $model"
"$neox" inspect "$model" --no-tensors
echo
echo "== neox generate -m $model (sampled, seed 7)"
"$neox" generate -m "$model" -p "She looked at him and said" -n 48 --temperature 0.8 --top-p 0.95 --seed 7 --echo -v
echo
