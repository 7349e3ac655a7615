#!/usr/bin/env bash
# cli_generate.sh NEOX_BIN SOURCE_DIR BUILD_DIR - `neox logits`, `neox generate` and
# `neox bench` on the committed tiny HF models (tests/fixtures/models, references from
# tools/fixtures/make_models.py): logits within 1e-4 of transformers, --incremental within
# 5e-5 of prefill (different kernels: fp32 rounding), greedy ids equal to HF generate(), and
# the failure paths
# (exit status, one-line message, no partial output).
set -u
NEOX=$1; SRC=$2; BUILD=$3
FIX="$SRC/tests/fixtures/models"
TMP="$BUILD/cli_generate_tmp"
rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
check() { # check DESCRIPTION COND...
  local what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}
contains() { grep -qF -- "$2" "$1"; }
one_line() { test "$(wc -l < "$1")" -eq 1; }
ref() { sed -n "s/^$2: //p" "$FIX/$1/ref.txt"; }
# max |a - b| over two raw float32 files, via od (no Python in CI)
maxdiff() {
  paste <(od -An -v -f -w4 "$1") <(od -An -v -f -w4 "$2") |
    awk 'BEGIN{m=0} {d=$1-$2; if (d<0) d=-d; if (d>m) m=d; n++} END{if (n==0) print "nan"; else printf "%.3g\n", m}'
}
le() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a+0 <= b+0 && a != "nan")}'; }

for m in neox_a gptj_a neo_a; do
  ids=$(ref $m logits_ids)
  n=$(echo $ids | wc -w)
  "$NEOX" logits -m "$FIX/$m" --ids "$ids" -o "$TMP/$m.bin" -t 2 2> "$TMP/$m.err"
  check "$m: logits exits 0" test $? -eq 0
  check "$m: logits file is T x V float32" test "$(stat -c %s "$TMP/$m.bin")" -eq "$(stat -c %s "$FIX/$m/logits.bin")"
  d=$(maxdiff "$TMP/$m.bin" "$FIX/$m/logits.bin")
  check "$m: logits within 1e-4 of transformers (max diff $d, $n tokens)" le "$d" 1e-4
  "$NEOX" logits -m "$FIX/$m" --ids "$ids" -o "$TMP/$m.inc.bin" --incremental -t 1
  d=$(maxdiff "$TMP/$m.bin" "$TMP/$m.inc.bin")
  check "$m: --incremental within 5e-5 of prefill (max diff $d)" le "$d" 5e-5
  out=$("$NEOX" generate -m "$FIX/$m" --ids "$(ref $m gen_prompt)" -n 64 --ignore-eos -t 2 2> "$TMP/$m.gen.err")
  check "$m: greedy generate equals HF's 64 tokens" test "$out" = "$(ref $m gen_ids)"
  check "$m: generate writes nothing to stderr" test ! -s "$TMP/$m.gen.err"
done

# --echo prints the prompt ids first; -o - writes the same bytes to stdout
out=$("$NEOX" generate -m "$FIX/neox_b" --ids "$(ref neox_b gen_prompt)" -n 5 --ignore-eos --echo)
want="$(ref neox_b gen_prompt) $(ref neox_b gen_ids | cut -d' ' -f1-5)"
check "--echo prefixes the prompt" test "$out" = "$want"
"$NEOX" logits -m "$FIX/neox_b" --ids "1 2 3" -o - > "$TMP/stdout.bin"
"$NEOX" logits -m "$FIX/neox_b" --ids "1,2,3" -o "$TMP/file.bin"
check "-o - writes the same bytes to stdout" cmp -s "$TMP/stdout.bin" "$TMP/file.bin"

# eos stops generation: neo_b's config eos id is 0 and HF's greedy run (eos disabled) emits a
# 0 part-way, so with eos on the output must end right after that 0
out=$("$NEOX" generate -m "$FIX/neo_b" --ids "$(ref neo_b gen_prompt)" -n 64)
full=$(ref neo_b gen_ids)
prefix=$(echo "$full" | awk '{s=""; for(i=1;i<=NF;i++){s=s (i>1?" ":"") $i; if($i==0) break} print s}')
check "the reference run does emit eos part-way" test "$(echo $prefix | wc -w)" -lt 64
check "generation stops at the eos id (0)" test "$out" = "$prefix"

# sampling is reproducible with a seed
a=$("$NEOX" generate -m "$FIX/gptj_b" --ids "5 6 7" -n 20 --temperature 0.9 --top-k 40 --top-p 0.95 --min-p 0.02 --repeat-penalty 1.1 --seed 7 --ignore-eos)
b=$("$NEOX" generate -m "$FIX/gptj_b" --ids "5 6 7" -n 20 --temperature 0.9 --top-k 40 --top-p 0.95 --min-p 0.02 --repeat-penalty 1.1 --seed 7 --ignore-eos -t 1)
check "seeded sampling is reproducible (and thread-count independent)" test "$a" = "$b"
check "sampling produced 20 ids" test "$(echo $a | wc -w)" -eq 20

# context limit: 6 + 100 > 80 positions is an error; --context-shift goes on
"$NEOX" generate -m "$FIX/neox_b" --ids "1 2 3 4 5 6" -n 100 --ignore-eos > "$TMP/ctx.out" 2> "$TMP/ctx.err"
check "prompt + n > context exits 1" test $? -eq 1
check "context error names the limit" contains "$TMP/ctx.err" "exceed the context of 80 positions"
check "context error is one line" one_line "$TMP/ctx.err"
out=$("$NEOX" generate -m "$FIX/neox_b" --ids "1 2 3 4 5 6" -n 100 --ignore-eos --context-shift)
check "--context-shift generates all 100 tokens" test "$(echo $out | wc -w)" -eq 100

# bad input: one line on stderr, non-zero exit, no output file
"$NEOX" logits -m "$FIX/neox_b" --ids "1 x 3" -o "$TMP/bad.bin" 2> "$TMP/bad.err"
check "bad --ids is a usage error (2)" test $? -eq 2
check "no output after a usage error" test ! -e "$TMP/bad.bin"
"$NEOX" logits -m "$FIX/neox_b" --ids "1 256" -o "$TMP/bad.bin" 2> "$TMP/range.err"
check "id >= vocab_size exits 1" test $? -eq 1
check "id error names the vocabulary" contains "$TMP/range.err" "outside the vocabulary [0, 256)"
check "no output after a failed forward" test ! -e "$TMP/bad.bin"
"$NEOX" logits -m "$TMP/no-such-model" --ids "1" -o "$TMP/bad.bin" 2> "$TMP/missing.err"
check "missing model exits 1" test $? -eq 1
check "missing model: one line" one_line "$TMP/missing.err"
mkdir -p "$TMP/broken"
cp "$FIX/neox_a/config.json" "$TMP/broken/"
head -c 3000 "$FIX/neox_a/model.safetensors" > "$TMP/broken/model.safetensors"
"$NEOX" generate -m "$TMP/broken" --ids "1 2" -n 3 2> "$TMP/broken.err"
check "truncated weights exit 1" test $? -eq 1
check "truncated weights: one line" one_line "$TMP/broken.err"
"$NEOX" logits -m "$FIX/neox_b" --ids "1" -o "$TMP/no/such/dir/out.bin" 2> "$TMP/wr.err"
check "unwritable output exits 1" test $? -eq 1
check "no temporary file left" test -z "$(ls "$TMP" | grep '\.tmp\.')"
"$NEOX" generate --ids "1" 2> "$TMP/usage.err"
check "missing -m is a usage error" test $? -eq 2
"$NEOX" generate -m "$FIX/neox_b" --ids "1" -n 0 2> "$TMP/usage.err"
check "-n 0 is a usage error" test $? -eq 2
"$NEOX" generate -m "$FIX/neox_b" --ids "1" --top-p 1.5 2> "$TMP/usage.err"
check "--top-p 1.5 is a usage error" test $? -eq 2
"$NEOX" logits --help > "$TMP/help.txt"
check "logits --help" contains "$TMP/help.txt" "--incremental"

# bench: one JSON line with the documented keys
"$NEOX" bench --random-shape pythia-14m -p 8 -n 4 -d 8 -r 1 -t 2 > "$TMP/bench.json" 2> "$TMP/bench.err"
check "bench exits 0" test $? -eq 0
check "bench prints one line" one_line "$TMP/bench.json"
for k in '"model": "pythia-14m (random)"' '"dtype": "f32"' '"threads": 2' '"prompt_tok_s": ' '"gen_tok_s": ' '"gen_depth": 8, ' '"peak_rss_mb": ' '"load_s": ' '"ttft_s": ' '"rss_mb": ' '"huge_mb": ' '"mapped_mb": '; do
  check "bench JSON has $k" contains "$TMP/bench.json" "$k"
done
check "bench JSON: fp32 weights keep an fp32 KV cache" contains "$TMP/bench.json" '"kv_type": "f32"'
# pythia-14m: 6 layers x 4 heads x 32 dims x 2 (K, V); 12 positions of fp32 (generation after 8
# cached tokens), 10.5 on average read
check "bench JSON: kv_mb of 12 positions" contains "$TMP/bench.json" '"kv_mb": 0.1, '
check "bench JSON: kv_read_mb" contains "$TMP/bench.json" '"kv_read_mb": 0.1, '
"$NEOX" bench --random-shape pythia-160m -p 500 -n 12 -d 500 -r 1 -t 2 --kv-type bf16 > "$TMP/bench16.json" 2> "$TMP/bench.err"
# 12 layers x 12 heads x 64 dims x 2 x 2 bytes: 36864 B per position; 512 positions, 506.5 read on average
check "bench --kv-type bf16: kv_type, kv_mb, kv_read_mb" contains "$TMP/bench16.json" '"kv_type": "bf16", "kv_mb": 18.9, "kv_read_mb": 18.7, '
"$NEOX" bench -m "$FIX/neox_a" -p 16 -n 8 -r 1 > "$TMP/bench2.json"
check "bench: generation from an empty cache by default" contains "$TMP/bench2.json" '"gen_depth": 0, '
"$NEOX" bench --random-shape pythia-14m -p 8 -n 8 -d 2045 -r 1 2> "$TMP/bench.err"
check "bench: -d + -n beyond the context exits 2" test $? -eq 2
check "bench: -d + -n beyond the context, one line" contains "$TMP/bench.err" "max_position_embeddings 2048"
check "bench on a model directory" contains "$TMP/bench2.json" '"arch": "gpt_neox"'
"$NEOX" bench --random-shape pythia-9000b 2> "$TMP/bench.err"
check "unknown shape exits 1" test $? -eq 1

# --kv-type: a 16-bit cache changes the logits by its rounding only (tolerances: test_kv.c), and
# every command that creates sessions refuses other types with one line and exit 2.
ids=$(ref neox_a logits_ids)
for kv in f16 bf16; do
  "$NEOX" logits -m "$FIX/neox_a" --ids "$ids" -o "$TMP/kv_$kv.bin" -t 2 --kv-type $kv 2> "$TMP/kv.err"
  check "logits --kv-type $kv exits 0" test $? -eq 0
  d=$(maxdiff "$TMP/kv_$kv.bin" "$TMP/neox_a.bin")
  check "logits --kv-type $kv: within 0.05 of the fp32 cache and not equal (max diff $d)" awk -v d="$d" 'BEGIN{exit !(d > 0 && d <= 0.05)}'
done
"$NEOX" logits -m "$FIX/neox_a" --ids "$ids" -o "$TMP/kv_f32.bin" -t 2 --kv-type f32
check "logits --kv-type f32 is the default on fp32 weights" cmp -s "$TMP/kv_f32.bin" "$TMP/neox_a.bin"
for cmd in "logits -m $FIX/neox_a --ids 1 -o $TMP/kv_bad.bin" "generate -m $FIX/neox_a --ids 1 -n 1" \
           "bench --random-shape pythia-14m -p 4 -n 1" "serve -m $FIX/neox_a" "eval ppl -m $FIX/neox_a --text /dev/null"; do
  for bad in q4 int8 ""; do
    $NEOX $cmd --kv-type "$bad" > "$TMP/kv_bad.out" 2> "$TMP/kv_bad.err"
    rc=$?
    sub=${cmd%% *}
    check "$sub --kv-type '$bad': exit 2, one line naming the flag" \
      sh -c "test $rc -eq 2 && test \$(wc -l < '$TMP/kv_bad.err') -eq 1 && grep -qF -- \"--kv-type: '$bad' is not one of f32, f16, bf16, q8\" '$TMP/kv_bad.err'"
  done
done
check "a refused --kv-type writes no logits" test ! -e "$TMP/kv_bad.bin"
# q8 needs heads that are multiples of 32 (this fixture's are 16): one line, non-zero exit.
"$NEOX" logits -m "$FIX/neox_a" --ids 1 -o "$TMP/kv_bad.bin" --kv-type q8 > /dev/null 2> "$TMP/kv_q8.err"
rc=$?
check "logits --kv-type q8 on 16-dim heads: refused in one line (exit $rc)" \
  sh -c "test $rc -ne 0 && test \$(wc -l < '$TMP/kv_q8.err') -eq 1 && grep -q 'multiple of 32' '$TMP/kv_q8.err'"
check "a refused q8 cache writes no logits" test ! -e "$TMP/kv_bad.bin"

# Text mode, end to end through the tokenizer (always built in):
# a 280-entry byte-level BPE; HF's 24 greedy tokens with ids >= 280 suppressed, as raw bytes.
if true; then
  for m in neox_a gptj_a; do
    prompt=$(sed -n 's/^prompt: //p' "$FIX/$m/text_ref.txt")
    "$NEOX" generate -m "$FIX/$m" --tokenizer "$FIX/tokenizer_tiny.json" -p "$prompt" -n 24 --ignore-eos > "$TMP/$m.txt"
    check "$m: text generate exits 0" test $? -eq 0
    head -c -1 "$TMP/$m.txt" > "$TMP/$m.txt.body"
    check "$m: streamed text equals HF's bytes" cmp -s "$TMP/$m.txt.body" "$FIX/$m/text_out.bin"
    printf '%s' "$prompt" > "$TMP/$m.prompt"
    "$NEOX" generate -m "$FIX/$m" --tokenizer "$FIX/tokenizer_tiny.json" -f "$TMP/$m.prompt" -n 24 --ignore-eos > "$TMP/$m.f.txt"
    check "$m: -f FILE gives the same text" cmp -s "$TMP/$m.txt" "$TMP/$m.f.txt"
    "$NEOX" generate -m "$FIX/$m" --tokenizer "$FIX/tokenizer_tiny.json" -n 24 --ignore-eos < "$TMP/$m.prompt" > "$TMP/$m.s.txt"
    check "$m: stdin gives the same text" cmp -s "$TMP/$m.txt" "$TMP/$m.s.txt"
    ids=$("$NEOX" generate -m "$FIX/$m" --tokenizer "$FIX/tokenizer_tiny.json" -p "$prompt" -n 24 --ignore-eos --print-ids)
    check "$m: --print-ids equals HF's ids" test "$ids" = "$(sed -n 's/^gen_ids: //p' "$FIX/$m/text_ref.txt")"
    # --stop: cut at the first occurrence of the 3 bytes at offset 4 of the expected text
    stop=$(head -c 7 "$FIX/$m/text_out.bin" | tail -c 3)
    "$NEOX" generate -m "$FIX/$m" --tokenizer "$FIX/tokenizer_tiny.json" -p "$prompt" -n 24 --ignore-eos --stop "$stop" > "$TMP/$m.stop.txt"
    body=$(cat "$TMP/$m.stop.txt")
    want=$(awk -v s="$stop" 'BEGIN{RS="\0"} {i=index($0, s); printf "%s", substr($0, 1, i-1)}' "$FIX/$m/text_out.bin")
    check "$m: --stop cuts the text before the stop string" test "$body" = "$want"
  done
fi

rm -rf "$TMP"
exit $fail
