#!/usr/bin/env python3
"""test_openai_client.py PORT REFERENCE_JSON - the official `openai` Python client against a
running `neox serve` on the tiny fixture model: models, completions (text, ids, batch, n, echo
+ logprobs checked against Hugging Face values), chat, streaming of both, errors surfacing as
the client's exception types, and the API key. Exit 0 on success."""
import json
import math
import sys

import openai

port, ref_path = int(sys.argv[1]), sys.argv[2]
KEY = sys.argv[3] if len(sys.argv) > 3 else "sk-test"
ref = json.load(open(ref_path))
client = openai.OpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=60)
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


# models
models = client.models.list()
check([m.id for m in models.data] == ["tiny"], f"models: {models}")

# greedy completions equal HF's, text and token-id prompts
for p in ref["prompts"]:
    r = client.completions.create(model="tiny", prompt=p["text"], max_tokens=16, temperature=0,
                                  extra_body={"ignore_eos": True})
    check(r.choices[0].text == p["greedy16_text"], f"greedy {p['text']!r}: {r.choices[0].text!r}")
    check(r.usage.completion_tokens == 16 and r.usage.prompt_tokens == len(p["ids"]), f"usage {r.usage}")
    r2 = client.completions.create(model="tiny", prompt=p["ids"], max_tokens=16, temperature=0,
                                   extra_body={"ignore_eos": True})
    check(r2.choices[0].text == p["greedy16_text"], "greedy from ids")

# echo + logprobs: the prompt's log-probabilities (first null), as lm-eval reads them
p = ref["prompts"][1]
r = client.completions.create(model="tiny", prompt=[p["ids"]], max_tokens=1, temperature=0, logprobs=1, echo=True,
                              seed=1234)
lp = r.choices[0].logprobs
check(lp.token_logprobs[0] is None, "first logprob is null")
check(len(lp.token_logprobs) == len(p["ids"]) + 1, "one logprob per prompt token + 1")
for k in range(1, len(p["ids"])):
    check(abs(lp.token_logprobs[k] - p["token_logprobs"][k]) < 1e-4, f"logprob {k}")
    check(abs(max(lp.top_logprobs[k].values()) - p["top1"][k][1]) < 1e-4, f"top logprob {k}")
check(lp.token_logprobs[-1] == max(lp.top_logprobs[-1].values()), "greedy token is its own top")
check("".join(lp.tokens[:-1]) == p["text"], f"echoed tokens {lp.tokens}")
check(r.choices[0].text.startswith(p["text"]), "echo text")

# batches, n, seed
r = client.completions.create(model="tiny", prompt=["a b", "c d e"], max_tokens=4, n=2, temperature=1.0, seed=3,
                              extra_body={"ignore_eos": True})
check(sorted(c.index for c in r.choices) == [0, 1, 2, 3], "choice indexes")
r2 = client.completions.create(model="tiny", prompt=["a b", "c d e"], max_tokens=4, n=2, temperature=1.0, seed=3,
                               extra_body={"ignore_eos": True})
check([c.text for c in r.choices] == [c.text for c in r2.choices], "same seed, same samples")

# streaming completions
p = ref["prompts"][0]
parts, finish = [], None
for ch in client.completions.create(model="tiny", prompt=p["text"], max_tokens=16, temperature=0, stream=True,
                                    extra_body={"ignore_eos": True}):
    for c in ch.choices:
        parts.append(c.text)
        finish = c.finish_reason or finish
check("".join(parts) == p["greedy16_text"], f"streamed {''.join(parts)!r}")
check(finish == "length", f"finish {finish}")
check(len(parts) >= 3, "streamed in pieces")

# stop
full = p["greedy16_text"]
r = client.completions.create(model="tiny", prompt=p["text"], max_tokens=16, temperature=0, stop=[" what"])
check(r.choices[0].text == full[: full.index(" what")] and r.choices[0].finish_reason == "stop", "stop string")

# chat, plain / streamed / logprobs
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
c = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0)
check(c.choices[0].message.role == "assistant", "chat role")
text = c.choices[0].message.content
streamed, usage = [], None
for ch in client.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0, stream=True,
                                         stream_options={"include_usage": True}):
    if ch.usage:
        usage = ch.usage
    for x in ch.choices:
        if x.delta.content:
            streamed.append(x.delta.content)
check("".join(streamed) == text, f"chat stream {''.join(streamed)!r} vs {text!r}")
check(usage is not None and usage.completion_tokens == c.usage.completion_tokens, f"stream usage {usage}")
c = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=4, temperature=0, logprobs=True,
                                  top_logprobs=2)
content = c.choices[0].logprobs.content
check(len(content) >= 1 and len(content[0].top_logprobs) == 2, "chat logprobs")
check(all(math.isfinite(t.logprob) and t.logprob <= 0 for t in content), "chat logprob values")

# errors arrive as the client's typed exceptions
try:
    client.completions.create(model="tiny", prompt="x", max_tokens=100000)
    check(False, "context overflow accepted")
except openai.BadRequestError as e:
    check(e.status_code == 400 and "context" in str(e), f"context error {e}")
try:
    client.completions.create(model="tiny", prompt="x", extra_body={"temperature": "hot"})
    check(False, "bad type accepted")
except openai.BadRequestError as e:
    check(e.body.get("param") == "temperature", f"param {e.body}")
bad = openai.OpenAI(api_key="wrong", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
try:
    bad.models.list()
    check(False, "wrong key accepted")
except openai.AuthenticationError as e:
    check(e.status_code == 401, "401")

if failures:
    print(f"{len(failures)} failures", file=sys.stderr)
    sys.exit(1)
print("openai client: ok")
