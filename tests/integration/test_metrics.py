"""GET /metrics, GET /status and the JSON access log, through real nginx.

One llmcgi serves a tiny generated GPT-2 model (tools/gen-gpt2, [model tiny],
device = cpu) and two OpenAI stand-in upstreams (standin.py): "oai" serving
gpt-x, and "gone", which a test stops to watch its replica go down. The
access log is in access_log_format = json.

Covers:
* The exposition: Content-Type text/plain; version=0.0.4, every line checked
  by a strict parser (HELP and TYPE before the family's samples, names and
  labels well-formed, values numbers, counters ending in _total, histogram
  buckets cumulative with +Inf equal to _count), and by `promtool check
  metrics` (Debian: prometheus, installed by tools/debian-deps --test; the
  test skips without it, and fails under LLMCGI_TESTS_REQUIRE_ALL).
* Exact counter movements over a known set of requests: local completions
  (200), a local 400, an unknown model (404, no model label: raw client input
  is never a label value), proxied completions, a request to a stopped
  upstream; prompt/generated token counters equal the usage the answers
  reported; duration, TTFT and inter-token histograms moved by the right
  counts; upstream attempts and retries; build info, uptime.
* llmcgi_upstream_replica_up going 1 -> 0 for a stopped stand-in, in
  /metrics and in /status.
* /status: shape and values (threads, version, per-model KV blocks,
  per-upstream replicas up/down), ?full adding details.
* The JSON access log: every line parses, carries the request id (the
  client's X-Request-Id when given, a generated one otherwise, the same as
  the response's X-Request-Id header), the model, status, bytes and tokens.
* X-Request-Id reaches the upstream stand-in unchanged.
* The structured-output caches: the constraint cache's hits, misses, bytes and
  entries and the model's mask cache moving over two requests with the same
  schema; constraint_cache = 0 on a reload emptying it and keeping nothing.
"""

import json
import math
import re
import shutil
import signal
import subprocess
import time

import pytest

from servers import (BUILDDIR, SRCDIR, TIMEOUT, WEB_SERVERS, Llmcgi, make_tmpdir, remove_tmpdir, request, require,
                     wait_for)
from standin import Standin

GEN = BUILDDIR / "tools" / "gen-gpt2"
TOKENIZER = SRCDIR / "tests" / "fixtures" / "gpt2-tokenizer"
JSON = {"Content-Type": "application/json"}
SMALL = ["--layers", "2", "--heads", "2", "--embd", "64", "--positions", "128"]
CT = "text/plain; version=0.0.4; charset=utf-8"


class Site:
    def __init__(self):
        if not (TOKENIZER / "vocab.json").exists():
            pytest.skip(f"the GPT-2 tokenizer files are not at {TOKENIZER}")
        self.dir = make_tmpdir("metrics-")
        subprocess.run([str(GEN), "--out", str(self.dir / "tiny"), *SMALL, "--seed", "11", "--tokenizer",
                        str(TOKENIZER)], check=True, capture_output=True, timeout=120)
        self.oai = Standin("openai", model_ids=["gpt-x"]).start()
        self.gone = Standin("openai", model_ids=["gone-model"]).start()
        self.sock = self.dir / "llmcgi.sock"
        extra = f"""\
access_log_format = json

[model tiny]
path = {self.dir / "tiny"}
device = cpu

[upstream oai]
type = openai
url = {self.oai.url}
models = gpt-x
health_interval = 200ms

[upstream gone]
type = openai
url = {self.gone.url}
models = gone-model
connect_timeout = 500ms
retries = 1
retry_backoff = 10ms
health_interval = 200ms
health_fall = 1
"""
        self.extra = extra
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=extra).start()
        self.nginx = WEB_SERVERS["nginx"](self.sock).start()
        self.port = self.nginx.port
        wait_for(lambda: request(self.port, "GET", "/health").status == 200, "llmcgi healthy")
        wait_for(lambda: request(self.port, "GET", "/status").json()["models"].get("tiny", {}).get("state") == "ready",
                 "model tiny loaded", interval=0.1)

    def close(self):
        self.nginx.stop()
        report = self.llmcgi.cleanup()
        self.oai.stop()
        self.gone.stop()
        remove_tmpdir(self.dir)
        return report


@pytest.fixture(scope="module")
def site():
    s = Site()
    yield s
    report = s.close()
    assert not report, report


def post(site, path, body, headers=None):
    return request(site.port, "POST", path, json.dumps(body), dict(JSON, **(headers or {})))


# ---------------------------------------------------------------------------- a strict exposition parser

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')


def unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def parse_value(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", s), f"bad value {s!r}"
    return float(s)


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value}, after checking the whole text
    against the 0.0.4 text format and Prometheus conventions."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    families = {}           # family name -> type
    helped = set()
    current = None
    samples = {}
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert re.fullmatch(NAME, name), line
            assert name not in helped, f"HELP twice for {name}"
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            assert len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
            name = parts[2]
            assert name not in families, f"TYPE twice for {name}"
            assert name in helped, f"TYPE before HELP for {name}"
            assert name.startswith("llmcgi_"), name
            if parts[3] == "counter":
                assert name.endswith("_total"), f"counter {name} must end in _total"
            else:
                assert not name.endswith("_total"), f"non-counter {name} ends in _total"
            families[name] = parts[3]
            current = name
            continue
        assert not line.startswith("#"), f"stray comment {line!r}"
        m = SAMPLE.match(line)
        assert m, f"malformed sample line {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        kinds = families.get(current)
        allowed = {current} if kinds != "histogram" else {current + s for s in ("_bucket", "_sum", "_count")}
        assert name in allowed, f"sample {name} outside its family ({current})"
        lab = {}
        for k, v in LABEL_RE.findall(labels):
            assert k not in lab, f"label {k} twice in {line!r}"
            lab[k] = unescape(v)
        key = (name, frozenset(lab.items()))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = parse_value(value)
        if families[current] == "counter" or name.endswith(("_bucket", "_count")):
            assert samples[key] >= 0 and samples[key] == int(samples[key]), line
    # histograms: cumulative buckets, +Inf present and equal to _count
    for fam, kind in families.items():
        if kind != "histogram":
            continue
        series = {}
        for (name, lab), v in samples.items():
            if name == fam + "_bucket":
                d = dict(lab)
                le = d.pop("le")
                series.setdefault(frozenset(d.items()), []).append((parse_value(le), v))
        for lab, buckets in series.items():
            buckets.sort()
            assert buckets[-1][0] == math.inf, f"{fam}{dict(lab)} has no +Inf bucket"
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), f"{fam}{dict(lab)} buckets not cumulative: {buckets}"
            assert samples[(fam + "_count", lab)] == buckets[-1][1], f"{fam}{dict(lab)}: _count != +Inf"
            assert (fam + "_sum", lab) in samples
    return samples, families


def get_metrics(site):
    r = request(site.port, "GET", "/metrics")
    assert r.status == 200, r.body
    assert r.header("content-type") == CT
    text = r.body.decode()
    samples, families = parse_metrics(text)
    return text, samples, families


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def hist_count(samples, name, **labels):
    return val(samples, name + "_count", **labels)


# ---------------------------------------------------------------------------- the tests

def test_exposition_format(site):
    text, samples, families = get_metrics(site)
    for fam, kind in [("llmcgi_requests_total", "counter"), ("llmcgi_request_duration_seconds", "histogram"),
                      ("llmcgi_time_to_first_token_seconds", "histogram"),
                      ("llmcgi_inter_token_latency_seconds", "histogram"), ("llmcgi_batch_size", "histogram"),
                      ("llmcgi_prompt_tokens_total", "counter"), ("llmcgi_generation_tokens_total", "counter"),
                      ("llmcgi_queue_depth", "gauge"), ("llmcgi_running_sequences", "gauge"),
                      ("llmcgi_kv_blocks_used", "gauge"), ("llmcgi_kv_blocks_free", "gauge"),
                      ("llmcgi_model_state", "gauge"), ("llmcgi_upstream_replica_up", "gauge"),
                      ("llmcgi_upstream_request_duration_seconds", "histogram"),
                      ("llmcgi_upstream_requests_total", "counter"), ("llmcgi_upstream_retries_total", "counter"),
                      ("llmcgi_rate_limited_total", "counter"), ("llmcgi_build_info", "gauge"),
                      ("llmcgi_uptime_seconds", "gauge"), ("llmcgi_start_time_seconds", "gauge"),
                      ("llmcgi_responder_threads", "gauge"), ("llmcgi_requests_in_flight", "gauge"),
                      ("llmcgi_connections_accepted_total", "counter")]:
        assert families.get(fam) == kind, (fam, families.get(fam))
    builds = [k for k in samples if k[0] == "llmcgi_build_info"]
    assert len(builds) == 1 and samples[builds[0]] == 1 and dict(builds[0][1])["version"]
    assert val(samples, "llmcgi_uptime_seconds") >= 0
    assert abs(val(samples, "llmcgi_start_time_seconds") - time.time()) < 3600
    assert val(samples, "llmcgi_model_state", model="tiny", state="ready") == 1
    assert val(samples, "llmcgi_model_state", model="tiny", state="failed") == 0
    assert val(samples, "llmcgi_kv_blocks_used", model="tiny") == 0
    assert val(samples, "llmcgi_kv_blocks_free", model="tiny") > 0
    assert val(samples, "llmcgi_upstream_replica_up", upstream="oai", replica="0") == 1
    assert val(samples, "llmcgi_responder_threads", state="busy") >= 1     # this scrape


def test_promtool_accepts_the_exposition(site):
    """Prometheus' own checker, on a scrape after traffic (so histograms and labelled
    families have samples): no errors and no lint warnings."""
    promtool = require("promtool", "prometheus")
    request(site.port, "POST", "/v1/completions", json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 2}), JSON)
    text, _, _ = get_metrics(site)
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), \
        p.stdout.decode() + p.stderr.decode()


def test_counters_move_exactly(site):
    _, before, _ = get_metrics(site)
    usage = {"prompt": 0, "completion": 0}
    for i in range(3):
        r = post(site, "/v1/completions", {"model": "tiny", "prompt": "The quick brown fox", "max_tokens": 4 + i,
                                           "temperature": 0})
        assert r.status == 200, r.body
        usage["prompt"] += r.json()["usage"]["prompt_tokens"]
        usage["completion"] += r.json()["usage"]["completion_tokens"]
    # a malformed body (refused before any model is looked up: no model label), a request too long for
    # the model's context (refused by the model: labelled), an unknown model (its name is no label value)
    r = post(site, "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": -5})
    assert r.status == 400, r.body
    r = post(site, "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 1000})
    assert r.status == 400, r.body
    r = post(site, "/v1/completions", {"model": "no-such-model-\"x\n", "prompt": "x", "max_tokens": 2})
    assert r.status == 404, r.body
    for _ in range(2):
        r = post(site, "/v1/chat/completions", {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}],
                                                "max_tokens": 3})
        assert r.status == 200, r.body
    r = request(site.port, "GET", "/no/such/route")
    assert r.status == 404
    text, after, _ = get_metrics(site)

    def d(name, **labels):
        return val(after, name, **labels) - val(before, name, **labels)

    comp = "/v1/completions"
    assert d("llmcgi_requests_total", route=comp, status="200", model="tiny") == 3
    assert d("llmcgi_requests_total", route=comp, status="400", model="tiny") == 1
    assert d("llmcgi_requests_total", route=comp, status="400", model="") == 1
    assert d("llmcgi_requests_total", route=comp, status="404", model="") == 1
    assert d("llmcgi_requests_total", route="/v1/chat/completions", status="200", model="gpt-x") == 2
    assert d("llmcgi_requests_total", route="(none)", status="404", model="") == 1
    assert "no-such-model" not in text
    assert d("llmcgi_request_duration_seconds_count", route=comp, model="tiny") == 4
    assert d("llmcgi_request_duration_seconds_count", route="/v1/chat/completions", model="gpt-x") == 2
    assert d("llmcgi_prompt_tokens_total", model="tiny") == usage["prompt"]
    assert d("llmcgi_generation_tokens_total", model="tiny") == usage["completion"]
    assert usage["completion"] > 3
    assert d("llmcgi_time_to_first_token_seconds_count", model="tiny") == 3
    # one gap per token after a sequence's first
    assert d("llmcgi_inter_token_latency_seconds_count", model="tiny") == usage["completion"] - 3
    assert d("llmcgi_batch_size_count", model="tiny") >= usage["completion"]
    assert d("llmcgi_upstream_requests_total", upstream="oai", result="ok") == 2
    assert d("llmcgi_upstream_request_duration_seconds_count", upstream="oai") == 2
    assert d("llmcgi_upstream_retries_total", upstream="oai") == 0
    # the 404/400 carry no token counts; the metrics request before this one counted itself
    assert d("llmcgi_requests_total", route="/metrics", status="200", model="") == 1


def test_status_page(site):
    r = request(site.port, "GET", "/status")
    assert r.status == 200 and r.header("content-type") == "application/json"
    s = r.json()
    for k in ("version", "pid", "start_time", "uptime_seconds", "threads", "accepted_connections",
              "requests_answered", "requests_in_flight", "models", "upstreams"):
        assert k in s, (k, s)
    assert s["threads"]["total"] == 8 and s["threads"]["busy"] >= 1
    assert s["threads"]["busy"] + s["threads"]["idle"] == 8
    assert s["requests_in_flight"] >= 1 and s["requests_answered"] >= 1
    tiny = s["models"]["tiny"]
    assert tiny["state"] == "ready" and tiny["running"] == 0 and tiny["queued"] == 0
    assert tiny["kv_blocks_used"] == 0 and tiny["kv_blocks_free"] == tiny["kv_blocks_total"] > 0
    assert "device" in tiny and "path" not in tiny
    oai = s["upstreams"]["oai"]
    assert oai == {"type": "openai", "available": True, "in_flight": 0, "replicas_up": 1, "replicas_down": 0}, oai
    full = request(site.port, "GET", "/status?full").json()
    assert "replicas" in full["upstreams"]["oai"] and "path" in full["models"]["tiny"]
    assert full["models"]["tiny"]["kv_blocks_free"] == tiny["kv_blocks_total"]
    r = request(site.port, "POST", "/status", "{}", JSON)
    assert r.status == 405


def test_status_start_time_does_not_move(site):
    """start_time is the moment the process started, the same in every answer (it was now - uptime, and
    the two clocks' seconds do not turn over together, so it moved by one back and forth: the soak's
    same-process check compares it)."""
    seen, ups = set(), set()
    first = request(site.port, "GET", "/status").json()["uptime_seconds"]
    while len(ups) < 3:                 # across two turns of uptime_seconds, every 20 ms
        s = request(site.port, "GET", "/status").json()
        seen.add(s["start_time"])
        ups.add(s["uptime_seconds"])
        assert s["uptime_seconds"] <= first + 60, "uptime_seconds does not advance"
        time.sleep(0.02)
    assert len(seen) == 1, seen


def test_request_id_access_log_and_upstream(site):
    rid = "metrics-test-0123456789"
    r = post(site, "/v1/chat/completions", {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}],
                                            "max_tokens": 3}, {"X-Request-Id": rid})
    assert r.status == 200 and r.header("x-request-id") == rid
    got = [q for q in site.oai.requests if q["headers"].get("x-request-id") == rid]
    assert len(got) == 1, [q["headers"].get("x-request-id") for q in site.oai.requests]
    r2 = post(site, "/v1/completions", {"model": "tiny", "prompt": "Hello there", "max_tokens": 3})
    assert r2.status == 200
    gen_id = r2.header("x-request-id")
    assert gen_id and re.fullmatch(r"[0-9a-f]{32}", gen_id)

    def lines():
        out = []
        for line in site.llmcgi.access_log().splitlines():
            out.append(json.loads(line))            # every line is one JSON object
        return out

    wait_for(lambda: any(e["request_id"] == gen_id for e in lines()), "the access log line")
    by_id = {e["request_id"]: e for e in lines()}
    e = by_id[rid]
    assert e["method"] == "POST" and e["path"] == "/v1/chat/completions" and e["status"] == 200
    assert e["model"] == "gpt-x" and e["route"] == "/v1/chat/completions" and e["bytes"] == len(r.body)
    assert isinstance(e["duration"], float) and e["duration"] >= 0
    e = by_id[gen_id]
    u = r2.json()["usage"]
    assert e["model"] == "tiny" and e["tokens_in"] == u["prompt_tokens"] and e["tokens_out"] == u["completion_tokens"]
    assert e["remote_addr"] == "127.0.0.1" and re.match(r"\d{4}-\d\d-\d\dT", e["time"])
    # hostile bytes in the path stay inside one valid JSON line
    request(site.port, "GET", "/x%22%0a%ff\"y")
    wait_for(lambda: any(e["path"].startswith("/x") for e in lines()), "the hostile path's line")


def test_upstream_down(site):
    _, before, _ = get_metrics(site)
    assert val(before, "llmcgi_upstream_replica_up", upstream="gone", replica="0") == 1
    site.gone.stop()

    def down():
        _, s, _ = get_metrics(site)
        return val(s, "llmcgi_upstream_replica_up", upstream="gone", replica="0") == 0 and s

    after = wait_for(down, "the stopped stand-in marked down", timeout=10)
    st = request(site.port, "GET", "/status").json()["upstreams"]["gone"]
    assert st["replicas_up"] == 0 and st["replicas_down"] == 1 and st["available"] is False
    r = post(site, "/v1/completions", {"model": "gone-model", "prompt": "x", "max_tokens": 2})
    assert r.status == 503, r.body
    _, last, _ = get_metrics(site)
    assert val(last, "llmcgi_requests_total", route="/v1/completions", status="503", model="gone-model") - \
        val(after, "llmcgi_requests_total", route="/v1/completions", status="503", model="gone-model") == 1


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
          "required": ["n", "ok"], "additionalProperties": False}


def schema_request(site, name="point"):
    r = post(site, "/v1/chat/completions", {
        "model": "tiny", "max_tokens": 40, "messages": [{"role": "user", "content": "a point"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMA}}})
    assert r.status == 200, r.body
    return r.json()


def test_constraint_and_mask_caches(site):
    """A schema compiled once and then found in the constraint cache; the model's allowed-token masks walked
    for the first request and found kept for the second (the same schema, so the same DFA states); the
    counters in /metrics and in /status?full. Then constraint_cache = 0 on a reload: the cache is emptied
    and a later request is compiled again, not kept."""
    _, s0, _ = get_metrics(site)
    schema_request(site)
    _, s1, _ = get_metrics(site)
    schema_request(site)
    _, s2, _ = get_metrics(site)
    d = lambda a, b, name, **lab: val(b, name, **lab) - val(a, name, **lab)
    assert d(s0, s1, "llmcgi_constraint_cache_misses_total") == 1
    assert d(s0, s1, "llmcgi_constraint_cache_hits_total") == 0
    assert d(s1, s2, "llmcgi_constraint_cache_hits_total") == 1
    assert d(s1, s2, "llmcgi_constraint_cache_misses_total") == 0
    assert val(s2, "llmcgi_constraint_cache_entries") >= 1 and val(s2, "llmcgi_constraint_cache_bytes") > 0
    assert d(s0, s1, "llmcgi_mask_cache_walks_total", model="tiny") >= 1
    assert d(s1, s2, "llmcgi_mask_cache_hits_total", model="tiny") >= 1
    assert 0 < val(s2, "llmcgi_mask_cache_bytes", model="tiny") <= 32 << 20
    full = request(site.port, "GET", "/status?full").json()["models"]["tiny"]
    assert full["mask_cache_hits"] >= val(s2, "llmcgi_mask_cache_hits_total", model="tiny")
    assert full["mask_cache_bytes"] > 0

    site.llmcgi.write_config(site.extra.replace("access_log_format = json\n",
                                                "access_log_format = json\nconstraint_cache = 0\n", 1))
    site.llmcgi.signal(signal.SIGHUP)
    try:
        def emptied():
            _, s, _ = get_metrics(site)
            return val(s, "llmcgi_constraint_cache_entries") == 0 and val(s, "llmcgi_constraint_cache_bytes") == 0
        wait_for(emptied, "the reload to empty the constraint cache", timeout=10)
        _, s3, _ = get_metrics(site)
        schema_request(site)
        schema_request(site)
        _, s4, _ = get_metrics(site)
        assert d(s3, s4, "llmcgi_constraint_cache_misses_total") == 2
        assert d(s3, s4, "llmcgi_constraint_cache_hits_total") == 0
        assert val(s4, "llmcgi_constraint_cache_entries") == 0
        st = request(site.port, "GET", "/status").json()["models"]["tiny"]
        assert st["state"] == "ready"           # a server key: the model was not reloaded
    finally:
        site.llmcgi.write_config(site.extra)
        site.llmcgi.signal(signal.SIGHUP)
