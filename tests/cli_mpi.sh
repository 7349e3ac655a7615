#!/usr/bin/env bash
# cli_mpi.sh NEOX SOURCE_DIR BUILD_DIR - data-parallel `mpirun -np N neox train` (docs/DISTRIBUTED.md):
#   1. the tiny config (global batch 4 micro batches of 2) with the single-process binary and
#      with mpirun -np 1, 2, 4: identical losses, grad norms, validation losses (metrics.jsonl)
#      and byte-identical checkpoints at every saved step; the same with --bf16 for -np 2,
#      ZeRO stage 0 and 1;
#   1b. the same with GPT-NeoX indexed data (.bin/.idx, GPT-NeoX sample order), 1, 2, 4 ranks;
#   2. a split that leaves several micro batches per rank after the local levels of the tree
#      (6 micro batches over 2 and 3 ranks): byte-identical to one process;
#   3. any N resumes any other N's checkpoint (4-rank step 6 -> 1 process; 1-process step 6 -> 2 ranks);
#   4. kill -9 of one rank mid-run: the job ends with an error within a bounded time, then
#      --resume with another N reaches the same final checkpoint;
#   5. a stopped (hung) rank: the collective watchdog ends the job after NEOX_DIST_TIMEOUT;
#   6. a global batch that does not split over N ranks: one-line error, non-zero exit;
#   7. ZeRO stage 1 (AdamW state sharded across ranks; config "zero_optimization" or
#      --zero-stage 1), with and without the exchange overlapped with backward (--overlap,
#      overlap_comm; also without ZeRO): 1, 2, 3, 4
#      ranks byte-identical to one process without ZeRO (tiny and indexed data, whose
#      50304-token embedding gives every rank a real shard); a ZeRO run resumes a plain
#      checkpoint and a plain run a ZeRO one; stages 2 and 3 are refused.
# Needs Open MPI (packages.d/mpi.txt) and a build with NX_MPI=ON; without them the test
# fails when CI=true and is reported skipped by CTest (exit 77) otherwise.
set -u
NEOX=$(cd "$(dirname "$1")" && pwd)/$(basename "$1"); SRC=$(cd "$2" && pwd); BUILD=$(cd "$3" && pwd)
W="$BUILD/cli_mpi_tmp"
rm -rf "$W"; mkdir -p "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }
T0=$(date +%s.%N)
since() { printf '%.1fs' "$(echo "$(date +%s.%N) - $T0" | bc)"; }
skip_or_fail() { if [ "${CI:-}" = true ]; then fail "$1 (CI=true)"; fi; echo "SKIP: $1"; exit 77; }

command -v mpirun >/dev/null || skip_or_fail "mpirun not found (install packages.d/mpi.txt: openmpi-bin libopenmpi-dev)"
"$NEOX" train --help | grep -q "this build has no MPI" && skip_or_fail "neox was built without MPI (NX_MPI=OFF)"

# Open MPI in a container without a network, as root, with more ranks than cores:
# shared-memory transport only (vader, no single-copy: CMA needs ptrace rights), no ssh
# launcher, oversubscription allowed, and waiting ranks yield the CPU instead of spinning
# (with more ranks than cores a spinning rank starves the one it waits for: 4x slower).
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_plm=isolated
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_mpi_yield_when_idle=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI's own allocations are not freed at exit; leak reports would only be about it.
if [ -n "${NX_SANITIZED:-}" ]; then export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"; fi
MPIRUN="mpirun --oversubscribe --allow-run-as-root"

# mkcfg out.json save_dir iters micro accum [checkpoint_factor]
mkcfg() {
  sed -e "s|\"\.\./tests/|\"$SRC/tests/|g" -e "s|\"save\": \"[^\"]*\"|\"save\": \"$2\"|" \
      -e "s|\"train_iters\": 60|\"train_iters\": $3|" -e "s|\"checkpoint_factor\": 20|\"checkpoint_factor\": ${6:-6}|" \
      -e 's|"eval_interval": 20|"eval_interval": 6|' -e 's|"eval_iters": 4|"eval_iters": 2|' \
      -e "s|\"train_micro_batch_size_per_gpu\": 4|\"train_micro_batch_size_per_gpu\": $4|" \
      -e "s|\"gradient_accumulation_steps\": 2|\"gradient_accumulation_steps\": $5|" \
      "$SRC/configs/tiny-test.json" > "$1"
}
# metrics.jsonl without wall-clock and communication fields
metrics_core() { sed -e 's/,"tokens_per_s":[^,}]*//' -e 's/,"elapsed_s":[^,}]*//' -e 's/,"ranks":[^,}]*//' \
                     -e 's/,"comm_s":[^,}]*//' "$1"; }
same_run() { # dirA dirB
  local a=$1 b=$2
  [ "$(cat "$a/latest")" = "$(cat "$b/latest")" ] || fail "latest differs: $(cat "$a/latest") vs $(cat "$b/latest")"
  for d in "$a"/step*; do
    s=$(basename "$d")
    for f in config.json model.safetensors train_state.bin; do
      cmp -s "$d/$f" "$b/$s/$f" || fail "$s/$f differs between $a and $b"
    done
  done
  [ "$(ls "$a" | grep -c '^step')" = "$(ls "$b" | grep -c '^step')" ] || fail "different checkpoint sets in $a and $b"
  diff <(metrics_core "$a/metrics.jsonl") <(metrics_core "$b/metrics.jsonl") >/dev/null \
    || fail "metrics differ ($a vs $b): $(diff <(metrics_core "$a/metrics.jsonl") <(metrics_core "$b/metrics.jsonl") | head -4)"
}
final_same() { # dirA dirB: the last checkpoint only
  local s; s=$(cat "$1/latest")
  [ "$s" = "$(cat "$2/latest")" ] || fail "latest differs: $s vs $(cat "$2/latest")"
  for f in model.safetensors train_state.bin; do cmp -s "$1/$s/$f" "$2/$s/$f" || fail "$s/$f differs ($1 vs $2)"; done
}

# ---- 1. one process vs mpirun -np 1, 2, 4 --------------------------------------------------
mkcfg "$W/p1.json" "$W/p1" 12 2 4
"$NEOX" train "$W/p1.json" --threads 1 --quiet > "$W/p1.out" 2>&1 || { cat "$W/p1.out"; fail "single-process run"; }
grep -q "^done: 12 steps" "$W/p1.out" || fail "single-process run did not finish"
for n in 1 2 4; do
  mkcfg "$W/n$n.json" "$W/n$n" 12 2 4
  $MPIRUN -np $n "$NEOX" train "$W/n$n.json" --threads 1 --quiet > "$W/n$n.out" 2>&1 || { cat "$W/n$n.out"; fail "mpirun -np $n"; }
  [ "$(grep -c '^done: 12 steps' "$W/n$n.out")" = 1 ] || fail "-np $n: expected one 'done' line (rank 0): $(cat "$W/n$n.out")"
  same_run "$W/p1" "$W/n$n"
done
grep -q '"ranks":4,"comm_s":' "$W/n4/metrics.jsonl" || fail "4-rank metrics lack the communication time"
grep -q '"val_loss"' "$W/n4/metrics.jsonl" || fail "no validation loss in the 4-rank metrics"
echo "[$(since)] ok   1 process and mpirun -np 1, 2, 4: identical metrics and byte-identical checkpoints"

# bf16 compute (docs/TRAINING.md): the same guarantee, with and without ZeRO-1 + overlap
mkcfg "$W/b1.json" "$W/b1" 12 2 4
"$NEOX" train "$W/b1.json" --threads 1 --quiet --bf16 > "$W/b1.out" 2>&1 || { cat "$W/b1.out"; fail "single-process bf16 run"; }
for z in 0 1; do
  mkcfg "$W/b2z$z.json" "$W/b2z$z" 12 2 4
  $MPIRUN -np 2 "$NEOX" train "$W/b2z$z.json" --threads 1 --quiet --bf16 --zero-stage $z --overlap > "$W/b2.out" 2>&1 \
    || { cat "$W/b2.out"; fail "mpirun -np 2 --bf16 --zero-stage $z"; }
  same_run "$W/b1" "$W/b2z$z"
done
cmp -s "$W/p1/step12/model.safetensors" "$W/b1/step12/model.safetensors" && fail "bf16 run gave the fp32 weights"
echo "[$(since)] ok   bf16: 1 process and mpirun -np 2 (ZeRO 0 and 1, overlap): byte-identical"

# ---- 1b. GPT-NeoX indexed data (the sample order Pythia configs use) ------------------------
# tests/fixtures/data/samples: 50 documents of real GPT-NeoX-20B token ids (< 50304).
mkidx() { # out.json save_dir [checkpoint_factor]
  mkcfg "$1" "$2" 6 2 4 "${3:-100}"
  sed -i -e 's|"vocab_size": 96|"vocab_size": 50304|' \
      -e "s|\"train\": \[[^]]*\]|\"format\": \"indexed\", \"train\": [\"$SRC/tests/fixtures/data/samples\"]|" \
      -e "s|\"valid\": \[[^]]*\]|\"valid\": [\"$SRC/tests/fixtures/data/samples\"]|" -e '/"token_bytes"/d' \
      -e 's|"valid": \[\(.*\)\],|"valid": [\1]|' -e 's|"seed": 1234,|"seed": 1234, "extra_save_iters_log": false,|' "$1"
}
mkidx "$W/i1.json" "$W/i1"
"$NEOX" train "$W/i1.json" --threads 1 --quiet > "$W/i1.out" 2>&1 || { cat "$W/i1.out"; fail "single-process indexed run"; }
for n in 2 4; do
  mkidx "$W/i$n.json" "$W/i$n"
  $MPIRUN -np $n "$NEOX" train "$W/i$n.json" --threads 1 --quiet > "$W/i$n.out" 2>&1 || { cat "$W/i$n.out"; fail "mpirun -np $n (indexed)"; }
  same_run "$W/i1" "$W/i$n"
done
echo "[$(since)] ok   indexed data (GPT-NeoX order), 1 process and -np 2, 4: byte-identical"

# ---- 2. 6 micro batches over 2 and 3 ranks (3 and 2 per rank after the local levels) -------
mkcfg "$W/q1.json" "$W/q1" 6 2 6
"$NEOX" train "$W/q1.json" --threads 1 --quiet > "$W/q1.out" 2>&1 || { cat "$W/q1.out"; fail "single-process run (6 micro)"; }
for n in 2 3; do
  mkcfg "$W/q$n.json" "$W/q$n" 6 2 6
  $MPIRUN -np $n "$NEOX" train "$W/q$n.json" --threads 1 --quiet > "$W/q$n.out" 2>&1 || { cat "$W/q$n.out"; fail "mpirun -np $n (6 micro)"; }
  same_run "$W/q1" "$W/q$n"
done
echo "[$(since)] ok   6 micro batches over 1, 2, 3 ranks: byte-identical"

# ---- 3. any N resumes any other N's checkpoint --------------------------------------------
cut_at6() { # src dst: a copy of a run as it was after step 6
  mkdir -p "$2"; for s in 0 1 2 4 6; do cp -r "$1/step$s" "$2/"; done
  echo step6 > "$2/latest"; cp "$1/metrics.jsonl" "$2/"
}
mkcfg "$W/r1.json" "$W/r1" 12 2 4; cut_at6 "$W/n4" "$W/r1"
"$NEOX" train "$W/r1.json" --resume --threads 1 --quiet > "$W/r1.out" 2>&1 || { cat "$W/r1.out"; fail "1 process resuming a 4-rank checkpoint"; }
same_run "$W/p1" "$W/r1"
mkcfg "$W/r2.json" "$W/r2" 12 2 4; cut_at6 "$W/p1" "$W/r2"
$MPIRUN -np 2 "$NEOX" train "$W/r2.json" --resume --threads 1 --quiet > "$W/r2.out" 2>&1 || { cat "$W/r2.out"; fail "2 ranks resuming a 1-process checkpoint"; }
same_run "$W/p1" "$W/r2"
echo "[$(since)] ok   4-rank checkpoint resumed by 1 process, 1-process checkpoint by 2 ranks: identical"

# ---- 4. kill -9 one rank mid-run; bounded exit; resume with another N ---------------------
mkcfg "$W/k1.json" "$W/k1" 160 2 4 40
"$NEOX" train "$W/k1.json" --threads 1 --quiet > /dev/null 2>&1 || fail "reference run for the kill test"
mkcfg "$W/k.json" "$W/k" 160 2 4 40
# Each rank records its pid, so that the test kills exactly one rank (rank 1).
$MPIRUN -np 2 bash -c 'echo $$ > "$0/pid.$OMPI_COMM_WORLD_RANK"; exec "$1" train "$2" --threads 1 --quiet' \
  "$W" "$NEOX" "$W/k.json" > "$W/k.out" 2>&1 &
job=$!
target=$((10 + RANDOM % 100)); killed=0
while kill -0 $job 2>/dev/null; do
  n=$(cat "$W/k/metrics.jsonl" 2>/dev/null | wc -l)
  if [ "$n" -ge $target ] && [ -s "$W/pid.1" ]; then
    kill -9 "$(cat "$W/pid.1")" 2>/dev/null && killed=1
    break
  fi
  sleep 0.005
done
t0=$(date +%s.%N)
for _ in $(seq 1 300); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
if kill -0 $job 2>/dev/null; then kill -9 $job; kill -9 "$(cat "$W/pid.0")" 2>/dev/null; fail "the job still runs 30 s after a rank was killed"; fi
wait $job; rc=$?
dt=$(echo "$(date +%s.%N) - $t0" | bc)
if [ $killed = 1 ]; then
  [ $rc != 0 ] || fail "the job exited 0 after rank 1 was killed"
  # dead, or a zombie left for init to reap (the launcher that was its parent has exited)
  st=$(ps -o stat= -p "$(cat "$W/pid.0")" 2>/dev/null | tr -d ' ')
  case "$st" in ""|Z*) ;; *) fail "rank 0 survived the job (state $st)";; esac
  echo "[$(since)] ok   rank 1 killed at step ~$target: job ended with status $rc after ${dt}s"
else
  echo "note: the run finished before rank 1 could be killed (rc $rc)"
fi
$MPIRUN -np 4 "$NEOX" train "$W/k.json" --resume --threads 1 --quiet > "$W/k2.out" 2>&1 || { cat "$W/k2.out"; fail "resume with 4 ranks after the kill"; }
final_same "$W/k1" "$W/k"
diff <(metrics_core "$W/k1/metrics.jsonl") <(metrics_core "$W/k/metrics.jsonl") > /dev/null || fail "metrics after kill + resume differ"
echo "[$(since)] ok   resumed with 4 ranks: final checkpoint and metrics identical to an uninterrupted run"

# ---- 5. a hung rank: the watchdog ends the job -----------------------------------------------
mkcfg "$W/h.json" "$W/h" 400 2 4 100
rm -f "$W"/pid.*
NEOX_DIST_TIMEOUT=2 $MPIRUN -np 2 -x NEOX_DIST_TIMEOUT \
  bash -c 'echo $$ > "$0/pid.$OMPI_COMM_WORLD_RANK"; exec "$1" train "$2" --threads 1 --quiet' \
  "$W" "$NEOX" "$W/h.json" > "$W/h.out" 2>&1 &
job=$!
while kill -0 $job 2>/dev/null; do
  [ -s "$W/pid.1" ] && [ "$(cat "$W/h/metrics.jsonl" 2>/dev/null | wc -l)" -ge 5 ] && break
  sleep 0.005
done
kill -STOP "$(cat "$W/pid.1")"
t0=$(date +%s.%N)
for _ in $(seq 1 300); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
if kill -0 $job 2>/dev/null; then
  kill -9 "$(cat "$W/pid.0")" "$(cat "$W/pid.1")" $job 2>/dev/null; fail "a stopped rank hung the job for 30 s"
fi
wait $job; rc=$?
dt=$(echo "$(date +%s.%N) - $t0" | bc)
kill -9 "$(cat "$W/pid.1")" 2>/dev/null   # in case the launcher left the stopped rank behind
[ $rc != 0 ] || fail "the job exited 0 with a hung rank"
grep -q "waited more than 2 s" "$W/h.out" || fail "no watchdog message: $(tail -5 "$W/h.out")"
echo "[$(since)] ok   rank 1 stopped: the watchdog ended the job (status $rc) after ${dt}s"

# ---- 6. a global batch that does not split ---------------------------------------------------
mkcfg "$W/e.json" "$W/e" 12 2 4
$MPIRUN -np 3 "$NEOX" train "$W/e.json" --quiet > "$W/e.out" 2>&1 && fail "4 micro batches over 3 ranks was accepted"
grep -q "not a multiple of the 3 processes" "$W/e.out" || fail "unclear error: $(cat "$W/e.out")"
[ ! -e "$W/e/latest" ] || fail "a refused run wrote a checkpoint"
echo "[$(since)] ok   4 micro batches over 3 ranks: refused"

# ---- 7. ZeRO stage 1 ---------------------------------------------------------------------------
zcfg() { sed -i 's|"seed": 1234,|"seed": 1234, "zero_optimization": {"stage": 1, "overlap_comm": true, "reduce_bucket_size": 500000000},|' "$1"; }
mkcfg "$W/z1.json" "$W/z1" 12 2 4; zcfg "$W/z1.json"
"$NEOX" train "$W/z1.json" --threads 1 --quiet > "$W/z1.out" 2>&1 || { cat "$W/z1.out"; fail "single-process ZeRO run"; }
same_run "$W/p1" "$W/z1"
for n in 2 4; do
  mkcfg "$W/z$n.json" "$W/z$n" 12 2 4; zcfg "$W/z$n.json"
  $MPIRUN -np $n "$NEOX" train "$W/z$n.json" --threads 1 --quiet > "$W/z$n.out" 2>&1 || { cat "$W/z$n.out"; fail "ZeRO -np $n"; }
  same_run "$W/p1" "$W/z$n"
done
mkcfg "$W/zo.json" "$W/zo" 12 2 4
$MPIRUN -np 2 "$NEOX" train "$W/zo.json" --zero-stage 1 --no-overlap --threads 1 --quiet > "$W/zo.out" 2>&1 || { cat "$W/zo.out"; fail "ZeRO -np 2 --no-overlap"; }
same_run "$W/p1" "$W/zo"
mkcfg "$W/po.json" "$W/po" 12 2 4
$MPIRUN -np 4 "$NEOX" train "$W/po.json" --overlap --threads 1 --quiet > "$W/po.out" 2>&1 || { cat "$W/po.out"; fail "-np 4 --overlap"; }
same_run "$W/p1" "$W/po"
mkcfg "$W/zq3.json" "$W/zq3" 6 2 6
$MPIRUN -np 3 "$NEOX" train "$W/zq3.json" --zero-stage 1 --overlap --threads 1 --quiet > "$W/zq3.out" 2>&1 || { cat "$W/zq3.out"; fail "ZeRO -np 3 (6 micro)"; }
same_run "$W/q1" "$W/zq3"
echo "[$(since)] ok   ZeRO-1 over 1, 2, 3, 4 ranks, overlap on and off (and plain -np 4 with overlap): byte-identical"
# gradient_clipping 0.3: the clip is active at every step, so the norm from the ranks'
# partial sums must be the single-process norm to the bit.
clipcfg() { mkcfg "$1" "$2" 12 2 4; sed -i 's|"gradient_clipping": 1.0|"gradient_clipping": 0.3|' "$1"; }
clipcfg "$W/c1.json" "$W/c1"
"$NEOX" train "$W/c1.json" --threads 1 --quiet > "$W/c1.out" 2>&1 || { cat "$W/c1.out"; fail "single-process run (clip 0.3)"; }
for n in 2 4; do
  clipcfg "$W/cz$n.json" "$W/cz$n"
  $MPIRUN -np $n "$NEOX" train "$W/cz$n.json" --zero-stage 1 --overlap --threads 1 --quiet > "$W/cz$n.out" 2>&1 || { cat "$W/cz$n.out"; fail "ZeRO -np $n (clip 0.3)"; }
  same_run "$W/c1" "$W/cz$n"
done
echo "[$(since)] ok   ZeRO-1 with the gradient clip active at every step, -np 2, 4: byte-identical"
for n in 2 4; do
  mkidx "$W/zi$n.json" "$W/zi$n"
  $MPIRUN -np $n "$NEOX" train "$W/zi$n.json" --zero-stage 1 --overlap --threads 1 --quiet > "$W/zi$n.out" 2>&1 || { cat "$W/zi$n.out"; fail "ZeRO -np $n (indexed)"; }
  same_run "$W/i1" "$W/zi$n"
done
echo "[$(since)] ok   ZeRO-1 with indexed data (3.3M parameters sharded), -np 2, 4: byte-identical"
mkcfg "$W/zr4.json" "$W/zr4" 12 2 4; cut_at6 "$W/p1" "$W/zr4"
$MPIRUN -np 4 "$NEOX" train "$W/zr4.json" --resume --zero-stage 1 --threads 1 --quiet > "$W/zr4.out" 2>&1 || { cat "$W/zr4.out"; fail "4 ZeRO ranks resuming a 1-process checkpoint"; }
same_run "$W/p1" "$W/zr4"
mkidx "$W/zr1.json" "$W/zr1" 3; mkidx "$W/zr0.json" "$W/zr0" 3
"$NEOX" train "$W/zr0.json" --threads 1 --quiet > "$W/zr0.out" 2>&1 || { cat "$W/zr0.out"; fail "indexed reference run"; }
$MPIRUN -np 2 "$NEOX" train "$W/zr1.json" --zero-stage 1 --threads 1 --quiet > "$W/zr1.out" 2>&1 || { cat "$W/zr1.out"; fail "ZeRO -np 2 (indexed, to step 6)"; }
rm -r "$W/zr1/step6"; echo step3 > "$W/zr1/latest"
"$NEOX" train "$W/zr1.json" --resume --threads 1 --quiet > "$W/zr1b.out" 2>&1 || { cat "$W/zr1b.out"; fail "1 process resuming a 2-rank ZeRO checkpoint"; }
same_run "$W/zr0" "$W/zr1"
rm -r "$W/zr1/step6"; echo step3 > "$W/zr1/latest"
$MPIRUN -np 4 "$NEOX" train "$W/zr1.json" --resume --zero-stage 1 --threads 1 --quiet > "$W/zr1c.out" 2>&1 || { cat "$W/zr1c.out"; fail "4 ZeRO ranks resuming a 2-rank ZeRO checkpoint"; }
same_run "$W/zr0" "$W/zr1"
echo "[$(since)] ok   resume across N and ZeRO on/off (1 -> 4 ZeRO; 2 ZeRO -> 1 plain and -> 4 ZeRO): identical"
mkcfg "$W/z3.json" "$W/z3" 12 2 4; sed -i 's|"seed": 1234,|"seed": 1234, "zero_optimization": {"stage": 3},|' "$W/z3.json"
"$NEOX" train "$W/z3.json" --quiet > "$W/z3.out" 2>&1 && fail "ZeRO stage 3 was accepted"
grep -q "zero_optimization.stage 3: only stages 0 and 1" "$W/z3.out" || fail "unclear error: $(cat "$W/z3.out")"
[ "$(wc -l < "$W/z3.out")" -le 2 ] || fail "long error output: $(cat "$W/z3.out")"
echo "[$(since)] ok   ZeRO stage 3: refused with a one-line error"
rm -rf "$W"
