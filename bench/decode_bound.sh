#!/usr/bin/env bash
# decode_bound.sh BUILD_DIR SHAPE|MODEL_DIR [THREADS=2] [ROUNDS=3] [PROMPT=512] [GEN=128] [DTYPE] [KV] [DEPTH=0]
# Interleaves the read-bandwidth probe (bench_bandwidth) with `neox bench` on a random model of
# a released shape (or a model directory), ROUNDS times, so each tokens/s figure has a bound
# measured seconds apart on the same (possibly shared, noisy) machine. DTYPE (f32, bf16, f16,
# q8, q4) is the run type; default: f32 for a shape, as stored for a directory. KV (f32, f16,
# bf16, q8) is the KV cache type; default: neox's (f32 for fp32 weights, else bf16). DEPTH is
# the tokens in the cache when generation is timed (neox bench -d; 0, llama-bench's tg, or e.g.
# 512 for generation after a 512-token prompt). Prints one JSON
# line per round and a summary line with medians: prompt tok/s, generation tok/s, bandwidth,
# bound = bandwidth / decode_read_mb (the weights only, the usual definition), generation as
# a fraction of the bound, and the same with the KV cache a token reads at the mean context
# (bound_kv = bandwidth / (decode_read_mb + kv_read_mb)).
set -eu
B=$1; SHAPE=$2; T=${3:-2}; R=${4:-3}; P=${5:-512}; N=${6:-128}; D=${7:-}; KV=${8:-}; DP=${9:-0}
if [ -d "$SHAPE" ]; then SRC=(-m "$SHAPE"); else SRC=(--random-shape "$SHAPE"); fi
if [ -n "$D" ]; then SRC+=(--dtype "$D"); fi
if [ -n "$KV" ]; then SRC+=(--kv-type "$KV"); fi
pp=(); tg=(); bw=(); mb=0; kvmb=0; kvt=
for ((i = 0; i < R; i++)); do
  j=$("$B/neox" bench "${SRC[@]}" -p "$P" -n "$N" -d "$DP" -t "$T" -r 1)
  w=$("$B/bench_bandwidth" "$T" 1024 5)
  echo "$j"
  echo "$w"
  pp+=($(echo "$j" | sed 's/.*"prompt_tok_s": \([0-9.]*\).*/\1/'))
  tg+=($(echo "$j" | sed 's/.*"gen_tok_s": \([0-9.]*\).*/\1/'))
  mb=$(echo "$j" | sed 's/.*"decode_read_mb": \([0-9.]*\).*/\1/')
  kvmb=$(echo "$j" | sed 's/.*"kv_read_mb": \([0-9.]*\).*/\1/')
  kvt=$(echo "$j" | sed 's/.*"kv_type": "\([a-z0-9]*\)".*/\1/')
  bw+=($(echo "$w" | sed 's/.*"read_gb_s_median": \([0-9.]*\).*/\1/'))
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mpp=$(med "${pp[@]}"); mtg=$(med "${tg[@]}"); mbw=$(med "${bw[@]}")
awk -v s="$SHAPE${D:+ $D} depth $DP" -v t="$T" -v r="$R" -v pp="$mpp" -v tg="$mtg" -v bw="$mbw" -v mb="$mb" -v kv="$kvmb" -v kt="$kvt" -v l="$(cut -d' ' -f1-3 /proc/loadavg)" \
  'BEGIN{b=bw*1000/mb; bk=bw*1000/(mb+kv); printf "{\"summary\": \"%s\", \"threads\": %s, \"rounds\": %s, \"prompt_tok_s_median\": %s, \"gen_tok_s_median\": %s, \"read_gb_s_median\": %s, \"decode_read_mb\": %s, \"bound_tok_s\": %.2f, \"fraction_of_bound\": %.2f, \"kv_type\": \"%s\", \"kv_read_mb\": %s, \"bound_kv_tok_s\": %.2f, \"fraction_of_bound_kv\": %.2f, \"loadavg\": \"%s\"}\n", s, t, r, pp, tg, bw, mb, b, tg/b, kt, kv, bk, tg/bk, l}'
