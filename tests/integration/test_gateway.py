"""The gateway through real nginx and Apache: llmcgi proxies to stand-in TGI, OpenAI and
transformers-serve upstreams (standin.py) with real libcurl, and to a plain HTTP service.

Covers every client dialect against every upstream type, streams arriving event by
event, the known quirks (TGI's model/adapter rewrite, transformers serve's strict field
set and missing [DONE]), failover between replicas, each injected fault (refused,
hang, 500, 503, malformed JSON, dropped mid-stream, huge answer, closed), the
concurrency cap, client aborts, listings, http pass-through, credentials sent
upstream and never logged, and a managed child started, restarted and stopped.
"""

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from servers import (TIMEOUT, WEB_SERVERS, Llmcgi, Stream, free_port, make_tmpdir, remove_tmpdir, request,
                     wait_for)
from standin import Standin

HERE = os.path.dirname(os.path.abspath(__file__))
JSON = {"Content-Type": "application/json"}
TEXT3 = " alpha beta gamma"      # what the stand-ins generate for 3 tokens
SECRET = "sk-test-7c1d9e0f"


class Echo(http.server.BaseHTTPRequestHandler):
    """A plain HTTP service for the http upstream: answers with what it received."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _events(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i in range(4):
            self.wfile.write(f"data: {i}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.25)
        self.close_connection = True

    def _answer(self):
        if self.path.endswith("/events"):
            return self._events()
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if "/status/" in self.path:
            code = int(self.path.split("/status/")[1].split("?")[0])
        else:
            code = 200
        out = json.dumps({"method": self.command, "path": self.path, "body": body.decode(errors="replace"),
                          "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", "yes")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer


class Gateway:
    """Stand-ins, llmcgi configured with an upstream of each kind, nginx and Apache."""

    def __init__(self):
        self.tgi = Standin("tgi", model_ids=["bigscience/bloom-560m"]).start()
        self.oai = [Standin("openai", model_ids=["gpt-x"]).start() for _ in range(2)]
        self.ts = Standin("transformers-serve", model_ids=["tiny"]).start()
        self.flaky = Standin("openai", model_ids=["flaky"]).start()
        self.keyed = Standin("openai", model_ids=["keyed"], api_key=SECRET).start()
        self.echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        self.echo.daemon_threads = True
        threading.Thread(target=self.echo.serve_forever, daemon=True).start()
        self.dead_port = free_port()
        self.dir = make_tmpdir("gateway-")
        self.sock = self.dir / "llmcgi.sock"
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=self.config()).start()
        self.web = {}

    def config(self, more=""):
        return f"""\
default_model = gpt-x

[upstream tgi]
type = tgi
url = {self.tgi.url}
models = bloom
health_interval = 200ms

[upstream oai]
type = openai
url = {self.oai[0].url} {self.oai[1].url}
models = gpt-x
retries = 2
retry_backoff = 10ms
health_interval = 200ms
health_fall = 2
health_rise = 1

[upstream ts]
type = transformers-serve
url = {self.ts.url}
models = tiny
health_interval = 200ms

[upstream flaky]
type = openai
url = {self.flaky.url}
models = flaky alias=flaky
first_byte_timeout = 1s
stream_idle_timeout = 1s
max_concurrent = 2
queue_timeout = 200ms
retries = 1
retry_backoff = 10ms
max_response = 1M
health_interval = 200ms
health_fall = 100

[upstream dead]
type = openai
url = http://127.0.0.1:{self.dead_port}
models = ghost
connect_timeout = 500ms
health_interval = 200ms

[upstream keyed]
type = openai
url = {self.keyed.url}
models = keyed
api_key = {SECRET}
header = X-Extra: one
header = X-Other: two
health_path = /health

[upstream imgdead]
type = http
url = http://127.0.0.1:{self.dead_port}
path_prefix = /dead
connect_timeout = 500ms

[upstream img]
type = http
url = http://127.0.0.1:{self.echo.server_address[1]}/base
path_prefix = /img
{more}
"""

    def server(self, name):
        if name not in self.web:
            self.web[name] = WEB_SERVERS[name](self.sock).start()
        return self.web[name]

    def close(self):
        for w in self.web.values():
            w.stop()
        report = self.llmcgi.cleanup()
        for s in [self.tgi, self.ts, self.flaky, self.keyed] + self.oai:
            s.stop()
        self.echo.shutdown()
        remove_tmpdir(self.dir)
        return report


@pytest.fixture(scope="module")
def gw():
    g = Gateway()
    yield g
    report = g.close()
    assert not report, report


@pytest.fixture(autouse=True)
def clear_faults(request):
    yield
    if "gw" in request.fixturenames:
        g = request.getfixturevalue("gw")
        for s in [g.tgi, g.ts, g.flaky, g.keyed] + g.oai:
            s.set_fault("ok")


def post(port, path, body, headers=None, timeout=TIMEOUT):
    return request(port, "POST", path, json.dumps(body), dict(JSON, **(headers or {})), timeout=timeout)


def bodies(model):
    return {
        "chat": ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi there"}],
                                          "max_tokens": 3}),
        "completion": ("/v1/completions", {"model": model, "prompt": "hi there", "max_tokens": 3}),
        "tgi": ("/generate", {"model": model, "inputs": "hi there", "parameters": {"max_new_tokens": 3,
                                                                                   "details": True}}),
        "compat": ("/", {"model": model, "inputs": "hi there", "parameters": {"max_new_tokens": 3}}),
        "legacy": ("/generate", {"model_id": model, "prompt": "hi there", "max_new_tokens": 3}),
    }


def text_of(kind, answer):
    if kind == "chat":
        return answer["choices"][0]["message"]["content"]
    if kind == "completion":
        return answer["choices"][0]["text"]
    if kind == "compat":
        return answer[0]["generated_text"]
    return answer["generated_text"]


# ---------------------------------------------------------------------------- dialects

@pytest.mark.parametrize("web", ["nginx", "apache"])
@pytest.mark.parametrize("model", ["bloom", "gpt-x", "tiny"])
@pytest.mark.parametrize("kind", ["chat", "completion", "tgi", "compat", "legacy"])
def test_every_dialect_reaches_every_upstream(gw, web, model, kind):
    port = gw.server(web).port
    path, body = bodies(model)[kind]
    r = post(port, path, body)
    assert r.status == 200, r.body
    a = r.json()
    assert text_of(kind, a) == TEXT3
    assert r.header("x-upstream") in ("tgi", "oai", "ts")
    if kind in ("chat", "completion"):
        assert a["model"] == model                       # the client's name, not the upstream's
        assert a["choices"][0]["finish_reason"] == "length"
        assert a["usage"]["completion_tokens"] == 3
        assert a["object"] == ("chat.completion" if kind == "chat" else "text_completion")
    if kind == "tgi":
        assert a["details"]["finish_reason"] == "length"
        assert a["details"]["generated_tokens"] == 3
    if kind == "legacy":
        assert a == {"generated_text": TEXT3, "model_id": model}



def last_request(*standins):
    """The last request the stand-ins received that is not a health probe (the gateway probes
    /health, or GET /v1/models for openai upstreams, every health_interval, so a probe can land
    after the request a test just sent)."""
    reqs = [q for st in standins for q in st.requests
            if q["path"] != "/health" and not (q["method"] == "GET" and q["path"] == "/v1/models")]
    return reqs[-1]


def test_tgi_model_is_rewritten_and_the_answer_names_the_clients_model(gw):
    port = gw.server("nginx").port
    gw.tgi.clear_requests()
    r = post(port, "/v1/chat/completions", {"model": "bloom", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 200, r.body
    sent = [q for q in gw.tgi.requests if q["path"] == "/v1/chat/completions"][-1]
    assert sent["json"]["model"] == "tgi"                 # any other name is an adapter id to TGI
    assert r.json()["model"] == "bloom"
    assert sent["headers"]["x-request-id"] == r.header("x-request-id")


def test_transformers_serve_gets_only_fields_it_knows(gw):
    port = gw.server("nginx").port
    gw.ts.clear_requests()
    r = post(port, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                            "max_tokens": 2, "repetition_penalty": 1.2, "top_k": 5, "foo": 1})
    assert r.status == 200, r.body
    sent = last_request(gw.ts)["json"]
    assert "foo" not in sent and "top_k" not in sent and sent["max_tokens"] == 2


def test_tgi_parameters_are_mapped_to_openai_and_back(gw):
    port = gw.server("nginx").port
    gw.oai[0].clear_requests()
    gw.oai[1].clear_requests()
    r = post(port, "/generate", {"model": "gpt-x", "inputs": "say EOS now",
                                 "parameters": {"max_new_tokens": 7, "do_sample": False, "stop": ["zeta"],
                                                "seed": 5, "return_full_text": True, "details": True}})
    assert r.status == 200, r.body
    sent = last_request(*gw.oai)["json"]
    assert sent["prompt"] == "say EOS now" and sent["max_tokens"] == 7 and sent["temperature"] == 0
    assert sent["stop"] == ["zeta"] and sent["seed"] == 5 and sent["model"] == "gpt-x"
    a = r.json()
    assert a["generated_text"] == "say EOS now" + TEXT3  # EOS in the prompt: the stand-in stops after 3
    assert a["details"]["finish_reason"] in ("eos_token", "stop_sequence")


def test_openai_completion_is_mapped_to_tgi_generate(gw):
    port = gw.server("nginx").port
    gw.tgi.clear_requests()
    r = post(port, "/v1/completions", {"model": "bloom", "prompt": "p q", "temperature": 0, "max_tokens": 4,
                                       "stop": "delta"})
    assert r.status == 200, r.body
    sent = last_request(gw.tgi)
    assert sent["path"] == "/generate"
    p = sent["json"]["parameters"]
    assert p["do_sample"] is False and p["max_new_tokens"] == 4 and p["stop"] == ["delta"]
    a = r.json()
    assert a["choices"][0]["text"] == " alpha beta gamma delta"
    assert a["choices"][0]["finish_reason"] == "stop"
    # built by llmcgi (front/answer.c), as local answers are: llmcgi's fingerprint, naming the upstream's type
    assert re.fullmatch(r"fp_llmcgi_[^_]+_tgi", a["system_fingerprint"]), a


# ---------------------------------------------------------------------------- streams

def read_events(s):
    """All events of a stream as (time received, data string)."""
    out = []
    while (ev := s.read_event()) is not None:
        out.append((time.monotonic(), ev[0].get("data")))
    return out


STREAMS = {
    "chat": ("/v1/chat/completions", lambda m: {"model": m, "messages": [{"role": "user", "content": "x"}],
                                                "max_tokens": 4, "stream": True}),
    "completion": ("/v1/completions", lambda m: {"model": m, "prompt": "x", "max_tokens": 4, "stream": True,
                                                 "stream_options": {"include_usage": True}}),
    "tgi": ("/generate_stream", lambda m: {"model": m, "inputs": "x", "parameters": {"max_new_tokens": 4}}),
}


def stream_text(kind, events):
    text = ""
    for _, d in events:
        if d == "[DONE]":
            continue
        e = json.loads(d)
        assert "error" not in e, e
        if kind == "chat":
            text += "".join(c["delta"].get("content") or "" for c in e["choices"])
        elif kind == "completion":
            text += "".join(c["text"] for c in e["choices"])
        else:
            text += e["token"]["text"] if not e["token"]["special"] else ""
    return text


@pytest.mark.parametrize("web", ["nginx", "apache"])
@pytest.mark.parametrize("model", ["bloom", "gpt-x", "tiny"])
@pytest.mark.parametrize("kind", ["chat", "completion", "tgi"])
def test_streams_arrive_event_by_event_and_end_right(gw, web, model, kind):
    port = gw.server(web).port
    upstream = {"bloom": [gw.tgi], "gpt-x": gw.oai, "tiny": [gw.ts]}[model]
    for u in upstream:
        u.set_fault("trickle", seconds=0.25)
    path, body = STREAMS[kind]
    s = Stream(port, path, headers=JSON, method="POST", body=json.dumps(body(model)))
    try:
        assert s.status == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        events = read_events(s)
    finally:
        s.close()
    assert stream_text(kind, events) == " alpha beta gamma delta"
    data = [d for _, d in events]
    if kind == "tgi":
        assert "[DONE]" not in data                       # TGI streams end with the final event
        last = json.loads(data[-1])
        assert last["generated_text"] == " alpha beta gamma delta"
    else:
        assert data[-1] == "[DONE]"                       # added for transformers serve, which omits it
        assert data.count("[DONE]") == 1
    if kind == "completion":
        assert json.loads(data[-2])["usage"]["completion_tokens"] == 4
    if kind == "completion" and model == "bloom":         # translated chunks carry llmcgi's fingerprint
        fps = {json.loads(d).get("system_fingerprint") for d in data if d != "[DONE]"}
        assert len(fps) == 1 and re.fullmatch(r"fp_llmcgi_[^_]+_tgi", fps.pop() or ""), fps
    # spread over the upstream's pace, not delivered at the end in one piece
    token_times = [t for t, d in events if d != "[DONE]"]
    assert token_times[-1] - token_times[0] >= 0.5, [round(t - token_times[0], 3) for t in token_times]


def test_mid_stream_drop_becomes_an_error_event_and_a_clean_end(gw):
    port = gw.server("nginx").port
    gw.flaky.set_fault("drop", after=2)
    s = Stream(port, "/v1/chat/completions", headers=JSON, method="POST",
               body=json.dumps(STREAMS["chat"][1]("flaky")))
    try:
        assert s.status == 200
        data = [d for _, d in read_events(s)]
        assert s.eof                                       # the chunked body ended properly
    finally:
        s.close()
    err = json.loads(data[-2])["error"]
    assert "flaky" in err["message"] and err["code"] == "upstream_error"
    assert data[-1] == "[DONE]"


def test_mid_stream_drop_in_tgi_dialect(gw):
    port = gw.server("nginx").port
    gw.flaky.set_fault("drop", after=3)
    s = Stream(port, "/generate_stream", headers=JSON, method="POST",
               body=json.dumps({"model": "flaky", "inputs": "x", "parameters": {"max_new_tokens": 8}}))
    try:
        data = [d for _, d in read_events(s)]
        assert s.eof
    finally:
        s.close()
    last = json.loads(data[-1])
    assert last["error_type"] == "generation" and "flaky" in last["error"]


def test_stream_idle_timeout_and_malformed_events(gw):
    port = gw.server("nginx").port
    gw.flaky.set_fault("malformed")
    s = Stream(port, "/v1/completions", headers=JSON, method="POST",
               body=json.dumps({"model": "flaky", "prompt": "x", "max_tokens": 6, "stream": True}))
    try:
        data = [d for _, d in read_events(s)]
    finally:
        s.close()
    assert "not JSON" in json.loads(data[-2])["error"]["message"]
    gw.flaky.set_fault("trickle", seconds=2)             # stream_idle_timeout = 1s
    s = Stream(port, "/v1/completions", headers=JSON, method="POST",
               body=json.dumps({"model": "flaky", "prompt": "x", "max_tokens": 6, "stream": True}))
    try:
        # nothing reached the client before the stall: a plain error answer after the retry (504, a timeout)
        assert s.status == 504, s.status
        assert "stalled" in json.loads(s.f.read(int(s.headers["content-length"])))["error"]["message"]
    finally:
        s.close()


def test_client_abort_stops_the_upstream_transfer(gw):
    port = gw.server("nginx").port
    gw.flaky.set_fault("trickle", seconds=0.3)
    s = Stream(port, "/v1/completions", headers=JSON, method="POST",
               body=json.dumps({"model": "flaky", "prompt": "x", "max_tokens": 100, "stream": True}))
    assert s.read_event() is not None
    s.close()
    wait_for(lambda: "the client went away" in gw.llmcgi.log(), "llmcgi to notice the client left")


# ---------------------------------------------------------------------------- failures

def test_failover_when_a_replica_is_down(gw):
    port = gw.server("nginx").port
    gw.oai[0].stop()
    try:
        for _ in range(12):
            r = post(port, "/v1/chat/completions", {"model": "gpt-x", "messages": [{"role": "user", "content": "x"}]})
            assert r.status == 200, r.body
        health = request(port, "GET", "/health").json()["upstreams"]["oai"]["replicas"]
        assert [h["up"] for h in health] == [False, True]
    finally:
        gw.oai[0].start()
    wait_for(lambda: all(h["up"] for h in request(port, "GET", "/health").json()["upstreams"]["oai"]["replicas"]),
             "the replica to be back in rotation")


@pytest.mark.parametrize("code", [502, 503])
def test_retry_on_a_5xx_before_the_first_byte(gw, code):
    port = gw.server("nginx").port
    gw.oai[0].set_fault("status", code=code, times=1)
    gw.oai[1].set_fault("status", code=code, times=1)
    for _ in range(3):
        r = post(port, "/v1/chat/completions", {"model": "gpt-x", "messages": [{"role": "user", "content": "x"}]})
        assert r.status == 200, r.body


@pytest.mark.parametrize("stream", [False, True])
def test_retry_when_an_event_stream_ends_before_any_event(gw, stream):
    """A replica that sent its event stream's headers and then ended it with no
    event (a model host that died behind its own web server does): nothing has
    reached the client, so another replica answers, streamed or not."""
    port = gw.server("nginx").port
    gw.oai[0].set_fault("body", events=[], times=1)
    gw.oai[1].set_fault("body", events=[], times=1)
    try:
        for _ in range(2):
            r = post(port, "/v1/chat/completions", {"model": "gpt-x", "stream": stream,
                                                    "messages": [{"role": "user", "content": "x"}]})
            assert r.status == 200, r.body
            assert (b"[DONE]" in r.body) if stream else r.json()["choices"][0]["message"]["content"], r.body
    finally:
        for o in gw.oai:
            o.set_fault("ok")
    wait_for(lambda: all(h["up"] for h in request(port, "GET", "/health").json()["upstreams"]["oai"]["replicas"]),
             "the replicas to be in rotation")


def test_everything_failing_answers_in_the_clients_dialect(gw):
    port = gw.server("nginx").port
    gw.flaky.set_fault("status", code=503)
    r = post(port, "/v1/chat/completions", {"model": "flaky", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 503 and r.header("retry-after") == "1"
    assert "flaky" in r.json()["error"]["message"] and r.json()["error"]["code"] == "upstream_error"
    r = post(port, "/generate", {"model": "flaky", "inputs": "x"})
    assert r.status == 503 and r.json()["error_type"] == "unavailable" and "flaky" in r.json()["error"]


@pytest.mark.parametrize("fault,kw,status", [
    ("hang", {"seconds": 5}, 504),
    ("status", {"code": 500}, 502),
    ("malformed", {}, 502),
    ("drop", {}, 502),
    ("close", {}, 502),
    ("huge", {"size": 4 << 20}, 502),
])
def test_faults_before_the_first_byte(gw, fault, kw, status):
    port = gw.server("nginx").port
    gw.flaky.set_fault(fault, **kw)
    r = post(port, "/v1/completions", {"model": "flaky", "prompt": "x"}, timeout=30)
    assert r.status == status, r.body
    e = r.json()["error"]
    assert "flaky" in e["message"] and gw.flaky.url not in e["message"]   # names the upstream, not its address
    assert request(port, "GET", "/health").status == 200                 # the process is fine


def test_dead_upstream_is_unavailable(gw):
    port = gw.server("nginx").port
    wait_for(lambda: request(port, "GET", "/models/ghost/health").status == 503, "ghost to be marked down")
    r = post(port, "/v1/chat/completions", {"model": "ghost", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 503 and "ghost" in r.json()["error"]["message"]


def test_concurrency_cap_answers_503_after_a_short_wait(gw):
    port = gw.server("nginx").port
    gw.flaky.set_fault("delay", seconds=0.8)            # first_byte_timeout is 1s
    gw.flaky.clear_requests()
    results = []

    def one():
        results.append(post(port, "/v1/completions", {"model": "flaky", "prompt": "x"}).status)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: gw.flaky.count("/v1/completions") >= 2 or len(results) == 2, "two requests upstream")
    r = post(port, "/v1/completions", {"model": "flaky", "prompt": "x"})
    for t in threads:
        t.join()
    assert r.status == 503 and r.header("retry-after") == "1", r.body
    assert "max_concurrent" in r.json()["error"]["message"]
    assert results == [200, 200]


def test_bad_requests_get_clear_errors(gw):
    port = gw.server("nginx").port
    r = post(port, "/v1/chat/completions", {"model": "gpt-x"})
    assert r.status == 400 and "messages" in r.json()["error"]["message"]
    r = post(port, "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 404 and r.json()["error"]["code"] == "model_not_found"
    r = post(port, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 0}})
    assert r.status == 422 and r.json()["error_type"] == "validation" and "max_new_tokens" in r.json()["error"]
    r = post(port, "/generate", {"inputs": 5})
    assert r.status == 422 and "inputs" in r.json()["error"]
    r = post(port, "/generate", {"inputs": "x", "parameters": {"stop": ["a", "b", "c", "d", "e"]}})
    assert r.status == 422 and "stop" in r.json()["error"]
    r = post(port, "/v1/completions", {"model": "bloom", "prompt": "x", "n": 2})
    assert r.status == 400 and "`n`" in r.json()["error"]["message"]
    # a TGI request without a model goes to default_model
    r = post(port, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 3}})
    assert r.status == 200 and r.json()["generated_text"] == TEXT3


# ---------------------------------------------------------------------------- listings

def test_model_listings(gw):
    port = gw.server("nginx").port
    data = {m["id"]: m for m in request(port, "GET", "/v1/models").json()["data"]}
    for name in ("bloom", "gpt-x", "tiny", "flaky", "alias", "keyed"):
        assert data[name]["object"] == "model" and data[name]["available"] is True
    wait_for(lambda: not {m["id"]: m for m in request(port, "GET", "/v1/models").json()["data"]}["ghost"]["available"],
             "ghost to be unavailable")
    assert request(port, "GET", "/v1/models/tiny").json()["upstream"] == "ts"
    legacy = {m["id"]: m for m in request(port, "GET", "/models").json()}
    assert set(legacy["bloom"]) >= {"id", "name", "endpoint", "available"}
    r = request(port, "GET", "/models/bloom/health")
    assert r.status == 200 and r.json()["available"] is True
    assert request(port, "GET", "/models/nope/health").status == 404
    h = request(port, "GET", "/health").json()
    assert h["upstreams"]["tgi"]["available"] and not h["upstreams"]["dead"]["available"]


def test_alias_sends_the_upstreams_name(gw):
    port = gw.server("nginx").port
    gw.flaky.clear_requests()
    r = post(port, "/v1/completions", {"model": "alias", "prompt": "x", "max_tokens": 3})
    assert r.status == 200 and r.json()["model"] == "alias"
    assert last_request(gw.flaky)["json"]["model"] == "flaky"


# ---------------------------------------------------------------------------- http pass-through

@pytest.mark.parametrize("web", ["nginx", "apache"])
def test_http_upstream_passes_requests_through(gw, web):
    port = gw.server(web).port
    r = request(port, "PUT", "/img/a/b?x=1&y=%20", body=b"raw\x00bytes", headers={
        "Content-Type": "application/octet-stream", "X-Custom": "v", "Connection": "keep-alive, X-Custom"})
    assert r.status == 200 and r.header("x-echo") == "yes"
    e = r.json()
    assert e["method"] == "PUT" and e["path"] == "/base/a/b?x=1&y=%20"
    assert e["body"] == "raw\x00bytes"
    assert e["headers"]["content-type"] == "application/octet-stream"
    assert e["headers"]["x-forwarded-for"].endswith("127.0.0.1")
    assert e["headers"]["x-request-id"] == r.header("x-request-id")
    assert request(port, "GET", "/img/status/201").status == 201
    assert request(port, "DELETE", "/img/status/404").status == 404
    assert request(port, "GET", "/imgx").status == 404     # only whole path segments match


@pytest.mark.parametrize("web", ["nginx", "apache"])
def test_http_upstream_event_streams_are_not_buffered(gw, web):
    s = Stream(gw.server(web).port, "/img/events")
    try:
        assert s.status == 200
        events = read_events(s)
    finally:
        s.close()
    assert [d for _, d in events] == ["0", "1", "2", "3"]
    assert events[-1][0] - events[0][0] >= 0.5


def test_http_upstream_down_is_a_502(gw):
    port = gw.server("nginx").port
    r = request(port, "POST", "/dead/x", body="data", headers=JSON)
    assert r.status in (502, 503), r.body
    assert "imgdead" in r.json()["error"] and str(gw.dead_port) not in r.json()["error"]


def test_credentials_go_upstream_and_never_into_logs(gw):
    port = gw.server("nginx").port
    gw.keyed.clear_requests()
    r = post(port, "/v1/chat/completions", {"model": "keyed", "messages": [{"role": "user", "content": "x"}]},
             headers={"Authorization": "Bearer client-token"})
    assert r.status == 200, r.body
    sent = last_request(gw.keyed)["headers"]
    assert sent["authorization"] == f"Bearer {SECRET}"
    assert sent["x-extra"] == "one" and sent["x-other"] == "two"
    assert SECRET not in gw.llmcgi.log() and SECRET not in gw.llmcgi.access_log()


# ---------------------------------------------------------------------------- reload, managed child

def test_reload_adds_an_upstream(gw):
    port = gw.server("nginx").port
    extra = Standin("openai", model_ids=["newcomer"]).start()
    try:
        gw.llmcgi.write_config(gw.config(f"[upstream late]\ntype = openai\nurl = {extra.url}\nmodels = newcomer\n"))
        gw.llmcgi.signal(signal.SIGHUP)
        wait_for(lambda: post(port, "/v1/completions", {"model": "newcomer", "prompt": "x"}).status == 200,
                 "the new upstream to serve")
    finally:
        gw.llmcgi.write_config(gw.config())
        gw.llmcgi.signal(signal.SIGHUP)
        extra.stop()


def child_pids(marker):
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_managed_child_is_started_restarted_and_stopped():
    d = make_tmpdir("child-")
    port = free_port()
    marker = f"standin.py --flavor openai --port {port}"
    cmd = f"exec {sys.executable} {HERE}/standin.py --flavor openai --port {port} --model-id kid"
    l = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""
[upstream kid]
type = openai
url = http://127.0.0.1:{port}
models = kid
launch = {cmd}
launch_stop_timeout = 5s
health_interval = 1s
""").start()
    web = None
    try:
        web = WEB_SERVERS["nginx"](l.sock).start()
        wait_for(lambda: request(web.port, "GET", "/health").status == 200, "the child to answer its health check")
        assert post(web.port, "/v1/completions", {"model": "kid", "prompt": "x", "max_tokens": 3}).status == 200
        assert "READY" in l.log()                            # its output reaches llmcgi's log
        pids = child_pids(marker)
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: child_pids(marker) not in ([], pids), "the child to be restarted", timeout=30)
        wait_for(lambda: post(web.port, "/v1/completions", {"model": "kid", "prompt": "x"}).status == 200,
                 "the restarted child to serve", timeout=30)
        assert "exited" in l.log() or "killed" in l.log()
    finally:
        if web:
            web.stop()
        report = l.cleanup()
    assert not report, report
    wait_for(lambda: child_pids(marker) == [], "the child to stop with llmcgi", timeout=10)
