#!/bin/bash
# cli_serve.sh NEOX SOURCE_DIR BUILD_DIR - `neox serve` as a user runs it, driven with curl + jq:
# greedy completions equal `neox generate`, streaming, chat, logprobs+echo, tokenize, errors,
# the API key, and a clean exit on SIGTERM/SIGINT.
set -u
NEOX=$1
SRC=$2
MODEL=$SRC/tests/fixtures/serve/tiny
TMP=$(mktemp -d)
PIDS=()
fail() { echo "FAIL: $*" >&2; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$TMP"; exit 1; }
command -v curl >/dev/null || fail "curl is missing (packages.d/serve.txt)"
command -v jq >/dev/null || fail "jq is missing (packages.d/serve.txt)"

# start_server LOG ARGS... : starts neox serve on a free port, sets PORT and PID
start_server() {
  local log=$1; shift
  "$NEOX" serve -m "$MODEL" --port 0 -t 1 "$@" 2>"$log" &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 100); do
    PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
    [ -n "$PORT" ] && return 0
    kill -0 "$PID" 2>/dev/null || fail "server exited: $(cat "$log")"
    sleep 0.05
  done
  fail "server did not start: $(cat "$log")"
}

start_server "$TMP/log1" --parallel 2
URL=http://127.0.0.1:$PORT
post() { curl -s -X POST -H 'Content-Type: application/json' "$@"; }

# greedy completion == neox generate (exact for a prompt whose continuation is valid UTF-8)
want=$("$NEOX" generate -m "$MODEL" -p "a" -n 8 -t 1 --ignore-eos 2>/dev/null)
[ -n "$want" ] || fail "neox generate printed nothing"
got=$(post "$URL/v1/completions" -d '{"prompt":"a","max_tokens":8,"temperature":0,"ignore_eos":true}' | jq -j '.choices[0].text')
[ "$got" = "$want" ] || fail "greedy text '$got' != neox generate '$want'"
# and for one with broken UTF-8: generate prints raw bytes, the API replaces them with U+FFFD;
# equal once both drop the invalid parts
want=$("$NEOX" generate -m "$MODEL" -p "The quick brown fox" -n 16 -t 1 --ignore-eos 2>/dev/null | iconv -c -f utf-8 -t utf-8)
got=$(post "$URL/v1/completions" -d '{"prompt":"The quick brown fox","max_tokens":16,"temperature":0,"ignore_eos":true}' \
      | jq -j '.choices[0].text' | sed 's/\xef\xbf\xbd//g')
[ "$got" = "$want" ] || fail "greedy text '$got' != neox generate '$want'"

# streaming: the deltas add up to the same text and the stream ends with [DONE]
post -N "$URL/v1/completions" -d '{"prompt":"The quick brown fox","max_tokens":16,"temperature":0,"ignore_eos":true,"stream":true}' > "$TMP/sse"
[ "$(tail -n 2 "$TMP/sse" | head -n 1)" = "data: [DONE]" ] || fail "stream does not end with [DONE]: $(tail -n 3 "$TMP/sse")"
streamed=$(grep '^data: {' "$TMP/sse" | sed 's/^data: //' | jq -j '.choices[0].text' | sed 's/\xef\xbf\xbd//g')
[ "$streamed" = "$want" ] || fail "streamed '$streamed' != '$want'"

# chat, plain and streamed
c1=$(post "$URL/v1/chat/completions" -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":10,"temperature":0}')
[ "$(echo "$c1" | jq -r '.object')" = chat.completion ] || fail "chat: $c1"
[ "$(echo "$c1" | jq -r '.choices[0].message.role')" = assistant ] || fail "chat role: $c1"
c2=$(post -N "$URL/v1/chat/completions" -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":10,"temperature":0,"stream":true}' \
     | grep '^data: {' | sed 's/^data: //' | jq -j '.choices[0].delta.content // ""')
[ "$c2" = "$(echo "$c1" | jq -j '.choices[0].message.content')" ] || fail "chat stream '$c2' vs $c1"

# logprobs + echo as lm-evaluation-harness asks for them
ids=$(post "$URL/tokenize" -d '{"prompt":"She looked at him and said","add_special_tokens":false}' | jq -c '.tokens')
[ "$ids" = "[52,259,397,367,350,392,290,339]" ] || fail "tokenize gave $ids"
lp=$(post "$URL/v1/completions" -d "{\"prompt\":[$ids],\"max_tokens\":1,\"temperature\":0,\"logprobs\":1,\"echo\":true,\"seed\":1234}")
[ "$(echo "$lp" | jq '.choices[0].logprobs.token_logprobs | length')" = 9 ] || fail "echo logprobs: $lp"
[ "$(echo "$lp" | jq '.choices[0].logprobs.token_logprobs[0]')" = null ] || fail "first logprob not null: $lp"
[ "$(echo "$lp" | jq '.choices[0].logprobs.top_logprobs[1] | length')" = 1 ] || fail "top_logprobs: $lp"
[ "$(post "$URL/detokenize" -d "{\"tokens\":$ids}" | jq -r .prompt)" = "She looked at him and said" ] || fail detokenize
[ "$(curl -s "$URL/tokenizer_info" | jq -r .eos_token)" = "<|endoftext|>" ] || fail tokenizer_info

# errors
code() { curl -s -o "$TMP/body" -w '%{http_code}' "$@"; }
[ "$(code -X POST "$URL/v1/completions" -d '{"prompt": ')" = 400 ] || fail "bad JSON not 400"
[ "$(jq -r '.error.type' "$TMP/body")" = invalid_request_error ] || fail "error body: $(cat "$TMP/body")"
[ "$(code -X POST "$URL/v1/completions" -d '{"prompt":"x","n":"2"}')" = 400 ] || fail "wrong type not 400"
[ "$(jq -r '.error.param' "$TMP/body")" = n ] || fail "param: $(cat "$TMP/body")"
[ "$(code "$URL/nope")" = 404 ] || fail "unknown route not 404"
[ "$(code "$URL/v1/chat/completions")" = 405 ] || fail "GET on a POST route not 405"
[ "$(code -X POST "$URL/v1/completions" -d '{"prompt":"x","max_tokens":1000}')" = 400 ] || fail "context not checked"
[ "$(jq -r '.error.code' "$TMP/body")" = context_length_exceeded ] || fail "context code: $(cat "$TMP/body")"

# clean shutdown on SIGTERM
kill -TERM "$PID"
wait "$PID"; rc=$?
[ $rc = 0 ] || fail "exit status $rc after SIGTERM: $(cat "$TMP/log1")"
grep -q "shutting down" "$TMP/log1" || fail "no shutdown message"

# API key, body limit; SIGINT
start_server "$TMP/log2" --api-key k3y --max-body 200
URL=http://127.0.0.1:$PORT
[ "$(code "$URL/v1/models")" = 401 ] || fail "no key not 401"
[ "$(code -H 'Authorization: Bearer nope' "$URL/v1/models")" = 401 ] || fail "wrong key not 401"
[ "$(code -H 'Authorization: Bearer k3y' "$URL/v1/models")" = 200 ] || fail "right key not 200"
[ "$(code "$URL/health")" = 200 ] || fail "health needs no key"
big=$(printf '{"prompt":"%0300d"}' 0)
[ "$(code -H 'Authorization: Bearer k3y' -X POST "$URL/v1/completions" -d "$big")" = 413 ] || fail "body limit not 413"
kill -INT "$PID"
wait "$PID"; rc=$?
[ $rc = 0 ] || fail "exit status $rc after SIGINT"

# --kv-type: the slots' sessions use it; greedy text equals neox generate with the same cache type
start_server "$TMP/log3" --kv-type bf16
URL=http://127.0.0.1:$PORT
want=$("$NEOX" generate -m "$MODEL" -p "The quick brown fox" -n 16 -t 1 --ignore-eos --kv-type bf16 2>/dev/null | iconv -c -f utf-8 -t utf-8)
got=$(post "$URL/v1/completions" -d '{"prompt":"The quick brown fox","max_tokens":16,"temperature":0,"ignore_eos":true}' \
      | jq -j '.choices[0].text' | sed 's/\xef\xbf\xbd//g')
[ -n "$want" ] && [ "$got" = "$want" ] || fail "--kv-type bf16: greedy text '$got' != neox generate --kv-type bf16 '$want'"
kill -TERM "$PID"
wait "$PID" || fail "exit status after SIGTERM (--kv-type bf16)"

# usage errors
"$NEOX" serve 2>/dev/null; [ $? = 2 ] || fail "missing -m not a usage error"
"$NEOX" serve -m "$MODEL" --port 99999 2>/dev/null; [ $? = 2 ] || fail "bad port not a usage error"
"$NEOX" serve -m "$SRC/tests/fixtures/serve/none" --port 0 2>"$TMP/err"; [ $? = 1 ] || fail "missing model not exit 1"
[ "$(wc -l < "$TMP/err")" = 1 ] || fail "error is not one line: $(cat "$TMP/err")"
rm -rf "$TMP"
echo "cli_serve: ok"
