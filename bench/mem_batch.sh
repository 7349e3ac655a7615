#!/usr/bin/env bash
# mem_batch.sh NEOX MODEL DATA [SAMPLES=64] [THREADS=2] [BATCH=16] [ROUNDS=3] [EXTRA neox eval options...]
# Memorization throughput, batched vs unbatched, in the same run: each round runs
# `neox eval memorization` on the first SAMPLES sequences of DATA with --batch 1 (one sequence
# decoded at a time per thread) and then with --batch BATCH, and prints both JSON results. The
# summary line has the median sequences/s of each, their ratio (medians of the per-round
# ratios, so load changes between rounds cancel out) and the load average. The two runs must
# also give the same scores (checked here, byte for byte, on the --scores files).
set -eu
NEOX=$1; MODEL=$2; DATA=$3; S=${4:-64}; T=${5:-2}; B=${6:-16}; R=${7:-3}
shift $(($# < 7 ? $# : 7))
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
u=(); b=(); q=()
sps() { sed 's/.*"sequences_per_s":\([0-9.e+-]*\).*/\1/'; }
for ((i = 0; i < R; i++)); do
  j1=$("$NEOX" eval memorization -m "$MODEL" --data "$DATA" --samples "$S" -t "$T" --batch 1 -q --scores "$TMP/s1.csv" "$@")
  jb=$("$NEOX" eval memorization -m "$MODEL" --data "$DATA" --samples "$S" -t "$T" --batch "$B" -q --scores "$TMP/sb.csv" "$@")
  cmp -s "$TMP/s1.csv" "$TMP/sb.csv" || { echo "mem_batch: scores differ between --batch 1 and --batch $B" >&2; exit 1; }
  echo "$j1"; echo "$jb"
  x=$(echo "$j1" | sps); y=$(echo "$jb" | sps)
  u+=("$x"); b+=("$y"); q+=($(awk -v x="$x" -v y="$y" 'BEGIN{print y/x}'))
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "{\"summary\": \"memorization\", \"samples\": $S, \"threads\": $T, \"batch\": $B, \"rounds\": $R," \
  "\"unbatched_seq_s_median\": $(med "${u[@]}"), \"batched_seq_s_median\": $(med "${b[@]}")," \
  "\"speedup_median\": $(med "${q[@]}"), \"scores_equal\": true, \"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
