#!/bin/bash
# cli_data_tokenize.sh NEOX SOURCE_DIR BUILD_DIR - `neox data tokenize` with the GPT-NeoX-20B
# tokenizer must write the same bytes as GPT-NeoX's preprocess_data.py logic through HF
# tokenizers and megatron-core's builder (tests/fixtures/data/tok_ref_text_document.*, made by
# tools/fixtures/make_data_fixtures.py), from .jsonl and .jsonl.zst, for any thread count.
set -u
NEOX=$1; SRC=$2; BUILD=$3
F=$SRC/tests/fixtures/data
ASSETS=${NEOX_ASSETS:-${NX_DEFAULT_ASSETS:-$SRC/../shared/assets}}
TOK=$ASSETS/tokenizers/gpt-neox-20b/tokenizer.json
if [ ! -f "$TOK" ]; then
  if [ "${CI:-}" = true ]; then echo "FAIL: missing asset $TOK"; exit 1; fi
  echo "SKIP: $TOK not found (set NEOX_ASSETS)"; exit 77   # reported skipped, not passed
fi
T=$BUILD/cli_data_tokenize.tmp
rm -rf "$T"; mkdir -p "$T"
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; else echo "ok   $1"; fi; }
same() { cmp -s "$1.bin" "$F/tok_ref_text_document.bin" && cmp -s "$1.idx" "$F/tok_ref_text_document.idx"; }

"$NEOX" data tokenize -q -t "$TOK" -o "$T/a" --threads 1 "$F/tok_input.jsonl" >"$T/sum" || fail=1
check "jsonl, 1 thread = reference" 'same "$T/a"'
check "summary reconciles" 'grep -q "15 records = 14 written + 1 empty" "$T/sum"'
if command -v zstd >/dev/null; then
  zstd -q -19 "$F/tok_input.jsonl" -o "$T/in.jsonl.zst"
  "$NEOX" data tokenize -q -t "$TOK" -o "$T/c" --threads 3 "$T/in.jsonl.zst" >/dev/null || fail=1
  check "jsonl.zst, 3 threads = reference" 'same "$T/c"'
elif [ "${CI:-}" = true ]; then
  echo "FAIL: zstd not installed (packages.d/data.txt)"; fail=1
fi
got=$("$NEOX" data dump "$T/a" --doc 0 -t "$TOK")
check "dump detokenizes" '[ "$got" = "Hello world<|endoftext|>" ]'

# Malformed lines: reported with file:line, skipped; fatal under --strict.
{ cat "$F/tok_input.jsonl"; echo '{"text": oops}'; printf '{"text": "bad \xff"}\n'; } >"$T/bad.jsonl"
"$NEOX" data tokenize -t "$TOK" -o "$T/d" "$T/bad.jsonl" >"$T/sum" 2>"$T/err"; rc=$?
check "issues skipped" '[ $rc -eq 0 ] && grep -q "bad.jsonl:16: invalid JSON" "$T/err" && grep -q "bad.jsonl:17: invalid UTF-8" "$T/err"'
check "issues counted" 'grep -q "17 records = 14 written + 1 empty + 1 bad JSON + 0 no text key + 1 invalid UTF-8" "$T/sum"'
"$NEOX" data tokenize -t "$TOK" -o "$T/e" --strict "$T/bad.jsonl" >/dev/null 2>"$T/err"; rc=$?
check "--strict fails" '[ $rc -eq 1 ] && grep -q "bad.jsonl:16" "$T/err" && [ ! -e "$T/e.idx" ]'

# The batch of a config over the tokenized file, detokenized.
printf '{"data-path": "%s", "split": "100,0,0", "seq-length": 16, "train-batch-size": 2, "train-iters": 3}\n' "$T/a" >"$T/cfg.json"
"$NEOX" batch "$T/cfg.json" --step 1 >"$T/ids" || fail=1
"$NEOX" batch "$T/cfg.json" --step 1 --detokenize -t "$TOK" >"$T/text" || fail=1
check "batch ids: 2 rows of 17" '[ $(wc -l <"$T/ids") -eq 2 ] && [ $(head -1 "$T/ids" | wc -w) -eq 17 ]'
check "batch detokenize" '[ -s "$T/text" ]'
exit $fail
