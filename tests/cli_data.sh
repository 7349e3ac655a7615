#!/bin/bash
# cli_data.sh NEOX SOURCE_DIR BUILD_DIR - neox data info/dump/verify and neox batch on the
# megatron-core fixtures: outputs, exit codes, and one-line errors for bad input.
set -u
NEOX=$1; SRC=$2; BUILD=$3
F=$SRC/tests/fixtures/data
T=$BUILD/cli_data.tmp
rm -rf "$T"; mkdir -p "$T"
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; else echo "ok   $1"; fi; }

out=$("$NEOX" data info "$F/u16_docs"); rc=$?
check "info exit 0" '[ $rc -eq 0 ]'
check "info documents" 'grep -q "^documents:  12$" <<<"$out"'
check "info dtype" 'grep -q "uint16 (code 8" <<<"$out"'
check "info tokens" 'grep -q "^tokens:     252$" <<<"$out"'

# dump: the ids of item 3 are line 5 of the fixture mirror (after the header), minus the length.
want=$(sed -n 5p "$F/u16_docs.txt" | cut -d' ' -f2-)
got=$("$NEOX" data dump "$F/u16_docs" --doc 3)
check "dump --doc ids" '[ "$got" = "$want" ]'
got=$("$NEOX" data dump "$F/i32_multi" --doc 1 | wc -l)
check "dump multi-item doc" '[ "$got" -eq 3 ]'
"$NEOX" data dump "$F/u16_docs" --doc 12 2>"$T/err"; rc=$?
check "dump out of range" '[ $rc -eq 1 ] && grep -q "out of range" "$T/err"'

check "verify ok" '"$NEOX" data verify "$F/i32_multi" --vocab 100000 >/dev/null'
"$NEOX" data verify "$F/i32_multi" --vocab 1000 2>"$T/err"; rc=$?
check "verify vocab" '[ $rc -eq 1 ] && [ $(wc -l <"$T/err") -eq 1 ] && grep -q "outside" "$T/err"'

# Corrupt: truncated .idx, swapped .bin; one-line error, exit 1, no crash.
head -c 100 "$F/u16_docs.idx" >"$T/bad.idx"; cp "$F/u16_docs.bin" "$T/bad.bin"
"$NEOX" data info "$T/bad" 2>"$T/err"; rc=$?
check "truncated idx" '[ $rc -eq 1 ] && [ $(wc -l <"$T/err") -eq 1 ]'
cp "$F/u16_docs.idx" "$T/mix.idx"; cp "$F/samples.bin" "$T/mix.bin"
"$NEOX" data verify "$T/mix" 2>"$T/err"; rc=$?
check "mismatched pair" '[ $rc -eq 1 ] && grep -q "do not belong together\|past the end" "$T/err"'
"$NEOX" data info "$T/missing" 2>"$T/err"; rc=$?
check "missing file" '[ $rc -eq 1 ] && grep -q "missing.idx" "$T/err"'
"$NEOX" data frobnicate 2>/dev/null; rc=$?
check "unknown action" '[ $rc -eq 2 ]'

# batch: step 2 of the blended config equals the reference rows (step, dataset, sample, tokens).
got=$("$NEOX" batch "$F/blend_config.json" --step 2)
want=$(awk '$1 == 2 { $1 = $2 = $3 = ""; sub(/^ +/, ""); print }' "$F/blend_expected.txt")
check "batch step 2" '[ "$got" = "$want" ]'
got=$("$NEOX" batch "$F/blend_config.json" --step 2 --dp 2 --rank 1)
want2=$(tail -n 2 <<<"$want")
check "batch dp slice" '[ "$got" = "$want2" ]'
"$NEOX" batch "$F/blend_config.json" --step 100000 2>"$T/err"; rc=$?
check "batch past end" '[ $rc -eq 1 ] && grep -q "past the end" "$T/err"'
echo '{"data-path": "x", "seq-length": 4' >"$T/bad.json"
"$NEOX" batch "$T/bad.json" --step 0 2>"$T/err"; rc=$?
check "batch bad json" '[ $rc -eq 1 ] && grep -q "invalid JSON" "$T/err"'
exit $fail
