#!/usr/bin/env bash
# vs_llama_cpp.sh LLAMA_BENCH GGUF NEOX MODEL_DIR DTYPE [ROUNDS=5] [THREADS=2] [P=512] [N=128]
# Same-machine comparison with llama.cpp on the same weights: MODEL_DIR is a Hugging Face model
# directory (e.g. tools/fixtures/make_random_model.py), GGUF the same weights converted by
# llama.cpp's convert_hf_to_gguf.py (and llama-quantize), DTYPE neox's run type for them (f32,
# bf16, f16, q8, q4). Runs `llama-bench -p P -n N -r 1` and `neox bench --dtype DTYPE -p P -n N
# -r 1` alternately (which goes first alternates too), ROUNDS times, and prints one JSON line:
# each program's median prompt (pp) and generation (tg, from an empty cache in both) tokens/s
# and the medians and quartiles of the per-round ratios neox / llama.cpp.
set -eu
LB=$1; GGUF=$2; NX=$3; DIR=$4; D=$5; R=${6:-5}; T=${7:-2}; P=${8:-512}; N=${9:-128}
lc() {
  local o; o=$("$LB" -m "$GGUF" -p "$P" -n "$N" -t "$T" -r 1 -o jsonl 2>/dev/null)
  echo "$(echo "$o" | grep "\"n_prompt\": $P," | sed 's/.*"avg_ts": \([0-9.e+]*\).*/\1/') $(echo "$o" | grep "\"n_gen\": $N," | sed 's/.*"avg_ts": \([0-9.e+]*\).*/\1/')"
}
nx() {
  local o; o=$("$NX" bench -m "$DIR" --dtype "$D" -p "$P" -n "$N" -t "$T" -r 1)
  echo "$(echo "$o" | sed 's/.*"prompt_tok_s": \([0-9.]*\).*/\1/') $(echo "$o" | sed 's/.*"gen_tok_s": \([0-9.]*\).*/\1/')"
}
out=$(for ((i = 0; i < R; i++)); do
  if ((i % 2 == 0)); then a=$(lc); b=$(nx); else b=$(nx); a=$(lc); fi
  echo "$a $b"
done)
echo "$out" | awk -v m="$DIR" -v d="$D" -v t="$T" '
function med(a, n,   i, j, x) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { x = a[i]; a[i] = a[j]; a[j] = x }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function q(a, n, f) { return a[int(f * (n - 1)) + 1] }
{ n++; lp[n] = $1; lt[n] = $2; xp[n] = $3; xt[n] = $4; rp[n] = $3 / $1; rt[n] = $4 / $2 }
END { a = med(lp, n); b = med(lt, n); c = med(xp, n); e = med(xt, n); f = med(rp, n); g = med(rt, n)
  printf "{\"model\": \"%s\", \"dtype\": \"%s\", \"threads\": %s, \"rounds\": %d, \"llama_cpp_pp\": %.2f, \"neox_pp\": %.2f, \"pp_ratio\": %.3f, \"pp_ratio_q1_q3\": [%.3f, %.3f], \"llama_cpp_tg\": %.2f, \"neox_tg\": %.2f, \"tg_ratio\": %.3f, \"tg_ratio_q1_q3\": [%.3f, %.3f]}\n",
    m, d, t, n, a, c, f, q(rp, n, 0.25), q(rp, n, 0.75), b, e, g, q(rt, n, 0.25), q(rt, n, 0.75) }'
