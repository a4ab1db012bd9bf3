"""Upstream failures as clients and operators see them, through real nginx (issue 19, items 4 and 12).

Item 4: a failed request or probe leaves only a category ("connect refused", "http 5xx", ...) on the
public /health and /status, the detail with the upstream's address goes to the error log, and a good
probe or request clears it; no error answer names an upstream's address, not even when the upstream's
own 5xx message does.

Item 12: the error names the limit that ran out -- connect_timeout, first_byte_timeout,
stream_idle_timeout, total_timeout -- the same words on every route (OpenAI, TGI, http pass-through),
before the first byte (a 504) and after it (an error event in the stream). Keep-alive comments are no
progress: a stream of nothing else runs into stream_idle_timeout, not total_timeout.

The stand-ins (standin.py) play the upstreams; "comments" mode sends only keep-alives.
"""

import json
import re
import socket
import struct

import pytest

from servers import Llmcgi, Nginx, Stream, free_port, make_tmpdir, remove_tmpdir, request, wait_for
from standin import Standin

JSON = {"Content-Type": "application/json"}
CATEGORIES = {"connect refused", "dns", "tls", "connect timeout", "first byte timeout", "stream idle timeout",
              "total timeout", "timeout", "dropped", "bad answer", "http 4xx", "http 5xx", "error"}
ADDRESS = re.compile(r"127\.0\.0\.1|localhost|http://|:\d{2,5}\b|port \d+")


class Setup:
    def __init__(self):
        self.slow = Standin("tgi", model_ids=["slow-model"]).start()
        self.flip = Standin("openai", model_ids=["flip"]).start()
        self.flip_port = self.flip.port
        self.dir = make_tmpdir("errors-")
        self.sock = self.dir / "llmcgi.sock"
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=self.config()).start()
        self.nginx = Nginx(self.sock).start()
        self.port = self.nginx.port

    def config(self):
        # idle: a short stream_idle_timeout, a long total one; total: the reverse; both never retry
        return f"""\
read_timeout = 1s

[upstream idle]
type = tgi
url = {self.slow.url}
models = idle
first_byte_timeout = 2s
stream_idle_timeout = 1s
total_timeout = 60s
retries = 0
health_interval = 1h
health_fall = 100

[upstream total]
type = tgi
url = {self.slow.url}
models = total
first_byte_timeout = 30s
stream_idle_timeout = 30s
total_timeout = 2s
retries = 0
health_interval = 1h
health_fall = 100

[upstream raw]
type = http
url = {self.slow.url}
path_prefix = /raw
first_byte_timeout = 2s
stream_idle_timeout = 1s
total_timeout = 60s
retries = 0
health_interval = 1h
health_fall = 100

[upstream flip]
type = openai
url = {self.flip.url}
models = flip
retries = 0
health_interval = 200ms
health_fall = 100
"""

    def close(self):
        self.nginx.stop()
        report = self.llmcgi.cleanup()
        self.slow.stop()
        self.flip.stop()
        remove_tmpdir(self.dir)
        return report


@pytest.fixture(scope="module")
def env():
    s = Setup()
    yield s
    report = s.close()
    assert not report, report


@pytest.fixture(autouse=True)
def clear_faults(request):
    yield
    if "env" in request.fixturenames:
        e = request.getfixturevalue("env")
        e.slow.set_fault("ok")
        if e.flip._server is not None:
            e.flip.set_fault("ok")


def post(port, path, body):
    return request(port, "POST", path, json.dumps(body), JSON)


def message(r):
    """The error text of an answer in either dialect."""
    e = r.json()["error"]
    return e["message"] if isinstance(e, dict) else e


def events(s):
    out = []
    while (ev := s.read_event()) is not None:
        out.append(ev[0].get("data"))
    return out


CHAT = lambda m: ("/v1/chat/completions", {"model": m, "messages": [{"role": "user", "content": "x"}],
                                           "max_tokens": 4, "stream": True})
COMPLETION = lambda m: ("/v1/completions", {"model": m, "prompt": "x", "max_tokens": 4, "stream": True})
TGI_STREAM = lambda m: ("/generate_stream", {"model": m, "inputs": "x", "parameters": {"max_new_tokens": 4}})


# ---------------------------------------------------------------------------- item 12: which limit

@pytest.mark.parametrize("route", [CHAT, COMPLETION, TGI_STREAM], ids=["chat", "completion", "generate_stream"])
def test_keepalive_comments_alone_run_into_stream_idle_timeout(env, route):
    """200 text/event-stream, then only ":" comments: no event ever comes. That is a stall
    (stream_idle_timeout, 1s here), not total_timeout (60s) and certainly not a connect timeout."""
    env.slow.set_fault("comments", seconds=0.2, **{"for": 30})
    path, body = route("idle")
    r = post(env.port, path, body)
    assert r.status == 504, r.body
    msg = message(r)
    assert "stream_idle_timeout" in msg and "upstream idle" in msg, msg
    assert "connect" not in msg and not ADDRESS.search(msg), msg


@pytest.mark.parametrize("route", [CHAT, TGI_STREAM], ids=["chat", "generate_stream"])
def test_keepalive_comments_after_the_first_event_end_the_stream_with_the_limit(env, route):
    """Two events reached the client, then only comments: an error event naming stream_idle_timeout,
    in the client's dialect, and a clean end."""
    env.slow.set_fault("comments", after=2, seconds=0.2, **{"for": 30})
    path, body = route("idle")
    s = Stream(env.port, path, headers=JSON, method="POST", body=json.dumps(body))
    try:
        assert s.status == 200
        data = events(s)
        assert s.eof
    finally:
        s.close()
    if path.startswith("/v1/"):
        assert data[-1] == "[DONE]", data
        err = json.loads(data[-2])["error"]
        msg = err["message"]
        assert err["code"] == "upstream_error"
    else:
        last = json.loads(data[-1])
        msg = last["error"]
        assert last["error_type"] == "generation"
    assert len(data) >= 3, data                         # the events before the stall came through
    assert "stream_idle_timeout" in msg and "mid-stream" in msg, msg


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"model": "total", "prompt": "x", "max_tokens": 4}),
    ("/generate", {"model": "total", "inputs": "x", "parameters": {"max_new_tokens": 4}}),
], ids=["completion", "generate"])
def test_an_answer_that_keeps_coming_runs_into_total_timeout_and_says_so(env, path, body):
    """Whitespace before the JSON every 0.2s for 30s: progress, so only total_timeout (2s) ends it,
    and the answer says total_timeout every time -- also when the thread's connection to the
    upstream was reused (that used to read "timed out connecting")."""
    for _ in range(3):
        for _ in range(3):                             # completed exchanges leave connections to reuse
            ok = post(env.port, path, body)
            assert ok.status == 200, ok.body
        env.slow.set_fault("comments", seconds=0.2, times=1, **{"for": 30})
        r = post(env.port, path, body)
        assert r.status == 504, r.body
        msg = message(r)
        assert "total_timeout" in msg and "connect" not in msg, msg


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"model": "idle", "prompt": "x", "max_tokens": 4}),
    ("/generate", {"model": "idle", "inputs": "x", "parameters": {"max_new_tokens": 4}}),
    ("/raw/generate", {"inputs": "x", "parameters": {"max_new_tokens": 4}}),
], ids=["completion", "generate", "http"])
def test_no_answer_is_first_byte_timeout_on_every_route(env, path, body):
    env.slow.set_fault("hang", seconds=30)
    r = post(env.port, path, body)
    assert r.status == 504, r.body
    msg = message(r)
    assert msg.endswith("did not start answering within first_byte_timeout"), msg
    assert not ADDRESS.search(msg), msg


def test_http_pass_through_names_the_limit_in_the_log(env):
    """An opaque pass-through stream cannot carry an error event; the log says which limit cut it."""
    env.slow.set_fault("comments", after=1, seconds=5, **{"for": 30})
    s = Stream(env.port, "/raw/generate_stream", headers=JSON, method="POST",
               body=json.dumps({"inputs": "x", "parameters": {"max_new_tokens": 4}}))
    try:
        assert s.status == 200
        s.read_rest()
    finally:
        s.close()
    wait_for(lambda: "upstream raw failed mid-answer: stalled for longer than stream_idle_timeout"
             in env.llmcgi.log(), "the log to name the limit")


# ---------------------------------------------------------------------------- item 4: no addresses

def replica(env, path="/health"):
    return request(env.port, "GET", path).json()["upstreams"]["flip"]


def test_a_dead_replica_shows_a_category_and_a_good_probe_clears_it(env):
    env.flip.stop()
    try:
        r = post(env.port, "/v1/chat/completions",
                 {"model": "flip", "messages": [{"role": "user", "content": "x"}]})
        assert r.status == 502, r.body
        assert "flip" in message(r) and not ADDRESS.search(r.body.decode()), r.body
        for path in ("/health", "/status?full"):
            body = request(env.port, "GET", path).body.decode()
            assert str(env.flip_port) not in body and "Failed to connect" not in body, body
            last = replica(env, path)["replicas"][0]["last_error"]
            assert last in CATEGORIES and last == "connect refused", last
        # the detail, address and all, is the operator's: in the error log
        wait_for(lambda: f"port {env.flip_port}" in env.llmcgi.log(), "the detail in the error log")
    finally:
        env.flip = Standin("openai", model_ids=["flip"], port=env.flip_port).start()
    wait_for(lambda: "last_error" not in replica(env)["replicas"][0], "a good probe to clear the last error")
    r = post(env.port, "/v1/chat/completions", {"model": "flip", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 200, r.body


def test_an_upstreams_5xx_words_stay_in_the_log(env):
    """A 5xx message may name the upstream's own hosts: the client gets the status, the log the words."""
    secret = "backend 10.9.8.7:8080 exploded"
    for code in (500, 503):
        env.flip.set_fault("status", code=code, message=secret, health=True)   # probes fail alike
        for path, body in (("/v1/chat/completions", {"model": "flip", "messages": [{"role": "user", "content": "x"}]}),
                           ("/generate", {"model": "flip", "inputs": "x"})):
            r = post(env.port, path, body)
            assert r.status == (503 if code == 503 else 502), r.body
            assert "10.9.8.7" not in r.body.decode() and f"answered {code}" in message(r), r.body
        last = replica(env)["replicas"][0].get("last_error")
        assert last == "http 5xx", last
    wait_for(lambda: secret in env.llmcgi.log(), "the upstream's words in the error log")
    env.flip.set_fault("ok")
    r = post(env.port, "/v1/chat/completions", {"model": "flip", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 200, r.body
    wait_for(lambda: "last_error" not in replica(env)["replicas"][0], "the last error to be cleared")


def fcgi_record(kind, content, rid=1):
    return struct.pack("!BBHHBx", 1, kind, rid, len(content), 0) + content


def fcgi_params(params):
    out = b""
    for k, v in params.items():
        k, v = k.encode(), v.encode()
        out += bytes([len(k)]) + (bytes([len(v)]) if len(v) < 128 else struct.pack("!I", len(v) | 1 << 31)) + k + v
    return fcgi_record(4, out) + fcgi_record(4, b"")


def fcgi_answer(sock):
    """STDOUT of request 1 until END_REQUEST: (status, headers dict, body bytes)."""
    f = sock.makefile("rb")
    out = b""
    while True:
        head = f.read(8)
        assert len(head) == 8, "the connection closed before END_REQUEST"
        _, kind, _, clen, plen = struct.unpack("!BBHHB", head[:7])
        content = f.read(clen + plen)[:clen]
        if kind == 6:
            out += content
        elif kind == 3:
            break
    head, _, body = out.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
    return int(headers.get("Status", "200").split()[0]), headers, body


def test_a_client_body_that_stops_is_a_408_not_the_upstreams_fault(env):
    """A web server that streams the client's body (Apache's mod_proxy_fcgi does; nginx buffers it), here
    on the raw FastCGI socket: the body announced as 40000 bytes stops after 20000 while llmcgi passes it
    through to the http upstream; read_timeout (1s here) cuts it. That is the client's 408, not an
    upstream failure (it used to be a 502 "upstream raw aborted" counted against the replica)."""
    raw = request(env.port, "GET", "/health").json()["upstreams"]["raw"]["replicas"][0]
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(30)
        c.connect(str(env.sock))
        c.sendall(fcgi_record(1, struct.pack("!HB5x", 1, 0)) + fcgi_params({
            "REQUEST_METHOD": "POST", "REQUEST_URI": "/raw/generate", "DOCUMENT_URI": "/raw/generate",
            "SCRIPT_NAME": "/raw/generate", "QUERY_STRING": "", "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "40000", "HTTP_HOST": "localhost"})
            + fcgi_record(5, b'{"inputs": "' + b"x" * 20000))
        status, headers, body = fcgi_answer(c)
    err = json.loads(body)["error"]
    assert status == 408, (status, body)
    assert "read_timeout" in err and not ADDRESS.search(err), body
    after = request(env.port, "GET", "/health").json()["upstreams"]["raw"]["replicas"][0]
    assert after["failures"] == raw["failures"] and after.get("last_error") == raw.get("last_error"), after
