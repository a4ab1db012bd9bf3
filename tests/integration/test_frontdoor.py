"""The production front door through real nginx and Apache: API keys (401 in both error shapes, Bearer and
x-api-key, 404 for a model the key may not use (as for one not served), keys reloaded on SIGHUP), rate limits (per key,
per address, X-Forwarded-For only from a trusted proxy, tokens per minute with the reservation
corrected by the usage reported), CORS (preflight and simple requests, allowed and not), and that
no key ever reaches the logs or an upstream.
"""

import hashlib
import http.client
import http.server
import json
import re
import signal
import threading

import pytest

from servers import TIMEOUT, Llmcgi, make_tmpdir, remove_tmpdir, request, wait_for, WEB_SERVERS
from standin import Standin

JSON = {"Content-Type": "application/json"}
KEYS = {
    "alice": "sk-alice-0f9e8d7c6b5a",
    "bob": "sk-bob-1a2b3c4d5e6f",
    "slow": "sk-slow-77aa88bb99cc",
    "tok": "sk-tok-3141592653",
    "late": "sk-late-2718281828",
}
ORIGIN = "https://app.example"


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


class Echo(http.server.BaseHTTPRequestHandler):
    """An http upstream that answers with the headers it received."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        out = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        # what a careless upstream sends; llmcgi's front door must speak alone
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("x-ratelimit-limit-requests", "999")
        self.end_headers()
        self.wfile.write(out)


class Front:
    def __init__(self, web):
        self.oai = Standin("openai", model_ids=["gpt-x", "other"]).start()
        self.echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        self.echo.daemon_threads = True
        threading.Thread(target=self.echo.serve_forever, daemon=True).start()
        self.dir = make_tmpdir("frontdoor-")
        self.sock = self.dir / "llmcgi.sock"
        self.keys_file = self.dir / "keys"
        self.write_keys()
        self.llmcgi = Llmcgi(self.sock, dir=self.dir, extra=self.config()).start()
        self.web = WEB_SERVERS[web](self.sock).start()
        self.port = self.web.port
        self.reloads = 0

    def write_keys(self, extra=""):
        self.keys_file.write_text(f"""\
# name, then what the key may do
{sha(KEYS['alice'])} alice ops
{sha(KEYS['bob'])} bob models=other
{sha(KEYS['slow'])} slow requests_per_minute=3
{sha(KEYS['tok'])} tok tokens_per_minute=100
{extra}""")

    def config(self, limits=""):
        return f"""\
default_model = gpt-x

[upstream oai]
type = openai
url = {self.oai.url}
models = gpt-x other
health_interval = 200ms

[upstream img]
type = http
url = http://127.0.0.1:{self.echo.server_address[1]}
path_prefix = /img

[auth]
keys_file = {self.keys_file}

[limits]
trusted_proxies = 127.0.0.1
{limits}

[cors]
allow_origins = {ORIGIN} http://localhost:8080
allow_credentials = on
max_age = 1h
"""

    def reload(self, limits=""):
        self.llmcgi.write_config(self.config(limits))
        self.reloads += 1
        self.llmcgi.signal(signal.SIGHUP)
        wait_for(lambda: self.llmcgi.log().count("configuration reloaded") >= self.reloads, "the reload")

    def close(self):
        self.web.stop()
        report = self.llmcgi.cleanup()
        self.oai.stop()
        self.echo.shutdown()
        remove_tmpdir(self.dir)
        return report


@pytest.fixture(scope="module", params=sorted(WEB_SERVERS))
def fd(request):
    f = Front(request.param)
    yield f
    report = f.close()
    assert not report, report


def get(fd, path, key=None, how="bearer", headers=None):
    h = dict(headers or {})
    if key and how == "bearer":
        h["Authorization"] = f"Bearer {key}"
    elif key:
        h["x-api-key"] = key
    return request(fd.port, "GET", path, headers=h)


def post(fd, path, body, key=None, how="bearer", headers=None):
    h = dict(JSON, **(headers or {}))
    if key and how == "bearer":
        h["Authorization"] = f"Bearer {key}"
    elif key:
        h["x-api-key"] = key
    return request(fd.port, "POST", path, json.dumps(body), h)


CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
TGI = {"inputs": "hi", "parameters": {"max_new_tokens": 3}}


# ---------------------------------------------------------------------------- keys

def test_no_key_is_401_in_the_openai_shape(fd):
    r = get(fd, "/v1/models")
    assert r.status == 401
    assert r.header("www-authenticate") == 'Bearer realm="llmcgi"'
    e = r.json()["error"]
    assert e["type"] == "invalid_request_error" and e["code"] == "invalid_api_key" and "Missing API key" in e["message"]


def test_no_key_is_401_in_the_tgi_shape(fd):
    r = post(fd, "/generate", TGI)
    assert r.status == 401 and r.header("www-authenticate").startswith("Bearer")
    assert r.json()["error_type"] == "unauthorized" and set(r.json()) == {"error", "error_type"}


def test_wrong_key_is_401_in_both_shapes(fd):
    for how in ("bearer", "header"):
        r = post(fd, "/v1/chat/completions", CHAT, key="sk-wrong", how=how)
        assert r.status == 401 and 'error="invalid_token"' in r.header("www-authenticate")
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = post(fd, "/generate", TGI, key="sk-wrong", how=how)
        assert r.status == 401 and r.json()["error_type"] == "unauthorized"
    r = request(fd.port, "GET", "/v1/models", headers={"Authorization": f"Basic {KEYS['alice']}"})
    assert r.status == 401, "only Bearer credentials count"


def test_bearer_and_x_api_key_both_work(fd):
    r = post(fd, "/v1/chat/completions", CHAT, key=KEYS["alice"])
    assert r.status == 200, r.body
    assert r.json()["choices"][0]["message"]["content"]
    r = post(fd, "/generate", TGI, key=KEYS["alice"], how="header")
    assert r.status == 200, r.body
    assert "generated_text" in r.json()
    assert get(fd, "/v1/models", KEYS["alice"], how="header").status == 200


def test_health_needs_no_key_by_default(fd):
    assert get(fd, "/health").status in (200, 503)


def test_a_model_the_key_may_not_use_does_not_exist_for_it(fd):
    r = post(fd, "/v1/chat/completions", CHAT, key=KEYS["bob"])
    assert r.status == 404
    e = r.json()["error"]
    assert e["code"] == "model_not_found" and e["param"] == "model" and "gpt-x" in e["message"]
    other = post(fd, "/v1/chat/completions", dict(CHAT, model="no-such"), key=KEYS["bob"])
    assert other.status == 404 and json.dumps(other.json()).replace("no-such", "gpt-x") == json.dumps(r.json()), \
        "the same answer as for a model not served here"
    r = post(fd, "/generate", dict(TGI, model="gpt-x"), key=KEYS["bob"])
    assert r.status == 404 and r.json()["error_type"] == "not_found"
    r = post(fd, "/v1/chat/completions", dict(CHAT, model="other"), key=KEYS["bob"])
    assert r.status == 200, r.body
    r = get(fd, "/img/x", KEYS["bob"])
    assert r.status == 403, "a key limited to models may not use http pass-through"


def test_operator_endpoints_need_an_ops_key(fd):
    for path in ("/status", "/metrics"):
        assert get(fd, path).status == 401, path
        r = get(fd, path, KEYS["bob"])
        assert r.status == 403, (path, r.body)
        assert r.json()["error_type"] == "forbidden" and "ops" in r.json()["error"]
        assert get(fd, path, KEYS["alice"]).status == 200, path


def test_a_key_lists_only_its_models(fd):
    ids = lambda r: sorted(m["id"] for m in (r.json()["data"] if isinstance(r.json(), dict) else r.json()))
    assert ids(get(fd, "/v1/models", KEYS["alice"])) == ["gpt-x", "other"]
    assert ids(get(fd, "/v1/models", KEYS["bob"])) == ["other"]
    assert ids(get(fd, "/models", KEYS["bob"])) == ["other"], "the older listing too"
    assert get(fd, "/v1/models/other", KEYS["bob"]).status == 200
    r = get(fd, "/v1/models/gpt-x", KEYS["bob"])
    assert r.status == 404 and r.json()["error"]["code"] == "model_not_found"
    assert get(fd, "/v1/models/gpt-x", KEYS["alice"]).status == 200


def test_an_address_guessing_keys_is_held_back(fd):
    """[limits] auth_failures_per_minute (30 by default): then 429 for every key from that
    address, the right one too, so that the answer tells nothing; other addresses go on."""
    refused = rate_limited(fd, "auth_failures")
    guesser = {"X-Forwarded-For": "203.0.113.7"}
    statuses = [get(fd, "/v1/models", f"sk-guess-{i}", headers=guesser).status for i in range(31)]
    assert statuses == [401] * 30 + [429], statuses
    r = get(fd, "/v1/models", KEYS["alice"], headers=guesser)
    assert r.status == 429 and int(r.header("retry-after")) >= 1
    assert "wrong API keys" in r.json()["error"]["message"]
    r = post(fd, "/generate", TGI, key=KEYS["alice"], headers=guesser)
    assert r.status == 429 and r.json()["error_type"] == "overloaded"
    assert get(fd, "/v1/models", KEYS["alice"], headers={"X-Forwarded-For": "203.0.113.8"}).status == 200
    assert get(fd, "/health", headers=guesser).status in (200, 503), "public paths stay open"
    assert rate_limited(fd, "auth_failures") == refused + 3, "the 31st guess and both tries with the right key"


def test_sighup_reloads_the_keys_file(fd):
    assert get(fd, "/v1/models", KEYS["late"]).status == 401
    fd.write_keys(f"{sha(KEYS['late'])} late\n")
    fd.reload()
    assert get(fd, "/v1/models", KEYS["late"]).status == 200
    fd.write_keys()
    fd.reload()
    assert get(fd, "/v1/models", KEYS["late"]).status == 401
    assert get(fd, "/v1/models", KEYS["alice"]).status == 200


def test_a_broken_keys_file_keeps_the_running_keys(fd):
    fd.keys_file.write_text(f"{sha(KEYS['alice'])} alice\nnot-a-hash mallory\n")
    fd.llmcgi.signal(signal.SIGHUP)
    wait_for(lambda: f"{fd.keys_file}:2:" in fd.llmcgi.log(), "the keys file error with file:line")
    fd.write_keys()
    assert get(fd, "/v1/models", KEYS["alice"]).status == 200
    fd.reload()


# ---------------------------------------------------------------------------- rate limits

def rate_limited(fd, scope):
    """llmcgi_rate_limited_total{scope=...} from /metrics (which needs a key by default)."""
    r = get(fd, "/metrics", KEYS["alice"])
    assert r.status == 200, r.body
    m = re.search(r'^llmcgi_rate_limited_total\{scope="%s"\} (\d+)$' % scope, r.body.decode(), re.M)
    return int(m.group(1)) if m else 0


def test_per_key_request_limit(fd):
    refused = rate_limited(fd, "requests")
    for i in range(3):
        r = get(fd, "/v1/models", KEYS["slow"])
        assert r.status == 200, (i, r.body)
        assert r.header("x-ratelimit-limit-requests") == "3"
        assert r.header("x-ratelimit-remaining-requests") == str(2 - i)
        assert r.header("x-ratelimit-reset-requests")
    r = get(fd, "/v1/models", KEYS["slow"])
    assert r.status == 429
    assert int(r.header("retry-after")) >= 1
    assert r.header("x-ratelimit-remaining-requests") == "0"
    assert r.json()["error"]["type"] == "rate_limit_error" and "slow" in r.json()["error"]["message"]
    r = post(fd, "/generate", TGI, key=KEYS["slow"])
    assert r.status == 429 and r.json()["error_type"] == "overloaded"
    assert get(fd, "/v1/models", KEYS["alice"]).status == 200, "other keys are not held back"
    assert rate_limited(fd, "requests") == refused + 2, "both refusals are counted in /metrics"


def test_tokens_per_minute_reserves_then_corrects(fd):
    # "EOS" in the prompt makes the stand-in stop after 3 tokens: 40 are reserved, ~3 used.
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "EOS"}], "max_tokens": 40}
    r = post(fd, "/v1/chat/completions", body, key=KEYS["tok"])
    assert r.status == 200, r.body
    assert r.header("x-ratelimit-limit-tokens") == "100"
    reserved_left = int(r.header("x-ratelimit-remaining-tokens"))
    assert reserved_left < 50
    # without the correction the bucket would hold reserved_left (< the next reservation)
    r = post(fd, "/v1/chat/completions", body, key=KEYS["tok"])
    assert r.status == 200, "the unused part of the first reservation came back"
    big = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}
    r = post(fd, "/v1/chat/completions", big, key=KEYS["tok"])
    assert r.status == 429, r.body
    assert int(r.header("retry-after")) >= 1 and r.header("x-ratelimit-limit-tokens") == "100"
    assert r.json()["error"]["code"] == "tokens_exceeded"


def test_per_address_limit_and_trusted_x_forwarded_for(fd):
    fd.reload("address_requests_per_minute = 4")
    try:
        xff = {"X-Forwarded-For": "198.51.100.7"}
        for _ in range(4):
            assert get(fd, "/v1/models", KEYS["alice"], headers=xff).status == 200
        r = get(fd, "/v1/models", KEYS["alice"], headers=xff)
        assert r.status == 429 and "198.51.100.7" in r.json()["error"]["message"]
        assert r.header("retry-after")
        r = get(fd, "/v1/models", KEYS["alice"], headers={"X-Forwarded-For": "198.51.100.8"})
        assert r.status == 200, "another address (as the trusted proxy says) has its own bucket"
    finally:
        fd.reload()


def test_x_forwarded_for_is_ignored_from_an_untrusted_proxy(fd):
    fd.llmcgi.write_config(fd.config("address_requests_per_minute = 4").replace(
        "trusted_proxies = 127.0.0.1", "trusted_proxies = 10.0.0.0/8"))
    fd.reloads += 1
    fd.llmcgi.signal(signal.SIGHUP)
    wait_for(lambda: fd.llmcgi.log().count("configuration reloaded") >= fd.reloads, "the reload")
    try:
        codes = [get(fd, "/v1/models", KEYS["alice"], headers={"X-Forwarded-For": f"203.0.113.{i}"}).status
                 for i in range(1, 7)]
        assert codes[:4] == [200] * 4 and 429 in codes[4:], codes
    finally:
        fd.reload()


# ---------------------------------------------------------------------------- CORS

def test_preflight_from_an_allowed_origin(fd):
    r = request(fd.port, "OPTIONS", "/v1/chat/completions",
                headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status == 204, r.body
    assert r.header("access-control-allow-origin") == ORIGIN
    assert r.header("access-control-allow-credentials") == "true"
    assert "POST" in r.header("access-control-allow-methods")
    allowed = r.header("access-control-allow-headers").lower()
    assert "authorization" in allowed and "content-type" in allowed and "x-api-key" in allowed
    assert r.header("access-control-max-age") == "3600"
    assert "Origin" in r.header("vary")


def test_preflight_allows_the_headers_a_client_asks_for(fd):
    """Browsers send the SDK's own headers (the OpenAI JS SDK's x-stainless-*); a preflight that names
    them gets them back, and one naming something that is not a header name gets the fixed list."""
    asked = "authorization, content-type, x-stainless-os, x-stainless-lang, openai-organization"
    r = request(fd.port, "OPTIONS", "/v1/chat/completions",
                headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": asked})
    assert r.status == 204, r.body
    allowed = [h.strip().lower() for h in r.header("access-control-allow-headers").split(",")]
    assert {"x-stainless-os", "x-stainless-lang", "openai-organization", "authorization"} <= set(allowed)
    r = request(fd.port, "OPTIONS", "/v1/chat/completions",
                headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "x-a; evil=1"})
    assert r.status == 204
    assert "evil" not in r.header("access-control-allow-headers")


def test_preflight_from_another_origin_is_403_without_cors_headers(fd):
    r = request(fd.port, "OPTIONS", "/v1/chat/completions",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert r.status == 403
    assert not any(h.startswith("access-control-") for h in r.headers)


def test_simple_requests_get_cors_headers_only_for_allowed_origins(fd):
    r = get(fd, "/v1/models", KEYS["alice"], headers={"Origin": ORIGIN})
    assert r.status == 200
    assert r.header("access-control-allow-origin") == ORIGIN and r.header("access-control-allow-credentials") == "true"
    assert "x-ratelimit-remaining-requests" in r.header("access-control-expose-headers")
    r = get(fd, "/v1/models", headers={"Origin": ORIGIN})
    assert r.status == 401 and r.header("access-control-allow-origin") == ORIGIN, "errors are readable by the page too"
    r = get(fd, "/v1/models", KEYS["alice"], headers={"Origin": "https://evil.example"})
    assert r.status == 200
    assert not any(h.startswith("access-control-") for h in r.headers)


def test_an_upstreams_cors_and_rate_limit_headers_do_not_pass(fd):
    conn = http.client.HTTPConnection("127.0.0.1", fd.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/img/x", headers={"Host": "localhost", "Origin": ORIGIN,
                                               "Authorization": f"Bearer {KEYS['alice']}"})
        r = conn.getresponse()
        r.read()
        heads = [(k.lower(), v) for k, v in r.getheaders()]
    finally:
        conn.close()
    assert r.status == 200
    assert [v for k, v in heads if k == "access-control-allow-origin"] == [ORIGIN], heads
    assert "999" not in [v for k, v in heads if k == "x-ratelimit-limit-requests"], heads


def test_a_basic_authorization_does_not_hide_x_api_key(fd):
    """nginx's auth_basic in front sends Authorization: Basic; the key then comes in x-api-key."""
    r = get(fd, "/v1/models", KEYS["alice"], how="header", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status == 200, r.body
    r = get(fd, "/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status == 401


# ---------------------------------------------------------------------------- secrecy

def test_keys_never_logged_nor_sent_upstream(fd):
    fd.oai.clear_requests()
    assert post(fd, "/v1/chat/completions", CHAT, key=KEYS["alice"]).status == 200
    sent = fd.oai.requests[-1]["headers"]
    assert "authorization" not in {k.lower() for k in sent}
    assert KEYS["alice"] not in json.dumps(sent)
    r = get(fd, "/img/headers", KEYS["alice"])
    assert r.status == 200, r.body
    seen = r.json()
    assert "authorization" not in seen and "x-api-key" not in seen
    r = get(fd, "/img/headers", KEYS["alice"], how="header")
    assert "x-api-key" not in r.json() and "authorization" not in r.json()
    logs = fd.llmcgi.log() + fd.llmcgi.access_log()
    for k in KEYS.values():
        assert k not in logs
    assert "sk-wrong" not in logs
    lines = fd.llmcgi.access_log().splitlines()
    assert any(l.endswith(" alice") for l in lines)
    assert any('"GET /v1/models" 401' in l and l.endswith(" -") for l in lines)
