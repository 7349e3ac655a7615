#!/usr/bin/env bash
# cli_eval.sh NEOX_BIN SOURCE_DIR BUILD_DIR - `neox eval` and `neox plot` end to end on the
# committed eval fixtures: JSON result lines, per-example / per-sequence files, a checkpoint
# sweep whose table must equal the HF-generate reference (memrun_expected.csv), the SVG
# plots, and the failure paths (exit status 1 or 2 and a one-line message on stderr).
set -u
NEOX=$1; SRC=$2; BUILD=$3
FIX="$SRC/tests/fixtures/eval"
TMP="$(cd "$BUILD" && pwd)/cli_eval_tmp"
rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { # check DESCRIPTION COND...
  local what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}
contains() { grep -qF -- "$2" "$1"; }
one_line() { test "$(wc -l < "$1")" -eq 1; }

# ---- ppl on a local text ------------------------------------------------------------------
"$NEOX" eval ppl -m "$FIX/lm" --text "$FIX/ppl_docs.jsonl" --ctx 64 -t 2 --per-doc "$TMP/docs.csv" \
  -o "$TMP/ppl.jsonl" > "$TMP/ppl.out" 2> "$TMP/ppl.err"
check "ppl exits 0" test $? -eq 0
check "ppl prints one JSON line" one_line "$TMP/ppl.out"
check "ppl result fields" contains "$TMP/ppl.out" '"task":"ppl"'
check "ppl word perplexity" contains "$TMP/ppl.out" '"word_perplexity":'
check "ppl bits per byte" contains "$TMP/ppl.out" '"bits_per_byte":'
check "ppl settings carry ctx and stride" contains "$TMP/ppl.out" '"ctx":64,'
check "ppl neox version" contains "$TMP/ppl.out" '"neox_version":"'
check "ppl -o copy equals stdout" cmp -s "$TMP/ppl.out" "$TMP/ppl.jsonl"
check "per-doc file: header + 12 documents" test "$(wc -l < "$TMP/docs.csv")" -eq 13
check "ppl quiet when stderr is not a terminal" test ! -s "$TMP/ppl.err"

# ---- lambada -------------------------------------------------------------------------------
ASSETS=${NEOX_ASSETS:-$SRC/../shared/assets}
LAMB="$ASSETS/eval/lambada/lambada_test.jsonl"
if [ -f "$LAMB" ]; then
  "$NEOX" eval lambada -m "$FIX/lm" --data "$LAMB" --limit 40 -t 2 --per-example "$TMP/lam.csv" > "$TMP/lam.out"
  check "lambada exits 0" test $? -eq 0
  check "lambada acc and perplexity" grep -qE '"results":\{"acc":[0-9.e-]+,"acc_stderr":[0-9.e-]+,"perplexity":[0-9.e+]+,"n":40\}' "$TMP/lam.out"
  check "per-example file: header + 40 rows" test "$(wc -l < "$TMP/lam.csv")" -eq 41
  # the same from NEOX_ASSETS when --data is omitted
  NEOX_ASSETS="$ASSETS" "$NEOX" eval lambada -m "$FIX/lm" --limit 40 -t 1 > "$TMP/lam2.out"
  check "lambada default data, 1 thread: same results" \
    test "$(grep -o '"results":{[^}]*}' "$TMP/lam.out")" = "$(grep -o '"results":{[^}]*}' "$TMP/lam2.out")"
elif [ "${CI:-}" = true ]; then
  echo "FAIL LAMBADA asset missing at $LAMB"; fail=1
else
  echo "SKIP lambada: no asset at $LAMB"; skipped=1
fi

# ---- memorization ----------------------------------------------------------------------------
"$NEOX" eval memorization -m "$FIX/memrun/step200" --data "$FIX/mem_data" --samples 20 --scores "$TMP/scores.csv" -t 2 > "$TMP/mem.out"
check "memorization exits 0" test $? -eq 0
check "memorization summary: 16 of 20 memorized" contains "$TMP/mem.out" '"memorized":16,'
check "scores file: header + 20 rows" test "$(wc -l < "$TMP/scores.csv")" -eq 21
check "repeated sequence 0 scores 1" grep -qx '0,1' "$TMP/scores.csv"
check "held-out sequence 19 does not" test "$(grep '^19,' "$TMP/scores.csv" | cut -d, -f2)" != 1
"$NEOX" eval memorization -m "$FIX/memrun/step200" --data "$FIX/mem_data" --range 14:18 -t 1 > "$TMP/mem2.out"
check "--range 14:18: 2 memorized of 4" grep -qE '"memorized":2,.*"sequences":4' "$TMP/mem2.out"

# --batch changes the speed, never the scores (the step50 checkpoint has partial scores too)
"$NEOX" eval memorization -m "$FIX/memrun/step50" --data "$FIX/mem_data" --samples 40 --batch 1 -t 1 -q --scores "$TMP/b1.csv" > "$TMP/b1.out"
"$NEOX" eval memorization -m "$FIX/memrun/step50" --data "$FIX/mem_data" --samples 40 --batch 7 -t 2 -q --scores "$TMP/b7.csv" > "$TMP/b7.out"
check "--batch 7 -t 2 scores equal --batch 1 -t 1 scores" cmp -s "$TMP/b1.csv" "$TMP/b7.csv"
check "--batch 7 is reported" contains "$TMP/b7.out" '"batch":7'
check "partial scores among them" grep -qE ',0\.[0-9]*[1-9]' "$TMP/b1.csv"
"$NEOX" eval memorization -m "$FIX/memrun/step50" --data "$FIX/mem_data" --samples 4 --batch 0 > /dev/null 2> "$TMP/b0.err"
check "--batch 0 is a usage error" test $? -eq 2

"$NEOX" eval memorization -m "$FIX/memrun/step200" --data "$FIX/mem_data" --seen-by 2 --global-batch 8 -t 2 > "$TMP/mem3.out"
check "--seen-by 2 x 8: sequences 0..15, all memorized" grep -qE '"range":\[0,16\].*"memorized":16,.*"sequences":16' "$TMP/mem3.out"

# ---- sweep -------------------------------------------------------------------------------------
mkdir -p "$TMP/run"
cp -r "$FIX/memrun/step50" "$FIX/memrun/step200" "$TMP/run/"
mkdir -p "$TMP/run/notastep" "$TMP/run/step999"   # ignored: no step number / no config.json
"$NEOX" eval sweep "$TMP/run" --task memorization --data "$FIX/mem_data" -t 2 -q --plot "$TMP/mem.svg" > "$TMP/sweep.out"
check "sweep exits 0" test $? -eq 0
check "sweep: one JSON line per checkpoint" test "$(wc -l < "$TMP/sweep.out")" -eq 2
check "sweep: step in the JSON" contains "$TMP/sweep.out" '"step":200,'
check "sweep: default table in the run dir" test -f "$TMP/run/eval_memorization.csv"
# compare step, mean_score, memorized with the HF reference
check "sweep table equals HF generate" awk -F, '
  NR == FNR { if (FNR > 1) { mean[$1] = $2; mem[$1] = $3 } next }
  FNR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
  { s = $1; seen++; d = $(col["mean_score"]) - mean[s]; if (d < 0) d = -d;
    if (!(s in mean) || d > 1e-6 || $(col["memorized"]) != mem[s]) bad = 1 }
  END { exit (bad || seen != 2) }' "$FIX/memrun_expected.csv" "$TMP/run/eval_memorization.csv"
check "sweep plot is an SVG with a line" grep -q '<polyline' "$TMP/mem.svg"
check "sweep plot marks both checkpoints" test "$(grep -c '<circle' "$TMP/mem.svg")" -eq 2
printf '%s\n%s\n' "$TMP/run/step50" "step200" > "$TMP/run/list.txt"
"$NEOX" eval sweep "$TMP/run/list.txt" --task memorization --data "$FIX/mem_data" --samples 4 -q -o "$TMP/list.jsonl" > /dev/null
check "sweep over a list file, JSONL table" test "$(grep -c '"task":"memorization"' "$TMP/list.jsonl")" -eq 2

"$NEOX" eval sweep "$TMP/run" --task memorization --data "$FIX/mem_data" --seen-by-checkpoint --global-batch 1 -q -o "$TMP/seen.csv" > "$TMP/seen.out" 2> "$TMP/seen.err"
check "sweep --seen-by-checkpoint: step 50 sees 50 sequences" grep -q '"range":\[0,50\]' "$TMP/seen.out"
check "sweep --seen-by-checkpoint: step 200 is past the data (error)" test "$(wc -l < "$TMP/seen.out")" -eq 1

# ---- plot --------------------------------------------------------------------------------------
mkdir -p "$TMP/train"
awk 'BEGIN { for (s = 1; s <= 200; s++) {
  lr = (s < 20) ? 6e-4 * s / 20 : 6e-5 + 0.5 * 5.4e-4 * (1 + cos(3.14159265 * (s - 20) / 180));
  printf "{\"step\":%d,\"loss\":%.4f,\"lr\":%.6g,\"grad_norm\":1.0", s, 2 + 8 * exp(-s / 40) + 0.1 * sin(s), lr;
  if (s % 50 == 0) printf ",\"val_loss\":%.4f", 2.1 + 8 * exp(-s / 40);
  printf "}\n" } }' > "$TMP/train/metrics.jsonl"
"$NEOX" plot "$TMP/train" -o "$TMP/loss.svg" --smooth 0.9 > "$TMP/plot.out"
check "plot exits 0" test $? -eq 0
check "plot: svg root" grep -q '<svg xmlns' "$TMP/loss.svg"
check "plot: val loss legend" contains "$TMP/loss.svg" 'val loss'
check "plot: lr panel" contains "$TMP/loss.svg" 'learning rate'
check "plot: EMA series" contains "$TMP/loss.svg" 'train loss (EMA)'
"$NEOX" plot "$TMP/train" -o "$TMP/loss.png" > /dev/null
check "plot PNG exits 0" test $? -eq 0
check "plot PNG signature" test "$(head -c 8 "$TMP/loss.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a
# 880 x 728 RGB in stored deflate blocks: 8 + 25 + 12 + (2 + 728 * 2641 + 5 * 30 + 4) + 12 bytes
check "plot PNG size of an 880x728 stored-deflate image" test "$(wc -c < "$TMP/loss.png")" -eq 1922861
check "plot PNG ends with IEND" test "$(tail -c 8 "$TMP/loss.png" | head -c 4)" = IEND
"$NEOX" plot "$TMP/train" > /dev/null
check "plot default output RUN_DIR/loss.svg" test -f "$TMP/train/loss.svg"
# a partial last line (a run still writing) is tolerated; garbage in the middle is not
printf '{"step":201,"lo' >> "$TMP/train/metrics.jsonl"
"$NEOX" plot "$TMP/train" -o "$TMP/loss2.svg" > /dev/null 2>&1
check "plot tolerates a partial last line" test $? -eq 0
printf '{"step":1,"loss":2}\nnot json\n{"step":2,"loss":1}\n' > "$TMP/bad.jsonl"
"$NEOX" plot "$TMP/bad.jsonl" -o "$TMP/bad.svg" 2> "$TMP/bad.err"
check "plot: corrupt line fails" test $? -eq 1
check "plot: message names the line" contains "$TMP/bad.err" "bad.jsonl:2:"

# ---- failures ------------------------------------------------------------------------------------
"$NEOX" eval ppl -m "$FIX/lm" 2> "$TMP/e1"
check "ppl without input: usage error 2" test $? -eq 2
check "ppl without input: message" contains "$TMP/e1" "exactly one of --text FILE or --data PREFIX"
"$NEOX" eval lambada -m "$TMP/nope" --data "$FIX/ppl_docs.jsonl" 2> "$TMP/e2"
check "missing model: exit 1" test $? -eq 1
check "missing model: one line" one_line "$TMP/e2"
"$NEOX" eval memorization -m "$FIX/memrun/step200" --data "$FIX/mem_data" --range 10:99 2> "$TMP/e3"
check "range past the end: exit 1" test $? -eq 1
check "range past the end: message" contains "$TMP/e3" "outside"
"$NEOX" eval memorization -m "$FIX/memrun/step200" --data "$FIX/mem_data" --prompt 40 --continuation 40 2> "$TMP/e4"
check "prompt+continuation over context: exit 1" test $? -eq 1
check "prompt+continuation over context: message" contains "$TMP/e4" "exceeds the model context"
printf '{"text": "a b"}\n{"txt": "c"}\n' > "$TMP/badkey.jsonl"
"$NEOX" eval ppl -m "$FIX/lm" --text "$TMP/badkey.jsonl" 2> "$TMP/e5"
check "jsonl without the key: exit 1" test $? -eq 1
check "jsonl without the key: names the line" contains "$TMP/e5" "badkey.jsonl:2:"
"$NEOX" eval ppl -m "$FIX/lm" --text "$FIX/ppl_docs.jsonl" --ctx 100000 2> "$TMP/e6"
check "ctx over max_position_embeddings: exit 1" test $? -eq 1
"$NEOX" eval lambada -m "$FIX/lm" --bogus 2> "$TMP/e7"
check "unknown option: exit 2" test $? -eq 2
"$NEOX" eval sweep "$TMP/train" --task lambada 2> "$TMP/e8"
check "sweep without checkpoints: exit 1" test $? -eq 1
"$NEOX" eval nosuch 2> /dev/null
check "unknown task: exit 2" test $? -eq 2
printf '\xff\xfe bad utf8 text' > "$TMP/bad.txt"
"$NEOX" eval ppl -m "$FIX/lm" --text "$TMP/bad.txt" 2> "$TMP/e9"
check "invalid UTF-8: exit 1" test $? -eq 1
check "invalid UTF-8: one line" one_line "$TMP/e9"

rm -rf "$TMP"
# a skipped LAMBADA check (no asset outside CI) makes the whole test "skipped", never "passed"
[ "$fail" -eq 0 ] && [ "${skipped:-0}" -eq 1 ] && exit 77
exit $fail
