#!/bin/bash
# cli_tokenize.sh NEOX SOURCE_DIR BUILD_DIR - neox tokenize / detokenize / tokenizer on the
# released tokenizer files: anchors, round trips, JSONL, errors with line numbers, training.
set -u
NEOX=$1
SRC=$2
ASSETS=${NEOX_ASSETS:-${NX_DEFAULT_ASSETS:-$SRC/../shared/assets}}
T20B=$ASSETS/tokenizers/gpt-neox-20b/tokenizer.json
GPT2=$ASSETS/tokenizers/gpt2
fail() { echo "FAIL: $*"; exit 1; }
if [ ! -f "$T20B" ]; then
  [ "${CI:-}" = true ] && fail "assets missing under CI: $T20B"
  echo "SKIPPED: no assets at $ASSETS"
  exit 77   # CTest reports it skipped, not passed
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# anchors, stdin and file input
out=$(printf 'Hello world' | "$NEOX" tokenize -t "$T20B") || fail "tokenize exit"
[ "$out" = "12092 1533" ] || fail "20B Hello world: $out"
printf ' Hello world' > "$tmp/in.txt"
out=$("$NEOX" tokenize -t "$GPT2" "$tmp/in.txt") || fail "tokenize file"
[ "$out" = "18435 995" ] || fail "gpt2 ' Hello world': $out"
out=$(printf '丁' | "$NEOX" tokenize -t "$T20B")
[ "$out" = "3218 212" ] || fail "20B 丁: $out"

# byte-exact round trip of a file with CRLF, tabs, space runs, emoji, NFC text
printf 'line one\r\n\tcode  =   1;\n\n    👩🏽‍💻 café <|endoftext|> end' > "$tmp/rt.txt"
"$NEOX" tokenize -t "$T20B" "$tmp/rt.txt" > "$tmp/ids" || fail "tokenize rt"
"$NEOX" detokenize -t "$T20B" "$tmp/ids" > "$tmp/back" || fail "detokenize rt"
cmp -s "$tmp/rt.txt" "$tmp/back" || fail "round trip differs"
grep -qw 0 "$tmp/ids" || fail "<|endoftext|> not parsed as id 0"
"$NEOX" tokenize -t "$T20B" --no-parse-special "$tmp/rt.txt" > "$tmp/ids2"
grep -qw 0 "$tmp/ids2" && fail "--no-parse-special still produced id 0"
"$NEOX" detokenize -t "$T20B" --skip-special "$tmp/ids" > "$tmp/back2"
grep -q endoftext "$tmp/back2" && fail "--skip-special kept the special token"

# JSONL both ways, order kept
printf '{"text": "Hello world"}\n{"text": ""}\n{"text": "a\\nb", "meta": 1}\n' > "$tmp/in.jsonl"
"$NEOX" tokenize -t "$T20B" --jsonl "$tmp/in.jsonl" > "$tmp/out.jsonl" || fail "jsonl tokenize"
[ "$(sed -n 1p "$tmp/out.jsonl")" = '{"ids": [12092, 1533]}' ] || fail "jsonl line 1: $(sed -n 1p "$tmp/out.jsonl")"
[ "$(sed -n 2p "$tmp/out.jsonl")" = '{"ids": []}' ] || fail "jsonl line 2"
[ "$(wc -l < "$tmp/out.jsonl")" = 3 ] || fail "jsonl line count"
"$NEOX" detokenize -t "$T20B" --jsonl "$tmp/out.jsonl" > "$tmp/back.jsonl" || fail "jsonl detokenize"
[ "$(sed -n 3p "$tmp/back.jsonl")" = '{"text": "a\nb"}' ] || fail "jsonl back line 3: $(sed -n 3p "$tmp/back.jsonl")"

# -j: the same output on several threads, in order; the first bad line still stops the run
for i in $(seq 1 300); do printf '{"text": "line %d: caf\u00e9  <|endoftext|>\\tx"}\n' "$i"; done > "$tmp/many.jsonl"
"$NEOX" tokenize -t "$T20B" --jsonl "$tmp/many.jsonl" > "$tmp/m1" || fail "jsonl -j1"
"$NEOX" tokenize -t "$T20B" --jsonl -j 3 "$tmp/many.jsonl" > "$tmp/m3" || fail "jsonl -j3"
cmp -s "$tmp/m1" "$tmp/m3" || fail "-j 3 output differs from -j 1"
[ "$(wc -l < "$tmp/m3")" = 300 ] || fail "-j 3 line count"
sed -i '250s/.*/{"txt": 1}/' "$tmp/many.jsonl"
"$NEOX" tokenize -t "$T20B" --jsonl -j 2 "$tmp/many.jsonl" > "$tmp/m2" 2> "$tmp/err" && fail "-j bad line accepted"
grep -q "line 250:" "$tmp/err" || fail "-j error line: $(cat "$tmp/err")"
[ "$(wc -l < "$tmp/m2")" = 249 ] || fail "-j printed $(wc -l < "$tmp/m2") lines before the error"

# malformed input: clear error with the line number, non-zero exit
printf '{"text": "ok"}\n{"text": 5}\n' | "$NEOX" tokenize -t "$T20B" --jsonl > /dev/null 2> "$tmp/err" && fail "bad jsonl accepted"
grep -q "line 2" "$tmp/err" || fail "no line number: $(cat "$tmp/err")"
printf '{"text": "ok"}\n{"text": "x"\n' | "$NEOX" tokenize -t "$T20B" --jsonl > /dev/null 2> "$tmp/err" && fail "broken json accepted"
grep -q "line 2: invalid JSON" "$tmp/err" || fail "broken json message: $(cat "$tmp/err")"
printf '12092\n1533 abc\n' | "$NEOX" detokenize -t "$T20B" > /dev/null 2> "$tmp/err" && fail "bad id accepted"
grep -q 'line 2: "abc" is not a token id' "$tmp/err" || fail "bad id message: $(cat "$tmp/err")"
printf '12092 99999999' | "$NEOX" detokenize -t "$T20B" > /dev/null 2> "$tmp/err" && fail "out of range id accepted"
grep -q "99999999" "$tmp/err" || fail "range message: $(cat "$tmp/err")"
printf '{"ids": [1, -2]}\n' | "$NEOX" detokenize -t "$T20B" --jsonl > /dev/null 2> "$tmp/err" && fail "negative id accepted"
grep -q "line 1: ids\[1\]" "$tmp/err" || fail "negative id message: $(cat "$tmp/err")"
printf 'bad \xC3\x28 utf8' | "$NEOX" tokenize -t "$T20B" > /dev/null 2> "$tmp/err" && fail "invalid UTF-8 accepted"
grep -q "invalid UTF-8 at byte offset 4" "$tmp/err" || fail "utf8 message: $(cat "$tmp/err")"
out=$(printf 'bad \xC3\x28' | "$NEOX" tokenize -t "$T20B" --lossy) || fail "--lossy failed"
[ -n "$out" ] || fail "--lossy empty"
printf '{"model": {"type": "Unigram"}}' > "$tmp/bad.json"
"$NEOX" tokenize -t "$tmp/bad.json" < /dev/null 2> "$tmp/err" && fail "unigram accepted"
grep -q 'model.type "Unigram"' "$tmp/err" || fail "model type message: $(cat "$tmp/err")"
"$NEOX" tokenize < /dev/null 2> /dev/null; [ $? = 2 ] || fail "missing -t is not a usage error"

# training: a tiny corpus, then the result tokenizes and round-trips
for i in $(seq 1 200); do echo "the quick brown fox $i jumps over the lazy dog; the end of line $i"; done > "$tmp/train.txt"
"$NEOX" tokenizer train --vocab-size 400 --special '<|endoftext|>' -q -o "$tmp/tok.json" "$tmp/train.txt" || fail "train"
out=$(printf 'the quick brown fox' | "$NEOX" tokenize -t "$tmp/tok.json") || fail "tokenize with trained"
n=$(echo "$out" | wc -w)
[ "$n" -le 5 ] || fail "trained tokenizer did not merge: $out"
printf 'the lazy dog<|endoftext|>' | "$NEOX" tokenize -t "$tmp/tok.json" | "$NEOX" detokenize -t "$tmp/tok.json" > "$tmp/b"
[ "$(cat "$tmp/b")" = 'the lazy dog<|endoftext|>' ] || fail "trained round trip: $(cat "$tmp/b")"
"$NEOX" tokenizer info -t "$tmp/tok.json" | grep -q "vocab_size: 400" || fail "info vocab size"
"$NEOX" tokenizer train --vocab-size 400 -o "$tmp/x.json" 2> /dev/null; [ $? = 2 ] || fail "train without files"
echo "cli_tokenize: ok"
