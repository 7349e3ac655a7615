#!/usr/bin/env bash
# cli_convert.sh NEOX SOURCE_DIR BUILD_DIR - `neox convert` end to end. The expected
# model.safetensors files are what transformers' save_pretrained wrote for the same weights
# (tools/fixtures/make_torch_bins.py), so every conversion must match them byte for byte.
set -u
NEOX=$1
SRC=$2
BUILD=$3
FIX="$SRC/tests/fixtures/torch"
EXP="$FIX/expected"
T="$BUILD/cli_convert_tmp.$$"
rm -rf "$T"
mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# convert NAME EXPECTED_FILE ARGS... : runs neox convert ARGS into $T/NAME, compares bytes
convert() {
  local name=$1 expect=$2
  shift 2
  if ! "$NEOX" convert "$@" "$T/$name" > "$T/$name.log" 2>&1; then
    fail "$name: neox convert $* exited non-zero: $(cat "$T/$name.log")"; return
  fi
  cmp -s "$T/$name/model.safetensors" "$expect" || fail "$name: model.safetensors differs from $expect"
}

# 1. sharded .bin + index (GPT-NeoX, legacy buffers dropped), as f32, bf16 and f16
convert neox "$EXP/neox.safetensors" "$FIX/sharded"
cmp -s "$T/neox/config.json" "$FIX/sharded/config.json" || fail "neox: config.json not copied verbatim"
grep -q "dropped 6 legacy buffers" "$T/neox.log" || fail "neox: summary does not report the 6 dropped buffers"
convert neox_bf16 "$EXP/neox_bf16.safetensors" "$FIX/sharded" --dtype bf16
grep -q '"torch_dtype": "bfloat16"' "$T/neox_bf16/config.json" || fail "neox_bf16: config.json dtype not updated"
convert neox_f16 "$EXP/neox_f16.safetensors" "$FIX/sharded" --dtype f16
# the index file itself as input
convert neox_index "$EXP/neox.safetensors" "$FIX/sharded/pytorch_model.bin.index.json"

# 2. GPT-Neo single .bin with tied lm_head (left out, as HF saves it) and tokenizer files
convert neo "$EXP/gptneo.safetensors" "$FIX/gptneo"
for f in config.json tokenizer_config.json special_tokens_map.json; do
  cmp -s "$T/neo/$f" "$FIX/gptneo/$f" || fail "neo: $f not copied verbatim"
done
grep -q "left out the tied output embedding" "$T/neo.log" || fail "neo: tied lm_head not reported"
convert neo_f16 "$EXP/gptneo_f16.safetensors" "$FIX/gptneo" --dtype float16
convert neo_file "$EXP/gptneo.safetensors" "$FIX/gptneo/pytorch_model.bin"

# 3. safetensors input: converting our own output again is the identity
convert neo_again "$EXP/gptneo.safetensors" "$T/neo"

# 4. nothing temporary is left behind
ls -a "$T"/neo* | grep -q '\.tmp\.' && fail "temporary files left in an output directory"

# 5. hostile and broken inputs: one-line error, exit 1, no output written
expect_error() {
  local name=$1 want=$2
  shift 2
  "$NEOX" convert "$@" > "$T/$name.out" 2> "$T/$name.err"
  local rc=$?
  [ $rc -eq 1 ] || fail "$name: exit code $rc, expected 1"
  grep -qF -- "$want" "$T/$name.err" || fail "$name: stderr lacks \"$want\": $(cat "$T/$name.err")"
  [ "$(wc -l < "$T/$name.err")" -eq 1 ] || fail "$name: error is not one line"
  [ -e "$T/$name" ] && fail "$name: created the output directory despite the error"
  return 0
}
expect_error evil "refers to global 'os.system'; only tensors and containers are allowed" "$FIX/evil_os_system.bin" "$T/evil"
expect_error evil_eval "refers to global 'builtins.eval'" "$FIX/evil_eval.bin" "$T/evil_eval"
expect_error trunc "not a zip archive" "$FIX/trunc_half.bin" "$T/trunc"
expect_error view "outside its storage" "$FIX/view_outside.bin" "$T/view"
expect_error missing "no such file or directory" "$FIX/does_not_exist" "$T/missing"
# a neox quantize directory: its U8 blobs mean nothing without neox's metadata
"$NEOX" quantize "$SRC/tests/fixtures/eval/lm" "$T/lm_q4" --type q4 2> /dev/null || fail "quantize for the convert test"
expect_error quantized "holds Q4_0_x8 blocks (a neox quantize directory)" "$T/lm_q4" "$T/quantized"

# 6. usage errors exit 2
"$NEOX" convert > /dev/null 2>&1; [ $? -eq 2 ] || fail "no arguments: expected exit 2"
"$NEOX" convert "$FIX/gptneo" "$T/x" --dtype f8 > /dev/null 2>&1; [ $? -eq 2 ] || fail "bad --dtype: expected exit 2"
"$NEOX" convert "$FIX/gptneo" "$FIX/gptneo" > /dev/null 2>&1; [ $? -eq 2 ] || fail "OUT == IN: expected exit 2"
"$NEOX" convert --help | grep -q "usage: neox convert" || fail "--help"

if [ $fails -ne 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "cli_convert: all checks passed"
