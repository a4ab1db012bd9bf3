"""TGI clients against a one-model server, and NUL (\\u0000) in JSON strings, through nginx.

* One model, no default_model: TGI's clients name no model, so with exactly
  one model configured (a local [model], or one upstream model) it is the
  default for /generate, /generate_stream, GET /info and POST /tokenize.
  Hugging Face's own client (text_generation.Client(url).generate and
  .generate_stream) works unchanged against it. With several models and no
  default_model the answer stays the clear 422.
* NUL in strings: a prompt, message content and stop sequences carry
  \\u0000 through parsing, tokenization (byte 0 is GPT-2 token 188), stop
  sequences and the answer (written back as \\u0000), locally and through
  the gateway (a TGI stand-in upstream); a model name, which
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
# std 0.02, seed 11: greedy on the prompt NUL_PROMPT starts with a NUL of its own (token 188), so that a
# stop sequence with a NUL in it can be seen to match
SMALL = ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128", "--std", "0.02"]
NUL_PROMPT = "a\0\0\0"

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
    """One llmcgi with the given config lines, behind nginx (or the web server class `web`)."""

    def __init__(self, extra, web=Nginx):
        self.dir = make_tmpdir("llmcgi-nulsafe-")
        self.sock = self.dir / "llmcgi.sock"
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=extra)
        self.web = None
        try:
            self.llmcgi.start()
            self.web = web(self.sock).start()
        except BaseException:
            self.close()
            raise
        self.port = self.web.port

    def post(self, path, body, headers=JSON):
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
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
    s.up = up
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


def test_openai_routes_without_a_model_take_the_one_local_model(one_local):
    """Embeddings too: dispatch and the embeddings route pick the default the same way (the route
    once read default_model alone and answered 400 where dispatch had found the one model)."""
    r = one_local.post("/v1/embeddings", {"input": "Hello world"})
    assert r.status == 200 and r.json()["model"] == "tiny", r.body
    r = one_local.post("/v1/completions", {"prompt": "Hello", "max_tokens": 2})
    assert r.status == 200 and r.json()["model"] == "tiny", r.body


def test_several_models_and_no_model_named_is_a_clear_400_for_embeddings(two_local):
    r = two_local.post("/v1/embeddings", {"input": "Hello world"})
    assert r.status == 400 and "several models" in r.json()["error"]["message"], r.body


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


# ---------------------------------------------------------------------------- NUL in JSON strings

GOLDEN = SRCDIR / "tests" / "golden"


def golden_control_rows():
    """The golden corpus' strings (tests/golden/make_tokenizer_golden.py, Hugging Face's GPT2TokenizerFast on
    the real GPT-2 files) that hold NUL or another control byte and are valid UTF-8 (JSON's strings are)."""
    rows = []
    with open(GOLDEN / "tokenizer_corpus.jsonl") as fc, open(GOLDEN / "tokenizer_ids.jsonl") as fi:
        for c, i in zip(fc, fi):
            raw, ids = bytes.fromhex(json.loads(c)["hex"]), json.loads(i)
            if not any(b < 0x20 and b not in (0x0a,) for b in raw) or "text" in ids or len(ids["ids"]) > 100:
                continue
            try:
                rows.append((raw.decode("utf-8"), ids["ids"]))
            except UnicodeDecodeError:
                continue
    return rows


def raw_exchange(port, path, body):
    """POST body on a raw socket; the whole answer's bytes (head and body), nothing parsed or decoded."""
    import socket
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
    try:
        s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out
    finally:
        s.close()


def test_tokenize_nul_and_control_bytes_as_hugging_face(one_local):
    rows = golden_control_rows()
    assert sum("\0" in t for t, _ in rows) >= 10 and len({c for t, _ in rows for c in t if c < " "}) >= 10, \
        "the golden corpus lost its control-byte strings"
    for text, ids in rows:
        r = one_local.post("/tokenize", {"inputs": text})
        assert r.status == 200, (text, r.body)
        assert [t["id"] for t in r.json()] == ids, text
    r = one_local.post("/tokenize", {"inputs": "a\0b"})
    assert [(t["id"], t["text"]) for t in r.json()] == [(64, "a"), (188, "\0"), (65, "b")]
    assert b'"text":"\\u0000"' in r.body                        # written back as \u0000


def test_completion_with_nul_in_prompt_and_stop(one_local):
    openai = require_module("openai", "openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{one_local.port}/v1", api_key="x", max_retries=0,
                           timeout=CLIENT_TIMEOUT)
    prompt = NUL_PROMPT
    plain = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, echo=True)
    assert plain.choices[0].text.startswith(prompt)             # the prompt round-trips, NUL and all
    assert plain.usage.prompt_tokens == 4                       # a, 188, 188, 188: HF's ids
    gen = plain.choices[0].text[len(prompt):]
    assert gen.startswith("\0 ") and len(gen) > 3, gen          # the model's own NUL (see SMALL)
    # a stop string with a NUL in it ends the text where it starts
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, stop=["x", gen[:3]])
    assert r.choices[0].text == "" and r.choices[0].finish_reason == "stop", r.choices[0].text
    r = client.completions.create(model="tiny", prompt="Hello\0 world", max_tokens=8, temperature=0)
    text = r.choices[0].text
    assert len(text) > 3 and "\0" not in text, text
    # one that only a strlen() reading would find ("xy\0..." read as "xy") must not stop anything
    r = client.completions.create(model="tiny", prompt="Hello\0 world", max_tokens=8, temperature=0,
                                  stop=[text[:2] + "\0never"])
    assert r.choices[0].text == text and r.choices[0].finish_reason == "length", r.choices[0].text
    # streamed: the same text, NUL and all, and the same stop
    chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == gen
    chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, stream=True,
                                            stop=[gen[:2]]))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ""
    assert chunks[-1].choices[0].finish_reason == "stop"
    # chat: NUL in a message's content reaches the prompt, as the template renders it
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a\0b"}],
                                          max_tokens=3, temperature=0)
    rendered = one_local.post("/tokenize", {"inputs": "User: a\0b\nAssistant:"}).json()
    assert chat.usage.prompt_tokens == len(rendered) and 188 in [t["id"] for t in rendered], chat.usage
    # TGI: return_full_text gives the prompt back with its NUL
    r = one_local.post("/generate", {"inputs": "x\0y", "parameters": {"max_new_tokens": 2,
                                                                      "return_full_text": True}})
    assert r.status == 200, r.body
    assert r.json()["generated_text"].startswith("x\0y")
    r = one_local.post("/generate", {"inputs": prompt, "parameters": {"max_new_tokens": 8, "stop": [gen[:3]],
                                                                      "details": True}})
    assert r.status == 200, r.body
    assert r.json()["generated_text"] == "" and r.json()["details"]["finish_reason"] == "stop_sequence", r.body


def test_identifiers_still_refuse_nul(one_local):
    for path, body, what in [
        ("/v1/completions", {"model": "tiny\0x", "prompt": "a"}, "`model`"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user\0", "content": "a"}]}, "`role`"),
        ("/generate", {"inputs": "a", "parameters": {"max_new_tokens": 1}, "model\0": "x"}, "key"),
    ]:
        r = one_local.post(path, body)
        assert r.status == 400, (path, r.body)
        assert what in r.body.decode() and "\\u0000" in r.body.decode(), r.body


def test_no_raw_nul_in_logs_or_headers(one_local):
    bodies = [
        ("/generate", {"inputs": "a\0b", "parameters": {"max_new_tokens": 2, "stop": ["\0z"], "details": True}}),
        ("/generate_stream", {"inputs": "a\0b", "parameters": {"max_new_tokens": 2}}),
        ("/v1/completions", {"model": "tiny", "prompt": "\0", "max_tokens": 2, "stop": "\0\0", "echo": True}),
        ("/v1/completions", {"model": "tiny\0evil", "prompt": "a"}),
        ("/v1/chat/completions", {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "\0"}],
                                  "max_tokens": 2}),
    ]
    for path, body in bodies:
        out = raw_exchange(one_local.port, path, body)
        head, _, payload = out.partition(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0] or "evil" in json.dumps(body), head
        assert b"\0" not in head, head
        assert b"\0" not in payload, payload[:500]              # JSON writes it as \u0000
    for log in ("error.log", "access.log"):
        data = (one_local.dir / log).read_bytes()
        assert data and b"\0" not in data, log


def test_nul_through_the_gateway(one_upstream):
    """OpenAI completions translated to a TGI upstream: the prompt and the stop sequence reach it with their
    NULs, and a NUL in what it generates reaches the client, whole and streamed. (TGI itself is a stand-in:
    no real one runs here.)"""
    openai = require_module("openai", "openai")
    up = one_upstream.up
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{one_upstream.port}/v1", api_key="x", max_retries=0,
                           timeout=CLIENT_TIMEOUT)
    try:
        up.clear_requests()
        r = client.completions.create(model="remote-x", prompt="a\0b", max_tokens=3, stop=["\0z"])
        assert r.choices[0].text == " alpha beta gamma"
        sent = [q["json"] for q in up.requests if q["path"] == "/generate"][-1]
        assert sent["inputs"] == "a\0b" and sent["parameters"]["stop"] == ["\0z"], sent
        up.set_fault("body", body={"generated_text": "x\0y", "details": {"finish_reason": "length",
                                                                          "generated_tokens": 3}})
        r = client.completions.create(model="remote-x", prompt="a", max_tokens=3)
        assert r.choices[0].text == "x\0y", r.choices[0].text
        r = one_upstream.post("/generate", {"inputs": "p\0", "parameters": {"max_new_tokens": 3}})
        assert r.status == 200 and r.json()["generated_text"] == "x\0y", r.body
        tok = {"id": 188, "text": "\0", "logprob": -0.1, "special": False}
        up.set_fault("body", events=[{"index": 1, "token": tok, "generated_text": None, "details": None},
                                     {"index": 2, "token": dict(tok, text="z"), "generated_text": "\0z",
                                      "details": {"finish_reason": "length", "generated_tokens": 2}}])
        chunks = list(client.completions.create(model="remote-x", prompt="a", max_tokens=2, stream=True))
        assert "".join(c.choices[0].text for c in chunks if c.choices) == "\0z"
    finally:
        up.set_fault("ok")
