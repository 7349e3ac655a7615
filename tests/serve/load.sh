#!/bin/bash
# load.sh NEOX MODEL_DIR [SECONDS] [CONNECTIONS] [PARALLEL] - bounded loopback load test of
# `neox serve`: wrk with CONNECTIONS keep-alive clients for SECONDS posting greedy completions
# (tests/serve/load_post.lua; override the body with $NEOX_LOAD_BODY). Prints wrk's summary
# (requests/s, latency percentiles, non-2xx = failed requests) and the server's RSS sampled
# every 5 s, so growth (a leak) is visible. Not part of CTest.
set -eu
NEOX=$1
MODEL=$2
SECS=${3:-60}
CONN=${4:-32}
PAR=${5:-8}
HERE=$(cd "$(dirname "$0")" && pwd)
LOG=$(mktemp)
"$NEOX" serve -m "$MODEL" --port 0 -t "${NEOX_LOAD_THREADS:-1}" --parallel "$PAR" 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -f "$LOG"' EXIT
PORT=
for _ in $(seq 300); do
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$LOG")
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "server did not start: $(cat "$LOG")"; exit 1; }
rss() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
echo "rss_kb_start $(rss)"
( for _ in $(seq $((SECS / 5))); do sleep 5; echo "rss_kb $(rss)"; done ) &
SAMPLER=$!
wrk -t2 -c"$CONN" -d"${SECS}s" --timeout 30s --latency -s "$HERE/load_post.lua" "http://127.0.0.1:$PORT/v1/completions"
wait $SAMPLER
echo "rss_kb_end $(rss)"
curl -s "http://127.0.0.1:$PORT/health"; echo
