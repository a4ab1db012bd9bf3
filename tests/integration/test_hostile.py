"""Hostile input through real nginx and Apache: each gets a clear 4xx in the route's own error
shape (OpenAI's under /v1/, TGI's elsewhere), and llmcgi keeps serving the next request.

Covered: deep JSON nesting, huge numbers, NaN and Infinity, wrong types, duplicate keys,
invalid UTF-8, a 10 MB body, slow bodies and slow headers (slowloris), header and log
injection through model names and request ids, and path traversal in the model names that
implicit loading turns into directories. Every case goes to a local model, and the JSON ones
to a proxied model as well, because the gateway re-serializes what it validated.
"""

import json
import os
import re
import socket
import subprocess
import time

import pytest

from servers import (BUILDDIR, SRCDIR, TIMEOUT, WEB_SERVERS, Llmcgi, make_tmpdir, remove_tmpdir, request,
                     wait_for)
from standin import Standin

GEN = BUILDDIR / "tools" / "gen-gpt2"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
JSON = {"Content-Type": "application/json"}
THREADS = 4                         # llmcgi's responder threads: the slow clients outnumber them

for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)


class Hostile:
    def __init__(self):
        self.dir = make_tmpdir("llmcgi-hostile-")
        self.models = self.dir / "models"
        self.models.mkdir()
        subprocess.run([str(GEN), "--out", str(self.models / "tiny"), "--layers", "2", "--heads", "2", "--embd",
                        "64", "--positions", "128", "--seed", "5", "--tokenizer", str(TOKENIZER)],
                       check=True, capture_output=True, timeout=120)
        (self.dir / "secret").mkdir()
        (self.dir / "secret" / "config.json").write_text("{}")   # what a traversal would reach
        self.remote = Standin("openai", model_ids=["remote-x"]).start()
        self.sock = self.dir / "llmcgi.sock"
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=f"""\
default_model = tiny
models_dir = {self.models}

[model tiny]
path = {self.models / 'tiny'}
device = cpu
max_new_tokens = 8

[upstream remote]
type = openai
url = {self.remote.url}
models = remote-x
health_interval = 200ms
""")
        text = self.llmcgi.config.read_text()
        assert "threads = 8\n" in text
        self.llmcgi.config.write_text(text.replace("threads = 8\n", f"threads = {THREADS}\nbody_timeout = 2s\n", 1))
        self.llmcgi.start()
        self.web = {}

    def port(self, name):
        if name not in self.web:
            self.web[name] = WEB_SERVERS[name](self.sock).start()
            wait_for(lambda: request(self.web[name].port, "GET", "/health").status == 200, "llmcgi healthy")
        return self.web[name].port

    def close(self):
        for w in self.web.values():
            w.stop()
        report = self.llmcgi.cleanup()
        self.remote.stop()
        remove_tmpdir(self.dir)
        return report


@pytest.fixture(scope="module")
def hostile():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    h = Hostile()
    yield h
    report = h.close()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


@pytest.fixture(scope="module", params=sorted(WEB_SERVERS))
def site(request, hostile):
    return hostile.port(request.param)


def post_raw(port, path, body: bytes, headers=None):
    return request(port, "POST", path, body, dict(JSON, **(headers or {})))


def assert_error_shape(r, path, status=400, what=None):
    ok = (status,) if status != 400 or path.startswith("/v1/") else (400, 422)   # TGI validation: 422
    assert r.status in ok, (path, what, r.status, r.body[:300])
    body = r.json()
    if path.startswith("/v1/"):
        assert set(body) == {"error"} and body["error"]["message"], body
        assert body["error"]["type"] in ("invalid_request_error", "not_found_error"), body
    else:
        assert set(body) == {"error", "error_type"} and body["error"], body
    return body


def still_serving(port):
    r = request(port, "POST", "/v1/completions", json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 2}), JSON)
    assert r.status == 200, r.body
    r = request(port, "POST", "/v1/completions", json.dumps({"model": "remote-x", "prompt": "hi", "max_tokens": 2}),
                JSON)
    assert r.status == 200, r.body


# A body per dialect, with the hostile part put in by f(body).
ROUTES = [
    ("/v1/completions", lambda m: {"model": m, "prompt": "hi", "max_tokens": 2}),
    ("/v1/chat/completions", lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}],
                                        "max_tokens": 2}),
    ("/generate", lambda m: {"model": m, "inputs": "hi", "parameters": {"max_new_tokens": 2}}),
]
MODELS = ["tiny", "remote-x"]


def each_route():
    for path, make in ROUTES:
        for m in MODELS:
            yield path, m, make(m)


# ---------------------------------------------------------------------------- JSON

def test_deep_nesting(site):
    for depth in (65, 20000):           # 20000: 40 kB, under the tests' max_body
        for path, m, body in each_route():
            raw = json.dumps(body)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
            e = assert_error_shape(post_raw(site, path, raw.encode()), path)
            assert "nest" in json.dumps(e).lower() or "depth" in json.dumps(e).lower(), e
    still_serving(site)


HUGE = {
    "/v1/completions": [("max_tokens", "1e400"), ("max_tokens", "99999999999999999999999"), ("max_tokens", "-1"),
                        ("max_tokens", "9223372036854775807"), ("temperature", "1e308"), ("top_p", "1e400"),
                        ("n", "1099511627776"), ("seed", "18446744073709551616"), ("logprobs", "1000000000"),
                        ("max_tokens", "1.5")],
    "/v1/chat/completions": [("max_tokens", "1e400"), ("max_completion_tokens", "99999999999999999999"),
                             ("top_logprobs", "4294967297"), ("presence_penalty", "1e300")],
    "/generate": [("parameters", '{"max_new_tokens": 1e400}'), ("parameters", '{"max_new_tokens": 4294967298}'),
                  ("parameters", '{"top_k": -9223372036854775808}'), ("parameters", '{"temperature": 1e-400}'),
                  ("parameters", '{"best_of": 99999999999}')],
}


def test_huge_numbers(site):
    for path, m, body in each_route():
        for field, value in HUGE[path]:
            b = dict(body)
            b.pop(field, None)
            raw = json.dumps(b)[:-1] + f', "{field}": {value}}}'
            e = assert_error_shape(post_raw(site, path, raw.encode()), path)
            text = json.dumps(e)
            name = field if field != "parameters" else json.loads(value.replace("1e400", "1").replace("1e-400", "1"))
            names = [name] if isinstance(name, str) else list(name)
            assert "invalid JSON" in text or any(n in text for n in names), (path, m, field, value, e)
    still_serving(site)


def test_nan_and_infinity(site):
    for path, m, body in each_route():
        for lit in ("NaN", "Infinity", "-Infinity", "nan", "inf"):
            raw = json.dumps(body)[:-1] + f', "temperature": {lit}}}'
            e = assert_error_shape(post_raw(site, path, raw.encode()), path)
            assert "invalid JSON" in json.dumps(e), e
    still_serving(site)


WRONG = {
    "/v1/completions": [("prompt", {"a": 1}), ("prompt", [[1, "x"]]), ("max_tokens", "5"), ("stream", "yes"),
                        ("temperature", [0.5]), ("stop", 7), ("model", 5), ("n", True), ("logit_bias", [1])],
    "/v1/chat/completions": [("messages", "hi"), ("messages", [{"role": 1, "content": "x"}]),
                             ("messages", [{"role": "user", "content": {"x": 1}}]), ("messages", [[]]),
                             ("stream_options", "x"), ("seed", "1"), ("stop", [1, 2])],
    "/generate": [("inputs", 5), ("inputs", None), ("parameters", []), ("parameters", {"max_new_tokens": "3"}),
                  ("parameters", {"stop": 7}), ("parameters", {"do_sample": "no"}), ("stream", 1)],
}


def test_wrong_types(site):
    for path, m, body in each_route():
        for field, value in WRONG[path]:
            b = dict(body, **{field: value})
            assert_error_shape(post_raw(site, path, json.dumps(b).encode()), path, what=(m, field, value))
        for top in ("[]", '"x"', "5", "null", "true"):
            assert_error_shape(post_raw(site, path, top.encode()), path)
    still_serving(site)


def test_duplicate_keys_are_refused(site):
    """Which of two values wins is not something to guess: the rate limiter, the engine and
    an upstream must all read the same request."""
    for path, m, body in each_route():
        raw = json.dumps(body)[:-1] + ', "model": "other"}'
        e = assert_error_shape(post_raw(site, path, raw.encode()), path)
        assert "twice" in json.dumps(e), e
    raw = b'{"model": "tiny", "messages": [{"role": "user", "content": "a", "content": "b"}]}'
    assert_error_shape(post_raw(site, "/v1/chat/completions", raw), "/v1/chat/completions")
    # the same key in two different objects is fine, and so is a ":" inside a string
    raw = (b'{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "a: b, \\"c\\": d"}, '
           b'{"role": "assistant", "content": "e"}, {"role": "user", "content": "f"}]}')
    r = post_raw(site, "/v1/chat/completions", raw)
    assert r.status == 200, r.body
    still_serving(site)


def test_invalid_utf8(site):
    bad = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\xe2\x82"]
    for path, m, body in each_route():
        for seq in bad:
            raw = json.dumps(body).encode().replace(b'"hi"', b'"h' + seq + b'i"')
            e = assert_error_shape(post_raw(site, path, raw), path, what=(m, seq))
            assert "UTF-8" in json.dumps(e) or "invalid JSON" in json.dumps(e), e
        # an escaped lone surrogate is valid JSON but not a character: refused, not mangled
        raw = json.dumps(body).encode().replace(b'"hi"', b'"h\\ud800i"')
        assert_error_shape(post_raw(site, path, raw), path, what=(m, "lone surrogate"))
    r = request(site, "GET", "/v1/models/%ff%fe")
    assert r.status == 404 and r.json()["error"]["code"] == "model_not_found"
    still_serving(site)


def test_a_10_mb_body(site):
    for path, m, body in each_route():
        b = dict(body)
        big = "a " * (5 * 1024 * 1024)
        if "prompt" in b:
            b["prompt"] = big
        elif "messages" in b:
            b["messages"] = [{"role": "user", "content": big}]
        else:
            b["inputs"] = big
        r = post_raw(site, path, json.dumps(b).encode())
        assert_error_shape(r, path, status=413)
    still_serving(site)


# ---------------------------------------------------------------------------- slow clients

def test_slow_bodies_and_headers_do_not_hold_the_threads(site):
    """Three times as many slowloris connections as llmcgi has threads, half dribbling a body,
    half dribbling headers: the web server holds them, llmcgi's threads stay free."""
    socks = []
    try:
        for i in range(3 * THREADS):
            s = socket.create_connection(("127.0.0.1", site), timeout=TIMEOUT)
            if i % 2:
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100000\r\n\r\n{\"model\": \"tiny\", \"prompt\": \"")
            else:
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nX-Slow-1: a\r\n")
            socks.append(s)
        for _ in range(3):
            for s in socks:
                s.sendall(b"a" if socks.index(s) % 2 else b"X-Slow-2: b\r\n")
            time.sleep(0.2)
            still_serving(site)
    finally:
        for s in socks:
            s.close()
    still_serving(site)


# ---------------------------------------------------------------------------- injection

INJECT = ["tiny\r\nX-Injected: 1", "tiny\nSet-Cookie: a=b", "remote-x\r\n\r\n<html>", "tiny\u2028X-Injected: 2",
          "tiny\x00", "tiny\x1b[31m"]


def test_header_and_log_injection_through_model_names(site, hostile):
    ids = []
    for path, m, body in each_route():
        for name in INJECT:
            r = post_raw(site, path, json.dumps(dict(body, model=name)).encode())
            assert 400 <= r.status < 500, (path, name, r.status, r.body)
            assert r.header("x-injected") is None and r.header("set-cookie") is None, r.headers
            assert b"<html>" not in r.body or r.json(), r.body
            ids.append(r.header("x-request-id"))
    for name in INJECT:
        from urllib.parse import quote
        r = request(site, "GET", "/v1/models/" + quote(name, safe=""))
        assert r.status in (400, 404) and r.header("x-injected") is None, (name, r.status)
        if r.header("x-request-id"):    # nginx refuses %00 itself
            ids.append(r.header("x-request-id"))
            r.json()                    # valid JSON (and UTF-8) even for a name that is not
    assert all(ids)
    lines = lambda: [l for l in hostile.llmcgi.access_log().split("\n") if any(i in l for i in ids)]
    wait_for(lambda: len(lines()) >= len(ids), "the access log lines")
    for line in lines():
        assert re.match(r'^\S+ 127\.0\.0\.1 "(GET|POST) /\S*" [1-5]\d\d \d+ [\d.]+ [0-9a-f]+$', line), \
            f"one whole access-log line per request: {line!r}"
        assert "\x1b" not in line and "\x00" not in line, repr(line)
    assert sorted(l.split()[-1] for l in lines()) == sorted(ids)
    for line in hostile.llmcgi.log().splitlines():
        assert not line.startswith("X-Injected") and not line.startswith("Set-Cookie"), line
    still_serving(site)


def test_request_ids_are_not_echoed_raw(site):
    for rid in ("abc\x01def", "a" * 5000, "x\x7fy", "<script>"):
        r = request(site, "POST", "/v1/completions", json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 1}),
                    dict(JSON, **{"X-Request-Id": rid}))
        assert r.status in (200, 400), r.status
        echoed = r.header("x-request-id") or ""
        assert echoed != rid or rid == "<script>" or rid.isprintable(), echoed
        assert len(echoed) <= 200 and all(32 <= ord(c) < 127 for c in echoed), repr(echoed)
    still_serving(site)


TRAVERSAL = ["../secret", "..", "/etc/passwd", "tiny/../../secret", "..%2fsecret", "....//secret", "tiny/.",
             "./tiny", "~root", "tiny\\..\\..\\secret", "%2e%2e/secret", "secret\x00"]


def test_path_traversal_in_implicit_model_names(site, hostile):
    for name in TRAVERSAL:
        for path, make in ROUTES:
            r = post_raw(site, path, json.dumps(make(name)).encode())
            assert r.status in (400, 404), (name, path, r.status, r.body)
    log = hostile.llmcgi.log()
    assert "secret" not in log.replace("../secret", "").replace("secret\\u0000", "") or "loading" not in log, log
    assert "/etc/passwd" not in [l.split()[-1] for l in log.splitlines() if "loading" in l]
    still_serving(site)
