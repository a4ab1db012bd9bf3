"""Self-test of standin.py, the stand-in upstream servers (TGI, OpenAI, transformers serve) with fault
injection that the gateway tests run llmcgi against: their shapes, their quirks and each fault."""

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from standin import Standin, generate

HERE = Path(__file__).resolve().parent
T = 5  # seconds: bound on every socket operation here


@pytest.fixture(autouse=True)
def bounded():
    """No test here may run longer than 15 s."""
    def expire(*_):
        raise TimeoutError("test ran past 15 s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 15)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def standin(request):
    made = []

    def make(flavor, **kw):
        s = Standin(flavor, **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def call(s, method, path, body=None, headers=None, timeout=T):
    """(status, headers dict lower-case, body bytes) over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def events(body):
    """The SSE events' data fields of a stream body, as strings."""
    out = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data:"):
            out.append(block[len("data:"):])
    return out


def raw(s, request_bytes, timeout=T):
    """Sends raw bytes, reads until the server closes; returns all it sent."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=timeout) as sock:
        sock.sendall(request_bytes)
        data = b""
        while True:
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            data += got
        return data


def post_bytes(path, body):
    payload = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(payload), payload))


CHAT = {"model": "gpt2", "messages": [{"role": "user", "content": "say something"}], "max_tokens": 3}


# ------------------------------------------------------------------ generation

def test_generation_rules():
    g = generate("a b", 5)
    assert [t for _, t in g.tokens] == [" alpha", " beta", " gamma", " delta", " epsilon"]
    assert [i for i, _ in g.tokens] == [100, 101, 102, 103, 104] and g.finish == "length"
    assert generate("x EOS y", 10).finish == "eos" and len(generate("x EOS y", 10).tokens) == 3
    g = generate("x", 10, stops=["delta"])
    assert g.finish == "stop" and g.text == " alpha beta gamma delta"
    assert len(generate("x", 12).tokens) == 12 and generate("x", 12).tokens[8][1] == " alpha"


# ------------------------------------------------------------------------ TGI

def test_tgi_health_info_models(standin):
    s = standin("tgi", model_ids=["org/model"])
    assert call(s, "GET", "/health")[::2] == (200, b"")
    st, _, body = call(s, "GET", "/info")
    info = json.loads(body)
    assert st == 200 and info["model_id"] == "org/model" and info["max_stop_sequences"] == 4
    assert info["router"] == "text-generation-router" and info["max_total_tokens"] == 2048
    models = json.loads(call(s, "GET", "/v1/models")[2])
    assert [m["id"] for m in models["data"]] == ["org/model"]
    assert call(s, "GET", "/nope")[0] == 404


def test_tgi_generate_details(standin):
    s = standin("tgi")
    st, h, body = call(s, "POST", "/generate", {"inputs": "one two", "parameters": {
        "max_new_tokens": 3, "details": True, "seed": 42, "return_full_text": True}})
    out = json.loads(body)
    assert st == 200 and h["content-type"] == "application/json"
    assert out["generated_text"] == "one two alpha beta gamma"
    d = out["details"]
    assert (d["finish_reason"], d["generated_tokens"], d["seed"], d["prefill"]) == ("length", 3, 42, [])
    assert d["tokens"][0] == {"id": 100, "text": " alpha", "logprob": -0.5, "special": False}
    # no details unless asked; default budget 20; EOS
    out = json.loads(call(s, "POST", "/generate", {"inputs": "hi"})[2])
    assert "details" not in out and out["generated_text"].count(" ") == 20
    out = json.loads(call(s, "POST", "/", {"inputs": "an EOS here",
                                           "parameters": {"details": True}})[2])
    assert out["details"]["finish_reason"] == "eos_token" and out["details"]["generated_tokens"] == 3


def test_tgi_generate_stream(standin):
    s = standin("tgi")
    st, h, body = call(s, "POST", "/generate_stream", {"inputs": "x", "parameters": {
        "max_new_tokens": 5, "stop": ["gamma"], "details": True}})
    assert st == 200 and h["content-type"] == "text/event-stream"
    assert h["transfer-encoding"] == "chunked"
    assert body.startswith(b'data:{"index":1,')      # axum: no space after "data:"
    evs = [json.loads(e) for e in events(body)]
    assert len(evs) == 3 and "[DONE]" not in body.decode()
    assert evs[0]["token"]["text"] == " alpha" and evs[0]["generated_text"] is None
    assert evs[0]["details"] is None
    assert evs[-1]["generated_text"] == " alpha beta gamma"
    assert evs[-1]["details"]["finish_reason"] == "stop_sequence"
    assert evs[-1]["details"]["generated_tokens"] == 3
    # POST / with stream true is the same stream
    body = call(s, "POST", "/", {"inputs": "x", "stream": True, "parameters": {"max_new_tokens": 2}})[2]
    assert [json.loads(e)["index"] for e in events(body)] == [1, 2]


def test_tgi_validation(standin):
    s = standin("tgi")
    for params in ({"stop": ["a", "b", "c", "d", "e"]}, {"max_new_tokens": 0},
                   {"temperature": 0, "do_sample": True}, {"max_new_tokens": 5000}):
        st, _, body = call(s, "POST", "/generate", {"inputs": "x", "parameters": params})
        err = json.loads(body)
        assert st == 422 and err["error_type"] == "validation", params
        assert err["error"].startswith("Input validation error: ")
    assert call(s, "POST", "/generate", {"parameters": {}})[0] == 422
    assert call(s, "POST", "/generate", {"inputs": 3})[0] == 422
    # the stream validates inside the SSE stream: 200 and one error event
    st, _, body = call(s, "POST", "/generate_stream", {"inputs": "x", "parameters": {"max_new_tokens": 0}})
    assert st == 200 and json.loads(events(body)[0])["error_type"] == "validation"


def test_tgi_messages_api(standin):
    s = standin("tgi", model_ids=["org/model"])
    for model in ("tgi", "org/model", None):
        body = dict(CHAT, model=model) if model else {k: v for k, v in CHAT.items() if k != "model"}
        st, _, out = call(s, "POST", "/v1/chat/completions", body)
        out = json.loads(out)
        assert st == 200 and out["object"] == "chat.completion"
        assert out["choices"][0]["message"]["content"] == " alpha beta gamma"
    # the "model" field names a LoRA adapter: unknown ones fail
    st, _, out = call(s, "POST", "/v1/chat/completions", CHAT)
    assert st == 424 and json.loads(out) == {
        "error": "Request failed during generation: Server error: adapter not found: gpt2",
        "error_type": "generation"}
    st, h, out = call(s, "POST", "/v1/chat/completions",
                      dict(CHAT, model="tgi", stream=True, stream_options={"include_usage": True}))
    evs = events(out)
    assert st == 200 and out.endswith(b"data:[DONE]\n\n") and evs[-1] == "[DONE]"
    chunks = [json.loads(e) for e in evs[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    st, _, out = call(s, "POST", "/v1/completions", {"model": "tgi", "prompt": "a b", "max_tokens": 2})
    assert st == 200 and json.loads(out)["choices"][0]["text"] == " alpha beta"


# --------------------------------------------------------------------- OpenAI

def test_openai_shapes(standin):
    s = standin("openai", model_ids=["m1", "m2"])
    assert [m["id"] for m in json.loads(call(s, "GET", "/v1/models")[2])["data"]] == ["m1", "m2"]
    st, _, out = call(s, "POST", "/v1/chat/completions", dict(CHAT, model="m2", n=2))
    out = json.loads(out)
    assert st == 200 and out["id"].startswith("chatcmpl-") and out["model"] == "m2"
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": " alpha beta gamma"},
                                 "logprobs": None, "finish_reason": "length"}
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8}
    st, _, out = call(s, "POST", "/v1/completions", {"model": "m1", "prompt": "p EOS"})
    out = json.loads(out)
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["completion_tokens"] == 3
    st, _, out = call(s, "POST", "/v1/chat/completions", dict(CHAT, model="x"))
    assert st == 404 and json.loads(out)["error"] == {
        "message": "The model `x` does not exist.", "type": "invalid_request_error",
        "param": "model", "code": "model_not_found"}
    st, _, out = call(s, "POST", "/v1/chat/completions", {"model": "m1"})
    assert st == 400 and json.loads(out)["error"]["type"] == "invalid_request_error"


def test_openai_stream(standin):
    s = standin("openai")
    st, h, out = call(s, "POST", "/v1/chat/completions",
                      dict(CHAT, stream=True, stream_options={"include_usage": True}))
    assert st == 200 and h["content-type"] == "text/event-stream"
    assert out.endswith(b"data: [DONE]\n\n") and out.startswith(b"data: {")
    chunks = [json.loads(e) for e in events(out)[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) \
        == " alpha beta gamma"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_openai_api_key(standin):
    s = standin("openai", api_key="sk-test")
    assert call(s, "POST", "/v1/chat/completions", CHAT)[0] == 401
    st, _, out = call(s, "POST", "/v1/chat/completions", CHAT, {"Authorization": "Bearer nope"})
    assert st == 401 and json.loads(out)["error"]["code"] == "invalid_api_key"
    assert call(s, "POST", "/v1/chat/completions", CHAT, {"Authorization": "Bearer sk-test"})[0] == 200
    assert call(s, "GET", "/health")[0] == 200


# -------------------------------------------------------- transformers serve

def test_transformers_serve_quirks(standin):
    s = standin("transformers-serve")
    assert json.loads(call(s, "GET", "/health")[2]) == {"status": "ok"}
    st, _, out = call(s, "POST", "/v1/chat/completions", dict(CHAT, foo=1))
    assert st == 422 and json.loads(out) == {"detail": "Unexpected keys in the request: {'foo'}"}
    assert call(s, "POST", "/v1/completions", {"prompt": "x"})[0] == 404
    st, _, out = call(s, "POST", "/v1/chat/completions", dict(CHAT, stream=True))
    assert st == 200 and b"[DONE]" not in out
    chunks = [json.loads(e) for e in events(out)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "logprobs" not in chunks[1]["choices"][0]      # exclude_none
    st, _, out = call(s, "POST", "/v1/chat/completions", CHAT)
    assert st == 200 and json.loads(out)["choices"][0]["message"]["content"] == " alpha beta gamma"


# --------------------------------------------------------------------- faults

def test_fault_status_times(standin):
    s = standin("tgi")
    s.set_fault("status", code=503, times=2)
    got = [call(s, "POST", "/generate", {"inputs": "x"}) for _ in range(3)]
    assert [g[0] for g in got] == [503, 503, 200]
    assert set(json.loads(got[0][2])) == {"error", "error_type"}
    assert s.count("/generate") == 3
    assert call(s, "GET", "/health")[0] == 200          # health untouched by default
    o = standin("openai")
    o.set_fault("status", code=429)
    st, _, out = call(o, "POST", "/v1/chat/completions", CHAT)
    assert st == 429 and json.loads(out)["error"]["code"] == "rate_limit_exceeded"
    o.set_fault("status", code=502, health=True)
    assert call(o, "GET", "/health")[0] == 502 and call(o, "GET", "/v1/models")[0] == 502
    o.set_fault("ok")
    assert call(o, "GET", "/health")[0] == 200


def test_fault_drop(standin):
    s = standin("tgi")
    s.set_fault("drop", after=2)
    data = raw(s, post_bytes("/generate_stream", {"inputs": "x", "parameters": {"max_new_tokens": 6}}))
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"200 OK" in head and b"chunked" in head.lower()
    assert body.count(b"data:") == 2 and not body.endswith(b"0\r\n\r\n")
    data = raw(s, post_bytes("/generate", {"inputs": "x"}))
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0]
                 .split(b":")[1])
    assert len(body) < length
    with pytest.raises(http.client.IncompleteRead):
        call(s, "POST", "/generate", {"inputs": "x"})


def test_fault_error_event(standin):
    s = standin("openai")
    s.set_fault("error_event", after=2)
    out = call(s, "POST", "/v1/chat/completions", dict(CHAT, stream=True))[2]
    evs = events(out)
    assert len(evs) == 4 and "error" in json.loads(evs[2]) and evs[3].strip() == "[DONE]"


def test_fault_hang_and_close(standin):
    s = standin("openai")
    s.set_fault("hang")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        call(s, "POST", "/v1/chat/completions", CHAT, timeout=0.5)
    assert call(s, "GET", "/health")[0] == 200          # health still answers
    s.set_fault("close")
    with pytest.raises(http.client.RemoteDisconnected):         # empty reply
        call(s, "POST", "/v1/chat/completions", CHAT)
    s.set_fault("close", reset=True)
    with pytest.raises(ConnectionResetError):                   # RST
        call(s, "POST", "/v1/chat/completions", CHAT)
    s.set_fault("hang")
    with socket.create_connection(("127.0.0.1", s.port), timeout=T) as sock:
        sock.sendall(post_bytes("/v1/chat/completions", CHAT))
        time.sleep(0.2)
        s.stop()                                        # stop() ends a hang at once
        assert sock.recv(100) == b""
    assert time.monotonic() - t0 < 5


def test_fault_delay_and_trickle(standin):
    s = standin("tgi")
    s.set_fault("delay", seconds=0.4)
    t0 = time.monotonic()
    assert call(s, "POST", "/generate", {"inputs": "x"})[0] == 200
    assert 0.4 <= time.monotonic() - t0 < 2
    s.set_fault("trickle", seconds=0.15)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=T)
    conn.request("POST", "/generate_stream", json.dumps({"inputs": "x", "parameters": {"max_new_tokens": 3}}))
    r = conn.getresponse()
    arrivals = []
    while True:
        line = r.fp.readline()          # chunk-size lines, data, blank lines
        if line.startswith(b"data:"):
            arrivals.append(time.monotonic())
        if line in (b"0\r\n", b""):
            break
    conn.close()
    assert len(arrivals) == 3 and arrivals[2] - arrivals[0] >= 0.25
    t0 = time.monotonic()
    st, _, out = call(s, "POST", "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 2}})
    assert st == 200 and json.loads(out)["generated_text"] == " alpha beta"
    assert time.monotonic() - t0 >= 0.5                 # 4 pieces, 0.15 s before each


def test_fault_malformed(standin):
    s = standin("openai")
    s.set_fault("malformed")
    st, h, out = call(s, "POST", "/v1/chat/completions", CHAT)
    assert st == 200 and h["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(out)
    evs = events(call(s, "POST", "/v1/chat/completions", dict(CHAT, stream=True))[2])
    json.loads(evs[0]), json.loads(evs[1])
    with pytest.raises(ValueError):
        json.loads(evs[2])
    # role, 3 tokens, finish, the bad line, [DONE]
    assert evs[-1].strip() == "[DONE]" and len(evs) == 7


def test_fault_huge(standin):
    s = standin("tgi")
    s.set_fault("huge", size=3 << 20, count=5000)
    st, _, out = call(s, "POST", "/generate", {"inputs": "x"})
    assert st == 200 and json.loads(out)["generated_text"] == "x" * (3 << 20)
    st, _, out = call(s, "POST", "/generate_stream", {"inputs": "x"})
    evs = events(out)
    assert len(evs) == 5000 and json.loads(evs[-1])["generated_text"].count(" ") == 5000


def test_stop_refuses_then_restart_same_port(standin):
    s = standin("openai")
    port = s.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=T)
    conn.request("GET", "/health")
    conn.getresponse().read()                            # an open kept-alive connection
    s.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=T)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.request("GET", "/health")                   # the kept one was dropped
        conn.getresponse()
    conn.close()
    s.start()
    assert s.port == port and call(s, "GET", "/health")[0] == 200


def test_control_endpoints_and_records(standin):
    s = standin("tgi")
    st, _, out = call(s, "POST", "/_control", {"mode": "status", "code": 500, "times": 1})
    assert st == 200
    assert call(s, "POST", "/generate", {"inputs": "x"}, {"X-Trace": "t1"})[0] == 500
    assert call(s, "POST", "/generate", {"inputs": "x"})[0] == 200
    recs = json.loads(call(s, "GET", "/_requests")[2])
    assert [r["path"] for r in recs] == ["/generate", "/generate"]
    assert recs[0]["headers"]["x-trace"] == "t1" and recs[0]["json"] == {"inputs": "x"}
    assert "body" not in recs[0] and s.requests[0]["body"] == b'{"inputs": "x"}'
    assert call(s, "POST", "/_control", {"mode": "bogus"})[0] == 400
    assert call(s, "DELETE", "/_requests")[0] == 200 and s.count() == 0
    s.clear_requests()


def test_keepalive_throughput(standin):
    s = standin("openai")
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=T)
    t0 = time.monotonic()
    for _ in range(300):
        conn.request("POST", "/v1/chat/completions", json.dumps(CHAT))
        r = conn.getresponse()
        r.read()
        assert r.status == 200
    conn.close()
    assert time.monotonic() - t0 < 3, "fewer than 100 requests/s on a kept connection"
    assert s.count("/v1/chat/completions") == 300


def test_cli_ready_and_sigterm():
    p = subprocess.Popen([sys.executable, str(HERE / "standin.py"), "--flavor", "openai",
                          "--model-id", "a", "--model-id", "b"],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("READY ")
        port = int(line.split()[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=T)
        conn.request("GET", "/v1/models")
        assert [m["id"] for m in json.loads(conn.getresponse().read())["data"]] == ["a", "b"]
        conn.close()
        p.send_signal(signal.SIGTERM)
        assert p.wait(T) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(T)
