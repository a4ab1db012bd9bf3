"""The real `transformers serve` (transformers[serving] 4.57.6, torch on the CPU) as an upstream.

The server runs from the cached virtual environment tools/peer-env makes
(tests/peers/ts.txt); without it the tests skip, or fail under
LLMCGI_TESTS_REQUIRE_ALL / CI=true (tests/run-all makes it first). llmcgi
starts it as a managed child (`launch =`) on a temporary copy of the shipped
model, models/llmcgi-tiny, with a chat template added (transformers serve
refuses a chat request without one), serving it as `big`; no network is used.
Driven through real nginx with the official `openai` client and TGI's API.

What the real server does that llmcgi must handle: it answers
text/event-stream even to `"stream": false`, which --input_validation refuses
(llmcgi always asks for a stream and reads the events of a non-streamed
request into one JSON answer), has no /v1/completions (completions become chat), names
the model `DIR@main`, ends streams without [DONE], says finish_reason "stop"
also when max_tokens ended the generation and sends no usage, refuses
fields it does not use with 422 (--input_validation), and hangs on `stop`.
"""

import json
import shutil

import pytest

from servers import (SRCDIR, Llmcgi, Nginx, Stream, free_port, make_tmpdir, remove_tmpdir, request, require_module,
                     require_peer, wait_for)
from pathlib import Path

MODEL = SRCDIR / "models" / "llmcgi-tiny"
JSON = {"Content-Type": "application/json"}
PROMPT = "Once upon a time"
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def setup():
    py = require_peer("ts", "LLMCGI_TRANSFORMERS_PYTHON")
    cli = Path(py).parent / "transformers"
    d = make_tmpdir("tserve-")
    shutil.copytree(MODEL, d / "tiny")
    cfg = json.loads((d / "tiny" / "tokenizer_config.json").read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    (d / "tiny" / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "hf-home" / "hub").mkdir(parents=True)
    port = free_port()
    (d / "serve").write_text(f"#!/bin/sh\ncd {d} && HF_HUB_OFFLINE=1 HF_HOME={d}/hf-home exec {cli} serve "
                             f"--host 127.0.0.1 --port {port} --force_model {d}/tiny --device cpu --input_validation\n")
    (d / "serve").chmod(0o755)
    l = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""
[upstream ts]
type = transformers-serve
url = http://127.0.0.1:{port}
models = big
launch = {d}/serve
launch_stop_timeout = 10s
first_byte_timeout = 120s
health_interval = 1s
""").start()
    web = Nginx(l.sock).start()
    try:
        wait_for(lambda: request(web.port, "GET", "/health").status == 200, "transformers serve to be up (its /health)",
                 timeout=240, interval=0.5)
        yield {"web": web, "llmcgi": l, "direct": port}
    finally:
        web.stop()
        report = l.cleanup()
        remove_tmpdir(d)
        assert not report, report


@pytest.fixture
def client(setup):
    openai = require_module("openai", "openai")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{setup['web'].port}/v1", api_key="x", max_retries=0,
                         timeout=120)


def direct(setup, max_tokens=8, prompt=PROMPT):
    """What transformers serve itself answers to a greedy chat: its events, read here (without
    --input_validation it sends the same events to "stream": false)."""
    r = request(setup["direct"], "POST", "/v1/chat/completions", json.dumps({
        "model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
        "temperature": 0, "stream": True}), JSON, timeout=120)      # --input_validation takes only true
    assert r.status == 200 and r.header("content-type").startswith("text/event-stream"), (r.status, r.headers)
    chunks = [json.loads(line[5:]) for line in r.body.decode().splitlines() if line.startswith("data:")]
    assert chunks and chunks[0]["model"].endswith("@main"), chunks[:1]
    assert not any(c == "[DONE]" for c in r.body.decode().splitlines())
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text
    return text


def chat(client, **kw):
    return client.chat.completions.create(model="big", messages=[{"role": "user", "content": PROMPT}],
                                          max_tokens=8, temperature=0, **kw)


def test_chat_not_streamed_is_one_json_answer(setup, client):
    a = chat(client)
    assert a.object == "chat.completion" and a.model == "big"          # not "DIR@main"
    assert a.choices[0].message.role == "assistant"
    assert a.choices[0].message.content == direct(setup)
    assert a.choices[0].finish_reason == "stop"     # what it says, max_tokens or not


def test_chat_streamed_ends_with_done(setup, client):
    chunks = list(chat(client, stream=True))
    assert all(c.model == "big" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct(setup)
    s = Stream(setup["web"].port, "/v1/chat/completions", headers=JSON, method="POST", timeout=120, body=json.dumps({
        "model": "big", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4, "stream": True}))
    try:
        assert s.status == 200
        data = []
        while (ev := s.read_event()) is not None:
            data.append(ev[0]["data"])
    finally:
        s.close()
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1, data


def test_completions_become_chat(setup, client):
    a = client.completions.create(model="big", prompt=PROMPT, max_tokens=8, temperature=0)
    assert a.object == "text_completion" and a.choices[0].text == direct(setup)
    chunks = list(client.completions.create(model="big", prompt=PROMPT, max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == a.choices[0].text


def test_tgi_generate_and_generate_stream(setup):
    port, want = setup["web"].port, direct(setup)
    body = {"model": "big", "inputs": PROMPT, "parameters": {"max_new_tokens": 8, "details": True}}
    r = request(port, "POST", "/generate", json.dumps(body), JSON, timeout=120)
    assert r.status == 200, r.body
    assert r.json()["generated_text"] == want and r.json()["details"]["finish_reason"] == "eos_token", r.body
    s = Stream(port, "/generate_stream", headers=JSON, method="POST", body=json.dumps(body), timeout=120)
    try:
        assert s.status == 200
        events = []
        while (ev := s.read_event()) is not None:
            events.append(json.loads(ev[0]["data"]))
    finally:
        s.close()
    assert events[-1]["generated_text"] == want, events[-1]
    r = request(port, "POST", "/generate", json.dumps({"model_id": "big", "prompt": PROMPT, "max_new_tokens": 8}),
                JSON, timeout=120)
    assert r.status == 200 and r.json() == {"generated_text": want, "model_id": "big"}, r.body


def test_a_field_it_refuses_is_a_clear_error_in_the_clients_dialect(setup, client):
    openai = require_module("openai", "openai")
    with pytest.raises(openai.BadRequestError) as e:             # its 422 "Unused fields", as OpenAI's 400
        chat(client, presence_penalty=0.5)
    assert "presence_penalty" in str(e.value) and "upstream ts" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:             # refused by llmcgi: it would hang the server
        chat(client, stop=["x"])
    assert "`stop`" in str(e.value)
    r = request(setup["web"].port, "POST", "/generate", json.dumps({
        "model": "big", "inputs": PROMPT, "parameters": {"max_new_tokens": 4, "stop": ["x"]}}), JSON, timeout=120)
    assert r.status == 422 and "`stop`" in r.json()["error"] and "error_type" in r.json(), r.body
