-- wrk script: POST a short greedy completion; counts non-200 answers as failures.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("NEOX_LOAD_BODY") or
  '{"prompt": "The quick brown fox", "max_tokens": 16, "temperature": 0, "ignore_eos": true}'
