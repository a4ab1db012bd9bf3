"""The prefix cache (issue 27) through real nginx: a tiny generated GPT-2
served twice, [model tiny] with prefix_cache on (the default) and [model
tinyoff] with prefix_cache = off (same weights).

Covers:
* A second identical chat request reports usage.prompt_tokens_details.
  cached_tokens > 0 (the first 0) and gives the same greedy answer; the same
  request on tinyoff reports 0 both times and gives that answer too.
* The stream's usage chunk (stream_options.include_usage) carries it.
* /metrics: llmcgi_prefix_cache_hits_total and _queries_total moved by the
  answers' cached and prompt tokens, llmcgi_prefix_cache_blocks > 0;
  /health and /status show the same per model.
* TGI /generate with decoder_input_details: details.prefill has every prompt
  token on a repeated request too (prompt logprobs never come from the cache).
* A reload that changes the model's settings drops its cache whole.
"""

import json
import re
import signal
import subprocess

import pytest

from servers import BUILDDIR, SRCDIR, WEB_SERVERS, Llmcgi, Stream, make_tmpdir, remove_tmpdir, request, wait_for

GEN = BUILDDIR / "tools" / "gen-gpt2"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
JSON = {"Content-Type": "application/json"}
SMALL = ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128"]
SYSTEM = ("You are a terse assistant for a small shop that sells bread, cheese and apples. Answer in one short "
          "sentence, never more, and never mention the weather or the news of the day.")


class Site:
    def __init__(self):
        if not (TOKENIZER / "vocab.json").exists():
            pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
        self.dir = make_tmpdir("prefix-")
        subprocess.run([str(GEN), "--out", str(self.dir / "tiny"), *SMALL, "--seed", "27", "--tokenizer",
                        str(TOKENIZER)], check=True, capture_output=True, timeout=120)
        self.sock = self.dir / "llmcgi.sock"
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=self.config()).start()
        self.nginx = WEB_SERVERS["nginx"](self.sock).start()
        self.port = self.nginx.port
        self.wait_ready("tiny", "tinyoff")

    def config(self, tiny_extra=""):
        return f"""\
[model tiny]
path = {self.dir / "tiny"}
device = cpu
threads = 1
{tiny_extra}
[model tinyoff]
path = {self.dir / "tiny"}
device = cpu
threads = 1
prefix_cache = off
"""

    def models(self):
        return request(self.port, "GET", "/status").json()["models"]

    def wait_ready(self, *names):
        wait_for(lambda: all(self.models().get(n, {}).get("state") == "ready" for n in names), "models loaded",
                 interval=0.1)

    def close(self):
        self.nginx.stop()
        report = self.llmcgi.cleanup()
        remove_tmpdir(self.dir)
        return report


@pytest.fixture(scope="module")
def site():
    s = Site()
    yield s
    report = s.close()
    assert not report, report


def post(site, path, body):
    return request(site.port, "POST", path, json.dumps(body), JSON)


def chat(site, model, user, **kw):
    body = {"model": model, "max_tokens": 6, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], **kw}
    r = post(site, "/v1/chat/completions", body)
    assert r.status == 200, r.body
    return r.json()


def metric(site, name, model):
    text = request(site.port, "GET", "/metrics").body.decode()
    m = re.search(rf'^{name}\{{model="{model}"\}} (\S+)$', text, re.M)
    assert m, f"{name} for {model} not in /metrics"
    return float(m.group(1))


def test_second_identical_chat_hits(site):
    hits0 = metric(site, "llmcgi_prefix_cache_hits_total", "tiny")
    queries0 = metric(site, "llmcgi_prefix_cache_queries_total", "tiny")
    a = chat(site, "tiny", "How much is a loaf?")
    b = chat(site, "tiny", "How much is a loaf?")
    ua, ub = a["usage"], b["usage"]
    assert ua["prompt_tokens"] == ub["prompt_tokens"] > 32
    assert ua["prompt_tokens_details"]["cached_tokens"] == 0
    cached = ub["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < ub["prompt_tokens"] and cached % 16 == 0
    assert b["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]
    assert metric(site, "llmcgi_prefix_cache_hits_total", "tiny") - hits0 == cached
    assert metric(site, "llmcgi_prefix_cache_queries_total", "tiny") - queries0 == 2 * ua["prompt_tokens"]
    assert metric(site, "llmcgi_prefix_cache_blocks", "tiny") > 0

    # the cache off: nothing cached, the same answer
    for _ in range(2):
        c = chat(site, "tinyoff", "How much is a loaf?")
        assert c["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert c["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]
    assert metric(site, "llmcgi_prefix_cache_hits_total", "tinyoff") == 0
    assert metric(site, "llmcgi_prefix_cache_blocks", "tinyoff") == 0

    health = request(site.port, "GET", "/health").json()["local_models"]
    assert health["tiny"]["prefix_cache_hits"] >= cached and health["tiny"]["kv_blocks_cached"] > 0
    assert health["tinyoff"]["prefix_cache_hits"] == 0
    status = site.models()
    assert status["tiny"]["prefix_cache_hits"] >= cached and status["tinyoff"]["kv_blocks_cached"] == 0


def test_shared_system_prompt_next_question(site):
    chat(site, "tiny", "Do you sell pears?")
    r = chat(site, "tiny", "Do you sell plums?")
    # everything up to the user's question is the same: at least the system prompt's whole blocks
    assert r["usage"]["prompt_tokens_details"]["cached_tokens"] >= 32


def test_stream_usage_carries_cached_tokens(site):
    body = {"model": "tiny", "max_tokens": 4, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Any cheese left?"}]}
    usages = []
    for _ in range(2):
        s = Stream(site.port, "/v1/chat/completions", JSON, method="POST", body=json.dumps(body))
        assert s.status == 200
        while (ev := s.read_event()) is not None and ev[0].get("data") != "[DONE]":
            if "data" in ev[0] and json.loads(ev[0]["data"]).get("usage"):
                usages.append(json.loads(ev[0]["data"])["usage"])
        s.close()
    assert len(usages) == 2
    assert usages[1]["prompt_tokens_details"]["cached_tokens"] > 0


def test_tgi_prefill_details_unaffected(site):
    body = {"inputs": SYSTEM, "parameters": {"max_new_tokens": 3, "details": True, "decoder_input_details": True}}
    first = post(site, "/generate", {**body, "model": "tiny"}).json()
    second = post(site, "/generate", {**body, "model": "tiny"}).json()
    assert len(first["details"]["prefill"]) == len(second["details"]["prefill"]) > 32
    assert first["details"]["prefill"] == second["details"]["prefill"]
    assert first["generated_text"] == second["generated_text"]


def test_reload_drops_the_cache(site):
    chat(site, "tiny", "Are apples fresh?")
    assert chat(site, "tiny", "Are apples fresh?")["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    def tiny():
        return request(site.port, "GET", "/health").json()["local_models"].get("tiny", {})
    before = tiny()["requests"]
    assert tiny()["kv_blocks_cached"] > 0
    site.llmcgi.write_config(site.config("max_queue = 63\n"))
    site.llmcgi.signal(signal.SIGHUP)
    def reloaded():
        t = tiny()
        return t.get("state") == "ready" and t.get("requests", before) < before
    wait_for(reloaded, "tiny reloaded with new settings", interval=0.1)
    assert tiny()["kv_blocks_cached"] == 0 and tiny()["prefix_cache_hits"] == 0
    assert chat(site, "tiny", "Are apples fresh?")["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
