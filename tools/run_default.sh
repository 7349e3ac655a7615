#!/bin/sh
# run_default.sh NEOX - what `make run` does: inspect the default model and sample from it.
# The default is models/neox-mini, a small model trained by neox itself (models/README.md).
# Without it, the small GPT-NeoX test model in tests/fixtures/eval/lm is used (230k parameters,
# its own 1024-token BPE, trained briefly on LAMBADA text: text-like but mostly nonsense).
neox=${1:-build/neox}
model=${NEOX_RUN_MODEL:-models/neox-mini}
[ -f "$model/config.json" ] || model=tests/fixtures/eval/lm
prompt=${NEOX_RUN_PROMPT:-"The meaning of life is"}
set -e
"$neox" --version
echo
echo "== neox inspect $model"
"$neox" inspect "$model" --no-tensors
echo
echo "== neox generate -m $model (sampled, seed 7)"
"$neox" generate -m "$model" -p "$prompt" -n 64 --temperature 0.8 --top-p 0.95 --repeat-penalty 1.1 --seed 7 --echo -v
echo
