#!/usr/bin/env bash
# cli_train.sh NEOX SOURCE_DIR BUILD_DIR - `neox train` end to end on the tiny config:
#   1. same config and seed -> bit-identical checkpoints and metrics, 1 vs 2 threads;
#   2. kill -9 at random moments, then --resume -> final checkpoint and metrics
#      bit-identical to the uninterrupted run;
#   2b. bf16 compute (GPT-NeoX's "bf16" block or --bf16): 1 vs 2 threads and kill -9 +
#      --resume bit-identical, and different from the fp32 run;
#   3. corrupt, truncated or mismatched checkpoints on --resume -> one-line error,
#      non-zero exit, nothing on disk changed; restarting over checkpoints needs --resume;
#   4. bad configs -> one-line errors.
set -u
NEOX=$(cd "$(dirname "$1")" && pwd)/$(basename "$1"); SRC=$(cd "$2" && pwd); BUILD=$(cd "$3" && pwd)
W="$BUILD/cli_train_tmp"
rm -rf "$W"; mkdir -p "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

# Make a config from configs/tiny-test.json: absolute data paths, our own save dir, and
# any extra sed expressions.
mkcfg() { # out.json save_dir [sed-expr...]
  local out=$1 save=$2; shift 2
  sed -e "s|\"\.\./tests/|\"$SRC/tests/|g" -e "s|\"save\": \"[^\"]*\"|\"save\": \"$save\"|" \
      -e 's|"train_iters": 60|"train_iters": 30|' -e 's|"checkpoint_factor": 20|"checkpoint_factor": 12|' \
      -e 's|"eval_interval": 20|"eval_interval": 10|' -e 's|"eval_iters": 4|"eval_iters": 2|' \
      "$@" "$SRC/configs/tiny-test.json" > "$out"
}
# metrics.jsonl without the wall-clock fields
metrics_core() { sed -e 's/,"tokens_per_s":[^,}]*//' -e 's/,"elapsed_s":[^,}]*//' "$1"; }
same_run() { # dirA dirB
  local a=$1 b=$2
  [ "$(cat "$a/latest")" = "$(cat "$b/latest")" ] || fail "latest differs: $(cat "$a/latest") vs $(cat "$b/latest")"
  for d in "$a"/step*; do
    s=$(basename "$d")
    [ -d "$b/$s" ] || fail "$b/$s missing"
    for f in config.json model.safetensors train_state.bin; do
      cmp -s "$d/$f" "$b/$s/$f" || fail "$s/$f differs between $a and $b"
    done
  done
  [ "$(ls "$a" | grep -c '^step')" = "$(ls "$b" | grep -c '^step')" ] || fail "different checkpoint sets in $a and $b"
  diff <(metrics_core "$a/metrics.jsonl") <(metrics_core "$b/metrics.jsonl") >/dev/null || fail "metrics differ ($a vs $b)"
}

# ---- 1. reference run (1 thread) and a 2-thread run --------------------------------------
mkcfg "$W/a.json" "$W/a"
"$NEOX" train "$W/a.json" --threads 1 --quiet > "$W/a.out" 2>&1 || { cat "$W/a.out"; fail "reference run"; }
grep -q "^done: 30 steps" "$W/a.out" || fail "reference run did not finish: $(cat "$W/a.out")"
# Pythia schedule: 0 1 2 4 8 16 + every 12 + last
for s in 0 1 2 4 8 12 16 24 30; do [ -f "$W/a/step$s/model.safetensors" ] || fail "missing checkpoint step$s"; done
[ ! -e "$W/a/step3" ] || fail "unexpected checkpoint step3"
[ "$(ls "$W/a" | grep -c '^step')" = 9 ] || fail "expected 9 checkpoints: $(ls "$W/a")"
[ "$(wc -l < "$W/a/metrics.jsonl")" = 30 ] || fail "metrics.jsonl should have 30 lines"
grep -q '"val_loss"' "$W/a/metrics.jsonl" || fail "no validation loss in metrics"
first=$(head -1 "$W/a/metrics.jsonl" | sed 's/.*"loss":\([0-9.]*\).*/\1/')
last=$(tail -1 "$W/a/metrics.jsonl" | sed 's/.*"loss":\([0-9.]*\).*/\1/')
awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < f - 1.0) }' || fail "loss did not drop ($first -> $last)"
grep -q '"format":"pt"' "$W/a/step30/model.safetensors" || fail "model.safetensors lacks format metadata"
grep -q '"GPTNeoXForCausalLM"' "$W/a/step30/config.json" || fail "config.json lacks architectures"

mkcfg "$W/b.json" "$W/b"
"$NEOX" train "$W/b.json" --threads 2 --quiet > "$W/b.out" 2>&1 || { cat "$W/b.out"; fail "2-thread run"; }
same_run "$W/a" "$W/b"
echo "ok   1 vs 2 threads: bit-identical checkpoints and metrics"

# ---- 2. kill -9 at random moments, then --resume ----------------------------------------------
# Kill when metrics.jsonl reaches a random step (so the kill lands mid-run however fast
# the machine is), twice, each time resuming from whatever checkpoint survived; then
# finish with --resume. Sets $kills.
kill_and_resume() { # config save_dir [train options...]
  local cfg=$1 dir=$2 lo=2 target pid n attempt
  shift 2
  local args=()
  kills=0
  for attempt in 1 2; do
    target=$((lo + RANDOM % 10))
    "$NEOX" train "$cfg" --threads 1 --quiet "$@" "${args[@]}" > "$W/k.out" 2>&1 &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
      n=$(cat "$dir/metrics.jsonl" 2>/dev/null | wc -l)
      [ "$n" -ge "$target" ] && [ -f "$dir/latest" ] && break
      sleep 0.005
    done
    if kill -9 $pid 2>/dev/null; then kills=$((kills + 1)); fi
    wait $pid 2>/dev/null
    args=(--resume)
    lo=$((target + 4))
  done
  [ $kills -ge 1 ] || fail "the run always finished before it could be killed"
  "$NEOX" train "$cfg" --threads 1 --quiet "$@" --resume > "$W/k.out" 2>&1 || { cat "$W/k.out"; fail "final resume"; }
}
mkcfg "$W/c.json" "$W/c"
kill_and_resume "$W/c.json" "$W/c"
same_run "$W/a" "$W/c"
echo "ok   killed $kills time(s) with -9, resumed: bit-identical to the uninterrupted run"

# ---- 2b. bf16 compute ----------------------------------------------------------------------------
mkcfg "$W/f.json" "$W/f" -e 's|"seed": 1234,|"seed": 1234, "bf16": {"enabled": true},|'
"$NEOX" train "$W/f.json" --threads 1 --quiet > "$W/f.out" 2>&1 || { cat "$W/f.out"; fail "bf16 run"; }
mkcfg "$W/g.json" "$W/g"
"$NEOX" train "$W/g.json" --threads 2 --quiet --bf16 > "$W/g.out" 2>&1 || { cat "$W/g.out"; fail "bf16 run (--bf16)"; }
same_run "$W/f" "$W/g"
cmp -s "$W/a/step30/model.safetensors" "$W/f/step30/model.safetensors" && fail "bf16 run gave the fp32 weights"
diff -q <(metrics_core "$W/a/metrics.jsonl") <(metrics_core "$W/f/metrics.jsonl") >/dev/null && fail "bf16 metrics equal fp32"
last=$(tail -1 "$W/f/metrics.jsonl" | sed 's/.*"loss":\([0-9.]*\).*/\1/')
awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < f - 1.0) }' || fail "bf16 loss did not drop ($first -> $last)"
echo "ok   bf16: config block and --bf16 agree, 1 vs 2 threads bit-identical, differs from fp32"
mkcfg "$W/h.json" "$W/h" -e 's|"seed": 1234,|"seed": 1234, "precision": "bf16",|'
kill_and_resume "$W/h.json" "$W/h"
same_run "$W/f" "$W/h"
echo "ok   bf16: killed $kills time(s) with -9, resumed: bit-identical to the uninterrupted run"

# ---- 3. bad checkpoints on --resume ---------------------------------------------------------
snapshot() { (cd "$1" && find . -type f | sort | xargs sha256sum); }
expect_refusal() { # dir config what pattern
  local d=$1 cfg=$2 what=$3 pat=$4 before
  before=$(snapshot "$d")
  "$NEOX" train "$cfg" --threads 1 --quiet --resume > "$W/r.out" 2>&1 && fail "$what: resume should fail"
  [ "$(wc -l < "$W/r.out")" = 1 ] || fail "$what: expected a one-line error, got: $(cat "$W/r.out")"
  grep -q "$pat" "$W/r.out" || fail "$what: error should mention '$pat': $(cat "$W/r.out")"
  [ "$(snapshot "$d")" = "$before" ] || fail "$what: files changed"
  echo "ok   $what: $(cat "$W/r.out")"
}
mk_partial() { # copy run a, rolled back to checkpoint step16
  rm -rf "$W/d"; cp -r "$W/a" "$W/d"; echo step16 > "$W/d/latest"
  mkcfg "$W/d.json" "$W/d"
}
mk_partial
printf '\xff' | dd of="$W/d/step16/train_state.bin" bs=1 seek=4000 conv=notrunc 2>/dev/null
expect_refusal "$W/d" "$W/d.json" "corrupt optimizer state" "checksum"
mk_partial
printf '\x01' | dd of="$W/d/step16/model.safetensors" bs=1 seek=$(( $(stat -c %s "$W/d/step16/model.safetensors") - 3 )) conv=notrunc 2>/dev/null
expect_refusal "$W/d" "$W/d.json" "corrupt weights" "corrupt"
mk_partial
truncate -s 100 "$W/d/step16/train_state.bin"
expect_refusal "$W/d" "$W/d.json" "truncated state" "truncated"
mk_partial
truncate -s 20 "$W/d/step16/model.safetensors"
expect_refusal "$W/d" "$W/d.json" "truncated weights" "model.safetensors"
mk_partial
mkcfg "$W/d2.json" "$W/d" -e 's|"hidden_size": 32|"hidden_size": 64|'
expect_refusal "$W/d" "$W/d2.json" "different model shape" "hidden_size 32"
mkcfg "$W/d3.json" "$W/d" -e 's|"seed": 1234|"seed": 99|'
expect_refusal "$W/d" "$W/d3.json" "different seed" "seed"
mkcfg "$W/d4.json" "$W/d" -e 's|"gradient_accumulation_steps": 2|"gradient_accumulation_steps": 1|'
expect_refusal "$W/d" "$W/d4.json" "different accumulation" "gradient_accumulation_steps"
echo "step7" > "$W/d/latest"
expect_refusal "$W/d" "$W/d.json" "missing checkpoint" "step7"
mkcfg "$W/e.json" "$W/e"
expect_refusal "$W/a" "$W/e.json" "nothing to resume" "no checkpoint"
before=$(snapshot "$W/a")
"$NEOX" train "$W/a.json" --threads 1 --quiet > "$W/r.out" 2>&1 && fail "restart over checkpoints should fail"
grep -q -- "--resume" "$W/r.out" || fail "restart error should suggest --resume: $(cat "$W/r.out")"
[ "$(snapshot "$W/a")" = "$before" ] || fail "restart attempt changed files"
echo "ok   restart over existing checkpoints refused"

# resuming a finished run is a no-op
"$NEOX" train "$W/a.json" --threads 1 --quiet --resume > "$W/r.out" 2>&1 || fail "resume of a finished run"
grep -q "already complete" "$W/r.out" || fail "finished run: $(cat "$W/r.out")"

# ---- tokenizer files travel with each checkpoint -----------------------------------------------
ASSETS=${NEOX_ASSETS:-${NX_DEFAULT_ASSETS:-$SRC/../shared/assets}}
TOKDIR="$ASSETS/tokenizers/gpt-neox-20b"
if [ -f "$TOKDIR/tokenizer.json" ]; then
  mkcfg "$W/t.json" "$W/t" -e 's|"train_iters": 30|"train_iters": 2|' \
        -e "s|\"save\": |\"tokenizer\": \"$TOKDIR\", \"save\": |"
  "$NEOX" train "$W/t.json" --threads 1 --quiet > "$W/r.out" 2>&1 || { cat "$W/r.out"; fail "run with tokenizer"; }
  cmp -s "$TOKDIR/tokenizer.json" "$W/t/step2/tokenizer.json" || fail "tokenizer.json not copied into the checkpoint"
  echo "ok   tokenizer files copied into checkpoints"
elif [ "${CI:-}" = true ]; then
  fail "assets missing: $TOKDIR (CI=true)"
else
  echo "skip tokenizer copy: $TOKDIR not found (set NEOX_ASSETS)"
fi

# ---- 4. bad configs -------------------------------------------------------------------------
bad_cfg() { # what pattern sed-expr
  mkcfg "$W/bad.json" "$W/bad" -e "$3"
  "$NEOX" train "$W/bad.json" --quiet > "$W/r.out" 2>&1 && fail "$1: should fail"
  [ "$(wc -l < "$W/r.out")" = 1 ] || fail "$1: expected one line: $(cat "$W/r.out")"
  grep -q "$2" "$W/r.out" || fail "$1: expected '$2' in: $(cat "$W/r.out")"
}
bad_cfg "unknown key" 'unknown key "trian_iters"' 's|"train_iters"|"trian_iters"|'
bad_cfg "missing data" "No such file\|cannot\|nosuch" 's|tiny_train.bin|nosuch.bin|'
bad_cfg "vocab too small" "outside the model vocabulary" 's|"vocab_size": 96|"vocab_size": 50|'
bad_cfg "bad heads" "divisible" 's|"num_attention_heads": 4|"num_attention_heads": 5|'
bad_cfg "seq too long" "max_position_embeddings" 's|"seq_length": 32|"seq_length": 100|'
bad_cfg "malformed json" "JSON" 's|"seed": 1234,|"seed": 1234,,|'
printf 'abc' > "$W/odd.bin"
bad_cfg "fp16" "fp16 training is not implemented" 's|"seed": 1234,|"seed": 1234, "precision": "fp16",|'
bad_cfg "bad precision" '"precision" must be' 's|"seed": 1234,|"seed": 1234, "precision": "int8",|'
bad_cfg "precision conflict" "contradicts" 's|"seed": 1234,|"seed": 1234, "precision": "fp32", "bf16": {"enabled": true},|'
bad_cfg "bf16 block" "bf16.*enabled.*true or false" 's|"seed": 1234,|"seed": 1234, "bf16": {"enabled": 1},|'
bad_cfg "bf16 block key" 'unknown key "bf16.loss_scale"' 's|"seed": 1234,|"seed": 1234, "bf16": {"enabled": true, "loss_scale": 0},|'
bad_cfg "odd token file" "whole number" "s|$SRC/tests/fixtures/train/tiny_train.bin|$W/odd.bin|"
"$NEOX" train > /dev/null 2>&1; [ $? = 2 ] || fail "missing argument should exit 2"
"$NEOX" train "$W/nonexistent.json" > "$W/r.out" 2>&1 && fail "missing config should fail"
echo "ok   bad configs rejected with one-line errors"
rm -rf "$W"
echo "cli_train: all ok"
