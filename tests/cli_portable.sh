#!/usr/bin/env bash
# cli_portable.sh NEOX_BIN SOURCE_DIR BUILD_DIR - one binary runs on any x86-64: the same neox,
# run on emulated CPUs (qemu-x86_64), picks the kernels the CPU has and gives the host's
# results. qemu64 (SSE2 only) must run the scalar kernels, Haswell (AVX2, FMA, F16C, no
# AVX-512) the AVX2 ones; this host's own run is the reference. Each CPU runs fp32, bf16, q8
# and q4 directories (the block types interleaved by `neox quantize`, which only AVX-512 VNNI
# reads in place: elsewhere they are put back in row order at load), through the decode
# kernels (6 tokens) and the prefill GEMM (12 tokens).
# Tolerances: the scalar and AVX2 kernels sum in other orders than AVX-512 (fp32 rounding,
# 1e-5 of the largest logit); AVX2 prefill on block weights multiplies fp32 activations by the
# widened weights where VNNI quantizes the activations to Q8_0 (docs/QUANT.md), so that case
# is held to the Q8_0 activation error instead (2e-2, as q8 against fp32), and to the bits of
# the same type converted at load on the same CPU.
# Exit 77 (skipped) off x86-64, or without qemu-x86_64 outside CI; under CI=true a missing
# qemu-x86_64 fails.
set -u
NEOX=$1; SRC=$2; BUILD=$3
. "$SRC/tests/logits_check.sh"
# x86-64 CPUs only: elsewhere there is no x86 binary to emulate (not a missing prerequisite)
case "$(uname -m)" in x86_64 | amd64) ;; *) echo "skip: not an x86-64 host"; exit 77 ;; esac
command -v qemu-x86_64 > /dev/null || missing_prereq "qemu-x86_64 (Debian package qemu-user)"
LM="$SRC/tests/fixtures/eval/lm"
TMP="$BUILD/cli_portable_tmp"
rm -rf "$TMP"; mkdir -p "$TMP"
fail=0
# qemu warns on stderr about host features its CPU models name but it does not emulate
emu() { local cpu=$1; shift; qemu-x86_64 -cpu "$cpu" "$NEOX" "$@" 2> "$TMP/emu.err"; }

SHORT="1 5 9 200 17 3"
LONG="1 5 9 200 17 3 44 1000 8 8 13 77"
for t in bf16 q8 q4; do
  "$NEOX" quantize "$LM" "$TMP/$t" --type $t 2> "$TMP/err" || { echo "FAIL quantize $t"; cat "$TMP/err"; fail=1; }
done
models="f32:$LM bf16:$TMP/bf16 q8:$TMP/q8 q4:$TMP/q4"
for mt in $models; do
  t=${mt%%:*}; dir=${mt#*:}
  for p in short long; do
    ids=$SHORT; [ $p = long ] && ids=$LONG
    "$NEOX" logits -m "$dir" --ids "$ids" -o "$TMP/$t.$p.host" -t 2 2> "$TMP/err" ||
      { echo "FAIL host logits $t $p"; cat "$TMP/err"; fail=1; }
  done
done

for spec in "qemu64 ref" "Haswell avx2"; do
  set -- $spec; cpu=$1; want=$2
  emu "$cpu" bench -m "$LM" -p 4 -n 2 -t 2 -r 1 > "$TMP/bench.json"
  check "$cpu: neox runs (bench exits 0)" test $? -eq 0
  check "$cpu: kernels \"$want\" chosen" grep -qF "\"kernels\": \"$want\"" "$TMP/bench.json"
  for mt in $models; do
    t=${mt%%:*}; dir=${mt#*:}
    for p in short long; do
      ids=$SHORT; [ $p = long ] && ids=$LONG
      out="$TMP/$t.$p.$cpu"
      emu "$cpu" logits -m "$dir" --ids "$ids" -o "$out" -t 2
      check "$cpu $t $p: logits exit 0" test $? -eq 0
      tol=1e-5
      if [ $want = avx2 ] && [ $p = long ] && [ $t = q8 -o $t = q4 ]; then
        tol=2e-2
        # the file's interleaved matrices, put back in row order, are the load-time conversion's
        emu "$cpu" logits -m "$LM" --dtype $t --ids "$ids" -o "$out.load" -t 2
        check "$cpu $t $p: the $t file == --dtype $t at load (bytes)" cmp -s "$out" "$out.load"
      fi
      d=$(reldiff "$out" "$TMP/$t.$p.host")
      check "$cpu $t $p: relative max diff to this host $d <= $tol" le "$d" "$tol"
    done
  done
done
rm -rf "$TMP"
exit $fail
