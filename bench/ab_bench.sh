#!/usr/bin/env bash
# ab_bench.sh NEOX_A NEOX_B ROUNDS [neox bench arguments...]
# Compares two builds of neox on a shared, noisy machine: runs `neox bench ARGS -r 1` with A and
# B alternately (A first in odd rounds, B first in even ones), ROUNDS times, and prints the
# median of each build's prompt and generation tokens/s and the median (and quartiles) of the
# per-round ratios B/A. Slow drifts of the machine hit both halves of a round alike, so the
# paired ratio is far steadier than two separate medians.
# Example: bench/ab_bench.sh /tmp/old/build/neox build/neox 11 --random-shape pythia-160m --dtype q4 -p 64 -n 128 -t 2
set -eu
A=$1; B=$2; R=$3; shift 3
get() { sed "s/.*\"$1\": \([0-9.]*\).*/\1/"; }
out=$(for ((i = 0; i < R; i++)); do
  if ((i % 2 == 0)); then ja=$("$A" bench "$@" -r 1); jb=$("$B" bench "$@" -r 1)
  else jb=$("$B" bench "$@" -r 1); ja=$("$A" bench "$@" -r 1); fi
  echo "$(echo "$ja" | get prompt_tok_s) $(echo "$jb" | get prompt_tok_s) $(echo "$ja" | get gen_tok_s) $(echo "$jb" | get gen_tok_s)"
done)
echo "$out" | awk -v args="$*" '
function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function q(a, n, f) { return a[int(f * (n - 1)) + 1] }
{ n++; pa[n] = $1; pb[n] = $2; ga[n] = $3; gb[n] = $4; pr[n] = $2 / $1; gr[n] = ($3 > 0 ? $4 / $3 : 0) }
END { mpa = med(pa, n); mpb = med(pb, n); mga = med(ga, n); mgb = med(gb, n); mpr = med(pr, n); mgr = med(gr, n)
  printf "{\"args\": \"%s\", \"rounds\": %d, \"prompt_tok_s_a\": %.2f, \"prompt_tok_s_b\": %.2f, \"prompt_ratio_b_a\": %.3f, \"prompt_ratio_q1_q3\": [%.3f, %.3f], \"gen_tok_s_a\": %.2f, \"gen_tok_s_b\": %.2f, \"gen_ratio_b_a\": %.3f, \"gen_ratio_q1_q3\": [%.3f, %.3f]}\n",
    args, n, mpa, mpb, mpr, q(pr, n, 0.25), q(pr, n, 0.75), mga, mgb, mgr, q(gr, n, 0.25), q(gr, n, 0.75) }'
