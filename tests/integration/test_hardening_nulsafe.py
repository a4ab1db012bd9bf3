"""TGI clients against a one-model server, and NUL (\\u0000) in JSON strings, through nginx.

* One model, no default_model: TGI's clients name no model, so with exactly
  one model configured (a local [model], or one upstream model) it is the
  default for /generate, /generate_stream, GET /info and POST /tokenize.
  Hugging Face's own client (text_generation.Client(url).generate and
  .generate_stream) works unchanged against it. With several models and no
  default_model the answer stays the clear 422.
* NUL in strings: a prompt, message content and stop sequences carry
  \\u0000 through parsing, tokenization (byte 0 is GPT-2 token 188), stop
  sequences and the answer (written back as \\u0000); a model name, which
  is an identifier, is refused with a clear error; no log line and no
  response header carries a raw NUL byte.
"""

import json
import os
import subprocess

import pytest

from servers import BUILDDIR, SRCDIR, Llmcgi, Nginx, make_tmpdir, remove_tmpdir, request, require_module
from standin import Standin

GEN = BUILDDIR / "tools" / "gen-gpt2"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
JSON = {"Content-Type": "application/json"}
CLIENT_TIMEOUT = 60
SMALL = ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128"]

for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)


@pytest.fixture(scope="module")
def model_dir():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-nulsafe-models-")
    subprocess.run([str(GEN), "--out", str(d / "tiny"), *SMALL, "--seed", "11", "--tokenizer", str(TOKENIZER)],
                   check=True, capture_output=True, timeout=120)
    yield d / "tiny"
    remove_tmpdir(d)


class Site:
    """One llmcgi with the given config lines, behind nginx."""

    def __init__(self, extra):
        self.dir = make_tmpdir("llmcgi-nulsafe-")
        self.sock = self.dir / "llmcgi.sock"
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=extra)
        self.web = None
        try:
            self.llmcgi.start()
            self.web = Nginx(self.sock).start()
        except BaseException:
            self.close()
            raise
        self.port = self.web.port

    def post(self, path, body, headers=JSON):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return request(self.port, "POST", path, data, headers)

    def close(self):
        if self.web:
            self.web.stop()
        report = self.llmcgi.cleanup()
        remove_tmpdir(self.dir)
        return report


def model_section(name, path):
    return f"[model {name}]\npath = {path}\ndevice = cpu\n"


@pytest.fixture(scope="module")
def one_local(model_dir):
    """One local model and no default_model."""
    s = Site(model_section("tiny", model_dir))
    yield s
    report = s.close()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


@pytest.fixture(scope="module")
def two_local(model_dir):
    """Two local models and no default_model."""
    s = Site(model_section("tiny", model_dir) + model_section("other", model_dir))
    yield s
    report = s.close()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


@pytest.fixture(scope="module")
def one_upstream():
    """No local model, one upstream serving one model, no default_model."""
    up = Standin("tgi", model_ids=["remote-x"]).start()
    s = Site(f"[upstream tgi]\ntype = tgi\nurl = {up.url}\nmodels = remote-x\nhealth_interval = 200ms\n")
    yield s
    report = s.close()
    up.stop()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


def tgi_client(port):
    text_generation = require_module("text_generation", "text-generation")
    return text_generation.Client(f"http://127.0.0.1:{port}", timeout=CLIENT_TIMEOUT)


# ---------------------------------------------------------------------------- one model is the default

def test_tgi_client_against_one_local_model(one_local):
    tc = tgi_client(one_local.port)
    whole = tc.generate("The quick brown fox", max_new_tokens=5)
    assert whole.details.generated_tokens == 5
    streamed = list(tc.generate_stream("The quick brown fox", max_new_tokens=5))
    assert len(streamed) == 5 and streamed[-1].generated_text == whole.generated_text
    assert "".join(t.token.text for t in streamed) == whole.generated_text


def test_info_and_tokenize_take_the_one_local_model(one_local):
    r = request(one_local.port, "GET", "/info")
    assert r.status == 200, r.body
    assert r.json()["model_id"] == "tiny"
    r = one_local.post("/tokenize", {"inputs": "Hello world"})
    assert r.status == 200, r.body
    assert [t["id"] for t in r.json()] == [15496, 995]


def test_tgi_client_against_one_upstream_model(one_upstream):
    tc = tgi_client(one_upstream.port)
    whole = tc.generate("Hello", max_new_tokens=3)
    assert whole.generated_text == " alpha beta gamma"
    streamed = list(tc.generate_stream("Hello", max_new_tokens=3))
    assert streamed[-1].generated_text == " alpha beta gamma"


def test_several_models_and_no_default_is_still_422(two_local):
    text_generation = require_module("text_generation", "text-generation")
    tc = tgi_client(two_local.port)
    with pytest.raises(text_generation.errors.ValidationError, match="several models"):
        tc.generate("Hello", max_new_tokens=3)
    r = request(two_local.port, "GET", "/info")
    assert r.status == 422 and "no default_model" in r.json()["error"], r.body
    r = two_local.post("/generate", {"inputs": "Hello", "model": "other", "parameters": {"max_new_tokens": 2}})
    assert r.status == 200, r.body
