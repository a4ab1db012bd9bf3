"""POST /v1/responses (OpenAI's Responses API) through real nginx with the official openai client: on a local
GPT-2 model, and proxied to upstreams that have the API (passed through) or not (TGI: translated to chat).

Local: a response is the chat completion its input means (instructions as the system message, input as the
messages, max_output_tokens, temperature, top_p, text.format as response_format), so every text is checked
against what /v1/chat/completions answers for the same messages (greedy, so deterministic), not only its
shape: output_text, usage, status "incomplete" with incomplete_details when the length limit ends it, and the
stream's typed events in order (response.created ... response.output_text.delta ... response.completed), named
on their `event:` lines, numbered from 0, with no [DONE]. Stateful and non-text requests
(previous_response_id, tools) get a clear 400.

Proxied: through llmcgi equals straight to the upstream, streamed and not. The upstream is the openai-type
stand-in (tests/integration/standin.py) and, where a Python with torch and transformers[serving] is there
($LLMCGI_TRANSFORMERS_PYTHON, see test_transformers_serve.py), the real `transformers serve` started by
llmcgi; each test runs against every upstream found. A TGI stand-in (no Responses API) gets the chat
request the response means, and its answer comes back as a response.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from servers import (BUILDDIR, SRCDIR, WEB_SERVERS, Llmcgi, Stream, free_port, make_tmpdir, remove_tmpdir,
                     request, require_module, require_peer, wait_for)
from standin import Standin

HERE = Path(__file__).resolve().parent
http_request = request              # the fixture `upstream` takes pytest's own `request`
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"

GEN = BUILDDIR / "tools" / "gen-gpt2"
JSON = {"Content-Type": "application/json"}
TIMEOUT = 120
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
          "additionalProperties": False}


@pytest.fixture(scope="module")
def site():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-responses-")
    subprocess.run([str(GEN), "--out", str(d / "gen"), "--layers", "2", "--heads", "2", "--embd", "64",
                    "--positions", "256", "--seed", "7", "--tokenizer", str(TOKENIZER)],
                   check=True, capture_output=True, timeout=120)
    oai, tgi = Standin("openai", model_ids=["far"]).start(), Standin("tgi", model_ids=["tgi-model"]).start()
    llmcgi = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""\
[model gen]
path = {d}/gen
device = cpu

[upstream oai]
type = openai
url = {oai.url}
models = far

[upstream tgi]
type = tgi
url = {tgi.url}
models = tgi-model
""")
    web = None
    try:
        llmcgi.start()
        web = WEB_SERVERS["nginx"](llmcgi.sock).start()
        yield {"port": web.port, "oai": oai, "tgi": tgi}
    finally:
        if web:
            web.stop()
        report = llmcgi.cleanup()
        oai.stop()
        tgi.stop()
        remove_tmpdir(d)
        assert not report, f"sanitizer report from llmcgi:\n{report}"


def client(port):
    openai = require_module("openai", "openai")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=TIMEOUT)


def post(port, path, body):
    return request(port, "POST", path, json.dumps(body), JSON, timeout=TIMEOUT)


def chat_of(port, messages, max_tokens, **kw):
    r = post(port, "/v1/chat/completions", dict({"model": "gen", "messages": messages, "max_tokens": max_tokens,
                                                 "temperature": 0}, **kw))
    assert r.status == 200, r.body
    return r.json()


def raw_stream(port, body):
    """(event name, data) of every SSE event of a streamed POST /v1/responses."""
    s = Stream(port, "/v1/responses", headers=JSON, method="POST", body=json.dumps(dict(body, stream=True)),
               timeout=TIMEOUT)
    try:
        assert s.status == 200
        out = []
        while (ev := s.read_event()) is not None:
            out.append((ev[0].get("event"), ev[0]["data"]))
        return out
    finally:
        s.close()


# ---------------------------------------------------------------------------- local

def test_local_response_is_the_chat_it_means(site):
    res = client(site["port"]).responses.create(model="gen", input="The quick brown fox", max_output_tokens=8,
                                                temperature=0)
    chat = chat_of(site["port"], [{"role": "user", "content": "The quick brown fox"}], 8)
    assert res.object == "response" and res.id.startswith("resp_") and res.model == "gen"
    assert res.output_text == chat["choices"][0]["message"]["content"]
    assert res.output[0].type == "message" and res.output[0].role == "assistant"
    assert res.usage.input_tokens == chat["usage"]["prompt_tokens"]
    assert res.usage.output_tokens == chat["usage"]["completion_tokens"]
    assert res.usage.total_tokens == res.usage.input_tokens + res.usage.output_tokens
    assert res.store is False and res.max_output_tokens == 8
    if chat["choices"][0]["finish_reason"] == "length":
        assert res.status == "incomplete" and res.incomplete_details.reason == "max_output_tokens"
    else:
        assert res.status == "completed" and res.incomplete_details is None


def test_length_limit_makes_it_incomplete(site):
    res = client(site["port"]).responses.create(model="gen", input="Count: one two three", max_output_tokens=1,
                                                temperature=0)
    assert res.usage.output_tokens == 1
    assert res.status == "incomplete" and res.incomplete_details.reason == "max_output_tokens"


def test_instructions_and_messages(site):
    items = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": [{"type": "input_text", "text": "Tell me"},
                                          {"type": "input_text", "text": "a story"}]}]
    res = client(site["port"]).responses.create(model="gen", instructions="Be brief.", input=items,
                                                max_output_tokens=6, temperature=0)
    chat = chat_of(site["port"], [{"role": "system", "content": "Be brief."}, items[0], items[1],
                                  {"role": "user", "content": "Tell me\na story"}], 6)
    assert res.output_text == chat["choices"][0]["message"]["content"]
    assert res.instructions == "Be brief."
    assert res.usage.input_tokens == chat["usage"]["prompt_tokens"]


def test_text_format_is_the_chat_response_format(site):
    fmt = {"type": "json_schema", "name": "a", "schema": SCHEMA, "strict": True}
    res = client(site["port"]).responses.create(model="gen", input="JSON please", max_output_tokens=24,
                                                temperature=0, text={"format": fmt})
    chat = chat_of(site["port"], [{"role": "user", "content": "JSON please"}], 24,
                   response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA,
                                                                           "strict": True}})
    assert res.output_text == chat["choices"][0]["message"]["content"]
    assert res.output_text.startswith("{"), res.output_text


def test_local_stream_events_in_order(site):
    body = {"model": "gen", "input": "The quick brown fox", "max_output_tokens": 8, "temperature": 0}
    events = list(client(site["port"]).responses.create(stream=True, **body))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"], types
    assert types[-4:-1] == ["response.output_text.done", "response.content_part.done",
                            "response.output_item.done"], types
    assert types[-1] in ("response.completed", "response.incomplete"), types
    assert set(types[4:-4]) <= {"response.output_text.delta"}, types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    whole = client(site["port"]).responses.create(**body)
    assert text == whole.output_text == events[-4].text
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens == whole.usage.output_tokens
    assert final.status == whole.status
    raw = raw_stream(site["port"], body)
    assert all(name == json.loads(data)["type"] for name, data in raw), raw
    assert raw[-1][1] != "[DONE]"


@pytest.mark.parametrize("extra,param,words", [
    ({"previous_response_id": "resp_123"}, "previous_response_id", "stateless"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools", "not supported"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input", "not supported"),
    ({"input": 5}, None, "`input` must be a string or a list of messages"),
    ({"input": [{"role": "wizard", "content": "x"}]}, None, "role"),
    ({"text": {"format": {"type": "yaml"}}}, None, "text.format.type"),
    ({"max_output_tokens": 0}, None, "max_output_tokens"),
])
def test_local_refusals_are_400(site, extra, param, words):
    r = post(site["port"], "/v1/responses", dict({"model": "gen", "input": "x"}, **extra))
    assert r.status == 400, r.body
    e = r.json()["error"]
    assert words in e["message"], e
    if param:
        assert e["param"] == param


def test_metrics_count_the_route(site):
    post(site["port"], "/v1/responses", {"model": "gen", "input": "x", "max_output_tokens": 1})
    m = request(site["port"], "GET", "/metrics").body.decode()
    assert re.search(r'llmcgi_requests_total\{route="/v1/responses",status="200",model="gen"\} [1-9]', m), m[-2000:]


# ---------------------------------------------------------------------------- proxied

@pytest.fixture(scope="module", params=["standin", "transformers-serve"])
def upstream(request, site):
    """(llmcgi's port, the upstream's own port, model name): the openai stand-in behind `site`, or the real
    transformers serve launched by its own llmcgi."""
    if request.param == "standin":
        yield site["port"], site["oai"].port, "far"
        return
    ts_py = require_peer("ts", "LLMCGI_TRANSFORMERS_PYTHON")   # tools/peer-env ts (tests/run-all makes it)
    ts_cli = Path(ts_py).parent / "transformers"
    d = make_tmpdir("tserve-responses-")
    subprocess.run([ts_py, str(HERE / "make_tiny_gpt2.py"), str(d / "tiny"), "--tokenizer", str(TOKENIZER)],
                   check=True, capture_output=True, timeout=300)
    (d / "hf-home" / "hub").mkdir(parents=True)
    port = free_port()
    (d / "serve").write_text(f"#!/bin/sh\ncd {d} && HF_HUB_OFFLINE=1 HF_HOME={d}/hf-home exec {ts_cli} serve "
                             f"--host 127.0.0.1 --port {port} --model-timeout -1\n")
    (d / "serve").chmod(0o755)
    launch = d / "serve"
    l = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""
[upstream ts]
type = transformers-serve
url = http://127.0.0.1:{port}
models = tiny
launch = {launch}
first_byte_timeout = 120s
health_interval = 1s
""").start()
    web = WEB_SERVERS["nginx"](l.sock).start()
    try:
        wait_for(lambda: http_request(web.port, "GET", "/health").status == 200, "transformers serve to be ready",
                 timeout=180, interval=0.5)
        yield web.port, port, "tiny"
    finally:
        web.stop()
        report = l.cleanup()
        remove_tmpdir(d)
        assert not report, report


def test_proxied_response_equals_the_upstreams_own(upstream):
    port, direct, model = upstream
    body = {"model": model, "input": "The quick brown fox", "max_output_tokens": 6, "temperature": 0}
    want = post(direct, "/v1/responses", body)
    assert want.status == 200, want.body
    if want.body.startswith(b"data:") or want.body.startswith(b"event:"):
        # transformers serve answers an event stream even to a non-streamed request:
        # its last event (response.completed) carries the whole response
        events = [json.loads(line[5:]) for line in want.body.decode().splitlines() if line.startswith("data:")]
        whole = [e["response"] for e in events if e.get("type") in ("response.completed", "response.incomplete")]
        assert whole, want.body
        want_json = whole[-1]
    else:
        want_json = want.json()
    res = client(port).responses.create(**body)
    assert res.model == model
    assert res.output_text == "".join(p["text"] for o in want_json["output"] if o["type"] == "message"
                                      for p in o["content"] if p["type"] == "output_text")
    if want_json.get("usage"):
        assert res.usage.output_tokens == want_json["usage"]["output_tokens"]


def test_proxied_stream_is_passed_through(upstream):
    port, direct, model = upstream
    body = {"model": model, "input": "The quick brown fox", "max_output_tokens": 6, "temperature": 0}
    events = list(client(port).responses.create(stream=True, **body))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == client(port).responses.create(**body).output_text
    assert events[-1].response.model == model
    raw = raw_stream(port, body)
    assert raw[-1][1] != "[DONE]" and all(name == json.loads(data)["type"] for name, data in raw), raw


def test_tgi_upstream_gets_the_chat_it_means(site):
    port, tgi = site["port"], site["tgi"]
    before = tgi.count("/v1/chat/completions")
    body = {"model": "tgi-model", "instructions": "Be brief.", "input": "one two three", "max_output_tokens": 4}
    res = client(port).responses.create(**body)
    assert tgi.count("/v1/chat/completions") == before + 1
    chat = post(port, "/v1/chat/completions", {"model": "tgi-model", "max_tokens": 4, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "one two three"}]}).json()
    assert res.output_text == chat["choices"][0]["message"]["content"] != ""
    assert res.model == "tgi-model" and res.usage.output_tokens == chat["usage"]["completion_tokens"]
    assert res.status == ("incomplete" if chat["choices"][0]["finish_reason"] == "length" else "completed")
    events = list(client(port).responses.create(stream=True, **body))
    assert [e.type for e in events][:4] == ["response.created", "response.in_progress",
                                            "response.output_item.added", "response.content_part.added"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == res.output_text
    assert events[-1].type == ("response.incomplete" if res.status == "incomplete" else "response.completed")
    assert events[-1].response.usage.output_tokens == res.usage.output_tokens
    r = post(port, "/v1/responses", dict(body, previous_response_id="resp_1"))
    assert r.status == 400 and "no Responses API" in r.json()["error"]["message"], r.body


def test_an_upstream_event_type_that_is_not_a_name_ends_the_stream(site):
    """A passed-through Responses stream names each SSE event after the upstream's `type`: one that
    is not a plain name (here with a line break, to inject an event) is a bad event, never written."""
    good = {"type": "response.output_text.delta", "delta": "Hi", "sequence_number": 1}
    bad = dict(good, type="response.output_text.delta\nevent: injected")
    site["oai"].set_fault("body", events=[{"type": "response.created", "sequence_number": 0,
                                           "response": {"id": "r", "status": "in_progress"}}, good, bad, good])
    try:
        r = post(site["port"], "/v1/responses", {"model": "far", "input": "x", "stream": True})
    finally:
        site["oai"].set_fault("ok")
    assert r.status == 200, r.body
    body = r.body.decode()
    assert "injected" not in body and body.count('"delta":"Hi"') == 1, body
    assert "event: error" in body and "not an event name" in body, body
