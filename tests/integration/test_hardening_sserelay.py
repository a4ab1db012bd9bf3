"""Recorded upstream event streams replayed through real nginx + llmcgi, cut at every byte.

CI once relayed 4 of the 8 tokens of llama.cpp's completion stream, quietly, right after a
multi-byte character (test_llamacpp_upstream.py, ASan build). The cause was llama.cpp's
server: llama-cpp-python 0.3.36 (llama_cpp/server/app.py, get_event_publisher) ends a
stream with a bare "data: [DONE]" -- no finish_reason -- as soon as another request waits
for its model lock, and GET /v1/models, llmcgi's health probe of an `openai` upstream,
takes that lock (its known issue abetlen/llama-cpp-python#867). Reproduced against the
server directly: a GET /v1/models during a stream cuts it; with one every 200 ms, 19 of
100 eight-token streams were cut. Through nginx + llmcgi (ASan build, health_interval
200 ms, as test_llamacpp_upstream ran it) 4 of 200 streamed completions came back short
with no error; none of 200 with --interrupt_requests False. llmcgi passed that [DONE] on
as a clean end; it now ends the client's stream with an error event
(test_bare_done_is_not_a_finish; 6 of 200 cut, 6 with the error event).

These tests check that the relay itself loses nothing, whatever pieces libcurl's write
callback gets: a raw upstream (Replay) sends a recorded stream as chunked HTTP, cut in two
at every byte position (each piece its own write, flushed, a moment apart) and one byte
per write, and the client's text must be exactly the upstream's, in every dialect the
gateway relays: passed through (OpenAI completions and chat, TGI generate_stream) and
translated (to TGI from an OpenAI completions stream and from a chat stream, to
completions from TGI and from a chat stream); two with CRLF line ends too.

Streams (tests/fixtures/streams): llama-cpp-python's own completion and chat streams of
test_llamacpp_upstream's request (its gen-gpt2 seed 7 model: " bloss squarely\\u30ac..."),
transformers serve's chat stream of test_transformers_serve's request (models/llmcgi-tiny),
recorded from the real servers; and a TGI-shaped one written here (TGI_STREAM: raw UTF-8,
a 3- and a 4-byte character, as axum writes it), the tests record no real TGI stream.
"""

import json
import os
import socket
import socketserver
import threading
import time

import pytest

from servers import SRCDIR, Llmcgi, Nginx, make_tmpdir, remove_tmpdir, wait_for
from servers import request as http_request

STREAMS = SRCDIR / "tests" / "fixtures" / "streams"
JSON = {"Content-Type": "application/json"}

for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)


def _tgi_event(i, tid, text, last=None):
    ev = {"index": i, "token": {"id": tid, "text": text, "logprob": -0.5, "special": False},
          "generated_text": last, "details": None}
    if last is not None:
        ev["details"] = {"finish_reason": "length", "generated_tokens": i, "seed": None, "input_length": 4}
    return b"data:" + json.dumps(ev, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


_TGI_TOKENS = [" bloss", " squarely", "\u30ac", "eas", " \U0001F600", " fortunes", "\u00e9", " end"]
TGI_STREAM = b"".join(_tgi_event(i + 1, 100 + i, t, "".join(_TGI_TOKENS) if i == len(_TGI_TOKENS) - 1 else None)
                      for i, t in enumerate(_TGI_TOKENS))


def sse_data(body):
    """The data of each event of an event stream (bytes), as str."""
    out = []
    for block in body.decode("utf-8").replace("\r\n", "\n").split("\n\n"):
        lines = [ln[5:].removeprefix(" ") for ln in block.split("\n") if ln.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def upstream_text(body):
    """The generated text of a recorded upstream stream, in whatever dialect."""
    text = ""
    for d in sse_data(body):
        if d == "[DONE]":
            continue
        ev = json.loads(d)
        if "token" in ev:
            text += "" if ev["token"].get("special") else ev["token"]["text"]
        elif ev.get("choices"):
            c = ev["choices"][0]
            text += c.get("text") or (c.get("delta") or {}).get("content") or ""
    return text


def client_text(kind, body):
    """The text, finish and errors of llmcgi's answer to a client of `kind`."""
    text, finishes, errors, final = "", [], [], None
    for d in sse_data(body):
        if d == "[DONE]":
            continue
        ev = json.loads(d)
        if "error" in ev:
            errors.append(ev["error"])
        elif kind == "tgi":
            if not ev["token"].get("special"):
                text += ev["token"]["text"]
            if ev.get("generated_text") is not None:
                final = ev["generated_text"]
                finishes.append((ev.get("details") or {}).get("finish_reason", "?"))
        elif ev.get("choices"):
            c = ev["choices"][0]
            text += (c.get("text") if kind == "completions" else (c.get("delta") or {}).get("content")) or ""
            if c.get("finish_reason"):
                finishes.append(c["finish_reason"])
    return text, finishes, errors, final


class Replay(socketserver.ThreadingTCPServer):
    """A raw HTTP/1.1 upstream: every POST is answered with `self.body` as a chunked event
    stream written in the pieces `self.cuts` (byte offsets) makes, each piece its own
    flushed write `self.delay` seconds after the last; every GET with a model list."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, model):
        super().__init__(("127.0.0.1", 0), ReplayHandler)
        self.model, self.body, self.cuts, self.delay, self.posts = model, b"", [], 0.0, 0
        self.port = self.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def pieces(self):
        edges = [0] + sorted(self.cuts) + [len(self.body)]
        return [self.body[a:b] for a, b in zip(edges, edges[1:]) if b > a]


class ReplayHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection.settimeout(60)
        line = self.rfile.readline(8192)
        if not line:
            return
        method = line.split(b" ", 1)[0]
        length = 0
        while (h := self.rfile.readline(8192)) not in (b"\r\n", b"\n", b""):
            name, _, value = h.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        self.rfile.read(length)
        srv = self.server
        if method != b"POST":
            doc = json.dumps({"object": "list", "data": [{"id": srv.model, "object": "model"}],
                              "model_id": srv.model}).encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(doc), doc))
            return
        srv.posts += 1
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        self.wfile.flush()
        for piece in srv.pieces():
            if srv.delay:
                time.sleep(srv.delay)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def gw():
    d = make_tmpdir("llmcgi-sserelay-")
    ups = {"openai": Replay("llama"), "transformers-serve": Replay("ts"), "tgi": Replay("tgim")}
    extra = "".join(f"""
[upstream up{i}]
type = {t}
url = {u.url}
models = {u.model}
health_interval = 200ms
first_byte_timeout = 60s
""" for i, (t, u) in enumerate(ups.items()))
    llmcgi = Llmcgi(d / "llmcgi.sock", dir=d, extra=extra).start()
    web = Nginx(llmcgi.sock).start()
    try:
        yield {"port": web.port, "ups": ups}
    finally:
        web.stop()
        report = llmcgi.cleanup()
        for u in ups.values():
            u.shutdown()
            u.server_close()
        remove_tmpdir(d)
        assert not report, report


# (recorded stream, upstream type, client dialect)
CASES = [
    ("llamacpp-completions.sse", "openai", "completions"),      # passed through
    ("llamacpp-completions.sse", "openai", "tgi"),              # translated
    ("llamacpp-chat.sse", "openai", "chat"),                    # passed through
    ("transformers-serve-chat.sse", "transformers-serve", "chat"),      # passed through (+ [DONE])
    ("transformers-serve-chat.sse", "transformers-serve", "completions"),   # translated
    ("transformers-serve-chat.sse", "transformers-serve", "tgi"),       # translated
    ("tgi", "tgi", "tgi"),                                      # passed through
    ("tgi", "tgi", "completions"),                              # translated
    ("llamacpp-completions.sse+crlf", "openai", "completions"),     # CRLF line ends (sse-starlette's
    ("tgi+crlf", "tgi", "tgi"),                                     # default): a CR and its LF apart
]


def stream_body(name):
    base = name.removesuffix("+crlf")
    body = TGI_STREAM if base == "tgi" else (STREAMS / base).read_bytes()
    return body.replace(b"\n", b"\r\n") if name.endswith("+crlf") else body


def client_request(kind, model):
    if kind == "completions":
        return "/v1/completions", {"model": model, "prompt": "The quick brown fox", "max_tokens": 8, "stream": True}
    if kind == "chat":
        return "/v1/chat/completions", {"model": model, "max_tokens": 8, "stream": True,
                                        "messages": [{"role": "user", "content": "The quick brown fox"}]}
    return "/generate_stream", {"model": model, "inputs": "The quick brown fox", "parameters": {"max_new_tokens": 8}}


class Client:
    """Streamed requests to nginx, each read whole."""

    def __init__(self, port):
        self.port = port

    def post(self, path, body):
        r = http_request(self.port, "POST", path, json.dumps(body), JSON, timeout=60)
        assert r.status == 200, (r.status, r.body)
        return r.body


def check(kind, want, body, what):
    text, finishes, errors, final = client_text(kind, body)
    assert not errors and text == want and len(finishes) == 1, (what, text, want, finishes, errors, body[-600:])
    if kind == "tgi":
        assert final == want, (what, final, want)
    if kind != "tgi":
        assert body.rstrip().endswith(b"data: [DONE]"), (what, body[-200:])


def id_of(case):
    return f"{case[0].replace('.sse', '')}-to-{case[2]}"


@pytest.mark.parametrize("case", CASES, ids=id_of)
def test_split_in_two_at_every_byte(gw, case):
    name, utype, kind = case
    up, body = gw["ups"][utype], stream_body(name)
    want = upstream_text(body)
    assert want and ("\u30ac" in want or utype == "transformers-serve"), want
    path, req = client_request(kind, up.model)
    c = Client(gw["port"])
    up.body, up.delay = body, 0.001
    try:
        for cut in range(1, len(body)):
            up.cuts = [cut]
            check(kind, want, c.post(path, req), f"cut at byte {cut} of {len(body)}")
    finally:
        up.cuts, up.delay = [], 0.0


@pytest.mark.parametrize("case", CASES, ids=id_of)
def test_one_byte_per_write(gw, case):
    name, utype, kind = case
    up, body = gw["ups"][utype], stream_body(name)
    path, req = client_request(kind, up.model)
    up.body, up.cuts, up.delay = body, list(range(1, len(body))), 0.0002
    try:
        check(kind, upstream_text(body), Client(gw["port"]).post(path, req), "one byte per write")
    finally:
        up.cuts, up.delay = [], 0.0


@pytest.mark.parametrize("kind", ["completions", "chat"])
def test_bare_done_is_not_a_finish(gw, kind):
    """llama.cpp's interrupted stream: its chunks, then [DONE] with no finish_reason. The
    client's stream ends with an error event (then [DONE]), not quietly as if whole."""
    name = "llamacpp-completions.sse" if kind == "completions" else "llamacpp-chat.sse"
    events = (STREAMS / name).read_bytes().split(b"\n\n")
    cut = b"\n\n".join(events[:4]) + b"\n\ndata: [DONE]\n\n"
    up = gw["ups"]["openai"]
    up.body = cut
    path, req = client_request(kind, up.model)
    body = Client(gw["port"]).post(path, req)
    text, finishes, errors, _ = client_text(kind, body)
    assert text == upstream_text(cut) and text and not finishes, body
    assert len(errors) == 1 and "before the generation finished" in errors[0]["message"], body
    assert errors[0]["code"] == "upstream_error" and body.rstrip().endswith(b"data: [DONE]"), body
    # not streamed: nothing reached the client yet, so it is a 502, never a short answer
    r = http_request(gw["port"], "POST", path, json.dumps(dict(req, stream=False)), JSON, timeout=60)
    assert r.status == 502 and "before the generation finished" in r.json()["error"]["message"], r.body
