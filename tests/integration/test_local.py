"""Local GPT-2 models served by llmcgi through real nginx and Apache, driven by the official clients.

Models are tiny random-weight GPT-2 directories made by tools/gen-gpt2 with the
real GPT-2 tokenizer (tests/fixtures/gpt2-tokenizer); what one sequence
produces alone is what llmcgi-generate prints for the same model and prompt
(greedy, on the CPU), so every answer is checked token for token, not only
for its shape.

Covers:
* OpenAI's Python client (openai): chat and text completions, stream and not;
  greedy answers equal to llmcgi-generate's (the plain and the DialoGPT chat
  templates rendered here by hand); usage numbers; finish_reason; n; seeds
  (choice i samples with seed+i); logprobs and top_logprobs; echo; stop;
  penalties; prompts as lists of strings and of token ids;
  stream_options.include_usage; the error classes (NotFoundError,
  BadRequestError naming the context numbers, RateLimitError,
  InternalServerError for a model that failed to load).
* Hugging Face's TGI client (text_generation): generate with details (tokens,
  prefill, top_n_tokens, seed), generate_stream, stop sequences, truncate,
  repetition_penalty, ValidationError for 422 and OverloadedError for 429.
* The seed systems' shapes with curl: the legacy POST /generate
  {"model_id","prompt"}, GET /models, /models/{id}/health, /health's
  local_models, /info, /tokenize; TGI's x- headers and POST / lists.
* Continuous batching: 16 concurrent greedy streams each give exactly the
  tokens of their prompt alone; two models at once; a local model and an
  upstream (standin.py) in one /v1/models list, each routed right.
* Admission control: with max_concurrent=1 and max_queue=1 held by two
  streams, every further request is a 429 with Retry-After, in TGI's shape on
  /generate and OpenAI's on /v1; the server serves again once they go.
* A client abort mid-stream: the sequence is cancelled (/health running,
  cancelled, kv_blocks_used) while another stream runs on to its exact end.
* models_dir: implicit loading on first use, listing, max_loaded_models=1
  unloading the least recently used model and loading it again, nested
  "org/name" models, and path-traversal names answered 404 (a real model sits
  just outside models_dir, so a loader that followed "../" would answer 200).
* Routing order: an upstream listing a name beats a models_dir directory of
  that name, which beats a catch-all upstream (models = *).
* A configured model that fails to load: state "failed" with its error in
  /health, 503 for its requests, the other models unaffected.

The client-library and wire-format tests run through nginx and Apache; the
heavier ones (concurrency, overload, abort, loading) through nginx only.
Every test also checks the llmcgi process is alive and its sanitizer output
is clean (the suite runs again under ASan/UBSan). Not covered: /health's 503
"loading" while the default model loads (a tiny model loads too fast to catch
it without relying on timing).

Configured models use device = cpu so that their numbers are the CPU
reference's; the client libraries come from tests/requirements.txt (see
conftest.py), and the tests needing one skip without it.
"""

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import threading

import pytest

from servers import (BUILDDIR, SRCDIR, TIMEOUT, WEB_SERVERS, Llmcgi, Response, Stream, local_models_ready, make_tmpdir,
                     remove_tmpdir, request, require, require_module, wait_for)
from standin import Standin

GEN = BUILDDIR / "tools" / "gen-gpt2"
CLI = BUILDDIR / "llmcgi-generate"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
JSON = {"Content-Type": "application/json"}
CLIENT_TIMEOUT = 60                 # seconds a client call may take (the ASan build is slower)
TEXT3 = " alpha beta gamma"        # what the stand-in upstream generates for 3 tokens

# The clients must reach 127.0.0.1 directly, whatever proxy the environment names.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)

# Model shapes (gen-gpt2 arguments). SMALL: fast enough for 2 CPU cores, context 128.
# LONG: slower per token and a 2048 context, for streams that must still be running
# while a test does something else (they are cancelled, so their length costs nothing).
SMALL = ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128"]
LONG = ["--layers", "4", "--heads", "4", "--embd", "256", "--positions", "2048"]
CONTEXT = 128
MODEL_SPECS = {                     # directory name: (shape, seed)
    "tiny": (SMALL, 11),
    "other": (SMALL, 22),
    "DialoGPT-tiny": (SMALL, 33),   # "DialoGPT" in the directory name: the DialoGPT chat template
    "long": (LONG, 44),
}

P = "The quick brown fox"
# Sixteen prompts of different lengths (3 to 19 tokens) for the concurrent streams.
PROMPTS16 = [f"{w} " * (i + 1) + "and then" for i, w in enumerate(
    "apple river stone cloud music paper light window garden silver forest ocean candle bridge yellow "
    "thunder".split())]


# ---------------------------------------------------------------------------- models and references

@pytest.fixture(scope="module")
def models():
    """The generated model directories, by name."""
    if not (TOKENIZER / "vocab.json").exists():
        pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
    d = make_tmpdir("llmcgi-local-models-")
    out = {}
    for name, (shape, seed) in MODEL_SPECS.items():
        subprocess.run([str(GEN), "--out", str(d / name), *shape, "--seed", str(seed), "--tokenizer", str(TOKENIZER)],
                       check=True, capture_output=True, timeout=120)
        out[name] = d / name
    yield out
    remove_tmpdir(d)


class Ref:
    """What llmcgi-generate produces for one prompt alone."""

    def __init__(self, text, ids, logprobs, prompt_tokens, finish):
        self.text, self.ids, self.logprobs = text, ids, logprobs
        self.prompt_tokens, self.finish = prompt_tokens, finish

    @property
    def openai_finish(self):
        return "length" if self.finish == "length" else "stop"


@functools.lru_cache(maxsize=None)
def reference(model_dir, prompt, max_tokens, extra=(), device="cpu"):
    """llmcgi-generate, greedy: the text, token ids, logprobs, prompt token count and finish."""
    args = [str(CLI), "-m", str(model_dir), "-t", "0", "-n", str(max_tokens), "--logprobs", "0", *extra]
    if device:
        args += ["--device", device]
    r = subprocess.run(args + [prompt], capture_output=True, timeout=300)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, err
    assert "Sanitizer" not in err and "runtime error" not in err, err
    try:
        text = r.stdout.decode("utf-8")
    except UnicodeDecodeError:      # a fixed choice of model and prompt: never flaky
        raise AssertionError(f"the reference output for {prompt!r} is not UTF-8; the test needs another prompt")
    steps = re.findall(r"^\[\d+\] (\d+) .* (-?\d+\.\d+)$", err, re.M)
    prompt_tokens = int(re.search(r"prefill: (\d+) tokens", err).group(1))
    finish = re.search(r"finish:  (\w+)", err).group(1)
    return Ref(text, [int(i) for i, _ in steps], [float(lp) for _, lp in steps], prompt_tokens, finish)


def token_count(model_dir, prompt):
    """How many tokens the model's tokenizer makes of prompt, even one longer than the context
    (llmcgi-generate names the number when it refuses a prompt)."""
    r = subprocess.run([str(CLI), "-m", str(model_dir), "-n", "1", "--device", "cpu", prompt], capture_output=True,
                       timeout=60)
    err = r.stderr.decode("utf-8", "replace")
    m = re.search(r"prefill: (\d+) tokens", err) or re.search(r"the prompt is (\d+) tokens", err)
    assert m, err
    return int(m.group(1))


def plain_chat(messages):
    """The plain chat template (no dialogpt in the directory name), rendered by hand."""
    system = [m["content"] for m in messages if m["role"] in ("system", "developer")]
    out = "\n".join(system) + "\n\n" if system else ""
    for m in messages:
        if m["role"] == "user":
            out += f"User: {m['content']}\n"
        elif m["role"] == "assistant":
            out += f"Assistant: {m['content']}\n"
    return out + "Assistant:"


PLAIN_STOP = ("--stop", "\nUser:")     # the plain template's own stop string


def dialogpt_chat(messages):
    """DialoGPT's template: every turn followed by the end-of-text token."""
    return "".join(m["content"] + "<|endoftext|>" for m in messages)


def close(a, b, tol=2e-3):
    return abs(a - b) <= tol


# ---------------------------------------------------------------------------- the servers

def set_threads(llmcgi, n):
    """More responder threads than BASE_CONFIG's 8, so that 16 streams plus the test's own
    requests are all in llmcgi at once (a key may not be given twice in the file)."""
    text = llmcgi.config.read_text()
    assert "threads = 8\n" in text
    llmcgi.config.write_text(text.replace("threads = 8\n", f"threads = {n}\n", 1))


def model_section(name, path, **settings):
    lines = [f"[model {name}]", f"path = {path}", "device = cpu"]
    lines += [f"{k} = {v}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


class Local:
    """One llmcgi serving the generated models and a stand-in upstream (model remote-x),
    with web servers on demand."""

    def __init__(self, models):
        self.models = models
        self.remote = Standin("openai", model_ids=["remote-x"]).start()
        self.dir = make_tmpdir("llmcgi-local-")
        self.sock = self.dir / "llmcgi.sock"
        extra = "default_model = tiny\n\n" + "".join([
            model_section("tiny", models["tiny"]),
            model_section("other", models["other"]),
            model_section("chatbot", models["DialoGPT-tiny"]),   # the template follows the directory's name
            model_section("long", models["long"], kv_cache="64M"),
        ]) + f"""
[upstream remote]
type = openai
url = {self.remote.url}
models = remote-x
health_interval = 200ms
"""
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=extra)
        self.web = {}
        self.reported = 0
        set_threads(self.llmcgi, 40)
        try:
            self.llmcgi.start()
        except BaseException:
            self.close()
            raise

    def server(self, name):
        if name not in self.web:
            self.web[name] = WEB_SERVERS[name](self.sock).start()
            local_models_ready(self.web[name].port, ["tiny", "other", "chatbot", "long"], timeout=60)
        return self.web[name]

    def new_sanitizer_lines(self):
        lines = self.llmcgi.sanitizer_report().splitlines()
        new, self.reported = lines[self.reported:], len(lines)
        return "\n".join(new)

    def close(self):
        for w in self.web.values():
            w.stop()
        report = self.llmcgi.cleanup()
        self.remote.stop()
        remove_tmpdir(self.dir)
        return report


@pytest.fixture(scope="module")
def local(models):
    s = Local(models)
    yield s
    report = s.close()
    assert not report, f"sanitizer report from llmcgi:\n{report}"


@pytest.fixture(scope="module", params=sorted(WEB_SERVERS))
def site(request, local):
    """The port of nginx, then Apache, in front of the shared llmcgi."""
    return local.server(request.param).port


@pytest.fixture(scope="module")
def nginx(local):
    return local.server("nginx").port


@pytest.fixture(autouse=True)
def llmcgi_is_fine(request):
    """After every test: the shared llmcgi still runs and has written no new sanitizer report."""
    yield
    if "local" in request.fixturenames:
        s = request.getfixturevalue("local")
        report = s.new_sanitizer_lines()
        assert not report, f"sanitizer report from llmcgi:\n{report}"
        assert s.llmcgi.proc.poll() is None, f"llmcgi exited with {s.llmcgi.proc.returncode}: {s.llmcgi.log()[-3000:]}"


# ---------------------------------------------------------------------------- helpers

def health(port):
    r = request(port, "GET", "/health")
    assert r.status in (200, 503), r.body
    return r.json()


def local_models(port):
    return health(port).get("local_models", {})


def post(port, path, body, headers=None, timeout=CLIENT_TIMEOUT):
    return request(port, "POST", path, json.dumps(body), dict(JSON, **(headers or {})), timeout=timeout)


def openai_client(port):
    openai = require_module("openai", "openai")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                         timeout=CLIENT_TIMEOUT)


def tgi_client(port):
    text_generation = require_module("text_generation", "text-generation")
    return text_generation.Client(f"http://127.0.0.1:{port}", timeout=CLIENT_TIMEOUT)


def curl(port, method, path, body=None):
    """One request with the curl command line; a Response."""
    cmd = [require("curl", "curl"), "-sS", "-i", "--max-time", str(CLIENT_TIMEOUT), "-X", method]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    r = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=CLIENT_TIMEOUT + 10,
                       input=json.dumps(body).encode() if body is not None else None)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    head, _, data = r.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Response(int(lines[0].split()[1]), headers, data)


def sse_data(stream):
    """Every event's data of a raw Stream, in order."""
    out = []
    while (ev := stream.read_event()) is not None:
        if "data" in ev[0]:
            out.append(ev[0]["data"])
    return out


class Held:
    """A streaming request sent on a raw socket and left unread: it holds its place in llmcgi
    (running or queued) until close(), which is a client abort."""

    def __init__(self, port, path, body):
        data = json.dumps(body).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def run_threads(fns):
    """Runs the functions at once (released together by a barrier); returns their results in order,
    re-raising the first exception."""
    results = [None] * len(fns)
    errors = []
    barrier = threading.Barrier(len(fns))

    def one(i):
        try:
            barrier.wait(timeout=TIMEOUT)
            results[i] = fns[i]()
        except BaseException as e:   # noqa: B902 -- reported in the test's thread below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_TIMEOUT * 2)
    assert not any(t.is_alive() for t in threads), "a request thread did not finish"
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------------------- OpenAI client: completions

def test_openai_completion_greedy_equals_the_reference(site, models):
    c = openai_client(site)
    ref = reference(models["tiny"], P, 16)
    assert ref.finish == "length"
    r = c.completions.create(model="tiny", prompt=P, max_tokens=16, temperature=0, user="someone")
    assert r.object == "text_completion" and r.model == "tiny" and r.id and isinstance(r.created, int)
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert r.choices[0].text == ref.text
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == ref.prompt_tokens
    assert r.usage.completion_tokens == len(ref.ids) == 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # the other model answers otherwise: the name picks the weights
    # no max_tokens: OpenAI's default of 16
    r = c.completions.create(model="tiny", prompt=P, temperature=0)
    assert r.choices[0].text == ref.text and r.usage.completion_tokens == 16
    r2 = c.completions.create(model="other", prompt=P, max_tokens=16, temperature=0)
    assert r2.choices[0].text == reference(models["other"], P, 16).text != ref.text
    assert r2.model == "other"


def test_openai_completion_echo_stop_and_penalties(site, models):
    c = openai_client(site)
    full = reference(models["tiny"], P, 40)
    assert full.finish == "length"
    r = c.completions.create(model="tiny", prompt=P, max_tokens=8, temperature=0, echo=True)
    assert r.choices[0].text == P + reference(models["tiny"], P, 8).text
    # a stop string from the middle of the greedy text: cut before it, never leaked
    stop = full.text[12:17]
    assert stop.strip(), full.text
    r = c.completions.create(model="tiny", prompt=P, max_tokens=40, temperature=0, stop=[stop, "never-seen"])
    assert r.choices[0].text == full.text[:full.text.index(stop)]
    assert stop not in r.choices[0].text
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == reference(models["tiny"], P, 40, ("--stop", stop)).text
    # OpenAI's penalties, as llmcgi-generate applies them (the greedy text repeats itself, so they matter)
    for name, opt in (("frequency_penalty", "--frequency-penalty"), ("presence_penalty", "--presence-penalty")):
        r = c.completions.create(model="tiny", prompt=P, max_tokens=24, temperature=0, **{name: 1.5})
        penalised = reference(models["tiny"], P, 24, (opt, "1.5"))
        assert r.choices[0].text == penalised.text
        assert penalised.text != reference(models["tiny"], P, 24).text


def test_openai_completion_prompt_lists(site, models):
    c = openai_client(site)
    # a list of strings: one choice per prompt, in order
    r = c.completions.create(model="tiny", prompt=[P, "Hello"], max_tokens=6, temperature=0)
    assert sorted(ch.index for ch in r.choices) == [0, 1]
    by_index = {ch.index: ch.text for ch in r.choices}
    assert by_index == {0: reference(models["tiny"], P, 6).text, 1: reference(models["tiny"], "Hello", 6).text}
    assert r.usage.prompt_tokens == reference(models["tiny"], P, 6).prompt_tokens + 1
    assert r.usage.completion_tokens == 12
    # a list of token ids: the same as the text they encode
    ids = [t["id"] for t in post(site, "/tokenize", {"inputs": P, "model": "tiny"}).json()]
    r = c.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0)
    assert r.choices[0].text == reference(models["tiny"], P, 6).text
    assert r.usage.prompt_tokens == len(ids)


def test_openai_n_and_seeds(site):
    c = openai_client(site)

    def sample(seed, n=1, **kw):
        return c.completions.create(model="tiny", prompt=P, max_tokens=16, temperature=1, seed=seed, n=n, **kw)

    a, b, other = sample(42), sample(42), sample(43)
    assert a.choices[0].text == b.choices[0].text            # same seed, same text
    assert a.choices[0].text != other.choices[0].text        # near-uniform logits: 16 tokens never repeat
    both = sample(42, n=2)
    texts = {ch.index: ch.text for ch in both.choices}
    assert texts == {0: a.choices[0].text, 1: other.choices[0].text}    # choice i samples with seed+i
    assert both.usage.completion_tokens == 32 and both.usage.prompt_tokens == a.usage.prompt_tokens
    # greedy n=2: two identical choices
    g = c.completions.create(model="tiny", prompt=P, max_tokens=5, temperature=0, n=2)
    assert len(g.choices) == 2 and g.choices[0].text == g.choices[1].text
    # chat too
    msgs = [{"role": "user", "content": "hi"}]
    x = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0.9, seed=7)
    y = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0.9, seed=7)
    assert x.choices[0].message.content == y.choices[0].message.content


def test_openai_stream_of_n_choices_equals_the_whole_answer(site):
    """n = 4 puts four sequences on one engine channel: each step's four events wake the
    responder once (engine.c's echan_post). Each choice still streams every token as its own
    event (logprobs 0: one token an event) and adds up to the whole answer's choice."""
    c = openai_client(site)
    kw = {"model": "tiny", "prompt": P, "max_tokens": 12, "temperature": 1, "seed": 5, "n": 4}
    whole = c.completions.create(**kw)
    texts, events = {}, {}
    for ch in c.completions.create(stream=True, logprobs=0, **kw):
        for choice in ch.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            events[choice.index] = events.get(choice.index, 0) + len(choice.logprobs.tokens)
    assert texts == {ch.index: ch.text for ch in whole.choices}
    assert events == {i: 12 for i in range(4)}


def test_openai_completion_logprobs(site, models):
    c = openai_client(site)
    ref = reference(models["tiny"], P, 8)
    r = c.completions.create(model="tiny", prompt=P, max_tokens=8, temperature=0, logprobs=3)
    ch = r.choices[0]
    lp = ch.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 8
    assert "".join(lp.tokens) == ch.text == ref.text
    assert [b - a for a, b in zip(lp.text_offset, lp.text_offset[1:])] == [len(t) for t in lp.tokens[:-1]]
    for i in range(8):
        assert close(lp.token_logprobs[i], ref.logprobs[i]), (i, lp.token_logprobs, ref.logprobs)
        alternatives = lp.top_logprobs[i]
        assert 1 <= len(alternatives) <= 3
        # greedy: the chosen token is the most likely one
        assert close(max(alternatives.values()), lp.token_logprobs[i], 1e-4)
        assert all(v <= 0 for v in alternatives.values())


# ---------------------------------------------------------------------------- OpenAI client: chat

def test_openai_chat_greedy_equals_the_reference(site, models):
    c = openai_client(site)
    msgs = [{"role": "user", "content": "hi"}]
    assert plain_chat(msgs) == "User: hi\nAssistant:"
    ref = reference(models["tiny"], plain_chat(msgs), 12, PLAIN_STOP)
    r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.model == "tiny" and r.id
    m = r.choices[0].message
    assert m.role == "assistant" and m.content == ref.text
    assert r.choices[0].finish_reason == ref.openai_finish
    assert r.usage.prompt_tokens == ref.prompt_tokens
    assert r.usage.completion_tokens == len(ref.ids)
    assert r.usage.total_tokens == ref.prompt_tokens + len(ref.ids)
    # a system message and earlier turns; max_completion_tokens as the limit
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What now?"}]
    ref = reference(models["tiny"], plain_chat(msgs), 9, PLAIN_STOP)
    r = c.chat.completions.create(model="tiny", messages=msgs, max_completion_tokens=9, temperature=0)
    assert r.choices[0].message.content == ref.text
    assert r.usage.prompt_tokens == ref.prompt_tokens
    assert r.usage.completion_tokens == len(ref.ids) == 9


def test_openai_chat_logprobs(site, models):
    c = openai_client(site)
    msgs = [{"role": "user", "content": "hi"}]
    ref = reference(models["tiny"], plain_chat(msgs), 6, PLAIN_STOP)
    r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0, logprobs=True,
                                  top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == len(ref.ids)
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for i, t in enumerate(content):
        assert close(t.logprob, ref.logprobs[i]), (i, t.logprob, ref.logprobs)
        assert bytes(t.bytes).decode() == t.token
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token and close(t.top_logprobs[0].logprob, t.logprob, 1e-4)
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
    # logprobs without top_logprobs: the chosen tokens only
    r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=3, temperature=0, logprobs=True)
    assert len(r.choices[0].logprobs.content) == 3
    assert all(not t.top_logprobs for t in r.choices[0].logprobs.content)


def test_dialogpt_template(site, models):
    c = openai_client(site)
    msgs = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "How are you?"}]
    rendered = dialogpt_chat(msgs)
    assert rendered == "Hello there<|endoftext|>Hi<|endoftext|>How are you?<|endoftext|>"
    ref = reference(models["DialoGPT-tiny"], rendered, 10)
    r = c.chat.completions.create(model="chatbot", messages=msgs, max_tokens=10, temperature=0)
    assert r.usage.prompt_tokens == ref.prompt_tokens        # each <|endoftext|> is one token
    assert r.usage.prompt_tokens != token_count(models["DialoGPT-tiny"], plain_chat(msgs))
    assert r.choices[0].message.content == ref.text
    assert r.choices[0].finish_reason == ref.openai_finish


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_openai_stream_equals_the_whole_answer(site, kind):
    c = openai_client(site)
    if kind == "chat":
        kw = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, "temperature": 0}
        create = c.chat.completions.create
    else:
        kw = {"model": "tiny", "prompt": P, "max_tokens": 12, "temperature": 0}
        create = c.completions.create
    whole = create(**kw)
    chunks = list(create(stream=True, stream_options={"include_usage": True}, **kw))
    with_choices = [ch for ch in chunks if ch.choices]
    if kind == "chat":
        first = with_choices[0].choices[0].delta
        assert first.role == "assistant" and first.content == ""
        text = "".join(ch.choices[0].delta.content or "" for ch in with_choices)
        assert text == whole.choices[0].message.content
    else:
        text = "".join(ch.choices[0].text for ch in with_choices)
        assert text == whole.choices[0].text
    finishes = [ch.choices[0].finish_reason for ch in with_choices if ch.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert with_choices[-1].choices[0].finish_reason                   # the finish comes last
    usage = [ch for ch in chunks if ch.usage]
    assert len(usage) == 1 and chunks[-1] is usage[0] and usage[0].choices == []
    assert usage[0].usage.model_dump() == whole.usage.model_dump()
    assert len({ch.id for ch in chunks}) == 1 and all(ch.model == "tiny" for ch in chunks)
    # without include_usage: no usage chunk
    chunks = list(create(stream=True, **kw))
    assert all(not ch.usage for ch in chunks)


def test_openai_stream_wire_format(site):
    s = Stream(site, "/v1/chat/completions", headers=JSON, method="POST", body=json.dumps({
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True}}))
    try:
        assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
        data = sse_data(s)
    finally:
        s.close()
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1
    events = [json.loads(d) for d in data[:-1]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_openai_errors(site, models):
    openai = require_module("openai", "openai")
    c = openai_client(site)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="no-such-model", messages=msgs)
    assert e.value.status_code == 404 and e.value.body["code"] == "model_not_found"
    assert "no-such-model" in e.value.message
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="no-such-model", prompt="x")
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny", messages=msgs, temperature=5)
    assert e.value.status_code == 400 and "temperature" in e.value.message
    assert e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="tiny", prompt=P, logprobs=9)
    assert "logprobs" in e.value.message
    # over the context: the message names the numbers. A prompt longer than the input limit
    # (max_input_tokens: context - 1) is refused for itself, whatever max_tokens is.
    words = " word" * 150
    n = token_count(models["tiny"], words)
    assert n == 150
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="tiny", prompt=words, max_tokens=50)
    assert str(CONTEXT - 1) in e.value.message and str(n) in e.value.message, e.value.message
    long_msgs = [{"role": "user", "content": " word" * 150}]
    n = token_count(models["tiny"], plain_chat(long_msgs))
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny", messages=long_msgs, max_tokens=50)
    assert str(CONTEXT - 1) in e.value.message and str(n) in e.value.message, e.value.message
    # a prompt that fits, but not with max_tokens more: the context, the sum and both parts
    words = " word" * 100
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="tiny", prompt=words, max_tokens=50)
    msg = e.value.message
    assert str(CONTEXT) in msg and "150" in msg and "100" in msg and "50" in msg, msg
    msgs_100 = [{"role": "user", "content": " word" * 90}]
    n = token_count(models["tiny"], plain_chat(msgs_100))
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny", messages=msgs_100, max_tokens=50)
    msg = e.value.message
    assert str(CONTEXT) in msg and str(n + 50) in msg and str(n) in msg, msg
    # the server is fine afterwards
    assert c.completions.create(model="tiny", prompt=P, max_tokens=2, temperature=0).usage.completion_tokens == 2



def test_what_local_models_cannot_do_is_refused_clearly(site):
    """Inputs the local engine cannot honour get a 400/422 naming the field, in the route's own error
    shape, instead of being ignored; the server answers normally afterwards."""
    def oai(path, body, field, words):
        r = post(site, path, dict({"model": "tiny"}, **body))
        assert r.status == 400, (body, r.body)
        err = r.json()["error"]
        assert set(err) >= {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
        assert err["param"] == field and words in err["message"], err
    oai("/v1/completions", {"prompt": [1, 2, 50257]}, "prompt", "token id from 0 to 50256")
    oai("/v1/completions", {"prompt": [[1, 2], "x", 3]}, "prompt", "`prompt[2]` must be a string or a list of token ids")
    oai("/v1/completions", {"prompt": []}, "prompt", "must not be an empty list")
    oai("/v1/completions", {"prompt": P, "logit_bias": {"50256": -100}}, "logit_bias", "not supported")
    oai("/v1/completions", {"prompt": P, "suffix": "x"}, "suffix", "not supported")
    oai("/v1/completions", {"prompt": P, "best_of": 3}, "best_of", "not supported")
    oai("/v1/completions", {"prompt": P, "n": 64}, "n", "64 sequences")
    oai("/v1/chat/completions", {"messages": [{"role": "bot", "content": "x"}]}, "messages", "role")
    oai("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        "messages", "only text parts are supported")
    oai("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                 "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice",
        "\"auto\" (the default with `tools`) is not supported")   # required and named ones: test_structured.py
    oai("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                 "response_format": {"type": "yaml"}}, "response_format", "\"json_schema\"")
    # the plain template adds a stop string of its own: four more no longer fit
    oai("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d"]},
        "stop", "at most 3 stop strings")
    for params, words in (({"grammar": {"type": "xml", "value": "<a/>"}}, "`grammar` type must be"),
                          ({"best_of": 2}, "`best_of`"), ({"watermark": True}, "`watermark`"),
                          ({"adapter_id": "x"}, "`adapter_id`")):
        r = post(site, "/generate", {"inputs": P, "parameters": params})
        assert r.status == 422 and r.json()["error_type"] == "validation" and words in r.json()["error"], r.body
    r = post(site, "/generate", {"inputs": "", "parameters": {"max_new_tokens": 2}})
    assert r.status == 422 and "cannot be empty" in r.json()["error"], r.body
    r = post(site, "/v1/completions", {"model": "tiny", "prompt": P, "max_tokens": 2, "temperature": 0})
    assert r.status == 200 and r.json()["usage"]["completion_tokens"] == 2

# ---------------------------------------------------------------------------- TGI client

def test_tgi_generate_with_details(site, models):
    tc = tgi_client(site)
    ref = reference(models["tiny"], P, 12)
    r = tc.generate(P, max_new_tokens=12, decoder_input_details=True)      # greedy: TGI's default
    assert r.generated_text == ref.text
    d = r.details
    assert d.finish_reason.value == "length" and d.generated_tokens == 12 == len(d.tokens)
    assert [t.id for t in d.tokens] == ref.ids
    assert "".join(t.text for t in d.tokens) == ref.text
    assert all(close(t.logprob, lp) for t, lp in zip(d.tokens, ref.logprobs)), (d.tokens, ref.logprobs)
    assert not any(t.special for t in d.tokens)
    assert d.seed is None                                  # no sampling, no seed
    # prefill: the prompt's tokens, the first without a logprob
    ids = [t["id"] for t in post(site, "/tokenize", {"inputs": P}).json()]
    assert [t.id for t in d.prefill] == ids and len(ids) == ref.prompt_tokens
    assert "".join(t.text for t in d.prefill) == P
    assert d.prefill[0].logprob is None and all(t.logprob <= 0 for t in d.prefill[1:])
    # return_full_text puts the prompt in front
    r = tc.generate(P, max_new_tokens=4, return_full_text=True)
    assert r.generated_text == P + reference(models["tiny"], P, 4).text
    # repetition_penalty as llmcgi-generate applies it
    r = tc.generate(P, max_new_tokens=16, repetition_penalty=1.3)
    assert r.generated_text == reference(models["tiny"], P, 16, ("--repetition-penalty", "1.3")).text


def test_tgi_sampling_seed(site):
    tc = tgi_client(site)
    a = tc.generate(P, max_new_tokens=10, do_sample=True, seed=7)
    b = tc.generate(P, max_new_tokens=10, do_sample=True, seed=7)
    assert a.generated_text == b.generated_text and a.details.seed == b.details.seed == 7
    c = tc.generate(P, max_new_tokens=10, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, typical_p=0.95)
    assert isinstance(c.details.seed, int)                 # chosen by the server, and said
    again = tc.generate(P, max_new_tokens=10, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, typical_p=0.95,
                        seed=c.details.seed)
    assert again.generated_text == c.generated_text


def test_tgi_top_n_tokens(site):
    tc = tgi_client(site)
    r = tc.generate(P, max_new_tokens=6, top_n_tokens=3)
    tops = r.details.top_tokens
    assert len(tops) == r.details.generated_tokens == 6
    for tok, top in zip(r.details.tokens, tops):
        assert len(top) == 3
        assert top[0].id == tok.id and close(top[0].logprob, tok.logprob, 1e-4)     # greedy: the most likely
        assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
    events = list(tc.generate_stream(P, max_new_tokens=6, top_n_tokens=3))
    assert [e.token.id for e in events] == [t.id for t in r.details.tokens]
    assert all(len(e.top_tokens) == 3 and e.top_tokens[0].id == e.token.id for e in events)


def test_tgi_generate_stream(site, models):
    tc = tgi_client(site)
    ref = reference(models["tiny"], P, 12)
    events = list(tc.generate_stream(P, max_new_tokens=12))
    assert len(events) == 12
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == "".join(e.token.text for e in events if not e.token.special) == ref.text
    assert [e.token.id for e in events] == ref.ids
    assert last.details.finish_reason.value == "length" and last.details.generated_tokens == 12


def test_tgi_stream_wire_format(site, models):
    ref = reference(models["tiny"], P, 5)
    s = Stream(site, "/generate_stream", headers=JSON, method="POST",
               body=json.dumps({"inputs": P, "parameters": {"max_new_tokens": 5}}))
    try:
        assert s.status == 200
        data = sse_data(s)
    finally:
        s.close()
    assert "[DONE]" not in data                            # TGI streams end with the final event
    events = [json.loads(d) for d in data]
    assert [e["index"] for e in events] == [1, 2, 3, 4, 5] or [e["index"] for e in events] == [0, 1, 2, 3, 4]
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    d = events[-1]["details"]
    assert events[-1]["generated_text"] == ref.text
    assert d["finish_reason"] == "length" and d["generated_tokens"] == 5 and d["input_length"] == ref.prompt_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_tgi_stop_sequences(site, models, stream):
    tc = tgi_client(site)
    full = reference(models["tiny"], P, 40)
    stop = full.text[12:17]
    want = full.text[:full.text.index(stop)]
    assert want == reference(models["tiny"], P, 40, ("--stop", stop)).text
    if stream:
        events = list(tc.generate_stream(P, max_new_tokens=40, stop_sequences=[stop]))
        text, finish = events[-1].generated_text, events[-1].details.finish_reason.value
    else:
        r = tc.generate(P, max_new_tokens=40, stop_sequences=[stop])
        text, finish = r.generated_text, r.details.finish_reason.value
    assert finish == "stop_sequence"
    assert stop not in text and text == want


def test_tgi_validation_errors(site):
    text_generation = require_module("text_generation", "text-generation")
    tc = tgi_client(site)
    with pytest.raises(text_generation.errors.ValidationError):
        tc.generate(P, max_new_tokens=500)                 # past the 128-token context
    with pytest.raises(text_generation.errors.ValidationError):
        tc.generate(" word" * 150, max_new_tokens=5)       # the prompt alone is
    with pytest.raises(text_generation.errors.ValidationError):
        tc.generate(P, max_new_tokens=5, stop_sequences=["a", "b", "c", "d", "e"])
    with pytest.raises(text_generation.errors.ValidationError):
        list(tc.generate_stream(P, max_new_tokens=500))
    r = post(site, "/generate", {"inputs": P, "parameters": {"max_new_tokens": 500}})
    assert r.status == 422 and r.json()["error_type"] == "validation"
    assert str(CONTEXT) in r.json()["error"], r.json()


def test_tgi_truncate_keeps_the_end_of_the_prompt(site, models):
    tc = tgi_client(site)
    r = tc.generate(" word" * 150, max_new_tokens=5, truncate=100, decoder_input_details=True)
    assert r.generated_text == reference(models["tiny"], " word" * 100, 5).text
    assert len(r.details.prefill) == 100


def test_tgi_list_answer_and_headers(site, models):
    ref = reference(models["tiny"], P, 5)
    r = post(site, "/", {"inputs": P, "parameters": {"max_new_tokens": 5}})
    assert r.status == 200, r.body
    assert len(r.json()) == 1 and r.json()[0]["generated_text"] == ref.text
    r = post(site, "/generate", {"inputs": P, "parameters": {"max_new_tokens": 5, "details": True}})
    assert r.status == 200, r.body
    for h in ("x-compute-type", "x-compute-time", "x-compute-characters", "x-total-time", "x-validation-time",
              "x-queue-time", "x-inference-time", "x-time-per-token", "x-prompt-tokens", "x-generated-tokens"):
        assert r.header(h) is not None, (h, r.headers)
    assert int(r.header("x-prompt-tokens")) == ref.prompt_tokens
    assert int(r.header("x-generated-tokens")) == 5
    assert int(r.header("x-compute-characters")) == len(P)
    assert r.json()["details"]["generated_tokens"] == 5


# ---------------------------------------------------------------------------- the seed systems' shapes (curl)

def test_legacy_generate_shape(site, models):
    ref = reference(models["tiny"], P, 8)
    r = curl(site, "POST", "/generate", {"model_id": "tiny", "prompt": P, "max_new_tokens": 8, "temperature": 0})
    assert r.status == 200, r.body
    assert r.json() == {"generated_text": ref.text, "model_id": "tiny"}          # the continuation only
    r = curl(site, "POST", "/generate", {"model_id": "other", "prompt": P, "max_new_tokens": 8, "temperature": 0,
                                          "top_p": 1, "repetition_penalty": 1})
    assert r.json() == {"generated_text": reference(models["other"], P, 8).text, "model_id": "other"}
    r = curl(site, "POST", "/generate", {"model_id": "nope", "prompt": P, "max_new_tokens": 8})
    assert r.status == 404


def test_models_and_model_health(site):
    wait_for(lambda: all(m["available"] for m in curl(site, "GET", "/models").json()), "every model to be available")
    r = curl(site, "GET", "/models")
    assert r.status == 200
    listed = {m["id"]: m for m in r.json()}
    for name in ("tiny", "other", "chatbot", "long", "remote-x"):
        assert set(listed[name]) >= {"id", "name", "endpoint", "available"}, listed[name]
        assert listed[name]["available"] is True
    r = curl(site, "GET", "/models/tiny/health")
    assert r.status == 200
    assert {k: r.json()[k] for k in ("model_id", "status", "available")} == \
        {"model_id": "tiny", "status": "ok", "available": True}
    assert curl(site, "GET", "/models/no-such-model/health").status == 404


def test_health_lists_local_models(site):
    r = curl(site, "GET", "/health")
    assert r.status == 200
    h = r.json()
    assert h["status"] == "ok"
    lm = h["local_models"]
    for name in ("tiny", "other", "chatbot", "long"):
        m = lm[name]
        assert m["state"] == "ready" and m["device"].startswith("cpu")
        assert m["kv_blocks_total"] > 0 and 0 <= m["kv_blocks_used"] <= m["kv_blocks_total"]
        for k in ("running", "queued", "requests", "cancelled"):
            assert isinstance(m[k], int) and m[k] >= 0, (k, m)
        assert "error" not in m or not m["error"]


def test_info(site, models):
    r = curl(site, "GET", "/info")
    assert r.status == 200
    i = r.json()
    assert i["model_id"] in ("tiny", str(models["tiny"]))  # the name, or the directory as TGI's is
    assert i["router"] == "llmcgi" and i["max_best_of"] == 1 and i["max_stop_sequences"] == 4
    assert i["max_input_tokens"] == CONTEXT - 1 and i["max_total_tokens"] == CONTEXT
    assert i["model_device_type"] == "cpu"
    for k in ("model_dtype", "max_concurrent_requests", "max_client_batch_size", "version"):
        assert k in i, (k, i)
    r = curl(site, "GET", "/info?model=long")
    assert r.status == 200 and r.json()["model_id"] in ("long", str(models["long"]))
    assert r.json()["max_total_tokens"] == 2048
    assert curl(site, "GET", "/info?model=no-such-model").status == 404


def test_tokenize(site, models):
    text = "Hello, wörld! The quick brown fox"
    r = curl(site, "POST", "/tokenize", {"inputs": text})
    assert r.status == 200, r.body
    toks = r.json()
    assert len(toks) == token_count(models["tiny"], text)
    raw = text.encode()
    assert toks[0]["start"] == 0 and toks[-1]["stop"] == len(raw)           # byte offsets
    for a, b in zip(toks, toks[1:]):
        assert a["stop"] == b["start"]
    assert "".join(t["text"] for t in toks) == text
    assert all(raw[t["start"]:t["stop"]].decode() == t["text"] for t in toks)
    assert all(isinstance(t["id"], int) for t in toks)
    # another model's tokenizer (the same files here) by name
    r = curl(site, "POST", "/tokenize", {"inputs": text, "model": "other"})
    assert [t["id"] for t in r.json()] == [t["id"] for t in toks]


# ---------------------------------------------------------------------------- listings and routing

def test_one_list_of_local_and_upstream_models(site, models):
    c = openai_client(site)
    ids = [m.id for m in c.models.list()]
    for name in ("tiny", "other", "chatbot", "long", "remote-x"):
        assert name in ids, ids
    assert c.models.retrieve("tiny").id == "tiny"
    assert c.models.retrieve("remote-x").id == "remote-x"
    # each routed right: the upstream's canned text, the local model's own
    r = c.completions.create(model="remote-x", prompt=P, max_tokens=3)
    assert r.choices[0].text == TEXT3
    r = c.completions.create(model="tiny", prompt=P, max_tokens=3, temperature=0)
    assert r.choices[0].text == reference(models["tiny"], P, 3).text


def test_two_models_at_once(nginx, models):
    c = openai_client(nginx)
    want = {name: reference(models[name], P, 24).text for name in ("tiny", "other")}
    assert want["tiny"] != want["other"]
    names = ["tiny", "other"] * 4

    def one(name):
        return lambda: c.completions.create(model=name, prompt=P, max_tokens=24, temperature=0).choices[0].text

    assert run_threads([one(n) for n in names]) == [want[n] for n in names]


# ---------------------------------------------------------------------------- continuous batching

def test_sixteen_concurrent_streams_each_match_the_prompt_alone(local, nginx, models):
    refs = [reference(models["tiny"], p, 24) for p in PROMPTS16]
    assert all(r.finish == "length" for r in refs)
    # alone first, one after the other
    alone = []
    for p in PROMPTS16:
        r = post(nginx, "/generate", {"inputs": p, "parameters": {"max_new_tokens": 24, "details": True}})
        assert r.status == 200, r.body
        alone.append([t["id"] for t in r.json()["details"]["tokens"]])
    assert alone == [r.ids for r in refs]
    before = local_models(nginx)["tiny"]["requests"]

    def stream(p):
        def run():
            s = Stream(nginx, "/generate_stream", headers=JSON, method="POST", timeout=CLIENT_TIMEOUT,
                       body=json.dumps({"inputs": p, "parameters": {"max_new_tokens": 24}}))
            try:
                assert s.status == 200
                events = [json.loads(d) for d in sse_data(s)]
            finally:
                s.close()
            return [e["token"]["id"] for e in events], events[-1]["generated_text"]
        return run

    results = run_threads([stream(p) for p in PROMPTS16])
    for p, ref, (ids, text) in zip(PROMPTS16, refs, results):
        assert ids == ref.ids, p
        assert text == ref.text, p
    lm = local_models(nginx)["tiny"]
    assert lm["requests"] >= before + 16
    wait_for(lambda: local_models(nginx)["tiny"]["running"] == 0, "the batch to empty")


# ---------------------------------------------------------------------------- admission control

def test_overload_answers_429_and_recovers(llmcgi_factory, models):
    openai = require_module("openai", "openai")
    text_generation = require_module("text_generation", "text-generation")
    sockdir = make_tmpdir("llmcgi-busy-")
    web = None
    held = []
    try:
        l = llmcgi_factory(sockdir / "llmcgi.sock", extra="default_model = slow\n\n" + model_section(
            "slow", models["long"], max_concurrent=1, max_queue=1, kv_cache="64M"))
        set_threads(l, 32)
        l.start()
        web = WEB_SERVERS["nginx"](l.sock).start()
        port = web.port
        local_models_ready(port, ["slow"], timeout=60)
        # two long greedy streams (2000 tokens: many seconds), never read: one runs, one waits
        long_body = {"inputs": "The story begins", "parameters": {"max_new_tokens": 2000}}
        held.append(Held(port, "/generate_stream", long_body))
        wait_for(lambda: local_models(port)["slow"]["running"] == 1, "the first stream to run")
        held.append(Held(port, "/generate_stream", long_body))
        wait_for(lambda: local_models(port)["slow"]["queued"] == 1, "the second stream to queue")

        r = post(port, "/generate", {"inputs": P, "parameters": {"max_new_tokens": 4}})
        assert r.status == 429, r.body
        assert r.header("retry-after")
        assert r.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
        r = post(port, "/v1/completions", {"model": "slow", "prompt": P, "max_tokens": 4})
        assert r.status == 429, r.body
        assert r.header("retry-after")
        assert set(r.json()["error"]) >= {"message", "type", "param", "code"}
        r = post(port, "/v1/chat/completions", {"model": "slow", "messages": [{"role": "user", "content": "x"}]})
        assert r.status == 429 and r.header("retry-after"), r.body
        with pytest.raises(openai.RateLimitError):
            openai_client(port).completions.create(model="slow", prompt=P, max_tokens=4)
        with pytest.raises(text_generation.errors.OverloadedError):
            tgi_client(port).generate(P, max_new_tokens=4)
        with pytest.raises(text_generation.errors.OverloadedError):
            list(tgi_client(port).generate_stream(P, max_new_tokens=4))

        # eight at once: all refused while the two hold their places
        def one(i):
            if i % 2:
                return lambda: post(port, "/generate", {"inputs": P, "parameters": {"max_new_tokens": 64}})
            return lambda: post(port, "/v1/completions", {"model": "slow", "prompt": P, "max_tokens": 64})

        answers = run_threads([one(i) for i in range(8)])
        assert [a.status for a in answers] == [429] * 8, [(a.status, a.body[:200]) for a in answers]
        assert all(a.header("retry-after") for a in answers)
        lm = local_models(port)["slow"]
        assert lm["running"] == 1 and lm["queued"] == 1   # the refused ones never took a place

        # the holders go away: the server serves again
        for h in held:
            h.close()
        wait_for(lambda: (lambda m: m["running"] == 0 and m["queued"] == 0)(local_models(port)["slow"]),
                 "the held streams to be cancelled")
        r = post(port, "/generate", {"inputs": P, "parameters": {"max_new_tokens": 4}})
        assert r.status == 200, r.body
        assert r.json()["generated_text"] == reference(models["long"], P, 4).text
    finally:
        for h in held:
            h.close()
        if web:
            web.stop()
        remove_tmpdir(sockdir)


# ---------------------------------------------------------------------------- client abort

def test_client_abort_cancels_the_sequence_and_frees_its_blocks(nginx, models):
    wait_for(lambda: (lambda m: m["running"] == 0 and m["queued"] == 0)(local_models(nginx)["long"]),
             "the long model to be idle")
    idle = local_models(nginx)["long"]
    prompt_b = "Once upon a time"
    ref_b = reference(models["long"], prompt_b, 100)
    # B: a stream that must run to its exact end
    b = Stream(nginx, "/v1/completions", headers=JSON, method="POST", timeout=CLIENT_TIMEOUT, body=json.dumps(
        {"model": "long", "prompt": prompt_b, "max_tokens": 100, "temperature": 0, "stream": True}))
    a = None
    try:
        assert b.status == 200
        first_b = b.read_event()
        assert first_b is not None
        # A: a stream far longer than the test; read a few events, then hang up
        a = Stream(nginx, "/v1/chat/completions", headers=JSON, method="POST", timeout=CLIENT_TIMEOUT,
                   body=json.dumps({"model": "long", "messages": [{"role": "user", "content": "Tell me everything"}],
                                    "max_tokens": 2000, "temperature": 0, "stream": True}))
        assert a.status == 200
        for _ in range(4):
            assert a.read_event() is not None
        assert local_models(nginx)["long"]["running"] >= 1
        a.close()
        wait_for(lambda: local_models(nginx)["long"]["cancelled"] == idle["cancelled"] + 1,
                 "the aborted sequence to be cancelled", timeout=10)
        assert local_models(nginx)["long"]["running"] <= 1       # at most B is left
        # B goes on to its exact end
        rest = sse_data(b)
    finally:
        if a:
            a.close()
        b.close()
    events = [json.loads(first_b[0]["data"])] + [json.loads(d) for d in rest if d != "[DONE]"]
    assert rest[-1] == "[DONE]"
    text = "".join(ch["text"] for e in events for ch in e.get("choices", []))
    assert text == ref_b.text
    assert [ch["finish_reason"] for e in events for ch in e.get("choices", []) if ch.get("finish_reason")] == \
        ["length"]
    wait_for(lambda: (lambda m: m["running"] == 0 and m["kv_blocks_used"] == idle["kv_blocks_used"])(
        local_models(nginx)["long"]), "the KV blocks to return to the pool", timeout=10)
    after = local_models(nginx)["long"]
    assert after["cancelled"] == idle["cancelled"] + 1           # B finished; it was not cancelled
    assert after["requests"] >= idle["requests"] + 2
    # the same request alone gives the same text
    r = post(nginx, "/v1/completions", {"model": "long", "prompt": prompt_b, "max_tokens": 100, "temperature": 0})
    assert r.json()["choices"][0]["text"] == ref_b.text


# ---------------------------------------------------------------------------- models_dir

def copy_model(src, dst):
    """A model directory copy (hard links where the file system allows)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy(f, dst / f.name)


TRAVERSALS = ["../outside", "a/../../outside", "org/../m1", "./m1", "/etc", "m1/", "org//m3", "..", ".",
              "../models/m1", "m1/../m2"]


def test_models_dir_loads_on_first_use_and_unloads_the_least_recently_used(llmcgi_factory, models):
    openai = require_module("openai", "openai")
    base = make_tmpdir("llmcgi-models-dir-")
    web = None
    try:
        mdir = base / "models"
        copy_model(models["tiny"], mdir / "m1")
        copy_model(models["other"], mdir / "m2")
        copy_model(models["DialoGPT-tiny"], mdir / "org" / "m3")
        copy_model(models["tiny"], base / "outside")          # a real model, outside models_dir
        (mdir / "not-a-model").mkdir()                          # no config.json
        l = llmcgi_factory(base / "llmcgi.sock", extra=f"models_dir = {mdir}\nmax_loaded_models = 1\n")
        l.start()
        web = WEB_SERVERS["nginx"](l.sock).start()
        port = web.port
        c = openai_client(port)
        ids = [m.id for m in c.models.list()]
        assert "m1" in ids and "m2" in ids and "org/m3" in ids, ids
        assert "not-a-model" not in ids and "outside" not in ids
        assert not local_models(port)                           # nothing loaded before it is used

        def complete(name):
            r = c.completions.create(model=name, prompt=P, max_tokens=10, temperature=0)
            assert r.model == name
            return r.choices[0].text

        def loaded():
            return {k: v["state"] for k, v in local_models(port).items()}

        # the device is the default (auto) here: compare with llmcgi-generate's default too
        want = {"m1": reference(models["tiny"], P, 10, device=None).text,
                "m2": reference(models["other"], P, 10, device=None).text,
                "org/m3": reference(models["DialoGPT-tiny"], P, 10, device=None).text}
        assert complete("m1") == want["m1"]
        assert loaded() == {"m1": "ready"}
        assert complete("m2") == want["m2"]
        wait_for(lambda: loaded() == {"m2": "ready"}, "m1 to be unloaded for m2 (max_loaded_models = 1)")
        assert complete("m1") == want["m1"]                     # loaded again on use
        wait_for(lambda: loaded() == {"m1": "ready"}, "m2 to be unloaded for m1")
        assert complete("org/m3") == want["org/m3"]
        wait_for(lambda: loaded() == {"org/m3": "ready"}, "m1 to be unloaded for org/m3")

        # names that would leave models_dir, or are not plain relative paths: 404, never loaded
        for name in TRAVERSALS + ["not-a-model", "no-such-dir"]:
            with pytest.raises(openai.NotFoundError):
                c.completions.create(model=name, prompt=P, max_tokens=2)
            r = post(port, "/generate", {"model_id": name, "prompt": P, "max_new_tokens": 2})
            assert r.status == 404, (name, r.status, r.body)
            r = post(port, "/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "x"}]})
            assert r.status == 404 and r.json()["error"]["code"] == "model_not_found", (name, r.body)
        assert set(loaded()) == {"org/m3"}
        assert request(port, "GET", "/health").status == 200
        assert complete("m1") == want["m1"]                     # and it still serves
    finally:
        if web:
            web.stop()
        remove_tmpdir(base)


def test_routing_order_upstream_listing_then_models_dir_then_catch_all(llmcgi_factory, models):
    """An upstream listing a name wins over a models_dir directory of that name; models_dir wins
    over a catch-all upstream (models = *), which gets every other name."""
    base = make_tmpdir("llmcgi-routing-")
    listing = Standin("openai", model_ids=["m2"]).start()
    catch_all = Standin("openai", model_ids=["anything"]).start()
    web = None
    try:
        mdir = base / "models"
        copy_model(models["tiny"], mdir / "m1")
        copy_model(models["other"], mdir / "m2")
        l = llmcgi_factory(base / "llmcgi.sock", extra=f"""models_dir = {mdir}

[upstream listing]
type = openai
url = {listing.url}
models = m2

[upstream any]
type = openai
url = {catch_all.url}
models = *
""")
        l.start()
        web = WEB_SERVERS["nginx"](l.sock).start()
        port = web.port

        def complete(name):
            r = post(port, "/v1/completions", {"model": name, "prompt": P, "max_tokens": 3, "temperature": 0})
            assert r.status == 200, (name, r.body)
            return r.json()["choices"][0]["text"]

        assert complete("m1") == reference(models["tiny"], P, 3, device=None).text
        assert listing.count("/v1/completions") == catch_all.count("/v1/completions") == 0
        for _ in range(8):                                  # every time, not by chance
            assert complete("m2") == TEXT3
        assert listing.count("/v1/completions") == 8 and catch_all.count("/v1/completions") == 0
        assert complete("anything") == TEXT3                 # a name only the catch-all upstream knows
        assert listing.count("/v1/completions") == 8 and catch_all.count("/v1/completions") == 1
        assert set(local_models(port)) == {"m1"}
    finally:
        if web:
            web.stop()
        listing.stop()
        catch_all.stop()
        remove_tmpdir(base)


def test_a_model_that_fails_to_load(llmcgi_factory, models):
    openai = require_module("openai", "openai")
    d = make_tmpdir("llmcgi-broken-")
    web = None
    try:
        broken = d / "broken"
        copy_model(models["tiny"], broken)
        (broken / "model.safetensors").unlink()
        (broken / "model.safetensors").write_bytes((models["tiny"] / "model.safetensors").read_bytes()[:4096])
        l = llmcgi_factory(d / "llmcgi.sock", extra="default_model = tiny\n\n" +
                           model_section("tiny", models["tiny"]) + model_section("broken", broken))
        l.start()
        web = WEB_SERVERS["nginx"](l.sock).start()
        port = web.port
        wait_for(lambda: local_models(port).get("broken", {}).get("state") == "failed", "broken to fail")
        assert local_models(port)["broken"]["error"]
        c = openai_client(port)
        with pytest.raises(openai.InternalServerError) as e:
            c.completions.create(model="broken", prompt=P, max_tokens=2)
        assert e.value.status_code == 503
        r = post(port, "/v1/completions", {"model": "broken", "prompt": P, "max_tokens": 2})
        assert r.status == 503 and set(r.json()["error"]) >= {"message", "type", "param", "code"}
        r = request(port, "GET", "/models/broken/health")
        assert r.status == 503 and r.json()["available"] is False
        # the other model is unaffected
        local_models_ready(port, ["tiny"], timeout=60)
        r = c.completions.create(model="tiny", prompt=P, max_tokens=4, temperature=0)
        assert r.choices[0].text == reference(models["tiny"], P, 4).text
    finally:
        if web:
            web.stop()
        remove_tmpdir(d)


def test_health_is_503_while_the_default_model_loads(llmcgi_factory, models):
    """The default model's vocab.json is a FIFO: its loader blocks in open() until the test opens the
    other end, so "still loading" lasts exactly as long as the test wants, with no timing luck."""
    d = make_tmpdir("llmcgi-slow-")
    web = None
    try:
        slow = d / "slow"
        copy_model(models["tiny"], slow)
        (slow / "vocab.json").unlink()
        os.mkfifo(slow / "vocab.json")
        l = llmcgi_factory(d / "llmcgi.sock", extra="default_model = slow\n\n" + model_section("slow", slow))
        l.start()
        web = WEB_SERVERS["nginx"](l.sock).start()
        port = web.port
        r = request(port, "GET", "/health")
        assert r.status == 503 and r.header("Retry-After")
        assert r.json()["status"] == "loading"
        assert r.json()["local_models"]["slow"]["state"] == "loading"
        r = request(port, "GET", "/models/slow/health")
        assert r.status == 503 and r.json()["available"] is False
        # opening the FIFO lets the loader go on; it is no regular file, so the load fails
        fd = os.open(slow / "vocab.json", os.O_WRONLY)
        os.close(fd)
        wait_for(lambda: local_models(port)["slow"]["state"] == "failed", "the load to fail")
        r = request(port, "GET", "/health")
        assert r.status == 503 and r.json()["status"] == "unavailable"
        assert "not a regular file" in r.json()["local_models"]["slow"]["error"]
        # with the file in place, the next request loads the model again and /health turns ready
        (slow / "vocab.json").unlink()
        shutil.copy(models["tiny"] / "vocab.json", slow / "vocab.json")
        r = post(port, "/generate", {"inputs": P, "parameters": {"max_new_tokens": 2}})
        assert r.status == 200, r.body
        r = request(port, "GET", "/health")
        assert r.status == 200 and r.json()["status"] == "ok"
        assert r.json()["local_models"]["slow"]["state"] == "ready"
    finally:
        if web:
            web.stop()
        remove_tmpdir(d)
