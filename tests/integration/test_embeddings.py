"""POST /v1/embeddings: local GPT-2 models' final hidden states, pooled, through real nginx with the official
openai client; and embeddings of upstream models, passed through to openai-type upstreams.

The model is the one tests/golden/make_embeddings_golden.py recorded transformers' GPT2Model on
(tools/gen-gpt2 with the same seed, the real GPT-2 tokenizer): every vector llmcgi answers is checked
against GPT2Model's last_hidden_state pooled the same way (tests/golden/embeddings_golden.json), to a
relative 1e-4 in float32:
* "emb": pooling mean, normalize on (the defaults),
* "emb-last": the same directory with pooling = last, normalize = off.
Covers the four input shapes (a string, strings, token ids, lists of token ids), encoding_format float and
base64 (the openai client asks for base64 by default and decodes it), usage, every bad input answered 400 in
OpenAI's error shape (dimensions, encoding_format, empty, mixed, too long, ids outside the vocabulary), an
unknown model, /metrics, and an openai-type upstream (tests/integration/standin.py) reached as is, while a
TGI upstream is refused with a clear 400.
"""

import base64
import json
import re
import struct
import subprocess

import pytest

from servers import BUILDDIR, SRCDIR, WEB_SERVERS, Llmcgi, make_tmpdir, remove_tmpdir, request, require_module, wait_for
from standin import Standin

GEN = BUILDDIR / "tools" / "gen-gpt2"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
GOLDEN = json.loads((SRCDIR / "tests" / "golden" / "embeddings_golden.json").read_text())
RECS = GOLDEN["texts"]
TEXTS = [r["text"] for r in RECS]
JSON = {"Content-Type": "application/json"}
TIMEOUT = 60


def close(got, want, tol=1e-4):
    """max |got - want| / max |want| <= tol."""
    assert len(got) == len(want), (len(got), len(want))
    scale = max(abs(w) for w in want)
    err = max(abs(g - w) for g, w in zip(got, want))
    assert err <= tol * scale, f"max error {err} against scale {scale}"


@pytest.fixture(scope="module")
def site():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-embeddings-")
    m = GOLDEN["model"]
    subprocess.run([str(GEN), "--out", str(d / "emb"), "--layers", str(m["layers"]), "--heads", str(m["heads"]),
                    "--embd", str(m["embd"]), "--positions", str(m["positions"]), "--vocab", str(m["vocab"]),
                    "--seed", str(m["seed"]), "--std", repr(m["std"]), "--tokenizer", str(TOKENIZER)],
                   check=True, capture_output=True, timeout=120)
    oai, tgi = Standin("openai", model_ids=["far"]).start(), Standin("tgi", model_ids=["tgi-model"]).start()
    llmcgi = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""\
[model emb]
path = {d}/emb
device = cpu
max_inputs = 16
max_batch_tokens = 16

[model emb-last]
path = {d}/emb
device = cpu
pooling = last
normalize = off

[upstream oai]
type = openai
url = {oai.url}
models = far

[upstream tgi]
type = tgi
url = {tgi.url}
models = tgi-model
""")
    web = None
    try:
        llmcgi.start()
        web = WEB_SERVERS["nginx"](llmcgi.sock).start()
        yield {"port": web.port, "llmcgi": llmcgi, "oai": oai}
    finally:
        if web:
            web.stop()
        report = llmcgi.cleanup()
        oai.stop()
        tgi.stop()
        remove_tmpdir(d)
        assert not report, f"sanitizer report from llmcgi:\n{report}"


def post(port, body, path="/v1/embeddings"):
    return request(port, "POST", path, json.dumps(body), JSON, timeout=TIMEOUT)


def client(site):
    openai = require_module("openai", "openai")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{site['port']}/v1", api_key="x", max_retries=0,
                         timeout=TIMEOUT)


def test_openai_client_float_equals_gpt2model_mean_pooled_and_normalized(site):
    res = client(site).embeddings.create(model="emb", input=TEXTS, encoding_format="float")
    assert res.model == "emb" and res.object == "list" and len(res.data) == len(TEXTS)
    for i, d in enumerate(res.data):
        assert d.index == i and d.object == "embedding"
        close(d.embedding, RECS[i]["mean_normalized"])
    assert res.usage.prompt_tokens == sum(len(r["ids"]) for r in RECS)
    assert res.usage.total_tokens == res.usage.prompt_tokens


def test_openai_client_base64_default_decodes_to_the_same_vectors(site):
    res = client(site).embeddings.create(model="emb", input=TEXTS[0])     # the client asks for base64
    close(res.data[0].embedding, RECS[0]["mean_normalized"])
    r = post(site["port"], {"model": "emb", "input": TEXTS[1], "encoding_format": "base64"})
    assert r.status == 200, r.body
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    vec = struct.unpack(f"<{len(raw) // 4}f", raw)
    close(vec, RECS[1]["mean_normalized"])
    assert len(vec) == GOLDEN["model"]["embd"]


def test_last_pooling_without_normalisation(site):
    r = post(site["port"], {"model": "emb-last", "input": TEXTS})
    assert r.status == 200, r.body
    for i, d in enumerate(r.json()["data"]):
        close(d["embedding"], RECS[i]["last"])


def test_token_id_inputs(site):
    r = post(site["port"], {"model": "emb", "input": RECS[4]["ids"]})
    assert r.status == 200, r.body
    close(r.json()["data"][0]["embedding"], RECS[4]["mean_normalized"])
    r = post(site["port"], {"model": "emb", "input": [RECS[0]["ids"], RECS[6]["ids"]]})
    assert r.status == 200, r.body
    a = r.json()
    close(a["data"][0]["embedding"], RECS[0]["mean_normalized"])
    close(a["data"][1]["embedding"], RECS[6]["mean_normalized"])
    assert a["usage"]["prompt_tokens"] == len(RECS[0]["ids"]) + len(RECS[6]["ids"])


@pytest.mark.parametrize("body,param,words", [
    ({"model": "emb", "input": "x", "dimensions": 16}, "dimensions", "Matryoshka"),
    ({"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format", "float or base64"),
    ({"model": "emb", "input": ""}, "input", "empty"),
    ({"model": "emb", "input": []}, "input", "empty list"),
    ({"model": "emb", "input": ["x", [1, 2]]}, "input", "mixes"),
    ({"model": "emb", "input": [[1, 2], []]}, "input", "empty list of token ids"),
    ({"model": "emb", "input": [1, 50257]}, "input", "token ids go from 0 to 50256"),
    ({"model": "emb", "input": [1, -2]}, "input", "not a token id"),
    ({"model": "emb", "input": 5}, "input", "string"),
    ({"model": "emb", "input": "word " * 200}, "input", "reads at most"),
    ({"model": "emb", "input": ["x"] * 17}, "input", "at most 16"),
    ({"model": "emb"}, None, "`input` is required"),
])
def test_bad_inputs_are_400_in_openai_shape(site, body, param, words):
    r = post(site["port"], body)
    assert r.status == 400, r.body
    e = r.json()["error"]
    assert words in e["message"], e
    assert e["type"] == "invalid_request_error"
    if param:
        assert e["param"] == param
    if "reads at most" in words:
        assert e["code"] == "context_length_exceeded"


def test_unknown_model_is_404(site):
    r = post(site["port"], {"model": "nope", "input": "x"})
    assert r.status == 404 and r.json()["error"]["code"] == "model_not_found", r.body


def test_openai_upstream_is_passed_through(site):
    res = client(site).embeddings.create(model="far", input=["abc", "hello"], encoding_format="float")
    assert res.model == "far"
    assert [d.embedding for d in res.data] == [[3.0, 0.0, 0.25], [5.0, 1.0, 0.25]]
    assert site["oai"].count("/v1/embeddings") >= 1
    r = post(site["port"], {"model": "tgi-model", "input": "x"})
    assert r.status == 400 and "no embeddings API" in r.json()["error"]["message"], r.body


def test_metrics_count_the_route_and_the_inputs(site):
    post(site["port"], {"model": "emb", "input": ["a", "b", "c"]})
    m = request(site["port"], "GET", "/metrics").body.decode()
    assert re.search(r'llmcgi_requests_total\{route="/v1/embeddings",status="200",model="emb"\} [1-9]', m), m[-3000:]
    n = re.search(r'llmcgi_embedded_inputs_total\{model="emb"\} (\d+)', m)
    assert n and int(n.group(1)) >= 3, m[-3000:]
