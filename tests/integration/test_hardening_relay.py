"""What passes through the gateway, through real nginx, against stand-in upstreams (standin.py)
that record what they received or answer exactly the body a test gives them (mode "body").

* Headers (issue 19, item 6): an http upstream's configured `header =` lines and api_key
  replace the client's headers of the same name (never sit beside them); headers the client's
  Connection names stay behind; answer headers that order the web server (X-Accel-*,
  X-Sendfile, Status) never reach it, the application's own (Set-Cookie) do.
* Consistency (item 9): bad usage counts are a 502 naming the field (an error event in a
  stream); an upstream's error event ends an OpenAI stream as llmcgi's own errors do (OpenAI
  error shape, then [DONE]); local models refuse functions/function_call/tool_choice like tools.
* Validation (item 11): TGI details, token ids, OpenAI choices and messages are checked on the
  pass-through and translated paths, streamed or not; a TGI /info model_id that is no safe id
  never becomes a model id in /v1/models.
"""

import json
import os
import subprocess

import pytest

from servers import (BUILDDIR, SRCDIR, Llmcgi, Nginx, Stream, make_tmpdir, proc_status, remove_tmpdir, request,
                     reset_peak, wait_for)
from standin import Standin

GEN = BUILDDIR / "tools" / "gen-gpt2"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
JSON = {"Content-Type": "application/json"}
BAD_INFO_ID = "x" * 10000 + "\n2026-01-01T00:00:00.000+00:00 [error] forged"

for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)


class Relay:
    def __init__(self):
        self.dir = make_tmpdir("llmcgi-relay-")
        self.models = self.dir / "models"
        self.models.mkdir()
        subprocess.run([str(GEN), "--out", str(self.models / "tiny"), "--layers", "2", "--heads", "2", "--embd",
                        "64", "--positions", "128", "--seed", "5", "--tokenizer", str(TOKENIZER)],
                       check=True, capture_output=True, timeout=120)
        self.tgi = Standin("tgi", model_ids=["tgi-m"]).start()
        self.oai = Standin("openai", model_ids=["oai-m"]).start()
        self.app = Standin("openai", model_ids=["app"]).start()        # the http upstream, recording
        self.info = Standin("tgi", model_ids=["unused"]).start()
        self.info.set_fault("body", body={"model_id": BAD_INFO_ID}, health=True)
        self.sock = self.dir / "llmcgi.sock"
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=f"""\
default_model = tiny

[model tiny]
path = {self.models / 'tiny'}
device = cpu
max_new_tokens = 8

[upstream tgi]
type = tgi
url = {self.tgi.url}
models = tgi-m
health_interval = 200ms

[upstream oai]
type = openai
url = {self.oai.url}
models = oai-m
health_interval = 200ms

[upstream info]
type = tgi
url = {self.info.url}
health_interval = 200ms

[upstream app]
type = http
url = {self.app.url}
path_prefix = /app
api_key = sk-operator
header = X-Tenant: operator
""").start()
        self.nginx = Nginx(self.sock).start()
        self.port = self.nginx.port

    def close(self):
        self.nginx.stop()
        report = self.llmcgi.cleanup()
        for s in (self.tgi, self.oai, self.app, self.info):
            s.stop()
        remove_tmpdir(self.dir)
        return report


@pytest.fixture(scope="module")
def relay():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    r = Relay()
    yield r
    report = r.close()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


@pytest.fixture(autouse=True)
def clear_faults(request):
    yield
    if "relay" in request.fixturenames:
        r = request.getfixturevalue("relay")
        for s in (r.tgi, r.oai, r.app):
            s.set_fault("ok")


def post(port, path, body, headers=None):
    return request(port, "POST", path, json.dumps(body), dict(JSON, **(headers or {})))


def events_of(port, path, body):
    s = Stream(port, path, headers=JSON, method="POST", body=json.dumps(body))
    try:
        out = []
        while (ev := s.read_event()) is not None:
            out.append(ev[0].get("data"))
        return s.status, out
    finally:
        s.close()


def error_message(r):
    e = r.json()["error"]
    return e["message"] if isinstance(e, dict) else e


# ---------------------------------------------------------------------------- headers (item 6)

def test_configured_headers_replace_the_clients(relay):
    relay.app.clear_requests()
    r = request(relay.port, "GET", "/app/v1/models", headers={
        "X-Tenant": "client", "x-tenant": "client-again", "Authorization": "Bearer client-key",
        "Connection": "keep-alive, X-Hop", "X-Hop": "only-for-the-next-hop", "X-Kept": "yes"})
    assert r.status == 200, r.body
    got = [(k.lower(), v) for k, v in relay.app.requests[-1]["header_list"]]
    assert [v for k, v in got if k == "x-tenant"] == ["operator"], got
    assert [v for k, v in got if k == "authorization"] == ["Bearer sk-operator"], got
    assert [v for k, v in got if k == "x-kept"] == ["yes"], got
    assert "x-hop" not in dict(got), got


def test_answer_headers_that_order_the_web_server_are_dropped(relay):
    relay.app.set_fault("body", body={"from": "app"}, headers=[
        ["X-Accel-Redirect", "/health"], ["X-Accel-Buffering", "yes"], ["X-Sendfile", "/etc/passwd"],
        ["Status", "404 Not Found"], ["Set-Cookie", "session=1; Path=/app"], ["X-App", "yes"]])
    r = post(relay.port, "/app/v1/chat/completions", {})
    assert r.status == 200 and r.json() == {"from": "app"}, (r.status, r.body[:300])
    assert r.header("set-cookie") == "session=1; Path=/app" and r.header("x-app") == "yes"
    for h in ("x-accel-redirect", "x-accel-buffering", "x-sendfile"):
        assert r.header(h) is None, (h, r.headers)


# ---------------------------------------------------------------------------- usage and stream ends (item 9)

CHAT = {"id": "c1", "object": "chat.completion", "created": 1, "model": "oai-m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
COMPLETION = {"id": "c2", "object": "text_completion", "created": 1, "model": "oai-m",
              "choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}]}


@pytest.mark.parametrize("usage,field", [
    ({"prompt_tokens": -1, "completion_tokens": 1, "total_tokens": 0}, "usage.prompt_tokens"),
    ({"prompt_tokens": 1, "completion_tokens": 2 ** 63 - 1, "total_tokens": 2}, "usage.completion_tokens"),
    ({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2.5}, "usage.total_tokens"),
])
def test_bad_usage_counts_are_a_502_naming_the_field(relay, usage, field):
    relay.oai.set_fault("body", body=dict(CHAT, usage=usage))
    r = post(relay.port, "/v1/chat/completions", {"model": "oai-m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 502 and f"`{field}`" in error_message(r), r.body       # passed through
    relay.oai.set_fault("body", body=dict(COMPLETION, usage=usage))
    r = post(relay.port, "/generate", {"model": "oai-m", "inputs": "x"})
    assert r.status == 502 and f"`{field}`" in r.json()["error"], r.body       # translated


def test_bad_usage_in_a_stream_is_an_error_event_then_done(relay):
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "oai-m",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    last = dict(chunk, choices=[], usage={"prompt_tokens": -5, "completion_tokens": 1, "total_tokens": 1})
    relay.oai.set_fault("body", events=[chunk, last, "[DONE]"])
    status, data = events_of(relay.port, "/v1/chat/completions", {
        "model": "oai-m", "messages": [{"role": "user", "content": "x"}], "stream": True})
    assert status == 200 and json.loads(data[0])["choices"][0]["delta"]["content"] == "hi", data
    err = json.loads(data[-2])["error"]
    assert "`usage.prompt_tokens`" in err["message"] and err["code"] == "upstream_error", data
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1, data


@pytest.mark.parametrize("upstream,model", [("oai", "oai-m"), ("tgi", "tgi-m")])
def test_an_upstream_error_event_ends_the_stream_like_llmcgis_own(relay, upstream, model):
    getattr(relay, upstream).set_fault("error_event", after=2, message="out of memory in the upstream")
    status, data = events_of(relay.port, "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 6, "stream": True})
    assert status == 200, data
    err = json.loads(data[-2])["error"]
    assert set(err) == {"message", "type", "param", "code"}, err                # OpenAI's shape, whatever the upstream's
    assert "out of memory in the upstream" in err["message"] and err["code"] == "upstream_error", err
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1, data


@pytest.mark.parametrize("field,value", [
    ("functions", [{"name": "f", "parameters": {"type": "object"}}]),
    ("function_call", "auto"),
    ("function_call", {"name": "f"}),
    ("tool_choice", "required"),
    ("tool_choice", {"type": "function", "function": {"name": "f"}}),
])
def test_local_models_refuse_the_function_fields_like_tools(relay, field, value):
    r = post(relay.port, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                                  "max_tokens": 2, field: value})
    assert r.status == 400, r.body
    e = r.json()["error"]
    assert e["param"] == field and "not supported" in e["message"], e


def test_local_models_take_tool_choice_none(relay):
    r = post(relay.port, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                                  "max_tokens": 2, "tool_choice": "none", "functions": []})
    assert r.status == 200, r.body


# ---------------------------------------------------------------------------- validation (item 11)

TGI_BAD = [
    ({"finish_reason": 123}, "details.finish_reason"),
    ({"finish_reason": "length", "seed": "abc"}, "details.seed"),
    ({"finish_reason": "length", "prefill": "x"}, "details.prefill"),
    ({"finish_reason": "length", "tokens": [{"id": -1, "text": "a", "logprob": 0, "special": False}]},
     "details.tokens[0].id"),
]


@pytest.mark.parametrize("details,field", TGI_BAD)
def test_tgi_details_are_checked_passed_through_and_translated(relay, details, field):
    relay.tgi.set_fault("body", body={"generated_text": "x", "details": dict({"generated_tokens": 1}, **details)})
    r = post(relay.port, "/generate", {"model": "tgi-m", "inputs": "x", "parameters": {"details": True}})
    assert r.status == 502 and f"`{field}`" in r.json()["error"], r.body
    r = post(relay.port, "/v1/completions", {"model": "tgi-m", "prompt": "x", "max_tokens": 2})
    assert r.status == 502 and f"`{field}`" in error_message(r), r.body


def test_counts_and_ids_beyond_2_64_are_refused(relay):
    relay.tgi.set_fault("body", body='{"generated_text":"x","details":{"finish_reason":"length",'
                                     '"generated_tokens":99999999999999999999999}}')
    r = post(relay.port, "/generate", {"model": "tgi-m", "inputs": "x", "parameters": {"details": True}})
    assert r.status == 502 and "out of range" in r.json()["error"] and "generated_tokens" in r.json()["error"], r.body
    good = '{"index":1,"token":{"id":5,"text":" a","logprob":-0.5,"special":false},"generated_text":null,"details":null}'
    bad = '{"index":2,"token":{"id":18446744073709551616,"text":" b","logprob":-0.5,"special":false}}'
    relay.tgi.set_fault("body", events=[good, bad])
    status, data = events_of(relay.port, "/generate_stream", {"model": "tgi-m", "inputs": "x"})
    assert status == 200 and json.loads(data[0])["token"]["id"] == 5, data
    last = json.loads(data[-1])
    assert last["error_type"] == "generation" and "out of range" in last["error"], data
    status, data = events_of(relay.port, "/v1/completions", {"model": "tgi-m", "prompt": "x", "stream": True})
    assert status == 200 and "out of range" in json.loads(data[-2])["error"]["message"] and data[-1] == "[DONE]", data


@pytest.mark.parametrize("choices,field", [
    ([], "choices"),
    ([{"index": 0, "message": "not-an-object", "finish_reason": "stop"}], "choices[0].message"),
    ([{"index": 0, "message": {"role": "assistant", "content": 5}, "finish_reason": "stop"}],
     "choices[0].message.content"),
])
def test_openai_answers_are_checked(relay, choices, field):
    relay.oai.set_fault("body", body=dict(CHAT, choices=choices))
    r = post(relay.port, "/v1/chat/completions", {"model": "oai-m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 502 and f"`{field}`" in error_message(r), r.body


def test_openai_completion_choices_are_checked_when_translated(relay):
    relay.oai.set_fault("body", body=dict(COMPLETION, choices=[{"index": 0, "text": {"no": 1}}]))
    r = post(relay.port, "/generate", {"model": "oai-m", "inputs": "x"})
    assert r.status == 502 and "`choices[0].text`" in r.json()["error"], r.body
    relay.oai.set_fault("body", body=dict(COMPLETION, choices=[]))
    r = post(relay.port, "/generate", {"model": "oai-m", "inputs": "x"})
    assert r.status == 502 and "`choices` is empty" in r.json()["error"], r.body


def test_openai_stream_chunks_are_checked(relay):
    bad = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "oai-m",
           "choices": [{"index": 0, "delta": "x", "finish_reason": None}]}
    relay.oai.set_fault("body", events=[bad, "[DONE]"])
    body = {"model": "oai-m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    r = post(relay.port, "/v1/chat/completions", body)      # nothing reached the client yet: a plain 502
    assert r.status == 502 and "`choices[0].delta`" in error_message(r), r.body


def test_a_tgi_info_model_id_that_is_no_safe_id_is_ignored(relay):
    wait_for(lambda: "upstream info: ignored 1 model id" in relay.llmcgi.log(), "the warning about /info's model_id")
    r = request(relay.port, "GET", "/v1/models")
    assert r.status == 200
    ids = [m["id"] for m in r.json()["data"]]
    assert "tgi-m" in ids and "oai-m" in ids, ids
    assert all(len(i) <= 256 and "\n" not in i for i in ids), [i[:40] for i in ids]
    assert "forged" not in relay.llmcgi.log()


def test_an_upstream_answer_whose_tree_would_dwarf_it_is_refused_unparsed(relay):
    """8 MB of `{}, ` items is well under max_response (64 MB) but would be a ~1.6 GB json-c tree:
    refused before parsing, as a request body of that shape is, and llmcgi's peak stays small."""
    pid = relay.llmcgi.proc.pid
    reset_peak(pid)
    before = proc_status(pid)["VmHWM"]
    relay.oai.set_fault("body", body='{"choices": [' + "{}, " * 2_000_000 + "{}]}")
    r = post(relay.port, "/v1/chat/completions", {"model": "oai-m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 502 and "too many values" in error_message(r), r.body
    if os.environ.get("LLMCGI_SANITIZERS") != "yes":                 # ASan's quarantine grows by design
        grew = proc_status(pid)["VmHWM"] - before
        assert grew < 200 << 20, f"the peak grew by {grew >> 20} MB for an 8 MB answer"
