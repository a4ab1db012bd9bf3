"""A real OpenAI-compatible upstream: llama.cpp's server (llama-cpp-python[server]), type `openai`.

The server runs from the cached virtual environment tools/peer-env makes
(tests/peers/llamacpp.txt: llama.cpp built from source, and gguf); without
it the tests skip, or fail under LLMCGI_TESTS_REQUIRE_ALL / CI=true.
tools/gen-gpt2 writes a random-weight GPT-2, make_gguf_gpt2.py turns it into
a GGUF, and `python -m llama_cpp.server` serves it as `tiny` on a port of
its own; llmcgi learns the model from its /v1/models (no `models =`).
Driven through real nginx with the official `openai` client: chat and
completions, streamed and not, /v1/models, and the server killed in the
middle of a stream (a clean error event, the replica down, back once the
server is started again).
"""

import contextlib
import json
import os
import signal
import subprocess

import pytest

from servers import (BUILDDIR, SRCDIR, Llmcgi, Nginx, Stream, free_port, make_tmpdir, remove_tmpdir, request,
                     require_module, require_peer, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
JSON = {"Content-Type": "application/json"}
PROMPT = "The quick brown fox"
NO_EOS = {"50256": -100}        # random weights: keep greedy decoding off <|endoftext|>

for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)


# --interrupt_requests False: llama-cpp-python's server (0.3.36, llama_cpp/server/app.py
# get_event_publisher) ends a stream it is sending with a bare "data: [DONE]" -- no
# finish_reason, no error -- as soon as another request waits for its model lock
# (llama_outer_lock.locked()), and GET /v1/models takes that lock (get_llama_proxy;
# abetlen/llama-cpp-python#867).
# That is llmcgi's health probe of an `openai` upstream (health_path /v1/models, every
# 200 ms here), so a probe landing during a stream cut it short: the CI failure of
# test_completions_streamed_and_not (4 of 8 tokens relayed, under ASan only by chance).
# Reproduced against the server directly, without llmcgi: a GET /v1/models after the
# third chunk cut the stream after the fifth, and 19 of 100 8-token streams were cut with
# a GET /v1/models every 200 ms. llmcgi now ends such a stream with an error event
# (test_hardening_sserelay.py) and no longer probes a replica while it serves a request
# (test_hardening_probebusy.py runs the server with its default, interrupt_requests on);
# here the interruption is switched off, as for a server other clients use too.
class LlamaServer:
    def __init__(self, py, gguf, port, log, interrupt_requests=False):
        self.cmd = [py, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "tiny",
                    "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "1",
                    "--verbose", "False"] + ([] if interrupt_requests else ["--interrupt_requests", "False"])
        self.port, self.log, self.proc = port, log, None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_for(lambda: self.proc.poll() is not None or self.answers(), "llama.cpp's server to answer /v1/models",
                 timeout=120, interval=0.2)
        assert self.proc.poll() is None, open(self.log, errors="replace").read()[-3000:]
        return self

    def answers(self):
        try:
            return request(self.port, "GET", "/v1/models").status == 200
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


def up(port):
    """Is llmcgi's replica of upstream `llama` in rotation (GET /status)?"""
    r = request(port, "GET", "/status")
    assert r.status == 200, r.body
    return r.json()["upstreams"]["llama"]["replicas_down"] == 0


def make_tiny_gguf(py, d):
    """d/tiny.gguf: the random-weight GPT-2 (gen-gpt2 seed 7) these tests serve."""
    # 4096 positions and a 128-wide model: 4000 tokens take over 10 s on one
    # thread (900 took 3 s here), so the kill below, made as soon as the
    # first event came, lands in the middle of the generation
    subprocess.run([str(BUILDDIR / "tools" / "gen-gpt2"), "--out", str(d / "tiny"), "--layers", "2", "--heads", "2",
                    "--embd", "128", "--positions", "4096", "--seed", "7", "--tokenizer", str(TOKENIZER)],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([py, os.path.join(HERE, "make_gguf_gpt2.py"), str(d / "tiny"), str(d / "tiny.gguf")],
                   check=True, capture_output=True, timeout=300)
    return d / "tiny.gguf"


@contextlib.contextmanager
def behind_llmcgi(prefix, interrupt_requests=False):
    """A llama-cpp-python server on the tiny GGUF as upstream `llama` of llmcgi behind
    nginx (health_interval 200 ms), once llmcgi has learnt its model; yields
    {"web", "llmcgi", "server", "direct" (the server's port), "dir"}."""
    py = require_peer("llamacpp", "LLMCGI_LLAMACPP_PYTHON")
    d = make_tmpdir(prefix)
    make_tiny_gguf(py, d)
    port = free_port()
    server = LlamaServer(py, d / "tiny.gguf", port, d / "llama.log", interrupt_requests=interrupt_requests).start()
    l = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""
[upstream llama]
type = openai
url = http://127.0.0.1:{port}
health_interval = 200ms
health_fall = 1
first_byte_timeout = 60s
""").start()
    web = Nginx(l.sock).start()
    try:
        wait_for(lambda: "tiny" in [m["id"] for m in request(web.port, "GET", "/v1/models").json()["data"]],
                 "llmcgi to learn the model from llama.cpp's /v1/models", timeout=60, interval=0.2)
        yield {"web": web, "llmcgi": l, "server": server, "direct": port, "dir": d}
    finally:
        web.stop()
        report = l.cleanup()
        server.kill()
        remove_tmpdir(d)
        assert not report, report


@pytest.fixture(scope="module")
def setup():
    with behind_llmcgi("llamacpp-") as s:
        yield s


@pytest.fixture
def client(setup):
    openai = require_module("openai", "openai")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{setup['web'].port}/v1", api_key="x", max_retries=0,
                         timeout=120)


def direct(setup, path, body):
    r = request(setup["direct"], "POST", path, json.dumps(body), JSON, timeout=120)
    assert r.status == 200, r.body
    return r.json()


def test_models_lists_what_llamacpp_serves(client):
    assert "tiny" in [m.id for m in client.models.list().data]


def test_chat_equals_llamacpp_directly(setup, client):
    msgs = [{"role": "user", "content": PROMPT}]
    a = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0, logit_bias=NO_EOS)
    want = direct(setup, "/v1/chat/completions", {"model": "tiny", "messages": msgs, "max_tokens": 8,
                                                   "temperature": 0, "logit_bias": NO_EOS})
    assert a.model == "tiny" and a.choices[0].message.content == want["choices"][0]["message"]["content"]
    assert a.choices[0].finish_reason == "length" and a.usage.completion_tokens == 8


def test_chat_stream(setup, client):
    msgs = [{"role": "user", "content": PROMPT}]
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0,
                                                 logit_bias=NO_EOS, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    want = direct(setup, "/v1/chat/completions", {"model": "tiny", "messages": msgs, "max_tokens": 8,
                                                   "temperature": 0, "logit_bias": NO_EOS})
    assert text == want["choices"][0]["message"]["content"] and text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_completions_streamed_and_not(setup, client):
    a = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, logit_bias=NO_EOS)
    want = direct(setup, "/v1/completions", {"model": "tiny", "prompt": PROMPT, "max_tokens": 8, "temperature": 0,
                                              "logit_bias": NO_EOS})
    assert a.choices[0].text == want["choices"][0]["text"] and a.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0,
                                            logit_bias=NO_EOS, stream=True))
    relayed = "".join(c.choices[0].text for c in chunks if c.choices)
    # compared with llama.cpp's own stream of the same request, so that this
    # fails only when the relay loses something (CI once saw 4 of 8 tokens
    # relayed, cut right after a multi-byte character: llama.cpp's doing, see
    # LlamaServer); the non-streamed text is checked against both after
    r = request(setup["direct"], "POST", "/v1/completions",
                json.dumps({"model": "tiny", "prompt": PROMPT, "max_tokens": 8, "temperature": 0,
                            "logit_bias": NO_EOS, "stream": True}), JSON, timeout=120)
    assert r.status == 200, r.body
    direct_text = "".join(json.loads(line[5:])["choices"][0]["text"]
                          for line in r.body.decode().splitlines()
                          if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]")
                          and json.loads(line[5:]).get("choices"))
    assert relayed == direct_text, ("relayed:", relayed, "llama.cpp streamed directly:", direct_text)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert relayed == a.choices[0].text, (relayed, a.choices[0].text, "llama.cpp streamed directly:", direct_text)


def test_tgi_client_to_llamacpp(setup):
    r = request(setup["web"].port, "POST", "/generate", json.dumps({
        "model": "tiny", "inputs": PROMPT, "parameters": {"max_new_tokens": 8, "details": True}}), JSON, timeout=120)
    assert r.status == 200, r.body
    want = direct(setup, "/v1/completions", {"model": "tiny", "prompt": PROMPT, "max_tokens": 8, "temperature": 0})
    assert r.json()["generated_text"] == want["choices"][0]["text"], r.body


def test_killed_mid_stream_is_an_error_event_then_down_then_back(setup, client):
    web, server = setup["web"], setup["server"]
    s = Stream(web.port, "/v1/chat/completions", headers=JSON, method="POST", timeout=120, body=json.dumps({
        "model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4000,
        "temperature": 0, "logit_bias": NO_EOS, "stream": True}))
    try:
        assert s.status == 200
        first = s.read_event()
        assert first is not None and "choices" in json.loads(first[0]["data"]), first
        server.kill()
        data = []
        while (ev := s.read_event()) is not None:
            data.append(ev[0]["data"])
    finally:
        s.close()
    assert data[-1] == "[DONE]", data[-3:]
    err = json.loads(data[-2])["error"]
    assert "mid-stream" in err["message"] and err["code"] == "upstream_error", err
    wait_for(lambda: not up(web.port), "the replica to be marked down", timeout=30, interval=0.2)
    r = request(web.port, "POST", "/v1/chat/completions", json.dumps({
        "model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}), JSON)
    assert r.status in (502, 503) and r.json()["error"]["message"], r.body
    server.start()
    wait_for(lambda: up(web.port), "the replica to come back", timeout=60, interval=0.2)
    a = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": PROMPT}], max_tokens=4)
    assert a.choices[0].message.content is not None and a.usage.completion_tokens >= 1
