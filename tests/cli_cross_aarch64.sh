#!/usr/bin/env bash
# cli_cross_aarch64.sh NEOX_BIN SOURCE_DIR BUILD_DIR - neox builds for a CPU other than x86-64
# with the scalar kernels: the whole tree (library, command, tests, benchmarks) cross-compiled
# for aarch64 without a warning, and that neox, run by qemu-aarch64 on one thread, gives this
# host's logits for fp32, bf16, q8 and q4 directories (the block types interleaved by `neox
# quantize`, put back in row order at load there), within fp32 rounding (1e-5 of the largest
# logit), through the decode kernels (6 tokens) and the prefill GEMM (12 tokens).
# One thread: qemu-aarch64 7.2 (Debian 12) hangs in the first pthread_create of any program
# here, a plain two-line one included, so the threaded paths are left to the native suites.
# Needs (Debian, as root):
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install gcc-aarch64-linux-gnu qemu-user libjansson-dev:arm64 libzstd-dev:arm64 \
#     libutf8proc-dev:arm64 libmicrohttpd-dev:arm64
# .ci/run installs them; elsewhere the test is skipped (exit 77) without them, and fails under
# CI=true.
set -u
NEOX=$1; SRC=$2; BUILD=$3
. "$SRC/tests/logits_check.sh"
LIBDIR=/usr/lib/aarch64-linux-gnu
missing=""
command -v aarch64-linux-gnu-gcc > /dev/null || missing="$missing gcc-aarch64-linux-gnu"
command -v qemu-aarch64 > /dev/null || missing="$missing qemu-user"
for lib in jansson libzstd libutf8proc libmicrohttpd; do
  [ -f "$LIBDIR/pkgconfig/$lib.pc" ] || missing="$missing $lib(arm64)"
done
[ -z "$missing" ] || missing_prereq "$missing"
LM="$SRC/tests/fixtures/eval/lm"
TMP="$BUILD/cli_cross_aarch64_tmp"
rm -rf "$TMP"; mkdir -p "$TMP"
fail=0

XB="$TMP/build"
PKG_CONFIG_LIBDIR="$LIBDIR/pkgconfig:/usr/share/pkgconfig" \
  cmake -S "$SRC" -B "$XB" -DCMAKE_TOOLCHAIN_FILE="$SRC/cmake/aarch64-linux-gnu.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DNX_MPI=OFF > "$TMP/configure.log" 2>&1
check "configure for aarch64" test $? -eq 0 || { tail -20 "$TMP/configure.log"; exit 1; }
cmake --build "$XB" -j "$(nproc 2>/dev/null || echo 2)" > "$TMP/build.log" 2>&1
check "build for aarch64 (all targets)" test $? -eq 0 || { grep -E "error" "$TMP/build.log" | head -20; exit 1; }
check "no compiler warnings for aarch64" test "$(grep -c 'warning:' "$TMP/build.log")" -eq 0 ||
  grep -A3 'warning:' "$TMP/build.log" | head -20
check "the command is an aarch64 program" sh -c "od -An -t x1 -j 18 -N 2 '$XB/neox' | grep -q 'b7 00'"
ARM=(qemu-aarch64 -L /usr/aarch64-linux-gnu "$XB/neox")
"${ARM[@]}" bench -m "$LM" -p 4 -n 2 -t 1 -r 1 > "$TMP/bench.json" 2> "$TMP/err"
check "aarch64 neox runs (bench exits 0)" test $? -eq 0
check "aarch64: the scalar kernels" grep -qF '"kernels": "ref"' "$TMP/bench.json"

for t in bf16 q8 q4; do
  "$NEOX" quantize "$LM" "$TMP/$t" --type $t 2> "$TMP/err" || { echo "FAIL quantize $t"; cat "$TMP/err"; fail=1; }
done
for mt in "f32:$LM" "bf16:$TMP/bf16" "q8:$TMP/q8" "q4:$TMP/q4"; do
  t=${mt%%:*}; dir=${mt#*:}
  for ids in "1 5 9 200 17 3" "1 5 9 200 17 3 44 1000 8 8 13 77"; do
    n=$(echo $ids | wc -w)
    "$NEOX" logits -m "$dir" --ids "$ids" -o "$TMP/host.bin" -t 1 2> "$TMP/err" || { echo "FAIL host logits"; cat "$TMP/err"; fail=1; }
    "${ARM[@]}" logits -m "$dir" --ids "$ids" -o "$TMP/arm.bin" -t 1 2> "$TMP/err"
    check "aarch64 $t $n tokens: logits exit 0" test $? -eq 0
    d=$(reldiff "$TMP/arm.bin" "$TMP/host.bin")
    check "aarch64 $t $n tokens: relative max diff to this host $d <= 1e-5" le "$d" 1e-5
  done
done
[ $fail -eq 0 ] && rm -rf "$TMP"
exit $fail
