#!/bin/bash
# cli_serve_openai.sh NEOX SOURCE_DIR BUILD_DIR - the official `openai` Python client against
# `neox serve` (tests/serve/test_openai_client.py). Under CI=true a missing `openai` package is
# installed from tests/serve/requirements.txt (and a failed install fails the test); elsewhere
# the test reports itself skipped (exit 77, CTest SKIP_RETURN_CODE) rather than passing.
set -u
NEOX=$1
SRC=$2
if ! python3 -c 'import openai' 2>/dev/null; then
  if [ "${CI:-}" = true ]; then
    python3 -m pip install -q -r "$SRC/tests/serve/requirements.txt" || { echo "FAIL: pip install openai" >&2; exit 1; }
  else
    echo "SKIPPED: python3 cannot import openai (pip install -r tests/serve/requirements.txt)"
    exit 77
  fi
fi
LOG=$(mktemp)
"$NEOX" serve -m "$SRC/tests/fixtures/serve/tiny" --port 0 -t 1 --parallel 2 --api-key sk-test 2>"$LOG" &
PID=$!
PORT=
for _ in $(seq 100); do
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$LOG")
  [ -n "$PORT" ] && break
  sleep 0.05
done
[ -n "$PORT" ] || { echo "FAIL: server did not start: $(cat "$LOG")" >&2; kill $PID 2>/dev/null; exit 1; }
python3 "$SRC/tests/serve/test_openai_client.py" "$PORT" "$SRC/tests/fixtures/serve/reference.json" sk-test
rc=$?
kill -TERM $PID
wait $PID || rc=1
rm -f "$LOG"
exit $rc
