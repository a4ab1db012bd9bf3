"""How llmcgi reads outside input, through real nginx (and Apache where the web server matters).

* Escaped surrogate pairs: json-c 0.16 decodes \\uD836\\uDC00 and the 32767 other pairs of
  U+xD800-U+xDFFF in every supplementary plane as U+FFFD. Clients that escape non-ASCII (Python's
  json.dumps does by default) must get what they sent: /tokenize on an escaped string equals
  /tokenize on its raw UTF-8, and the same holds for what an upstream answers.
* A malformed query value (`?model=a%00b`, a bad %-escape, one too long) is a clear 4xx in the route's
  shape, not read as absent (which acted on the default model); so is a body's non-string `model`.
* A request path with %00 is a 400 in the path's dialect, through nginx (which refuses it itself) and
  Apache (whose shipped site maps paths as sent, mapping=encoded, so llmcgi answers it instead of Apache's
  bare 404); a %2F in a model name reaches llmcgi through both alike.
* Classification texts (/classify, /v1/moderations, the moderation service's input_text, embeddings'
  string inputs) carry \\u0000 with their length to the tokenizer, as generation does.
"""

import json
import os
import subprocess

import pytest

from servers import (BUILDDIR, SRCDIR, WEB_SERVERS, Llmcgi, make_tmpdir, remove_tmpdir, request, require,
                     wait_for)
from standin import Standin
from test_classify import CATEGORIES, gen_args, golden
from test_hardening_nulsafe import Site

GEN = BUILDDIR / "tools" / "gen-gpt2"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
JSON = {"Content-Type": "application/json"}
SMALL = ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128", "--std", "0.02"]

for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)


@pytest.fixture(scope="module")
def model_dir():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-jsonfix-models-")
    for name, args in {"tiny": [*SMALL, "--seed", "11"], "sentiment": gen_args(golden("single")),
                       "mod": gen_args(golden("multi"))}.items():
        subprocess.run([str(GEN), "--out", str(d / name), *args, "--tokenizer", str(TOKENIZER)], check=True,
                       capture_output=True, timeout=120)
    yield d
    remove_tmpdir(d)


@pytest.fixture(scope="module")
def site(model_dir):
    """A local generation model (the default), a classifier, a moderation model and a TGI stand-in upstream
    serving `remote`."""
    up = Standin("tgi", model_ids=["remote"]).start()
    s = Site(f"""\
default_model = tiny
moderation_model = mod
[model tiny]
path = {model_dir}/tiny
device = cpu
[model sentiment]
path = {model_dir}/sentiment
device = cpu
[model mod]
path = {model_dir}/mod
device = cpu
task = moderate
categories = {CATEGORIES}
[upstream tgi]
type = tgi
url = {up.url}
models = remote
health_interval = 200ms
""")
    s.up = up

    def ready():
        lm = request(s.port, "GET", "/health").json().get("local_models", {})
        return all(lm.get(n, {}).get("state") == "ready" for n in ("tiny", "sentiment", "mod"))
    wait_for(ready, "the models to load", timeout=60)
    yield s
    report = s.close()
    up.stop()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


# ---------------------------------------------------------------------------- escaped surrogate pairs

# U+EDBEB and U+10DFFF: json-c 0.16 alone made them U+FFFD; U+1D800 (Sutton SignWriting) and U+2D800 (CJK
# Extension F) are real characters in that range; U+3647D and U+1F600 are outside it (decoded right before)
PAIRED = ["\U000EDBEB", "a\U0001D800b\U0001DA8B", "\U0002D800\U0002DFFF", "\U0010DFFF", "\U0003647D", "\U0001F600"]


def tokenize(site, text, ascii_only):
    r = site.post("/tokenize", json.dumps({"inputs": text}, ensure_ascii=ascii_only).encode())
    assert r.status == 200, r.body
    return r.json()


def test_tokenize_escaped_pairs_equal_raw_utf8(site):
    replacement = [t["id"] for t in tokenize(site, "\ufffd", False)]
    for text in PAIRED:
        assert "\\ud" in json.dumps(text)                       # sent as escaped pairs
        escaped, raw = tokenize(site, text, True), tokenize(site, text, False)
        assert escaped == raw, (text, escaped, raw)
        assert replacement[0] not in [t["id"] for t in escaped], (text, escaped)


def test_escaped_prompt_reaches_the_upstream(site):
    """A client's escaped prompt reaches the upstream as the same characters."""
    up = site.up
    up.clear_requests()
    r = site.post("/generate", json.dumps({"inputs": "p\U000EDBEB", "model": "remote",
                                            "parameters": {"max_new_tokens": 3}}).encode())
    assert r.status == 200, r.body
    sent = [q["json"] for q in up.requests if q["path"] == "/generate"][-1]
    assert sent["inputs"] == "p\U000EDBEB", sent


def test_escaped_upstream_answer_reaches_the_client(site):
    """What the upstream answers (the stand-in writes JSON with Python's json.dumps: non-ASCII escaped)
    reaches the client unchanged, whole and streamed."""
    up = site.up
    try:
        up.set_fault("body", body={"generated_text": "x\U0001D800\U0010DFFFy",
                                   "details": {"finish_reason": "length", "generated_tokens": 3}})
        r = site.post("/v1/completions", {"model": "remote", "prompt": "a", "max_tokens": 3})
        assert r.status == 200, r.body
        assert r.json()["choices"][0]["text"] == "x\U0001D800\U0010DFFFy", r.body
        tok = {"id": 1, "text": "\U0002D800", "logprob": -0.1, "special": False}
        up.set_fault("body", events=[{"index": 1, "token": tok, "generated_text": None, "details": None},
                                     {"index": 2, "token": dict(tok, text="\U000EDBEB"), "generated_text": "",
                                      "details": {"finish_reason": "length", "generated_tokens": 2}}])
        r = site.post("/v1/completions", {"model": "remote", "prompt": "a", "max_tokens": 2, "stream": True})
        assert r.status == 200, r.body
        texts = [json.loads(line[6:])["choices"][0]["text"] for line in r.body.decode().split("\n")
                 if line.startswith("data: {") and '"choices":[{' in line]
        assert "".join(texts) == "\U0002D800\U000EDBEB", r.body
    finally:
        up.set_fault("ok")


# ---------------------------------------------------------------------------- malformed query values

@pytest.mark.parametrize("query", ["model=a%00b", "model=%zz", "model=a%4", "model=" + "x" * 300],
                         ids=["nul", "bad-escape", "cut-escape", "too-long"])
def test_malformed_model_query_is_a_clear_error(site, query):
    for method, path, body in [("GET", "/info", None), ("POST", "/tokenize", {"inputs": "a"})]:
        r = request(site.port, method, f"{path}?{query}", json.dumps(body) if body else None, JSON)
        assert r.status == 422, (path, query, r.body)
        assert r.json()["error_type"] == "validation" and "query parameter `model` is malformed" in \
            r.json()["error"], r.body
    r = request(site.port, "POST", f"/classify?{query}", json.dumps({"inputs": "a"}), JSON)
    assert r.status == 422 and "query parameter `model` is malformed" in r.json()["error"], r.body


def test_well_formed_model_query_still_works(site):
    assert request(site.port, "GET", "/info?model=tiny").json()["model_id"] == "tiny"
    assert request(site.port, "GET", "/info?model=").json()["model_id"] == "tiny"          # empty: the default
    r = request(site.port, "GET", "/info?model=t%69ny")
    assert r.status == 200 and r.json()["model_id"] == "tiny", r.body
    r = request(site.port, "GET", "/info?model=nope")
    assert r.status == 404 and "nope" in r.body.decode(), r.body
    r = request(site.port, "POST", "/classify?model=sentiment", json.dumps({"inputs": "a"}), JSON)
    assert r.status == 200, r.body


def test_body_model_must_be_a_name(site):
    for model in [5, "", ["tiny"], "x" * 300]:
        r = site.post("/tokenize", {"inputs": "a", "model": model})
        assert r.status == 422 and "`model` must be a model name" in r.json()["error"], (model, r.body)
    assert site.post("/tokenize", {"inputs": "a", "model": "tiny"}).status == 200


# ---------------------------------------------------------------------------- NUL in classification texts

def scores(r):
    assert r.status == 200, r.body
    return r.json()


def test_classify_carries_nul(site):
    """/classify on "a\0b": tokenized whole (a, NUL as token 188, b), not cut at the NUL or refused."""
    got = scores(site.post("/classify", {"inputs": ["a\0b", "a", "ab"], "model": "sentiment"}))
    assert got[0] != got[1] and got[0] != got[2], got
    again = scores(site.post("/classify", {"inputs": "a\0b", "model": "sentiment"}))
    assert again == got[0], (again, got)


def test_moderations_carry_nul(site):
    one = scores(site.post("/v1/moderations", {"input": "a\0b"}))["results"][0]["category_scores"]
    cut = scores(site.post("/v1/moderations", {"input": "a"}))["results"][0]["category_scores"]
    assert one != cut, one
    part = scores(site.post("/v1/moderations", {"input": [{"type": "text", "text": "a\0b"}]}))
    assert part["results"][0]["category_scores"] == one, part
    parts = scores(site.post("/v1/moderations", {"input": [{"type": "text", "text": "a\0"},
                                                           {"type": "text", "text": "b"}]}))
    joined = scores(site.post("/v1/moderations", {"input": "a\0\nb"}))
    assert parts["results"][0]["category_scores"] == joined["results"][0]["category_scores"], (parts, joined)
    service = site.post("/generate", {"input_text": "a\0b"})
    assert service.status == 200, service.body


def test_embeddings_carry_nul(site):
    """An embedding of "a\0b" is the embedding of the token ids a, NUL, b (64, 188, 65)."""
    text = scores(site.post("/v1/embeddings", {"model": "tiny", "input": "a\0b", "encoding_format": "float"}))
    ids = scores(site.post("/v1/embeddings", {"model": "tiny", "input": [64, 188, 65], "encoding_format": "float"}))
    assert text["data"][0]["embedding"] == ids["data"][0]["embedding"]
    assert text["usage"]["prompt_tokens"] == 3, text["usage"]


def test_responses_input_carries_nul(site):
    """The Responses API's `input` string shares the key: it reaches the prompt whole (a, NUL, b)."""
    def usage(text):
        return scores(site.post("/v1/responses", {"model": "tiny", "input": text, "max_output_tokens": 1,
                                                  "temperature": 0}))["usage"]["input_tokens"]
    assert usage("a\0b") == usage("a") + 2


# ---------------------------------------------------------------------------- %00 in the request path

def raw_get(port, target):
    """GET target on a raw socket (no client library normalizes it): status and parsed JSON body."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    finally:
        s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        body = dechunk(body)
    return int(head.split()[1]), json.loads(body)


def dechunk(b):
    out = b""
    while b:
        size, _, rest = b.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, b = out + rest[:n], rest[n + 2:]
    return out


@pytest.fixture(scope="module", params=sorted(WEB_SERVERS))
def bare(request):
    """llmcgi with no model behind each web server's shipped site."""
    s = Site("", web=WEB_SERVERS[request.param])
    s.name = request.param
    yield s
    report = s.close()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


def test_nul_in_path_is_400(bare):
    for target, openai in [("/in%00fo", False), ("/v1/models/a%00b", True), ("/v1/mo%00dels?x=1", True),
                           ("/generate%00", False)]:
        status, body = raw_get(bare.port, target)
        assert status == 400, (bare.name, target, status, body)
        msg = body["error"]["message"] if openai else body["error"]
        assert isinstance(msg, str) and msg, (bare.name, target, body)
        if bare.name == "apache":                               # llmcgi's own answer
            assert "%00" in msg, (target, body)


def test_nul_in_path_straight_over_fastcgi():
    """What llmcgi answers a web server that passes %00 on (libfcgi's own client, cgi-fcgi, as one)."""
    cgi_fcgi = require("cgi-fcgi", "libfcgi-bin")
    d = make_tmpdir("llmcgi-jsonfix-fcgi-")
    a = Llmcgi(d / "llmcgi.sock", dir=d).start()
    try:
        for uri, shape in [("/v1/models/a%00b", '"message":"malformed request target'),
                           ("/in%00fo", '"error":"malformed request target')]:
            env = {"REQUEST_METHOD": "GET", "REQUEST_URI": uri, "QUERY_STRING": "", "PATH": os.environ["PATH"]}
            r = subprocess.run([cgi_fcgi, "-bind", "-connect", str(d / "llmcgi.sock")], env=env,
                               capture_output=True, text=True, timeout=20)
            assert "Status: 400" in r.stdout and shape in r.stdout and "%00" in r.stdout, (uri, r.stdout)
    finally:
        assert not a.cleanup()


def test_encoded_slash_in_model_name_reaches_llmcgi(bare):
    status, body = raw_get(bare.port, "/v1/models/org%2Fname")
    assert status == 404 and body["error"]["code"] == "model_not_found" and "`org/name`" in body["error"]["message"], \
        (bare.name, body)
