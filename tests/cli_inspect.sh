#!/usr/bin/env bash
# cli_inspect.sh NEOX_BIN SOURCE_DIR BUILD_DIR - `neox inspect` on committed fixtures: a
# tiny GPT-NeoX saved by transformers (parameter count must equal HF's
# sum(p.numel() for p in model.parameters())), a 2-shard index, legacy buffers, --json,
# and the failure paths (exit status and a one-line message).
set -u
NEOX=$1; SRC=$2; BUILD=$3
FIX="$SRC/tests/fixtures/io"
TMP="$BUILD/cli_inspect_tmp"
rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { # check DESCRIPTION COND...
  local what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}
contains() { grep -qF -- "$2" "$1"; }

# tiny model directory: config + model.safetensors
"$NEOX" inspect "$FIX/tiny-neox" > "$TMP/tiny.txt" 2> "$TMP/tiny.err"
check "inspect tiny-neox exits 0" test $? -eq 0
want=$(cat "$FIX/tiny-neox/expected_params.txt")
check "parameter count equals transformers' ($want)" contains "$TMP/tiny.txt" "parameters: $want "
check "architecture line" contains "$TMP/tiny.txt" "architecture: GPT-NeoX / Pythia (GPTNeoXForCausalLM)"
check "hyperparameters" contains "$TMP/tiny.txt" "vocab_size 128, hidden_size 32, layers 2, heads 4 (head_dim 8), intermediate_size 128"
check "rotary dims" contains "$TMP/tiny.txt" "rotary: 2 of 8 dims per head"
check "tensor row" grep -qE '^gpt_neox\.layers\.0\.attention\.query_key_value\.weight +F32 +\[96, 32\] +12288$' "$TMP/tiny.txt"
check "28 tensors" contains "$TMP/tiny.txt" "tensors: 28 (0 legacy buffers"
# KV: 2 x 2 layers x 64 x 32 x 4 B = 32 KiB
check "KV cache estimate" contains "$TMP/tiny.txt" "KV cache        32.00 KiB"
check "nothing on stderr" test ! -s "$TMP/tiny.err"

# --json
"$NEOX" inspect --json "$FIX/tiny-neox" > "$TMP/tiny.json"
check "--json exits 0" test $? -eq 0
check "--json parameters" contains "$TMP/tiny.json" "\"parameters\": $want,"
check "--json kv cache bytes" contains "$TMP/tiny.json" '"kv_cache_f32": 32768,'
check "--json tensor entry" contains "$TMP/tiny.json" '"name": "embed_out.weight"'

# sharded index, via the directory and the index file
"$NEOX" inspect "$FIX/sharded" > "$TMP/sh.txt"
check "sharded dir exits 0" test $? -eq 0
check "sharded: 2 files, 84 parameters" bash -c "grep -qF '(2 files)' '$TMP/sh.txt' && grep -qF 'parameters: 84 ' '$TMP/sh.txt'"
check "no config: says so" contains "$TMP/sh.txt" "architecture: unknown (no config.json"
"$NEOX" inspect --no-tensors "$FIX/sharded/model.safetensors.index.json" > "$TMP/idx.txt"
check "index file exits 0" test $? -eq 0
check "--no-tensors omits rows" bash -c "! grep -q 'layers.1.weight' '$TMP/idx.txt'"

# legacy buffers are listed but not counted: 4 + 12 bias parameters
"$NEOX" inspect "$FIX/legacy_buffers.safetensors" > "$TMP/leg.txt"
check "legacy: 3 buffers excluded" contains "$TMP/leg.txt" "tensors: 5 (3 legacy buffers not counted"
check "legacy: 16 parameters" contains "$TMP/leg.txt" "parameters: 16 "
check "legacy: row marked" contains "$TMP/leg.txt" "(legacy buffer, not a parameter)"

# PyTorch .bin checkpoints (fixtures of the torch reader): a sharded .bin index, and a
# GPT-Neo whose .bin stores lm_head.weight as a view of the tied embedding. Expected counts
# are sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(DIR).parameters()).
TFIX="$SRC/tests/fixtures/torch"
"$NEOX" inspect --no-tensors "$TFIX/sharded" > "$TMP/bin_sh.txt" 2>&1
check "sharded .bin index: 6528 parameters (transformers)" contains "$TMP/bin_sh.txt" "parameters: 6528 "
check "sharded .bin index: 2 files" contains "$TMP/bin_sh.txt" "(2 files)"
"$NEOX" inspect "$TFIX/gptneo" > "$TMP/bin_neo.txt" 2>&1
check "tied GPT-Neo .bin: 5920 parameters (transformers)" contains "$TMP/bin_neo.txt" "parameters: 5920 "
check "tied head marked" contains "$TMP/bin_neo.txt" "(tied to the input embedding, counted once)"
check "GPT-Neo local layers" contains "$TMP/bin_neo.txt" "1 local-attention layers (window 8)"

# a config given explicitly for a bare file
"$NEOX" inspect --config "$FIX/tiny-neox/config.json" "$FIX/tiny-neox/model.safetensors" > "$TMP/cfg.txt"
check "--config for a file" contains "$TMP/cfg.txt" "hidden_size 32"

# failures: exit status and one line on stderr naming the problem
"$NEOX" inspect "$TMP/does-not-exist" > /dev/null 2> "$TMP/e1"
check "missing path exits 1" test $? -eq 1
check "missing path message" contains "$TMP/e1" "does-not-exist: no such file or directory"
check "one line" test "$(wc -l < "$TMP/e1")" -eq 1
head -c 300 "$FIX/all_dtypes.safetensors" > "$TMP/trunc.safetensors"
"$NEOX" inspect "$TMP/trunc.safetensors" > /dev/null 2> "$TMP/e2"
check "truncated file exits 1" test $? -eq 1
check "truncated message" contains "$TMP/e2" "trunc.safetensors: safetensors header length"
check "truncated: one line" test "$(wc -l < "$TMP/e2")" -eq 1
mkdir -p "$TMP/badcfg"
cp "$FIX/sharded/model-00001-of-00002.safetensors" "$TMP/badcfg/model.safetensors"
echo '{"model_type": "gpt_neox", "hidden_size": 100, "num_attention_heads": 8}' > "$TMP/badcfg/config.json"
"$NEOX" inspect "$TMP/badcfg" > /dev/null 2> "$TMP/e3"
check "bad config exits 1" test $? -eq 1
check "bad config message" contains "$TMP/e3" "config.json: field 'hidden_size' = 100 is not divisible"
"$NEOX" inspect > /dev/null 2> "$TMP/e4"
check "no PATH exits 2" test $? -eq 2
"$NEOX" inspect --bogus x > /dev/null 2> "$TMP/e5"
check "unknown option exits 2" test $? -eq 2
"$NEOX" inspect --help > "$TMP/help.txt"
check "--help exits 0" test $? -eq 0
check "--help text" contains "$TMP/help.txt" "usage: neox inspect"

exit $fail
