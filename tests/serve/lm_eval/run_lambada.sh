#!/bin/bash
# run_lambada.sh NEOX MODEL_DIR [LIMIT] - LAMBADA (lambada_openai's task definition, first LIMIT
# documents of the shared assets' test split; default 200) scored by lm-evaluation-harness twice:
# with model local-completions against `neox serve`, and with model hf (transformers) on the
# same directory. Prints both results as JSON lines; the numbers must agree within 1e-4.
# Not part of CTest (needs Python, lm-eval and minutes); a reproduction script for the report.
set -eu
NEOX=$1
MODEL=$(realpath "$2")
LIMIT=${3:-200}
# the context both sides truncate to (lm-eval keeps the last MAXLEN-1 tokens): the model's own
MAXLEN=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[\"max_position_embeddings\"])" "$MODEL/config.json")
HERE=$(cd "$(dirname "$0")" && pwd)
ASSETS=${NEOX_ASSETS:-$HERE/../../../../shared/assets}
TMP=$(mktemp -d)
head -n "$LIMIT" "$ASSETS/eval/lambada/lambada_test.jsonl" > "$TMP/lambada.jsonl"
sed "s|LAMBADA_JSONL|$TMP/lambada.jsonl|" "$HERE/lambada_local.yaml" > "$TMP/lambada_local.yaml"
: > "$TMP/log"
"$NEOX" serve -m "$MODEL" --port 0 --parallel 4 2>"$TMP/log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 200); do
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/log")
  [ -n "$PORT" ] && break
  sleep 0.1
done
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m lm_eval --model local-completions --tasks lambada_local --include_path "$TMP" \
  --model_args "model=$(basename "$MODEL"),base_url=http://127.0.0.1:$PORT/v1/completions,num_concurrent=4,max_length=$MAXLEN,tokenized_requests=True" \
  --output_path "$TMP/out_server" >"$TMP/lm_server.log" 2>&1 || { tail -30 "$TMP/lm_server.log"; exit 1; }
python3 -m lm_eval --model hf --tasks lambada_local --include_path "$TMP" \
  --model_args "pretrained=$MODEL,dtype=float32,max_length=$MAXLEN" --device cpu --batch_size 8 \
  --output_path "$TMP/out_hf" >"$TMP/lm_hf.log" 2>&1 || { tail -30 "$TMP/lm_hf.log"; exit 1; }
python3 - "$TMP" <<'PY'
import glob, json, sys
tmp = sys.argv[1]
res = {}
for name in ("server", "hf"):
    f = sorted(glob.glob(f"{tmp}/out_{name}/**/results_*.json", recursive=True))[-1]
    r = json.load(open(f))["results"]["lambada_local"]
    res[name] = {"ppl": r["perplexity,none"], "acc": r["acc,none"]}
    print(json.dumps({"model": "local-completions (neox serve)" if name == "server" else "hf (transformers)", **res[name]}))
d_ppl = abs(res["server"]["ppl"] - res["hf"]["ppl"]) / res["hf"]["ppl"]
d_acc = abs(res["server"]["acc"] - res["hf"]["acc"])
print(json.dumps({"rel_diff_ppl": d_ppl, "abs_diff_acc": d_acc}))
sys.exit(0 if d_ppl < 1e-4 and d_acc < 1e-4 else 1)
PY
