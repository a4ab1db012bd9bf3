"""Local GPT-2 sequence classifiers served by llmcgi through real nginx: POST /classify, OpenAI's
POST /v1/moderations (with the official openai client) and the moderation service's
POST /generate {"input_text"}.

The classifiers are the ones tests/golden/make_classifier_golden.py recorded transformers on
(tools/gen-gpt2 --classifier with the same seeds, the real GPT-2 tokenizer), so every score
llmcgi answers is checked against transformers' text-classification pipeline
(tests/golden/classifier_golden.json), not only its shape:
* "sentiment" (single-label, softmax, pad_token_id = <|endoftext|>) behind /classify,
* "mod" (multi-label, sigmoid, pad_token_id = 0 = "!") as the moderation model, its categories
  mapped in the config (one category taking the highest of two labels).
Covers the answers' shapes and values, one string or a list (run as one batch), top_k and
function_to_apply, texts that contain or end with the pad token, every kind of bad input (4xx in
the route's own error shape: OpenAI's on /v1/moderations, TGI's on /classify and /generate), a
generation model asked to classify and a classifier asked to generate, max_inputs, and /metrics.
A second llmcgi with [limits] requests_per_minute = 3 shows the rate limits apply to these
routes, each refusing in its own shape.
"""

import json
import math
import re
import subprocess

import pytest

from servers import (BUILDDIR, SRCDIR, WEB_SERVERS, Llmcgi, make_tmpdir, remove_tmpdir, request, require,
                     require_module, wait_for)

GEN = BUILDDIR / "tools" / "gen-gpt2"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
GOLDEN = json.loads((SRCDIR / "tests" / "golden" / "classifier_golden.json").read_text())
JSON = {"Content-Type": "application/json"}
TIMEOUT = 60
TEXTS = GOLDEN["texts"]
CATEGORIES = ("hate=hate harassment=harassment self-harm=self-harm sexual=sexual violence=violence "
              "harassment/threatening=harassment,violence")
THRESHOLD = 0.4


def golden(name):
    return next(m for m in GOLDEN["models"] if m["name"] == name)


def gen_args(g):
    args = ["--layers", str(g["layers"]), "--heads", str(g["heads"]), "--embd", str(g["embd"]),
            "--positions", str(g["positions"]), "--vocab", str(g["vocab"]), "--seed", str(g["seed"]),
            "--std", repr(g["std"]), "--classifier", str(g["num_labels"])]
    if g["labels"]:
        args += ["--labels", ",".join(g["labels"])]
    if g["problem_type"]:
        args += ["--problem-type", g["problem_type"]]
    if g["pad_token_id"] is not None:
        args += ["--pad-token-id", str(g["pad_token_id"])]
    return args


@pytest.fixture(scope="module")
def models():
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-classify-models-")
    specs = {"sentiment": gen_args(golden("single")), "mod": gen_args(golden("multi")),
             "gen": ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128"]}
    for name, args in specs.items():
        subprocess.run([str(GEN), "--out", str(d / name), *args, "--tokenizer", str(TOKENIZER)], check=True,
                       capture_output=True, timeout=120)
    yield d
    remove_tmpdir(d)


def config(models, limits=""):
    return f"""\
default_model = gen
moderation_model = mod

[model sentiment]
path = {models}/sentiment
device = cpu
max_inputs = 16
max_concurrent = 4
max_queue = 32

[model mod]
path = {models}/mod
device = cpu
task = moderate
categories = {CATEGORIES}
flag_threshold = {THRESHOLD}

[model gen]
path = {models}/gen
device = cpu
{limits}"""


class Site:
    def __init__(self, models, limits=""):
        self.dir = make_tmpdir("llmcgi-classify-")
        self.sock = self.dir / "llmcgi.sock"
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=config(models, limits))
        self.web = None
        try:
            self.llmcgi.start()
            self.web = WEB_SERVERS["nginx"](self.sock).start()
            self.port = self.web.port
            wait_for(self.ready, "the models to load", timeout=60)
        except BaseException:
            self.close()
            raise

    def ready(self):
        lm = request(self.port, "GET", "/health").json().get("local_models", {})
        bad = {n: m.get("error") for n, m in lm.items() if m.get("state") == "failed"}
        assert not bad, bad
        return all(lm.get(n, {}).get("state") == "ready" for n in ("sentiment", "mod", "gen"))

    def close(self):
        if self.web:
            self.web.stop()
        report = self.llmcgi.cleanup()
        remove_tmpdir(self.dir)
        return report


@pytest.fixture(scope="module")
def site(models):
    s = Site(models)
    yield s
    report = s.close()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


@pytest.fixture(autouse=True)
def llmcgi_is_fine(request):
    yield
    if "site" in request.fixturenames:
        s = request.getfixturevalue("site")
        assert s.llmcgi.proc.poll() is None, f"llmcgi exited: {s.llmcgi.log()[-3000:]}"
        report = s.llmcgi.sanitizer_report()
        assert not report, f"sanitizer report from llmcgi:\n{report}"


def post(port, path, body, headers=None):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return request(port, "POST", path, data, dict(JSON, **(headers or {})), timeout=TIMEOUT)


def curl(port, path, body):
    r = subprocess.run([require("curl", "curl"), "-sS", "--max-time", str(TIMEOUT), "-H",
                        "Content-Type: application/json", "--data-binary", "@-", f"http://127.0.0.1:{port}{path}"],
                       input=json.dumps(body).encode(), capture_output=True, timeout=TIMEOUT + 10)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def same_ranking(got, want, tol=1e-4):
    """got and want: lists of {"label","score"}, highest first (labels of near-equal scores may swap)."""
    assert len(got) == len(want), (got, want)
    by_label = {w["label"]: w["score"] for w in want}
    for i, g in enumerate(got):
        assert abs(g["score"] - by_label[g["label"]]) <= tol, (g, want)
        assert abs(g["score"] - want[i]["score"]) <= tol, (i, got, want)


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def moderation_want(i):
    """What /v1/moderations must answer for TEXTS[i], from transformers' logits and the config."""
    g = golden("multi")
    s = dict(zip(g["labels"], (sigmoid(z) for z in g["singles"][i]["logits"])))
    cats = {}
    for part in CATEGORIES.split():
        cat, labels = part.split("=")
        cats[cat] = max(s[l] for l in labels.split(","))
    return cats


# ---------------------------------------------------------------------------- /classify

def test_classify_matches_the_pipeline(site):
    pipe = golden("single")["pipeline"]
    for start in range(0, len(TEXTS), 7):       # lists run as one batch; max_inputs is 16
        r = post(site.port, "/classify", {"inputs": TEXTS[start:start + 7], "model": "sentiment"})
        assert r.status == 200, r.body
        assert r.header("x-model-id") == "sentiment"
        got = r.json()
        assert len(got) == len(TEXTS[start:start + 7])
        for k, ranking in enumerate(got):
            same_ranking(ranking, pipe[start + k])


def test_classify_one_string_with_curl_and_options(site):
    pipe = golden("single")["pipeline"]
    got = curl(site.port, "/classify?model=sentiment", {"inputs": TEXTS[1]})
    assert isinstance(got, list) and isinstance(got[0], dict), "one string: one list of {label, score}"
    same_ranking(got, pipe[1])
    got = curl(site.port, "/classify", {"inputs": [TEXTS[1]], "model": "sentiment", "parameters": {"top_k": 1}})
    assert len(got) == 1 and len(got[0]) == 1 and got[0][0]["label"] == pipe[1][0]["label"]
    got = curl(site.port, "/classify", {"inputs": TEXTS[1], "model": "sentiment", "top_k": 1,
                                        "parameters": {"top_k": None}})
    assert len(got) == len(pipe[1]), "parameters.top_k = null: every label, whatever the top level says"
    got = curl(site.port, "/classify", {"inputs": TEXTS[2], "model": "sentiment", "top_k": 2,
                                        "parameters": {"function_to_apply": "none"}})
    logits = golden("single")["singles"][2]["logits"]
    labels = golden("single")["labels"]
    want = sorted(zip(labels, logits), key=lambda x: -x[1])[:2]
    assert [(g["label"], round(g["score"], 4)) for g in got] == [(l, round(z, 4)) for l, z in want]


def test_texts_with_the_pad_token_are_pooled_before_it(site):
    """Texts 6-10 hold <|endoftext|> (sentiment's pad) or "!" (mod's pad), inside, at the end, or only that."""
    r = post(site.port, "/classify", {"inputs": TEXTS[6:11], "model": "sentiment"})
    assert r.status == 200, r.body
    for k, ranking in enumerate(r.json()):
        same_ranking(ranking, golden("single")["pipeline"][6 + k])
    r = post(site.port, "/classify", {"inputs": TEXTS[6:12], "model": "mod"})
    assert r.status == 200, r.body
    for k, ranking in enumerate(r.json()):
        same_ranking(ranking, golden("multi")["pipeline"][6 + k])


# ---------------------------------------------------------------------------- /v1/moderations

def test_moderations_with_the_openai_client(site):
    openai = require_module("openai", "openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{site.port}/v1", api_key="x", max_retries=0, timeout=TIMEOUT)
    res = client.moderations.create(input=TEXTS[:8])
    assert res.model == "mod" and res.id.startswith("modr-") and len(res.results) == 8
    for i, result in enumerate(res.results):
        want = moderation_want(i)
        scores = result.category_scores.model_dump(by_alias=True) if hasattr(result.category_scores, "model_dump") \
            else dict(result.category_scores)
        flags = result.categories.model_dump(by_alias=True) if hasattr(result.categories, "model_dump") \
            else dict(result.categories)
        for cat, s in want.items():
            assert abs(scores[cat] - s) <= 1e-4, (i, cat, scores[cat], s)
            assert flags[cat] == (s >= THRESHOLD), (i, cat)
        assert result.flagged == any(s >= THRESHOLD for s in want.values())
    one = client.moderations.create(input=TEXTS[4], model="mod")
    assert len(one.results) == 1
    with pytest.raises(openai.BadRequestError) as e:
        client.moderations.create(input=[])
    assert "empty list" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.moderations.create(input="hi", model="omni-moderation-latest")


def test_moderations_raw_shape_and_text_parts(site):
    r = post(site.port, "/v1/moderations", {"input": [TEXTS[0], TEXTS[1]]})
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"id", "model", "results"}
    assert [set(x) for x in body["results"]] == [{"flagged", "categories", "category_scores"}] * 2
    for i in range(2):
        for cat, s in moderation_want(i).items():
            assert abs(body["results"][i]["category_scores"][cat] - s) <= 1e-4
    # a list of content parts is one input with one result, as in OpenAI's API
    r = post(site.port, "/v1/moderations", {"input": [{"type": "text", "text": TEXTS[0]}]})
    assert r.status == 200 and len(r.json()["results"]) == 1, r.body
    for cat, s in moderation_want(0).items():
        assert abs(r.json()["results"][0]["category_scores"][cat] - s) <= 1e-4
    r = post(site.port, "/v1/moderations", {"input": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
    assert r.status == 200 and len(r.json()["results"]) == 1, r.body
    r = post(site.port, "/v1/moderations", {"input": [{"type": "text", "text": TEXTS[0]}, TEXTS[1]]})
    assert r.status == 400 and "mixes" in r.json()["error"]["message"], r.body


# ---------------------------------------------------------------------------- the moderation service's shape

def test_generate_input_text(site):
    r = post(site.port, "/generate", {"input_text": TEXTS[4]})
    assert r.status == 200, r.body
    v = r.json()
    want = moderation_want(4)
    assert v["model_id"] == "mod"
    assert v["flagged"] == any(s >= THRESHOLD for s in want.values())
    assert all(abs(v["category_scores"][c] - s) <= 1e-4 for c, s in want.items())
    top = golden("multi")["pipeline"][4][0]
    assert v["label"] == top["label"] and abs(v["score"] - top["score"]) <= 1e-4
    same_ranking(v["scores"], golden("multi")["pipeline"][4])
    r = post(site.port, "/generate", {"input_text": TEXTS[:3]})
    assert r.status == 200 and len(r.json()) == 3
    # the other shapes of POST /generate still generate
    r = post(site.port, "/generate", {"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
    assert r.status == 200 and "generated_text" in r.json(), r.body


# ---------------------------------------------------------------------------- bad input

def openai_error(r, status, words):
    assert r.status == status, (r.status, r.body)
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and words in e["message"], e


def tgi_error(r, status, words):
    assert r.status == status, (r.status, r.body)
    e = r.json()
    assert set(e) == {"error", "error_type"} and words in e["error"], e


def test_bad_input_is_a_clear_4xx_in_each_routes_shape(site):
    p = site.port
    long_text = "word " * 200                   # > 128 positions
    for path, field, check in (("/v1/moderations", "input", openai_error), ("/classify", "inputs", tgi_error),
                               ("/generate", "input_text", tgi_error)):
        status = 400 if check is openai_error else 422
        extra = {"model": "sentiment"} if path == "/classify" else {}
        check(post(p, path, dict(extra, **{field: []})), status, "empty list")
        check(post(p, path, dict(extra, **{field: 7})), status, "must be a string")
        check(post(p, path, dict(extra, **{field: ["ok", 3]})), status, f"`{field}[1]` must be a string")
        check(post(p, path, dict(extra, **{field: ""})), status, "is empty")
        check(post(p, path, dict(extra, **{field: ["a", long_text]})), status, "tokens; model")
        if path != "/generate":
            check(post(p, path, dict(extra)), status, f"`{field}` is required")
            check(post(p, path, "[1, 2]"), 400, "JSON object")     # the body parser's answer, as on every route
    tgi_error(post(p, "/classify", {"inputs": ["x"] * 17, "model": "sentiment"}), 422, "at most 16 texts")
    tgi_error(post(p, "/classify", {"inputs": "x", "model": "sentiment", "top_k": 0}), 422, "top_k")
    tgi_error(post(p, "/classify", {"inputs": "x", "model": "sentiment",
                                    "parameters": {"function_to_apply": "tanh"}}), 422, "function_to_apply")
    tgi_error(post(p, "/classify", {"inputs": "x", "model": "gen"}), 422, "generates text")
    tgi_error(post(p, "/classify", {"inputs": "x", "model": "nope"}), 404, "does not exist")
    tgi_error(post(p, "/classify", "{not json"), 400, "JSON")
    openai_error(post(p, "/v1/moderations", {"input": "x", "model": "sentiment"}), 400, "task = moderate")
    openai_error(post(p, "/v1/moderations", {"input": "x", "model": 5}), 400, "must be a model name")
    openai_error(post(p, "/v1/moderations", {"input": [{"type": "image_url", "image_url": {"url": "x"}}]}), 400,
                 "images are not supported")
    # a classifier is not a generator
    tgi_error(post(p, "/generate", {"inputs": "Hello", "model": "sentiment"}), 422, "sequence classifier")
    r = post(p, "/v1/completions", {"prompt": "Hello", "model": "mod", "max_tokens": 2})
    openai_error(r, 400, "sequence classifier")


def test_metrics_count_classifications(site):
    before = request(site.port, "GET", "/metrics").body.decode()

    def count(text, name, labels):
        m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(name), re.escape(labels)), text, re.M)
        return int(m.group(1)) if m else 0

    assert post(site.port, "/classify", {"inputs": TEXTS[:3], "model": "sentiment"}).status == 200
    after = request(site.port, "GET", "/metrics").body.decode()
    assert count(after, "llmcgi_classified_texts_total", 'model="sentiment"') == \
        count(before, "llmcgi_classified_texts_total", 'model="sentiment"') + 3
    assert re.search(r'^llmcgi_requests_total\{route="/classify",status="200"[^}]*\} \d+$', after, re.M), \
        [l for l in after.splitlines() if l.startswith("llmcgi_requests_total")][:5]
    assert re.search(r'^llmcgi_flagged_texts_total\{model="mod"\} \d+$', after, re.M)


# ---------------------------------------------------------------------------- rate limits

def test_rate_limits_apply_in_each_routes_shape(models):
    s = Site(models, limits="\n[limits]\nrequests_per_minute = 3\n")
    try:
        p = s.port
        assert post(p, "/classify", {"inputs": "a", "model": "sentiment"}).status == 200
        assert post(p, "/v1/moderations", {"input": "a"}).status == 200
        r = post(p, "/generate", {"input_text": "a"})
        assert r.status == 200
        r = post(p, "/classify", {"inputs": "a", "model": "sentiment"})
        tgi_error(r, 429, "")
        assert r.json()["error_type"] == "overloaded" and r.header("retry-after")
        r = post(p, "/v1/moderations", {"input": "a"})
        openai_error(r, 429, "")
        assert r.json()["error"]["type"] == "rate_limit_error"
        tgi_error(post(p, "/generate", {"input_text": "a"}), 429, "")
    finally:
        report = s.close()
    assert not report, report


def test_moderation_refuses_a_regression_model():
    """task = moderate compares scores with flag_threshold (0 to 1): a regression model's raw
    outputs are not such scores, so the model refuses to load, saying why."""
    d = make_tmpdir("llmcgi-classify-reg-")
    s = web = None
    try:
        subprocess.run([str(GEN), "--out", str(d / "reg"), "--layers", "1", "--heads", "2", "--embd", "16",
                        "--positions", "32", "--seed", "3", "--classifier", "1", "--problem-type", "regression",
                        "--tokenizer", str(TOKENIZER)], check=True, capture_output=True, timeout=120)
        s = Llmcgi(d / "llmcgi.sock", dir=d, extra=f"""\
[model reg]
path = {d / 'reg'}
device = cpu
task = moderate
""").start()
        web = WEB_SERVERS["nginx"](s.sock).start()
        state = lambda: request(web.port, "GET", "/health").json().get("local_models", {}).get("reg", {})
        r = post(web.port, "/v1/moderations", {"input": "a", "model": "reg"})
        wait_for(lambda: state().get("state") == "failed", "the regression model to be refused")
        assert "regression" in state().get("error", ""), state()
        r = post(web.port, "/v1/moderations", {"input": "a", "model": "reg"})
        assert 400 <= r.status < 600 and r.status != 200 and "regression" in r.json()["error"]["message"], r.body
    finally:
        if web:
            web.stop()
        report = s.cleanup() if s else ""
        remove_tmpdir(d)
    assert not report, report
