"""Memory that comes back, through real nginx: after rounds of large requests on every responder
thread, llmcgi's RSS returns close to where it was before them, one large request's peak stays a
small multiple of its body, and a body whose JSON tree would dwarf it is refused (413) unparsed.

glibc keeps what a thread freed in that thread's arena: without fcgi_app/base/memtrim.c, three rounds
of 4 MB bodies on 4 threads left llmcgi several hundred MB above its size before them. The RSS
bounds are lifted under the sanitizers (ASan's quarantine keeps freed memory by design); the 413s
are checked everywhere. tests/soak/rss-hostile prints the same figures for several allocators.
"""

import concurrent.futures
import json
import os

import pytest

from servers import SRCDIR, Llmcgi, Nginx, make_tmpdir, proc_status, remove_tmpdir, request, reset_peak
from standin import Standin

JSON = {"Content-Type": "application/json"}
THREADS = 4
SANITIZERS = os.environ.get("LLMCGI_SANITIZERS") == "yes"
MODEL = SRCDIR / "models" / "llmcgi-tiny"


def chat(model, n, content):
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{content} {i:06d}"} for i in range(n)]
    return json.dumps({"model": model, "messages": msgs, "max_tokens": 2}, separators=(",", ":")).encode()


# ~4 MB each: 40,000 messages of ~100 bytes (accepted), 100,000 of ~40 (refused: a 100 MB tree)
CONTENT = "a message of about a hundred bytes, as a chat client would send one, with words"
SHORTER = "a message of some forty bytes, or so"   # 50,000 in 4 MB: accepted, close to the bound


class Server:
    """llmcgi (THREADS threads, max_body 8M, the shipped model and an OpenAI stand-in) behind nginx."""

    def __init__(self):
        self.dir = make_tmpdir("llmcgi-memory-")
        self.remote = Standin("openai", model_ids=["remote-x"]).start()
        self.llmcgi = Llmcgi(self.dir / "llmcgi.sock", dir=self.dir, extra=f"""\
default_model = tiny

[model tiny]
path = {MODEL}
device = cpu
threads = 1

[upstream remote]
type = openai
url = {self.remote.url}
models = remote-x
""")
        cfg = self.llmcgi.config
        cfg.write_text(cfg.read_text().replace("max_body = 64k", "max_body = 8M")
                       .replace("threads = 8", f"threads = {THREADS}"))
        self.llmcgi.start()
        self.nginx = Nginx(self.llmcgi.sock).start()
        self.port, self.pid = self.nginx.port, self.llmcgi.proc.pid

    def close(self):
        self.nginx.stop()
        report = self.llmcgi.cleanup()
        self.remote.stop()
        remove_tmpdir(self.dir)
        assert not report, "sanitizer report from llmcgi:\n" + report


@pytest.fixture(scope="module")
def srv():
    s = Server()
    yield s
    s.close()


def post(port, path, body):
    return request(port, "POST", path, body, headers=JSON, timeout=300)


def large_round(port):
    """One request of each large kind per thread, THREADS at a time; the statuses."""
    prompt = "hello world " * (4 << 20 >> 4)
    kinds = [("/v1/chat/completions", chat("remote-x", 40000, CONTENT)),
             ("/v1/chat/completions", chat("tiny", 40000, CONTENT)),
             ("/v1/completions", json.dumps({"model": "remote-x", "prompt": prompt, "max_tokens": 2}).encode()),
             ("/generate", json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 2}}).encode())]
    items = [kinds[(i + j) % len(kinds)] for j in range(THREADS) for i in range(len(kinds))]
    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        return sorted({post(port, p, b).status for p, b in items})


def small_round(port):
    body = json.dumps({"model": "remote-x", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    local = json.dumps({"inputs": "Hi", "parameters": {"max_new_tokens": 2}})
    items = [("/v1/chat/completions", body), ("/generate", local)] * THREADS * 2
    with concurrent.futures.ThreadPoolExecutor(THREADS * 2) as ex:
        return sorted({post(port, p, b).status for p, b in items})


def test_rss_comes_back_after_large_requests(srv):
    assert small_round(srv.port) == [200]           # every thread has done some work
    before = proc_status(srv.pid)["VmRSS"]
    for _ in range(3):
        # 200 from the upstream; the local model's context is far smaller than these (400/422)
        assert set(large_round(srv.port)) <= {200, 400, 422}
        assert small_round(srv.port) == [200]
        srv.remote._requests.clear()                # the stand-in keeps every request it got
        after = proc_status(srv.pid)["VmRSS"]
        if not SANITIZERS:
            assert after <= before * 1.2 + (24 << 20), \
                f"RSS {after >> 20} MB after a round of 4 MB requests, {before >> 20} MB before them"


@pytest.mark.parametrize("model", ["remote-x", "tiny"])
def test_one_large_request_peak(model):
    """On a fresh llmcgi (its arenas not yet grown by other large requests), VmHWM reset through
    /proc/PID/clear_refs, then one 4 MB request alone: its peak over the RSS before it stays under
    20 times its body."""
    s = Server()
    try:
        assert small_round(s.port) == [200]
        body = chat(model, 50000, SHORTER)     # a tree near the bound: ~13 times the body
        base = proc_status(s.pid)["VmRSS"]
        reset_peak(s.pid)
        r = post(s.port, "/v1/chat/completions", body)
        assert r.status in (200, 400), r.body[:300]  # the local model's context is far smaller (400)
        peak = proc_status(s.pid)["VmHWM"] - base
        print(f"peak of one {len(body) / 1e6:.1f} MB request for {model}: +{peak / 1e6:.1f} MB")
        if not SANITIZERS:
            assert peak <= 20 * len(body), f"peak +{peak / 1e6:.1f} MB for a {len(body) / 1e6:.1f} MB body"
    finally:
        s.close()


@pytest.mark.parametrize("path,model", [("/v1/chat/completions", "remote-x"), ("/v1/chat/completions", "tiny"),
                                        ("/generate", None)])
def test_body_whose_tree_would_dwarf_it_is_refused(srv, path, model):
    """100,000 tiny messages in 4 MB would make a ~100 MB tree: 413 in the route's shape, before parsing."""
    if model:
        body = chat(model, 100000, "m")
    else:
        body = json.dumps({"inputs": "Hi", "parameters": {"max_new_tokens": 2}, "junk": [{}] * 1000000},
                          separators=(",", ":")).encode()
    r = post(srv.port, path, body)
    assert r.status == 413, (r.status, r.body[:300])
    e = r.json()
    if path.startswith("/v1/"):
        assert e["error"]["type"] == "invalid_request_error" and "too many values" in e["error"]["message"], e
    else:
        assert e["error_type"] == "validation" and "too many values" in e["error"], e
    assert post(srv.port, path, chat(model or "tiny", 2, "Hi") if model else
                json.dumps({"inputs": "Hi", "parameters": {"max_new_tokens": 2}})).status == 200
